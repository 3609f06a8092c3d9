//! The configured providers as one fallback chain.
//!
//! Invariants:
//! - providers are tried in their configured order; the next one is asked only when a call
//!   failed before any text streamed (a half-written reply is never stitched to another
//!   model's);
//! - a provider whose calls keep failing is skipped for a cool-down (its [`Breaker`]);
//! - a provider that refuses a JSON `response_format` is asked again at once in a plainer
//!   mode (json_schema → json_object → none), and stays in that mode for the process;
//! - API keys are read once, from the variables the config names; a missing one is an error
//!   that names the key and the variable, never a silent fallback.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::retry::Breaker;
use super::{Client, Deadlines, JsonMode, Kind, LlmError, Provider, Reply, Request};
use crate::config::{self, LlmConfig};

/// A reply and who gave it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub reply: Reply,
    pub provider: String,
    pub model: String,
    /// Why earlier providers in the chain gave no reply.
    pub skipped: Vec<String>,
}

/// Why the chain gave no reply.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("no provider answered: {}", .errors.join("; "))]
    AllFailed { errors: Vec<String> },
    /// Text had streamed when the call failed, so no other provider was asked.
    #[error("{source} (after part of the reply had streamed, so no other provider was asked)")]
    Broken { source: LlmError },
    #[error(
        "every provider is cooling down after repeated failures ({names}); next try in {secs} s"
    )]
    CoolingDown { names: String, secs: u64 },
}

/// The chain could not be set up from the config.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(
        "llm.providers[{index}].api_key_env: the variable {var} is not set; export it, or \
         set api_key_env to \"\" for a server without keys"
    )]
    MissingKey { index: usize, var: String },
    #[error(
        "llm.transcription.api_key_env: the variable {var} is not set; export it, or set \
         api_key_env to \"\" for a server without keys"
    )]
    MissingTranscriptionKey { var: String },
    #[error("cannot start the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

struct Slot {
    provider: Mutex<Provider>,
    breaker: Mutex<Breaker>,
}

/// The providers, in order, with their health.
pub struct Chain {
    client: Client,
    slots: Vec<Slot>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain").field("providers", &self.names()).finish_non_exhaustive()
    }
}

impl Chain {
    /// The chain of `config`, with keys looked up by `env`; `None` when no provider is
    /// configured (template mode).
    pub fn from_config(
        config: &LlmConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Chain>, SetupError> {
        if config.providers.is_empty() {
            return Ok(None);
        }
        let mut providers = Vec::new();
        for (index, p) in config.providers.iter().enumerate() {
            let api_key =
                if p.api_key_env.is_empty() {
                    None
                } else {
                    let key = env(&p.api_key_env).filter(|k| !k.trim().is_empty());
                    Some(key.ok_or_else(|| SetupError::MissingKey {
                        index,
                        var: p.api_key_env.clone(),
                    })?)
                };
            let kind = match p.kind {
                config::ProviderKind::Openai => Kind::OpenAi,
                config::ProviderKind::Anthropic => Kind::Anthropic,
            };
            let json = match (kind, p.json_mode) {
                (Kind::Anthropic, _) | (_, config::JsonMode::None) => JsonMode::Off,
                (_, config::JsonMode::Auto | config::JsonMode::JsonSchema) => JsonMode::Schema,
                (_, config::JsonMode::JsonObject) => JsonMode::Object,
            };
            providers.push(Provider {
                name: p.display_name().to_owned(),
                kind,
                base_url: p.base_url.clone(),
                model: p.model.clone(),
                api_key,
                headers: p.headers.clone(),
                json,
                degrade_json: p.json_mode == config::JsonMode::Auto,
            });
        }
        let deadlines = Deadlines {
            connect: Duration::from_secs(config.connect_timeout_secs),
            first_byte: Duration::from_secs(config.first_byte_timeout_secs),
            stall: Duration::from_secs(config.stall_timeout_secs),
            total: Duration::from_secs(300),
        };
        let breaker = || {
            Breaker::new(config.breaker_failures, Duration::from_secs(config.breaker_cooldown_secs))
        };
        Ok(Some(Chain::new(Client::new(deadlines)?, providers, breaker)))
    }

    pub fn new(client: Client, providers: Vec<Provider>, breaker: impl Fn() -> Breaker) -> Chain {
        let slots = providers
            .into_iter()
            .map(|p| Slot { provider: Mutex::new(p), breaker: Mutex::new(breaker()) })
            .collect();
        Chain { client, slots }
    }

    /// The providers' names, in order.
    pub fn names(&self) -> Vec<String> {
        self.slots.iter().map(|s| lock(&s.provider).name.clone()).collect()
    }

    /// Each provider as it stands (for `llm test`, which asks each one directly).
    pub fn providers(&self) -> Vec<Provider> {
        self.slots.iter().map(|s| lock(&s.provider).clone()).collect()
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Ask the first provider that is not cooling down; fall back while nothing streamed.
    pub async fn chat(
        &self,
        request: &Request,
        mut on_text: impl FnMut(&str),
    ) -> Result<Answer, ChainError> {
        let mut skipped = Vec::new();
        let mut cooling = Vec::new();
        let end = request.deadline.map(|d| Instant::now() + d);
        for (i, slot) in self.slots.iter().enumerate() {
            let now = Instant::now();
            if !lock(&slot.breaker).allows(now) {
                cooling.push(lock(&slot.provider).name.clone());
                continue;
            }
            // A hanging provider must not eat the time of those after it: each gets an even
            // share of what is left, and the last one all of it.
            let after = self.slots[i + 1..].iter().filter(|s| lock(&s.breaker).allows(now)).count();
            let shared;
            let request = match end {
                Some(end) => {
                    let left = end.saturating_duration_since(now);
                    let share = left / u32::try_from(after + 1).unwrap_or(u32::MAX);
                    shared = Request { deadline: Some(share), ..request.clone() };
                    &shared
                }
                None => request,
            };
            // A lowered JSON mode is tried for this call, and kept for later calls only once a
            // reply confirms it: a passing server error must not cost the schema for good.
            let mut provider = lock(&slot.provider).clone();
            loop {
                let mut streamed = false;
                let result = self
                    .client
                    .chat_in_chain(
                        &provider,
                        request,
                        |t| {
                            streamed |= !t.is_empty();
                            on_text(t);
                        },
                        after > 0,
                    )
                    .await;
                match result {
                    Ok(reply) => {
                        lock(&slot.breaker).success();
                        let mut kept = lock(&slot.provider);
                        if request.schema.is_some() && kept.json != provider.json {
                            tracing::warn!(
                                provider = %provider.name,
                                "the server answered with the JSON format {:?} after refusing \
                                 {:?}; keeping {:?} for this provider",
                                provider.json, kept.json, provider.json
                            );
                            kept.json = provider.json;
                        }
                        drop(kept);
                        return Ok(Answer {
                            reply,
                            provider: provider.name,
                            model: provider.model,
                            skipped,
                        });
                    }
                    Err(LlmError::JsonRefused { message, .. }) => {
                        provider.json = match provider.json {
                            JsonMode::Schema => JsonMode::Object,
                            _ => JsonMode::Off,
                        };
                        tracing::warn!(
                            provider = %provider.name,
                            "the server refused the JSON response format ({message}); asking \
                             again with {:?}",
                            provider.json
                        );
                    }
                    Err(e) => {
                        lock(&slot.breaker).failure(Instant::now());
                        if streamed {
                            return Err(ChainError::Broken { source: e });
                        }
                        tracing::warn!("{e}; trying the next provider");
                        skipped.push(e.to_string());
                        break;
                    }
                }
            }
        }
        if skipped.is_empty() && !cooling.is_empty() {
            let secs = self
                .slots
                .iter()
                .filter_map(|s| lock(&s.breaker).open_for(Instant::now()))
                .min()
                .unwrap_or_default()
                .as_secs();
            return Err(ChainError::CoolingDown { names: cooling.join(", "), secs });
        }
        Err(ChainError::AllFailed { errors: skipped })
    }
}

/// What `protoforge llm test` measured of one provider.
#[derive(Debug, Clone)]
pub struct Probe {
    pub provider: String,
    pub model: String,
    pub result: Result<ProbeFigures, String>,
}

#[derive(Debug, Clone)]
pub struct ProbeFigures {
    /// From sending the request to the first text.
    pub first_text: Duration,
    pub total: Duration,
    pub tokens_out: u64,
    /// Output tokens per second after the first text arrived.
    pub tokens_per_sec: f64,
    pub reply: String,
}

impl Chain {
    /// Ask every provider, in order and directly (no fallback), a tiny question.
    pub async fn probe(&self) -> Vec<Probe> {
        let mut out = Vec::new();
        for provider in self.providers() {
            let mut request = Request::new(
                "You are a health check. Answer with one short sentence.",
                "Say hello and name the colour of the sky.",
            );
            request.max_tokens = 32;
            request.deadline = Some(Duration::from_secs(60));
            let start = Instant::now();
            let mut first = None;
            let result = self
                .client
                .chat(&provider, &request, |t| {
                    if first.is_none() && !t.is_empty() {
                        first = Some(start.elapsed());
                    }
                })
                .await;
            let total = start.elapsed();
            out.push(Probe {
                provider: provider.name.clone(),
                model: provider.model.clone(),
                result: result.map_err(|e| e.to_string()).map(|reply| {
                    let first_text = first.unwrap_or(total);
                    let streaming = (total - first_text).as_secs_f64();
                    // Servers without usage: about 4 bytes a token.
                    let tokens_out = if reply.tokens_out > 0 {
                        reply.tokens_out
                    } else {
                        (reply.text.len() as u64 / 4).max(1)
                    };
                    ProbeFigures {
                        first_text,
                        total,
                        tokens_out,
                        tokens_per_sec: if streaming > 0.0 {
                            tokens_out.saturating_sub(1) as f64 / streaming
                        } else {
                            0.0
                        },
                        reply: reply.text.trim().chars().take(80).collect(),
                    }
                }),
            });
        }
        out
    }
}

/// A poisoned lock only means another stage panicked; the data (a provider, a breaker) is
/// still whole.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

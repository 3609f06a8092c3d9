//! Model calls: one chat request to an OpenAI-compatible (`/v1/chat/completions`) or an
//! Anthropic (`/v1/messages`) server, streamed, with deadlines and bounded retries.
//!
//! Invariants:
//! - an API key comes from the environment variable the provider names, and appears in no
//!   error, log line or file;
//! - a call makes at most 1 + [`retry::MAX_RETRIES`] requests; 400/401/403/404 are not
//!   retried, and their error names the provider and the model;
//! - every wait is bounded: connecting, the first byte, the gap between two chunks, and
//!   the whole call;
//! - a reply is only what the stream delivered; a stream that ends without its end marker is
//!   an error, never a silently short reply.

pub mod chain;
pub mod extract;
pub mod retry;
pub mod sse;
pub mod transcribe;

pub use chain::{Answer, Chain, ChainError};

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

/// Which wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    OpenAi,
    Anthropic,
}

/// One configured model endpoint.
#[derive(Clone)]
pub struct Provider {
    /// For messages and metadata, e.g. "local-llama".
    pub name: String,
    pub kind: Kind,
    /// Up to and including `/v1`, e.g. `http://127.0.0.1:8080/v1`.
    pub base_url: String,
    pub model: String,
    /// Read from the environment; never printed.
    pub api_key: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub json: JsonMode,
    /// On a refusal of `response_format`, report [`LlmError::JsonRefused`] at once instead
    /// of retrying, so the caller can ask again in a plainer mode.
    pub degrade_json: bool,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // SECURITY: the key stays out of every Debug print and log line.
        f.debug_struct("Provider")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("json", &self.json)
            .field("api_key", &self.api_key.as_ref().map(|_| "(set)"))
            .finish_non_exhaustive()
    }
}

/// Deadlines of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    pub connect: Duration,
    /// From sending the request to the response head.
    pub first_byte: Duration,
    /// Longest silence inside a stream.
    pub stall: Duration,
    /// The whole call, retries and waits included.
    pub total: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            connect: Duration::from_secs(10),
            first_byte: Duration::from_secs(60),
            stall: Duration::from_secs(30),
            total: Duration::from_secs(300),
        }
    }
}

/// What to ask.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub system: String,
    /// The conversation so far, user first, alternating; a continuation ends with the
    /// model's partial reply and a user turn asking it to go on.
    pub messages: Vec<Message>,
    pub max_tokens: u32,
    pub temperature: f32,
    /// A JSON schema the reply must follow, sent as `response_format` where the provider
    /// takes one (and always checked by the caller).
    pub schema: Option<Value>,
    /// The whole call; `None`: the client's `Deadlines::total`.
    pub deadline: Option<Duration>,
}

impl Request {
    /// One question.
    pub fn new(system: impl Into<String>, user: impl Into<String>) -> Request {
        Request {
            system: system.into(),
            messages: vec![Message::user(user)],
            max_tokens: 1024,
            temperature: 0.2,
            schema: None,
            deadline: None,
        }
    }
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn user(content: impl Into<String>) -> Message {
        Message { role: Role::User, content: content.into() }
    }
    pub fn assistant(content: impl Into<String>) -> Message {
        Message { role: Role::Assistant, content: content.into() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// How a provider is asked for JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonMode {
    /// `response_format: {type: json_schema}` (OpenAI, vLLM, recent llama.cpp).
    Schema,
    /// `response_format: {type: json_object, schema}` (llama-cpp-python, Ollama).
    Object,
    /// Only the prompt asks for JSON.
    Off,
}

/// Why the model stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Stop,
    /// Cut at `max_tokens`: the caller may ask it to continue.
    Length,
    Other,
}

/// A complete reply and what it cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub text: String,
    pub finish: Finish,
    pub tokens_in: u64,
    pub tokens_out: u64,
    /// Requests made, retries included.
    pub attempts: u32,
    pub duration: Duration,
}

/// Why a call gave no reply.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("{provider} ({model}) refused the request with HTTP {status}: {message}; hint: {hint}")]
    Refused { provider: String, model: String, status: u16, message: String, hint: &'static str },
    #[error("{provider} ({model}) failed {attempts} times; the last: {last}")]
    Exhausted { provider: String, model: String, attempts: u32, last: String },
    #[error(
        "{provider} ({model}) did not answer within {secs} s in all{}; hint: raise \
         llm.stages.<stage>.timeout_secs, or pick a faster model",
        last.as_deref().map(|m| format!(" (the last try: {m})")).unwrap_or_default()
    )]
    Deadline { provider: String, model: String, secs: u64, last: Option<String> },
    #[error("{provider} ({model}) refused the JSON response format with HTTP {status}: {message}")]
    JsonRefused { provider: String, model: String, status: u16, message: String },
}

impl LlmError {
    /// The provider that failed.
    pub fn provider(&self) -> &str {
        match self {
            LlmError::Refused { provider, .. }
            | LlmError::Exhausted { provider, .. }
            | LlmError::Deadline { provider, .. }
            | LlmError::JsonRefused { provider, .. } => provider,
        }
    }
}

/// One failed attempt, and whether another may help.
struct Failure {
    retry: bool,
    retry_after: Option<Duration>,
    message: String,
    status: Option<u16>,
    /// No connection could be made at all (refused, no route, DNS).
    unreachable: bool,
}

impl Failure {
    /// A failure of the connection or the stream, not of the request: worth another try.
    fn transient(message: String) -> Failure {
        Failure { retry: true, retry_after: None, message, status: None, unreachable: false }
    }
}

/// Makes model calls; one per process is enough (it pools connections).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    deadlines: Deadlines,
}

/// The HTTP client of every model call and transcription.
fn http_client(connect: Duration) -> Result<reqwest::Client, reqwest::Error> {
    // rustls with ring: reqwest is built without a default crypto provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(connect)
        .user_agent(concat!("protoforge/", env!("CARGO_PKG_VERSION")))
        .build()
}

impl Client {
    pub fn new(deadlines: Deadlines) -> Result<Client, reqwest::Error> {
        Ok(Client { http: http_client(deadlines.connect)?, deadlines })
    }

    /// Ask `provider`, retrying what may pass; `on_text` sees the reply as it streams.
    pub async fn chat(
        &self,
        provider: &Provider,
        request: &Request,
        on_text: impl FnMut(&str),
    ) -> Result<Reply, LlmError> {
        self.chat_in_chain(provider, request, on_text, false).await
    }

    /// [`Client::chat`]; when `others_follow`, a provider that cannot be reached at all is
    /// given up at once rather than retried: the next one is likely up, and the retries'
    /// waits would only delay it.
    pub async fn chat_in_chain(
        &self,
        provider: &Provider,
        request: &Request,
        mut on_text: impl FnMut(&str),
        others_follow: bool,
    ) -> Result<Reply, LlmError> {
        let start = Instant::now();
        let total = request.deadline.unwrap_or(self.deadlines.total);
        let deadline = start + total;
        let mut attempts = 0;
        let mut last_failure = None;
        loop {
            attempts += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt = tokio::time::timeout(left, self.attempt(provider, request, &mut on_text));
            let failure = match attempt.await {
                Err(_) => {
                    return Err(LlmError::Deadline {
                        provider: provider.name.clone(),
                        model: provider.model.clone(),
                        secs: total.as_secs(),
                        last: last_failure,
                    });
                }
                Ok(Ok(mut reply)) => {
                    reply.attempts = attempts;
                    reply.duration = start.elapsed();
                    return Ok(reply);
                }
                Ok(Err(f)) => f,
            };
            // A server that cannot do the JSON format refuses it outright (400, 422, 501), or
            // fails with a 500 that names it (llama.cpp's server and json_schema). A 500 that
            // does not is retried as usual, and only when it persists is the format suspected.
            let json_suspect = request.schema.is_some()
                && provider.degrade_json
                && provider.json != JsonMode::Off
                && match failure.status {
                    Some(400 | 422 | 501) => true,
                    Some(500) => names_json(&failure.message) || attempts > retry::MAX_RETRIES,
                    _ => false,
                };
            if json_suspect {
                return Err(LlmError::JsonRefused {
                    provider: provider.name.clone(),
                    model: provider.model.clone(),
                    status: failure.status.unwrap_or(0),
                    message: failure.message,
                });
            }
            if !failure.retry {
                let status = failure.status.unwrap_or(0);
                return Err(LlmError::Refused {
                    provider: provider.name.clone(),
                    model: provider.model.clone(),
                    status,
                    message: failure.message,
                    hint: match status {
                        401 | 403 => "check the API key in the provider's api_key_env variable",
                        404 => "check base_url (up to /v1) and the model name",
                        _ => "check the provider's settings; the request will not pass as is",
                    },
                });
            }
            if attempts > retry::MAX_RETRIES || (failure.unreachable && others_follow) {
                return Err(LlmError::Exhausted {
                    provider: provider.name.clone(),
                    model: provider.model.clone(),
                    attempts,
                    last: failure.message,
                });
            }
            let wait = retry::wait(attempts, failure.retry_after, retry::jitter());
            tracing::warn!(
                provider = %provider.name, attempt = attempts, wait_ms = wait.as_millis() as u64,
                "model call failed, retrying: {}", failure.message
            );
            if Instant::now() + wait >= deadline {
                return Err(LlmError::Deadline {
                    provider: provider.name.clone(),
                    model: provider.model.clone(),
                    secs: total.as_secs(),
                    last: Some(failure.message),
                });
            }
            last_failure = Some(failure.message);
            tokio::time::sleep(wait).await;
        }
    }

    async fn attempt(
        &self,
        p: &Provider,
        r: &Request,
        on_text: &mut impl FnMut(&str),
    ) -> Result<Reply, Failure> {
        let network = |e: reqwest::Error| Failure {
            unreachable: e.is_connect(),
            ..Failure::transient(format!("network error: {e}"))
        };
        let (url, body) = body(p, r);
        let mut req = self.http.post(&url).header("content-type", "application/json");
        if let Some(key) = &p.api_key {
            req = match p.kind {
                Kind::OpenAi => req.bearer_auth(key),
                Kind::Anthropic => req.header("x-api-key", key),
            };
        }
        if p.kind == Kind::Anthropic {
            req = req.header("anthropic-version", "2023-06-01");
        }
        for (k, v) in &p.headers {
            req = req.header(k, v);
        }
        let sent =
            tokio::time::timeout(self.deadlines.first_byte, req.body(body.to_string()).send());
        let mut response = match sent.await {
            Err(_) => {
                let secs = self.deadlines.first_byte.as_secs();
                return Err(Failure::transient(format!("no response within {secs} s")));
            }
            Ok(r) => r.map_err(network)?,
        };
        let status = response.status().as_u16();
        if retry::verdict(status) != retry::Verdict::Ok {
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| retry::retry_after(v, SystemTime::now()));
            let text = response.text().await.unwrap_or_default();
            return Err(Failure {
                retry: retry::verdict(status) == retry::Verdict::Retry,
                retry_after,
                message: format!("HTTP {status}: {}", error_message(&text)),
                status: Some(status),
                unreachable: false,
            });
        }
        let mut parser = sse::Parser::default();
        let mut reply = Reply {
            text: String::new(),
            finish: Finish::Other,
            tokens_in: 0,
            tokens_out: 0,
            attempts: 0,
            duration: Duration::ZERO,
        };
        let mut stream = Stream::default();
        while !stream.done && stream.error.is_none() {
            let chunk = tokio::time::timeout(self.deadlines.stall, response.chunk()).await;
            let chunk = match chunk {
                Err(_) => {
                    let secs = self.deadlines.stall.as_secs();
                    return Err(Failure::transient(format!("the stream stalled for {secs} s")));
                }
                Ok(c) => c.map_err(network)?,
            };
            let Some(bytes) = chunk else { break };
            let events = parser.push(&bytes).map_err(|e| Failure::transient(e.to_string()))?;
            for event in events {
                apply(p.kind, &event, &mut reply, on_text, &mut stream);
            }
        }
        if let Some(message) = stream.error {
            return Err(Failure::transient(format!("the server broke off the stream: {message}")));
        }
        if !stream.done && !stream.finished {
            return Err(Failure::transient("the stream ended before its end marker".into()));
        }
        Ok(reply)
    }
}

/// Does a server's error message blame the JSON response format?
fn names_json(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    ["response_format", "json_schema", "json_object", "schema", "grammar"]
        .iter()
        .any(|w| m.contains(w))
}

/// The endpoint and JSON body of a request in the provider's format.
fn body(p: &Provider, r: &Request) -> (String, Value) {
    let turns = r.messages.iter().map(|m| json!({"role": m.role.as_str(), "content": m.content}));
    match p.kind {
        Kind::OpenAi => {
            let mut messages = vec![json!({"role": "system", "content": r.system})];
            messages.extend(turns);
            let mut body = json!({
                "model": p.model,
                "stream": true,
                "stream_options": {"include_usage": true},
                "max_tokens": r.max_tokens,
                "temperature": r.temperature,
                "messages": messages,
            });
            match (&r.schema, p.json) {
                (Some(schema), JsonMode::Schema) => {
                    body["response_format"] = json!({
                        "type": "json_schema",
                        "json_schema": {"name": "answer", "schema": schema},
                    });
                }
                (Some(schema), JsonMode::Object) => {
                    body["response_format"] = json!({"type": "json_object", "schema": schema});
                }
                _ => {}
            }
            (format!("{}/chat/completions", p.base_url.trim_end_matches('/')), body)
        }
        Kind::Anthropic => (
            format!("{}/messages", p.base_url.trim_end_matches('/')),
            json!({
                "model": p.model,
                "stream": true,
                "max_tokens": r.max_tokens,
                "temperature": r.temperature,
                "system": r.system,
                "messages": turns.collect::<Vec<_>>(),
            }),
        ),
    }
}

/// Fold one event into the reply; true at the end of the stream.
/// How far a stream got.
#[derive(Default)]
struct Stream {
    /// The end marker (`[DONE]`, `message_stop`) arrived.
    done: bool,
    /// A finish reason arrived: a stream that ends after it is complete even without a marker.
    finished: bool,
    /// The server reported an error inside the stream.
    error: Option<String>,
}

fn apply(
    kind: Kind,
    event: &sse::Event,
    reply: &mut Reply,
    on_text: &mut impl FnMut(&str),
    stream: &mut Stream,
) {
    stream.done |= apply_event(kind, event, reply, on_text, &mut stream.error);
    stream.finished |= reply.finish != Finish::Other;
}

fn apply_event(
    kind: Kind,
    event: &sse::Event,
    reply: &mut Reply,
    on_text: &mut impl FnMut(&str),
    error: &mut Option<String>,
) -> bool {
    if kind == Kind::OpenAi && event.data.trim() == "[DONE]" {
        return true;
    }
    let Ok(v) = serde_json::from_str::<Value>(&event.data) else { return false };
    if event.name == "error" || v["type"] == "error" || v["error"].is_object() {
        *error = Some(error_message(&event.data));
        return false;
    }
    match kind {
        Kind::OpenAi => {
            if let Some(choice) = v["choices"].get(0) {
                if let Some(text) = choice["delta"]["content"].as_str() {
                    reply.text.push_str(text);
                    on_text(text);
                }
                if let Some(reason) = choice["finish_reason"].as_str() {
                    reply.finish = finish(reason);
                }
            }
            if let Some(usage) = v.get("usage").filter(|u| u.is_object()) {
                reply.tokens_in = usage["prompt_tokens"].as_u64().unwrap_or(reply.tokens_in);
                reply.tokens_out = usage["completion_tokens"].as_u64().unwrap_or(reply.tokens_out);
            }
            false
        }
        Kind::Anthropic => match v["type"].as_str().unwrap_or(&event.name) {
            "message_start" => {
                reply.tokens_in = v["message"]["usage"]["input_tokens"].as_u64().unwrap_or(0);
                false
            }
            "content_block_delta" => {
                if let Some(text) = v["delta"]["text"].as_str() {
                    reply.text.push_str(text);
                    on_text(text);
                }
                false
            }
            "message_delta" => {
                if let Some(reason) = v["delta"]["stop_reason"].as_str() {
                    reply.finish = finish(reason);
                }
                reply.tokens_out = v["usage"]["output_tokens"].as_u64().unwrap_or(reply.tokens_out);
                false
            }
            "message_stop" => true,
            _ => false,
        },
    }
}

fn finish(reason: &str) -> Finish {
    match reason {
        "stop" | "end_turn" | "stop_sequence" => Finish::Stop,
        "length" | "max_tokens" => Finish::Length,
        _ => Finish::Other,
    }
}

/// The message of an API error body (`{"error": {"message": …}}` in both formats), short.
fn error_message(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let message =
        v["error"]["message"].as_str().map(str::to_owned).unwrap_or_else(|| body.to_owned());
    let mut short: String = message.chars().take(300).collect();
    if short.len() < message.len() {
        short.push('…');
    }
    short
}

#[cfg(test)]
mod tests;

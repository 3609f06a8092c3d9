//! The AI generator: analysis → html → (css ∥ js) → content, each a model call that is
//! extracted, validated, repaired and, as a last resort, replaced by the template output of
//! that stage alone.
//!
//! Invariants:
//! - a job always yields the three files of a site: no model failure, refusal, timeout or
//!   nonsense fails the job (the template generator is the floor);
//! - each stage makes at most `1 + max_repairs` asks, each at most `1 + max_continuations`
//!   calls, each at most `1 + MAX_RETRIES` requests, all within the stage's timeout;
//! - the job's tokens (in + out) stay within `job_token_budget`: once spent, the remaining
//!   stages use the templates;
//! - CSS and JS both read only the HTML, so they run concurrently: a job's critical path is
//!   four model calls, not five;
//! - every stage leaves a [`StageRecord`] that says who answered, what it cost, and why it
//!   fell back; the generator is `ai` only when every stage used the model's output.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use serde_json::{Value, json};

use super::prompt::{self, Prompts};
use super::spec::{self, Spec};
use super::validate::{self, Verdict};
use super::{Analysis, Outcome, Palette, StageRecord};
use crate::config::LlmConfig;
use crate::inbox::Job;
use crate::llm::extract::{Want, extract, join_continuation};
use crate::llm::{Chain, Message, Request};
use crate::templates::{Layouts, TemplateError};

const CONTINUE: &str = "Continue exactly where you stopped, with no repetition and no preamble.";

/// The model side of the builder: the provider chain, the prompts and the runtime that
/// drives the calls.
pub struct Ai {
    chain: Chain,
    transcriber: Option<crate::llm::transcribe::Transcriber>,
    prompts: Prompts,
    config: LlmConfig,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Ai {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ai").field("chain", &self.chain).finish_non_exhaustive()
    }
}

/// Why the AI generator cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum AiError {
    #[error(transparent)]
    Setup(#[from] crate::llm::chain::SetupError),
    #[error(transparent)]
    Prompt(#[from] prompt::PromptError),
    #[error("cannot start the runtime for model calls: {0}")]
    Runtime(std::io::Error),
}

/// What one job gives the generator.
pub struct Input<'a> {
    pub job: &'a Job,
    /// The rule-based analysis: the fallback plan, and the template pages' content.
    pub analysis: Analysis,
    pub layouts: &'a Layouts,
    pub project_id: &'a str,
    pub expires_on: NaiveDate,
    pub show_contact: bool,
    /// Called as each stage starts, with a percentage of the job.
    pub progress: &'a dyn Fn(&'static str, u8),
}

/// The site's three files and how they were made.
#[derive(Debug)]
pub struct Output {
    pub index_html: String,
    pub styles_css: String,
    pub script_js: Vec<u8>,
    /// The analysis, with the plan's identity (kind, name, tagline, palette) applied.
    pub analysis: Analysis,
    /// The template layout whose output was used, if any stage fell back to it.
    pub layout: String,
    pub records: Vec<StageRecord>,
    /// `ai`, `mixed` or `template`.
    pub mode: &'static str,
    /// `name (model)` of every provider that answered, in order of first use.
    pub providers: Vec<String>,
    pub warnings: Vec<String>,
    pub spec: Spec,
}

impl Ai {
    /// The AI generator of a config, or `None` when no provider is configured.
    pub fn from_config(
        config: &LlmConfig,
        prompts_dir: &std::path::Path,
    ) -> Result<Option<Ai>, AiError> {
        let env = |var: &str| std::env::var(var).ok();
        let Some(chain) = Chain::from_config(config, env)? else {
            return Ok(None);
        };
        let mut ai = Ai::new(chain, Prompts::load(prompts_dir)?, config.clone())?;
        ai.transcriber =
            crate::llm::transcribe::Transcriber::from_config(&config.transcription, env)?;
        Ok(Some(ai))
    }

    pub fn new(chain: Chain, prompts: Prompts, config: LlmConfig) -> Result<Ai, AiError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(AiError::Runtime)?;
        Ok(Ai { chain, transcriber: None, prompts, config, runtime })
    }

    pub fn chain(&self) -> &Chain {
        &self.chain
    }

    /// `protoforge llm test`: ask each provider a tiny question.
    pub fn probe(&self) -> Vec<crate::llm::chain::Probe> {
        self.runtime.block_on(self.chain.probe())
    }

    pub fn prompt_sha256(&self) -> &BTreeMap<String, String> {
        self.prompts.sha256()
    }

    /// Make a site; only a broken layout set (which preflight rules out) is an error.
    pub fn generate(&self, input: Input<'_>) -> Result<Output, TemplateError> {
        self.runtime.block_on(self.run(input))
    }

    async fn run(&self, input: Input<'_>) -> Result<Output, TemplateError> {
        let Input { job, mut analysis, layouts, project_id, expires_on, show_contact, progress } =
            input;
        let budget = Budget { left: Cell::new(self.config.job_token_budget) };
        let bounds = prompt::Bounds {
            per_document: self.config.max_document_bytes as usize,
            total: self.config.max_context_bytes as usize,
        };
        let mut records = Vec::new();
        let transcripts = self.transcribe(job, &analysis.lang, &mut records).await;
        let request = prompt::request(job, show_contact, bounds, &transcripts);
        let mut warnings: Vec<String> = request.notes.clone();

        // 1. analysis → the plan.
        progress("analysis", 10);
        let (lang, dir) = (analysis.lang.clone(), analysis.dir);
        let context = json!({
            "language": lang, "dir": dir, "request": request.text,
            "kinds": super::SiteKind::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", "),
            "features": spec::FEATURES.join(", "),
            "schema": serde_json::to_string(&spec::schema()).expect("the schema serializes"),
        });
        let submission_text = request.text.clone();
        let (spec, record) = self
            .stage(
                Ask { schema: Some(spec::schema()), ..Ask::new("analysis", &context, Want::Json) },
                &budget,
                |text| {
                    let mut spec = match Spec::parse(text) {
                        Ok(s) => s,
                        Err(problems) => return (Verdict { must: problems, should: vec![] }, None),
                    };
                    let problems = spec.check(&submission_text, &lang, dir);
                    (Verdict { must: problems, should: vec![] }, Some(spec))
                },
            )
            .await;
        records.push(record);
        let spec = spec.unwrap_or_else(|| Spec::from_analysis(&analysis));
        spec.apply(&mut analysis);
        if analysis.palette.source == "kind"
            && let Some(p) = Palette::from_colors(
                &[
                    spec.palette.primary.to_ascii_lowercase(),
                    spec.palette.accent.to_ascii_lowercase(),
                ],
                "model",
            )
        {
            analysis.palette = p;
        }
        // The template output: each stage's fallback.
        let rendered = layouts.render(&analysis, project_id, expires_on)?;

        // 2. html.
        progress("html", 25);
        let images: Vec<Value> = analysis
            .logo
            .iter()
            .chain(&analysis.images)
            .map(|i| json!({"path": i.src, "description": prompt::data(&one_line(&i.alt, 200))}))
            .collect();
        let context = json!({
            "language": analysis.lang, "dir": analysis.dir,
            "plan": prompt::data(&serde_json::to_string_pretty(&spec).expect("a spec serializes")),
            "request": request.text, "images": images,
            "sections": spec.sections.iter().map(|s| s.id.as_str()).collect::<Vec<_>>().join(", "),
        });
        let (html, mut record) = self
            .stage(Ask::new("html", &context, Want::Html), &budget, |text| {
                let shape = validate::shape(text);
                (validate::html(&shape, &spec), Some(text.to_owned()))
            })
            .await;
        let Some(html) = html else {
            // The template's page comes with the template's stylesheet and script.
            record.reason.get_or_insert_with(|| "no valid page".into());
            records.push(record);
            for name in ["css", "js", "content"] {
                let mut r = StageRecord::new(name);
                r.outcome = Outcome::Fallback;
                r.reason = Some("the page came from the template, so this stage did too".into());
                records.push(r);
            }
            return Ok(finish(rendered, analysis, records, warnings, spec));
        };
        records.push(record);
        let shape = validate::shape(&html);

        // 3. css ∥ js: both read only the page.
        progress("css+js", 50);
        let p = &analysis.palette;
        let palette = format!(
            "--primary: {}; --on-primary: {}; --accent: {}; --on-accent: {}; --bg: {}; \
             --surface: {}; --text: {}; --muted: {}; --border: {}",
            p.primary,
            p.on_primary,
            p.accent,
            p.on_accent,
            p.background,
            p.surface,
            p.text,
            p.muted,
            p.border
        );
        let classes = names(&shape.classes, ".");
        // The page a model wrote from customer text is data to the next stages too.
        let page = prompt::data(&html);
        let css_context = json!({"html": page, "palette": palette, "classes": classes});
        let js_context = json!({
            "html": page,
            "features": if spec.features.is_empty() { "nav-toggle".into() } else { spec.features.join(", ") },
            "ids": names(&shape.ids, "#"), "classes": classes,
        });
        let css = self.stage(Ask::new("css", &css_context, Want::Css), &budget, |text| {
            (validate::css(text, &shape), Some(text.to_owned()))
        });
        let js = self.stage(Ask::new("js", &js_context, Want::Js), &budget, |text| {
            (validate::js(text, &shape), Some(text.to_owned()))
        });
        let ((css, css_record), (js, js_record)) = tokio::join!(css, js);
        records.push(css_record);
        records.push(js_record);
        let styles_css = match css {
            Some(css) => css,
            None => layouts.stylesheet(&analysis, "semantic")?,
        };
        let script_js = js.map(String::into_bytes).unwrap_or_else(|| rendered.script_js.clone());

        // 4. content: polish the words, keep the outline.
        progress("content", 75);
        let context = json!({"html": page, "language": analysis.lang, "request": request.text});
        let (polished, record) = self
            .stage(Ask::new("content", &context, Want::Html), &budget, |text| {
                let after = validate::shape(text);
                let mut v = validate::same_outline(&shape, &after);
                v.must.extend(validate::html(&after, &spec).must);
                (v, Some(text.to_owned()))
            })
            .await;
        records.push(record);
        let index_html = polished.unwrap_or(html);
        warnings.extend(fallback_warnings(&records));
        let mode = mode(&records);
        Ok(Output {
            index_html,
            styles_css,
            script_js,
            analysis,
            layout: if mode == "ai" { "ai".into() } else { rendered.layout },
            providers: providers(&records),
            records,
            mode,
            warnings,
            spec,
        })
    }

    /// The text of each audio attachment, by attachment path, when a transcription server
    /// is configured; one record for them all.
    async fn transcribe(
        &self,
        job: &Job,
        lang: &str,
        records: &mut Vec<StageRecord>,
    ) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(t) = &self.transcriber else { return out };
        let audio: Vec<_> = job
            .attachments
            .iter()
            .filter(|a| a.attachment.kind == crate::submission::AttachmentKind::Audio)
            .collect();
        if audio.is_empty() {
            return out;
        }
        let start = Instant::now();
        let mut record = StageRecord::new("transcribe");
        let mut failures = Vec::new();
        for a in audio {
            record.attempts += 1;
            match t.transcribe(&a.file, lang).await {
                Ok(text) => {
                    record.tokens_out += text.len() as u64 / 4;
                    out.insert(a.attachment.path.clone(), text);
                }
                Err(e) => {
                    let name = a.attachment.path.rsplit('/').next().unwrap_or("audio");
                    failures.push(format!("{name}: {e}"));
                }
            }
        }
        if !failures.is_empty() {
            record.outcome = Outcome::Fallback;
            record.reason = Some(failures.join("; "));
        }
        record.set_duration(start.elapsed());
        records.push(record);
        out
    }

    /// One stage: ask, continue cut replies, extract, validate, re-ask with the diagnosis;
    /// `None` when no reply passed (the caller falls back).
    async fn stage<T>(
        &self,
        ask: Ask<'_>,
        budget: &Budget,
        check: impl Fn(&str) -> (Verdict, Option<T>),
    ) -> (Option<T>, StageRecord) {
        let start = Instant::now();
        let mut record = StageRecord::new(ask.name);
        let cfg = self.config.stages.get(ask.name);
        let timeout = Duration::from_secs(cfg.timeout_secs);
        let asked = tokio::time::timeout(
            timeout,
            self.ask(&ask, budget, &check, &mut record, start + timeout),
        )
        .await;
        let value = match asked {
            Ok(Ok(value)) => Some(value),
            Ok(Err(reason)) => {
                record.reason = Some(reason);
                None
            }
            Err(_) => {
                let by = record.provider.as_deref().map(|p| format!(" waiting for {p}"));
                record.reason = Some(format!(
                    "timed out after {} s{} (llm.stages.{}.timeout_secs)",
                    cfg.timeout_secs,
                    by.unwrap_or_default(),
                    ask.name
                ));
                None
            }
        };
        record.outcome = if value.is_some() { Outcome::Ok } else { Outcome::Fallback };
        record.set_duration(start.elapsed());
        (value, record)
    }

    async fn ask<T>(
        &self,
        ask: &Ask<'_>,
        budget: &Budget,
        check: &impl Fn(&str) -> (Verdict, Option<T>),
        record: &mut StageRecord,
        deadline: Instant,
    ) -> Result<T, String> {
        let Ask { name, context, want, schema } = ask;
        let (name, want) = (*name, *want);
        let cfg = self.config.stages.get(name);
        let prompt = self.prompts.render(name, context).map_err(|e| e.to_string())?;
        let mut messages = vec![Message::user(prompt)];
        let mut last = String::new();
        for repair in 0..=self.config.max_repairs {
            record.repairs = repair;
            // One answer, continued while it was cut at max_tokens.
            let mut text = String::new();
            let mut continuations = 0;
            loop {
                // A call may not spend more than is left: max_tokens is cut to the rest.
                let left = budget.left.get();
                if left < MIN_CALL_TOKENS {
                    return Err(format!(
                        "the job's token budget (llm.job_token_budget = {}) is spent",
                        self.config.job_token_budget
                    ));
                }
                let mut turns = messages.clone();
                if !text.is_empty() {
                    turns.push(Message::assistant(text.clone()));
                    turns.push(Message::user(CONTINUE));
                }
                let request = Request {
                    system: prompt::system(name),
                    messages: turns,
                    max_tokens: cfg.max_tokens.min(u32::try_from(left).unwrap_or(u32::MAX)),
                    temperature: cfg.temperature,
                    // A continuation carries on the text; a schema would make it start over.
                    schema: if text.is_empty() { schema.clone() } else { None },
                    deadline: Some(deadline.saturating_duration_since(Instant::now())),
                };
                // Every byte streamed, the attempts that broke off included: those were
                // generated, and paid for, too.
                let mut streamed = 0u64;
                let answer = self.chain.chat(&request, |t| streamed += t.len() as u64).await;
                let prompt_estimate = (request.system.len() as u64
                    + request.messages.iter().map(|m| m.content.len() as u64).sum::<u64>())
                    / 4;
                let answer = match answer {
                    Ok(answer) => answer,
                    Err(e) => {
                        charge_broken(record, budget, streamed, prompt_estimate);
                        return Err(e.to_string());
                    }
                };
                let reply = &answer.reply;
                record.attempts += reply.attempts;
                charge_broken(
                    record,
                    budget,
                    streamed.saturating_sub(reply.text.len() as u64),
                    prompt_estimate,
                );
                // Servers that report no usage are charged by length (about 4 bytes a token).
                let tokens_in = if reply.tokens_in > 0 { reply.tokens_in } else { prompt_estimate };
                let tokens_out = if reply.tokens_out > 0 {
                    reply.tokens_out
                } else {
                    reply.text.len() as u64 / 4
                };
                record.tokens_in += tokens_in;
                record.tokens_out += tokens_out;
                budget.spend(tokens_in + tokens_out);
                record.provider = Some(format!("{} ({})", answer.provider, answer.model));
                text = join_continuation(&text, &reply.text);
                if reply.finish == crate::llm::Finish::Length
                    && continuations < self.config.max_continuations
                {
                    continuations += 1;
                    record.continuations += 1;
                    continue;
                }
                break;
            }
            let verdict = match extract(&text, want) {
                None => Verdict {
                    must: vec![format!(
                        "The answer contained no {}. Answer with the {} only.",
                        what(want),
                        what(want)
                    )],
                    should: vec![],
                },
                Some(found) => {
                    for note in found.notes {
                        if !record.extracted.contains(&note) {
                            record.extracted.push(note);
                        }
                    }
                    let (verdict, value) = check(&found.text);
                    if verdict.passed()
                        && let Some(value) = value
                    {
                        return Ok(value);
                    }
                    verdict
                }
            };
            last = verdict.diagnosis();
            tracing::info!(stage = name, repair, "the reply failed validation:\n{last}");
            messages.push(Message::assistant(text));
            messages.push(Message::user(format!(
                "Your answer has these problems:\n{last}\n\nAnswer again with the whole \
                 corrected {} only.",
                what(want)
            )));
        }
        Err(format!(
            "no valid reply after {} repair(s); the last problems: {}",
            self.config.max_repairs,
            last.replace('\n', " ")
        ))
    }
}

/// What one stage asks: its prompt's variables, the kind of file, and a JSON schema.
struct Ask<'a> {
    name: &'static str,
    context: &'a Value,
    want: Want,
    schema: Option<Value>,
}

impl<'a> Ask<'a> {
    fn new(name: &'static str, context: &'a Value, want: Want) -> Ask<'a> {
        Ask { name, context, want, schema: None }
    }
}

/// Charge what attempts that broke off mid-stream generated: a server reports no
/// usage for them, so they are estimated (about 4 bytes a token; the prompt once,
/// however many broke off). A budget must count them, or a provider that keeps
/// cutting its streams would spend without limit.
fn charge_broken(record: &mut StageRecord, budget: &Budget, bytes: u64, prompt_estimate: u64) {
    if bytes == 0 {
        return;
    }
    let out = bytes.div_ceil(4);
    record.tokens_in += prompt_estimate;
    record.tokens_out += out;
    budget.spend(prompt_estimate + out);
}

fn what(want: Want) -> &'static str {
    match want {
        Want::Html => "HTML document",
        Want::Css => "CSS",
        Want::Js => "JavaScript",
        Want::Json => "JSON object",
    }
}

/// The tokens a job may still spend; shared by the concurrent CSS and JS stages.
struct Budget {
    left: Cell<u64>,
}

impl Budget {
    fn spend(&self, tokens: u64) {
        self.left.set(self.left.get().saturating_sub(tokens));
    }
}

/// Below this many tokens left, a call could not say anything useful: the stage falls back.
const MIN_CALL_TOKENS: u64 = 16;

/// `text` on one line, at most `max` characters: a customer's image description stays a
/// description, not a paragraph of instructions.
fn one_line(text: &str, max: usize) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(max).collect()
}

fn names(set: &BTreeSet<String>, prefix: &str) -> String {
    if set.is_empty() {
        return "(none)".into();
    }
    set.iter().map(|n| format!("{prefix}{n}")).collect::<Vec<_>>().join(", ")
}

/// `ai` when every generating stage used the model's output, `template` when none did.
fn mode(records: &[StageRecord]) -> &'static str {
    let stages: Vec<_> =
        records.iter().filter(|r| super::PROMPT_STAGES.contains(&r.name)).collect();
    let used = stages.iter().filter(|r| r.outcome == Outcome::Ok).count();
    match used {
        0 => "template",
        n if n == stages.len() => "ai",
        _ => "mixed",
    }
}

fn providers(records: &[StageRecord]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in records.iter().filter(|r| r.outcome == Outcome::Ok).filter_map(|r| r.provider.clone())
    {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// A warning for each stage that fell back, with its reason.
fn fallback_warnings(records: &[StageRecord]) -> impl Iterator<Item = String> + '_ {
    records.iter().filter(|r| r.outcome == Outcome::Fallback).filter_map(|r| {
        let reason = r.reason.as_ref()?;
        Some(if r.name == "transcribe" {
            format!("audio not transcribed: {reason}")
        } else {
            format!("stage {} used the template output: {reason}", r.name)
        })
    })
}

/// The whole site from the templates, after the html stage fell back.
fn finish(
    rendered: crate::templates::Rendered,
    analysis: Analysis,
    records: Vec<StageRecord>,
    mut warnings: Vec<String>,
    spec: Spec,
) -> Output {
    warnings.extend(fallback_warnings(&records));
    Output {
        index_html: rendered.index_html,
        styles_css: rendered.styles_css,
        script_js: rendered.script_js,
        analysis,
        layout: rendered.layout,
        mode: mode(&records),
        providers: providers(&records),
        records,
        warnings,
        spec,
    }
}

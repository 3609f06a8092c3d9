//! The stages a job goes through, and what each one records.
//!
//! Two generators share this module. The rule-based one: [`analyze`] reads the
//! submission into an [`Analysis`], and [`crate::templates`] renders it. The AI one
//! ([`ai`]): a model plans a [`spec::Spec`], writes the HTML, then the CSS and the JS
//! concurrently, then polishes the content; [`validate`] checks each reply, and any stage
//! that cannot be made valid falls back to the rule-based output for that stage only.
//!
//! Invariants:
//! - an `Analysis` holds the customer's text verbatim (it is escaped where
//!   it lands, never here) and no contact details unless configured;
//! - every stage leaves a [`StageRecord`] for `metadata.json`.

pub mod ai;
pub mod analyze;
pub mod palette;
pub mod prompt;
pub mod spec;
pub mod validate;

use std::time::Instant;

use serde::Serialize;

pub use analyze::{
    Analysis, Facts, Hours, Image, Item, Price, Section, SectionKind, SiteKind, analyze,
};
pub use palette::Palette;

/// Figures of one stage, as `metadata.json` lists them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageRecord {
    pub name: &'static str,
    pub duration_ms: f64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub attempts: u32,
    pub outcome: Outcome,
    /// The model that answered (AI stages).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// "Continue" requests after replies cut at `max_tokens`.
    #[serde(skip_serializing_if = "is_zero")]
    pub continuations: u32,
    /// Re-asks after a reply failed validation.
    #[serde(skip_serializing_if = "is_zero")]
    pub repairs: u32,
    /// What the extractor cut from the reply ("fence", "prose", "think"…).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extracted: Vec<&'static str>,
    /// Why the stage fell back, or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl StageRecord {
    pub fn new(name: &'static str) -> StageRecord {
        StageRecord {
            name,
            duration_ms: 0.0,
            tokens_in: 0,
            tokens_out: 0,
            attempts: 0,
            outcome: Outcome::Ok,
            provider: None,
            continuations: 0,
            repairs: 0,
            extracted: Vec::new(),
            reason: None,
        }
    }

    pub fn set_duration(&mut self, d: std::time::Duration) {
        self.duration_ms = (d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Fallback,
    Failed,
}

/// Time `f` as stage `name` and append its record.
pub fn timed<T, E>(
    records: &mut Vec<StageRecord>,
    name: &'static str,
    f: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    let start = Instant::now();
    let result = f();
    let mut record = StageRecord::new(name);
    record.set_duration(start.elapsed());
    record.attempts = 1;
    record.outcome = if result.is_ok() { Outcome::Ok } else { Outcome::Failed };
    records.push(record);
    result
}

/// The stages whose prompts must exist (for the LLM generator).
pub const PROMPT_STAGES: &[&str] = &["analysis", "html", "css", "js", "content"];

/// An analysis of the bundled bakery example with one section of every
/// kind, so that `check` exercises every part of every layout.
pub fn sample_analysis(layouts: &crate::templates::Layouts) -> Analysis {
    use std::path::Path;
    let text = include_str!("../../examples/01-bakery.yaml");
    let parsed = crate::submission::Submission::parse(text, Path::new("sample.yaml"), "")
        .expect("the bundled example is valid");
    let job = crate::inbox::Job {
        path: "sample.yaml".into(),
        submitted_at: chrono::Utc::now(),
        parsed,
        attachments: Vec::new(),
    };
    let mut a = analyze(&job, &layouts.strings("en"), "en", true);
    let item = |name: &str, price: Option<&str>, category: Option<&str>| Item {
        name: name.into(),
        detail: Some("Detail".into()),
        price: price.map(String::from),
        category: category.map(String::from),
        image: Some(Image { src: "assets/images/sample.png".into(), alt: "Sample".into() }),
    };
    for kind in analyze::ALL_SECTION_KINDS {
        if a.sections.iter().any(|s| s.kind == *kind) {
            continue;
        }
        a.sections.push(Section {
            id: format!("sample-{}", kind.as_str()),
            kind: *kind,
            title: kind.as_str().into(),
            lead: Some("Lead".into()),
            paragraphs: vec!["Paragraph.".into()],
            items: vec![item("One", Some("$12"), Some("A")), item("Two", None, None)],
        });
    }
    a.logo = Some(Image { src: "assets/images/logo.png".into(), alt: "Logo".into() });
    a.images = vec![Image { src: "assets/images/sample.png".into(), alt: "Sample".into() }];
    a.facts.prices.push(Price { label: "Pro".into(), amount: "$12".into() });
    a
}

/// Problems with the prompts: each stage's prompt must exist (built in or in
/// `dir`), be UTF-8 and parse as a template.
pub fn check_prompts(dir: &std::path::Path) -> Vec<String> {
    let mut problems = Vec::new();
    for stage in PROMPT_STAGES {
        let name = format!("{stage}.md");
        let local = dir.join(&name);
        let text = if local.is_file() {
            match std::fs::read(&local).map(String::from_utf8) {
                Ok(Ok(t)) => t,
                _ => {
                    problems.push(format!("{}: cannot be read as UTF-8 text", local.display()));
                    continue;
                }
            }
        } else if let Some((_, bytes)) = crate::templates::PROMPTS.iter().find(|(n, _)| *n == name)
        {
            String::from_utf8_lossy(bytes).into_owned()
        } else {
            problems
                .push(format!("{}: missing; restore it with `protoforge init`", local.display()));
            continue;
        };
        if text.trim().is_empty() {
            problems.push(format!("{}: is empty", local.display()));
        } else if let Err(e) = tera::Tera::new().add_raw_template(&name, &text) {
            problems.push(format!("{}: does not parse as a template: {e}", local.display()));
        }
    }
    if problems.is_empty()
        && let Ok(prompts) = prompt::Prompts::load(dir)
    {
        for stage in PROMPT_STAGES {
            if let Err(e) = prompts.render(stage, &prompt::sample_context()) {
                problems.push(format!("{}: {e}", dir.join(format!("{stage}.md")).display()));
            }
        }
    }
    problems
}

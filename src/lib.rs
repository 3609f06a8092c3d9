//! protoforge turns contact-form submissions into small static prototype
//! websites, with git as the queue, the store and the audit log.
//!
//! The modules follow the data flow, one step each (see ARCHITECTURE.md):
//!
//! 1. [`submission`] parses and validates one inbox YAML file and derives its
//!    project id and submission hash.
//! 2. [`inbox`] lists, accepts (atomic, durable writes) and rejects files in
//!    `inbox/`; it is the only module that touches the inbox on disk.
//! 3. [`builder`] takes one pending job at a time, oldest first, and drives it
//!    through the stages; "pending" is read off the branch, never kept aside.
//! 4. [`stages`] holds the rule-based analysis, the AI stages ([`stages::ai`]:
//!    analysis → html → css ∥ js → content, validated and repaired, with a per-stage
//!    template fallback) and the per-stage figures.
//! 5. [`templates`] renders the analysis through the tera layouts.
//! 6. [`finalize`] is the gate every site passes: images decoded and
//!    re-encoded, every page rewritten with lol_html, then parsed with
//!    html5ever and verified, and the site's checks recorded.
//! 7. [`publish`] commits a site to the `prototypes` branch with gix, by
//!    compare-and-swap on the ref.
//!
//! [`config`] loads `protoforge.yaml`; [`scaffold`] creates a new site repo;
//! [`llm`] makes streamed, retried, deadline-bound model calls (OpenAI-compatible
//! or Anthropic) for the AI stages.
#![forbid(unsafe_code)]

pub mod builder;
pub mod config;
pub mod export;
pub mod finalize;
pub mod inbox;
pub mod llm;
pub mod prune;
pub mod publish;
pub mod scaffold;
pub mod serve;
pub mod stages;
pub mod submission;
pub mod templates;
pub mod webhook;

//! End-to-end tests: the real `protoforge` binary on real temporary git
//! repos, checked with the git CLI.

#[path = "../support/fake_llm.rs"]
mod fake_llm;
#[path = "../support/listening.rs"]
mod listening;
mod util;

mod build;
mod commands;
mod crash;
mod export;
mod finalize;
mod invalid;
mod llm;
mod prune;
mod push;
mod serve;
mod watch;
mod webhook;
mod webhook_load;
mod workflows;

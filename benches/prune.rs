//! Benchmark of one pruning pass, printed as a figure (no timing
//! assertion): `cargo bench --bench prune`.
//!
//! The branch holds 10,000 sites (one prefill commit; the pages are shared,
//! each `metadata.json` is the site's own) and their `submissions/` records;
//! 1,000 of the sites have expired. One pass reads every site's expiry,
//! removes the 1,000 in one commit and scans the (empty) inbox. The branch
//! is reset to the prefill commit and the workspace reopened (cold caches)
//! before every pass. Target: under 1 s.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use protoforge::builder::{self, Workspace};
use protoforge::publish::TreeEdit;
use protoforge::{prune, scaffold, templates};

const SITES: usize = 10_000;
const EXPIRED: usize = 1_000;
const RUNS: usize = 7;

fn prefill(dir: &Path) -> String {
    scaffold::init(dir).expect("init");
    let example =
        templates::examples().find(|(name, _)| name.ends_with(".yaml")).expect("a bundled example");
    let inbox = dir.join("inbox");
    std::fs::write(inbox.join("example.yaml"), example.1).expect("write example");
    let ws = Workspace::open(dir, None).expect("open workspace");
    let job = ws.inbox.load(&inbox.join("example.yaml")).expect("load example");
    std::fs::remove_file(inbox.join("example.yaml")).expect("empty the inbox again");
    let now = Utc::now();
    let site = builder::generate(&ws, &job, now).expect("generate");
    let metadata = site
        .files
        .iter()
        .find(|(p, _)| p == "metadata.json")
        .map(|(_, b)| String::from_utf8(b.clone()).expect("UTF-8"))
        .expect("metadata.json");
    let pages: Vec<(String, Vec<u8>)> =
        site.files.iter().filter(|(p, _)| p != "metadata.json").cloned().collect();
    let past = builder::rfc3339(now - TimeDelta::days(1));
    let future = builder::rfc3339(site.expires_at);
    let mut edits = Vec::with_capacity(SITES * 2);
    for i in 0..SITES {
        let id = format!("bench-{i:05}-aaaaaaaa");
        let expires = if i % (SITES / EXPIRED) == 0 { &past } else { &future };
        let meta = metadata.replace(&job.parsed.project_id, &id).replace(
            &format!("\"expires_at\": \"{future}\""),
            &format!("\"expires_at\": \"{expires}\""),
        );
        let mut files = pages.clone();
        files.push(("metadata.json".into(), meta.into_bytes()));
        edits.push(TreeEdit::PutDir { path: builder::site_dir(&id), files });
        let sha = format!("{i:064x}");
        edits.push(TreeEdit::PutFile {
            path: builder::index_path(&sha),
            bytes: format!("{id}\n").into_bytes(),
        });
    }
    ws.store.commit(None, "prefill", &edits).expect("prefill").to_string()
}

fn reset(dir: &Path, commit: &str) {
    let status = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["update-ref", "refs/heads/prototypes", commit])
        .status()
        .expect("git runs");
    assert!(status.success(), "git update-ref failed");
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let t = Instant::now();
    let prefill_commit = prefill(dir.path());
    println!(
        "prefill: {SITES} sites ({EXPIRED} expired) + their submission records in one commit, {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let (mut times, mut dry): (Vec<Duration>, Vec<Duration>) = Default::default();
    for run in 0..RUNS {
        reset(dir.path(), &prefill_commit);
        // The same pass as a dry run first: what reading every site's expiry costs.
        let ws = Workspace::open(dir.path(), None).expect("open workspace");
        let t = Instant::now();
        let report = prune::prune(&ws, Utc::now(), true).expect("dry run");
        dry.push(t.elapsed());
        assert_eq!(report.expired.len(), EXPIRED, "run {run}");
        let ws = Workspace::open(dir.path(), None).expect("open workspace");
        let t = Instant::now();
        let report = prune::prune(&ws, Utc::now(), false).expect("prune");
        let elapsed = t.elapsed();
        assert_eq!(report.expired.len(), EXPIRED, "run {run}");
        assert!(report.commit.is_some());
        times.push(elapsed);
    }
    dry.sort();
    let ws = Workspace::open(dir.path(), None).expect("open workspace");
    let left = ws.store.snapshot().expect("snapshot").list_dir("sites").expect("list").len();
    assert_eq!(left, SITES - EXPIRED);
    times.sort();
    println!(
        "prune {EXPIRED} expired of {SITES} sites (one commit): median {:.0} ms, min {:.0} ms, max {:.0} ms over {RUNS} runs (target < 1000 ms)",
        times[RUNS / 2].as_secs_f64() * 1000.0,
        times[0].as_secs_f64() * 1000.0,
        times[RUNS - 1].as_secs_f64() * 1000.0,
    );
    println!(
        "  of which reading: the same pass as a dry run, median {:.0} ms",
        dry[RUNS / 2].as_secs_f64() * 1000.0
    );
}

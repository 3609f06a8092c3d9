//! kill -9 the builder in the middle of its work, restart it, and compare
//! with an uninterrupted run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::util::*;

const JOBS: usize = 24;

fn fill(repo: &Repo) {
    for i in 0..JOBS {
        repo.write_inbox(
            &format!("job-{i:02}.yaml"),
            format!(
                "company: Crash Test {i}\ndescription: |\n  We are shop number {i}. We sell things (cups, plates, bowls).\nsubmitted_at: 2026-11-01T{:02}:{:02}:00Z\n",
                i / 60,
                i % 60
            ),
        );
    }
}

/// Every site's files, with the times that differ between runs blanked.
fn state(repo: &Repo) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let listing = repo.git(&["ls-tree", "-r", "prototypes", "sites/"]);
    for line in listing.lines() {
        let (meta, path) = line.split_once('\t').unwrap();
        let blob = meta.split_whitespace().nth(2).unwrap();
        let value = if path.ends_with("metadata.json") || path.ends_with("index.html") {
            // Times and the expiry date on the banner differ between runs.
            let text = repo.git(&["cat-file", "-p", blob]);
            let mut v: serde_json::Value =
                serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text.clone()));
            if let Some(o) = v.as_object_mut() {
                for k in ["created_at", "expires_at", "stages"] {
                    o.remove(k);
                }
            }
            let s = v.to_string();
            blank_dates(&s)
        } else {
            blob.to_string()
        };
        out.insert(path.to_string(), value);
    }
    out
}

fn blank_dates(s: &str) -> String {
    let re = regex::Regex::new(r"\d{4}-\d{2}-\d{2}").unwrap();
    re.replace_all(s, "DATE").into_owned()
}

#[test]
fn kill_9_mid_build_then_restart_gives_the_uninterrupted_result() {
    let reference = Repo::new();
    fill(&reference);
    reference.build().ok();
    let expected = state(&reference);
    assert_eq!(reference.sites().len(), JOBS);

    // Kill at several points: early, and after a few commits.
    for kill_after_commits in [0usize, 3, 9] {
        let repo = Repo::new();
        // The same salt, so the same project ids.
        std::fs::copy(
            reference.path().join("protoforge.yaml"),
            repo.path().join("protoforge.yaml"),
        )
        .unwrap();
        fill(&repo);
        let mut child = command(repo.path())
            .args(["build", "--once"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let done = if repo.git_ok(&["rev-parse", "--verify", "--quiet", "prototypes"]) {
                repo.commit_count()
            } else {
                0
            };
            if done >= kill_after_commits || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let before = repo.sites().len();
        assert!(before < JOBS, "the builder finished before it was killed; kill earlier");

        repo.build().ok();
        repo.fsck();
        assert_eq!(repo.sites().len(), JOBS);
        assert_eq!(
            repo.commit_count(),
            JOBS,
            "a job was published twice (killed after {before} sites)"
        );
        let got = state(&repo);
        let differ: Vec<&String> =
            expected.keys().chain(got.keys()).filter(|k| expected.get(*k) != got.get(*k)).collect();
        assert!(differ.is_empty(), "end state differs (killed after {before} sites) in {differ:?}");
        // Every inbox file is still there.
        assert_eq!(
            std::fs::read_dir(repo.inbox())
                .unwrap()
                .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "yaml"))
                .count(),
            JOBS
        );
    }
}

#[test]
fn a_ref_lock_left_by_a_killed_builder_is_cleared() {
    let repo = Repo::new();
    repo.write_inbox("a.yaml", "company: First\ndescription: one\n");
    repo.build().ok();
    // What a builder killed inside the ref update leaves behind.
    let lock = repo.path().join(".git/refs/heads/prototypes.lock");
    std::fs::write(&lock, "0000000000000000000000000000000000000000\n").unwrap();
    let status = std::process::Command::new("touch")
        .args(["-d", "1 minute ago"])
        .arg(&lock)
        .status()
        .unwrap();
    assert!(status.success());
    repo.write_inbox("b.yaml", "company: Second\ndescription: two\n");
    let run = repo.build().ok();
    assert!(run.stderr.contains("removed a stale ref lock"), "{}", run.stderr);
    assert_eq!(repo.sites().len(), 2);
    assert!(!lock.exists());

    // Killed a moment ago, in a branch update or in a fetch: the restart
    // finds young locks that nobody touches.
    std::fs::write(&lock, "0000000000000000000000000000000000000000\n").unwrap();
    let tracking = repo.path().join(".git/refs/protoforge/remotes/origin");
    std::fs::create_dir_all(&tracking).unwrap();
    let tracking_lock = tracking.join("prototypes.lock");
    std::fs::write(&tracking_lock, "").unwrap();
    let packed_lock = repo.path().join(".git/packed-refs.lock");
    std::fs::write(&packed_lock, "# pack-refs with: peeled fully-peeled sorted \n").unwrap();
    repo.write_inbox("c.yaml", "company: Third\ndescription: three\n");
    let run = repo.build().ok();
    assert_eq!(run.stderr.matches("removed a stale ref lock").count(), 3, "{}", run.stderr);
    assert_eq!(repo.sites().len(), 3);
    assert!(!lock.exists());
    assert!(!tracking_lock.exists() && !packed_lock.exists());
    repo.fsck();
}

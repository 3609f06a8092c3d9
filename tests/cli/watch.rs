use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_sites(repo: &Repo, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let sites = repo.sites();
        if sites.len() >= n || Instant::now() > deadline {
            return sites;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn watch_builds_what_is_there_and_what_arrives() {
    let repo = Repo::new();
    repo.write_inbox("before.yaml", "company: Before Start\ndescription: Was here first.\n");
    let child = command(repo.path())
        .args(["build", "--watch"])
        .env("PROTOFORGE_BUILDER__DEBOUNCE_MS", "50")
        .env("PROTOFORGE_BUILDER__RESCAN_INTERVAL_SECS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = Killed(child);
    assert_eq!(wait_for_sites(&repo, 1).len(), 1, "the file present at start was not built");

    // A submission through `submit` (rename into the inbox) is seen.
    let file = repo.path().join("new.yaml");
    std::fs::write(&file, "company: Arrived Later\ndescription: Came in while watching.\n")
        .unwrap();
    let id = repo.run(&["submit", file.to_str().unwrap()]).ok().stdout.trim().to_string();
    let sites = wait_for_sites(&repo, 2);
    assert!(sites.contains(&id), "{sites:?}");

    // A second builder on the same repo is refused while this one runs.
    let second = repo.build();
    assert_eq!(second.code, 2);
    assert!(second.stderr.contains("another builder is already running"), "{}", second.stderr);

    // A file moved in from another directory (how most tools deliver) too.
    let staging = repo.path().join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(
        staging.join("late.yaml"),
        "company: Rescan Found\ndescription: Found by the rescan.\n",
    )
    .unwrap();
    std::fs::rename(staging.join("late.yaml"), repo.inbox().join("late.yaml")).unwrap();
    assert_eq!(wait_for_sites(&repo, 3).len(), 3);
    repo.fsck();
}

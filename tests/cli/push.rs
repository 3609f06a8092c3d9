//! `build --once --push` and `prune --push` against a bare repository on disk standing in as
//! `origin`, checked with the git CLI.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{Repo, command};

/// A bare repository in a temp dir: the shared remote.
struct Origin {
    dir: tempfile::TempDir,
}

impl Origin {
    fn new() -> Origin {
        let dir = tempfile::Builder::new().prefix("pf-origin-").tempdir().expect("temp dir");
        let origin = Origin { dir };
        origin.git(&["init", "--bare", "--quiet", "."]);
        origin
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn url(&self) -> String {
        self.path().display().to_string()
    }

    fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git").current_dir(self.path()).args(args).output().expect("git");
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("UTF-8")
    }

    fn head(&self) -> Option<String> {
        let out = Command::new("git")
            .current_dir(self.path())
            .args(["rev-parse", "--verify", "--quiet", "refs/heads/prototypes"])
            .output()
            .expect("git");
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    fn sites(&self) -> Vec<String> {
        let out = self.git(&["ls-tree", "--name-only", "prototypes", "sites/"]);
        out.lines().map(|l| l.trim_start_matches("sites/").to_owned()).collect()
    }

    /// The `Prototype-Id` trailers of every commit on the branch.
    fn trailer_ids(&self) -> Vec<String> {
        let log = self.git(&[
            "log",
            "--format=%(trailers:key=Prototype-Id,valueonly,separator=%x2C)",
            "prototypes",
        ]);
        let mut ids: Vec<String> =
            log.lines().filter(|l| !l.trim().is_empty()).map(|l| l.trim().to_owned()).collect();
        ids.sort();
        ids
    }

    fn fsck(&self) {
        crate::util::fsck(self.path());
    }

    /// Install `script` as the remote's pre-receive hook.
    fn pre_receive(&self, script: &str) {
        let hook = self.path().join("hooks/pre-receive");
        std::fs::write(&hook, script).expect("write the hook");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
    }
}

/// A site repo with the first `n` plain examples built and pushed to `origin`.
fn pushed(origin: &Origin, n: usize) -> Repo {
    let repo = Repo::new();
    for example in &plain_examples()[..n] {
        put(&repo, example);
    }
    repo.run(&["build", "--once", "--push", &origin.url()]).ok();
    repo
}

/// `prune --push` 40 days on, with `prune.purge_history`.
fn prune_and_purge(repo: &Repo, origin: &Origin) -> crate::util::Run {
    repo.run_env(
        &["prune", "--now", &in_40_days(), "--push", &origin.url()],
        &[("PROTOFORGE_PRUNE__PURGE_HISTORY", "true")],
    )
    .ok()
}

/// RFC 3339, 40 days from now: past every default expiry.
fn in_40_days() -> String {
    (chrono::Utc::now() + chrono::TimeDelta::days(40)).to_rfc3339()
}

/// A second builder of the same site repo: same config (and so the same project ids).
fn sibling(of: &Repo) -> Repo {
    let repo = Repo::new();
    std::fs::copy(of.path().join("protoforge.yaml"), repo.path().join("protoforge.yaml"))
        .expect("copy the config");
    repo
}

fn examples() -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = std::fs::read_dir(crate::util::project_dir().join("examples"))
        .expect("examples/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    all.sort();
    all
}

/// Examples without attachments, so that a copy of the YAML alone is a whole submission.
fn plain_examples() -> Vec<PathBuf> {
    examples()
        .into_iter()
        .filter(|p| !std::fs::read_to_string(p).expect("read").contains("attachments:"))
        .collect()
}

fn put(repo: &Repo, example: &Path) {
    let name = example.file_name().expect("a file").to_string_lossy().into_owned();
    repo.write_inbox(&name, std::fs::read(example).expect("read example"));
}

#[test]
fn a_build_is_pushed_and_the_next_run_starts_from_the_remote() {
    let origin = Origin::new();
    let a = Repo::new();
    let examples = plain_examples();
    put(&a, &examples[0]);
    let run = a.run(&["build", "--once", "--push", &origin.url()]).ok();
    assert!(run.stderr.contains("the remote has no such branch yet"), "{}", run.stderr);
    assert!(run.stderr.contains("pushed prototypes"), "{}", run.stderr);
    assert_eq!(origin.sites(), a.sites());
    assert_eq!(origin.sites().len(), 1);
    origin.fsck();

    // Nothing new: nothing pushed, the remote unchanged.
    let head = origin.head();
    let run = a.run(&["build", "--once", "--push", &origin.url()]).ok();
    assert!(run.stderr.contains("up to date") && run.stderr.contains("nothing to push"));
    assert_eq!(origin.head(), head);

    // A fresh checkout (as in GitHub Actions) has no local branch: it takes the remote's, so
    // the submission already built there is not built again.
    let b = sibling(&a);
    put(&b, &examples[0]);
    put(&b, &examples[1]);
    let run = b.run(&["build", "--once", "--push", &origin.url()]).ok();
    assert!(run.stderr.contains("fast-forwarded"), "{}", run.stderr);
    assert_eq!(crate::util::published_ids(&run.stdout).len(), 1, "{}", run.stdout);
    assert_eq!(origin.sites().len(), 2);
    assert_eq!(origin.git(&["rev-list", "--count", "prototypes"]).trim(), "2");
    origin.fsck();
    b.fsck();
}

#[test]
fn two_builders_racing_both_land_and_no_commit_is_lost() {
    let origin = Origin::new();
    let a = Repo::new();
    let b = sibling(&a);
    let examples = plain_examples();
    assert!(examples.len() >= 4, "need four examples without attachments");
    for (i, example) in examples.iter().enumerate() {
        put(if i % 2 == 0 { &a } else { &b }, example);
    }
    // Both start together, both fetch an empty remote: the second to push must replay.
    let spawn = |repo: &Repo| {
        command(repo.path())
            .args(["build", "--once", "--push", &origin.url()])
            .env("PROTOFORGE_PUSH__BACKOFF_MS", "20")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn protoforge")
    };
    let (pa, pb) = (spawn(&a), spawn(&b));
    let (oa, ob) = (pa.wait_with_output().expect("a"), pb.wait_with_output().expect("b"));
    let err = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(oa.status.success(), "builder a failed: {}", err(&oa));
    assert!(ob.status.success(), "builder b failed: {}", err(&ob));
    let replayed = [&oa, &ob].iter().filter(|o| err(o).contains("replayed onto")).count();
    assert_eq!(replayed, 1, "exactly one builder lost the race:\n{}\n{}", err(&oa), err(&ob));

    // Every site, and every site's commit, is on the remote: a straight line, no merge.
    let mut built: Vec<String> = a.sites().into_iter().chain(b.sites()).collect();
    built.sort();
    built.dedup();
    assert_eq!(built.len(), examples.len());
    assert_eq!(origin.sites(), built);
    assert_eq!(origin.trailer_ids(), built);
    assert_eq!(origin.git(&["rev-list", "--merges", "--count", "prototypes"]).trim(), "0");
    origin.fsck();
    a.fsck();
    b.fsck();
    // The loser's local branch is the remote's now; the winner catches up on its next run.
    let loser = if err(&oa).contains("replayed onto") { &a } else { &b };
    assert_eq!(loser.git(&["rev-parse", "prototypes"]).trim(), origin.head().expect("a head"));
}

/// A remote where another writer always moves the branch while our push is in flight: a
/// pre-receive hook commits on top of the branch, so receive-pack's compare-and-swap fails.
fn always_racing(origin: &Origin) {
    origin.pre_receive(
        r#"#!/bin/sh
# Another writer: move the branch while this push is in flight.
unset GIT_QUARANTINE_PATH GIT_OBJECT_DIRECTORY GIT_ALTERNATE_OBJECT_DIRECTORIES
head=$(git rev-parse --verify --quiet refs/heads/prototypes) || exit 0
tree=$(git rev-parse "$head^{tree}")
new=$(echo "another writer" | git -c user.name=Other -c user.email=o@example.com commit-tree "$tree" -p "$head")
git update-ref refs/heads/prototypes "$new" "$head"
exit 0
"#,
    );
}

#[test]
fn a_lease_that_keeps_failing_exits_non_zero_and_leaves_the_remote_to_the_others() {
    let origin = Origin::new();
    let a = pushed(&origin, 1);
    always_racing(&origin);

    put(&a, &plain_examples()[1]);
    let run = a.run_env(
        &["build", "--once", "--push", &origin.url()],
        &[("PROTOFORGE_PUSH__RETRIES", "2"), ("PROTOFORGE_PUSH__BACKOFF_MS", "10")],
    );
    assert_ne!(run.code, 0, "{}", run.all());
    assert!(
        run.stderr.contains("kept moving") && run.stderr.contains("3 push(es)"),
        "{}",
        run.stderr
    );
    // The remote holds the other writer's three commits and none of ours.
    let subjects = origin.git(&["log", "--format=%s", "prototypes"]);
    assert_eq!(subjects.lines().filter(|s| *s == "another writer").count(), 3, "{subjects}");
    assert_eq!(origin.sites().len(), 1);
    let ours = a.sites();
    assert_eq!(ours.len(), 2, "the new site stays on the local branch");
    assert_eq!(origin.trailer_ids().len(), 1);
    origin.fsck();
    a.fsck();
}

#[test]
fn a_hook_that_refuses_is_an_error_without_retries() {
    let origin = Origin::new();
    origin.pre_receive("#!/bin/sh\necho 'protected branch' >&2\nexit 1\n");
    let a = Repo::new();
    put(&a, &plain_examples()[0]);
    let run = a.run(&["build", "--once", "--push", &origin.url()]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("hook declined") && run.stderr.contains("hint"), "{}", run.stderr);
    assert!(origin.head().is_none());
    assert_eq!(a.sites().len(), 1, "the site stays on the local branch");
}

#[test]
fn bad_remotes_are_named_with_a_hint() {
    let a = Repo::new();
    let run = a.run(&["build", "--once", "--push", "--upload-pack=touch /tmp/x"]);
    assert_ne!(run.code, 0);
    let run = a.run(&["build", "--once", "--push", "nowhere"]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("nowhere") && run.stderr.contains("hint"), "{}", run.stderr);
}

#[test]
fn prune_pushes_its_removals_with_the_same_lease() {
    let origin = Origin::new();
    let a = pushed(&origin, 2);
    assert_eq!(origin.sites().len(), 2);
    // Another machine prunes, 40 days on.
    let b = sibling(&a);
    let later = in_40_days();
    let run = b.run(&["prune", "--now", &later, "--push", &origin.url()]).ok();
    assert!(run.stderr.contains("pushed prototypes"), "{}", run.all());
    assert!(origin.sites().is_empty(), "{:?}", origin.sites());
    origin.fsck();
    // The builder's next run fast-forwards to the pruned branch.
    let run = a.run(&["build", "--once", "--push", &origin.url()]).ok();
    assert!(run.stderr.contains("fast-forwarded"), "{}", run.stderr);
    assert!(a.sites().is_empty());
}

/// gix has no `ext::` transport (nor some auth schemes); `git fetch` takes over, and says so.
#[test]
fn a_remote_gix_cannot_reach_is_fetched_with_git() {
    let origin = Origin::new();
    let a = Repo::new();
    a.git(&["config", "protocol.ext.allow", "always"]);
    a.git(&["remote", "add", "shared", &format!("ext::%S {}", origin.url())]);
    let examples = plain_examples();
    put(&a, &examples[0]);
    a.run(&["build", "--once", "--push", "shared"]).ok();
    put(&a, &examples[1]);
    let run = a.run(&["build", "--once", "--push", "shared"]).ok();
    assert!(run.stderr.contains("gix could not fetch, git did"), "{}", run.stderr);
    assert!(run.stderr.contains("'ext' protocol"), "gix's reason is named: {}", run.stderr);
    assert_eq!(origin.sites().len(), 2);
    origin.fsck();
}

/// docs/scaling.md's set-up: N builders over one inbox, each its own shard, all pushing to one
/// remote. Every submission is built exactly once.
#[test]
fn sharded_builders_over_one_inbox_build_each_submission_once() {
    let origin = Origin::new();
    let first = Repo::new();
    let builders: Vec<Repo> =
        std::iter::once(first).chain((0..2).map(|_| Repo::new())).collect::<Vec<_>>();
    let config = std::fs::read(builders[0].path().join("protoforge.yaml")).unwrap();
    let examples = plain_examples();
    for b in &builders {
        std::fs::write(b.path().join("protoforge.yaml"), &config).unwrap();
        for e in &examples {
            put(b, e);
        }
    }
    let children: Vec<_> = builders
        .iter()
        .enumerate()
        .map(|(i, b)| {
            command(b.path())
                .args(["build", "--once", "--push", &origin.url(), "--shard"])
                .arg(format!("{}/3", i + 1))
                .env("PROTOFORGE_PUSH__BACKOFF_MS", "20")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut built = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        built.extend(crate::util::published_ids(&String::from_utf8_lossy(&out.stdout)));
    }
    built.sort();
    let mut unique = built.clone();
    unique.dedup();
    assert_eq!(built, unique, "no submission was built twice");
    assert_eq!(built.len(), examples.len());
    assert_eq!(origin.sites(), built);
    assert_eq!(origin.trailer_ids(), built);
    origin.fsck();
}

/// What a GitHub Actions run sees: a developer pushed `inbox/acme.yaml` to `main`, and the run
/// starts from a fresh clone (the branch `main` checked out, `prototypes` only as
/// `origin/prototypes`).
#[test]
fn a_fresh_clone_builds_what_a_developer_pushed() {
    let origin = Origin::new();
    let dev = Repo::new();
    let git = |dir: &Path, args: &[&str]| {
        let out = Command::new("git")
            .current_dir(dir)
            .args(["-c", "user.name=Dev", "-c", "user.email=dev@example.com"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let examples = plain_examples();
    put(&dev, &examples[0]);
    git(dev.path(), &["add", "-A"]);
    git(dev.path(), &["commit", "--quiet", "-m", "Add a submission"]);
    git(dev.path(), &["push", "--quiet", &origin.url(), "main"]);

    let runs = tempfile::tempdir().unwrap();
    let ci = |n: usize| {
        let dir = runs.path().join(format!("run-{n}"));
        let to = dir.to_str().unwrap();
        git(
            runs.path(),
            &["clone", "--quiet", "--no-local", "--branch", "main", &origin.url(), to],
        );
        let run = command(&dir).args(["build", "--once", "--push", "origin"]).output().unwrap();
        let err = String::from_utf8_lossy(&run.stderr).into_owned();
        assert!(run.status.success(), "run {n}: {err}");
        (dir, String::from_utf8_lossy(&run.stdout).into_owned(), err)
    };
    let (_, out, _) = ci(1);
    assert_eq!(crate::util::published_ids(&out).len(), 1, "{out}");
    assert_eq!(origin.sites().len(), 1);

    // The next push to main adds one more; the next run builds only that one.
    put(&dev, &examples[1]);
    git(dev.path(), &["add", "-A"]);
    git(dev.path(), &["commit", "--quiet", "-m", "Add another"]);
    git(dev.path(), &["push", "--quiet", &origin.url(), "main"]);
    let (dir, out, err) = ci(2);
    assert_eq!(crate::util::published_ids(&out).len(), 1, "{out}\n{err}");
    assert!(err.contains("fast-forwarded"), "{err}");
    assert_eq!(origin.sites().len(), 2);
    // The run's checkout of main is untouched: the sites live only on the branch.
    let status =
        Command::new("git").current_dir(&dir).args(["status", "--porcelain"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&status.stdout).trim().is_empty(),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );
    origin.fsck();
}

/// `prune.purge_history` with `--push`: the rewritten branch replaces exactly the head it was
/// made from, with the same lease.
#[test]
fn a_purged_history_is_pushed_with_the_lease() {
    let origin = Origin::new();
    let a = pushed(&origin, 2);
    assert_eq!(origin.git(&["rev-list", "--count", "prototypes"]).trim(), "2");
    let run = prune_and_purge(&a, &origin);
    assert!(run.stderr.matches("pushed prototypes").count() == 2, "{}", run.all());
    assert!(origin.sites().is_empty());
    assert_eq!(origin.git(&["rev-list", "--count", "prototypes"]).trim(), "1", "one root commit");
    assert_eq!(origin.head(), Some(a.git(&["rev-parse", "prototypes"]).trim().to_owned()));
    origin.fsck();
    a.fsck();
}

/// A purge whose push loses the race is dropped, not forced: the remote keeps the other
/// writer's commit, the local branch takes the remote's back, and the purge runs next time.
#[test]
fn a_purge_that_loses_the_race_is_dropped_not_forced() {
    let origin = Origin::new();
    let a = pushed(&origin, 2);
    // Another writer moves the branch whenever a push would rewrite it.
    origin.pre_receive(
        r#"#!/bin/sh
while read old new ref; do
  # The pushed objects are only visible inside the quarantine: ask before leaving it.
  if ! git merge-base --is-ancestor "$old" "$new"; then
    (
      unset GIT_QUARANTINE_PATH GIT_OBJECT_DIRECTORY GIT_ALTERNATE_OBJECT_DIRECTORIES
      tree=$(git rev-parse "$old^{tree}")
      moved=$(echo "another writer" | git -c user.name=O -c user.email=o@example.com commit-tree "$tree" -p "$old")
      git update-ref "$ref" "$moved" "$old"
    )
  fi
done
exit 0
"#,
    );
    let run = prune_and_purge(&a, &origin);
    assert!(run.stderr.contains("the purge was not pushed"), "{}", run.all());
    let subjects = origin.git(&["log", "--format=%s", "prototypes"]);
    assert!(subjects.starts_with("another writer\n"), "{subjects}");
    assert!(origin.sites().is_empty(), "the prune itself was pushed");
    assert_eq!(a.git(&["rev-parse", "prototypes"]).trim(), origin.head().unwrap());
    origin.fsck();
    a.fsck();
}

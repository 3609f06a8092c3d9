//! `protoforge prune` and `extend`: the tree and `git fsck --strict`
//! afterwards, dry runs, retention of personal data, and the history purge.

use chrono::{DateTime, Duration, SecondsFormat, Utc};

use crate::util::*;

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn in_days(days: i64) -> String {
    time(Utc::now() + Duration::days(days))
}

/// Write one submission and build it with `expiry_days`; returns its id.
fn build_one(
    repo: &Repo,
    name: &str,
    company: &str,
    submitted_at: &str,
    expiry_days: u32,
) -> String {
    repo.write_inbox(
        name,
        format!(
            "company: {company}\ndescription: A small bakery with bread, cakes and opening hours.\nsubmitted_at: {submitted_at}\n"
        ),
    );
    let run = repo
        .run_env(&["build", "--once"], &[("PROTOFORGE_EXPIRY_DAYS", &expiry_days.to_string())])
        .ok();
    let ids = published_ids(&run.stdout);
    assert_eq!(ids.len(), 1, "{}", run.all());
    ids[0].clone()
}

fn head(repo: &Repo) -> String {
    repo.git(&["rev-parse", "prototypes"]).trim().to_string()
}

fn tree_listing(repo: &Repo) -> String {
    repo.git(&["ls-tree", "-r", "prototypes"])
}

fn inbox_listing(repo: &Repo) -> Vec<String> {
    let mut out: Vec<String> = walk(&repo.inbox())
        .into_iter()
        .map(|p| p.strip_prefix(repo.inbox()).unwrap().display().to_string())
        .collect();
    out.sort();
    out
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn prune_removes_expired_sites_in_one_commit_and_keeps_the_tombstones() {
    let repo = Repo::new();
    let now = time(Utc::now());
    let short = build_one(&repo, "a.yaml", "Short Bakery", &now, 1);
    let medium = build_one(&repo, "b.yaml", "Medium Bakery", &now, 10);
    let long = build_one(&repo, "c.yaml", "Long Bakery", &now, 30);
    let commits = repo.commit_count();

    // A dry run reports and changes nothing.
    let before = (head(&repo), tree_listing(&repo), inbox_listing(&repo));
    let run = repo.run(&["prune", "--dry-run", "--now", &in_days(15)]).ok();
    assert!(run.stdout.contains("Would prune 2 expired prototypes"), "{}", run.stdout);
    assert!(run.stdout.contains(&short) && run.stdout.contains(&medium), "{}", run.stdout);
    assert!(!run.stdout.contains(&long), "{}", run.stdout);
    assert!(run.stdout.contains("Dry run: nothing was changed"), "{}", run.stdout);
    assert_eq!((head(&repo), tree_listing(&repo), inbox_listing(&repo)), before);

    // Before any expiry: nothing to do, no commit.
    let run = repo.run(&["prune", "--now", &in_days(0)]).ok();
    assert!(run.stdout.contains("Nothing to prune"), "{}", run.stdout);
    assert_eq!(repo.commit_count(), commits);

    let run = repo.run(&["prune", "--now", &in_days(15)]).ok();
    assert!(run.stdout.contains("Pruned 2 expired prototypes"), "{}", run.stdout);
    assert_eq!(repo.commit_count(), commits + 1, "one commit for the whole pass");
    assert_eq!(repo.sites(), std::slice::from_ref(&long));
    // The tombstones stay: one per built submission.
    let records = repo.git(&["ls-tree", "-r", "--name-only", "prototypes", "submissions/"]);
    assert_eq!(records.lines().count(), 3, "{records}");
    // The commit touches the two sites and nothing else.
    let changed = repo.git(&["diff", "--name-only", "prototypes~1", "prototypes"]);
    assert!(!changed.is_empty());
    for path in changed.lines() {
        assert!(
            path.starts_with(&format!("sites/{short}/"))
                || path.starts_with(&format!("sites/{medium}/")),
            "{path}"
        );
    }
    let message = repo.git(&["log", "-1", "--format=%B", "prototypes"]);
    assert!(message.starts_with("Prune 2 expired prototypes\n"), "{message}");
    assert!(message.contains(&format!("- {short} (expired ")), "{message}");
    let trailers =
        repo.git(&["log", "-1", "--format=%(trailers:key=Pruned,valueonly)", "prototypes"]);
    let mut pruned: Vec<&str> = trailers.lines().filter(|l| !l.is_empty()).collect();
    pruned.sort();
    let mut expected = vec![short.as_str(), medium.as_str()];
    expected.sort();
    assert_eq!(pruned, expected);
    repo.fsck();

    // Idempotent: a second pass makes no commit.
    let tip = head(&repo);
    let run = repo.run(&["prune", "--now", &in_days(15)]).ok();
    assert!(run.stdout.contains("Nothing to prune"), "{}", run.stdout);
    assert_eq!(head(&repo), tip);

    // The inbox files are still there (recent), yet nothing is built again.
    assert!(repo.inbox().join("a.yaml").exists());
    let run = repo.build().ok();
    assert!(run.stdout.contains("Nothing pending"), "{}", run.stdout);
    assert_eq!(head(&repo), tip);
    repo.fsck();
}

#[test]
fn prune_leaves_unreadable_sites_alone_with_a_warning() {
    let repo = Repo::new();
    let id = build_one(&repo, "a.yaml", "Broken Meta", &time(Utc::now()), 1);
    // Break the metadata by hand, with git, as a developer could.
    let tree = repo.git(&["rev-parse", "prototypes^{tree}"]);
    let work = tempfile::tempdir().unwrap();
    let index = work.path().join("index");
    let git_env = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .current_dir(repo.path())
            .env("GIT_INDEX_FILE", &index)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    git_env(&["read-tree", tree.trim()]);
    std::fs::write(work.path().join("meta"), "{ not json").unwrap();
    let blob = git_env(&["hash-object", "-w", work.path().join("meta").to_str().unwrap()]);
    git_env(&["update-index", "--cacheinfo", &format!("100644,{blob},sites/{id}/metadata.json")]);
    let new_tree = git_env(&["write-tree"]);
    let commit = git_env(&[
        "-c",
        "user.name=dev",
        "-c",
        "user.email=dev@example.com",
        "commit-tree",
        &new_tree,
        "-p",
        "prototypes",
        "-m",
        "Break metadata",
    ]);
    repo.git(&["update-ref", "refs/heads/prototypes", &commit]);

    let run = repo.run(&["prune", "--now", &in_days(40)]).ok();
    assert!(run.stdout.contains("Nothing to prune"), "{}", run.stdout);
    assert!(
        run.stdout.contains(&format!("warning: sites/{id}/metadata.json cannot be read")),
        "{}",
        run.stdout
    );
    assert_eq!(repo.sites(), [id]);
    assert_eq!(head(&repo), commit);
}

#[test]
fn retention_deletes_old_processed_files_and_their_attachments_only() {
    let repo = Repo::new();
    let attachments = repo.inbox().join("attachments");
    std::fs::create_dir_all(attachments.join("old")).unwrap();
    std::fs::write(attachments.join("old/brief.txt"), "Only the old submission uses this.")
        .unwrap();
    std::fs::write(attachments.join("shared.txt"), "Both submissions use this.").unwrap();
    let with = |files: &[&str]| {
        let mut s = String::from("attachments:\n");
        for f in files {
            s.push_str(&format!("  - path: attachments/{f}\n    kind: document\n"));
        }
        s
    };
    repo.write_inbox(
        "old.yaml",
        format!(
            "company: Old Bakery\ndescription: A bakery.\nsubmitted_at: 2020-01-01T00:00:00Z\n{}",
            with(&["old/brief.txt", "shared.txt"])
        ),
    );
    repo.write_inbox(
        "recent.yaml",
        format!(
            "company: Recent Bakery\ndescription: A bakery.\nsubmitted_at: {}\n{}",
            in_days(-1),
            with(&["shared.txt"])
        ),
    );
    let run = repo.build().ok();
    assert_eq!(published_ids(&run.stdout).len(), 2, "{}", run.stdout);
    // Arrives after the build: pending, however old its date.
    repo.write_inbox(
        "pending.yaml",
        "company: Pending Bakery\ndescription: A bakery.\nsubmitted_at: 2020-01-01T00:00:00Z\n",
    );
    // Rejected files: one old, one recent.
    let rejected = repo.inbox().join("rejected");
    std::fs::create_dir_all(&rejected).unwrap();
    for name in ["old-bad.yaml", "old-bad.yaml.error.txt", "new-bad.yaml", "new-bad.yaml.error.txt"]
    {
        std::fs::write(rejected.join(name), "nope: 1\n").unwrap();
    }
    for name in ["old-bad.yaml", "old-bad.yaml.error.txt"] {
        let status = std::process::Command::new("touch")
            .args(["-d", "2020-01-01T00:00:00Z"])
            .arg(rejected.join(name))
            .status()
            .unwrap();
        assert!(status.success());
    }

    let now = in_days(1);
    let before = inbox_listing(&repo);
    let dry = repo.run(&["prune", "--dry-run", "--now", &now]).ok();
    assert!(dry.stdout.contains("old.yaml"), "{}", dry.stdout);
    assert_eq!(inbox_listing(&repo), before, "a dry run deletes nothing");

    let run = repo.run(&["prune", "--now", &now]).ok();
    assert!(
        run.stdout.contains("Deleted 1 processed inbox file older than 90 days, and 1 attachment"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("Deleted 2 rejected files"), "{}", run.stdout);
    assert!(!run.stdout.contains("warning:"), "{}", run.stdout);
    assert_eq!(
        inbox_listing(&repo),
        [
            "README.md",
            "attachments/.gitkeep",
            "attachments/shared.txt",
            "pending.yaml",
            "recent.yaml",
            "rejected/new-bad.yaml",
            "rejected/new-bad.yaml.error.txt",
        ]
    );
    assert!(!attachments.join("old").exists(), "the emptied folder goes too");
    // No site expired yet, so the branch did not move.
    assert_eq!(repo.sites().len(), 2);
    let status = repo.run(&["status"]).ok();
    assert!(status.stdout.contains("1 pending, 1 done"), "{}", status.stdout);
    repo.fsck();
}

#[test]
fn old_failure_records_go_unless_their_submission_is_still_in_the_inbox() {
    let repo = Repo::new();
    // A layout that fails for Ledgerly only (as in commands.rs).
    let layout = repo.path().join("layouts/saas.html");
    let good = std::fs::read_to_string(&layout).unwrap();
    let trap = good.replacen(
        "{% block hero %}",
        "{% block hero %}{% if site.name is containing(pat=\"Ledgerly\") %}{{ site.nope.deeper }}{% endif %}",
        1,
    );
    std::fs::write(&layout, trap).unwrap();
    let example =
        std::fs::read_to_string(project_dir().join("examples/02-saas-short.yaml")).unwrap();
    // Submitted 2026-11-02: old by the time of the prune below.
    repo.write_inbox("old.yaml", &example);
    // Same request, submitted (by its own clock) far in the future: kept.
    repo.write_inbox(
        "future.yaml",
        example.replace("submitted_at: 2026-11-02T11:40:51Z", "submitted_at: 2099-01-01T00:00:00Z"),
    );
    let run = repo.build();
    assert_eq!(run.code, 1, "{}", run.all());
    let failed = repo.git(&["ls-tree", "--name-only", "prototypes", "failed/"]);
    assert_eq!(failed.lines().count(), 2, "{failed}");

    // Records are written now: 100 days on, they are older than 90.
    let run = repo.run(&["prune", "--now", &in_days(100)]).ok();
    assert!(run.stdout.contains("Removed 1 failure record older than 90 days"), "{}", run.stdout);
    assert!(!repo.inbox().join("old.yaml").exists());
    assert!(repo.inbox().join("future.yaml").exists());
    let left = repo.git(&["ls-tree", "--name-only", "prototypes", "failed/"]);
    assert_eq!(left.lines().count(), 1, "{left}");
    let message = repo.git(&["log", "-1", "--format=%B", "prototypes"]);
    assert!(message.starts_with("Prune 1 failure record older than 90 days"), "{message}");
    assert!(message.contains("Pruned-Failure: "), "{message}");
    // Nothing became pending.
    let run = repo.build().ok();
    assert!(run.stdout.contains("Nothing pending"), "{}", run.stdout);
    repo.fsck();
}

#[test]
fn extend_moves_the_expiry_in_metadata_and_banner() {
    let repo = Repo::new();
    std::fs::copy(project_dir().join("examples/03-dentist-de.yaml"), repo.inbox().join("de.yaml"))
        .unwrap();
    let run = repo.run_env(&["build", "--once"], &[("PROTOFORGE_EXPIRY_DAYS", "1")]).ok();
    let id = published_ids(&run.stdout)[0].clone();
    let old_meta = repo.metadata(&id);
    let old_html = repo.show(&format!("sites/{id}/index.html"));
    let old_date = &old_meta["expires_at"].as_str().unwrap()[..10];
    assert!(old_html.contains(&format!("Prototyp — gültig bis {old_date}")), "{old_html}");
    let old_meta_text = repo.show(&format!("sites/{id}/metadata.json"));

    let run = repo.run(&["extend", &id, "--days", "60"]).ok();
    let new_meta = repo.metadata(&id);
    let expires = DateTime::parse_from_rfc3339(new_meta["expires_at"].as_str().unwrap()).unwrap();
    let days = (expires.with_timezone(&Utc) - Utc::now()).num_minutes();
    assert!((60 * 24 * 60 - 5..=60 * 24 * 60).contains(&days), "{expires}");
    let new_date = expires.format("%Y-%m-%d").to_string();
    assert!(run.stdout.contains(&new_date), "{}", run.stdout);
    // Every other field, and their order, as before.
    let new_meta_text = repo.show(&format!("sites/{id}/metadata.json"));
    assert_eq!(
        new_meta_text,
        old_meta_text.replace(
            old_meta["expires_at"].as_str().unwrap(),
            new_meta["expires_at"].as_str().unwrap()
        )
    );
    let html = repo.show(&format!("sites/{id}/index.html"));
    assert!(html.contains(&format!("Prototyp — gültig bis {new_date}")), "{html}");
    assert!(!html.contains(&format!("gültig bis {old_date}")));
    assert_eq!(html.matches("class=\"pf-banner\"").count(), 1, "{html}");
    assert_eq!(html.replace(&new_date, old_date), old_html, "only the date changed");
    let message = repo.git(&["log", "-1", "--format=%B", "prototypes"]);
    assert!(message.contains(&format!("Prototype-Id: {id}\n")), "{message}");
    assert!(
        message.contains(&format!("Expires-At: {}", new_meta["expires_at"].as_str().unwrap())),
        "{message}"
    );
    // The pruner now leaves it alone past the old expiry.
    repo.run(&["prune", "--now", &in_days(5)]).ok();
    assert_eq!(repo.sites(), std::slice::from_ref(&id));
    repo.fsck();

    // Errors: unknown, badly shaped, pruned; and a bad --now.
    let run = repo.run(&["extend", "no-such-aaaaaaaa", "--days", "5"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains(
            "no site `no-such-aaaaaaaa` on branch prototypes; `protoforge status` lists sites"
        ),
        "{}",
        run.stderr
    );
    let run = repo.run(&["extend", "../../etc", "--days", "5"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("is not a project id"), "{}", run.stderr);
    let run = repo.run(&["extend", &id, "--days", "0"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("--days"), "{}", run.stderr);
    repo.run(&["prune", "--now", &in_days(61)]).ok();
    assert!(repo.sites().is_empty());
    let run = repo.run(&["extend", &id, "--days", "5"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains(&format!("no site `{id}`")), "{}", run.stderr);
    let run = repo.run(&["prune", "--now", "tomorrow"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("--now") && run.stderr.contains("2026-12-31T00:00:00Z"),
        "{}",
        run.stderr
    );
}

#[test]
fn purge_history_leaves_one_commit_and_the_rest_of_the_repo_intact() {
    let repo = Repo::new();
    let now = time(Utc::now());
    let gone = build_one(&repo, "a.yaml", "Gone Bakery", &now, 1);
    let kept = build_one(&repo, "b.yaml", "Kept Bakery", &now, 30);
    let staged = build_one(&repo, "c.yaml", "Staged Bakery", &now, 2);
    repo.run(&["prune", "--now", &in_days(5)]).ok();
    assert_eq!(repo.sites(), std::slice::from_ref(&kept));
    let blob_of = |id: &str| {
        repo.git(&["rev-parse", &format!("prototypes~1:sites/{id}/index.html")]).trim().to_string()
    };
    let (gone_blob, staged_blob) = (blob_of(&gone), blob_of(&staged));
    let tree = repo.git(&["rev-parse", "prototypes^{tree}"]);
    // The user's own branch, and a staged file whose blob only the pruned
    // history has: both must survive the purge.
    repo.git(&["add", "layouts"]);
    repo.git(&[
        "-c",
        "user.name=dev",
        "-c",
        "user.email=dev@example.com",
        "commit",
        "-q",
        "-m",
        "layouts",
    ]);
    let page = repo.git(&["cat-file", "blob", &staged_blob]);
    std::fs::write(repo.path().join("staged.html"), &page).unwrap();
    repo.git(&["add", "staged.html"]);
    assert_eq!(repo.git(&["rev-parse", ":staged.html"]).trim(), staged_blob);
    let main = repo.git(&["rev-parse", "main"]);

    let run = repo
        .run_env(&["prune", "--now", &in_days(5)], &[("PROTOFORGE_PRUNE__PURGE_HISTORY", "true")])
        .ok();
    assert!(run.stdout.contains("Purged history"), "{}", run.stdout);
    assert_eq!(repo.commit_count(), 1);
    assert_eq!(repo.git(&["rev-parse", "prototypes^{tree}"]), tree, "same tree");
    assert!(repo.git(&["log", "--format=%P", "prototypes"]).trim().is_empty(), "a root commit");
    // Bytes: "went from X to Y bytes".
    let figures: Vec<u64> = run
        .stdout
        .split("went from ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .take(2)
        .collect();
    assert!(figures[1] < figures[0], "{}", run.stdout);
    assert!(!repo.path().join(".git/logs/refs/heads/prototypes").exists());
    // The pruned page left the object store; the rest of the repo did not move.
    assert!(!repo.git_ok(&["cat-file", "-e", &gone_blob]));
    assert_eq!(repo.git(&["rev-parse", "main"]), main);
    assert_eq!(repo.git(&["show", ":staged.html"]), page, "the staged blob was kept");
    let out = std::process::Command::new("git")
        .current_dir(repo.path())
        .args(["fsck", "--strict"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("error"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Nothing rebuilt, and a second purge has nothing to rewrite.
    assert!(repo.build().ok().stdout.contains("Nothing pending"));
    let run = repo.run_env(&["prune"], &[("PROTOFORGE_PRUNE__PURGE_HISTORY", "true")]).ok();
    assert!(run.stdout.contains("already is a single commit"), "{}", run.stdout);
    assert_eq!(repo.commit_count(), 1);
    repo.fsck();
}

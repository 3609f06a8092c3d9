use std::io::Write;
use std::process::Stdio;

use crate::util::*;

#[test]
fn init_creates_a_complete_site_repo() {
    let repo = Repo::new();
    for f in [
        "protoforge.yaml",
        ".gitignore",
        "inbox/README.md",
        ".github/workflows/ci.yml",
        ".github/workflows/build-prototypes.yml",
        ".github/workflows/prune.yml",
        ".github/workflows/pages.yml",
        "layouts/base.html",
        "layouts/restaurant.html",
        "layouts/strings.yaml",
        "layouts/script.js",
        "prompts/analysis.md",
    ] {
        assert!(repo.path().join(f).is_file(), "init did not write {f}");
    }
    assert_eq!(repo.git(&["symbolic-ref", "HEAD"]).trim(), "refs/heads/main");
    repo.fsck();
    // Re-running keeps the user's edits.
    std::fs::write(repo.path().join("protoforge.yaml"), "expiry_days: 9\n").unwrap();
    repo.run(&["init", "."]).ok();
    assert_eq!(
        std::fs::read_to_string(repo.path().join("protoforge.yaml")).unwrap(),
        "expiry_days: 9\n"
    );
}

#[test]
fn config_prints_the_effective_values() {
    let repo = Repo::new();
    let run = repo
        .run_env(
            &["config"],
            &[("PROTOFORGE_EXPIRY_DAYS", "7"), ("PROTOFORGE_BUILDER__MAX_ATTEMPTS", "5")],
        )
        .ok();
    assert!(run.stdout.contains("expiry_days: 7"), "{}", run.stdout);
    assert!(run.stdout.contains("max_attempts: 5"), "{}", run.stdout);
    assert!(run.stdout.contains("branch: prototypes"), "{}", run.stdout);
}

#[test]
fn submit_validates_then_writes_atomically() {
    let repo = Repo::new();
    let example = project_dir().join("examples/01-bakery.yaml");
    let run = repo.run(&["submit", example.to_str().unwrap()]).ok();
    let id = run.stdout.trim();
    assert!(id.starts_with("rosies-loaves-"), "{id}");
    let files: Vec<_> = std::fs::read_dir(repo.inbox())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let written: Vec<_> = files.iter().filter(|f| f.ends_with(".yaml")).collect();
    assert_eq!(written.len(), 1, "{files:?}");
    assert!(written[0].starts_with("20261102T091403Z-rosies-loaves-"), "{written:?}");
    assert_eq!(
        std::fs::read(repo.inbox().join(written[0])).unwrap(),
        std::fs::read(&example).unwrap()
    );
    // No temp files left behind.
    let staging = repo.inbox().join(".incoming");
    assert!(std::fs::read_dir(&staging).map(|d| d.count()).unwrap_or(0) == 0);

    // The same id comes out of the build.
    let built = repo.build().ok();
    assert_eq!(published_ids(&built.stdout), [id.to_string()]);

    // An invalid one is refused and nothing is written.
    let bad = fixture("invalid/bad-email.yaml");
    let run = repo.run(&["submit", bad.to_str().unwrap()]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("`contact.email`"), "{}", run.stderr);
    assert!(run.stderr.contains("nothing was written"), "{}", run.stderr);
    assert_eq!(
        std::fs::read_dir(repo.inbox())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "yaml"))
            .count(),
        1
    );
}

#[test]
fn submit_reads_standard_input() {
    let repo = Repo::new();
    let mut child = command(repo.path())
        .args(["submit", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"company: Piped Inc\ndescription: From a pipe.\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).trim().starts_with("piped-inc-"));
}

#[test]
fn a_broken_layout_stops_the_builder_before_any_job() {
    let repo = Repo::new();
    let layout = repo.path().join("layouts/saas.html");
    std::fs::write(&layout, "{% extends \"base.html\" %}{% block content %}{{ site.nope.deeper }}{% endblock content %}").unwrap();
    repo.write_inbox("a.yaml", "company: A\ndescription: A site.\n");
    let run = repo.build();
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("the layouts cannot render a sample site"), "{}", run.stderr);
    assert!(run.stderr.contains("saas.html"), "{}", run.stderr);
    // Nothing was recorded: the job is still pending.
    assert!(!repo.git_ok(&["rev-parse", "--verify", "--quiet", "prototypes"]));
    assert!(repo.run(&["status"]).ok().stdout.contains("1 pending"));
}

#[test]
fn a_failed_job_is_recorded_and_retried() {
    let repo = Repo::new();
    // A layout override that fails only for some input (the sample site
    // renders, so the builder starts): a real, data-dependent failure.
    let layout = repo.path().join("layouts/saas.html");
    let good = std::fs::read_to_string(&layout).unwrap();
    let trap = good.replacen(
        "{% block hero %}",
        "{% block hero %}{% if site.name is containing(pat=\"Ledgerly\") %}{{ site.nope.deeper }}{% endif %}",
        1,
    );
    assert_ne!(trap, good, "the saas layout has a hero block");
    std::fs::write(&layout, trap).unwrap();
    std::fs::copy(
        project_dir().join("examples/02-saas-short.yaml"),
        repo.inbox().join("saas.yaml"),
    )
    .unwrap();
    repo.write_inbox(
        "other.yaml",
        "company: Other\ndescription: A plain site.\nsubmitted_at: 2030-01-01T00:00:00Z\n",
    );
    let run = repo.build();
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stdout.contains("FAILED"), "{}", run.stdout);
    assert!(
        run.stdout.contains("1 published, 1 failed"),
        "the builder went on to the next job:\n{}",
        run.stdout
    );

    let failed = repo.git(&["ls-tree", "--name-only", "prototypes", "failed/"]);
    assert_eq!(failed.lines().count(), 1, "{failed}");
    let record: serde_json::Value = serde_json::from_str(&repo.show(failed.trim())).unwrap();
    assert_eq!(record["stage"], "render");
    assert_eq!(record["attempts"], 1);
    assert!(record["reason"].as_str().unwrap().contains("saas.html"), "{record}");
    assert!(!record.to_string().contains("dev@ledgerly"), "no personal data in the record");
    let pid = record["project_id"].as_str().unwrap().to_string();

    // Failed is not pending: a second run leaves it alone.
    assert!(repo.build().ok().stdout.contains("Nothing pending"));
    let status = repo.run(&["status"]).ok();
    assert!(status.stdout.contains("1 done, 1 failed"), "{}", status.stdout);

    // Fix the layout, retry, build.
    std::fs::write(&layout, good).unwrap();
    let run = repo.run(&["retry", &pid]).ok();
    assert!(run.stdout.contains(&pid));
    let run = repo.build().ok();
    assert_eq!(published_ids(&run.stdout), std::slice::from_ref(&pid));
    assert!(repo.git(&["ls-tree", "--name-only", "prototypes", "failed/"]).is_empty());
    let unknown = repo.run(&["retry", "no-such-aaaaaaaa"]);
    assert_eq!(unknown.code, 2);
    assert!(unknown.stderr.contains("no failure record matches"), "{}", unknown.stderr);
    repo.fsck();
}

#[test]
fn export_writes_sites_and_server_configs() {
    let repo = Repo::new();
    repo.write_inbox("a.yaml", "company: Export Co\ndescription: Export me.\n");
    let run = repo.build().ok();
    let id = &published_ids(&run.stdout)[0];
    let out = repo.path().join("preview");
    let run = repo.run(&["export", out.to_str().unwrap()]).ok();
    assert!(run.stdout.contains("1 site(s)"), "{}", run.all());
    let site = out.join("public/prototypes").join(id);
    let html = std::fs::read_to_string(site.join("index.html")).unwrap();
    assert!(html.contains("Export Co"));
    assert!(site.join("styles.css").is_file());
    assert!(!site.join("metadata.json").exists(), "the record is not published");
    for config in ["nginx.conf", "protoforge-common.conf", "Caddyfile", "public/_headers"] {
        assert!(out.join(config).is_file(), "{config}");
    }
    // 40 days on, the site has expired: not exported, answered with 410.
    let later = (chrono::Utc::now() + chrono::TimeDelta::days(40)).to_rfc3339();
    let run = repo.run(&["export", out.to_str().unwrap(), "--now", &later]).ok();
    assert!(run.stdout.contains("0 site(s)") && run.stdout.contains("1 expired"), "{}", run.all());
    assert!(!site.exists(), "a re-export replaces public/");
    assert!(std::fs::read_to_string(out.join("nginx.conf")).unwrap().contains(id.as_str()));
    // For GitHub Pages: the CSP inside the pages, no header files.
    let pages = repo.path().join("pages");
    repo.run(&["export", pages.to_str().unwrap(), "--meta-csp"]).ok();
    let html = std::fs::read_to_string(pages.join("public/prototypes").join(id).join("index.html"))
        .unwrap();
    assert!(html.contains(r#"<meta http-equiv="Content-Security-Policy""#), "{html}");
    let not_found = std::fs::read_to_string(pages.join("public/404.html")).unwrap();
    assert!(not_found.contains("Content-Security-Policy"));
    assert!(!pages.join("public/_headers").exists());
    // A directory that is not an export is left alone.
    let run = repo.run(&["export", repo.path().join("inbox").to_str().unwrap()]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("not a previous export"), "{}", run.all());
}

#[test]
fn demo_runs_offline_from_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let run = crate::util::command(dir.path())
        .args(["demo", "--no-serve", "--dir", demo.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    assert!(stdout.contains("file://"), "{stdout}");
    let count = stdout.lines().filter(|l| l.trim_start().starts_with("file://")).count();
    assert_eq!(count, 8, "{stdout}");
}

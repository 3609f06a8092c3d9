//! Benchmark of the git-driven flow, printed as figures (no timing assertion):
//! `cargo bench --bench push`.
//!
//! 1. `protoforge build --once --push` (the release binary) of 1 and of 20 submissions into a
//!    fresh site repo, against a bare repository on local disk; beside it the same build
//!    without `--push`, so that the ratio shows what fetching and pushing cost.
//! 2. The same with one new submission as the branch grows to 100, 1,000 and 10,000 sites
//!    (one commit per site, as a builder makes them, packed by `git gc` as Housekeeping
//!    would): the fetch and the push as the binary reports them, and the whole run.
//! 3. A race: two builders of 10 submissions each, started together on an empty remote.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use protoforge::publish::{Identity, Store, TreeEdit};

const BIN: &str = env!("CARGO_BIN_EXE_protoforge");
const RUNS: usize = 3;

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git").current_dir(dir).args(args).output().expect("git");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn protoforge(dir: &Path, args: &[&str]) -> (Duration, String) {
    let start = Instant::now();
    let out = Command::new(BIN)
        .current_dir(dir)
        .args(args)
        .env("PROTOFORGE_LOG", "warn")
        .env("PROTOFORGE_BUILDER__GC_AUTO", "0")
        .output()
        .expect("protoforge");
    let took = start.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "protoforge {args:?}: {stderr}");
    (took, stderr)
}

/// A site repo from `protoforge init`, with `n` submissions in its inbox.
fn site_repo(dir: &Path, n: usize, tag: &str) {
    protoforge(dir.parent().expect("a parent"), &["init", dir.to_str().expect("UTF-8")]);
    for i in 0..n {
        std::fs::write(
            dir.join(format!("inbox/{tag}-{i:03}.yaml")),
            format!(
                "company: {tag} Bakery {i}\ndescription: Bread and pastries, baked before dawn in \
                 the old mill, number {i}.\nsubmitted_at: 2026-12-01T10:{:02}:00Z\n",
                i % 60
            ),
        )
        .expect("write a submission");
    }
}

fn bare(dir: &Path) {
    std::fs::create_dir_all(dir).expect("mkdir");
    git(dir, &["init", "--bare", "--quiet", "."]);
}

/// The "in N ms" figure of a line of the binary's report that starts with `prefix`.
fn reported_ms(stderr: &str, prefix: &str) -> f64 {
    stderr
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.split(" in ").nth(1))
        .and_then(|t| t.split(" ms").next())
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn build_once(n: usize) {
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for run in 0..RUNS {
        let tmp = tempfile::tempdir().expect("tmp");
        let origin = tmp.path().join("origin.git");
        bare(&origin);
        let a = tmp.path().join("a");
        site_repo(&a, n, "a");
        let (t, _) =
            protoforge(&a, &["build", "--once", "--push", origin.to_str().expect("UTF-8")]);
        with.push(ms(t));
        let b = tmp.path().join("b");
        site_repo(&b, n, "a");
        let (t, _) = protoforge(&b, &["build", "--once"]);
        without.push(ms(t));
        let _ = run;
    }
    let (w, wo) = (median(with), median(without));
    println!(
        "build --once, {n:>2} submission(s): {w:7.1} ms with --push, {wo:7.1} ms without \
         (push adds {:.1} ms, {:.2}x)",
        w - wo,
        w / wo
    );
}

fn grow_to(store: &Store, from: usize, to: usize) {
    let mut head = store.head().expect("head");
    for i in from..to {
        let id = format!("grown-{i:05}-aaaaaaaa");
        let edit = TreeEdit::PutDir {
            path: format!("sites/{id}"),
            files: vec![
                ("index.html".into(), format!("<!doctype html><title>{i}</title>").into_bytes()),
                ("styles.css".into(), b"body{margin:0}".to_vec()),
                ("metadata.json".into(), format!("{{\"project_id\":\"{id}\"}}").into_bytes()),
            ],
        };
        let message = format!("Add prototype {id}\n\nPrototype-Id: {id}\n");
        head = Some(store.commit(head, &message, &[edit]).expect("commit"));
    }
}

fn growth() {
    let tmp = tempfile::tempdir().expect("tmp");
    let origin = tmp.path().join("origin.git");
    bare(&origin);
    let url = origin.to_str().expect("UTF-8").to_owned();
    let a = tmp.path().join("a");
    site_repo(&a, 0, "g");
    let ident = |n: &str| Identity { name: n.into(), email: "bench@example.com".into() };
    let store = Store::open(&a, "prototypes", ident("Bench"), ident("Bench")).expect("store");
    let mut sites = 0;
    println!("\none new submission as the branch grows (median of {RUNS}):");
    println!(
        "{:>7}  {:>9}  {:>9}  {:>9}  {:>9}",
        "sites", "fetch ms", "push ms", "run ms", "pack MiB"
    );
    for target in [100, 1_000, 10_000] {
        grow_to(&store, sites, target);
        sites = target;
        git(&a, &["gc", "--quiet"]);
        // The remote catches up (not timed), as after the builds that made these sites.
        git(&a, &["push", "--quiet", &url, "prototypes:prototypes"]);
        git(&origin, &["gc", "--quiet"]);
        let (mut fetch, mut push, mut run) = (Vec::new(), Vec::new(), Vec::new());
        for r in 0..RUNS {
            std::fs::write(
                a.join(format!("inbox/new-{target}-{r}.yaml")),
                format!("company: New {target} {r}\ndescription: One more bakery, number {r}.\n"),
            )
            .expect("write");
            let (t, err) = protoforge(&a, &["build", "--once", "--push", &url]);
            fetch.push(reported_ms(&err, "fetched"));
            push.push(reported_ms(&err, "pushed"));
            run.push(ms(t));
            sites += 1;
        }
        let pack: u64 = std::fs::read_dir(origin.join("objects/pack"))
            .map(|d| d.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum())
            .unwrap_or(0);
        println!(
            "{:>7}  {:>9.1}  {:>9.1}  {:>9.1}  {:>9.1}",
            target,
            median(fetch),
            median(push),
            median(run),
            pack as f64 / (1 << 20) as f64
        );
    }
}

fn race() {
    let tmp = tempfile::tempdir().expect("tmp");
    let origin = tmp.path().join("origin.git");
    bare(&origin);
    let url = origin.to_str().expect("UTF-8").to_owned();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    site_repo(&a, 10, "a");
    site_repo(&b, 10, "b");
    let start = Instant::now();
    let spawn = |dir: &Path| {
        Command::new(BIN)
            .current_dir(dir)
            .args(["build", "--once", "--push", &url])
            .env("PROTOFORGE_LOG", "warn")
            .output()
            .expect("spawn")
    };
    let (oa, ob) = std::thread::scope(|s| {
        let ha = s.spawn(|| spawn(&a));
        let hb = s.spawn(|| spawn(&b));
        (ha.join().expect("a"), hb.join().expect("b"))
    });
    let wall = start.elapsed();
    assert!(oa.status.success() && ob.status.success());
    let tries: Vec<String> = [&oa, &ob]
        .iter()
        .map(|o| {
            let err = String::from_utf8_lossy(&o.stderr);
            err.lines().find(|l| l.starts_with("pushed")).unwrap_or("?").to_owned()
        })
        .collect();
    println!("\ntwo builders of 10 each, started together: {:.0} ms wall", ms(wall));
    for t in tries {
        println!("  {t}");
    }
}

fn main() {
    println!("protoforge build --once --push against a local bare remote (template generator)\n");
    build_once(1);
    build_once(20);
    growth();
    race();
}

//! Benchmarks of the template-mode pipeline, printed as figures (no timing
//! assertions): `cargo bench --bench pipeline`.
//!
//! 1. Time per prototype: parse + generate (analyze, render, finalize) +
//!    publish, median and p90 over the bundled examples, repeated.
//! 2. The publish step alone (the site's directory and its entry under
//!    `submissions/`) with 10, 1,000 and 10,000 sites already on the
//!    branch, measured in turn (A B C A B C …) so machine noise hits each
//!    size alike; the ratio to the 10-site figure is what to read.

use std::path::Path;
use std::time::{Duration, Instant};

use protoforge::builder::{self, Workspace};
use protoforge::publish::TreeEdit;
use protoforge::{scaffold, templates};

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn p90(v: &mut [Duration]) -> Duration {
    v.sort();
    v[(v.len() * 9 / 10).min(v.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn workspace(dir: &Path) -> Workspace {
    scaffold::init(dir).expect("init");
    for (rel, bytes) in templates::examples() {
        let path = dir.join("inbox").join(rel);
        std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
        std::fs::write(&path, bytes).expect("write example");
    }
    Workspace::open(dir, None).expect("open workspace")
}

fn per_prototype() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ws = workspace(dir.path());
    let files = ws.inbox.list().expect("list inbox");
    let rounds = 25;
    let (mut parse, mut generate, mut publish, mut total) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        for file in &files {
            let t0 = Instant::now();
            let mut job = ws.inbox.load(file).expect("example is valid");
            // A new project id each round, so each publish adds a site.
            job.parsed.project_id = format!(
                "bench-{round}-{}",
                &job.parsed.project_id[job.parsed.project_id.len() - 8..]
            );
            job.parsed.sha256 = format!("{:064x}", round * 1000 + total.len());
            let t1 = Instant::now();
            let site = builder::generate(&ws, &job, chrono::Utc::now()).expect("generate");
            let t2 = Instant::now();
            let head = ws.store.head().expect("head");
            ws.store
                .commit(
                    head,
                    "bench",
                    &[TreeEdit::PutDir {
                        path: builder::site_dir(&job.parsed.project_id),
                        files: site.files,
                    }],
                )
                .expect("commit");
            let t3 = Instant::now();
            parse.push(t1 - t0);
            generate.push(t2 - t1);
            publish.push(t3 - t2);
            total.push(t3 - t0);
        }
    }
    println!(
        "per prototype, template mode ({} prototypes: {} examples x {rounds}):",
        total.len(),
        files.len()
    );
    for (name, v) in [
        ("parse", &mut parse),
        ("generate", &mut generate),
        ("publish", &mut publish),
        ("total", &mut total),
    ] {
        println!("  {name:<9} median {:>7.3} ms   p90 {:>7.3} ms", ms(median(v)), ms(p90(v)));
    }
}

fn publish_scaling() {
    let sizes = [10usize, 1_000, 10_000];
    let mut repos = Vec::new();
    for &n in &sizes {
        let dir = tempfile::tempdir().expect("temp dir");
        let ws = workspace(dir.path());
        let job = ws.inbox.load(&ws.inbox.list().expect("list")[0]).expect("load");
        let site = builder::generate(&ws, &job, chrono::Utc::now()).expect("generate");
        // Prefill in one commit: n sites sharing the same blobs.
        let edits: Vec<TreeEdit> = (0..n)
            .map(|i| TreeEdit::PutDir {
                path: format!("sites/prefill-{i:05}-aaaaaaaa"),
                files: site.files.clone(),
            })
            .collect();
        ws.store.commit(None, "prefill", &edits).expect("prefill");
        repos.push((n, dir, ws, site.files));
    }
    let rounds = 41;
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); sizes.len()];
    for round in 0..rounds {
        for (i, (_, _, ws, files)) in repos.iter().enumerate() {
            let head = ws.store.head().expect("head");
            let edit = TreeEdit::PutDir {
                path: format!("sites/new-{round:03}-bbbbbbbb"),
                files: files.clone(),
            };
            let t = Instant::now();
            ws.store.commit(head, "bench", &[edit]).expect("commit");
            times[i].push(t.elapsed());
        }
    }
    println!("publish one site ({rounds} commits per size, interleaved):");
    let base = ms(median(&mut times[0].clone()));
    for (i, &n) in sizes.iter().enumerate() {
        let m = ms(median(&mut times[i]));
        println!(
            "  {n:>6} sites on the branch: median {m:>6.3} ms  p90 {:>6.3} ms  ({:.2}x the 10-site time)",
            ms(p90(&mut times[i])),
            m / base
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument picks one part.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-')).unwrap_or_default();
    if filter.is_empty() || "per_prototype".contains(&filter) {
        per_prototype();
    }
    if filter.is_empty() || "publish_scaling".contains(&filter) {
        publish_scaling();
    }
}

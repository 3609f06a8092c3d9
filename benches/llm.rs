//! The AI generator against a local model server with a fixed latency per token
//! (`tests/support/fake_llm.rs`), printed as figures: `cargo bench --bench llm`.
//!
//! For each job (the bakery example, the model's replies from `tests/fixtures/llm/`):
//! - the wall time of `builder::generate` (the five AI stages, render and finalize);
//! - each stage's model time as the server saw it (request in → last byte out);
//! - the sum of the stage latencies, and the critical path
//!   analysis + html + max(css, js) + content, which shows CSS ∥ JS;
//! - the overhead: wall time minus the model time on the critical path (HTTP,
//!   extraction, validation, prompts, rendering, finalize);
//! - the tokens of each stage, from the site's `metadata.json`.
//!
//! Two paces: 0 ms a token (all overhead) and 2 ms a token (about 500 tokens/s),
//! 7 jobs each, medians printed.

#[path = "../tests/support/fake_llm.rs"]
mod fake_llm;

use std::time::{Duration, Instant};

use fake_llm::{FakeLlm, Format, Pace};
use protoforge::builder::{self, Workspace};
use protoforge::scaffold;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const STAGES: [&str; 5] = ["analysis", "html", "css", "js", "content"];

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llm");
    println!(
        "AI generator against a local model server (bakery example, 7 jobs per pace; medians)\n"
    );
    for per_token in [Duration::ZERO, Duration::from_millis(2)] {
        let server = FakeLlm::start(Format::OpenAi, Pace { chars_per_token: 4, per_token });
        fake_llm::good_replies(&server, &fixtures);
        let dir = tempfile::tempdir().expect("temp dir");
        scaffold::init(dir.path()).expect("init");
        std::fs::write(
            dir.path().join("protoforge.yaml"),
            format!(
                "llm:\n  providers:\n    - name: fake\n      base_url: {}\n      model: tiny-1\n",
                server.url
            ),
        )
        .expect("write config");
        std::fs::write(
            dir.path().join("inbox/01-bakery.yaml"),
            include_str!("../examples/01-bakery.yaml"),
        )
        .expect("write example");
        let ws = Workspace::open(dir.path(), None).expect("open workspace");
        let file = &ws.inbox.list().expect("list")[0];
        let job = ws.inbox.load(file).expect("the example is valid");
        let (mut wall, mut sum, mut critical, mut overhead) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut per_stage: Vec<Vec<f64>> = vec![Vec::new(); STAGES.len()];
        let mut tokens = Vec::new();
        for round in 0..8 {
            let before = server.seen().len();
            let t0 = Instant::now();
            let site = builder::generate(&ws, &job, chrono::Utc::now()).expect("generate");
            let elapsed = t0.elapsed();
            let seen = &server.seen()[before..];
            let stage_ms = |name: &str| -> f64 {
                seen.iter().filter(|s| s.stage == name).map(|s| ms(s.finished - s.started)).sum()
            };
            let times: Vec<f64> = STAGES.iter().map(|s| stage_ms(s)).collect();
            let path = times[0] + times[1] + times[2].max(times[3]) + times[4];
            let meta: serde_json::Value = serde_json::from_slice(
                &site.files.iter().find(|(p, _)| p == "metadata.json").expect("metadata").1,
            )
            .expect("metadata is JSON");
            assert_eq!(meta["generator"]["mode"], "ai", "every stage used the model");
            if round == 0 {
                // Warm-up: connections, caches.
                tokens = STAGES
                    .iter()
                    .map(|name| {
                        let s = meta["stages"]
                            .as_array()
                            .expect("stages")
                            .iter()
                            .find(|s| s["name"] == *name)
                            .expect("a record per stage");
                        (
                            s["tokens_in"].as_u64().unwrap_or(0),
                            s["tokens_out"].as_u64().unwrap_or(0),
                        )
                    })
                    .collect();
                continue;
            }
            wall.push(ms(elapsed));
            sum.push(times.iter().sum());
            critical.push(path);
            overhead.push(ms(elapsed) - path);
            for (i, t) in times.iter().enumerate() {
                per_stage[i].push(*t);
            }
        }
        println!("pace: {} ms a token (4 characters)", per_token.as_millis());
        for (i, name) in STAGES.iter().enumerate() {
            println!(
                "  {name:<9} model time {:>8.1} ms   tokens in {:>5}, out {:>5}",
                median(per_stage[i].clone()),
                tokens[i].0,
                tokens[i].1
            );
        }
        let (w, s, c, o) = (median(wall), median(sum), median(critical), median(overhead));
        println!("  sum of stage latencies      {s:>8.1} ms");
        println!("  critical path (css ∥ js)    {c:>8.1} ms");
        println!("  wall time per job           {w:>8.1} ms   ({:.2} of the sum)", w / s.max(1e-9));
        println!("  overhead (wall − critical)  {o:>8.1} ms\n");
    }
}

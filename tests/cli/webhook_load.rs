//! The webhook under load, and killed with -9 in the middle of it: every
//! submission that got a 202 is on disk, whole and valid.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::util::*;

/// One post's content: a unique description and a unique text file.
struct Sent {
    job: String,
    description: String,
    file: Vec<u8>,
}

fn body(i: usize, boundary: &str) -> (String, Vec<u8>, Vec<u8>) {
    let description = format!(
        "Load test shop number {i}: we sell cups, bowls and plates ({}).",
        i * 7919 % 10007
    );
    let file = format!("Price list {i}\ncups {}\nbowls {}\n", i % 97, i % 89)
        .repeat(1 + i % 5)
        .into_bytes();
    let mut b = Vec::new();
    b.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"description\"\r\n\r\n{description}\r\n").as_bytes());
    b.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"company\"\r\n\r\nLoad {i}\r\n"
        )
        .as_bytes(),
    );
    b.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"prices\"; filename=\"prices-{i}.txt\"\r\nContent-Type: text/plain\r\n\r\n").as_bytes());
    b.extend_from_slice(&file);
    b.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (description, file, b)
}

/// Post `body(i)` for i from `next` until `stop` or `total`, from `threads`
/// threads; returns what got a 202.
fn load(port: u16, total: usize, threads: usize, stop: Arc<AtomicBool>) -> Vec<Sent> {
    let next = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (next, sent, stop) = (next.clone(), sent.clone(), stop.clone());
            std::thread::spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total || stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let (description, file, b) = body(i, "LoadBoundary7");
                    // A killed server answers nothing: that post was not acknowledged.
                    let Ok(r) = try_http_body(
                        port,
                        "POST",
                        "127.0.0.1",
                        "/api/queue/submit",
                        &[("Content-Type", "multipart/form-data; boundary=LoadBoundary7")],
                        Some(&b),
                    ) else {
                        continue;
                    };
                    if r.status == 202 {
                        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                        let job = v["job_id"].as_str().unwrap().to_string();
                        sent.lock().unwrap().push(Sent { job, description, file });
                    } else {
                        assert!(
                            stop.load(Ordering::Relaxed),
                            "post {i}: {} {}",
                            r.status,
                            r.text()
                        );
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    Arc::try_unwrap(sent).ok().unwrap().into_inner().unwrap()
}

/// Each acknowledged job: its YAML parses with the builder's rules and says
/// what was sent; its file is byte for byte what was sent.
fn check_on_disk(repo: &Repo, sent: &[Sent]) {
    for s in sent {
        let path = repo.inbox().join(format!("{}.yaml", s.job));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let y: serde_json::Value =
            serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(y["description"], s.description.as_str());
        let att = y["attachments"][0]["path"].as_str().unwrap();
        assert_eq!(std::fs::read(repo.inbox().join(att)).unwrap(), s.file, "{att}");
    }
}

fn yaml_files(repo: &Repo) -> usize {
    std::fs::read_dir(repo.inbox())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "yaml"))
        .count()
}

#[test]
fn five_thousand_posts_at_concurrency_64_land_byte_identical() {
    let repo = Repo::new();
    let server = Server::start_env(
        &repo,
        &["--no-build", "--no-prune"],
        &[
            ("PROTOFORGE_WEBHOOK__RATE_LIMIT_BURST", "1000000"),
            ("PROTOFORGE_WEBHOOK__MAX_CONNECTIONS", "128"),
        ],
    );
    let start = Instant::now();
    let sent = load(server.hook, 5000, 64, Arc::new(AtomicBool::new(false)));
    let took = start.elapsed();
    assert_eq!(sent.len(), 5000);
    assert_eq!(yaml_files(&repo), 5000);
    check_on_disk(&repo, &sent);
    let mut jobs: Vec<_> = sent.iter().map(|s| &s.job).collect();
    jobs.sort();
    jobs.dedup();
    assert_eq!(jobs.len(), 5000, "every post is its own job");
    eprintln!(
        "5,000 posts at concurrency 64 in {:.1} s ({:.0}/s)",
        took.as_secs_f64(),
        5000.0 / took.as_secs_f64()
    );
}

#[test]
fn kill_9_during_a_load_run_loses_no_acknowledged_submission() {
    let repo = Repo::new();
    let server = Server::start_env(
        &repo,
        &["--no-prune"],
        &[("PROTOFORGE_WEBHOOK__RATE_LIMIT_BURST", "1000000")],
    );
    let port = server.hook;
    let stop = Arc::new(AtomicBool::new(false));
    let poster = {
        let stop = stop.clone();
        std::thread::spawn(move || load(port, usize::MAX, 16, stop))
    };
    // Kill once 40 posts are on disk: with 16 in flight, at least 24 were acknowledged.
    let deadline = Instant::now() + Duration::from_secs(60);
    while yaml_files(&repo) < 40 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    server.kill9();
    stop.store(true, Ordering::Relaxed);
    let sent = poster.join().unwrap();
    assert!(sent.len() > 20, "only {} posts were acknowledged before the kill", sent.len());
    check_on_disk(&repo, &sent);

    // After a restart everything acknowledged is built (or was already).
    let run = repo.build().ok();
    assert!(run.stdout.contains(" 0 rejected"), "{}", run.all());
    let rejected = std::fs::read_dir(repo.inbox().join("rejected")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(rejected, 0, "{}", run.all());
    let status = repo.run(&["status"]).ok();
    for s in &sent {
        let line = status
            .stdout
            .lines()
            .find(|l| l.contains(&s.job))
            .unwrap_or_else(|| panic!("{} not in status:\n{}", s.job, status.stdout));
        assert!(line.contains(" done "), "{line}");
    }
    repo.fsck();
    eprintln!("kill -9 after {} acknowledged posts: all on disk and built", sent.len());
}

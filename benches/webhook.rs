//! Benchmark of the webhook, printed as figures (no timing assertion):
//! `cargo bench --bench webhook`.
//!
//! `protoforge serve` (builder on, as in production) on a fresh repo:
//! 1. open loop at 20/s for 10 s (PICKUP_RATE), a rate the builder keeps up
//!    with: the pickup delay, from the 202 to the builder starting the job,
//!    as the server measures it (`protoforge_queue_pickup_seconds`);
//! 2. open loop at the target rate (default 200/s for 10 s, RATE and SECS):
//!    posts timed from when they were due, not when they were sent, so a
//!    stall is not hidden (no coordinated omission); p50/p99/max of the
//!    202s, and the pickup delay as the queue builds up;
//! 3. closed loop: 64 clients posting back to back for 5 s, req/s and p99.
//!
//! Every post is a real form: five fields and a ~20 KB text attachment,
//! written durably (fsync) before the answer. Env: RATE, SECS.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("addr")
        .port()
}

fn body(i: usize) -> Vec<u8> {
    let b = "BenchBoundary";
    let mut out = Vec::new();
    for (k, v) in [
        ("name", format!("Bench Person {i}")),
        ("email", format!("bench{i}@example.com")),
        ("company", format!("Bench Shop {i}")),
        (
            "description",
            format!("We are bench shop {i}; we sell cups and bowls, open Mon-Sat 9am-6pm."),
        ),
        ("pages", "home, about, contact".to_string()),
    ] {
        out.extend_from_slice(
            format!("--{b}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    out.extend_from_slice(format!("--{b}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"menu-{i}.txt\"\r\nContent-Type: text/plain\r\n\r\n").as_bytes());
    out.extend_from_slice(format!("Menu {i}: rye bread, buns, cakes.\n").repeat(600).as_bytes());
    out.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
    out
}

/// One post; the status code.
fn post(port: u16, body: &[u8]) -> u16 {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let head = format!(
        "POST /api/queue/submit HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: multipart/form-data; boundary=BenchBoundary\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("send");
    s.write_all(body).expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    String::from_utf8_lossy(&raw)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn pct(sorted: &[Duration], q: f64) -> f64 {
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

fn report(label: &str, mut lat: Vec<Duration>, took: Duration, errors: usize) {
    lat.sort();
    println!(
        "  {label}: {} posts in {:.1} s = {:.0}/s; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {errors} non-202",
        lat.len(),
        took.as_secs_f64(),
        lat.len() as f64 / took.as_secs_f64(),
        pct(&lat, 0.5),
        pct(&lat, 0.9),
        pct(&lat, 0.99),
        pct(&lat, 1.0)
    );
}

fn main() {
    let rate: u64 = std::env::var("RATE").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let secs: u64 = std::env::var("SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let bin = env!("CARGO_BIN_EXE_protoforge");
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = dir.path().join("repo");
    let ok = Command::new(bin).arg("init").arg(&repo).stdout(Stdio::null()).status().expect("init");
    assert!(ok.success());
    let (port, hook) = (free_port(), free_port());
    let mut server = Command::new(bin)
        .current_dir(&repo)
        .args(["serve", "--no-prune"])
        .env("PROTOFORGE_LOG", "warn")
        .env("PROTOFORGE_SERVE__LISTEN", format!("127.0.0.1:{port}"))
        .env("PROTOFORGE_WEBHOOK__LISTEN", format!("127.0.0.1:{hook}"))
        .env("PROTOFORGE_WEBHOOK__RATE_LIMIT_BURST", "10000000")
        .env("PROTOFORGE_WEBHOOK__RATE_LIMIT_PER_MINUTE", "10000000")
        .stdout(Stdio::null())
        .spawn()
        .expect("serve");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", hook)).is_err() {
        assert!(Instant::now() < deadline, "the webhook did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let size = body(0).len();
    println!(
        "webhook benchmark: multipart posts of {size} bytes (5 fields + a text file), fsynced before the 202; builder on"
    );

    // 1. Pickup at a rate a builder keeps up with, on the empty queue.
    let pickup_rate: u64 =
        std::env::var("PICKUP_RATE").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let n1 = open_loop(hook, pickup_rate, 10, 0, &format!("open loop at {pickup_rate}/s for 10 s"));
    pickup(hook, n1, &format!("pickup at {pickup_rate}/s"));

    // 2. The target rate: the posts' latency, and the queue that builds up.
    let n2 = open_loop(hook, rate, secs, n1, &format!("open loop at {rate}/s for {secs} s"));
    pickup(
        hook,
        n1 + n2,
        &format!("pickup at {rate}/s (queueing: the builder takes longer than 5 ms a job)"),
    );
    closed_loop(hook);
    let inbox = std::fs::read_dir(repo.join("inbox"))
        .expect("inbox")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "yaml"))
        .count();
    println!("  inbox files: {inbox}");
    let _ = Command::new("kill").args(["-TERM", &server.id().to_string()]).status();
    let _ = server.wait();
}

/// Posts at `rate` for `secs`, numbered from `first`; returns how many.
fn open_loop(hook: u16, rate: u64, secs: u64, first: usize, label: &str) -> usize {
    let total = (rate * secs) as usize;
    let next = Arc::new(AtomicUsize::new(0));
    let lat = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let errors = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now() + Duration::from_millis(100);
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let workers: Vec<_> = (0..32)
        .map(|_| {
            let (next, lat, errors) = (next.clone(), lat.clone(), errors.clone());
            std::thread::spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return;
                    }
                    let due = t0 + interval * i as u32;
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    let b = body(first + i);
                    let status = post(hook, &b);
                    let took = due.elapsed();
                    if status == 202 {
                        lat.lock().expect("lock").push(took);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    let took = t0.elapsed();
    let lat = std::mem::take(&mut *lat.lock().expect("lock"));
    report(label, lat, took, errors.load(Ordering::Relaxed));
    total
}

/// Wait until the builder has started `total` jobs; print the pickup quantiles.
fn pickup(hook: u16, total: usize, label: &str) {
    let deadline = Instant::now() + Duration::from_secs(300);
    let metrics = loop {
        let m = get_metrics(hook);
        let count = m
            .lines()
            .find_map(|l| l.strip_prefix("protoforge_queue_pickup_seconds_count "))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if count >= total || Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let q = |q: &str| {
        metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!("protoforge_queue_pickup_seconds{{quantile=\"{q}\"}} "))
            })
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|s| s * 1000.0)
            .unwrap_or(f64::NAN)
    };
    println!(
        "  {label}: 202 -> builder starts the job, latest {total} jobs: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        q("0.5"),
        q("0.9"),
        q("0.99"),
        q("1")
    );
}

/// 64 clients posting back to back for 5 s.
fn closed_loop(hook: u16) {
    let stop_at = Instant::now() + Duration::from_secs(5);
    let lat = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..64)
        .map(|w| {
            let (lat, errors) = (lat.clone(), errors.clone());
            std::thread::spawn(move || {
                let mut i = 1_000_000 + w * 100_000;
                while Instant::now() < stop_at {
                    let b = body(i);
                    i += 1;
                    let t = Instant::now();
                    if post(hook, &b) == 202 {
                        lat.lock().expect("lock").push(t.elapsed());
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    let lat = std::mem::take(&mut *lat.lock().expect("lock"));
    report("closed loop, 64 clients, 5 s", lat, start.elapsed(), errors.load(Ordering::Relaxed));
}

fn get_metrics(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

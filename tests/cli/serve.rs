//! `protoforge serve`, started for real on a free port, asked with raw
//! HTTP/1.1 requests (so attacks reach it exactly as written).

use std::io::Read;
use std::time::{Duration, Instant};

use crate::util::*;

fn repo_with_sites(n: usize) -> (Repo, Vec<String>) {
    let repo = Repo::new();
    for name in ["01-bakery.yaml", "02-saas-short.yaml"].iter().take(n) {
        std::fs::copy(project_dir().join("examples").join(name), repo.inbox().join(name)).unwrap();
    }
    let ids = published_ids(&repo.build().ok().stdout);
    (repo, ids)
}

const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; connect-src 'none'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

#[test]
fn every_header_rule() {
    let (repo, ids) = repo_with_sites(1);
    let id = &ids[0];
    let server = Server::start(&repo, &["--no-build"]);
    let port = server.port;
    let host = format!("{id}.localhost:{port}");

    let page = get(port, &host, "/");
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(page.header("content-security-policy"), Some(CSP));
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(page.header("x-robots-tag"), Some("noindex"));
    assert_eq!(page.header("cache-control"), Some("no-cache"));
    assert_eq!(page.header("vary"), Some("Accept-Encoding"));
    let etag = page.header("etag").unwrap().to_string();
    assert_eq!(etag, format!("\"{}\"", blob_id(&page.body)), "the ETag is the blob id");
    assert_eq!(page.body, repo.show(&format!("sites/{id}/index.html")).into_bytes());
    assert_eq!(page.header("content-length").unwrap().parse::<usize>().unwrap(), page.body.len());

    // Conditional requests.
    let again = http(port, "GET", &host, "/", &[("If-None-Match", &etag)]);
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    let other = http(port, "GET", &host, "/", &[("If-None-Match", "\"0000\"")]);
    assert_eq!(other.status, 200);
    let modified = page.header("last-modified").unwrap().to_string();
    assert_eq!(http(port, "GET", &host, "/", &[("If-Modified-Since", &modified)]).status, 304);
    assert_eq!(
        http(port, "GET", &host, "/", &[("If-Modified-Since", "Thu, 01 Jan 1970 00:00:00 GMT")])
            .status,
        200
    );

    // Compression, decoded back to the same bytes.
    let css = get(port, &host, "/styles.css");
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    assert_eq!(css.header("cache-control"), Some("public, no-cache"));
    let gz = http(port, "GET", &host, "/styles.css", &[("Accept-Encoding", "gzip")]);
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&gz.body[..]).read_to_end(&mut plain).unwrap();
    assert_eq!(plain, css.body);
    assert!(gz.body.len() < css.body.len() / 2);
    let br = http(port, "GET", &host, "/styles.css", &[("Accept-Encoding", "gzip, br")]);
    assert_eq!(br.header("content-encoding"), Some("br"));
    let mut plain = Vec::new();
    brotli::BrotliDecompress(&mut &br.body[..], &mut plain).unwrap();
    assert_eq!(plain, css.body);
    assert_eq!(br.header("etag"), css.header("etag"));

    // Ranges.
    let part = http(port, "GET", &host, "/styles.css", &[("Range", "bytes=10-19")]);
    assert_eq!(part.status, 206);
    assert_eq!(part.body, css.body[10..20]);
    assert_eq!(
        part.header("content-range"),
        Some(format!("bytes 10-19/{}", css.body.len()).as_str())
    );
    let tail = http(port, "GET", &host, "/styles.css", &[("Range", "bytes=-5")]);
    assert_eq!(tail.body, css.body[css.body.len() - 5..]);
    let past = http(port, "GET", &host, "/styles.css", &[("Range", "bytes=99999999-")]);
    assert_eq!(past.status, 416);
    assert_eq!(past.header("content-range"), Some(format!("bytes */{}", css.body.len()).as_str()));
    let stale = http(
        port,
        "GET",
        &host,
        "/styles.css",
        &[("Range", "bytes=0-9"), ("If-Range", "\"stale\"")],
    );
    assert_eq!(stale.status, 200, "If-Range with another ETag gets the whole file");

    // Methods.
    let post = http(port, "POST", &host, "/", &[("Content-Length", "0")]);
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    let head = http(port, "HEAD", &host, "/", &[]);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("etag"), Some(etag.as_str()));

    // The fallback mount and its redirect.
    let bare = get(port, &format!("localhost:{port}"), &format!("/prototypes/{id}?x=1"));
    assert_eq!(bare.status, 308);
    assert_eq!(bare.header("location"), Some(format!("/prototypes/{id}/?x=1").as_str()));
    let mounted = get(port, &format!("localhost:{port}"), &format!("/prototypes/{id}/"));
    assert_eq!(mounted.status, 200);
    assert_eq!(mounted.header("etag"), Some(etag.as_str()));

    // Hosts: case, port and a trailing dot don't matter; others are 404.
    let loud = get(port, &format!("{}.LocalHost.:{port}", id.to_uppercase()), "/");
    assert_eq!(loud.status, 200);
    assert_eq!(get(port, "evil.example", "/").status, 404);
    assert_eq!(get(port, &format!("nosuch-aaaaaaaa.localhost:{port}"), "/").status, 404);
    assert_eq!(get(port, &format!("a.{id}.localhost"), "/").status, 404);
    assert_eq!(get(port, &host, "/metadata.json").status, 404);
    assert_eq!(get(port, &host, "/nope.html").status, 404);
    assert_eq!(get(port, &host, "/favicon.ico").status, 204, "no console error for a missing icon");

    // Operations.
    assert_eq!(get(port, &format!("localhost:{port}"), "/healthz").text(), "ok\n");
    let front = get(port, &format!("localhost:{port}"), "/");
    assert_eq!(front.status, 200);
    assert!(!front.text().contains(id.as_str()), "no listing of sites unless configured");
    let metrics = get(port, &format!("localhost:{port}"), "/metrics").text();
    for name in [
        "protoforge_http_requests_total{status=\"200\"}",
        "protoforge_http_requests_total{status=\"304\"}",
        "protoforge_http_request_duration_seconds_bucket",
        "protoforge_http_response_bytes_total",
        "protoforge_http_requests_in_flight",
        "protoforge_sites 1",
        "protoforge_branch_head_age_seconds",
    ] {
        assert!(metrics.contains(name), "metrics lack {name}:\n{metrics}");
    }
    assert!(server.stop(), "SIGTERM ends the server cleanly");
}

#[test]
fn traversal_and_encoding_attacks_read_nothing_outside_the_site() {
    let (repo, ids) = repo_with_sites(1);
    let id = &ids[0];
    let server = Server::start(&repo, &["--no-build"]);
    let port = server.port;
    let attacks = [
        "/../protoforge.yaml",
        "/../../../../etc/passwd",
        "/%2e%2e/protoforge.yaml",
        "/%2E%2E/%2E%2E/etc/passwd",
        "/..%2fprotoforge.yaml",
        "/..%2Fprotoforge.yaml",
        "/%2e%2e%2fprotoforge.yaml",
        "/..%5cprotoforge.yaml",
        "/..\\protoforge.yaml",
        "/%5c..%5cprotoforge.yaml",
        "/%252e%252e/protoforge.yaml",
        "/.%2e/protoforge.yaml",
        "/%2e./protoforge.yaml",
        "/./../protoforge.yaml",
        "/assets/../../protoforge.yaml",
        "/assets/%2e%2e/%2e%2e/protoforge.yaml",
        "/index.html%00.png",
        "/index.html%00",
        "/%00../protoforge.yaml",
        "/.git/config",
        "/.git/HEAD",
        "/%2egit/config",
        "/.env",
        "/.htaccess",
        "/metadata.json",
        "/metadata.json%00",
        "/%6detadata.json",
        "/../sites/other/index.html",
        "/../../submissions",
        "/..;/protoforge.yaml",
        "/%c0%ae%c0%ae/protoforge.yaml",
        "/%c0%af..%c0%afprotoforge.yaml",
        "/%e0%80%ae%e0%80%ae/protoforge.yaml",
        "//etc/passwd",
        "///../../etc/passwd",
        "/assets/images/../../../../.git/config",
        "/%2F%2Fetc%2Fpasswd",
        "/index.html/../../protoforge.yaml",
        "/..%00/protoforge.yaml",
        "/\u{0}",
        "/%ff%fe/protoforge.yaml",
        "/assets/.%2e/.%2e/protoforge.yaml",
    ];
    assert!(attacks.len() >= 40);
    let secrets = ["project_id_salt", "[core]", "root:", "refs/heads", "submission_sha256"];
    for mount in [format!("{id}.localhost"), "localhost".to_string()] {
        for attack in attacks {
            let target = if mount == "localhost" {
                format!("/prototypes/{id}{attack}")
            } else {
                attack.to_string()
            };
            let r = get(port, &mount, &target);
            assert!(matches!(r.status, 400 | 404), "{mount}{target}: status {}", r.status);
            let body = r.text();
            for secret in secrets {
                assert!(!body.contains(secret), "{mount}{target} leaked {secret}");
            }
        }
    }
}

#[test]
fn an_expired_site_answers_410_at_once() {
    let (repo, ids) = repo_with_sites(1);
    let server =
        Server::start(&repo, &["--no-build", "--no-prune", "--now", "2099-01-01T00:00:00Z"]);
    let r = get(server.port, &format!("{}.localhost", ids[0]), "/");
    assert_eq!(r.status, 410);
    assert!(r.text().contains("This prototype expired on 20"), "{}", r.text());
    assert_eq!(r.header("content-security-policy"), Some(CSP));
    // The pruner has not run: the site is still on the branch.
    assert_eq!(repo.sites().len(), 1);
}

#[test]
fn new_commits_are_served_without_a_restart_and_never_mixed() {
    let repo = Repo::new();
    repo.write_inbox("first.yaml", "company: First Co\ndescription: The first site.\n");
    let first = published_ids(&repo.build().ok().stdout)[0].clone();
    let server = Server::start(&repo, &["--no-build"]);
    let port = server.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Readers hammer the first site while commits land; every body must be
    // exactly the blob its ETag names.
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (stop, host) = (stop.clone(), format!("{first}.localhost"));
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for path in ["/", "/styles.css", "/script.js"] {
                        let r = get(port, &host, path);
                        assert_eq!(r.status, 200);
                        let etag = r.header("etag").unwrap();
                        assert_eq!(
                            etag,
                            format!("\"{}\"", blob_id(&r.body)),
                            "torn or mixed response for {path}"
                        );
                        n += 1;
                    }
                }
                n
            })
        })
        .collect();
    for i in 0..6 {
        repo.write_inbox(
            &format!("more-{i}.yaml"),
            format!("company: More {i}\ndescription: Site number {i}.\n"),
        );
        repo.build().ok();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let served: usize = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(served > 20, "only {served} responses");
    let last = repo.sites().into_iter().find(|s| s.starts_with("more-5-")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(port, &format!("{last}.localhost"), "/");
        if r.status == 200 {
            assert!(r.text().contains("More 5"));
            break;
        }
        assert!(Instant::now() < deadline, "the new commit was not picked up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_builds_what_arrives_and_serves_it() {
    let repo = Repo::new();
    let server = Server::start(&repo, &[]);
    let file = repo.path().join("new.yaml");
    std::fs::write(&file, "company: Live Co\ndescription: Built while serving.\n").unwrap();
    let id = repo.run(&["submit", file.to_str().unwrap()]).ok().stdout.trim().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = get(server.port, &format!("{id}.localhost"), "/");
        if r.status == 200 {
            assert!(r.text().contains("Live Co"));
            break;
        }
        assert!(Instant::now() < deadline, "the submission was not built and served");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(server.stop());
    repo.fsck();
}

#[test]
fn slow_and_idle_clients_are_cut_off() {
    use std::io::Write;
    let (repo, ids) = repo_with_sites(1);
    let server = Server::start_env(
        &repo,
        &["--no-build"],
        &[
            ("PROTOFORGE_SERVE__HEADER_READ_TIMEOUT_SECS", "1"),
            ("PROTOFORGE_SERVE__KEEP_ALIVE_SECS", "1"),
        ],
    );
    // Ok(time to the close), or what was seen instead.
    let closed_within = |stream: &mut std::net::TcpStream, limit: Duration| {
        let start = Instant::now();
        let mut buf = [0u8; 4096];
        loop {
            let left = limit.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(format!("still open after {limit:?}"));
            }
            stream.set_read_timeout(Some(left)).unwrap();
            match stream.read(&mut buf) {
                Ok(0) => return Ok(start.elapsed()),
                Ok(_) => continue,
                // A reset is a cut-off too (the kernel sends one when unread bytes remain).
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    return Ok(start.elapsed());
                }
                // A signal to this process (another test's child exiting) interrupts a read
                // with a timeout: it is not an answer, read on.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("{e} ({:?}) after {:?}", e.kind(), start.elapsed())),
            }
        }
    };
    // Slowloris: half a request head, then nothing.
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    slow.write_all(format!("GET / HTTP/1.1\r\nHost: {}.localhost\r\nX-Slow: ", ids[0]).as_bytes())
        .unwrap();
    // Generous bounds: a loaded CI machine must not turn a 1 s timeout into a failure.
    let t = closed_within(&mut slow, Duration::from_secs(15));
    assert!(t.is_ok(), "a client trickling its headers was not cut off: {t:?}");
    // Idle keep-alive: one request, then silence.
    let mut idle = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let t = closed_within(&mut idle, Duration::from_secs(15));
    assert!(t.is_ok(), "an idle keep-alive connection was not closed: {t:?}");
    // The server is still fine.
    assert_eq!(get(server.port, &format!("{}.localhost", ids[0]), "/").status, 200);
}

#[test]
fn the_pruner_in_serve_removes_expired_sites_and_they_stop_being_served() {
    let (repo, ids) = repo_with_sites(1);
    let host = format!("{}.localhost", ids[0]);
    // As of 2099 the site is expired: the pruner's first pass removes it,
    // and the server, on the next commit, answers 404 instead of 410.
    let server = Server::start(&repo, &["--no-build", "--now", "2099-01-01T00:00:00Z"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !repo.sites().is_empty() {
        assert!(Instant::now() < deadline, "the pruner did not run");
        std::thread::sleep(Duration::from_millis(50));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(server.port, &host, "/").status != 404 {
        assert!(Instant::now() < deadline, "the pruned site is still served");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        repo.git(&["log", "-1", "--format=%B", "prototypes"])
            .contains(&format!("Pruned: {}", ids[0]))
    );
    assert!(server.stop());
    repo.fsck();
}

#[test]
fn serving_goes_on_while_git_gc_repacks_the_objects() {
    let (repo, ids) = repo_with_sites(2);
    let server = Server::start(&repo, &["--no-build"]);
    let port = server.port;
    // Load both sites (file lists and blobs) from loose objects first.
    let mut bodies = Vec::new();
    for id in &ids {
        let r = get(port, &format!("{id}.localhost"), "/");
        assert_eq!(r.status, 200);
        bodies.push(r.body);
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (stop, host) = (stop.clone(), format!("{}.localhost", ids[1]));
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = get(port, &host, "/styles.css");
                assert_eq!(r.status, 200, "{}", r.text());
                n += 1;
            }
            n
        })
    };
    // Every loose object moves into a pack and the loose files go.
    repo.git(&["gc", "--prune=now", "--quiet"]);
    let loose = repo.git(&["count-objects", "-v"]);
    assert!(loose.lines().any(|l| l == "count: 0"), "{loose}");
    // A commit after the repack, read from loose objects next to the pack.
    repo.write_inbox("after.yaml", "company: After Gc\ndescription: Built after the repack.\n");
    let after = published_ids(&repo.build().ok().stdout)[0].clone();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    // Files not read before come out of the pack.
    for (id, body) in ids.iter().zip(&bodies) {
        let r = get(port, &format!("{id}.localhost"), "/script.js");
        assert_eq!(r.status, 200);
        assert_eq!(get(port, &format!("{id}.localhost"), "/").body, *body);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(port, &format!("{after}.localhost"), "/").status != 200 {
        assert!(Instant::now() < deadline, "the commit after the repack was not picked up");
        std::thread::sleep(Duration::from_millis(50));
    }
    repo.fsck();
}

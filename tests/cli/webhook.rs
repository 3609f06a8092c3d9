//! The webhook, started for real by `protoforge serve`, posted to with raw
//! HTTP/1.1 requests: what it acknowledges is on disk, and the builder
//! turns it into a site.

use std::time::{Duration, Instant};

use crate::util::*;

const HOST: &str = "127.0.0.1";

fn post(s: &Server, content_type: &str, body: &[u8], extra: &[(&str, &str)]) -> HttpResponse {
    let mut headers = vec![("Content-Type", content_type)];
    headers.extend_from_slice(extra);
    http_body(s.hook, "POST", HOST, "/api/queue/submit", &headers, Some(body))
}

fn json_of(r: &HttpResponse) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
}

/// A tiny valid PNG (1x1, red).
fn png() -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, 1, 1);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header().unwrap().write_image_data(&[200, 30, 30]).unwrap();
    }
    out
}

fn multipart(
    boundary: &str,
    fields: &[(&str, &str)],
    files: &[(&str, &str, &str, &[u8])],
) -> Vec<u8> {
    let mut b = Vec::new();
    for (k, v) in fields {
        b.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    for (field, name, ctype, bytes) in files {
        b.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\nContent-Type: {ctype}\r\n\r\n").as_bytes(),
        );
        b.extend_from_slice(bytes);
        b.extend_from_slice(b"\r\n");
    }
    b.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    b
}

fn inbox_yaml(repo: &Repo, job: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(repo.inbox().join(format!("{job}.yaml")))
        .expect("the job's inbox file");
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn wait_status(s: &Server, job: &str, want: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = get(s.hook, HOST, &format!("/api/queue/status/{job}"));
        assert_eq!(r.status, 200, "{}", r.text());
        let v = json_of(&r);
        if v["status"] == want {
            return v;
        }
        assert!(Instant::now() < deadline, "{job} never reached {want}: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_body_type_lands_in_the_inbox_and_becomes_a_site() {
    let repo = Repo::new();
    let server = Server::start(&repo, &[]);

    let json = post(
        &server,
        "application/json",
        br##"{"company": "Json Bakery", "description": "A bakery with rye bread.", "contact": {"name": "Ana", "email": "ana@example.com"}, "style": {"colors": ["#AA3300"]}, "pages": ["home", "menu"], "budget": "small", "newsletter": true}"##,
        &[],
    );
    assert_eq!(json.status, 202, "{}", json.text());
    let form = post(
        &server,
        "application/x-www-form-urlencoded",
        b"company=Form+Cafe&message=Espresso+and+cakes%2C+open+daily.&email=bo%40example.com&colors=%23112233%2C%23445566&how_did_you_hear=a+friend",
        &[],
    );
    assert_eq!(form.status, 202, "{}", form.text());
    let image = png();
    let notes = "# Menu\n\nRye, buns, cakes.\n".as_bytes();
    let body = multipart(
        "XyZ123",
        &[
            ("company", "Multipart Studio"),
            ("description", "A photo studio; use our logo."),
            ("language", "en"),
        ],
        &[
            ("logo", "../../Logo Final.PNG", "image/png", &image),
            ("notes", "notes.md", "text/markdown", notes),
        ],
    );
    let multi = post(&server, "multipart/form-data; boundary=XyZ123", &body, &[]);
    assert_eq!(multi.status, 202, "{}", multi.text());

    // Read back as the builder reads it.
    let j = json_of(&json);
    let y = inbox_yaml(&repo, j["job_id"].as_str().unwrap());
    assert_eq!(y["company"], "Json Bakery");
    assert_eq!(y["source"], "webhook");
    assert_eq!(y["contact"]["email"], "ana@example.com");
    assert_eq!(y["pages"], serde_json::json!(["home", "menu"]));
    assert_eq!(y["extra"]["budget"], "small");
    assert_eq!(y["extra"]["newsletter"], "true");
    let f = json_of(&form);
    let y = inbox_yaml(&repo, f["job_id"].as_str().unwrap());
    assert_eq!(y["description"], "Espresso and cakes, open daily.");
    assert_eq!(y["style"]["colors"], serde_json::json!(["#112233", "#445566"]));
    assert_eq!(y["extra"]["how_did_you_hear"], "a friend");
    let m = json_of(&multi);
    let job = m["job_id"].as_str().unwrap();
    let y = inbox_yaml(&repo, job);
    let atts = y["attachments"].as_array().unwrap();
    assert_eq!(atts.len(), 2, "{y}");
    assert_eq!(atts[0]["path"], format!("attachments/{job}/logo-final.png"));
    assert_eq!(atts[0]["kind"], "image");
    assert_eq!(atts[1]["path"], format!("attachments/{job}/notes.md"));
    assert_eq!(atts[1]["kind"], "document");
    assert_eq!(std::fs::read(repo.inbox().join(atts[0]["path"].as_str().unwrap())).unwrap(), image);
    assert_eq!(std::fs::read(repo.inbox().join(atts[1]["path"].as_str().unwrap())).unwrap(), notes);

    // The builder in the same process picks them up and says so.
    for answer in [&j, &f, &m] {
        let job = answer["job_id"].as_str().unwrap();
        let done = wait_status(&server, job, "completed");
        assert_eq!(done["project_id"], answer["project_id"]);
        assert!(done["expires_at"].as_str().is_some(), "{done}");
        let pid = answer["project_id"].as_str().unwrap();
        assert!(answer["preview_url"].as_str().unwrap().contains(pid));
        // The static server sees the commit within its refresh interval.
        let deadline = Instant::now() + Duration::from_secs(10);
        while get(server.port, &format!("{pid}.localhost"), "/").status != 200 {
            assert!(Instant::now() < deadline, "{pid} is not served");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    repo.fsck();
}

#[test]
fn a_browser_form_is_sent_to_the_thank_you_page() {
    let repo = Repo::new();
    let server = Server::start(&repo, &["--no-build"]);
    let r = post(
        &server,
        "application/x-www-form-urlencoded",
        b"company=Browser+Co&description=Plain+HTML+form.",
        &[("Accept", "text/html,application/xhtml+xml")],
    );
    assert_eq!(r.status, 303, "{}", r.text());
    let to = r.header("location").unwrap();
    let job = to.strip_prefix("/thanks?job=").unwrap_or_else(|| panic!("{to}"));
    assert!(repo.inbox().join(format!("{job}.yaml")).exists());
    let page = get(server.hook, HOST, to);
    assert_eq!(page.status, 200);
    assert!(page.text().contains("thanks.js"));
    let status = json_of(&get(server.hook, HOST, &format!("/api/queue/status/{job}")));
    assert_eq!(status["status"], "pending", "{status}");
    assert_eq!(status["position"], 1, "{status}");
}

#[test]
fn bad_posts_are_refused_with_a_reason_and_leave_nothing() {
    let repo = Repo::new();
    let server = Server::start_env(
        &repo,
        &["--no-build"],
        &[
            ("PROTOFORGE_WEBHOOK__MAX_BODY_BYTES", "65536"),
            ("PROTOFORGE_WEBHOOK__MAX_FIELD_BYTES", "100"),
            ("PROTOFORGE_LIMITS__MAX_ATTACHMENTS", "2"),
            ("PROTOFORGE_WEBHOOK__RATE_LIMIT_BURST", "100"),
        ],
    );
    let exe = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00";
    let cases: Vec<(&str, Vec<u8>, &str, u16, &str)> = vec![
        (
            "application/json",
            b"{\"company\": \"X\"}".to_vec(),
            "no description",
            422,
            "invalid_submission",
        ),
        ("application/json", b"[1, 2]".to_vec(), "not an object", 400, "invalid_json"),
        ("application/json", b"{nope".to_vec(), "broken JSON", 400, "invalid_json"),
        ("text/plain", b"hello".to_vec(), "unsupported type", 415, "unsupported_media_type"),
        ("multipart/form-data", b"--x\r\n".to_vec(), "no boundary", 400, "invalid_multipart"),
        (
            "multipart/form-data; boundary=B",
            b"--B\r\nContent-Disposition: form-data; name=\"description\"\r\n\r\nunterminated"
                .to_vec(),
            "truncated",
            400,
            "invalid_multipart",
        ),
        (
            "application/x-www-form-urlencoded",
            format!("description={}", "a".repeat(101)).into_bytes(),
            "long field",
            413,
            "field_too_long",
        ),
        (
            "application/x-www-form-urlencoded",
            format!("description={}", "a".repeat(70_000)).into_bytes(),
            "big body",
            413,
            "body_too_large",
        ),
        (
            "multipart/form-data; boundary=B",
            multipart("B", &[("description", "x")], &[("logo", "logo.png", "image/png", exe)]),
            "lying Content-Type",
            415,
            "unsupported_file",
        ),
        (
            "multipart/form-data; boundary=B",
            multipart("B", &[("description", "x")], &[("f", "empty.txt", "text/plain", b"")]),
            "0-byte file",
            422,
            "empty_file",
        ),
        (
            "multipart/form-data; boundary=B",
            multipart(
                "B",
                &[("description", "x")],
                &[
                    ("a", "a.txt", "text/plain", b"a"),
                    ("b", "b.txt", "text/plain", b"b"),
                    ("c", "c.txt", "text/plain", b"c"),
                ],
            ),
            "too many files",
            413,
            "too_many_files",
        ),
    ];
    for (ctype, body, what, status, code) in cases {
        let r = post(&server, ctype, &body, &[]);
        assert_eq!(r.status, status, "{what}: {}", r.text());
        let v = json_of(&r);
        assert_eq!(v["error"], code, "{what}: {v}");
        assert!(v["detail"].as_str().is_some_and(|d| d.len() > 10), "{what}: {v}");
    }
    // The invalid submission names its field.
    let r = post(
        &server,
        "application/json",
        b"{\"company\": \"X\", \"contact\": {\"email\": \"nope\"}, \"description\": \"d\"}",
        &[],
    );
    assert_eq!(r.status, 422);
    assert!(r.text().contains("email"), "{}", r.text());
    // Wrong method, unknown job, hostile job ids.
    assert_eq!(get(server.hook, HOST, "/api/queue/submit").status, 405);
    for job in ["..%2f..%2fprotoforge", "nope", "20261122T000000Z-none-aaaaaaaa"] {
        let r = get(server.hook, HOST, &format!("/api/queue/status/{job}"));
        assert_eq!(r.status, 404, "{job}");
    }
    // Empty file inputs (what a browser sends when no file was chosen) are fine.
    let ok = post(
        &server,
        "multipart/form-data; boundary=B",
        &multipart(
            "B",
            &[("description", "fine"), ("description", "twice")],
            &[("logo", "", "application/octet-stream", b"")],
        ),
        &[],
    );
    assert_eq!(ok.status, 202, "{}", ok.text());
    let y = inbox_yaml(&repo, json_of(&ok)["job_id"].as_str().unwrap());
    assert_eq!(y["description"], "fine\n\ntwice");
    let files: Vec<_> = std::fs::read_dir(repo.inbox())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "yaml"))
        .collect();
    assert_eq!(files.len(), 1, "only the good post is in the inbox");
    // No attachment folder was left by a refused post.
    let dirs = std::fs::read_dir(repo.inbox().join("attachments"))
        .map(|d| d.filter_map(Result::ok).filter(|e| e.path().is_dir()).count())
        .unwrap_or(0);
    assert_eq!(dirs, 0);
}

#[test]
fn honeypot_idempotency_and_rate_limit() {
    let repo = Repo::new();
    let server = Server::start_env(
        &repo,
        &["--no-build"],
        &[
            ("PROTOFORGE_WEBHOOK__RATE_LIMIT_BURST", "4"),
            ("PROTOFORGE_WEBHOOK__RATE_LIMIT_PER_MINUTE", "1"),
        ],
    );
    let yaml_count = || {
        std::fs::read_dir(repo.inbox())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "yaml"))
            .count()
    };

    let bot = post(
        &server,
        "application/x-www-form-urlencoded",
        b"description=Buy+now&website=http%3A%2F%2Fspam.example",
        &[],
    );
    assert_eq!(bot.status, 202, "the bot is told it worked");
    assert_eq!(yaml_count(), 0);

    let a = post(
        &server,
        "application/json",
        br#"{"description": "Same key"}"#,
        &[("Idempotency-Key", "k-1")],
    );
    let b = post(
        &server,
        "application/json",
        br#"{"description": "Same key, retried"}"#,
        &[("Idempotency-Key", "k-1")],
    );
    assert_eq!(json_of(&a)["job_id"], json_of(&b)["job_id"]);
    let c = post(&server, "application/json", br#"{"description": "Double click"}"#, &[]);
    assert_eq!(yaml_count(), 2);
    assert_eq!(c.status, 202);
    // The fifth post of the burst is refused, with when to come back.
    let d = post(&server, "application/json", br#"{"description": "Double click"}"#, &[]);
    assert_eq!(d.status, 429, "{}", d.text());
    assert!(d.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(yaml_count(), 2);

    let m = get(server.hook, HOST, "/metrics").text();
    assert!(m.contains("protoforge_webhook_honeypot_total 1"), "{m}");
    assert!(m.contains("protoforge_webhook_duplicates_total 1"), "{m}");
    assert!(m.contains("protoforge_webhook_rate_limited_total 1"), "{m}");
}

#[test]
fn the_same_content_twice_is_one_job() {
    let repo = Repo::new();
    let server = Server::start(&repo, &["--no-build"]);
    let body = br#"{"company": "Twice", "description": "Posted twice by a double click."}"#;
    let a = json_of(&post(&server, "application/json", body, &[]));
    let b = json_of(&post(&server, "application/json", body, &[]));
    assert_eq!(a, b);
}

#[test]
fn signatures_are_checked_when_required() {
    let repo = Repo::new();
    let server = Server::start_env(
        &repo,
        &["--no-build"],
        &[
            ("PROTOFORGE_WEBHOOK__REQUIRE_SIGNATURE", "true"),
            ("PROTOFORGE_WEBHOOK_SECRET", "It's a Secret to Everybody"),
        ],
    );
    let body = br#"{"description": "Signed post"}"#;
    let r = post(&server, "application/json", body, &[]);
    assert_eq!(r.status, 401, "{}", r.text());
    let sig = {
        use hmac::{KeyInit, Mac};
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(b"It's a Secret to Everybody").unwrap();
        mac.update(body);
        format!("sha256={}", data_encoding::HEXLOWER.encode(&mac.finalize().into_bytes()))
    };
    let r = post(&server, "application/json", body, &[("X-Hub-Signature-256", &sig)]);
    assert_eq!(r.status, 202, "{}", r.text());
    let r = post(
        &server,
        "application/json",
        br#"{"description": "Tampered"}"#,
        &[("X-Hub-Signature-256", &sig)],
    );
    assert_eq!(r.status, 401);
    let r = post(
        &server,
        "application/json",
        body,
        &[("X-Protoforge-Signature", "t=1000000000,v1=00")],
    );
    assert_eq!(r.status, 401);
    assert!(r.text().contains("5 minutes"), "{}", r.text());
}

#[test]
fn the_event_stream_follows_a_job_to_completed() {
    use std::io::{BufRead, BufReader, Write};
    let repo = Repo::new();
    let server = Server::start(&repo, &[]);
    let r = post(
        &server,
        "application/json",
        br#"{"company": "Stream Co", "description": "Watch me build."}"#,
        &[],
    );
    let job = json_of(&r)["job_id"].as_str().unwrap().to_string();
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", server.hook)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        stream,
        "GET /api/queue/{job}/events HTTP/1.1\r\nHost: {HOST}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut ids = Vec::new();
    let mut statuses = Vec::new();
    for line in BufReader::new(stream).lines() {
        let line = line.unwrap();
        if let Some(id) = line.strip_prefix("id: ") {
            ids.push(id.to_string());
        }
        if let Some(data) = line.strip_prefix("data: ") {
            let v: serde_json::Value = serde_json::from_str(data).unwrap();
            statuses.push(v["status"].as_str().unwrap().to_string());
            if v["status"] == "completed" {
                break;
            }
        }
    }
    assert_eq!(statuses.last().map(String::as_str), Some("completed"), "{statuses:?}");
    assert_eq!(ids.last().map(String::as_str), Some("completed"));
    // Reconnecting with the last id seen sends nothing new, and ends.
    let r = http(
        server.hook,
        "GET",
        HOST,
        &format!("/api/queue/{job}/events"),
        &[("Last-Event-ID", "completed")],
    );
    assert_eq!(r.status, 200);
    assert!(!r.text().contains("data:"), "{}", r.text());
    let r = http(
        server.hook,
        "GET",
        HOST,
        &format!("/api/queue/{job}/events"),
        &[("Last-Event-ID", "pending-1")],
    );
    assert!(r.text().contains("\"status\":\"completed\""), "{}", r.text());
}

#[test]
fn admin_routes_list_and_cancel_and_need_the_token() {
    let repo = Repo::new();
    let off = Server::start(&repo, &["--no-build"]);
    let r = get(off.hook, HOST, "/api/queue/list");
    assert_eq!(r.status, 403, "no token configured: admin routes are off");
    assert!(r.text().contains("PROTOFORGE_ADMIN_TOKEN"));
    drop(off);

    let token = "t0ken-with-enough-entropy-1234567890";
    let server = Server::start_env(&repo, &["--no-build"], &[("PROTOFORGE_ADMIN_TOKEN", token)]);
    let bearer = format!("Bearer {token}");
    for auth in [None, Some("Bearer wrong"), Some("Basic abc")] {
        let headers: Vec<(&str, &str)> =
            auth.map(|a| vec![("Authorization", a)]).unwrap_or_default();
        assert_eq!(
            http(server.hook, "GET", HOST, "/api/queue/list", &headers).status,
            401,
            "{auth:?}"
        );
    }
    let a =
        json_of(&post(&server, "application/json", br#"{"description": "First in line"}"#, &[]));
    let b =
        json_of(&post(&server, "application/json", br#"{"description": "Second in line"}"#, &[]));
    let (ja, jb) = (a["job_id"].as_str().unwrap(), b["job_id"].as_str().unwrap());
    let list =
        json_of(&http(server.hook, "GET", HOST, "/api/queue/list", &[("Authorization", &bearer)]));
    let listed: Vec<&str> =
        list["jobs"].as_array().unwrap().iter().map(|j| j["job_id"].as_str().unwrap()).collect();
    assert_eq!(listed.len(), 2, "{list}");
    assert!(listed.contains(&ja) && listed.contains(&jb));

    // Cancel needs the token too; then the file moves and is kept.
    assert_eq!(http(server.hook, "DELETE", HOST, &format!("/api/queue/{ja}"), &[]).status, 401);
    let r = http(
        server.hook,
        "DELETE",
        HOST,
        &format!("/api/queue/{ja}"),
        &[("Authorization", &bearer)],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!repo.inbox().join(format!("{ja}.yaml")).exists());
    assert!(repo.inbox().join(format!("cancelled/{ja}.yaml")).exists());
    assert_eq!(
        json_of(&get(server.hook, HOST, &format!("/api/queue/status/{ja}")))["status"],
        "cancelled"
    );
    let again = http(
        server.hook,
        "DELETE",
        HOST,
        &format!("/api/queue/{ja}"),
        &[("Authorization", &bearer)],
    );
    assert_eq!(again.status, 409, "{}", again.text());
    drop(server);

    // A builder never builds the cancelled job.
    let run = repo.build().ok();
    assert_eq!(published_ids(&run.stdout).len(), 1, "{}", run.all());
}

#[test]
fn prototype_routes_info_files_zip_and_delete() {
    let repo = Repo::new();
    let token = "another-long-admin-token-0987654321";
    let server = Server::start_env(&repo, &[], &[("PROTOFORGE_ADMIN_TOKEN", token)]);
    let a = json_of(&post(
        &server,
        "application/json",
        br#"{"company": "Zip Co", "description": "A shop that ships zips."}"#,
        &[],
    ));
    wait_status(&server, a["job_id"].as_str().unwrap(), "completed");
    let pid = a["project_id"].as_str().unwrap();

    let info = json_of(&get(server.hook, HOST, &format!("/api/prototype/{pid}")));
    assert_eq!(info["project_id"], pid);
    assert!(info["expires_at"].as_str().is_some(), "{info}");
    let files = json_of(&get(server.hook, HOST, &format!("/api/prototype/{pid}/files")));
    let paths: Vec<&str> =
        files["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert!(paths.contains(&"index.html"), "{files}");

    let zip = get(server.hook, HOST, &format!("/api/prototype/{pid}/download"));
    assert_eq!(zip.status, 200);
    assert_eq!(zip.header("content-type"), Some("application/zip"));
    let path = repo.path().join("site.zip");
    std::fs::write(&path, &zip.body).unwrap();
    let test = std::process::Command::new("unzip").arg("-t").arg(&path).output().unwrap();
    assert!(test.status.success(), "{}", String::from_utf8_lossy(&test.stdout));
    let index = std::process::Command::new("unzip")
        .arg("-p")
        .arg(&path)
        .arg("index.html")
        .output()
        .unwrap();
    assert_eq!(index.stdout, repo.show(&format!("sites/{pid}/index.html")).into_bytes());
    let names = std::process::Command::new("unzip").arg("-Z1").arg(&path).output().unwrap();
    assert!(!String::from_utf8_lossy(&names.stdout).contains("metadata.json"));

    for bad in ["../etc", "UPPER-aaaaaaaa", "nope"] {
        assert_eq!(get(server.hook, HOST, &format!("/api/prototype/{bad}")).status, 404, "{bad}");
    }
    assert_eq!(
        http(server.hook, "DELETE", HOST, &format!("/api/prototype/{pid}"), &[]).status,
        401
    );
    let del = http(
        server.hook,
        "DELETE",
        HOST,
        &format!("/api/prototype/{pid}"),
        &[("Authorization", &format!("Bearer {token}"))],
    );
    assert_eq!(del.status, 200, "{}", del.text());
    assert!(!repo.sites().contains(&pid.to_string()));
    assert_eq!(get(server.hook, HOST, &format!("/api/prototype/{pid}")).status, 404);
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(server.port, &format!("{pid}.localhost"), "/").status != 404 {
        assert!(Instant::now() < deadline, "the deleted site is still served");
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = repo.git(&["log", "-1", "--format=%B", "prototypes"]);
    assert!(log.contains(&format!("Prototype-Id: {pid}")), "{log}");
    repo.fsck();
}

#[test]
fn random_bodies_and_headers_never_break_the_live_server() {
    use proptest::prelude::*;
    let repo = Repo::new();
    let server = Server::start_env(
        &repo,
        &["--no-build"],
        &[("PROTOFORGE_WEBHOOK__RATE_LIMIT_BURST", "100000")],
    );
    let port = server.hook;
    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases: 96,
        ..Default::default()
    });
    let strategy = (
        "(application/json|application/x-www-form-urlencoded|multipart/form-data; boundary=[a-z]{1,6}|multipart/form-data; boundary=\"[ -~]{0,10}\"|[ -~]{0,30})",
        proptest::collection::vec(
            (
                "(Idempotency-Key|X-Hub-Signature-256|X-Protoforge-Signature|Accept|Origin|X-Forwarded-For|Last-Event-ID)",
                "[ -~]{0,40}",
            ),
            0..4,
        ),
        proptest::collection::vec(any::<u8>(), 0..400),
    );
    runner
        .run(&strategy, |(ct, headers, body)| {
            let mut h: Vec<(&str, &str)> = vec![("Content-Type", ct.as_str())];
            h.extend(headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            let r = http_body(port, "POST", HOST, "/api/queue/submit", &h, Some(&body));
            prop_assert!(r.status < 500, "{} {}", r.status, r.text());
            if r.status >= 400 {
                let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                prop_assert!(v["error"].is_string() && v["detail"].is_string(), "{v}");
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(get(port, HOST, "/healthz").status, 200);
}

#[test]
fn cors_allows_only_listed_origins() {
    let repo = Repo::new();
    let server = Server::start_env(
        &repo,
        &["--no-build"],
        &[("PROTOFORGE_WEBHOOK__CORS_ORIGINS", "[\"https://shop.example\"]")],
    );
    let pre = http(
        server.hook,
        "OPTIONS",
        HOST,
        "/api/queue/submit",
        &[("Origin", "https://shop.example"), ("Access-Control-Request-Method", "POST")],
    );
    assert_eq!(pre.status, 204);
    assert_eq!(pre.header("access-control-allow-origin"), Some("https://shop.example"));
    assert!(pre.header("access-control-allow-headers").unwrap().contains("idempotency-key"));
    let other = http(
        server.hook,
        "OPTIONS",
        HOST,
        "/api/queue/submit",
        &[("Origin", "https://evil.example")],
    );
    assert_eq!(other.header("access-control-allow-origin"), None);
    let r = post(
        &server,
        "application/json",
        br#"{"description": "From the shop's page"}"#,
        &[("Origin", "https://shop.example")],
    );
    assert_eq!(r.status, 202);
    assert_eq!(r.header("access-control-allow-origin"), Some("https://shop.example"));
}

#[test]
fn forwarded_for_counts_only_from_a_trusted_proxy() {
    let repo = Repo::new();
    let limits = [
        ("PROTOFORGE_WEBHOOK__RATE_LIMIT_BURST", "2"),
        ("PROTOFORGE_WEBHOOK__RATE_LIMIT_PER_MINUTE", "1"),
    ];
    // Untrusted: a forged X-Forwarded-For does not buy a fresh bucket.
    let server = Server::start_env(&repo, &["--no-build"], &limits);
    let statuses: Vec<u16> = (0..3)
        .map(|i| {
            post(
                &server,
                "application/json",
                format!("{{\"description\": \"untrusted {i}\"}}").as_bytes(),
                &[("X-Forwarded-For", &format!("203.0.113.{i}"))],
            )
            .status
        })
        .collect();
    assert_eq!(statuses, vec![202, 202, 429]);
    drop(server);
    // Trusted (the test client is 127.0.0.1): each client address has its own bucket.
    let mut env = limits.to_vec();
    env.push(("PROTOFORGE_WEBHOOK__TRUSTED_PROXIES", "[\"127.0.0.1\"]"));
    let server = Server::start_env(&repo, &["--no-build"], &env);
    for i in 0..3 {
        let r = post(
            &server,
            "application/json",
            format!("{{\"description\": \"trusted {i}\"}}").as_bytes(),
            &[("X-Forwarded-For", &format!("198.51.100.7, 203.0.113.{i}"))],
        );
        assert_eq!(r.status, 202, "client {i}: {}", r.text());
    }
    let same: Vec<u16> = (0..3)
        .map(|i| {
            post(
                &server,
                "application/json",
                format!("{{\"description\": \"same client {i}\"}}").as_bytes(),
                &[("X-Forwarded-For", "203.0.113.99")],
            )
            .status
        })
        .collect();
    assert_eq!(same, vec![202, 202, 429]);
}

#[test]
fn a_body_that_trickles_in_is_cut_off() {
    use std::io::{Read, Write};
    let repo = Repo::new();
    let server = Server::start_env(
        &repo,
        &["--no-build"],
        &[("PROTOFORGE_WEBHOOK__BODY_READ_TIMEOUT_SECS", "1")],
    );
    let mut s = std::net::TcpStream::connect(("127.0.0.1", server.hook)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"POST /api/queue/submit HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"descr").unwrap();
    let start = Instant::now();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(text.contains("body_timeout"), "{text}");
}

#[test]
fn idempotency_outlives_a_restart() {
    let repo = Repo::new();
    let server = Server::start(&repo, &["--no-build"]);
    let body = br#"{"description": "Sent, then the server restarted, then retried"}"#;
    let first =
        json_of(&post(&server, "application/json", body, &[("Idempotency-Key", "retry-me")]));
    let content =
        json_of(&post(&server, "application/json", br#"{"description": "Same content"}"#, &[]));
    server.kill9();
    let server = Server::start(&repo, &["--no-build"]);
    let again =
        json_of(&post(&server, "application/json", body, &[("Idempotency-Key", "retry-me")]));
    // (The preview URL names the new server's port: it listens on port 0, and the URL
    // follows the port it really got.)
    assert_eq!((&first["job_id"], &first["project_id"]), (&again["job_id"], &again["project_id"]));
    let preview = again["preview_url"].as_str().unwrap();
    assert!(preview.ends_with(&format!(".localhost:{}/", server.port)), "{preview}");
    let same =
        json_of(&post(&server, "application/json", br#"{"description": "Same content"}"#, &[]));
    assert_eq!(content["job_id"], same["job_id"]);
    let yaml = std::fs::read_dir(repo.inbox())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "yaml"))
        .count();
    assert_eq!(yaml, 2);
}

#[test]
fn bodies_in_memory_are_bounded_across_connections() {
    use std::io::Write;
    let repo = Repo::new();
    let server = Server::start_env(
        &repo,
        &["--no-build"],
        &[
            ("PROTOFORGE_WEBHOOK__MAX_BODY_BYTES", "65536"),
            ("PROTOFORGE_WEBHOOK__MAX_INFLIGHT_BYTES", "65536"),
            ("PROTOFORGE_WEBHOOK__BODY_READ_TIMEOUT_SECS", "2"),
        ],
    );
    // A slow client reserves 40 KB of the 64 KB and stalls...
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", server.hook)).unwrap();
    slow.write_all(b"POST /api/queue/submit HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 40000\r\n\r\n{").unwrap();
    let reserved = "protoforge_webhook_body_reserved_bytes 40960\n";
    let deadline = Instant::now() + Duration::from_secs(10);
    while !get(server.hook, HOST, "/metrics").text().contains(reserved) {
        assert!(Instant::now() < deadline, "the slow body was never reserved");
        std::thread::sleep(Duration::from_millis(10));
    }
    // ...so a second 40 KB post waits for room (until the slow one is cut off),
    // and is then taken, not refused.
    let description = "x".repeat(39_000);
    let body = format!("{{\"description\": \"{description}\"}}");
    let start = Instant::now();
    let r = post(&server, "application/json", body.as_bytes(), &[]);
    let waited = start.elapsed();
    assert_eq!(r.status, 202, "{}", r.text());
    assert!(waited >= Duration::from_millis(1200), "did not wait for room: {waited:?}");
    drop(slow);
}

#[test]
fn a_taken_port_fails_serve_at_once() {
    let repo = Repo::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    // The webhook's port, then the sites' port: either one taken stops serve with
    // exit 2 and the key to change, and leaves nothing running (it used to keep
    // the webhook, builder and pruner going when the sites' port was taken).
    for (key, env) in [
        ("webhook.listen", [("PROTOFORGE_WEBHOOK__LISTEN", port), ("PROTOFORGE_SERVE__LISTEN", 0)]),
        ("serve.listen", [("PROTOFORGE_SERVE__LISTEN", port), ("PROTOFORGE_WEBHOOK__LISTEN", 0)]),
    ] {
        let env: Vec<(&str, String)> =
            env.iter().map(|(k, p)| (*k, format!("127.0.0.1:{p}"))).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let start = Instant::now();
        let run = repo.run_env(&["serve", "--no-prune"], &env);
        assert_eq!(run.code, 2, "{}", run.all());
        assert!(run.stderr.contains(key), "{}", run.stderr);
        assert!(start.elapsed() < Duration::from_secs(15));
    }
    drop(taken);
}

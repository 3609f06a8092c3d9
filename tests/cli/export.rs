//! `protoforge export`, served by a real nginx and a real Caddy (Debian packages) started here,
//! answers as `protoforge serve` does: the same status, bytes and headers for the same requests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{HttpResponse, Repo, Server, free_port, get, published_ids};

/// nginx on a free port with `export`'s configs, stopped when dropped.
struct Nginx {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// None when nginx is not installed and the checkers are not required.
    fn start(export: &Path) -> Option<Nginx> {
        let bin = installed(&["/usr/sbin/nginx", "/usr/bin/nginx"], "nginx-light")?;
        // The server blocks listen on 80; a user edits that line, and so does this test.
        let conf = std::fs::read_to_string(export.join("nginx.conf")).unwrap();
        assert_eq!(conf.matches("listen 80;").count(), 2);
        for _ in 0..5 {
            if let Some(nginx) = Nginx::try_start(&bin, export, &conf) {
                return Some(nginx);
            }
        }
        panic!("nginx did not start on five free ports");
    }

    fn try_start(bin: &Path, export: &Path, conf: &str) -> Option<Nginx> {
        let port = free_port();
        std::fs::write(
            export.join("nginx.conf"),
            conf.replace("listen 80;", &format!("listen 127.0.0.1:{port};")),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let main = format!(
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 64; }}\nhttp {{\n  access_log off;\n  \
             client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fcgi;\n  \
             uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  include {};\n}}\n",
            export.join("nginx.conf").display()
        );
        std::fs::write(dir.path().join("main.conf"), main).unwrap();
        let test = Command::new(bin)
            .args(["-t", "-q", "-p"])
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("main.conf"))
            .output()
            .unwrap();
        assert!(test.status.success(), "nginx -t: {}", String::from_utf8_lossy(&test.stderr));
        let mut cmd = Command::new(bin);
        cmd.arg("-p").arg(dir.path()).arg("-c").arg(dir.path().join("main.conf"));
        let child = serving(cmd, port)?;
        Some(Nginx { child, port, _dir: dir })
    }
}

/// Caddy (Debian's package) on a free port with `export`'s Caddyfile, stopped when dropped.
struct Caddy {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Caddy {
    fn start(export: &Path) -> Option<Caddy> {
        let bin = installed(&["/usr/bin/caddy"], "caddy")?;
        for _ in 0..5 {
            if let Some(caddy) = Caddy::try_start(&bin, export) {
                return Some(caddy);
            }
        }
        panic!("caddy did not start on five free ports");
    }

    fn try_start(bin: &Path, export: &Path) -> Option<Caddy> {
        let port = free_port();
        // Plain HTTP on a test port: what a user changes is the site addresses.
        let conf = std::fs::read_to_string(export.join("Caddyfile")).unwrap();
        let conf = conf
            .replace("\n*.localhost {", &format!("\nhttp://*.localhost:{port} {{"))
            .replace("\nlocalhost {", &format!("\nhttp://localhost:{port} {{"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("Caddyfile");
        std::fs::write(&file, format!("{{\n\tadmin off\n\tauto_https off\n}}\n{conf}")).unwrap();
        let mut cmd = Command::new(bin);
        cmd.args(["run", "--adapter", "caddyfile", "--config"]).arg(&file);
        for var in ["HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME"] {
            cmd.env(var, dir.path());
        }
        let child = serving(cmd, port)?;
        Some(Caddy { child, port, _dir: dir })
    }
}

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first of `paths` that exists; None (the test is skipped) when none does and the
/// checkers are not required.
fn installed(paths: &[&str], package: &str) -> Option<PathBuf> {
    let found = paths.iter().map(PathBuf::from).find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var_os("PROTOFORGE_REQUIRE_CHECKERS").is_none(),
            "{package} is required (apt-get install {package}); scripts/test installs it"
        );
        eprintln!("skipped: {package} is not installed");
    }
    found
}

/// Start `cmd` and wait until it serves `port` itself: a port found free may be taken by
/// another test first, and then the child exits and someone else would answer. None then.
fn serving(mut cmd: Command, port: u16) -> Option<Child> {
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut alive = true;
    while alive && std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        alive = child.try_wait().unwrap().is_none();
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(50));
    if alive
        && child.try_wait().unwrap().is_none()
        && get(port, "localhost", "/healthz").text() == "ok\n"
    {
        return Some(child);
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// The headers both must agree on.
const SAME: &[&str] = &[
    "content-type",
    "cache-control",
    "content-security-policy",
    "x-content-type-options",
    "referrer-policy",
    "x-robots-tag",
    "location",
];

fn compare(what: &str, ours: &HttpResponse, theirs: &HttpResponse, headers: bool) {
    assert_eq!(ours.status, theirs.status, "{what}: status");
    // A redirect's body is never shown; its Location is compared below.
    assert!(
        (300..400).contains(&ours.status) || ours.body == theirs.body,
        "{what}: bodies differ:\n{}\n---\n{}",
        ours.text(),
        theirs.text()
    );
    let redirect = (300..400).contains(&ours.status);
    // No content: nothing for a type or a cache policy to describe.
    let empty = ours.status == 204;
    if headers {
        for h in SAME
            .iter()
            .filter(|h| !redirect || **h == "location")
            .filter(|h| !empty || !["content-type", "cache-control"].contains(*h))
        {
            assert_eq!(ours.header(h), theirs.header(h), "{what}: header {h}");
        }
    }
}

#[test]
fn an_export_served_by_nginx_and_caddy_answers_as_protoforge_serve_does() {
    let repo = Repo::new();
    for name in repo.add_examples() {
        if !["01-bakery.yaml", "02-saas-short.yaml", "04-portfolio-attachments.yaml"]
            .contains(&name.as_str())
        {
            std::fs::remove_file(repo.inbox().join(name)).unwrap();
        }
    }
    let run = repo.build().ok();
    let ids = published_ids(&run.stdout);
    assert_eq!(ids.len(), 3, "{}", run.stdout);
    // At +40 days, one site (extended) is live and the others have expired.
    let live = &ids[2];
    repo.run(&["extend", live, "--days", "90"]).ok();
    let gone = &ids[0];
    let later = (chrono::Utc::now() + chrono::TimeDelta::days(40)).to_rfc3339();
    let export = repo.path().join("export");
    let run = repo.run(&["export", export.to_str().unwrap(), "--now", &later]).ok();
    assert!(run.stdout.contains("1 site(s), 2 expired"), "{}", run.stdout);

    let nginx = Nginx::start(&export);
    let caddy = Caddy::start(&export);
    let serve =
        Server::start(&repo, &["--no-build", "--no-prune", "--no-webhook", "--now", &later]);
    let image =
        std::fs::read_dir(export.join("public/prototypes").join(live).join("assets/images"))
            .expect("the portfolio has images")
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .next()
            .expect("an image");
    let host = format!("{live}.localhost");
    let gone_host = format!("{gone}.localhost");
    let cases: Vec<(String, String)> = vec![
        (host.clone(), "/".into()),
        (host.clone(), "/index.html".into()),
        (host.clone(), "/styles.css".into()),
        (host.clone(), "/script.js".into()),
        (host.clone(), format!("/assets/images/{image}")),
        (host.clone(), "/metadata.json".into()),
        (host.clone(), "/no-such-page".into()),
        (host.clone(), "/.git/config".into()),
        (host.clone(), "/favicon.ico".into()),
        (gone_host.clone(), "/".into()),
        (gone_host.clone(), "/styles.css".into()),
        ("nosuch-aaaaaaaa.localhost".into(), "/".into()),
        ("localhost".into(), format!("/prototypes/{live}/")),
        ("localhost".into(), format!("/prototypes/{live}/styles.css")),
        ("localhost".into(), format!("/prototypes/{live}")),
        ("localhost".into(), format!("/prototypes/{gone}/")),
        ("localhost".into(), "/healthz".into()),
        ("localhost".into(), "/nothing-here".into()),
    ];
    let servers =
        [nginx.as_ref().map(|n| ("nginx", n.port)), caddy.as_ref().map(|c| ("caddy", c.port))];
    for (name, port) in servers.into_iter().flatten() {
        let mut statuses = Vec::new();
        for (h, path) in &cases {
            let what = format!("{name}: {h}{path}");
            let ours = get(serve.port, h, path);
            let theirs = get(port, h, path);
            // /healthz is plain text for a probe; only its answer matters.
            compare(&what, &ours, &theirs, path != "/healthz");
            statuses.push(ours.status);
        }
        // The cases cover every kind of answer.
        for status in [200, 204, 308, 404, 410] {
            assert!(statuses.contains(&status), "no case answered {status}: {statuses:?}");
        }
        let front = format!("{name}: the front page");
        compare(&front, &get(serve.port, "localhost", "/"), &get(port, "localhost", "/"), true);
    }
}

//! Test helpers: a real temporary site repo, the real binary, the real git.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_protoforge");

/// The project's own directory (for `examples/` and `tests/fixtures/`).
pub fn project_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(rel: &str) -> PathBuf {
    project_dir().join("tests/fixtures").join(rel)
}

/// A site repo in a temp dir, created with `protoforge init`.
pub struct Repo {
    dir: tempfile::TempDir,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "command failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// A command with a clean protoforge environment.
pub fn command(cwd: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(cwd).stdin(Stdio::null());
    for (k, _) in std::env::vars() {
        if k.starts_with("PROTOFORGE_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("PROTOFORGE_LOG", "protoforge=info");
    cmd
}

impl Repo {
    pub fn new() -> Repo {
        let dir = tempfile::Builder::new().prefix("pf-test-").tempdir().expect("temp dir");
        let repo = Repo { dir };
        repo.run(&["init", "."]).ok();
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn inbox(&self) -> PathBuf {
        self.path().join("inbox")
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(command(self.path()).args(args).output().expect("run protoforge"))
    }

    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = command(self.path());
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Run::from(cmd.output().expect("run protoforge"))
    }

    pub fn build(&self) -> Run {
        self.run(&["build", "--once"])
    }

    /// Run git and return its stdout; panics on failure.
    pub fn git(&self, args: &[&str]) -> String {
        let out =
            Command::new("git").current_dir(self.path()).args(args).output().expect("run git");
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("git output is UTF-8")
    }

    pub fn git_ok(&self, args: &[&str]) -> bool {
        Command::new("git")
            .current_dir(self.path())
            .args(args)
            .output()
            .expect("run git")
            .status
            .success()
    }

    pub fn fsck(&self) {
        fsck(self.path());
    }

    pub fn write_inbox(&self, name: &str, text: impl AsRef<[u8]>) -> PathBuf {
        let path = self.inbox().join(name);
        std::fs::write(&path, text).expect("write inbox file");
        path
    }

    /// Copy the project's examples (and their attachments) into the inbox.
    pub fn add_examples(&self) -> Vec<String> {
        let mut names = Vec::new();
        copy_tree(&project_dir().join("examples"), &self.inbox(), &mut names);
        names.retain(|n| n.ends_with(".yaml"));
        names.sort();
        names
    }

    /// Sites on the branch.
    pub fn sites(&self) -> Vec<String> {
        if !self.git_ok(&["rev-parse", "--verify", "--quiet", "prototypes"]) {
            return Vec::new();
        }
        let out = self.git(&["ls-tree", "--name-only", "prototypes", "sites/"]);
        out.lines().map(|l| l.trim_start_matches("sites/").to_string()).collect()
    }

    pub fn show(&self, path: &str) -> String {
        self.git(&["show", &format!("prototypes:{path}")])
    }

    pub fn metadata(&self, id: &str) -> serde_json::Value {
        serde_json::from_str(&self.show(&format!("sites/{id}/metadata.json")))
            .expect("metadata.json is JSON")
    }

    pub fn commit_count(&self) -> usize {
        self.git(&["rev-list", "--count", "prototypes"]).trim().parse().expect("a count")
    }
}

fn copy_tree(from: &Path, to: &Path, names: &mut Vec<String>) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let path = entry.path();
        let target = to.join(entry.file_name());
        if path.is_dir() {
            copy_tree(&path, &target, names);
        } else {
            std::fs::copy(&path, &target).expect("copy");
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
}

/// Project ids of `published` rows in a build summary.
pub fn published_ids(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|l| l.contains(" published "))
        .filter_map(|l| l.split_whitespace().last().map(String::from))
        .collect()
}

/// A response read off the wire.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Send one raw HTTP/1.1 request (the request target is sent verbatim, so
/// attacks reach the server as written) and read the whole response.
pub fn http(
    port: u16,
    method: &str,
    host: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> HttpResponse {
    http_body(port, method, host, target, headers, None)
}

/// [`http`] with a body (sent with its Content-Length unless `headers`
/// give one).
pub fn http_body(
    port: u16,
    method: &str,
    host: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> HttpResponse {
    try_http_body(port, method, host, target, headers, body).unwrap_or_else(|e| panic!("{e}"))
}

/// [`http_body`], with a failure to connect or a cut connection as an error.
pub fn try_http_body(
    port: u16,
    method: &str,
    host: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<HttpResponse, String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))
        .map_err(|e| format!("connect to the server: {e}"))?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    let mut request =
        format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(body) = body
        && !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).map_err(|e| format!("send: {e}"))?;
    if let Some(body) = body {
        // The server may answer (413) before reading it all.
        let _ = stream.write_all(body);
    }
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|e| format!("read: {e}"))?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no header end in {:?}", String::from_utf8_lossy(&raw)))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line in {head:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(HttpResponse { status, headers, body: raw[split + 4..].to_vec() })
}

pub fn get(port: u16, host: &str, target: &str) -> HttpResponse {
    http(port, "GET", host, target, &[])
}

/// `git fsck --strict` of the repository at `dir` must pass.
pub fn fsck(dir: &Path) {
    let out = Command::new("git")
        .current_dir(dir)
        .args(["fsck", "--strict", "--no-dangling"])
        .output()
        .expect("git fsck");
    assert!(
        out.status.success(),
        "git fsck of {} failed: {}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A port nobody listens on now (another test may take it before it is used).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `protoforge serve` on ports the OS picks; stopped with SIGTERM when dropped.
pub struct Server {
    child: std::process::Child,
    pub port: u16,
    /// The webhook's port.
    pub hook: u16,
}

impl Server {
    pub fn start(repo: &Repo, args: &[&str]) -> Server {
        Server::start_env(repo, args, &[])
    }

    /// The server binds port 0 and its log names the ports it got: a port "found
    /// free" could be taken by another test before the server binds it.
    pub fn start_env(repo: &Repo, args: &[&str], env: &[(&str, &str)]) -> Server {
        let log = tempfile::NamedTempFile::new().expect("a temp file for the server's log");
        let mut child = command(repo.path())
            .arg("serve")
            .args(args)
            .env("PROTOFORGE_SERVE__LISTEN", "127.0.0.1:0")
            .env("PROTOFORGE_WEBHOOK__LISTEN", "127.0.0.1:0")
            .env("PROTOFORGE_SERVE__REFRESH_MS", "50")
            .env("PROTOFORGE_BUILDER__DEBOUNCE_MS", "50")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        let (port, hook) =
            crate::listening::ports(&mut child, log.path(), !args.contains(&"--no-webhook"));
        Server { child, port, hook }
    }

    /// SIGKILL, as a crash would, then wait.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::forget(self);
    }

    /// SIGTERM, then wait; returns whether it exited by itself.
    pub fn stop(mut self) -> bool {
        let ok = terminate(&mut self.child);
        std::mem::forget(self);
        ok
    }
}

fn terminate(child: &mut std::process::Child) -> bool {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return status.success();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

impl Drop for Server {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// The git blob id of `bytes`, as the server's ETag should name it.
pub fn blob_id(bytes: &[u8]) -> String {
    gix::objs::compute_hash(gix::hash::Kind::Sha1, gix::objs::Kind::Blob, bytes)
        .unwrap()
        .to_string()
}

//! The contact form's way in: `POST /api/queue/submit` turns a form post
//! into an inbox file (and its attachments), and the status and events
//! routes report the job's progress until its prototype is live.
//!
//! Invariants:
//! - nothing acknowledged is lost: the attachments, then the YAML, are
//!   written and fsynced (file and directory) before the 202 is sent, and
//!   the YAML, renamed into the inbox whole, is the commit point;
//! - what is written is exactly what the builder reads: the YAML is checked
//!   with the builder's own parser before it is written;
//! - every refusal is JSON `{error, detail}` with its status code, naming
//!   the field or file at fault;
//! - nothing from the request reaches a path unchecked: job ids are checked
//!   against their alphabet, and file names are rebuilt from a safe set.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Frame, Incoming};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, watch};

use crate::builder::{self, Board, State};
use crate::config::{self, Config, WebhookConfig};
use crate::inbox::{self, Inbox};
use crate::publish::{Identity, Store};
use crate::submission::{self, AttachmentKind};

type Body = BoxBody<Bytes, Infallible>;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("cannot listen on {addr} (webhook.listen): {source}; is another server using it?")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(
        "webhook.require_signature is on but {var} is not set; set it to the shared secret, or turn the requirement off"
    )]
    NoSecret { var: &'static str },
}

/// Everything the webhook needs, taken from the config once.
pub struct Options {
    pub listen: SocketAddr,
    pub repo: PathBuf,
    pub branch: String,
    pub inbox: Inbox,
    pub cfg: WebhookConfig,
    pub max_attachments: usize,
    pub max_attachment_bytes: u64,
    /// `{id}` is replaced by the project id.
    pub preview_url: String,
    pub secret: Option<Vec<u8>>,
    pub admin_token: Option<String>,
    /// The preview URL was derived from `serve.listen` (not configured).
    derived_preview: bool,
}

impl Options {
    /// The port the static server really got (`serve.listen` may ask for port 0):
    /// a preview URL derived from the listen address follows it.
    pub fn site_port_bound(&mut self, port: u16) {
        if self.derived_preview {
            self.preview_url = format!("http://{{id}}.localhost:{port}/");
        }
    }

    /// Options from the config and the environment (the secret and token).
    pub fn from_config(repo: PathBuf, c: &Config) -> Result<Options, WebhookError> {
        let env = |var: &str| std::env::var(var).ok().filter(|v| !v.is_empty());
        let secret = env(config::SECRET_VAR).map(String::into_bytes);
        if c.webhook.require_signature && secret.is_none() {
            return Err(WebhookError::NoSecret { var: config::SECRET_VAR });
        }
        // On localhost the URL names the sites' port; `site_port_bound` corrects it
        // once the port is bound.
        let derived_preview = c.webhook.preview_url.is_empty() && c.base_domain == "localhost";
        let preview_url = if derived_preview {
            let port = c.serve.listen.parse::<SocketAddr>().map(|a| a.port()).unwrap_or(8080);
            format!("http://{{id}}.localhost:{port}/")
        } else if c.webhook.preview_url.is_empty() {
            format!("https://{{id}}.{}/", c.base_domain)
        } else {
            c.webhook.preview_url.clone()
        };
        Ok(Options {
            listen: c.webhook.listen.parse().expect("validated at load"),
            inbox: Inbox::new(repo.join(&c.inbox_dir), c.limits.clone(), &c.project_id_salt),
            repo,
            branch: c.branch.clone(),
            cfg: c.webhook.clone(),
            max_attachments: c.limits.max_attachments,
            max_attachment_bytes: c.limits.max_attachment_bytes,
            preview_url,
            secret,
            admin_token: env(config::ADMIN_TOKEN_VAR),
            derived_preview,
        })
    }
}

/// Counters for `/metrics`.
#[derive(Default)]
struct Metrics {
    accepted: AtomicU64,
    duplicates: AtomicU64,
    honeypot: AtomicU64,
    rate_limited: AtomicU64,
    refused: AtomicU64,
}

/// The answer to an accepted post, kept for idempotent repeats.
#[derive(Debug, Clone, Serialize)]
struct Accepted {
    job_id: String,
    project_id: String,
    status_url: String,
    preview_url: String,
}

struct Shared {
    opts: Options,
    board: Arc<Board>,
    metrics: Metrics,
    /// Idempotency key or content hash → the job it made, and when.
    recent: Mutex<HashMap<String, (Accepted, Instant)>>,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
    trusted: Vec<IpAddr>,
    /// KiB of request bodies all connections may hold at once.
    body_budget: Semaphore,
    body_budget_kib: u32,
}

/// Bind `opts.listen` (before anything else starts, so that a taken port
/// fails `serve` at once).
pub async fn bind(opts: &Options) -> Result<tokio::net::TcpListener, WebhookError> {
    tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| WebhookError::Bind { addr: opts.listen, source })
}

/// Serve the webhook on `listener` until `shutdown` turns true.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    opts: Options,
    board: Arc<Board>,
    mut shutdown: watch::Receiver<bool>,
) {
    tracing::info!(addr = ?listener.local_addr().ok(), "webhook listening");
    let trusted = opts.cfg.trusted_proxies.iter().filter_map(|p| p.parse().ok()).collect();
    let recent = remember_recent(&opts);
    let budget = u32::try_from(opts.cfg.max_inflight_bytes.div_ceil(1024)).unwrap_or(u32::MAX);
    let shared = Arc::new(Shared {
        body_budget: Semaphore::new(budget as usize),
        body_budget_kib: budget,
        board,
        metrics: Metrics::default(),
        recent: Mutex::new(recent),
        buckets: Mutex::default(),
        trusted,
        opts,
    });
    let limit = Arc::new(Semaphore::new(shared.opts.cfg.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let stop = async move {
        let _ = shutdown.wait_for(|s| *s).await;
    };
    tokio::pin!(stop);
    loop {
        // SECURITY: bound the connections held open (slowloris).
        let permit = tokio::select! {
            p = Arc::clone(&limit).acquire_owned() => p.expect("the semaphore is never closed"),
            _ = &mut stop => break,
        };
        let (stream, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("webhook accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        let mut http = hyper::server::conn::http1::Builder::new();
        // SECURITY: a timer, or hyper's header timeout does nothing.
        http.timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(Some(Duration::from_secs(
                shared.opts.cfg.header_read_timeout_secs,
            )))
            .max_headers(100);
        let service = hyper::service::service_fn(move |req| {
            let shared = Arc::clone(&shared);
            async move { Ok::<_, Infallible>(handle(&shared, req, peer).await) }
        });
        let conn =
            graceful.watch(http.serve_connection(hyper_util::rt::TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, "webhook connection: {e}");
            }
            drop(permit);
        });
    }
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(10)) => tracing::warn!("webhook connections still open; closing"),
    }
}

fn full(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut().insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    if content_type.starts_with("text/html") {
        // SECURITY: no injected script runs on the form or progress pages,
        // and they can't be framed (clickjacking).
        r.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_CSP));
    }
    r
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    let body = serde_json::to_vec(value).expect("plain data serializes to JSON");
    full(status, "application/json", body)
}

/// A refusal: `{error, detail}`.
fn error(status: StatusCode, error: &str, detail: impl Into<String>) -> Response<Body> {
    json(status, &serde_json::json!({ "error": error, "detail": detail.into() }))
}

/// A refusal not yet turned into a response.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    code: &'static str,
    detail: String,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Refusal {
        Refusal { status, code, detail: detail.into() }
    }

    fn response(self) -> Response<Body> {
        error(self.status, self.code, self.detail)
    }
}

async fn handle(shared: &Arc<Shared>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let start = Instant::now();
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let origin = req.headers().get(header::ORIGIN).cloned();
    let mut response = route(shared, req, peer).await;
    cors(shared, origin.as_ref(), &mut response);
    tracing::info!(
        target: "protoforge::webhook::access",
        %peer,
        %method,
        path = %path,
        status = response.status().as_u16(),
        micros = start.elapsed().as_micros() as u64,
        "webhook"
    );
    response
}

/// SECURITY: only configured origins may read answers from a `fetch` post
/// (CSRF is moot for a public form, but answers hold job ids).
fn cors(shared: &Shared, origin: Option<&HeaderValue>, r: &mut Response<Body>) {
    let Some(origin) = origin.and_then(|o| o.to_str().ok()) else { return };
    let allowed = &shared.opts.cfg.cors_origins;
    if allowed.iter().any(|a| a == "*" || a == origin) {
        let h = r.headers_mut();
        if let Ok(v) = HeaderValue::from_str(origin) {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        }
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, DELETE, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(
                "content-type, idempotency-key, x-protoforge-signature, x-hub-signature-256, authorization, last-event-id",
            ),
        );
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    }
}

async fn route(shared: &Arc<Shared>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = req.method().clone();
    if method == Method::OPTIONS {
        return full(StatusCode::NO_CONTENT, "text/plain", "");
    }
    match (method.clone(), parts.as_slice()) {
        (Method::POST, ["api", "queue", "submit"]) => submit(shared, req, peer).await,
        (Method::GET | Method::HEAD, ["api", "queue", "status", job]) => {
            match job_status(shared, job).await {
                Ok(status) => json(StatusCode::OK, &status),
                Err(r) => r.response(),
            }
        }
        (Method::GET, ["api", "queue", job, "events"]) => events(shared, job, req.headers()).await,
        (Method::GET, ["api", "queue", "list"]) => match admin(shared, req.headers()) {
            Ok(()) => blocking(shared, list_jobs).await,
            Err(r) => r.response(),
        },
        (Method::DELETE, ["api", "queue", job]) => match admin(shared, req.headers()) {
            Ok(()) => {
                let job = job.to_string();
                blocking(shared, move |s| cancel(s, &job)).await
            }
            Err(r) => r.response(),
        },
        (Method::GET | Method::HEAD, ["api", "prototype", pid, rest @ ..]) => {
            let (pid, rest) = (pid.to_string(), rest.join("/"));
            blocking(shared, move |s| prototype(s, &pid, &rest)).await
        }
        (Method::DELETE, ["api", "prototype", pid]) => match admin(shared, req.headers()) {
            Ok(()) => {
                let pid = pid.to_string();
                blocking(shared, move |s| delete_prototype(s, &pid)).await
            }
            Err(r) => r.response(),
        },
        (Method::GET | Method::HEAD, [""]) => {
            full(StatusCode::OK, "text/html; charset=utf-8", FORM_PAGE)
        }
        (Method::GET | Method::HEAD, ["contact-form.js"]) => {
            full(StatusCode::OK, "text/javascript; charset=utf-8", FORM_JS)
        }
        (Method::GET | Method::HEAD, ["thanks"]) => {
            full(StatusCode::OK, "text/html; charset=utf-8", THANKS_PAGE)
        }
        (Method::GET | Method::HEAD, ["thanks.js"]) => {
            full(StatusCode::OK, "text/javascript; charset=utf-8", THANKS_JS)
        }
        (Method::GET | Method::HEAD, ["healthz"]) => full(StatusCode::OK, "text/plain", "ok\n"),
        // Browsers ask for it on every page; a 404 is a console error.
        (Method::GET | Method::HEAD, ["favicon.ico"]) => {
            full(StatusCode::NO_CONTENT, "text/plain", "")
        }
        (Method::GET, ["metrics"]) => metrics(shared),
        (_, ["api", "queue", "submit"]) => not_allowed("POST, OPTIONS"),
        _ => error(StatusCode::NOT_FOUND, "not_found", format!("no route for {method} {path}")),
    }
}

/// Run `f` on a blocking thread (it reads git or fsyncs), answering its
/// refusal as JSON.
async fn blocking(
    shared: &Arc<Shared>,
    f: impl FnOnce(&Shared) -> Result<Response<Body>, Refusal> + Send + 'static,
) -> Response<Body> {
    let shared = Arc::clone(shared);
    match tokio::task::spawn_blocking(move || f(&shared)).await {
        Ok(Ok(r)) => r,
        Ok(Err(refusal)) => refusal.response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

/// SECURITY: admin routes need `Authorization: Bearer <PROTOFORGE_ADMIN_TOKEN>`,
/// compared in constant time (no timing oracle on the token); with no token
/// configured they are off.
fn admin(shared: &Shared, headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(token) = &shared.opts.admin_token else {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            format!(
                "admin routes are off; set {} to a long random token to use them",
                config::ADMIN_TOKEN_VAR
            ),
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let (a, b) = (Sha256::digest(given.as_bytes()), Sha256::digest(token.as_bytes()));
    let diff = a.iter().zip(b.iter()).fold(0u8, |d, (x, y)| d | (x ^ y));
    if given.is_empty() || diff != 0 {
        return Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send Authorization: Bearer <the admin token>",
        ));
    }
    Ok(())
}

/// Every job the inbox holds, with its state.
fn list_jobs(shared: &Shared) -> Result<Response<Body>, Refusal> {
    let inbox = shared.opts.inbox.dir();
    let mut jobs = Vec::new();
    for dir in [inbox.to_path_buf(), inbox.join("rejected"), inbox.join("cancelled")] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(job) = name.strip_suffix(".yaml").filter(|j| is_job_id(j))
                && let Ok(status) = status_of(shared, job)
            {
                jobs.push(status);
            }
        }
    }
    let order = |s: &JobStatus| match s {
        JobStatus::Processing { .. } => (0, 0),
        JobStatus::Pending { position, .. } => (1, *position),
        _ => (2, 0),
    };
    jobs.sort_by_key(order);
    Ok(json(StatusCode::OK, &serde_json::json!({ "jobs": jobs })))
}

/// Cancel a pending job: its file moves to `inbox/cancelled/` and is kept.
fn cancel(shared: &Shared, job: &str) -> Result<Response<Body>, Refusal> {
    match status_of(shared, job)? {
        JobStatus::Pending { .. } => {}
        other => {
            return Err(Refusal::new(
                StatusCode::CONFLICT,
                "not_pending",
                format!("job {job} is {}; only a pending job can be cancelled", other.event_id()),
            ));
        }
    }
    let inbox = shared.opts.inbox.dir();
    let to_dir = inbox.join("cancelled");
    let name = format!("{job}.yaml");
    let io = |e: std::io::Error| {
        Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "cannot_cancel", format!("{e}"))
    };
    std::fs::create_dir_all(&to_dir).map_err(io)?;
    std::fs::rename(inbox.join(&name), to_dir.join(&name)).map_err(io)?;
    inbox::sync_dir(&to_dir).map_err(|e| io(std::io::Error::other(e.to_string())))?;
    inbox::sync_dir(inbox).map_err(|e| io(std::io::Error::other(e.to_string())))?;
    tracing::info!(job, "job cancelled");
    Ok(json(StatusCode::OK, &JobStatus::Cancelled { job_id: job.to_string() }))
}

/// `GET /api/prototype/{id}[/files|/download]`.
fn prototype(shared: &Shared, pid: &str, rest: &str) -> Result<Response<Body>, Refusal> {
    let unknown = || {
        Refusal::new(
            StatusCode::NOT_FOUND,
            "unknown_prototype",
            format!("no prototype {pid:?} is live"),
        )
    };
    // SECURITY: the id becomes a tree path; only a well-formed id passes.
    if !submission::is_project_id(pid) {
        return Err(unknown());
    }
    let internal = |e: String| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e);
    let (meta, files) = with_store(&shared.opts.repo, &shared.opts.branch, |store| {
        let snap = store.snapshot().map_err(|e| e.to_string())?;
        let Some(meta) =
            snap.read(&format!("sites/{pid}/metadata.json")).map_err(|e| e.to_string())?
        else {
            return Ok((None, Vec::new()));
        };
        let files = if rest == "download" {
            snap.read_dir_recursive(&format!("sites/{pid}")).map_err(|e| e.to_string())?
        } else {
            Vec::new()
        };
        Ok((Some(meta), files))
    })
    .map_err(internal)?;
    let meta: serde_json::Value = serde_json::from_slice(&meta.ok_or_else(unknown)?)
        .map_err(|e| internal(format!("sites/{pid}/metadata.json: {e}")))?;
    let url = shared.opts.preview_url.replace("{id}", pid);
    match rest {
        "" => Ok(json(
            StatusCode::OK,
            &serde_json::json!({
                "project_id": pid,
                "url": url,
                "created_at": meta["created_at"],
                "expires_at": meta["expires_at"],
                "submitted_at": meta["submitted_at"],
                "generator": meta["generator"],
                "files": meta["files"].as_array().map_or(0, Vec::len),
                "warnings": meta["warnings"],
            }),
        )),
        "files" => Ok(json(
            StatusCode::OK,
            &serde_json::json!({ "project_id": pid, "files": meta["files"] }),
        )),
        "download" => {
            let files: Vec<_> = files.into_iter().filter(|(p, _)| p != "metadata.json").collect();
            let mut r = full(StatusCode::OK, "application/zip", zip(&files));
            if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{pid}.zip\"")) {
                r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
            }
            Ok(r)
        }
        _ => Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route /api/prototype/{pid}/{rest}; try /files or /download"),
        )),
    }
}

/// Remove a site from the branch in one commit (its submission record
/// stays, so it is not rebuilt).
fn delete_prototype(shared: &Shared, pid: &str) -> Result<Response<Body>, Refusal> {
    if !submission::is_project_id(pid) {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "unknown_prototype",
            format!("no prototype {pid:?}"),
        ));
    }
    let commit = with_store(&shared.opts.repo, &shared.opts.branch, |store| {
        for _ in 0..5 {
            let snap = store.snapshot().map_err(|e| e.to_string())?;
            if !snap.exists(&format!("sites/{pid}")).map_err(|e| e.to_string())? {
                return Ok(None);
            }
            let message = format!("Delete {pid}\n\nRemoved on request through the webhook's admin route.\n\nPrototype-Id: {pid}\n");
            let edits = [crate::publish::TreeEdit::Remove { path: format!("sites/{pid}") }];
            match store.commit(snap.commit_id(), &message, &edits) {
                Ok(id) => return Ok(Some(id.to_string())),
                Err(crate::publish::PublishError::Conflict { .. }) => continue,
                Err(e) => return Err(e.to_string()),
            }
        }
        Err("the branch kept moving; try again".into())
    })
    .map_err(|e| Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "cannot_delete", e))?;
    match commit {
        Some(commit) => {
            tracing::info!(project_id = pid, %commit, "prototype deleted");
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "project_id": pid, "deleted": true, "commit": commit }),
            ))
        }
        None => Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "unknown_prototype",
            format!("no prototype {pid} is live"),
        )),
    }
}

/// A zip archive of `files` (deflated, no zip64: sites are small), with
/// fixed timestamps so the same site gives the same bytes.
fn zip(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    use std::io::Write;
    let mut out = Vec::new();
    let mut central = Vec::new();
    let le16 = |v: &mut Vec<u8>, n: u16| v.extend_from_slice(&n.to_le_bytes());
    let le32 = |v: &mut Vec<u8>, n: u32| v.extend_from_slice(&n.to_le_bytes());
    // 2026-01-01 00:00 in DOS form.
    let (time, date) = (0u16, ((2026 - 1980) << 9 | 1 << 5 | 1) as u16);
    for (name, bytes) in files {
        let mut crc = flate2::Crc::new();
        crc.update(bytes);
        let mut enc =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(bytes).expect("writing to memory cannot fail");
        let deflated = enc.finish().expect("writing to memory cannot fail");
        let (method, data) =
            if deflated.len() < bytes.len() { (8u16, &deflated) } else { (0u16, bytes) };
        let offset = out.len() as u32;
        for (v, central_entry) in [(&mut out, false), (&mut central, true)] {
            le32(v, if central_entry { 0x0201_4b50 } else { 0x0403_4b50 });
            if central_entry {
                le16(v, 20);
            }
            le16(v, 20);
            le16(v, 0x0800); // UTF-8 names
            le16(v, method);
            le16(v, time);
            le16(v, date);
            le32(v, crc.sum());
            le32(v, data.len() as u32);
            le32(v, bytes.len() as u32);
            le16(v, name.len() as u16);
            le16(v, 0);
            if central_entry {
                le16(v, 0);
                le16(v, 0);
                le16(v, 0);
                le32(v, 0);
                le32(v, offset);
            }
            v.extend_from_slice(name.as_bytes());
        }
        out.extend_from_slice(data);
    }
    let (cd_offset, cd_len) = (out.len() as u32, central.len() as u32);
    out.extend_from_slice(&central);
    le32(&mut out, 0x0605_4b50);
    le16(&mut out, 0);
    le16(&mut out, 0);
    le16(&mut out, files.len() as u16);
    le16(&mut out, files.len() as u16);
    le32(&mut out, cd_len);
    le32(&mut out, cd_offset);
    le16(&mut out, 0);
    out
}

fn not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", format!("use {allow}"));
    r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

fn metrics(shared: &Shared) -> Response<Body> {
    let m = &shared.metrics;
    let mut out = String::new();
    for (name, help, v) in [
        ("accepted", "Submissions written to the inbox.", &m.accepted),
        ("duplicates", "Posts answered with an earlier job (idempotency).", &m.duplicates),
        ("honeypot", "Posts with the honeypot field filled, dropped.", &m.honeypot),
        ("rate_limited", "Posts refused by the rate limit.", &m.rate_limited),
        ("refused", "Posts refused for their content or signature.", &m.refused),
    ] {
        out.push_str(&format!(
            "# HELP protoforge_webhook_{name}_total {help}\n# TYPE protoforge_webhook_{name}_total counter\nprotoforge_webhook_{name}_total {}\n",
            v.load(Ordering::Relaxed)
        ));
    }
    let reserved =
        (shared.body_budget_kib as usize).saturating_sub(shared.body_budget.available_permits());
    out.push_str(&format!(
        "# HELP protoforge_webhook_body_reserved_bytes Memory reserved for request bodies being read (webhook.max_inflight_bytes bounds it).\n# TYPE protoforge_webhook_body_reserved_bytes gauge\nprotoforge_webhook_body_reserved_bytes {}\n",
        reserved * 1024
    ));
    out.push_str(&format!(
        "# HELP protoforge_queue_pending Jobs waiting, as of the builder's last scan.\n# TYPE protoforge_queue_pending gauge\nprotoforge_queue_pending {}\n",
        shared.board.queued()
    ));
    let qs = [0.5, 0.9, 0.99, 1.0];
    let (n, values) = shared.board.pickup_quantiles(&qs);
    out.push_str("# HELP protoforge_queue_pickup_seconds From the 202 to the builder starting the job (latest 10,000).\n# TYPE protoforge_queue_pickup_seconds summary\n");
    for (q, v) in qs.iter().zip(values) {
        out.push_str(&format!(
            "protoforge_queue_pickup_seconds{{quantile=\"{q}\"}} {:.6}\n",
            v.as_secs_f64()
        ));
    }
    out.push_str(&format!("protoforge_queue_pickup_seconds_count {n}\n"));
    let totals = shared.board.stage_totals();
    if !totals.is_empty() {
        let mut series = |name: &str, kind: &str, help: &str, rows: Vec<(String, String)>| {
            out.push_str(&format!(
                "# HELP protoforge_{name} {help}\n# TYPE protoforge_{name} {kind}\n"
            ));
            for (labels, value) in rows {
                out.push_str(&format!("protoforge_{name}{{{labels}}} {value}\n"));
            }
        };
        type Rows = Vec<(String, String)>;
        let by_stage = |f: &dyn Fn(&str, &crate::builder::StageTotals) -> Rows| {
            totals.iter().flat_map(|(stage, t)| f(stage, t)).collect::<Vec<_>>()
        };
        series(
            "llm_stage_runs_total",
            "counter",
            "AI stage runs, by outcome (used: the model's output; fallback: the template's).",
            by_stage(&|stage, t| {
                vec![
                    (format!("stage=\"{stage}\",outcome=\"used\""), t.used.to_string()),
                    (format!("stage=\"{stage}\",outcome=\"fallback\""), t.fallbacks.to_string()),
                ]
            }),
        );
        series(
            "llm_tokens_total",
            "counter",
            "Model tokens, by stage and direction.",
            by_stage(&|stage, t| {
                vec![
                    (format!("stage=\"{stage}\",direction=\"in\""), t.tokens_in.to_string()),
                    (format!("stage=\"{stage}\",direction=\"out\""), t.tokens_out.to_string()),
                ]
            }),
        );
        series(
            "llm_requests_total",
            "counter",
            "HTTP requests to model servers, retries included.",
            by_stage(&|stage, t| vec![(format!("stage=\"{stage}\""), t.requests.to_string())]),
        );
        series(
            "llm_stage_seconds_total",
            "counter",
            "Time spent in AI stages.",
            by_stage(&|stage, t| vec![(format!("stage=\"{stage}\""), format!("{:.3}", t.seconds))]),
        );
    }
    full(StatusCode::OK, "text/plain; version=0.0.4", out)
}

// ---------------------------------------------------------------------------
// Submit

/// The client's address: the peer, or for a trusted proxy the last address
/// in `X-Forwarded-For` that is not itself a trusted proxy.
fn client_ip(shared: &Shared, headers: &HeaderMap, peer: IpAddr) -> IpAddr {
    // SECURITY: X-Forwarded-For is client-written; only a trusted proxy's
    // word counts, read from the right (what the proxies appended).
    if !shared.trusted.contains(&peer) {
        return peer;
    }
    let mut ip = peer;
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(value) = value.to_str() else { break };
        for hop in value.split(',').rev() {
            match hop.trim().parse::<IpAddr>() {
                Ok(hop) => {
                    ip = hop;
                    if !shared.trusted.contains(&hop) {
                        return ip;
                    }
                }
                Err(_) => return ip,
            }
        }
    }
    ip
}

/// Take a token from `ip`'s bucket; Err(seconds until one is back).
fn rate_limit(shared: &Shared, ip: IpAddr) -> Result<(), u64> {
    let cfg = &shared.opts.cfg;
    let per_sec = f64::from(cfg.rate_limit_per_minute) / 60.0;
    let burst = f64::from(cfg.rate_limit_burst);
    let now = Instant::now();
    let mut buckets = shared.buckets.lock().expect("bucket lock is never poisoned");
    if buckets.len() > 100_000 {
        // Full buckets carry no state; drop them rather than grow forever.
        buckets.retain(|_, (tokens, at)| *tokens + at.elapsed().as_secs_f64() * per_sec < burst);
    }
    let (tokens, at) = buckets.entry(ip).or_insert((burst, now));
    *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * per_sec).min(burst);
    *at = now;
    if *tokens >= 1.0 {
        *tokens -= 1.0;
        Ok(())
    } else {
        Err(((1.0 - *tokens) / per_sec).ceil() as u64)
    }
}

/// SECURITY: HMAC-SHA256 of the body, compared in constant time, so that
/// only the form's backend (which holds the secret) can post. Accepts
/// `X-Protoforge-Signature: t=<unix>,v1=<hex of HMAC("<t>.<body>")>` (the
/// timestamp within 5 minutes, against replays) and GitHub's
/// `X-Hub-Signature-256: sha256=<hex of HMAC(body)>`.
pub fn verify_signature(
    secret: &[u8],
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<(), &'static str> {
    use hmac::{KeyInit, Mac};
    type HmacSha256 = hmac::Hmac<Sha256>;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(sig) = header("x-protoforge-signature") {
        let (mut t, mut v1) = (None, None);
        for part in sig.split(',') {
            match part.trim().split_once('=') {
                Some(("t", value)) => t = value.parse::<i64>().ok(),
                Some(("v1", value)) => {
                    v1 = data_encoding::HEXLOWER_PERMISSIVE.decode(value.as_bytes()).ok()
                }
                _ => {}
            }
        }
        let (Some(t), Some(v1)) = (t, v1) else {
            return Err("X-Protoforge-Signature must be t=<unix time>,v1=<hex>");
        };
        if (now - t).abs() > 300 {
            return Err(
                "the signature's timestamp is more than 5 minutes off; sign each request afresh",
            );
        }
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length");
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        return mac.verify_slice(&v1).map_err(|_| "the signature does not match the body");
    }
    if let Some(sig) = header("x-hub-signature-256") {
        let Some(hex) = sig.strip_prefix("sha256=") else {
            return Err("X-Hub-Signature-256 must be sha256=<hex>");
        };
        let Ok(expected) = data_encoding::HEXLOWER_PERMISSIVE.decode(hex.as_bytes()) else {
            return Err("X-Hub-Signature-256 must be sha256=<hex>");
        };
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length");
        mac.update(body);
        return mac.verify_slice(&expected).map_err(|_| "the signature does not match the body");
    }
    Err("no signature: send X-Protoforge-Signature or X-Hub-Signature-256")
}

/// A form, whatever it was posted as.
#[derive(Debug, Default)]
struct Form {
    fields: Vec<(String, String)>,
    files: Vec<Upload>,
}

#[derive(Debug)]
struct Upload {
    field: String,
    name: String,
    bytes: Bytes,
}

async fn read_form(content_type: &str, body: Bytes, max_files: usize) -> Result<Form, Refusal> {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => {
            let value: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_json",
                    format!("the body is not JSON: {e}"),
                )
            })?;
            let serde_json::Value::Object(map) = value else {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_json",
                    "the body must be a JSON object of fields",
                ));
            };
            let mut form = Form::default();
            flatten_json(&mut form, "", map);
            Ok(form)
        }
        "application/x-www-form-urlencoded" => Ok(Form {
            fields: form_urlencoded::parse(&body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
            files: Vec::new(),
        }),
        "multipart/form-data" => {
            let boundary = multer::parse_boundary(content_type).map_err(|e| {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_multipart",
                    format!("Content-Type has no usable boundary ({e}); let the browser or HTTP library set it"),
                )
            })?;
            let stream = futures_once(body);
            let mut multipart = multer::Multipart::new(stream, boundary);
            let mut form = Form::default();
            loop {
                let field = match multipart.next_field().await {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => {
                        return Err(Refusal::new(
                            StatusCode::BAD_REQUEST,
                            "invalid_multipart",
                            format!("the multipart body is malformed: {e}"),
                        ));
                    }
                };
                let name = field.name().unwrap_or("").to_string();
                let file_name = field.file_name().map(str::to_string);
                let data = field.bytes().await.map_err(|e| {
                    Refusal::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_multipart",
                        format!("part {name:?}: {e}"),
                    )
                })?;
                match file_name {
                    // A file input left empty still sends a part.
                    Some(f) if f.is_empty() && data.is_empty() => {}
                    Some(f) => {
                        if form.files.len() >= max_files {
                            return Err(Refusal::new(
                                StatusCode::PAYLOAD_TOO_LARGE,
                                "too_many_files",
                                format!(
                                    "at most {max_files} files per submission (limits.max_attachments)"
                                ),
                            ));
                        }
                        form.files.push(Upload { field: name, name: f, bytes: data });
                    }
                    None => {
                        let text = String::from_utf8(data.to_vec()).map_err(|_| {
                            Refusal::new(
                                StatusCode::BAD_REQUEST,
                                "invalid_field",
                                format!("field {name:?} is not UTF-8 text"),
                            )
                        })?;
                        form.fields.push((name, text));
                    }
                }
            }
            Ok(form)
        }
        "" => Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "no Content-Type; post application/json, application/x-www-form-urlencoded or multipart/form-data",
        )),
        other => Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "{other} is not accepted; post application/json, application/x-www-form-urlencoded or multipart/form-data"
            ),
        )),
    }
}

/// One chunk as a stream, for multer.
fn futures_once(body: Bytes) -> impl futures_core::Stream<Item = Result<Bytes, Infallible>> {
    struct Once(Option<Bytes>);
    impl futures_core::Stream for Once {
        type Item = Result<Bytes, Infallible>;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            Poll::Ready(self.0.take().map(Ok))
        }
    }
    Once(Some(body))
}

/// JSON fields, with `contact` and `style` objects read as their fields.
fn flatten_json(form: &mut Form, prefix: &str, map: serde_json::Map<String, serde_json::Value>) {
    for (k, v) in map {
        let key = if prefix.is_empty() { k } else { format!("{prefix}.{k}") };
        match v {
            serde_json::Value::Null => {}
            serde_json::Value::String(s) => form.fields.push((key, s)),
            serde_json::Value::Array(items) => {
                for item in items {
                    match item {
                        serde_json::Value::String(s) => form.fields.push((key.clone(), s)),
                        other => form.fields.push((key.clone(), other.to_string())),
                    }
                }
            }
            serde_json::Value::Object(inner)
                if prefix.is_empty() && (key == "contact" || key == "style") =>
            {
                flatten_json(form, "", inner)
            }
            other => form.fields.push((key, other.to_string())),
        }
    }
}

/// What a file is, by its first bytes (never by its name or claimed type).
pub fn sniff(bytes: &[u8]) -> Option<(AttachmentKind, &'static str)> {
    let starts = |m: &[u8]| bytes.starts_with(m);
    let at = |i: usize, m: &[u8]| bytes.len() >= i + m.len() && &bytes[i..i + m.len()] == m;
    Some(if starts(b"\x89PNG\r\n\x1a\n") {
        (AttachmentKind::Image, "png")
    } else if starts(b"\xff\xd8\xff") {
        (AttachmentKind::Image, "jpg")
    } else if starts(b"GIF87a") || starts(b"GIF89a") {
        (AttachmentKind::Image, "gif")
    } else if starts(b"RIFF") && at(8, b"WEBP") {
        (AttachmentKind::Image, "webp")
    } else if starts(b"RIFF") && at(8, b"WAVE") {
        (AttachmentKind::Audio, "wav")
    } else if starts(b"%PDF-") {
        (AttachmentKind::Document, "pdf")
    } else if starts(b"PK\x03\x04") && bytes.windows(5).take(4096).any(|w| w == b"word/") {
        (AttachmentKind::Document, "docx")
    } else if starts(b"\x1a\x45\xdf\xa3") {
        (AttachmentKind::Audio, "webm")
    } else if starts(b"OggS") {
        (AttachmentKind::Audio, "ogg")
    } else if starts(b"ID3") || (bytes.len() > 1 && bytes[0] == 0xff && bytes[1] & 0xe0 == 0xe0) {
        (AttachmentKind::Audio, "mp3")
    } else if at(4, b"ftyp") && (at(8, b"M4A ") || at(8, b"mp42") || at(8, b"isom")) {
        (AttachmentKind::Audio, "m4a")
    } else if !bytes.is_empty() && !bytes.contains(&0) && std::str::from_utf8(bytes).is_ok() {
        (AttachmentKind::Document, "txt")
    } else {
        return None;
    })
}

/// SECURITY: a file name rebuilt from a safe alphabet (no path, no dot
/// first, no control or shell characters), with the extension of what the
/// bytes are, so a `.html` that is really a PNG is stored as `.png`.
pub fn safe_file_name(raw: &str, ext: &str) -> String {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let stem = match base.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem,
        _ => base,
    };
    let mut out = String::new();
    for c in deunicode::deunicode(stem).chars() {
        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
        if out.len() >= 60 {
            break;
        }
    }
    let stem = out.trim_matches('-');
    let stem = if stem.is_empty() { "file" } else { stem };
    // Markdown stays .md; other text is .txt.
    let ext = if ext == "txt" && base.to_ascii_lowercase().ends_with(".md") { "md" } else { ext };
    format!("{stem}.{ext}")
}

/// The inbox YAML, in the schema's key order.
#[derive(Serialize, Default)]
struct Yaml {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    submitted_at: String,
    source: &'static str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    contact: BTreeMap<&'static str, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    company: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    voice_transcript: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pages: Vec<String>,
    #[serde(skip_serializing_if = "YamlStyle::is_empty")]
    style: YamlStyle,
    #[serde(skip_serializing_if = "Option::is_none")]
    language: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    attachments: Vec<YamlAttachment>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    extra: BTreeMap<String, String>,
}

#[derive(Serialize, Default)]
struct YamlStyle {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    colors: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mood: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    references: Vec<String>,
}

impl YamlStyle {
    fn is_empty(&self) -> bool {
        self.colors.is_empty() && self.mood.is_none() && self.references.is_empty()
    }
}

#[derive(Serialize)]
struct YamlAttachment {
    path: String,
    kind: AttachmentKind,
    description: String,
}

/// Split a list field: repeated, or comma/newline separated in one value.
fn list(values: Vec<String>) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| v.split([',', '\n']))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Map the form onto the schema; everything unknown goes to `extra`.
fn to_yaml(form: &Form, honeypot: &str, max_field: usize) -> Result<Yaml, Refusal> {
    let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in &form.fields {
        if v.len() > max_field {
            return Err(Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "field_too_long",
                format!(
                    "field {k:?} is {} bytes; the most is {max_field} (webhook.max_field_bytes). Attach long texts as a document",
                    v.len()
                ),
            ));
        }
        by_key.entry(k.clone()).or_default().push(v.clone());
    }
    let mut y = Yaml::default();
    let mut take = |keys: &[&str]| -> Vec<String> {
        keys.iter().filter_map(|k| by_key.remove(*k)).flatten().collect()
    };
    let one = |v: Vec<String>| -> Option<String> {
        let joined = v
            .into_iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("\n\n");
        (!joined.is_empty()).then_some(joined)
    };
    y.id = one(take(&["id", "client_id"]));
    for (key, names) in [
        ("name", &["name", "contact.name"][..]),
        ("email", &["email", "contact.email"]),
        ("phone", &["phone", "tel", "contact.phone"]),
    ] {
        if let Some(v) = one(take(names)) {
            y.contact.insert(key, v);
        }
    }
    y.company = one(take(&["company", "business", "organisation", "organization"]));
    y.description = one(take(&["description", "message", "request", "details"]));
    y.voice_transcript = one(take(&["voice_transcript", "transcript"]));
    y.pages = list(take(&["pages", "pages[]", "page"]));
    y.style.colors =
        list(take(&["colors", "colors[]", "color", "colours", "colour", "style.colors"]));
    y.style.mood = one(take(&["mood", "style.mood"]));
    y.style.references =
        list(take(&["references", "references[]", "reference", "style.references"]));
    y.language = one(take(&["language", "lang"]));
    // Form plumbing, not the customer's words.
    take(&["idempotency_key", honeypot, "submitted_at", "source", "attachments", "extra"]);
    for (k, v) in by_key {
        if let Some(v) = one(v) {
            y.extra.insert(k, v);
        }
    }
    Ok(y)
}

fn random_suffix() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 10];
    // /dev/urandom: job ids must not be guessable (a status names the
    // prototype's address).
    let ok = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).is_ok();
    if !ok {
        let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
        let digest = Sha256::digest(format!("{nanos}:{:?}", std::thread::current().id()));
        bytes.copy_from_slice(&digest[..10]);
    }
    data_encoding::BASE32_NOPAD.encode(&bytes).to_ascii_lowercase()
}

/// SECURITY: a job id names files; only this alphabet and length pass.
pub fn is_job_id(id: &str) -> bool {
    (8..=120).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !id.starts_with('-')
}

async fn submit(shared: &Arc<Shared>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let cfg = &shared.opts.cfg;
    let ip = client_ip(shared, req.headers(), peer.ip());
    if let Err(wait) = rate_limit(shared, ip) {
        shared.metrics.rate_limited.fetch_add(1, Ordering::Relaxed);
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many posts from {ip}; try again in {wait} s"),
        );
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait.max(1)));
        return r;
    }
    let (parts, body) = req.into_parts();
    let too_big = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!(
                "the body is over {} bytes (webhook.max_body_bytes); send smaller files",
                cfg.max_body_bytes
            ),
        )
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > cfg.max_body_bytes) {
        shared.metrics.refused.fetch_add(1, Ordering::Relaxed);
        return too_big();
    }
    // SECURITY: bodies are held in memory until written; bound what all
    // connections hold together (else 256 connections x 32 MiB), waiting
    // for room rather than failing. A body without a length reserves the
    // most it may be.
    let kib = declared.unwrap_or(cfg.max_body_bytes).div_ceil(1024).max(1);
    let kib = u32::try_from(kib).unwrap_or(u32::MAX).min(shared.body_budget_kib);
    let Ok(_reserved) = shared.body_budget.acquire_many(kib).await else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is stopping; try again",
        );
    };
    // SECURITY: a bounded body, read within a deadline (slow uploads).
    let limited = Limited::new(body, usize::try_from(cfg.max_body_bytes).unwrap_or(usize::MAX));
    let body = match tokio::time::timeout(
        Duration::from_secs(cfg.body_read_timeout_secs),
        limited.collect(),
    )
    .await
    {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            shared.metrics.refused.fetch_add(1, Ordering::Relaxed);
            return too_big();
        }
        Ok(Err(e)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "body_unreadable",
                format!("the body could not be read: {e}"),
            );
        }
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the body took over {} s (webhook.body_read_timeout_secs)",
                    cfg.body_read_timeout_secs
                ),
            );
        }
    };
    if let Some(secret) = &shared.opts.secret {
        let signed = parts.headers.contains_key("x-protoforge-signature")
            || parts.headers.contains_key("x-hub-signature-256");
        if (signed || cfg.require_signature)
            && let Err(why) =
                verify_signature(secret, &parts.headers, &body, Utc::now().timestamp())
        {
            shared.metrics.refused.fetch_add(1, Ordering::Relaxed);
            return error(StatusCode::UNAUTHORIZED, "bad_signature", why);
        }
    }
    let content_type =
        parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let form = match read_form(content_type, body, shared.opts.max_attachments).await {
        Ok(f) => f,
        Err(r) => {
            shared.metrics.refused.fetch_add(1, Ordering::Relaxed);
            return r.response();
        }
    };
    let wants_html = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    let answer = |shared: &Shared, a: &Accepted, status: StatusCode| -> Response<Body> {
        if wants_html {
            let sep = if shared.opts.cfg.thank_you_url.contains('?') { '&' } else { '?' };
            let to = format!("{}{sep}job={}", shared.opts.cfg.thank_you_url, a.job_id);
            let mut r = full(StatusCode::SEE_OTHER, "text/plain", "");
            if let Ok(v) = HeaderValue::from_str(&to) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        } else {
            json(status, a)
        }
    };
    // SECURITY: bots fill every field; people never see this one. Answer
    // as if accepted, so the bot learns nothing.
    let honeypot = cfg.honeypot_field.as_str();
    if !honeypot.is_empty()
        && form.fields.iter().any(|(k, v)| k == honeypot && !v.trim().is_empty())
    {
        shared.metrics.honeypot.fetch_add(1, Ordering::Relaxed);
        let fake =
            format!("{}-submission-{}", Utc::now().format("%Y%m%dT%H%M%SZ"), random_suffix());
        let a = Accepted {
            status_url: format!("/api/queue/status/{fake}"),
            preview_url: shared.opts.preview_url.replace("{id}", "submission-pending"),
            project_id: "submission-pending".into(),
            job_id: fake,
        };
        return answer(shared, &a, StatusCode::ACCEPTED);
    }

    // Idempotency: the key, else the content (the same post twice, a
    // double click or a client's retry, makes one job).
    let key = parts
        .headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            form.fields.iter().find(|(k, _)| k == "idempotency_key").map(|(_, v)| v.clone())
        })
        .filter(|k| !k.trim().is_empty())
        .map(|k| format!("key:{}", submission::hex(&Sha256::digest(k.as_bytes()))))
        .unwrap_or_else(|| format!("content:{}", content_key(&form)));
    let window = Duration::from_secs(cfg.idempotency_window_secs);
    {
        let mut recent = shared.recent.lock().expect("recent lock is never poisoned");
        recent.retain(|_, (_, at)| at.elapsed() < window);
        if let Some((a, _)) = recent.get(&key) {
            shared.metrics.duplicates.fetch_add(1, Ordering::Relaxed);
            return answer(shared, a, StatusCode::ACCEPTED);
        }
    }

    let mut yaml = match to_yaml(&form, honeypot, cfg.max_field_bytes) {
        Ok(y) => y,
        Err(r) => {
            shared.metrics.refused.fetch_add(1, Ordering::Relaxed);
            return r.response();
        }
    };
    let now = Utc::now();
    yaml.submitted_at = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    yaml.source = "webhook";
    let slug_from =
        yaml.company.clone().or_else(|| yaml.contact.get("name").cloned()).unwrap_or_default();
    let mut slug = submission::slugify(&slug_from, 30);
    if slug.is_empty() {
        slug = "submission".into();
    }
    let job_id = format!("{}-{slug}-{}", now.format("%Y%m%dT%H%M%SZ"), random_suffix());

    // Files: checked by their bytes, named safely, kept in the job's folder.
    let mut files = Vec::new();
    let mut names = std::collections::HashSet::new();
    for up in &form.files {
        if up.bytes.is_empty() {
            shared.metrics.refused.fetch_add(1, Ordering::Relaxed);
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "empty_file",
                format!(
                    "file {:?} (field {:?}) is empty; choose the file again",
                    up.name, up.field
                ),
            );
        }
        if up.bytes.len() as u64 > shared.opts.max_attachment_bytes {
            shared.metrics.refused.fetch_add(1, Ordering::Relaxed);
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "file_too_large",
                format!(
                    "file {:?} is {} bytes; the most is {} (limits.max_attachment_bytes)",
                    up.name,
                    up.bytes.len(),
                    shared.opts.max_attachment_bytes
                ),
            );
        }
        let Some((kind, ext)) = sniff(&up.bytes) else {
            shared.metrics.refused.fetch_add(1, Ordering::Relaxed);
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_file",
                format!(
                    "file {:?} is not an accepted type (by its content): images (PNG, JPEG, GIF, WebP), documents (PDF, DOCX, TXT, MD) or audio (WebM, Ogg, MP3, WAV, M4A)",
                    up.name
                ),
            );
        };
        let mut name = safe_file_name(&up.name, ext);
        let mut n = 2;
        while !names.insert(name.clone()) {
            let (stem, e) = name
                .rsplit_once('.')
                .map(|(s, e)| (s.to_string(), e.to_string()))
                .expect("has an extension");
            name = format!(
                "{}-{n}.{e}",
                stem.trim_end_matches(char::is_numeric).trim_end_matches('-')
            );
            n += 1;
        }
        yaml.attachments.push(YamlAttachment {
            path: format!("attachments/{job_id}/{name}"),
            kind,
            description: if up.field.is_empty() { "file".into() } else { up.field.clone() },
        });
        files.push((name, up.bytes.clone()));
    }

    let text = match serde_saphyr::to_string(&yaml) {
        // The key rides along as a comment (not part of the submission or
        // its hash), so a restart remembers it; see `remember_recent`.
        Ok(t) => format!("{IDEMPOTENCY_MARK}{key}\n{t}"),
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("cannot write the submission: {e}"),
            );
        }
    };
    let shared2 = Arc::clone(shared);
    let job = job_id.clone();
    let written = tokio::task::spawn_blocking(move || {
        write_job(&shared2.opts.inbox, &job, &files, text.as_bytes())
    })
    .await;
    let (file, project_id) = match written {
        Ok(Ok(done)) => done,
        Ok(Err(WriteError::Invalid(detail))) => {
            shared.metrics.refused.fetch_add(1, Ordering::Relaxed);
            return error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_submission", detail);
        }
        Ok(Err(WriteError::Io(detail))) => {
            tracing::error!("webhook: {detail}");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot_store",
                "the submission could not be stored; try again",
            );
        }
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("{e}")),
    };
    shared.metrics.accepted.fetch_add(1, Ordering::Relaxed);
    shared.board.arrived(file);
    let a = Accepted {
        status_url: format!("/api/queue/status/{job_id}"),
        preview_url: shared.opts.preview_url.replace("{id}", &project_id),
        project_id,
        job_id,
    };
    shared
        .recent
        .lock()
        .expect("recent lock is never poisoned")
        .insert(key, (a.clone(), Instant::now()));
    tracing::info!(job = %a.job_id, project_id = %a.project_id, "submission accepted");
    answer(shared, &a, StatusCode::ACCEPTED)
}

/// First line of a webhook's inbox file: the idempotency key of the post.
const IDEMPOTENCY_MARK: &str = "# protoforge-idempotency: ";

/// After a restart: the keys of the posts accepted within the idempotency
/// window, read back from their inbox files, so that a client retrying
/// across the restart still gets its first job.
fn remember_recent(opts: &Options) -> HashMap<String, (Accepted, Instant)> {
    let window = Duration::from_secs(opts.cfg.idempotency_window_secs);
    let mut out = HashMap::new();
    let Ok(entries) = std::fs::read_dir(opts.inbox.dir()) else { return out };
    for e in entries.filter_map(Result::ok) {
        let path = e.path();
        let Some(job) =
            path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".yaml"))
        else {
            continue;
        };
        let age = e.metadata().and_then(|m| m.modified()).ok().and_then(|m| m.elapsed().ok());
        let Some(age) = age.filter(|a| *a < window) else { continue };
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let Some(key) = text.lines().next().and_then(|l| l.strip_prefix(IDEMPOTENCY_MARK)) else {
            continue;
        };
        let Ok(loaded) = opts.inbox.load_unchecked(&path) else { continue };
        let accepted = Accepted {
            job_id: job.to_string(),
            status_url: format!("/api/queue/status/{job}"),
            preview_url: opts.preview_url.replace("{id}", &loaded.parsed.project_id),
            project_id: loaded.parsed.project_id.clone(),
        };
        let at = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
        out.insert(key.to_string(), (accepted, at));
    }
    if !out.is_empty() {
        tracing::info!(jobs = out.len(), "remembered recent posts for idempotency");
    }
    out
}

/// The same fields and files, in any order, give the same key.
fn content_key(form: &Form) -> String {
    let mut fields: Vec<_> = form.fields.iter().collect();
    fields.sort();
    let mut h = Sha256::new();
    for (k, v) in fields {
        h.update((k.len() as u64).to_le_bytes());
        h.update(k.as_bytes());
        h.update((v.len() as u64).to_le_bytes());
        h.update(v.as_bytes());
    }
    let mut files: Vec<_> =
        form.files.iter().map(|f| (&f.field, Sha256::digest(&f.bytes))).collect();
    files.sort();
    for (field, digest) in files {
        h.update(field.as_bytes());
        h.update(digest);
    }
    submission::hex(&h.finalize())
}

enum WriteError {
    Invalid(String),
    Io(String),
}

/// Attachments first, each fsynced, then the YAML, renamed into the inbox
/// whole and fsynced with its directory: once this returns, the job is on
/// disk. An invalid submission leaves nothing behind.
fn write_job(
    inbox: &Inbox,
    job_id: &str,
    files: &[(String, Bytes)],
    yaml: &[u8],
) -> Result<(String, String), WriteError> {
    let io = |e: inbox::InboxError| WriteError::Io(e.to_string());
    let dir = inbox.dir().join("attachments").join(job_id);
    if !files.is_empty() {
        std::fs::create_dir_all(&dir)
            .map_err(|e| WriteError::Io(format!("{}: {e}", dir.display())))?;
        for (name, bytes) in files {
            inbox::write_durably(&dir.join(name), bytes).map_err(io)?;
        }
        inbox::sync_dir(&inbox.dir().join("attachments")).map_err(io)?;
    }
    let name = format!("{job_id}.yaml");
    let label = inbox.dir().join(&name);
    let parsed = match inbox.validate_bytes(yaml, &label) {
        Ok(p) => p,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(match e {
                inbox::InboxError::Invalid(e) => WriteError::Invalid(e.to_string()),
                other => WriteError::Io(other.to_string()),
            });
        }
    };
    let path = inbox.write(&name, yaml).map_err(io)?;
    let file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or(name);
    Ok((file, parsed.project_id))
}

// ---------------------------------------------------------------------------
// Status and events

/// A job's state, as the status route and the event stream report it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum JobStatus {
    Pending { job_id: String, position: usize },
    Processing { job_id: String, stage: String, percent: u8 },
    Completed { job_id: String, project_id: String, url: String, expires_at: Option<String> },
    Failed { job_id: String, project_id: String, stage: Option<String>, reason: String },
    Rejected { job_id: String, reason: String },
    Cancelled { job_id: String },
}

impl JobStatus {
    /// The event id: changes whenever what a page would show changes.
    fn event_id(&self) -> String {
        match self {
            JobStatus::Pending { position, .. } => format!("pending-{position}"),
            JobStatus::Processing { stage, percent, .. } => format!("processing-{stage}-{percent}"),
            JobStatus::Completed { .. } => "completed".into(),
            JobStatus::Failed { .. } => "failed".into(),
            JobStatus::Rejected { .. } => "rejected".into(),
            JobStatus::Cancelled { .. } => "cancelled".into(),
        }
    }

    fn is_final(&self) -> bool {
        !matches!(self, JobStatus::Pending { .. } | JobStatus::Processing { .. })
    }
}

thread_local! {
    /// One gix repository per blocking thread (a repository isn't Send).
    static STORE: std::cell::RefCell<Option<(PathBuf, Store)>> = const { std::cell::RefCell::new(None) };
}

fn with_store<R>(
    repo: &Path,
    branch: &str,
    f: impl FnOnce(&Store) -> Result<R, String>,
) -> Result<R, String> {
    STORE.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.as_ref().is_none_or(|(p, _)| p != repo) {
            let id =
                || Identity { name: "protoforge".into(), email: "protoforge@localhost".into() };
            let store = Store::open(repo, branch, id(), id()).map_err(|e| e.to_string())?;
            *cell = Some((repo.to_owned(), store));
        }
        let (_, store) = cell.as_ref().expect("set just above");
        f(store)
    })
}

async fn job_status(shared: &Arc<Shared>, job: &str) -> Result<JobStatus, Refusal> {
    if !is_job_id(job) {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "unknown_job",
            format!("{job:?} is not a job id"),
        ));
    }
    let shared2 = Arc::clone(shared);
    let job = job.to_string();
    tokio::task::spawn_blocking(move || status_of(&shared2, &job))
        .await
        .map_err(|e| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
}

fn status_of(shared: &Shared, job: &str) -> Result<JobStatus, Refusal> {
    let inbox = &shared.opts.inbox;
    let name = format!("{job}.yaml");
    let job_id = job.to_string();
    if inbox.dir().join("cancelled").join(&name).exists() {
        return Ok(JobStatus::Cancelled { job_id });
    }
    let rejected = inbox.dir().join("rejected").join(&name);
    if rejected.exists() {
        let reason = std::fs::read_to_string(inbox::error_file_for(&rejected))
            .unwrap_or_else(|_| "the submission was invalid".into());
        return Ok(JobStatus::Rejected { job_id, reason: reason.trim().to_string() });
    }
    let path = inbox.dir().join(&name);
    if !path.exists() {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "unknown_job",
            format!("no job {job}; it may have been pruned"),
        ));
    }
    if let Some(c) = shared.board.current().filter(|c| c.file == name) {
        return Ok(JobStatus::Processing { job_id, stage: c.stage.into(), percent: c.percent });
    }
    let internal = |e: String| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e);
    let loaded = inbox.load_unchecked(&path).map_err(|e| internal(e.to_string()))?;
    let sha = loaded.parsed.sha256.clone();
    let state = with_store(&shared.opts.repo, &shared.opts.branch, |store| {
        let snap = store.snapshot().map_err(|e| e.to_string())?;
        let state = builder::state_of(&snap, &sha).map_err(|e| e.to_string())?;
        let expires = match &state {
            State::Published { project_id } => snap
                .read(&format!("sites/{project_id}/metadata.json"))
                .ok()
                .flatten()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v["expires_at"].as_str().map(str::to_string)),
            _ => None,
        };
        Ok((state, expires))
    })
    .map_err(internal)?;
    Ok(match state {
        (State::Published { project_id }, expires_at) => JobStatus::Completed {
            job_id,
            url: shared.opts.preview_url.replace("{id}", &project_id),
            project_id,
            expires_at,
        },
        (State::Failed(record), _) => JobStatus::Failed {
            job_id,
            project_id: record.project_id,
            stage: Some(record.stage),
            reason: record.reason,
        },
        (State::Pending, _) => JobStatus::Pending {
            job_id,
            position: shared.board.position(&name).unwrap_or(shared.board.queued() + 1),
        },
    })
}

/// A response body fed by a channel: the event stream.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

async fn events(shared: &Arc<Shared>, job: &str, headers: &HeaderMap) -> Response<Body> {
    let first = match job_status(shared, job).await {
        Ok(s) => s,
        Err(r) => return r.response(),
    };
    let last_seen = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_string);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let shared = Arc::clone(shared);
    let job = job.to_string();
    tokio::spawn(async move {
        let mut changes = shared.board.subscribe();
        let mut last = last_seen;
        let mut status = first;
        let mut quiet = Instant::now();
        // Tell the browser how soon to reconnect.
        if tx.send(Bytes::from_static(b"retry: 2000\n\n")).await.is_err() {
            return;
        }
        loop {
            let id = status.event_id();
            if last.as_deref() != Some(id.as_str()) {
                let data = serde_json::to_string(&status).expect("a status serializes");
                let frame = format!("id: {id}\nevent: status\ndata: {data}\n\n");
                if tx.send(Bytes::from(frame)).await.is_err() {
                    return;
                }
                last = Some(id);
                quiet = Instant::now();
            }
            if status.is_final() {
                return;
            }
            // Wake on the builder's news, else look again each second (a
            // builder in another process shows only on the branch).
            let _ = tokio::time::timeout(Duration::from_secs(1), changes.changed()).await;
            if quiet.elapsed() > Duration::from_secs(15) {
                if tx.send(Bytes::from_static(b": keep-alive\n\n")).await.is_err() {
                    return;
                }
                quiet = Instant::now();
            }
            status = match job_status(&shared, &job).await {
                Ok(s) => s,
                Err(_) => return,
            };
        }
    });
    let mut r = Response::new(BodyExt::boxed(ChannelBody(rx)));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

/// The default thank-you page: live progress from the event stream.
const THANKS_PAGE: &str = include_str!("webhook/thanks.html");
const THANKS_JS: &str = include_str!("webhook/thanks.js");
/// The example contact form, served at `/`.
const FORM_PAGE: &str = include_str!("../examples/contact-form.html");
const FORM_JS: &str = include_str!("../examples/contact-form.js");

/// The webhook's own pages load only their own scripts and post only to
/// the webhook.
const PAGE_CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_signature_test_vector() {
        // docs.github.com, "Validating webhook deliveries".
        let mut h = HeaderMap::new();
        h.insert(
            "x-hub-signature-256",
            HeaderValue::from_static(
                "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            ),
        );
        assert_eq!(
            verify_signature(b"It's a Secret to Everybody", &h, b"Hello, World!", 0),
            Ok(())
        );
        assert!(verify_signature(b"another secret", &h, b"Hello, World!", 0).is_err());
        assert!(verify_signature(b"It's a Secret to Everybody", &h, b"Hello, World?", 0).is_err());
    }

    #[test]
    fn protoforge_signature_has_a_time_window() {
        use hmac::{KeyInit, Mac};
        let sign = |t: i64, body: &[u8]| {
            let mut mac = hmac::Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
            mac.update(format!("{t}.").as_bytes());
            mac.update(body);
            let mut h = HeaderMap::new();
            let v = format!(
                "t={t},v1={}",
                data_encoding::HEXLOWER.encode(&mac.finalize().into_bytes())
            );
            h.insert("x-protoforge-signature", HeaderValue::from_str(&v).unwrap());
            h
        };
        let now = 1_800_000_000;
        assert_eq!(verify_signature(b"s3cret", &sign(now - 10, b"{}"), b"{}", now), Ok(()));
        let old = verify_signature(b"s3cret", &sign(now - 301, b"{}"), b"{}", now);
        assert!(old.unwrap_err().contains("5 minutes"));
        assert!(verify_signature(b"s3cret", &sign(now, b"{}"), b"{ }", now).is_err());
        assert!(verify_signature(b"s3cret", &HeaderMap::new(), b"{}", now).is_err());
    }

    #[test]
    fn files_are_known_by_their_bytes() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n...."), Some((AttachmentKind::Image, "png")));
        assert_eq!(sniff(b"%PDF-1.7\n"), Some((AttachmentKind::Document, "pdf")));
        assert_eq!(sniff(b"OggS\0\x02"), Some((AttachmentKind::Audio, "ogg")));
        assert_eq!(sniff(b"RIFF\0\0\0\0WAVEfmt "), Some((AttachmentKind::Audio, "wav")));
        assert_eq!(sniff(b"# Menu\n\nBread\n"), Some((AttachmentKind::Document, "txt")));
        assert_eq!(sniff(b"MZ\x90\0\x03\0\0\0"), None);
        assert_eq!(sniff(b""), None);
    }

    #[test]
    fn file_names_are_rebuilt_safely() {
        assert_eq!(safe_file_name("../../etc/passwd", "txt"), "passwd.txt");
        assert_eq!(safe_file_name("C:\\Users\\me\\Logo Final.PNG", "png"), "logo-final.png");
        assert_eq!(safe_file_name(".htaccess", "txt"), "htaccess.txt");
        assert_eq!(safe_file_name("page.html", "png"), "page.png");
        assert_eq!(safe_file_name("notes.md", "txt"), "notes.md");
        assert_eq!(safe_file_name("", "pdf"), "file.pdf");
        assert_eq!(safe_file_name("Café menü.pdf", "pdf"), "cafe-menu.pdf");
    }

    #[test]
    fn job_ids() {
        assert!(is_job_id("20261122T034500Z-rosies-bakery-abcdefgh23456"));
        for bad in ["../etc", "a/b", "x", "-abcdefgh", "abc.yaml", "abcdefgh\0", "abcd efgh"] {
            assert!(!is_job_id(bad), "{bad}");
        }
    }

    fn run_form(content_type: &str, body: Vec<u8>) -> Result<Form, Refusal> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
            .block_on(read_form(content_type, Bytes::from(body), 5))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        /// Any body under any of the accepted types: parsed or refused
        /// with a client error, never a panic.
        #[test]
        fn any_body_is_parsed_or_refused(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            ct in "(application/json|application/x-www-form-urlencoded|multipart/form-data; boundary=[a-zA-Z0-9]{0,8}|multipart/form-data|text/[a-z]{1,5}|)",
        ) {
            match run_form(&ct, body) {
                Ok(form) => {
                    let _ = to_yaml(&form, "website", 64);
                    let _ = content_key(&form);
                    for f in &form.files {
                        let _ = sniff(&f.bytes);
                    }
                }
                Err(r) => proptest::prop_assert!(r.status.is_client_error(), "{r:?}"),
            }
        }

        /// Multipart bodies built from random parts, some truncated.
        #[test]
        fn random_multipart_is_parsed_or_refused(
            parts in proptest::collection::vec(("[a-z_\\[\\]\"]{0,8}", proptest::option::of("[^\"\r\n]{0,12}"), proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80)), 0..6),
            cut in 0usize..2000,
        ) {
            let mut body = Vec::new();
            for (name, file, data) in &parts {
                body.extend_from_slice(b"--b0undary\r\nContent-Disposition: form-data; name=\"");
                body.extend_from_slice(name.as_bytes());
                body.push(b'"');
                if let Some(f) = file {
                    body.extend_from_slice(format!("; filename=\"{f}\"").as_bytes());
                }
                body.extend_from_slice(b"\r\n\r\n");
                body.extend_from_slice(data);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"--b0undary--\r\n");
            body.truncate(cut.max(1).min(body.len()));
            match run_form("multipart/form-data; boundary=b0undary", body) {
                Ok(form) => {
                    proptest::prop_assert!(form.files.len() <= 5);
                    let _ = to_yaml(&form, "website", 1 << 16);
                }
                Err(r) => proptest::prop_assert!(r.status.is_client_error(), "{r:?}"),
            }
        }

        #[test]
        fn safe_names_never_escape(raw in "\\PC{0,80}", ext in "(png|txt|pdf)") {
            let name = safe_file_name(&raw, &ext);
            proptest::prop_assert!(!name.contains('/') && !name.contains('\\') && !name.starts_with('.'));
            proptest::prop_assert!(name.len() <= 70);
            proptest::prop_assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
        }
    }
}

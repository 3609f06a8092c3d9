//! The static server: each prototype at `<projectId>.<base_domain>` (and
//! `<base_domain>/prototypes/<projectId>/`), read straight from the
//! branch's git objects, no checkout.
//!
//! A request goes through these steps (as in static-web-server's handler):
//! 1. method: GET and HEAD only, else 405 with `Allow`;
//! 2. host: the base domain (front page, `/healthz`, `/metrics`, the
//!    `/prototypes/` fallback) or `<id>.<base_domain>`; anything else is 404;
//! 3. path: percent-decoded once and checked (no `..`, backslash, NUL,
//!    encoded slash, dotfile or `metadata.json`);
//! 4. site: looked up in one snapshot of the branch; past its `expires_at`
//!    it answers 410 at once, before the pruner runs;
//! 5. file: `/dir` → 308 `/dir/`, `/dir/` → `index.html`;
//! 6. conditional (ETag = blob id, Last-Modified = commit time) → 304;
//!    single Range → 206 / 416; else gzip or brotli for text;
//! 7. headers: type with charset, cache policy, CSP and the other security
//!    headers; one access-log line and the metrics.
//!
//! Invariants: a response is built from one snapshot of the branch, so it
//! never mixes two commits; git objects are read by one reader thread (a
//! gix repository is not `Send` without its `parallel` feature) and cached
//! by id, which never goes stale; the cache is bounded in bytes.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use gix::ObjectId;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::sync::{Semaphore, oneshot, watch};

use crate::config::Config;
use crate::publish::{Identity, PublishError, Store};
use crate::submission::is_project_id;

/// Sent with every response of a prototype (and the error pages).
pub const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; connect-src 'none'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}; is another server using the port? (serve.listen)")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("the git reader thread stopped; see the error logged before this one")]
    ReaderGone,
    #[error("`{0}` is not a socket address; write it like 127.0.0.1:8080 (serve.listen)")]
    Listen(String),
}

/// What the server needs to know, from the config.
#[derive(Debug, Clone)]
pub struct Options {
    pub repo: PathBuf,
    pub branch: String,
    pub base_domain: String,
    pub listen: SocketAddr,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub keep_alive: Duration,
    pub max_header_bytes: usize,
    pub cache_bytes: u64,
    pub refresh: Duration,
    pub list_sites: bool,
    /// A fixed clock, for tests and `--now`; `None` is the real clock.
    pub now: Option<DateTime<Utc>>,
}

impl Options {
    pub fn from_config(repo: PathBuf, c: &Config) -> Result<Options, ServeError> {
        Ok(Options {
            repo,
            branch: c.branch.clone(),
            base_domain: c.base_domain.to_ascii_lowercase(),
            listen: c
                .serve
                .listen
                .parse()
                .map_err(|_| ServeError::Listen(c.serve.listen.clone()))?,
            max_connections: c.serve.max_connections,
            header_read_timeout: Duration::from_secs(c.serve.header_read_timeout_secs),
            keep_alive: Duration::from_secs(c.serve.keep_alive_secs),
            max_header_bytes: c.serve.max_header_bytes,
            cache_bytes: c.serve.cache_bytes,
            refresh: Duration::from_millis(c.serve.refresh_ms),
            list_sites: c.serve.list_sites,
            now: None,
        })
    }
}

/// One commit of the branch, as the server sees it.
struct Head {
    commit: Option<ObjectId>,
    commit_time: Option<SystemTime>,
    /// Site id → the id of its tree.
    sites: HashMap<String, ObjectId>,
}

/// One file, with its compressed forms made on first use.
struct Asset {
    body: Bytes,
    etag: HeaderValue,
    content_type: &'static str,
    gzip: OnceLock<Option<Bytes>>,
    brotli: OnceLock<Option<Bytes>>,
}

/// One site: its files' blob ids, from its (immutable) tree.
struct Site {
    /// Sorted by path: a few hundred bytes a site, where a map took ~1 KB.
    files: Box<[(Box<str>, ObjectId)]>,
    expires_at: Option<DateTime<Utc>>,
}

impl Site {
    fn get(&self, path: &str) -> Option<ObjectId> {
        self.files.binary_search_by(|(p, _)| (**p).cmp(path)).ok().map(|i| self.files[i].1)
    }
}

enum ReaderRequest {
    Head { known: Option<ObjectId>, reply: oneshot::Sender<Result<Option<Head>, PublishError>> },
    Site { tree: ObjectId, reply: oneshot::Sender<Result<Site, PublishError>> },
    Blob { id: ObjectId, reply: oneshot::Sender<Result<Vec<u8>, PublishError>> },
}

/// Reader threads, each with its own gix repository (one isn't `Send`),
/// taking requests from one queue: a slow read (a cold site) doesn't hold
/// up the others.
const READERS: usize = 2;

fn spawn_reader(opts: &Options) -> Result<std::sync::mpsc::Sender<ReaderRequest>, ServeError> {
    let identity = || Identity { name: "protoforge".into(), email: "protoforge@localhost".into() };
    // Open once here so that a bad repo fails `serve` at start, not later.
    Store::open(&opts.repo, &opts.branch, identity(), identity())?;
    let (tx, rx) = std::sync::mpsc::channel::<ReaderRequest>();
    let rx = Arc::new(Mutex::new(rx));
    for n in 0..READERS {
        let (repo, branch, rx) = (opts.repo.clone(), opts.branch.clone(), Arc::clone(&rx));
        std::thread::Builder::new()
            .name(format!("git-reader-{n}"))
            .spawn(move || {
                let store = match Store::open(&repo, &branch, identity(), identity()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!("git reader: {e}");
                        return;
                    }
                };
                // Enough for the `sites` tree of ~20,000 sites; a site's own
                // tree is read once, into the site cache.
                store.set_tree_cache_bytes(1 << 20);
                loop {
                    // Hold the queue only to take one request.
                    let request = match rx.lock().expect("queue lock is never poisoned").recv() {
                        Ok(r) => r,
                        Err(_) => return,
                    };
                    match request {
                        ReaderRequest::Head { known, reply } => {
                            let _ = reply.send(read_head(&store, known));
                        }
                        ReaderRequest::Site { tree, reply } => {
                            let _ = reply.send(read_site(&store, tree));
                        }
                        ReaderRequest::Blob { id, reply } => {
                            let _ = reply.send(store.blob(id));
                        }
                    }
                }
            })
            .map_err(|e| {
                ServeError::Publish(PublishError::Corrupt {
                    repo: opts.repo.clone(),
                    what: format!("cannot start a git reader thread: {e}"),
                })
            })?;
    }
    Ok(tx)
}

fn read_head(store: &Store, known: Option<ObjectId>) -> Result<Option<Head>, PublishError> {
    let snapshot = store.snapshot()?;
    if snapshot.commit_id() == known && known.is_some() {
        return Ok(None);
    }
    let sites = snapshot.subtrees("sites")?.into_iter().collect();
    let commit_time = snapshot
        .commit_time()?
        .and_then(|s| u64::try_from(s).ok())
        .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s));
    Ok(Some(Head { commit: snapshot.commit_id(), commit_time, sites }))
}

/// A site's file list and expiry: the listing of its tree and its
/// `metadata.json`; the files themselves are read when asked for.
fn read_site(store: &Store, tree: ObjectId) -> Result<Site, PublishError> {
    // Sorted by path, which `Site::get` relies on.
    let files: Box<[(Box<str>, ObjectId)]> =
        store.tree_listing(tree)?.into_iter().map(|(p, id)| (p.into_boxed_str(), id)).collect();
    let site = Site { files, expires_at: None };
    let expires_at = match site.get("metadata.json") {
        Some(blob) => serde_json::from_slice::<serde_json::Value>(&store.blob(blob)?)
            .ok()
            .and_then(|v| {
                v["expires_at"].as_str().and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            })
            .map(|t| t.with_timezone(&Utc)),
        None => None,
    };
    Ok(Site { expires_at, ..site })
}

fn asset(path: &str, blob: ObjectId, body: Vec<u8>) -> Asset {
    Asset {
        content_type: content_type(path),
        etag: HeaderValue::from_str(&format!("\"{blob}\""))
            .expect("a hex id is a valid header value"),
        body: Bytes::from(body),
        gzip: OnceLock::new(),
        brotli: OnceLock::new(),
    }
}

/// Files by blob id, bounded in bytes, compressed forms included; the
/// oldest loaded goes first. Sites with the same file (every site of a
/// layout has the same `script.js`) share one entry.
struct AssetCache {
    /// Each entry with the bytes counted for it.
    by_blob: HashMap<ObjectId, (Arc<Asset>, u64)>,
    order: VecDeque<ObjectId>,
    bytes: u64,
    limit: u64,
}

impl AssetCache {
    fn get(&self, blob: &ObjectId) -> Option<Arc<Asset>> {
        self.by_blob.get(blob).map(|(a, _)| Arc::clone(a))
    }

    fn insert(&mut self, blob: ObjectId, asset: Arc<Asset>) {
        if self.by_blob.contains_key(&blob) {
            return;
        }
        let n = asset.body.len() as u64;
        self.bytes += n;
        self.by_blob.insert(blob, (asset, n));
        self.order.push_back(blob);
        self.evict();
    }

    /// A compressed form of `asset` was made: count it, if the entry is
    /// still this one (it may have been evicted, or replaced, meanwhile).
    fn grew(&mut self, blob: ObjectId, asset: &Arc<Asset>, extra: usize) {
        if let Some((a, n)) = self.by_blob.get_mut(&blob)
            && Arc::ptr_eq(a, asset)
        {
            *n += extra as u64;
            self.bytes += extra as u64;
            self.evict();
        }
    }

    fn evict(&mut self) {
        while self.bytes > self.limit && self.order.len() > 1 {
            let Some(old) = self.order.pop_front() else { break };
            if let Some((_, n)) = self.by_blob.remove(&old) {
                self.bytes -= n;
            }
        }
    }
}

/// Site file lists by tree id, and their load order for eviction.
type SiteMap = (HashMap<ObjectId, Arc<Site>>, VecDeque<ObjectId>);

/// Most sites whose file lists are kept (a few hundred bytes each).
const MAX_SITES: usize = 50_000;

/// Prometheus figures.
#[derive(Default)]
struct Metrics {
    by_status: Mutex<HashMap<u16, u64>>,
    /// Upper bounds in seconds, and the counts below each.
    duration_buckets: [AtomicU64; 8],
    duration_sum_us: AtomicU64,
    requests: AtomicU64,
    bytes: AtomicU64,
    in_flight: AtomicU64,
}

const BUCKETS: [f64; 8] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0];

struct Shared {
    opts: Options,
    head: RwLock<Arc<Head>>,
    sites: Mutex<SiteMap>,
    assets: Mutex<AssetCache>,
    reader: Mutex<std::sync::mpsc::Sender<ReaderRequest>>,
    metrics: Metrics,
    not_found: Bytes,
    gone: String,
    front: String,
    started: std::time::Instant,
    /// When (ms after `started`) an unknown site last made us re-read the branch.
    early_refresh_ms: AtomicU64,
}

impl Shared {
    fn now(&self) -> DateTime<Utc> {
        self.opts.now.unwrap_or_else(Utc::now)
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> ReaderRequest,
    ) -> Result<T, ServeError> {
        let (tx, rx) = oneshot::channel();
        self.reader
            .lock()
            .expect("reader lock is never poisoned")
            .send(make(tx))
            .map_err(|_| ServeError::ReaderGone)?;
        rx.await.map_err(|_| ServeError::ReaderGone)
    }

    /// An unknown site may just have been published: look at the branch
    /// now, at most every 25 ms (a flood of unknown hosts costs one ref
    /// read per 25 ms, not one per request).
    fn may_refresh_early(&self) -> bool {
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.early_refresh_ms.load(Ordering::Relaxed);
        now >= last + 25
            && self
                .early_refresh_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Pick up a new commit, if there is one.
    async fn refresh(&self) -> Result<(), ServeError> {
        let known = self.head.read().expect("head lock is never poisoned").commit;
        if let Some(head) = self.ask(|reply| ReaderRequest::Head { known, reply }).await?? {
            tracing::info!(commit = ?head.commit, sites = head.sites.len(), "serving a new commit of the branch");
            *self.head.write().expect("head lock is never poisoned") = Arc::new(head);
        }
        Ok(())
    }

    async fn site(&self, tree: ObjectId) -> Result<Arc<Site>, ServeError> {
        if let Some(site) = self.sites.lock().expect("cache lock is never poisoned").0.get(&tree) {
            return Ok(Arc::clone(site));
        }
        let site = Arc::new(self.ask(|reply| ReaderRequest::Site { tree, reply }).await??);
        let mut sites = self.sites.lock().expect("cache lock is never poisoned");
        if sites.0.insert(tree, Arc::clone(&site)).is_none() {
            sites.1.push_back(tree);
        }
        while sites.1.len() > MAX_SITES {
            if let Some(old) = sites.1.pop_front() {
                sites.0.remove(&old);
            }
        }
        Ok(site)
    }

    /// A file by blob id: from the cache, or read again if it was evicted.
    async fn asset(&self, path: &str, blob: ObjectId) -> Result<Arc<Asset>, ServeError> {
        if let Some(a) = self.assets.lock().expect("cache lock is never poisoned").get(&blob) {
            return Ok(a);
        }
        let body = self.ask(|reply| ReaderRequest::Blob { id: blob, reply }).await??;
        let a = Arc::new(asset(path, blob, body));
        self.assets.lock().expect("cache lock is never poisoned").insert(blob, Arc::clone(&a));
        Ok(a)
    }
}

/// Serve on `listener` (see [`bind`]) until `shutdown` turns true; connections
/// in flight are given `grace` to finish.
pub async fn run_on(
    listener: tokio::net::TcpListener,
    opts: Options,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) -> Result<(), ServeError> {
    serve_on(listener, opts, shutdown.clone(), grace, async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    })
    .await
}

/// Bind the static server's port, so a taken one fails before anything starts.
pub async fn bind(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, ServeError> {
    tokio::net::TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr, source })
}

/// Serve on an already bound listener (tests bind port 0).
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    opts: Options,
    shutdown: watch::Receiver<bool>,
    grace: Duration,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    let reader = spawn_reader(&opts)?;
    let shared = Arc::new(Shared {
        head: RwLock::new(Arc::new(Head {
            commit: None,
            commit_time: None,
            sites: HashMap::new(),
        })),
        sites: Mutex::new((HashMap::new(), VecDeque::new())),
        assets: Mutex::new(AssetCache {
            by_blob: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            limit: opts.cache_bytes,
        }),
        reader: Mutex::new(reader),
        metrics: Metrics::default(),
        not_found: Bytes::from_static(NOT_FOUND_PAGE.as_bytes()),
        gone: GONE_PAGE.to_string(),
        front: FRONT_PAGE.to_string(),
        started: std::time::Instant::now(),
        early_refresh_ms: AtomicU64::new(0),
        opts,
    });
    shared.refresh().await?;
    let local = listener.local_addr().ok();
    tracing::info!(addr = ?local, domain = %shared.opts.base_domain, "serving prototypes");

    // The branch is polled; a new commit is picked up without a restart.
    let refresher = {
        let shared = Arc::clone(&shared);
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(shared.opts.refresh);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if let Err(e) = shared.refresh().await {
                            tracing::error!("reading the branch: {e}");
                        }
                    }
                    _ = shutdown.changed() => break,
                }
            }
        })
    };

    let limit = Arc::new(Semaphore::new(shared.opts.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        // SECURITY: bound the connections held open (slowloris); past the
        // limit new ones wait in the kernel's backlog.
        let permit = tokio::select! {
            permit = Arc::clone(&limit).acquire_owned() => permit.expect("the semaphore is never closed"),
            _ = &mut stop => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        let mut builder = hyper::server::conn::http1::Builder::new();
        // SECURITY: without a timer hyper's header-read timeout silently does
        // nothing (static-web-server's bug); with it, a client that trickles
        // its headers, or idles on a keep-alive connection, is cut off.
        builder
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(Some(shared.opts.header_read_timeout.min(shared.opts.keep_alive)))
            .keep_alive(true)
            .max_header_size(shared.opts.max_header_bytes)
            .max_headers(100);
        let service = hyper::service::service_fn(move |req| {
            let shared = Arc::clone(&shared);
            async move { Ok::<_, Infallible>(handle(&shared, req, peer).await) }
        });
        let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, "connection: {e}");
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = refresher.await;
    let _ = shutdown;
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(grace) => tracing::warn!("connections still open after {grace:?}; closing"),
    }
    Ok(())
}

/// Where a request goes.
#[derive(Debug, PartialEq)]
enum Route {
    Front,
    Health,
    Metrics,
    /// A site and the path inside it (without the leading slash), and the
    /// prefix the site is mounted at (for redirects).
    Site {
        id: String,
        path: String,
        mount: String,
    },
    /// `/prototypes/<id>` → `/prototypes/<id>/`.
    Redirect(String),
    NotFound,
}

/// The host of a request: lowercase, without port or trailing dot.
fn host_of(req: &Request<Incoming>) -> String {
    let raw = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_string()))
        .unwrap_or_default();
    normalize_host(&raw)
}

pub fn normalize_host(raw: &str) -> String {
    let raw = raw.trim();
    let host = if raw.starts_with('[') {
        // An IPv6 literal: keep the brackets, drop the port.
        raw.split_once(']').map(|(h, _)| format!("{h}]")).unwrap_or_default()
    } else {
        raw.rsplit_once(':').map(|(h, _)| h).unwrap_or(raw).to_string()
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

fn is_ip(host: &str) -> bool {
    host.parse::<std::net::IpAddr>().is_ok() || (host.starts_with('[') && host.ends_with(']'))
}

fn route(base: &str, host: &str, raw_path: &str) -> Result<Route, StatusCode> {
    let on_base = host == base || is_ip(host);
    if on_base {
        match raw_path {
            "/" => return Ok(Route::Front),
            "/healthz" => return Ok(Route::Health),
            "/metrics" => return Ok(Route::Metrics),
            _ => {}
        }
        let Some(rest) = raw_path.strip_prefix("/prototypes/") else { return Ok(Route::NotFound) };
        let (id, path) = rest
            .split_once('/')
            .map(|(i, p)| (i, format!("/{p}")))
            .unwrap_or((rest, String::new()));
        let id = id.to_ascii_lowercase();
        if !is_project_id(&id) {
            return Ok(Route::NotFound);
        }
        if path.is_empty() {
            return Ok(Route::Redirect(format!("/prototypes/{id}/")));
        }
        return Ok(Route::Site {
            path: clean_path(&path)?,
            mount: format!("/prototypes/{id}"),
            id,
        });
    }
    let Some(label) = host.strip_suffix(base).and_then(|h| h.strip_suffix('.')) else {
        return Ok(Route::NotFound);
    };
    if !is_project_id(label) {
        return Ok(Route::NotFound);
    }
    Ok(Route::Site { id: label.to_string(), path: clean_path(raw_path)?, mount: String::new() })
}

/// Decode and check a request path; returns it without the leading slash.
/// An empty result or one ending in `/` names a directory.
pub fn clean_path(raw: &str) -> Result<String, StatusCode> {
    // SECURITY: path traversal. Decode exactly once; refuse encoded slashes
    // and backslashes (they would change the path's shape after a second
    // decode somewhere), NUL, `.`/`..` segments and backslashes; refuse
    // dotfiles. The result can only name an entry of the site's own tree.
    let lower = raw.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") || lower.contains("%00") || raw.contains('\\')
    {
        return Err(StatusCode::BAD_REQUEST);
    }
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| StatusCode::BAD_REQUEST)?;
    if decoded.contains('\0') || decoded.contains('\\') || !decoded.starts_with('/') {
        return Err(StatusCode::BAD_REQUEST);
    }
    let mut parts = Vec::new();
    for segment in decoded[1..].split('/') {
        match segment {
            "" => continue,
            "." | ".." => return Err(StatusCode::BAD_REQUEST),
            s if s.starts_with('.') => return Err(StatusCode::NOT_FOUND),
            s if s.chars().any(char::is_control) => return Err(StatusCode::BAD_REQUEST),
            s => parts.push(s),
        }
    }
    let mut path = parts.join("/");
    if decoded.ends_with('/') && !path.is_empty() {
        path.push('/');
    }
    Ok(path)
}

async fn handle(
    shared: &Shared,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let start = Instant::now();
    shared.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
    let host = host_of(&req);
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let mut response = respond(shared, &req, &host).await;
    if method == Method::HEAD {
        *response.body_mut() = Full::new(Bytes::new());
    }
    let status = response.status().as_u16();
    let bytes = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let bytes = if method == Method::HEAD { 0 } else { bytes };
    let elapsed = start.elapsed();
    let m = &shared.metrics;
    m.in_flight.fetch_sub(1, Ordering::Relaxed);
    m.requests.fetch_add(1, Ordering::Relaxed);
    m.bytes.fetch_add(bytes, Ordering::Relaxed);
    m.duration_sum_us.fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    for (i, bound) in BUCKETS.iter().enumerate() {
        if elapsed.as_secs_f64() <= *bound {
            m.duration_buckets[i].fetch_add(1, Ordering::Relaxed);
        }
    }
    *m.by_status.lock().expect("metrics lock is never poisoned").entry(status).or_default() += 1;
    tracing::info!(target: "protoforge::access", %peer, %method, %host, %path, status, bytes, ms = elapsed.as_secs_f64() * 1000.0, "request");
    response
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    security_headers(h);
    r
}

fn html(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let len = body.len();
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    security_headers(h);
    r
}

fn security_headers(h: &mut HeaderMap) {
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert("x-robots-tag", HeaderValue::from_static("noindex"));
}

fn redirect(to: &str) -> Response<Full<Bytes>> {
    let mut r = plain(StatusCode::PERMANENT_REDIRECT, "");
    match HeaderValue::from_str(to) {
        Ok(v) => {
            r.headers_mut().insert(header::LOCATION, v);
            r
        }
        Err(_) => plain(StatusCode::BAD_REQUEST, "bad request\n"),
    }
}

async fn respond(shared: &Shared, req: &Request<Incoming>, host: &str) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let route = match route(&shared.opts.base_domain, host, req.uri().path()) {
        Ok(r) => r,
        Err(StatusCode::NOT_FOUND) => return html(StatusCode::NOT_FOUND, shared.not_found.clone()),
        Err(status) => return plain(status, "bad request\n"),
    };
    // One snapshot for the whole response.
    let head = Arc::clone(&shared.head.read().expect("head lock is never poisoned"));
    match route {
        Route::Health => plain(StatusCode::OK, "ok\n"),
        Route::Metrics => metrics(shared, &head),
        Route::Front => front(shared, &head),
        Route::NotFound => html(StatusCode::NOT_FOUND, shared.not_found.clone()),
        Route::Redirect(to) => {
            let query = req.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
            redirect(&format!("{to}{query}"))
        }
        Route::Site { id, path, mount } => {
            let mut head = head;
            if !head.sites.contains_key(&id) && shared.may_refresh_early() {
                // A site published a moment ago (its "completed" status is
                // what sent the visitor here) shows at once, not after the
                // next poll.
                if let Err(e) = shared.refresh().await {
                    tracing::error!("reading the branch: {e}");
                }
                head = Arc::clone(&shared.head.read().expect("head lock is never poisoned"));
            }
            let Some(tree) = head.sites.get(&id).copied() else {
                return html(StatusCode::NOT_FOUND, shared.not_found.clone());
            };
            let site = match shared.site(tree).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(site = %id, "{e}");
                    return plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n");
                }
            };
            if let Some(expired) = site.expires_at.filter(|at| *at <= shared.now()) {
                let page = shared.gone.replace("{date}", &expired.format("%Y-%m-%d").to_string());
                return html(StatusCode::GONE, Bytes::from(page));
            }
            serve_file(shared, req, &head, &site, &path, &mount).await
        }
    }
}

async fn serve_file(
    shared: &Shared,
    req: &Request<Incoming>,
    head: &Head,
    site: &Site,
    path: &str,
    mount: &str,
) -> Response<Full<Bytes>> {
    let query = req.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
    // SECURITY: metadata.json is the site's record, not part of it.
    if path == "metadata.json" {
        return html(StatusCode::NOT_FOUND, shared.not_found.clone());
    }
    let file = if path.is_empty() || path.ends_with('/') {
        format!("{path}index.html")
    } else {
        path.to_string()
    };
    let Some(blob) = site.get(&file) else {
        if site.get(&format!("{file}/index.html")).is_some() {
            return redirect(&format!("{mount}/{file}/{query}"));
        }
        // Browsers ask for it unprompted; a 404 would be a console error on
        // every prototype.
        if file == "favicon.ico" {
            return plain(StatusCode::NO_CONTENT, "");
        }
        return html(StatusCode::NOT_FOUND, shared.not_found.clone());
    };
    let asset = match shared.asset(&file, blob).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(file = %file, "{e}");
            return plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n");
        }
    };
    let headers = req.headers();
    let mut r = Response::new(Full::new(Bytes::new()));
    let h = r.headers_mut();
    h.insert(header::ETAG, asset.etag.clone());
    if let Some(t) = head.commit_time {
        h.insert(
            header::LAST_MODIFIED,
            HeaderValue::from_str(&httpdate::fmt_http_date(t))
                .expect("an HTTP date is a valid header value"),
        );
    }
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_policy(&file, asset.content_type)),
    );
    let compressible = is_compressible(asset.content_type);
    if compressible {
        h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    security_headers(h);

    if not_modified(headers, &asset.etag, head.commit_time) {
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        return r;
    }
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    let len = asset.body.len() as u64;
    if let Some(range) = headers.get(header::RANGE).and_then(|v| v.to_str().ok())
        && if_range_holds(headers, &asset.etag)
    {
        match parse_range(range, len) {
            RangeResult::Single(start, end) => {
                let body = asset.body.slice(start as usize..=end as usize);
                h.insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&format!("bytes {start}-{end}/{len}"))
                        .expect("digits are a valid header value"),
                );
                h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
                *r.status_mut() = StatusCode::PARTIAL_CONTENT;
                *r.body_mut() = Full::new(body);
                return r;
            }
            RangeResult::Unsatisfiable => {
                h.insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&format!("bytes */{len}"))
                        .expect("digits are a valid header value"),
                );
                h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
                *r.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                return r;
            }
            // Several ranges or a malformed header: the whole file.
            RangeResult::Ignore => {}
        }
    }
    let mut body = asset.body.clone();
    if compressible && body.len() >= 256 {
        let accept =
            headers.get(header::ACCEPT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("");
        type Compress = fn(&[u8]) -> Option<Bytes>;
        let choice: Option<(_, _, Compress)> = if accepts(accept, "br") {
            Some((&asset.brotli, "br", compress_brotli))
        } else if accepts(accept, "gzip") {
            Some((&asset.gzip, "gzip", compress_gzip))
        } else {
            None
        };
        if let Some((form, coding, compress)) = choice {
            let mut made = 0;
            let compressed = form.get_or_init(|| {
                let c = compress(&asset.body);
                made = c.as_ref().map_or(0, Bytes::len);
                c
            });
            if made > 0 {
                shared
                    .assets
                    .lock()
                    .expect("cache lock is never poisoned")
                    .grew(blob, &asset, made);
            }
            if let Some(c) = compressed {
                body = c.clone();
                h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(coding));
            }
        }
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    *r.body_mut() = Full::new(body);
    r
}

/// `If-None-Match` wins over `If-Modified-Since` (RFC 9110 §13.2.2).
fn not_modified(headers: &HeaderMap, etag: &HeaderValue, modified: Option<SystemTime>) -> bool {
    if let Some(inm) = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        let tag = etag.to_str().unwrap_or("");
        return inm
            .split(',')
            .map(str::trim)
            .any(|t| t == "*" || t == tag || t.strip_prefix("W/") == Some(tag));
    }
    match (headers.get(header::IF_MODIFIED_SINCE).and_then(|v| v.to_str().ok()), modified) {
        (Some(since), Some(modified)) => match httpdate::parse_http_date(since) {
            Ok(since) => {
                modified.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
                    <= since
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0)
            }
            Err(_) => false,
        },
        _ => false,
    }
}

/// `If-Range` with our strong ETag: the range applies only if it matches.
fn if_range_holds(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    match headers.get(header::IF_RANGE) {
        None => true,
        Some(v) => v == etag,
    }
}

#[derive(Debug, PartialEq)]
enum RangeResult {
    Single(u64, u64),
    Unsatisfiable,
    Ignore,
}

/// One `bytes=` range against a body of `len` bytes.
fn parse_range(header: &str, len: u64) -> RangeResult {
    let Some(spec) = header.trim().strip_prefix("bytes=") else { return RangeResult::Ignore };
    if spec.contains(',') {
        return RangeResult::Ignore;
    }
    let Some((a, b)) = spec.trim().split_once('-') else { return RangeResult::Ignore };
    let (a, b) = (a.trim(), b.trim());
    let parse = |s: &str| s.parse::<u64>().ok();
    match (a.is_empty(), b.is_empty()) {
        (true, true) => RangeResult::Ignore,
        (true, false) => match parse(b) {
            Some(0) => RangeResult::Unsatisfiable,
            Some(n) if len > 0 => RangeResult::Single(len.saturating_sub(n), len - 1),
            Some(_) => RangeResult::Unsatisfiable,
            None => RangeResult::Ignore,
        },
        (false, _) => {
            let Some(start) = parse(a) else { return RangeResult::Ignore };
            let end = if b.is_empty() { Some(len.saturating_sub(1)) } else { parse(b) };
            let Some(end) = end else { return RangeResult::Ignore };
            if start >= len {
                RangeResult::Unsatisfiable
            } else if end < start {
                RangeResult::Ignore
            } else {
                RangeResult::Single(start, end.min(len - 1))
            }
        }
    }
}

/// Whether `accept` (an Accept-Encoding value) allows `coding` (q > 0).
fn accepts(accept: &str, coding: &str) -> bool {
    accept.split(',').any(|part| {
        let mut it = part.split(';');
        let name = it.next().unwrap_or("").trim();
        let q = it
            .find_map(|p| p.trim().strip_prefix("q=").and_then(|q| q.trim().parse::<f32>().ok()))
            .unwrap_or(1.0);
        (name.eq_ignore_ascii_case(coding) || name == "*") && q > 0.0
    })
}

fn compress_gzip(body: &[u8]) -> Option<Bytes> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 3),
        flate2::Compression::new(6),
    );
    enc.write_all(body).ok()?;
    let out = enc.finish().ok()?;
    (out.len() < body.len()).then(|| Bytes::from(out))
}

fn compress_brotli(body: &[u8]) -> Option<Bytes> {
    let mut out = Vec::with_capacity(body.len() / 3);
    let params = brotli::enc::BrotliEncoderParams { quality: 6, lgwin: 20, ..Default::default() };
    brotli::BrotliCompress(&mut std::io::Cursor::new(body), &mut out, &params).ok()?;
    (out.len() < body.len()).then(|| Bytes::from(out))
}

fn is_compressible(content_type: &str) -> bool {
    content_type.starts_with("text/")
        || content_type.starts_with("application/json")
        || content_type.starts_with("application/xml")
        || content_type.starts_with("application/manifest")
        || content_type.starts_with("image/svg")
}

/// HTML is always revalidated; content-hashed names (`app.3f9a1c2b.js`)
/// are cached for a year; everything else is revalidated too.
fn cache_policy(path: &str, content_type: &str) -> &'static str {
    if content_type.starts_with("text/html") {
        return "no-cache";
    }
    let name = path.rsplit('/').next().unwrap_or(path);
    let hashed =
        name.split('.').any(|part| part.len() >= 8 && part.chars().all(|c| c.is_ascii_hexdigit()));
    if hashed { "public, max-age=31536000, immutable" } else { "public, no-cache" }
}

pub fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "webmanifest" => "application/manifest+json",
        "txt" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        _ => "application/octet-stream",
    }
}

fn front(shared: &Shared, head: &Head) -> Response<Full<Bytes>> {
    let list = if shared.opts.list_sites {
        let mut ids: Vec<&String> = head.sites.keys().collect();
        ids.sort();
        let items: String = ids
            .iter()
            .map(|id| format!("<li><a href=\"/prototypes/{id}/\">{id}</a></li>"))
            .collect();
        format!("<ul>{items}</ul>")
    } else {
        String::new()
    };
    html(StatusCode::OK, Bytes::from(shared.front.replace("{sites}", &list)))
}

fn metrics(shared: &Shared, head: &Head) -> Response<Full<Bytes>> {
    use std::fmt::Write;
    let m = &shared.metrics;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP protoforge_http_requests_total Responses sent, by status.\n# TYPE protoforge_http_requests_total counter"
    );
    let mut statuses: Vec<(u16, u64)> = m
        .by_status
        .lock()
        .expect("metrics lock is never poisoned")
        .iter()
        .map(|(s, n)| (*s, *n))
        .collect();
    statuses.sort();
    for (status, n) in statuses {
        let _ = writeln!(out, "protoforge_http_requests_total{{status=\"{status}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP protoforge_http_request_duration_seconds Time to answer a request.\n# TYPE protoforge_http_request_duration_seconds histogram"
    );
    for (i, bound) in BUCKETS.iter().enumerate() {
        let _ = writeln!(
            out,
            "protoforge_http_request_duration_seconds_bucket{{le=\"{bound}\"}} {}",
            m.duration_buckets[i].load(Ordering::Relaxed)
        );
    }
    let count = m.requests.load(Ordering::Relaxed);
    let _ = writeln!(out, "protoforge_http_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(
        out,
        "protoforge_http_request_duration_seconds_sum {}",
        m.duration_sum_us.load(Ordering::Relaxed) as f64 / 1e6
    );
    let _ = writeln!(out, "protoforge_http_request_duration_seconds_count {count}");
    let _ = writeln!(
        out,
        "# HELP protoforge_http_response_bytes_total Body bytes sent.\n# TYPE protoforge_http_response_bytes_total counter\nprotoforge_http_response_bytes_total {}",
        m.bytes.load(Ordering::Relaxed)
    );
    // This request is in flight too.
    let _ = writeln!(
        out,
        "# HELP protoforge_http_requests_in_flight Requests being answered.\n# TYPE protoforge_http_requests_in_flight gauge\nprotoforge_http_requests_in_flight {}",
        m.in_flight.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP protoforge_sites Sites on the branch head.\n# TYPE protoforge_sites gauge\nprotoforge_sites {}",
        head.sites.len()
    );
    let age = head
        .commit_time
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let _ = writeln!(
        out,
        "# HELP protoforge_branch_head_age_seconds Age of the commit being served.\n# TYPE protoforge_branch_head_age_seconds gauge\nprotoforge_branch_head_age_seconds {age}"
    );
    let body = Bytes::from(out);
    let len = body.len();
    let mut r = Response::new(Full::new(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    r
}

/// Shared with `export`, so that a static host answers alike.
pub const NOT_FOUND_PAGE: &str = concat!(
    "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><meta name=\"robots\" content=\"noindex\"><title>Not found</title><style>",
    "body{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:15vh auto;padding:0 1rem;color:#1f2933;background:#f8fafc}h1{font-size:1.5rem}",
    "</style></head><body><h1>Not found</h1><p>There is no prototype at this address. Check the link you were sent.</p></body></html>\n"
);

/// Shared with `export`, so that a static host answers alike.
pub const GONE_PAGE: &str = concat!(
    "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><meta name=\"robots\" content=\"noindex\"><title>Prototype expired</title><style>",
    "body{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:15vh auto;padding:0 1rem;color:#1f2933;background:#f8fafc}h1{font-size:1.5rem}",
    "</style></head><body><h1>This prototype has expired</h1><p>This prototype expired on {date}. Ask us if you would like it back.</p></body></html>\n"
);

/// Shared with `export`, so that a static host answers alike.
pub const FRONT_PAGE: &str = concat!(
    "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><meta name=\"robots\" content=\"noindex\"><title>protoforge</title><style>",
    "body{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:15vh auto;padding:0 1rem;color:#1f2933;background:#f8fafc}h1{font-size:1.5rem}",
    "</style></head><body><h1>protoforge</h1><p>Prototypes live at their own addresses.</p>{sites}</body></html>\n"
);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hosts_are_normalized() {
        assert_eq!(normalize_host("ABC-aaaaaaaa.LocalHost:8080"), "abc-aaaaaaaa.localhost");
        assert_eq!(normalize_host("example.com."), "example.com");
        assert_eq!(normalize_host("[::1]:8080"), "[::1]");
        assert_eq!(normalize_host("127.0.0.1:80"), "127.0.0.1");
    }

    #[test]
    fn routes() {
        let r = |host: &str, path: &str| route("localhost", &normalize_host(host), path);
        assert_eq!(r("localhost:8080", "/"), Ok(Route::Front));
        assert_eq!(r("127.0.0.1:8080", "/healthz"), Ok(Route::Health));
        assert_eq!(
            r("Shop-aaaaaaaa.LOCALHOST.:8080", "/styles.css"),
            Ok(Route::Site {
                id: "shop-aaaaaaaa".into(),
                path: "styles.css".into(),
                mount: String::new()
            })
        );
        assert_eq!(
            r("localhost", "/prototypes/shop-aaaaaaaa/a/b.png"),
            Ok(Route::Site {
                id: "shop-aaaaaaaa".into(),
                path: "a/b.png".into(),
                mount: "/prototypes/shop-aaaaaaaa".into()
            })
        );
        assert_eq!(r("evil.com", "/"), Ok(Route::NotFound));
        assert_eq!(r("a.b.localhost", "/"), Ok(Route::NotFound));
        assert_eq!(r("localhost", "/prototypes/../etc"), Ok(Route::NotFound));
    }

    #[test]
    fn paths() {
        assert_eq!(clean_path("/"), Ok(String::new()));
        assert_eq!(clean_path("/a/b/"), Ok("a/b/".into()));
        assert_eq!(clean_path("/a//b"), Ok("a/b".into()));
        assert_eq!(clean_path("/caf%C3%A9.png"), Ok("café.png".into()));
        for bad in [
            "/../x",
            "/a/../../x",
            "/%2e%2e/x",
            "/a%2fb",
            "/a%5cb",
            "/a\\b",
            "/%00",
            "/a%2F..%2Fb",
            "/%ff",
        ] {
            assert!(clean_path(bad).is_err(), "{bad}");
        }
        assert_eq!(clean_path("/.git/config"), Err(StatusCode::NOT_FOUND));
        assert_eq!(clean_path("/.env"), Err(StatusCode::NOT_FOUND));
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), RangeResult::Single(0, 9));
        assert_eq!(parse_range("bytes=90-", 100), RangeResult::Single(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), RangeResult::Single(90, 99));
        assert_eq!(parse_range("bytes=-200", 100), RangeResult::Single(0, 99));
        assert_eq!(parse_range("bytes=50-500", 100), RangeResult::Single(50, 99));
        assert_eq!(parse_range("bytes=100-", 100), RangeResult::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), RangeResult::Ignore);
        assert_eq!(parse_range("items=0-1", 100), RangeResult::Ignore);
        assert_eq!(parse_range("bytes=9-1", 100), RangeResult::Ignore);
    }

    #[test]
    fn encodings() {
        assert!(accepts("gzip, deflate, br", "br"));
        assert!(!accepts("gzip;q=0, br", "gzip"));
        assert!(accepts("*", "gzip"));
        assert!(!accepts("identity", "gzip"));
    }

    proptest! {
        #[test]
        fn a_clean_path_never_escapes(raw in "/[a-zA-Z0-9%./\\\\-]{0,40}") {
            if let Ok(p) = clean_path(&raw) {
                prop_assert!(!p.split('/').any(|s| s == ".." || s == "." || s.starts_with('.')));
                prop_assert!(!p.contains('\\') && !p.contains('\0'));
                prop_assert!(!p.starts_with('/'));
            }
        }
    }
}

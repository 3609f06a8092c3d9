//! The builder: takes pending submissions one at a time, oldest first, and
//! turns each into a published site or a failure record.
//!
//! Invariants:
//! - "pending" is read off the branch: a submission is pending exactly when
//!   no site and no failure record there carries its hash, so a builder that
//!   was killed simply redoes the job it was on, and nothing else;
//! - one builder per repo (an OS file lock) and one job at a time;
//! - a job ends as one commit on the branch (site or failure record), made
//!   by compare-and-swap; if the branch moved, the job is re-checked and the
//!   commit redone on the new tip;
//! - an invalid file is moved to `inbox/rejected/`, never deleted.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{self, Config, ConfigError};
use crate::finalize::{self, Budget, ColorPair, Direction, PageOptions, SiteOptions};
use crate::inbox::{self, Inbox, InboxError, Job};
use crate::publish::{Housekeeping, Identity, PublishError, Snapshot, Store, TreeEdit};
use crate::stages::{self, StageRecord};
use crate::submission::{is_project_id, is_sha256};
use crate::templates::{Layouts, TemplateError};

/// Format version of `metadata.json` and of failure records.
pub const METADATA_FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    #[error("{path} is not a protoforge site repo (no {name}); run `protoforge init {path}` first", name = config::FILE_NAME)]
    NotASiteRepo { path: PathBuf },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Inbox(#[from] InboxError),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("finalize: {0}")]
    Finalize(#[from] finalize::FinalizeError),
    #[error(
        "another builder is already running on {path} (it holds {lock}); stop it, or wait for it to finish"
    )]
    Locked { path: PathBuf, lock: PathBuf },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "the branch kept moving under us ({tries} tries); is another builder writing to it without the lock?"
    )]
    Contended { tries: u32 },
    #[error("{0}")]
    Watch(String),
    #[error(
        "the layouts cannot render a sample site, so every job would fail; fix them (`protoforge check` lists the problems):\n{0}"
    )]
    Layouts(String),
    #[error("the AI stages cannot start: {0}")]
    Ai(#[from] stages::ai::AiError),
}

/// An opened site repo: its config, inbox, layouts and branch.
pub struct Workspace {
    pub root: PathBuf,
    pub config: Config,
    pub inbox: Inbox,
    pub layouts: Layouts,
    pub store: Store,
    /// What the builder is doing, for whoever watches (the webhook).
    pub board: Arc<Board>,
    /// The AI generator, set up on first use (see [`Workspace::ai`]).
    ai: std::sync::OnceLock<Option<stages::ai::Ai>>,
}

/// Pickup delays kept for the quantiles in `/metrics`.
const PICKUPS_KEPT: usize = 10_000;

/// The job in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    /// Its inbox file name.
    pub file: String,
    pub stage: &'static str,
    pub percent: u8,
}

#[derive(Default)]
struct BoardState {
    current: Option<Current>,
    /// Inbox file names still to build, oldest first, as of the last scan.
    pending: Vec<String>,
    /// Files renamed into the inbox whole (by the webhook), and when: no
    /// need to wait for writes to settle, and the wait until the build
    /// starts is measured.
    whole: HashMap<String, Instant>,
    /// The latest pickup delays (arrival to start), at most [`PICKUPS_KEPT`].
    pickups: VecDeque<Duration>,
    wake: Option<Box<dyn Fn() + Send + Sync>>,
    /// Totals of the AI stages since start, by stage name.
    stages: std::collections::BTreeMap<&'static str, StageTotals>,
}

/// What the AI stages have cost since the process started, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTotals {
    pub runs: u64,
    pub used: u64,
    pub fallbacks: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub requests: u64,
    pub seconds: f64,
}

/// The builder's state, shared with the webhook in the same process: the
/// job in flight with its stage, the queue's order, and a way to wake the
/// builder at once when a submission arrives. Every change bumps a version
/// that watchers wait on.
pub struct Board {
    state: Mutex<BoardState>,
    version: tokio::sync::watch::Sender<u64>,
}

impl Default for Board {
    fn default() -> Self {
        Board { state: Mutex::default(), version: tokio::sync::watch::Sender::new(0) }
    }
}

impl Board {
    fn update(&self, f: impl FnOnce(&mut BoardState)) {
        f(&mut self.state.lock().expect("board lock is never poisoned"));
        self.version.send_modify(|v| *v += 1);
    }

    /// Wait for changes: the receiver sees a new version after each one.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.version.subscribe()
    }

    pub fn current(&self) -> Option<Current> {
        self.state.lock().expect("board lock is never poisoned").current.clone()
    }

    /// 1-based place of `file` in the queue, if the last scan saw it.
    pub fn position(&self, file: &str) -> Option<usize> {
        let state = self.state.lock().expect("board lock is never poisoned");
        state.pending.iter().position(|f| f == file).map(|i| i + 1)
    }

    /// Jobs waiting, as of the last scan.
    pub fn queued(&self) -> usize {
        self.state.lock().expect("board lock is never poisoned").pending.len()
    }

    /// The stage the job in flight has reached.
    pub fn stage(&self, stage: &'static str, percent: u8) {
        self.update(|s| {
            if let Some(c) = &mut s.current {
                c.stage = stage;
                c.percent = percent;
            }
        });
    }

    fn start(&self, file: String) {
        self.update(|s| {
            if let Some(at) = s.whole.get(&file) {
                if s.pickups.len() == PICKUPS_KEPT {
                    s.pickups.pop_front();
                }
                s.pickups.push_back(at.elapsed());
            }
            s.pending.retain(|f| *f != file);
            s.current = Some(Current { file, stage: "queued", percent: 0 });
        });
    }

    fn finish(&self) {
        self.update(|s| s.current = None);
    }

    fn set_pending(&self, pending: Vec<String>) {
        let unchanged = self.state.lock().expect("board lock is never poisoned").pending == pending;
        if !unchanged {
            self.update(|s| s.pending = pending);
        }
    }

    /// A submission was renamed into the inbox whole: build it without
    /// waiting for writes to settle, and wake the builder now.
    pub fn arrived(&self, file: String) {
        let state = &mut self.state.lock().expect("board lock is never poisoned");
        state.whole.insert(file, Instant::now());
        if let Some(wake) = &state.wake {
            wake();
        }
    }

    fn is_whole(&self, file: &str) -> bool {
        self.state.lock().expect("board lock is never poisoned").whole.contains_key(file)
    }

    /// Add a job's AI stage records to the totals.
    pub fn record_stages(&self, records: &[StageRecord]) {
        self.update(|s| {
            for r in records.iter().filter(|r| stages::PROMPT_STAGES.contains(&r.name)) {
                let t = s.stages.entry(r.name).or_default();
                t.runs += 1;
                match r.outcome {
                    stages::Outcome::Ok => t.used += 1,
                    _ => t.fallbacks += 1,
                }
                t.tokens_in += r.tokens_in;
                t.tokens_out += r.tokens_out;
                t.requests += u64::from(r.attempts);
                t.seconds += r.duration_ms / 1000.0;
            }
        });
    }

    /// The AI stages' totals since start, by stage.
    pub fn stage_totals(&self) -> Vec<(&'static str, StageTotals)> {
        let state = self.state.lock().expect("board lock is never poisoned");
        state.stages.iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// Quantiles (0 to 1) of the latest pickup delays, with their count.
    pub fn pickup_quantiles(&self, qs: &[f64]) -> (usize, Vec<Duration>) {
        let mut all: Vec<Duration> = self
            .state
            .lock()
            .expect("board lock is never poisoned")
            .pickups
            .iter()
            .copied()
            .collect();
        all.sort();
        let at = |q: f64| {
            let i = ((all.len() as f64 * q).ceil() as usize).clamp(1, all.len().max(1)) - 1;
            all.get(i).copied().unwrap_or_default()
        };
        (all.len(), qs.iter().map(|q| at(*q)).collect())
    }

    fn forget(&self, file: &str) {
        self.state.lock().expect("board lock is never poisoned").whole.remove(file);
    }

    fn set_waker(&self, wake: Option<Box<dyn Fn() + Send + Sync>>) {
        self.state.lock().expect("board lock is never poisoned").wake = wake;
    }
}

impl Workspace {
    /// Open the site repo at `root`, loading `protoforge.yaml` (or `config`
    /// if given) and the layouts.
    pub fn open(root: &Path, config_path: Option<&Path>) -> Result<Workspace, BuildError> {
        let config_file =
            config_path.map(Path::to_path_buf).unwrap_or_else(|| root.join(config::FILE_NAME));
        if config_path.is_none() && !config_file.exists() && !root.join(".git").exists() {
            return Err(BuildError::NotASiteRepo { path: root.into() });
        }
        let config = Config::load(&config_file)?;
        let inbox = Inbox::new(
            root.join(&config.inbox_dir),
            config.limits.clone(),
            &config.project_id_salt,
        );
        let layouts = Layouts::load(&root.join(&config.layouts_dir))?;
        let identity =
            |i: &config::Identity| Identity { name: i.name.clone(), email: i.email.clone() };
        let store = Store::open(
            root,
            &config.branch,
            identity(&config.author),
            identity(&config.committer),
        )?;
        Ok(Workspace {
            root: root.into(),
            config,
            inbox,
            layouts,
            store,
            board: Arc::default(),
            ai: std::sync::OnceLock::new(),
        })
    }

    /// The AI generator, or `None` in template mode. Set up on first use, so that commands
    /// which build nothing (serve, prune) never need a model's API key.
    pub fn ai(&self) -> Result<Option<&stages::ai::Ai>, BuildError> {
        if let Some(ai) = self.ai.get() {
            return Ok(ai.as_ref());
        }
        let ai = stages::ai::Ai::from_config(
            &self.config.llm,
            &self.root.join(&self.config.prompts_dir),
        )?;
        Ok(self.ai.get_or_init(|| ai).as_ref())
    }

    /// Background packing of this repo's objects, as configured.
    pub fn housekeeping(&self) -> Housekeeping {
        Housekeeping::new(&self.root, self.config.builder.gc_auto)
    }

    /// Take the per-repo builder lock; held until the returned file drops.
    pub fn lock(&self) -> Result<File, BuildError> {
        // Inside .git, so the lock never shows up as a file to commit.
        let git_dir = self.root.join(".git");
        let lock = if git_dir.is_dir() { git_dir } else { self.root.clone() }
            .join("protoforge-builder.lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock)
            .map_err(|source| BuildError::Io { path: lock.clone(), source })?;
        match file.try_lock() {
            Ok(()) => {
                self.clear_stale_ref_locks();
                Ok(file)
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                Err(BuildError::Locked { path: self.root.clone(), lock })
            }
            Err(std::fs::TryLockError::Error(source)) => Err(BuildError::Io { path: lock, source }),
        }
    }
}

impl Workspace {
    /// A builder killed while gix held a ref's `.lock` file (the branch, a
    /// remote's tracking ref under `refs/protoforge/`, or `packed-refs` while
    /// deleting a packed tracking ref) leaves it behind, and every later
    /// update of that ref would fail. We hold the builder lock, so no other
    /// builder can own one.
    fn clear_stale_ref_locks(&self) {
        let refs = self.root.join(".git/refs");
        let mut locks = vec![
            refs.join("heads").join(format!("{}.lock", self.config.branch)),
            self.root.join(".git/packed-refs.lock"),
        ];
        locks.extend(
            walkdir::WalkDir::new(refs.join("protoforge"))
                .into_iter()
                .filter_map(Result::ok)
                .filter(|e| {
                    e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "lock")
                })
                .map(walkdir::DirEntry::into_path),
        );
        clear_if_stale(locks);
    }
}

/// Remove those of `locks` left by a dead process, watching them together. A
/// git command of the user's holds a ref lock for milliseconds: a lock older
/// than [`STALE_REF_LOCK_AGE`], or one that sits unchanged while we watch it
/// for [`STALE_REF_LOCK_WATCH`], is not a live one's.
fn clear_if_stale(locks: Vec<PathBuf>) {
    let mut watched: Vec<(PathBuf, std::fs::Metadata)> = locks
        .into_iter()
        .filter_map(|lock| std::fs::metadata(&lock).ok().map(|first| (lock, first)))
        .collect();
    let start = Instant::now();
    while !watched.is_empty() {
        watched.retain(|(lock, first)| {
            let Ok(meta) = std::fs::metadata(lock) else { return false };
            if meta.len() != first.len() || meta.modified().ok() != first.modified().ok() {
                // Someone is writing it: a live git command. Let it finish.
                return false;
            }
            let age = meta.modified().ok().and_then(|m| m.elapsed().ok()).unwrap_or_default();
            if age <= STALE_REF_LOCK_AGE && start.elapsed() <= STALE_REF_LOCK_WATCH {
                return true;
            }
            match std::fs::remove_file(lock) {
                Ok(()) => tracing::warn!(
                    lock = %lock.display(),
                    "removed a stale ref lock left by a killed builder"
                ),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(lock = %lock.display(), "cannot remove a stale ref lock: {e}")
                }
            }
            false
        });
        if !watched.is_empty() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A ref lock this old is never a live git command's.
const STALE_REF_LOCK_AGE: Duration = Duration::from_secs(10);
/// How long a young ref lock must sit unchanged before it counts as stale.
const STALE_REF_LOCK_WATCH: Duration = Duration::from_secs(2);

/// Where a submission stands, as the branch tells it.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Pending,
    Published { project_id: String },
    Failed(FailureRecord),
}

/// A failed job, as recorded on the branch in `failed/<sha256>.json`. No
/// personal data: ids, the stage and the reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureRecord {
    pub format: u32,
    pub project_id: String,
    pub submission_sha256: String,
    pub failed_at: String,
    pub stage: String,
    pub attempts: u32,
    pub reason: String,
}

pub fn site_dir(project_id: &str) -> String {
    format!("sites/{project_id}")
}

pub fn failure_path(sha256: &str) -> String {
    format!("failed/{sha256}.json")
}

/// Where the branch records that a submission was built:
/// `submissions/<2 hex>/<62 hex>`, holding the project id. Sharded, so a
/// commit rewrites a small tree, not one that grows with every site; and
/// kept when a site is pruned, so an expired submission is not rebuilt.
pub fn index_path(sha256: &str) -> String {
    let (shard, rest) = sha256.split_at(2.min(sha256.len()));
    format!("submissions/{shard}/{rest}")
}

/// The state of a submission in one snapshot of the branch, by its hash
/// alone: a change of salt or of the slug rules cannot make a built
/// submission pending again.
pub fn state_of(snapshot: &Snapshot, sha256: &str) -> Result<State, BuildError> {
    if let Some(bytes) = snapshot.read(&failure_path(sha256))?
        && let Ok(record) = serde_json::from_slice::<FailureRecord>(&bytes)
    {
        return Ok(State::Failed(record));
    }
    if let Some(bytes) = snapshot.read(&index_path(sha256))? {
        let project_id = String::from_utf8_lossy(&bytes).trim().to_string();
        return Ok(State::Published { project_id });
    }
    Ok(State::Pending)
}

/// The result of reading the inbox.
#[derive(Debug, Default)]
pub struct Scan {
    /// Valid submissions with their state, oldest first.
    pub jobs: Vec<(Job, State)>,
    /// Files that were invalid: (new path in rejected/, error text).
    pub rejected: Vec<(PathBuf, String)>,
    /// Files left for the next scan: still being written, or unreadable.
    pub skipped: usize,
}

impl Scan {
    pub fn pending(&self) -> impl Iterator<Item = &Job> {
        self.jobs.iter().filter(|(_, s)| *s == State::Pending).map(|(j, _)| j)
    }
}

/// Read every inbox file, move invalid ones aside (when `reject` is set)
/// and look each valid one up on the branch.
pub fn scan(ws: &Workspace, reject: bool) -> Result<Scan, BuildError> {
    Scanner::default().scan(ws, reject)
}

/// Remembers what earlier scans learned, so that watching a large inbox
/// does not re-read every file and re-ask the branch after every job: a
/// file is parsed (and its attachments resolved) again only when its size
/// or modification time changed, a published submission stays published,
/// and a pending one stays pending while the branch has only moved by this
/// builder's own commits. A queue of n jobs costs O(n) git lookups, not
/// O(n²).
#[derive(Default)]
pub struct Scanner {
    parsed: HashMap<PathBuf, Cached>,
    /// Scans so far: entries not seen in the latest are dropped.
    generation: u64,
    published: HashMap<String, State>,
    /// Submissions known to be pending, or failed, at the commit `pending_at`.
    pending: HashSet<String>,
    failed: HashMap<String, State>,
    pending_at: Option<gix::ObjectId>,
    /// Files modified more recently than this are left for the next scan:
    /// a file written in place may still be half written.
    pub min_age: Option<Duration>,
    /// Return only the oldest pending job (what a watcher takes next),
    /// without copying every other one.
    pub next_only: bool,
}

/// One inbox file as last read.
struct Cached {
    mtime: Option<SystemTime>,
    len: u64,
    job: Job,
    /// Its attachments were resolved (done once, for pending jobs).
    resolved: bool,
    /// Its commit time was looked up (done once, for files without `submitted_at`).
    dated: bool,
    seen: u64,
}

impl Scanner {
    /// A job was processed: the branch is at `head` now. If that is one
    /// commit on top of what the last scan saw (this job's), or no commit,
    /// the other pending submissions are still pending; otherwise someone
    /// else wrote to the branch and the next scan asks again.
    pub fn processed(&mut self, ws: &Workspace, sha256: &str, outcome: &JobOutcome) {
        self.pending.remove(sha256);
        self.failed.remove(sha256);
        if let JobOutcome::Published { project_id, .. }
        | JobOutcome::Superseded { project_id }
        | JobOutcome::AlreadyDone { project_id } = outcome
        {
            let state = State::Published { project_id: project_id.clone() };
            self.published.insert(sha256.to_string(), state);
        }
        if matches!(outcome, JobOutcome::Deferred { .. }) {
            self.pending_at = None;
            return;
        }
        let ours = match (ws.store.head(), self.pending_at) {
            (Ok(Some(now)), Some(before)) if now == before => Some(now),
            (Ok(Some(now)), Some(before)) => {
                ws.store.parent_of(now).ok().flatten().filter(|p| *p == before).map(|_| now)
            }
            _ => None,
        };
        self.pending_at = ours;
    }

    pub fn scan(&mut self, ws: &Workspace, reject: bool) -> Result<Scan, BuildError> {
        let snapshot = ws.store.snapshot()?;
        if snapshot.commit_id() != self.pending_at {
            // The branch moved under us: what was pending may not be, and
            // a failure may have been retried.
            self.pending.clear();
            self.failed.clear();
        }
        let mut out = Scan::default();
        let mut queue = Vec::new();
        let files = ws.inbox.list_with_metadata()?;
        self.generation += 1;
        let generation = self.generation;
        let now = SystemTime::now();
        for (path, meta) in &files {
            let (mtime, len) = (meta.modified().ok(), meta.len());
            if let (Some(min_age), Some(m)) = (self.min_age, mtime)
                && now.duration_since(m).unwrap_or_default() < min_age
                && !ws.board.is_whole(&file_name(path))
            {
                out.skipped += 1;
                continue;
            }
            let fresh = match self.parsed.get_mut(path) {
                Some(c) if c.mtime == mtime && c.len == len => {
                    c.seen = generation;
                    true
                }
                _ => false,
            };
            if !fresh {
                match ws.inbox.load_unchecked(path) {
                    Ok(job) => {
                        let c = Cached {
                            mtime,
                            len,
                            job,
                            resolved: false,
                            dated: false,
                            seen: generation,
                        };
                        self.parsed.insert(path.clone(), c);
                    }
                    Err(InboxError::Invalid(e)) => {
                        out.rejected.push(reject_file(ws, path, &e.to_string(), reject)?);
                        continue;
                    }
                    Err(InboxError::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound =>
                    {
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(file = %path.display(), "{e}; skipped");
                        out.skipped += 1;
                        continue;
                    }
                }
            }
            let cached = &self.parsed[path];
            let (sha, resolved) = (cached.job.parsed.sha256.clone(), cached.resolved);
            let state = match self.published.get(&sha) {
                Some(state) => state.clone(),
                None if self.pending.contains(&sha) => State::Pending,
                None if self.failed.contains_key(&sha) => self.failed[&sha].clone(),
                None => {
                    let state = state_of(&snapshot, &sha)?;
                    match state {
                        State::Published { .. } => {
                            self.published.insert(sha.clone(), state.clone());
                        }
                        State::Pending => {
                            self.pending.insert(sha.clone());
                        }
                        State::Failed(_) => {
                            self.failed.insert(sha.clone(), state.clone());
                        }
                    }
                    state
                }
            };
            if self.next_only && state != State::Pending {
                continue;
            }
            // Attachments matter only for what is still to be built: a
            // published submission whose file went away stays published.
            if state == State::Pending && !resolved {
                let entry = self.parsed.get_mut(path).expect("inserted above");
                match ws.inbox.attachments(&entry.job) {
                    Ok(found) => {
                        entry.job.attachments = found;
                        entry.resolved = true;
                    }
                    Err(InboxError::Invalid(e)) => {
                        self.parsed.remove(path);
                        out.rejected.push(reject_file(ws, path, &e.to_string(), reject)?);
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            let job = &self.parsed[path].job;
            if self.next_only {
                // Only the order is needed for all; the job for the first.
                queue.push((job.submitted_at, path.clone()));
            } else {
                out.jobs.push((job.clone(), state));
            }
        }
        // Forget files that are gone (or were left for the next scan).
        self.parsed.retain(|_, c| c.seen == generation);
        // A file without `submitted_at` is as old as the commit that brought it, not as its
        // checkout (in CI every file has the same modification time).
        if self.date_by_commits(ws) {
            for (job, _) in &mut out.jobs {
                if let Some(c) = self.parsed.get(&job.path) {
                    job.submitted_at = c.job.submitted_at;
                }
            }
            for (at, path) in &mut queue {
                if let Some(c) = self.parsed.get(path) {
                    *at = c.job.submitted_at;
                }
            }
        }
        // Oldest first; the file name breaks ties so the order is total.
        out.jobs.sort_by(|(a, _), (b, _)| {
            a.submitted_at.cmp(&b.submitted_at).then_with(|| a.path.cmp(&b.path))
        });
        if self.next_only {
            queue.sort();
            if let Some((_, first)) = queue.first() {
                out.jobs.push((self.parsed[first].job.clone(), State::Pending));
            }
            ws.board.set_pending(queue.iter().map(|(_, p)| file_name(p)).collect());
            self.pending_at = snapshot.commit_id();
            return Ok(out);
        }
        ws.board.set_pending(out.pending().map(Job::file_name).collect());
        self.pending_at = snapshot.commit_id();
        Ok(out)
    }
}

impl Scanner {
    /// Give the files without `submitted_at` that are not dated yet their commit time (see
    /// [`inbox::committed_at`]); true if any was looked up.
    fn date_by_commits(&mut self, ws: &Workspace) -> bool {
        let undated: Vec<PathBuf> = self
            .parsed
            .iter()
            .filter(|(_, c)| !c.dated && c.job.parsed.submission.submitted_at.is_none())
            .map(|(p, _)| p.clone())
            .collect();
        if undated.is_empty() {
            return false;
        }
        let wanted: Vec<(String, Vec<u8>)> = undated
            .iter()
            .filter_map(|path| Some((file_name(path), std::fs::read(path).ok()?)))
            .collect();
        let times = inbox::committed_at(&ws.root, &ws.config.inbox_dir, &wanted);
        for path in undated {
            if let Some(c) = self.parsed.get_mut(&path) {
                c.dated = true;
                if let Some(at) = times.get(&file_name(&path)) {
                    c.job.submitted_at = *at;
                }
            }
        }
        true
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// [`process`], shown on the board while it runs.
fn process_shown(ws: &Workspace, job: &Job) -> Result<JobOutcome, BuildError> {
    let file = job.file_name();
    ws.board.start(file.clone());
    // Cancelled (moved to inbox/cancelled/) since the scan that found it.
    let outcome = if job.path.exists() {
        process(ws, job)
    } else {
        Ok(JobOutcome::Withdrawn { project_id: job.parsed.project_id.clone() })
    };
    ws.board.forget(&file);
    ws.board.finish();
    outcome
}

fn reject_file(
    ws: &Workspace,
    path: &Path,
    error: &str,
    reject: bool,
) -> Result<(PathBuf, String), BuildError> {
    let moved = if reject { ws.inbox.reject(path, error)? } else { path.to_path_buf() };
    if reject {
        tracing::warn!(file = %moved.display(), "rejected: {error}");
    }
    Ok((moved, error.to_string()))
}

/// How one job ended.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    Published {
        project_id: String,
        commit: String,
        files: usize,
        bytes: u64,
    },
    /// A newer version with the same client id is already published; this
    /// older one is recorded as built without replacing it.
    Superseded {
        project_id: String,
    },
    /// Someone else published or failed it while we worked.
    AlreadyDone {
        project_id: String,
    },
    /// Its file left the inbox before the build began (a cancelled job).
    Withdrawn {
        project_id: String,
    },
    /// The job cannot be built: a failure record is on the branch.
    Failed {
        project_id: String,
        stage: String,
        reason: String,
    },
    /// Publishing kept failing for a reason that may pass (a held lock, a
    /// busy disk); nothing was recorded and the job stays pending.
    Deferred {
        project_id: String,
        reason: String,
    },
}

/// One row of the summary.
#[derive(Debug, Clone)]
pub struct JobReport {
    pub file: String,
    pub outcome: JobOutcome,
    pub duration: Duration,
}

/// A site ready to publish.
pub struct SiteBuild {
    pub files: Vec<(String, Vec<u8>)>,
    pub layout: String,
    pub kind: &'static str,
    /// `template`, `ai` or `mixed`.
    pub mode: &'static str,
    pub expires_at: DateTime<Utc>,
    pub warnings: Vec<String>,
}

/// Why a site could not be generated; such a failure is deterministic.
#[derive(Debug)]
pub struct GenerateError {
    pub stage: &'static str,
    pub reason: String,
}

/// Analyze, render and finalize a job into the files of its site.
pub fn generate(ws: &Workspace, job: &Job, now: DateTime<Utc>) -> Result<SiteBuild, GenerateError> {
    let mut records: Vec<StageRecord> = Vec::new();
    let lang = job.submission().language_or(&ws.config.generator.default_language).to_string();
    let t = ws.layouts.strings(&lang);
    let ai = ws.ai().map_err(|e| GenerateError { stage: "llm", reason: e.to_string() })?;
    ws.board.stage("analyze", 5);
    let analysis = stages::timed(&mut records, "analyze", || {
        Ok::<_, ()>(stages::analyze(
            job,
            &t,
            &ws.config.generator.default_language,
            ws.config.generator.show_contact_details,
        ))
    })
    .expect("the rule-based analysis cannot fail");
    let expires_at = now + chrono::Duration::days(i64::from(ws.config.expiry_days));
    let render_error = |e: TemplateError| GenerateError { stage: "render", reason: e.to_string() };
    let (made, analysis) = match ai {
        Some(ai) => {
            let board = &ws.board;
            let out = ai
                .generate(stages::ai::Input {
                    job,
                    analysis,
                    layouts: &ws.layouts,
                    project_id: &job.parsed.project_id,
                    expires_on: expires_at.date_naive(),
                    show_contact: ws.config.generator.show_contact_details,
                    progress: &|stage, percent| board.stage(stage, percent),
                })
                .map_err(render_error)?;
            ws.board.record_stages(&out.records);
            records.extend(out.records);
            let made = Made {
                index_html: out.index_html,
                styles_css: out.styles_css,
                script_js: out.script_js,
                layout: out.layout,
                mode: out.mode,
                providers: out.providers,
                prompt_versions: ai
                    .prompt_sha256()
                    .iter()
                    .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                    .collect(),
                sections: out.spec.sections.iter().map(|s| s.id.clone()).collect(),
                warnings: out.warnings,
            };
            (made, out.analysis)
        }
        None => {
            ws.board.stage("render", 35);
            let rendered = stages::timed(&mut records, "render", || {
                ws.layouts.render(&analysis, &job.parsed.project_id, expires_at.date_naive())
            })
            .map_err(render_error)?;
            let made = Made {
                index_html: rendered.index_html,
                styles_css: rendered.styles_css,
                script_js: rendered.script_js,
                layout: rendered.layout,
                mode: "template",
                providers: Vec::new(),
                prompt_versions: serde_json::Map::new(),
                sections: analysis.sections.iter().map(|s| s.kind.as_str().to_owned()).collect(),
                warnings: Vec::new(),
            };
            (made, analysis)
        }
    };
    let mut warnings = analysis.warnings.clone();
    warnings.extend(made.warnings.iter().cloned());
    let banner = t.get("banner").replace("{date}", &expires_at.format("%Y-%m-%d").to_string());
    ws.board.stage("finalize", 90);
    let mut files: Vec<(String, Vec<u8>)> = vec![
        ("index.html".into(), made.index_html.into_bytes()),
        ("styles.css".into(), made.styles_css.into_bytes()),
        ("script.js".into(), made.script_js),
    ];
    files.extend(analysis.assets.iter().cloned());
    let p = &analysis.palette;
    let pair = |name, fg: &str, bg: &str| ColorPair {
        name,
        foreground: fg.to_owned(),
        background: bg.to_owned(),
    };
    let fc = &ws.config.finalize;
    let opts = SiteOptions {
        page: PageOptions {
            lang: &analysis.lang,
            dir: if analysis.dir == "rtl" { Direction::Rtl } else { Direction::Ltr },
            banner: &banner,
            title: &analysis.name,
            dismiss: t.get("banner_dismiss"),
            form_note: t.get("form_prototype_note"),
            ..PageOptions::default()
        },
        max_image_px: fc.max_image_px,
        budget: Budget {
            bytes: fc.budget_bytes,
            with_images_bytes: fc.budget_with_images_bytes,
            hard_cap_bytes: fc.hard_cap_bytes,
        },
        descriptions: analysis
            .logo
            .iter()
            .chain(&analysis.images)
            .filter(|i| !i.alt.is_empty())
            .map(|i| (i.src.clone(), i.alt.clone()))
            .collect(),
        palette: vec![
            pair("text on background", &p.text, &p.background),
            pair("text on surface", &p.text, &p.surface),
            pair("muted text on background", &p.muted, &p.background),
            pair("text on primary", &p.on_primary, &p.primary),
            pair("text on accent", &p.on_accent, &p.accent),
        ],
    };
    let site = stages::timed(&mut records, "finalize", || finalize::finalize_site(files, &opts))
        .map_err(|e| GenerateError { stage: "finalize", reason: e.to_string() })?;
    warnings.extend(site.warnings);
    let mut files = site.files;
    let (provider, model) = match made.providers.first() {
        Some(p) => match p.rsplit_once(" (") {
            Some((name, model)) => {
                (Some(name.to_owned()), Some(model.trim_end_matches(')').to_owned()))
            }
            None => (Some(p.clone()), None),
        },
        None => (None, None),
    };
    let metadata = Metadata {
        format: METADATA_FORMAT,
        project_id: &job.parsed.project_id,
        submission_sha256: &job.parsed.sha256,
        previous_submissions: Vec::new(),
        submitted_at: rfc3339(job.submitted_at),
        created_at: rfc3339(now),
        expires_at: rfc3339(expires_at),
        generator: Generator {
            mode: made.mode,
            provider,
            model,
            providers: made.providers.clone(),
            prompt_versions: made.prompt_versions,
            layout: &made.layout,
            protoforge: env!("CARGO_PKG_VERSION"),
        },
        site: SiteFacts {
            kind: analysis.kind.as_str(),
            language: &analysis.lang,
            dir: analysis.dir,
            palette_source: analysis.palette.source,
            sections: made.sections,
        },
        stages: records,
        files: files
            .iter()
            .map(|(p, b)| FileEntry { path: p.clone(), size: b.len() as u64 })
            .collect(),
        warnings: warnings.clone(),
        checks: site.checks,
    };
    let json = serde_json::to_vec_pretty(&metadata).expect("metadata serializes");
    files.push(("metadata.json".into(), json));
    Ok(SiteBuild {
        files,
        layout: made.layout,
        kind: analysis.kind.as_str(),
        mode: made.mode,
        expires_at,
        warnings,
    })
}

/// The three files of a site, from whichever generator, and how they were made.
struct Made {
    index_html: String,
    styles_css: String,
    script_js: Vec<u8>,
    layout: String,
    mode: &'static str,
    providers: Vec<String>,
    prompt_versions: serde_json::Map<String, serde_json::Value>,
    sections: Vec<String>,
    warnings: Vec<String>,
}

#[derive(Serialize)]
struct Metadata<'a> {
    format: u32,
    project_id: &'a str,
    submission_sha256: &'a str,
    previous_submissions: Vec<String>,
    submitted_at: String,
    created_at: String,
    expires_at: String,
    generator: Generator<'a>,
    site: SiteFacts<'a>,
    stages: Vec<StageRecord>,
    files: Vec<FileEntry>,
    warnings: Vec<String>,
    checks: finalize::Checks,
}

#[derive(Serialize)]
struct Generator<'a> {
    mode: &'static str,
    provider: Option<String>,
    model: Option<String>,
    /// Every provider whose output was used, as `name (model)`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    providers: Vec<String>,
    prompt_versions: serde_json::Map<String, serde_json::Value>,
    layout: &'a str,
    protoforge: &'static str,
}

#[derive(Serialize)]
struct SiteFacts<'a> {
    kind: &'static str,
    language: &'a str,
    dir: &'static str,
    palette_source: &'static str,
    sections: Vec<String>,
}

#[derive(Serialize)]
struct FileEntry {
    path: String,
    size: u64,
}

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// What a site's `metadata.json` says about the submissions it carries.
#[derive(Debug, Clone, Deserialize)]
struct SiteSubmissions {
    submission_sha256: String,
    #[serde(default)]
    previous_submissions: Vec<String>,
    #[serde(default)]
    submitted_at: Option<DateTime<Utc>>,
}

fn site_submissions(
    snapshot: &Snapshot,
    project_id: &str,
) -> Result<Option<SiteSubmissions>, BuildError> {
    let Some(bytes) = snapshot.read(&format!("{}/metadata.json", site_dir(project_id)))? else {
        return Ok(None);
    };
    Ok(serde_json::from_slice(&bytes).ok())
}

/// Record in the new `metadata.json` the hashes of the earlier versions the
/// site was built from (same client id), for the audit trail.
fn with_previous(files: &mut [(String, Vec<u8>)], site: Option<&SiteSubmissions>, sha256: &str) {
    let Some(site) = site else { return };
    let mut previous = site.previous_submissions.clone();
    previous.push(site.submission_sha256.clone());
    previous.retain(|h| h != sha256 && is_sha256(h));
    previous.sort();
    previous.dedup();
    if let Some((_, bytes)) = files.iter_mut().find(|(p, _)| p == "metadata.json")
        && let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(bytes)
    {
        value["previous_submissions"] = serde_json::json!(previous);
        *bytes = serde_json::to_vec_pretty(&value).expect("metadata serializes");
    }
}

/// With a client id, the site that id already has, even if the slug would
/// now come out differently (the company was renamed): one id, one site.
fn existing_site_for(snapshot: &Snapshot, project_id: &str) -> Result<Option<String>, BuildError> {
    let suffix = &project_id[project_id.len().saturating_sub(9)..];
    Ok(snapshot
        .list_dir("sites")?
        .into_iter()
        .find(|name| name.ends_with(suffix) && name != project_id))
}

const MAX_CAS_TRIES: u32 = 20;

/// Commit with compare-and-swap, re-checking the job on every new tip.
/// `edits` gives the message and the edits for a snapshot; `None` means
/// there is nothing (left) to do.
fn commit_job(
    ws: &Workspace,
    mut edits: impl FnMut(&Snapshot) -> Result<Option<(String, Vec<TreeEdit>)>, BuildError>,
) -> Result<Option<String>, BuildError> {
    for _ in 0..MAX_CAS_TRIES {
        let snapshot = ws.store.snapshot()?;
        let Some((message, edits)) = edits(&snapshot)? else { return Ok(None) };
        match ws.store.commit(snapshot.commit_id(), &message, &edits) {
            Ok(id) => return Ok(Some(id.to_string())),
            Err(PublishError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(BuildError::Contended { tries: MAX_CAS_TRIES })
}

/// The text of a panic, for a failure record.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Build and publish one job. A job that cannot be built gets a failure
/// record on the branch; one whose publishing keeps failing for a reason
/// that may pass is left pending ([`JobOutcome::Deferred`]).
pub fn process(ws: &Workspace, job: &Job) -> Result<JobOutcome, BuildError> {
    let mut job = job.clone();
    if job.submission().id.is_some()
        && let Some(existing) = existing_site_for(&ws.store.snapshot()?, &job.parsed.project_id)?
    {
        job.parsed.project_id = existing;
    }
    let pid = job.parsed.project_id.clone();
    let sha = job.parsed.sha256.clone();
    // A panic on some input must cost that job, not the builder and the
    // queue behind it.
    let generated =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| generate(ws, &job, Utc::now())))
            .unwrap_or_else(|payload| {
                Err(GenerateError {
                    stage: "generate",
                    reason: format!(
                        "internal error: {}; please report it",
                        panic_message(payload.as_ref())
                    ),
                })
            });
    let build = match generated {
        Ok(build) => build,
        // Generation is deterministic: trying again would fail the same way.
        Err(e) => return record_failure(ws, &job, e.stage, &e.reason, 1),
    };
    let bytes: u64 = build.files.iter().map(|(_, b)| b.len() as u64).sum();
    let file_count = build.files.len();
    let index =
        TreeEdit::PutFile { path: index_path(&sha), bytes: format!("{pid}\n").into_bytes() };
    ws.board.stage("publish", 90);
    let mut superseded = false;
    let max = ws.config.builder.max_attempts;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = commit_job(ws, |snapshot| {
            superseded = false;
            if state_of(snapshot, &sha)? != State::Pending {
                return Ok(None);
            }
            let site = site_submissions(snapshot, &pid)?;
            if let Some(newer) =
                site.as_ref().and_then(|s| s.submitted_at).filter(|at| *at > job.submitted_at)
            {
                superseded = true;
                let message = format!(
                    "Record superseded submission of {pid}\n\nThe site was built from a newer version ({}).\n\nPrototype-Id: {pid}\nSubmission-Sha256: {sha}\n",
                    rfc3339(newer)
                );
                return Ok(Some((message, vec![index.clone()])));
            }
            let mut files = build.files.clone();
            with_previous(&mut files, site.as_ref(), &sha);
            let message = site_message(&pid, &sha, &build, bytes);
            Ok(Some((
                message,
                vec![TreeEdit::PutDir { path: site_dir(&pid), files }, index.clone()],
            )))
        });
        match result {
            Ok(Some(_)) if superseded => return Ok(JobOutcome::Superseded { project_id: pid }),
            Ok(Some(commit)) => {
                return Ok(JobOutcome::Published {
                    project_id: pid,
                    commit,
                    files: file_count,
                    bytes,
                });
            }
            Ok(None) => return Ok(JobOutcome::AlreadyDone { project_id: pid }),
            Err(e) if attempt < max => {
                tracing::warn!(project_id = %pid, attempt, "publish failed, retrying: {e}");
                backoff(ws, attempt);
            }
            Err(e) => {
                tracing::error!(project_id = %pid, "publish failed {attempt} times, leaving the job pending: {e}");
                return Ok(JobOutcome::Deferred { project_id: pid, reason: e.to_string() });
            }
        }
    }
}

fn backoff(ws: &Workspace, attempt: u32) {
    let ms = ws.config.builder.retry_backoff_ms.saturating_mul(1 << (attempt - 1).min(10));
    std::thread::sleep(Duration::from_millis(ms));
}

fn record_failure(
    ws: &Workspace,
    job: &Job,
    stage: &str,
    reason: &str,
    attempts: u32,
) -> Result<JobOutcome, BuildError> {
    let pid = &job.parsed.project_id;
    let sha = &job.parsed.sha256;
    let record = FailureRecord {
        format: METADATA_FORMAT,
        project_id: pid.clone(),
        submission_sha256: sha.clone(),
        failed_at: rfc3339(Utc::now()),
        stage: stage.into(),
        attempts,
        reason: reason.into(),
    };
    let bytes = serde_json::to_vec_pretty(&record).expect("a failure record serializes");
    let message = format!(
        "Record failed prototype {pid}\n\nStage {stage}, after {attempts} attempt(s): {}\n\nPrototype-Id: {pid}\nSubmission-Sha256: {sha}\n",
        first_line(reason)
    );
    tracing::error!(project_id = %pid, stage, "job failed: {reason}");
    let committed = commit_job(ws, |snapshot| {
        if state_of(snapshot, sha)? != State::Pending {
            return Ok(None);
        }
        Ok(Some((
            message.clone(),
            vec![TreeEdit::PutFile { path: failure_path(sha), bytes: bytes.clone() }],
        )))
    })?;
    Ok(match committed {
        Some(_) => JobOutcome::Failed {
            project_id: pid.clone(),
            stage: stage.into(),
            reason: reason.into(),
        },
        None => JobOutcome::AlreadyDone { project_id: pid.clone() },
    })
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

fn site_message(pid: &str, sha: &str, build: &SiteBuild, bytes: u64) -> String {
    format!(
        "Add prototype {pid}\n\nA {} site from the {} generator (layout {}), {} files, {:.1} KiB{}.\n\nPrototype-Id: {pid}\nSubmission-Sha256: {sha}\nExpires-At: {}\n",
        build.kind,
        match build.mode {
            "ai" => "AI",
            "mixed" => "mixed AI and template",
            _ => "template",
        },
        build.layout,
        build.files.len(),
        bytes as f64 / 1024.0,
        if build.warnings.is_empty() {
            String::new()
        } else {
            format!(", {} warning(s)", build.warnings.len())
        },
        rfc3339(build.expires_at),
    )
}

/// Clear the failure record(s) matching `id` (a project id or a prefix of
/// at least 8 characters of the submission hash), so the job is pending
/// again. Returns the project ids cleared.
pub fn retry(ws: &Workspace, id: &str) -> Result<Vec<String>, BuildError> {
    let id = id.trim();
    let snapshot = ws.store.snapshot()?;
    let mut matches = Vec::new();
    for name in snapshot.list_dir("failed")? {
        let Some(sha) = name.strip_suffix(".json") else { continue };
        let Some(bytes) = snapshot.read(&format!("failed/{name}"))? else { continue };
        let Ok(record) = serde_json::from_slice::<FailureRecord>(&bytes) else { continue };
        if record.project_id == id || (id.len() >= 8 && sha.starts_with(id)) {
            matches.push((sha.to_string(), record.project_id));
        }
    }
    if matches.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = matches.iter().map(|(_, p)| p.clone()).collect();
    let message = format!(
        "Clear failure record of {}\n\nThe submission is pending again.\n\n{}",
        ids.join(", "),
        matches
            .iter()
            .map(|(s, p)| format!("Prototype-Id: {p}\nSubmission-Sha256: {s}\n"))
            .collect::<String>()
    );
    commit_job(ws, |_| {
        let edits = matches.iter().map(|(sha, _)| TreeEdit::Remove { path: failure_path(sha) });
        Ok(Some((message.clone(), edits.collect())))
    })?;
    Ok(ids)
}

/// Progress reporting for `build --once`: a bar on a terminal, log lines
/// otherwise.
pub trait Progress {
    fn start(&mut self, total: usize);
    fn job_started(&mut self, job: &Job);
    fn job_done(&mut self, report: &JobReport);
    fn finish(&mut self);
}

/// Checks before any job: a layout set that cannot render the sample site
/// would fail every job and fill the branch with failure records, so the
/// builder refuses to start instead.
pub fn preflight(ws: &Workspace) -> Result<(), BuildError> {
    if let Some(ai) = ws.ai()? {
        tracing::info!(providers = ?ai.chain().names(), "AI stages on");
    }
    let problems = ws.layouts.check(&stages::sample_analysis(&ws.layouts));
    if !problems.is_empty() {
        return Err(BuildError::Layouts(problems.join("\n")));
    }
    if ws.config.project_id_salt.is_empty() {
        tracing::warn!(
            "project_id_salt is empty: the project id of a submission with a client id can be guessed from that id; set a random salt in protoforge.yaml"
        );
    }
    Ok(())
}

/// One of `count` builders that share an inbox: each takes the submissions whose hash falls
/// in its shard, so that they never build the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 1-based, as `--shard 2/3` reads.
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// Parse `I/N` (1 ≤ I ≤ N ≤ 1024).
    pub fn parse(text: &str) -> Result<Shard, String> {
        let bad =
            || format!("`{text}` is not a shard; write it as I/N, e.g. 2/3 (1 ≤ I ≤ N ≤ 1024)");
        let (i, n) = text.trim().split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if index == 0 || index > count || count > 1024 {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// Whether the submission with this SHA-256 (hex) is this shard's: its first 32 bits,
    /// modulo the number of shards. Uniform, and stable whatever else is in the inbox.
    pub fn takes(&self, sha256: &str) -> bool {
        let head = sha256.get(..8).and_then(|h| u32::from_str_radix(h, 16).ok()).unwrap_or(0);
        head % self.count == self.index - 1
    }
}

/// Process every pending job of one scan, oldest first.
pub fn run_once(
    ws: &Workspace,
    progress: &mut dyn Progress,
) -> Result<(Scan, Vec<JobReport>), BuildError> {
    run_shard(ws, progress, None)
}

/// [`run_once`] for one shard of the inbox (None: all of it).
pub fn run_shard(
    ws: &Workspace,
    progress: &mut dyn Progress,
    shard: Option<Shard>,
) -> Result<(Scan, Vec<JobReport>), BuildError> {
    let _lock = ws.lock()?;
    preflight(ws)?;
    let scan = scan(ws, true)?;
    let pending: Vec<&Job> =
        scan.pending().filter(|j| shard.is_none_or(|s| s.takes(&j.parsed.sha256))).collect();
    progress.start(pending.len());
    let mut reports = Vec::new();
    let mut housekeeping = ws.housekeeping();
    for job in pending {
        progress.job_started(job);
        let start = Instant::now();
        let outcome = process_shown(ws, job)?;
        let report = JobReport { file: job.file_name(), outcome, duration: start.elapsed() };
        progress.job_done(&report);
        reports.push(report);
        housekeeping.committed();
    }
    if !reports.is_empty() {
        housekeeping.start();
    }
    housekeeping.finish();
    progress.finish();
    Ok((scan, reports))
}

/// Watch the inbox and build whatever becomes pending, one job at a time,
/// until `stop` returns true. Events are debounced; a full rescan runs every
/// `builder.rescan_interval_secs` whatever the events say. An error in one
/// round (a file that can't be read, a branch that can't be written) is
/// logged and the round is tried again after the rescan interval; only a
/// watcher that can't run ends the loop.
pub fn watch(
    ws: &Workspace,
    progress: &mut dyn Progress,
    mut stop: impl FnMut() -> bool,
) -> Result<(), BuildError> {
    use notify::RecursiveMode;
    use notify_debouncer_full::new_debouncer;

    let _lock = ws.lock()?;
    preflight(ws)?;
    std::fs::create_dir_all(ws.inbox.dir())
        .map_err(|source| BuildError::Io { path: ws.inbox.dir().into(), source })?;
    let (tx, rx) = std::sync::mpsc::channel();
    let debounce = Duration::from_millis(ws.config.builder.debounce_ms);
    let tx_wake = tx.clone();
    let mut debouncer = new_debouncer(debounce, None, tx)
        .map_err(|e| BuildError::Watch(format!("cannot start the file watcher: {e}")))?;
    debouncer.watch(ws.inbox.dir(), RecursiveMode::NonRecursive).map_err(|e| {
        BuildError::Watch(format!("cannot watch {}: {e}", ws.inbox.dir().display()))
    })?;
    let rescan_every = Duration::from_secs(ws.config.builder.rescan_interval_secs);
    // The webhook wakes the loop through the watcher's own channel (an empty
    // batch of events), so there is one place to wait.
    let waker = tx_wake;
    ws.board.set_waker(Some(Box::new(move || {
        let _ = waker.send(Ok(Vec::new()));
    })));
    tracing::info!(inbox = %ws.inbox.dir().display(), "watching for submissions");
    let mut scanner = Scanner { min_age: Some(debounce), next_only: true, ..Scanner::default() };
    let mut housekeeping = ws.housekeeping();
    let mut built_since_gc = false;
    while !stop() {
        let mut wait = rescan_every;
        match scanner.scan(ws, true) {
            Ok(scan) => {
                if let Some(job) = scan.pending().next() {
                    progress.job_started(job);
                    let start = Instant::now();
                    match process_shown(ws, job) {
                        Ok(outcome) => {
                            scanner.processed(ws, &job.parsed.sha256, &outcome);
                            let deferred = matches!(outcome, JobOutcome::Deferred { .. });
                            let report = JobReport {
                                file: job.file_name(),
                                outcome,
                                duration: start.elapsed(),
                            };
                            progress.job_done(&report);
                            housekeeping.committed();
                            built_since_gc = true;
                            if !deferred {
                                // Rescan at once: an older submission may have arrived meanwhile.
                                continue;
                            }
                        }
                        Err(e) => tracing::error!(
                            "job {}: {e}; trying again in {}s",
                            job.file_name(),
                            rescan_every.as_secs()
                        ),
                    }
                } else if scan.skipped > 0 {
                    // A file still being written: look again soon.
                    wait = debounce.max(Duration::from_millis(50));
                } else if std::mem::take(&mut built_since_gc) {
                    // The queue is empty: a good time to pack.
                    housekeeping.start();
                }
            }
            Err(e) => tracing::error!(
                "scanning the inbox: {e}; trying again in {}s",
                rescan_every.as_secs()
            ),
        }
        // Idle: wake on an event, on the timer, or to check `stop`.
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || stop() {
                break;
            }
            match rx.recv_timeout(left.min(Duration::from_millis(500))) {
                Ok(Ok(events))
                    if events.is_empty()
                        || events.iter().any(|e| {
                            e.paths.iter().any(|p| crate::inbox::is_submission_name(p))
                                || e.need_rescan()
                        }) =>
                {
                    break;
                }
                Ok(Ok(_)) => {}
                Ok(Err(errors)) => {
                    // The OS dropped events (queue overflow): rescan now.
                    tracing::warn!("file watcher: {errors:?}; rescanning");
                    break;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    housekeeping.finish();
                    ws.board.set_waker(None);
                    return Err(BuildError::Watch("the file watcher stopped".into()));
                }
            }
        }
    }
    housekeeping.finish();
    ws.board.set_waker(None);
    Ok(())
}

/// A one-line state for `status`.
pub fn describe(state: &State) -> (&'static str, String) {
    match state {
        State::Pending => ("pending", String::new()),
        State::Published { project_id } => ("done", project_id.clone()),
        State::Failed(r) => {
            ("failed", format!("{} at {}: {}", r.project_id, r.stage, first_line(&r.reason)))
        }
    }
}

/// Write every site on the branch (or only `ids`) under `out/<id>/`.
pub fn export(ws: &Workspace, out: &Path, ids: &[String]) -> Result<Vec<PathBuf>, BuildError> {
    let snapshot = ws.store.snapshot()?;
    let ids: Vec<String> = if ids.is_empty() { snapshot.list_dir("sites")? } else { ids.to_vec() };
    let mut written = Vec::new();
    for id in ids {
        // SECURITY: the id becomes a directory name; only project-id shaped
        // names may be used, so `../x` cannot write outside `out`.
        if !is_project_id(&id) {
            return Err(BuildError::Io {
                path: out.join(&id),
                source: std::io::Error::other(format!("`{id}` is not a project id")),
            });
        }
        let files = snapshot.read_dir_recursive(&site_dir(&id))?;
        let dir = out.join(&id);
        for (rel, bytes) in files {
            let path = dir.join(&rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|source| BuildError::Io { path: parent.into(), source })?;
            }
            std::fs::write(&path, bytes)
                .map_err(|source| BuildError::Io { path: path.clone(), source })?;
        }
        written.push(dir);
    }
    Ok(written)
}

/// Whether the outcome counts as a failure for the exit code.
pub fn is_failure(outcome: &JobOutcome) -> bool {
    matches!(outcome, JobOutcome::Failed { .. } | JobOutcome::Deferred { .. })
}

impl JobOutcome {
    pub fn project_id(&self) -> &str {
        match self {
            JobOutcome::Published { project_id, .. }
            | JobOutcome::Superseded { project_id }
            | JobOutcome::AlreadyDone { project_id }
            | JobOutcome::Withdrawn { project_id }
            | JobOutcome::Failed { project_id, .. }
            | JobOutcome::Deferred { project_id, .. } => project_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_the_hashes_between_them() {
        assert_eq!(Shard::parse("2/3"), Ok(Shard { index: 2, count: 3 }));
        for bad in ["0/3", "4/3", "3", "a/b", "1/0", "1/2000"] {
            assert!(Shard::parse(bad).unwrap_err().contains("I/N"), "{bad}");
        }
        let shards: Vec<Shard> = (1..=3).map(|i| Shard { index: i, count: 3 }).collect();
        let mut sizes = [0; 3];
        for n in 0..3000u64 {
            let sha = format!("{:016x}{:048x}", n.wrapping_mul(0x9E37_79B9_7F4A_7C15), n);
            let owners: Vec<usize> = (0..3).filter(|&i| shards[i].takes(&sha)).collect();
            assert_eq!(owners.len(), 1, "exactly one shard takes {sha}");
            sizes[owners[0]] += 1;
        }
        assert!(sizes.iter().all(|&s| s > 800), "{sizes:?}");
    }
}

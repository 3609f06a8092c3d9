//! Stores every prototype site on one git branch (default `prototypes`), committed with gix.
//!
//! Layout of the branch: `sites/<projectId>/…` holds one published site per project (kept flat:
//! the `sites` tree is re-hashed on every commit), and `failed/<hash>.json` records failures.
//!
//! Invariants:
//! - The branch only ever moves by a complete commit: all blobs and trees, then the commit, are
//!   written first, and only then is the ref moved. No worktree or index is ever touched.
//! - The ref moves only by compare-and-swap from the head the caller built on
//!   ([`Store::commit`]); if another writer got there first the caller gets
//!   [`PublishError::Conflict`] and the ref is left as the other writer left it.
//! - Every path component of every edit is validated before anything is written, because the
//!   names derive from customer data: no traversal, no absolute paths, no `.git` in any
//!   spelling a filesystem might honour, no NUL or backslash.
//! - Readers go through a [`Snapshot`], which pins one commit's tree, so a reader never mixes two
//!   commits.
//! - Packing is git's: [`Housekeeping`] runs `git gc --auto`, which only packs and never deletes
//!   an object a reader or a writer in flight could still need.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use gix::ObjectId;
use gix::bstr::{BStr, BString, ByteSlice};
use gix::objs::TreeRefIter;
use gix::objs::tree::{Entry, EntryKind, EntryRef};
use gix::refs::transaction::{Change, LogChange, PreviousValue, RefEdit, RefLog};
use gix::refs::{FullName, Target};

pub mod remote;

/// Keeps the object store packed by running `git gc --auto` in the background.
///
/// Each commit leaves loose objects, and the flat `sites` tree (~47 bytes a
/// site) is rewritten by every one of them: 10,000 sites built one by one
/// left 2.5 GiB of loose objects, which `git gc` packed into 20 MiB. gix
/// cannot write deltas, so this runs the git binary; without it the repo
/// still works, it only grows (a warning says so once).
///
/// Safe alongside readers and writers: `gc --auto` packs, then deletes only
/// loose objects that are now in a pack, and unreachable ones older than
/// two weeks; gix finds objects that moved into a pack.
pub struct Housekeeping {
    repo: PathBuf,
    /// `gc.auto`: loose objects past which git packs; 0 disables.
    loose_limit: u32,
    commits_since: u32,
    running: Option<std::thread::JoinHandle<()>>,
}

impl Housekeeping {
    /// Commits between two checks; `gc --auto` itself is a cheap no-op below
    /// the limit (it counts one of the 256 object directories).
    const CHECK_EVERY: u32 = 50;

    pub fn new(repo: &Path, loose_limit: u32) -> Housekeeping {
        Housekeeping { repo: repo.to_owned(), loose_limit, commits_since: 0, running: None }
    }

    /// Count a commit; every [`Self::CHECK_EVERY`] commits, start a `gc --auto`
    /// in the background unless one still runs.
    pub fn committed(&mut self) {
        self.commits_since += 1;
        if self.commits_since >= Self::CHECK_EVERY {
            self.start();
        }
    }

    /// Start a `gc --auto` in the background now (unless one still runs).
    pub fn start(&mut self) {
        if self.loose_limit == 0 || self.running.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        self.commits_since = 0;
        let (repo, limit) = (self.repo.clone(), self.loose_limit);
        self.running = std::thread::Builder::new()
            .name("git-gc".into())
            .spawn(move || gc_auto(&repo, limit))
            .map_err(|e| tracing::warn!("cannot start git gc: {e}"))
            .ok();
    }

    /// Wait for a `gc` in flight (before exiting, so that it isn't cut short).
    pub fn finish(&mut self) {
        if let Some(t) = self.running.take() {
            let _ = t.join();
        }
    }
}

/// Run `git gc` in `repo` with `args` after `gc`, in the foreground.
/// Delta chains are kept short (depth 10, not 50): the server inflates a
/// whole chain for each cold read, and at 10,000 sites the pack grew by 7%.
pub fn git_gc(repo: &Path, config: &[String], args: &[&str]) -> Result<(), String> {
    let mut cmd = std::process::Command::new("git");
    cmd.arg("-C").arg(repo);
    for c in ["gc.autoDetach=false", "pack.depth=10", "pack.window=10"]
        .into_iter()
        .map(str::to_owned)
        .chain(config.iter().cloned())
    {
        cmd.arg("-c").arg(c);
    }
    cmd.arg("gc").args(args).stdin(std::process::Stdio::null());
    match cmd.output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "`git gc` in {} failed ({}): {}",
            repo.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
            "git is not installed, so loose objects in {} are never packed and the repo grows with every commit; install git, or run `git gc` where it is",
            repo.display()
        )),
        Err(e) => Err(format!("cannot run git gc in {}: {e}", repo.display())),
    }
}

fn gc_auto(repo: &Path, limit: u32) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let start = std::time::Instant::now();
    match git_gc(repo, &[format!("gc.auto={limit}")], &["--auto", "--quiet"]) {
        Ok(()) => tracing::debug!(took = ?start.elapsed(), "git gc --auto"),
        Err(e) => {
            if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!("{e}");
            }
        }
    }
}

/// Who a commit is attributed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub email: String,
}

/// One change to the branch's tree, applied by [`Store::commit`] in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeEdit {
    /// Replace the directory at `path` (e.g. `sites/<id>`) with exactly these files (relative
    /// slash paths, may contain subdirs such as "assets/images/logo.png"); anything that was there
    /// before is gone. An empty `files` list removes the directory.
    PutDir { path: String, files: Vec<(String, Vec<u8>)> },
    /// Write one file (e.g. `failed/<sha256>.json`).
    PutFile { path: String, bytes: Vec<u8> },
    /// Remove a file or a directory; removing something absent is not an error.
    Remove { path: String },
}

/// Everything that can go wrong while storing or reading sites.
///
/// gix errors are carried as `cause` and rendered, whole chain included, into the message. They
/// are deliberately not `#[source]`, so that reporters walking the chain don't print them twice.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    #[error(
        "the branch moved: expected it at {}, found it at {}; re-read the branch and redo the edit",
        fmt_head(expected),
        fmt_head(actual)
    )]
    Conflict { expected: Option<ObjectId>, actual: Option<ObjectId> },
    #[error("refusing path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("invalid branch name {branch:?}: {reason}")]
    InvalidBranch { branch: String, reason: String },
    #[error("invalid {role} identity {value:?}: {reason}")]
    InvalidIdentity { role: &'static str, value: String, reason: &'static str },
    #[error("invalid commit message: {reason}")]
    InvalidMessage { reason: &'static str },
    #[error(
        "{} already has a .git; refusing to initialise it again (use the existing repository)",
        path.display()
    )]
    AlreadyInitialized { path: PathBuf },
    #[error("could not create a git repository in {}: {}", path.display(), chain(cause))]
    Init { path: PathBuf, cause: gix::Error },
    #[error(
        "could not open a git repository at {} (or above it): {}\nhint: point at the site repository, or create one first",
        path.display(),
        chain(cause),
    )]
    Open { path: PathBuf, cause: gix::Error },
    #[error("could not read branch {branch:?} in {}: {}", repo.display(), chain(cause))]
    ReadRef { repo: PathBuf, branch: String, cause: gix::Error },
    #[error(
        "branch {branch:?} in {} is a symbolic ref to {target}; protoforge needs a plain branch",
        repo.display()
    )]
    SymbolicRef { repo: PathBuf, branch: String, target: String },
    #[error("could not read {what} in {}: {}", repo.display(), chain(cause))]
    ReadObject { repo: PathBuf, what: String, cause: gix::Error },
    #[error("corrupt object in {}: {what}", repo.display())]
    Corrupt { repo: PathBuf, what: String },
    #[error("could not write {what} to {}: {}", repo.display(), chain(cause))]
    WriteObject { repo: PathBuf, what: String, cause: gix::Error },
    #[error("could not move branch {branch:?} in {}: {}", repo.display(), chain(cause))]
    UpdateRef { repo: PathBuf, branch: String, cause: gix::Error },
    #[error(
        "branch {branch:?} in {} stayed locked through {attempts} attempts: {}\nhint: another writer may be publishing; if none is running, delete {}",
        repo.display(),
        chain(cause),
        lock.display(),
    )]
    Locked { repo: PathBuf, branch: String, lock: PathBuf, attempts: u32, cause: gix::Error },
}

/// One line: the gix error and its causes, joined by ": " (its Display shows only the first).
fn chain(err: &gix::Error) -> String {
    let mut parts: Vec<String> = err.iter_errors().map(ToString::to_string).collect();
    // An I/O wrapper and its inner error often print the same text.
    parts.dedup();
    parts.join(": ")
}

fn fmt_head(head: &Option<ObjectId>) -> String {
    head.map_or_else(|| "<no branch>".to_owned(), |id| id.to_string())
}

/// Create a new non-bare repository at `dir`, with HEAD at `refs/heads/main` and no commit.
///
/// `dir` may exist and hold files; it must not already have a `.git`.
pub fn init_repository(dir: &Path) -> Result<(), PublishError> {
    // gix only refuses an existing .git *directory*; a .git file (worktree link) counts too.
    if dir.join(".git").exists() {
        return Err(PublishError::AlreadyInitialized { path: dir.to_owned() });
    }
    let init_err = |cause| PublishError::Init { path: dir.to_owned(), cause };
    let repo = gix::ThreadSafeRepository::init(
        dir,
        gix::create::Kind::WithWorktree,
        gix::create::Options::default(),
    )
    .map_err(init_err)?;
    let mut repo = repo.to_thread_local();
    // init honours the user's init.defaultBranch; we promise main. A symbolic ref needs no
    // reflog, and without one no committer identity is required.
    repo.refs.write_reflog = gix::refs::store::WriteReflog::Disable;
    let head = RefEdit {
        change: Change::Update {
            log: LogChange::default(),
            expected: PreviousValue::Any,
            new: Target::Symbolic(
                FullName::try_from("refs/heads/main").expect("refs/heads/main is a valid ref name"),
            ),
        },
        name: FullName::try_from("HEAD").expect("HEAD is a valid ref name"),
        deref: false,
    };
    repo.edit_references_as([head], None).map_err(init_err)?;
    Ok(())
}

/// The delta-base cache of each store (a handful of bases; blobs and site
/// trees are small).
const PACK_CACHE_BYTES: usize = 1 << 20;

/// The publishing side of the branch: reads its tip, hands out snapshots, commits edits.
pub struct Store {
    repo: gix::Repository,
    /// For messages: the worktree, or the git dir of a bare repository.
    repo_path: PathBuf,
    branch: String,
    ref_name: FullName,
    author: Identity,
    committer: Identity,
    trees: TreeCache,
    /// The repository's own loose object directory, written to without compression.
    big_trees: gix::odb::loose::Store,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("repo", &self.repo_path)
            .field("branch", &self.branch)
            .finish_non_exhaustive()
    }
}

const LOCK_ATTEMPTS: u32 = 5;
const LOCK_BACKOFF: Duration = Duration::from_millis(5);

impl Store {
    /// Open the repository that contains `repo_dir` (searching upward unless `repo_dir` itself
    /// has a `.git`) to publish on branch `branch` (a short name like "prototypes").
    pub fn open(
        repo_dir: &Path,
        branch: &str,
        author: Identity,
        committer: Identity,
    ) -> Result<Store, PublishError> {
        let ref_name = branch_ref_name(branch)?;
        validate_identity("author", &author)?;
        validate_identity("committer", &committer)?;
        let open_err = |cause| PublishError::Open { path: repo_dir.to_owned(), cause };
        // A broken .git right here must be an error, not a reason to walk up into a parent repo.
        let mut repo = if repo_dir.join(".git").exists() {
            gix::open(repo_dir).map_err(open_err)?
        } else {
            gix::discover(repo_dir).map_err(open_err)?
        };
        // gix would otherwise wait up to core.filesRefLockTimeout (100 ms) inside every ref
        // update; `move_branch` has the one retry policy. In memory only, never written.
        let mut config = repo.config_snapshot_mut();
        config
            .set_value(&gix::config::tree::Core::FILES_REF_LOCK_TIMEOUT, "0")
            .map_err(open_err)?;
        config.commit().map_err(open_err)?;
        let repo_path = repo.workdir().unwrap_or_else(|| repo.git_dir()).to_owned();
        let big_trees = gix::odb::loose::Store::at_opts(
            repo.objects.store_ref().path(),
            repo.object_hash(),
            gix::odb::loose::Options {
                alloc_limit_bytes: None,
                compression: gix::zlib::Compression::NONE,
            },
        );
        // Packed objects are mostly deltas: without a cache of delta bases
        // every read inflates its whole chain (up to 50 objects) again.
        repo.objects.set_pack_cache(|| {
            Box::new(gix::odb::pack::cache::lru::StaticLinkedList::<64>::new(PACK_CACHE_BYTES))
        });
        let (branch, trees) = (branch.to_owned(), TreeCache::default());
        Ok(Store { repo, repo_path, branch, ref_name, author, committer, trees, big_trees })
    }

    /// Bound the cache of raw trees (default 4 MiB) for a store that reads
    /// trees once each, such as the server's, which keeps its own listings.
    pub fn set_tree_cache_bytes(&self, bytes: usize) {
        let mut cache = self.trees.0.borrow_mut();
        cache.limit = bytes;
        cache.by_id.clear();
        cache.bytes = 0;
    }

    /// The short branch name, e.g. "prototypes".
    pub fn branch(&self) -> &str {
        &self.branch
    }

    /// The repository's worktree (or git dir if bare), for messages.
    pub fn repo_path(&self) -> &Path {
        &self.repo_path
    }

    /// Current tip of the branch, None if the branch does not exist yet.
    pub fn head(&self) -> Result<Option<ObjectId>, PublishError> {
        let found = self.repo.refs.try_find(self.ref_name.as_ref()).map_err(|cause| {
            PublishError::ReadRef {
                repo: self.repo_path.clone(),
                branch: self.branch.clone(),
                cause,
            }
        })?;
        match found.map(|r| r.target) {
            None => Ok(None),
            Some(Target::Object(id)) => Ok(Some(id)),
            Some(Target::Symbolic(target)) => Err(PublishError::SymbolicRef {
                repo: self.repo_path.clone(),
                branch: self.branch.clone(),
                target: target.to_string(),
            }),
        }
    }

    /// A consistent read view of the branch tip at call time.
    pub fn snapshot(&self) -> Result<Snapshot, PublishError> {
        let commit = self.head()?;
        let root = commit.map(|id| commit_tree(&self.repo, id)).transpose()?;
        Ok(Snapshot { repo: self.repo.clone(), commit, root, trees: self.trees.clone() })
    }

    /// The bytes of the blob `id`, read without taking a snapshot (a blob id
    /// names the same bytes in every commit).
    pub fn blob(&self, id: ObjectId) -> Result<Vec<u8>, PublishError> {
        read_blob(&self.repo, id, &format!("blob {id}"))
    }

    /// Every file under the tree `tree`, as (relative path, blob id), sorted;
    /// like [`Snapshot::tree_listing`], without a snapshot.
    pub fn tree_listing(&self, tree: ObjectId) -> Result<Vec<(String, ObjectId)>, PublishError> {
        tree_listing(&self.repo, &self.trees, tree)
    }

    /// The first parent of `commit` (None for a root commit).
    pub fn parent_of(&self, commit: ObjectId) -> Result<Option<ObjectId>, PublishError> {
        let c = self.repo.find_commit(commit).map_err(|e| PublishError::Corrupt {
            repo: self.repo_path.clone(),
            what: format!("commit {commit} cannot be read: {e}"),
        })?;
        Ok(c.parent_ids().next().map(|id| id.detach()))
    }

    /// Apply `edits` (in order) on top of the tree of `expected_head` (None: the branch must not
    /// exist yet, so this makes a root commit), then move the branch from `expected_head` to the
    /// new commit by compare-and-swap. Returns the new commit id.
    ///
    /// If the branch is not at `expected_head`, returns [`PublishError::Conflict`] and leaves the
    /// ref alone (objects already written for the lost race stay unreferenced until `git gc`).
    /// A ref lock held by another writer is retried a few times with a short backoff.
    /// An edit that changes nothing still makes a commit: the branch doubles as the audit log.
    pub fn commit(
        &self,
        expected_head: Option<ObjectId>,
        message: &str,
        edits: &[TreeEdit],
    ) -> Result<ObjectId, PublishError> {
        // Validate everything before writing anything.
        let edits = edits.iter().map(ParsedEdit::parse).collect::<Result<Vec<_>, _>>()?;
        if message.contains('\0') {
            return Err(PublishError::InvalidMessage { reason: "contains a NUL byte" });
        }
        // Cheap early exit; the CAS below is what makes it safe.
        let actual = self.head()?;
        if actual != expected_head {
            return Err(PublishError::Conflict { expected: expected_head, actual });
        }

        let base = expected_head.map(|id| commit_tree(&self.repo, id)).transpose()?;
        let writer = Writer {
            repo: &self.repo,
            repo_path: &self.repo_path,
            trees: &self.trees,
            big_trees: &self.big_trees,
        };
        let mut root = DirEdit { base, changes: BTreeMap::new() };
        for edit in &edits {
            writer.apply(&mut root, edit)?;
        }
        let tree = writer.write_dir(root, "")?.expect("the root tree is always written");

        let (commit, committer) =
            self.write_commit(message, tree, expected_head, "the commit", None)?;
        self.move_branch(expected_head, commit, message, &committer)?;
        Ok(commit)
    }

    /// Write a commit object without moving any ref: committed now, authored by `author`
    /// (a replayed commit keeps its own) or else by the store's author, now.
    fn write_commit(
        &self,
        message: &str,
        tree: ObjectId,
        parents: impl IntoIterator<Item = ObjectId>,
        what: &str,
        author: Option<gix::actor::Signature>,
    ) -> Result<(ObjectId, gix::actor::Signature), PublishError> {
        let now = gix::date::Time::now_local_or_utc();
        let author = author.unwrap_or_else(|| signature(&self.author, now));
        let committer = signature(&self.committer, now);
        let (mut author_time, mut committer_time) = Default::default();
        let commit = self
            .repo
            .new_commit_as(
                committer.to_ref(&mut committer_time),
                author.to_ref(&mut author_time),
                message,
                tree,
                parents,
            )
            .map_err(|cause| PublishError::WriteObject {
                repo: self.repo_path.clone(),
                what: format!("{what} for branch {:?}", self.branch),
                cause,
            })?
            .id;
        Ok((commit, committer))
    }

    /// Replace the branch's history with one new root commit (no parents) holding the tree of
    /// `expected`, moving the branch from `expected` by compare-and-swap. Returns the new commit.
    ///
    /// The old commits become unreachable from the branch; deleting their objects is the
    /// caller's business (see `prune::purge_history`). [`PublishError::Conflict`] if the branch
    /// is no longer at `expected`.
    pub fn replace_with_root(
        &self,
        expected: ObjectId,
        message: &str,
    ) -> Result<ObjectId, PublishError> {
        if message.contains('\0') {
            return Err(PublishError::InvalidMessage { reason: "contains a NUL byte" });
        }
        let actual = self.head()?;
        if actual != Some(expected) {
            return Err(PublishError::Conflict { expected: Some(expected), actual });
        }
        let tree = commit_tree(&self.repo, expected)?;
        let (commit, committer) =
            self.write_commit(message, tree, std::iter::empty(), "the root commit", None)?;
        self.move_branch(Some(expected), commit, message, &committer)?;
        Ok(commit)
    }

    /// Re-make `ours` (oldest first) on top of `onto`, then move the branch from `expected` to
    /// the last of them by compare-and-swap. Used when a remote moved while we built.
    ///
    /// Each commit is replayed as a tree edit, never a merge: the entries it changed against
    /// its first parent (each `sites/<id>` whole, and every other file: `failed/<hash>.json`,
    /// `submissions/ab/<rest>`) are set to its values on the new base. Where the new base has a value that is neither ours
    /// before the commit nor ours after it, someone else changed the entry too: theirs is kept
    /// (first writer wins) and the path goes into [`Replayed::kept_theirs`]. A commit left
    /// with no change is dropped. Authors and messages (with their trailers) are kept.
    pub fn replay(
        &self,
        expected: Option<ObjectId>,
        onto: ObjectId,
        ours: &[ObjectId],
    ) -> Result<Replayed, PublishError> {
        let writer = Writer {
            repo: &self.repo,
            repo_path: &self.repo_path,
            trees: &self.trees,
            big_trees: &self.big_trees,
        };
        let read_err = |id: ObjectId| {
            move |cause| PublishError::ReadObject {
                repo: self.repo_path.clone(),
                what: format!("commit {id}"),
                cause,
            }
        };
        let mut out = Replayed { head: onto, commits: 0, dropped: 0, kept_theirs: Vec::new() };
        let mut tip_tree = commit_tree(&self.repo, onto)?;
        let mut last_committer = None;
        for &id in ours {
            let commit = self.repo.find_commit(id).map_err(read_err(id))?;
            let tree = commit.tree_id().map_err(read_err(id))?.detach();
            let parent = commit.parent_ids().next().map(gix::Id::detach);
            let before = parent.map(|p| commit_tree(&self.repo, p)).transpose()?;
            let mut root = DirEdit { base: Some(tip_tree), changes: BTreeMap::new() };
            let mut applied = 0;
            for change in self.changed_entries(before, tree)? {
                let theirs = self.entry_at(tip_tree, &change.path)?;
                let path = change.path.join("/");
                if theirs == change.after {
                    continue;
                }
                if theirs != change.before {
                    out.kept_theirs.push(path);
                    continue;
                }
                let (leaf, parents) = change.path.split_last().expect("a changed entry has a path");
                let mut dir = &mut root;
                for name in parents {
                    dir = writer.descend(dir, name)?;
                }
                let slot = match change.after {
                    Some((kind, id)) => Slot::Entry(kind, id),
                    None => Slot::Removed,
                };
                dir.changes.insert(leaf.as_str().into(), slot);
                applied += 1;
            }
            if applied == 0 {
                out.dropped += 1;
                continue;
            }
            let new_tree = writer.write_dir(root, "")?.expect("the root tree is always written");
            // Ours, so UTF-8; a stray byte is not worth failing a push over.
            let message = commit.message_raw().map_err(read_err(id))?.to_str_lossy().into_owned();
            let author =
                commit.author().and_then(|a| a.to_owned()).map_err(|e| PublishError::Corrupt {
                    repo: self.repo_path.clone(),
                    what: format!("the author of commit {id} does not parse: {e}"),
                })?;
            let what = format!("the replay of commit {id}");
            let (new, committer) =
                self.write_commit(&message, new_tree, [out.head], &what, Some(author))?;
            out.head = new;
            out.commits += 1;
            tip_tree = new_tree;
            last_committer = Some(committer);
        }
        let committer = last_committer
            .unwrap_or_else(|| signature(&self.committer, gix::date::Time::now_local_or_utc()));
        let message = format!("replay {} commit(s) onto {onto}", out.commits);
        if expected != Some(out.head) {
            self.move_branch(expected, out.head, &message, &committer)?;
        }
        Ok(out)
    }

    /// The entries that differ between two root trees, as the units a replay sets whole:
    /// each `sites/<id>` (a site is one unit), and every other file, however deep
    /// (`failed/<hash>.json`, `submissions/ab/<rest>`), so that two builders' records never
    /// collide because their hashes share a prefix.
    fn changed_entries(
        &self,
        before: Option<ObjectId>,
        after: ObjectId,
    ) -> Result<Vec<Changed>, PublishError> {
        let mut out = Vec::new();
        self.diff_dirs(&mut Vec::new(), before, Some(after), &mut out)?;
        Ok(out)
    }

    fn diff_dirs(
        &self,
        path: &mut Vec<String>,
        a: Option<ObjectId>,
        b: Option<ObjectId>,
        out: &mut Vec<Changed>,
    ) -> Result<(), PublishError> {
        /// Deeper than any layout of the branch; a guard, not a limit in practice.
        const MAX_DEPTH: usize = 16;
        let (ea, eb) = (self.entries(a)?, self.entries(b)?);
        let names: std::collections::BTreeSet<&String> = ea.keys().chain(eb.keys()).collect();
        for name in names {
            let (va, vb) = (ea.get(name).copied(), eb.get(name).copied());
            if va == vb {
                continue;
            }
            path.push(name.clone());
            let is_site = path.len() == 2 && path[0] == "sites";
            let dir_or_none = |v: Option<(EntryKind, ObjectId)>| {
                v.is_none_or(|(kind, _)| kind == EntryKind::Tree)
            };
            if !is_site && path.len() < MAX_DEPTH && dir_or_none(va) && dir_or_none(vb) {
                self.diff_dirs(path, va.map(|(_, id)| id), vb.map(|(_, id)| id), out)?;
            } else {
                out.push(Changed { path: path.clone(), before: va, after: vb });
            }
            path.pop();
        }
        Ok(())
    }

    /// The entries of a tree by name (none for no tree).
    fn entries(
        &self,
        tree: Option<ObjectId>,
    ) -> Result<BTreeMap<String, (EntryKind, ObjectId)>, PublishError> {
        let mut out = BTreeMap::new();
        let Some(tree) = tree else { return Ok(out) };
        let data = self.trees.get(&self.repo, tree)?;
        for entry in TreeRefIter::from_bytes(&data, self.repo.object_hash()) {
            let entry = entry.map_err(|e| corrupt_tree(&self.repo, tree, e))?;
            let name = entry.filename.to_str().map_err(|_| PublishError::Corrupt {
                repo: self.repo_path.clone(),
                what: format!("tree {tree} has an entry whose name is not UTF-8"),
            })?;
            out.insert(name.to_owned(), (entry.mode.kind(), entry.oid.to_owned()));
        }
        Ok(out)
    }

    /// The entry at `path` below the root tree `tree`.
    fn entry_at(
        &self,
        tree: ObjectId,
        path: &[String],
    ) -> Result<Option<(EntryKind, ObjectId)>, PublishError> {
        let mut current = (EntryKind::Tree, tree);
        for name in path {
            if current.0 != EntryKind::Tree {
                return Ok(None);
            }
            match self.trees.find_entry(&self.repo, current.1, name.as_str().into())? {
                Some(found) => current = found,
                None => return Ok(None),
            }
        }
        Ok(Some(current))
    }

    /// Move the branch from `expected` to `new`, an existing commit (a fast-forward to a
    /// fetched head), by compare-and-swap.
    pub fn fast_forward(
        &self,
        expected: Option<ObjectId>,
        new: ObjectId,
    ) -> Result<(), PublishError> {
        let committer = signature(&self.committer, gix::date::Time::now_local_or_utc());
        self.move_branch(expected, new, &format!("fast-forward to {new}"), &committer)
    }

    /// The full name of the branch's ref, e.g. `refs/heads/prototypes`.
    pub fn ref_name(&self) -> &FullName {
        &self.ref_name
    }

    /// Compare-and-swap the branch from `expected` to `new`, retrying only lock contention.
    fn move_branch(
        &self,
        expected: Option<ObjectId>,
        new: ObjectId,
        message: &str,
        committer: &gix::actor::Signature,
    ) -> Result<(), PublishError> {
        let subject = message.lines().next().unwrap_or_default();
        let mut attempt = 1;
        loop {
            let edit = RefEdit {
                change: Change::Update {
                    log: LogChange {
                        mode: RefLog::AndReference,
                        force_create_reflog: false,
                        message: format!("protoforge: {subject}").into(),
                    },
                    expected: match expected {
                        Some(id) => PreviousValue::MustExistAndMatch(Target::Object(id)),
                        None => PreviousValue::MustNotExist,
                    },
                    new: Target::Object(new),
                },
                name: self.ref_name.clone(),
                deref: false,
            };
            let mut time = Default::default();
            let Err(cause) =
                self.repo.edit_references_as([edit], Some(committer.to_ref(&mut time)))
            else {
                return Ok(());
            };
            // Whatever failed, a moved branch is the caller's conflict to resolve.
            let actual = self.head()?;
            if actual != expected {
                return Err(PublishError::Conflict { expected, actual });
            }
            if !cause.is_retryable() {
                return Err(PublishError::UpdateRef {
                    repo: self.repo_path.clone(),
                    branch: self.branch.clone(),
                    cause,
                });
            }
            if attempt == LOCK_ATTEMPTS {
                return Err(PublishError::Locked {
                    repo: self.repo_path.clone(),
                    branch: self.branch.clone(),
                    lock: self.repo.common_dir().join(format!("{}.lock", self.ref_name)),
                    attempts: attempt,
                    cause,
                });
            }
            // Exponential backoff with a little jitter so that racing writers spread out.
            let jitter = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_micros() % 1000);
            std::thread::sleep(
                LOCK_BACKOFF * 2u32.pow(attempt - 1) + Duration::from_micros(jitter.into()),
            );
            attempt += 1;
        }
    }
}

/// A read view pinned to one commit of the branch (or to the empty tree if it had none).
#[derive(Debug)]
pub struct Snapshot {
    repo: gix::Repository,
    commit: Option<ObjectId>,
    root: Option<ObjectId>,
    trees: TreeCache,
}

impl Snapshot {
    /// The commit this view reads from, None if the branch did not exist.
    pub fn commit_id(&self) -> Option<ObjectId> {
        self.commit
    }

    /// Read the blob at a slash path like "sites/abc-1234abcd/metadata.json"; Ok(None) if absent
    /// or not a file.
    pub fn read(&self, path: &str) -> Result<Option<Vec<u8>>, PublishError> {
        match self.lookup(path)? {
            Some((kind, id)) if is_file(kind) => self.read_blob(id, path).map(Some),
            _ => Ok(None),
        }
    }

    /// Names of the entries directly under a directory path ("" is the root); empty if absent.
    pub fn list_dir(&self, path: &str) -> Result<Vec<String>, PublishError> {
        let Some(tree) = self.lookup_dir(path)? else { return Ok(Vec::new()) };
        let data = self.trees.get(&self.repo, tree)?;
        let mut names = Vec::new();
        for entry in TreeRefIter::from_bytes(&data, self.repo.object_hash()) {
            names.push(entry.map_err(|e| corrupt_tree(&self.repo, tree, e))?.filename.to_string());
        }
        Ok(names)
    }

    /// Whether anything (file or directory) exists at `path`.
    pub fn exists(&self, path: &str) -> Result<bool, PublishError> {
        Ok(self.lookup(path)?.is_some())
    }

    /// Every file under a directory, recursively, as (path relative to it, bytes), sorted by path.
    pub fn read_dir_recursive(&self, path: &str) -> Result<Vec<(String, Vec<u8>)>, PublishError> {
        let Some(tree) = self.lookup_dir(path)? else { return Ok(Vec::new()) };
        Ok(self.tree_files(tree, path)?.into_iter().map(|(rel, _, bytes)| (rel, bytes)).collect())
    }

    /// Every file under the tree `tree`, recursively, as (relative path, blob id, bytes), sorted
    /// by path. Trees are immutable, so a reader can cache the result by the tree's id; `label`
    /// names the tree in errors.
    pub fn tree_files(
        &self,
        tree: ObjectId,
        label: &str,
    ) -> Result<Vec<(String, ObjectId, Vec<u8>)>, PublishError> {
        self.tree_listing(tree)?
            .into_iter()
            .map(|(rel, id)| {
                let bytes = self.read_blob(id, &format!("{label}/{rel}"))?;
                Ok((rel, id, bytes))
            })
            .collect()
    }

    /// Read the blob at the slash path `path` below the tree `tree` (an id from
    /// [`Snapshot::subtrees`]); Ok(None) if absent or not a file. Looking a site up by its tree
    /// id skips the scan of the large `sites` tree that [`Snapshot::read`] does for every call.
    pub fn read_in_tree(
        &self,
        tree: ObjectId,
        path: &str,
    ) -> Result<Option<Vec<u8>>, PublishError> {
        match self.lookup_from(Some(tree), path)? {
            Some((kind, id)) if is_file(kind) => self.read_blob(id, path).map(Some),
            _ => Ok(None),
        }
    }

    /// Every file under the tree `tree`, recursively, as (relative path, blob id), sorted by
    /// path, without reading the files.
    pub fn tree_listing(&self, tree: ObjectId) -> Result<Vec<(String, ObjectId)>, PublishError> {
        tree_listing(&self.repo, &self.trees, tree)
    }

    /// The bytes of the blob `id` (blobs are immutable: a reader may cache by id).
    pub fn blob(&self, id: ObjectId) -> Result<Vec<u8>, PublishError> {
        self.read_blob(id, &format!("blob {id}"))
    }

    /// The directories directly under `path`, as (name, tree id); empty if absent.
    pub fn subtrees(&self, path: &str) -> Result<Vec<(String, ObjectId)>, PublishError> {
        let Some(tree) = self.lookup_dir(path)? else { return Ok(Vec::new()) };
        let data = self.trees.get(&self.repo, tree)?;
        let mut out = Vec::new();
        for entry in TreeRefIter::from_bytes(&data, self.repo.object_hash()) {
            let entry = entry.map_err(|e| corrupt_tree(&self.repo, tree, e))?;
            if entry.mode.is_tree() {
                out.push((entry.filename.to_string(), entry.oid.to_owned()));
            }
        }
        Ok(out)
    }

    /// The committer time of the commit, in seconds since the epoch.
    pub fn commit_time(&self) -> Result<Option<i64>, PublishError> {
        let Some(id) = self.commit else { return Ok(None) };
        let commit = self.repo.find_commit(id).map_err(|e| PublishError::Corrupt {
            repo: repo_path(&self.repo),
            what: format!("commit {id} cannot be read: {e}"),
        })?;
        let time = commit.time().map_err(|e| PublishError::Corrupt {
            repo: repo_path(&self.repo),
            what: format!("commit {id} has no valid time: {e}"),
        })?;
        Ok(Some(time.seconds))
    }

    fn lookup_dir(&self, path: &str) -> Result<Option<ObjectId>, PublishError> {
        Ok(match self.lookup(path)? {
            Some((EntryKind::Tree, id)) => Some(id),
            _ => None,
        })
    }

    /// Resolve `path` in the pinned tree; "" is the root itself.
    fn lookup(&self, path: &str) -> Result<Option<(EntryKind, ObjectId)>, PublishError> {
        self.lookup_from(self.root, path)
    }

    /// Resolve `path` below the tree `root` ("" is `root` itself).
    fn lookup_from(
        &self,
        root: Option<ObjectId>,
        path: &str,
    ) -> Result<Option<(EntryKind, ObjectId)>, PublishError> {
        let components = if path.is_empty() { Vec::new() } else { validate_path(path)? };
        let Some(mut current) = root.map(|root| (EntryKind::Tree, root)) else {
            return Ok(None);
        };
        for name in components {
            if current.0 != EntryKind::Tree {
                return Ok(None);
            }
            match self.trees.find_entry(&self.repo, current.1, name.into())? {
                Some(found) => current = found,
                None => return Ok(None),
            }
        }
        Ok(Some(current))
    }

    fn read_blob(&self, id: ObjectId, path: &str) -> Result<Vec<u8>, PublishError> {
        read_blob(&self.repo, id, path)
    }
}

fn read_blob(repo: &gix::Repository, id: ObjectId, path: &str) -> Result<Vec<u8>, PublishError> {
    read_object(repo, id, gix::objs::Kind::Blob, || format!("file {path:?} (blob {id})"))
}

/// The bytes of object `id`, which must be a `kind`; `what` names it in errors.
fn read_object(
    repo: &gix::Repository,
    id: ObjectId,
    kind: gix::objs::Kind,
    what: impl Fn() -> String,
) -> Result<Vec<u8>, PublishError> {
    let mut object = repo.find_object(id).map_err(|cause| PublishError::ReadObject {
        repo: repo_path(repo),
        what: what(),
        cause,
    })?;
    if object.kind != kind {
        return Err(PublishError::Corrupt {
            repo: repo_path(repo),
            what: format!("{} should be a {kind} but {id} is a {}", what(), object.kind),
        });
    }
    let mut data = std::mem::take(&mut object.data);
    // An object resolved from a delta chain comes in a buffer sized for the
    // chain's work, often twice its size or more; callers keep them in caches.
    data.shrink_to_fit();
    Ok(data)
}

/// Every file under `tree`, as (path relative to it, blob id), sorted by path.
fn tree_listing(
    repo: &gix::Repository,
    trees: &TreeCache,
    tree: ObjectId,
) -> Result<Vec<(String, ObjectId)>, PublishError> {
    let mut out = Vec::new();
    let mut pending = vec![(String::new(), tree)];
    while let Some((prefix, tree)) = pending.pop() {
        let data = trees.get(repo, tree)?;
        for entry in TreeRefIter::from_bytes(&data, repo.object_hash()) {
            let entry = entry.map_err(|e| corrupt_tree(repo, tree, e))?;
            let rel = format!("{prefix}{}", entry.filename);
            if entry.mode.is_tree() {
                pending.push((rel + "/", entry.oid.to_owned()));
            } else if is_file(entry.mode.kind()) {
                out.push((rel, entry.oid.to_owned()));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn is_file(kind: EntryKind) -> bool {
    matches!(kind, EntryKind::Blob | EntryKind::BlobExecutable)
}

fn repo_path(repo: &gix::Repository) -> PathBuf {
    repo.workdir().unwrap_or_else(|| repo.git_dir()).to_owned()
}

fn corrupt_tree(repo: &gix::Repository, tree: ObjectId, err: gix::Error) -> PublishError {
    PublishError::Corrupt { repo: repo_path(repo), what: format!("tree {tree}: {}", chain(&err)) }
}

fn commit_tree(repo: &gix::Repository, commit: ObjectId) -> Result<ObjectId, PublishError> {
    let read_err = |cause| PublishError::ReadObject {
        repo: repo_path(repo),
        what: format!("commit {commit}"),
        cause,
    };
    let commit = repo.find_commit(commit).map_err(read_err)?;
    Ok(commit.tree_id().map_err(read_err)?.detach())
}

fn signature(who: &Identity, time: gix::date::Time) -> gix::actor::Signature {
    gix::actor::Signature { name: who.name.as_str().into(), email: who.email.as_str().into(), time }
}

fn branch_ref_name(branch: &str) -> Result<FullName, PublishError> {
    let invalid =
        |reason: String| PublishError::InvalidBranch { branch: branch.to_owned(), reason };
    let full = format!("refs/heads/{branch}");
    gix::validate::reference::branch_name(full.as_str().into())
        .map_err(|e| invalid(e.to_string()))?;
    FullName::try_from(full.as_str()).map_err(|e| invalid(e.to_string()))
}

fn validate_identity(role: &'static str, who: &Identity) -> Result<(), PublishError> {
    let invalid = |value: &str, reason| PublishError::InvalidIdentity {
        role,
        value: value.to_owned(),
        reason,
    };
    if who.name.trim().is_empty() {
        return Err(invalid(&who.name, "the name is empty"));
    }
    for value in [&who.name, &who.email] {
        // Signatures are `name <email> time` lines in the commit header.
        if value.contains(['<', '>', '\n', '\r', '\0']) {
            return Err(invalid(value, "must not contain <, >, a line break or NUL"));
        }
    }
    Ok(())
}

/// Split a slash path into validated components; "" and a trailing or doubled slash are errors.
///
/// Validation is ours: trees are written as raw bytes, which gix does not check.
fn validate_path(path: &str) -> Result<Vec<&str>, PublishError> {
    let invalid = |reason| PublishError::InvalidPath { path: path.to_owned(), reason };
    // SECURITY: these names come from customer data and end up as files when the branch is
    // checked out or exported. Reject traversal ("..", leading "/", "\\" as a Windows
    // separator), NUL (truncates names in the tree encoding), and anything that could become
    // `.git` on some filesystem (case folding, NTFS 8.3 and stream names, HFS+ ignorables),
    // which would let a site overwrite git's own files or hooks.
    if path.is_empty() {
        return Err(invalid("the path is empty"));
    }
    if path.starts_with('/') {
        return Err(invalid("absolute paths are not allowed"));
    }
    if path.contains('\0') {
        return Err(invalid("contains a NUL byte"));
    }
    if path.contains('\\') {
        return Err(invalid("contains a backslash"));
    }
    let components: Vec<&str> = path.split('/').collect();
    for &name in &components {
        if name.is_empty() {
            return Err(invalid("has an empty component (doubled or trailing slash)"));
        }
        if name == "." || name == ".." {
            return Err(invalid("has a '.' or '..' component"));
        }
        if name.eq_ignore_ascii_case(".git") {
            return Err(invalid("has a .git component"));
        }
        // All protections on: a site may be checked out on Windows or macOS too.
        let options = gix::validate::path::component::Options::default();
        if let Err(err) = gix::validate::path::component(name.into(), None, options) {
            use gix::validate::path::component::Error as E;
            return Err(invalid(match err {
                E::DotGitDir => "has a component that a filesystem may treat as .git",
                E::WindowsReservedName => "has a Windows device name (CON, NUL, COM1, …)",
                E::WindowsIllegalCharacter => {
                    "has a character Windows forbids (<>:\"|?*, control, trailing space or dot)"
                }
                E::WindowsPathPrefix => "has a Windows drive prefix",
                _ => "has a component git refuses",
            }));
        }
    }
    Ok(components)
}

/// What [`Store::replay`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// The new tip, where the branch now points.
    pub head: ObjectId,
    /// Commits re-made on top of the new base.
    pub commits: usize,
    /// Commits left with nothing to change, and so dropped.
    pub dropped: usize,
    /// Paths both sides changed, where the other side's version was kept.
    pub kept_theirs: Vec<String>,
}

/// One entry a commit changed, by path from the root.
struct Changed {
    path: Vec<String>,
    before: Option<(EntryKind, ObjectId)>,
    after: Option<(EntryKind, ObjectId)>,
}

/// An edit whose paths have been validated and split.
enum ParsedEdit<'e> {
    /// `files` is None when the file list is empty.
    PutDir {
        path: Vec<&'e str>,
        raw: &'e str,
        files: Option<NewDir<'e>>,
    },
    PutFile {
        path: Vec<&'e str>,
        bytes: &'e [u8],
    },
    Remove {
        path: Vec<&'e str>,
    },
}

impl<'e> ParsedEdit<'e> {
    fn parse(edit: &'e TreeEdit) -> Result<Self, PublishError> {
        Ok(match edit {
            TreeEdit::PutDir { path, files } => {
                let components = validate_path(path)?;
                let mut root = NewDir::default();
                for (name, bytes) in files {
                    root.insert(path, name, bytes)?;
                }
                let files = (!files.is_empty()).then_some(root);
                ParsedEdit::PutDir { path: components, raw: path, files }
            }
            TreeEdit::PutFile { path, bytes } => {
                ParsedEdit::PutFile { path: validate_path(path)?, bytes }
            }
            TreeEdit::Remove { path } => ParsedEdit::Remove { path: validate_path(path)? },
        })
    }
}

/// The files of a `PutDir`, as a directory tree, checked for clashes before anything is written.
#[derive(Default)]
struct NewDir<'e> {
    files: BTreeMap<&'e str, &'e [u8]>,
    dirs: BTreeMap<&'e str, NewDir<'e>>,
}

impl<'e> NewDir<'e> {
    fn insert(&mut self, dir: &str, file: &'e str, bytes: &'e [u8]) -> Result<(), PublishError> {
        let path = validate_path(file).map_err(|err| match err {
            PublishError::InvalidPath { path, reason } => {
                PublishError::InvalidPath { path: format!("{dir}/{path}"), reason }
            }
            other => other,
        })?;
        let invalid = |reason| PublishError::InvalidPath { path: format!("{dir}/{file}"), reason };
        let (leaf, parents) = path.split_last().expect("validated paths have a component");
        let mut current = self;
        for name in parents {
            if current.files.contains_key(name) {
                return Err(invalid("a file has the same name as a directory"));
            }
            current = current.dirs.entry(name).or_default();
        }
        if current.dirs.contains_key(leaf) {
            return Err(invalid("a file has the same name as a directory"));
        }
        if current.files.insert(leaf, bytes).is_some() {
            return Err(invalid("the file is listed twice"));
        }
        Ok(())
    }
}

/// Raw tree objects by id, shared by a [`Store`] and its snapshots. Trees are immutable, so an
/// entry never goes stale; the point is not to inflate the large `sites` tree on every commit.
#[derive(Debug, Default, Clone)]
struct TreeCache(Rc<RefCell<CachedTrees>>);

#[derive(Debug)]
struct CachedTrees {
    by_id: HashMap<ObjectId, Rc<Vec<u8>>>,
    bytes: usize,
    limit: usize,
}

impl Default for CachedTrees {
    fn default() -> Self {
        CachedTrees { by_id: HashMap::new(), bytes: 0, limit: TreeCache::MAX_BYTES }
    }
}

impl TreeCache {
    /// Crude bound (emptied when full). Every commit adds a new version of the `sites` tree
    /// (47 bytes a site), so a large bound mostly holds versions nobody reads again: at 1,000
    /// sites 32 MiB let `build --once` grow by ~25 MB. 4 MiB still holds several versions of a
    /// 10,000-site tree (540 KB).
    const MAX_BYTES: usize = 4 << 20;

    fn insert(&self, id: ObjectId, data: Rc<Vec<u8>>) {
        let mut cache = self.0.borrow_mut();
        if cache.bytes + data.len() > cache.limit {
            cache.by_id.clear();
            cache.bytes = 0;
        }
        cache.bytes += data.len();
        if let Some(old) = cache.by_id.insert(id, data) {
            cache.bytes -= old.len();
        }
    }

    fn get(&self, repo: &gix::Repository, id: ObjectId) -> Result<Rc<Vec<u8>>, PublishError> {
        if let Some(data) = self.0.borrow().by_id.get(&id) {
            return Ok(Rc::clone(data));
        }
        let data = Rc::new(read_object(repo, id, gix::objs::Kind::Tree, || format!("tree {id}"))?);
        self.insert(id, Rc::clone(&data));
        Ok(data)
    }

    fn find_entry(
        &self,
        repo: &gix::Repository,
        tree: ObjectId,
        name: &BStr,
    ) -> Result<Option<(EntryKind, ObjectId)>, PublishError> {
        let data = self.get(repo, tree)?;
        for entry in TreeRefIter::from_bytes(&data, repo.object_hash()) {
            let entry = entry.map_err(|e| corrupt_tree(repo, tree, e))?;
            if entry.filename == name {
                return Ok(Some((entry.mode.kind(), entry.oid.to_owned())));
            }
        }
        Ok(None)
    }
}

/// The raw tree `base` with `changes` (sorted by name; None removes) applied.
///
/// Works on the encoded bytes: unchanged runs of entries are copied as they are, so editing one
/// entry of a 10,000-entry tree costs a few large copies instead of decoding, sorting and
/// re-encoding every entry. None if `base` is malformed.
fn splice_tree(
    base: &[u8],
    hash_len: usize,
    changes: &[(BString, Option<(EntryKind, ObjectId)>)],
) -> Option<Vec<u8>> {
    let mut added: Vec<EntryRef<'_>> = changes
        .iter()
        .filter_map(|(name, value)| {
            let (kind, id) = value.as_ref()?;
            Some(EntryRef { mode: (*kind).into(), filename: name.as_bstr(), oid: id })
        })
        .collect();
    // Git orders trees as if their name ended in '/'; EntryRef's Ord does that.
    added.sort();
    let mut added = added.into_iter().peekable();
    let mut out = Vec::with_capacity(base.len() + changes.len() * 64);
    let push = |out: &mut Vec<u8>, entry: &EntryRef<'_>| {
        out.extend_from_slice(entry.mode.as_bytes(&mut Default::default()));
        out.push(b' ');
        out.extend_from_slice(entry.filename);
        out.push(0);
        out.extend_from_slice(entry.oid.as_bytes());
    };
    // Entries are `<mode> <name>\0<hash>`; `copied` is where the pending run of kept ones starts.
    let (mut pos, mut copied) = (0, 0);
    while pos < base.len() {
        let space = pos + base[pos..].find_byte(b' ')?;
        let nul = space + 1 + base[space + 1..].find_byte(0)?;
        let end = nul + 1 + hash_len;
        if end > base.len() {
            return None;
        }
        let name = &base[space + 1..nul];
        let is_tree = matches!(&base[pos..space], b"40000" | b"040000");
        while let Some(new) = added.next_if(|new| {
            gix::objs::tree::name_order(new.filename, new.mode.is_tree(), name, is_tree).is_lt()
        }) {
            out.extend_from_slice(&base[copied..pos]);
            copied = pos;
            push(&mut out, &new);
        }
        if changes.binary_search_by(|(changed, _)| changed.as_slice().cmp(name)).is_ok() {
            out.extend_from_slice(&base[copied..pos]);
            copied = end;
        }
        pos = end;
    }
    out.extend_from_slice(&base[copied..]);
    for new in added {
        push(&mut out, &new);
    }
    Some(out)
}

/// An already serialized tree, so that it can be both written and cached.
struct RawTree<'a>(&'a [u8]);

impl gix::objs::WriteTo for RawTree<'_> {
    fn write_to(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        out.write_all(self.0)
    }

    fn kind(&self) -> gix::objs::Kind {
        gix::objs::Kind::Tree
    }

    fn size(&self) -> u64 {
        self.0.len() as u64
    }
}

/// A directory being edited: the tree it started from plus pending changes by name.
#[derive(Default)]
struct DirEdit {
    base: Option<ObjectId>,
    changes: BTreeMap<BString, Slot>,
}

enum Slot {
    Removed,
    /// A blob, or a tree that is already written (e.g. a whole new site).
    Entry(EntryKind, ObjectId),
    /// A subdirectory with edits of its own.
    Dir(DirEdit),
}

struct Writer<'r> {
    repo: &'r gix::Repository,
    repo_path: &'r Path,
    trees: &'r TreeCache,
    big_trees: &'r gix::odb::loose::Store,
}

/// Trees at least this big (the flat `sites` tree past ~1,300 sites) are written as loose
/// objects without compression. They are mostly 20-byte hashes, so zlib only shrinks them to
/// ~60%, yet deflating ~0.5 MB was most of a commit's cost at 10,000 sites. `git gc` packs and
/// compresses them like any other object.
const UNCOMPRESSED_TREE_BYTES: usize = 64 << 10;

impl Writer<'_> {
    fn apply(&self, root: &mut DirEdit, edit: &ParsedEdit<'_>) -> Result<(), PublishError> {
        let (path, slot) = match edit {
            ParsedEdit::PutDir { path, raw, files } => {
                let slot = match files {
                    Some(files) => Slot::Entry(EntryKind::Tree, self.write_new_tree(raw, files)?),
                    None => Slot::Removed,
                };
                (path, slot)
            }
            ParsedEdit::PutFile { path, bytes } => {
                let blob = self.write_blob(bytes, &path.join("/"))?;
                (path, Slot::Entry(EntryKind::Blob, blob))
            }
            ParsedEdit::Remove { path } => {
                // Walking down would turn files on the way into directories; don't.
                if !self.exists(root, path)? {
                    return Ok(());
                }
                (path, Slot::Removed)
            }
        };
        let (leaf, parents) = path.split_last().expect("validated paths have a component");
        let mut dir = root;
        for name in parents {
            dir = self.descend(dir, name)?;
        }
        dir.changes.insert((*leaf).into(), slot);
        Ok(())
    }

    /// The subdirectory `name` of `dir`, made editable; a file in the way is replaced.
    fn descend<'d>(
        &self,
        dir: &'d mut DirEdit,
        name: &str,
    ) -> Result<&'d mut DirEdit, PublishError> {
        let next = match dir.changes.remove(name.as_bytes().as_bstr()) {
            Some(Slot::Dir(sub)) => sub,
            Some(Slot::Entry(EntryKind::Tree, id)) => {
                DirEdit { base: Some(id), ..Default::default() }
            }
            Some(_) => DirEdit::default(),
            None => match dir.base {
                Some(base) => match self.trees.find_entry(self.repo, base, name.into())? {
                    Some((EntryKind::Tree, id)) => DirEdit { base: Some(id), ..Default::default() },
                    _ => DirEdit::default(),
                },
                None => DirEdit::default(),
            },
        };
        match dir.changes.entry(name.into()).or_insert(Slot::Dir(next)) {
            Slot::Dir(sub) => Ok(sub),
            _ => unreachable!("the entry was removed above, so or_insert inserted a directory"),
        }
    }

    /// Whether `path` exists in `dir` with the edits applied so far.
    fn exists(&self, dir: &DirEdit, path: &[&str]) -> Result<bool, PublishError> {
        let (first, rest) = path.split_first().expect("validated paths have a component");
        let base_lookup = |tree: Option<ObjectId>| match tree {
            Some(tree) => self.trees.find_entry(self.repo, tree, (*first).into()),
            None => Ok(None),
        };
        let found = match dir.changes.get(first.as_bytes().as_bstr()) {
            Some(Slot::Removed) => None,
            Some(Slot::Dir(sub)) => {
                return if rest.is_empty() { Ok(true) } else { self.exists(sub, rest) };
            }
            Some(Slot::Entry(kind, id)) => Some((*kind, *id)),
            None => base_lookup(dir.base)?,
        };
        match found {
            None => Ok(false),
            Some(_) if rest.is_empty() => Ok(true),
            Some((EntryKind::Tree, id)) => {
                self.exists(&DirEdit { base: Some(id), ..Default::default() }, rest)
            }
            Some(_) => Ok(false),
        }
    }

    /// Write `dir` (at `path`, "" for the root) with its changes; None if it ended up empty and
    /// is not the root.
    fn write_dir(&self, dir: DirEdit, path: &str) -> Result<Option<ObjectId>, PublishError> {
        if dir.changes.is_empty()
            && let Some(base) = dir.base
        {
            return Ok(Some(base));
        }
        // Sorted by name, as the BTreeMap iterates.
        let mut resolved: Vec<(BString, Option<(EntryKind, ObjectId)>)> = Vec::new();
        for (name, slot) in dir.changes {
            let value = match slot {
                Slot::Removed => None,
                Slot::Entry(kind, id) => Some((kind, id)),
                Slot::Dir(sub) => {
                    let sub_path =
                        if path.is_empty() { name.to_string() } else { format!("{path}/{name}") };
                    self.write_dir(sub, &sub_path)?.map(|id| (EntryKind::Tree, id))
                }
            };
            resolved.push((name, value));
        }
        let base = dir.base.map(|id| self.trees.get(self.repo, id)).transpose()?;
        let base_data = base.as_deref().map_or(&[][..], Vec::as_slice);
        let hash_len = self.repo.object_hash().len_in_bytes();
        let data =
            splice_tree(base_data, hash_len, &resolved).ok_or_else(|| PublishError::Corrupt {
                repo: self.repo_path.to_owned(),
                what: format!("the tree at {path:?} ({}) is malformed", fmt_head(&dir.base)),
            })?;
        if data.is_empty() && !path.is_empty() {
            return Ok(None);
        }
        self.write_tree(data, &format!("the tree at {path:?}")).map(Some)
    }

    /// Write the files of a `PutDir` (at `dir`, for messages) as a fresh tree.
    fn write_new_tree(&self, dir: &str, new: &NewDir<'_>) -> Result<ObjectId, PublishError> {
        let mut entries = Vec::with_capacity(new.files.len() + new.dirs.len());
        for (&name, bytes) in &new.files {
            let oid = self.write_blob(bytes, &format!("{dir}/{name}"))?;
            entries.push(Entry { mode: EntryKind::Blob.into(), filename: name.into(), oid });
        }
        for (&name, sub) in &new.dirs {
            let oid = self.write_new_tree(&format!("{dir}/{name}"), sub)?;
            entries.push(Entry { mode: EntryKind::Tree.into(), filename: name.into(), oid });
        }
        // Git's tree order, not plain byte order: "a.b" < "a/" < "a0".
        entries.sort();
        let mut data = Vec::new();
        gix::objs::WriteTo::write_to(&gix::objs::Tree { entries }, &mut data)
            .expect("writing to a Vec succeeds and validated names have no NUL");
        self.write_tree(data, &format!("the tree of {dir:?}"))
    }

    /// Write a serialized tree and keep its bytes: the next commit edits the same `sites` tree.
    fn write_tree(&self, data: Vec<u8>, what: &str) -> Result<ObjectId, PublishError> {
        let id = if data.len() >= UNCOMPRESSED_TREE_BYTES {
            gix::objs::Write::write_buf(self.big_trees, gix::objs::Kind::Tree, &data)
        } else {
            self.repo.write_object(RawTree(&data)).map(gix::Id::detach)
        }
        .map_err(|cause| PublishError::WriteObject {
            repo: self.repo_path.to_owned(),
            what: what.to_owned(),
            cause,
        })?;
        self.trees.insert(id, Rc::new(data));
        Ok(id)
    }

    fn write_blob(&self, bytes: &[u8], path: &str) -> Result<ObjectId, PublishError> {
        self.repo.write_blob(bytes).map(|id| id.detach()).map_err(|cause| {
            PublishError::WriteObject {
                repo: self.repo_path.to_owned(),
                what: format!("file {path:?}"),
                cause,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str]) -> std::process::Output {
        Command::new("git").arg("-C").arg(dir).args(args).output().expect("git runs")
    }

    /// Run git, assert success, return trimmed stdout.
    fn git_ok(dir: &Path, args: &[&str]) -> String {
        let out = git(dir, args);
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim_end().to_owned()
    }

    fn fsck(dir: &Path) {
        git_ok(dir, &["fsck", "--strict", "--no-dangling"]);
    }

    fn ident(name: &str) -> Identity {
        Identity { name: name.into(), email: format!("{}@example.com", name.to_lowercase()) }
    }

    fn setup() -> (tempfile::TempDir, Store) {
        let tmp = tempfile::tempdir().unwrap();
        init_repository(tmp.path()).unwrap();
        let store = Store::open(tmp.path(), "prototypes", ident("Author"), ident("Bot")).unwrap();
        (tmp, store)
    }

    fn files(list: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        list.iter().map(|(p, c)| (p.to_string(), c.as_bytes().to_vec())).collect()
    }

    fn put_dir(path: &str, list: &[(&str, &str)]) -> TreeEdit {
        TreeEdit::PutDir { path: path.into(), files: files(list) }
    }

    fn loose_object_count(dir: &Path) -> usize {
        walk_count(&dir.join(".git/objects"))
    }

    fn walk_count(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                if e.file_type().unwrap().is_dir() { walk_count(&e.path()) } else { 1 }
            })
            .sum()
    }

    #[test]
    fn publish_replace_remove_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::write(dir.join("protoforge.yaml"), "x: 1\n").unwrap();
        init_repository(dir).unwrap();
        assert_eq!(git_ok(dir, &["symbolic-ref", "HEAD"]), "refs/heads/main");
        assert!(!git(dir, &["rev-parse", "--verify", "-q", "HEAD"]).status.success());
        let store = Store::open(dir, "prototypes", ident("Author"), ident("Bot")).unwrap();
        assert_eq!(store.branch(), "prototypes");
        assert_eq!(store.head().unwrap(), None);

        // "a.b" < "a/" < "a0" in git's tree order, unlike byte order.
        let msg1 = "Publish alpha-1\n\nProject-Id: alpha-1\nSubmission-Hash: 0123abcd\n";
        let site1 = [
            ("index.html", "<h1>alpha v1</h1>"),
            ("about.html", "about"),
            ("a.b", "dot"),
            ("a/c.txt", "nested"),
            ("a0", "zero"),
            ("assets/images/logo.png", "png"),
        ];
        let c1 = store.commit(None, msg1, &[put_dir("sites/alpha-1", &site1)]).unwrap();
        fsck(dir);
        assert_eq!(store.head().unwrap(), Some(c1));
        assert_eq!(git_ok(dir, &["rev-parse", "prototypes"]), c1.to_string());
        assert_eq!(git_ok(dir, &["log", "--format=%B", "-1", "prototypes"]), msg1.trim_end());
        assert_eq!(
            git_ok(dir, &["log", "-1", "--format=%an <%ae>|%cn <%ce>", "prototypes"]),
            "Author <author@example.com>|Bot <bot@example.com>"
        );
        assert_eq!(
            git_ok(dir, &["show", "prototypes:sites/alpha-1/index.html"]),
            "<h1>alpha v1</h1>"
        );
        assert_eq!(git_ok(dir, &["show", "prototypes:sites/alpha-1/a/c.txt"]), "nested");
        assert_eq!(
            git_ok(dir, &["ls-tree", "prototypes", "sites/alpha-1/index.html"]).split(' ').next(),
            Some("100644")
        );
        assert!(git_ok(dir, &["reflog", "show", "prototypes"]).contains("protoforge: Publish"));
        // The worktree and index are never touched.
        assert!(!dir.join("sites").exists());
        assert!(!dir.join(".git/index").exists());

        let msg2 = "Publish beta-2\n\nProject-Id: beta-2\n";
        let c2 = store
            .commit(
                Some(c1),
                msg2,
                &[
                    put_dir("sites/beta-2", &[("index.html", "beta")]),
                    TreeEdit::PutFile { path: "failed/abc.json".into(), bytes: b"{}".to_vec() },
                ],
            )
            .unwrap();
        fsck(dir);
        assert_eq!(git_ok(dir, &["rev-parse", "prototypes^"]), c1.to_string());
        assert_eq!(git_ok(dir, &["show", "prototypes:sites/beta-2/index.html"]), "beta");
        assert_eq!(git_ok(dir, &["show", "prototypes:failed/abc.json"]), "{}");
        assert_eq!(git_ok(dir, &["show", "prototypes:sites/alpha-1/a0"]), "zero");

        // Replace alpha-1 with fewer files: the stale ones must be gone.
        let c3 = store
            .commit(
                Some(c2),
                "Republish alpha-1",
                &[put_dir("sites/alpha-1", &[("index.html", "v2")])],
            )
            .unwrap();
        fsck(dir);
        assert_eq!(
            git_ok(dir, &["ls-tree", "-r", "--name-only", "prototypes", "sites/alpha-1"]),
            "sites/alpha-1/index.html"
        );
        assert!(!git(dir, &["show", "prototypes:sites/alpha-1/about.html"]).status.success());
        assert_eq!(git_ok(dir, &["show", "prototypes:sites/alpha-1/index.html"]), "v2");

        // Remove a site, something absent, and the only failure (its directory goes too).
        let c4 = store
            .commit(
                Some(c3),
                "Remove beta-2",
                &[
                    TreeEdit::Remove { path: "sites/beta-2".into() },
                    TreeEdit::Remove { path: "sites/never-was".into() },
                    TreeEdit::Remove { path: "nope/deeper/still".into() },
                    TreeEdit::Remove { path: "failed/abc.json".into() },
                ],
            )
            .unwrap();
        fsck(dir);
        assert_eq!(git_ok(dir, &["ls-tree", "--name-only", "prototypes"]), "sites");
        assert_eq!(git_ok(dir, &["ls-tree", "--name-only", "prototypes:sites"]), "alpha-1");
        assert_eq!(
            git_ok(dir, &["log", "--format=%H", "prototypes"]),
            [c4, c3, c2, c1].map(|c| c.to_string()).join("\n")
        );
        assert_eq!(git_ok(dir, &["log", "--format=%B", "-1", "prototypes~2"]), msg2.trim_end());

        let snap = store.snapshot().unwrap();
        assert_eq!(snap.commit_id(), Some(c4));
        assert_eq!(snap.list_dir("sites").unwrap(), ["alpha-1"]);
        assert_eq!(snap.list_dir("").unwrap(), ["sites"]);
        assert!(snap.list_dir("failed").unwrap().is_empty());
        assert!(snap.exists("sites/alpha-1").unwrap());
        assert!(!snap.exists("sites/beta-2").unwrap());
        assert_eq!(snap.read("sites/alpha-1").unwrap(), None, "a directory is not a file");
        assert_eq!(snap.read("sites/alpha-1/index.html/x").unwrap(), None);
    }

    /// Two writers built on the same head; ours is replayed on theirs as tree edits.
    #[test]
    fn replay_re_applies_our_entries_and_keeps_theirs_where_both_changed() {
        let (tmp, store) = setup();
        let dir = tmp.path();
        let base =
            store.commit(None, "base", &[put_dir("sites/a", &[("index.html", "a")])]).unwrap();
        // Theirs: site b, and a new version of a.
        let theirs = store
            .commit(
                Some(base),
                "theirs",
                &[
                    put_dir("sites/b", &[("index.html", "b")]),
                    put_dir("sites/a", &[("index.html", "a2")]),
                    TreeEdit::PutFile {
                        path: "submissions/ab/theirs".into(),
                        bytes: b"b".to_vec(),
                    },
                ],
            )
            .unwrap();
        // Ours, on the old base: site c, a failure record, our own version of a, then c again.
        git_ok(dir, &["update-ref", "refs/heads/prototypes", &base.to_string()]);
        let c1 = store
            .commit(
                Some(base),
                "ours 1\n\nPrototype-Id: c\n",
                &[
                    put_dir("sites/c", &[("index.html", "c")]),
                    TreeEdit::PutFile { path: "failed/x.json".into(), bytes: b"{}".to_vec() },
                    // The same two-hex prefix as theirs: both records must survive.
                    TreeEdit::PutFile { path: "submissions/ab/ours".into(), bytes: b"c".to_vec() },
                ],
            )
            .unwrap();
        let c2 = store
            .commit(Some(c1), "ours 2", &[put_dir("sites/a", &[("index.html", "ours")])])
            .unwrap();
        let c3 = store
            .commit(Some(c2), "ours 3", &[put_dir("sites/c", &[("index.html", "c2")])])
            .unwrap();

        let r = store.replay(Some(c3), theirs, &[c1, c2, c3]).unwrap();
        assert_eq!(store.head().unwrap(), Some(r.head));
        assert_eq!((r.commits, r.dropped), (2, 1), "{r:?}");
        assert_eq!(r.kept_theirs, ["sites/a"]);
        let snap = store.snapshot().unwrap();
        let read = |p: &str| snap.read(p).unwrap().map(|b| String::from_utf8(b).unwrap());
        assert_eq!(read("sites/a/index.html").as_deref(), Some("a2"));
        assert_eq!(read("sites/b/index.html").as_deref(), Some("b"));
        assert_eq!(read("sites/c/index.html").as_deref(), Some("c2"));
        assert_eq!(read("failed/x.json").as_deref(), Some("{}"));
        assert_eq!(read("submissions/ab/theirs").as_deref(), Some("b"));
        assert_eq!(read("submissions/ab/ours").as_deref(), Some("c"));
        // A straight line on top of theirs, messages and trailers kept.
        let log = git_ok(dir, &["log", "--format=%s|%P", "prototypes"]);
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 4, "{log}");
        assert!(lines[0].starts_with("ours 3|") && lines[1].starts_with("ours 1|"), "{log}");
        assert_eq!(lines[2], format!("theirs|{base}"));
        assert!(
            git_ok(dir, &["log", "-1", "--format=%B", "prototypes~1"]).contains("Prototype-Id: c")
        );
        fsck(dir);
        // The branch moved meanwhile: a conflict, nothing changed.
        let err = store.replay(Some(c3), theirs, &[c1]).unwrap_err();
        assert!(matches!(err, PublishError::Conflict { .. }), "{err}");
        assert_eq!(store.head().unwrap(), Some(r.head));
    }

    #[test]
    fn snapshot_reads_nested_files_sorted() {
        let (_tmp, store) = setup();
        let site = [("z.html", "z"), ("a/b/c.txt", "c"), ("a.b", "dot"), ("a0", "0")];
        store.commit(None, "site", &[put_dir("sites/x", &site)]).unwrap();
        let snap = store.snapshot().unwrap();
        let all = snap.read_dir_recursive("sites/x").unwrap();
        let names: Vec<_> = all.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(names, ["a.b", "a/b/c.txt", "a0", "z.html"]);
        assert_eq!(all[1].1, b"c");
        assert_eq!(snap.read("sites/x/a/b/c.txt").unwrap().as_deref(), Some(&b"c"[..]));
        assert!(snap.read_dir_recursive("sites/none").unwrap().is_empty());
    }

    #[test]
    fn edits_apply_in_order() {
        let (tmp, store) = setup();
        let c1 = store
            .commit(
                None,
                "ordered",
                &[
                    put_dir("sites/x", &[("index.html", "i")]),
                    TreeEdit::PutFile { path: "sites/x/extra.txt".into(), bytes: b"e".to_vec() },
                    TreeEdit::Remove { path: "sites/x/index.html".into() },
                    TreeEdit::PutFile { path: "notes".into(), bytes: b"file".to_vec() },
                    TreeEdit::PutFile { path: "failed/f.json".into(), bytes: b"1".to_vec() },
                ],
            )
            .unwrap();
        fsck(tmp.path());
        let snap = store.snapshot().unwrap();
        assert_eq!(snap.list_dir("sites/x").unwrap(), ["extra.txt"]);
        // Removing below a file is a no-op, not a way to delete the file.
        let c2 = store
            .commit(
                Some(c1),
                "noop removal",
                &[TreeEdit::Remove { path: "failed/f.json/deeper".into() }],
            )
            .unwrap();
        assert_eq!(store.snapshot().unwrap().read("failed/f.json").unwrap(), Some(b"1".to_vec()));
        // A file may be replaced by a directory, and an empty PutDir removes.
        store
            .commit(
                Some(c2),
                "file to dir",
                &[
                    TreeEdit::PutFile { path: "notes/today.txt".into(), bytes: b"t".to_vec() },
                    TreeEdit::PutDir { path: "sites/x".into(), files: Vec::new() },
                ],
            )
            .unwrap();
        fsck(tmp.path());
        let snap = store.snapshot().unwrap();
        assert_eq!(snap.read("notes/today.txt").unwrap(), Some(b"t".to_vec()));
        assert!(!snap.exists("sites").unwrap());
    }

    #[test]
    fn stale_expected_head_is_a_conflict_and_leaves_the_ref() {
        let (tmp, store) = setup();
        let dir = tmp.path();
        let c1 = store.commit(None, "one", &[put_dir("sites/a", &[("i", "1")])]).unwrap();
        let c2 = store.commit(Some(c1), "two", &[put_dir("sites/b", &[("i", "2")])]).unwrap();

        let err = store.commit(Some(c1), "stale", &[put_dir("sites/c", &[("i", "3")])]);
        assert!(
            matches!(err, Err(PublishError::Conflict { expected, actual })
                if expected == Some(c1) && actual == Some(c2)),
            "{err:?}"
        );
        let err = store.commit(None, "root again", &[]);
        assert!(
            matches!(err, Err(PublishError::Conflict { expected: None, actual })
                if actual == Some(c2)),
            "{err:?}"
        );
        assert_eq!(git_ok(dir, &["rev-parse", "prototypes"]), c2.to_string());

        // The branch does not exist: expecting a head is a conflict too.
        let other = Store::open(dir, "other", ident("A"), ident("B")).unwrap();
        let err = other.commit(Some(c2), "x", &[]);
        assert!(
            matches!(err, Err(PublishError::Conflict { expected, actual: None })
                if expected == Some(c2)),
            "{err:?}"
        );
        assert!(!git(dir, &["rev-parse", "--verify", "-q", "refs/heads/other"]).status.success());

        // The race the early check cannot see: the branch moves between check and swap.
        let orphan = store.repo.new_commit_as(
            signature(&ident("A"), gix::date::Time::now_utc()).to_ref(&mut Default::default()),
            signature(&ident("A"), gix::date::Time::now_utc()).to_ref(&mut Default::default()),
            "orphan",
            gix::ObjectId::empty_tree(gix::hash::Kind::Sha1),
            Some(c1),
        );
        let orphan = orphan.unwrap().id;
        let committer = signature(&ident("B"), gix::date::Time::now_utc());
        let err = store.move_branch(Some(c1), orphan, "race", &committer);
        assert!(
            matches!(err, Err(PublishError::Conflict { expected, actual })
                if expected == Some(c1) && actual == Some(c2)),
            "{err:?}"
        );
        let err = store.move_branch(None, orphan, "race", &committer);
        assert!(matches!(err, Err(PublishError::Conflict { expected: None, .. })), "{err:?}");
        assert_eq!(git_ok(dir, &["rev-parse", "prototypes"]), c2.to_string());
        eprintln!("{}", store.commit(Some(c1), "m", &[]).unwrap_err());
    }

    #[test]
    fn hostile_paths_are_rejected_before_anything_is_written() {
        let (tmp, store) = setup();
        let dir = tmp.path();
        let c1 = store.commit(None, "one", &[put_dir("sites/a", &[("i", "1")])]).unwrap();
        let objects = loose_object_count(dir);
        let bad = [
            "",
            "/etc/passwd",
            "sites//x",
            "sites/x/",
            "sites/./x",
            "sites/../x",
            "..",
            "sites/x\\..\\y",
            "sites/x\0y",
            ".git",
            "sites/.git",
            "sites/.GIT",
            ".Git/hooks/pre-commit",
            "sites/GIT~1",
            "sites/.git.",
            "sites/CON",
        ];
        for path in bad {
            let edits = [
                TreeEdit::PutDir { path: path.into(), files: files(&[("i", "x")]) },
                TreeEdit::PutFile { path: path.into(), bytes: b"x".to_vec() },
                TreeEdit::Remove { path: path.into() },
                TreeEdit::PutDir { path: "sites/ok".into(), files: files(&[(path, "x")]) },
                TreeEdit::PutDir {
                    path: "sites/ok".into(),
                    files: files(&[("index.html", "x"), (path, "x")]),
                },
            ];
            for edit in edits {
                let err = store.commit(Some(c1), "evil", std::slice::from_ref(&edit));
                assert!(matches!(err, Err(PublishError::InvalidPath { .. })), "{edit:?}: {err:?}");
            }
        }
        let clashes = [
            files(&[("a", "file"), ("a/b", "below a file")]),
            files(&[("a/b", "below"), ("a", "file over dir")]),
            files(&[("i", "1"), ("i", "2")]),
        ];
        for list in clashes {
            let err = store.commit(
                Some(c1),
                "clash",
                &[TreeEdit::PutDir { path: "sites/z".into(), files: list }],
            );
            assert!(matches!(err, Err(PublishError::InvalidPath { .. })), "{err:?}");
        }
        let err = store.commit(Some(c1), "nul\0", &[]);
        assert!(matches!(err, Err(PublishError::InvalidMessage { .. })), "{err:?}");
        assert_eq!(store.head().unwrap(), Some(c1));
        assert_eq!(loose_object_count(dir), objects, "validation failed after writing objects");
        // Reads validate too, rather than answering for a path that cannot exist.
        let snap = store.snapshot().unwrap();
        assert!(matches!(snap.read("sites/../x"), Err(PublishError::InvalidPath { .. })));
    }

    #[test]
    fn snapshot_stays_on_its_commit() {
        let (_tmp, store) = setup();
        let empty = store.snapshot().unwrap();
        assert_eq!(empty.commit_id(), None);
        assert!(empty.list_dir("sites").unwrap().is_empty());
        assert_eq!(empty.read("sites/a/index.html").unwrap(), None);

        let c1 = store.commit(None, "v1", &[put_dir("sites/a", &[("index.html", "v1")])]).unwrap();
        let old = store.snapshot().unwrap();
        let c2 = store
            .commit(
                Some(c1),
                "v2",
                &[put_dir("sites/a", &[("index.html", "v2")]), put_dir("sites/b", &[("i", "b")])],
            )
            .unwrap();
        assert_eq!(old.commit_id(), Some(c1));
        assert_eq!(old.read("sites/a/index.html").unwrap(), Some(b"v1".to_vec()));
        assert_eq!(old.list_dir("sites").unwrap(), ["a"]);
        let new = store.snapshot().unwrap();
        assert_eq!(new.commit_id(), Some(c2));
        assert_eq!(new.read("sites/a/index.html").unwrap(), Some(b"v2".to_vec()));
        assert_eq!(new.list_dir("sites").unwrap(), ["a", "b"]);
        assert_eq!(empty.read("sites/a/index.html").unwrap(), None);
    }

    #[test]
    fn held_lock_is_retried_then_reported() {
        let (tmp, store) = setup();
        let c1 = store.commit(None, "one", &[put_dir("sites/a", &[("i", "1")])]).unwrap();
        let lock = tmp.path().join(".git/refs/heads/prototypes.lock");
        std::fs::write(&lock, "").unwrap();
        let started = std::time::Instant::now();
        let err = store.commit(Some(c1), "two", &[put_dir("sites/b", &[("i", "2")])]).unwrap_err();
        let elapsed = started.elapsed();
        assert!(
            matches!(&err, PublishError::Locked { attempts, .. } if *attempts == LOCK_ATTEMPTS),
            "{err:?}"
        );
        assert!(elapsed >= Duration::from_millis(50), "no backoff: {elapsed:?}");
        assert!(elapsed < Duration::from_secs(2), "too slow: {elapsed:?}");
        let msg = err.to_string();
        assert!(msg.contains("prototypes.lock") && msg.contains("hint"), "{msg}");
        eprintln!("{msg}");
        assert_eq!(store.head().unwrap(), Some(c1));
        std::fs::remove_file(&lock).unwrap();
        let c2 = store.commit(Some(c1), "two", &[put_dir("sites/b", &[("i", "2")])]).unwrap();
        assert_eq!(store.head().unwrap(), Some(c2));
    }

    #[test]
    fn init_and_open_rules() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        init_repository(dir).unwrap();
        let err = init_repository(dir).unwrap_err();
        assert!(matches!(err, PublishError::AlreadyInitialized { .. }), "{err:?}");

        // Discovered from a subdirectory.
        std::fs::create_dir_all(dir.join("inbox/new")).unwrap();
        let store =
            Store::open(&dir.join("inbox/new"), "prototypes", ident("A"), ident("B")).unwrap();
        assert_eq!(store.repo_path().canonicalize().unwrap(), dir.canonicalize().unwrap());

        // A repository nested inside another is opened itself, not its parent.
        let inner = dir.join("inner");
        init_repository(&inner).unwrap();
        let store = Store::open(&inner, "prototypes", ident("A"), ident("B")).unwrap();
        assert_eq!(store.repo_path().canonicalize().unwrap(), inner.canonicalize().unwrap());
        // ...and a broken .git there is an error rather than a silent walk upward.
        let broken = dir.join("broken");
        std::fs::create_dir_all(broken.join(".git")).unwrap();
        let err = Store::open(&broken, "prototypes", ident("A"), ident("B")).unwrap_err();
        assert!(matches!(err, PublishError::Open { .. }), "{err:?}");
        eprintln!("{err}");

        for branch in ["", "bad..name", "with space", "HEAD", "x.lock", "-x/../y", "a\\b"] {
            let err = Store::open(dir, branch, ident("A"), ident("B")).unwrap_err();
            assert!(matches!(err, PublishError::InvalidBranch { .. }), "{branch:?}: {err:?}");
        }
        let bad = Identity { name: "Eve <x@y>".into(), email: "e@x".into() };
        let err = Store::open(dir, "prototypes", bad, ident("B")).unwrap_err();
        assert!(matches!(err, PublishError::InvalidIdentity { .. }), "{err:?}");

        let missing = dir.join("no/such/dir");
        let err = Store::open(&missing, "prototypes", ident("A"), ident("B"));
        // tempdirs live under a directory that is not a repository.
        if let Err(err) = err {
            assert!(err.to_string().contains("no/such/dir"), "{err}");
        }
    }

    #[test]
    fn splice_matches_a_full_rebuild() {
        // Names chosen so that git's order differs from byte order ("a.b" < "a/" < "a0").
        let names = ["a", "a.b", "a0", "a-", "b", "ab", "a.", "0", "z", "a.b.c"];
        let mut seed = 0x2545_f491_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let id = |n: u64| ObjectId::from_bytes_or_panic(&[n as u8; 20]);
        let kind = |n: u64| if n.is_multiple_of(2) { EntryKind::Tree } else { EntryKind::Blob };
        for _ in 0..500 {
            let mut base = gix::objs::Tree::empty();
            for name in names {
                if next().is_multiple_of(2) {
                    let n = next();
                    base.entries.push(Entry {
                        mode: kind(n).into(),
                        filename: name.into(),
                        oid: id(n),
                    });
                }
            }
            base.entries.sort();
            let mut changes: Vec<(BString, Option<(EntryKind, ObjectId)>)> = Vec::new();
            for name in names {
                match next() % 4 {
                    0 => changes.push((name.into(), None)),
                    1 => {
                        let n = next();
                        changes.push((name.into(), Some((kind(n), id(n)))));
                    }
                    _ => {}
                }
            }
            // As write_dir passes them: sorted by name, from a BTreeMap.
            changes.sort_by(|a, b| a.0.cmp(&b.0));
            let mut expected = base.clone();
            expected.entries.retain(|e| !changes.iter().any(|(n, _)| *n == e.filename));
            for (name, value) in &changes {
                if let Some((kind, oid)) = value {
                    let entry = Entry { mode: (*kind).into(), filename: name.clone(), oid: *oid };
                    expected.entries.push(entry);
                }
            }
            expected.entries.sort();
            let (mut base_bytes, mut expected_bytes) = (Vec::new(), Vec::new());
            gix::objs::WriteTo::write_to(&base, &mut base_bytes).unwrap();
            gix::objs::WriteTo::write_to(&expected, &mut expected_bytes).unwrap();
            assert_eq!(
                splice_tree(&base_bytes, 20, &changes).unwrap(),
                expected_bytes,
                "{changes:?}"
            );
        }
        assert_eq!(splice_tree(b"40000 a", 20, &[]), None, "truncated trees are refused");
    }

    #[test]
    fn large_trees_are_stored_uncompressed_and_read_back() {
        let (tmp, store) = setup();
        let dir = tmp.path();
        let pad = "x".repeat(40);
        let sites: Vec<_> =
            (0..1_100).map(|i| put_dir(&format!("sites/{i:04}-{pad}"), &[("i", "same")])).collect();
        let c1 = store.commit(None, "many", &sites).unwrap();
        let size = git_ok(dir, &["cat-file", "-s", "prototypes:sites"]).parse::<usize>().unwrap();
        assert!(size >= UNCOMPRESSED_TREE_BYTES, "{size}");
        let c2 =
            store.commit(Some(c1), "one more", &[put_dir("sites/new", &[("i", "n")])]).unwrap();
        fsck(dir);
        assert_eq!(
            git_ok(dir, &["ls-tree", "--name-only", "prototypes:sites"]).lines().count(),
            1_101
        );
        // A fresh store has nothing cached, so this reads the uncompressed object from disk.
        let fresh = Store::open(dir, "prototypes", ident("A"), ident("B")).unwrap();
        let snap = fresh.snapshot().unwrap();
        assert_eq!(snap.commit_id(), Some(c2));
        assert_eq!(snap.list_dir("sites").unwrap().len(), 1_101);
        assert_eq!(snap.read(&format!("sites/0042-{pad}/i")).unwrap(), Some(b"same".to_vec()));
    }

    #[test]
    fn racing_writers_lose_no_update() {
        let (tmp, _store) = setup();
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let dir = tmp.path().to_owned();
                std::thread::spawn(move || {
                    // Store is not Send: each writer (thread or process) opens its own.
                    let store = Store::open(&dir, "prototypes", ident("A"), ident("B")).unwrap();
                    let mut conflicts = 0;
                    for i in 0..10 {
                        let edit = TreeEdit::PutFile {
                            path: format!("failed/{w}-{i}.json"),
                            bytes: b"{}".to_vec(),
                        };
                        loop {
                            let head = store.head().unwrap();
                            match store.commit(
                                head,
                                &format!("w{w} i{i}"),
                                std::slice::from_ref(&edit),
                            ) {
                                Ok(_) => break,
                                Err(PublishError::Conflict { .. }) => conflicts += 1,
                                Err(err) => panic!("{err}"),
                            }
                        }
                    }
                    conflicts
                })
            })
            .collect();
        let conflicts: usize = writers.into_iter().map(|w| w.join().unwrap()).sum();
        let dir = tmp.path();
        fsck(dir);
        assert_eq!(
            git_ok(dir, &["rev-list", "--count", "prototypes"]),
            "40",
            "{conflicts} conflicts"
        );
        let store = Store::open(dir, "prototypes", ident("A"), ident("B")).unwrap();
        assert_eq!(store.snapshot().unwrap().list_dir("failed").unwrap().len(), 40);
    }
}

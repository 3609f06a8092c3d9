//! Keeps the prototypes branch in step with a remote, so that builders without a server (a
//! GitHub Actions run, a cron job, several machines) share one branch.
//!
//! 1. **fetch** the remote's branch into `refs/protoforge/remotes/<remote>/<branch>`, a ref
//!    only protoforge moves, with gix (`git fetch` where gix's transport cannot);
//! 2. **integrate** it: the local branch fast-forwards to it, or, when both moved, our commits
//!    are replayed on top of it ([`Store::replay`]);
//! 3. build as usual, then **push with a lease**: the remote must still be at the head we
//!    fetched. If another writer got there first, back to 1, a bounded number of times.
//!
//! Invariants:
//! - Nothing is forced over work that is not ours. Every push names the head it replaces
//!   (`--force-with-lease=<ref>:<head>`), and the remote refuses it if anyone pushed since our
//!   fetch; what we push always descends from that head, except a history purge, which
//!   replaces exactly that head and nothing newer.
//! - Replay is a tree edit, never a merge: unrelated sites never conflict, and where both
//!   sides changed one entry the remote's version wins (first writer wins).
//! - The local branch moves only by compare-and-swap. When the retries run out it still holds
//!   our commits, so nothing is lost: the next run pushes them, and the remote is left as the
//!   other writers left it.
//! - gix 0.90 cannot push, so step 3 runs `git push` (README, "Pushing"); fetching uses gix's
//!   transports (file, ssh, http(s) through reqwest with rustls), which honour the same
//!   `http.extraHeader` and credential helpers that `actions/checkout` sets up.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use gix::ObjectId;
use gix::refs::transaction::{Change, LogChange, PreviousValue, RefEdit, RefLog};
use gix::refs::{FullName, Target};

use super::{PublishError, Replayed, Store};

/// Why a sync with the remote failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    #[error(
        "cannot fetch {branch} from the remote `{remote}`: {message}; hint: check the name or \
         URL (`git -C {repo} remote -v`) and that this machine can reach it",
        repo = repo.display()
    )]
    Fetch { repo: PathBuf, remote: String, branch: String, message: String },
    #[error("cannot push {branch} to the remote `{remote}`: {message}; hint: {hint}")]
    Push { remote: String, branch: String, message: String, hint: &'static str },
    #[error(
        "the remote `{remote}` kept moving: {tries} push(es) of {branch} lost the race to \
         other writers. The remote is as they left it; our {commits} commit(s) stay on the \
         local branch. Run again: a run from this repo pushes them, and a fresh one (CI) \
         rebuilds what is still pending (or raise push.retries)"
    )]
    Raced { remote: String, branch: String, tries: u32, commits: usize },
    #[error(
        "`{remote}` is not a usable remote name or URL: {reason}; hint: use a configured remote \
         (`git remote -v`) or a URL"
    )]
    BadRemote { remote: String, reason: &'static str },
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// How hard to try before giving up on a racing remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushOptions {
    /// Pushes after the first, each after a fresh fetch and replay.
    pub retries: u32,
    /// Wait before the first retry; doubled for each further one, with jitter.
    pub backoff: Duration,
    /// Replace the remote's head even though ours does not descend from it (a history purge);
    /// the lease still makes sure it is the head we fetched.
    pub rewrite: bool,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions { retries: 5, backoff: Duration::from_millis(200), rewrite: false }
    }
}

/// What bringing the remote's branch in did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Integrated {
    /// The remote has no such branch yet (the first push creates it).
    RemoteEmpty,
    /// Both are at the same commit.
    Same,
    /// The local branch was behind (or absent) and now is at the remote's head.
    FastForward,
    /// The local branch has commits the remote lacks, and nothing is missing from it.
    Ahead { commits: usize },
    /// Both moved: our commits were replayed on top of the remote's head.
    Replayed(Replayed),
}

/// What [`Remote::push`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// The head the remote now has from us; None when there was nothing to push.
    pub head: Option<ObjectId>,
    /// Pushes made (1 when the first one passed).
    pub tries: u32,
    /// Commits re-made on top of a moved remote, over all retries.
    pub replayed: usize,
    /// Entries both sides changed, where the remote's version was kept.
    pub kept_theirs: Vec<String>,
    pub duration: Duration,
}

/// One remote, one branch: fetch, integrate, push.
pub struct Remote<'s> {
    store: &'s Store,
    remote: String,
    tracking: FullName,
}

impl<'s> Remote<'s> {
    /// `remote` is a configured remote's name (`origin`) or a URL or path.
    pub fn new(store: &'s Store, remote: &str) -> Result<Remote<'s>, RemoteError> {
        let bad = |reason| RemoteError::BadRemote { remote: remote.to_owned(), reason };
        // SECURITY: the name goes to `git push` as an argument: one starting with `-` would be
        // read as an option.
        if remote.is_empty() || remote.starts_with('-') {
            return Err(bad("it is empty or starts with `-`"));
        }
        if remote.chars().any(char::is_control) {
            return Err(bad("it has control characters"));
        }
        // A remote's own tracking ref; a URL gets one named after its hash.
        let label = if remote.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && !remote.starts_with('.')
        {
            remote.to_owned()
        } else {
            format!("url-{}", &hex_digest(remote.as_bytes())[..12])
        };
        // SECURITY: our own namespace, not `refs/remotes/`: the lease must be the head *we*
        // fetched, and a plain `git fetch` (by a person, by actions/checkout) moves
        // `refs/remotes/<remote>/*` to heads we never integrated.
        let tracking = format!("refs/protoforge/remotes/{label}/{}", store.branch());
        let tracking = FullName::try_from(tracking.as_str())
            .map_err(|_| bad("it does not make a valid ref name"))?;
        Ok(Remote { store, remote: remote.to_owned(), tracking })
    }

    pub fn remote(&self) -> &str {
        &self.remote
    }

    /// The remote's head as of the last fetch.
    pub fn tracked(&self) -> Result<Option<ObjectId>, RemoteError> {
        let repo = self.open()?;
        let found = repo.try_find_reference(self.tracking.as_ref()).map_err(|e| {
            self.fetch_error(format!("cannot read {}: {e:?}", self.tracking.as_bstr()))
        })?;
        Ok(found.and_then(|r| r.target().try_id().map(ToOwned::to_owned)))
    }

    /// Fetch the remote's branch; returns its head (None: no such branch there).
    ///
    /// gix first. Where its transport cannot (an auth scheme it lacks, a helper it does not
    /// run), `git fetch` takes over with the same refspec, and a warning names gix's error.
    pub fn fetch(&self) -> Result<Option<ObjectId>, RemoteError> {
        match self.fetch_gix() {
            Ok(head) => Ok(head),
            Err(gix_error) => match self.fetch_git() {
                Ok(head) => {
                    tracing::warn!(remote = %self.remote, "gix could not fetch, git did: {gix_error}");
                    Ok(head)
                }
                Err(git_error) => Err(self.fetch_error(format!(
                    "{}; `git fetch` failed too: {}",
                    inner_message(&gix_error),
                    inner_message(&git_error)
                ))),
            },
        }
    }

    /// The fallback: `git fetch` into the tracking ref, then read it.
    fn fetch_git(&self) -> Result<Option<ObjectId>, RemoteError> {
        let remote_ref = format!("refs/heads/{}", self.store.branch());
        let listed = Command::new("git")
            .arg("-C")
            .arg(self.store.repo_path())
            .args(["ls-remote", "--heads", "--"])
            .arg(&self.remote)
            .arg(&remote_ref)
            .env("GIT_TERMINAL_PROMPT", "0")
            .output()
            .map_err(|e| self.fetch_error(format!("cannot run git: {e}")))?;
        if !listed.status.success() {
            return Err(self.fetch_error(last_lines(&String::from_utf8_lossy(&listed.stderr), 4)));
        }
        if String::from_utf8_lossy(&listed.stdout).trim().is_empty() {
            self.set_tracking(None)?;
            return Ok(None);
        }
        let fetched = Command::new("git")
            .arg("-C")
            .arg(self.store.repo_path())
            .args(["fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--"])
            .arg(&self.remote)
            .arg(format!("+{remote_ref}:{}", self.tracking.as_bstr()))
            .env("GIT_TERMINAL_PROMPT", "0")
            .output()
            .map_err(|e| self.fetch_error(format!("cannot run git: {e}")))?;
        if !fetched.status.success() {
            return Err(self.fetch_error(last_lines(&String::from_utf8_lossy(&fetched.stderr), 4)));
        }
        self.tracked()
    }

    /// Fetch with gix's own transports.
    fn fetch_gix(&self) -> Result<Option<ObjectId>, RemoteError> {
        use gix::remote::Direction;
        let repo = self.open()?;
        let err = |what: &str, e: &dyn std::fmt::Debug| self.fetch_error(format!("{what}: {e:?}"));
        let remote_ref = format!("refs/heads/{}", self.store.branch());
        let spec = format!("+{remote_ref}:{}", self.tracking.as_bstr());
        let mut remote = repo
            .find_fetch_remote(Some(self.remote.as_str().into()))
            .map_err(|e| err("no such remote", &e))?
            .with_fetch_tags(gix::remote::fetch::Tags::None);
        // Only our branch, into our tracking ref: not every branch the remote's config names.
        remote
            .replace_refspecs([spec.as_str()], Direction::Fetch)
            .map_err(|e| err("bad refspec", &e))?;
        let interrupt = AtomicBool::new(false);
        let prepared = remote
            .connect(Direction::Fetch)
            .map_err(|e| err("cannot connect", &e))?
            .prepare_fetch(gix::progress::Discard, Default::default())
            .map_err(|e| err("the remote did not list its refs", &e))?;
        let advertised = prepared
            .ref_map()
            .mappings
            .iter()
            .find(|m| m.remote.as_name().is_some_and(|n| n == remote_ref.as_str()))
            .and_then(|m| m.remote.as_id().map(ToOwned::to_owned));
        // No such branch there: nothing to receive (gix refuses a fetch that maps nothing).
        let head = match advertised {
            None => None,
            Some(head) => {
                prepared
                    .receive(gix::progress::Discard, &interrupt)
                    .map_err(|e| err("the fetch failed", &e))?;
                Some(head)
            }
        };
        if head.is_none() {
            // The branch is gone (or never was): forget a stale tracking ref, so that the
            // next push's lease says "must not exist".
            self.set_tracking(None)?;
        }
        Ok(head)
    }

    /// Bring the remote's head `remote` into the local branch. `base` is the remote's head as
    /// of our previous sync: our commits are the local ones since then, so that history the
    /// remote rewrote (a purge) is not replayed back onto it.
    pub fn integrate(
        &self,
        base: Option<ObjectId>,
        remote: Option<ObjectId>,
    ) -> Result<Integrated, RemoteError> {
        let Some(remote) = remote else { return Ok(Integrated::RemoteEmpty) };
        let Some(local) = self.store.head()? else {
            self.store.fast_forward(None, remote)?;
            return Ok(Integrated::FastForward);
        };
        if local == remote {
            return Ok(Integrated::Same);
        }
        let hidden: Vec<ObjectId> = base.into_iter().chain([remote]).collect();
        let ours = self.only_in(local, &hidden)?;
        if ours.is_empty() {
            // Nothing of ours is unpushed: take the remote's branch as it is (a fast-forward,
            // or the remote's rewritten history).
            self.store.fast_forward(Some(local), remote)?;
            return Ok(Integrated::FastForward);
        }
        if self.only_in(remote, &[local])?.is_empty() {
            return Ok(Integrated::Ahead { commits: ours.len() });
        }
        Ok(Integrated::Replayed(self.store.replay(Some(local), remote, &ours)?))
    }

    /// Fetch and integrate: the start of a run.
    pub fn pull(&self) -> Result<(Option<ObjectId>, Integrated), RemoteError> {
        let base = self.tracked()?;
        let remote = self.fetch()?;
        Ok((remote, self.integrate(base, remote)?))
    }

    /// Take the remote's branch as it is, dropping local commits it lacks (after a purge that
    /// could not be pushed: the pruned branch it was made from was pushed already).
    pub fn reset_to_remote(&self) -> Result<Option<ObjectId>, RemoteError> {
        let remote = self.fetch()?;
        if let Some(remote) = remote {
            self.store.fast_forward(self.store.head()?, remote)?;
        }
        Ok(remote)
    }

    /// Push the local branch with a lease on the remote head last fetched; when the remote
    /// moved, fetch, replay and try again, at most `options.retries` more times.
    pub fn push(&self, options: PushOptions) -> Result<Pushed, RemoteError> {
        let start = Instant::now();
        let mut pushed = Pushed {
            head: None,
            tries: 0,
            replayed: 0,
            kept_theirs: Vec::new(),
            duration: Duration::ZERO,
        };
        let mut lease = self.tracked()?;
        loop {
            let Some(local) = self.store.head()? else { break };
            if Some(local) == lease {
                break;
            }
            // SECURITY: never push what does not contain the leased head (that would drop
            // commits from the remote); bring it in first.
            if let Some(head) = lease
                && !options.rewrite
                && !self.only_in(head, &[local])?.is_empty()
            {
                if let Integrated::Replayed(r) = self.integrate(Some(head), Some(head))? {
                    pushed.replayed += r.commits;
                    pushed.kept_theirs.extend(r.kept_theirs);
                }
                continue;
            }
            pushed.tries += 1;
            match self.git_push(local, lease, options.rewrite)? {
                PushResult::Done => {
                    self.set_tracking(Some(local))?;
                    pushed.head = Some(local);
                    break;
                }
                PushResult::Moved(why) => {
                    if pushed.tries > options.retries {
                        let commits = self.only_in(local, &Vec::from_iter(lease))?.len();
                        return Err(RemoteError::Raced {
                            remote: self.remote.clone(),
                            branch: self.store.branch().to_owned(),
                            tries: pushed.tries,
                            commits,
                        });
                    }
                    tracing::info!(
                        remote = %self.remote, attempt = pushed.tries,
                        "the remote moved ({why}); fetching and replaying"
                    );
                    std::thread::sleep(backoff(options.backoff, pushed.tries));
                    let base = lease;
                    lease = self.fetch()?;
                    if options.rewrite {
                        // A rewrite is only valid against the head it was made from: give up
                        // on it, and take the remote's branch as it is.
                        return Err(RemoteError::Raced {
                            remote: self.remote.clone(),
                            branch: self.store.branch().to_owned(),
                            tries: pushed.tries,
                            commits: 1,
                        });
                    }
                    if let Integrated::Replayed(r) = self.integrate(base, lease)? {
                        pushed.replayed += r.commits;
                        pushed.kept_theirs.extend(r.kept_theirs);
                    }
                }
            }
        }
        pushed.duration = start.elapsed();
        Ok(pushed)
    }

    /// Commits reachable from `tip` but not from `hidden`, oldest first.
    fn only_in(&self, tip: ObjectId, hidden: &[ObjectId]) -> Result<Vec<ObjectId>, RemoteError> {
        let repo = self.open()?;
        let walk =
            repo.rev_walk([tip]).with_hidden(hidden.iter().copied()).all().map_err(|e| {
                self.fetch_error(format!("cannot walk the history of {tip}: {e:?}"))
            })?;
        let mut out = Vec::new();
        for info in walk {
            let info =
                info.map_err(|e| self.fetch_error(format!("cannot walk from {tip}: {e:?}")))?;
            out.push(info.id);
        }
        out.reverse();
        Ok(out)
    }

    fn set_tracking(&self, head: Option<ObjectId>) -> Result<(), RemoteError> {
        if head.is_none() && self.tracked()?.is_none() {
            return Ok(());
        }
        let repo = self.open()?;
        let change = match head {
            Some(id) => Change::Update {
                log: LogChange {
                    mode: RefLog::AndReference,
                    force_create_reflog: false,
                    message: "protoforge: pushed".into(),
                },
                expected: PreviousValue::Any,
                new: Target::Object(id),
            },
            None => Change::Delete { expected: PreviousValue::Any, log: RefLog::AndReference },
        };
        let edit = RefEdit { change, name: self.tracking.clone(), deref: false };
        repo.edit_reference(edit)
            .map(|_| ())
            .map_err(|e| self.fetch_error(format!("cannot set {}: {e:?}", self.tracking.as_bstr())))
    }

    /// One `git push` with a lease on `lease` (None: the branch must not exist there yet).
    fn git_push(
        &self,
        local: ObjectId,
        lease: Option<ObjectId>,
        rewrite: bool,
    ) -> Result<PushResult, RemoteError> {
        let dest = format!("refs/heads/{}", self.store.branch());
        let expect = lease.map(|l| l.to_string()).unwrap_or_default();
        let plus = if rewrite { "+" } else { "" };
        let output = Command::new("git")
            .arg("-C")
            .arg(self.store.repo_path())
            .args(["push", "--porcelain", "--no-verify"])
            .arg(format!("--force-with-lease={dest}:{expect}"))
            .arg("--")
            .arg(&self.remote)
            .arg(format!("{plus}{local}:{dest}"))
            .env("GIT_TERMINAL_PROMPT", "0")
            .output()
            .map_err(|e| self.push_error(format!("cannot run git: {e}"), "install git"))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        match parse_porcelain(&stdout, &dest) {
            Some(Status::Ok) if output.status.success() => Ok(PushResult::Done),
            Some(Status::Raced(why)) => Ok(PushResult::Moved(why)),
            Some(Status::Refused(why)) => Err(self.push_error(
                why,
                "the remote refused the update (a hook or branch protection); see its message",
            )),
            _ => Err(self.push_error(
                last_lines(&stderr, 6),
                "check the remote's URL and that this machine may push to it (for GitHub \
                 Actions: `permissions: contents: write`)",
            )),
        }
    }

    fn open(&self) -> Result<gix::Repository, RemoteError> {
        gix::open(self.store.repo_path()).map_err(|e| self.fetch_error(format!("{e:?}")))
    }

    fn fetch_error(&self, message: String) -> RemoteError {
        RemoteError::Fetch {
            repo: self.store.repo_path().to_owned(),
            remote: self.remote.clone(),
            branch: self.store.branch().to_owned(),
            message,
        }
    }

    fn push_error(&self, message: String, hint: &'static str) -> RemoteError {
        RemoteError::Push {
            remote: self.remote.clone(),
            branch: self.store.branch().to_owned(),
            message,
            hint,
        }
    }
}

enum PushResult {
    Done,
    /// The remote is not where our lease says: someone else pushed.
    Moved(String),
}

#[derive(Debug, PartialEq, Eq)]
enum Status {
    Ok,
    Raced(String),
    Refused(String),
}

/// The outcome for `dest` in `git push --porcelain` output: lines `<flag>\t<from>:<to>\t<summary>`,
/// where `!` is a rejection; its summary says whether the remote had moved.
fn parse_porcelain(stdout: &str, dest: &str) -> Option<Status> {
    for line in stdout.lines() {
        let mut fields = line.splitn(3, '\t');
        let (Some(flag), Some(refs), summary) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if !refs.ends_with(&format!(":{dest}")) {
            continue;
        }
        let summary = summary.unwrap_or_default().to_owned();
        return Some(match flag {
            "!" => {
                let moved = [
                    "stale info",
                    "fetch first",
                    "non-fast-forward",
                    "cannot lock ref",
                    "failed to update ref",
                    "failed to lock",
                    "incorrect old value",
                ];
                if moved.iter().any(|m| summary.contains(m)) {
                    Status::Raced(summary)
                } else {
                    Status::Refused(summary)
                }
            }
            _ => Status::Ok,
        });
    }
    None
}

/// The message of a fetch error without its hint, to combine two of them.
fn inner_message(e: &RemoteError) -> String {
    match e {
        RemoteError::Fetch { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let text = lines[lines.len().saturating_sub(n)..].join(" | ");
    if text.is_empty() { "git push failed without a message".into() } else { text }
}

/// `base` doubled per try, plus up to half again of jitter, so that racing builders spread.
fn backoff(base: Duration, tries: u32) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(tries);
    let jitter = (h.finish() % 1000) as f64 / 2000.0;
    base.saturating_mul(1 << tries.saturating_sub(1).min(6)).mul_f64(1.0 + jitter).min(MAX_WAIT)
}

/// The longest wait between two pushes, however many retries are configured.
const MAX_WAIT: Duration = Duration::from_secs(30);

fn hex_digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn porcelain_lines_say_what_happened() {
        let d = "refs/heads/prototypes";
        let ok = "To /tmp/o.git\n \t1234:refs/heads/prototypes\t1111..1234\nDone\n";
        assert_eq!(parse_porcelain(ok, d), Some(Status::Ok));
        let created = "To x\n*\tabcd:refs/heads/prototypes\t[new branch]\nDone\n";
        assert_eq!(parse_porcelain(created, d), Some(Status::Ok));
        let stale = "To x\n!\tabcd:refs/heads/prototypes\t[rejected] (stale info)\nDone\n";
        assert!(matches!(parse_porcelain(stale, d), Some(Status::Raced(_))));
        let locked = "To x\n!\tabcd:refs/heads/prototypes\t[remote rejected] (cannot lock ref 'refs/heads/prototypes': is at 1 but expected 2)\n";
        assert!(matches!(parse_porcelain(locked, d), Some(Status::Raced(_))));
        let hook =
            "To x\n!\tabcd:refs/heads/prototypes\t[remote rejected] (pre-receive hook declined)\n";
        assert!(matches!(parse_porcelain(hook, d), Some(Status::Refused(_))));
        assert_eq!(parse_porcelain("fatal: could not read from remote", d), None);
        assert_eq!(parse_porcelain("To x\n \tabcd:refs/heads/main\tok\n", d), None);
    }

    fn git(dir: &std::path::Path, args: &[&str]) -> String {
        let out = Command::new("git").current_dir(dir).args(args).output().unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn store(dir: &std::path::Path) -> Store {
        super::super::init_repository(dir).unwrap();
        let who = || super::super::Identity { name: "T".into(), email: "t@example.com".into() };
        Store::open(dir, "prototypes", who(), who()).unwrap()
    }

    fn site(id: &str) -> super::super::TreeEdit {
        super::super::TreeEdit::PutDir {
            path: format!("sites/{id}"),
            files: vec![("index.html".into(), id.as_bytes().to_vec())],
        }
    }

    /// A plain `git fetch` between our fetch and our push moves `refs/remotes/origin/*` to a
    /// head we never integrated; the lease must still be ours, so the other commit survives.
    #[test]
    fn a_git_fetch_in_between_cannot_turn_the_push_into_a_force() {
        let tmp = tempfile::tempdir().unwrap();
        let origin = tmp.path().join("origin.git");
        std::fs::create_dir(&origin).unwrap();
        git(&origin, &["init", "--bare", "--quiet", "."]);
        let url = origin.to_str().unwrap();
        let (a_dir, b_dir) = (tmp.path().join("a"), tmp.path().join("b"));
        let (a, b) = (store(&a_dir), store(&b_dir));
        git(&a_dir, &["remote", "add", "origin", url]);
        let ra = Remote::new(&a, "origin").unwrap();
        let rb = Remote::new(&b, url).unwrap();

        a.commit(None, "a1", &[site("a1")]).unwrap();
        ra.pull().unwrap();
        ra.push(PushOptions::default()).unwrap();
        // a starts a run: fetches, and builds (slowly).
        ra.pull().unwrap();
        let head = a.head().unwrap();
        a.commit(head, "a2", &[site("a2")]).unwrap();
        // Meanwhile b pushes, and someone runs `git fetch` in a's repo.
        rb.pull().unwrap();
        b.commit(b.head().unwrap(), "b1", &[site("b1")]).unwrap();
        rb.push(PushOptions::default()).unwrap();
        git(
            &a_dir,
            &[
                "fetch",
                "--quiet",
                "origin",
                "+refs/heads/prototypes:refs/remotes/origin/prototypes",
            ],
        );
        // a pushes: its lease is the head it fetched, so it replays instead of forcing.
        let pushed =
            ra.push(PushOptions { backoff: Duration::ZERO, ..PushOptions::default() }).unwrap();
        assert_eq!(pushed.tries, 2, "{pushed:?}");
        let sites = git(&origin, &["ls-tree", "--name-only", "prototypes", "sites/"]);
        assert_eq!(sites, "sites/a1\nsites/a2\nsites/b1");
        git(&origin, &["fsck", "--strict"]);
    }

    #[test]
    fn backoff_grows_and_is_bounded() {
        let base = Duration::from_millis(100);
        assert!(backoff(base, 1) >= base && backoff(base, 1) <= base.mul_f64(1.5));
        assert!(backoff(base, 3) >= base * 4);
        assert!(backoff(base, 60) <= base * 64 * 2);
    }
}

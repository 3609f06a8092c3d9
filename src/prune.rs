//! The pruner: expires prototypes, forgets personal data after the retention
//! period, extends a site on request, and can rewrite the branch's history.
//!
//! One pass ([`prune`]) does, in this order:
//! 1. on disk: deletes `inbox/rejected/` files older than `prune.retention_days`
//!    (with their `.error.txt`), and processed inbox files (done or failed on
//!    the branch) whose `submitted_at` is older than that, with the
//!    attachments no remaining inbox or rejected file mentions;
//! 2. on the branch: ONE commit removes every `sites/<id>/` whose
//!    `metadata.json` says `expires_at <= now`, and the failure records
//!    older than the retention, by compare-and-swap (recomputed on the new
//!    tip if the branch moved).
//!
//! Invariants:
//! - `submissions/<sha>` entries are never removed: they are the tombstones
//!   that keep an expired submission from being built again;
//! - a pending submission is never deleted, nor is a failure record whose
//!   submission is still in the inbox (it would become pending again);
//! - a site whose metadata cannot be read is left alone, with a warning;
//! - the pass is idempotent: nothing to do means no commit; `dry_run` changes
//!   nothing at all;
//! - the disk side runs under the builder lock ([`prune`] takes it;
//!   [`prune_locked`] is for a caller that already coordinates, such as
//!   `protoforge serve`, which runs the builder and the pruner in one process);
//! - [`purge_history`] deletes only loose objects that were reachable from the
//!   branch's old tip and are reachable from nothing else afterwards (refs,
//!   pseudo refs, reflogs, the index), so the user's other branches and
//!   staged files stay intact; when it cannot tell, it deletes nothing.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use gix::ObjectId;
use gix::objs::tree::EntryKind;
use serde::Deserialize;

use crate::builder::{self, BuildError, FailureRecord, State, Workspace, rfc3339};
use crate::finalize::{self, Direction, PageOptions};
use crate::inbox::{self, InboxError};
use crate::publish::{PublishError, Snapshot, TreeEdit};
use crate::submission::{is_project_id, is_sha256};

/// Tries of a compare-and-swap before giving up (as the builder does).
const MAX_CAS_TRIES: u32 = 20;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PruneError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Inbox(#[from] InboxError),
    #[error(
        "`{id}` is not a project id (expected `<slug>-<8 base32 chars>`, like `rosies-loaves-k3m9x2qa`); `protoforge status` lists sites"
    )]
    InvalidId { id: String },
    #[error("no site `{id}` on branch {branch}; `protoforge status` lists sites")]
    UnknownSite { id: String, branch: String },
    #[error("--days must be between 1 and 36500 (got {days}); for example `--days 30`")]
    InvalidDays { days: u32 },
    #[error(
        "sites/{id}/metadata.json on branch {branch} cannot be used: {reason}; fix or rebuild the site (`protoforge retry`), then try again"
    )]
    BadMetadata { id: String, branch: String, reason: String },
    #[error("finalize {path}: {source}")]
    Finalize { path: String, source: finalize::FinalizeError },
    #[error(
        "`{schedule}` is not a cron schedule ({reason}); write 5 fields in UTC, like `0 3 * * *` (daily at 03:00) or `0 9 * * MON-FRI`"
    )]
    InvalidSchedule { schedule: String, reason: String },
    #[error("the cron schedule `{schedule}` never fires after {after}; check prune.schedule")]
    NoNextRun { schedule: String, after: String },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("git: {what}: {message}; hint: `git fsck` checks the repository")]
    Git { what: String, message: String },
    #[error(
        "the branch kept moving under us ({tries} tries); is another writer committing to it in a loop?"
    )]
    Contended { tries: u32 },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PruneError + '_ {
    move |source| PruneError::Io { path: path.to_path_buf(), source }
}

/// A gix error with its causes, as one line.
fn git_err(what: impl Into<String>, err: &gix::Error) -> PruneError {
    let mut parts: Vec<String> = err.iter_errors().map(ToString::to_string).collect();
    parts.dedup();
    PruneError::Git { what: what.into(), message: parts.join(": ") }
}

/// What one pruning pass did (or, on a dry run, would do).
#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    pub dry_run: bool,
    /// `prune.retention_days`, for the report.
    pub retention_days: u32,
    /// Project ids of the expired sites removed from the branch, sorted.
    pub expired: Vec<String>,
    /// The prune commit, if one was made.
    pub commit: Option<String>,
    /// Submission hashes whose failure record was removed.
    pub removed_failures: Vec<String>,
    /// Processed submission files deleted from `inbox/`.
    pub deleted_inbox_files: Vec<PathBuf>,
    /// Attachments deleted with them (listed by no remaining file).
    pub deleted_attachments: Vec<PathBuf>,
    /// Files deleted from `inbox/rejected/` (error files included).
    pub deleted_rejected: Vec<PathBuf>,
    pub warnings: Vec<String>,
    pub duration: Duration,
}

impl PruneReport {
    /// Whether the pass found nothing to do.
    pub fn is_empty(&self) -> bool {
        self.expired.is_empty()
            && self.removed_failures.is_empty()
            && self.deleted_inbox_files.is_empty()
            && self.deleted_attachments.is_empty()
            && self.deleted_rejected.is_empty()
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

impl fmt::Display for PruneReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (did, deleted) =
            if self.dry_run { ("Would prune", "Would delete") } else { ("Pruned", "Deleted") };
        let days = self.retention_days;
        if self.is_empty() {
            writeln!(
                f,
                "Nothing to prune: no expired prototype, and nothing older than {days} days."
            )?;
        }
        if !self.expired.is_empty() {
            let commit = match &self.commit {
                Some(c) => format!(" (commit {})", &c[..12.min(c.len())]),
                None => String::new(),
            };
            let n = plural(self.expired.len(), "expired prototype", "expired prototypes");
            writeln!(f, "{did} {n}{commit}:")?;
            for id in &self.expired {
                writeln!(f, "  {id}")?;
            }
        }
        if !self.removed_failures.is_empty() {
            let verb = if self.dry_run { "Would remove" } else { "Removed" };
            let n = plural(self.removed_failures.len(), "failure record", "failure records");
            let commit = match (&self.commit, self.expired.is_empty()) {
                (Some(c), true) => format!(" (commit {})", &c[..12.min(c.len())]),
                _ => String::new(),
            };
            writeln!(f, "{verb} {n} older than {days} days{commit}.")?;
        }
        if !self.deleted_inbox_files.is_empty() || !self.deleted_attachments.is_empty() {
            writeln!(
                f,
                "{deleted} {} older than {days} days, and {} only they used:",
                plural(
                    self.deleted_inbox_files.len(),
                    "processed inbox file",
                    "processed inbox files"
                ),
                plural(self.deleted_attachments.len(), "attachment", "attachments"),
            )?;
            for p in self.deleted_inbox_files.iter().chain(&self.deleted_attachments) {
                writeln!(f, "  {}", p.display())?;
            }
        }
        if !self.deleted_rejected.is_empty() {
            let n = plural(self.deleted_rejected.len(), "rejected file", "rejected files");
            writeln!(f, "{deleted} {n} older than {days} days:")?;
            for p in &self.deleted_rejected {
                writeln!(f, "  {}", p.display())?;
            }
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        if self.dry_run {
            writeln!(f, "Dry run: nothing was changed.")?;
        }
        write!(f, "Done in {:.0} ms.", self.duration.as_secs_f64() * 1000.0)
    }
}

/// One pruning pass under the builder lock (fails if a builder is running;
/// a process that runs both uses [`prune_locked`]).
pub fn prune(ws: &Workspace, now: DateTime<Utc>, dry_run: bool) -> Result<PruneReport, PruneError> {
    let _lock = ws.lock()?;
    prune_locked(ws, now, dry_run)
}

/// One pruning pass; the caller makes sure no builder works meanwhile (it
/// holds the builder lock, or runs the builder in the same task).
pub fn prune_locked(
    ws: &Workspace,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<PruneReport, PruneError> {
    let start = Instant::now();
    let retention_days = ws.config.prune.retention_days;
    let cutoff = now
        .checked_sub_signed(TimeDelta::days(i64::from(retention_days)))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let mut report = PruneReport { dry_run, retention_days, ..PruneReport::default() };

    // 1. The disk: what to delete, then (unless a dry run) delete it.
    let snapshot = ws.store.snapshot()?;
    let rejected = plan_rejected(ws, cutoff)?;
    let inbox_plan = plan_inbox(ws, &snapshot, cutoff, &rejected.kept, &mut report.warnings)?;
    let mut kept_hashes = inbox_plan.kept_hashes;
    if dry_run {
        report.deleted_rejected = rejected.delete;
        report.deleted_inbox_files = inbox_plan.delete.into_iter().map(|(p, _)| p).collect();
        report.deleted_attachments = inbox_plan.attachments.into_iter().map(|(_, s)| s).collect();
    } else {
        for path in rejected.delete {
            if remove(&path, &mut report.warnings) {
                report.deleted_rejected.push(path);
            }
        }
        for (path, sha) in inbox_plan.delete {
            if remove(&path, &mut report.warnings) {
                report.deleted_inbox_files.push(path);
            } else {
                // Still there: its failure record must stay, or it would be built again.
                kept_hashes.insert(sha);
            }
        }
        let attachments_root = ws.inbox.dir().join(inbox::ATTACHMENTS_DIR).canonicalize().ok();
        for (resolved, shown) in inbox_plan.attachments {
            if remove(&resolved, &mut report.warnings) {
                report.deleted_attachments.push(shown);
                // A per-submission folder left empty goes too (remove_dir
                // refuses a non-empty one); attachments/ itself stays.
                if let Some(parent) = resolved.parent()
                    && attachments_root
                        .as_deref()
                        .is_some_and(|r| parent != r && parent.starts_with(r))
                {
                    let _ = std::fs::remove_dir(parent);
                }
            }
        }
        let dirs: BTreeSet<&Path> = report
            .deleted_inbox_files
            .iter()
            .chain(&report.deleted_attachments)
            .chain(&report.deleted_rejected)
            .filter_map(|p| p.parent())
            // An emptied attachment folder was removed above.
            .filter(|d| d.is_dir())
            .collect();
        for dir in dirs {
            if let Err(e) = inbox::sync_dir(dir) {
                report.warnings.push(format!("cannot sync {}: {e}", dir.display()));
            }
        }
    }

    // 2. The branch: one commit, by compare-and-swap, recomputed on a moved tip.
    let mut snapshot = Some(snapshot);
    let mut tries = 0;
    let branch_plan = loop {
        tries += 1;
        if tries > MAX_CAS_TRIES {
            return Err(PruneError::Contended { tries: MAX_CAS_TRIES });
        }
        let snap = match snapshot.take() {
            Some(s) => s,
            None => ws.store.snapshot()?,
        };
        let plan = plan_branch(&snap, now, cutoff, &kept_hashes)?;
        if dry_run || plan.edits.is_empty() {
            break plan;
        }
        let message = plan.message(retention_days);
        match ws.store.commit(snap.commit_id(), &message, &plan.edits) {
            Ok(id) => {
                report.commit = Some(id.to_string());
                break plan;
            }
            Err(PublishError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    report.expired = branch_plan.expired.into_iter().map(|(id, _)| id).collect();
    report.removed_failures = branch_plan.failures;
    report.warnings.extend(branch_plan.warnings);
    report.duration = start.elapsed();
    if report.commit.is_some() {
        // The removal commit rewrote the big `sites` tree once more.
        let mut housekeeping = ws.housekeeping();
        housekeeping.start();
        housekeeping.finish();
    }
    if !report.is_empty() {
        tracing::info!(
            dry_run,
            expired = report.expired.len(),
            failures = report.removed_failures.len(),
            inbox_files = report.deleted_inbox_files.len(),
            rejected = report.deleted_rejected.len(),
            commit = report.commit.as_deref().unwrap_or("-"),
            "pruned"
        );
    }
    Ok(report)
}

/// Delete a file; false (with a warning) if it could not be deleted. A file
/// already gone counts as deleted.
fn remove(path: &Path, warnings: &mut Vec<String>) -> bool {
    match std::fs::remove_file(path) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => {
            warnings.push(format!("cannot delete {}: {e}; it is kept", path.display()));
            false
        }
    }
}

fn mtime(meta: &std::fs::Metadata) -> Option<DateTime<Utc>> {
    meta.modified().ok().map(DateTime::<Utc>::from)
}

/// Files of `inbox/rejected/` to delete, and the ones that stay.
struct RejectedPlan {
    delete: Vec<PathBuf>,
    kept: Vec<PathBuf>,
}

fn plan_rejected(ws: &Workspace, cutoff: DateTime<Utc>) -> Result<RejectedPlan, PruneError> {
    let dir = ws.inbox.dir().join(inbox::REJECTED_DIR);
    let mut plan = RejectedPlan { delete: Vec::new(), kept: Vec::new() };
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(plan),
        Err(e) => return Err(io_err(&dir)(e)),
    };
    let mut submissions = Vec::new();
    let mut error_files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err(&dir))?;
        let path = entry.path();
        // symlink_metadata: a link is judged (and deleted) as itself, never its target.
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        if meta.is_dir() {
            continue;
        }
        let old = mtime(&meta).is_some_and(|t| t < cutoff);
        if path.to_string_lossy().ends_with(".error.txt") {
            error_files.push((path, old));
        } else {
            submissions.push((path, old));
        }
    }
    submissions.sort();
    error_files.sort();
    let mut deleted_names = HashSet::new();
    for (path, old) in submissions {
        let error_file = inbox::error_file_for(&path);
        if old {
            deleted_names.insert(error_file.clone());
            if error_file.exists() {
                plan.delete.push(error_file);
            }
            plan.delete.push(path);
        } else {
            deleted_names.insert(error_file);
            plan.kept.push(path);
        }
    }
    // An error file whose submission is gone (moved back to fix, or deleted
    // by hand) goes once it is old itself.
    for (path, old) in error_files {
        if !deleted_names.contains(&path) && old {
            plan.delete.push(path);
        }
    }
    plan.delete.sort();
    Ok(plan)
}

/// Processed inbox files to delete, with their attachments, and the hashes
/// of the submissions that stay in the inbox.
struct InboxPlan {
    /// (file, submission hash)
    delete: Vec<(PathBuf, String)>,
    /// (resolved path to delete, path as shown: under the inbox as configured)
    attachments: Vec<(PathBuf, PathBuf)>,
    kept_hashes: HashSet<String>,
}

fn plan_inbox(
    ws: &Workspace,
    snapshot: &Snapshot,
    cutoff: DateTime<Utc>,
    rejected_kept: &[PathBuf],
    warnings: &mut Vec<String>,
) -> Result<InboxPlan, PruneError> {
    let mut delete = Vec::new();
    let mut kept_hashes = HashSet::new();
    // Attachments of the deleted files, and of the kept ones (resolved paths).
    let mut candidates: BTreeSet<PathBuf> = BTreeSet::new();
    let mut kept_attachments: HashSet<PathBuf> = HashSet::new();
    // Files that stay but cannot be parsed: their bytes are searched for
    // attachment names, so a file someone is fixing keeps its attachments.
    let mut unparsed: Vec<PathBuf> = rejected_kept.to_vec();
    for path in ws.inbox.list()? {
        let job = match ws.inbox.load_unchecked(&path) {
            Ok(job) => job,
            Err(InboxError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                continue;
            }
            Err(InboxError::Invalid(_)) => {
                // The builder will move it to rejected/; not ours to delete.
                unparsed.push(path);
                continue;
            }
            Err(e) => {
                warnings.push(format!("{e}; the file is kept"));
                unparsed.push(path);
                continue;
            }
        };
        let sha = job.parsed.sha256.clone();
        let processed = builder::state_of(snapshot, &sha)? != State::Pending;
        let attachments = job.submission().attachments.iter().filter_map(|a| {
            attachment_file(ws.inbox.dir(), &a.path).or_else(|| {
                tracing::debug!(path = %a.path, "attachment not found inside inbox/attachments/");
                None
            })
        });
        if processed && job.submitted_at < cutoff {
            candidates.extend(attachments);
            delete.push((path, sha));
        } else {
            kept_attachments.extend(attachments);
            kept_hashes.insert(sha);
        }
    }
    let unparsed_texts: Vec<Vec<u8>> =
        unparsed.iter().filter_map(|p| std::fs::read(p).ok()).collect();
    let canonical_inbox = ws.inbox.dir().canonicalize().ok();
    let attachments = candidates
        .into_iter()
        .filter(|file| !kept_attachments.contains(file))
        .filter(|file| {
            let Some(name) = file.file_name().map(|n| n.to_string_lossy().into_owned()) else {
                return false;
            };
            !unparsed_texts.iter().any(|text| contains(text, name.as_bytes()))
        })
        .map(|file| {
            let shown = canonical_inbox
                .as_deref()
                .and_then(|inbox| file.strip_prefix(inbox).ok())
                .map_or_else(|| file.clone(), |rel| ws.inbox.dir().join(rel));
            (file, shown)
        })
        .collect();
    Ok(InboxPlan { delete, attachments, kept_hashes })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The file an attachment path names, if it is a file (or a link) inside
/// `inbox/attachments/`.
fn attachment_file(inbox_dir: &Path, rel: &str) -> Option<PathBuf> {
    // SECURITY: `rel` comes from a submission. It was checked lexically when
    // parsed (under attachments/, no `..`), but a directory on the way may be
    // a symlink out of the inbox: resolve the parent and make sure it stays
    // inside attachments/, then delete the entry itself (a link is removed,
    // never followed).
    let root = inbox_dir.join(inbox::ATTACHMENTS_DIR).canonicalize().ok()?;
    let full = inbox_dir.join(rel);
    let parent = full.parent()?.canonicalize().ok()?;
    if !parent.starts_with(&root) {
        return None;
    }
    let target = parent.join(full.file_name()?);
    let meta = std::fs::symlink_metadata(&target).ok()?;
    (meta.is_file() || meta.file_type().is_symlink()).then_some(target)
}

/// The branch side of a pass, computed on one snapshot.
struct BranchPlan {
    /// (project id, expires_at as written)
    expired: Vec<(String, String)>,
    /// Submission hashes of failure records to remove.
    failures: Vec<String>,
    edits: Vec<TreeEdit>,
    warnings: Vec<String>,
}

#[derive(Deserialize)]
struct Expiry {
    expires_at: String,
}

fn plan_branch(
    snapshot: &Snapshot,
    now: DateTime<Utc>,
    cutoff: DateTime<Utc>,
    kept_hashes: &HashSet<String>,
) -> Result<BranchPlan, PruneError> {
    let mut plan = BranchPlan {
        expired: Vec::new(),
        failures: Vec::new(),
        edits: Vec::new(),
        warnings: Vec::new(),
    };
    for (id, tree) in snapshot.subtrees("sites")? {
        // SECURITY: the name becomes a path in the prune commit; only
        // project-id shaped names are touched (a hand-made `sites/x` stays).
        if !is_project_id(&id) {
            plan.warnings.push(format!("sites/{id} is not named like a project id; left alone"));
            continue;
        }
        let Some(bytes) = snapshot.read_in_tree(tree, "metadata.json")? else {
            plan.warnings.push(format!(
                "sites/{id} has no metadata.json, so its expiry is unknown; left alone (`protoforge extend {id} --days N` writes one)"
            ));
            continue;
        };
        let expiry =
            serde_json::from_slice::<Expiry>(&bytes).map_err(|e| e.to_string()).and_then(|m| {
                match DateTime::parse_from_rfc3339(&m.expires_at) {
                    Ok(t) => Ok((t.with_timezone(&Utc), m.expires_at)),
                    Err(e) => Err(format!("expires_at `{}`: {e}", m.expires_at)),
                }
            });
        match expiry {
            Ok((at, text)) if at <= now => plan.expired.push((id, text)),
            Ok(_) => {}
            Err(why) => plan.warnings.push(format!(
                "sites/{id}/metadata.json cannot be read ({why}); left alone (`protoforge extend {id} --days N` rewrites the expiry)"
            )),
        }
    }
    for name in snapshot.list_dir("failed")? {
        let Some(sha) = name.strip_suffix(".json").filter(|s| is_sha256(s)) else {
            plan.warnings.push(format!("failed/{name} is not a failure record name; left alone"));
            continue;
        };
        if kept_hashes.contains(sha) {
            // Its submission is still in the inbox: without the record it would be built again.
            continue;
        }
        let Some(bytes) = snapshot.read(&builder::failure_path(sha))? else { continue };
        let failed_at = serde_json::from_slice::<FailureRecord>(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|r| DateTime::parse_from_rfc3339(&r.failed_at).map_err(|e| e.to_string()));
        match failed_at {
            Ok(at) if at.with_timezone(&Utc) < cutoff => plan.failures.push(sha.to_string()),
            Ok(_) => {}
            Err(why) => {
                plan.warnings.push(format!("failed/{name} cannot be read ({why}); left alone"))
            }
        }
    }
    plan.edits = plan
        .expired
        .iter()
        .map(|(id, _)| TreeEdit::Remove { path: builder::site_dir(id) })
        .chain(
            plan.failures.iter().map(|sha| TreeEdit::Remove { path: builder::failure_path(sha) }),
        )
        .collect();
    Ok(plan)
}

impl BranchPlan {
    fn message(&self, retention_days: u32) -> String {
        let (sites, failures) = (self.expired.len(), self.failures.len());
        let subject = match (sites, failures) {
            (0, f) => format!(
                "Prune {} older than {retention_days} days",
                plural(f, "failure record", "failure records")
            ),
            (s, 0) => format!("Prune {}", plural(s, "expired prototype", "expired prototypes")),
            (s, f) => format!(
                "Prune {} and {}",
                plural(s, "expired prototype", "expired prototypes"),
                plural(f, "old failure record", "old failure records")
            ),
        };
        let mut body = String::new();
        for (id, at) in &self.expired {
            body.push_str(&format!("- {id} (expired {at})\n"));
        }
        if failures > 0 {
            if sites > 0 {
                body.push('\n');
            }
            body.push_str(&format!(
                "Removed {} older than {retention_days} days (prune.retention_days).\n",
                plural(failures, "failure record", "failure records")
            ));
        }
        body.push_str("\nSubmission records under submissions/ are kept, so expired submissions are not built again.\n");
        let mut trailers = String::new();
        for (id, _) in &self.expired {
            trailers.push_str(&format!("Pruned: {id}\n"));
        }
        for sha in &self.failures {
            trailers.push_str(&format!("Pruned-Failure: {sha}\n"));
        }
        format!("{subject}\n\n{body}\n{trailers}")
    }
}

/// Give the site `id` a new expiry, `days` from `now`: rewrites its
/// `metadata.json` (every other field kept) and the banner of its pages, in
/// one commit. Returns the new expiry.
pub fn extend(
    ws: &Workspace,
    id: &str,
    days: u32,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, PruneError> {
    let id = id.trim();
    // SECURITY: the id comes from the command line and becomes a path on the
    // branch; only a project-id shape can name a site (no `..`, no `/`).
    if !is_project_id(id) {
        return Err(PruneError::InvalidId { id: id.into() });
    }
    if !(1..=36_500).contains(&days) {
        return Err(PruneError::InvalidDays { days });
    }
    let expires_at = now
        .checked_add_signed(TimeDelta::days(i64::from(days)))
        .and_then(|t| DateTime::from_timestamp(t.timestamp(), 0))
        .ok_or(PruneError::InvalidDays { days })?;
    let branch = ws.store.branch().to_string();
    let dir = builder::site_dir(id);
    let date = expires_at.format("%Y-%m-%d").to_string();
    for _ in 0..MAX_CAS_TRIES {
        let snapshot = ws.store.snapshot()?;
        let meta_path = format!("{dir}/metadata.json");
        let Some(meta) = snapshot.read(&meta_path)? else {
            return Err(PruneError::UnknownSite { id: id.into(), branch });
        };
        let bad = |reason: String| PruneError::BadMetadata {
            id: id.into(),
            branch: branch.clone(),
            reason,
        };
        let Rewritten { bytes: new_meta, old, lang, rtl } =
            rewrite_expiry(&meta, &rfc3339(expires_at)).map_err(bad)?;
        let lang = match lang {
            Some(l) if crate::submission::validate_language(&l).is_ok() => l,
            _ => ws.config.generator.default_language.clone(),
        };
        let t = ws.layouts.strings(&lang);
        let banner = t.get("banner").replace("{date}", &date);
        let opts = PageOptions {
            lang: &lang,
            dir: if rtl { Direction::Rtl } else { Direction::Ltr },
            banner: &banner,
            title: id,
            dismiss: t.get("banner_dismiss"),
            form_note: t.get("form_prototype_note"),
            ..PageOptions::default()
        };
        let mut edits = vec![TreeEdit::PutFile { path: meta_path, bytes: new_meta }];
        for (rel, bytes) in snapshot.read_dir_recursive(&dir)? {
            if !finalize::is_page(&rel) {
                continue;
            }
            let path = format!("{dir}/{rel}");
            let html = String::from_utf8_lossy(&bytes);
            let page = finalize::finalize_page(&html, &PageOptions { path: &rel, ..opts })
                .map_err(|source| PruneError::Finalize { path: path.clone(), source })?;
            edits.push(TreeEdit::PutFile { path, bytes: page.html.into_bytes() });
        }
        let message = format!(
            "Extend prototype {id} until {date}\n\nThe expiry moves from {} to {} ({days} days from {}).\n\nPrototype-Id: {id}\nExpires-At: {}\n",
            old.as_deref().unwrap_or("(none)"),
            rfc3339(expires_at),
            rfc3339(now),
            rfc3339(expires_at),
        );
        match ws.store.commit(snapshot.commit_id(), &message, &edits) {
            Ok(_) => return Ok(expires_at),
            Err(PublishError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(PruneError::Contended { tries: MAX_CAS_TRIES })
}

/// A site's `metadata.json` with a new expiry, and what the pages need.
#[derive(Debug)]
struct Rewritten {
    bytes: Vec<u8>,
    /// The expiry it replaced, if there was one.
    old: Option<String>,
    /// `site.language`, `site.dir == "rtl"`.
    lang: Option<String>,
    rtl: bool,
}

/// `metadata.json` with `expires_at` replaced, the other fields as they were
/// (in their order: the value is replaced in the text, and the result is
/// checked against a parse of the original).
fn rewrite_expiry(bytes: &[u8], new: &str) -> Result<Rewritten, String> {
    let mut value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not JSON ({e})"))?;
    let object = value.as_object_mut().ok_or("not a JSON object")?;
    let old = object.get("expires_at").and_then(|v| v.as_str()).map(str::to_string);
    let lang = object
        .get("site")
        .and_then(|s| s.get("language"))
        .and_then(|v| v.as_str())
        .map(str::to_string);
    let rtl = object.get("site").and_then(|s| s.get("dir")).and_then(|v| v.as_str()) == Some("rtl");
    object.insert("expires_at".into(), serde_json::Value::String(new.into()));
    let text = String::from_utf8_lossy(bytes);
    if let Some(old) = &old {
        let quote = |s: &str| serde_json::to_string(s).expect("a string serializes");
        let needle = format!("\"expires_at\": {}", quote(old));
        if text.matches(&needle).count() == 1 {
            let replaced = text.replacen(&needle, &format!("\"expires_at\": {}", quote(new)), 1);
            if serde_json::from_str::<serde_json::Value>(&replaced).ok().as_ref() == Some(&value) {
                let (bytes, old) = (replaced.into_bytes(), Some(old.clone()));
                return Ok(Rewritten { bytes, old, lang, rtl });
            }
        }
    }
    // Not our pretty-printed layout: write the whole object again.
    let mut out = serde_json::to_vec_pretty(&value).expect("a JSON value serializes");
    out.push(b'\n');
    Ok(Rewritten { bytes: out, old, lang, rtl })
}

/// The next time the cron `schedule` (UTC; 5 fields, or 6 with seconds)
/// fires strictly after `after`.
pub fn next_run(schedule: &str, after: DateTime<Utc>) -> Result<DateTime<Utc>, PruneError> {
    let cron = croner::Cron::from_str(schedule).map_err(|e| PruneError::InvalidSchedule {
        schedule: schedule.into(),
        reason: e.to_string(),
    })?;
    cron.find_next_occurrence(&after, false)
        .map_err(|_| PruneError::NoNextRun { schedule: schedule.into(), after: rfc3339(after) })
}

/// What [`purge_history`] did.
#[derive(Debug, Clone, Default)]
pub struct PurgeReport {
    /// The tip before, and the new root commit (None: nothing was rewritten).
    pub old_head: Option<String>,
    pub new_head: Option<String>,
    /// Commits the branch had before.
    pub old_commits: usize,
    pub objects_deleted: usize,
    /// Unreachable objects that are in a pack file, which this cannot edit.
    pub objects_packed: usize,
    /// Old commits kept because the commit-graph file lists them (git
    /// checks that they exist); `git gc` drops them.
    pub commits_in_graph: usize,
    /// `git gc --prune=now` ran to drop what packs and the commit-graph kept.
    pub repacked: bool,
    /// Size of `.git/objects` before and after.
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub warnings: Vec<String>,
    pub duration: Duration,
}

impl fmt::Display for PurgeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = |s: &String| s[..12.min(s.len())].to_string();
        match (&self.old_head, &self.new_head) {
            (Some(old), Some(new)) => writeln!(
                f,
                "Purged history: the branch is now one root commit {} (was {}, {}).",
                short(new),
                short(old),
                plural(self.old_commits, "commit", "commits")
            )?,
            (Some(_), None) => {
                writeln!(f, "Purge: the branch already is a single commit; nothing rewritten.")?
            }
            (None, _) => writeln!(f, "Purge: the branch has no commit yet; nothing rewritten.")?,
        }
        let reclaimed = self.bytes_before.saturating_sub(self.bytes_after);
        writeln!(
            f,
            "Deleted {}; .git/objects went from {} to {} bytes ({} reclaimed).",
            plural(self.objects_deleted, "loose object", "loose objects"),
            self.bytes_before,
            self.bytes_after,
            reclaimed
        )?;
        if self.repacked {
            writeln!(
                f,
                "`git gc --prune=now` repacked the store, dropping the old history's {} in packs and {} in the commit-graph.",
                plural(self.objects_packed, "object", "objects"),
                plural(self.commits_in_graph, "commit", "commits")
            )?;
        } else if self.objects_packed > 0 {
            writeln!(
                f,
                "{} of the old history are in pack files, which this does not rewrite; `git gc --prune=now` reclaims them.",
                plural(self.objects_packed, "object", "objects")
            )?;
        }
        if self.commits_in_graph > 0 && !self.repacked {
            writeln!(
                f,
                "{} listed in the commit-graph file stay until `git gc`.",
                plural(self.commits_in_graph, "old commit", "old commits")
            )?;
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        write!(f, "Done in {:.0} ms.", self.duration.as_secs_f64() * 1000.0)
    }
}

/// Rewrite the branch to one root commit holding its current tree, then
/// delete the loose objects only its old history used. Takes the builder
/// lock (see [`purge_history_locked`]).
pub fn purge_history(ws: &Workspace) -> Result<PurgeReport, PruneError> {
    let _lock = ws.lock()?;
    purge_history_locked(ws)
}

/// [`purge_history`] for a caller that already keeps builders out: a blob a
/// builder wrote meanwhile could be one this deletes.
pub fn purge_history_locked(ws: &Workspace) -> Result<PurgeReport, PruneError> {
    let start = Instant::now();
    let repo = gix::open(ws.store.repo_path())
        .map_err(|e| git_err(format!("open {}", ws.store.repo_path().display()), &e))?;
    let objects_dir = repo.objects.store_ref().path().to_path_buf();
    let mut report = PurgeReport { bytes_before: dir_size(&objects_dir), ..Default::default() };

    // 1. The new root commit, by compare-and-swap.
    let mut old = None;
    for _ in 0..MAX_CAS_TRIES {
        let Some(head) = ws.store.head()? else { break };
        let commit = repo.find_commit(head).map_err(|e| git_err(format!("commit {head}"), &e))?;
        if commit.parent_ids().next().is_none() {
            // Already a single root commit.
            report.old_head = Some(head.to_string());
            report.old_commits = 1;
            break;
        }
        let message = format!(
            "Purge the history of {}\n\nThe branch was rewritten to this one commit, holding the tree of {head}, so that pruned sites leave the history too (prune.purge_history).\n",
            ws.store.branch()
        );
        match ws.store.replace_with_root(head, &message) {
            Ok(new) => {
                old = Some((head, new));
                break;
            }
            Err(PublishError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let Some((old_head, new_head)) = old else {
        report.bytes_after = dir_size(&objects_dir);
        report.duration = start.elapsed();
        return Ok(report);
    };
    report.old_head = Some(old_head.to_string());
    report.new_head = Some(new_head.to_string());

    // 2. The branch's reflog would keep every old commit alive (and fsck checks it).
    let reflog = repo.common_dir().join("logs").join(ws.store.ref_name().as_bstr().to_string());
    match std::fs::remove_file(&reflog) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => report.warnings.push(format!(
            "cannot delete the reflog {}: {e}; the old history stays reachable",
            reflog.display()
        )),
    }

    // 3. What the old history used, minus what anything else still uses.
    let mut old_closure = HashSet::new();
    let mut stats = WalkStats { commit_ids: Some(HashSet::new()), ..WalkStats::default() };
    walk(&repo, vec![old_head], &mut old_closure, &mut stats)?;
    report.old_commits = stats.commits;
    let old_commit_ids = stats.commit_ids.unwrap_or_default();
    match live_roots(&repo, &reflog) {
        Ok(roots) => {
            let mut live = HashSet::new();
            let mut live_stats = WalkStats::default();
            for blob in roots.blobs {
                live.insert(blob);
            }
            walk(&repo, roots.walk, &mut live, &mut live_stats)?;
            // git checks that every commit the commit-graph file lists
            // exists: those stay (all commits, if the file can't be read).
            let graph = repo.commit_graph_if_enabled().map_err(|e| {
                report.warnings.push(format!(
                    "the commit-graph file cannot be read ({e}); old commits were kept"
                ));
            });
            let mut touched_dirs = BTreeSet::new();
            for id in old_closure.difference(&live) {
                let in_graph = match &graph {
                    Ok(Some(g)) => g.lookup(id).is_some(),
                    Ok(None) => false,
                    Err(()) => old_commit_ids.contains(id),
                };
                if in_graph {
                    report.commits_in_graph += 1;
                    continue;
                }
                let hex = id.to_hex().to_string();
                let path = objects_dir.join(&hex[..2]).join(&hex[2..]);
                match std::fs::remove_file(&path) {
                    Ok(()) => {
                        report.objects_deleted += 1;
                        touched_dirs.insert(objects_dir.join(&hex[..2]));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        if repo.has_object(id) {
                            report.objects_packed += 1;
                        }
                    }
                    Err(e) => {
                        report.warnings.push(format!("cannot delete {}: {e}", path.display()))
                    }
                }
            }
            for dir in touched_dirs {
                // Only succeeds when empty, which is the point.
                let _ = std::fs::remove_dir(&dir);
            }
        }
        Err(why) => report.warnings.push(format!(
            "no object was deleted: {why}; `git gc --prune=now` reclaims the space safely"
        )),
    }
    // 4. What a pack or the commit-graph holds, git itself drops; we hold
    // the builder lock, so no object in flight is at risk.
    if report.objects_packed > 0 || report.commits_in_graph > 0 {
        match crate::publish::git_gc(ws.store.repo_path(), &[], &["--prune=now", "--quiet"]) {
            Ok(()) => report.repacked = true,
            Err(e) => report.warnings.push(e),
        }
    }
    report.bytes_after = dir_size(&objects_dir);
    report.duration = start.elapsed();
    tracing::info!(
        old = %old_head,
        new = %new_head,
        deleted = report.objects_deleted,
        bytes_before = report.bytes_before,
        bytes_after = report.bytes_after,
        "purged the branch's history"
    );
    Ok(report)
}

/// Total size of the files under `dir`.
fn dir_size(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

#[derive(Default)]
struct WalkStats {
    commits: usize,
    /// Filled only when asked for.
    commit_ids: Option<HashSet<ObjectId>>,
}

/// Add to `seen` every object reachable from `roots` (commits, trees, tags;
/// blobs by their id, unread). Missing objects are skipped: a shallow or
/// damaged history is not ours to repair.
fn walk(
    repo: &gix::Repository,
    roots: Vec<ObjectId>,
    seen: &mut HashSet<ObjectId>,
    stats: &mut WalkStats,
) -> Result<(), PruneError> {
    let hash = repo.object_hash();
    let mut stack = roots;
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        let Some(object) =
            repo.try_find_object(id).map_err(|e| git_err(format!("object {id}"), &e))?
        else {
            continue;
        };
        let kind = object.kind;
        let corrupt = |e: &dyn std::fmt::Display| PruneError::Git {
            what: format!("{kind} {id}"),
            message: format!("cannot be parsed: {e}"),
        };
        match object.kind {
            gix::objs::Kind::Commit => {
                stats.commits += 1;
                if let Some(ids) = &mut stats.commit_ids {
                    ids.insert(id);
                }
                let mut iter = gix::objs::CommitRefIter::from_bytes(&object.data, hash);
                stack.push(iter.tree_id().map_err(|e| corrupt(&e))?);
                stack.extend(gix::objs::CommitRefIter::from_bytes(&object.data, hash).parent_ids());
            }
            gix::objs::Kind::Tree => {
                for entry in gix::objs::TreeRefIter::from_bytes(&object.data, hash) {
                    let entry = entry.map_err(|e| corrupt(&e))?;
                    match entry.mode.kind() {
                        EntryKind::Tree => stack.push(entry.oid.to_owned()),
                        EntryKind::Blob | EntryKind::BlobExecutable | EntryKind::Link => {
                            seen.insert(entry.oid.to_owned());
                        }
                        // A submodule's commit lives in another repository.
                        EntryKind::Commit => {}
                    }
                }
            }
            gix::objs::Kind::Tag => {
                let target = gix::objs::TagRefIter::from_bytes(&object.data, hash)
                    .target_id()
                    .map_err(|e| corrupt(&e))?;
                stack.push(target);
            }
            gix::objs::Kind::Blob => {}
        }
    }
    Ok(())
}

/// Where reachability starts, apart from the purged branch's history.
struct LiveRoots {
    walk: Vec<ObjectId>,
    /// Blobs named by the index: kept, never read.
    blobs: Vec<ObjectId>,
}

/// Every ref, pseudo ref (HEAD, ORIG_HEAD, FETCH_HEAD…), reflog entry (but
/// the purged branch's, `skip_log`) and index entry. An error means "cannot
/// tell", and then nothing may be deleted.
fn live_roots(repo: &gix::Repository, skip_log: &Path) -> Result<LiveRoots, String> {
    let mut roots = LiveRoots { walk: Vec::new(), blobs: Vec::new() };
    let git_dir = repo.git_dir();
    let common = repo.common_dir();
    // Linked worktrees have their own HEAD, index and reflogs.
    if std::fs::read_dir(common.join("worktrees")).is_ok_and(|mut d| d.next().is_some()) {
        return Err("the repository has linked worktrees (`git worktree list`)".into());
    }
    let refs = repo.references().map_err(|e| format!("cannot list refs: {e}"))?;
    for reference in refs.all().map_err(|e| format!("cannot list refs: {e}"))? {
        let reference = reference.map_err(|e| format!("unreadable ref: {e}"))?;
        if let Some(id) = reference.try_id() {
            roots.walk.push(id.detach());
        }
    }
    let hex_len = repo.object_hash().len_in_hex();
    let first_id = |line: &str| {
        let token = line.split_whitespace().next()?;
        (token.len() == hex_len).then(|| ObjectId::from_hex(token.as_bytes()).ok()).flatten()
    };
    // Pseudo refs: files in the git dir named *HEAD.
    for dir in [git_dir, common] {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.ends_with("HEAD") {
                continue;
            }
            let text = std::fs::read_to_string(entry.path())
                .map_err(|e| format!("cannot read {name}: {e}"))?;
            roots.walk.extend(text.lines().filter_map(first_id));
        }
    }
    // Reflogs: `<old> <new> <committer> <time>\t<message>` lines.
    for entry in walkdir::WalkDir::new(common.join("logs")).into_iter() {
        let entry = match entry {
            Ok(e) => e,
            Err(e) if e.io_error().is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound) => {
                continue;
            }
            Err(e) => return Err(format!("cannot read the reflogs: {e}")),
        };
        if !entry.file_type().is_file() || entry.path() == skip_log {
            continue;
        }
        let text = std::fs::read_to_string(entry.path())
            .map_err(|e| format!("cannot read {}: {e}", entry.path().display()))?;
        for line in text.lines() {
            let mut parts = line.split(' ');
            for token in [parts.next(), parts.next()].into_iter().flatten() {
                if token.len() == hex_len
                    && let Ok(id) = ObjectId::from_hex(token.as_bytes())
                    && !id.is_null()
                {
                    roots.walk.push(id);
                }
            }
        }
    }
    let index = git_dir.join("index");
    match std::fs::read(&index) {
        Ok(bytes) => {
            let ids = index_object_ids(&bytes, repo.object_hash().len_in_bytes())
                .map_err(|why| format!("cannot read the index ({why})"))?;
            roots.blobs.extend(ids.blobs);
            roots.walk.extend(ids.trees);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot read {}: {e}", index.display())),
    }
    Ok(roots)
}

/// Object ids in a git index file.
#[derive(Debug, Default, PartialEq)]
struct IndexIds {
    /// Entries (files, links, submodules).
    blobs: Vec<ObjectId>,
    /// Sparse-directory entries and the cache tree.
    trees: Vec<ObjectId>,
}

/// The object ids an index (versions 2 to 4) refers to: its entries and its
/// cache tree. Errors on anything it does not understand (a split index,
/// resolve-undo data, an unknown required extension), since then it cannot
/// tell what the index keeps alive.
fn index_object_ids(data: &[u8], hash_len: usize) -> Result<IndexIds, String> {
    let mut ids = IndexIds::default();
    let u32_at = |at: usize| -> Result<u32, String> {
        data.get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| "truncated".to_string())
    };
    let oid_at = |at: usize| -> Result<ObjectId, String> {
        data.get(at..at + hash_len)
            .and_then(|b| ObjectId::try_from(b).ok())
            .ok_or_else(|| "truncated".to_string())
    };
    if data.get(..4) != Some(b"DIRC") {
        return Err("no DIRC signature".into());
    }
    let version = u32_at(4)?;
    if !(2..=4).contains(&version) {
        return Err(format!("version {version}"));
    }
    let count = u32_at(8)? as usize;
    let end = data.len().checked_sub(hash_len).ok_or("truncated")?;
    let mut pos = 12;
    for _ in 0..count {
        let start = pos;
        let mode = u32_at(pos + 24)?;
        let id = oid_at(pos + 40)?;
        let flags_at = pos + 40 + hash_len;
        let flags = data.get(flags_at..flags_at + 2).ok_or("truncated")?;
        let extended = flags[0] & 0x40 != 0;
        pos = flags_at + 2 + if extended && version >= 3 { 2 } else { 0 };
        if version == 4 {
            // A varint (how much of the previous name to drop), then the rest of the name.
            loop {
                let byte = *data.get(pos).ok_or("truncated")?;
                pos += 1;
                if byte & 0x80 == 0 {
                    break;
                }
            }
        }
        let nul =
            data.get(pos..end).and_then(|d| d.iter().position(|&b| b == 0)).ok_or("truncated")?;
        pos += nul + 1;
        if version < 4 {
            // Entries are padded with NULs to a multiple of 8 bytes.
            let len = pos - start;
            pos = start + len.div_ceil(8) * 8;
        }
        if mode & 0o170000 == 0o040000 {
            ids.trees.push(id);
        } else {
            ids.blobs.push(id);
        }
    }
    while pos + 8 <= end {
        let signature = &data[pos..pos + 4];
        let size = u32_at(pos + 4)? as usize;
        let body = data.get(pos + 8..pos + 8 + size).ok_or("truncated extension")?;
        match signature {
            b"TREE" => cache_tree_ids(body, hash_len, &mut ids.trees)?,
            b"link" => return Err("split index".into()),
            b"REUC" => return Err("resolve-undo data".into()),
            b"sdir" => {}
            // Optional extensions (uppercase) carry no objects to keep.
            s if s[0].is_ascii_uppercase() => {}
            s => return Err(format!("unknown extension {}", String::from_utf8_lossy(s))),
        }
        pos += 8 + size;
    }
    Ok(ids)
}

/// Tree ids of an index's cache-tree extension: entries of
/// `<path>\0<entry count> <subtrees>\n[<hash> if count >= 0]`.
fn cache_tree_ids(mut body: &[u8], hash_len: usize, out: &mut Vec<ObjectId>) -> Result<(), String> {
    while !body.is_empty() {
        let nul = body.iter().position(|&b| b == 0).ok_or("bad cache tree")?;
        body = &body[nul + 1..];
        let newline = body.iter().position(|&b| b == b'\n').ok_or("bad cache tree")?;
        let counts = std::str::from_utf8(&body[..newline]).map_err(|_| "bad cache tree")?;
        body = &body[newline + 1..];
        let entries: i64 =
            counts.split(' ').next().and_then(|c| c.parse().ok()).ok_or("bad cache tree")?;
        if entries >= 0 {
            let id = body.get(..hash_len).ok_or("bad cache tree")?;
            out.push(ObjectId::try_from(id).map_err(|_| "bad cache tree")?);
            body = &body[hash_len..];
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn next_run_daily_and_weekdays() {
        let after = at("2026-03-06T10:00:00Z"); // a Friday
        assert_eq!(next_run("0 3 * * *", after).unwrap(), at("2026-03-07T03:00:00Z"));
        assert_eq!(
            next_run("0 3 * * *", at("2026-03-06T02:59:59Z")).unwrap(),
            at("2026-03-06T03:00:00Z")
        );
        // Strictly after: a time on the schedule gives the next one.
        assert_eq!(
            next_run("0 3 * * *", at("2026-03-06T03:00:00Z")).unwrap(),
            at("2026-03-07T03:00:00Z")
        );
        // Friday 10:00 → Monday 09:00.
        assert_eq!(next_run("0 9 * * MON-FRI", after).unwrap(), at("2026-03-09T09:00:00Z"));
        assert_eq!(next_run("30 4 1 * *", after).unwrap(), at("2026-04-01T04:30:00Z"));
        assert_eq!(
            next_run("*/15 * * * *", after).unwrap(),
            Utc.with_ymd_and_hms(2026, 3, 6, 10, 15, 0).unwrap()
        );
    }

    #[test]
    fn next_run_rejects_bad_schedules() {
        for bad in ["", "daily", "0 3 * *", "61 * * * *", "0 25 * * *", "0 3 * * FUNDAY"] {
            let err = next_run(bad, at("2026-03-06T10:00:00Z")).unwrap_err();
            assert!(matches!(err, PruneError::InvalidSchedule { .. }), "{bad}: {err:?}");
            let msg = err.to_string();
            assert!(msg.contains("0 3 * * *"), "no example in: {msg}");
        }
    }

    #[test]
    fn rewrite_expiry_keeps_order_and_fields() {
        let meta = "{\n  \"format\": 1,\n  \"project_id\": \"x-aaaaaaaa\",\n  \"expires_at\": \"2026-01-01T00:00:00Z\",\n  \"site\": {\n    \"language\": \"de\",\n    \"dir\": \"ltr\"\n  },\n  \"warnings\": [\"\\\"expires_at\\\": \\\"2026-01-01T00:00:00Z\\\"\"]\n}";
        let Rewritten { bytes, old, lang, rtl } =
            rewrite_expiry(meta.as_bytes(), "2027-02-02T00:00:00Z").unwrap();
        let out = String::from_utf8(bytes).unwrap();
        assert_eq!(old.as_deref(), Some("2026-01-01T00:00:00Z"));
        assert_eq!(lang.as_deref(), Some("de"));
        assert!(!rtl);
        assert_eq!(
            out,
            meta.replace(
                "\"expires_at\": \"2026-01-01T00:00:00Z\",",
                "\"expires_at\": \"2027-02-02T00:00:00Z\","
            )
        );
        // Compact JSON is rewritten whole.
        let out = rewrite_expiry(
            br#"{"expires_at":"2026-01-01T00:00:00Z","a":1}"#,
            "2027-02-02T00:00:00Z",
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.bytes).unwrap();
        assert_eq!(v["expires_at"], "2027-02-02T00:00:00Z");
        assert_eq!(v["a"], 1);
        assert!(rewrite_expiry(b"[1]", "x").is_err());
    }

    #[test]
    fn index_parser_reads_entries_and_cache_tree() {
        // Written by git itself: two files, one in a subdirectory, with a cache tree.
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let git = |args: &[&str]| {
            let out =
                std::process::Command::new("git").arg("-C").arg(dir).args(args).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        };
        git(&["init", "-q"]);
        std::fs::create_dir(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a.txt"), "a").unwrap();
        std::fs::write(dir.join("sub/b-with-a-longer-name.txt"), "b").unwrap();
        for version in ["2", "3", "4"] {
            git(&["add", "."]);
            git(&["update-index", "--index-version", version]);
            let tree = git(&["write-tree"]); // fills the cache tree
            let sub = git(&["rev-parse", &format!("{tree}:sub")]);
            let ids =
                index_object_ids(&std::fs::read(dir.join(".git/index")).unwrap(), 20).unwrap();
            let blobs: Vec<String> = ids.blobs.iter().map(|i| i.to_string()).collect();
            assert_eq!(
                blobs,
                [
                    git(&["hash-object", "a.txt"]),
                    git(&["hash-object", "sub/b-with-a-longer-name.txt"])
                ],
                "v{version}"
            );
            let trees: Vec<String> = ids.trees.iter().map(|i| i.to_string()).collect();
            assert_eq!(trees, [tree, sub], "v{version}");
        }
        assert!(index_object_ids(b"DIRC\0\0\0\x09", 20).is_err());
        assert!(index_object_ids(b"nope", 20).is_err());
    }
}

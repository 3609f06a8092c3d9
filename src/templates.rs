//! The template generator's renderer: built-in layouts, embedded in the
//! binary, overridden file by file by a site repo's `layouts/`, rendered
//! with tera.
//!
//! Invariants:
//! - customer text only ever reaches tera as *context*, never as template
//!   source, and HTML templates are autoescaped;
//! - CSS comes only from the palette (validated `#rrggbb`) and the layouts,
//!   and `script.js` is copied as is, so no customer text lands in CSS or JS;
//! - a layout set that doesn't parse, lacks a string or fails to render a
//!   sample site is reported by [`Layouts::check`], before any job runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{Datelike, NaiveDate};
use serde_json::json;
use tera::{Context, Tera};

use crate::stages::{Analysis, SectionKind, SiteKind};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded.rs"));
}

/// The built-in layouts, prompts and examples, as (relative path, bytes).
pub use embedded::{EXAMPLES, LAYOUTS, PROMPTS};

/// Files of the layout set that are not templates.
const SCRIPT: &str = "script.js";
const STRINGS: &str = "strings.yaml";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("layout {name}: {message}")]
    Template { name: String, message: String },
    #[error("{file}: {message}")]
    Strings { file: String, message: String },
    #[error(
        "layout set has no `{name}`; restore it with `protoforge init --layouts` or delete the override"
    )]
    Missing { name: String },
}

/// A tera error with its whole cause chain (tera puts the useful part,
/// such as the undefined variable, in the source).
fn tera_error(name: &str, e: &tera::Error) -> TemplateError {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    TemplateError::Template { name: name.into(), message }
}

/// UI strings of one language, falling back to English.
#[derive(Debug, Clone, Default)]
pub struct Strings(BTreeMap<String, String>);

impl Strings {
    /// The string for `key`, or the key itself (visible, so a missing
    /// translation is noticed, and `check` reports it).
    pub fn get<'a>(&'a self, key: &'a str) -> &'a str {
        self.0.get(key).map(String::as_str).unwrap_or(key)
    }

    pub fn map(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    #[cfg(test)]
    pub fn builtin_for_tests() -> Strings {
        Layouts::builtin().expect("built-in layouts load").strings("en")
    }
}

/// A loaded layout set.
pub struct Layouts {
    files: BTreeMap<String, Vec<u8>>,
    /// Names that came from the repo rather than the binary.
    overrides: Vec<String>,
    tera: Tera,
    strings: BTreeMap<String, BTreeMap<String, String>>,
}

/// The three files every site gets from the renderer.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub index_html: String,
    pub styles_css: String,
    pub script_js: Vec<u8>,
    pub layout: String,
}

impl Layouts {
    /// The embedded layouts only.
    pub fn builtin() -> Result<Layouts, TemplateError> {
        Layouts::from_files(
            LAYOUTS.iter().map(|(n, b)| (n.to_string(), b.to_vec())).collect(),
            Vec::new(),
        )
    }

    /// The embedded layouts, with every file under `dir` (if it exists)
    /// replacing the embedded one of the same name.
    pub fn load(dir: &Path) -> Result<Layouts, TemplateError> {
        let mut files: BTreeMap<String, Vec<u8>> =
            LAYOUTS.iter().map(|(n, b)| (n.to_string(), b.to_vec())).collect();
        let mut overrides = Vec::new();
        if dir.is_dir() {
            for entry in walkdir::WalkDir::new(dir).follow_links(false).sort_by_file_name() {
                let entry = entry.map_err(|e| TemplateError::Read {
                    path: dir.into(),
                    source: e
                        .into_io_error()
                        .unwrap_or_else(|| std::io::Error::other("walk failed")),
                })?;
                if !entry.file_type().is_file() {
                    continue;
                }
                let rel = entry
                    .path()
                    .strip_prefix(dir)
                    .expect("walked from dir")
                    .to_string_lossy()
                    .replace('\\', "/");
                if rel.split('/').any(|p| p.starts_with('.'))
                    || rel.ends_with('~')
                    || rel == "README.md"
                {
                    continue;
                }
                let bytes = std::fs::read(entry.path())
                    .map_err(|source| TemplateError::Read { path: entry.path().into(), source })?;
                if files.get(&rel) != Some(&bytes) {
                    overrides.push(rel.clone());
                }
                files.insert(rel, bytes);
            }
        }
        Layouts::from_files(files, overrides)
    }

    fn from_files(
        files: BTreeMap<String, Vec<u8>>,
        overrides: Vec<String>,
    ) -> Result<Layouts, TemplateError> {
        let mut tera = Tera::new();
        let mut templates = Vec::new();
        for (name, bytes) in &files {
            if name.ends_with(".html") || name.ends_with(".css") {
                let text = std::str::from_utf8(bytes).map_err(|_| TemplateError::Template {
                    name: name.clone(),
                    message: "is not UTF-8 text".into(),
                })?;
                templates.push((name.clone(), text.to_string()));
            }
        }
        tera.add_raw_templates(templates).map_err(|e| tera_error("(set)", &e))?;
        let strings_src =
            files.get(STRINGS).ok_or(TemplateError::Missing { name: STRINGS.into() })?;
        let strings_text = std::str::from_utf8(strings_src).map_err(|_| {
            TemplateError::Strings { file: STRINGS.into(), message: "is not UTF-8".into() }
        })?;
        let strings: BTreeMap<String, BTreeMap<String, String>> =
            serde_saphyr::from_str(strings_text).map_err(|e| {
                let at = e
                    .location()
                    .map(|l| format!("{}:{}: ", l.line(), l.column()))
                    .unwrap_or_default();
                TemplateError::Strings {
                    file: STRINGS.into(),
                    message: format!("{at}{}", crate::config::yaml_message(&e, &[])),
                }
            })?;
        if !strings.contains_key("en") {
            return Err(TemplateError::Strings {
                file: STRINGS.into(),
                message: "has no `en` section; English is the fallback for every language".into(),
            });
        }
        if !files.contains_key(SCRIPT) {
            return Err(TemplateError::Missing { name: SCRIPT.into() });
        }
        Ok(Layouts { files, overrides, tera, strings })
    }

    /// Files taken from the repo instead of the binary.
    pub fn overrides(&self) -> &[String] {
        &self.overrides
    }

    /// Every file of the set, for `init` to copy.
    pub fn files(&self) -> &BTreeMap<String, Vec<u8>> {
        &self.files
    }

    /// UI strings for a language tag: English, then the primary language,
    /// then the full tag.
    pub fn strings(&self, lang: &str) -> Strings {
        let mut out = self.strings.get("en").cloned().unwrap_or_default();
        let primary = lang.split('-').next().unwrap_or(lang).to_ascii_lowercase();
        for tag in [primary, lang.to_string()] {
            if let Some(m) = self.strings.get(&tag) {
                out.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        Strings(out)
    }

    /// The layout used for a kind: its own, else `generic`.
    pub fn layout_for(&self, kind: SiteKind) -> &'static str {
        let name = kind.as_str();
        if self.tera.get_template_names().any(|n| n == format!("{name}.html")) {
            name
        } else {
            "generic"
        }
    }

    /// Render a site. `expires_on` goes on the page and in the context.
    pub fn render(
        &self,
        analysis: &Analysis,
        project_id: &str,
        expires_on: NaiveDate,
    ) -> Result<Rendered, TemplateError> {
        let layout = self.layout_for(analysis.kind);
        let t = self.strings(&analysis.lang);
        let nav: Vec<_> = analysis
            .sections
            .iter()
            .filter(|s| s.kind != SectionKind::About || analysis.sections.len() <= 4)
            .map(|s| json!({ "id": s.id, "title": s.title }))
            .collect();
        let value = json!({
            "site": {
                "project_id": project_id,
                "name": analysis.name,
                "tagline": analysis.tagline,
                "kind": analysis.kind,
                "layout": layout,
                "lang": analysis.lang,
                "dir": analysis.dir,
                "mood": analysis.mood,
                "intro": analysis.intro,
                "expires_on": expires_on.format("%Y-%m-%d").to_string(),
                "year": expires_on.year(),
            },
            "palette": analysis.palette,
            "t": t.map(),
            "nav": nav,
            "sections": analysis.sections,
            "facts": analysis.facts,
            "logo": analysis.logo,
            "images": analysis.images,
        });
        let context = Context::from_serialize(&value).map_err(|e| tera_error("(context)", &e))?;
        let page = format!("{layout}.html");
        let index_html = self.tera.render(&page, &context).map_err(|e| tera_error(&page, &e))?;
        let styles_css = self.stylesheet(analysis, layout)?;
        let script_js = self
            .files
            .get(SCRIPT)
            .cloned()
            .ok_or(TemplateError::Missing { name: SCRIPT.into() })?;
        Ok(Rendered { index_html, styles_css, script_js, layout: layout.to_string() })
    }

    /// `css/base.css` and `css/<name>.css` with the analysis's palette: a layout's
    /// stylesheet, or (`semantic`) the classless one a model-written page falls back to.
    pub fn stylesheet(&self, analysis: &Analysis, name: &str) -> Result<String, TemplateError> {
        // CSS is rendered without escaping, so it sees only the palette
        // (validated `#rrggbb`) and layout names, never customer text.
        let css_context = Context::from_serialize(&json!({
            "palette": analysis.palette,
            "site": { "layout": name, "kind": analysis.kind, "dir": analysis.dir },
        }))
        .map_err(|e| tera_error("(context)", &e))?;
        let mut styles_css = String::new();
        for file in ["css/base.css".to_string(), format!("css/{name}.css")] {
            if self.tera.get_template_names().any(|n| n == file) {
                styles_css.push_str(
                    &self.tera.render(&file, &css_context).map_err(|e| tera_error(&file, &e))?,
                );
                styles_css.push('\n');
            }
        }
        Ok(styles_css)
    }

    /// Everything wrong with the set: strings missing in English, layouts
    /// that mark customer text `safe`, and any layout that fails to render
    /// the built-in sample.
    pub fn check(&self, sample: &Analysis) -> Vec<String> {
        let mut problems = Vec::new();
        let en = self.strings("en");
        let mut required: Vec<String> = vec!["banner".into()];
        required.extend(SiteKind::ALL.iter().map(|k| format!("tagline_{}", k.as_str())));
        required.extend(
            crate::stages::analyze::ALL_SECTION_KINDS
                .iter()
                .map(|k| format!("section_{}", k.as_str())),
        );
        for key in required {
            if !en.map().contains_key(&key) {
                problems.push(format!(
                    "{STRINGS}: `en` has no `{key}`; add it (every language falls back to English)"
                ));
            }
        }
        if !en.get("banner").contains("{date}") {
            problems.push(format!("{STRINGS}: `en.banner` must contain {{date}}"));
        }
        let comment = regex::Regex::new(r"(?s)\{#.*?#\}").expect("static regex");
        let safe = regex::Regex::new(r"\|\s*safe\b").expect("static regex");
        for (name, bytes) in &self.files {
            let text = String::from_utf8_lossy(bytes);
            if name.ends_with(".html") && safe.is_match(&comment.replace_all(&text, "")) {
                problems.push(format!(
                    "layout {name}: uses the `safe` filter; customer text must stay escaped — remove `| safe`"
                ));
            }
        }
        for kind in SiteKind::ALL {
            let mut a = sample.clone();
            a.kind = *kind;
            if let Err(e) = self.render(
                &a,
                "sample-aaaaaaaa",
                NaiveDate::from_ymd_opt(2026, 1, 1).expect("valid date"),
            ) {
                problems.push(e.to_string());
            }
        }
        problems
    }
}

/// The embedded example submissions: `(file name, bytes)` for `*.yaml`, and
/// attachments under `attachments/`.
pub fn examples() -> impl Iterator<Item = (&'static str, &'static [u8])> {
    EXAMPLES.iter().copied().filter(|(p, _)| p.ends_with(".yaml") || p.starts_with("attachments/"))
}

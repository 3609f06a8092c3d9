//! The last gate before publishing: every generated site goes through here.
//!
//! Whatever produced the pages (our templates, or a confused or hijacked model), a site is
//! published only as [`finalize_site`] leaves it:
//! 1. `images`: every image is decoded (the real type check), scaled to fit
//!    `finalize.max_image_px`, stripped of its metadata and re-encoded; other files must be
//!    of a type a prototype publishes, with bytes that match their name;
//! 2. `rewrite`: lol_html rewrites each page in two streaming passes: sanitized,
//!    completed with what every page must have (links to the site's stylesheet and script,
//!    image sizes and descriptions, a note in every form), bannered; stylesheets lose their
//!    remote references;
//! 3. `tree`: html5ever parses each result as a browser would. Markup the browser has to
//!    guess at is written back balanced and rewritten again; then the output invariants are
//!    verified on that tree, and a page that breaks one fails the job;
//! 4. checks: broken links and anchors, missing assets, empty headings, the palette's
//!    contrast and the size budget, recorded in [`Checks`] for `metadata.json`.
//!
//! Invariants: a page that leaves here passed the verifier of `tree`, so two independent
//! parsers agree it is inert; a site over `finalize.hard_cap_bytes` is not published; what
//! finalize changed or could not fix is a warning, never silent.

mod images;
mod rewrite;
mod tree;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

pub use images::{ImageError, MAX_SIDE, Processed, format_of, process as process_image};
pub use rewrite::{
    Direction, FinalizeError, Finalized, FinalizedCss, ImageInfo, MAX_WARNINGS, PageOptions,
    SiteFiles, finalize_css, finalize_html,
};

/// A page ready to publish: rewritten, repaired, verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub html: String,
    pub warnings: Vec<String>,
    /// The parse errors a browser would have met, if the markup had to be repaired.
    pub repaired: Vec<String>,
}

/// Run one page through the whole gate (steps 2 and 3 of the module docs).
pub fn finalize_page(input: &str, opts: &PageOptions<'_>) -> Result<Page, FinalizeError> {
    page_with_facts(input, opts).map(|(page, _)| page)
}

fn page_with_facts(
    input: &str,
    opts: &PageOptions<'_>,
) -> Result<(Page, tree::PageFacts), FinalizeError> {
    let Finalized { mut html, mut warnings } = finalize_html(input, opts)?;
    let mut parsed = tree::Tree::parse(&html);
    let repaired = parsed.errors();
    if let Some(first) = repaired.first() {
        let again = finalize_html(&parsed.serialize(), opts)?;
        html = again.html;
        for w in again.warnings {
            if !warnings.contains(&w) {
                warnings.push(w);
            }
        }
        let more = match repaired.len() {
            1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        warnings.push(format!("repaired markup a browser would have to guess at: {first}{more}"));
        parsed = tree::Tree::parse(&html);
        if let Some(left) = parsed.errors().first() {
            warnings.push(format!("the markup still has parse errors after repair: {left}"));
        }
    }
    let path = if opts.path.is_empty() { "index.html" } else { opts.path };
    // SECURITY: the one script a site has is the JS stage's `script.js`; no other file
    // (whatever its name) may run.
    let scripts: Option<BTreeSet<String>> = opts.site.map(|s| s.script.iter().cloned().collect());
    let (problems, facts) = parsed.verify_and_facts(scripts.as_ref(), path);
    if !problems.is_empty() {
        return Err(FinalizeError::Unsafe { page: path.to_owned(), problems });
    }
    Ok((Page { html, warnings, repaired }, facts))
}

/// Size limits of a site's files, all together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// A warning past this, for a site without images…
    pub bytes: u64,
    /// …and with images.
    pub with_images_bytes: u64,
    /// The job fails past this.
    pub hard_cap_bytes: u64,
}

/// A foreground/background pair of the palette whose contrast must pass WCAG AA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColorPair {
    pub name: &'static str,
    pub foreground: String,
    pub background: String,
}

/// What [`finalize_site`] needs beyond the files.
#[derive(Debug, Clone)]
pub struct SiteOptions<'a> {
    /// For every page; `path` and `site` are filled in per page.
    pub page: PageOptions<'a>,
    pub max_image_px: u32,
    pub budget: Budget,
    /// The customer's description of each image, by its path in the site.
    pub descriptions: HashMap<String, String>,
    pub palette: Vec<ColorPair>,
}

/// WCAG AA for body text.
pub const AA_CONTRAST: f64 = 4.5;

/// One finding of a check: on which page, about what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub page: String,
    pub target: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Contrast {
    pub pair: &'static str,
    pub foreground: String,
    pub background: String,
    /// Rounded to two decimals.
    pub ratio: f64,
    pub passes_aa: bool,
}

/// What became of one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageReport {
    pub from: String,
    pub to: String,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub width: u32,
    pub height: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scaled_from: Option<[u32; 2]>,
}

/// The checks of a site, as `metadata.json` records them under `checks`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Checks {
    /// True when nothing below needs a look: no finding, every pair passes, within budget.
    pub passed: bool,
    pub broken_links: Vec<Finding>,
    pub broken_anchors: Vec<Finding>,
    pub missing_assets: Vec<Finding>,
    pub empty_headings: Vec<Finding>,
    pub skipped_headings: Vec<Finding>,
    pub contrast: Vec<Contrast>,
    /// Pages whose markup had to be repaired.
    pub repaired_pages: Vec<String>,
    pub images: Vec<ImageReport>,
    pub total_bytes: u64,
    pub budget_bytes: u64,
}

/// A site ready to publish.
#[derive(Debug, Clone)]
pub struct FinalizedSite {
    pub files: Vec<(String, Vec<u8>)>,
    pub warnings: Vec<String>,
    pub checks: Checks,
}

/// Whether `path` names a page (`.html`, `.htm`, any case).
pub fn is_page(path: &str) -> bool {
    matches!(publishable(path), Some(Kind::Page))
}

/// What a site may publish besides images, and what its bytes must start with (if anything
/// can be checked). Everything else is left out.
fn publishable(path: &str) -> Option<Kind> {
    let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "html" | "htm" => Kind::Page,
        "css" => Kind::Stylesheet,
        "js" | "mjs" | "json" | "txt" | "md" | "csv" => Kind::Text,
        "woff2" => Kind::Magic(&[b"wOF2"]),
        "woff" => Kind::Magic(&[b"wOFF"]),
        "pdf" => Kind::Magic(&[b"%PDF-"]),
        "ico" => Kind::Magic(&[b"\0\0\x01\0"]),
        _ => return None,
    })
}

#[derive(Clone, Copy)]
enum Kind {
    Page,
    Stylesheet,
    Text,
    Magic(&'static [&'static [u8]]),
}

/// Run a whole site through the gate (see the module docs).
pub fn finalize_site(
    files: Vec<(String, Vec<u8>)>,
    opts: &SiteOptions<'_>,
) -> Result<FinalizedSite, FinalizeError> {
    let mut warnings = Vec::new();
    let mut checks = Checks::default();
    let mut out: Vec<(String, Vec<u8>)> = Vec::with_capacity(files.len());
    let mut site = SiteFiles::default();
    let taken: BTreeSet<String> = files.iter().map(|(p, _)| p.clone()).collect();

    // 1. Assets.
    let mentioned: Vec<String> = files
        .iter()
        .filter_map(|(p, b)| match publishable(p) {
            Some(Kind::Stylesheet) => Some(String::from_utf8_lossy(b).into_owned()),
            // Only the parts of a page that name images outside `src`.
            Some(Kind::Page) => {
                let text = String::from_utf8_lossy(b);
                (text.contains("srcset") || text.contains("url(")).then(|| text.into_owned())
            }
            _ => None,
        })
        .collect();
    for (path, bytes) in files {
        if let Some(format) = format_of(&path) {
            // A new format means a new name; references in CSS and srcset are not rewritten,
            // so an image named there keeps its format.
            let name = path.rsplit('/').next().unwrap_or(&path);
            let keep_format = mentioned.iter().any(|text| text.contains(name));
            match images::process(&bytes, format, opts.max_image_px, keep_format) {
                Ok(p) => {
                    let to = renamed(&path, p.ext, &taken, &out);
                    let info = ImageInfo {
                        path: to.clone(),
                        width: p.width,
                        height: p.height,
                        alt: opts.descriptions.get(&path).cloned(),
                    };
                    // By either name: pass 2 may meet the reference already renamed.
                    site.images.insert(to.clone(), info.clone());
                    site.images.insert(path.clone(), info);
                    if let Some((w, h)) = p.scaled_from {
                        warnings.push(format!(
                            "{path}: scaled from {w}×{h} to {}×{} (finalize.max_image_px is {})",
                            p.width, p.height, opts.max_image_px
                        ));
                    }
                    checks.images.push(ImageReport {
                        from: path,
                        to: to.clone(),
                        bytes_before: bytes.len() as u64,
                        bytes_after: p.bytes.len() as u64,
                        width: p.width,
                        height: p.height,
                        scaled_from: p.scaled_from.map(|(w, h)| [w, h]),
                    });
                    out.push((to, p.bytes));
                }
                Err(e) => warnings.push(format!(
                    "{path}: left out: {e}; hint: send the image again as a PNG, JPEG, GIF or WebP"
                )),
            }
            continue;
        }
        let ok = match publishable(&path) {
            // SVG can carry script, and HTML under another name would be served as what its
            // name says; only known types with matching bytes are published.
            None => {
                Err("a prototype publishes pages, styles, scripts, images, fonts and PDFs only")
            }
            Some(Kind::Page | Kind::Stylesheet | Kind::Text) => {
                std::str::from_utf8(&bytes).map(|_| ()).map_err(|_| "it is not UTF-8 text")
            }
            Some(Kind::Magic(magic)) => {
                if magic.iter().any(|m| bytes.starts_with(m)) {
                    Ok(())
                } else {
                    Err("its bytes are not of the type its name says")
                }
            }
        };
        match ok {
            Ok(()) => out.push((path, bytes)),
            Err(why) => warnings.push(format!("{path}: left out: {why}")),
        }
    }
    site.files = out.iter().map(|(p, _)| p.clone()).collect();
    site.stylesheet = site.files.contains("styles.css").then(|| "styles.css".to_owned());
    site.script = site.files.contains("script.js").then(|| "script.js".to_owned());

    // 2 and 3. Pages and stylesheets.
    let mut facts: BTreeMap<String, tree::PageFacts> = BTreeMap::new();
    for (path, bytes) in &mut out {
        match publishable(path) {
            Some(Kind::Page) => {
                let text = String::from_utf8_lossy(bytes);
                let page_opts = PageOptions { path, site: Some(&site), ..opts.page };
                let (page, page_facts) =
                    page_with_facts(&text, &page_opts).map_err(|e| match e {
                        FinalizeError::Unsafe { .. } => e,
                        e => FinalizeError::Page { page: path.clone(), source: Box::new(e) },
                    })?;
                if !page.repaired.is_empty() {
                    checks.repaired_pages.push(path.clone());
                }
                warnings.extend(page.warnings.into_iter().map(|w| prefixed(path, w)));
                facts.insert(path.clone(), page_facts);
                *bytes = page.html.into_bytes();
            }
            Some(Kind::Stylesheet) => {
                let css = finalize_css(&String::from_utf8_lossy(bytes));
                warnings.extend(css.warnings.into_iter().map(|w| prefixed(path, w)));
                *bytes = css.css.into_bytes();
            }
            _ => {}
        }
    }

    // 4. Checks.
    references(&facts, &site.files, &mut checks);
    for (page, f) in &facts {
        let mut last: Option<u8> = None;
        for (level, text) in &f.headings {
            if text.trim().is_empty() {
                checks
                    .empty_headings
                    .push(Finding { page: page.clone(), target: format!("h{level}") });
            }
            if last.is_some_and(|prev| *level > prev + 1) {
                checks.skipped_headings.push(Finding {
                    page: page.clone(),
                    target: format!("h{} to h{level}", last.unwrap_or(0)),
                });
            }
            last = Some(*level);
        }
    }
    for pair in &opts.palette {
        let ratio = crate::stages::palette::contrast(&pair.foreground, &pair.background);
        checks.contrast.push(Contrast {
            pair: pair.name,
            foreground: pair.foreground.clone(),
            background: pair.background.clone(),
            ratio: (ratio * 100.0).round() / 100.0,
            passes_aa: ratio >= AA_CONTRAST,
        });
    }
    checks.total_bytes = out.iter().map(|(_, b)| b.len() as u64).sum();
    let b = opts.budget;
    checks.budget_bytes = if checks.images.is_empty() { b.bytes } else { b.with_images_bytes };
    if checks.total_bytes > b.hard_cap_bytes {
        return Err(FinalizeError::OverBudget { bytes: checks.total_bytes, cap: b.hard_cap_bytes });
    }
    warnings.extend(findings_as_warnings(&checks));
    checks.passed = checks.broken_links.is_empty()
        && checks.broken_anchors.is_empty()
        && checks.missing_assets.is_empty()
        && checks.empty_headings.is_empty()
        && checks.skipped_headings.is_empty()
        && checks.contrast.iter().all(|c| c.passes_aa)
        && checks.total_bytes <= checks.budget_bytes;
    Ok(FinalizedSite { files: out, warnings, checks })
}

fn prefixed(path: &str, warning: String) -> String {
    if path == "index.html" || path == "styles.css" {
        warning
    } else {
        format!("{path}: {warning}")
    }
}

/// The path an image gets in its new format: same stem, new extension, never a name
/// another file has.
fn renamed(path: &str, ext: &str, taken: &BTreeSet<String>, out: &[(String, Vec<u8>)]) -> String {
    let (stem, old) = path.rsplit_once('.').unwrap_or((path, ""));
    let same = old.eq_ignore_ascii_case(ext) || (ext == "jpg" && old.eq_ignore_ascii_case("jpeg"));
    if same {
        return path.to_owned();
    }
    let used = |p: &str| taken.contains(p) || out.iter().any(|(o, _)| o == p);
    let mut candidate = format!("{stem}.{ext}");
    let mut n = 2;
    while used(&candidate) {
        candidate = format!("{stem}-{n}.{ext}");
        n += 1;
    }
    candidate
}

/// Broken links, anchors and assets: every same-site reference of every page, resolved.
fn references(
    facts: &BTreeMap<String, tree::PageFacts>,
    files: &BTreeSet<String>,
    checks: &mut Checks,
) {
    for (page, f) in facts {
        for r in &f.references {
            let url = r.url.trim();
            if rewrite::classify_url(url).0 != rewrite::UrlKind::Relative {
                continue;
            }
            let fragment = url.split_once('#').map(|(_, f)| f);
            let finding = || Finding { page: page.clone(), target: url.to_owned() };
            let Some(target) = tree::resolve(page, url) else {
                let list =
                    if r.navigates { &mut checks.broken_links } else { &mut checks.missing_assets };
                list.push(finding());
                continue;
            };
            if !files.contains(&target) {
                let list =
                    if r.navigates { &mut checks.broken_links } else { &mut checks.missing_assets };
                list.push(finding());
                continue;
            }
            let Some(fragment) = fragment.filter(|f| !f.is_empty() && *f != "top") else {
                continue;
            };
            let id = percent_encoding::percent_decode_str(fragment).decode_utf8_lossy();
            if let Some(target_facts) = facts.get(&target)
                && !target_facts.ids.contains(id.as_ref())
            {
                checks.broken_anchors.push(finding());
            }
        }
    }
}

fn findings_as_warnings(c: &Checks) -> Vec<String> {
    let mut w = Vec::new();
    for (list, what) in [
        (&c.broken_links, "broken link"),
        (&c.broken_anchors, "link to a missing anchor"),
        (&c.missing_assets, "missing file"),
        (&c.empty_headings, "empty heading"),
        (&c.skipped_headings, "skipped heading level"),
    ] {
        w.extend(list.iter().map(|f| format!("{}: {what}: {}", f.page, f.target)));
    }
    for p in c.contrast.iter().filter(|p| !p.passes_aa) {
        w.push(format!(
            "contrast of {} ({} on {}) is {:.2}:1, below WCAG AA {AA_CONTRAST}:1",
            p.pair, p.foreground, p.background, p.ratio
        ));
    }
    if c.total_bytes > c.budget_bytes {
        w.push(format!(
            "the site is {} bytes, over its budget of {} (finalize.budget_bytes / \
             budget_with_images_bytes); smaller images help most",
            c.total_bytes, c.budget_bytes
        ));
    }
    w
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img =
            image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 5) as u8, 90]));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    fn opts() -> SiteOptions<'static> {
        SiteOptions {
            page: PageOptions {
                lang: "en",
                banner: "Prototype — expires on 2026-12-22",
                title: "Site",
                dismiss: "Dismiss",
                form_note: "This is a prototype: messages are not sent.",
                ..PageOptions::default()
            },
            max_image_px: 1600,
            budget: Budget {
                bytes: 2_000_000,
                with_images_bytes: 10_000_000,
                hard_cap_bytes: 25_000_000,
            },
            descriptions: [("assets/photo.png".to_owned(), "Our shop front".to_owned())].into(),
            palette: vec![ColorPair {
                name: "text on background",
                foreground: "#111111".into(),
                background: "#ffffff".into(),
            }],
        }
    }

    fn site(index: &str) -> Vec<(String, Vec<u8>)> {
        vec![
            ("index.html".into(), index.as_bytes().to_vec()),
            (
                "about.html".into(),
                b"<!DOCTYPE html><title>About</title><h1 id=team>Team</h1>".to_vec(),
            ),
            (
                "styles.css".into(),
                b"@import url(https://fonts.example/a.css); body{color:#111}".to_vec(),
            ),
            ("script.js".into(), b"console.log(1)".to_vec()),
            ("assets/photo.png".into(), png(40, 30)),
        ]
    }

    fn file<'a>(out: &'a FinalizedSite, path: &str) -> &'a str {
        let bytes =
            &out.files.iter().find(|(p, _)| p == path).unwrap_or_else(|| panic!("{path}")).1;
        std::str::from_utf8(bytes).unwrap()
    }

    #[test]
    fn pages_get_the_sites_stylesheet_script_image_facts_and_form_notes() {
        let out = finalize_site(
            site(concat!(
                "<!DOCTYPE html><html><head><title> </title></head><body><h1>Shop</h1>",
                "<img src=\"assets/photo.png\"><img src=\"./assets/photo.png\" alt=\"\">",
                "<form><input name=q aria-label=q></form>",
                "<script src=\"evil.js\"></script></body></html>"
            )),
            &opts(),
        )
        .unwrap();
        let html = file(&out, "index.html");
        let photo = out.checks.images[0].to.clone();
        assert!(photo.starts_with("assets/photo."), "{photo}");
        assert!(
            html.contains(&format!(
                r#"<img src="{photo}" width="40" height="30" alt="Our shop front">"#
            )),
            "{html}"
        );
        assert!(html.contains(r#"alt="" loading="lazy""#), "the second image loads lazily: {html}");
        assert!(html.contains(r#"<link rel="stylesheet" href="styles.css">"#), "{html}");
        assert!(html.contains(r#"<script src="script.js" defer></script>"#), "{html}");
        assert!(!html.contains("evil.js"), "a script that is not a file of the site: {html}");
        assert!(html.contains("<title>Site</title>"), "an empty title is filled: {html}");
        assert_eq!(html.matches("data-pf-form-note").count(), 1, "{html}");
        assert!(html.contains("<dialog class=\"pf-banner\" open"), "{html}");
        assert!(!file(&out, "styles.css").contains("fonts.example"));
        assert!(
            out.warnings.iter().any(|w| w.contains("removed script evil.js")),
            "{:?}",
            out.warnings
        );
        assert!(out.checks.passed, "{:?}", out.checks);
        // The published page goes through again unchanged: the gate is idempotent.
        let again = finalize_site(out.files.clone(), &opts()).unwrap();
        assert_eq!(file(&again, "index.html"), html);
    }

    #[test]
    fn a_script_or_stylesheet_at_the_end_of_the_body_moves_to_the_head() {
        let out = finalize_site(
            site(concat!(
                "<!DOCTYPE html><title>x</title><h1>x</h1><link rel=stylesheet href=styles.css>",
                "<script src=\"./script.js\"></script>"
            )),
            &opts(),
        )
        .unwrap();
        let html = file(&out, "index.html");
        assert_eq!(html.matches("script.js").count(), 1, "{html}");
        assert_eq!(html.matches("styles.css").count(), 1, "{html}");
        let head = html.split("</head>").next().unwrap();
        assert!(head.contains("script.js") && head.contains("styles.css"), "{html}");
    }

    #[test]
    fn broken_references_empty_headings_and_poor_contrast_are_recorded() {
        let mut o = opts();
        o.palette.push(ColorPair {
            name: "muted text on background",
            foreground: "#aaaaaa".into(),
            background: "#ffffff".into(),
        });
        let out = finalize_site(
            site(concat!(
                "<h1>Home</h1><h2> </h2><a href=\"menu.html\">Menu</a><a href=\"#nowhere\">x</a>",
                "<a href=\"about.html#team\">Team</a><a href=\"about.html#gone\">Gone</a>",
                "<a href=\"#top\">Top</a><a href=\"https://example.com/\">Out</a>",
                "<img src=\"assets/missing.png\" alt=\"\"><a href=\"../../etc/passwd\">up</a>"
            )),
            &o,
        )
        .unwrap();
        let targets = |v: &[Finding]| v.iter().map(|f| f.target.clone()).collect::<Vec<_>>();
        assert_eq!(targets(&out.checks.broken_links), ["menu.html", "../../etc/passwd"]);
        assert_eq!(targets(&out.checks.broken_anchors), ["#nowhere", "about.html#gone"]);
        assert_eq!(targets(&out.checks.missing_assets), ["assets/missing.png"]);
        assert_eq!(targets(&out.checks.empty_headings), ["h2"]);
        let muted = &out.checks.contrast[1];
        assert!(!muted.passes_aa && muted.ratio < 4.5, "{muted:?}");
        assert!(out.checks.contrast[0].passes_aa);
        assert!(!out.checks.passed);
        for needle in
            ["broken link: menu.html", "missing file: assets/missing.png", "contrast of muted"]
        {
            assert!(
                out.warnings.iter().any(|w| w.contains(needle)),
                "{needle}: {:?}",
                out.warnings
            );
        }
    }

    #[test]
    fn files_that_lie_about_their_type_are_left_out() {
        let mut files = site("<h1>x</h1>");
        files.push(("assets/fake.png".into(), b"<svg onload=alert(1)></svg>".to_vec()));
        files.push(("assets/logo.svg".into(), b"<svg><script>alert(1)</script></svg>".to_vec()));
        files.push(("font.woff2".into(), b"<html>".to_vec()));
        files.push(("notes.txt".into(), vec![0xff, 0xfe, 0x00]));
        let out = finalize_site(files, &opts()).unwrap();
        for gone in ["assets/fake.png", "assets/logo.svg", "font.woff2", "notes.txt"] {
            assert!(!out.files.iter().any(|(p, _)| p == gone), "{gone} was published");
            assert!(
                out.warnings.iter().any(|w| w.starts_with(&format!("{gone}: left out"))),
                "{gone}"
            );
        }
    }

    #[test]
    fn a_renamed_image_is_renamed_everywhere_but_one_named_in_css_keeps_its_format() {
        let photo = "assets/photo.png";
        let out = finalize_site(
            site(&format!(r#"<h1>x</h1><a href="{photo}"><img src="/{photo}"></a>"#)),
            &opts(),
        )
        .unwrap();
        let to = &out.checks.images[0].to;
        if to != photo {
            // (Which is smaller depends on the pixels; the rewrite test below forces a rename.)
            let html = file(&out, "index.html");
            assert!(!html.contains(photo), "the old name is left: {html}");
            assert!(
                html.contains(&format!(r#"<a href="{to}"><img src="{to}" width="40""#)),
                "{html}"
            );
        }
        assert!(out.checks.broken_links.is_empty() && out.checks.missing_assets.is_empty());
        let mut files = site("<h1>x</h1>");
        files[2].1 = format!("body{{background:url({photo})}}").into_bytes();
        let out = finalize_site(files, &opts()).unwrap();
        assert_eq!(out.checks.images[0].to, photo, "styles.css names it");
    }

    #[test]
    fn every_reference_to_a_renamed_image_follows_it() {
        let info = ImageInfo { path: "img/a.webp".into(), width: 4, height: 3, alt: None };
        let site = SiteFiles {
            files: ["img/a.webp".to_owned()].into(),
            images: [("img/a.png".to_owned(), info.clone()), ("img/a.webp".to_owned(), info)]
                .into(),
            ..SiteFiles::default()
        };
        let opts = PageOptions { path: "docs/p.html", site: Some(&site), ..opts().page };
        let page = finalize_page(
            r#"<h1>x</h1><a href="../img/a.png#z">a</a><img src="/img/a.png" alt=""><link rel=icon href="../img/a.png">"#,
            &opts,
        )
        .unwrap();
        assert!(!page.html.contains("a.png"), "{}", page.html);
        assert!(page.html.contains(r#"<a href="../img/a.webp#z">"#), "{}", page.html);
        assert!(
            page.html.contains(r#"<img src="../img/a.webp" alt="" width="4" height="3">"#),
            "{}",
            page.html
        );
    }

    #[test]
    fn the_budget_warns_then_fails() {
        let mut o = opts();
        o.budget = Budget { bytes: 100, with_images_bytes: 200, hard_cap_bytes: 1_000_000 };
        let out = finalize_site(site("<h1>x</h1>"), &o).unwrap();
        assert_eq!(out.checks.budget_bytes, 200, "the site has an image");
        assert!(out.checks.total_bytes > 200 && !out.checks.passed);
        assert!(out.warnings.iter().any(|w| w.contains("over its budget")), "{:?}", out.warnings);
        o.budget.hard_cap_bytes = 300;
        let err = finalize_site(site("<h1>x</h1>"), &o).unwrap_err();
        assert!(err.to_string().contains("hard cap of 300 (finalize.hard_cap_bytes)"), "{err}");
    }

    #[test]
    fn pages_in_folders_resolve_their_references() {
        let mut files = site("<h1>x</h1>");
        files.push((
            "docs/guide.html".into(),
            b"<h1>Guide</h1><img src=\"../assets/photo.png\"><a href=\"../about.html#team\">t</a>"
                .to_vec(),
        ));
        let out = finalize_site(files, &opts()).unwrap();
        let guide = file(&out, "docs/guide.html");
        let photo = &out.checks.images[0].to;
        assert!(guide.contains(&format!("src=\"../{photo}\" width=\"40\"")), "{guide}");
        assert!(guide.contains(r#"<link rel="stylesheet" href="../styles.css">"#), "{guide}");
        assert!(out.checks.broken_links.is_empty() && out.checks.broken_anchors.is_empty());
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    /// Fragments a confused or hostile model emits, to be shuffled into pages.
    const PIECES: &[&str] = &[
        "<p>",
        "</p>",
        "<div>",
        "</div>",
        "<strong>",
        "</strong>",
        "<h1>",
        "<h3>",
        "</h3>",
        "<a href=\"javascript:alert(1)\">",
        "<a href=\"menu.html\">",
        "</a>",
        "<img src=x onerror=alert(1)>",
        "<script>alert(1)</script>",
        "<script src=\"https://cdn.example/x.js\">",
        "<svg>",
        "</svg>",
        "<math>",
        "<table>",
        "<td>",
        "<tr>",
        "<form action=\"https://evil.example\">",
        "</form>",
        "<textarea>",
        "</textarea>",
        "<title>",
        "</title>",
        "<style>",
        "@import url(//x.example/a.css);",
        "</style>",
        "<!--",
        "-->",
        "<![CDATA[",
        "]]>",
        "<template>",
        "</template>",
        "<select>",
        "<option>",
        "<noscript>",
        "<iframe srcdoc=\"<script>alert(1)</script>\">",
        "<base href=//x>",
        "<meta http-equiv=refresh content=\"0;url=//x\">",
        "text",
        "&lt;",
        "&#x3C;",
        "\"",
        "'",
        "<",
        ">",
        "=",
        " ",
        "\n",
        "<body>",
        "<head>",
        "<html>",
        "</html>",
        "<area href=x>",
        "<map>",
        "<h2 id=a>",
        "<h2 id=a>",
        "<a target=_blank href=\"https://x.example\">",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Whatever the pieces, the gate either refuses the page or publishes one that both
        /// parsers agree is inert, and never panics.
        #[test]
        fn any_page_comes_out_verified(picks in prop::collection::vec(0..PIECES.len(), 0..60)) {
            let input: String = picks.iter().map(|&i| PIECES[i]).collect();
            let opts = PageOptions { lang: "en", banner: "Prototype", title: "T", ..PageOptions::default() };
            match finalize_page(&input, &opts) {
                Ok(page) => {
                    let tree = tree::Tree::parse(&page.html);
                    prop_assert_eq!(tree.verify(None, "index.html"), Vec::<String>::new(), "{}", page.html);
                }
                Err(FinalizeError::Unsafe { problems, .. }) => {
                    prop_assert!(false, "unsafe output for {:?}: {:?}", input, problems);
                }
                Err(_) => {}
            }
        }

        /// A resolved reference is a plain path inside the site.
        #[test]
        fn references_never_leave_the_site(
            page in "([a-z]{1,5}/){0,2}[a-z]{1,5}\\.html",
            url in "[a-z./%2efF#?\\\\]{0,24}",
        ) {
            if let Some(path) = tree::resolve(&page, &url) {
                prop_assert!(!path.starts_with('/'), "{}", path);
                prop_assert!(!path.split('/').any(|p| p == ".." || p == "." || p.is_empty()), "{}", path);
            }
        }
    }
}

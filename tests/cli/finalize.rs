//! `protoforge finalize` on pages a hijacked or confused model could emit
//! (`tests/fixtures/hostile-pages/`): whatever went in, what comes out
//! loads nothing from elsewhere and runs no script but the site's own.

use crate::util::*;

/// Decode the entities an attacker uses to hide a scheme (`&#106;`,
/// `&#x6A;`, `&Tab;`, ...), then drop whitespace and control characters and
/// fold case, as a browser's URL parser effectively does.
fn normalized(url: &str) -> String {
    let mut out = String::new();
    let mut rest = url;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let end = rest.find(';').unwrap_or(rest.len());
        let entity = &rest[1..end];
        let decoded =
            if let Some(hex) = entity.strip_prefix("#x").or_else(|| entity.strip_prefix("#X")) {
                u32::from_str_radix(hex, 16).ok().and_then(char::from_u32)
            } else if let Some(dec) = entity.strip_prefix('#') {
                dec.parse().ok().and_then(char::from_u32)
            } else {
                match entity {
                    "Tab" => Some('\t'),
                    "NewLine" => Some('\n'),
                    "colon" => Some(':'),
                    "amp" => Some('&'),
                    _ => None,
                }
            };
        match decoded {
            Some(c) if end < rest.len() => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            _ => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out.chars()
        .filter(|c| !c.is_whitespace() && !c.is_control())
        .collect::<String>()
        .to_ascii_lowercase()
}

/// Every start tag in `html` (quoted attribute values may hold `>`).
fn tags(html: &str) -> Vec<&str> {
    let re = regex::Regex::new(
        r#"(?s)<[a-zA-Z][^\s/>]*(?:\s+[^\s=/>]+(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s>]+))?)*\s*/?>"#,
    )
    .unwrap();
    re.find_iter(html).map(|m| m.as_str()).collect()
}

/// Every attribute of every start tag, as (lowercase name, raw value).
fn attributes(html: &str) -> Vec<(String, String)> {
    let re = regex::Regex::new(r#"(?s)\s([^\s=/>]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+)))?"#)
        .unwrap();
    tags(html)
        .into_iter()
        .flat_map(|tag| {
            re.captures_iter(tag)
                .map(|c| {
                    let value = c.get(2).or(c.get(3)).or(c.get(4)).map_or("", |m| m.as_str());
                    (c[1].to_ascii_lowercase(), value.to_string())
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn hostile_pages_come_out_inert() {
    let dir = project_dir().join("tests/fixtures/hostile-pages");
    let mut pages: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    pages.sort();
    assert!(pages.len() >= 15, "{} hostile pages", pages.len());
    let out_dir = tempfile::tempdir().unwrap();
    let script = regex::Regex::new(r"(?is)<script\b([^>]*)>(.*?)</script>").unwrap();
    let css_urls = regex::Regex::new(r#"(?i)(url\(|@import)\s*['"]?([^'")\s;]*)"#).unwrap();
    for page in &pages {
        let name = page.file_name().unwrap().to_string_lossy().into_owned();
        let out = out_dir.path().join(&name);
        let run = command(out_dir.path())
            .args(["finalize", page.to_str().unwrap(), "--out", out.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(run.status.success(), "{name}: {}", String::from_utf8_lossy(&run.stderr));
        let warnings = String::from_utf8_lossy(&run.stderr);
        // Every page with something to remove says what it removed (13 and
        // 16 carry nothing to remove: duplicate ids, escaped text).
        let nothing_to_remove = name.starts_with("13-") || name.starts_with("16-");
        assert!(nothing_to_remove || !warnings.trim().is_empty(), "{name}: nothing was reported");
        let html = std::fs::read_to_string(&out).unwrap();
        let lower = html.to_ascii_lowercase();

        // A complete document, marked as a prototype.
        assert!(lower.starts_with("<!doctype html>"), "{name}: {html}");
        for needle in [
            "<html lang=",
            "<meta charset=\"utf-8\">",
            "name=\"viewport\"",
            "content=\"noindex",
            "data-pf-banner",
            "<title>",
        ] {
            assert!(lower.contains(needle), "{name}: no {needle}: {html}");
        }
        // No element that loads or runs something of its own accord.
        for tag in ["<iframe", "<frame", "<object", "<embed", "<base", "<applet", "<portal"] {
            assert!(!lower.contains(tag), "{name}: {tag} survived: {html}");
        }
        assert!(!lower.contains("http-equiv=\"refresh\""), "{name}: {html}");
        assert!(!lower.contains("name=\"referrer\""), "{name}: {html}");
        // Scripts: only the site's own file, never inline code.
        for c in script.captures_iter(&html) {
            let attrs = &c[1];
            assert!(c[2].trim().is_empty(), "{name}: an inline script survived: {}", &c[0]);
            let src: Vec<_> = attributes(&format!("<script {attrs}>"))
                .into_iter()
                .filter(|(a, _)| a == "src")
                .collect();
            assert!(
                src.iter().all(|(_, v)| v == "script.js"),
                "{name}: a foreign script: {}",
                &c[0]
            );
        }
        // No event handler, and no URL that runs code or leaves the site
        // (links for the visitor to follow are fine).
        let all = attributes(&html);
        assert!(all.len() > 5, "{name}: the attribute scan found nothing");
        for (attr, value) in &all {
            assert!(!attr.starts_with("on"), "{name}: an on* handler survived: {attr}={value:?}");
        }
        let ids: Vec<_> = all.iter().filter(|(a, _)| a == "id").map(|(_, v)| v).collect();
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(ids.len(), unique.len(), "{name}: duplicate ids: {ids:?}");
        for tag in tags(&html).into_iter().filter(|t| t.contains(" target=")) {
            assert!(tag.contains("noopener") && tag.contains("noreferrer"), "{name}: {tag}");
        }
        let url_attrs = [
            "href",
            "src",
            "action",
            "formaction",
            "poster",
            "data",
            "xlink:href",
            "srcset",
            "background",
            "srcdoc",
            "ping",
        ];
        let urls = all.into_iter().filter(|(a, _)| url_attrs.contains(&a.as_str()));
        for (attr, value) in urls {
            let v = normalized(&value);
            for scheme in ["javascript:", "vbscript:", "data:text/html"] {
                assert!(!v.starts_with(scheme), "{name}: {attr}={value:?}");
            }
            assert_ne!(attr, "srcdoc", "{name}");
            let off_site = v.starts_with("http:") || v.starts_with("https:") || v.starts_with("//");
            let link = attr == "href"
                && !lower.contains(&format!("<link href=\"{}\"", value.to_ascii_lowercase()));
            assert!(!off_site || link, "{name}: {attr}={value:?} loads from elsewhere: {html}");
        }
        // CSS: nothing fetched from elsewhere.
        for css_url in css_urls.captures_iter(&html) {
            let v = normalized(&css_url[2]);
            assert!(
                !(v.starts_with("http") || v.starts_with("//")),
                "{name}: CSS loads {v}: {html}"
            );
        }
    }
}

#[test]
fn finalize_names_what_it_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let run = command(dir.path()).args(["finalize", "missing.html"]).output().unwrap();
    assert_eq!(run.status.code(), Some(2));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("missing.html"), "{err}");
    let run =
        command(dir.path()).args(["finalize", "x.html", "--lang", "not a tag"]).output().unwrap();
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("--lang"));
}

//! `protoforge export`: the branch head's sites as plain files, with ready configs for nginx,
//! Caddy and Netlify / Cloudflare Pages that answer as `protoforge serve` does. The way out
//! when one machine is not enough: put the directory behind any static host or CDN.
//!
//! The directory:
//! - `public/` is the web root: `prototypes/<id>/…` per site (the path fallback layout, which
//!   also serves `<id>.<base_domain>` by pointing a wildcard host at `prototypes/<id>/`),
//!   `index.html` (the front page), `404.html`, and `__protoforge/gone-<id>.html` for each
//!   expired site;
//! - `nginx.conf`, `Caddyfile`: wildcard subdomain routing, the CSP and security headers,
//!   the cache policy, 404 and 410 pages;
//! - `public/_headers` and `public/_redirects` for Netlify (Cloudflare Pages reads
//!   `_headers` too; its `_redirects` cannot answer 410, so expired sites answer 404 there).
//!
//! Invariants:
//! - It writes only below the directory: site ids are checked as project ids, and every file
//!   path must be plain and relative (the branch may come from a remote, so its names are
//!   checked again).
//! - `metadata.json` is never exported (it is the site's record, not part of it).
//! - A site whose `expires_at` has passed at export time is not exported; the configs answer
//!   410 for it. One that expires later is served until the next export: re-export on the
//!   prune schedule (the `pages.yml` workflow does it daily).
//! - The directory is written afresh: a previous export's `public/` is replaced, so a pruned
//!   site does not linger.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::publish::{PublishError, Store};
use crate::serve;
use crate::submission::is_project_id;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "{path} exists and is not a previous export (no {marker}); hint: export into a new or \
         empty directory",
        marker = MARKER
    )]
    NotAnExport { path: PathBuf },
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// An I/O error at `path`.
fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + use<> {
    let path = path.to_owned();
    move |source| ExportError::Io { path, source }
}

/// Marks a directory as ours, so that a re-export may replace its `public/`.
const MARKER: &str = ".protoforge-export";

/// What an export wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exported {
    pub dir: PathBuf,
    /// Sites exported, by id.
    pub sites: Vec<String>,
    /// Sites past their expiry: not exported, answered with 410.
    pub gone: Vec<String>,
    pub files: usize,
    pub bytes: u64,
    /// The branch's commit that was exported.
    pub commit: Option<String>,
}

/// How to export.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// For a host that sends no headers of ours (GitHub Pages): the CSP goes into every page
    /// as a `<meta>` element, and `_headers` / `_redirects` are left out.
    pub meta_csp: bool,
}

/// The CSP as a `<meta>` can carry it: `frame-ancestors` works only as a header.
fn meta_csp() -> String {
    let policy: Vec<&str> = serve::CSP
        .split(';')
        .map(str::trim)
        .filter(|d| !d.starts_with("frame-ancestors"))
        .collect();
    format!(r#"<meta http-equiv="Content-Security-Policy" content="{}">"#, policy.join("; "))
}

/// `page` with the CSP `<meta>` first in its head.
///
/// SECURITY: on a host that cannot send the header, this is what keeps a page that finalize
/// let through from loading or sending anything off-site.
fn with_meta_csp(page: &[u8]) -> Vec<u8> {
    use lol_html::html_content::ContentType;
    let meta = meta_csp();
    let mut out = Vec::with_capacity(page.len() + meta.len());
    let mut rewriter = lol_html::HtmlRewriter::new(
        lol_html::Settings::new().append_element_content_handler(lol_html::element!(
            "head",
            |el| {
                el.prepend(&meta, ContentType::Html);
                Ok(())
            }
        )),
        |chunk: &[u8]| out.extend_from_slice(chunk),
    );
    let done = rewriter.write(page).and_then(|()| rewriter.end());
    match done {
        Ok(()) => out,
        // Finalized pages always parse; should one not, it goes out with the meta in front.
        Err(_) => [meta.as_bytes(), page].concat(),
    }
}

/// Export the sites of `store`'s branch head into `dir`, as of `now`.
pub fn export(
    store: &Store,
    base_domain: &str,
    dir: &Path,
    now: DateTime<Utc>,
    options: Options,
) -> Result<Exported, ExportError> {
    prepare(dir)?;
    let dir = std::fs::canonicalize(dir).map_err(io(dir))?;
    let public = dir.join("public");
    let snapshot = store.snapshot()?;
    let mut out = Exported {
        dir: dir.clone(),
        commit: snapshot.commit_id().map(|c| c.to_string()),
        ..Exported::default()
    };
    let ids = if out.commit.is_some() { snapshot.list_dir("sites")? } else { Vec::new() };
    let write = |path: &Path, bytes: &[u8], out: &mut Exported| -> Result<(), ExportError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let page = path.extension().is_some_and(|e| e == "html" || e == "htm");
        let bytes = if options.meta_csp && page { with_meta_csp(bytes) } else { bytes.to_vec() };
        std::fs::write(path, &bytes).map_err(io(path))?;
        out.files += 1;
        out.bytes += bytes.len() as u64;
        Ok(())
    };
    let mut gone_dates = Vec::new();
    for id in ids {
        // SECURITY: the id becomes a directory name; only project-id shaped names may be
        // used, so a crafted branch cannot make `../x` write outside the directory.
        if !is_project_id(&id) {
            tracing::warn!(site = %id, "not a project id; skipped");
            continue;
        }
        let files = snapshot.read_dir_recursive(&format!("sites/{id}"))?;
        let expires = files
            .iter()
            .find(|(p, _)| p == "metadata.json")
            .and_then(|(_, b)| serde_json::from_slice::<serde_json::Value>(b).ok())
            .and_then(|v| v["expires_at"].as_str().map(str::to_owned))
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&Utc));
        if let Some(at) = expires.filter(|at| *at <= now) {
            let date = at.format("%Y-%m-%d").to_string();
            let page = serve::GONE_PAGE.replace("{date}", &date);
            write(&public.join(format!("__protoforge/gone-{id}.html")), page.as_bytes(), &mut out)?;
            gone_dates.push((id.clone(), date));
            out.gone.push(id);
            continue;
        }
        for (rel, bytes) in files {
            // SECURITY: the record stays private, and a dotfile is never served.
            if rel == "metadata.json" || rel.split('/').any(|s| s.starts_with('.')) {
                continue;
            }
            // SECURITY: path traversal. The branch may come from a remote, so its names are
            // not trusted: an absolute or empty component would make `join` leave the
            // directory.
            if !is_plain_relative(&rel) {
                tracing::warn!(site = %id, path = %rel.escape_debug(), "not a plain relative path; skipped");
                continue;
            }
            write(&public.join("prototypes").join(&id).join(&rel), &bytes, &mut out)?;
        }
        out.sites.push(id);
    }
    let front = serve::FRONT_PAGE.replace("{sites}", "");
    write(&public.join("index.html"), front.as_bytes(), &mut out)?;
    write(&public.join("404.html"), serve::NOT_FOUND_PAGE.as_bytes(), &mut out)?;
    write(&public.join("__protoforge/404.html"), serve::NOT_FOUND_PAGE.as_bytes(), &mut out)?;
    let when = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let header = format!(
        "Generated by `protoforge export` at {when} from {} of branch {}.\nRe-export at least \
         daily (the prune schedule): a site that expires after this export is served until \
         the next one.",
        out.commit.as_deref().unwrap_or("no commit"),
        store.branch()
    );
    let common = dir.join("protoforge-common.conf");
    let mut configs = vec![
        (dir.join("nginx.conf"), nginx(base_domain, &public, &common, &gone_dates, &header)),
        (common.clone(), nginx_common(&public, &header)),
        (dir.join("Caddyfile"), caddy(base_domain, &public, &out.gone, &header)),
    ];
    if !options.meta_csp {
        configs.push((public.join("_headers"), netlify_headers(&header)));
        configs.push((public.join("_redirects"), netlify_redirects(&out.gone, &header)));
    }
    for (path, text) in configs {
        write(&path, text.as_bytes(), &mut out)?;
    }
    Ok(out)
}

/// `a/b.png`: only normal components, none empty, no backslash, NUL or drive prefix.
fn is_plain_relative(rel: &str) -> bool {
    !rel.is_empty()
        && !rel.contains(['\\', '\0', ':'])
        && rel.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
        && Path::new(rel).components().all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// Make `dir` ready: created if missing; a previous export's `public/` removed; anything else
/// that is not empty refused.
fn prepare(dir: &Path) -> Result<(), ExportError> {
    if dir.exists() {
        let marked = dir.join(MARKER).is_file();
        let empty = std::fs::read_dir(dir).map_err(io(dir))?.next().is_none();
        if !marked && !empty {
            return Err(ExportError::NotAnExport { path: dir.to_owned() });
        }
        let public = dir.join("public");
        if public.exists() {
            std::fs::remove_dir_all(&public).map_err(io(&public))?;
        }
    } else {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    std::fs::write(
        dir.join(MARKER),
        "A `protoforge export`; `public/` is replaced by the next one.\n",
    )
    .map_err(io(&dir.join(MARKER)))
}

/// nginx quotes: a double-quoted string with `"` and `\` escaped.
fn quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A base domain as a regular expression literal.
fn regex_escape(text: &str) -> String {
    text.chars()
        .map(
            |c| {
                if c.is_ascii_alphanumeric() || c == '-' { c.to_string() } else { format!("\\{c}") }
            },
        )
        .collect()
}

/// The content types `protoforge serve` sends, so that both answer alike.
const TYPES: &[(&str, &str)] = &[
    ("text/html", "html htm"),
    ("text/css", "css"),
    ("text/javascript", "js mjs"),
    ("application/json", "json"),
    ("application/manifest+json", "webmanifest"),
    ("text/plain", "txt"),
    ("application/xml", "xml"),
    ("image/svg+xml", "svg"),
    ("image/png", "png"),
    ("image/jpeg", "jpg jpeg"),
    ("image/gif", "gif"),
    ("image/webp", "webp"),
    ("image/avif", "avif"),
    ("image/x-icon", "ico"),
    ("font/woff2", "woff2"),
    ("font/woff", "woff"),
];

/// The part both server blocks of `nginx.conf` include: types, headers, error pages.
fn nginx_common(public: &Path, header: &str) -> String {
    let root = quote(&public.display().to_string());
    let mut types = String::new();
    for (mime, exts) in TYPES {
        let _ = writeln!(types, "    {mime} {exts};");
    }
    let comment: String = header.lines().map(|l| format!("# {l}\n")).collect();
    format!(
        r#"{comment}# Included by both server blocks of nginx.conf.
server_tokens off;
charset utf-8;
index index.html;
absolute_redirect off;
charset_types text/css text/javascript text/plain application/json application/manifest+json application/xml image/svg+xml;
types {{
{types}}}
default_type application/octet-stream;
gzip on;
gzip_types text/css text/javascript application/json image/svg+xml;
# SECURITY: the same strict policy as `protoforge serve`: nothing loads from or is sent to
# another site, even where finalize missed something.
add_header Content-Security-Policy {csp} always;
add_header X-Content-Type-Options "nosniff" always;
add_header Referrer-Policy "no-referrer" always;
add_header X-Robots-Tag "noindex" always;
add_header Cache-Control $protoforge_cache always;
# SECURITY: dotfiles are never served.
location ~ "/\." {{
    return 404;
}}
location = /favicon.ico {{
    if ($protoforge_gone) {{
        return 410;
    }}
    try_files $uri =204;
}}
location ^~ /__protoforge/ {{
    internal;
    root {root};
}}
error_page 404 /__protoforge/404.html;
error_page 410 /__protoforge/gone-$site.html;
"#,
        csp = quote(serve::CSP),
    )
}

fn nginx(
    base: &str,
    public: &Path,
    common: &Path,
    gone: &[(String, String)],
    header: &str,
) -> String {
    let root = quote(&public.display().to_string());
    let mut gone_map = String::new();
    for (id, date) in gone {
        let _ = writeln!(gone_map, "    {id} {date};");
    }
    let site_root = quote(&format!("{}/prototypes/$site", public.display()));
    let comment: String = header.lines().map(|l| format!("# {l}\n")).collect();
    let base_re = regex_escape(base);
    format!(
        r#"{comment}#
# Serves <id>.{base} from public/prototypes/<id>/ (wildcard DNS and certificate needed) and
# {base}/prototypes/<id>/ as the path fallback, with the headers of `protoforge serve`.
# Include it inside `http {{ }}` (e.g. as /etc/nginx/conf.d/protoforge.conf); it includes
# protoforge-common.conf beside it. Put TLS in front, or add `listen 443 ssl` with a wildcard
# certificate.

# Expired sites (answered with 410) and the day they expired.
map $site $protoforge_gone {{
    default "";
{gone_map}}}

# Cache policy: pages are revalidated; files with a content hash in their name are immutable.
map $uri $protoforge_cache {{
    default "public, no-cache";
    "~\.html?$" "no-cache";
    "~/$" "no-cache";
    "~(^|/|\.)[0-9a-fA-F]{{8,}}(\.[^/]*)?$" "public, max-age=31536000, immutable";
}}

server {{
    listen 80;
    # SECURITY: only project-id shaped labels; anything else is not a site.
    server_name "~^(?<site>[a-z0-9](?:[a-z0-9-]{{0,70}}[a-z0-9])?)\.{base_re}$";
    root {site_root};
    include {common};

    # In the locations, not the server: the 410 page itself is an internal redirect.
    location / {{
        # SECURITY: should this block become the default server, a host it did not match
        # leaves $site empty, and the root would be every site's parent.
        if ($site = "") {{
            return 404;
        }}
        if ($protoforge_gone) {{
            return 410;
        }}
        try_files $uri $uri/ =404;
    }}
}}

server {{
    listen 80;
    server_name {base};
    root {root};
    include {common};

    location = / {{
        try_files /index.html =404;
    }}
    location = /healthz {{
        default_type text/plain;
        return 200 "ok\n";
    }}
    location ~ "^/prototypes/(?<site>[a-z0-9][a-z0-9-]*)$" {{
        return 308 $uri/$is_args$args;
    }}
    location ~ "^/prototypes/(?<site>[a-z0-9][a-z0-9-]*)/" {{
        if ($protoforge_gone) {{
            return 410;
        }}
        try_files $uri $uri/ =404;
    }}
    location / {{
        return 404;
    }}
}}

"#,
        common = quote(&common.display().to_string()),
    )
}

fn caddy(base: &str, public: &Path, gone: &[String], header: &str) -> String {
    let root = public.display().to_string();
    let comment: String = header.lines().map(|l| format!("# {l}\n")).collect();
    let gone_list = if gone.is_empty() { "\"-\"".to_owned() } else { gone.join(" ") };
    format!(
        r#"{comment}#
# Serves <id>.{base} (wildcard DNS; Caddy gets the certificates) and {base}/prototypes/<id>/
# with the headers of `protoforge serve`.

(protoforge_security) {{
	# SECURITY: the same strict policy as `protoforge serve`: nothing loads from or is sent
	# to another site, even where finalize missed something.
	header {{
		Content-Security-Policy "{csp}"
		X-Content-Type-Options "nosniff"
		Referrer-Policy "no-referrer"
		X-Robots-Tag "noindex"
		-Server
	}}
}}

(protoforge_headers) {{
	import protoforge_security
	# Cache policy: pages are revalidated; files with a content hash in their name are
	# immutable.
	@pages path *.html *.htm */
	header @pages Cache-Control "no-cache"
	@hashed {{
		not path *.html *.htm */
		path_regexp hashed (^|/|\.)[0-9a-fA-F]{{8,}}(\.[^/]*)?$
	}}
	header @hashed Cache-Control "public, max-age=31536000, immutable"
	@plain {{
		not path *.html *.htm */
		not path_regexp (^|/|\.)[0-9a-fA-F]{{8,}}(\.[^/]*)?$
	}}
	header @plain Cache-Control "public, no-cache"
	# SECURITY: dotfiles are never served.
	@dotfiles path_regexp dotfiles /\.
	error @dotfiles 404
	handle_errors {{
		import protoforge_security
		header Cache-Control "no-cache"
		root * {root}
		@err410 expression `{{err.status_code}} == 410`
		rewrite @err410 /__protoforge/gone-{{vars.site}}.html
		@other expression `{{err.status_code}} != 410`
		rewrite @other /__protoforge/404.html
		file_server {{
			status {{err.status_code}}
		}}
	}}
}}

*.{base} {{
	import protoforge_headers
	vars site {{labels.{site_label}}}
	# SECURITY: only project-id shaped labels; anything else is not a site.
	@bad not vars_regexp site {{vars.site}} ^[a-z0-9][a-z0-9-]*$
	error @bad 404
	@gone vars {{vars.site}} {gone_list}
	error @gone 410
	root * {root}/prototypes/{{vars.site}}
	# Browsers ask for it unprompted: no content rather than a 404 in every console.
	@nofavicon {{
		path /favicon.ico
		not file
	}}
	respond @nofavicon 204
	file_server
}}

{base} {{
	import protoforge_headers
	respond /healthz "ok
" 200
	@noslash path_regexp noslash ^/prototypes/[a-z0-9][a-z0-9-]*$
	redir @noslash {{path}}/ 308
	@site path_regexp site ^/prototypes/([a-z0-9][a-z0-9-]*)/
	vars @site site {{re.site.1}}
	@gone vars {{vars.site}} {gone_list}
	error @gone 410
	root * {root}
	file_server
}}
"#,
        csp = serve::CSP,
        site_label = base.split('.').count(),
    )
}

fn netlify_headers(header: &str) -> String {
    let comment: String = header.lines().map(|l| format!("# {l}\n")).collect();
    format!(
        "{comment}# Netlify and Cloudflare Pages: publish `public/`; sites are at /prototypes/<id>/.\n\
/*\n  Content-Security-Policy: {csp}\n  X-Content-Type-Options: nosniff\n  Referrer-Policy: no-referrer\n  X-Robots-Tag: noindex\n  Cache-Control: public, no-cache\n\
/*.html\n  Cache-Control: no-cache\n\
/prototypes/*/\n  Cache-Control: no-cache\n",
        csp = serve::CSP
    )
}

fn netlify_redirects(gone: &[String], header: &str) -> String {
    let mut out: String = header.lines().map(|l| format!("# {l}\n")).collect();
    out.push_str("# Netlify answers these with 410; Cloudflare Pages cannot (it answers 404).\n");
    for id in gone {
        let _ = writeln!(out, "/prototypes/{id}/*  /__protoforge/gone-{id}.html  410!");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_meta_csp_goes_first_in_the_head() {
        let page = b"<!DOCTYPE html><html><head><title>x</title></head><body></body></html>";
        let out = String::from_utf8(with_meta_csp(page)).unwrap();
        assert!(out.starts_with(r#"<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" content="default-src 'self';"#), "{out}");
        assert!(!out.contains("frame-ancestors") && out.contains("connect-src 'none'"));
    }

    #[test]
    fn the_nginx_config_names_the_domain_and_the_expired_sites() {
        let public = Path::new("/srv/x/public");
        let conf = nginx(
            "example.com",
            public,
            Path::new("/srv/x/c.conf"),
            &[("a-1".into(), "2026-01-01".into())],
            "h",
        );
        let common = nginx_common(public, "h");
        assert!(common.contains("Content-Security-Policy") && !common.contains("server {"));
        assert!(conf.contains(r#"include "/srv/x/c.conf";"#));
        assert!(conf.contains(r#"server_name "~^(?<site>"#) && conf.contains(r"\.example\.com$"));
        assert!(conf.contains("    a-1 2026-01-01;"));
        assert_eq!(regex_escape("a.b-c"), r"a\.b-c");
        for good in ["index.html", "assets/images/a.png"] {
            assert!(is_plain_relative(good), "{good}");
        }
        for bad in ["", "/etc/passwd", "a//b", "../x", "a/../b", "a\\b", "c:x", "./a", "a/"] {
            assert!(!is_plain_relative(bad), "{bad}");
        }
        assert_eq!(quote(r#"a"b\"#), r#""a\"b\\""#);
    }
}

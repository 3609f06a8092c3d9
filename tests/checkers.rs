//! The real checkers on real output: every example (and the hostile, RTL
//! and CJK fixtures) is built with the binary, exported, then run through
//! the W3C Nu checker (vnu-jar) and driven in headless Chromium.
//!
//! `./scripts/test` installs the checkers and sets
//! PROTOFORGE_REQUIRE_CHECKERS, so there a missing checker is a failure;
//! a bare `cargo test` on a machine without them says so and skips.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

#[path = "support/fake_llm.rs"]
mod fake_llm;
#[path = "support/listening.rs"]
mod listening;

fn project() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn required() -> bool {
    std::env::var_os("PROTOFORGE_REQUIRE_CHECKERS").is_some()
}

/// `Some(path)` if the tool is there; a panic if it is required and absent.
fn tool(path: PathBuf, what: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path);
    }
    assert!(
        !required(),
        "{what} is missing at {}; run ./scripts/test, which installs it",
        path.display()
    );
    eprintln!("SKIPPED: {what} is not installed ({}); ./scripts/test installs it", path.display());
    None
}

/// playwright-core and Debian chromium are both there (or, when required,
/// a panic saying which is missing).
fn browser_tools() -> bool {
    tool(project().join("node_modules/playwright-core/package.json"), "playwright-core").is_some()
        && tool(PathBuf::from("/usr/bin/chromium"), "Debian chromium").is_some()
}

fn pf(dir: &Path, args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_protoforge"))
        .current_dir(dir)
        .args(args)
        .env_remove("PROTOFORGE_REQUIRE_CHECKERS")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "protoforge {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Build every example and fixture once, export the sites; returns the
/// preview directory.
fn sites() -> &'static Path {
    static SITES: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &SITES
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let repo = dir.path().join("repo");
            pf(dir.path(), &["init", repo.to_str().unwrap()]);
            copy_dir(&project().join("examples"), &repo.join("inbox"));
            for f in ["hostile.yaml", "rtl-arabic.yaml", "cjk.yaml"] {
                std::fs::copy(project().join("tests/fixtures").join(f), repo.join("inbox").join(f))
                    .unwrap();
            }
            pf(&repo, &["build", "--once"]);
            let export = dir.path().join("export");
            pf(&repo, &["export", export.to_str().unwrap()]);
            (dir, export.join("public/prototypes"))
        })
        .1
}

/// `protoforge serve` on free ports (sites and webhook), killed when dropped.
struct Serve {
    child: std::process::Child,
    port: u16,
    hook: u16,
}

impl Serve {
    /// The server binds port 0 and its log names the ports it got: a port "found free"
    /// could be taken by another test before the server binds it.
    fn start(repo: &Path, args: &[&str]) -> Serve {
        let log = tempfile::NamedTempFile::new().expect("a temp file for the server's log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_protoforge"))
            .current_dir(repo)
            .arg("serve")
            .args(args)
            // The test's own switch is not a config key.
            .env_remove("PROTOFORGE_REQUIRE_CHECKERS")
            .env("PROTOFORGE_LOG", "protoforge=info")
            .env("PROTOFORGE_SERVE__LISTEN", "127.0.0.1:0")
            .env("PROTOFORGE_WEBHOOK__LISTEN", "127.0.0.1:0")
            .stdout(std::process::Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        let (port, hook) = listening::ports(&mut child, log.path(), true);
        Serve { child, port, hook }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.path().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// The W3C checker's jar, if installed (see [`tool`]).
fn vnu_jar() -> Option<PathBuf> {
    tool(project().join("node_modules/vnu-jar/build/dist/vnu.jar"), "vnu-jar")
}

/// `tests/browser/behaviour.mjs` over every site in `preview`: one result per site.
fn behaviour(preview: &Path, shots: &Path) -> Vec<serde_json::Value> {
    let out = Command::new("node")
        .arg(project().join("tests/browser/behaviour.mjs"))
        .arg(preview)
        .arg(shots)
        .current_dir(project())
        .output()
        .unwrap();
    assert!(out.status.success(), "browser run failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn site_ids(preview: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(preview)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    ids.sort();
    ids
}

/// The W3C checker's errors and warnings on `files`, one line each.
fn vnu(jar: &Path, files: &[PathBuf]) -> (Vec<String>, Vec<String>) {
    let out = Command::new("java")
        .arg("-jar")
        .arg(jar)
        .args(["--format", "json", "--also-check-css"])
        .args(files)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap_or_else(|e| {
        panic!("vnu printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr))
    });
    let messages = report["messages"].as_array().unwrap();
    let describe = |keep: &dyn Fn(&serde_json::Value) -> bool| -> Vec<String> {
        messages
            .iter()
            .filter(|m| keep(m))
            .map(|m| {
                let url = m["url"].as_str().unwrap_or("");
                format!("{url}:{}: {}", m["lastLine"], m["message"].as_str().unwrap_or(""))
            })
            .collect()
    };
    let errors = describe(&|m| m["type"] == "error" || m["type"] == "non-document-error");
    let warnings = describe(&|m| m["subType"] == "warning");
    (errors, warnings)
}

/// Every hostile page, finalized by the binary into a temp dir.
fn finalized_hostile_pages() -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let mut pages: Vec<_> = std::fs::read_dir(project().join("tests/fixtures/hostile-pages"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    pages.sort();
    assert!(pages.len() >= 15, "{} hostile pages", pages.len());
    let mut out = Vec::new();
    for page in pages {
        let to = dir.path().join(page.file_name().unwrap());
        pf(dir.path(), &["finalize", page.to_str().unwrap(), "--out", to.to_str().unwrap()]);
        out.push(to);
    }
    (dir, out)
}

#[test]
fn every_hostile_page_passes_the_w3c_checker_after_finalize() {
    let Some(jar) = vnu_jar() else { return };
    let (_dir, files) = finalized_hostile_pages();
    let raw: Vec<PathBuf> = files
        .iter()
        .map(|f| project().join("tests/fixtures/hostile-pages").join(f.file_name().unwrap()))
        .collect();
    let (errors, warnings) = vnu(&jar, &files);
    // One checker run for both sets would mix them up; two runs cost 2.5 s more.
    let (raw_errors, _) = vnu(&jar, &raw);
    assert!(raw_errors.len() >= 15, "the raw pages should fail the checker: {raw_errors:?}");
    eprintln!(
        "vnu: {} hostile pages: {} errors before finalize; after: {} errors, {} warnings",
        files.len(),
        raw_errors.len(),
        errors.len(),
        warnings.len()
    );
    assert!(errors.is_empty(), "the W3C checker found errors:\n{}", errors.join("\n"));
}

#[test]
fn every_page_and_stylesheet_passes_the_w3c_checker() {
    let Some(jar) = vnu_jar() else { return };
    let preview = sites();
    let ids = site_ids(preview);
    assert!(ids.len() >= 11, "{ids:?}");
    let mut files = Vec::new();
    for id in &ids {
        files.push(preview.join(id).join("index.html"));
        files.push(preview.join(id).join("styles.css"));
    }
    let (errors, warnings) = vnu(&jar, &files);
    eprintln!("vnu: {} files, {} errors, {} warnings", files.len(), errors.len(), warnings.len());
    assert!(errors.is_empty(), "the W3C checker found errors:\n{}", errors.join("\n"));
    assert!(warnings.is_empty(), "the W3C checker warns:\n{}", warnings.join("\n"));
}

#[test]
fn every_site_works_in_headless_chromium() {
    if !browser_tools() {
        return;
    }
    let preview = sites();
    let shots = project().join("target/screenshots");
    let results = behaviour(preview, &shots);
    assert_eq!(results.len(), site_ids(preview).len());
    let mut carts = 0;
    let mut filters = 0;
    let (mut axe_total, mut axe_serious) = (0, Vec::new());
    for r in &results {
        let id = r["id"].as_str().unwrap();
        assert_eq!(r["errors"], serde_json::json!([]), "{id}: console errors");
        assert_eq!(r["external"], serde_json::json!([]), "{id}: requests left the site");
        assert!(
            r["overflow375"].as_i64().unwrap() <= 0,
            "{id}: {}px horizontal overflow at 375px",
            r["overflow375"]
        );
        assert!(r["overflow768"].as_i64().unwrap() <= 0, "{id}: overflow at 768px: {r}");
        for width in ["axe375", "axe1440"] {
            for v in r[width].as_array().unwrap() {
                axe_total += 1;
                let impact = v["impact"].as_str().unwrap_or("");
                if matches!(impact, "serious" | "critical") {
                    axe_serious.push(format!("{id} ({width}): {v}"));
                }
            }
        }
        assert_eq!(r["nav"], true, "{id}: the nav toggle does not open the menu on a phone");
        let form = &r["form"];
        assert!(form.is_object(), "{id}: no form to try");
        assert!(
            form["invalidWhenEmpty"].as_i64().unwrap() > 0,
            "{id}: an empty form was not flagged: {form}"
        );
        assert_eq!(form["invalidWhenFilled"], 0, "{id}: a filled form is still invalid: {form}");
        assert!(
            !form["status"].as_str().unwrap().is_empty(),
            "{id}: no message after a valid submit"
        );
        if r["cart"].is_object() {
            carts += 1;
            assert_ne!(
                r["cart"]["before"], r["cart"]["after"],
                "{id}: the cart total did not change: {}",
                r["cart"]
            );
        }
        if r["filter"].is_object() {
            filters += 1;
            assert!(
                r["filter"]["hidden"].as_i64().unwrap() > 0,
                "{id}: the filter hid nothing: {}",
                r["filter"]
            );
            assert_eq!(r["filter"]["pressed"], "true", "{id}");
        }
    }
    assert!(
        axe_serious.is_empty(),
        "axe-core found serious or critical violations:\n{}",
        axe_serious.join("\n")
    );
    assert!(carts >= 1, "no shop cart was exercised");
    assert!(filters >= 1, "no filter was exercised");
    eprintln!(
        "chromium: {} sites, axe: 0 serious or critical, {axe_total} moderate or minor; \
         {carts} carts, {filters} filters; screenshots (375, 768, 1440 px) in {}",
        results.len(),
        shots.display()
    );
}

#[test]
fn a_served_prototype_renders_in_chromium_without_csp_violations() {
    if !browser_tools() {
        return;
    }
    let (_dir, repo) = bakery_repo();
    let out = Command::new("git")
        .current_dir(&repo)
        .args(["ls-tree", "--name-only", "prototypes", "sites/"])
        .output()
        .unwrap();
    let id = String::from_utf8(out.stdout).unwrap().trim().trim_start_matches("sites/").to_string();
    let server = Serve::start(&repo, &["--no-build", "--no-prune"]);
    let port = server.port;
    let shots = project().join("target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let shot = shots.join("served-bakery.png");
    let url = format!("http://{id}.localhost:{port}/");
    let out = Command::new("node")
        .arg(project().join("tests/browser/served.mjs"))
        .arg(&url)
        .arg(&shot)
        .current_dir(project())
        .output()
        .unwrap();
    drop(server);
    assert!(out.status.success(), "browser run failed: {}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["status"], 200, "{r}");
    assert!(r["csp"].as_str().unwrap().contains("script-src 'self'"), "{r}");
    assert!(r["title"].as_str().unwrap().contains("Rosie"), "{r}");
    assert!(r["banner"].as_str().unwrap().contains("expires on"), "{r}");
    assert_eq!(r["dismissed"], true, "the banner's close button did not close it: {r}");
    assert_ne!(r["styled"], "rgba(0, 0, 0, 0)", "the stylesheet did not load: {r}");
    let messages = r["console"].as_array().unwrap();
    assert!(messages.is_empty(), "console messages (CSP violations?): {messages:?}");
    assert!(shot.is_file());
    eprintln!("chromium: {url} rendered, no console messages; screenshot {}", shot.display());
}

#[test]
fn the_example_contact_form_works_in_chromium_with_and_without_javascript() {
    if !browser_tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    pf(dir.path(), &["init", repo.to_str().unwrap()]);
    let server = Serve::start(&repo, &["--no-prune"]);
    let (port, hook) = (server.port, server.hook);
    let logo = project().join("tests/fixtures/logo.png");
    let shots = project().join("target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let shot = shots.join("contact-form.png");
    let out = Command::new("node")
        .arg(project().join("tests/browser/form.mjs"))
        .arg(format!("http://127.0.0.1:{hook}"))
        .arg(&logo)
        .arg(&shot)
        .current_dir(project())
        .output()
        .unwrap();
    drop(server);
    assert!(out.status.success(), "browser run failed: {}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["redirected"], true, "the plain post was not answered with a redirect: {r}");
    let thanks = r["thanks"].as_str().unwrap();
    let job = thanks.split("/thanks?job=").nth(1).unwrap_or_else(|| panic!("{r}"));
    for key in ["link", "link3"] {
        let link = r[key].as_str().unwrap();
        assert!(
            link.starts_with("http://") && link.contains(&format!(".localhost:{port}/")),
            "{r}"
        );
    }
    assert_eq!(r["siteStatus"], 200, "{r}");
    assert!(r["siteTitle"].as_str().unwrap().contains("Fetch Form Bakery"), "{r}");
    let messages = r["console"].as_array().unwrap();
    assert!(messages.is_empty(), "console messages (CSP violations?): {messages:?}");
    // What the plain form sent is in the inbox, the logo byte for byte.
    let yaml = std::fs::read_to_string(repo.join(format!("inbox/{job}.yaml"))).unwrap();
    assert!(yaml.contains("Plain Form Bakery") && yaml.contains("kind: image"), "{yaml}");
    let stored = std::fs::read_dir(repo.join(format!("inbox/attachments/{job}")))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| std::fs::read(e.path()).unwrap())
        .collect::<Vec<_>>();
    assert_eq!(stored, vec![std::fs::read(&logo).unwrap()]);
    assert!(shot.is_file());
    eprintln!(
        "chromium: the contact form posted with and without JavaScript; screenshot {}",
        shot.display()
    );
}

/// A repo in a temp dir with the bakery example built on its branch.
fn bakery_repo() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    pf(dir.path(), &["init", repo.to_str().unwrap()]);
    std::fs::copy(project().join("examples/01-bakery.yaml"), repo.join("inbox/bakery.yaml"))
        .unwrap();
    pf(&repo, &["build", "--once"]);
    (dir, repo)
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git").current_dir(dir).args(args).output().unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn hostile_pages_do_nothing_in_chromium() {
    if !browser_tools() {
        return;
    }
    let (out_dir, finalized) = finalized_hostile_pages();
    // Publish each finalized page as a site of its own, next to the site's own script.
    let (dir, repo) = bakery_repo();
    let wt = dir.path().join("wt");
    git(&repo, &["worktree", "add", wt.to_str().unwrap(), "prototypes"]);
    let mut ids = Vec::new();
    for (n, page) in finalized.iter().enumerate() {
        let id = format!("hostile-{:02}-abcdefgh", n + 1);
        let site = wt.join("sites").join(&id);
        std::fs::create_dir_all(&site).unwrap();
        std::fs::copy(page, site.join("index.html")).unwrap();
        std::fs::write(site.join("script.js"), "document.documentElement.dataset.own = '1';\n")
            .unwrap();
        std::fs::write(site.join("metadata.json"), r#"{"expires_at": "2099-01-01T00:00:00Z"}"#)
            .unwrap();
        std::fs::write(out_dir.path().join("script.js"), "/* the site's own */\n").unwrap();
        ids.push(id);
    }
    git(&wt, &["add", "-A"]);
    git(&wt, &["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "hostile"]);
    let server = Serve::start(&repo, &["--no-build", "--no-prune"]);
    let served: Vec<String> =
        ids.iter().map(|id| format!("http://{id}.localhost:{}/", server.port)).collect();
    let file_url = |p: &Path| format!("file://{}", p.display());
    let local: Vec<String> = finalized.iter().map(|p| file_url(p)).collect();
    let raw: Vec<String> = finalized
        .iter()
        .map(|p| {
            file_url(&project().join("tests/fixtures/hostile-pages").join(p.file_name().unwrap()))
        })
        .collect();
    let out = Command::new("node")
        .arg(project().join("tests/browser/hostile.mjs"))
        .args(served.iter().chain(&local).chain(&raw))
        .current_dir(project())
        .output()
        .unwrap();
    drop(server);
    assert!(out.status.success(), "browser run failed: {}", String::from_utf8_lossy(&out.stderr));
    let results: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(results.len(), 3 * finalized.len());
    let foreign = |r: &serde_json::Value| -> Vec<String> {
        r["scripts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .filter(|s| !s.ends_with("/script.js"))
            .collect()
    };
    let (served_r, rest) = results.split_at(finalized.len());
    let (local_r, raw_r) = rest.split_at(finalized.len());
    // Finalized, with the server's CSP and without it (file://): inert either way.
    for r in served_r.iter().chain(local_r) {
        let url = r["url"].as_str().unwrap();
        assert_eq!(r["external"], serde_json::json!([]), "{url}: requests left the origin: {r}");
        assert_eq!(r["dialogs"], serde_json::json!([]), "{url}: a dialog fired: {r}");
        assert_eq!(foreign(r), Vec::<String>::new(), "{url}: a script not the site's ran: {r}");
        assert!(!r["finalUrl"].as_str().unwrap().contains("example"), "{url} navigated away: {r}");
    }
    for r in served_r {
        assert_eq!(r["status"], 200, "{r}");
    }
    // The raw pages do what they were written to do: the checks can fail.
    let caught: Vec<&str> = raw_r
        .iter()
        .filter(|r| {
            !r["external"].as_array().unwrap().is_empty()
                || !r["dialogs"].as_array().unwrap().is_empty()
                || !foreign(r).is_empty()
        })
        .map(|r| r["url"].as_str().unwrap())
        .collect();
    // (Links and forms act only when clicked, so not every raw page shows itself on load.)
    assert!(caught.len() >= 5, "only {} raw pages misbehaved: {caught:?}", caught.len());
    let (ext, dialogs, scripts) = raw_r.iter().fold((0, 0, 0), |(e, d, s), r| {
        (
            e + r["external"].as_array().unwrap().len(),
            d + r["dialogs"].as_array().unwrap().len(),
            s + foreign(r).len(),
        )
    });
    assert!(
        ext > 0 && dialogs > 0 && scripts > 0,
        "{ext} requests, {dialogs} dialogs, {scripts} scripts"
    );
    eprintln!(
        "chromium: {} hostile pages inert served with CSP and from file:// without it; the raw \
         pages made {ext} off-origin requests, {dialogs} dialogs and ran {scripts} foreign scripts",
        finalized.len()
    );
}

/// The bakery built by the AI stages (a local model server replaying a good model's
/// replies), exported: what a model writes must pass the same checkers.
fn ai_site() -> (tempfile::TempDir, PathBuf) {
    let server = fake_llm::FakeLlm::start(fake_llm::Format::OpenAi, fake_llm::Pace::default());
    fake_llm::good_replies(&server, &project().join("tests/fixtures/llm"));
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    pf(dir.path(), &["init", repo.to_str().unwrap()]);
    std::fs::copy(project().join("examples/01-bakery.yaml"), repo.join("inbox/01-bakery.yaml"))
        .unwrap();
    let providers = format!(r#"[{{"name":"fake","base_url":"{}","model":"tiny-1"}}]"#, server.url);
    let out = Command::new(env!("CARGO_BIN_EXE_protoforge"))
        .current_dir(&repo)
        .args(["build", "--once"])
        .env_remove("PROTOFORGE_REQUIRE_CHECKERS")
        .env("PROTOFORGE_LLM__PROVIDERS", providers)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let export = dir.path().join("export");
    pf(&repo, &["export", export.to_str().unwrap()]);
    let preview = export.join("public/prototypes");
    let ids = site_ids(&preview);
    assert_eq!(ids.len(), 1);
    let meta = std::process::Command::new("git")
        .current_dir(&repo)
        .args(["show", &format!("prototypes:sites/{}/metadata.json", ids[0])])
        .output()
        .unwrap();
    let meta: serde_json::Value = serde_json::from_slice(&meta.stdout).unwrap();
    assert_eq!(meta["generator"]["mode"], "ai", "{:#}", meta["stages"]);
    (dir, preview)
}

#[test]
fn an_ai_built_site_passes_the_w3c_checker_and_works_in_chromium() {
    let Some(jar) = vnu_jar() else { return };
    let (_dir, preview) = ai_site();
    let id = &site_ids(&preview)[0];
    let files = [preview.join(id).join("index.html"), preview.join(id).join("styles.css")];
    let (errors, warnings) = vnu(&jar, &files);
    eprintln!("vnu on the AI-built site: {} errors, {} warnings", errors.len(), warnings.len());
    assert!(errors.is_empty(), "the W3C checker found errors:\n{}", errors.join("\n"));
    assert!(warnings.is_empty(), "the W3C checker warns:\n{}", warnings.join("\n"));
    if !browser_tools() {
        return;
    }
    let shots = project().join("target/screenshots/ai");
    let results = behaviour(&preview, &shots);
    let r = &results[0];
    assert_eq!(r["errors"], serde_json::json!([]), "console errors: {r}");
    assert_eq!(r["external"], serde_json::json!([]), "requests left the site: {r}");
    assert!(r["overflow375"].as_i64().unwrap() <= 0, "overflow at 375px: {r}");
    assert_eq!(r["nav"], true, "the model's nav toggle does not open the menu: {r}");
    let mut axe = Vec::new();
    for width in ["axe375", "axe1440"] {
        axe.extend(r[width].as_array().unwrap().iter().map(|v| v["id"].to_string()));
    }
    eprintln!("chromium on the AI-built site: axe violations {axe:?}");
    assert!(axe.is_empty(), "axe-core violations on the AI-built site: {r}");
}

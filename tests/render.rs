//! Snapshots of what the template generator makes of each bundled example:
//! the analysis (kind, name, tagline, sections, facts) and the finalized
//! page. A change to the analysis or the layouts shows up here as a diff to
//! review (`cargo insta review`).

use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use protoforge::config::Limits;
use protoforge::finalize::{self, Direction, PageOptions};
use protoforge::inbox::Inbox;
use protoforge::stages;
use protoforge::templates::Layouts;

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn render(file: &Path) -> (serde_json::Value, String) {
    let inbox = Inbox::new(examples(), Limits::default(), "");
    let job = inbox.load(file).expect("example is valid");
    let layouts = Layouts::builtin().expect("built-in layouts load");
    let lang = job.submission().language_or("en").to_string();
    let t = layouts.strings(&lang);
    let a = stages::analyze(&job, &t, "en", false);
    let expires = NaiveDate::from_ymd_opt(2026, 12, 2).expect("valid date");
    let rendered = layouts.render(&a, &job.parsed.project_id, expires).expect("renders");
    let banner = t.get("banner").replace("{date}", "2026-12-02");
    let opts = PageOptions {
        lang: &a.lang,
        dir: if a.dir == "rtl" { Direction::Rtl } else { Direction::Ltr },
        banner: &banner,
        title: &a.name,
        dismiss: t.get("banner_dismiss"),
        form_note: t.get("form_prototype_note"),
        ..PageOptions::default()
    };
    let page = finalize::finalize_page(&rendered.index_html, &opts).expect("finalizes");
    let summary = serde_json::json!({
        "project_id": job.parsed.project_id,
        "layout": rendered.layout,
        "analysis": a,
        "palette": a.palette,
        "assets": a.assets.iter().map(|(p, b)| format!("{p} ({} bytes)", b.len())).collect::<Vec<_>>(),
        "warnings": a.warnings.iter().chain(page.warnings.iter()).collect::<Vec<_>>(),
    });
    (summary, page.html)
}

#[test]
fn examples_render_as_snapshotted() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(examples())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 8);
    for file in files {
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        let (summary, html) = render(&file);
        insta::assert_json_snapshot!(format!("{name}.analysis"), summary);
        insta::assert_snapshot!(format!("{name}.index.html"), html);
    }
}

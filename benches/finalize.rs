//! Benchmarks of finalize, printed as figures (no timing assertions):
//! `cargo bench --bench finalize`.
//!
//! 1. Rewrite throughput of `finalize_html` on 100 KB pages: a clean page of the kind our
//!    templates emit, and a dense hostile one where every section needs rewrites. The
//!    target is 50 MB/s.
//! 2. Finalize time per site: the whole-site pass (pages, stylesheet, images, checks) for a
//!    bundled example, with and without a 4 MB photo among its attachments.

use std::time::{Duration, Instant};

use protoforge::finalize::{Direction, PageOptions, finalize_html};

const TARGET_MB_S: f64 = 50.0;

fn opts() -> PageOptions<'static> {
    PageOptions {
        lang: "en",
        dir: Direction::Ltr,
        banner: "Prototype · expires 2026-12-22",
        title: "Bench",
        ..PageOptions::default()
    }
}

fn head() -> String {
    String::from(concat!(
        "<!DOCTYPE html>\n<html lang=\"en\" dir=\"ltr\">\n<head>\n<meta charset=\"utf-8\">\n",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n",
        "<title>Bench</title>\n<link rel=\"stylesheet\" href=\"styles.css\">\n",
        "<script src=\"script.js\" defer></script>\n</head>\n<body>\n<main>\n",
        "<h1>Bench bakery</h1>\n",
    ))
}

/// Sections as the templates write them: nothing to remove.
fn clean_page() -> String {
    let mut page = head();
    let mut i = 0;
    while page.len() < 100 * 1024 {
        page.push_str(&format!(
            concat!(
                "<section id=\"s{i}\" class=\"section\"><h2>Section {i}</h2>\n",
                "<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod ",
                "tempor incididunt ut labore et dolore magna aliqua. <a href=\"#s0\">Top</a></p>\n",
                "<ul><li>Rye</li><li>Spelt</li><li>Wheat</li></ul>\n",
                "<img src=\"assets/p{i}.jpg\" alt=\"Loaf {i}\" width=\"640\" height=\"480\" ",
                "loading=\"lazy\"></section>\n",
            ),
            i = i
        ));
        i += 1;
    }
    page.push_str("</main>\n</body>\n</html>\n");
    page
}

/// Every section carries something finalize must remove or rewrite.
fn hostile_page() -> String {
    let mut page = head();
    page.push_str(
        "<style>@import url(https://fonts.example/x.css);body{background:url(bg.png)}</style>\n",
    );
    let mut i = 0;
    while page.len() < 100 * 1024 {
        page.push_str(&format!(
            concat!(
                "<section id=\"s{i}\" class=\"section\"><h2>Section {i}</h2>",
                "<p style=\"color:#333\">Lorem ipsum dolor sit amet, consectetur adipiscing ",
                "elit, sed do eiusmod tempor. <a href=\"https://example.com/{i}\">link</a> ",
                "<a href=\"javascript:alert({i})\">bad</a></p>",
                "<img src=\"https://img.example/{i}.jpg\"><img src=\"p{i}.jpg\" alt=\"P\">",
                "<button onclick=\"go({i})\">Go</button>",
                "<form action=\"https://evil.example/\">",
                "<input name=\"q\" aria-label=\"Query\"></form></section>\n",
            ),
            i = i
        ));
        i += 1;
    }
    page.push_str("</main>\n</body>\n</html>\n");
    page
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn throughput(name: &str, page: &str) {
    let opts = opts();
    // Warm up, and check the page goes through at all.
    finalize_html(page, &opts).expect("bench page finalizes");
    let mut per_round = Vec::new();
    let runs = 50;
    for _ in 0..15 {
        let start = Instant::now();
        for _ in 0..runs {
            std::hint::black_box(finalize_html(page, &opts).expect("bench page finalizes"));
        }
        per_round.push(start.elapsed() / runs);
    }
    let t = median(&mut per_round);
    let mb_s = page.len() as f64 / t.as_secs_f64() / 1e6;
    let verdict = if mb_s >= TARGET_MB_S { "meets" } else { "MISSES" };
    println!(
        "finalize_html, {name} page of {} KB: {:.3} ms/page, {mb_s:.1} MB/s ({verdict} the {TARGET_MB_S} MB/s target)",
        page.len() / 1024,
        t.as_secs_f64() * 1e3,
    );
}

fn main() {
    throughput("clean", &clean_page());
    throughput("hostile", &hostile_page());
}

use crate::util::*;

#[test]
fn every_example_builds_into_a_site() {
    let repo = Repo::new();
    let examples = repo.add_examples();
    assert!(examples.len() >= 5, "{examples:?}");
    let run = repo.build().ok();
    let ids = published_ids(&run.stdout);
    assert_eq!(ids.len(), examples.len(), "{}", run.stdout);
    let mut sites = repo.sites();
    sites.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(sites, expected);
    repo.fsck();
    assert_eq!(repo.commit_count(), examples.len(), "one commit per prototype");

    for id in &ids {
        let files =
            repo.git(&["ls-tree", "-r", "--name-only", "prototypes", &format!("sites/{id}/")]);
        for f in ["index.html", "styles.css", "script.js", "metadata.json"] {
            assert!(
                files.lines().any(|l| l == format!("sites/{id}/{f}")),
                "{id} lacks {f}: {files}"
            );
        }
        let meta = repo.metadata(id);
        assert_eq!(meta["project_id"], id.as_str());
        assert_eq!(meta["generator"]["mode"], "template");
        let created =
            chrono::DateTime::parse_from_rfc3339(meta["created_at"].as_str().unwrap()).unwrap();
        let expires =
            chrono::DateTime::parse_from_rfc3339(meta["expires_at"].as_str().unwrap()).unwrap();
        assert_eq!((expires - created).num_days(), 30);
        // No personal data in the metadata.
        let text = meta.to_string();
        for pii in ["rosie@", "Rosie Hartley", "+44", "kenji@", "Carla Mendes"] {
            assert!(!text.contains(pii), "{id}: metadata leaks {pii}");
        }
        let listed: Vec<&str> =
            meta["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
        assert!(listed.contains(&"index.html"), "{listed:?}");
    }

    // Trailers, one commit per site.
    let log = repo.git(&["log", "--format=%(trailers:key=Prototype-Id,valueonly)", "prototypes"]);
    let mut logged: Vec<&str> = log.lines().filter(|l| !l.is_empty()).collect();
    logged.sort();
    assert_eq!(logged, expected.iter().map(String::as_str).collect::<Vec<_>>());
    let log = repo.git(&["log", "-1", "--format=%B", "prototypes"]);
    assert!(log.contains("Submission-Sha256: "), "{log}");
    assert!(log.contains("Expires-At: "), "{log}");

    // The portfolio's logo was copied, and its colours used.
    let portfolio =
        ids.iter().find(|i| i.starts_with("mori-light-studio-")).expect("portfolio site");
    let files = repo.git(&[
        "ls-tree",
        "-r",
        "--name-only",
        "prototypes",
        &format!("sites/{portfolio}/assets/images/"),
    ]);
    assert!(files.contains("logo.png"), "{files}");
    assert_eq!(repo.metadata(portfolio)["site"]["palette_source"], "logo");

    // The work tree and the current branch were never touched.
    assert!(!repo.path().join("sites").exists());
    let status = repo.git(&["status", "--porcelain", "--untracked-files=no"]);
    assert!(status.is_empty(), "{status}");
}

#[test]
fn the_bakery_looks_like_a_bakery() {
    let repo = Repo::new();
    std::fs::copy(project_dir().join("examples/01-bakery.yaml"), repo.inbox().join("bakery.yaml"))
        .unwrap();
    let run = repo.build().ok();
    let id = &published_ids(&run.stdout)[0];
    assert!(id.starts_with("rosies-loaves-"), "{id}");
    let meta = repo.metadata(id);
    assert_eq!(meta["site"]["kind"], "restaurant");
    assert_eq!(meta["generator"]["layout"], "restaurant");
    let html = repo.show(&format!("sites/{id}/index.html"));
    for words in [
        "Rosie&#39;s Loaves",
        "Hackney",
        "Tue-Sun",
        "7am-3pm",
        "Sourdough",
        "Cinnamon buns",
        "Pre-order",
        "Visit us",
    ] {
        assert!(html.contains(words), "bakery page lacks {words}");
    }
    assert!(html.contains(r#"lang="en""#));
    assert!(html.contains("noindex"));
    let css = repo.show(&format!("sites/{id}/styles.css"));
    assert!(css.contains("#7a4b2a"), "the customer's colour is used");
}

/// Project ids in the order their sites were committed.
fn built_order(repo: &Repo) -> Vec<String> {
    let log = repo.git(&[
        "log",
        "--reverse",
        "--format=%(trailers:key=Prototype-Id,valueonly)",
        "prototypes",
    ]);
    log.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect()
}

fn touch(path: &std::path::Path, at: std::time::SystemTime) {
    std::fs::File::options().write(true).open(path).unwrap().set_modified(at).unwrap();
}

#[test]
fn oldest_submission_is_built_first() {
    let repo = Repo::new();
    repo.write_inbox(
        "a.yaml",
        "company: Late Co\ndescription: later\nsubmitted_at: 2026-11-03T10:00:00Z\n",
    );
    repo.write_inbox(
        "b.yaml",
        "company: Early Co\ndescription: earlier\nsubmitted_at: 2026-11-01T10:00:00Z\n",
    );
    repo.write_inbox(
        "c.yaml",
        "company: Middle Co\ndescription: middle\nsubmitted_at: 2026-11-02T10:00:00+02:00\n",
    );
    repo.build().ok();
    let order = built_order(&repo);
    assert_eq!(order.len(), 3);
    assert!(
        order[0].starts_with("early-co-")
            && order[1].starts_with("middle-co-")
            && order[2].starts_with("late-co-"),
        "{order:?}"
    );
}

/// Files without `submitted_at`, committed by developers: a checkout gives them all one
/// modification time, so their commit time orders them, not their names or mtimes.
#[test]
fn committed_submissions_without_a_date_are_built_in_commit_order() {
    let repo = Repo::new();
    let commit = |file: &str, text: &str, date: &str| {
        repo.write_inbox(file, text);
        repo.git(&["add", &format!("inbox/{file}")]);
        let out = std::process::Command::new("git")
            .current_dir(repo.path())
            .args(["-c", "user.name=Dev", "-c", "user.email=dev@example.com"])
            .args(["commit", "--quiet", "-m", &format!("Add {file}")])
            .env("GIT_AUTHOR_DATE", date)
            .env("GIT_COMMITTER_DATE", date)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    commit("b.yaml", "company: First Co\ndescription: committed first\n", "2026-11-01T10:00:00Z");
    commit("a.yaml", "company: Second Co\ndescription: committed second\n", "2026-11-02T10:00:00Z");
    commit("c.yaml", "company: Third Co\ndescription: committed third\n", "2026-11-03T10:00:00Z");
    // A later edit of c dates it from its own commit.
    commit(
        "c.yaml",
        "company: Third Co\ndescription: committed third, edited\n",
        "2026-11-04T10:00:00Z",
    );
    // The checkout's times say the opposite of the commits: c oldest, b newest.
    for (i, f) in ["c.yaml", "a.yaml", "b.yaml"].iter().enumerate() {
        let t = std::time::SystemTime::UNIX_EPOCH
            + std::time::Duration::from_secs(1_700_000_000 + i as u64 * 60);
        touch(&repo.inbox().join(f), t);
    }
    // An uncommitted file keeps its file time (the oldest of all here).
    repo.write_inbox("d.yaml", "company: Local Co\ndescription: not committed\n");
    let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
    touch(&repo.inbox().join("d.yaml"), t);
    repo.build().ok();
    let order = built_order(&repo);
    let prefixes = ["local-co-", "first-co-", "second-co-", "third-co-"];
    assert_eq!(order.len(), 4);
    for (id, prefix) in order.iter().zip(prefixes) {
        assert!(id.starts_with(prefix), "{order:?}");
    }
}

#[test]
fn the_same_submission_twice_gives_one_site() {
    let repo = Repo::new();
    let text = std::fs::read_to_string(project_dir().join("examples/02-saas-short.yaml")).unwrap();
    repo.write_inbox("first.yaml", &text);
    repo.write_inbox("second.yaml", format!("# re-delivered\n{text}"));
    let run = repo.build().ok();
    assert_eq!(published_ids(&run.stdout).len(), 1, "{}", run.stdout);
    assert_eq!(repo.sites().len(), 1);
    assert_eq!(repo.commit_count(), 1);
    // A second run finds nothing to do.
    let again = repo.build().ok();
    assert!(again.stdout.contains("Nothing pending"), "{}", again.stdout);
    assert_eq!(repo.commit_count(), 1);
    let status = repo.run(&["status"]).ok();
    assert!(status.stdout.contains("0 pending, 2 done"), "{}", status.stdout);
}

#[test]
fn a_client_id_replaces_the_site_instead_of_adding_one() {
    let repo = Repo::new();
    repo.write_inbox("v1.yaml", "id: form-77\ncompany: Atlas\ndescription: first version\nsubmitted_at: 2026-11-01T00:00:00Z\n");
    repo.build().ok();
    repo.write_inbox("v2.yaml", "id: form-77\ncompany: Atlas\ndescription: second version, with more words\nsubmitted_at: 2026-11-02T00:00:00Z\n");
    repo.build().ok();
    let sites = repo.sites();
    assert_eq!(sites.len(), 1, "{sites:?}");
    let html = repo.show(&format!("sites/{}/index.html", sites[0]));
    assert!(html.contains("second version"), "the newer submission wins");
    let meta = repo.metadata(&sites[0]);
    assert_eq!(meta["previous_submissions"].as_array().unwrap().len(), 1);
    // Neither file is pending any more, so nothing flip-flops.
    assert!(repo.build().ok().stdout.contains("Nothing pending"));
    assert_eq!(repo.commit_count(), 2);
}

#[test]
fn hostile_text_comes_out_escaped_and_intact() {
    let repo = Repo::new();
    let mut text = std::fs::read_to_string(fixture("hostile.yaml")).unwrap();
    // A 20 KB paragraph, with a marker at its end, to show nothing is cut.
    let long: String =
        "Long text with <b>tags</b> & {{ braces }}. ".repeat(470) + "END-OF-LONG-TEXT";
    assert!(long.len() > 20_000);
    text.push_str(&format!("voice_transcript: \"{long}\"\n"));
    repo.write_inbox("hostile.yaml", text);
    let run = repo.build().ok();
    let id = &published_ids(&run.stdout)[0];
    let html = repo.show(&format!("sites/{id}/index.html"));
    // Escaped: no live markup from the customer.
    for bad in
        ["<script>alert", "<img src=x", "<iframe", "<svg onload", "</style><script>", "<b>bold</b>"]
    {
        assert!(!html.contains(bad), "page contains live {bad}");
    }
    // Intact: the words are there, as text, template syntax unevaluated.
    for good in [
        "&lt;script&gt;alert(&#39;company&#39;)&lt;&#x2F;script&gt;",
        "{{ 7*7 }} Bakery",
        "{{ config }}",
        "{% include &quot;base.html&quot; %}",
        "مرحبا بكم في مخبزنا",
        "你好，欢迎光临",
        "こんにちは",
        "🍞🥐✨",
        "שלום",
    ] {
        let alt = good.replace("&#x2F;", "/");
        assert!(html.contains(good) || html.contains(&alt), "page lacks {good}");
    }
    assert!(!html.contains(">49<"), "template syntax was evaluated");
    let css = repo.show(&format!("sites/{id}/styles.css"));
    assert!(!css.contains("alert"), "customer text reached the CSS");
    repo.fsck();
}

#[test]
fn right_to_left_and_cjk_sites() {
    let repo = Repo::new();
    std::fs::copy(fixture("rtl-arabic.yaml"), repo.inbox().join("ar.yaml")).unwrap();
    std::fs::copy(fixture("cjk.yaml"), repo.inbox().join("ja.yaml")).unwrap();
    let run = repo.build().ok();
    let ids = published_ids(&run.stdout);
    assert_eq!(ids.len(), 2, "{}", run.stdout);
    for id in ids {
        let html = repo.show(&format!("sites/{id}/index.html"));
        if html.contains(r#"lang="ar""#) {
            assert!(html.contains(r#"dir="rtl""#), "Arabic site is not right-to-left");
            assert!(html.contains("نحن مخبز صغير في القاهرة"));
            assert_eq!(repo.metadata(&id)["site"]["kind"], "restaurant");
        } else {
            assert!(html.contains(r#"lang="ja""#), "{id}");
            assert!(html.contains(r#"dir="ltr""#));
            assert!(html.contains("私たちは京都の小さなパン屋です"));
        }
    }
}

#[test]
fn an_older_version_arriving_late_does_not_replace_the_newer() {
    let repo = Repo::new();
    repo.write_inbox("v2.yaml", "id: form-9\ncompany: Atlas\ndescription: VERSION TWO\nsubmitted_at: 2026-11-02T00:00:00Z\n");
    repo.build().ok();
    repo.write_inbox("v1.yaml", "id: form-9\ncompany: Atlas\ndescription: VERSION ONE\nsubmitted_at: 2026-11-01T00:00:00Z\n");
    let run = repo.build().ok();
    assert!(run.stdout.contains("superseded"), "{}", run.stdout);
    let sites = repo.sites();
    assert_eq!(sites.len(), 1);
    let html = repo.show(&format!("sites/{}/index.html", sites[0]));
    assert!(html.contains("VERSION TWO") && !html.contains("VERSION ONE"));
    assert!(repo.build().ok().stdout.contains("Nothing pending"));
    assert_eq!(repo.commit_count(), 2);
    repo.fsck();
}

#[test]
fn a_renamed_company_keeps_the_site_of_its_client_id() {
    let repo = Repo::new();
    repo.write_inbox("v1.yaml", "id: form-10\ncompany: Rosie Bakes\ndescription: first\nsubmitted_at: 2026-11-01T00:00:00Z\n");
    let first = published_ids(&repo.build().ok().stdout);
    repo.write_inbox("v2.yaml", "id: form-10\ncompany: Rosie's Bakery Ltd\ndescription: renamed\nsubmitted_at: 2026-11-02T00:00:00Z\n");
    let second = published_ids(&repo.build().ok().stdout);
    assert_eq!(first, second, "one client id, one site");
    assert_eq!(repo.sites(), first);
    assert!(
        repo.show(&format!("sites/{}/index.html", first[0])).contains("Rosie&#39;s Bakery Ltd")
    );
}

#[test]
fn what_was_built_stays_built_whatever_changes_around_it() {
    let repo = Repo::new();
    std::fs::create_dir_all(repo.inbox().join("attachments/a")).unwrap();
    std::fs::write(repo.inbox().join("attachments/a/brief.txt"), "- One\n- Two\n").unwrap();
    repo.write_inbox("a.yaml", "company: Kept\ndescription: kept\nattachments:\n  - path: attachments/a/brief.txt\n    kind: document\n");
    repo.build().ok();
    // A new salt changes every project id, and the attachment goes away:
    // the submission is still done, not rebuilt and not rejected.
    std::fs::remove_file(repo.inbox().join("attachments/a/brief.txt")).unwrap();
    let run =
        repo.run_env(&["build", "--once"], &[("PROTOFORGE_PROJECT_ID_SALT", "another salt")]).ok();
    assert!(run.stdout.contains("Nothing pending"), "{}", run.stdout);
    assert!(repo.inbox().join("a.yaml").exists());
    assert_eq!(repo.sites().len(), 1);
    assert_eq!(repo.commit_count(), 1);
}

#[test]
fn a_huge_document_does_not_make_a_huge_page() {
    let repo = Repo::new();
    std::fs::create_dir_all(repo.inbox().join("attachments/big")).unwrap();
    let doc: String = (0..200_000).map(|i| format!("- project number {i}\n")).collect();
    assert!(doc.len() > 4_000_000);
    std::fs::write(repo.inbox().join("attachments/big/brief.txt"), doc).unwrap();
    repo.write_inbox("big.yaml", "company: Big Brief\ndescription: Portfolio with my projects.\nattachments:\n  - path: attachments/big/brief.txt\n    kind: document\n");
    let run = repo.build().ok();
    let id = &published_ids(&run.stdout)[0];
    let html = repo.show(&format!("sites/{id}/index.html"));
    assert!(html.len() < 200_000, "page is {} bytes", html.len());
    let meta = repo.metadata(id);
    assert!(meta["warnings"].to_string().contains("only its first 65536 were read"), "{meta}");
}

#[test]
fn bidi_overrides_cannot_flip_the_page() {
    let repo = Repo::new();
    repo.write_inbox("b.yaml", "company: \"Evil\u{202E}gnp.exe Co\"\ndescription: hello\n");
    let run = repo.build().ok();
    let id = &published_ids(&run.stdout)[0];
    let html = repo.show(&format!("sites/{id}/index.html"));
    assert!(!html.contains('\u{202E}'));
    assert!(html.contains("Evilgnp.exe Co"));
}

/// `git gc --auto` decides by counting the loose objects in `objects/17/`;
/// two planted there (unreachable, so gc keeps them loose) put a repo with
/// `gc_auto: 1` over the limit deterministically.
fn plant_two_loose_objects_in_17(repo: &Repo) {
    let mut planted = 0;
    for n in 0u32.. {
        let content = format!("planted {n}\n");
        let id = gix::objs::compute_hash(
            gix::hash::Kind::Sha1,
            gix::objs::Kind::Blob,
            content.as_bytes(),
        )
        .expect("sha1 of a small buffer");
        if id.to_hex().to_string().starts_with("17") {
            let path = repo.path().join(format!("planted-{n}"));
            std::fs::write(&path, &content).unwrap();
            let written = repo.git(&["hash-object", "-w", path.to_str().unwrap()]);
            assert_eq!(written.trim(), id.to_hex().to_string());
            std::fs::remove_file(&path).unwrap();
            planted += 1;
            if planted == 2 {
                return;
            }
        }
    }
}

fn count_objects(repo: &Repo) -> std::collections::HashMap<String, u64> {
    repo.git(&["count-objects", "-v"])
        .lines()
        .filter_map(|l| l.split_once(": "))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

#[test]
fn the_builder_packs_loose_objects_with_git_gc() {
    let repo = Repo::new();
    let examples = repo.add_examples();
    plant_two_loose_objects_in_17(&repo);
    let before = count_objects(&repo);
    assert_eq!(before["in-pack"], 0, "{before:?}");

    let run = repo.run_env(&["build", "--once"], &[("PROTOFORGE_BUILDER__GC_AUTO", "1")]).ok();
    assert_eq!(published_ids(&run.stdout).len(), examples.len(), "{}", run.all());
    let after = count_objects(&repo);
    // Every object of the branch went into a pack; the planted ones are
    // unreachable and recent, so they stay loose (gc deletes nothing in use).
    let reachable = repo.git(&["rev-list", "--objects", "prototypes"]).lines().count() as u64;
    assert!(after["in-pack"] >= reachable, "{reachable} reachable, {after:?}");
    assert!(after["count"] < before["count"] + reachable, "{before:?} -> {after:?}");
    repo.fsck();

    // The repo goes on working: another build commits on top of the pack.
    repo.write_inbox(
        "late.yaml",
        "company: Late Bakery\ndescription: A bakery that opened after the first pack.\n",
    );
    let run = repo.build().ok();
    assert_eq!(published_ids(&run.stdout).len(), 1, "{}", run.all());
    repo.fsck();
}

#[test]
fn gc_auto_zero_never_packs() {
    let repo = Repo::new();
    repo.add_examples();
    plant_two_loose_objects_in_17(&repo);
    repo.run_env(&["build", "--once"], &[("PROTOFORGE_BUILDER__GC_AUTO", "0")]).ok();
    assert_eq!(count_objects(&repo)["in-pack"], 0);
}

/// A camera's JPEG: noisy pixels, and an Exif segment with an orientation and a GPS
/// position (48°N) right after the start-of-image marker.
fn camera_jpeg(w: u32, h: u32) -> Vec<u8> {
    let mut seed = 7u32;
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let n = (seed >> 24) / 4;
        image::Rgb([((x / 10 + n) % 256) as u8, ((y / 8 + n) % 256) as u8, (120 + n) as u8])
    });
    let mut jpeg = std::io::Cursor::new(Vec::new());
    img.write_to(&mut jpeg, image::ImageFormat::Jpeg).unwrap();
    let jpeg = jpeg.into_inner();
    let mut tiff = b"MM\0\x2a\0\0\0\x08\0\x01".to_vec();
    tiff.extend_from_slice(&[0x88, 0x25, 0, 4, 0, 0, 0, 1, 0, 0, 0, 0x1a, 0, 0, 0, 0]);
    // GPS IFD: GPSLatitudeRef "N".
    tiff.extend_from_slice(&[0, 1, 0, 1, 0, 2, 0, 0, 0, 2, b'N', 0, 0, 0, 0, 0, 0, 0]);
    tiff.extend_from_slice(b"GPS secret location");
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    let mut out = vec![0xff, 0xd8, 0xff, 0xe1];
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[test]
fn photos_are_scaled_stripped_and_described() {
    let repo = Repo::new();
    let dir = repo.inbox().join("attachments/p");
    std::fs::create_dir_all(&dir).unwrap();
    let photo = camera_jpeg(2400, 1800);
    assert!(photo.windows(19).any(|w| w == b"GPS secret location"));
    std::fs::write(dir.join("shopfront.jpg"), &photo).unwrap();
    repo.write_inbox(
        "p.yaml",
        "company: Lens Studio\ndescription: Portfolio of a photographer.\nattachments:\n  - path: attachments/p/shopfront.jpg\n    kind: image\n    description: Our shop front at dawn\n",
    );
    let run = repo.build().ok();
    let id = &published_ids(&run.stdout)[0];
    let meta = repo.metadata(id);
    let images = meta["checks"]["images"].as_array().unwrap();
    assert_eq!(images.len(), 1, "{meta}");
    let report = &images[0];
    assert_eq!(report["scaled_from"], serde_json::json!([2400, 1800]), "{report}");
    assert_eq!((report["width"].as_u64(), report["height"].as_u64()), (Some(1600), Some(1200)));
    assert!(report["bytes_after"].as_u64() < report["bytes_before"].as_u64(), "{report}");
    let path = report["to"].as_str().unwrap();
    let out = std::process::Command::new("git")
        .current_dir(repo.path())
        .args(["show", &format!("prototypes:sites/{id}/{path}")])
        .output()
        .unwrap();
    let published = image::load_from_memory(&out.stdout).unwrap();
    assert_eq!((published.width(), published.height()), (1600, 1200));
    assert!(!out.stdout.windows(4).any(|w| w == b"Exif"), "EXIF was published");
    assert!(!out.stdout.windows(3).any(|w| w == b"GPS"), "the GPS position was published");
    let html = repo.show(&format!("sites/{id}/index.html"));
    let tag = format!(r#"src="{path}""#);
    assert!(html.contains(&tag), "{tag} not in the page");
    let img = html.split(&tag).nth(1).unwrap().split('>').next().unwrap();
    assert!(img.contains(r#"alt="Our shop front at dawn""#), "{img}");
    assert!(img.contains(r#"width="1600" height="1200""#), "{img}");
    let warnings = meta["warnings"].to_string();
    assert!(warnings.contains("scaled from 2400×1800 to 1600×1200"), "{warnings}");
    repo.fsck();
}

#[test]
fn a_site_over_the_hard_cap_fails_with_a_record() {
    let repo = Repo::new();
    std::fs::copy(project_dir().join("examples/01-bakery.yaml"), repo.inbox().join("bakery.yaml"))
        .unwrap();
    let run = repo.run_env(
        &["build", "--once"],
        &[
            ("PROTOFORGE_FINALIZE__BUDGET_BYTES", "1000"),
            ("PROTOFORGE_FINALIZE__BUDGET_WITH_IMAGES_BYTES", "1000"),
            ("PROTOFORGE_FINALIZE__HARD_CAP_BYTES", "5000"),
        ],
    );
    let all = run.all();
    assert!(all.contains("finalize.hard_cap_bytes"), "{all}");
    assert!(repo.sites().is_empty(), "{:?}", repo.sites());
    repo.fsck();
}

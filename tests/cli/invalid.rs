use crate::util::*;

/// (fixture, text the error must contain)
const CASES: &[(&str, &str)] = &[
    ("tabs.yaml", "inbox/tabs.yaml:4:"),
    ("tabs.yaml", "tab"),
    (
        "unknown-key.yaml",
        "inbox/unknown-key.yaml:2:1: unknown key `descripton` — did you mean `description`?",
    ),
    (
        "bad-email.yaml",
        "inbox/bad-email.yaml:4:10: `contact.email`: `rosie at example` does not look like an email address",
    ),
    ("missing-description.yaml", "`description`: no description: add `description`"),
    (
        "missing-description.yaml",
        "`contact.email`: `not-an-email` does not look like an email address",
    ),
    ("traversal.yaml", "`attachments[0].path`: `attachments/../../protoforge.yaml` contains `..`"),
    ("absolute.yaml", "`attachments[0].path`: `/etc/passwd` is absolute"),
    (
        "symlink-out.yaml",
        "`attachments[0].path`: `attachments/link.txt` leads out of inbox/attachments/",
    ),
    ("bad-date.yaml", "`submitted_at`: `next tuesday` is not an RFC 3339 time"),
    ("bad-color.yaml", "`style.colors[0]`: `brown` is not a hex colour"),
    ("malformed.yaml", "inbox/malformed.yaml:"),
    ("latin1.yaml", "inbox/latin1.yaml:1:13: the file is not UTF-8"),
];

#[test]
fn invalid_files_are_rejected_with_a_clear_error_and_kept() {
    let repo = Repo::new();
    // A symlink from inside attachments/ to a file outside the inbox.
    std::os::unix::fs::symlink(
        repo.path().join("protoforge.yaml"),
        repo.inbox().join("attachments/link.txt"),
    )
    .unwrap();
    let mut originals = Vec::new();
    for entry in std::fs::read_dir(fixture("invalid")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).unwrap();
        repo.write_inbox(&name, &bytes);
        originals.push((name, bytes));
    }
    // One valid file beside them still builds.
    repo.write_inbox("good.yaml", "company: Good Co\ndescription: A good site.\n");
    let run = repo.build();
    assert_eq!(run.code, 1, "rejections make the run fail\n{}", run.all());
    assert_eq!(published_ids(&run.stdout).len(), 1, "{}", run.stdout);
    assert!(run.stdout.contains(&format!("{} rejected", originals.len())), "{}", run.stdout);

    let rejected = repo.inbox().join("rejected");
    for (name, bytes) in &originals {
        assert!(!repo.inbox().join(name).exists(), "{name} is still in the inbox");
        assert_eq!(&std::fs::read(rejected.join(name)).unwrap(), bytes, "{name} was changed");
    }
    for (name, expected) in CASES {
        let error = std::fs::read_to_string(rejected.join(format!("{name}.error.txt"))).unwrap();
        assert!(error.contains(expected), "{name}: expected {expected:?} in:\n{error}");
    }
    // Nothing from a traversal attempt was published.
    let all = repo.git(&["ls-tree", "-r", "--name-only", "prototypes"]);
    assert!(!all.contains("protoforge.yaml"), "{all}");
    repo.fsck();
    // A rejected file fixed and moved back builds.
    let fixed = String::from_utf8(
        originals.iter().find(|(n, _)| n == "unknown-key.yaml").unwrap().1.clone(),
    )
    .unwrap()
    .replace("descripton", "description");
    std::fs::write(repo.inbox().join("unknown-key.yaml"), fixed).unwrap();
    let run = repo.build().ok();
    assert_eq!(published_ids(&run.stdout).len(), 1, "{}", run.stdout);
}

#[test]
fn check_lists_every_problem_without_moving_anything() {
    let repo = Repo::new();
    repo.run(&["check"]).ok();
    repo.write_inbox("a.yaml", "descripton: x\n");
    repo.write_inbox("b.yaml", "description: ok\ncontact:\n  email: nope\n");
    std::fs::write(
        repo.path().join("layouts/restaurant.html"),
        "{% extends \"base.html\" %}{% block content %}{{ nope.missing }}{% endblock content %}",
    )
    .unwrap();
    std::fs::write(repo.path().join("protoforge.yaml"), "expiry_days: 0\n").unwrap();
    let run = repo.run(&["check"]);
    assert_eq!(run.code, 1, "{}", run.all());
    let out = run.stdout;
    assert!(out.contains("`expiry_days`"), "{out}");
    assert!(out.contains("inbox/a.yaml:1:1: unknown key `descripton`"), "{out}");
    assert!(out.contains("inbox/b.yaml:3:10: `contact.email`"), "{out}");
    assert!(out.contains("restaurant.html"), "{out}");
    assert!(repo.inbox().join("a.yaml").exists(), "check must not move files");
}

#[test]
fn bad_config_names_file_line_and_key() {
    let repo = Repo::new();
    std::fs::write(repo.path().join("protoforge.yaml"), "branch: prototypes\nexpiry_dayz: 3\n")
        .unwrap();
    let run = repo.build();
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains(
            "protoforge.yaml:2:1: unknown key `expiry_dayz` — did you mean `expiry_days`?"
        ),
        "{}",
        run.stderr
    );
    std::fs::write(repo.path().join("protoforge.yaml"), "branch: prototypes\n").unwrap();
    let run = repo.run_env(&["config"], &[("PROTOFORGE_EXPIRY_DAY", "3")]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("did you mean PROTOFORGE_EXPIRY_DAYS?"), "{}", run.stderr);
}

#[test]
fn check_renders_the_prompts_and_looks_for_the_model_keys() {
    let repo = Repo::new();
    // A prompt override with a variable no stage provides, and a key that is not set.
    std::fs::write(repo.path().join("prompts/css.md"), "Style {{ page_html }}.").unwrap();
    std::fs::write(
        repo.path().join("protoforge.yaml"),
        "llm:\n  providers:\n    - base_url: https://api.example/v1\n      model: m\n      api_key_env: PF_CHECK_UNSET_KEY\n",
    )
    .unwrap();
    let run = repo.run(&["check"]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stdout.contains("prompts/css.md: prompt css:"), "{}", run.stdout);
    assert!(run.stdout.contains("page_html"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("llm.providers[0].api_key_env: the variable PF_CHECK_UNSET_KEY is not set"),
        "{}",
        run.stdout
    );
    let run = repo.run_env(&["check"], &[("PF_CHECK_UNSET_KEY", "k")]);
    assert!(!run.stdout.contains("PF_CHECK_UNSET_KEY"), "{}", run.stdout);
}

//! `protoforge init`: creates a site repo with a commented config, an inbox,
//! editable copies of the built-in layouts and prompts, and GitHub Actions
//! workflows (check, build and push, prune, Pages).
//!
//! Invariants: it never overwrites a file that exists (a re-run fills in
//! what is missing), and the repo is created with gix, not the git CLI.

use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};

use crate::config;
use crate::publish::{self, PublishError};
use crate::templates::{LAYOUTS, PROMPTS};

/// The inbox format documentation, shared with the project's own inbox.
pub const INBOX_README: &str = include_str!("../inbox/README.md");

const GITIGNORE: &str = "\
# Staging area of atomic writes into the inbox.
/inbox/.incoming/
# Sites written by `protoforge export` (they live on the prototypes branch).
/preview/
";

/// GitHub Actions workflows for a site repo: check, build and push, prune, publish to Pages.
pub const WORKFLOWS: &[(&str, &str)] = &[
    ("ci.yml", include_str!("../init/workflows/ci.yml")),
    ("build-prototypes.yml", include_str!("../init/workflows/build-prototypes.yml")),
    ("prune.yml", include_str!("../init/workflows/prune.yml")),
    ("pages.yml", include_str!("../init/workflows/pages.yml")),
];

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScaffoldError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Repo(#[from] PublishError),
}

/// What `init` did.
#[derive(Debug, Default)]
pub struct Created {
    pub repo_created: bool,
    pub written: Vec<PathBuf>,
    pub kept: Vec<PathBuf>,
}

/// Create (or complete) a site repo at `dir`.
pub fn init(dir: &Path) -> Result<Created, ScaffoldError> {
    let mut created = Created::default();
    std::fs::create_dir_all(dir)
        .map_err(|source| ScaffoldError::Io { path: dir.into(), source })?;
    if !dir.join(".git").exists() {
        publish::init_repository(dir)?;
        created.repo_created = true;
    }
    let mut files: Vec<(String, Vec<u8>)> = vec![
        (config::FILE_NAME.into(), config::commented_default(&random_salt()).into_bytes()),
        (".gitignore".into(), GITIGNORE.as_bytes().to_vec()),
        ("inbox/README.md".into(), INBOX_README.as_bytes().to_vec()),
        ("inbox/attachments/.gitkeep".into(), Vec::new()),
        ("layouts/README.md".into(), LAYOUTS_README.as_bytes().to_vec()),
        ("prompts/README.md".into(), PROMPTS_README.as_bytes().to_vec()),
    ];
    files.extend(
        WORKFLOWS.iter().map(|(n, b)| (format!(".github/workflows/{n}"), b.as_bytes().to_vec())),
    );
    files.extend(LAYOUTS.iter().map(|(n, b)| (format!("layouts/{n}"), b.to_vec())));
    files.extend(PROMPTS.iter().map(|(n, b)| (format!("prompts/{n}"), b.to_vec())));
    for (rel, bytes) in files {
        let path = dir.join(&rel);
        if path.exists() {
            created.kept.push(path);
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|source| ScaffoldError::Io { path: parent.into(), source })?;
        }
        std::fs::write(&path, bytes)
            .map_err(|source| ScaffoldError::Io { path: path.clone(), source })?;
        created.written.push(path);
    }
    Ok(created)
}

const LAYOUTS_README: &str = "\
# Layouts

Copies of protoforge's built-in layouts (tera 2 templates). A file here
replaces the built-in file of the same name; delete it to get the built-in
one back. `protoforge check` renders every layout with a sample site and
reports what fails.

- `<kind>.html` is the page for a kind of site (restaurant, shop, portfolio,
  services, clinic, saas, nonprofit, events, generic); it extends `base.html`.
- `css/base.css` then `css/<kind>.css` become `styles.css`.
- `script.js` is copied as is.
- `strings.yaml` holds the interface strings by language (English is the
  fallback).

Customer text reaches templates only as variables and is escaped; never
mark it `| safe`.
";

const PROMPTS_README: &str = "\
# Prompts

Copies of the built-in prompts of the LLM stages. A file here replaces the
built-in one of the same name. Without a model configured, protoforge uses
the template generator and these are not used.
";

/// 128 random bits as hex, from the OS-seeded keys of std's hasher.
fn random_salt() -> String {
    let state = std::collections::hash_map::RandomState::new();
    let mut out = String::new();
    for i in 0..2u8 {
        let mut h = state.build_hasher();
        h.write_u8(i);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salts_differ() {
        assert_ne!(random_salt(), random_salt());
        assert_eq!(random_salt().len(), 32);
    }
}

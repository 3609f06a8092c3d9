//! Embeds the built-in layouts, prompts and examples into the binary, so a
//! site repo needs no copy of them and the demo runs from anywhere.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let root =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let mut code = String::new();
    for dir in ["layouts", "prompts", "examples"] {
        println!("cargo:rerun-if-changed={dir}");
        let mut files = Vec::new();
        collect(&root.join(dir), &root.join(dir), &mut files);
        files.sort();
        writeln!(code, "pub const {}: &[(&str, &[u8])] = &[", dir.to_uppercase())
            .expect("write to String");
        for rel in files {
            let abs = root.join(dir).join(&rel);
            writeln!(code, "    ({rel:?}, include_bytes!({:?})),", abs.display().to_string())
                .expect("write to String");
        }
        code.push_str("];\n");
    }
    std::fs::write(out.join("embedded.rs"), code).expect("OUT_DIR is writable");
}

fn collect(base: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name.ends_with('~') || name == "README.md" && dir == base {
            continue;
        }
        if path.is_dir() {
            println!("cargo:rerun-if-changed={}", path.display());
            collect(base, &path, out);
        } else {
            let rel = path
                .strip_prefix(base)
                .expect("walked from base")
                .to_string_lossy()
                .replace('\\', "/");
            out.push(rel);
        }
    }
}

//! Records what the bench JSON says about the build: the commit the binaries
//! are built from, whether the checkout had uncommitted changes to tracked
//! files, and the compiler version.
//!
//! `CONCORD_BENCH_GIT_COMMIT` is `git rev-parse HEAD` or `unknown` outside a
//! git checkout; `CONCORD_BENCH_GIT_DIRTY` is `true`, `false` or `unknown`;
//! `CONCORD_BENCH_RUSTC` is `$RUSTC --version` or `unknown`.
//!
//! The script runs again when HEAD, the branch it points to or the index
//! moves, or when any file of the checkout outside `target/` and `.git`
//! changes, so a rebuilt binary never carries a stale commit or dirty flag.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let git = |args: &[&str]| -> Option<String> {
        Command::new("git")
            .args(args)
            .current_dir(&manifest_dir)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };

    let commit = git(&["rev-parse", "HEAD"]).filter(|s| !s.is_empty());
    let dirty = commit.as_ref().and_then(|_| {
        git(&[
            "--no-optional-locks",
            "status",
            "--porcelain",
            "--untracked-files=no",
        ])
        .map(|s| !s.is_empty())
    });
    println!(
        "cargo:rustc-env=CONCORD_BENCH_GIT_COMMIT={}",
        commit.as_deref().unwrap_or("unknown")
    );
    println!(
        "cargo:rustc-env=CONCORD_BENCH_GIT_DIRTY={}",
        dirty.map_or("unknown", |d| if d { "true" } else { "false" })
    );

    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty());
    println!(
        "cargo:rustc-env=CONCORD_BENCH_RUSTC={}",
        version.as_deref().unwrap_or("unknown")
    );

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=RUSTC");
    if commit.is_none() {
        return;
    }
    // Git's own files that move with a commit, a checkout or `git add`.
    let git_path = |p: &str| git(&["rev-parse", "--git-path", p]).map(|s| manifest_dir.join(s));
    let head_ref = git(&["symbolic-ref", "-q", "HEAD"]);
    for p in ["HEAD", "index", "packed-refs"]
        .into_iter()
        .map(str::to_string)
        .chain(head_ref)
    {
        if let Some(path) = git_path(&p).filter(|p| p.exists()) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    // Every file of the checkout, for the dirty flag.
    if let Some(top) = git(&["rev-parse", "--show-toplevel"]) {
        watch_checkout(Path::new(&top));
    }
}

fn watch_checkout(top: &Path) {
    let Ok(entries) = std::fs::read_dir(top) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name != "target" && name != ".git"
        })
        .collect();
    paths.sort();
    for p in paths {
        println!("cargo:rerun-if-changed={}", p.display());
    }
}

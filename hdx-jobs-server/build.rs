//! Embeds MapLibre GL JS (the map of `/preview/{layer}`) when it has been fetched from the npm
//! registry by `scripts/fetch-assets.sh` (run by scripts/setup.sh) into
//! `target/assets/maplibre-gl/` (or `HDX_JOBS_MAPLIBRE_DIR`). Without it the server still
//! builds; the preview page then says the map library is missing.
//!
//! Also records the commit the build comes from (`HDX_JOBS_COMMIT` for the code), which
//! `/version` and `hdx_jobs_build_info` report.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rustc-env=HDX_JOBS_COMMIT={}", commit());
    println!("cargo:rerun-if-env-changed=HDX_JOBS_MAPLIBRE_DIR");
    let dir = std::env::var_os("HDX_JOBS_MAPLIBRE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default())
                .join("../target/assets/maplibre-gl")
        });
    println!("cargo:rerun-if-changed={}", dir.display());
    let js = dir.join("maplibre-gl.js");
    let css = dir.join("maplibre-gl.css");
    println!("cargo:rerun-if-changed={}", js.display());
    let code = if js.exists() && css.exists() {
        format!(
            "/// MapLibre GL JS, embedded at build time.\npub const MAPLIBRE_JS: Option<&[u8]> = Some(include_bytes!({:?}));\n\
             /// MapLibre GL CSS.\npub const MAPLIBRE_CSS: Option<&[u8]> = Some(include_bytes!({:?}));\n",
            js.canonicalize().unwrap_or(js),
            css.canonicalize().unwrap_or(css)
        )
    } else {
        println!("cargo:warning=MapLibre GL JS not found in {} (run scripts/fetch-assets.sh): /preview will say so", dir.display());
        "/// Not bundled in this build.\npub const MAPLIBRE_JS: Option<&[u8]> = None;\n/// Not bundled.\npub const MAPLIBRE_CSS: Option<&[u8]> = None;\n".to_string()
    };
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default()).join("assets.rs");
    if let Err(e) = std::fs::write(&out, code) {
        println!("cargo:warning=cannot write {}: {e}", out.display());
    }
}

/// `HDX_JOBS_COMMIT` when set (an image built without `.git` passes it), else what
/// `git rev-parse` says of the checkout, else `unknown`. Registers the git files that move
/// with HEAD, the ones that exist only, so that a commit rebuilds and nothing else does.
fn commit() -> String {
    println!("cargo:rerun-if-env-changed=HDX_JOBS_COMMIT");
    if let Some(commit) = std::env::var("HDX_JOBS_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
    {
        return commit;
    }
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default()).join("..");
    let git = root.join(".git");
    let mut watched = vec![git.join("HEAD"), git.join("packed-refs")];
    if let Ok(head) = std::fs::read_to_string(git.join("HEAD")) {
        if let Some(branch) = head.trim().strip_prefix("ref: ") {
            watched.push(git.join(branch));
        }
    }
    for path in watched.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(&root)
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|text| text.trim().to_string())
        .filter(|commit| !commit.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

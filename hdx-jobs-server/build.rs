//! Embeds the front-end files of `/preview/{layer}` when `scripts/fetch-assets.sh` (run by
//! scripts/setup.sh) has fetched them from the npm registry: MapLibre GL JS (the map) from
//! `target/assets/maplibre-gl/` (or `HDX_JOBS_MAPLIBRE_DIR`) and the Natural Earth country
//! outlines (the reference layer) from `target/assets/countries/` (or `HDX_JOBS_COUNTRIES_DIR`).
//! Without them the server still builds; the preview page then says what is missing.
//!
//! Also records the commit the build comes from (`HDX_JOBS_COMMIT` for the code), which
//! `/version` and `hdx_jobs_build_info` report.
//!
//! Change detection registers existing paths only: cargo treats a missing `rerun-if-changed`
//! path as changed, which would rerun this script and relink the server on every build.

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "../testkit/build/shared_fixtures.rs"]
mod shared_fixtures;

fn main() {
    // `cfg(shared_fixtures)` for the tests on the shared HDX fixtures (reported as ignored
    // where they are absent).
    shared_fixtures::emit();
    println!("cargo:rustc-env=HDX_JOBS_COMMIT={}", commit());
    let mut code = String::new();
    let maplibre = asset_dir("HDX_JOBS_MAPLIBRE_DIR", "maplibre-gl");
    match embed(&maplibre, &["maplibre-gl.js", "maplibre-gl.css"]) {
        Some(files) => code.push_str(&format!(
            "/// MapLibre GL JS, embedded at build time.\npub const MAPLIBRE_JS: Option<&[u8]> = Some(include_bytes!({:?}));\n\
             /// MapLibre GL CSS.\npub const MAPLIBRE_CSS: Option<&[u8]> = Some(include_bytes!({:?}));\n",
            files[0], files[1]
        )),
        None => {
            println!("cargo:warning=MapLibre GL JS not found in {} (run scripts/fetch-assets.sh): /preview will say so", maplibre.dir.display());
            code.push_str("/// Not bundled in this build.\npub const MAPLIBRE_JS: Option<&[u8]> = None;\n/// Not bundled.\npub const MAPLIBRE_CSS: Option<&[u8]> = None;\n");
        }
    }
    let countries = asset_dir("HDX_JOBS_COUNTRIES_DIR", "countries");
    match embed(&countries, &["countries.geojson"]) {
        Some(files) => code.push_str(&format!(
            "/// Natural Earth 1:110m country boundaries (public domain) as GeoJSON, embedded at build time.\n\
             pub const COUNTRIES_GEOJSON: Option<&[u8]> = Some(include_bytes!({:?}));\n",
            files[0]
        )),
        None => {
            println!("cargo:warning=Country outlines not found in {} (run scripts/fetch-assets.sh): /preview draws no reference layer", countries.dir.display());
            code.push_str("/// Not bundled in this build.\npub const COUNTRIES_GEOJSON: Option<&[u8]> = None;\n");
        }
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default()).join("assets.rs");
    if let Err(e) = std::fs::write(&out, code) {
        println!("cargo:warning=cannot write {}: {e}", out.display());
    }
}

/// Where an asset is looked for.
struct AssetDir {
    dir: PathBuf,
    /// `target/assets` when `dir` is the default `target/assets/<name>` (no variable set).
    default_parent: Option<PathBuf>,
}

/// `$var` when set, else `target/assets/<name>` of the workspace.
fn asset_dir(var: &str, name: &str) -> AssetDir {
    println!("cargo:rerun-if-env-changed={var}");
    match std::env::var_os(var).filter(|v| !v.is_empty()) {
        Some(dir) => AssetDir {
            dir: PathBuf::from(dir),
            default_parent: None,
        },
        None => {
            let parent = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default())
                .join("../target/assets");
            AssetDir {
                dir: parent.join(name),
                default_parent: Some(parent),
            }
        }
    }
}

/// The canonical paths of `files` in `asset.dir` when all exist, registering what to watch
/// so that fetching, updating or deleting them reruns this script, and nothing else does:
/// - all present: the files themselves;
/// - some missing: the asset's directory if it exists (fetch-assets.sh writes into it);
///   else, for the default location, `target/assets` (created here when missing, so that
///   there is a path to watch: cargo never writes there, unlike `target/` itself, whose
///   constant changes would rerun this script every time); else (a variable naming a
///   directory that does not exist) only the variable, registered by [`asset_dir`].
fn embed(asset: &AssetDir, files: &[&str]) -> Option<Vec<PathBuf>> {
    let paths: Vec<PathBuf> = files.iter().map(|f| asset.dir.join(f)).collect();
    if paths.iter().all(|p| p.is_file()) {
        for path in &paths {
            println!("cargo:rerun-if-changed={}", path.display());
        }
        return Some(
            paths
                .into_iter()
                .map(|p| p.canonicalize().unwrap_or(p))
                .collect(),
        );
    }
    if asset.dir.is_dir() {
        watch_dir(&asset.dir);
    } else if let Some(parent) = &asset.default_parent {
        if !parent.exists() && std::fs::create_dir_all(parent).is_ok() {
            // Made during this run, it would look changed since the run began and rerun the
            // script once more: date it back, so that only a fetch writing into it counts.
            if let Ok(dir) = std::fs::File::open(parent) {
                let _ = dir.set_modified(std::time::SystemTime::UNIX_EPOCH);
            }
        }
        if parent.is_dir() {
            watch_dir(parent);
        }
    }
    None
}

/// Registers a directory (cargo scans it recursively) unless cargo's own output is inside it.
fn watch_dir(dir: &Path) {
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default());
    let holds_output = match (dir.canonicalize(), out.canonicalize()) {
        (Ok(dir), Ok(out)) => out.starts_with(dir),
        _ => true,
    };
    if !holds_output {
        println!("cargo:rerun-if-changed={}", dir.display());
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

//! Embeds MapLibre GL JS (the map of `/preview/{layer}`) when it has been fetched from the npm
//! registry by `scripts/fetch-assets.sh` (run by scripts/setup.sh) into
//! `target/assets/maplibre-gl/` (or `HDX_JOBS_MAPLIBRE_DIR`). Without it the server still
//! builds; the preview page then says the map library is missing.

use std::path::PathBuf;

fn main() {
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

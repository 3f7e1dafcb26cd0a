//! The crate features keep their promise: without default features the dependency tree has none
//! of the heavy crates of HDX's tasks (PostGIS clients, zip, Markdown), and with them it has them
//! all, so this test notices if a feature stops enabling what it should, too. GDAL is in no
//! feature: only the hdx-jobs-import crate (the import child) links it, so no `hdx-jobs` process
//! loads libgdal.
//!
//! It asks `cargo tree` (the cargo running the tests) about the workspace's lock file, offline:
//! no network, no build.

use std::path::Path;
use std::process::Command;

/// The crates only HDX's tasks need.
const HEAVY: [&str; 4] = ["tokio-postgres", "postgres", "zip", "pulldown-cmark"];

/// The crate names of hdx-jobs' normal dependency tree (no dev or build dependencies) built
/// with `features`, one per line.
fn tree(features: &[&str]) -> Vec<String> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace holds the crate");
    let output = Command::new(env!("CARGO"))
        .current_dir(workspace)
        .args(["tree", "-p", "hdx-jobs", "-e", "normal", "--prefix", "none"])
        .args(["--offline", "--locked"])
        .args(features)
        .output()
        .expect("cargo tree runs");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_queue_core_builds_none_of_the_heavy_crates() {
    let crates = tree(&["--no-default-features"]);
    assert!(crates.iter().any(|c| c == "redis"), "{crates:?}");
    let heavy: Vec<&String> = crates
        .iter()
        .filter(|c| HEAVY.contains(&c.as_str()))
        .collect();
    assert!(heavy.is_empty(), "the core depends on {heavy:?}");
}

#[test]
fn the_default_features_bring_them() {
    let crates = tree(&[]);
    for name in HEAVY {
        if name == "postgres" {
            continue; // the blocking client: only the tests use it (through testkit)
        }
        assert!(crates.iter().any(|c| c == name), "no {name} in {crates:?}");
    }
}

#[test]
fn no_feature_brings_gdal() {
    let crates = tree(&["--all-features"]);
    assert!(crates.iter().any(|c| c == "zip"), "{crates:?}");
    let gdal: Vec<&String> = crates.iter().filter(|c| c.starts_with("gdal")).collect();
    assert!(
        gdal.is_empty(),
        "hdx-jobs depends on {gdal:?}: GDAL belongs in hdx-jobs-import only"
    );
}

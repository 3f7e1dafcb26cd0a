//! Build-script half of [`testkit::shared_fixture`]: sets `cfg(shared_fixtures)` on the package
//! being built when the shared HDX fixtures (real files with the old service's known results)
//! are on this machine, so that the tests on them can be marked
//! `#[cfg_attr(not(shared_fixtures), ignore = "...")]` and be *reported as ignored* where the
//! fixtures are absent, instead of returning early and passing.
//!
//! Build scripts set cfgs for their own package only, so each package with such tests includes
//! this file from its `build.rs` (`#[path = "../testkit/build/shared_fixtures.rs"] mod ...;`)
//! and calls [`emit`]. Where the fixtures are looked for is the same as at run time:
//! `HDX_TEST_FIXTURES` when set, else `../shared/fixtures` beside the workspace.
//!
//! Change detection registers existing paths only (cargo treats a missing `rerun-if-changed`
//! path as changed, which would rerun the script and rebuild the package on every build):
//! - the fixtures directory, when it exists (its removal reruns the script);
//! - else, for the default location, `../shared` when that exists (fixtures copied into it are
//!   seen: cargo scans a registered directory's contents);
//! - else nothing but the variable (never the parent of a path the variable names: that could
//!   be `/`, which cargo would scan whole). Fixtures that appear later there need
//!   `touch build.rs` or `cargo clean -p <package>`.

use std::path::PathBuf;

/// The cfg set when the fixtures are present.
const CFG: &str = "shared_fixtures";

/// Declares `cfg(shared_fixtures)` (so check-cfg knows it) and sets it when the fixtures exist.
pub fn emit() {
    println!("cargo::rustc-check-cfg=cfg({CFG})");
    println!("cargo:rerun-if-env-changed=HDX_TEST_FIXTURES");
    let (dir, default_parent) =
        match std::env::var_os("HDX_TEST_FIXTURES").filter(|v| !v.is_empty()) {
            Some(dir) => (PathBuf::from(dir), None),
            None => {
                let shared = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default())
                    .join("../../shared");
                (shared.join("fixtures"), Some(shared))
            }
        };
    if dir.is_dir() {
        println!("cargo:rerun-if-changed={}", dir.display());
        println!("cargo:rustc-cfg={CFG}");
    } else if let Some(parent) = default_parent.filter(|p| p.is_dir()) {
        println!("cargo:rerun-if-changed={}", parent.display());
    }
}

//! The container image, as HDX deploys it: `scripts/image.sh` builds it from the release binaries
//! (`hdx-jobs` and its import child `hdx-jobs-import`, built by scripts/test.sh) with podman
//! (installed by scripts/setup.sh) and smoke-tests it: both executables run, the API container
//! answers /readyz, a worker container imports a sample for an add-layer call (in an
//! `hdx-jobs-import` child) and reports to a CKAN stand-in, the tile is served, and the compose
//! stack comes up.

use std::process::Command;

#[test]
fn the_image_builds_and_serves_ckans_calls() {
    let root = testkit::workspace_root();
    let binary = root.join("target/release/hdx-jobs");
    for file in [&binary, &root.join("target/release/hdx-jobs-import")] {
        assert!(
            file.exists(),
            "{} is missing: scripts/test.sh builds it (cargo build --release --locked -p hdx-jobs-cli)",
            file.display()
        );
    }
    let venv_bin = testkit::python().with_file_name("");
    let path = format!(
        "{}:{}",
        venv_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new(root.join("scripts/image.sh"))
        .env("HDX_JOBS_BINARY", &binary)
        .env("PATH", path)
        .output()
        .expect("run scripts/image.sh");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "scripts/image.sh failed:\n{stderr}"
    );
    let version = env!("CARGO_PKG_VERSION");
    let main_runs = format!("image: hdx-jobs {version}");
    let import_runs = format!("image: hdx-jobs-import {version}");
    for step in [
        main_runs.as_str(),
        import_runs.as_str(),
        "API container: /readyz",
        "worker container: imported and reported to CKAN; tile served",
        "compose: every service runs",
        "smoke test passed",
    ] {
        assert!(stderr.contains(step), "{step:?} missing:\n{stderr}");
    }
}

//! README's first command keeps working: `scripts/demo.sh --check` on a test database.

use std::process::Command;

#[test]
fn the_demo_runs_its_sample_jobs() {
    let test = testkit::TestRedis::new();
    let output = Command::new(testkit::workspace_root().join("scripts/demo.sh"))
        .arg("--check")
        .env("HDX_JOBS_BIN", env!("CARGO_BIN_EXE_hdx-jobs"))
        .env("HDX_REDIS_URL", test.url())
        .output()
        .expect("run the demo");
    testkit::check(&output, "scripts/demo.sh --check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("demo OK"), "{stdout}");
    assert!(stdout.contains("JobTimeoutException"), "{stdout}");
    assert!(stdout.contains("I waited 2 s"), "{stdout}");
}

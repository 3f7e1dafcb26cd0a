//! README's first command keeps working: `scripts/demo.sh --check` on a test database, with the
//! API on a free port.

use std::process::Command;

#[test]
fn the_demo_starts_the_service_and_runs_its_samples() {
    let redis = testkit::TestRedis::new();
    let postgres = testkit::TestPostgres::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let output = Command::new(testkit::workspace_root().join("scripts/demo.sh"))
        .arg("--check")
        .env("HDX_JOBS_BIN", env!("CARGO_BIN_EXE_hdx-jobs"))
        .env("HDX_REDIS_URL", redis.url())
        .env("HDX_GISDB_URL", postgres.conn_string())
        .env("APP_PORT", port.to_string())
        .output()
        .expect("run the demo");
    testkit::check(&output, "scripts/demo.sh --check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    for needle in [
        "demo OK",
        "JobTimeoutException",
        "I waited 2 s",
        r#"POST /api/send-analytics: {"success":true}"#,
        r#"POST /api/scheduler/add_job: {"success":true}"#,
        "demo-heartbeat",
        r#""bounding_box": "BOX("#,
        r#""tiles":["http://127.0.0.1:"#,
        "/preview/pre_demo_districts",
        r#"POST /api/create-change-events: {"state":"success"}"#,
        "  dataset-metadata-changed",
        "  resource-created",
        &format!("monitor: http://127.0.0.1:{port}/monitor"),
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }
}

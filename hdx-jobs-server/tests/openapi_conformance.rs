//! Schemathesis (from PyPI, in the test venv) against `/openapi.json` of a running server:
//! generated requests, valid and not, to every endpoint must get no 5xx, every response must
//! match the documented status codes, content types and schemas, and the server must accept
//! exactly what the schema allows (every check of `--checks all`).

mod common;

use std::process::Command;

use common::TestServer;
use serde_json::json;
use testkit::http::Reply;

#[test]
fn schemathesis_finds_no_server_error_and_no_response_outside_the_schema() {
    let server = TestServer::start(&[
        ("EVENTS_API_ENABLED", "true"),
        ("HDX_JOBS_API_TOKEN", "schemathesis-token"),
    ]);
    server.ckan.reply(
        "/api/action/status_show",
        Reply::json(json!({"success": true, "result": {}})),
    );
    server.ckan.reply(
        "/api/action/hdx_resource_id_list",
        Reply::json(json!({"success": true, "result": ["a", "b"]})),
    );
    let schemathesis = testkit::python().with_file_name("schemathesis");
    let output = Command::new(&schemathesis)
        .current_dir(std::env::temp_dir())
        .args([
            "run",
            &format!("{}/openapi.json", server.url),
            "--checks",
            "all",
            "--header",
            "Authorization: Bearer schemathesis-token",
            "--max-examples",
            "60",
            "--seed",
            "20261128",
            "--workers",
            "2",
        ])
        .env("NO_COLOR", "1")
        .output()
        .expect("run schemathesis (scripts/python-venv.sh installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("passed"), "{stdout}");
}

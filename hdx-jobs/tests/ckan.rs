//! The CKAN client against a local server playing CKAN.

use std::time::Duration;

use hdx_jobs::ckan::{CkanClient, CkanError};
use hdx_jobs::config::Config;
use hdx_jobs::secret::Secret;
use serde_json::json;
use testkit::http::{FakeServer, Reply};

fn client(server: &FakeServer, key: Option<&str>) -> CkanClient {
    let url = format!("{}/api/action", server.url());
    let config = Config::from_lookup(|k| match k {
        "CKAN_API_BASE_URL" => Some(url.clone()),
        "HDX_USER_AGENT" => Some("HDX-TEST".into()),
        _ => None,
    })
    .expect("config");
    CkanClient::new(&config.ckan, key.map(Secret::new), Duration::from_secs(2)).expect("client")
}

#[test]
fn posts_json_with_the_key_and_user_agent() {
    let server = FakeServer::start();
    server.reply(
        "/api/action/hdx_resource_update_metadata",
        Reply::json(json!({"success": true, "result": {"id": "r1"}})),
    );
    let answer = client(&server, Some("key-1"))
        .post("hdx_resource_update_metadata", &json!({"id": "r1"}))
        .expect("post");
    assert_eq!(answer["result"]["id"], "r1");
    let request = &server.requests_to("/api/action/hdx_resource_update_metadata")[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.header("authorization"), Some("key-1"));
    assert_eq!(request.header("user-agent"), Some("HDX-TEST"));
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.json(), json!({"id": "r1"}));
}

#[test]
fn errors_carry_ckans_text_and_say_if_transient() {
    let server = FakeServer::start();
    server.reply(
        "/api/action/nope",
        Reply::json(json!({"success": false, "error": {"message": "Not found"}})).with_status(404),
    );
    server.reply("/api/action/busy", Reply::status(503).body("down"));
    server.reply(
        "/api/action/slow",
        Reply::json(json!({})).delay(Duration::from_secs(5)),
    );
    let ckan = client(&server, None);
    let err = ckan
        .get("nope", &[("id".into(), "x".into())])
        .expect_err("404");
    assert!(
        matches!(&err, CkanError::Status { status: 404, body, .. } if body.contains("Not found")),
        "{err}"
    );
    assert!(!err.is_transient());
    assert_eq!(
        server.requests_to("/api/action/nope")[0].query_param("id"),
        Some("x")
    );
    assert!(server.requests_to("/api/action/nope")[0]
        .header("authorization")
        .is_none());
    assert!(ckan
        .post("busy", &json!({}))
        .expect_err("503")
        .is_transient());
    let slow = ckan.post("slow", &json!({})).expect_err("timeout");
    assert!(matches!(slow, CkanError::Transport { .. }), "{slow}");
}

#[test]
fn missing_base_url_is_a_configuration_error() {
    let config = Config::from_lookup(|_| None).expect("config");
    let err = CkanClient::new(&config.ckan, None, Duration::from_secs(1)).expect_err("no url");
    assert!(matches!(err, CkanError::Config(_)));
}

//! The on-call files under deploy/ against the server they watch: the Prometheus alerting rules
//! pass `promtool check rules` and their unit tests (`promtool test rules`), the Grafana
//! dashboard is importable JSON whose queries parse, and every `hdx_jobs_*` metric the rules or
//! the dashboard query is one `/metrics` defines, so a renamed or misspelt metric cannot leave an
//! alert that never fires or a panel that stays empty.
//!
//! promtool comes with Debian's `prometheus` package, which scripts/setup.sh installs; without it
//! these tests fail rather than skip, since the rules would go untested.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The workspace root (the rule and dashboard paths are relative to it).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Runs promtool in the workspace root; fails the test when it is not installed.
fn promtool(args: &[&str]) -> Output {
    match Command::new("promtool")
        .args(args)
        .current_dir(root())
        .output()
    {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "promtool not found on PATH: scripts/setup.sh installs it (Debian's prometheus \
             package); the alerting rules cannot be checked without it"
        ),
        Err(e) => panic!("cannot run promtool: {e}"),
    }
}

/// Asserts that promtool succeeded, showing what it printed either way.
fn assert_success(args: &[&str], output: &Output) -> String {
    let printed = format!(
        "promtool {}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{} failed:\n{printed}", args[0]);
    printed
}

#[test]
fn the_alerting_rules_are_valid_and_their_tests_pass() {
    let check = ["check", "rules", "deploy/prometheus/alerts.yml"];
    let printed = assert_success(&check, &promtool(&check));
    assert!(printed.contains("SUCCESS"), "{printed}");

    let test = ["test", "rules", "deploy/prometheus/alerts.test.yml"];
    let printed = assert_success(&test, &promtool(&test));
    assert!(printed.contains("SUCCESS"), "{printed}");
}

/// The string literals of a Rust source file (comments and char literals skipped; enough for
/// the plain `"..."` literals the metrics code uses).
fn string_literals(source: &str) -> Vec<String> {
    let chars: Vec<char> = source.chars().collect();
    let mut literals = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '/' if chars.get(i + 1) == Some(&'/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '\'' => {
                // A char literal ('x', '\n', '"') or a lifetime ('a).
                if chars.get(i + 1) == Some(&'\\') {
                    i += 2;
                    while i < chars.len() && chars[i] != '\'' {
                        i += 1;
                    }
                    i += 1;
                } else if chars.get(i + 2) == Some(&'\'') {
                    i += 3;
                } else {
                    i += 1;
                }
            }
            '"' => {
                let mut literal = String::new();
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' {
                        literal.push(chars[i]);
                        i += 1;
                    }
                    if let Some(c) = chars.get(i) {
                        literal.push(*c);
                    }
                    i += 1;
                }
                i += 1;
                literals.push(literal);
            }
            _ => i += 1,
        }
    }
    literals
}

/// Every `hdx_jobs_[a-z_]+` in `text`, as written (a format prefix ends with `_`), except Rust
/// paths such as the `hdx_jobs_server::access` log target.
fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("hdx_jobs_") {
        let preceded_by_name_char = rest[..start]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        if !preceded_by_name_char && !tail[end..].starts_with("::") {
            names.push(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    names
}

/// The job events of the `hdx_jobs_jobs_{event}_total` counters.
const JOB_EVENTS: [&str; 7] = [
    "enqueued",
    "finished",
    "failed",
    "retried",
    "stopped",
    "abandoned",
    "interrupted",
];

/// The metric names the server defines, from the string literals of its metrics code.
fn defined_metrics() -> BTreeSet<String> {
    let mut defined = BTreeSet::new();
    for file in [
        "hdx-jobs-server/src/routes/metrics.rs",
        "hdx-jobs-server/src/http_metrics.rs",
    ] {
        let literals = string_literals(&read(file));
        for literal in &literals {
            if literal.contains("hdx_jobs_jobs_{event}_total") {
                for event in JOB_EVENTS {
                    assert!(
                        literals.iter().any(|l| l == event),
                        "{file} no longer lists the job event {event:?}: update JOB_EVENTS"
                    );
                    defined.insert(format!("hdx_jobs_jobs_{event}_total"));
                }
            }
            defined.extend(
                metric_names(literal)
                    .into_iter()
                    .filter(|name| !name.ends_with('_')),
            );
        }
    }
    // What the checks below rely on, so that a broken scan cannot pass vacuously.
    for name in [
        "hdx_jobs_queue_jobs",
        "hdx_jobs_jobs_failed_total",
        "hdx_jobs_job_duration_seconds",
        "hdx_jobs_scheduler_lock_held",
        "hdx_jobs_http_requests_total",
        "hdx_jobs_http_request_duration_seconds",
    ] {
        assert!(
            defined.contains(name),
            "{name} not found in the metrics code: {defined:?}"
        );
    }
    defined
}

/// True when `name` is a defined metric or one of a defined histogram's series.
fn is_defined(defined: &BTreeSet<String>, name: &str) -> bool {
    defined.contains(name)
        || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|base| defined.contains(base))
        })
}

fn dashboard() -> Value {
    let text = read("deploy/grafana/hdx-jobs.json");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("deploy/grafana/hdx-jobs.json: {e}"))
}

/// Every string in a JSON document, and separately every query (`expr`) of its panels.
fn strings_and_exprs(value: &Value, strings: &mut Vec<String>, exprs: &mut Vec<String>) {
    match value {
        Value::String(s) => strings.push(s.clone()),
        Value::Array(items) => {
            for item in items {
                strings_and_exprs(item, strings, exprs);
            }
        }
        Value::Object(map) => {
            if let Some(Value::String(expr)) = map.get("expr") {
                exprs.push(expr.clone());
            }
            for item in map.values() {
                strings_and_exprs(item, strings, exprs);
            }
        }
        _ => {}
    }
}

#[test]
fn the_rules_and_the_dashboard_query_only_metrics_the_server_defines() {
    let defined = defined_metrics();
    let mut used: Vec<(&str, String)> = metric_names(&read("deploy/prometheus/alerts.yml"))
        .into_iter()
        .map(|name| ("deploy/prometheus/alerts.yml", name))
        .collect();
    let (mut strings, mut exprs) = (Vec::new(), Vec::new());
    strings_and_exprs(&dashboard(), &mut strings, &mut exprs);
    used.extend(
        strings
            .iter()
            .flat_map(|s| metric_names(s))
            .map(|name| ("deploy/grafana/hdx-jobs.json", name)),
    );
    let unknown: Vec<String> = used
        .iter()
        .filter(|(_, name)| !is_defined(&defined, name))
        .map(|(file, name)| format!("{file}: {name}"))
        .collect();
    assert!(
        unknown.is_empty(),
        "metrics the server does not define:\n{}\n(defined: {defined:?})",
        unknown.join("\n")
    );
    // The alerts watch what the on-call view promises.
    let in_rules: BTreeSet<&str> = used
        .iter()
        .filter(|(file, _)| file.ends_with("alerts.yml"))
        .map(|(_, name)| name.as_str())
        .collect();
    for name in [
        "hdx_jobs_queue_workers",
        "hdx_jobs_queue_latency_seconds",
        "hdx_jobs_jobs_failed_total",
        "hdx_jobs_jobs_finished_total",
        "hdx_jobs_event_consumer_lag",
        "hdx_jobs_event_stream_up",
        "hdx_jobs_scheduler_lock_held",
    ] {
        assert!(in_rules.contains(name), "no alert uses {name}");
    }
}

#[test]
fn the_dashboard_is_importable_and_its_queries_parse() {
    let dashboard = dashboard();
    assert_eq!(dashboard["title"], "hdx-jobs");
    assert!(
        dashboard["schemaVersion"].as_u64().unwrap_or(0) >= 36,
        "schemaVersion: {}",
        dashboard["schemaVersion"]
    );
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list");
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no ${name} variable"))
    };
    assert_eq!(variable("datasource")["type"], "datasource");
    assert_eq!(variable("datasource")["query"], "prometheus");
    assert_eq!(
        variable("queue")["definition"],
        "label_values(hdx_jobs_queue_jobs, queue)"
    );

    // Every panel but the rows has a query, and every query parses: promtool checks them as
    // recording rules, with Grafana's variables replaced by what they expand to.
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let mut count = 0;
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let title = panel["title"].as_str().expect("title");
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "panel {title:?} must use the $datasource variable"
        );
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for target in targets {
            let expr = target["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("panel {title:?}: a target without expr"));
            let expanded = expr
                .replace("$__rate_interval", "5m")
                .replace("$queue", ".*");
            assert!(
                !expanded.contains('$'),
                "panel {title:?}: a variable this test does not expand in {expr:?}"
            );
            count += 1;
            rules.push_str(&format!(
                "      - record: dashboard:query_{count}\n        expr: {}\n",
                serde_json::to_string(&expanded).expect("quote")
            ));
        }
    }
    assert!(count >= 15, "only {count} queries");

    let dir = std::env::temp_dir().join(format!("hdx-jobs-dashboard-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("dashboard-queries.yml");
    std::fs::write(&file, &rules).expect("write");
    let path = file.to_string_lossy().to_string();
    let args = ["check", "rules", path.as_str()];
    let output = promtool(&args);
    let _ = std::fs::remove_dir_all(&dir);
    let printed = assert_success(&args, &output);
    assert!(
        printed.contains(&format!("SUCCESS: {count} rules found")),
        "{printed}\n{rules}"
    );
}

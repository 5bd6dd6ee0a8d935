//! The dashboard in a real browser: Debian's Chromium, driven by playwright-core
//! (`tests/browser/dashboard.mjs`) at a phone's viewport, against the real server, database
//! and broker. An owner signs in, sees their unit's status, watches a live value change and
//! acknowledges an alarm. Screenshots are kept in `target/browser-artifacts/`.

use std::{process::Stdio, time::Duration};

use chillcloud_tests::harness::{Stack, browser_dir, wait_for, workspace_root};
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn an_owner_signs_in_sees_a_live_value_change_and_acknowledges_an_alarm_on_a_phone() {
    let browser_dir = browser_dir();
    let stack = Stack::start().await;
    let api = stack.api();
    let mut gateway = stack.gateway(2).await;
    stack.site_owner("owner@acme.example", "Li Wei", "li wei's password").await;
    let rule =
        json!({"title": "Supply too warm", "title_zh": "供水过热", "grade": 1, "kind": "condition", "when": "p0 > 50"});
    let path = format!("/api/v1/gateways/{}/rules/hot", stack.gateway_id);
    assert_eq!(api.send(Method::PUT, &path, rule).await.0, 200);
    let data = gateway.data_at(chrono::Utc::now().timestamp_millis(), &[(0, 60.0), (1, 7.0)]);
    gateway.publish_data(&data).await;
    let alarm = wait_for("the alarm", Duration::from_secs(30), || async {
        api.get("/api/v1/alarms").await?.as_array()?.first().cloned()
    })
    .await;
    let unit_id = alarm["unit_id"].as_i64().expect("a unit alarm");

    let artifacts = workspace_root().join("target/browser-artifacts");
    let mut browser = tokio::process::Command::new("node")
        .arg(browser_dir.join("dashboard.mjs"))
        .env("BASE", &api.base)
        .env("LOGIN", "owner@acme.example")
        .env("PASSWORD", "li wei's password")
        .env("UNIT_ID", unit_id.to_string())
        .env("LIVE_POINT", "p1")
        .env("ARTIFACTS", &artifacts)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run node");
    let mut output = browser.stdout.take().expect("stdout");
    let reading = tokio::spawn(async move {
        let mut text = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut output, &mut text).await.expect("read the browser's output");
        text
    });
    // The chiller's supply temperature moves while the owner watches.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut value = 7.0;
    let status = loop {
        tokio::select! {
            status = browser.wait() => break status.expect("node"),
            () = tokio::time::sleep(Duration::from_millis(400)) => {
                assert!(tokio::time::Instant::now() < deadline, "the browser test did not finish in 2 minutes");
                value += 0.1;
                let data = gateway.data_at(chrono::Utc::now().timestamp_millis(), &[(0, 60.0), (1, value)]);
                gateway.publish_data(&data).await;
            }
        }
    };
    let output = reading.await.expect("output");
    println!("{output}");
    assert!(status.success() && output.contains("ok all"), "the browser test failed:\n{output}");
    // What the page did, the server recorded.
    let alarm = api.get(&format!("/api/v1/alarms/{}", alarm["id"])).await.expect("alarm");
    assert_eq!(alarm["acknowledged_by"], "Li Wei (owner@acme.example)");
    let events = alarm["events"].as_array().expect("events");
    assert!(events.iter().any(|e| e["kind"] == "acknowledged" && e["comment"] == "on my way"), "{alarm:#}");
}

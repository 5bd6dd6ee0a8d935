//! R5 for the API: schemathesis, driven by the OpenAPI document the server serves, sends every
//! operation valid and invalid requests (NUL bytes, huge numbers, absurd timestamps, wrong types)
//! and finds no server error: bad input is answered 4xx, never 5xx or a dropped connection.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use chillcloud_tests::harness::{Stack, bin_dir, run_to_completion, shared_temp_dir, wait_for, workspace_root};
use reqwest::Method;
use serde_json::json;

/// Test cases per operation and phase: enough for NUL bytes, boundaries and type confusion to
/// come up, while the whole run stays within about three minutes on two cores.
/// `CHILLCLOUD_FUZZ_EXAMPLES` asks for more.
const MAX_EXAMPLES: &str = "100";
/// The same for the second pass, as a customer's owner, whom most operations refuse.
const OWNER_EXAMPLES: &str = "25";

/// The seed schemathesis generates from, so a failure can be replayed; `CHILLCLOUD_FUZZ_SEED`
/// picks another.
const DEFAULT_SEED: &str = "20260601";

/// schemathesis, as pinned in `tests/schemathesis/requirements.txt`: `$CHILLCLOUD_SCHEMATHESIS`
/// (the `st` executable), or a venv under `target/` created and brought up to the pins on use.
async fn schemathesis() -> PathBuf {
    if let Some(st) = std::env::var_os("CHILLCLOUD_SCHEMATHESIS") {
        return st.into();
    }
    let venv = bin_dir().parent().expect("target dir").join("schemathesis-venv");
    let requirements = workspace_root().join("tests/schemathesis/requirements.txt");
    let installed = venv.join(".requirements.txt");
    if !venv.join("bin/python").exists() {
        run_to_completion(Path::new("python3"), &["-m", "venv", &venv.to_string_lossy()]).await;
    }
    let wanted = std::fs::read(&requirements).expect("read the requirements");
    if std::fs::read(&installed).ok().as_ref() != Some(&wanted) || !venv.join("bin/st").exists() {
        let args = ["install", "--quiet", "--disable-pip-version-check", "-r", &requirements.to_string_lossy()];
        run_to_completion(&venv.join("bin/pip"), &args).await;
        std::fs::write(&installed, &wanted).expect("record the installed requirements");
    }
    venv.join("bin/st")
}

#[tokio::test(flavor = "multi_thread")]
async fn r5_schemathesis_finds_no_server_error_in_the_api() {
    let st = schemathesis().await;
    // Two sites: `gw-stack` with a unit of four points (unit 1, points 1 to 4) and `demo-gw`, the
    // site the document's examples name; an alarm, a person, a rotation and a ticket (id 1 each,
    // as in the examples), so requests get past "not found" into the handlers' work.
    let stack = Stack::start_with_sites(&["demo-gw"], &[]).await;
    let api = stack.api();
    let mut gateway = stack.gateway(4).await;
    let now = chrono::Utc::now().timestamp_millis();
    let data = gateway.data_at(now - 1000, &[(0, 7.0), (1, 12.0), (2, 30.0), (3, 1.0)]);
    gateway.publish_data(&data).await;
    wait_for("unit 1 with its readings", Duration::from_secs(30), || async {
        let unit = api.get("/api/v1/units/1").await?;
        (unit["points"].as_array()?.iter().filter(|p| p["value"].is_number()).count() == 4).then_some(())
    })
    .await;
    let hot = json!({"title": "Supply too warm", "grade": 3, "kind": "condition", "when": "p0 > 50"});
    let (status, body) = api.send(Method::PUT, "/api/v1/units/1/rules/hot", hot).await;
    assert_eq!(status, 200, "{body}");
    let data = gateway.data_at(now, &[(0, 60.0)]);
    gateway.publish_data(&data).await;
    wait_for("alarm 1", Duration::from_secs(30), || async { api.get("/api/v1/alarms/1").await }).await;
    let rotation = json!({"name": "Service", "period_days": 7, "starts_at": "2026-01-05T08:00:00Z", "members": [1]});
    let seeds = [
        ("/api/v1/people", json!({"name": "Wang Wei", "phone": "+8613800138000", "language": "zh"})),
        ("/api/v1/rotations", rotation),
        ("/api/v1/tickets", json!({"gateway_id": "gw-stack", "unit_id": 1, "grade": 2, "title": "Warm supply"})),
    ];
    for (path, body) in seeds {
        let (status, answer) = api.send(Method::POST, path, body).await;
        assert_eq!((status, answer["id"].as_i64()), (200, Some(1)), "{path}: {answer}");
    }

    // The live stream never ends, so schemathesis leaves it out; it is checked here instead.
    let live = reqwest::Client::new()
        .get(format!("{}/api/v1/units/1/live", api.base))
        .bearer_auth(Stack::API_TOKEN)
        .send()
        .await
        .expect("live request");
    assert_eq!(live.status(), 200);
    assert_eq!(live.headers()["content-type"], "text/event-stream");
    drop(live);
    let (status, body) = api.get_raw("/api/v1/units/999999/live").await;
    assert_eq!(status, 404, "{body}");

    // A customer's owner with an API token: the second pass runs as a user scoped to one site.
    let owner_login = "owner@fuzz.example";
    stack.site_owner(owner_login, "Fuzz Owner", "the owner's password").await;
    let client = reqwest::Client::new();
    let signed_in = client
        .post(format!("{}/api/v1/session", api.base))
        .json(&json!({"login": owner_login, "password": "the owner's password"}))
        .send()
        .await
        .expect("sign in");
    assert_eq!(signed_in.status(), 200);
    let cookie =
        signed_in.headers()["set-cookie"].to_str().expect("cookie").split(';').next().expect("pair").to_owned();
    let session: serde_json::Value = signed_in.json().await.expect("session");
    let made = client
        .post(format!("{}/api/v1/tokens", api.base))
        .header("cookie", cookie)
        .header("x-csrf-token", session["csrf_token"].as_str().expect("csrf token"))
        .json(&json!({"name": "fuzz"}))
        .send()
        .await
        .expect("make a token");
    assert_eq!(made.status(), 200);
    let owner_token =
        made.json::<serde_json::Value>().await.expect("token")["token"].as_str().expect("secret").to_owned();

    let seed = std::env::var("CHILLCLOUD_FUZZ_SEED").unwrap_or_else(|_| DEFAULT_SEED.to_owned());
    let examples = std::env::var("CHILLCLOUD_FUZZ_EXAMPLES").unwrap_or_else(|_| MAX_EXAMPLES.to_owned());
    let document = format!("{}/api/v1/openapi.json", api.base);
    // The owner's pass goes first (the operator's may disable users), and leaves out revoking
    // tokens, which would revoke its own.
    let owner = fuzz(&st, &document, &owner_token, OWNER_EXAMPLES, &seed, &["/api/v1/tokens/{token_id}"]).await;
    let operator = fuzz(&st, &document, Stack::API_TOKEN, &examples, &seed, &[]).await;
    if !(operator && owner)
        && let Some(server) = &stack.server
    {
        // Printed here: the stack's directory, and the log with it, is gone by the time the
        // failing test drops the server.
        eprintln!("----- server log -----\n{}", server.log());
    }
    assert!(operator && owner, "schemathesis found server errors (seed {seed}): operator {operator}, owner {owner}");
    // The server is still up and still serves.
    assert!(api.get("/api/v1/units/1").await.is_some(), "the server stopped answering");
}

/// Runs schemathesis against `document` with `token`, checking for server errors only, and prints
/// its report; whether it found none.
async fn fuzz(st: &Path, document: &str, token: &str, examples: &str, seed: &str, excluded: &[&str]) -> bool {
    let authorization = format!("Authorization: Bearer {token}");
    let mut args = vec![
        "run",
        document,
        "--checks",
        "not_a_server_error",
        "--header",
        &authorization,
        "--workers",
        "1",
        "--max-examples",
        examples,
        "--seed",
        seed,
        "--request-timeout",
        "20",
        "--generation-database",
        "none",
        "--no-color",
        // The live stream never ends; it is checked above instead.
        "--exclude-path",
        "/api/v1/units/{unit_id}/live",
    ];
    for path in excluded {
        args.extend(["--exclude-path", path]);
    }
    // Its working directory takes whatever it writes (reports, caches).
    let scratch = shared_temp_dir();
    let started = std::time::Instant::now();
    let run = tokio::process::Command::new(st).args(&args).current_dir(scratch.path()).output();
    let output = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .expect("schemathesis finished within 10 minutes")
        .expect("run schemathesis");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let shown = args.join(" ").replace(token, "<token>");
    println!("st {shown}\n{text}\n(schemathesis took {:.0?})", started.elapsed());
    output.status.success()
}

//! P6: from the simulator's value crossing a threshold to the SMS provider's HTTP request, and
//! to the voice provider's (the call). Ours (gateway polling every second, server, rule without
//! delay, paging through Twilio's Messages and Calls APIs to a local fake, the site's policy
//! texting and calling at once) beside Prometheus and Alertmanager from Debian on Debian's default
//! intervals (15 s scrape and evaluation; Alertmanager's 30 s group wait), scraping the same
//! value from the simulator and sending to a webhook. One switch of the simulator per trial is
//! watched by both; each trial uses a new unit so neither side's grouping carries over.

use std::{
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Json, Router, extract::State, routing::post};
use chillcloud_tests::{
    harness::{Gateway, Process, Simulator, Stack, free_port, shared_temp_dir, simulated_chillers, wait_for},
    providers::FakeProvider,
};
use reqwest::Method;
use serde_json::{Value, json};

use super::{median, verdict};

const TRIALS: u8 = 5;
const TWILIO: (&str, &str) = ("AC0123456789abcdef0123456789abcdef", "bench-token");

/// Alerts received by the stand-in for Alertmanager's receiver: (unit, unix ms).
type Received = Arc<Mutex<Vec<(String, i64)>>>;

async fn receive(State(received): State<Received>, Json(body): Json<Value>) {
    let now = chrono::Utc::now().timestamp_millis();
    for alert in body["alerts"].as_array().into_iter().flatten() {
        if alert["status"] == "firing"
            && let Some(unit) = alert["labels"]["unit"].as_str()
        {
            received.lock().expect("lock").push((unit.to_owned(), now));
        }
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write config");
}

pub async fn p6() -> anyhow::Result<bool> {
    let dir = shared_temp_dir();
    // Ours.
    let twilio = FakeProvider::twilio(TWILIO.0, TWILIO.1).await;
    write(&dir.path().join("twilio.secret"), TWILIO.1);
    let paging = dir.path().join("paging.toml");
    write(
        &paging,
        &format!(
            "min_gap_s = 0\n[[providers]]\nkind = \"twilio\"\nendpoint = \"{url}\"\naccount_sid = \"{sid}\"\nauth_token_file = \"{secret}\"\nfrom = \"+15005550006\"\n[[providers]]\nkind = \"twilio_voice\"\nendpoint = \"{url}\"\naccount_sid = \"{sid}\"\nauth_token_file = \"{secret}\"\nfrom = \"+15005550006\"\n",
            url = twilio.url(),
            sid = TWILIO.0,
            secret = dir.path().join("twilio.secret").display()
        ),
    );
    let stack = Stack::start_with(&["--paging-config", &paging.to_string_lossy()]).await;
    let sim = Simulator::start(TRIALS, stack.dir.path()).await;
    let mut gateway = Gateway::new(&stack, "", &simulated_chillers(&sim, TRIALS, "poll_interval_ms = 1000", false));
    gateway.start();
    let api = stack.api();
    wait_for("every unit registered", Duration::from_secs(60), || async {
        api.get("/api/v1/units").await.filter(|u| u.as_array().is_some_and(|a| a.len() == usize::from(TRIALS)))
    })
    .await;
    let (status, person) =
        api.send(Method::POST, "/api/v1/people", json!({"name": "engineer", "phone": "+8613800000001"})).await;
    anyhow::ensure!(status == 200, "{person}");
    let site = format!("/api/v1/gateways/{}", stack.gateway_id);
    let (status, body) = api
        .send(Method::POST, &format!("{site}/contacts"), json!({"person_id": person["id"], "role": "service"}))
        .await;
    anyhow::ensure!(status == 200, "{body}");
    // Every grade texts and calls the on-call engineer at once.
    let now = json!({"levels": [{"after_s": 0, "notify": ["on_call"]},
                                {"after_s": 0, "notify": ["on_call"], "via": ["voice"]}], "repeat_s": null});
    let policy = json!({"grades": {"1": now, "2": now, "3": now, "4": now}});
    let (status, body) = api.send(Method::PUT, &format!("{site}/paging"), json!({"policy": policy})).await;
    anyhow::ensure!(status == 200, "{body}");
    // "Excluding the rule's own delay": the shipped 5 s on-delay is set to 0 on both sides.
    let (status, body) =
        api.send(Method::PUT, &format!("{site}/rules/sensor_out_of_range"), json!({"on_delay_s": 0})).await;
    anyhow::ensure!(status == 200, "{body}");

    // Theirs: Debian's defaults, one alert per unit so each trial is a new group.
    let received: Received = Arc::default();
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let receiver_address: SocketAddr = receiver.local_addr()?;
    let app = Router::new().route("/alert", post(receive)).with_state(received.clone());
    tokio::spawn(async move { axum::serve(receiver, app).await });
    let (prometheus_port, alertmanager_port, cluster_port) = (free_port(), free_port(), free_port());
    let sim_address = sim.control_url.trim_start_matches("http://").to_owned();
    let rules: String = (1..=TRIALS)
        .map(|unit| {
            format!("  - alert: ChillerSensorFaultUnit{unit}\n    expr: chiller_evap_leaving_celsius{{unit=\"{unit}\"}} < -20\n")
        })
        .collect();
    write(&dir.path().join("rules.yml"), &format!("groups:\n- name: chillers\n  rules:\n{rules}"));
    write(
        &dir.path().join("prometheus.yml"),
        &format!(
            "global:\n  scrape_interval: 15s\n  evaluation_interval: 15s\nalerting:\n  alertmanagers:\n  - static_configs:\n    - targets: ['127.0.0.1:{alertmanager_port}']\nrule_files:\n- {rules}\nscrape_configs:\n- job_name: chillers\n  static_configs:\n  - targets: ['{sim_address}']\n",
            rules = dir.path().join("rules.yml").display()
        ),
    );
    write(
        &dir.path().join("alertmanager.yml"),
        &format!(
            "route:\n  group_by: ['alertname', 'cluster', 'service']\n  group_wait: 30s\n  group_interval: 5m\n  repeat_interval: 3h\n  receiver: sms\nreceivers:\n- name: sms\n  webhook_configs:\n  - url: 'http://{receiver_address}/alert'\n"
        ),
    );
    let config = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let _prometheus = Process::spawn(
        "prometheus",
        Path::new("/usr/bin/prometheus"),
        &[
            &format!("--config.file={}", config("prometheus.yml")),
            &format!("--storage.tsdb.path={}", config("prometheus-data")),
            &format!("--web.listen-address=127.0.0.1:{prometheus_port}"),
        ],
        dir.path(),
    );
    let _alertmanager = Process::spawn(
        "alertmanager",
        Path::new("/usr/bin/prometheus-alertmanager"),
        &[
            &format!("--config.file={}", config("alertmanager.yml")),
            &format!("--storage.path={}", config("alertmanager-data")),
            &format!("--web.listen-address=127.0.0.1:{alertmanager_port}"),
            &format!("--cluster.listen-address=127.0.0.1:{cluster_port}"),
        ],
        dir.path(),
    );
    let client = reqwest::Client::new();
    wait_for("Prometheus to scrape the simulator", Duration::from_secs(60), || async {
        let url = format!("http://127.0.0.1:{prometheus_port}/api/v1/query?query=chiller_evap_leaving_celsius");
        let body: Value = client.get(url).send().await.ok()?.json().await.ok()?;
        (body["data"]["result"].as_array()?.len() == usize::from(TRIALS)).then_some(())
    })
    .await;
    wait_for("Alertmanager", Duration::from_secs(30), || async {
        client
            .get(format!("http://127.0.0.1:{alertmanager_port}/-/ready"))
            .send()
            .await
            .ok()?
            .status()
            .is_success()
            .then_some(())
    })
    .await;

    let (mut ours, mut ours_voice, mut theirs) = (Vec::new(), Vec::new(), Vec::new());
    for unit in 1..=TRIALS {
        // Start each trial at a random phase of their scrape and our poll.
        tokio::time::sleep(Duration::from_millis(rand::random_range(0..15_000))).await;
        let crossed = chrono::Utc::now().timestamp_millis();
        sim.control(unit, "scenario", json!({"scenario": "sensor_open"})).await;
        let device = format!("chiller-{unit}");
        let sms = wait_for("our SMS", Duration::from_secs(60), || async {
            twilio.delivered().into_iter().find(|d| {
                d.text.as_deref().is_some_and(|t| t.contains(&format!("{device}@")) && !t.contains("<Gather"))
            })
        })
        .await;
        let call = wait_for("our call", Duration::from_secs(60), || async {
            twilio
                .delivered()
                .into_iter()
                .find(|d| d.text.as_deref().is_some_and(|t| t.contains(&format!("{device}@")) && t.contains("<Gather")))
        })
        .await;
        let alert = wait_for("Alertmanager's notification", Duration::from_secs(180), || async {
            received.lock().expect("lock").iter().find(|(u, _)| *u == unit.to_string()).map(|(_, at)| *at)
        })
        .await;
        let (ours_ms, theirs_ms) = ((sms.received_unix_ms - crossed) as f64, (alert - crossed) as f64);
        let voice_ms = (call.received_unix_ms - crossed) as f64;
        println!(
            "P6 trial {unit}: ours {ours_ms:.0} ms (SMS), {voice_ms:.0} ms (call), Prometheus + Alertmanager {theirs_ms:.0} ms"
        );
        ours.push(ours_ms);
        ours_voice.push(voice_ms);
        theirs.push(theirs_ms);
    }
    twilio.assert_no_rejections();
    let worst = ours.iter().chain(&ours_voice).copied().fold(0.0, f64::max);
    let (ours_median, voice_median, theirs_median) = (median(ours), median(ours_voice), median(theirs));
    let (ratio, voice_ratio) = (ours_median / theirs_median, voice_median / theirs_median);
    println!("P6 {TRIALS} trials, value crossing to the provider's HTTP request, gateway polling every 1 s");
    println!(
        "P6 ours: SMS median {ours_median:.0} ms, call median {voice_median:.0} ms, worst {worst:.0} ms (target: under 5,000 ms)"
    );
    println!(
        "P6 Prometheus 2.42 + Alertmanager (Debian defaults: 15 s scrape and evaluation, 30 s group wait): median {theirs_median:.0} ms"
    );
    let pass = ratio <= 0.1 && voice_ratio <= 0.1 && worst < 5000.0;
    println!("P6 voice ratio={voice_ratio:.3} target<=0.1");
    println!("P6 ratio={ratio:.3} target<=0.1 {}", verdict(pass));
    drop(gateway);
    Ok(pass)
}

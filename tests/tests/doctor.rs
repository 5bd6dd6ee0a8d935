//! The remote doctor against a simulated month with a known truth.
//!
//! The simulator's chiller runs a month in-process at one-minute steps (its energy model gives
//! the compressor's power); a scripted gateway publishes its CH530 points, with their real times,
//! through the broker to a real server, whose rule engine derives the approaches and ΔT as it
//! does live; the report is drafted through the API from what was stored. Each finding's energy
//! is compared with the simulator's ground truth: the same month run again with the same noise
//! and without the fault (or at the suggested setpoint).

use std::time::Duration;

use std::process::Stdio;

use chillcloud_tests::{
    harness::{FakeGateway, GATEWAY_READINGS, Stack, browser_dir, wait_for, workspace_root},
    sim::{
        Chiller,
        chiller::{NOISE_SPAN_K, RATED_COOLING_KW, RATED_POWER_KW},
    },
};
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{Value, json};

const STEP_S: i64 = 60;
const DAYS: i64 = 30;
/// Steps per data message: ten minutes of readings.
const STEPS_PER_MESSAGE: usize = 10;

/// The month simulated: the data messages' readings `(alias, time_ms, value)` and the energy the
/// compressor used, kWh.
struct Month {
    messages: Vec<Vec<(u32, i64, f64)>>,
    energy_kwh: f64,
}

/// Runs a chiller (set up by `configure`) for `DAYS` from `start_ms` at one-minute steps, with
/// the load following the UTC time of day and the same noise whatever `configure` does.
fn simulate(start_ms: i64, configure: impl Fn(&mut Chiller)) -> Month {
    let hour_of = |ms: i64| (ms / 1000).rem_euclid(86_400) as f64 / 3600.0;
    let mut chiller = Chiller::new(1, hour_of(start_ms));
    configure(&mut chiller);
    // Settle into what `configure` set before the month starts.
    for _ in 0..120 {
        chiller.step(STEP_S as f64, hour_of(start_ms), 0.0);
    }
    chiller.energy_kwh = 0.0;
    let mut rng = rand::rngs::StdRng::seed_from_u64(19);
    let mut messages = Vec::new();
    let mut readings = Vec::new();
    for step in 0..DAYS * 86_400 / STEP_S {
        let at = start_ms + step * STEP_S * 1000;
        chiller.step(STEP_S as f64, hour_of(at), (rng.random::<f64>() - 0.5) * NOISE_SPAN_K);
        readings.extend(chiller.profile_values().iter().enumerate().map(|(alias, (_, v))| (alias as u32, at, *v)));
        if (step as usize + 1).is_multiple_of(STEPS_PER_MESSAGE) {
            messages.push(std::mem::take(&mut readings));
        }
    }
    if !readings.is_empty() {
        messages.push(readings);
    }
    Month { messages, energy_kwh: chiller.energy_kwh }
}

/// The gateway's birth: CH530 units `chiller-1` to `chiller-<units>`, with the points the
/// simulator's map has (unit `i`'s aliases follow unit `i - 1`'s).
fn birth(time_ms: i64, units: usize) -> chillcloud_proto::Birth {
    let names: Vec<&str> = Chiller::new(1, 12.0).profile_values().iter().map(|(n, _)| *n).collect();
    chillcloud_proto::Birth {
        protocol_version: chillcloud_proto::PROTOCOL_VERSION,
        session: 1,
        software_version: "test".into(),
        time_ms,
        config_version: 0,
        devices: (0..units)
            .map(|unit| chillcloud_proto::Device {
                id: format!("chiller-{}", unit + 1),
                profile: "trane-ch530".into(),
                family: "trane-ch530".into(),
                model: "RTHD".into(),
                points: names
                    .iter()
                    .enumerate()
                    .map(|(alias, name)| chillcloud_proto::PointInfo {
                        alias: (unit * names.len() + alias) as u32,
                        name: (*name).into(),
                        decimals: 1,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
    }
}

/// A month ending at the last whole hour, starting `DAYS` before.
fn month_start_ms() -> i64 {
    let now_s = chrono::Utc::now().timestamp();
    (now_s / 3600 * 3600 - DAYS * 86_400) * 1000
}

/// Publishes `months` as the stack's gateway (month `i` is unit `chiller-<i + 1>`'s), waits until
/// every reading is stored and gives the units their ratings. Returns the units' ids in order.
async fn publish(stack: &Stack, start_ms: i64, months: &[&Month]) -> Vec<i64> {
    let port = stack.broker.address().port();
    let mut gateway =
        FakeGateway::connect_with_birth(port, stack.gateway_id, &stack.password, birth(start_ms, months.len())).await;
    let points = Chiller::new(1, 12.0).profile_values().len() as u32;
    for (unit, month) in months.iter().enumerate() {
        for readings in &month.messages {
            let readings: Vec<(u32, i64, f64)> =
                readings.iter().map(|&(alias, at, value)| (unit as u32 * points + alias, at, value)).collect();
            let data = gateway.data_series(&readings);
            gateway.publish_data(&data).await;
        }
    }
    gateway.wait_acked(Duration::from_secs(180)).await;
    let expected: i64 = months.iter().flat_map(|m| &m.messages).map(|m| m.len() as i64).sum();
    let pool = stack.postgres.pool().await;
    wait_for("the months' readings to be stored", Duration::from_secs(300), || async {
        let stored: i64 = sqlx::query_scalar(GATEWAY_READINGS).fetch_one(&pool).await.ok()?;
        (stored == expected).then_some(())
    })
    .await;
    let api = stack.api();
    let units = api.get("/api/v1/units").await.expect("units");
    let units: Vec<i64> = units.as_array().expect("units").iter().map(|u| u["id"].as_i64().expect("unit id")).collect();
    let rating = json!({"rated_cooling_kw": RATED_COOLING_KW, "rated_power_kw": RATED_POWER_KW});
    for unit in &units {
        let (status, body) = api.send(Method::PUT, &format!("/api/v1/units/{unit}/rating"), rating.clone()).await;
        assert_eq!(status, 204, "{body}");
    }
    units
}

/// Drafts `unit`'s report of the month from `start_ms`.
async fn draft(stack: &Stack, unit: i64, start_ms: i64) -> Value {
    let period = json!({
        "from": chrono::DateTime::from_timestamp_millis(start_ms).expect("start").to_rfc3339(),
        "to": chrono::DateTime::from_timestamp_millis(start_ms + DAYS * 86_400_000).expect("end").to_rfc3339(),
    });
    let (status, report) = stack.api().send(Method::POST, &format!("/api/v1/units/{unit}/reports"), period).await;
    assert_eq!(status, 200, "{report}");
    report
}

/// Publishes one unit's month and drafts its report: the unit's id and the report.
async fn report_of(stack: &Stack, start_ms: i64, month: &Month) -> (i64, Value) {
    let unit = publish(stack, start_ms, &[month]).await[0];
    (unit, draft(stack, unit, start_ms).await)
}

fn finding_keys(report: &Value) -> Vec<&str> {
    report["content"]["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| f["key"].as_str().expect("key"))
        .collect()
}

fn finding<'a>(report: &'a Value, key: &str) -> &'a Value {
    report["content"]["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["key"] == key)
        .unwrap_or_else(|| panic!("no {key} finding in {:#}", report["content"]["findings"]))
}

/// How far `estimate` is from `truth`, as a fraction of the truth.
fn error(estimate: f64, truth: f64) -> f64 {
    (estimate - truth).abs() / truth
}

#[tokio::test]
async fn doctor_a_well_run_unit_has_no_findings() {
    let stack = Stack::start().await;
    let start_ms = month_start_ms();
    let month = simulate(start_ms, |_| {});
    let (_, report) = report_of(&stack, start_ms, &month).await;
    let content = &report["content"];
    assert_eq!(finding_keys(&report), Vec::<&str>::new(), "{:#}", content["findings"]);
    assert_eq!(report["status"], "draft");
    // The figures are the month's: it ran throughout, held its setpoint, and the energy
    // estimated from %RLA is the simulator's within a few percent.
    let kpis = &content["kpis"];
    assert_eq!(kpis["hours"], 720.0);
    assert!(kpis["run_hours"].as_f64().expect("run hours") > 715.0, "{kpis}");
    assert_eq!(kpis["starts"], 0.0, "{kpis}");
    assert!(kpis["setpoint_compliance"].as_f64().expect("compliance") > 0.95, "{kpis}");
    assert_eq!((kpis["energy_estimated"].as_bool(), kpis["cooling_estimated"].as_bool()), (Some(true), Some(true)));
    let energy = kpis["energy_kwh"].as_f64().expect("energy");
    assert!(error(energy, month.energy_kwh) < 0.03, "estimated {energy} kWh, simulated {} kWh", month.energy_kwh);
    let headline = content["headline"].as_str().expect("headline");
    assert!(headline.contains("no findings") && headline.contains("of 720 h"), "{headline}");
    assert!(content["headline_zh"].as_str().expect("headline_zh").contains("未发现问题"));

    // The schedule: the site in Shanghai with weekly and monthly reports gets the last whole
    // calendar week (Monday 00:00 +08:00) and month drafted once, whoever looks again.
    let api = stack.api();
    let path = format!("/api/v1/gateways/{}/reporting", stack.gateway_id);
    let (status, body) = api.send(Method::PUT, &path, json!({"time_zone": "Mars/Olympus", "periods": ["month"]})).await;
    assert_eq!(status, 400, "an unknown time zone: {body}");
    let (status, body) =
        api.send(Method::PUT, &path, json!({"time_zone": "Asia/Shanghai", "periods": ["week", "month"]})).await;
    assert_eq!(status, 204, "{body}");
    let pool = stack.postgres.pool().await;
    let rules = chillcloud_server::doctor::DoctorRules::shipped();
    assert_eq!(chillcloud_server::doctor::schedule::draft_due(&pool, rules).await.expect("schedule"), 2);
    assert_eq!(chillcloud_server::doctor::schedule::draft_due(&pool, rules).await.expect("schedule"), 0, "once");
    let drafts = api.get("/api/v1/reports?status=draft").await.expect("the drafts");
    let shanghai = chrono::FixedOffset::east_opt(8 * 3600).expect("offset");
    let mut periods: Vec<(chrono::DateTime<chrono::FixedOffset>, chrono::DateTime<chrono::FixedOffset>)> = drafts
        .as_array()
        .expect("drafts")
        .iter()
        .filter(|d| d["id"] != report["id"])
        .map(|d| {
            let at = |key: &str| {
                chrono::DateTime::parse_from_rfc3339(d[key].as_str().expect("time"))
                    .expect("rfc3339")
                    .with_timezone(&shanghai)
            };
            (at("period_start"), at("period_end"))
        })
        .collect();
    periods.sort();
    assert_eq!(periods.len(), 2, "{drafts:#}");
    for (from, to) in &periods {
        assert_eq!((from.time(), to.time()), (chrono::NaiveTime::MIN, chrono::NaiveTime::MIN), "{from} {to}");
    }
    use chrono::Datelike as _;
    let (month, week) = if periods[0].1 - periods[0].0 > chrono::Duration::days(7) {
        (periods[0], periods[1])
    } else {
        (periods[1], periods[0])
    };
    assert_eq!((week.0.weekday(), week.1 - week.0), (chrono::Weekday::Mon, chrono::Duration::days(7)));
    assert_eq!((month.0.day(), month.1.day()), (1, 1));
}

#[tokio::test]
async fn doctor_condenser_fouling_over_30_days_is_found_with_its_cost() {
    let stack = Stack::start_with_sites(&["gw-doctor-other"], &[]).await;
    let start_ms = month_start_ms();
    let fouled = simulate(start_ms, |c| c.wear.condenser_fouling_k_per_day = 0.1);
    let clean = simulate(start_ms, |_| {});
    let truth_kwh = fouled.energy_kwh - clean.energy_kwh;
    // Three clean units of the same model beside it, whose reports of the month come first.
    let units = publish(&stack, start_ms, &[&fouled, &clean, &clean, &clean]).await;
    for peer in &units[1..] {
        assert_eq!(finding_keys(&draft(&stack, *peer, start_ms).await), Vec::<&str>::new());
    }
    let (unit, report) = (units[0], draft(&stack, units[0], start_ms).await);
    let fleet = &report["content"]["fleet"];
    assert_eq!(fleet["units"], 3, "{fleet}");
    let (own, theirs) = (
        report["content"]["kpis"]["cond_approach_k"].as_f64().expect("own approach"),
        fleet["cond_approach_k"].as_f64().expect("the fleet's median"),
    );
    assert!(own - theirs > 1.0 && theirs < 3.0, "fouled {own} K against the fleet's {theirs} K");
    assert_eq!(finding_keys(&report), ["condenser_fouling"], "{:#}", report["content"]["findings"]);
    let fouling = finding(&report, "condenser_fouling");
    let rise = fouling["figures"]["rise_k"].as_f64().expect("rise");
    assert!((2.5..3.5).contains(&rise), "0.1 K a day for 30 days, found {rise} K");
    let estimate = fouling["period_kwh"].as_f64().expect("the finding's energy");
    println!("condenser fouling: estimated {estimate:.0} kWh, simulated {truth_kwh:.0} kWh");
    assert!(error(estimate, truth_kwh) <= 0.25, "estimated {estimate} kWh against {truth_kwh} kWh simulated");
    assert_eq!(fouling["estimated"], true, "no power meter: estimated from %RLA");
    let yearly_cost = fouling["yearly_cost"].as_f64().expect("yearly cost");
    let yearly_kwh = fouling["yearly_kwh"].as_f64().expect("yearly kWh");
    assert!((yearly_cost - yearly_kwh * 0.8).abs() < 1.0, "the default tariff prices it: {fouling}");
    assert!(fouling["evidence"]["daily"].as_array().expect("chart").len() >= 29, "a point a day");
    assert!(fouling["confidence"].as_f64().expect("confidence") > 0.9);
    assert!(fouling["reference"].as_str().expect("reference").contains("1/lift"));

    // The site's summary of the month: the four units' reports, summed.
    let from = chrono::DateTime::from_timestamp_millis(start_ms).expect("start");
    let to = from + chrono::Duration::days(DAYS);
    let site_path = format!(
        "/api/v1/gateways/{}/reports?from={}&to={}",
        stack.gateway_id,
        from.format("%Y-%m-%dT%H:%M:%SZ"),
        to.format("%Y-%m-%dT%H:%M:%SZ")
    );
    let site = stack.api().get(&site_path).await.expect("the site's summary");
    assert_eq!(site["units"].as_array().expect("units").len(), 4, "{site:#}");
    assert_eq!(site["findings"], 1, "{site:#}");
    assert_eq!(site["yearly_cost"], fouling["yearly_cost"], "{site:#}");
    assert!(site["run_hours"].as_f64().expect("hours") > 4.0 * 715.0, "{site:#}");
    assert!(site["headline_zh"].as_str().expect("headline_zh").contains("4 台机组"), "{site:#}");

    // The PDF, in Chinese: A4 pages with the chart, the fleet, the headline's figures in its text, and the
    // same bytes when made again from the same report.
    let pdf = report_pdf(&stack, report["id"].as_i64().expect("id"), "zh").await;
    assert_eq!(pdf, report_pdf(&stack, report["id"].as_i64().expect("id"), "zh").await, "reproducible");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("report.pdf");
    std::fs::write(&file, &pdf).expect("write the PDF");
    let text = run("pdftotext", &["-layout", &file.to_string_lossy(), "-"]);
    let headline_zh = report["content"]["headline_zh"].as_str().expect("headline_zh");
    let run_hours = format!("{:.0}", report["content"]["kpis"]["run_hours"].as_f64().expect("run hours"));
    for expected in ["机组运行报告", "冷凝器趋近温度持续上升", "运行", run_hours.as_str(), "未经工程师审核"]
    {
        assert!(text.contains(expected), "the PDF's text lacks {expected:?} ({headline_zh}):\n{text}");
    }
    let cost = format!("{:.0}", fouling["yearly_cost"].as_f64().expect("cost"));
    assert!(text.contains(&cost), "the finding's yearly cost {cost} is in the PDF:\n{text}");
    run("pdftoppm", &["-png", "-r", "50", &file.to_string_lossy(), &dir.path().join("page").to_string_lossy()]);
    let pages = std::fs::read_dir(dir.path()).expect("pages").filter(|e| {
        e.as_ref().is_ok_and(|e| {
            e.file_name().to_string_lossy().starts_with("page") && e.file_name().to_string_lossy().ends_with(".png")
        })
    });
    assert!(pages.count() >= 2, "the report fills more than one A4 page");

    // Drafts are the service's: neither the site's owner nor another customer sees one.
    stack.site_owner("owner@doctor.example", "Owner", "owner password 1").await;
    stack.owner_of("gw-doctor-other", "other@doctor.example", "Other", "other password 1").await;
    let report_path = format!("/api/v1/reports/{}", report["id"]);
    for login in ["owner@doctor.example", "other@doctor.example"] {
        let password = if login.starts_with("owner") { "owner password 1" } else { "other password 1" };
        let get = signed_in(&stack, login, password).await;
        assert_eq!(get(&report_path).await.0, 404, "{login} must not see a draft");
        let site = get(&site_path).await;
        if login.starts_with("owner") {
            assert_eq!(site.1["units"], json!([]), "the owner's site summary holds no draft");
        } else {
            assert_eq!(site.0, 404, "another customer's site");
        }
        let listed = get(&format!("/api/v1/units/{unit}/reports")).await;
        if login.starts_with("owner") {
            assert_eq!(listed, (200, json!([])), "the owner sees no draft listed");
        } else {
            assert_eq!(listed.0, 404, "another customer's unit");
        }
    }
}

#[tokio::test]
async fn doctor_setpoint_reset_opportunity() {
    let stack = Stack::start().await;
    let start_ms = month_start_ms();
    let cold = |c: &mut Chiller| {
        c.setpoint = 5.0;
        c.load_scale = 0.5;
    };
    let held_cold = simulate(start_ms, cold);
    let (_, report) = report_of(&stack, start_ms, &held_cold).await;
    // Half the load curve also leaves the unit mostly below 30 % load: oversized, and said so.
    assert_eq!(finding_keys(&report), ["setpoint_reset", "oversized"], "{:#}", report["content"]["findings"]);
    let reset = finding(&report, "setpoint_reset");
    let suggested = reset["figures"]["suggested_setpoint_c"].as_f64().expect("suggested setpoint");
    assert_eq!(suggested, 7.0, "{reset}");
    let at_suggested = simulate(start_ms, |c| {
        cold(c);
        c.setpoint = suggested;
    });
    let truth_kwh = held_cold.energy_kwh - at_suggested.energy_kwh;
    let estimate = reset["period_kwh"].as_f64().expect("the finding's energy");
    println!("setpoint reset: estimated {estimate:.0} kWh saved, simulated {truth_kwh:.0} kWh");
    assert!(error(estimate, truth_kwh) <= 0.25, "estimated {estimate} kWh against {truth_kwh} kWh simulated");

    // The engineer's review: the oversizing is known to the owner and dropped, the advice
    // reworded, a note added; the headline counts what is kept.
    let api = stack.api();
    let path = format!("/api/v1/reports/{}", report["id"]);
    let review = json!({
        "note": "Raise it in two steps this week; call us if the process complains.",
        "drop": ["oversized"],
        "edits": {"setpoint_reset": {"advice_zh": "本周分两步提高设定温度。"}},
    });
    let (status, reviewed) = api.send(Method::PATCH, &path, review).await;
    assert_eq!(status, 200, "{reviewed}");
    assert_eq!(finding_keys(&reviewed), ["setpoint_reset"]);
    assert_eq!(finding(&reviewed, "setpoint_reset")["advice_zh"], "本周分两步提高设定温度。");
    assert!(reviewed["content"]["headline"].as_str().expect("headline").contains("1 finding worth"), "{reviewed}");
    assert_eq!(reviewed["note"], "Raise it in two steps this week; call us if the process complains.");
    let (status, body) = api.send(Method::PATCH, &path, json!({"drop": ["short_cycling"]})).await;
    assert_eq!(status, 400, "a finding the report lacks: {body}");
    // A report is signed by a person: the operator's token cannot.
    let (status, body) = api.send(Method::POST, &format!("{path}/sign"), json!(null)).await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn doctor_review_sign_and_deliver_on_a_phone() {
    let browser_dir = browser_dir();
    // Paging's e-mail to a local SMTP sink; SMS to the console (no provider configured).
    let smtp = chillcloud_tests::smtp::SmtpSink::start().await;
    let paging = tempfile::NamedTempFile::new().expect("paging config");
    let email = format!(
        "min_gap_s = 0\n[email]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\nfrom = \"Chillcloud <reports@example.com>\"\n",
        smtp.port
    );
    std::fs::write(paging.path(), email).expect("write the paging config");
    let stack = Stack::start_with(&["--paging-config", &paging.path().to_string_lossy()]).await;
    let start_ms = month_start_ms();
    let month = simulate(start_ms, |c| {
        c.setpoint = 5.0;
        c.load_scale = 0.5;
    });
    let (_, report) = report_of(&stack, start_ms, &month).await;
    assert_eq!(finding_keys(&report), ["setpoint_reset", "oversized"]);
    let api = stack.api();
    // The people: a service engineer who signs; the site's owner, who reads Chinese, as a user
    // and as the site's owner contact whom the link reaches.
    let (status, service) =
        api.send(Method::POST, "/api/v1/organisations", json!({"name": "Service", "kind": "service"})).await;
    assert_eq!(status, 200, "{service}");
    let engineer = json!({"login": "wang@service.example", "name": "Wang Gong", "role": "engineer",
        "organisation_id": service["id"], "language": "en"});
    stack.user(engineer, "the engineer's password").await;
    let (status, customer) =
        api.send(Method::POST, "/api/v1/organisations", json!({"name": "Plant", "kind": "customer"})).await;
    assert_eq!(status, 200, "{customer}");
    let path = format!("/api/v1/gateways/{}/organisation", stack.gateway_id);
    let (status, body) = api.send(Method::PUT, &path, json!({"organisation_id": customer["id"]})).await;
    assert_eq!(status, 204, "{body}");
    let owner = json!({"login": "li@plant.example", "name": "Li Na", "role": "owner",
        "organisation_id": customer["id"], "language": "zh"});
    stack.user(owner, "li na's password").await;
    let (status, person) = api
        .send(
            Method::POST,
            "/api/v1/people",
            json!({"name": "Li Na", "phone": "+8613800138000", "email": "li@plant.example", "language": "zh"}),
        )
        .await;
    assert_eq!(status, 200, "{person}");
    let contact = json!({"person_id": person["id"], "role": "owner"});
    let (status, body) =
        api.send(Method::POST, &format!("/api/v1/gateways/{}/contacts", stack.gateway_id), contact).await;
    assert!(status == 200 || status == 204, "{status} {body}");

    let artifacts = workspace_root().join("target/browser-artifacts");
    let link_file = stack.dir.path().join("owner-link.txt");
    let (note, advice) = ("We will raise it with you on Tuesday.", "Raise it 0.5 K a day, watching the process.");
    let browser = tokio::process::Command::new("node")
        .arg(browser_dir.join("doctor.mjs"))
        .env("BASE", &api.base)
        .env("ENGINEER_LOGIN", "wang@service.example")
        .env("ENGINEER_PASSWORD", "the engineer's password")
        .env("OWNER_LOGIN", "li@plant.example")
        .env("OWNER_PASSWORD", "li na's password")
        .env("REPORT_ID", report["id"].to_string())
        .env("DROP", "oversized")
        .env("KEEP", "setpoint_reset")
        .env("NOTE", note)
        .env("ADVICE", advice)
        .env("OWNER_LINK_FILE", &link_file)
        .env("ARTIFACTS", &artifacts)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run node");
    // Once signed, the owner's SMS is in the outbox with the report's link: hand it to the phone.
    let pool = stack.postgres.pool().await;
    let (address, body, link): (String, String, String) =
        wait_for("the owner's SMS about the signed report", Duration::from_secs(120), || async {
            sqlx::query_as(
                "select address, body, params ->> 'link' from outbox where params ->> 'kind' = 'report' and channel = 'sms'",
            )
            .fetch_optional(&pool)
            .await
            .ok()?
        })
        .await;
    assert_eq!(address, "+8613800138000");
    assert!(body.contains("运行报告") && body.contains(&link), "{body}");
    assert_eq!(link, format!("{}/#/report/{}", api.base, report["id"]), "the link opens the report's page");
    std::fs::write(&link_file, &link).expect("hand the link to the phone");
    let output = tokio::time::timeout(Duration::from_secs(180), browser.wait_with_output())
        .await
        .expect("the browser test finishes in 3 minutes")
        .expect("node");
    let text = String::from_utf8_lossy(&output.stdout);
    println!("{text}");
    assert!(output.status.success() && text.contains("ok all"), "the browser test failed:\n{text}");

    // What the engineer did is what was stored, and the PDF the owner downloads is Chinese.
    let signed = api.get(&format!("/api/v1/reports/{}", report["id"])).await.expect("the report");
    assert_eq!(signed["status"], "signed");
    assert_eq!(signed["signer"], "Wang Gong");
    assert_eq!(signed["note"], note);
    assert_eq!(finding_keys(&signed), ["setpoint_reset"]);
    assert_eq!(finding(&signed, "setpoint_reset")["advice"], advice);
    let (status, body) =
        api.send(Method::PATCH, &format!("/api/v1/reports/{}", report["id"]), json!({"note": "x"})).await;
    assert_eq!(status, 409, "a signed report no longer changes: {body}");
    let pdf = report_pdf(&stack, report["id"].as_i64().expect("id"), "zh").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("report.pdf");
    std::fs::write(&file, &pdf).expect("write the PDF");
    let text = run("pdftotext", &["-layout", &file.to_string_lossy(), "-"]);
    for expected in ["审核签发：Wang Gong", note, "冷冻水设定温度可以提高", "7.0 °C"] {
        assert!(text.contains(expected), "the signed PDF lacks {expected:?}:\n{text}");
    }
    assert!(!text.contains("长期低负荷运行"), "the dropped finding is not in the PDF");

    // The owner's e-mail has the link and the PDF in Chinese.
    let mails = smtp.wait_for(1, Duration::from_secs(60)).await;
    assert_eq!(mails[0].to, ["li@plant.example"]);
    let mail = &mails[0].data;
    assert!(mail.contains("Content-Type: application/pdf"), "a PDF attached:\n{}", &mail[..mail.len().min(2000)]);
    assert!(mail.contains(&format!("report-{}.pdf", report["id"])), "named after the report");

    // The owner replies with a question: it reaches the engineers as a service ticket.
    let client = reqwest::Client::new();
    let session = client
        .post(format!("{}/api/v1/session", api.base))
        .json(&json!({"login": "li@plant.example", "password": "li na's password"}))
        .send()
        .await
        .expect("sign in");
    let cookie = session
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("chillcloud_session="))
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_owned();
    let csrf = session.json::<Value>().await.expect("session")["csrf_token"].as_str().expect("csrf").to_owned();
    let question = "这个月能先提高到 6 °C 吗？";
    let asked = client
        .post(format!("{}/api/v1/reports/{}/questions", api.base, report["id"]))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .json(&json!({"text": question}))
        .send()
        .await
        .expect("ask");
    assert_eq!(asked.status(), 200);
    let ticket_id = asked.json::<Value>().await.expect("asked")["ticket_id"].as_i64().expect("ticket id");
    let ticket = api.get(&format!("/api/v1/tickets/{ticket_id}")).await.expect("the ticket");
    assert_eq!(ticket["ticket"]["grade"], 4, "{ticket}");
    let notes: Vec<&str> =
        ticket["events"].as_array().expect("events").iter().filter_map(|e| e["comment"].as_str()).collect();
    assert!(notes.contains(&question), "the question is the ticket's note: {ticket}");
}

/// The report's PDF in `lang`, as the operator fetches it.
async fn report_pdf(stack: &Stack, id: i64, lang: &str) -> Vec<u8> {
    let response = reqwest::Client::new()
        .get(format!("http://{}/api/v1/reports/{id}/pdf?lang={lang}", stack.http))
        .bearer_auth(Stack::API_TOKEN)
        .send()
        .await
        .expect("PDF request");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/pdf");
    response.bytes().await.expect("PDF body").to_vec()
}

/// Runs a command to completion; its standard output.
fn run(program: &str, args: &[&str]) -> String {
    let output = std::process::Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(output.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Signs in as `login`; returns a GET that carries the session cookie, giving the status and body.
async fn signed_in(stack: &Stack, login: &str, password: &str) -> impl AsyncFn(&str) -> (u16, Value) {
    let client = reqwest::Client::new();
    let base = format!("http://{}", stack.http);
    let response = client
        .post(format!("{base}/api/v1/session"))
        .json(&json!({"login": login, "password": password}))
        .send()
        .await
        .expect("sign in");
    assert!(response.status().is_success(), "sign-in of {login}: {}", response.status());
    let cookie = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("chillcloud_session="))
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_owned();
    async move |path: &str| {
        let response = client.get(format!("{base}{path}")).header("cookie", &cookie).send().await.expect("request");
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    }
}

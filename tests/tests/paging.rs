//! Paging end to end: alarms raised through the real broker and server page people through the
//! providers' real HTTP APIs, answered by local fakes that check requests as each provider
//! does (signatures, parameters). R6 of docs/benchmarks.md, escalation, and acknowledgement by SMS
//! reply and by signed link.

use std::{collections::HashMap, path::Path, time::Duration};

use chillcloud_tests::{
    harness::{Api, FakeGateway, Stack, shared_temp_dir, wait_for},
    providers::{FakeProvider, Mode, Options, TwilioWebhook},
};
use reqwest::Method;
use serde_json::{Value, json};

const ALIYUN_KEY: (&str, &str) = ("LTAItestkey", "aliyun-test-secret");
const TWILIO: (&str, &str) = ("AC0123456789abcdef0123456789abcdef", "twilio-test-token");
const TWILIO_FROM: &str = "+15005550006";

fn aliyun(dir: &Path, fake: &FakeProvider) -> String {
    std::fs::write(dir.join("aliyun.secret"), ALIYUN_KEY.1).expect("write secret");
    format!(
        "[[providers]]\nkind = \"aliyun\"\nendpoint = \"{}\"\naccess_key_id = \"{}\"\naccess_key_secret_file = \"{}\"\nsign_name = \"Chillcloud\"\n{}",
        fake.url(),
        ALIYUN_KEY.0,
        dir.join("aliyun.secret").display(),
        templates(["SMS_100000001", "SMS_100000002", "SMS_100000003", "SMS_100000004"])
    )
}

fn twilio(dir: &Path, fake: &FakeProvider) -> String {
    std::fs::write(dir.join("twilio.secret"), TWILIO.1).expect("write secret");
    format!(
        "[[providers]]\nkind = \"twilio\"\nendpoint = \"{}\"\naccount_sid = \"{}\"\nauth_token_file = \"{}\"\nfrom = \"{TWILIO_FROM}\"\n",
        fake.url(),
        TWILIO.0,
        dir.join("twilio.secret").display()
    )
}

const TENCENT: (&str, &str, &str) = ("AKIDtest", "tencent-test-key", "1400000001");

fn tencent(dir: &Path, fake: &FakeProvider) -> String {
    std::fs::write(dir.join("tencent.secret"), TENCENT.1).expect("write secret");
    format!(
        "[[providers]]\nkind = \"tencent\"\nendpoint = \"{}\"\nsecret_id = \"{}\"\nsecret_key_file = \"{}\"\nsdk_app_id = \"{}\"\nsign_name = \"Chillcloud\"\n{}",
        fake.url(),
        TENCENT.0,
        dir.join("tencent.secret").display(),
        TENCENT.2,
        templates(["100001", "100002", "100003", "100004"])
    )
}

/// A provider's `templates`, inline so more of the provider's keys may follow: alarm, digest,
/// breach, feedback.
fn templates([alarm, digest, breach, feedback]: [&str; 4]) -> String {
    format!(
        "templates = {{ alarm = \"{alarm}\", digest = \"{digest}\", breach = \"{breach}\", feedback = \"{feedback}\" }}\n"
    )
}

/// A stack whose server pages through `providers` (TOML), with one unit of `points` points.
struct Site {
    stack: Stack,
    gateway: FakeGateway,
    people: HashMap<&'static str, (i64, &'static str)>,
    _config: chillcloud_tests::harness::TestDir,
}

impl Site {
    async fn start(config_dir: chillcloud_tests::harness::TestDir, paging: &str, points: u32) -> Self {
        let config = config_dir.path().join("paging.toml");
        std::fs::write(&config, paging).expect("write paging config");
        let stack = Stack::start_with(&["--paging-config", &config.to_string_lossy()]).await;
        let gateway = stack.gateway(points).await;
        let api = stack.api();
        wait_for("the unit registered", Duration::from_secs(30), || async {
            api.get("/api/v1/units").await.filter(|u| u.as_array().is_some_and(|a| !a.is_empty()))
        })
        .await;
        Self { stack, gateway, people: HashMap::new(), _config: config_dir }
    }

    fn api(&self) -> Api {
        self.stack.api()
    }

    async fn person(&mut self, name: &'static str, phone: &'static str, language: &str, role: Option<&str>) -> i64 {
        let api = self.api();
        let (status, person) =
            api.send(Method::POST, "/api/v1/people", json!({"name": name, "phone": phone, "language": language})).await;
        assert_eq!(status, 200, "{person}");
        let id = person["id"].as_i64().expect("id");
        if let Some(role) = role {
            let path = format!("/api/v1/gateways/{}/contacts", self.stack.gateway_id);
            let (status, body) = api.send(Method::POST, &path, json!({"person_id": id, "role": role})).await;
            assert_eq!(status, 200, "{body}");
        }
        self.people.insert(name, (id, phone));
        id
    }

    /// A site rule: grade `grade` while point `p<index>` is above 50.
    async fn hot_rule(&self, index: u32, grade: u8) {
        let path = format!("/api/v1/gateways/{}/rules/hot{index}", self.stack.gateway_id);
        let rule = json!({"title": format!("Hot p{index}"), "title_zh": format!("p{index} 过热"), "grade": grade,
                          "kind": "condition", "when": format!("p{index} > 50")});
        let (status, body) = self.api().send(Method::PUT, &path, rule).await;
        assert_eq!(status, 200, "{body}");
    }

    async fn set(&mut self, values: &[(u32, f64)]) {
        let data = self.gateway.data_at(chrono::Utc::now().timestamp_millis(), values);
        self.gateway.publish_data(&data).await;
    }

    async fn alarms(&self) -> Vec<Value> {
        self.api().get("/api/v1/alarms?state=all&limit=1000").await.expect("alarms").as_array().expect("array").clone()
    }

    async fn outbox(&self) -> Vec<Value> {
        self.api().get("/api/v1/outbox?limit=1000").await.expect("outbox").as_array().expect("array").clone()
    }
}

fn raised_ms(alarm: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(alarm["raised_at"].as_str().expect("time")).expect("time").timestamp_millis()
}

#[tokio::test]
async fn r6_an_alarm_storm_pages_each_person_once_per_incident_and_digests_the_rest() {
    const POINTS: u32 = 40;
    let dir = shared_temp_dir();
    let fake = FakeProvider::aliyun(ALIYUN_KEY.0, ALIYUN_KEY.1).await;
    let config = format!("min_gap_s = 5\n{}", aliyun(dir.path(), &fake));
    let mut site = Site::start(dir, &config, POINTS).await;
    site.person("engineer", "+8613800000001", "zh", Some("service")).await;
    site.person("owner", "+8613800000002", "en", Some("owner")).await;
    site.person("manager", "+8613800000003", "en", Some("manager")).await;
    for index in 0..POINTS {
        site.hot_rule(index, 1).await;
    }
    // A minute of storm: every point flips every 1.2 s, so 40 alarms are raised every 2.4 s,
    // 1,000 faults a minute.
    let started = tokio::time::Instant::now();
    let mut hot = true;
    let mut flips = 0;
    while started.elapsed() < Duration::from_secs(60) {
        let value = if hot { 60.0 } else { 40.0 };
        let values: Vec<(u32, f64)> = (0..POINTS).map(|i| (i, value)).collect();
        site.set(&values).await;
        hot = !hot;
        flips += 1;
        let next = started + Duration::from_millis(1200 * flips);
        tokio::time::sleep_until(next).await;
    }
    let raises: usize = site.alarms().await.iter().map(|a| a["occurrences"].as_u64().unwrap_or(0) as usize).sum();
    println!("storm: {raises} raises of {} alarms in 60 s", POINTS);
    assert!(raises >= 900, "the storm raised only {raises} times");
    // Let the outbox settle.
    wait_for("nothing left to send", Duration::from_secs(30), || async {
        site.outbox().await.iter().all(|m| m["status"] == "sent" || m["status"] == "merged").then_some(())
    })
    .await;
    let outbox = site.outbox().await;
    // At most one message per person per incident (the repeat window is 10 minutes).
    let mut per_incident: HashMap<(i64, i64), usize> = HashMap::new();
    for message in &outbox {
        *per_incident
            .entry((message["alarm_id"].as_i64().expect("alarm"), message["person_id"].as_i64().expect("person")))
            .or_default() += 1;
    }
    assert!(per_incident.values().all(|n| *n == 1), "a person paged twice for one incident: {per_incident:?}");
    // The engineer and the owner hear of every incident; the manager's level (30 min) never came.
    let paged = |name: &str| per_incident.keys().filter(|(_, p)| *p == site.people[name].0).count();
    assert_eq!((paged("engineer"), paged("owner"), paged("manager")), (POINTS as usize, POINTS as usize, 0));
    // What reached phones: one SMS per person per 5 s at most, the rest folded into digests.
    fake.assert_no_rejections();
    assert!(fake.duplicate_deliveries().is_empty(), "{:?}", fake.duplicate_deliveries());
    let delivered = fake.delivered();
    for name in ["engineer", "owner"] {
        let phone = site.people[name].1;
        let mut times: Vec<i64> =
            delivered.iter().filter(|d| d.recipient == phone).map(|d| d.received_unix_ms).collect();
        times.sort();
        println!("{name}: {} SMS for {POINTS} incidents", times.len());
        assert!(times.len() <= 100 / 5, "{name} got {} SMS", times.len());
        assert!(times.windows(2).all(|w| w[1] - w[0] >= 4_900), "{name} got two SMS within 5 s: {times:?}");
    }
    assert!(outbox.iter().any(|m| m["status"] == "merged"), "no digest");
    // Each kind goes by its own registered template, the link's token a variable of its own.
    let digest = delivered.iter().find(|d| d.template.as_deref() == Some("SMS_100000002"));
    let digest = digest.and_then(|d| d.params.clone()).unwrap_or_else(|| panic!("a digest SMS: {delivered:#?}"));
    assert!(digest["count"].as_str().is_some_and(|n| n.parse::<u32>().is_ok_and(|n| n > 1)), "{digest}");
    // A single alarm's template is checked where one alarm pages alone (the Aliyun timeout test):
    // in a storm every page may be a digest.
}

#[tokio::test]
async fn r6_a_provider_that_times_out_then_succeeds_sends_no_duplicate() {
    let dir = shared_temp_dir();
    let fake = FakeProvider::aliyun(ALIYUN_KEY.0, ALIYUN_KEY.1).await;
    let config = format!("send_timeout_s = 1\nmin_gap_s = 0\n{}", aliyun(dir.path(), &fake));
    let mut site = Site::start(dir, &config, 1).await;
    site.person("engineer", "+8613800000001", "zh", Some("service")).await;
    site.person("owner", "+8613800000002", "en", Some("owner")).await;
    site.hot_rule(0, 1).await;
    fake.set_mode(Mode::Hang { count: 1 });
    site.set(&[(0, 60.0)]).await;
    let delivered = fake.wait_delivered(2, Duration::from_secs(30)).await;
    // Give a wrongly repeated send the time to show up.
    let settle = tokio::time::Instant::now() + Duration::from_secs(4);
    tokio::time::sleep_until(settle).await;
    assert_eq!(fake.counters().timed_out, 1, "{:?}", fake.counters());
    assert_eq!(fake.delivered().len(), 2, "{delivered:#?}");
    assert!(fake.duplicate_deliveries().is_empty());
    fake.assert_no_rejections();
    let outbox = site.outbox().await;
    assert!(outbox.iter().all(|m| m["status"] == "sent"), "{outbox:#?}");
    assert!(outbox.iter().any(|m| m["attempts"] == 2), "the hung message was retried: {outbox:#?}");
}

/// A provider that took the message but never answered is asked before anything is sent
/// again: the message is found sent and no second copy goes out.
/// Returns the provider, for checks of its own.
async fn a_send_that_went_out_before_timing_out_is_found_and_not_repeated(
    fake: FakeProvider,
    provider: String,
) -> FakeProvider {
    let dir = shared_temp_dir();
    let config = format!("send_timeout_s = 1\nmin_gap_s = 0\n{provider}");
    let mut site = Site::start(dir, &config, 1).await;
    site.person("engineer", "+8613800000001", "zh", Some("service")).await;
    site.hot_rule(0, 1).await;
    fake.set_mode(Mode::AcceptThenHang { count: 1 });
    site.set(&[(0, 60.0)]).await;
    wait_for("the message found sent", Duration::from_secs(30), || async {
        site.outbox().await.iter().all(|m| m["status"] == "sent").then_some(())
    })
    .await;
    // Give a wrongly repeated send the time to show up.
    let settle = tokio::time::Instant::now() + Duration::from_secs(4);
    tokio::time::sleep_until(settle).await;
    let counters = fake.counters();
    assert_eq!((counters.accepted_unanswered, counters.delivered), (1, 1), "{counters:?}");
    assert!(counters.lookups >= 1, "the provider was never asked: {counters:?}");
    fake.assert_no_rejections();
    let outbox = site.outbox().await;
    assert_eq!(outbox.len(), 1, "{outbox:#?}");
    assert_eq!(outbox[0]["attempts"], 2, "sent once, found on the second attempt: {outbox:#?}");
    fake
}

#[tokio::test]
async fn r6_aliyun_that_sent_but_timed_out_is_asked_and_sends_no_second_copy() {
    let dir = shared_temp_dir();
    let fake = FakeProvider::aliyun(ALIYUN_KEY.0, ALIYUN_KEY.1).await;
    let provider = aliyun(dir.path(), &fake);
    let fake = a_send_that_went_out_before_timing_out_is_found_and_not_repeated(fake, provider).await;
    // A single alarm goes by its own registered template, the link's token a variable of its own.
    let delivered = fake.delivered();
    let alarm = delivered.iter().find(|d| d.template.as_deref() == Some("SMS_100000001"));
    let alarm = alarm.and_then(|d| d.params.clone()).unwrap_or_else(|| panic!("an alarm SMS: {delivered:#?}"));
    assert_eq!(alarm["grade"], "1", "{alarm}");
    assert!(alarm["token"].as_str().is_some_and(|t| t.len() > 16 && !t.contains('/')), "{alarm}");
}

#[tokio::test]
async fn r6_tencent_that_sent_but_timed_out_is_asked_and_sends_no_second_copy() {
    let dir = shared_temp_dir();
    let fake = FakeProvider::tencent(TENCENT.0, TENCENT.1, TENCENT.2).await;
    // The status pull echoes our SessionContext once Tencent has enabled it for the account.
    fake.set_options(Options { tencent_pull_session_context: true, ..Options::default() });
    let provider = tencent(dir.path(), &fake);
    let _ = a_send_that_went_out_before_timing_out_is_found_and_not_repeated(fake, provider).await;
}

#[tokio::test]
async fn r6_twilio_that_sent_but_timed_out_is_asked_and_sends_no_second_copy() {
    let dir = shared_temp_dir();
    let fake = FakeProvider::twilio(TWILIO.0, TWILIO.1).await;
    let provider = twilio(dir.path(), &fake);
    let _ = a_send_that_went_out_before_timing_out_is_found_and_not_repeated(fake, provider).await;
}

#[tokio::test]
async fn r6_with_the_first_provider_down_a_critical_page_goes_out_through_the_second() {
    let dir = shared_temp_dir();
    let first = FakeProvider::aliyun(ALIYUN_KEY.0, ALIYUN_KEY.1).await;
    let second = FakeProvider::twilio(TWILIO.0, TWILIO.1).await;
    let config = format!("{}{}", aliyun(dir.path(), &first), twilio(dir.path(), &second));
    let mut site = Site::start(dir, &config, 1).await;
    site.person("engineer", "+8613800000001", "en", Some("service")).await;
    site.hot_rule(0, 1).await;
    first.set_mode(Mode::Down);
    site.set(&[(0, 60.0)]).await;
    let delivered = second.wait_delivered(1, Duration::from_secs(30)).await;
    assert_eq!(delivered[0].recipient, "+8613800000001");
    let text = delivered[0].text.clone().unwrap_or_default();
    assert!(text.contains("G1") && text.contains("Hot p0") && text.contains("/a/"), "{text}");
    assert!(first.counters().refused >= 1 && first.delivered().is_empty());
    second.assert_no_rejections();
    let outbox = site.outbox().await;
    assert_eq!(outbox[0]["provider"], "twilio", "{outbox:#?}");
}

#[tokio::test]
async fn an_unacknowledged_alarm_walks_the_levels_on_time_and_a_reply_stops_it_for_everyone() {
    let dir = shared_temp_dir();
    let fake = FakeProvider::twilio(TWILIO.0, TWILIO.1).await;
    let config = format!("min_gap_s = 0\n{}", twilio(dir.path(), &fake));
    let mut site = Site::start(dir, &config, 1).await;
    let first = site.person("first", "+8613800000011", "en", Some("service")).await;
    let second = site.person("second", "+8613800000012", "en", Some("service")).await;
    site.person("manager", "+8613800000013", "zh", Some("manager")).await;
    let api = site.api();
    // First on call this day, then the service team at 4 s, the manager at 8 s, all every 10 s.
    let start = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let (status, rotation) = api
        .send(
            Method::POST,
            "/api/v1/rotations",
            json!({"name": "team", "period_days": 1, "starts_at": start, "members": [first, second]}),
        )
        .await;
    assert_eq!(status, 200, "{rotation}");
    let policy = json!({"grades": {"1": {"levels": [
        {"after_s": 0, "notify": ["on_call"]}, {"after_s": 4, "notify": ["service"]}, {"after_s": 8, "notify": ["manager"]}
    ], "repeat_s": 10}}});
    let path = format!("/api/v1/gateways/{}/paging", site.stack.gateway_id);
    let (status, body) = api.send(Method::PUT, &path, json!({"rotation_id": rotation["id"], "policy": policy})).await;
    assert_eq!(status, 200, "{body}");
    site.hot_rule(0, 1).await;
    site.set(&[(0, 60.0)]).await;
    let delivered = fake.wait_delivered(3, Duration::from_secs(30)).await;
    let alarm = &site.alarms().await[0];
    let raised = raised_ms(alarm);
    let order: Vec<(&str, i64)> =
        delivered.iter().map(|d| (d.recipient.as_str(), d.received_unix_ms - raised)).collect();
    println!("escalation: {order:?}");
    let expected = [("+8613800000011", 0), ("+8613800000012", 4_000), ("+8613800000013", 8_000)];
    for ((phone, at), (expected_phone, expected_at)) in order.iter().zip(expected) {
        assert_eq!(*phone, expected_phone, "{order:?}");
        assert!((expected_at - 500..=expected_at + 2_500).contains(at), "{phone} paged at {at} ms: {order:?}");
    }
    // The manager's message is in Chinese.
    let manager_text = delivered[2].text.clone().unwrap_or_default();
    assert!(manager_text.contains("级") && manager_text.contains("回复 1"), "{manager_text}");
    // A forged reply is refused; the manager's real one acknowledges for everyone.
    let code = manager_text.rsplit(' ').next().expect("code").to_owned();
    let url = format!("http://{}/hooks/twilio", site.stack.http);
    let client = reqwest::Client::new();
    let forged = TwilioWebhook::inbound_sms(
        &url,
        TWILIO.0,
        "not-the-token",
        "+8613800000013",
        TWILIO_FROM,
        &format!("1 {code}"),
    );
    assert_eq!(forged.request(&client).send().await.expect("post").status(), 403);
    let wrong_phone =
        TwilioWebhook::inbound_sms(&url, TWILIO.0, TWILIO.1, "+8613800000099", TWILIO_FROM, &format!("1 {code}"));
    let answer = wrong_phone.request(&client).send().await.expect("post").text().await.expect("body");
    assert!(answer.contains("Unknown code"), "{answer}");
    let reply =
        TwilioWebhook::inbound_sms(&url, TWILIO.0, TWILIO.1, "+8613800000013", TWILIO_FROM, &format!("1 {code}"));
    let response = reply.request(&client).send().await.expect("post");
    assert_eq!(response.status(), 200);
    let acknowledged = wait_for("the reply to acknowledge", Duration::from_secs(10), || async {
        site.alarms()
            .await
            .into_iter()
            .find(|a| a["acknowledged_by"].as_str().is_some_and(|by| by.starts_with("manager")))
    })
    .await;
    assert_eq!(acknowledged["state"], "acknowledged");
    // The repeat due at 18 s never comes.
    let quiet_until = tokio::time::Instant::now()
        + Duration::from_millis((raised + 21_000 - chrono::Utc::now().timestamp_millis()).max(0) as u64);
    tokio::time::sleep_until(quiet_until).await;
    assert_eq!(fake.delivered().len(), 3, "paged after the acknowledgement: {:#?}", fake.delivered());
    fake.assert_no_rejections();
}

#[tokio::test]
async fn an_acknowledgement_link_shows_on_get_and_acknowledges_on_post_only() {
    let dir = shared_temp_dir();
    // No providers: the console, with messages in the outbox.
    let mut site = Site::start(dir, "", 1).await;
    site.person("engineer", "+8613800000001", "en", Some("service")).await;
    site.hot_rule(0, 2).await;
    site.set(&[(0, 60.0)]).await;
    let message = wait_for("the console message", Duration::from_secs(30), || async {
        site.outbox().await.into_iter().find(|m| m["status"] == "sent")
    })
    .await;
    assert_eq!(message["provider"], "console");
    let body = message["body"].as_str().expect("body");
    let link = body.split_whitespace().find(|w| w.contains("/a/")).expect("a link").to_owned();
    let client = reqwest::Client::new();
    let page = client.get(&link).send().await.expect("get");
    assert_eq!(page.status(), 200);
    assert!(page.text().await.expect("html").contains("Hot p0"));
    assert!(site.alarms().await[0]["acknowledged_at"].is_null(), "a GET must not acknowledge");
    let tampered = link.replacen("/a/", "/a/9", 1);
    assert_eq!(client.post(&tampered).send().await.expect("post").status(), 403);
    assert_eq!(client.post(&link).send().await.expect("post").status(), 200);
    let alarm = &site.alarms().await[0];
    assert_eq!(alarm["acknowledged_by"], "engineer (link)");
}

#[tokio::test]
async fn tencent_and_the_signed_webhook_pass_their_providers_checks() {
    let dir = shared_temp_dir();
    let tencent_fake = FakeProvider::tencent(TENCENT.0, TENCENT.1, TENCENT.2).await;
    let webhook = FakeProvider::webhook("webhook-test-secret").await;
    std::fs::write(dir.path().join("webhook.secret"), "webhook-test-secret").expect("write");
    let config = format!(
        "min_gap_s = 0\n{}[[providers]]\nkind = \"webhook\"\nurl = \"{}/chillcloud\"\nsecret_file = \"{}\"\n",
        tencent(dir.path(), &tencent_fake),
        webhook.url(),
        dir.path().join("webhook.secret").display(),
    );
    let mut site = Site::start(dir, &config, 2).await;
    site.person("engineer", "+8613800000001", "zh", Some("service")).await;
    site.hot_rule(0, 2).await;
    site.hot_rule(1, 2).await;
    site.set(&[(0, 60.0)]).await;
    let delivered = tencent_fake.wait_delivered(1, Duration::from_secs(30)).await;
    assert_eq!(delivered[0].recipient, "+8613800000001");
    let params = delivered[0].params.clone().expect("template parameters");
    assert_eq!(params[0], "2", "grade first: {params}");
    tencent_fake.assert_no_rejections();
    // Tencent refusing, the next alarm goes to the webhook, signed.
    tencent_fake.set_mode(Mode::Fail);
    site.set(&[(1, 60.0)]).await;
    let hooked = webhook.wait_delivered(1, Duration::from_secs(30)).await;
    assert!(hooked[0].text.as_deref().is_some_and(|t| t.contains("Hot p1") || t.contains("p1 过热")), "{hooked:#?}");
    webhook.assert_no_rejections();
}

#[tokio::test]
async fn a_critical_alarm_opens_a_ticket_whose_breached_clock_escalates_and_closing_asks_the_owner() {
    let dir = shared_temp_dir();
    let fake = FakeProvider::twilio(TWILIO.0, TWILIO.1).await;
    // Ticket clocks at a thousandth: the 1 h response clock of grade 1 is 3.6 s.
    let config = format!("min_gap_s = 0\nticket_clock_scale = 0.001\n{}", twilio(dir.path(), &fake));
    let mut site = Site::start(dir, &config, 2).await;
    let engineer = site.person("engineer", "+8613800000021", "en", Some("service")).await;
    site.person("owner", "+8613800000022", "zh", Some("owner")).await;
    site.person("manager", "+8613800000023", "en", Some("manager")).await;
    site.hot_rule(0, 1).await;
    site.hot_rule(1, 3).await;
    site.set(&[(0, 60.0), (1, 60.0)]).await;
    let api = site.api();
    let ticket = wait_for("a ticket for the grade-1 alarm", Duration::from_secs(30), || async {
        api.get("/api/v1/tickets").await?.as_array()?.first().cloned()
    })
    .await;
    let id = ticket["id"].as_i64().expect("id");
    let time = |field: &str| chrono::DateTime::parse_from_rfc3339(ticket[field].as_str().expect(field)).expect("time");
    assert_eq!((time("respond_by") - time("opened_at")).num_milliseconds(), 3_600, "grade 1 responds within 1 h");
    assert_eq!(
        (time("escalate_by") - time("opened_at")).num_milliseconds(),
        7_200,
        "and passes to the maker within 2 h"
    );
    // The response clock runs out: the manager is paged about the ticket.
    let breach = wait_for("the manager paged about the breach", Duration::from_secs(30), || async {
        fake.delivered()
            .into_iter()
            .find(|d| d.recipient == "+8613800000023" && d.text.as_deref().is_some_and(|t| t.contains("ticket")))
    })
    .await;
    assert!(
        breach.text.as_deref().is_some_and(|t| t.contains(&format!("#{id}")) && t.contains("response")),
        "{breach:?}"
    );
    let breached = api.get(&format!("/api/v1/tickets/{id}")).await.expect("ticket");
    assert!(breached["ticket"]["breached"].as_array().is_some_and(|b| b.contains(&json!("respond"))), "{breached}");
    // The job: assign, triage for a visit with parts, respond, on site, a note, resolve, close.
    let act = |action: &'static str, body: Value| {
        let api = site.api();
        async move {
            let (status, answer) = api.send(Method::POST, &format!("/api/v1/tickets/{id}/{action}"), body).await;
            assert_eq!(status, 200, "{action}: {answer}");
            answer
        }
    };
    act("assign", json!({"person_id": engineer})).await;
    act("triage", json!({"triage": "site_visit", "parts": ["expansion valve", "refrigerant R-134a 5 kg"]})).await;
    act("respond", json!({"comment": "called the duty staff"})).await;
    act("on_site", json!({})).await;
    act("note", json!({"comment": "valve stuck", "data": {"superheat_k": 14.2}})).await;
    let (status, _) = api.send(Method::POST, &format!("/api/v1/tickets/{id}/close"), json!({})).await;
    assert_eq!(status, 409, "closing before resolving");
    act("resolve", json!({"comment": "valve replaced"})).await;
    let closed = act("close", json!({})).await;
    assert_eq!(closed["status"], "closed");
    // The owner is asked for a score, in Chinese, and answers 4 by SMS.
    let question = wait_for("the satisfaction question", Duration::from_secs(30), || async {
        fake.delivered()
            .into_iter()
            .find(|d| d.recipient == "+8613800000022" && d.text.as_deref().is_some_and(|t| t.contains("评分")))
    })
    .await;
    let text = question.text.expect("text");
    let code =
        text.split_whitespace().skip_while(|w| *w != "1-5").nth(1).expect("code").trim_end_matches('，').to_owned();
    let url = format!("http://{}/hooks/twilio", site.stack.http);
    let reply =
        TwilioWebhook::inbound_sms(&url, TWILIO.0, TWILIO.1, "+8613800000022", TWILIO_FROM, &format!("4 {code}"));
    assert_eq!(reply.request(&reqwest::Client::new()).send().await.expect("reply").status(), 200);
    let done = wait_for("the score recorded", Duration::from_secs(10), || async {
        api.get(&format!("/api/v1/tickets/{id}")).await.filter(|t| t["ticket"]["satisfaction"] == 4)
    })
    .await;
    let kinds: Vec<&str> =
        done["events"].as_array().expect("events").iter().map(|e| e["kind"].as_str().expect("kind")).collect();
    for kind in
        ["opened", "breached", "assigned", "triaged", "responded", "on_site", "note", "resolved", "closed", "feedback"]
    {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    assert_eq!(done["ticket"]["parts"], json!(["expansion valve", "refrigerant R-134a 5 kg"]));
    // The grade-3 alarm opened no ticket; one opened by hand is there too.
    assert_eq!(api.get("/api/v1/tickets?state=all").await.expect("tickets").as_array().map(Vec::len), Some(1));
    let (status, by_hand) = api
        .send(
            Method::POST,
            "/api/v1/tickets",
            json!({"gateway_id": site.stack.gateway_id, "grade": 3, "title": "annual service"}),
        )
        .await;
    assert_eq!(status, 200, "{by_hand}");
    let metrics = api.get("/api/v1/tickets/metrics").await.expect("metrics");
    let row = &metrics[0];
    assert_eq!(
        (row["group"].as_str(), row["tickets"].as_i64(), row["satisfaction"].as_f64()),
        (Some("gw-stack"), Some(2), Some(4.0)),
        "{metrics}"
    );
    assert_eq!(
        row["responded_within_target"].as_f64(),
        Some(0.0),
        "the breached ticket counts against the target: {metrics}"
    );
    fake.assert_no_rejections();
}

#[tokio::test]
async fn people_with_an_address_are_also_paged_by_email() {
    let dir = shared_temp_dir();
    let fake = FakeProvider::twilio(TWILIO.0, TWILIO.1).await;
    let smtp = chillcloud_tests::smtp::SmtpSink::start().await;
    let config = format!(
        "min_gap_s = 0\n{}[email]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\nfrom = \"Chillcloud <alarms@example.com>\"\n",
        twilio(dir.path(), &fake),
        smtp.port
    );
    let mut site = Site::start(dir, &config, 1).await;
    let (status, person) = site
        .api()
        .send(
            Method::POST,
            "/api/v1/people",
            json!({"name": "engineer", "phone": "+8613800000031", "email": "eng@example.com"}),
        )
        .await;
    assert_eq!(status, 200, "{person}");
    let path = format!("/api/v1/gateways/{}/contacts", site.stack.gateway_id);
    let (status, body) =
        site.api().send(Method::POST, &path, json!({"person_id": person["id"], "role": "service"})).await;
    assert_eq!(status, 200, "{body}");
    site.hot_rule(0, 1).await;
    site.set(&[(0, 60.0)]).await;
    let mails = smtp.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(mails[0].to, ["eng@example.com"]);
    assert_eq!(mails[0].from, "alarms@example.com");
    assert!(mails[0].data.contains("Subject: Chillcloud G1 chiller-1@gw-stack: Hot p0"), "{}", mails[0].data);
    assert!(mails[0].data.contains("/a/"), "the acknowledgement link: {}", mails[0].data);
    // The SMS goes out too.
    fake.wait_delivered(1, Duration::from_secs(30)).await;
    let outbox = site.outbox().await;
    assert_eq!(outbox.len(), 2, "{outbox:#?}");
    assert!(outbox.iter().any(|m| m["provider"] == "smtp") && outbox.iter().any(|m| m["provider"] == "twilio"));
}

#[tokio::test]
async fn replies_pushed_by_aliyun_and_tencent_acknowledge_through_their_secret_urls() {
    let dir = shared_temp_dir();
    let aliyun_fake = FakeProvider::aliyun(ALIYUN_KEY.0, ALIYUN_KEY.1).await;
    let tencent_fake = FakeProvider::tencent(TENCENT.0, TENCENT.1, TENCENT.2).await;
    for (name, text) in [("aliyun.reply", "aliyun-reply-0123456789"), ("tencent.reply", "tencent-reply-0123456789")] {
        std::fs::write(dir.path().join(name), text).expect("write");
    }
    let config = format!(
        "min_gap_s = 0\n{}reply_token_file = \"{}\"\n{}reply_token_file = \"{}\"\n",
        aliyun(dir.path(), &aliyun_fake),
        dir.path().join("aliyun.reply").display(),
        tencent(dir.path(), &tencent_fake),
        dir.path().join("tencent.reply").display(),
    );
    let mut site = Site::start(dir, &config, 2).await;
    site.person("engineer", "+8613800000041", "zh", Some("service")).await;
    site.hot_rule(0, 2).await;
    site.hot_rule(1, 2).await;
    let client = reqwest::Client::new();
    let base = format!("http://{}", site.stack.http);
    // Through Aliyun; the reply comes back without the country code, as Aliyun pushes it.
    site.set(&[(0, 60.0)]).await;
    let sent = aliyun_fake.wait_delivered(1, Duration::from_secs(30)).await;
    let code = sent[0].params.as_ref().and_then(|p| p["code"].as_str()).expect("code").to_owned();
    let push = json!([{"phone_number": "13800000041", "content": format!("1 {code}"), "send_time": "2026-11-24 08:00:00",
                       "sign_name": "Chillcloud", "dest_code": "", "sequence_id": 1}]);
    let wrong =
        client.post(format!("{base}/hooks/aliyun/not-the-secret-at-all")).json(&push).send().await.expect("post");
    assert_eq!(wrong.status(), 404, "a push without the URL's secret");
    let answer: Value = client
        .post(format!("{base}/hooks/aliyun/aliyun-reply-0123456789"))
        .json(&push)
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    assert_eq!(answer["code"], 0);
    // Through Tencent (Aliyun refusing now).
    aliyun_fake.set_mode(Mode::Fail);
    site.set(&[(1, 60.0)]).await;
    let sent = tencent_fake.wait_delivered(1, Duration::from_secs(30)).await;
    // Tencent's alarm template: grade, unit, fault, value, code.
    let code = sent[0].params.as_ref().and_then(|p| p[4].as_str()).expect("code").to_owned();
    let callback = json!({"extend": "", "mobile": "13800000041", "nationcode": "86", "sign": "Chillcloud", "text": format!("1 {code}"), "time": 1_795_000_000});
    let answer: Value = client
        .post(format!("{base}/hooks/tencent/tencent-reply-0123456789"))
        .json(&callback)
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    assert_eq!(answer["result"], 0);
    let alarms = wait_for("both alarms acknowledged by SMS", Duration::from_secs(10), || async {
        let alarms = site.alarms().await;
        alarms.iter().all(|a| a["acknowledged_by"] == "engineer (SMS)").then_some(alarms)
    })
    .await;
    assert_eq!(alarms.len(), 2);
}

#[tokio::test]
async fn a_message_held_back_is_cancelled_when_its_alarm_is_acknowledged_and_a_fault_that_returns_pages_again() {
    let dir = shared_temp_dir();
    let fake = FakeProvider::twilio(TWILIO.0, TWILIO.1).await;
    let config = format!("min_gap_s = 6\n{}", twilio(dir.path(), &fake));
    let mut site = Site::start(dir, &config, 2).await;
    site.person("engineer", "+8613800000051", "en", Some("service")).await;
    // Grade 2 repeats every 12 s here, so a page per person per incident is allowed every 12 s.
    let policy = json!({"grades": {"2": {"levels": [{"after_s": 0, "notify": ["on_call"]}], "repeat_s": 12}}});
    let path = format!("/api/v1/gateways/{}/paging", site.stack.gateway_id);
    let (status, body) = site.api().send(Method::PUT, &path, json!({"policy": policy})).await;
    assert_eq!(status, 200, "{body}");
    site.hot_rule(0, 2).await;
    site.hot_rule(1, 2).await;
    site.set(&[(0, 60.0)]).await;
    let first = fake.wait_delivered(1, Duration::from_secs(30)).await;
    // The second alarm's page waits for the engineer's 6 s gap; it is acknowledged meanwhile.
    site.set(&[(1, 60.0)]).await;
    let api = site.api();
    let second = wait_for("the second alarm's message queued", Duration::from_secs(10), || async {
        site.outbox().await.into_iter().find(|m| m["status"] == "pending" || m["status"] == "sending")
    })
    .await;
    let (status, body) = api
        .send(
            Method::POST,
            &format!("/api/v1/alarms/{}/acknowledge", second["alarm_id"]),
            json!({"comment": "seen on the dashboard"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    wait_for("the held message cancelled", Duration::from_secs(30), || async {
        site.outbox().await.into_iter().find(|m| m["id"] == second["id"] && m["status"] == "cancelled")
    })
    .await;
    assert_eq!(fake.delivered().len(), 1, "a page for an acknowledged alarm went out: {:#?}", fake.delivered());
    // The first fault clears unacknowledged and comes back after the repeat window: its ladder
    // starts over and pages again.
    site.set(&[(0, 40.0)]).await;
    wait_for("the first alarm cleared", Duration::from_secs(10), || async {
        site.alarms().await.into_iter().find(|a| a["rule"] == "hot0" && a["state"] == "cleared")
    })
    .await;
    assert_eq!(fake.delivered().len(), 1, "repeated although cleared: {:#?}", fake.delivered());
    let window_over = first[0].received_at + Duration::from_secs(13);
    tokio::time::sleep_until(window_over.into()).await;
    site.set(&[(0, 60.0)]).await;
    let delivered = fake.wait_delivered(2, Duration::from_secs(30)).await;
    assert!(delivered[1].idempotency_key.as_deref().is_some_and(|k| k.contains("round-1")), "{delivered:#?}");
    assert!(delivered[1].text.as_deref().is_some_and(|t| t.contains("Hot p0")), "{delivered:#?}");
    fake.assert_no_rejections();
}

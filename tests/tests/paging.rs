//! Paging end to end: alarms raised through the real broker and server page people through the
//! providers' real HTTP APIs, answered by local fakes that check requests as each provider
//! does (signatures, parameters). R6 of docs/benchmarks.md, escalation, and acknowledgement by SMS
//! reply and by signed link.

use std::{collections::HashMap, path::Path, time::Duration};

use chillcloud_tests::{
    harness::{Api, FakeGateway, Stack, shared_temp_dir, wait_for},
    providers::{FakeProvider, Mode, Options, TwilioWebhook},
    push_service::FakePushService,
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
    // The SMS goes out too (recorded once Twilio's answer is back, which may follow its request).
    fake.wait_delivered(1, Duration::from_secs(30)).await;
    let outbox = wait_for("both messages recorded as sent", Duration::from_secs(10), || async {
        let outbox = site.outbox().await;
        outbox.iter().all(|m| m["status"] == "sent").then_some(outbox)
    })
    .await;
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

// ---------------------------------------------------------------------------------------------
// Voice calls, team chat and Web Push (docs/paging.md, "Channels").
// ---------------------------------------------------------------------------------------------

const ALIYUN_VOICE: (&str, &str) = ("LTAIvoicekey", "aliyun-voice-secret");
const TENCENT_VOICE: (&str, &str, &str) = ("AKIDvoice", "tencent-voice-key", "1400000099");
/// The secret part of the voice providers' report URLs.
const REPORT_TOKEN: &str = "report-token-0123456789";

fn aliyun_voice(dir: &Path, fake: &FakeProvider) -> String {
    std::fs::write(dir.join("aliyun-voice.secret"), ALIYUN_VOICE.1).expect("write secret");
    std::fs::write(dir.join("report.token"), REPORT_TOKEN).expect("write token");
    format!(
        "[[providers]]\nkind = \"aliyun_voice\"\nendpoint = \"{}\"\naccess_key_id = \"{}\"\naccess_key_secret_file = \"{}\"\ntemplates = {{ zh = \"TTS_200000001\", en = \"TTS_200000002\" }}\nreport_token_file = \"{}\"\n",
        fake.url(),
        ALIYUN_VOICE.0,
        dir.join("aliyun-voice.secret").display(),
        dir.join("report.token").display()
    )
}

fn tencent_voice(dir: &Path, fake: &FakeProvider) -> String {
    std::fs::write(dir.join("tencent-voice.secret"), TENCENT_VOICE.1).expect("write secret");
    std::fs::write(dir.join("report.token"), REPORT_TOKEN).expect("write token");
    format!(
        "[[providers]]\nkind = \"tencent_voice\"\nendpoint = \"{}\"\nsecret_id = \"{}\"\nsecret_key_file = \"{}\"\nvoice_sdk_app_id = \"{}\"\ntemplates = {{ zh = \"5001\", en = \"5002\" }}\nreport_token_file = \"{}\"\n",
        fake.url(),
        TENCENT_VOICE.0,
        dir.join("tencent-voice.secret").display(),
        TENCENT_VOICE.2,
        dir.join("report.token").display()
    )
}

/// Twilio's voice provider on the same account (and fake) as its SMS.
fn twilio_voice(dir: &Path, fake: &FakeProvider) -> String {
    twilio(dir, fake).replace("kind = \"twilio\"", "kind = \"twilio_voice\"")
}

impl Site {
    /// Sets the site's grade 1 policy to `levels` (no repeat).
    async fn grade_1_policy(&self, levels: Value) {
        let policy = json!({"grades": {"1": {"levels": levels, "repeat_s": null}}});
        let path = format!("/api/v1/gateways/{}/paging", self.stack.gateway_id);
        let (status, body) = self.api().send(Method::PUT, &path, json!({"policy": policy})).await;
        assert_eq!(status, 200, "{body}");
    }

    /// Raises a grade 1 alarm on p0; returns its id.
    async fn raise_critical(&mut self) -> i64 {
        self.hot_rule(0, 1).await;
        self.set(&[(0, 60.0)]).await;
        let alarms = wait_for("the alarm raised", Duration::from_secs(30), || async {
            Some(self.alarms().await).filter(|a| !a.is_empty())
        })
        .await;
        alarms[0]["id"].as_i64().expect("alarm id")
    }

    /// Waits until alarm `id` is acknowledged; returns who acknowledged it.
    async fn acknowledged_by(&self, id: i64) -> String {
        let alarm = wait_for("the alarm acknowledged", Duration::from_secs(30), || async {
            self.alarms().await.into_iter().find(|a| a["id"] == id && !a["acknowledged_by"].is_null())
        })
        .await;
        alarm["acknowledged_by"].as_str().expect("who").to_owned()
    }

    /// The outbox's messages on `channel`.
    async fn on_channel(&self, channel: &str) -> Vec<Value> {
        self.outbox().await.into_iter().filter(|m| m["channel"] == channel).collect()
    }
}

/// POSTs JSON to the server without credentials, as a provider's callback does.
async fn callback(site: &Site, path: &str, body: Value) -> (u16, Value) {
    let response =
        reqwest::Client::new().post(format!("{}{path}", site.api().base)).json(&body).send().await.expect("callback");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn voice_aliyun_speaks_the_alarm_in_the_persons_language_and_a_reported_keypress_acknowledges() {
    let dir = shared_temp_dir();
    let fake = FakeProvider::aliyun_voice(ALIYUN_VOICE.0, ALIYUN_VOICE.1).await;
    let config = aliyun_voice(dir.path(), &fake);
    let mut site = Site::start(dir, &config, 1).await;
    site.person("engineer", "+8613800000021", "zh", Some("service")).await;
    site.grade_1_policy(json!([{"after_s": 0, "notify": ["on_call"], "via": ["voice"]}])).await;
    let alarm = site.raise_critical().await;
    let call = fake.wait_delivered(1, Duration::from_secs(30)).await.remove(0);
    fake.assert_no_rejections();
    // A mainland number without its country code, the Chinese template, the alarm's words.
    assert_eq!(call.recipient, "13800000021");
    assert_eq!(call.template.as_deref(), Some("TTS_200000001"));
    let spoken = call.params.clone().expect("TtsParam");
    assert_eq!(spoken["grade"], "1", "{spoken}");
    assert!(spoken["fault"].as_str().is_some_and(|f| f.contains("p0 过热")), "{spoken}");
    let out_id = call.idempotency_key.clone().expect("OutId");
    // A report with a wrong URL secret is refused; Aliyun's report with the keypress acknowledges.
    let report = json!([{"call_id": call.provider_id, "out_id": out_id, "callee": "13800000021", "dtmf": "1",
                         "status_code": "200000", "status_msg": "执行完成", "duration": 12}]);
    assert_eq!(callback(&site, "/hooks/aliyun-voice/not-the-token", report.clone()).await.0, 404);
    assert_eq!(site.alarms().await[0]["acknowledged_by"], Value::Null);
    let (status, answer) = callback(&site, &format!("/hooks/aliyun-voice/{REPORT_TOKEN}"), report).await;
    assert_eq!((status, answer["code"].clone()), (200, json!(0)), "{answer}");
    assert_eq!(site.acknowledged_by(alarm).await, "engineer (call)");
    assert_eq!(fake.delivered().len(), 1, "one call");
}

#[tokio::test]
async fn voice_tencent_calls_with_its_template_and_a_keypress_callback_acknowledges() {
    let dir = shared_temp_dir();
    let fake = FakeProvider::tencent_voice(TENCENT_VOICE.0, TENCENT_VOICE.1, TENCENT_VOICE.2).await;
    let config = tencent_voice(dir.path(), &fake);
    let mut site = Site::start(dir, &config, 1).await;
    site.person("engineer", "+8613800000022", "en", Some("service")).await;
    site.grade_1_policy(json!([{"after_s": 0, "notify": ["on_call"], "via": ["voice"]}])).await;
    let alarm = site.raise_critical().await;
    let call = fake.wait_delivered(1, Duration::from_secs(30)).await.remove(0);
    fake.assert_no_rejections();
    assert_eq!(call.recipient, "+8613800000022");
    assert_eq!(call.template.as_deref(), Some("5002"), "the English template");
    let set = call.params.clone().expect("TemplateParamSet");
    assert_eq!(set[0], "1", "grade first: {set}");
    assert!(set[2].as_str().is_some_and(|f| f.contains("Hot p0")), "{set}");
    // The call's outcome, then the key: only `1` acknowledges.
    let prompt = json!({"voiceprompt_callback": {"result": "0", "callid": call.provider_id, "mobile": "13800000022",
                        "nationcode": "86", "accept_time": "1470197211", "start_calltime": "1470197196",
                        "end_calltime": "1470197221", "fee": "1", "call_from": ""}});
    let path = format!("/hooks/tencent-voice/{REPORT_TOKEN}");
    assert_eq!(callback(&site, &path, prompt).await.1["result"], 0);
    let key = |digit: &str| {
        json!({"voicekey_callback": {"callid": call.provider_id, "keypress": digit, "mobile": "13800000022",
               "nationcode": "86", "call_from": ""}})
    };
    assert_eq!(callback(&site, &path, key("2")).await.0, 200);
    assert_eq!(site.alarms().await[0]["acknowledged_by"], Value::Null, "2 does not acknowledge");
    assert_eq!(callback(&site, &path, key("1")).await.1["result"], 0);
    assert_eq!(site.acknowledged_by(alarm).await, "engineer (call)");
}

#[tokio::test]
async fn voice_twilio_gathers_a_key_whose_signed_post_acknowledges() {
    let dir = shared_temp_dir();
    let fake = FakeProvider::twilio(TWILIO.0, TWILIO.1).await;
    let config = twilio_voice(dir.path(), &fake);
    let mut site = Site::start(dir, &config, 1).await;
    site.person("engineer", "+8613800000023", "zh", Some("service")).await;
    site.grade_1_policy(json!([{"after_s": 0, "notify": ["on_call"], "via": ["voice"]}])).await;
    let alarm = site.raise_critical().await;
    let call = fake.wait_delivered(1, Duration::from_secs(30)).await.remove(0);
    fake.assert_no_rejections();
    let twiml = call.text.clone().expect("Twiml");
    assert!(twiml.contains(r#"voice="Polly.Zhiyu" language="cmn-CN""#) && twiml.contains("确认请按 1"), "{twiml}");
    let action = twiml.split("action=\"").nth(1).and_then(|rest| rest.split('"').next()).expect("a Gather action");
    let action = action.replace("&amp;", "&");
    assert!(action.starts_with(&site.api().base) && action.contains("/hooks/twilio-voice/"), "{action}");
    let press = |digits: &str, token: &str| {
        TwilioWebhook::gather(&action, TWILIO.0, token, &call.provider_id, TWILIO_FROM, "+8613800000023", digits)
    };
    let client = reqwest::Client::new();
    // Not Twilio's signature: refused.
    let forged = press("1", "not-the-auth-token").request(&client).send().await.expect("post");
    assert_eq!(forged.status(), 403);
    let answer = press("1", TWILIO.1).request(&client).send().await.expect("post");
    assert_eq!(answer.status(), 200);
    let said = answer.text().await.expect("TwiML");
    assert!(said.contains("已确认"), "{said}");
    assert_eq!(site.acknowledged_by(alarm).await, "engineer (call)");
}

#[tokio::test]
async fn r6_a_voice_provider_that_placed_the_call_but_timed_out_is_asked_and_calls_no_second_time() {
    let dir = shared_temp_dir();
    let fake = FakeProvider::twilio(TWILIO.0, TWILIO.1).await;
    let config = format!("send_timeout_s = 1\nmin_gap_s = 0\n{}", twilio_voice(dir.path(), &fake));
    let mut site = Site::start(dir, &config, 1).await;
    site.person("engineer", "+8613800000024", "en", Some("service")).await;
    site.grade_1_policy(json!([{"after_s": 0, "notify": ["on_call"], "via": ["voice"]}])).await;
    fake.set_mode(Mode::AcceptThenHang { count: 1 });
    site.raise_critical().await;
    wait_for("the call found placed", Duration::from_secs(30), || async {
        let calls = site.on_channel("voice").await;
        (calls.len() == 1 && calls[0]["status"] == "sent").then_some(())
    })
    .await;
    // Give a wrongly repeated call the time to show up.
    tokio::time::sleep_until(tokio::time::Instant::now() + Duration::from_secs(4)).await;
    let counters = fake.counters();
    assert_eq!((counters.accepted_unanswered, counters.delivered), (1, 1), "{counters:?}");
    assert!(counters.lookups >= 1, "Twilio's call list was never asked: {counters:?}");
    fake.assert_no_rejections();
    let calls = site.on_channel("voice").await;
    assert_eq!(calls[0]["attempts"], 2, "placed once, found on the second attempt: {calls:#?}");
    assert!(site.on_channel("sms").await.is_empty(), "no SMS instead of the call");
}

#[tokio::test]
async fn r6_an_unanswered_sms_escalates_to_a_call_whose_keypress_acknowledges_and_stops_the_ladder() {
    let dir = shared_temp_dir();
    let fake = FakeProvider::twilio(TWILIO.0, TWILIO.1).await;
    let config = format!("min_gap_s = 0\n{}{}", twilio(dir.path(), &fake), twilio_voice(dir.path(), &fake));
    let mut site = Site::start(dir, &config, 1).await;
    site.person("engineer", "+8613800000025", "en", Some("service")).await;
    let manager = site.person("manager", "+8613800000026", "en", Some("manager")).await;
    // The SMS at once; unanswered for 3 s, a call; the manager at 30 s if nobody answers.
    site.grade_1_policy(json!([
        {"after_s": 0, "notify": ["on_call"]},
        {"after_s": 3, "notify": ["on_call"], "via": ["voice"]},
        {"after_s": 30, "notify": ["manager"]},
    ]))
    .await;
    let alarm = site.raise_critical().await;
    let sent = fake.wait_delivered(2, Duration::from_secs(30)).await;
    let (sms, call) = (&sent[0], &sent[1]);
    assert!(sms.text.as_deref().is_some_and(|t| t.contains("reply 1")), "the SMS first: {sms:?}");
    assert!(call.text.as_deref().is_some_and(|t| t.contains("<Gather")), "then the call: {call:?}");
    let waited = call.received_at - sms.received_at;
    assert!(waited >= Duration::from_millis(2500), "the call waited for the SMS's answer: {waited:?}");
    let twiml = call.text.clone().expect("Twiml");
    let action =
        twiml.split("action=\"").nth(1).and_then(|r| r.split('"').next()).expect("action").replace("&amp;", "&");
    let webhook =
        TwilioWebhook::gather(&action, TWILIO.0, TWILIO.1, &call.provider_id, TWILIO_FROM, &call.recipient, "1");
    assert_eq!(webhook.request(&reqwest::Client::new()).send().await.expect("post").status(), 200);
    assert_eq!(site.acknowledged_by(alarm).await, "engineer (call)");
    let stopped = wait_for("the incident stopped", Duration::from_secs(10), || async {
        let outbox = site.outbox().await;
        outbox.iter().all(|m| m["status"] != "pending").then_some(outbox)
    })
    .await;
    assert!(stopped.iter().all(|m| m["person_id"] != manager), "the manager was not paged: {stopped:#?}");
}

/// A site whose grade 1 alarms are posted to one chat room at the fake `room_url`; the alarm
/// is raised and the post's text returned with the alarm's id.
async fn chat_post(kind: &str, fake: &FakeProvider, room_url: String, secret: Option<&str>) -> (Site, i64, String) {
    let dir = shared_temp_dir();
    let mut site = Site::start(dir, "min_gap_s = 0\nchat_hosts = [\"127.0.0.1\"]\n", 1).await;
    let room = json!({"gateway_id": site.stack.gateway_id, "kind": kind, "name": "North plant", "url": room_url,
                      "secret": secret, "language": "zh"});
    let (status, added) = site.api().send(Method::POST, "/api/v1/chat-rooms", room).await;
    assert_eq!(status, 200, "{added}");
    assert!(!added.to_string().contains(secret.unwrap_or("never shown")), "the secret is not shown again: {added}");
    let alarm = site.raise_critical().await;
    let post = fake.wait_delivered(1, Duration::from_secs(30)).await.remove(0);
    fake.assert_no_rejections();
    let text = post.params.clone().expect("body").to_string();
    assert!(text.contains(&format!("/#/alarm/{alarm}")), "a link to the alarm: {text}");
    assert!(text.contains("p0 过热"), "the fault, in the room's language: {text}");
    assert!(!text.contains("/a/"), "no person's acknowledgement link in a room: {text}");
    // The room's test button posts through the outbox too.
    let (status, _) =
        site.api().send(Method::POST, &format!("/api/v1/chat-rooms/{}/test", added["id"]), json!({})).await;
    assert_eq!(status, 202);
    fake.wait_delivered(2, Duration::from_secs(30)).await;
    fake.assert_no_rejections();
    (site, alarm, text)
}

#[tokio::test]
async fn chat_wecom_group_robot_gets_the_alarm_as_markdown_and_a_foreign_host_is_refused() {
    let fake = FakeProvider::wecom("wecom-key-0001").await;
    let (site, _, text) =
        chat_post("wecom", &fake, format!("{}/cgi-bin/webhook/send?key=wecom-key-0001", fake.url()), None).await;
    assert!(text.contains("\"msgtype\":\"markdown\""), "{text}");
    // A room's URL must be the robot's own host (or one the configuration adds).
    let elsewhere = json!({"kind": "wecom", "name": "x", "url": "https://example.com/cgi-bin/webhook/send?key=k"});
    let (status, body) = site.api().send(Method::POST, "/api/v1/chat-rooms", elsewhere).await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn chat_dingtalk_custom_robot_posts_signed() {
    let fake = FakeProvider::dingtalk("dingtalk-token-0001", "SECdingtalk0001").await;
    let url = format!("{}/robot/send?access_token=dingtalk-token-0001", fake.url());
    chat_post("dingtalk", &fake, url, Some("SECdingtalk0001")).await;
}

#[tokio::test]
async fn chat_feishu_custom_bot_posts_signed_in_the_body() {
    let fake = FakeProvider::feishu("feishu-token-0001", "feishu-secret-0001").await;
    let url = format!("{}/open-apis/bot/v2/hook/feishu-token-0001", fake.url());
    let (_, _, text) = chat_post("feishu", &fake, url, Some("feishu-secret-0001")).await;
    assert!(text.contains("\"msg_type\":\"post\""), "{text}");
}

#[tokio::test]
async fn chat_slack_incoming_webhook_gets_blocks_with_a_link() {
    let fake = FakeProvider::slack("/services/T000/B000/slack0001").await;
    let (_, alarm, text) =
        chat_post("slack", &fake, format!("{}/services/T000/B000/slack0001", fake.url()), None).await;
    assert!(text.contains(&format!("/#/alarm/{alarm}|")), "a Slack link: {text}");
}

impl Site {
    /// A service engineer who signs in as `login` and is the paged person `name` on the site's
    /// service team; returns their person id and a client acting as them.
    async fn signed_in_engineer(&mut self, login: &str, name: &'static str, phone: &'static str) -> (i64, Api) {
        let api = self.api();
        let (status, service) = api
            .send(Method::POST, "/api/v1/organisations", json!({"name": format!("Service {login}"), "kind": "service"}))
            .await;
        assert_eq!(status, 200, "{service}");
        let user = json!({"login": login, "name": name, "role": "engineer", "organisation_id": service["id"], "language": "en"});
        let user_id = self.stack.user(user, "the engineer's password").await;
        let (status, person) = api
            .send(
                Method::POST,
                "/api/v1/people",
                json!({"name": name, "phone": phone, "language": "en", "user_id": user_id}),
            )
            .await;
        assert_eq!(status, 200, "{person}");
        let id = person["id"].as_i64().expect("id");
        let path = format!("/api/v1/gateways/{}/contacts", self.stack.gateway_id);
        let (status, body) = api.send(Method::POST, &path, json!({"person_id": id, "role": "service"})).await;
        assert_eq!(status, 200, "{body}");
        (id, api.signed_in(login, "the engineer's password").await)
    }
}

#[tokio::test]
async fn push_reaches_each_browser_encrypted_and_signed_forgets_a_gone_one_and_falls_back_to_sms() {
    let dir = shared_temp_dir();
    let push = FakePushService::start().await;
    let mut site = Site::start(dir, "min_gap_s = 0\npush_hosts = [\"127.0.0.1\"]\n", 2).await;
    let (person, me) = site.signed_in_engineer("li@service.example", "Li Wei", "+8613800000031").await;
    let mine = me.get("/api/v1/me/paging").await.expect("my paging");
    let key = mine["push_key"].as_str().expect("the server's VAPID key");
    assert_eq!(mine["available"]["push"], false, "no browser yet: {mine}");
    // Two browsers; a URL that is no push service is refused.
    let (phone, tablet) = (push.subscribe(key), push.subscribe(key));
    for browser in [&phone, &tablet] {
        let (status, body) = me.send(Method::POST, "/api/v1/me/push", browser.json()).await;
        assert_eq!(status, 200, "{body}");
    }
    let mut elsewhere = phone.json();
    elsewhere["endpoint"] = json!("http://169.254.169.254/latest/meta-data");
    assert_eq!(me.send(Method::POST, "/api/v1/me/push", elsewhere).await.0, 400);
    let (status, body) = me
        .send(
            Method::PUT,
            "/api/v1/me/paging",
            json!({"channels": ["push", "voice"], "quiet_hours": null, "timezone": "Asia/Shanghai"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["channels"], json!(["push", "voice"]));
    push.expire(&tablet.endpoint);

    // An alarm: pushed, decrypted by the push service with the browser's keys, VAPID checked.
    let alarm = site.raise_critical().await;
    let message = push.wait_messages(1, Duration::from_secs(30)).await.remove(0);
    // The only refusals are of the gone browser (410), never of a signature or the encryption.
    assert!(push.rejections().iter().all(|r| r.starts_with("410 ")), "{:?}", push.rejections());
    assert_eq!(message.endpoint, phone.endpoint);
    assert_eq!(message.urgency.as_deref(), Some("high"), "a critical alarm is urgent");
    let shown: Value = serde_json::from_slice(&message.plaintext).expect("the notification's JSON");
    assert!(shown["title"].as_str().is_some_and(|t| t.contains("Grade 1")), "{shown}");
    assert_eq!(shown["url"], format!("/#/alarm/{alarm}"));
    // The gone browser is forgotten; voice has no provider here, so push alone was sent.
    let left = wait_for("the gone browser forgotten", Duration::from_secs(10), || async {
        let mine = me.get("/api/v1/me/paging").await?;
        (mine["subscriptions"].as_array()?.len() == 1).then_some(mine)
    })
    .await;
    assert_eq!(left["available"]["voice"], false);
    assert!(site.on_channel("sms").await.is_empty(), "push reached them; no SMS");
    // The notification's action: the signed link, marked as pressed from a push.
    let ack = shown["ack"].as_str().expect("an acknowledge action");
    let pressed = reqwest::Client::new().post(format!("{}{ack}", site.api().base)).send().await.expect("press");
    assert_eq!(pressed.status(), 200);
    assert_eq!(site.acknowledged_by(alarm).await, "Li Wei (push)");

    // With every browser gone, the next alarm's push fails over to an SMS at once.
    push.expire(&phone.endpoint);
    site.hot_rule(1, 1).await;
    site.set(&[(1, 60.0)]).await;
    let sms = wait_for("the SMS instead of the push", Duration::from_secs(30), || async {
        site.on_channel("sms").await.into_iter().find(|m| m["status"] == "sent")
    })
    .await;
    assert_eq!(sms["person_id"], person);
    let pushes = site.on_channel("push").await;
    assert!(pushes.iter().any(|m| m["status"] == "failed"), "{pushes:#?}");
}

#[tokio::test]
async fn preferences_quiet_hours_hold_minor_alarms_critical_ones_get_through_and_tests_go_out() {
    let dir = shared_temp_dir();
    let mut site = Site::start(dir, "min_gap_s = 0\n", 2).await;
    let (_, me) = site.signed_in_engineer("wu@service.example", "Wu Fang", "+8613800000032").await;
    // Quiet now, for two hours, in UTC.
    let now = chrono::Utc::now();
    let from = (now - chrono::Duration::hours(1)).format("%H:%M").to_string();
    let to = (now + chrono::Duration::hours(1)).format("%H:%M").to_string();
    let choice = json!({"channels": ["sms"], "quiet_hours": {"from": from, "to": to}, "timezone": "UTC"});
    let (status, body) = me.send(Method::PUT, "/api/v1/me/paging", choice).await;
    assert_eq!(status, 200, "{body}");
    let bad = json!({"channels": ["sms", "sms"], "quiet_hours": null, "timezone": "UTC"});
    let (status, body) = me.send(Method::PUT, "/api/v1/me/paging", bad).await;
    assert_eq!(status, 400, "{body}");
    let bad = json!({"channels": ["sms"], "quiet_hours": null, "timezone": "Mars/Olympus"});
    assert_eq!(me.send(Method::PUT, "/api/v1/me/paging", bad).await.0, 400);
    // A minor alarm waits for the end of quiet hours; a critical one goes out now.
    site.hot_rule(0, 3).await;
    site.hot_rule(1, 1).await;
    site.set(&[(0, 60.0), (1, 60.0)]).await;
    let (held, sent) = wait_for("both alarms in the outbox", Duration::from_secs(30), || async {
        let alarms = site.alarms().await;
        let minor = alarms.iter().find(|a| a["grade"] == 3)?["id"].clone();
        let outbox = site.outbox().await;
        let held = outbox.iter().find(|m| m["alarm_id"] == minor)?.clone();
        let sent = outbox.iter().find(|m| m["alarm_id"] != minor && m["status"] == "sent")?.clone();
        Some((held, sent))
    })
    .await;
    assert_eq!(held["status"], "pending", "{held}");
    assert_eq!(sent["channel"], "sms");
    // "Send me a test" goes through the outbox; a channel that cannot reach them is refused.
    let (status, test) = me.send(Method::POST, "/api/v1/me/paging/test", json!({"channel": "sms"})).await;
    assert_eq!(status, 202, "{test}");
    let id = test["id"].clone();
    wait_for("the test sent", Duration::from_secs(30), || async {
        site.outbox().await.into_iter().find(|m| m["id"] == id && m["status"] == "sent")
    })
    .await;
    let (status, body) = me.send(Method::POST, "/api/v1/me/paging/test", json!({"channel": "email"})).await;
    assert_eq!(status, 400, "{body}");
    // A user on no paging list is told so; they see no one else's preferences.
    let stranger = site.stack.api();
    assert_eq!(stranger.get_raw("/api/v1/me/paging").await.0, 400, "the operator's token has no person");
}

#[tokio::test]
async fn push_in_chromium_the_dashboard_subscribes_the_worker_shows_the_alarm_and_its_action_acknowledges() {
    let dir = shared_temp_dir();
    let push = FakePushService::start().await;
    let mut site = Site::start(dir, "min_gap_s = 0\npush_hosts = [\"127.0.0.1\"]\n", 1).await;
    let (_, me) = site.signed_in_engineer("chen@service.example", "Chen Jing", "+8613800000033").await;
    let key = me.get("/api/v1/me/paging").await.expect("my paging")["push_key"].as_str().expect("key").to_owned();
    let browser = push.subscribe(&key);
    let files = tempfile::tempdir().expect("a directory for the script's files");
    let (inbox, result) = (files.path().join("push-inbox.json"), files.path().join("result.json"));
    let base = site.api().base;
    let subscription = browser.json().to_string();
    let (inbox_path, result_path) = (inbox.to_string_lossy().into_owned(), result.to_string_lossy().into_owned());
    let env = [
        ("BASE_URL", base.as_str()),
        ("LOGIN", "chen@service.example"),
        ("PASSWORD", "the engineer's password"),
        ("FAKE_SUBSCRIPTION", subscription.as_str()),
        ("PUSH_INBOX", inbox_path.as_str()),
        ("RESULT_FILE", result_path.as_str()),
    ];
    let server_side = async {
        // The dashboard posted the browser's subscription; then an alarm, pushed and decrypted by
        // the push service (VAPID and encryption checked), handed to the browser as it would be.
        wait_for("the dashboard subscribed", Duration::from_secs(90), || async {
            let mine = me.get("/api/v1/me/paging").await?;
            (mine["subscriptions"].as_array()?.len() == 1).then_some(())
        })
        .await;
        let alarm = site.raise_critical().await;
        let message = push.wait_messages(1, Duration::from_secs(30)).await.remove(0);
        assert!(push.rejections().is_empty(), "{:?}", push.rejections());
        std::fs::write(&inbox, &message.plaintext).expect("hand the payload to the browser");
        alarm
    };
    let (_, alarm) = tokio::join!(chillcloud_tests::harness::run_browser_script("push.mjs", &env), server_side);
    assert_eq!(site.acknowledged_by(alarm).await, "Chen Jing (push)");
    let done: Value = serde_json::from_slice(&std::fs::read(&result).expect("the script's result")).expect("JSON");
    assert_eq!(done["acknowledged_tag"], format!("alarm-{alarm}"));
}

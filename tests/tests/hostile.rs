//! R5 of docs/benchmarks.md against the real server, database and broker: what one hostile gateway,
//! an anonymous flood or one customer's maximal requests can do must stay theirs. Each test
//! reproduces a break found by trying (issue 15) and checks that everyone else is served
//! throughout.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use chillcloud_proto::MessageKind;
use chillcloud_tests::harness::{FakeGateway, Stack, numbered_birth, wait_for};
use prost::Message;
use reqwest::Method;
use serde_json::{Value, json};

/// These tests load the machine on purpose and time how others are served: they take turns, as
/// on two cores one's flood would be the other's slowness.
static LOADING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The second site: a well-behaved gateway whose readings must keep being stored.
const OTHER: &str = "gw-other";

/// A well-behaved gateway and the check that what it sends is stored within 2 s.
struct Probe {
    gateway: FakeGateway,
    pool: sqlx::PgPool,
    value: f64,
}

impl Probe {
    async fn start(stack: &Stack) -> Self {
        let (id, password) = stack.more_gateways.iter().find(|(id, _)| id == OTHER).expect("gw-other").clone();
        let gateway = FakeGateway::connect(stack.broker.address().port(), &id, &password, 2).await;
        Self { gateway, pool: stack.postgres.pool().await, value: 0.0 }
    }

    /// Publishes a new value and waits at most 2 s for it to be the stored latest one.
    async fn stored_within_2s(&mut self) {
        self.value += 1.0;
        let data = self.gateway.data_at(chrono::Utc::now().timestamp_millis(), &[(0, self.value)]);
        self.gateway.publish_data(&data).await;
        let (pool, value) = (&self.pool, self.value);
        wait_for("the other gateway's reading stored within 2 s", Duration::from_secs(2), || async move {
            let stored: Option<f64> = sqlx::query_scalar(
                "select l.value from latest_readings l join points p on p.id = l.point_id
                 join units u on u.id = p.unit_id where u.gateway_id = $1 and p.name = 'p0'",
            )
            .bind(OTHER)
            .fetch_optional(pool)
            .await
            .ok()
            .flatten();
            (stored == Some(value)).then_some(())
        })
        .await;
    }
}

impl Probe {
    /// `times` readings in a row stored within 2 s each, a fifth of a second apart.
    async fn keeps_storing(&mut self, times: usize) {
        for _ in 0..times {
            self.stored_within_2s().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Two sites: a stack with `gw-other` besides `gw-stack`, the hostile gateway on `gw-stack`, and
/// the probe on `gw-other`, its first reading already stored.
async fn two_sites() -> (Stack, sqlx::PgPool, FakeGateway, Probe) {
    let stack = Stack::start_with_sites(&[OTHER], &[]).await;
    let pool = stack.postgres.pool().await;
    let hostile = stack.gateway(2).await;
    let mut probe = Probe::start(&stack).await;
    probe.stored_within_2s().await;
    (stack, pool, hostile, probe)
}

/// Waits until `count` messages are dead-lettered.
async fn wait_dead_letters(pool: &sqlx::PgPool, count: usize, what: &str) {
    wait_for(what, Duration::from_secs(30), || async { (dead_letters(pool).await.len() == count).then_some(()) }).await;
}

/// A value of the server's metrics.
async fn metric(stack: &Stack, name: &str) -> f64 {
    stack.api().metric(name).await
}

async fn dead_letters(pool: &sqlx::PgPool) -> Vec<String> {
    sqlx::query_scalar("select reason from dead_letters order by id").fetch_all(pool).await.expect("dead letters")
}

fn server_rss(stack: &Stack) -> u64 {
    stack.server.as_ref().expect("server").rss_bytes()
}

async fn restart_server(stack: &mut Stack) {
    let status = stack.server.as_mut().expect("server").terminate(Duration::from_secs(20)).await;
    assert!(status.is_some(), "the server stops on SIGTERM");
    stack.start_server().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn r5_an_oversized_message_is_dead_lettered_and_ingest_goes_on() {
    let _turn = LOADING.lock().await;
    let (mut stack, pool, mut hostile, mut probe) = two_sites().await;

    // Past the payload limit, within the packet limit: it reaches the server, which refuses it,
    // keeps a sample and acknowledges it.
    hostile.publish_raw(MessageKind::Data, vec![0x55; 600_000]).await;
    hostile.wait_acked(Duration::from_secs(30)).await;
    wait_dead_letters(&pool, 1, "the 600 KB message dead-lettered").await;
    probe.stored_within_2s().await;
    assert_eq!(metric(&stack, "chillcloud_mqtt_messages_rejected_total").await, 1.0);

    // 10 MB: the broker drops the sender's connection (and again at each of its reconnections,
    // which resend it); nothing of it reaches the server, and nobody else notices.
    hostile.publish_raw(MessageKind::Data, vec![0x55; 10_000_000]).await;
    probe.keeps_storing(10).await;

    // A restart changes nothing: nothing poisonous waits in the server's session.
    restart_server(&mut stack).await;
    probe.keeps_storing(10).await;
    let reasons = dead_letters(&pool).await;
    assert_eq!(reasons.len(), 1, "the refused message was acknowledged, not redelivered: {reasons:?}");
    assert!(reasons[0].contains("payload of 600000 bytes exceeds the limit"), "{reasons:?}");
    let (status, health) = stack.api().get_raw("/health").await;
    assert_eq!(status, 200, "{health}");
    drop(hostile);
}

#[tokio::test(flavor = "multi_thread")]
async fn r5_a_birth_with_huge_aliases_is_refused_and_the_server_stays_up() {
    let _turn = LOADING.lock().await;
    let (mut stack, pool, mut hostile, mut probe) = two_sites().await;

    // 53 bytes that once asked for 96 GiB, retained so that every subscription gets it again.
    let mut birth = numbered_birth(2, 1);
    birth.devices[0].points[0].alias = 5_000_000;
    hostile.publish_retained(MessageKind::Birth, birth.encode_to_vec()).await;
    // A site of 1,001 units, past the bound per gateway.
    let mut many = numbered_birth(3, 1);
    many.devices = (0..1_001u32)
        .map(|n| {
            let mut device = many.devices[0].clone();
            device.id = format!("chiller-{n}");
            device.points[0].alias = n;
            device
        })
        .collect();
    hostile.publish_raw(MessageKind::Birth, many.encode_to_vec()).await;
    birth.session = 4;
    birth.devices[0].points[0].alias = u32::MAX;
    hostile.publish_retained(MessageKind::Birth, birth.encode_to_vec()).await;
    hostile.wait_acked(Duration::from_secs(30)).await;
    wait_dead_letters(&pool, 3, "the three births refused").await;
    let reasons = dead_letters(&pool).await;
    assert!(reasons[0].contains("alias 5000000 of point \"p0\" is not below the birth's 1 points"), "{reasons:?}");
    assert!(reasons[1].contains("would have 1001 units"), "{reasons:?}");
    assert!(reasons[2].contains("alias 4294967295"), "{reasons:?}");
    probe.stored_within_2s().await;
    assert!(server_rss(&stack) < 200 << 20, "server RSS {} MB", server_rss(&stack) >> 20);

    // The retained birth comes again with the new subscription: refused again, nothing more.
    restart_server(&mut stack).await;
    wait_dead_letters(&pool, 4, "the retained birth refused again").await;
    probe.stored_within_2s().await;
    let units: i64 = sqlx::query_scalar("select count(*) from units where gateway_id = 'gw-stack'")
        .fetch_one(&pool)
        .await
        .expect("units");
    assert_eq!(units, 1, "nothing of the refused births is stored");
    assert!(server_rss(&stack) < 200 << 20, "server RSS {} MB", server_rss(&stack) >> 20);
}

/// An anonymous client with a login of its own: a fresh connection from `address`, closed after
/// `timeout`.
async fn sign_in(
    base: &str,
    address: std::net::IpAddr,
    login: &str,
    password: &str,
    device: Option<&str>,
    timeout: Duration,
) -> Result<reqwest::Response, reqwest::Error> {
    let client = reqwest::Client::builder().local_address(address).timeout(timeout).build().expect("client");
    let mut request =
        client.post(format!("{base}/api/v1/session")).json(&json!({"login": login, "password": password}));
    if let Some(device) = device {
        request = request.header("cookie", device);
    }
    request.send().await
}

/// The `name=value` pair of the cookie `name` an answer sets.
fn set_cookie(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.strip_prefix(name).is_some_and(|rest| rest.starts_with('=')))
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("a cookie {name}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn r5_a_sign_in_flood_keeps_memory_bounded_and_real_users_signing_in() {
    let _turn = LOADING.lock().await;
    let stack = Stack::start().await;
    let base = format!("http://{}", stack.http);
    let local = std::net::IpAddr::from([127, 0, 0, 1]);
    stack.site_owner("real@example.com", "Real User", "the real password").await;
    let first = sign_in(&base, local, "real@example.com", "the real password", None, Duration::from_secs(10))
        .await
        .expect("sign in");
    assert_eq!(first.status(), 200);
    let device = set_cookie(&first, "chillcloud_device");
    let before = server_rss(&stack);

    // 48 clients from 2,500 loopback addresses, each with a login of its own, each giving up
    // after 0.3 s (once 6.8 GB of password checks left behind by clients that had gone).
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let mut flood = tokio::task::JoinSet::new();
    for worker in 0..48u64 {
        let (stop, sent, base) = (stop.clone(), sent.clone(), base.clone());
        flood.spawn(async move {
            let mut n = worker;
            while !stop.load(Ordering::Relaxed) {
                let address = std::net::IpAddr::from([127, 0, 1 + (n / 250 % 10) as u8, 1 + (n % 250) as u8]);
                let login = format!("flood-{n}@example.com");
                let _ = sign_in(&base, address, &login, "guess", None, Duration::from_millis(300)).await;
                sent.fetch_add(1, Ordering::Relaxed);
                n += 48;
            }
        });
    }
    let mut peak = 0;
    let mut signed_in_during = 0;
    let flood_until = tokio::time::Instant::now() + Duration::from_secs(15);
    while tokio::time::Instant::now() < flood_until {
        peak = peak.max(server_rss(&stack));
        let started = tokio::time::Instant::now();
        let response =
            sign_in(&base, local, "real@example.com", "the real password", Some(&device), Duration::from_secs(5)).await;
        let status = response.map(|r| r.status().as_u16()).unwrap_or(0);
        assert_eq!(status, 200, "the real user's browser during the flood (after {:?})", started.elapsed());
        signed_in_during += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.store(true, Ordering::Relaxed);
    flood.join_all().await;
    peak = peak.max(server_rss(&stack));
    let sent = sent.load(Ordering::Relaxed);
    assert!(sent >= 2_000, "the flood sent only {sent} sign-ins");
    assert!(signed_in_during >= 10, "{signed_in_during}");
    assert!(peak < 200 << 20, "server RSS peaked at {} MB", peak >> 20);

    // Afterwards, a browser that never signed in before gets in too, from a fresh address.
    let elsewhere = std::net::IpAddr::from([127, 0, 200, 1]);
    wait_for("a fresh browser's sign-in", Duration::from_secs(10), || async {
        let response = sign_in(&base, elsewhere, "real@example.com", "the real password", None, Duration::from_secs(5))
            .await
            .ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
    let refused = metric(&stack, "chillcloud_http_requests_refused_by_bounds_total").await;
    println!(
        "flood: {sent} sign-ins sent, {refused} refused by bounds, server RSS {} MB before, peak {} MB",
        before >> 20,
        peak >> 20
    );
}

/// A customer organisation owning `gateway`, and its owner signed in: the session cookie.
async fn customer(stack: &Stack, gateway: &str, login: &str) -> String {
    stack.owner_of(gateway, login, login, "a long password").await;
    let base = format!("http://{}", stack.http);
    let local = std::net::IpAddr::from([127, 0, 0, 1]);
    let response =
        sign_in(&base, local, login, "a long password", None, Duration::from_secs(10)).await.expect("sign in");
    assert_eq!(response.status(), 200);
    set_cookie(&response, "chillcloud_session")
}

#[tokio::test(flavor = "multi_thread")]
async fn r5_history_requests_are_bounded_and_other_customers_are_served() {
    let _turn = LOADING.lock().await;
    const POINTS: u32 = 200;
    let stack = Stack::start_with_sites(&[OTHER], &[]).await;
    let _a_gateway = stack.gateway(POINTS).await;
    let _other = Probe::start(&stack).await;
    let api = stack.api();
    wait_for("both units registered", Duration::from_secs(30), || async {
        api.get("/api/v1/units").await.filter(|u| u.as_array().is_some_and(|a| a.len() == 2))
    })
    .await;
    let a_cookie = customer(&stack, stack.gateway_id, "a@example.com").await;
    let b_cookie = customer(&stack, OTHER, "b@example.com").await;
    let base = format!("http://{}", stack.http);
    let client = reqwest::Client::new();
    let units: Value = client
        .get(format!("{base}/api/v1/units"))
        .header("cookie", &a_cookie)
        .send()
        .await
        .expect("units")
        .json()
        .await
        .expect("json");
    let a_unit = units[0]["id"].as_i64().expect("A's unit");

    // Eleven years of hours for 200 points (once 255 MB of JSON in 16 s): refused at once.
    let everything =
        format!("{base}/api/v1/units/{a_unit}/history?bucket=1h&from=2015-08-02T00:00:00Z&to=2026-12-01T00:00:00Z");
    let refused = client.get(&everything).header("cookie", &a_cookie).send().await.expect("history");
    assert_eq!(refused.status(), 422);
    let body: Value = refused.json().await.expect("json");
    assert!(body["error"].as_str().expect("error").contains("more than 100000"), "{body}");
    let csv = client.get(format!("{everything}&format=csv")).header("cookie", &a_cookie).send().await;
    assert_eq!(csv.expect("csv").status(), 422);

    // The most one answer may hold: 500 hours of 200 points, 100,000 rows; eight at once, half
    // of them CSV, while B keeps asking for its units.
    let maximal = format!(
        "{base}/api/v1/units/{a_unit}/history?bucket=1h&from=2026-06-01T00:00:00Z&to={}",
        (chrono::DateTime::parse_from_rfc3339("2026-06-01T00:00:00Z").expect("time") + chrono::TimeDelta::hours(500))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let mut heavy = tokio::task::JoinSet::new();
    for n in 0..8 {
        let url = if n % 2 == 0 { maximal.clone() } else { format!("{maximal}&format=csv") };
        let (client, cookie) = (client.clone(), a_cookie.clone());
        heavy.spawn(async move {
            let response = client.get(&url).header("cookie", &cookie).send().await.expect("history");
            let status = response.status().as_u16();
            let body = response.text().await.expect("body");
            (n % 2 == 1, status, body)
        });
    }
    let mut slowest = Duration::ZERO;
    let mut b_requests = 0;
    while !heavy.is_empty() {
        let started = tokio::time::Instant::now();
        let response = tokio::time::timeout(
            Duration::from_secs(1),
            client.get(format!("{base}/api/v1/units")).header("cookie", &b_cookie).send(),
        )
        .await
        .expect("B's units within 1 s while A's history requests run")
        .expect("B's units");
        assert_eq!(response.status(), 200);
        slowest = slowest.max(started.elapsed());
        b_requests += 1;
        while let Some(done) = heavy.try_join_next() {
            let (is_csv, status, body) = done.expect("history task");
            match status {
                200 if is_csv => assert_eq!(body.lines().count(), 100_001, "CSV lines"),
                // Counted, not parsed: parsing 12 MB here would load the cores B is timed on.
                200 => assert_eq!(body.matches("\"point_id\"").count(), 100_000, "JSON rows"),
                503 => assert!(body.contains("too many history requests"), "{body}"),
                other => panic!("history answered {other}: {body}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("B's units: {b_requests} requests, slowest {slowest:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn r5_a_stalled_ingest_turns_health_unhealthy_and_pages_the_service_team() {
    let mut stack = Stack::start().await;
    let api = stack.api();
    api.add_service_engineer(stack.gateway_id, "+8613800000009").await;
    let service_pages = || api.service_pages();

    // The broker goes away: a restart would be ridden out, 30 s is a stall.
    stack.broker.stop().await;
    let health = wait_for("/health to say ingest is stalled", Duration::from_secs(60), || async {
        let (status, body) = api.get_raw("/health").await;
        (status == 503).then_some(body)
    })
    .await;
    assert!(health.contains("stalled for") && health.contains("not subscribed at the broker"), "{health}");
    let page = wait_for("the service alarm sent", Duration::from_secs(30), || async {
        service_pages().await.into_iter().find(|m| m["status"] == "sent")
    })
    .await;
    let body = page["body"].as_str().expect("body");
    assert!(body.contains("service alarm (grade 3)") && body.contains("ingest stalled (not subscribed"), "{page}");
    let stalled = metric(&stack, "chillcloud_ingest_stalled_seconds").await;
    assert!(stalled >= 30.0, "{stalled}");

    // Back: healthy again, and one page for the one stall.
    stack.broker.resume().await;
    wait_for("/health to be healthy again", Duration::from_secs(60), || async {
        let (status, body) = api.get_raw("/health").await;
        (status == 200 && body.contains("\"ingest\":\"ok\"")).then_some(())
    })
    .await;
    assert_eq!(service_pages().await.len(), 1);
}

/// One message of a hostile gateway's stream: valid, truncated, oversized, or with extreme
/// aliases, counts, times and texts, on every topic a gateway may publish to.
fn hostile_message(rng: &mut rand::rngs::StdRng, gateway: &mut FakeGateway) -> (MessageKind, Vec<u8>) {
    use chillcloud_proto::{CommandResult, Death, DroppedInterval, Reading, Value as Wire};
    use rand::Rng;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let times = [now_ms, 0, i64::MIN, i64::MAX, now_ms + 86_400_000, 946_684_800_000 - 1];
    let aliases = [0, 1, 2, u32::MAX, 5_000_000];
    let mut data = gateway.data_at(now_ms, &[(0, rng.random_range(-100.0..100.0)), (1, 1.0)]);
    let (kind, payload) = match rng.random_range(0..10) {
        0..=2 => (MessageKind::Data, data.encode_to_vec()),
        3 => {
            data.base_time_ms = times[rng.random_range(0..times.len())];
            data.readings = (0..rng.random_range(0..5_000))
                .map(|n| Reading {
                    alias: aliases[n % aliases.len()],
                    offset_ms: [0, i64::MAX, i64::MIN, n as i64][n % 4],
                    quality: rng.random_range(0..4),
                    value: Some(if n % 3 == 0 { Wire::Real(f64::NAN) } else { Wire::Scaled(i64::MAX) }),
                })
                .collect();
            data.dropped = vec![DroppedInterval { from_ms: i64::MIN, to_ms: now_ms, readings: u64::MAX }];
            (MessageKind::Data, data.encode_to_vec())
        }
        4 => {
            let mut birth = numbered_birth(rng.random_range(1..4), rng.random_range(0..50));
            match rng.random_range(0..4) {
                0 => birth.devices[0].points.iter_mut().for_each(|p| p.alias = aliases[rng.random_range(0..5)]),
                1 => birth.devices[0].id = "https://evil.example/x".into(),
                2 => birth.devices[0].model = "m".repeat(10_000),
                _ => {}
            }
            (MessageKind::Birth, birth.encode_to_vec())
        }
        5 => (MessageKind::Death, Death { session: rng.random_range(0..5) }.encode_to_vec()),
        6 => {
            let result = CommandResult { id: "x".repeat(rng.random_range(0..2_000)), status: 1, ..Default::default() };
            (MessageKind::CommandResult, result.encode_to_vec())
        }
        7 => {
            let whole = data.encode_to_vec();
            let cut = rng.random_range(0..whole.len());
            (MessageKind::Data, whole[..cut].to_vec())
        }
        8 => {
            let kinds = [MessageKind::Birth, MessageKind::Data, MessageKind::Death, MessageKind::CommandResult];
            let bytes = (0..rng.random_range(0..512)).map(|_| rng.random()).collect();
            (kinds[rng.random_range(0..kinds.len())], bytes)
        }
        _ => (MessageKind::Data, vec![0x55; rng.random_range(300_000..900_000)]),
    };
    (kind, payload)
}

#[tokio::test(flavor = "multi_thread")]
async fn r5_hostile_gateway_soak() {
    use rand::SeedableRng;
    let _turn = LOADING.lock().await;
    let (stack, pool, mut hostile, mut probe) = two_sites().await;
    let api = stack.api();
    // The other site: a person on its service team and a rule that pages them.
    let person = stack.api().add_service_engineer(OTHER, "+8613800000007").await;
    let rule = json!({"title": "Hot", "title_zh": "过热", "grade": 2, "kind": "condition", "when": "p0 > 500"});
    let (status, body) = api.send(Method::PUT, &format!("/api/v1/gateways/{OTHER}/rules/hot"), rule).await;
    assert_eq!(status, 200, "{body}");

    // A bounded stream for 60 s: about 40 messages a second, the same every run.
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(15);
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (kind, payload) = hostile_message(&mut rng, &mut hostile);
                hostile.publish_raw(kind, payload).await;
                sent += 1;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            sent
        })
    };
    let started = tokio::time::Instant::now();
    let mut peak = 0;
    let mut alarm_raised = false;
    while started.elapsed() < Duration::from_secs(60) {
        probe.stored_within_2s().await;
        peak = peak.max(server_rss(&stack));
        if !alarm_raised && started.elapsed() > Duration::from_secs(20) {
            // The other site's fault is detected and paged while the stream goes on.
            let data = probe.gateway.data_at(chrono::Utc::now().timestamp_millis(), &[(0, 600.0)]);
            probe.gateway.publish_data(&data).await;
            wait_for("the other site's page sent", Duration::from_secs(30), || async {
                let outbox = api.get("/api/v1/outbox?limit=1000").await?;
                outbox.as_array()?.iter().any(|m| m["status"] == "sent" && m["person_id"] == person).then_some(())
            })
            .await;
            alarm_raised = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let sent = flood.await.expect("the hostile stream");
    assert!(alarm_raised);
    assert!(sent >= 1_000, "only {sent} hostile messages");
    assert!(peak < 200 << 20, "server RSS peaked at {} MB", peak >> 20);

    // Nothing stored is wrong: the other site's readings are exactly the probe's; whatever the
    // hostile gateway got stored is within the times and values the server accepts, its site
    // within its bounds, its names plain.
    let probe_values: Vec<f64> = sqlx::query_scalar(
        "select r.value from readings r join points p on p.id = r.point_id join units u on u.id = p.unit_id
         where u.gateway_id = $1 and p.name = 'p0' and not p.derived order by r.ts",
    )
    .bind(OTHER)
    .fetch_all(&pool)
    .await
    .expect("probe readings");
    assert!(probe_values.iter().all(|v| *v == 600.0 || (v.fract() == 0.0 && *v >= 1.0 && *v <= probe.value)));
    assert_eq!(probe_values.len() as f64, probe.value + 1.0, "each probe once, and the fault");
    let (wrong,): (i64,) = sqlx::query_as(
        "select count(*) from readings r join points p on p.id = r.point_id join units u on u.id = p.unit_id
         where u.gateway_id = 'gw-stack' and (r.ts < '2000-01-01' or r.ts > now() + interval '5 minutes'
               or r.value = 'NaN'::float8 or r.value in ('Infinity'::float8, '-Infinity'::float8))",
    )
    .fetch_one(&pool)
    .await
    .expect("hostile readings");
    assert_eq!(wrong, 0);
    let names: Vec<String> = sqlx::query_scalar(
        "select u.device_key from units u where u.gateway_id = 'gw-stack'
         union all select p.name from points p join units u on u.id = p.unit_id where u.gateway_id = 'gw-stack'",
    )
    .fetch_all(&pool)
    .await
    .expect("names");
    assert!(names.iter().all(|n| chillcloud_proto::is_plain_name(n)), "{names:?}");
    assert!(dead_letters(&pool).await.len() <= 10_000);
    let rejected = metric(&stack, "chillcloud_mqtt_messages_rejected_total").await;
    assert!(rejected > 100.0, "{rejected}");
    assert_eq!(api.get_raw("/health").await.0, 200);
    println!("soak: {sent} hostile messages, {rejected} refused, server RSS peak {} MB", peak >> 20);
}

#[tokio::test(flavor = "multi_thread")]
async fn r5_slow_headers_are_cut_and_every_answer_carries_its_security_headers() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stack = Stack::start().await;
    // A client that never finishes its headers is cut off (once 200 such connections were held
    // for 60 s and more).
    let mut slow = tokio::net::TcpStream::connect(stack.http).await.expect("connect");
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").await.expect("write");
    let started = tokio::time::Instant::now();
    let mut buffer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), slow.read_to_end(&mut buffer)).await;
    assert!(read.is_ok(), "the connection was still open after 30 s");
    assert!(started.elapsed() < Duration::from_secs(15), "cut after {:?}", started.elapsed());

    let base = format!("http://{}", stack.http);
    let client = reqwest::Client::new();
    let health = client.get(format!("{base}/health")).send().await.expect("health");
    assert_eq!(health.headers()["x-content-type-options"], "nosniff");
    assert_eq!(health.headers()["referrer-policy"], "no-referrer");
    // Server-rendered pages without a policy of their own get one, and nothing frames any page.
    for path in ["/a/not-a-link", "/invite/not-an-invitation", "/"] {
        let page = client.get(format!("{base}{path}")).send().await.expect("page");
        let policy = page.headers().get("content-security-policy").map(|v| v.to_str().expect("text").to_owned());
        assert!(policy.as_deref().is_some_and(|p| p.contains("frame-ancestors 'none'")), "{path}: {policy:?}");
    }
    // The scheme of a bearer token is case-insensitive.
    let units =
        client.get(format!("{base}/api/v1/units")).header("authorization", format!("bearer {}", Stack::API_TOKEN));
    assert_eq!(units.send().await.expect("units").status(), 200);
}

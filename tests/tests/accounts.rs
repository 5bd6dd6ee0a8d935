//! Accounts and tenant isolation through the real server, database and broker: S1 of
//! docs/benchmarks.md (owner A against owner B's units, alarms, history and tickets through every
//! endpoint; gateway A publishing as gateway B), sign-in with sessions and CSRF, the rate
//! limit, invitations, roles, API tokens and the audit log.

use std::time::Duration;

use chillcloud_tests::harness::{FakeGateway, Stack, wait_for};
use prost::Message;
use reqwest::Method;
use serde_json::{Value, json};

/// A browser-like client: a session cookie and its CSRF token, and the device cookie the
/// sign-in set.
struct Session {
    base: String,
    cookie: String,
    csrf: String,
    device: String,
    client: reqwest::Client,
}

impl Session {
    async fn sign_in(base: &str, login: &str, password: &str) -> Result<Self, u16> {
        Self::sign_in_from(base, login, password, None).await
    }

    /// Signs in from a browser holding `device` (a device cookie pair), if any.
    async fn sign_in_from(base: &str, login: &str, password: &str, device: Option<&str>) -> Result<Self, u16> {
        let client = reqwest::Client::new();
        let mut request =
            client.post(format!("{base}/api/v1/session")).json(&json!({"login": login, "password": password}));
        if let Some(device) = device {
            request = request.header("cookie", device);
        }
        let response = request.send().await.expect("sign in");
        if !response.status().is_success() {
            return Err(response.status().as_u16());
        }
        let cookies: Vec<String> =
            response.headers().get_all("set-cookie").iter().map(|v| v.to_str().expect("cookie").to_owned()).collect();
        assert!(cookies.iter().all(|c| c.contains("HttpOnly") && c.contains("SameSite=Strict")), "{cookies:?}");
        let pair = |name: &str| {
            let cookie =
                cookies.iter().find(|c| c.starts_with(name)).unwrap_or_else(|| panic!("{name} in {cookies:?}"));
            cookie.split(';').next().expect("cookie pair").to_owned()
        };
        let (cookie, device) = (pair("chillcloud_session="), pair("chillcloud_device="));
        let body: Value = response.json().await.expect("session body");
        let csrf = body["csrf_token"].as_str().expect("csrf token").to_owned();
        Ok(Self { base: base.to_owned(), cookie, csrf, device, client })
    }

    /// Sends a request with the cookie (and the CSRF token when `csrf`); status and JSON.
    async fn request(&self, method: Method, path: &str, body: Option<Value>, csrf: bool) -> (u16, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base)).header("cookie", &self.cookie);
        if csrf {
            request = request.header("x-csrf-token", &self.csrf);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.request(Method::GET, path, None, false).await
    }
}

/// Invites a user through the API, takes up the invitation, signs in.
async fn user(stack: &Stack, login: &str, role: &str, organisation: i64, password: &str) -> Session {
    let (status, invited) = stack
        .api()
        .send(
            Method::POST,
            "/api/v1/users",
            json!({"login": login, "name": login, "role": role, "organisation_id": organisation}),
        )
        .await;
    assert_eq!(status, 200, "{invited}");
    let url = invited["invitation_url"].as_str().expect("invitation url").to_owned();
    let path = url.split_once("/invite/").map(|(_, secret)| format!("/invite/{secret}")).expect("an invitation path");
    let base = format!("http://{}", stack.http);
    let client = reqwest::Client::new();
    let page = client.get(format!("{base}{path}")).send().await.expect("invitation page");
    assert_eq!(page.status(), 200);
    let short = client.post(format!("{base}{path}")).form(&[("password", "short")]).send().await.expect("post");
    assert_eq!(short.status(), 400, "a short password is refused");
    let set = client.post(format!("{base}{path}")).form(&[("password", password)]).send().await.expect("post");
    assert_eq!(set.status(), 200);
    let again = client.post(format!("{base}{path}")).form(&[("password", "another password")]).send().await;
    assert_eq!(again.expect("post").status(), 404, "an invitation works once");
    Session::sign_in(&base, login, password).await.unwrap_or_else(|status| panic!("sign-in of {login}: {status}"))
}

async fn organisation(stack: &Stack, name: &str, kind: &str) -> i64 {
    let (status, body) =
        stack.api().send(Method::POST, "/api/v1/organisations", json!({"name": name, "kind": kind})).await;
    assert_eq!(status, 200, "{body}");
    body["id"].as_i64().expect("id")
}

/// A site with one unit whose point p0 reads `value`, owned by `organisation`, with an open
/// alarm (p0 above 50) and a ticket. Returns (unit id, point id, alarm id, ticket id).
async fn site(stack: &Stack, gateway: &mut FakeGateway, id: &str, organisation: i64) -> (i64, i64, i64, i64) {
    let api = stack.api();
    let (status, body) = api
        .send(Method::PUT, &format!("/api/v1/gateways/{id}/organisation"), json!({"organisation_id": organisation}))
        .await;
    assert_eq!(status, 204, "{body}");
    let rule = json!({"title": "Hot", "title_zh": "过热", "grade": 2, "kind": "condition", "when": "p0 > 50"});
    let (status, body) = api.send(Method::PUT, &format!("/api/v1/gateways/{id}/rules/hot"), rule).await;
    assert_eq!(status, 200, "{body}");
    let data = gateway.data_at(chrono::Utc::now().timestamp_millis(), &[(0, 60.0), (1, 1.0)]);
    gateway.publish_data(&data).await;
    let alarm = wait_for("the site's alarm", Duration::from_secs(30), || async {
        let alarms = api.get(&format!("/api/v1/alarms?gateway={id}")).await?;
        alarms.as_array()?.first().cloned()
    })
    .await;
    let unit = alarm["unit_id"].as_i64().expect("a unit alarm");
    let detail = api.get(&format!("/api/v1/units/{unit}")).await.expect("unit");
    let point = detail["points"][0]["id"].as_i64().expect("point");
    let (status, ticket) = api
        .send(Method::POST, "/api/v1/tickets", json!({"gateway_id": id, "unit_id": unit, "grade": 2, "title": "Hot"}))
        .await;
    assert_eq!(status, 200, "{ticket}");
    (unit, point, alarm["id"].as_i64().expect("alarm id"), ticket["id"].as_i64().expect("ticket id"))
}

#[tokio::test]
async fn s1_an_owner_reads_and_acts_on_their_own_sites_only_through_every_endpoint() {
    let stack = Stack::start_with_sites(&["gw-b"], &[]).await;
    let mut gateway_a = stack.gateway(2).await;
    let (b_id, b_password) = stack.more_gateways[0].clone();
    let mut gateway_b = FakeGateway::connect(stack.broker.address().port(), &b_id, &b_password, 2).await;
    let customer_a = organisation(&stack, "Customer A", "customer").await;
    let customer_b = organisation(&stack, "Customer B", "customer").await;
    let (a_unit, a_point, a_alarm, a_ticket) = site(&stack, &mut gateway_a, stack.gateway_id, customer_a).await;
    let (b_unit, b_point, b_alarm, b_ticket) = site(&stack, &mut gateway_b, &b_id, customer_b).await;
    let owner_a = user(&stack, "owner-a@example.com", "owner", customer_a, "owner A's password").await;
    // A signed remote-doctor report for each site's unit, by a service engineer.
    let service = organisation(&stack, "Service", "service").await;
    let engineer = user(&stack, "engineer@example.com", "engineer", service, "the engineer's password").await;
    let mut reports = Vec::new();
    for unit in [a_unit, b_unit] {
        let now = chrono::Utc::now();
        let period = json!({"from": (now - chrono::Duration::days(7)).to_rfc3339(), "to": now.to_rfc3339()});
        let (status, draft) =
            engineer.request(Method::POST, &format!("/api/v1/units/{unit}/reports"), Some(period), true).await;
        assert_eq!(status, 200, "{draft}");
        let signed = format!("/api/v1/reports/{}/sign", draft["id"]);
        let (status, report) = engineer.request(Method::POST, &signed, None, true).await;
        assert_eq!((status, report["status"].as_str()), (200, Some("signed")), "{report}");
        reports.push(report["id"].as_i64().expect("report id"));
    }
    let (a_report, b_report) = (reports[0], reports[1]);

    // Lists hold A's and nothing of B's.
    let (_, units) = owner_a.get("/api/v1/units").await;
    let ids: Vec<i64> = units.as_array().expect("units").iter().filter_map(|u| u["id"].as_i64()).collect();
    assert_eq!(ids, [a_unit], "{units}");
    assert_eq!(units[0]["status"], "alarm", "{units}");
    let ids = |alarms: &Value| -> Vec<i64> {
        alarms.as_array().expect("alarms").iter().filter_map(|a| a["id"].as_i64()).collect()
    };
    let all = stack.api().get("/api/v1/alarms?state=all").await.expect("every alarm");
    let (_, alarms) = owner_a.get("/api/v1/alarms?state=all").await;
    let a_alarms: Vec<i64> = ids(&all)
        .into_iter()
        .zip(all.as_array().expect("alarms"))
        .filter(|(_, a)| a["gateway_id"] == stack.gateway_id)
        .map(|(id, _)| id)
        .collect();
    assert!(ids(&all).contains(&b_alarm) && a_alarms.contains(&a_alarm), "{all:#}");
    assert_eq!(ids(&alarms), a_alarms, "{alarms:#}");
    let (_, alarms) = owner_a.get(&format!("/api/v1/alarms?gateway={b_id}")).await;
    assert_eq!(alarms, json!([]), "filtering by B's site finds nothing");
    // Grade 2 alarms open tickets too: A's are the hand-opened one and its alarm's.
    let all = stack.api().get("/api/v1/tickets?state=all").await.expect("every ticket");
    let a_tickets: Vec<i64> = all
        .as_array()
        .expect("tickets")
        .iter()
        .filter(|t| t["gateway_id"] == stack.gateway_id)
        .filter_map(|t| t["id"].as_i64())
        .collect();
    assert!(a_tickets.contains(&a_ticket) && ids(&all).contains(&b_ticket), "{all:#}");
    let (_, tickets) = owner_a.get("/api/v1/tickets?state=all").await;
    assert_eq!(ids(&tickets), a_tickets, "{tickets:#}");

    // Every endpoint: A's own resources answer, B's are not found, the service organisation's
    // business is forbidden.
    let reads = [
        (format!("/api/v1/units/{a_unit}"), format!("/api/v1/units/{b_unit}")),
        (format!("/api/v1/units/{a_unit}/history"), format!("/api/v1/units/{b_unit}/history")),
        (format!("/api/v1/units/{a_unit}/history?format=csv"), format!("/api/v1/units/{b_unit}/history?format=csv")),
        (format!("/api/v1/points/{a_point}/history"), format!("/api/v1/points/{b_point}/history")),
        (format!("/api/v1/alarms/{a_alarm}"), format!("/api/v1/alarms/{b_alarm}")),
        (format!("/api/v1/tickets/{a_ticket}"), format!("/api/v1/tickets/{b_ticket}")),
        (format!("/api/v1/units/{a_unit}/reports"), format!("/api/v1/units/{b_unit}/reports")),
        (format!("/api/v1/reports/{a_report}"), format!("/api/v1/reports/{b_report}")),
        (format!("/api/v1/reports/{a_report}/pdf"), format!("/api/v1/reports/{b_report}/pdf")),
    ];
    for (own, theirs) in &reads {
        let (status, _) = owner_a.get(own).await;
        assert_eq!(status, 200, "{own}");
        let (status, body) = owner_a.get(theirs).await;
        assert_eq!(status, 404, "{theirs}: {body}");
    }
    let forbidden = [
        (Method::GET, "/api/v1/alarms/events".to_owned()),
        (Method::GET, format!("/api/v1/units/{b_unit}/rules")),
        (Method::PUT, format!("/api/v1/units/{b_unit}/rules/hot")),
        (Method::DELETE, format!("/api/v1/units/{b_unit}/rules/hot")),
        (Method::GET, format!("/api/v1/gateways/{b_id}/rules")),
        (Method::PUT, format!("/api/v1/gateways/{b_id}/rules/hot")),
        (Method::DELETE, format!("/api/v1/gateways/{b_id}/rules/hot")),
        (Method::GET, format!("/api/v1/gateways/{b_id}/maintenance")),
        (Method::POST, format!("/api/v1/gateways/{b_id}/maintenance")),
        (Method::GET, "/api/v1/people".to_owned()),
        (Method::POST, "/api/v1/people".to_owned()),
        (Method::GET, format!("/api/v1/gateways/{b_id}/contacts")),
        (Method::POST, format!("/api/v1/gateways/{b_id}/contacts")),
        (Method::PUT, format!("/api/v1/gateways/{b_id}/paging")),
        (Method::POST, "/api/v1/rotations".to_owned()),
        (Method::POST, "/api/v1/rotations/1/overrides".to_owned()),
        (Method::GET, "/api/v1/outbox".to_owned()),
        (Method::POST, "/api/v1/tickets".to_owned()),
        (Method::GET, "/api/v1/tickets/metrics".to_owned()),
        (Method::POST, format!("/api/v1/tickets/{b_ticket}/note")),
        (Method::POST, format!("/api/v1/tickets/{a_ticket}/note")),
        (Method::GET, "/api/v1/organisations".to_owned()),
        (Method::POST, "/api/v1/organisations".to_owned()),
        (Method::GET, "/api/v1/users".to_owned()),
        (Method::POST, "/api/v1/users".to_owned()),
        (Method::PUT, format!("/api/v1/gateways/{b_id}/organisation")),
        (Method::GET, "/api/v1/audit".to_owned()),
        (Method::POST, format!("/api/v1/units/{a_unit}/reports")),
        (Method::PATCH, format!("/api/v1/reports/{a_report}")),
        (Method::POST, format!("/api/v1/reports/{a_report}/sign")),
        (Method::PUT, format!("/api/v1/units/{a_unit}/rating")),
        (Method::PUT, format!("/api/v1/gateways/{b_id}/tariff")),
    ];
    for (method, path) in &forbidden {
        let (status, body) = owner_a.request(method.clone(), path, Some(json!({})), true).await;
        assert_eq!(status, 403, "{method} {path}: {body}");
    }
    // Acting on B's alarm: not found, and nothing changed.
    for action in ["acknowledge", "shelve"] {
        let body = json!({"comment": "not mine", "minutes": 10});
        let (status, _) =
            owner_a.request(Method::POST, &format!("/api/v1/alarms/{b_alarm}/{action}"), Some(body), true).await;
        assert_eq!(status, 404, "{action} B's alarm");
    }
    let b_alarm_now = stack.api().get(&format!("/api/v1/alarms/{b_alarm}")).await.expect("B's alarm");
    assert!(b_alarm_now["acknowledged_at"].is_null() && b_alarm_now["shelved_until"].is_null(), "{b_alarm_now}");
    // B's live stream is not found; A's opens.
    let live = |unit: i64| {
        owner_a
            .client
            .get(format!("{}/api/v1/units/{unit}/live", owner_a.base))
            .header("cookie", &owner_a.cookie)
            .send()
    };
    assert_eq!(live(b_unit).await.expect("live").status(), 404);
    let own_live = live(a_unit).await.expect("live");
    assert_eq!(own_live.status(), 200);
    assert!(own_live.headers()["content-type"].to_str().is_ok_and(|t| t.starts_with("text/event-stream")));
    drop(own_live);

    // A's own alarm: a change without the CSRF token is refused, with it acknowledged.
    let path = format!("/api/v1/alarms/{a_alarm}/acknowledge");
    let (status, _) = owner_a.request(Method::POST, &path, Some(json!({"comment": "seen"})), false).await;
    assert_eq!(status, 403, "no CSRF token");
    let (status, alarm) = owner_a.request(Method::POST, &path, Some(json!({"comment": "seen"})), true).await;
    assert_eq!(status, 200, "{alarm}");
    assert_eq!(alarm["acknowledged_by"], "owner-a@example.com");

    // Without a session, nothing.
    let anonymous = reqwest::Client::new();
    for path in ["/api/v1/units", &format!("/api/v1/units/{a_unit}"), "/api/v1/alarms", "/api/v1/session"] {
        let status = anonymous.get(format!("{}{path}", owner_a.base)).send().await.expect("get").status();
        assert_eq!(status, 401, "{path}");
    }
    let forged = anonymous.get(format!("{}/api/v1/units", owner_a.base)).header("cookie", "chillcloud_session=forged");
    assert_eq!(forged.send().await.expect("get").status(), 401);

    // The database itself holds the line: as the API's role, scoped to A, each of B's rows is
    // gone whatever the query, while A's own are there; unscoped, nothing is.
    let pool = stack.postgres.pool().await;
    let mut db = pool.acquire().await.expect("a connection");
    sqlx::query("set role chillcloud_api").execute(&mut *db).await.expect("the API's role");
    let lookups = [
        ("gateways", "id = $1::text", (json!(stack.gateway_id), json!(b_id))),
        ("units", "id = $1::text::bigint", (json!(a_unit), json!(b_unit))),
        ("points", "id = $1::text::bigint", (json!(a_point), json!(b_point))),
        ("latest_readings", "point_id = $1::text::bigint", (json!(a_point), json!(b_point))),
        ("alarms", "id = $1::text::bigint", (json!(a_alarm), json!(b_alarm))),
        ("alarm_events", "alarm_id = $1::text::bigint", (json!(a_alarm), json!(b_alarm))),
        ("tickets", "id = $1::text::bigint", (json!(a_ticket), json!(b_ticket))),
        ("ticket_events", "ticket_id = $1::text::bigint", (json!(a_ticket), json!(b_ticket))),
        ("reports", "id = $1::text::bigint", (json!(a_report), json!(b_report))),
    ];
    let count = |table: &str, filter: &str| format!("select count(*) from {table} where {filter}");
    for (scope, sees_a, sees_b) in
        [(customer_a.to_string(), true, false), ("none".to_owned(), false, false), ("all".to_owned(), true, true)]
    {
        sqlx::query("select set_config('chillcloud.scope', $1, false)")
            .bind(&scope)
            .execute(&mut *db)
            .await
            .expect("scope");
        for (table, filter, (a, b)) in &lookups {
            for (key, expected) in [(a, sees_a), (b, sees_b)] {
                let key = key.as_str().map_or_else(|| key.to_string(), str::to_owned);
                let rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count(table, filter)))
                    .bind(&key)
                    .fetch_one(&mut *db)
                    .await
                    .expect("count");
                assert_eq!(rows > 0, expected, "scope {scope}: {table} where {filter} ({key}) has {rows} rows");
            }
        }
        // The service organisation's own tables are the service organisation's.
        for table in
            ["people", "site_contacts", "outbox", "alarm_rules", "users", "sessions", "api_tokens", "organisations"]
        {
            let rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("select count(*) from {table}")))
                .fetch_one(&mut *db)
                .await
                .expect("count");
            if scope != "all" {
                assert_eq!(rows, 0, "scope {scope} sees {rows} rows of {table}");
            }
        }
    }
    sqlx::query("reset role").execute(&mut *db).await.expect("reset role");
    drop(db);
    // Every table is under row security but the readings (reached through visible points) and
    // the migrations; the API may not write readings nor touch the audit log.
    let open: Vec<String> = sqlx::query_scalar(
        "select relname::text from pg_class where relkind = 'r' and relnamespace = 'public'::regnamespace
           and not relrowsecurity order by 1",
    )
    .fetch_all(&pool)
    .await
    .expect("tables");
    assert_eq!(open, ["_sqlx_migrations", "readings", "readings_1h"]);
    let writes: Vec<(String, bool)> = sqlx::query_as(
        "select t, has_table_privilege('chillcloud_api', t, 'INSERT, UPDATE, DELETE')
         from unnest(array['readings', 'readings_1h', 'audit_log', '_sqlx_migrations']) t",
    )
    .fetch_all(&pool)
    .await
    .expect("privileges");
    assert!(writes.iter().all(|(_, may)| !may), "{writes:?}");

    // A user's API tokens are theirs alone, across organisations: B's owner neither sees nor
    // revokes A's (row security, the `own` policies), and A's keeps working.
    let owner_b = user(&stack, "owner-b@example.com", "owner", customer_b, "owner B's password").await;
    let (status, token_a) = owner_a.request(Method::POST, "/api/v1/tokens", Some(json!({"name": "a"})), true).await;
    assert_eq!(status, 200, "{token_a}");
    let (status, listed) = owner_b.get("/api/v1/tokens").await;
    assert_eq!((status, listed.as_array().map(Vec::len)), (200, Some(0)), "B sees none of A's tokens: {listed}");
    let revoke_a = format!("/api/v1/tokens/{}", token_a["id"]);
    assert_eq!(owner_b.request(Method::DELETE, &revoke_a, None, true).await.0, 404);
    let (_, listed) = owner_a.get("/api/v1/tokens").await;
    assert_eq!(listed[0]["id"], token_a["id"], "A's token is still there: {listed}");
    let with_a = reqwest::Client::new()
        .get(format!("http://{}/api/v1/units", stack.http))
        .bearer_auth(token_a["token"].as_str().expect("secret"))
        .send()
        .await
        .expect("get");
    assert_eq!(with_a.status(), 200);

    // Signing out ends the session.
    let (status, _) = owner_a.request(Method::DELETE, "/api/v1/session", None, true).await;
    assert_eq!(status, 204);
    let (status, _) = owner_a.get("/api/v1/units").await;
    assert_eq!(status, 401, "the session is over");
}

#[tokio::test]
async fn s1_a_gateway_cannot_publish_as_another() {
    let stack = Stack::start_with_sites(&["gw-b"], &[]).await;
    let mut gateway_a = stack.gateway(2).await;
    let (b_id, b_password) = stack.more_gateways[0].clone();
    let mut gateway_b = FakeGateway::connect(stack.broker.address().port(), &b_id, &b_password, 2).await;
    let api = stack.api();
    wait_for("both sites registered", Duration::from_secs(30), || async {
        api.get("/api/v1/units").await.filter(|u| u.as_array().is_some_and(|a| a.len() == 2))
    })
    .await;
    // Gateway A publishes a reading of 66.6 on gateway B's data topic; B then publishes 12.3.
    let now = chrono::Utc::now().timestamp_millis();
    let mut forged = gateway_b.data_at(now, &[(0, 66.6)]);
    forged.seq = 1_000;
    gateway_a.publish_as(&b_id, chillcloud_proto::MessageKind::Data, forged.encode_to_vec()).await;
    gateway_a.wait_acked(Duration::from_secs(10)).await;
    let genuine = gateway_b.data_at(now + 1_000, &[(0, 12.3)]);
    gateway_b.publish_data(&genuine).await;
    wait_for("B's genuine reading", Duration::from_secs(30), || async {
        (api.latest("chiller-1", "p0").await.is_some() && b_values(&stack, &b_id).await.contains(&12.3)).then_some(())
    })
    .await;
    assert_eq!(b_values(&stack, &b_id).await, [12.3], "only B's own reading is stored for B");
}

async fn b_values(stack: &Stack, gateway: &str) -> Vec<f64> {
    let pool = stack.postgres.pool().await;
    sqlx::query_scalar(
        "select r.value from readings r join points p on p.id = r.point_id join units u on u.id = p.unit_id
         where u.gateway_id = $1 and p.name = 'p0' and r.value is not null order by r.ts",
    )
    .bind(gateway)
    .fetch_all(&pool)
    .await
    .expect("B's readings")
}

#[tokio::test]
async fn sign_in_is_rate_limited_audited_and_roles_hold() {
    let stack = Stack::start().await;
    let service = organisation(&stack, "Maker Service", "service").await;
    let customer = organisation(&stack, "Customer", "customer").await;
    let base = format!("http://{}", stack.http);
    // A role that does not fit its organisation's kind is refused.
    let (status, _) = stack
        .api()
        .send(
            Method::POST,
            "/api/v1/users",
            json!({"login": "x", "name": "x", "role": "owner", "organisation_id": service}),
        )
        .await;
    assert_eq!(status, 400, "an owner in the service organisation");

    let engineer = user(&stack, "engineer@example.com", "engineer", service, "engineer's password").await;
    let sales = user(&stack, "sales@example.com", "sales", service, "sales's password").await;
    let owner = user(&stack, "owner@example.com", "owner", customer, "owner's password").await;
    // Sales read the fleet but change nothing.
    assert_eq!(sales.get("/api/v1/units").await.0, 200);
    assert_eq!(sales.request(Method::POST, "/api/v1/alarms/1/acknowledge", Some(json!({})), true).await.0, 403);
    assert_eq!(sales.get("/api/v1/tickets").await.0, 403);
    // Engineers work tickets and read paging, but manage neither people nor accounts.
    assert_eq!(engineer.get("/api/v1/outbox").await.0, 200);
    assert_eq!(engineer.request(Method::POST, "/api/v1/people", Some(json!({"name": "x"})), true).await.0, 403);
    assert_eq!(engineer.get("/api/v1/users").await.0, 403);

    // Ten wrong passwords from browsers that never signed in to the login lock it for them for a
    // while, even against the right one; the owner's own browser (its device cookie) still signs
    // in, and a device cookie is good for its own login only.
    for _ in 0..10 {
        assert_eq!(Session::sign_in(&base, "owner@example.com", "wrong password").await.err(), Some(401));
    }
    assert_eq!(Session::sign_in(&base, "owner@example.com", "owner's password").await.err(), Some(429));
    let again = Session::sign_in_from(&base, "owner@example.com", "owner's password", Some(&owner.device)).await;
    assert!(again.is_ok(), "the owner's browser is not locked out: {:?}", again.err());
    let borrowed = Session::sign_in_from(&base, "owner@example.com", "owner's password", Some(&sales.device)).await;
    assert_eq!(borrowed.err(), Some(429), "another login's device cookie counts for nothing");
    assert_eq!(Session::sign_in(&base, "nobody@example.com", "whatever").await.err(), Some(401));

    // An API token works as its user, until revoked.
    let (status, token) = engineer.request(Method::POST, "/api/v1/tokens", Some(json!({"name": "ci"})), true).await;
    assert_eq!(status, 200, "{token}");
    let secret = token["token"].as_str().expect("token");
    let client = reqwest::Client::new();
    let with_token = || client.get(format!("{base}/api/v1/outbox")).bearer_auth(secret).send();
    assert_eq!(with_token().await.expect("get").status(), 200);
    let path = format!("/api/v1/tokens/{}", token["id"]);
    assert_eq!(engineer.request(Method::DELETE, &path, None, true).await.0, 204);
    assert_eq!(with_token().await.expect("get").status(), 401);

    // A burst of guesses in parallel counts in full: at most ten are checked.
    let mut guesses = tokio::task::JoinSet::new();
    for n in 0..20 {
        let base = base.clone();
        guesses
            .spawn(async move { Session::sign_in(&base, "engineer@example.com", &format!("guess {n}")).await.err() });
    }
    let outcomes: Vec<Option<u16>> = guesses.join_all().await;
    let checked = outcomes.iter().filter(|o| **o == Some(401)).count();
    assert!(checked <= 10, "{checked} of 20 parallel guesses were checked: {outcomes:?}");
    assert!(outcomes.iter().all(|o| matches!(o, Some(401 | 429))), "{outcomes:?}");

    // An administrator cuts a user off: their session ends at once.
    let users = stack.api().get("/api/v1/users").await.expect("users");
    let sales_id = users.as_array().expect("users").iter().find(|u| u["login"] == "sales@example.com").expect("sales")
        ["id"]
        .clone();
    let (status, _) = stack.api().send(Method::POST, &format!("/api/v1/users/{sales_id}/disable"), json!({})).await;
    assert_eq!(status, 204);
    assert_eq!(sales.get("/api/v1/units").await.0, 401, "a disabled user's session");
    let disabled = Session::sign_in_from(&base, "sales@example.com", "sales's password", Some(&sales.device)).await;
    assert_eq!(disabled.err(), Some(401));

    // The audit log holds the sign-ins, refused and rate-limited ones included, and changes.
    let audit = stack.api().get("/api/v1/audit").await.expect("audit");
    let entries = audit.as_array().expect("entries");
    let count = |action: &str, outcome: &str, actor: &str| {
        entries.iter().filter(|e| e["action"] == action && e["outcome"] == outcome && e["actor"] == actor).count()
    };
    assert_eq!(count("sign-in", "refused", "owner@example.com"), 10, "{audit:#}");
    // The first refusal of a lockout is audited, the rest only counted.
    assert_eq!(count("sign-in", "rate-limited", "owner@example.com"), 1);
    assert_eq!(count("sign-in", "ok", "engineer@example.com"), 1);
    assert!(entries.iter().any(|e| e["action"] == "POST /api/v1/tokens" && e["outcome"] == "200"), "{audit:#}");
}

#[tokio::test]
async fn s1_share_links_show_the_record_without_the_site_and_stay_with_their_owner() {
    let stack = Stack::start_with_sites(&["gw-b"], &[]).await;
    let mut gateway_a = stack.gateway(2).await;
    let (b_id, b_password) = stack.more_gateways[0].clone();
    let mut gateway_b = FakeGateway::connect(stack.broker.address().port(), &b_id, &b_password, 2).await;
    let customer_a = organisation(&stack, "Customer A", "customer").await;
    let customer_b = organisation(&stack, "Customer B", "customer").await;
    let (a_unit, ..) = site(&stack, &mut gateway_a, stack.gateway_id, customer_a).await;
    let (b_unit, ..) = site(&stack, &mut gateway_b, &b_id, customer_b).await;
    let owner_a = user(&stack, "owner-a@example.com", "owner", customer_a, "owner A's password").await;
    let (status, b_share) = stack
        .api()
        .send(Method::POST, &format!("/api/v1/units/{b_unit}/shares"), json!({"label": "B's chiller", "days": 7}))
        .await;
    assert_eq!(status, 200, "{b_share}");

    // A shares their own unit; the page shows the record and nothing of the site.
    let body = json!({"label": "Process chiller, food plant", "days": 14});
    let (status, share) =
        owner_a.request(Method::POST, &format!("/api/v1/units/{a_unit}/shares"), Some(body), true).await;
    assert_eq!(status, 200, "{share}");
    let url = share["url"].as_str().expect("url").to_owned();
    let path = url.split_once("/s/").map(|(_, secret)| format!("/s/{secret}")).expect("a share path");
    let anonymous = reqwest::Client::new();
    let page = anonymous.get(format!("{}{path}", owner_a.base)).send().await.expect("share page");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("html");
    assert!(html.contains("Process chiller, food plant") && html.contains("<polyline"), "{html}");
    for identity in [stack.gateway_id, "chiller-1", "Customer A", "owner-a"] {
        assert!(!html.contains(identity), "the page gives away {identity:?}");
    }

    // B's unit and B's links are not A's to see, make or revoke.
    let (status, _) = owner_a
        .request(Method::POST, &format!("/api/v1/units/{b_unit}/shares"), Some(json!({"label": "x"})), true)
        .await;
    assert_eq!(status, 404, "sharing B's unit");
    assert_eq!(owner_a.get(&format!("/api/v1/units/{b_unit}/shares")).await.0, 404);
    let b_share_id = b_share["link"]["id"].as_i64().expect("id");
    let (status, _) = owner_a.request(Method::DELETE, &format!("/api/v1/shares/{b_share_id}"), None, true).await;
    assert_eq!(status, 404, "revoking B's link");
    let b_url = b_share["url"].as_str().expect("url");
    let b_path = b_url.split_once("/s/").map(|(_, secret)| format!("/s/{secret}")).expect("path");
    assert_eq!(anonymous.get(format!("{}{b_path}", owner_a.base)).send().await.expect("get").status(), 200);

    // A link stops working when revoked, or when it expires.
    let (_, listed) = owner_a.get(&format!("/api/v1/units/{a_unit}/shares")).await;
    let a_share_id = listed[0]["id"].as_i64().expect("id");
    let (status, _) = owner_a.request(Method::DELETE, &format!("/api/v1/shares/{a_share_id}"), None, true).await;
    assert_eq!(status, 204);
    assert_eq!(anonymous.get(format!("{}{path}", owner_a.base)).send().await.expect("get").status(), 404);
    let pool = stack.postgres.pool().await;
    sqlx::query("update share_links set expires_at = now() - interval '1 second' where id = $1")
        .bind(b_share_id)
        .execute(&pool)
        .await
        .expect("expire");
    assert_eq!(anonymous.get(format!("{}{b_path}", owner_a.base)).send().await.expect("get").status(), 404);
    assert_eq!(anonymous.get(format!("{}/s/not-a-link", owner_a.base)).send().await.expect("get").status(), 404);
}

/// S1 across a change of owner: what customer A's people did on a site (their share link, their
/// command, their acknowledgement) stays with A when the site moves to customer B, while the
/// machine's own record and what is open now go with the site.
#[tokio::test]
async fn s1_share_links_and_history_stay_with_the_owner_after_a_site_transfer() {
    let stack = Stack::start().await;
    let mut gateway = stack.gateway(2).await;
    let customer_a = organisation(&stack, "Customer A", "customer").await;
    let customer_b = organisation(&stack, "Customer B", "customer").await;
    let (unit, _, alarm, _) = site(&stack, &mut gateway, stack.gateway_id, customer_a).await;
    let owner_a = user(&stack, "owner-a@example.com", "owner", customer_a, "owner A's password").await;
    let owner_b = user(&stack, "owner-b@example.com", "owner", customer_b, "owner B's password").await;

    // Under A: a share link, a command (refused: p0 is read-only, but recorded), and the
    // alarm acknowledged by A's owner and then cleared, which closes it.
    let (status, share) = owner_a
        .request(Method::POST, &format!("/api/v1/units/{unit}/shares"), Some(json!({"label": "A's chiller"})), true)
        .await;
    assert_eq!(status, 200, "{share}");
    let url = share["url"].as_str().expect("url");
    let path = url.split_once("/s/").map(|(_, secret)| format!("/s/{secret}")).expect("a share path");
    let anonymous = reqwest::Client::new();
    let page = || anonymous.get(format!("{}{path}", owner_a.base)).send();
    assert_eq!(page().await.expect("share page").status(), 200);
    let command = json!({"point": "p0", "value": 1.0});
    let (status, body) =
        owner_a.request(Method::POST, &format!("/api/v1/units/{unit}/commands"), Some(command), true).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(owner_a.get(&format!("/api/v1/units/{unit}/commands")).await.1.as_array().map(Vec::len), Some(1));
    let (status, body) =
        owner_a.request(Method::POST, &format!("/api/v1/alarms/{alarm}/acknowledge"), Some(json!({})), true).await;
    assert!(status < 300, "{status} {body}");
    let data = gateway.data_at(chrono::Utc::now().timestamp_millis(), &[(0, 10.0)]);
    gateway.publish_data(&data).await;
    wait_for("the alarm to close", Duration::from_secs(30), || async {
        let detail = stack.api().get(&format!("/api/v1/alarms/{alarm}")).await?;
        detail["closed_at"].is_string().then_some(())
    })
    .await;

    // And an alarm still active when the site moves, acknowledged by A's owner.
    let warm = json!({"title": "Warm", "title_zh": "偏热", "grade": 3, "kind": "condition", "when": "p1 > 50"});
    let (status, body) =
        stack.api().send(Method::PUT, &format!("/api/v1/gateways/{}/rules/warm", stack.gateway_id), warm).await;
    assert_eq!(status, 200, "{body}");
    let data = gateway.data_at(chrono::Utc::now().timestamp_millis(), &[(1, 60.0)]);
    gateway.publish_data(&data).await;
    let open = wait_for("the open alarm", Duration::from_secs(30), || async {
        let alarms = stack.api().get(&format!("/api/v1/alarms?gateway={}", stack.gateway_id)).await?;
        alarms.as_array()?.iter().find(|a| a["id"].as_i64() != Some(alarm)).and_then(|a| a["id"].as_i64())
    })
    .await;
    let (status, body) =
        owner_a.request(Method::POST, &format!("/api/v1/alarms/{open}/acknowledge"), Some(json!({})), true).await;
    assert!(status < 300, "{status} {body}");

    // The site moves to B.
    let moved = json!({"organisation_id": customer_b});
    let (status, body) =
        stack.api().send(Method::PUT, &format!("/api/v1/gateways/{}/organisation", stack.gateway_id), moved).await;
    assert_eq!(status, 204, "{body}");

    // A's link no longer shows the unit, and A sees nothing of the site to revoke.
    assert_eq!(page().await.expect("share page").status(), 404, "A's link after the transfer");
    assert_eq!(owner_a.get(&format!("/api/v1/units/{unit}")).await.0, 404);
    assert_eq!(owner_a.get(&format!("/api/v1/units/{unit}/shares")).await.0, 404);
    // B sees the unit and its readings, but not A's link, command or alarm, nor any A name.
    assert_eq!(owner_b.get(&format!("/api/v1/units/{unit}")).await.0, 200);
    let (status, shares) = owner_b.get(&format!("/api/v1/units/{unit}/shares")).await;
    assert_eq!((status, shares.as_array().map(Vec::len)), (200, Some(0)), "{shares}");
    let (status, commands) = owner_b.get(&format!("/api/v1/units/{unit}/commands")).await;
    assert_eq!((status, commands.as_array().map(Vec::len)), (200, Some(0)), "{commands}");
    assert_eq!(owner_b.get(&format!("/api/v1/alarms/{alarm}")).await.0, 404, "A's closed alarm");
    for path in ["/api/v1/alarms", &format!("/api/v1/units/{unit}/commands")] {
        let (status, body) = owner_b.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(!body.to_string().contains("owner-a"), "{path} shows A's people to B: {body}");
    }
    // What is wrong now moves with the site, without A's names.
    let (status, moved_alarm) = owner_b.get(&format!("/api/v1/alarms/{open}")).await;
    assert_eq!(status, 200, "the open alarm moved to B: {moved_alarm}");
    assert_eq!(moved_alarm["acknowledged_by"], "previous owner", "{moved_alarm}");
    // The service organisation keeps the whole record.
    assert_eq!(
        stack.api().get(&format!("/api/v1/units/{unit}/commands")).await.map(|c| c.as_array().map(Vec::len)),
        Some(Some(1))
    );
    assert!(stack.api().get(&format!("/api/v1/alarms/{alarm}")).await.is_some());

    // What happens under B is B's: a new episode of the alarm, and B's own link.
    let data = gateway.data_at(chrono::Utc::now().timestamp_millis(), &[(0, 60.0)]);
    gateway.publish_data(&data).await;
    wait_for("B to see the new episode", Duration::from_secs(30), || async {
        let (_, alarms) = owner_b.get("/api/v1/alarms").await;
        alarms
            .as_array()?
            .iter()
            .any(|a| a["id"].as_i64() != Some(alarm) && a["id"].as_i64() != Some(open))
            .then_some(())
    })
    .await;
    let (status, share) = owner_b
        .request(Method::POST, &format!("/api/v1/units/{unit}/shares"), Some(json!({"label": "B's chiller"})), true)
        .await;
    assert_eq!(status, 200, "{share}");
}

//! Storage an operator can run for years, in either mode: the server watches its own disk, and
//! a backup taken from a running server restores into a fresh data directory whole.

use std::{collections::BTreeMap, time::Duration};

use chillcloud_server::embedded::postgres::EmbeddedPostgres;
use chillcloud_tests::harness::{
    EmbeddedServer, FakeGateway, add_gateway, bin, embedded_pool, run_to_completion, shared_temp_dir, wait_for,
};
use reqwest::Method;
use serde_json::json;
use sqlx::PgPool;

#[tokio::test(flavor = "multi_thread")]
async fn a_filling_disk_degrades_health_and_pages_the_service_team_once_until_it_is_over() {
    let dir = shared_temp_dir();
    let data_dir = dir.path().join("server");
    add_gateway("gw-disk", &["--data-dir", &data_dir.to_string_lossy()]).await;
    // The service team first, so someone is there to be paged.
    let mut setup = EmbeddedServer::start("setup", &data_dir, dir.path(), &[]).await;
    setup.api.add_service_engineer("gw-disk", "+8613800000018").await;
    assert!(setup.process.terminate(Duration::from_secs(30)).await.is_some_and(|s| s.success()));
    // A threshold at how full the disk is now stands in for a filling disk.
    let stats = rustix::fs::statvfs(&data_dir).expect("statvfs");
    let used = stats.f_blocks.saturating_sub(stats.f_bfree) as f64;
    let used_percent = 100.0 * used / (used + stats.f_bavail as f64);
    assert!(used_percent >= 1.0, "the test needs a disk at least 1 % full, not {used_percent:.2} %");
    // Half a percent below, as other tests' files come and go meanwhile.
    let threshold = ((used_percent - 0.5).floor().max(1.0) as u8).to_string();
    let args = ["--storage-check-seconds", "1", "--disk-alarm-percent", &threshold];
    let mut server = EmbeddedServer::start("server", &data_dir, dir.path(), &args).await;
    let health = wait_for("/health to show the disk", Duration::from_secs(30), || async {
        let health = server.api.get("/health").await?;
        (health["status"] == "degraded").then_some(health)
    })
    .await;
    assert!(health["storage"].to_string().contains("the database's disk is"), "{health}");
    let reported = server.api.metric("chillcloud_storage_disk_used_percent").await;
    assert!((reported - used_percent).abs() < 5.0, "{reported} against {used_percent}");
    let page = wait_for("the service team paged", Duration::from_secs(30), || async {
        server.api.service_pages().await.into_iter().next()
    })
    .await;
    assert!(page["body"].as_str().expect("body").contains("disk is"), "{page}");

    // A restart keeps the episode open and does not page again; a threshold the disk is under
    // ends it.
    assert!(server.process.terminate(Duration::from_secs(30)).await.is_some_and(|s| s.success()));
    let server_again = EmbeddedServer::start("server-again", &data_dir, dir.path(), &args).await;
    wait_for("a check after the restart", Duration::from_secs(30), || async {
        let health = server_again.api.get("/health").await?;
        (health["status"] == "degraded").then_some(())
    })
    .await;
    assert_eq!(server_again.api.service_pages().await.len(), 1, "one page for one episode");
    let mut server_again = server_again;
    assert!(server_again.process.terminate(Duration::from_secs(30)).await.is_some_and(|s| s.success()));
    let fixed = ["--storage-check-seconds", "1", "--disk-alarm-percent", "100"];
    server = EmbeddedServer::start("server-fixed", &data_dir, dir.path(), &fixed).await;
    wait_for("/health ok once the disk is under the threshold", Duration::from_secs(30), || async {
        let health = server.api.get("/health").await?;
        (health["status"] == "ok" && health["storage"] == "ok").then_some(())
    })
    .await;
    let pool = server.pool().await;
    let episodes: Vec<(String, bool)> =
        sqlx::query_as("select kind, cleared_at is not null from service_alarms order by id")
            .fetch_all(&pool)
            .await
            .expect("episodes");
    assert_eq!(episodes, [("storage-disk".to_owned(), true)]);
}

/// Every table of the schema with its row count and a digest of all its rows.
async fn contents(pool: &PgPool) -> BTreeMap<String, (i64, String)> {
    let tables: Vec<String> =
        sqlx::query_scalar("select tablename::text from pg_tables where schemaname = 'public' order by 1")
            .fetch_all(pool)
            .await
            .expect("tables");
    let mut contents = BTreeMap::new();
    // Replicas' heartbeats and partition leases are renewed every second by design: liveness,
    // not data (a restored copy's leases have lapsed long before a server starts on it).
    for table in tables.into_iter().filter(|t| !matches!(t.as_str(), "replicas" | "partition_leases")) {
        let (count, digest): (i64, Option<String>) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select count(*), md5(string_agg(t::text, '|' order by t::text)) from {table} t"
        )))
        .fetch_one(pool)
        .await
        .expect("table contents");
        contents.insert(table, (count, digest.unwrap_or_default()));
    }
    contents
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_restore_keeps_everything() {
    let dir = shared_temp_dir();
    let (source_dir, restored_dir) = (dir.path().join("source"), dir.path().join("restored"));
    let (password, _) = add_gateway("gw-backup", &["--data-dir", &source_dir.to_string_lossy()]).await;
    let server = EmbeddedServer::start("source", &source_dir, dir.path(), &[]).await;
    let api = &server.api;
    let pool = server.pool().await;

    // Readings, through the broker and ingest.
    let mut gateway = FakeGateway::connect(server.broker_port, "gw-backup", &password, 5).await;
    for batch in 0..20 {
        let data = gateway.data(batch, 5);
        gateway.publish_data(&data).await;
    }
    gateway.wait_acked(Duration::from_secs(30)).await;
    wait_for("100 readings stored", Duration::from_secs(30), || async {
        let n: i64 = sqlx::query_scalar("select count(*) from readings").fetch_one(&pool).await.ok()?;
        (n == 100).then_some(())
    })
    .await;

    // People and users: an administrator, a customer's owner by invitation.
    let admin = run_to_completion(
        &bin("chillcloud-server"),
        &["create-admin", "boss", "--name", "Boss", "--data-dir", &source_dir.to_string_lossy()],
    )
    .await;
    assert!(admin.contains("password"));
    api.add_service_engineer("gw-backup", "+8613800000019").await;
    // An alarm, as the engine records one, and a ticket opened on it through the API.
    let unit: i64 = sqlx::query_scalar("select id from units limit 1").fetch_one(&pool).await.expect("unit");
    let alarm: i64 = sqlx::query_scalar(
        "insert into alarms (gateway_id, unit_id, rule, grade, title, message, active, raised_at, last_raised_at)
         values ('gw-backup', $1, 'high_pressure', 2, 'High pressure', 'test', true, now(), now()) returning id",
    )
    .bind(unit)
    .fetch_one(&pool)
    .await
    .expect("alarm");
    sqlx::query("insert into alarm_events (alarm_id, kind, grade, notify) values ($1, 'raised', 2, false)")
        .bind(alarm)
        .execute(&pool)
        .await
        .expect("event");
    let new_ticket = json!({"gateway_id": "gw-backup", "unit_id": unit, "grade": 2, "title": "Check the condenser"});
    let (status, ticket) = api.send(Method::POST, "/api/v1/tickets", new_ticket).await;
    assert_eq!(status, 200, "{ticket}");

    // Backed up while the server runs, with nothing arriving meanwhile (the after-sales loop has
    // read the alarm's event): the backup holds what the database held before and after it.
    wait_for("the alarm's event read by the after-sales loop", Duration::from_secs(30), || async {
        let behind: bool = sqlx::query_scalar(
            "select exists (select 1 from alarm_events where id > (select last_event_id from paging_cursor))",
        )
        .fetch_one(&pool)
        .await
        .ok()?;
        (!behind).then_some(())
    })
    .await;
    let before = contents(&pool).await;
    let file = dir.path().join("chillcloud.backup");
    run_to_completion(
        &bin("chillcloud-server"),
        &["backup", "--data-dir", &source_dir.to_string_lossy(), "--to", &file.to_string_lossy()],
    )
    .await;
    assert_eq!(contents(&pool).await, before, "the source stood still while it was backed up");
    for table in ["readings", "alarms", "users", "tickets", "people", "gateways", "points"] {
        assert!(before.get(table).is_some_and(|(n, _)| *n > 0), "{table} has rows to keep: {before:?}");
    }

    // Restored into a fresh data directory: every table, row and value, before any server runs on it.
    run_to_completion(
        &bin("chillcloud-server"),
        &["restore", "--data-dir", &restored_dir.to_string_lossy(), "--from", &file.to_string_lossy()],
    )
    .await;
    let cluster = EmbeddedPostgres::start(&restored_dir.join("postgres"), None).await.expect("restored cluster");
    let after = contents(&embedded_pool(&restored_dir).await).await;
    cluster.stop().await.expect("stop the restored cluster");
    assert_eq!(before.keys().collect::<Vec<_>>(), after.keys().collect::<Vec<_>>(), "the same tables");
    for (table, kept) in &before {
        assert_eq!(&after[table], kept, "{table}: every row and value kept");
    }

    // A server runs on it: the API role works again, and the ticket is there.
    let restored = EmbeddedServer::start("restored", &restored_dir, dir.path(), &[]).await;
    let tickets = restored.api.get("/api/v1/tickets").await.expect("tickets");
    assert_eq!(tickets.as_array().map(Vec::len), Some(1), "{tickets}");

    // A second restore into a database that has data is refused, not merged.
    let again = tokio::process::Command::new(bin("chillcloud-server"))
        .args(["restore", "--data-dir", &restored_dir.to_string_lossy(), "--from", &file.to_string_lossy()])
        .output()
        .await
        .expect("run restore");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("restore goes into an empty one"), "{again:?}");
}

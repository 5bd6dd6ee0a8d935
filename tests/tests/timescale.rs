//! TimescaleDB mode. The server detects the extension at start: without it (as on the machines
//! this project is built on, where no registry has it) it runs on plain PostgreSQL; with it,
//! `readings` becomes a compressed hypertable with continuous aggregates and ingest still works.

use chillcloud_server::{
    store,
    timescale::{self, StorageMode},
};
use chillcloud_tests::harness::TestPostgres;

#[tokio::test(flavor = "multi_thread")]
async fn the_storage_mode_follows_the_extension_and_ingest_works_in_it() {
    let postgres = TestPostgres::start().await;
    let pool = postgres.pool().await;
    store::MIGRATOR.run(&pool).await.expect("migrate");
    let available = timescale::available(&pool).await.expect("ask the catalogue");
    let mode = timescale::prepare(&pool, None).await;
    if !available {
        assert_eq!(mode, StorageMode::Plain);
        eprintln!(
            "SKIPPED the TimescaleDB half of this test: the extension is not installed here (plain mode checked)"
        );
        return;
    }
    assert_eq!(mode, StorageMode::Timescale);
    let hypertables: Vec<String> =
        sqlx::query_scalar("select hypertable_name::text from timescaledb_information.hypertables")
            .fetch_all(&pool)
            .await
            .expect("hypertables");
    assert!(hypertables.contains(&"readings".to_owned()), "{hypertables:?}");
    let aggregates: Vec<String> =
        sqlx::query_scalar("select view_name::text from timescaledb_information.continuous_aggregates order by 1")
            .fetch_all(&pool)
            .await
            .expect("continuous aggregates");
    assert_eq!(aggregates, ["readings_1h_continuous", "readings_1m_continuous"]);
    // Preparing again (every server start) changes nothing and fails nothing.
    assert_eq!(
        timescale::prepare(&pool, Some(std::time::Duration::from_secs(400 * 86_400))).await,
        StorageMode::Timescale
    );

    // Ingest's idempotent insert works on the hypertable.
    let gateway = chillcloud_proto::GatewayId::new("gw-ts").expect("id");
    store::upsert_gateway(&pool, &gateway, "unused").await.expect("provision");
    store::store_birth(&pool, &gateway, &chillcloud_tests::harness::numbered_birth(1, 3))
        .await
        .expect("birth")
        .expect("within bounds");
    let ids: Vec<i64> = sqlx::query_scalar("select id from points order by id").fetch_all(&pool).await.expect("points");
    for _ in 0..2 {
        let mut rows = store::ReadingRows::default();
        for &id in &ids {
            rows.push(
                id,
                chrono::Utc::now() - chrono::TimeDelta::minutes(5),
                Some(7.0),
                chillcloud_proto::Quality::Good,
            );
        }
        store::flush(&pool, rows).await.expect("flush");
    }
    let stored: i64 = sqlx::query_scalar("select count(*) from readings").fetch_one(&pool).await.expect("count");
    assert_eq!(stored, 3, "a repeated batch stores nothing twice");
}

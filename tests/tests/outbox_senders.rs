//! Several server processes sending from one outbox: the per-recipient limits hold across
//! senders. Two senders run the real outbox code against one real PostgreSQL, and messages go
//! out through the signed-webhook provider to a local receiver that holds every answer until
//! the test lets go, so one sender is provably mid-send while the other looks for work.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, routing::post};
use chillcloud_server::{
    paging::{
        outbox::{self, Limits, NewMessage, Senders},
        providers::{Provider, ProviderConfig},
    },
    store::MIGRATOR,
};
use chillcloud_tests::harness::{TestPostgres, shared_temp_dir, wait_for};
use serde_json::{Value, json};
use tokio::sync::watch;

/// A webhook receiver that logs each message's recipient and answers only once released.
#[derive(Clone)]
struct Receiver {
    received: Arc<Mutex<Vec<String>>>,
    release: watch::Receiver<bool>,
}

async fn receive(State(receiver): State<Receiver>, body: Bytes) -> &'static str {
    let message: Value = serde_json::from_slice(&body).unwrap_or_default();
    receiver.received.lock().expect("log").push(message["to"].as_str().unwrap_or_default().to_owned());
    let mut release = receiver.release.clone();
    let _ = release.wait_for(|released| *released).await;
    "ok"
}

#[tokio::test]
async fn two_senders_sharing_one_outbox_send_each_recipient_one_message_per_gap() {
    let postgres = TestPostgres::start().await;
    let pool = postgres.pool().await;
    MIGRATOR.run(&pool).await.expect("migrate");

    let (release, released) = watch::channel(false);
    let receiver = Receiver { received: Arc::default(), release: released };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("address"));
    let app = Router::new().route("/hook", post(receive)).with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = shared_temp_dir();
    std::fs::write(dir.path().join("secret"), "webhook-secret").expect("write secret");
    let provider =
        Provider::load(ProviderConfig::Webhook { url, secret_file: dir.path().join("secret") }, "http://127.0.0.1")
            .expect("load the provider");
    let providers = Arc::new(vec![provider]);
    let limits = Limits { min_gap: Duration::from_secs(60), ..Limits::default() };
    let client = reqwest::Client::new();

    // Three people, five messages each.
    let addresses = ["+8613800000001", "+8613800000002", "+8613800000003"];
    for (n, address) in addresses.iter().enumerate() {
        let person: i64 = sqlx::query_scalar("insert into people (name, phone) values ($1, $2) returning id")
            .bind(format!("person {n}"))
            .bind(address)
            .fetch_one(&pool)
            .await
            .expect("a person");
        for message in 0..5 {
            let new = NewMessage {
                idempotency_key: format!("test-{person}-{message}"),
                alarm_id: None,
                ticket_id: None,
                person_id: Some(person),
                channel: "sms",
                address: (*address).to_owned(),
                language: "en".into(),
                params: json!({"kind": "breach", "fault": format!("message {message}")}),
                body: format!("message {message}"),
                reply_code: None,
                chat_room_id: None,
                not_before: None,
                attachment: None,
            };
            let mut db = pool.acquire().await.expect("a connection");
            assert!(outbox::enqueue(&mut db, &new).await.expect("enqueue"));
        }
    }

    let senders = Senders::text(providers, client, limits);
    // Sender A claims one message per person and is held mid-send by the receiver.
    let first = {
        let (pool, senders) = (pool.clone(), senders.clone());
        tokio::spawn(async move { outbox::send_due(&pool, &senders).await })
    };
    wait_for("sender A mid-send to all three", Duration::from_secs(30), || {
        let received = receiver.received.clone();
        async move { (received.lock().expect("log").len() == 3).then_some(()) }
    })
    .await;

    // Sender B, meanwhile, must find nobody it may send to.
    let second = {
        let (pool, senders) = (pool.clone(), senders.clone());
        tokio::spawn(async move { outbox::send_due(&pool, &senders).await })
    };
    let outcome = wait_for("sender B to finish or to send", Duration::from_secs(30), || {
        let received = receiver.received.clone();
        let finished = second.is_finished();
        async move {
            let count = received.lock().expect("log").len();
            (finished || count > 3).then_some(count)
        }
    })
    .await;
    assert_eq!(outcome, 3, "sender B sent to people sender A was sending to: {:?}", receiver.received.lock());
    assert_eq!(second.await.expect("sender B").expect("sender B's queries"), 0, "sender B claimed messages");

    release.send(true).expect("release the receiver");
    assert_eq!(first.await.expect("sender A").expect("sender A's queries"), 3);

    // Both senders again, at once, until nothing is due: everyone had their message this minute,
    // so nothing more goes out and every waiting message is put off to its recipient's gap.
    for round in 0.. {
        assert!(round < 20, "the senders never ran out of due messages");
        let (a, b) = tokio::join!(outbox::send_due(&pool, &senders), outbox::send_due(&pool, &senders));
        if a.expect("sender A") + b.expect("sender B") == 0 {
            break;
        }
    }
    let mut received = receiver.received.lock().expect("log").clone();
    received.sort();
    assert_eq!(received, addresses, "one message per person");
    let statuses: Vec<(String, i64)> =
        sqlx::query_as("select status, count(*) from outbox group by status order by status")
            .fetch_all(&pool)
            .await
            .expect("statuses");
    assert_eq!(statuses, [("pending".to_owned(), 12), ("sent".to_owned(), 3)]);
    let early: i64 = sqlx::query_scalar(
        "select count(*) from outbox o join outbox s on s.address = o.address and s.status = 'sent'
         where o.status = 'pending' and o.next_attempt_at < s.sent_at + interval '59 seconds'",
    )
    .fetch_one(&pool)
    .await
    .expect("waiting messages");
    assert_eq!(early, 0, "every waiting message waits out its recipient's gap");
}

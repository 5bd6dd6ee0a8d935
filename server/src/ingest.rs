//! The MQTT subscription: every message gateways publish is decoded, stored, and only then
//! acknowledged to the broker, so a reading the broker considers delivered is already committed.

use std::{sync::Arc, time::Duration};

use chillcloud_proto::{Birth, Data, Death, DecodeError, MessageKind, Topic, decode};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{
    metrics::Metrics,
    store::{self, AliasCache, DataOutcome},
};

/// How the server reaches the broker.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// MQTT username.
    pub username: String,
    /// MQTT password.
    pub password: String,
    /// Client id; the broker keeps this session's subscriptions and undelivered messages.
    pub client_id: String,
}

const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(30);
/// Messages received but not yet stored; when full, the server stops reading from the broker.
const INGEST_QUEUE: usize = 1024;

/// Why a message was refused. Refused messages are acknowledged (redelivery would not help),
/// counted, and sampled into the dead-letter table.
#[derive(Debug, thiserror::Error)]
enum Rejection {
    #[error(transparent)]
    Topic(#[from] chillcloud_proto::TopicError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("gateway {0} is not provisioned")]
    UnknownGateway(String),
    #[error("{0} messages are not accepted from gateways")]
    WrongDirection(MessageKind),
    #[error("{0} message without a session (sessions start at 1)")]
    NoSession(MessageKind),
}

/// Runs the subscription until `shutdown`.
pub async fn run(pool: PgPool, broker: BrokerSettings, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    let mut options = MqttOptions::new(&broker.client_id, &broker.host, broker.port);
    options.set_credentials(&broker.username, &broker.password);
    options.set_clean_session(false);
    options.set_manual_acks(true);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(chillcloud_proto::MAX_PAYLOAD_BYTES * 4, 64 * 1024);
    let (client, eventloop) = AsyncClient::new(options, 64);
    let (messages_tx, mut messages) = mpsc::channel(INGEST_QUEUE);
    let driver = tokio::spawn(drive(eventloop, client.clone(), messages_tx, shutdown.clone()));

    let mut cache = AliasCache::default();
    loop {
        let publish = tokio::select! {
            () = shutdown.cancelled() => break,
            publish = messages.recv() => match publish { Some(p) => p, None => break },
        };
        // Retry storage until it succeeds: the message is not acknowledged before, so nothing
        // is lost if the database is down, and the bounded queue holds the broker back meanwhile.
        let mut delay = Duration::from_millis(100);
        loop {
            match handle(&pool, &mut cache, &metrics, &publish).await {
                Ok(()) => break,
                Err(error) => {
                    metrics.database_errors.inc();
                    warn!(%error, retry_in = ?delay, "storing a message failed; will retry");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        if let Err(error) = client.ack(&publish).await {
            debug!(%error, "ack not sent; the broker will redeliver");
        }
    }
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(2), driver).await;
}

async fn drive(
    mut eventloop: EventLoop,
    client: AsyncClient,
    messages: mpsc::Sender<Publish>,
    shutdown: CancellationToken,
) {
    let mut delay = Duration::from_millis(250);
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => return,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                info!(session_present = ack.session_present, "connected to broker");
                delay = Duration::from_millis(250);
                for kind in [MessageKind::Birth, MessageKind::Death, MessageKind::Data, MessageKind::CommandResult] {
                    let _ = client.try_subscribe(Topic::gateway_filter(kind), QoS::AtLeastOnce);
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                if messages.send(publish).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(error) => {
                warn!(%error, retry_in = ?delay, "broker connection failed");
                let jitter = rand::random_range(0.5..1.0);
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(delay.mul_f64(jitter)) => {}
                }
                delay = (delay * 2).min(MAX_RECONNECT_DELAY);
            }
        }
    }
}

/// Stores one message. `Err` means a database failure worth retrying; refusals are `Ok`.
async fn handle(pool: &PgPool, cache: &mut AliasCache, metrics: &Metrics, publish: &Publish) -> sqlx::Result<()> {
    metrics.messages_received.inc();
    match accept(pool, cache, metrics, &publish.topic, &publish.payload).await? {
        Ok(()) => Ok(()),
        Err(rejection) => {
            metrics.messages_rejected.inc();
            warn!(topic = %publish.topic, reason = %rejection, "message rejected");
            store::dead_letter(pool, &publish.topic, &rejection.to_string(), &publish.payload).await
        }
    }
}

async fn accept(
    pool: &PgPool,
    cache: &mut AliasCache,
    metrics: &Metrics,
    topic: &str,
    payload: &[u8],
) -> sqlx::Result<Result<(), Rejection>> {
    let topic = match Topic::parse(topic) {
        Ok(topic) => topic,
        Err(e) => return Ok(Err(e.into())),
    };
    if !store::gateway_exists(pool, &topic.gateway).await? {
        return Ok(Err(Rejection::UnknownGateway(topic.gateway.to_string())));
    }
    let gateway = &topic.gateway;
    match topic.kind {
        MessageKind::Birth => {
            let birth: Birth = match decode(topic.kind, payload) {
                Ok(b) => b,
                Err(e) => return Ok(Err(e.into())),
            };
            if birth.session == 0 {
                return Ok(Err(Rejection::NoSession(topic.kind)));
            }
            let table = store::store_birth(pool, gateway, &birth).await?;
            store::cache_birth(cache, gateway, birth.session, table);
            info!(%gateway, session = birth.session, devices = birth.devices.len(), "gateway birth");
            let pending = store::pending(pool, gateway, birth.session).await?;
            if !pending.is_empty() {
                for (_, payload) in &pending {
                    if let Ok(data) = decode::<Data>(MessageKind::Data, payload) {
                        let outcome = store::store_data(pool, cache, gateway, &data, payload).await?;
                        count_stored(metrics, &outcome);
                    }
                }
                let ids: Vec<i64> = pending.iter().map(|(id, _)| *id).collect();
                store::delete_pending(pool, &ids).await?;
            }
        }
        MessageKind::Death => {
            let death: Death = match decode(topic.kind, payload) {
                Ok(d) => d,
                Err(e) => return Ok(Err(e.into())),
            };
            info!(%gateway, session = death.session, "gateway death");
            store::store_death(pool, gateway, death.session).await?;
        }
        MessageKind::Data => {
            let data: Data = match decode(topic.kind, payload) {
                Ok(d) => d,
                Err(e) => return Ok(Err(e.into())),
            };
            // Stray bytes can decode as an empty protobuf message; a real batch has a session.
            if data.session == 0 {
                return Ok(Err(Rejection::NoSession(topic.kind)));
            }
            let outcome = store::store_data(pool, cache, gateway, &data, payload).await?;
            count_stored(metrics, &outcome);
        }
        MessageKind::CommandResult => {
            debug!(%gateway, "command result received; remote commands are not yet handled");
        }
        MessageKind::Command => return Ok(Err(Rejection::WrongDirection(topic.kind))),
    }
    Ok(Ok(()))
}

fn count_stored(metrics: &Metrics, outcome: &DataOutcome) {
    match outcome {
        DataOutcome::Stored { readings, unknown_aliases } => {
            metrics.readings_stored.add(*readings as u64);
            metrics.readings_unknown_alias.add(*unknown_aliases as u64);
        }
        DataOutcome::HeldForBirth => metrics.messages_held_for_birth.inc(),
    }
}

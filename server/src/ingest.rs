//! Ingest: every message gateways publish is decoded, stored, and only then acknowledged to the
//! broker, so a reading the broker considers delivered is already committed. The broker is one
//! MQTT broker (Mosquitto: this module's subscription) or the clustered tier ([`crate::amqp`]),
//! which delivers only the partitions this replica owns.

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, Instant},
};

use chillcloud_proto::{Birth, Data, Death, DecodeError, GatewayId, MessageKind, Topic, decode};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::{
    alarms::{Alarms, Input},
    gateway_link::{GatewayLink, GatewayMessages},
    metrics::{Metrics, Stall},
    store::{self, AliasCache, DataOutcome, ReadingRows},
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

/// The broker ingest takes messages from and publishes to gateways through.
#[derive(Debug, Clone)]
pub enum Broker {
    /// One MQTT broker, subscribed to with a persistent session: one replica.
    Mqtt(BrokerSettings),
    /// The clustered tier: any number of replicas, each consuming its partitions.
    Amqp(crate::amqp::AmqpSettings),
}

/// A gateway's message as the broker delivered it, acknowledged once its effect is committed.
pub enum Delivery {
    /// From the MQTT subscription.
    Mqtt(Publish),
    /// From a partition's queue.
    Amqp {
        /// The MQTT topic it was published on.
        topic: String,
        /// Its bytes.
        payload: Vec<u8>,
        /// Acknowledges it to the queue.
        acker: lapin::Acker,
    },
}

impl Delivery {
    fn topic(&self) -> &str {
        match self {
            Delivery::Mqtt(publish) => &publish.topic,
            Delivery::Amqp { topic, .. } => topic,
        }
    }

    fn payload(&self) -> &[u8] {
        match self {
            Delivery::Mqtt(publish) => &publish.payload,
            Delivery::Amqp { payload, .. } => payload,
        }
    }
}

const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(30);

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
    #[error("birth refused: {0}")]
    Birth(#[from] chillcloud_proto::BirthError),
    #[error("birth refused: {0}")]
    BirthTooLarge(store::SiteFull),
    #[error("{0} readings refused: timestamp before 2000 or more than 5 minutes ahead, or a non-finite value")]
    RefusedReadings(usize),
    #[error("{0} dropped intervals refused: a time before 2000, more than 5 minutes ahead, or ending before it starts")]
    RefusedDroppedIntervals(usize),
    #[error(
        "the session's birth never arrived and the gateway already has {} messages or {} bytes held for births",
        store::HoldLimit::DEFAULT.messages,
        store::HoldLimit::DEFAULT.bytes
    )]
    HoldingFull,
    #[error("a result for command {0:?}, which this gateway was never sent")]
    UnknownCommand(String),
    #[error("a report on configuration version {0}, which this gateway was never given")]
    UnknownConfigVersion(u32),
    #[error("a configuration report with an outcome this server does not know")]
    UnknownConfigOutcome,
    #[error("the database cannot store it: {0}")]
    Unstorable(String),
}

/// Whether the database refused a message's own content (SQLSTATE class 22, data exception: a
/// NUL in a text, a value out of range): retrying cannot help, so it is refused, not retried.
fn refuses_content(error: &sqlx::Error) -> bool {
    error.as_database_error().and_then(|e| e.code()).is_some_and(|code| code.starts_with("22"))
}

/// Most messages stored in one transaction.
const MAX_BATCH_MESSAGES: usize = 500;

/// Runs the subscription until `shutdown`.
///
/// Messages are stored in batches: whatever has queued while the previous batch was being
/// committed goes into the next transaction (group commit). A quiet system therefore stores each
/// message at once, and a busy one makes fewer, larger transactions, without a timer adding
/// latency. Acknowledgements follow the commit.
///
/// What `to_gateways` yields (see [`crate::gateway_link`]) is published at QoS 1 through the same
/// broker; what was committed is handed to the alarm engine.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    pool: PgPool,
    broker: Broker,
    alarms: Alarms,
    live: crate::live::Live,
    (gateways, to_gateways): (GatewayLink, GatewayMessages),
    metrics: Arc<Metrics>,
    ownership: crate::partitions::Ownership,
    relay: Option<crate::live::Relay>,
    shutdown: CancellationToken,
) {
    let (deliveries, mut messages) = mpsc::unbounded_channel();
    let (client, transport) = match broker {
        Broker::Mqtt(broker) => {
            let (client, tasks) = subscribe(broker, deliveries, to_gateways, metrics.clone(), shutdown.clone());
            (Some(client), tasks)
        }
        Broker::Amqp(settings) => {
            let consuming = crate::amqp::run(
                settings,
                pool.clone(),
                deliveries,
                to_gateways,
                ownership.clone(),
                live.clone(),
                relay.unwrap_or_else(|| tokio::sync::mpsc::channel(1).1),
                metrics.clone(),
                shutdown.clone(),
            );
            (None, vec![tokio::spawn(consuming)])
        }
    };

    let mut ingestor =
        Ingestor { pool, cache: AliasCache::default(), known_gateways: HashSet::new(), metrics, gateways };
    let mut batch = Vec::with_capacity(MAX_BATCH_MESSAGES);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            received = messages.recv_many(&mut batch, MAX_BATCH_MESSAGES) => if received == 0 { break },
        }
        // Retry until stored: nothing is acknowledged before, so nothing is lost while the
        // database is down, and the broker's inflight limit holds it back meanwhile.
        let mut delay = Duration::from_millis(100);
        loop {
            give_back_unowned(&mut batch, &ownership).await;
            let started = Instant::now();
            match ingestor.store_batch(&batch).await {
                Ok(committed) => {
                    ingestor.metrics.ingest.resumed(Stall::Database);
                    ingestor.metrics.batches_stored.inc();
                    ingestor.metrics.batch_messages.add(batch.len() as u64);
                    ingestor.metrics.database_seconds.add_duration(started.elapsed());
                    for input in committed {
                        if let Input::Readings(readings) = &input {
                            live.publish(readings);
                        }
                        alarms.send(input).await;
                    }
                    break;
                }
                Err(error) => {
                    ingestor.metrics.ingest.stalled(Stall::Database, chrono::Utc::now().timestamp_millis());
                    ingestor.metrics.database_errors.inc();
                    warn!(%error, retry_in = ?delay, messages = batch.len(), "storing a batch failed; will retry");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        for delivery in batch.drain(..) {
            let acked = match (delivery, &client) {
                (Delivery::Mqtt(publish), Some(client)) => client.ack(&publish).await.map_err(|e| e.to_string()),
                (Delivery::Mqtt(_), None) => Ok(()),
                (Delivery::Amqp { acker, .. }, _) => {
                    acker.ack(lapin::options::BasicAckOptions::default()).await.map(drop).map_err(|e| e.to_string())
                }
            };
            if let Err(error) = acked {
                debug!(%error, "ack not sent; the broker will redeliver");
            }
        }
    }
    if let Some(client) = client {
        let _ = client.try_disconnect();
    }
    for task in transport {
        let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    }
}

/// Returns to their queues the messages of partitions this replica no longer owns (its lease
/// lapsed while the batch waited, for example on the database), so their new owner stores them
/// in order rather than this replica storing them late.
async fn give_back_unowned(batch: &mut Vec<Delivery>, ownership: &crate::partitions::Ownership) {
    let owned = |delivery: &Delivery| match delivery {
        Delivery::Mqtt(_) => true,
        Delivery::Amqp { topic, .. } => Topic::parse(topic).map_or(true, |t| ownership.owns(t.gateway.as_str())),
    };
    if batch.iter().all(owned) {
        return;
    }
    let (kept, unowned): (Vec<Delivery>, Vec<Delivery>) = batch.drain(..).partition(owned);
    *batch = kept;
    debug!(messages = unowned.len(), "partition lost: messages returned to the broker");
    for delivery in unowned {
        if let Delivery::Amqp { acker, .. } = delivery {
            let requeue = lapin::options::BasicNackOptions { requeue: true, ..Default::default() };
            // If the channel is gone, the broker has returned them already.
            let _ = acker.nack(requeue).await;
        }
    }
}

/// The MQTT subscription: its client (for acknowledgements) and the tasks driving it and
/// publishing to gateways.
fn subscribe(
    broker: BrokerSettings,
    deliveries: mpsc::UnboundedSender<Delivery>,
    mut to_gateways: GatewayMessages,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> (AsyncClient, Vec<tokio::task::JoinHandle<()>>) {
    let mut options = MqttOptions::new(&broker.client_id, &broker.host, broker.port);
    options.set_credentials(&broker.username, &broker.password);
    options.set_clean_session(false);
    options.set_manual_acks(true);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(chillcloud_proto::MAX_PACKET_BYTES, 64 * 1024);
    let (client, eventloop) = AsyncClient::new(options, MAX_BATCH_MESSAGES * 2);
    // Unbounded on purpose: the event loop must never wait on the worker, because the worker's
    // acknowledgements go out through the event loop (a bounded queue here deadlocked under a
    // burst, benchmark P2). What is queued is bounded by the broker instead: it sends no more
    // unacknowledged QoS 1 messages than its inflight limit (1,000 in the shipped
    // configuration), so a slow database still holds the broker back.
    let driver = tokio::spawn(drive(eventloop, client.clone(), deliveries, metrics, shutdown));
    let publisher = client.clone();
    let publishing = tokio::spawn(async move {
        while let Some((gateway, message)) = to_gateways.recv().await {
            let topic = Topic::new(gateway, message.kind()).to_string();
            if let Err(error) = publisher.publish(topic, QoS::AtLeastOnce, false, message.encode()).await {
                debug!(%error, "publish to a gateway dropped: the client has stopped");
            }
        }
    });
    (client, vec![driver, publishing])
}

struct Ingestor {
    pool: PgPool,
    cache: AliasCache,
    /// Gateways known to be provisioned, to spare a query per message.
    known_gateways: HashSet<GatewayId>,
    metrics: Arc<Metrics>,
    /// To send a gateway the configuration it should run, on its birth.
    gateways: GatewayLink,
}

/// Counts from one batch, added to the metrics only once the batch is committed (a retried
/// batch is counted once).
#[derive(Default)]
struct BatchCounts {
    rejected: u64,
    held_for_birth: u64,
    unknown_aliases: u64,
    refused_readings: u64,
    stored: u64,
    history: u64,
    dropped_by_gateway: u64,
    /// Time of the oldest reading among the newest of each live data message, ms.
    oldest_live_ms: Option<i64>,
    /// What the alarm engine is told once the batch is committed, in message order; the
    /// readings go last.
    alarm_inputs: Vec<Input>,
    /// The readings stored, for the alarm engine.
    observed: Vec<(i64, i64, Option<f64>)>,
}

impl Ingestor {
    /// Stores a batch of messages and returns what the alarm engine is to be told. `Err` means a
    /// database failure: the whole batch is retried, which is safe because every step is
    /// idempotent.
    async fn store_batch(&mut self, batch: &[Delivery]) -> sqlx::Result<Vec<Input>> {
        let mut rows = ReadingRows::default();
        let mut counts = BatchCounts::default();
        for delivery in batch {
            // Each message's own writes commit (or roll back) on their own, so refusing one
            // leaves the others' intact.
            let accepted = match self.accept(delivery.topic(), delivery.payload(), &mut rows, &mut counts).await {
                Err(error) if refuses_content(&error) => Err(Rejection::Unstorable(error.to_string())),
                other => other?,
            };
            if let Err(rejection) = accepted {
                counts.rejected += 1;
                warn!(topic = %delivery.topic(), reason = %rejection, "message refused in whole or in part");
                store::dead_letter(&self.pool, delivery.topic(), &rejection.to_string(), delivery.payload()).await?;
            }
        }
        counts.stored += rows.len() as u64;
        counts.observed.extend(rows.observations());
        store::flush(&self.pool, rows).await?;
        let metrics = &self.metrics;
        metrics.readings_stored.add(counts.stored);
        metrics.messages_rejected.add(counts.rejected);
        metrics.messages_held_for_birth.add(counts.held_for_birth);
        metrics.readings_unknown_alias.add(counts.unknown_aliases);
        metrics.readings_refused.add(counts.refused_readings);
        metrics.readings_history.add(counts.history);
        metrics.readings_dropped_by_gateways.add(counts.dropped_by_gateway);
        if let Some(oldest) = counts.oldest_live_ms {
            let lag_ms = chrono::Utc::now().timestamp_millis().saturating_sub(oldest);
            metrics.ingest_lag_seconds.set(lag_ms.max(0) as f64 / 1000.0);
        }
        let mut inputs = counts.alarm_inputs;
        if !counts.observed.is_empty() {
            inputs.push(Input::Readings(counts.observed));
        }
        Ok(inputs)
    }

    /// Adds a data message's readings to `rows`, or holds it until its birth arrives.
    async fn gather(
        &mut self,
        gateway: &GatewayId,
        data: &Data,
        payload: &[u8],
        rows: &mut ReadingRows,
    ) -> sqlx::Result<DataOutcome> {
        store::gather_data(&self.pool, &mut self.cache, gateway, data, payload, rows, store::HoldLimit::DEFAULT).await
    }

    async fn accept(
        &mut self,
        topic: &str,
        payload: &[u8],
        rows: &mut ReadingRows,
        counts: &mut BatchCounts,
    ) -> sqlx::Result<Result<(), Rejection>> {
        let topic = match Topic::parse(topic) {
            Ok(topic) => topic,
            Err(e) => return Ok(Err(e.into())),
        };
        let gateway = &topic.gateway;
        if !self.known_gateways.contains(gateway) {
            if !store::gateway_exists(&self.pool, gateway).await? {
                return Ok(Err(Rejection::UnknownGateway(gateway.to_string())));
            }
            self.known_gateways.insert(gateway.clone());
        }
        let now_ms = chrono::Utc::now().timestamp_millis();
        if matches!(topic.kind, MessageKind::Birth | MessageKind::Data | MessageKind::CommandResult) {
            counts.alarm_inputs.push(Input::Seen { gateway: gateway.to_string(), at: now_ms });
        }
        match topic.kind {
            MessageKind::Birth => {
                let birth: Birth = match decode(topic.kind, payload) {
                    Ok(b) => b,
                    Err(e) => return Ok(Err(e.into())),
                };
                if birth.session == 0 {
                    return Ok(Err(Rejection::NoSession(topic.kind)));
                }
                if let Err(e) = birth.check() {
                    return Ok(Err(e.into()));
                }
                let table = match store::store_birth(&self.pool, gateway, &birth).await? {
                    Ok(table) => table,
                    Err(full) => return Ok(Err(Rejection::BirthTooLarge(full))),
                };
                store::cache_birth(&mut self.cache, gateway, birth.session, table);
                info!(%gateway, session = birth.session, devices = birth.devices.len(), "gateway birth");
                // Data that arrived ahead of this birth is stored now; the held copies are deleted
                // after that commit, so a crash in between only stores them again, harmlessly.
                let pending = store::pending(&self.pool, gateway, birth.session).await?;
                for (_, payload) in &pending {
                    if let Ok(data) = decode::<Data>(MessageKind::Data, payload) {
                        let outcome = self.gather(gateway, &data, payload, rows).await?;
                        count(counts, &outcome);
                    }
                }
                counts.alarm_inputs.push(Input::Birth { gateway: gateway.to_string() });
                // A gateway that was offline, or lost its state, gets the newest configuration.
                if let Some(config) = crate::gateway_config::due(&self.pool, gateway, birth.config_version).await? {
                    info!(%gateway, version = config.version, running = birth.config_version, "sending the gateway its configuration");
                    self.gateways.send(gateway.clone(), crate::gateway_link::ToGateway::Config(config));
                }
                if !pending.is_empty() {
                    counts.stored += rows.len() as u64;
                    counts.observed.extend(rows.observations());
                    store::flush(&self.pool, std::mem::take(rows)).await?;
                    let ids: Vec<i64> = pending.iter().map(|(id, _)| *id).collect();
                    store::delete_pending(&self.pool, &ids).await?;
                }
            }
            MessageKind::Death => {
                let death: Death = match decode(topic.kind, payload) {
                    Ok(d) => d,
                    Err(e) => return Ok(Err(e.into())),
                };
                info!(%gateway, session = death.session, "gateway death");
                if store::store_death(&self.pool, gateway, death.session).await? {
                    counts.alarm_inputs.push(Input::Died { gateway: gateway.to_string(), at: now_ms });
                }
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
                debug!(%gateway, session = data.session, seq = data.seq, time_ms = data.base_time_ms,
                    readings = data.readings.len(), "data message");
                let mut refused_intervals = 0;
                if !data.dropped.is_empty() {
                    let (newly_reported, refused) = store::store_dropped(&self.pool, gateway, &data.dropped).await?;
                    refused_intervals = refused;
                    if newly_reported > 0 {
                        warn!(%gateway, readings = newly_reported, "gateway reports readings it dropped unsent");
                    }
                    counts.dropped_by_gateway += newly_reported;
                }
                let outcome = self.gather(gateway, &data, payload, rows).await?;
                count(counts, &outcome);
                if data.history {
                    counts.history += data.readings.len() as u64;
                } else if let Some(newest) = data.readings.iter().map(|r| r.offset_ms).max() {
                    let newest_ms = data.base_time_ms.saturating_add(newest);
                    counts.oldest_live_ms = Some(counts.oldest_live_ms.map_or(newest_ms, |o| o.min(newest_ms)));
                }
                match outcome {
                    DataOutcome::Stored { refused: refused @ 1.., .. } => {
                        return Ok(Err(Rejection::RefusedReadings(refused)));
                    }
                    DataOutcome::HoldingFull => return Ok(Err(Rejection::HoldingFull)),
                    DataOutcome::Stored { .. } | DataOutcome::HeldForBirth => {}
                }
                if refused_intervals > 0 {
                    return Ok(Err(Rejection::RefusedDroppedIntervals(refused_intervals)));
                }
            }
            MessageKind::CommandResult => {
                let result: chillcloud_proto::CommandResult = match decode(topic.kind, payload) {
                    Ok(r) => r,
                    Err(e) => return Ok(Err(e.into())),
                };
                match crate::commands::record_result(&self.pool, gateway, &result).await? {
                    crate::commands::Recorded::Stored => {}
                    crate::commands::Recorded::AlreadyFinished => {
                        debug!(%gateway, id = %result.id, "a command's result again; already recorded");
                    }
                    crate::commands::Recorded::Unknown => return Ok(Err(Rejection::UnknownCommand(result.id))),
                }
            }
            MessageKind::ConfigReport => {
                let report: chillcloud_proto::ConfigReport = match decode(topic.kind, payload) {
                    Ok(r) => r,
                    Err(e) => return Ok(Err(e.into())),
                };
                info!(%gateway, version = report.version, outcome = report.outcome_name(), reason = %report.reason,
                    running = report.running_version, "gateway configuration report");
                match crate::gateway_config::record_report(&self.pool, gateway, &report).await? {
                    crate::gateway_config::Recorded::Stored => {}
                    crate::gateway_config::Recorded::UnknownVersion => {
                        return Ok(Err(Rejection::UnknownConfigVersion(report.version)));
                    }
                    crate::gateway_config::Recorded::UnknownOutcome => return Ok(Err(Rejection::UnknownConfigOutcome)),
                }
            }
            MessageKind::Command | MessageKind::PollBoost | MessageKind::Config => {
                return Ok(Err(Rejection::WrongDirection(topic.kind)));
            }
        }
        Ok(Ok(()))
    }
}

fn count(counts: &mut BatchCounts, outcome: &DataOutcome) {
    match outcome {
        DataOutcome::Stored { unknown_aliases, refused, .. } => {
            counts.unknown_aliases += *unknown_aliases as u64;
            counts.refused_readings += *refused as u64;
        }
        DataOutcome::HeldForBirth => counts.held_for_birth += 1,
        DataOutcome::HoldingFull => {}
    }
}

/// What gateways send, which the server takes.
pub const UPSTREAM: [MessageKind; 5] =
    [MessageKind::Birth, MessageKind::Death, MessageKind::Data, MessageKind::CommandResult, MessageKind::ConfigReport];

async fn drive(
    mut eventloop: EventLoop,
    client: AsyncClient,
    messages: mpsc::UnboundedSender<Delivery>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut delay = Duration::from_millis(250);
    let mut subscriptions_granted = 0;
    metrics.ingest.stalled(Stall::Broker, chrono::Utc::now().timestamp_millis());
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => return,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                info!(session_present = ack.session_present, "connected to broker");
                delay = Duration::from_millis(250);
                for kind in UPSTREAM {
                    let _ = client.try_subscribe(Topic::gateway_filter(kind), QoS::AtLeastOnce);
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                // Until the broker grants the subscriptions, what gateways publish is not kept
                // for this client (on a first connection there is no session yet).
                let granted = ack.return_codes.iter().all(|code| *code != rumqttc::SubscribeReasonCode::Failure);
                if granted {
                    subscriptions_granted += 1;
                    if subscriptions_granted == UPSTREAM.len() {
                        metrics.broker_subscribed.set(1.0);
                        metrics.ingest.resumed(Stall::Broker);
                    }
                } else {
                    warn!("the broker refused an ingest subscription (check its ACL)");
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                metrics.messages_received.inc();
                if messages.send(Delivery::Mqtt(publish)).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(error) => {
                metrics.broker_subscribed.set(0.0);
                metrics.ingest.stalled(Stall::Broker, chrono::Utc::now().timestamp_millis());
                subscriptions_granted = 0;
                if let rumqttc::ConnectionError::MqttState(rumqttc::StateError::Deserialization(
                    rumqttc::Error::PayloadSizeLimitExceeded(size),
                )) = &error
                {
                    // Reading on would need the whole packet: the broker lets through more than
                    // this client reads, and will redeliver it to this session for ever.
                    error!(
                        size,
                        limit = chillcloud_proto::MAX_PACKET_BYTES,
                        "the broker sent a packet larger than ingest reads: set the broker's max_packet_size to \
                         the limit (deploy/mosquitto/chillcloud.conf); ingest is stalled until then"
                    );
                } else {
                    warn!(%error, retry_in = ?delay, "broker connection failed");
                }
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

//! The clustered broker tier: RabbitMQ, which gateways reach over its MQTT plugin and server
//! replicas over AMQP 0-9-1 (ARCHITECTURE.md, "Several servers").
//!
//! Each partition ([`crate::partitions`]) is one quorum queue (replicated by Raft, so a
//! gateway's publish is acknowledged only once a majority of nodes stored it) with a single
//! active consumer. A gateway's upstream topics are bound to its partition's queue, from
//! `amq.topic`, where the MQTT plugin publishes (the topic's `/` become `.`). A replica consumes
//! the queues of the partitions it owns, hands each message to ingest, and acknowledges it once
//! ingest committed it; messages to gateways are published to `amq.topic`. Committed readings
//! go to the `chillcloud.live` fanout, from which every replica with a live stream open takes
//! them ([`crate::live`]).

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use chillcloud_proto::{GatewayId, Topic};
use futures_util::StreamExt;
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind,
    options::{
        BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ExchangeDeclareOptions,
        QueueBindOptions, QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable},
};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{
    gateway_link::GatewayMessages,
    ingest::{Delivery, UPSTREAM},
    live::{Live, Relay},
    metrics::{Metrics, Stall},
    partitions::{self, Ownership},
    rabbitmq_users::{GatewayUser, Management},
};

/// How the server reaches the cluster: one AMQP URL per node, tried in turn.
#[derive(Clone)]
pub struct AmqpSettings {
    /// `amqp://user:password@host:port/%2f` of each node.
    pub urls: Vec<String>,
    /// Where gateways' users are created, if the server creates them.
    pub management: Option<Management>,
}

impl std::fmt::Debug for AmqpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpSettings")
            .field("nodes", &self.urls.iter().map(|url| node(url)).collect::<Vec<_>>())
            .field("management", &self.management)
            .finish()
    }
}

/// The exchange the MQTT plugin publishes to and delivers from.
const EXCHANGE: &str = "amq.topic";

/// The fanout committed readings go through to every replica's live streams.
const LIVE_EXCHANGE: &str = "chillcloud.live";

/// Live batches a replica's queue holds before the oldest are dropped (a stream that cannot keep
/// up skips readings; they are stored).
const LIVE_QUEUE_LENGTH: i32 = 1_000;

/// Messages each consumer may hold unacknowledged (a replica owning 11 partitions holds at most
/// 11 times this in memory): about two of ingest's batches.
const PREFETCH: u16 = 1_000;

/// The queue of partition `partition`.
pub fn queue(partition: u16) -> String {
    format!("chillcloud.partition.{partition:02}")
}

/// The routing key of a topic: its levels joined by `.` (gateway ids hold no `.`).
pub fn routing_key(topic: &Topic) -> String {
    topic.to_string().replace('/', ".")
}

/// A URL's host and port, for logs: never its credentials.
fn node(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    rest.split('/').next().unwrap_or_default()
}

/// Consumes the owned partitions' queues into `deliveries` and publishes `to_gateways`, moving to
/// the next node when the one in use is lost, until `shutdown`.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    settings: AmqpSettings,
    pool: PgPool,
    deliveries: mpsc::UnboundedSender<Delivery>,
    mut to_gateways: GatewayMessages,
    mut ownership: Ownership,
    live: Live,
    mut relay: Relay,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut attempt = 0;
    let mut delay = Duration::from_millis(250);
    let admitted = Admitted::default();
    metrics.ingest.stalled(Stall::Broker, chrono::Utc::now().timestamp_millis());
    loop {
        let url = &settings.urls[attempt % settings.urls.len()];
        let session = Session {
            pool: &pool,
            deliveries: &deliveries,
            metrics: &metrics,
            live: &live,
            management: settings.management.as_ref(),
            admitted: &admitted,
        };
        let started = std::time::Instant::now();
        let error = tokio::select! {
            () = shutdown.cancelled() => return,
            ended = session.run(url, &mut to_gateways, &mut ownership, &mut relay, &shutdown) => match ended {
                Ok(()) => return,
                Err(error) => error,
            },
        };
        metrics.broker_subscribed.set(0.0);
        metrics.ingest.stalled(Stall::Broker, chrono::Utc::now().timestamp_millis());
        if started.elapsed() > Duration::from_secs(10) {
            delay = Duration::from_millis(250);
        }
        attempt += 1;
        let next = node(&settings.urls[attempt % settings.urls.len()]);
        warn!(%error, node = node(url), next, retry_in = ?delay, "broker connection lost");
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay.mul_f64(rand::random_range(0.5..1.0))) => {}
        }
        // A whole round of nodes failing backs off; the next node is tried at once otherwise.
        if attempt % settings.urls.len() == 0 {
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }
}

/// Why a connection's session ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("a consumer stopped: {0}")]
    Consumer(String),
}

/// The partitions whose gateways this process has bound and imported the users of, whatever the
/// connection: bindings and users are durable in the cluster, so a reconnection does not redo
/// them (at 100,000 gateways that is 400,000 bindings).
type Admitted = Arc<Mutex<HashSet<u16>>>;

struct Session<'a> {
    pool: &'a PgPool,
    deliveries: &'a mpsc::UnboundedSender<Delivery>,
    metrics: &'a Arc<Metrics>,
    live: &'a Live,
    management: Option<&'a Management>,
    admitted: &'a Admitted,
}

impl Session<'_> {
    async fn run(
        &self,
        url: &str,
        to_gateways: &mut GatewayMessages,
        ownership: &mut Ownership,
        relay: &mut Relay,
        shutdown: &CancellationToken,
    ) -> Result<(), SessionError> {
        let connection = Connection::connect(url, ConnectionProperties::default()).await?;
        let consuming = connection.create_channel().await?;
        consuming.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
        for partition in 0..partitions::COUNT {
            declare(&consuming, partition).await?;
        }
        let publishing = connection.create_channel().await?;
        let admitting = connection.create_channel().await?;
        let live_queue = self.follow_live(&connection).await?;
        let mut live_bound = false;
        // New gateways are bound before they can connect: `add-gateway` notifies on commit.
        let mut provisioned = sqlx::postgres::PgListener::connect_with(self.pool).await?;
        provisioned.listen(crate::GATEWAYS_CHANGED).await?;
        info!(node = node(url), "connected to broker");
        self.metrics.broker_subscribed.set(1.0);
        self.metrics.ingest.resumed(Stall::Broker);

        let (failed, mut failures) = mpsc::unbounded_channel();
        // A notification missed while the listener reconnected would leave a new gateway
        // unbound (RabbitMQ acknowledges what no queue takes): recent gateways are bound again.
        let mut rebind = tokio::time::interval(Duration::from_secs(60));
        rebind.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Live readings come to this replica only while one of its streams is open.
        let mut viewers = tokio::time::interval(Duration::from_millis(500));
        viewers.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut consumers: HashMap<u16, String> = HashMap::new();
        ownership.mark_seen();
        self.follow(&consuming, &admitting, &ownership.owned(), &mut consumers, &failed).await?;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => {
                    for tag in consumers.into_values() {
                        let _ = consuming.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
                    }
                    return Ok(());
                }
                changed = ownership.changed() => {
                    let owned = if changed { ownership.owned() } else { partitions::Owned::new() };
                    self.follow(&consuming, &admitting, &owned, &mut consumers, &failed).await?;
                }
                message = to_gateways.recv() => {
                    let Some((gateway, message)) = message else { return Ok(()) };
                    let key = routing_key(&Topic::new(gateway, message.kind()));
                    // Not confirmed, and dropped when the gateway is offline (its sessions are
                    // clean): a command that never arrives ends `unanswered`, a lost boost only
                    // shortens a capture.
                    let properties = BasicProperties::default().with_delivery_mode(2);
                    publishing
                        .basic_publish(EXCHANGE.into(), key.into(), BasicPublishOptions::default(), &message.encode(), properties)
                        .await?;
                }
                Some(batch) = relay.recv() => {
                    let payload = crate::live::encode(&batch);
                    publishing
                        .basic_publish(LIVE_EXCHANGE.into(), "".into(), BasicPublishOptions::default(), &payload, BasicProperties::default())
                        .await?;
                }
                _ = viewers.tick() => {
                    let watched = self.live.watched();
                    if watched != live_bound {
                        let (queue, exchange) = (live_queue.as_str(), LIVE_EXCHANGE);
                        if watched {
                            consuming
                                .queue_bind(queue.into(), exchange.into(), "".into(), QueueBindOptions::default(), FieldTable::default())
                                .await?;
                        } else {
                            consuming.queue_unbind(queue.into(), exchange.into(), "".into(), FieldTable::default()).await?;
                        }
                        live_bound = watched;
                    }
                }
                _ = rebind.tick() => {
                    let recent = gateways(self.pool, Provisioned::Recently).await?;
                    self.admit(&admitting, recent, Vec::new());
                }
                notification = provisioned.recv() => {
                    let notification = notification?;
                    let gateway = gateways(self.pool, Provisioned::One(notification.payload())).await?;
                    self.admit(&admitting, gateway, Vec::new());
                }
                Some((tag, error)) = failures.recv() => {
                    // A consumer this session did not cancel has stopped: its partition would go
                    // unconsumed, so the session starts again.
                    if consumers.values().any(|t| *t == tag) {
                        return Err(SessionError::Consumer(error));
                    }
                }
            }
        }
    }

    /// Declares the live fanout and this session's own queue for it (exclusive, gone with the
    /// connection, bounded), and hands what arrives there to this replica's streams; returns the
    /// queue's name. It is bound only while a stream is open.
    async fn follow_live(&self, connection: &Connection) -> Result<String, SessionError> {
        let channel = connection.create_channel().await?;
        channel
            .exchange_declare(
                LIVE_EXCHANGE.into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let mut arguments = FieldTable::default();
        arguments.insert("x-max-length".into(), AMQPValue::LongInt(LIVE_QUEUE_LENGTH));
        let options = QueueDeclareOptions { exclusive: true, auto_delete: true, ..QueueDeclareOptions::default() };
        let queue = channel.queue_declare("".into(), options, arguments).await?;
        let name = queue.name().as_str().to_owned();
        let options = BasicConsumeOptions { no_ack: true, ..BasicConsumeOptions::default() };
        let mut consumer =
            channel.basic_consume(name.as_str().into(), "live".into(), options, FieldTable::default()).await?;
        let live = self.live.clone();
        tokio::spawn(async move {
            // The channel is kept by the consumer; both end with the connection.
            let _channel = channel;
            while let Some(Ok(delivery)) = consumer.next().await {
                if let Some(batch) = crate::live::decode(&delivery.data) {
                    live.deliver(batch);
                }
            }
        });
        Ok(name)
    }

    /// In the background, binds the topics of `gateways` to their partitions' queues, then
    /// creates or updates their RabbitMQ users (so a gateway can connect only once its topics
    /// are routed), and on success counts `partitions` as admitted. A failure is logged (and an
    /// import's counted) and made again on the next occasion: a takeover, the minute's round of
    /// recent gateways.
    fn admit(&self, channel: &Channel, gateways: Vec<(GatewayId, Option<String>)>, partitions: Vec<u16>) {
        let (channel, management, metrics) = (channel.clone(), self.management.cloned(), Arc::clone(self.metrics));
        let admitted = Arc::clone(self.admitted);
        tokio::spawn(async move {
            for (gateway, _) in &gateways {
                if let Err(error) = bind(&channel, gateway).await {
                    warn!(%error, %gateway, "binding a gateway's topics failed");
                    return;
                }
            }
            if let Some(management) = management {
                let users: Vec<GatewayUser> =
                    gateways.into_iter().filter_map(|(gateway, hash)| Some((gateway, hash?))).collect();
                if let Err(error) = management.provision(&users).await {
                    metrics.broker_user_imports_failed.inc();
                    warn!(%error, users = users.len(), "creating gateways' users in RabbitMQ failed");
                    return;
                }
            }
            admitted.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend(partitions);
        });
    }

    /// Consumes exactly the queues of `owned`: cancels the others' consumers and starts the
    /// missing ones, admitting (on `admitting`, in the background) the gateways of partitions
    /// this process has not admitted yet.
    async fn follow(
        &self,
        channel: &Channel,
        admitting: &Channel,
        owned: &partitions::Owned,
        consumers: &mut HashMap<u16, String>,
        failed: &mpsc::UnboundedSender<(String, String)>,
    ) -> Result<(), SessionError> {
        let released: Vec<u16> = consumers.keys().filter(|p| !owned.contains(p)).copied().collect();
        for partition in released {
            if let Some(tag) = consumers.remove(&partition) {
                channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await?;
                info!(partition, "stopped consuming");
            }
        }
        let taken: Vec<u16> = owned.iter().filter(|p| !consumers.contains_key(p)).copied().collect();
        if taken.is_empty() {
            return Ok(());
        }
        let new: Vec<u16> = {
            let admitted = self.admitted.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            taken.iter().filter(|p| !admitted.contains(p)).copied().collect()
        };
        if !new.is_empty() {
            let mut all = gateways(self.pool, Provisioned::All).await?;
            all.retain(|(gateway, _)| new.contains(&partitions::of(gateway.as_str())));
            self.admit(admitting, all, new);
        }
        for partition in taken {
            let tag = format!("{}-{partition:02}", crate::secrets::random_hex::<4>());
            let mut consumer = channel
                .basic_consume(
                    queue(partition).into(),
                    tag.as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            let deliveries = self.deliveries.clone();
            let failed = failed.clone();
            let consumer_tag = tag.clone();
            tokio::spawn(async move {
                while let Some(delivery) = consumer.next().await {
                    match delivery {
                        Ok(delivery) => {
                            let topic = delivery.routing_key.as_str().replace('.', "/");
                            let message = Delivery::Amqp { topic, payload: delivery.data, acker: delivery.acker };
                            if deliveries.send(message).is_err() {
                                return;
                            }
                        }
                        Err(error) => {
                            let _ = failed.send((consumer_tag, error.to_string()));
                            return;
                        }
                    }
                }
                debug!(partition, "consumer ended");
                let _ = failed.send((consumer_tag, "cancelled by the broker".into()));
            });
            consumers.insert(partition, tag);
            info!(partition, "consuming");
        }
        Ok(())
    }
}

/// Which provisioned gateways to admit.
enum Provisioned<'a> {
    All,
    /// Provisioned in the last hour.
    Recently,
    One(&'a str),
}

/// The provisioned gateways `which` names, with their RabbitMQ password hashes.
async fn gateways(pool: &PgPool, which: Provisioned<'_>) -> sqlx::Result<Vec<(GatewayId, Option<String>)>> {
    let query = match which {
        Provisioned::All => sqlx::query_as("select id, rabbitmq_password_hash from gateways"),
        Provisioned::Recently => sqlx::query_as(
            "select id, rabbitmq_password_hash from gateways where created_at > now() - interval '1 hour'",
        ),
        Provisioned::One(id) => {
            sqlx::query_as("select id, rabbitmq_password_hash from gateways where id = $1").bind(id)
        }
    };
    let rows: Vec<(String, Option<String>)> = query.fetch_all(pool).await?;
    Ok(rows.into_iter().filter_map(|(id, hash)| Some((GatewayId::new(id).ok()?, hash))).collect())
}

/// Declares a partition's queue: durable, quorum (replicated), one active consumer at a time.
async fn declare(channel: &Channel, partition: u16) -> lapin::Result<()> {
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    arguments.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    let options = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    channel.queue_declare(queue(partition).into(), options, arguments).await.map(drop)
}

/// Routes what `gateway` publishes to its partition's queue (idempotent).
async fn bind(channel: &Channel, gateway: &GatewayId) -> lapin::Result<()> {
    let queue = queue(partitions::of(gateway.as_str()));
    for kind in UPSTREAM {
        let key = routing_key(&Topic::new(gateway.clone(), kind));
        channel
            .queue_bind(
                queue.as_str().into(),
                EXCHANGE.into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use chillcloud_proto::MessageKind;

    use super::*;

    #[test]
    fn logs_name_the_node_without_credentials() {
        assert_eq!(node("amqp://server:s3cret@10.0.0.5:5672/%2f"), "10.0.0.5:5672");
        assert_eq!(node("amqp://127.0.0.1:5672"), "127.0.0.1:5672");
        let settings = AmqpSettings { urls: vec!["amqp://u:p4ss@h:1/%2f".into()], management: None };
        assert!(!format!("{settings:?}").contains("p4ss"));
    }

    #[test]
    fn routing_keys_are_topics_with_dots() {
        let gateway = GatewayId::new("plant-a_gw1").expect("id");
        assert_eq!(routing_key(&Topic::new(gateway, MessageKind::Data)), "chillcloud.v1.plant-a_gw1.data");
        assert_eq!(queue(7), "chillcloud.partition.07");
    }
}

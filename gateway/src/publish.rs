//! The MQTT side: every batch goes through the durable [`Queue`] and is forwarded to the broker
//! at QoS 1; a batch leaves the queue only when the broker has acknowledged it.
//!
//! Each connection is a fresh rumqttc client, so rumqttc never replays anything on its own:
//! after a reconnect the [`Forwarder`] sends what the queue still holds, oldest first, flagged
//! as history, in messages of up to [`BACKFILL_MESSAGE_BYTES`]. Batches polled while connected
//! go out at once as live data and take precedence over the backfill, which keeps at most
//! [`BACKFILL_WINDOW`] messages in flight so live data is never stuck behind the backlog.
//!
//! Each connection also subscribes to the gateway's own boost and command topics: the server's
//! poll boosts go to [`Boosts`], which hands them to the device's poller; commands go to
//! [`Commands`], which has them executed, and their results are published here and kept until
//! the broker acknowledges them.

use std::{
    collections::{HashMap, VecDeque},
    ops::RangeInclusive,
    time::Duration,
};

use chillcloud_proto::{
    Birth, CommandResult, ConfigReport, Data, Death, GatewayConfig, MessageKind, Reading, Topic, decode, encode_value,
};
use prost::Message;
use rand::Rng;
use rumqttc::{
    AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, Publish, QoS, SubscribeReasonCode,
    TlsConfiguration,
};
use tokio::{sync::mpsc, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::{
    backoff::Backoff,
    boost::Boosts,
    command::Commands,
    config::{BrokerAddress, Config, MqttConfig},
    now_ms,
    poll::Sample,
    queue::{Queue, Record},
    status::StatusBoard,
    throttle::Throttle,
};

/// Longest wait between reconnection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(30);
/// First wait after a failed connection.
const FIRST_RECONNECT_DELAY: Duration = Duration::from_millis(250);
/// Backfill messages in flight at once.
pub const BACKFILL_WINDOW: usize = 4;
/// Largest payload of one backfill message (before protobuf framing).
pub const BACKFILL_MESSAGE_BYTES: usize = 64 * 1024;
/// How often the acknowledged position is written down.
const PERSIST_ACKED_EVERY: Duration = Duration::from_millis(500);

/// Encodes samples of one or more polls as a data message of `session`.
pub fn encode_data(session: u64, decimals: &[i32], samples: &[Sample]) -> Data {
    let base_time_ms = samples.iter().map(|s| s.time_ms).min().unwrap_or_default();
    Data {
        session,
        base_time_ms,
        readings: samples
            .iter()
            .map(|s| Reading {
                alias: s.alias,
                offset_ms: s.time_ms - base_time_ms,
                quality: s.quality as i32,
                value: s.value.map(|v| encode_value(v, decimals[s.alias as usize])),
            })
            .collect(),
        ..Default::default()
    }
}

/// Merges consecutive batches of one session into one history message.
fn merge(records: &[Record]) -> Data {
    // Drop reports carry no readings and a zero base time: they do not set the base.
    let base_time_ms =
        records.iter().filter(|r| !r.data.readings.is_empty()).map(|r| r.data.base_time_ms).min().unwrap_or_default();
    let mut merged = Data { history: true, base_time_ms, ..Default::default() };
    for record in records {
        merged.session = record.data.session;
        merged.seq = record.seq;
        let shift = record.data.base_time_ms - base_time_ms;
        merged.readings.extend(record.data.readings.iter().map(|r| Reading { offset_ms: r.offset_ms + shift, ..*r }));
        merged.dropped.extend_from_slice(&record.data.dropped);
    }
    merged
}

/// A message for the broker.
#[derive(Debug, Clone, PartialEq)]
pub struct Outbound {
    /// What it is.
    pub kind: MessageKind,
    /// Whether the broker keeps it for later subscribers.
    pub retain: bool,
    /// The encoded payload.
    pub payload: Vec<u8>,
    /// The queued batches it carries, acknowledged together.
    pub batches: Option<RangeInclusive<u64>>,
    /// The id of the command whose result it carries: kept and sent again until acknowledged.
    pub result: Option<String>,
}

/// What happens on the connection, as the event loop driver reports it.
#[derive(Debug)]
enum LinkEvent {
    Connected,
    /// A publish went out with this packet id (in the order they were handed to the client).
    Sent(u16),
    Acked(u16),
    /// The broker answered a subscription: whether it granted it.
    Subscribed(bool),
    /// A message on a subscribed topic.
    Received(Publish),
    Down(String),
}

/// The forwarding logic, apart from the network: what to send next, and what the broker's
/// acknowledgements mean for the queue.
pub struct Forwarder {
    queue: Queue,
    session: u64,
    birth: Vec<u8>,
    connected: bool,
    /// Batches and command result of each publish handed to the client, waiting for their
    /// packet id.
    awaiting_id: VecDeque<(Option<RangeInclusive<u64>>, Option<String>)>,
    in_flight: HashMap<u16, RangeInclusive<u64>>,
    /// Command results sent on this connection, by packet id.
    results_in_flight: HashMap<u16, String>,
    /// Backfill has been sent up to here on this connection.
    backfill_after: u64,
    /// The first batch queued while this connection was up; backfill stops before it.
    live_from: u64,
    backfill_in_flight: usize,
    /// Earlier sessions whose birth has been sent on this connection.
    announced: Vec<u64>,
}

impl Forwarder {
    /// A forwarder for `queue`, whose session is `birth`'s.
    pub fn new(queue: Queue, birth: &Birth) -> Self {
        Self {
            queue,
            session: birth.session,
            birth: birth.encode_to_vec(),
            connected: false,
            awaiting_id: VecDeque::new(),
            in_flight: HashMap::new(),
            results_in_flight: HashMap::new(),
            backfill_after: 0,
            live_from: 0,
            backfill_in_flight: 0,
            announced: Vec::new(),
        }
    }

    /// A connection is up: the birth goes first, retained, so a server that subscribes later
    /// still learns this session; whatever the queue holds becomes backfill.
    pub fn connected(&mut self) -> Outbound {
        self.connected = true;
        self.awaiting_id.clear();
        self.in_flight.clear();
        self.results_in_flight.clear();
        self.backfill_in_flight = 0;
        self.backfill_after = self.queue.acked();
        self.live_from = self.queue.next_seq();
        self.announced.clear();
        Outbound { kind: MessageKind::Birth, retain: true, payload: self.birth.clone(), batches: None, result: None }
    }

    /// The connection is gone: whatever was not acknowledged is sent again on the next one.
    pub fn disconnected(&mut self) {
        self.connected = false;
        self.awaiting_id.clear();
        self.in_flight.clear();
        self.results_in_flight.clear();
    }

    /// Whether a connection is up.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Whether publishes handed to the client still wait for the broker's acknowledgement.
    fn has_in_flight(&self) -> bool {
        !self.awaiting_id.is_empty() || !self.in_flight.is_empty() || !self.results_in_flight.is_empty()
    }

    /// A batch just queued (its `seq` set by the queue): sent at once when connected.
    pub fn live(&mut self, data: &Data) -> Option<Outbound> {
        self.connected.then(|| Outbound {
            kind: MessageKind::Data,
            retain: false,
            payload: data.encode_to_vec(),
            batches: Some(data.seq..=data.seq),
            result: None,
        })
    }

    /// Whether backfill may send another message now.
    pub fn wants_backfill(&self) -> bool {
        self.connected && self.backfill_in_flight < BACKFILL_WINDOW && self.backfill_after + 1 < self.live_from
    }

    /// The next backfill messages: a stored birth first when the batches belong to an earlier
    /// session, then the oldest unacknowledged batches of one session merged into one message.
    pub fn next_backfill(&mut self) -> std::io::Result<Vec<Outbound>> {
        let records = self.queue.read_after(self.backfill_after, self.live_from, BACKFILL_MESSAGE_BYTES)?;
        let Some(first) = records.first() else {
            // Everything before the live batches is acknowledged.
            self.backfill_after = self.live_from.saturating_sub(1);
            return Ok(Vec::new());
        };
        let session = first.data.session;
        let same_session = records.iter().take_while(|r| r.data.session == session).count();
        let records = &records[..same_session];
        let mut out = Vec::with_capacity(2);
        if session != self.session && !self.announced.contains(&session) {
            self.announced.push(session);
            match self.queue.birth(session) {
                Some(birth) => out.push(Outbound {
                    kind: MessageKind::Birth,
                    retain: false,
                    payload: birth,
                    batches: None,
                    result: None,
                }),
                None => warn!(session, "no stored birth for a backlog of an earlier session; sending it anyway"),
            }
        }
        let (first_seq, last_seq) = (records[0].seq, records[records.len() - 1].seq);
        self.backfill_after = last_seq;
        self.backfill_in_flight += 1;
        out.push(Outbound {
            kind: MessageKind::Data,
            retain: false,
            payload: merge(records).encode_to_vec(),
            batches: Some(first_seq..=last_seq),
            result: None,
        });
        Ok(out)
    }

    /// `message` was handed to the client.
    pub fn handed_over(&mut self, message: &Outbound) {
        self.awaiting_id.push_back((message.batches.clone(), message.result.clone()));
    }

    /// The client sent the oldest publish not yet sent, with packet id `id`.
    fn sent(&mut self, id: u16) {
        match self.awaiting_id.pop_front() {
            Some((Some(batches), _)) => {
                debug!(id, first = batches.start(), last = batches.end(), "sent");
                self.in_flight.insert(id, batches);
            }
            Some((None, Some(result))) => {
                self.results_in_flight.insert(id, result);
            }
            _ => {}
        }
    }

    /// The broker acknowledged packet `id`; returns the command whose result it carried, if any.
    fn acked(&mut self, id: u16) -> Option<String> {
        if let Some(result) = self.results_in_flight.remove(&id) {
            return Some(result);
        }
        if let Some(batches) = self.in_flight.remove(&id) {
            debug!(id, first = batches.start(), last = batches.end(), "acknowledged by the broker");
            if *batches.end() < self.live_from {
                self.backfill_in_flight = self.backfill_in_flight.saturating_sub(1);
            }
            for seq in batches {
                self.queue.ack(seq);
            }
        }
        None
    }
}

/// How long a clean stop waits for the broker to acknowledge what is in flight.
const STOP_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Most command results kept for sending again; beyond, the oldest is given up (the server
/// marks its command unanswered).
const MAX_KEPT_RESULTS: usize = 64;

/// Keeps `result` until the broker acknowledges it, replacing an earlier copy.
fn keep_result(results: &mut Vec<CommandResult>, result: CommandResult) {
    results.retain(|kept| kept.id != result.id);
    if results.len() == MAX_KEPT_RESULTS {
        let given_up = results.remove(0);
        warn!(id = %given_up.id, "a command result the broker never acknowledged was given up");
    }
    results.push(result);
}

fn result_message(result: &CommandResult) -> Outbound {
    Outbound {
        kind: MessageKind::CommandResult,
        retain: false,
        payload: result.encode_to_vec(),
        batches: None,
        result: Some(result.id.clone()),
    }
}

fn report_message(report: &ConfigReport) -> Outbound {
    Outbound {
        kind: MessageKind::ConfigReport,
        retain: false,
        payload: report.encode_to_vec(),
        batches: None,
        result: None,
    }
}

/// What the server asks of the pollers, and what they answer.
pub struct Control {
    /// Poll boosts, for each device's poller.
    pub boosts: Boosts,
    /// Commands, and their results.
    pub commands: Commands,
    /// Server-held configurations: versions received, and reports to send.
    pub configs: ConfigChannel,
}

/// Between the MQTT side and whoever applies server-held configurations.
pub struct ConfigChannel {
    /// Versions received (decoded, not yet checked).
    pub received: mpsc::UnboundedSender<GatewayConfig>,
    /// Reports to send.
    pub reports: mpsc::UnboundedReceiver<ConfigReport>,
    /// The report sent on each connection: the last one made, until a newer replaces it.
    pub last_report: Option<ConfigReport>,
}

/// Queues every batch from `samples` and forwards the queue to the broker until `shutdown`;
/// then queues what the pollers still hand over, waits briefly for the broker to take it,
/// publishes the death and disconnects. Writes the status report twice a second. Poll boosts
/// and commands received from the server go to the pollers through `control`.
pub async fn run(
    config: &Config,
    mut forwarder: Forwarder,
    decimals: &[i32],
    mut samples: mpsc::Receiver<Vec<Sample>>,
    mut control: Control,
    status: StatusBoard,
    shutdown: CancellationToken,
) {
    let status_path = crate::status::path(&config.state_dir);
    let mut warnings = Warnings::default();
    let gateway = config.gateway_id.clone();
    let session = forwarder.session;
    let topic = |kind| Topic::new(gateway.clone(), kind).to_string();
    let boost_topic = topic(MessageKind::PollBoost);
    let command_topic = topic(MessageKind::Command);
    let config_topic = topic(MessageKind::Config);
    // Command results stay here until the broker acknowledges them, and are sent again on
    // each new connection (the server takes a second copy as the same result).
    let mut results: Vec<CommandResult> = Vec::new();
    let mut link: Option<(AsyncClient, mpsc::UnboundedReceiver<LinkEvent>)> = None;
    let mut reconnect_at = Instant::now();
    let mut reconnects = Backoff::default();
    let mut persist = tokio::time::interval(PERSIST_ACKED_EVERY);
    persist.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut connections = 0u64;
    // The broker in use, and the one that last took a connection: a lost broker moves the
    // gateway to the next one at once, and only a whole round of failures backs off.
    let brokers = &config.mqtt.brokers;
    let mut broker = 0;
    let mut round_start = 0;

    loop {
        if link.is_none() && Instant::now() >= reconnect_at {
            link = Some(connect(&config.mqtt, &brokers[broker], &gateway, session, &topic));
        }
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            event = next_event(&mut link) => match event {
                LinkEvent::Connected => {
                    info!(broker = %brokers[broker], "connected to broker");
                    reconnects.reset();
                    round_start = broker;
                    connections += 1;
                    // Each connection is a fresh client with a clean session: subscribe again.
                    if let Some((client, _)) = link.as_ref() {
                        let _ = client.subscribe(boost_topic.as_str(), QoS::AtLeastOnce).await;
                        let _ = client.subscribe(command_topic.as_str(), QoS::AtLeastOnce).await;
                        let _ = client.subscribe(config_topic.as_str(), QoS::AtLeastOnce).await;
                    }
                    let birth = forwarder.connected();
                    send(&mut link, &mut forwarder, &topic, birth).await;
                    for result in &results {
                        send(&mut link, &mut forwarder, &topic, result_message(result)).await;
                    }
                    if let Some(report) = &control.configs.last_report {
                        send(&mut link, &mut forwarder, &topic, report_message(report)).await;
                    }
                }
                LinkEvent::Sent(id) => forwarder.sent(id),
                LinkEvent::Acked(id) => {
                    if let Some(id) = forwarder.acked(id) {
                        results.retain(|result| result.id != id);
                    }
                }
                LinkEvent::Subscribed(granted) => {
                    if !granted {
                        warn!(topics = %format!("{boost_topic}, {command_topic}, {config_topic}"), "the broker refused a subscription (check its ACL)");
                    }
                }
                LinkEvent::Received(message) if message.topic == boost_topic => {
                    control.boosts.receive(&message.payload, &status);
                }
                LinkEvent::Received(message) if message.topic == command_topic => {
                    if let Some(result) = control.commands.receive(&message.payload, &config.devices, &status) {
                        send(&mut link, &mut forwarder, &topic, result_message(&result)).await;
                        keep_result(&mut results, result);
                    }
                }
                LinkEvent::Received(message) if message.topic == config_topic => {
                    match decode::<GatewayConfig>(MessageKind::Config, &message.payload) {
                        Ok(config) => {
                            let _ = control.configs.received.send(config);
                        }
                        Err(error) => warn!(%error, "malformed configuration from the server ignored"),
                    }
                }
                LinkEvent::Received(message) => debug!(topic = %message.topic, "message on an unexpected topic ignored"),
                LinkEvent::Down(error) => {
                    // Jittered, so the gateways of a site do not all come back at the same moment.
                    let jitter = rand::rng().random_range(0.5..1.0);
                    let lost = &brokers[broker];
                    broker = (broker + 1) % brokers.len();
                    let delay = if broker == round_start {
                        let delay = reconnects.delay(FIRST_RECONNECT_DELAY, MAX_RECONNECT_DELAY);
                        reconnects.failed();
                        delay
                    } else {
                        FIRST_RECONNECT_DELAY
                    }
                    .mul_f64(jitter);
                    warn!(%error, %lost, next = %brokers[broker], retry_in = ?delay, "broker connection lost");
                    forwarder.disconnected();
                    link = None;
                    reconnect_at = Instant::now() + delay;
                }
            },
            Some(report) = control.configs.reports.recv() => {
                if forwarder.is_connected() {
                    send(&mut link, &mut forwarder, &topic, report_message(&report)).await;
                }
                control.configs.last_report = Some(report);
            }
            Some(result) = control.commands.next_result(&status) => {
                if forwarder.is_connected() {
                    send(&mut link, &mut forwarder, &topic, result_message(&result)).await;
                }
                keep_result(&mut results, result);
            }
            batch = samples.recv() => {
                let Some(batch) = batch else { break };
                let Some(data) = queue_batches(&mut forwarder, decimals, batch, &mut samples, &status, &mut warnings.queue).await else {
                    continue;
                };
                debug!(seq = data.seq, time_ms = data.base_time_ms, readings = data.readings.len(), "batch queued");
                if let Some(message) = forwarder.live(&data) {
                    send(&mut link, &mut forwarder, &topic, message).await;
                }
            }
            () = tokio::time::sleep_until(reconnect_at), if link.is_none() => {}
            _ = persist.tick() => {
                if let Err(error) = forwarder.queue.persist_acked()
                    && let Some(held_back) = warnings.acked.allow()
                {
                    warn!(%error, held_back, "cannot record the acknowledged position of the queue");
                }
                status.link(forwarder.is_connected(), connections, &brokers[broker], forwarder.queue.status(), now_ms());
                if let Err(error) = control.commands.prune(now_ms()) {
                    warn!(%error, "cannot rewrite the command journal");
                }
                if let Err(error) = status.write(&status_path)
                    && let Some(held_back) = warnings.status.allow()
                {
                    warn!(%error, held_back, path = %status_path.display(), "cannot write the status report");
                }
            }
            () = std::future::ready(()), if forwarder.wants_backfill() => {
                match forwarder.next_backfill() {
                    Ok(messages) => for message in messages {
                        send(&mut link, &mut forwarder, &topic, message).await;
                    },
                    Err(error) => {
                        warn!(%error, "cannot read the queue; backfill paused until the next connection");
                        forwarder.disconnected();
                        link = None;
                        reconnect_at = Instant::now() + MAX_RECONNECT_DELAY;
                    }
                }
            }
        }
    }

    // The pollers have stopped: what they read last is queued, not lost.
    // Until every poller has handed over its last poll, which on a busy RTU line can take a
    // while; bounded in case one hangs.
    let _ = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(batch) = samples.recv().await {
            if let Some(data) =
                queue_batches(&mut forwarder, decimals, batch, &mut samples, &status, &mut warnings.queue).await
                && let Some(message) = forwarder.live(&data)
            {
                send(&mut link, &mut forwarder, &topic, message).await;
            }
        }
    })
    .await;
    if let Some((client, mut events)) = link {
        // Whatever is in flight gets a moment to be acknowledged; the rest stays queued and goes
        // out after the restart.
        let flushed = tokio::time::timeout(STOP_FLUSH_TIMEOUT, async {
            while forwarder.has_in_flight() {
                match events.recv().await {
                    Some(LinkEvent::Sent(id)) => forwarder.sent(id),
                    Some(LinkEvent::Acked(id)) => {
                        forwarder.acked(id);
                    }
                    // Boosts are of no use any more.
                    Some(LinkEvent::Subscribed(_) | LinkEvent::Received(_)) => {}
                    Some(LinkEvent::Connected) | None | Some(LinkEvent::Down(_)) => return,
                }
            }
        })
        .await;
        if flushed.is_err() {
            warn!("the broker did not acknowledge everything in flight before the stop");
        }
        let unacked = forwarder.queue.status().unacked_batches;
        if unacked > 0 {
            info!(batches = unacked, "batches stay queued on disk for the next start");
        }
        // A clean stop announces the death itself: the broker only sends the will on an
        // unclean one. In-flight batches stay queued and go out after the restart.
        let death = Death { session }.encode_to_vec();
        let _ = client.try_publish(topic(MessageKind::Death), QoS::AtLeastOnce, false, death);
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_secs(2), async { while events.recv().await.is_some() {} }).await;
    }
    if let Err(error) = forwarder.queue.persist_acked() {
        warn!(%error, "cannot record the acknowledged position of the queue");
    }
    status.link(false, connections, &brokers[broker], forwarder.queue.status(), now_ms());
    if let Err(error) = status.write(&status_path) {
        warn!(%error, path = %status_path.display(), "cannot write the status report");
    }
}

/// Warnings that could repeat at every poll or tick, each rate-limited on its own.
#[derive(Default)]
struct Warnings {
    queue: Throttle,
    acked: Throttle,
    status: Throttle,
}

/// Writes `first` and whatever else the pollers have ready as one batch to the queue and
/// makes it durable. Returns the message (with its seq), or `None` when the queue cannot take
/// it.
async fn queue_batches(
    forwarder: &mut Forwarder,
    decimals: &[i32],
    first: Vec<Sample>,
    more: &mut mpsc::Receiver<Vec<Sample>>,
    status: &StatusBoard,
    warnings: &mut Throttle,
) -> Option<Data> {
    let mut samples = first;
    while samples.len() < 4096 {
        match more.try_recv() {
            Ok(batch) => samples.extend(batch),
            Err(_) => break,
        }
    }
    let mut data = encode_data(forwarder.session, decimals, &samples);
    let appended = forwarder.queue.append(&mut data, now_ms()).and_then(|_| forwarder.queue.sync_handle());
    let handle = match appended {
        Ok(appended) => appended,
        Err(error) => {
            status.lost_to_disk_error(samples.len() as u64);
            if let Some(held_back) = warnings.allow() {
                error!(%error, readings = samples.len(), held_back, "cannot write to the queue; readings lost");
            }
            return None;
        }
    };
    if let Some(file) = handle {
        match tokio::task::spawn_blocking(move || file.sync_data()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                if let Some(held_back) = warnings.allow() {
                    warn!(%error, held_back, "cannot sync the queue");
                }
            }
            Err(error) => warn!(%error, "queue sync task failed"),
        }
    }
    status.queued(data.readings.len() as u64);
    Some(data)
}

/// Hands `message` to the client; a failure means the connection is going down, and the
/// driver reports that.
async fn send(
    link: &mut Option<(AsyncClient, mpsc::UnboundedReceiver<LinkEvent>)>,
    forwarder: &mut Forwarder,
    topic: &impl Fn(MessageKind) -> String,
    message: Outbound,
) {
    let Some((client, _)) = link.as_ref() else { return };
    if client.publish(topic(message.kind), QoS::AtLeastOnce, message.retain, message.payload.clone()).await.is_ok() {
        forwarder.handed_over(&message);
    }
}

async fn next_event(link: &mut Option<(AsyncClient, mpsc::UnboundedReceiver<LinkEvent>)>) -> LinkEvent {
    match link.as_mut() {
        Some((_, events)) => events.recv().await.unwrap_or_else(|| LinkEvent::Down("event loop ended".into())),
        None => std::future::pending().await,
    }
}

/// Starts a fresh client and its event loop driver.
fn connect(
    mqtt: &MqttConfig,
    broker: &BrokerAddress,
    gateway: &chillcloud_proto::GatewayId,
    session: u64,
    topic: &impl Fn(MessageKind) -> String,
) -> (AsyncClient, mpsc::UnboundedReceiver<LinkEvent>) {
    let death = Death { session }.encode_to_vec();
    let mut options = MqttOptions::new(gateway.as_str(), &broker.host, broker.port);
    options.set_credentials(&mqtt.username, mqtt.password.expose());
    options.set_keep_alive(mqtt.keep_alive);
    options.set_last_will(LastWill::new(topic(MessageKind::Death), death, QoS::AtLeastOnce, false));
    options.set_max_packet_size(chillcloud_proto::MAX_PAYLOAD_BYTES + 1024, chillcloud_proto::MAX_PAYLOAD_BYTES + 1024);
    if let Some(tls) = &mqtt.tls {
        options.set_transport(rumqttc::Transport::tls_with_config(TlsConfiguration::Simple {
            ca: tls.ca.clone(),
            alpn: None,
            client_auth: tls.client_auth.clone(),
        }));
    }
    let (client, eventloop) = AsyncClient::new(options, 16);
    let (events_tx, events) = mpsc::unbounded_channel();
    tokio::spawn(drive(eventloop, events_tx));
    (client, events)
}

/// Polls one connection's event loop until it fails, reporting what matters to the forwarder.
/// Never blocks on anything but the network.
async fn drive(mut eventloop: EventLoop, events: mpsc::UnboundedSender<LinkEvent>) {
    loop {
        let event = match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => LinkEvent::Connected,
            Ok(Event::Incoming(Packet::PubAck(ack))) => LinkEvent::Acked(ack.pkid),
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                LinkEvent::Subscribed(ack.return_codes.iter().all(|code| *code != SubscribeReasonCode::Failure))
            }
            Ok(Event::Incoming(Packet::Publish(message))) => LinkEvent::Received(message),
            Ok(Event::Outgoing(Outgoing::Publish(id))) => LinkEvent::Sent(id),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                // Let the disconnect reach the broker before the loop is dropped.
                let _ = eventloop.poll().await;
                let _ = events.send(LinkEvent::Down("disconnected".into()));
                return;
            }
            Ok(_) => continue,
            Err(error) => {
                let _ = events.send(LinkEvent::Down(error.to_string()));
                return;
            }
        };
        if events.send(event).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use chillcloud_proto::{CommandStatus, Quality, decode};

    use super::*;
    use crate::queue::QueueLimits;

    fn birth(session: u64) -> Birth {
        Birth { protocol_version: 1, session, ..Default::default() }
    }

    fn samples(time_ms: i64) -> Vec<Sample> {
        // 50 points, so the backlog below takes more than a window of messages.
        (0..50).map(|alias| Sample { alias, time_ms, value: Some(7.2), quality: Quality::Good }).collect()
    }

    fn forwarder(dir: &std::path::Path, session: u64) -> Forwarder {
        let limits = QueueLimits { max_bytes: 1 << 24, max_age: Duration::from_secs(86_400) };
        let queue = Queue::open(dir, limits, session).expect("queue");
        queue.store_birth(&birth(session).encode_to_vec()).expect("store birth");
        Forwarder::new(queue, &birth(session))
    }

    fn queue(forwarder: &mut Forwarder, time_ms: i64) -> Data {
        let mut data = encode_data(forwarder.session, &[1; 50], &samples(time_ms));
        forwarder.queue.append(&mut data, time_ms).expect("append");
        data
    }

    /// Hands `message` over and lets the broker acknowledge it as packet `id`.
    fn deliver(forwarder: &mut Forwarder, message: &Outbound, id: u16) {
        forwarder.handed_over(message);
        forwarder.sent(id);
        assert_eq!(forwarder.acked(id), None, "a batch carries no result");
    }

    #[test]
    fn a_command_result_is_known_acknowledged_only_by_its_own_packet() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut forwarder = forwarder(dir.path(), 1);
        let birth = forwarder.connected();
        let result = crate::command::answer("c-1", CommandStatus::Done, "", 0);
        let message = result_message(&result);
        for (sent, id) in [(&birth, 1), (&message, 2)] {
            forwarder.handed_over(sent);
            forwarder.sent(id);
        }
        assert_eq!(forwarder.acked(1), None);
        assert!(forwarder.has_in_flight(), "the result waits for its acknowledgement");
        assert_eq!(forwarder.acked(2), Some("c-1".to_owned()));
        assert!(!forwarder.has_in_flight());
        // A connection lost before the acknowledgement forgets the packet; the result itself is
        // kept by the caller and sent again on the next connection.
        forwarder.handed_over(&message);
        forwarder.sent(3);
        forwarder.disconnected();
        assert_eq!(forwarder.acked(3), None);

        let mut kept = Vec::new();
        for i in 0..MAX_KEPT_RESULTS + 1 {
            keep_result(&mut kept, crate::command::answer(&format!("c-{i}"), CommandStatus::Done, "", 0));
        }
        keep_result(&mut kept, crate::command::answer("c-5", CommandStatus::Done, "again", 0));
        assert_eq!(kept.len(), MAX_KEPT_RESULTS, "bounded");
        assert_eq!(kept.first().map(|r| r.id.as_str()), Some("c-1"), "the oldest given up");
        assert_eq!(kept.iter().filter(|r| r.id == "c-5").count(), 1, "one copy of each");
    }

    #[test]
    fn live_batches_go_ahead_of_a_draining_backlog_and_everything_is_sent_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut forwarder = forwarder(dir.path(), 1);
        // An outage: 1,000 batches queue up unsent.
        for i in 0..1000 {
            queue(&mut forwarder, 1_800_000_000_000 + i * 1000);
        }
        let birth = forwarder.connected();
        assert_eq!((birth.kind, birth.retain), (MessageKind::Birth, true));
        deliver(&mut forwarder, &birth, 1);

        // Backfill fills its window, and a live batch still goes out at once.
        let mut backfill = Vec::new();
        while forwarder.wants_backfill() {
            backfill.extend(forwarder.next_backfill().expect("backfill"));
        }
        assert_eq!(backfill.len(), BACKFILL_WINDOW);
        let data = queue(&mut forwarder, 1_800_001_000_000);
        let live = forwarder.live(&data).expect("connected: sent live");
        let live_data: Data = decode(MessageKind::Data, &live.payload).expect("data");
        assert!(!live_data.history);
        deliver(&mut forwarder, &live, 2);

        // The backlog drains in order, flagged as history, every batch exactly once.
        let mut seen = Vec::new();
        let mut id = 3;
        loop {
            for message in std::mem::take(&mut backfill) {
                let data: Data = decode(MessageKind::Data, &message.payload).expect("data");
                assert!(data.history);
                seen.extend(message.batches.clone().expect("batches"));
                deliver(&mut forwarder, &message, id);
                id += 1;
            }
            if !forwarder.wants_backfill() {
                break;
            }
            backfill = forwarder.next_backfill().expect("backfill");
        }
        assert_eq!(seen, (1..=1000).collect::<Vec<_>>());
        assert_eq!(forwarder.queue.status().unacked_batches, 0);
    }

    #[test]
    fn what_was_not_acknowledged_is_sent_again_after_a_reconnect_with_earlier_births() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut forwarder = forwarder(dir.path(), 1);
        for i in 0..5 {
            queue(&mut forwarder, 1_800_000_000_000 + i);
        }
        drop(forwarder);
        // A restart: session 2 finds session 1's backlog.
        let mut forwarder = self::forwarder(dir.path(), 2);
        let birth = forwarder.connected();
        deliver(&mut forwarder, &birth, 1);
        let messages = forwarder.next_backfill().expect("backfill");
        assert_eq!(messages.len(), 2, "the earlier session's birth, then its data");
        assert_eq!((messages[0].kind, messages[0].retain), (MessageKind::Birth, false));
        let old_birth: Birth = decode(MessageKind::Birth, &messages[0].payload).expect("birth");
        assert_eq!(old_birth.session, 1);
        forwarder.handed_over(&messages[0]);
        forwarder.handed_over(&messages[1]);
        // The link drops before the broker acknowledges anything.
        forwarder.disconnected();
        forwarder.connected();
        let again = forwarder.next_backfill().expect("backfill");
        assert_eq!(again.last().and_then(|m| m.batches.clone()), Some(1..=5));
    }
}

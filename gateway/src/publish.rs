//! The MQTT side: connection with last will, birth on every connect, and data batches at QoS 1.

use std::time::Duration;

use chillcloud_proto::{Birth, Data, Death, MessageKind, Reading, Topic, encode_value};
use prost::Message;
use rand::Rng;
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{config::Config, poll::Sample};

/// Longest wait between reconnection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(30);

/// Encodes samples of one poll as a data message.
pub fn encode_data(session: u64, seq: u64, decimals: &[i32], samples: &[Sample]) -> Data {
    let base_time_ms = samples.iter().map(|s| s.time_ms).min().unwrap_or_default();
    Data {
        session,
        seq,
        history: false,
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
    }
}

/// Publishes the birth on every connection and each batch from `samples` as a data message,
/// until `shutdown`; then publishes the death itself and disconnects cleanly.
pub async fn run(config: &Config, birth: Birth, mut samples: mpsc::Receiver<Vec<Sample>>, shutdown: CancellationToken) {
    let gateway = config.gateway_id.clone();
    let session = birth.session;
    let topic = |kind| Topic::new(gateway.clone(), kind).to_string();
    let death = Death { session }.encode_to_vec();

    let mut options = MqttOptions::new(gateway.as_str(), &config.mqtt.host, config.mqtt.port);
    options.set_credentials(&config.mqtt.username, config.mqtt.password.expose());
    options.set_keep_alive(config.mqtt.keep_alive);
    options.set_last_will(LastWill::new(topic(MessageKind::Death), death.clone(), QoS::AtLeastOnce, false));
    options.set_max_packet_size(chillcloud_proto::MAX_PAYLOAD_BYTES + 1024, chillcloud_proto::MAX_PAYLOAD_BYTES + 1024);
    let (client, eventloop) = AsyncClient::new(options, 64);

    let (connected_tx, mut connected) = watch::channel(0u64);
    let driver = tokio::spawn(drive(eventloop, connected_tx, shutdown.clone()));

    let decimals: Vec<i32> = birth.devices.iter().flat_map(|d| d.points.iter().map(|p| p.decimals)).collect();
    let birth = birth.encode_to_vec();
    let mut seq = 0u64;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            changed = connected.changed() => {
                if changed.is_err() { break; }
                // Retained, so a server that subscribes later still learns this session.
                if client.publish(topic(MessageKind::Birth), QoS::AtLeastOnce, true, birth.clone()).await.is_err() {
                    break;
                }
            }
            // Data waits for the first birth, so the server normally learns the aliases first.
            batch = samples.recv(), if *connected.borrow() > 0 => {
                let Some(batch) = batch else { break };
                seq += 1;
                let data = encode_data(session, seq, &decimals, &batch).encode_to_vec();
                if client.publish(topic(MessageKind::Data), QoS::AtLeastOnce, false, data).await.is_err() {
                    break;
                }
            }
        }
    }
    // A clean stop announces the death itself: the broker only sends the will on an unclean one.
    let _ = client.try_publish(topic(MessageKind::Death), QoS::AtLeastOnce, false, death);
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(5), driver).await;
}

/// Drives the MQTT event loop: counts connections in `connected` and reconnects with capped,
/// jittered exponential backoff. Never blocks on anything but the network.
async fn drive(mut eventloop: EventLoop, connected: watch::Sender<u64>, shutdown: CancellationToken) {
    let mut delay = Duration::from_millis(250);
    loop {
        let event = tokio::select! {
            // After shutdown, keep polling briefly so the death and disconnect go out.
            () = shutdown.cancelled() => {
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while let Ok(event) = eventloop.poll().await {
                        if matches!(event, Event::Outgoing(rumqttc::Outgoing::Disconnect)) { break; }
                    }
                }).await;
                return;
            }
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                info!(code = ?ack.code, "connected to broker");
                delay = Duration::from_millis(250);
                connected.send_modify(|n| *n += 1);
            }
            Ok(_) => {}
            Err(error) => {
                warn!(%error, retry_in = ?delay, "broker connection failed");
                let jitter = rand::rng().random_range(0.5..1.0);
                tokio::time::sleep(delay.mul_f64(jitter)).await;
                delay = (delay * 2).min(MAX_RECONNECT_DELAY);
            }
        }
    }
}

//! The server's one way to gateways: typed messages (a command, a poll boost, a configuration) that ingest's MQTT
//! client publishes at QoS 1 on the gateway's own topic. Whoever sends needs no MQTT, topic or
//! encoding of their own.

use chillcloud_proto::{GatewayId, MessageKind};
use tokio::sync::mpsc;

/// A message for one gateway.
#[derive(Debug, Clone, PartialEq)]
pub enum ToGateway {
    /// Write a value (remote control).
    Command(chillcloud_proto::Command),
    /// Poll a unit faster for a while (a fault moment is being captured).
    PollBoost(chillcloud_proto::PollBoost),
    /// A version of its configuration.
    Config(chillcloud_proto::GatewayConfig),
}

impl ToGateway {
    /// The topic kind it goes on.
    pub fn kind(&self) -> MessageKind {
        match self {
            ToGateway::Command(_) => MessageKind::Command,
            ToGateway::PollBoost(_) => MessageKind::PollBoost,
            ToGateway::Config(_) => MessageKind::Config,
        }
    }

    /// Its bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        use prost::Message as _;
        match self {
            ToGateway::Command(command) => command.encode_to_vec(),
            ToGateway::PollBoost(boost) => boost.encode_to_vec(),
            ToGateway::Config(config) => config.encode_to_vec(),
        }
    }
}

/// The sending end: cheap to clone.
#[derive(Debug, Clone)]
pub struct GatewayLink(mpsc::UnboundedSender<(GatewayId, ToGateway)>);

/// What ingest's client publishes.
pub type GatewayMessages = mpsc::UnboundedReceiver<(GatewayId, ToGateway)>;

impl GatewayLink {
    /// A link, and the end ingest publishes from.
    pub fn new() -> (Self, GatewayMessages) {
        let (link, messages) = mpsc::unbounded_channel();
        (Self(link), messages)
    }

    /// Hands `message` to the MQTT client; false when the client has stopped (the server is
    /// stopping).
    pub fn send(&self, gateway: GatewayId, message: ToGateway) -> bool {
        self.0.send((gateway, message)).is_ok()
    }
}

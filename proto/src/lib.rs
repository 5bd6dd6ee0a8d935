//! The wire contract between gateways and the server: MQTT topics and message payloads.
//!
//! Version 1 of the contract. Payloads are Protocol Buffers messages, written here with
//! `prost` derives rather than generated from a `.proto` file, so the Rust types with their
//! field tags are the single source of truth (and no `protoc` is needed to build).
//!
//! Compatibility rules, which every change to this file must keep:
//! - field tags are never reused or renumbered; new fields get new tags and must be optional in
//!   meaning (their default value means "not sent");
//! - decoders ignore unknown fields and unknown enum values, so an older server reads a newer
//!   gateway's messages and the reverse;
//! - a change that cannot follow these rules gets a new topic version (`chillcloud/v2/...`).
//!
//! This crate does no I/O.

mod messages;
mod topic;

pub use messages::{
    Birth, BirthError, Command, CommandResult, CommandStatus, ConfigOutcome, ConfigReport, Data, Death, Device,
    DroppedInterval, GatewayConfig, PointInfo, PollBoost, Quality, Reading, Value, decode, encode_value, on_step,
};
pub use topic::{GatewayId, InvalidGatewayId, MessageKind, Topic, TopicError};

/// The contract version carried in every topic and in the birth message.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest payload either side accepts, in bytes. A gateway splits bigger batches.
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;

/// Largest MQTT packet the broker takes from a client (its `max_packet_size`; a client sending a
/// bigger one is disconnected) and the server's client takes from the broker. Larger than
/// [`MAX_PAYLOAD_BYTES`] on purpose: a message between the two reaches the server, which refuses
/// it, dead-letters it and acknowledges it. The two must stay equal: a packet the broker passes
/// but the server's client cannot read would be redelivered to it for ever.
pub const MAX_PACKET_BYTES: usize = 1024 * 1024;

/// Whether `name` is 1 to 64 ASCII letters, digits, `-` or `_`: what gateway ids, device ids
/// and point names are made of. They go into topics, SMS texts and pages, where anything else
/// could be taken for a link or markup.
pub fn is_plain_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Errors from decoding a payload.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The payload is larger than [`MAX_PAYLOAD_BYTES`].
    #[error("payload of {0} bytes exceeds the limit of {MAX_PAYLOAD_BYTES} bytes")]
    TooLarge(usize),
    /// The bytes are not a valid message of the expected kind.
    #[error("malformed {kind} payload: {source}")]
    Malformed {
        /// What the payload was supposed to be.
        kind: MessageKind,
        /// What the protobuf decoder found wrong.
        #[source]
        source: prost::DecodeError,
    },
}

/// Renders a payload received on `topic` as JSON, for debugging and logs.
pub fn render_json(kind: MessageKind, payload: &[u8]) -> Result<serde_json::Value, DecodeError> {
    fn to_json<T: serde::Serialize>(message: T) -> serde_json::Value {
        // Serialising plain structs of numbers and strings to a `Value` cannot fail.
        serde_json::to_value(message).unwrap_or(serde_json::Value::Null)
    }
    Ok(match kind {
        MessageKind::Birth => to_json(decode::<Birth>(kind, payload)?),
        MessageKind::Death => to_json(decode::<Death>(kind, payload)?),
        MessageKind::Data => to_json(decode::<Data>(kind, payload)?),
        MessageKind::Command => to_json(decode::<Command>(kind, payload)?),
        MessageKind::CommandResult => to_json(decode::<CommandResult>(kind, payload)?),
        MessageKind::PollBoost => to_json(decode::<PollBoost>(kind, payload)?),
        MessageKind::Config => to_json(decode::<GatewayConfig>(kind, payload)?),
        MessageKind::ConfigReport => to_json(decode::<ConfigReport>(kind, payload)?),
    })
}

//! The topic scheme: `chillcloud/v1/<gateway-id>/<kind>`.
//!
//! Every topic is scoped by the gateway that owns it, so a broker ACL of the form
//! `chillcloud/v1/<own id>/#` keeps each gateway to its own topics.

use std::fmt;

/// Prefix of every version 1 topic.
pub const TOPIC_PREFIX: &str = "chillcloud/v1";

/// A gateway's identity: 1 to 64 characters of ASCII letters, digits, `-` and `_`.
///
/// The restriction keeps ids usable as MQTT topic levels and usernames (no `/`, `+`, `#`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GatewayId(String);

/// A string that is not a valid gateway id.
#[derive(Debug, thiserror::Error)]
#[error("invalid gateway id {0:?}: use 1 to 64 ASCII letters, digits, '-' or '_'")]
pub struct InvalidGatewayId(pub String);

impl GatewayId {
    /// Checks and wraps a gateway id.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidGatewayId> {
        let id = id.into();
        if crate::is_plain_name(&id) { Ok(Self(id)) } else { Err(InvalidGatewayId(id)) }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GatewayId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a message on a topic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// Gateway to server, retained: the gateway's devices and points for a session.
    Birth,
    /// Gateway to server, the MQTT last will: the session ended without a clean goodbye.
    Death,
    /// Gateway to server: a batch of readings.
    Data,
    /// Server to gateway: a write to a device.
    Command,
    /// Gateway to server: what became of a command.
    CommandResult,
    /// Server to gateway: poll a device faster for a while (fault-moment capture).
    PollBoost,
    /// Server to gateway: a version of the gateway's configuration held by the server.
    Config,
    /// Gateway to server: what became of a configuration (applied, refused, rolled back).
    ConfigReport,
}

impl MessageKind {
    const ALL: [MessageKind; 8] = [
        MessageKind::Birth,
        MessageKind::Death,
        MessageKind::Data,
        MessageKind::Command,
        MessageKind::CommandResult,
        MessageKind::PollBoost,
        MessageKind::Config,
        MessageKind::ConfigReport,
    ];

    /// The last topic level for this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Birth => "birth",
            MessageKind::Death => "death",
            MessageKind::Data => "data",
            MessageKind::Command => "cmd",
            MessageKind::CommandResult => "cmd-result",
            MessageKind::PollBoost => "boost",
            MessageKind::Config => "config",
            MessageKind::ConfigReport => "config-report",
        }
    }
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    /// The gateway the topic belongs to.
    pub gateway: GatewayId,
    /// What is published on it.
    pub kind: MessageKind,
}

/// A topic outside the version 1 scheme.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TopicError {
    /// The topic does not start with `chillcloud/v1/`.
    #[error("topic {0:?} is not under {TOPIC_PREFIX}/")]
    ForeignPrefix(String),
    /// The gateway level is not a valid id.
    #[error("topic {0:?} has an invalid gateway id")]
    BadGatewayId(String),
    /// The last level is not a known message kind.
    #[error("topic {0:?} has an unknown message kind")]
    UnknownKind(String),
}

impl Topic {
    /// The topic for `kind` messages of `gateway`.
    pub fn new(gateway: GatewayId, kind: MessageKind) -> Self {
        Self { gateway, kind }
    }

    /// The filter the server subscribes to for everything gateways publish.
    pub fn gateway_filter(kind: MessageKind) -> String {
        format!("{TOPIC_PREFIX}/+/{kind}")
    }

    /// Parses a topic string.
    pub fn parse(topic: &str) -> Result<Self, TopicError> {
        let rest = topic
            .strip_prefix(TOPIC_PREFIX)
            .and_then(|rest| rest.strip_prefix('/'))
            .ok_or_else(|| TopicError::ForeignPrefix(topic.to_owned()))?;
        let (gateway, kind) = rest.split_once('/').ok_or_else(|| TopicError::UnknownKind(topic.to_owned()))?;
        let gateway = GatewayId::new(gateway).map_err(|_| TopicError::BadGatewayId(topic.to_owned()))?;
        let kind = MessageKind::ALL
            .into_iter()
            .find(|k| k.as_str() == kind)
            .ok_or_else(|| TopicError::UnknownKind(topic.to_owned()))?;
        Ok(Self { gateway, kind })
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{TOPIC_PREFIX}/{}/{}", self.gateway, self.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_round_trip_and_reject_what_is_not_ours() {
        let gw = GatewayId::new("plant-7_a").expect("valid id");
        for kind in MessageKind::ALL {
            let topic = Topic::new(gw.clone(), kind);
            assert_eq!(Topic::parse(&topic.to_string()), Ok(topic));
        }
        assert!(matches!(Topic::parse("other/v1/gw/data"), Err(TopicError::ForeignPrefix(_))));
        assert!(matches!(Topic::parse("chillcloud/v1/g+w/data"), Err(TopicError::BadGatewayId(_))));
        assert!(matches!(Topic::parse("chillcloud/v1/gw/data/x"), Err(TopicError::UnknownKind(_))));
        assert!(matches!(Topic::parse("chillcloud/v1/gw"), Err(TopicError::UnknownKind(_))));
        assert!(GatewayId::new("").is_err());
        assert!(GatewayId::new("a".repeat(65)).is_err());
        assert!(GatewayId::new("gw/1").is_err());
    }
}

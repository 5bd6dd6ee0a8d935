//! Provisioning a gateway: its broker credentials (a random password, kept only as the brokers'
//! hashes and shown once) and the configuration file the box starts from. The command line's
//! `add-gateway` and the dashboard's provisioning (in `api.rs`) make credentials the same way;
//! every server then reloads its broker's passwords on the [`GATEWAYS_CHANGED`] notification.

use std::sync::Arc;

use chillcloud_proto::GatewayId;

use crate::{GATEWAYS_CHANGED, embedded::broker, rabbitmq_users, secrets};

/// What provisioning takes from the server's settings.
#[derive(Debug, Clone)]
pub struct Provisioning {
    /// The brokers gateways connect to, `host:port` in failover order: written into their files.
    pub brokers: Arc<[String]>,
    /// Broker usernames that are not gateways' (the server's own, the clustered tier's users):
    /// a gateway with one of these ids would take that user over, so they are refused.
    pub reserved: Arc<[String]>,
}

impl Provisioning {
    /// Whether `gateway` may be provisioned: not a broker user of the server's.
    pub fn allows(&self, gateway: &GatewayId) -> bool {
        !self.reserved.iter().any(|user| user.eq_ignore_ascii_case(gateway.as_str()))
    }
}

/// `host:port` split, the host bracketed if it is an IPv6 address; None if it is not that.
pub fn broker_address(text: &str) -> Option<(&str, u16)> {
    let (host, port) = text.trim().rsplit_once(':')?;
    let plain = !host.is_empty() && !host.contains(':') && !host.contains(['[', ']', '/', '@', '?', '#', ' ']);
    let bracketed = host.len() > 2 && host.starts_with('[') && host.ends_with(']');
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    (plain || bracketed).then_some((host, port))
}

/// A gateway's new broker credentials.
pub struct Credentials {
    /// The password, for the gateway's secret file; never stored.
    pub password: String,
    /// The Mosquitto password-file line (a PBKDF2 hash).
    pub mosquitto_line: String,
    /// The RabbitMQ password hash, for the clustered broker tier.
    pub rabbitmq_hash: String,
}

impl Credentials {
    /// Fresh credentials for `gateway`.
    pub fn generate(gateway: &GatewayId) -> Self {
        let password = secrets::random_hex::<24>();
        let mosquitto_line = broker::password_line(gateway.as_str(), &password);
        let rabbitmq_hash = rabbitmq_users::password_hash(&password);
        Self { password, mosquitto_line, rabbitmq_hash }
    }
}

/// The configuration file of a newly provisioned gateway: its id, the brokers it connects to
/// (`host:port`, in failover order), the password file and the state directory of the package's
/// unit. It polls nothing until devices are set, from the dashboard or from `scan`.
pub fn gateway_file(gateway: &GatewayId, brokers: &[String]) -> String {
    let text = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let mqtt = match brokers {
        [one] => match broker_address(one) {
            Some((host, port)) => format!("host = {}\nport = {port}\n", text(host)),
            None => format!("host = {}\n", text(one)),
        },
        several => format!("brokers = [{}]\n", several.iter().map(|b| text(b)).collect::<Vec<_>>().join(", ")),
    };
    format!(
        "# Chillcloud gateway {id}: /etc/chillcloud/gateway.toml. Its MQTT password goes in\n\
         # /etc/chillcloud/gateway.secret (mode 0640, group chillcloud-gateway); it is shown once.\n\
         # Devices: set them in the dashboard (configuration held by the server), or paste what\n\
         # `chillcloud-gateway scan` prints below. See docs/gateway.md.\n\
         gateway_id = {id}\n\
         state_dir = \"/var/lib/chillcloud-gateway\"\n\
         \n\
         [mqtt]\n\
         {mqtt}\
         password_file = \"/etc/chillcloud/gateway.secret\"\n\
         # With TLS to the broker:\n\
         # [mqtt.tls]\n\
         # ca_file = \"/etc/chillcloud/broker-ca.pem\"\n",
        id = text(gateway.as_str()),
    )
}

/// Tells every server, on commit, to reload its broker's passwords.
pub(crate) async fn announce(tx: &mut sqlx::PgConnection, gateway: &GatewayId) -> sqlx::Result<()> {
    sqlx::query("select pg_notify($1, $2)").bind(GATEWAYS_CHANGED).bind(gateway.as_str()).execute(tx).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_names_the_gateway_its_brokers_and_the_password_file() {
        let gateway = GatewayId::new("plant-a-gw1").expect("a valid id");
        let one = gateway_file(&gateway, &["mqtt.example.com:8883".to_owned()]);
        assert!(one.contains("gateway_id = \"plant-a-gw1\"\n"), "{one}");
        assert!(one.contains("host = \"mqtt.example.com\"\nport = 8883\n"), "{one}");
        assert!(one.contains("password_file = \"/etc/chillcloud/gateway.secret\""), "{one}");
        let two = gateway_file(&gateway, &["a:1883".to_owned(), "b:1883".to_owned()]);
        assert!(two.contains("brokers = [\"a:1883\", \"b:1883\"]\n"), "{two}");
    }

    #[test]
    fn broker_addresses_are_host_and_port_with_ipv6_bracketed() {
        assert_eq!(broker_address(" mqtt.example.com:8883 "), Some(("mqtt.example.com", 8883)));
        assert_eq!(broker_address("[2001:db8::1]:1883"), Some(("[2001:db8::1]", 1883)));
        for wrong in ["2001:db8::1", "host", ":1883", "host:0", "host:x", "[::1:1883", "a b:1883", "u@h:1883"] {
            assert_eq!(broker_address(wrong), None, "{wrong}");
        }
    }

    #[test]
    fn the_servers_own_broker_users_cannot_be_provisioned() {
        let provisioning =
            Provisioning { brokers: Arc::from([]), reserved: Arc::from(["chillcloud-server".to_owned()]) };
        assert!(!provisioning.allows(&GatewayId::new("Chillcloud-Server").expect("valid")));
        assert!(provisioning.allows(&GatewayId::new("plant-a-gw1").expect("valid")));
    }
}

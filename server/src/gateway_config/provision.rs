//! Provisioning a gateway: its broker credentials (a random password, kept only as the brokers'
//! hashes and shown once) and the configuration file the box starts from. The command line's
//! `add-gateway` and the dashboard's provisioning (in `api.rs`) make credentials the same way;
//! every server then reloads its broker's passwords on the [`GATEWAYS_CHANGED`] notification.

use chillcloud_proto::GatewayId;

use crate::{
    GATEWAYS_CHANGED,
    embedded::{EmbeddedError, broker},
    rabbitmq_users, secrets,
};

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
    pub async fn generate(gateway: &GatewayId) -> Result<Self, EmbeddedError> {
        let password = secrets::random_hex::<24>();
        let mosquitto_line = broker::password_line(gateway.as_str(), &password).await?;
        let rabbitmq_hash = rabbitmq_users::password_hash(&password);
        Ok(Self { password, mosquitto_line, rabbitmq_hash })
    }
}

/// The configuration file of a newly provisioned gateway: its id, the brokers it connects to
/// (`host:port`, in failover order), the password file and the state directory of the package's
/// unit. It polls nothing until devices are set, from the dashboard or from `scan`.
pub fn gateway_file(gateway: &GatewayId, brokers: &[String]) -> String {
    let mqtt = match brokers {
        [one] => match one.rsplit_once(':') {
            Some((host, port)) => format!("host = {host:?}\nport = {port}\n"),
            None => format!("host = {one:?}\n"),
        },
        several => format!("brokers = {several:?}\n"),
    };
    format!(
        "# Chillcloud gateway {id}: /etc/chillcloud/gateway.toml. Its MQTT password goes in\n\
         # /etc/chillcloud/gateway.secret (mode 0640, group chillcloud-gateway); it is shown once.\n\
         # Devices: set them in the dashboard (configuration held by the server), or paste what\n\
         # `chillcloud-gateway scan` prints below. See docs/gateway.md.\n\
         gateway_id = {id:?}\n\
         state_dir = \"/var/lib/chillcloud-gateway\"\n\
         \n\
         [mqtt]\n\
         {mqtt}\
         password_file = \"/etc/chillcloud/gateway.secret\"\n\
         # With TLS to the broker:\n\
         # [mqtt.tls]\n\
         # ca_file = \"/etc/chillcloud/broker-ca.pem\"\n",
        id = gateway.as_str(),
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
}

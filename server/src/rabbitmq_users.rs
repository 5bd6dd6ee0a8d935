//! Gateways' users on the clustered broker (RabbitMQ), kept in step with the database through
//! the management API: a gateway provisioned by `add-gateway` connects to any node with the
//! password it was given and has exactly the rights the Mosquitto ACL gives it (publish its own
//! upstream topics, receive its own commands and boosts). The database is the source: a replica
//! imports the users of the partitions it takes, and each gateway `add-gateway` announces, so a
//! broker cluster rebuilt empty gets them back when the replicas reconnect.

use base64::Engine as _;
use chillcloud_proto::GatewayId;
use serde_json::json;
use sha2::{Digest, Sha256};

/// RabbitMQ's `rabbit_password_hashing_sha256` hash of `password`: base64 of a random 4-byte
/// salt followed by SHA-256 of the salt and the password.
pub fn password_hash(password: &str) -> String {
    let salt: [u8; 4] = rand::random();
    let digest = Sha256::new().chain_update(salt).chain_update(password.as_bytes()).finalize();
    let mut salted = salt.to_vec();
    salted.extend_from_slice(&digest);
    base64::engine::general_purpose::STANDARD.encode(salted)
}

/// A gateway's user: its id and its password's hash.
pub type GatewayUser = (GatewayId, String);

/// Users sent in one import (about 0.5 MB of JSON): a partition of a 100,000-gateway fleet
/// takes a few.
const USERS_PER_IMPORT: usize = 1_000;

/// The management API of the cluster's nodes, tried in turn.
#[derive(Clone)]
pub struct Management {
    client: reqwest::Client,
    /// `http://host:port` of each node, with the credentials apart.
    nodes: Vec<(reqwest::Url, String, String)>,
}

impl std::fmt::Debug for Management {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.nodes.iter().map(|(url, _, _)| url.as_str())).finish()
    }
}

/// Why users could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// The last node tried answered with an error (its start of the body).
    #[error("the management API of {node} answered {status}: {body}")]
    Refused {
        /// `host:port`.
        node: String,
        /// The answer's status.
        status: reqwest::StatusCode,
        /// The start of the answer's body.
        body: String,
    },
    /// No node answered.
    #[error("the management API of {node}: {error}")]
    Unreachable {
        /// `host:port` of the last node tried.
        node: String,
        /// Why.
        error: reqwest::Error,
    },
}

impl Management {
    /// From `http://user:password@host:port` URLs, one per node (the user needs the
    /// `administrator` tag to import definitions).
    pub fn new(urls: &[String]) -> anyhow::Result<Self> {
        let mut nodes = Vec::new();
        for url in urls {
            let mut parsed = reqwest::Url::parse(url).map_err(|e| anyhow::anyhow!("--rabbitmq-management-url: {e}"))?;
            let user = parsed.username().to_owned();
            let password = parsed.password().unwrap_or_default().to_owned();
            anyhow::ensure!(!user.is_empty(), "--rabbitmq-management-url {}: no user", parsed.host_str().unwrap_or(""));
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            nodes.push((parsed, user, password));
        }
        let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build()?;
        Ok(Self { client, nodes })
    }

    /// Creates or updates `users` with their permissions, in imports of at most
    /// [`USERS_PER_IMPORT`], each on the first node that answers.
    pub async fn provision(&self, users: &[GatewayUser]) -> Result<(), ProvisionError> {
        for chunk in users.chunks(USERS_PER_IMPORT) {
            self.import(chunk).await?;
        }
        Ok(())
    }

    async fn import(&self, users: &[GatewayUser]) -> Result<(), ProvisionError> {
        let body = definitions(users);
        let mut last = None;
        for (url, user, password) in &self.nodes {
            let node = url.host_str().unwrap_or_default().to_owned() + ":" + &url.port().unwrap_or(15672).to_string();
            let endpoint = url.join("api/definitions").expect("a relative path joins");
            match self.client.post(endpoint).basic_auth(user, Some(password)).json(&body).send().await {
                Ok(answer) if answer.status().is_success() => return Ok(()),
                Ok(answer) => {
                    let status = answer.status();
                    let body = answer.text().await.unwrap_or_default().chars().take(300).collect();
                    last = Some(ProvisionError::Refused { node, status, body });
                }
                Err(error) => last = Some(ProvisionError::Unreachable { node, error }),
            }
        }
        Err(last.expect("at least one node"))
    }
}

/// Definitions for RabbitMQ's import: each user, the queues it may use (the MQTT plugin's own
/// session queues and `amq.topic`) and its topics on `amq.topic`. Gateway ids are letters,
/// digits, `-` and `_`: nothing a regular expression treats specially outside brackets.
fn definitions(users: &[GatewayUser]) -> serde_json::Value {
    let mut accounts = Vec::new();
    let mut permissions = Vec::new();
    let mut topic_permissions = Vec::new();
    for (gateway, hash) in users {
        let id = gateway.as_str();
        accounts.push(json!({
            "name": id, "password_hash": hash,
            "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": [],
        }));
        let queues = format!("^(mqtt-subscription-{id}qos[01]|amq\\.topic)$");
        permissions.push(json!({ "user": id, "vhost": "/", "configure": queues, "write": queues, "read": queues }));
        topic_permissions.push(json!({
            "user": id, "vhost": "/", "exchange": "amq.topic",
            "write": format!("^chillcloud\\.v1\\.{id}\\.(birth|death|data|cmd-result|config-report)$"),
            "read": format!("^chillcloud\\.v1\\.{id}\\.(cmd|boost|config)$"),
        }));
    }
    json!({ "users": accounts, "permissions": permissions, "topic_permissions": topic_permissions })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_hash_is_rabbitmqs_salted_sha256() {
        let hash = password_hash("s3cret");
        let bytes = base64::engine::general_purpose::STANDARD.decode(&hash).expect("base64");
        assert_eq!(bytes.len(), 4 + 32);
        let (salt, digest) = bytes.split_at(4);
        let expected = Sha256::new().chain_update(salt).chain_update(b"s3cret").finalize();
        assert_eq!(digest, expected.as_slice());
        assert_ne!(password_hash("s3cret"), hash, "salted");
    }

    #[test]
    fn a_gateway_may_use_only_its_own_topics_and_session_queues() {
        let gateway = GatewayId::new("plant-a_gw1").expect("id");
        let defs = definitions(&[(gateway, "h".into())]);
        assert_eq!(defs["users"][0]["name"], "plant-a_gw1");
        assert_eq!(defs["permissions"][0]["configure"], "^(mqtt-subscription-plant-a_gw1qos[01]|amq\\.topic)$");
        assert_eq!(
            defs["topic_permissions"][0]["write"],
            "^chillcloud\\.v1\\.plant-a_gw1\\.(birth|death|data|cmd-result|config-report)$"
        );
        assert_eq!(defs["topic_permissions"][0]["read"], "^chillcloud\\.v1\\.plant-a_gw1\\.(cmd|boost|config)$");
    }

    #[test]
    fn credentials_stay_out_of_logs() {
        let management = Management::new(&["http://admin:p4ss@10.0.0.5:15672".into()]).expect("url");
        assert!(!format!("{management:?}").contains("p4ss"));
    }
}

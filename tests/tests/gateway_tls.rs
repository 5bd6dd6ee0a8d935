//! The gateway reaches a broker over TLS, checking the broker's certificate against the CA it is
//! given, and refuses one whose certificate it cannot verify.

use std::time::Duration;

use chillcloud_proto::{Data, MessageKind, Topic, decode};
use chillcloud_server::embedded::broker::password_line;
use chillcloud_tests::harness::{PasswordMosquitto, Process, Simulator, bin, shared_temp_dir, wait_for};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};

const GATEWAY: &str = "gw-tls";

fn gateway_config(dir: &std::path::Path, port: u16, ca: &std::path::Path, sim: &Simulator) -> String {
    std::fs::write(dir.join("secret"), "gateway-password").expect("write secret");
    let path = dir.join(format!("gateway-{}.toml", ca.file_stem().and_then(|s| s.to_str()).unwrap_or("ca")));
    std::fs::write(
        &path,
        format!(
            "gateway_id = \"{GATEWAY}\"\nstate_dir = \"{state}\"\n[mqtt]\nhost = \"localhost\"\nport = {port}\npassword_file = \"{secret}\"\ntls = {{ ca_file = \"{ca}\" }}\n[[devices]]\nid = \"chiller-1\"\nprofile = \"trane-ch530\"\nhost = \"127.0.0.1\"\nport = {modbus}\npoll_interval_ms = 200\nsnapshot_interval_secs = 1\n",
            state = dir.join(format!("state-{}", path.file_stem().and_then(|s| s.to_str()).unwrap_or("x"))).display(),
            secret = dir.join("secret").display(),
            ca = ca.display(),
            modbus = sim.modbus.port(),
        ),
    )
    .expect("write config");
    path.to_string_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_publishes_over_tls_and_refuses_an_unverifiable_broker() {
    let dir = shared_temp_dir();
    let lines = [password_line(GATEWAY, "gateway-password"), password_line("observer", "observer-password")];
    let broker = PasswordMosquitto::start_tls(dir.path(), &lines).await;
    let sim = Simulator::start(1, dir.path()).await;

    // An observer subscribes over TLS to the gateway's data.
    let mut options = MqttOptions::new("observer", "localhost", broker.port);
    options.set_credentials("observer", "observer-password");
    let ca = std::fs::read(&broker.ca).expect("read CA");
    options.set_transport(Transport::tls_with_config(TlsConfiguration::Simple { ca, alpn: None, client_auth: None }));
    let (client, mut events) = AsyncClient::new(options, 16);
    client.subscribe("chillcloud/v1/+/data", QoS::AtLeastOnce).await.expect("subscribe");

    let config = gateway_config(dir.path(), broker.port, &broker.ca, &sim);
    let _gateway = Process::spawn("gateway", &bin("chillcloud-gateway"), &["run", "--config", &config], dir.path());
    let readings = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Event::Incoming(Packet::Publish(publish)) = events.poll().await.expect("observer connection") {
                let topic = Topic::parse(&publish.topic).expect("topic");
                assert_eq!((topic.gateway.as_str(), topic.kind), (GATEWAY, MessageKind::Data));
                let data: Data = decode(MessageKind::Data, &publish.payload).expect("data");
                return data.readings.len();
            }
        }
    })
    .await
    .expect("a data message over TLS within 30 s");
    assert!(readings > 0);

    // A gateway given another CA does not trust the broker and never connects.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).expect("dir");
    chillcloud_tests::harness::make_test_certificates(&other).await;
    let config = gateway_config(dir.path(), broker.port, &other.join("ca.pem"), &sim);
    let distrustful =
        Process::spawn("gateway-other-ca", &bin("chillcloud-gateway"), &["run", "--config", &config], dir.path());
    let log = wait_for("a certificate error", Duration::from_secs(30), || async {
        let log = distrustful.log();
        log.contains("broker connection lost").then_some(log)
    })
    .await;
    assert!(!log.contains("connected to broker"), "{log}");
}

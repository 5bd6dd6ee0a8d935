//! The server's command line refuses bad input with clear messages before touching anything.

use std::process::Command;

fn server(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_chillcloud-server")).args(args).output().expect("run server");
    (
        output.status.success(),
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)),
    )
}

#[test]
fn add_gateway_refuses_an_id_that_cannot_be_a_topic_level() {
    let (ok, text) = server(&["add-gateway", "plant/a+", "--database-url", "postgres://nobody@127.0.0.1:1/none"]);
    assert!(!ok);
    assert!(text.contains("invalid gateway id"), "{text}");
}

#[test]
fn every_setting_can_come_from_the_environment() {
    let (ok, text) = server(&["--help"]);
    assert!(ok, "{text}");
    for variable in [
        "DATABASE_URL",
        "CHILLCLOUD_MQTT_BROKER",
        "CHILLCLOUD_MQTT_PASSWORD",
        "CHILLCLOUD_LISTEN",
        "CHILLCLOUD_DATA_DIR",
    ] {
        assert!(text.contains(variable), "--help mentions {variable}");
    }
}

#[test]
fn an_external_broker_without_a_password_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ok, text) = server(&[
        "--data-dir",
        &dir.path().to_string_lossy(),
        "--database-url",
        "postgres://nobody@127.0.0.1:1/none",
        "--mqtt-broker",
        "localhost:1883",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(!ok);
    assert!(text.contains("--mqtt-password is required"), "{text}");
}

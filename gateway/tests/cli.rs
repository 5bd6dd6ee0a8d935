//! The gateway's command line: `check-config` accepts a good file and names the field of each
//! mistake in a bad one, with a failing exit status.

use std::process::Command;

fn check_config(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("secret"), "s3cret-password").expect("write secret");
    let text = text.replace("SECRET", &dir.path().join("secret").display().to_string());
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, text).expect("write config");
    let output =
        Command::new(env!("CARGO_BIN_EXE_chillcloud-gateway")).arg("check-config").arg(&path).output().expect("run");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(!text.contains("s3cret-password"), "the password is never printed: {text}");
    (output.status.success(), text)
}

const GOOD: &str = r#"
gateway_id = "gw-1"
state_dir = "/tmp/chillcloud-gw-cli"
[mqtt]
host = "localhost"
password_file = "SECRET"
[[devices]]
id = "chiller-1"
profile = "trane-ch530"
host = "127.0.0.1"
"#;

#[test]
fn check_config_accepts_a_good_file() {
    let (ok, text) = check_config(GOOD);
    assert!(ok, "{text}");
    assert!(text.contains("ok (1 devices, 19 points)"), "{text}");
}

#[test]
fn check_config_names_the_field_of_each_mistake() {
    for (from, to, field) in [
        ("gw-1", "gw 1", "gateway_id"),
        ("host = \"127.0.0.1\"", "host = \"127.0.0.1\"\nunit_id = 300", "unit_id"),
        ("trane-ch530", "nope", "devices[0].profile"),
        ("[mqtt]", "[mqtt]\nkeep_alive_secs = 1", "mqtt.keep_alive_secs"),
        ("id = \"chiller-1\"", "id = \"chiller-1\"\ntimeout_ms = 0", "devices[0].timeout_ms"),
    ] {
        let (ok, text) = check_config(&GOOD.replace(from, to));
        assert!(!ok, "{to:?} must be refused");
        assert!(text.contains(field), "{to:?}: message {text:?} should name {field}");
    }
}

#[test]
fn the_shipped_example_config_is_valid() {
    let example = include_str!("../../deploy/gateway.example.toml").replace("/etc/chillcloud/gateway.secret", "SECRET");
    let (ok, text) = check_config(&example);
    assert!(ok, "{text}");
}

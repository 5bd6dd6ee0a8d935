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
    assert!(text.contains("ok (1 devices, 21 points)"), "{text}");
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

#[test]
fn a_site_profile_file_defines_points_for_devices() {
    let dir = tempfile::tempdir().expect("temp dir");
    let profile = dir.path().join("bank.toml");
    std::fs::write(
        &profile,
        "name = \"site-bank\"\ndescription = \"x\"\naddressing_base = 1\n[[points]]\nname = \"t1\"\nkind = \"input\"\naddress = 1\n[[points]]\nname = \"t2\"\nkind = \"input\"\naddress = 2\ntype = \"i16\"\nscale = 0.1\n",
    )
    .expect("write profile");
    let config = format!("profile_files = [\"{}\"]\n{}", profile.display(), GOOD.replace("trane-ch530", "site-bank"));
    let (ok, text) = check_config(&config);
    assert!(ok, "{text}");
    assert!(text.contains("ok (1 devices, 2 points)"), "{text}");

    std::fs::write(&profile, "name = \"site-bank\"\ndescription = \"x\"\naddressing_base = 1\n[[points]]\nname = \"t1\"\nkind = \"input\"\naddress = 0\n")
        .expect("write profile");
    let (ok, text) = check_config(&config);
    assert!(!ok);
    assert!(text.contains("bank.toml: points[0].address"), "the error names the file and field: {text}");
}

//! The gateway reads a third-party Modbus server (pymodbus) correctly: 16-, 32- and 64-bit
//! integers, floats, both word orders, scaling and offsets, coils and discrete inputs.

use chillcloud_tests::harness::{bin, run_to_completion, shared_temp_dir, start_pymodbus};

#[tokio::test(flavor = "multi_thread")]
async fn gateway_decodes_every_type_from_pymodbus() {
    let dir = shared_temp_dir();
    let (_pymodbus, port) = start_pymodbus(dir.path()).await;

    std::fs::write(dir.path().join("secret"), "unused").expect("secret");
    let config = format!(
        r#"
gateway_id = "gw-interop"
state_dir = "{state}"
[mqtt]
host = "127.0.0.1"
password_file = "{secret}"
[[devices]]
id = "pymodbus"
host = "127.0.0.1"
port = {port}
points = [
  {{ name = "u16", kind = "holding", address = 0, type = "u16" }},
  {{ name = "i16", kind = "holding", address = 1, type = "i16" }},
  {{ name = "u32_big", kind = "holding", address = 2, type = "u32" }},
  {{ name = "i32_little", kind = "holding", address = 4, type = "i32", word_order = "little" }},
  {{ name = "f32_big", kind = "holding", address = 6, type = "f32" }},
  {{ name = "f32_little", kind = "holding", address = 8, type = "f32", word_order = "little" }},
  {{ name = "scaled", kind = "holding", address = 10, type = "i16", scale = 0.1, unit = "°C" }},
  {{ name = "f64_big", kind = "holding", address = 11, type = "f64" }},
  {{ name = "i64_little", kind = "holding", address = 15, type = "i64", word_order = "little" }},
  {{ name = "u32_centi", kind = "input", address = 0, type = "u32", scale = 0.01 }},
  {{ name = "offset", kind = "input", address = 2, type = "i16", scale = 0.1, offset = 40 }},
  {{ name = "coil_0", kind = "coil", address = 0 }},
  {{ name = "coil_1", kind = "coil", address = 1 }},
  {{ name = "coil_2", kind = "coil", address = 2 }},
  {{ name = "input_1", kind = "discrete_input", address = 1 }},
]
"#,
        state = dir.path().join("state").display(),
        secret = dir.path().join("secret").display(),
    );
    let config_path = dir.path().join("gateway.toml");
    std::fs::write(&config_path, config).expect("write config");

    let output = run_to_completion(&bin("chillcloud-gateway"), &["poll-once", &config_path.to_string_lossy()]).await;
    let rows: Vec<serde_json::Value> = serde_json::from_str(&output).expect("JSON rows");
    let value = |name: &str| -> f64 {
        let row = rows.iter().find(|r| r["point"] == name).unwrap_or_else(|| panic!("{name} missing in {output}"));
        assert_eq!(row["quality"], "Good", "{name}");
        row["value"].as_f64().expect("a value")
    };
    let expected = [
        ("u16", 51234.0),
        ("i16", -1234.0),
        ("u32_big", 305_419_896.0),
        ("i32_little", -123_456_789.0),
        ("f32_big", 21.5),
        ("f32_little", -3.25),
        ("scaled", 7.2),
        ("f64_big", 1234.5678),
        ("i64_little", -9_876_543_210.0),
        ("u32_centi", 1234.56),
        ("offset", 0.0),
        ("coil_0", 1.0),
        ("coil_1", 0.0),
        ("coil_2", 1.0),
        ("input_1", 1.0),
    ];
    for (name, want) in expected {
        let got = value(name);
        assert!((got - want).abs() < 1e-9 * want.abs().max(1.0), "{name}: got {got}, want {want}");
    }
}

//! Round-trip property tests and the compatibility promise of the wire contract.

use chillcloud_proto::{
    Birth, Data, Device, DroppedInterval, MessageKind, PointInfo, Quality, Reading, Value, decode, encode_value,
    render_json,
};
use proptest::prelude::*;
use prost::Message;

fn reading() -> impl Strategy<Value = Reading> {
    (
        0u32..5000,
        -60_000i64..60_000,
        prop_oneof![Just(Quality::Good), Just(Quality::Bad), Just(Quality::Uncertain)],
        prop_oneof![
            Just(None),
            any::<i64>().prop_map(|v| Some(Value::Scaled(v))),
            // NaN never equals itself, so it is checked separately in the unit tests.
            (-1e12f64..1e12).prop_map(|v| Some(Value::Real(v))),
        ],
    )
        .prop_map(|(alias, offset_ms, quality, value)| Reading {
            alias,
            offset_ms,
            quality: quality as i32,
            value,
        })
}

proptest! {
    #[test]
    fn data_round_trips(
        session in any::<u64>(),
        seq in any::<u64>(),
        history in any::<bool>(),
        base_time_ms in any::<i64>(),
        readings in prop::collection::vec(reading(), 0..200),
        dropped in prop::collection::vec((any::<i64>(), any::<i64>(), any::<u64>()), 0..3),
    ) {
        let dropped = dropped
            .into_iter()
            .map(|(from_ms, to_ms, readings)| DroppedInterval { from_ms, to_ms, readings })
            .collect();
        let data = Data { session, seq, history, base_time_ms, readings, dropped };
        let decoded: Data = decode(MessageKind::Data, &data.encode_to_vec()).expect("decodes");
        prop_assert_eq!(decoded, data);
    }

    #[test]
    fn birth_round_trips(
        session in any::<u64>(),
        names in prop::collection::vec("[a-z_]{1,20}", 0..50),
        decimals in -3i32..6,
        config_version in any::<u32>(),
    ) {
        let birth = Birth {
            protocol_version: 1,
            session,
            config_version,
            software_version: "0.1.0".into(),
            time_ms: 1_700_000_000_000,
            devices: vec![Device {
                id: "chiller-1".into(),
                profile: "trane-ch530".into(),
                model: String::new(),
                points: names
                    .into_iter()
                    .enumerate()
                    .map(|(alias, name)| PointInfo {
                        alias: alias as u32,
                        name,
                        unit: "°C".into(),
                        decimals,
                        writable: alias % 3 == 0,
                        min: (alias % 3 == 0).then_some(4.5),
                        max: (alias % 3 == 0).then_some(15.5),
                        step: (alias % 3 == 0).then_some(0.1),
                    })
                    .collect(),
                attributes: [("serial".to_owned(), "U12345".to_owned())].into(),
                family: "trane-ch530".into(),
                display_name: "Chiller 1, north plant".into(),
            }],
        };
        let decoded: Birth = decode(MessageKind::Birth, &birth.encode_to_vec()).expect("decodes");
        prop_assert_eq!(decoded, birth);
    }

    #[test]
    fn values_round_trip_exactly(value in -1e9f64..1e9, decimals in 0i32..4) {
        prop_assert_eq!(encode_value(value, decimals).to_f64(decimals), value);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        for kind in [MessageKind::Birth, MessageKind::Death, MessageKind::Data,
                     MessageKind::Command, MessageKind::CommandResult] {
            let _ = render_json(kind, &bytes);
        }
    }
}

/// What a hypothetical version 1.1 gateway might send: every v1 field plus new ones.
mod newer {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Data {
        #[prost(uint64, tag = "1")]
        pub session: u64,
        #[prost(uint64, tag = "2")]
        pub seq: u64,
        #[prost(bool, tag = "3")]
        pub history: bool,
        #[prost(int64, tag = "4")]
        pub base_time_ms: i64,
        #[prost(message, repeated, tag = "5")]
        pub readings: Vec<Reading>,
        #[prost(message, repeated, tag = "6")]
        pub dropped: Vec<chillcloud_proto::DroppedInterval>,
        #[prost(string, tag = "7")]
        pub compression: String,
        #[prost(fixed64, repeated, tag = "8")]
        pub checksums: Vec<u64>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Reading {
        #[prost(uint32, tag = "1")]
        pub alias: u32,
        #[prost(sint64, tag = "2")]
        pub offset_ms: i64,
        #[prost(sint64, optional, tag = "3")]
        pub scaled: Option<i64>,
        #[prost(int32, tag = "5")]
        pub quality: i32,
        #[prost(string, tag = "9")]
        pub annotation: String,
    }
}

#[test]
fn an_older_decoder_reads_a_newer_message_and_ignores_what_it_does_not_know() {
    let newer = newer::Data {
        session: 3,
        seq: 9,
        history: true,
        base_time_ms: 1_700_000_000_000,
        readings: vec![newer::Reading {
            alias: 4,
            offset_ms: 250,
            scaled: Some(72),
            // A quality this build has never heard of.
            quality: 7,
            annotation: "from a future gateway".into(),
        }],
        dropped: vec![],
        compression: "none".into(),
        checksums: vec![1, 2, 3],
    };
    let data: Data = decode(MessageKind::Data, &newer.encode_to_vec()).expect("old decoder accepts");
    assert_eq!((data.session, data.seq, data.history), (3, 9, true));
    let reading = &data.readings[0];
    assert_eq!((reading.alias, reading.offset_ms), (4, 250));
    assert_eq!(reading.value, Some(Value::Scaled(72)));
    // Unknown enum values decode, and the accessor falls back to the default.
    assert_eq!(reading.quality, 7);
    assert_eq!(reading.quality(), Quality::Good);
}

#[test]
fn a_newer_decoder_reads_an_older_message_with_defaults_for_new_fields() {
    let old = Data {
        session: 1,
        seq: 2,
        history: false,
        base_time_ms: 5,
        readings: vec![Reading { alias: 1, offset_ms: -3, quality: Quality::Bad as i32, value: None }],
        dropped: vec![],
    };
    let newer = newer::Data::decode(old.encode_to_vec().as_slice()).expect("new decoder accepts");
    assert_eq!((newer.session, newer.seq, newer.base_time_ms), (1, 2, 5));
    assert_eq!(newer.compression, "");
    assert!(newer.checksums.is_empty());
    assert_eq!(newer.readings[0].scaled, None);
    assert_eq!(newer.readings[0].quality, Quality::Bad as i32);
}

#[test]
fn oversized_and_malformed_payloads_are_errors_not_panics() {
    let big = vec![0u8; chillcloud_proto::MAX_PAYLOAD_BYTES + 1];
    assert!(decode::<Data>(MessageKind::Data, &big).is_err());
    assert!(decode::<Birth>(MessageKind::Birth, &[0xff, 0xff, 0xff]).is_err());
}

#[test]
fn a_reading_costs_a_handful_of_bytes() {
    // 50 points of a chiller read at one instant, as the gateway batches them.
    let data = Data {
        session: 12,
        seq: 345,
        history: false,
        base_time_ms: 1_700_000_000_000,
        readings: (0..50)
            .map(|alias| Reading {
                alias,
                offset_ms: 0,
                quality: 0,
                value: Some(encode_value(6.5 + f64::from(alias) / 10.0, 1)),
            })
            .collect(),
        dropped: vec![],
    };
    let per_reading = data.encoded_len() as f64 / 50.0;
    assert!(per_reading <= 8.0, "{per_reading} bytes per reading");
}

#[test]
fn payloads_render_as_json_for_debugging() {
    let data = Data {
        session: 2,
        seq: 7,
        history: false,
        base_time_ms: 1_700_000_000_000,
        readings: vec![Reading { alias: 3, offset_ms: 5, quality: 0, value: Some(Value::Scaled(72)) }],
        dropped: vec![],
    };
    let json = render_json(MessageKind::Data, &data.encode_to_vec()).expect("renders");
    assert_eq!(json["session"], 2);
    assert_eq!(json["seq"], 7);
    assert_eq!(json["readings"][0]["alias"], 3);
    assert_eq!(json["readings"][0]["value"]["Scaled"], 72);
}

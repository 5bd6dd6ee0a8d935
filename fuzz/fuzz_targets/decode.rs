//! Fuzzes what the server does with an untrusted MQTT message before touching the database:
//! parse the topic, then decode the payload as every message kind. Nothing may panic.
#![no_main]

use chillcloud_proto::{MessageKind, Topic, render_json};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    // The first byte splits the input into a topic and a payload.
    let split = usize::from(input.first().copied().unwrap_or(0)).min(input.len().saturating_sub(1));
    let (topic, payload) = input.split_at(split.min(input.len()));
    if let Ok(topic) = std::str::from_utf8(topic) {
        let _ = Topic::parse(topic);
    }
    for kind in
        [MessageKind::Birth, MessageKind::Death, MessageKind::Data, MessageKind::Command, MessageKind::CommandResult]
    {
        let _ = render_json(kind, payload);
    }
});

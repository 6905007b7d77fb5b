//! The load generator's hand-written topic-server decoder against the golden protocol
//! transcripts in `fixtures/protocol` (written by diffusion-core's `golden` test): the same
//! updates (topic ids, sequence numbers, values with deltas applied), the same final values,
//! the same last sequence number, and an `ack` for every heartbeat.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use loadgen::decode::{DecodeError, Decoder, FrameOutcome, Protocol};
use serde_json::Value;

fn fixture_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/protocol");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    files
}

/// Canonical bytes as the JSON a fixture lists for a topic of `topic_type`.
fn as_json(topic_type: &str, canonical: Option<&[u8]>) -> Value {
    let Some(bytes) = canonical else {
        return Value::Null;
    };
    match topic_type {
        "STRING" => Value::String(String::from_utf8(bytes.to_vec()).expect("UTF-8")),
        "BINARY" => Value::String(BASE64.encode(bytes)),
        _ => serde_json::from_slice(bytes).expect("JSON"),
    }
}

#[test]
fn loadgen_decoder_reads_every_fixture() {
    for path in fixture_files() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let fixture: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut decoder = Decoder::new(Protocol::Topic);
        let mut out = FrameOutcome {
            updates: Some(Vec::new()),
            ..FrameOutcome::default()
        };
        let mut types: BTreeMap<u64, String> = BTreeMap::new();
        let mut last_seq = 0;
        for frame in fixture["frames"].as_array().unwrap() {
            if frame["from"] != "server" {
                continue;
            }
            let text = frame["text"].as_str().unwrap();
            let messages = frame["messages"].as_array().unwrap();
            out.clear();
            decoder.feed(text.as_bytes(), &mut out);

            let mut expected_updates = Vec::new();
            let mut heartbeat = false;
            let mut server_error = false;
            for m in messages {
                let kind = m["type"].as_str().unwrap();
                if let Some(s) = m["s"].as_u64() {
                    last_seq = s;
                }
                match kind {
                    "connected" if m["recovered"] != true => {
                        types.clear();
                        last_seq = 0;
                    }
                    "subscribed" => {
                        let id = m["id"].as_u64().unwrap();
                        types.insert(id, m["topicType"].as_str().unwrap().to_owned());
                    }
                    "value" | "delta" => expected_updates.push(m),
                    "heartbeat" => heartbeat = true,
                    "error" => server_error = true,
                    _ => {}
                }
            }

            let updates = out.updates.as_ref().unwrap();
            assert_eq!(updates.len(), expected_updates.len(), "{name}: {text}");
            for (got, want) in updates.iter().zip(&expected_updates) {
                let id = want["id"].as_u64().unwrap();
                assert_eq!(got.id, id, "{name}: {want}");
                assert_eq!(got.seq, want["s"].as_u64(), "{name}: {want}");
                assert_eq!(got.delta, want["type"] == "delta", "{name}: {want}");
                if want["type"] == "value" {
                    let value = as_json(&types[&id], got.value.as_deref());
                    assert_eq!(value, want["value"], "{name}: {want}");
                }
            }
            assert_eq!(decoder.last_seq(), last_seq, "{name}: {text}");
            if heartbeat {
                assert_eq!(out.ack, Some(last_seq), "{name}: {text}");
            }
            match &out.error {
                None => assert!(!server_error, "{name}: error not reported: {text}"),
                Some(DecodeError::Server(_)) if server_error => {}
                Some(other) => panic!("{name}: {other} in {text}"),
            }
        }

        let values = fixture["values"].as_object().unwrap();
        let held: BTreeSet<String> = decoder.topic_ids().map(|id| id.to_string()).collect();
        let listed: BTreeSet<String> = values.keys().cloned().collect();
        assert_eq!(held, listed, "{name}: topics");
        for (id, want) in values {
            let id: u64 = id.parse().unwrap();
            let got = as_json(&types[&id], decoder.value(id).map(|b| &b[..]));
            assert_eq!(&got, want, "{name}: value of topic {id}");
        }
    }
}

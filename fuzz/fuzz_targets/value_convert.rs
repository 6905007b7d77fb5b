//! `convert::convert` on arbitrary JSON. The first byte picks the topic type (low bits) and
//! `VALIDATE_VALUES` (high bit); the rest is parsed as JSON. A converted value:
//!
//! - has the requested type and rebuilds from its canonical bytes (`from_canonical`) equal;
//! - has wire JSON that parses, and that wire form converts back (strictly and leniently) to
//!   an equal value, so a subscriber that sets the value it received changes nothing (the
//!   inputs in `fuzz/regressions/value_convert` once drifted by one ULP);
//! - when validating, is exactly what strict `TopicValue::from_json` gives.
//!
//! `Ok(None)` ("no value") only comes from `null` on a STRING, INT64 or DOUBLE topic.
#![no_main]

use diffusion_core::convert::{ConvertError, convert};
use diffusion_core::{TopicType, TopicValue};
use libfuzzer_sys::{Corpus, fuzz_target};
use serde_json::Value;

const TYPES: [TopicType; 5] = [
    TopicType::Json,
    TopicType::String,
    TopicType::Int64,
    TopicType::Double,
    TopicType::Binary,
];

fuzz_target!(|data: &[u8]| -> Corpus {
    let Some((&selector, rest)) = data.split_first() else {
        return Corpus::Reject;
    };
    let topic_type = TYPES[usize::from(selector & 0x7f) % TYPES.len()];
    let validate = selector & 0x80 != 0;
    let Ok(value) = serde_json::from_slice::<Value>(rest) else {
        return Corpus::Reject;
    };
    match convert(topic_type, validate, &value) {
        Ok(Some(converted)) => {
            assert_eq!(converted.topic_type(), topic_type);
            let rebuilt = TopicValue::from_canonical(topic_type, converted.canonical().clone())
                .unwrap_or_else(|e| {
                    panic!("{topic_type} value from {value} does not rebuild from its canonical bytes {:?}: {e}", converted.canonical())
                });
            assert_eq!(
                rebuilt, converted,
                "from_canonical differs for {topic_type} {value}"
            );
            if validate {
                assert_eq!(
                    TopicValue::from_json(topic_type, &value),
                    Ok(Some(converted.clone())),
                    "validated {topic_type} conversion of {value} is not the strict one"
                );
            }
            let wire = converted.wire_json();
            let wire_value: Value = serde_json::from_slice(&wire).unwrap_or_else(|e| {
                panic!("wire JSON {wire:?} of {topic_type} {value} does not parse: {e}")
            });
            for strict in [true, false] {
                assert_eq!(
                    convert(topic_type, strict, &wire_value),
                    Ok(Some(converted.clone())),
                    "{topic_type} value from {value}: its wire form {wire:?} does not convert back (validate={strict})"
                );
            }
        }
        Ok(None) => assert!(
            value.is_null() && topic_type != TopicType::Json,
            "no value from {value} for {topic_type}"
        ),
        Err(error) => {
            assert!(
                !(matches!(error, ConvertError::Strict { .. }) && !validate),
                "Strict error without VALIDATE_VALUES for {topic_type} {value}"
            );
            let _ = error.to_string();
        }
    }
    Corpus::Keep
});

//! Turning a value from a request into a topic value, by the topic's `VALIDATE_VALUES` property.
//!
//! With `VALIDATE_VALUES=true` a value must be exactly the type's wire form
//! (`TopicValue::from_json`). With `false`, the default, the server also accepts values that
//! convert without loss of meaning, so publishers feeding loosely typed data (numbers that
//! arrive as text, say) need not convert them first:
//!
//! - STRING ← a JSON number or boolean, held as its JSON text (`42`, `2.5`, `true`);
//! - INT64 ← a JSON string holding an integer (`"42"`), or a float with an integral value
//!   (`42.0`) no larger in magnitude than 2^53. Beyond 2^53 a float no longer says which
//!   integer was meant (`-9223372036854775809` arrives as the float -2^63, which is i64::MIN),
//!   so such floats are refused on both sides alike rather than changed into another number;
//! - DOUBLE ← a JSON string holding a finite number (`"2.5"`, `"1e3"`).
//!
//! Strict conversion is always tried first, so a value in wire form means the same either way.

use serde_json::Value;

use crate::topic::TopicType;
use crate::value::{TopicValue, ValueError};

/// A value the topic cannot hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// Not the type's wire form, and (when lenient) not convertible either.
    #[error(transparent)]
    Invalid(#[from] ValueError),
    /// A string that a lenient topic would convert, but this one does not hold the right text.
    #[error("a {topic_type} topic cannot hold the string {text:?}: it is not {expected}")]
    NotConvertible {
        /// The topic's type.
        topic_type: TopicType,
        /// The string given (shortened when long).
        text: String,
        /// What the string would have had to be.
        expected: &'static str,
    },
    /// Convertible, but the topic validates values strictly.
    #[error("{error} (VALIDATE_VALUES is true: only the type's exact wire form is accepted)")]
    Strict {
        /// The strict conversion's error.
        error: ValueError,
    },
}

/// Largest part of a refused string quoted back in an error.
const QUOTE_LIMIT: usize = 40;

fn quote(text: &str) -> String {
    match text.char_indices().nth(QUOTE_LIMIT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Converts a request's value for a topic of `topic_type`, by its `VALIDATE_VALUES` switch.
/// `Ok(None)`: the value is "no value".
pub fn convert(
    topic_type: TopicType,
    validate_values: bool,
    value: &Value,
) -> Result<Option<TopicValue>, ConvertError> {
    let strict_error = match TopicValue::from_json(topic_type, value) {
        Ok(converted) => return Ok(converted),
        Err(error) => error,
    };
    let lenient = lenient(topic_type, value);
    if validate_values {
        return Err(match lenient {
            Some(Ok(_)) => ConvertError::Strict {
                error: strict_error,
            },
            _ => ConvertError::Invalid(strict_error),
        });
    }
    match lenient {
        Some(Ok(wire)) => TopicValue::from_json(topic_type, &wire).map_err(ConvertError::from),
        Some(Err(expected)) => Err(ConvertError::NotConvertible {
            topic_type,
            text: value.as_str().map(quote).unwrap_or_default(),
            expected,
        }),
        None => Err(ConvertError::Invalid(strict_error)),
    }
}

/// The wire form a lenient topic converts `value` to: `None` when no conversion applies to
/// this kind of value, `Some(Err(expected))` when one applies but the text does not fit.
fn lenient(topic_type: TopicType, value: &Value) -> Option<Result<Value, &'static str>> {
    match (topic_type, value) {
        (TopicType::String, Value::Number(n)) => Some(Ok(Value::String(n.to_string()))),
        (TopicType::String, Value::Bool(b)) => Some(Ok(Value::String(b.to_string()))),
        (TopicType::Int64, Value::String(s)) => Some(
            s.parse::<i64>()
                .map(Value::from)
                .map_err(|_| "an integer in the signed 64-bit range"),
        ),
        (TopicType::Int64, Value::Number(n)) => integral(n.as_f64()?).map(|i| Ok(Value::from(i))),
        (TopicType::Double, Value::String(s)) => Some(
            s.parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(Value::from)
                .ok_or("a finite number"),
        ),
        _ => None,
    }
}

/// The integer a float stands for: integral and within ±2^53, where every integer is exactly a
/// float, so the float cannot be a neighbouring integer rounded.
fn integral(f: f64) -> Option<i64> {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    (f.is_finite() && f.fract() == 0.0 && (-EXACT..=EXACT).contains(&f)).then_some(f as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lenient_ok(t: TopicType, v: Value) -> Value {
        convert(t, false, &v).unwrap().unwrap().to_json()
    }

    #[test]
    fn wire_forms_mean_the_same_either_way() {
        for validate in [false, true] {
            let v = convert(TopicType::Int64, validate, &json!(7)).unwrap();
            assert_eq!(v.unwrap().to_json(), json!(7));
            assert!(
                convert(TopicType::String, validate, &json!(null))
                    .unwrap()
                    .is_none()
            );
        }
    }

    #[test]
    fn lenient_conversions() {
        assert_eq!(lenient_ok(TopicType::String, json!(42)), json!("42"));
        assert_eq!(lenient_ok(TopicType::String, json!(2.5)), json!("2.5"));
        assert_eq!(lenient_ok(TopicType::String, json!(true)), json!("true"));
        assert_eq!(lenient_ok(TopicType::Int64, json!("42")), json!(42));
        assert_eq!(lenient_ok(TopicType::Int64, json!("-7")), json!(-7));
        assert_eq!(lenient_ok(TopicType::Int64, json!(42.0)), json!(42));
        assert_eq!(lenient_ok(TopicType::Double, json!("2.5")), json!(2.5));
        assert_eq!(lenient_ok(TopicType::Double, json!("1e3")), json!(1000.0));
    }

    #[test]
    fn lenient_refusals_say_why() {
        let cases = [
            (TopicType::Int64, json!("4.5")),
            (TopicType::Int64, json!("twelve")),
            (TopicType::Int64, json!("99999999999999999999")),
            (TopicType::Double, json!("NaN")),
            (TopicType::Double, json!("inf")),
            (TopicType::Double, json!("")),
        ];
        for (t, v) in cases {
            let err = convert(t, false, &v).unwrap_err();
            assert!(
                matches!(err, ConvertError::NotConvertible { .. }),
                "{t} {v}: {err}"
            );
        }
        // Kinds with no lenient form keep the strict error.
        for (t, v) in [
            (TopicType::Int64, json!(4.5)),
            (TopicType::Int64, json!(1e19)),
            (TopicType::Int64, json!(true)),
            (TopicType::String, json!([1])),
            (TopicType::Double, json!({"a":1})),
            (TopicType::Binary, json!(5)),
        ] {
            let err = convert(t, false, &v).unwrap_err();
            assert!(matches!(err, ConvertError::Invalid(_)), "{t} {v}: {err}");
        }
        let long = "x".repeat(500);
        let err = convert(TopicType::Int64, false, &json!(long)).unwrap_err();
        assert!(err.to_string().len() < 200, "{err}");
    }

    #[test]
    fn strict_topics_refuse_convertible_values_with_a_hint() {
        for (t, v) in [
            (TopicType::String, json!(42)),
            (TopicType::Int64, json!("42")),
            (TopicType::Int64, json!(42.0)),
            (TopicType::Double, json!("2.5")),
        ] {
            let err = convert(t, true, &v).unwrap_err();
            assert!(matches!(err, ConvertError::Strict { .. }), "{t} {v}: {err}");
            assert!(err.to_string().contains("VALIDATE_VALUES"), "{err}");
        }
        let err = convert(TopicType::Int64, true, &json!("nope")).unwrap_err();
        assert!(matches!(err, ConvertError::Invalid(_)), "{err}");
    }

    #[test]
    fn integral_bounds() {
        assert_eq!(integral(9_007_199_254_740_992.0), Some(1 << 53));
        assert_eq!(integral(-9_007_199_254_740_992.0), Some(-(1 << 53)));
        assert_eq!(integral(9_007_199_254_740_994.0), None);
        assert_eq!(integral(-9_223_372_036_854_775_808.0), None);
        assert_eq!(integral(-0.0), Some(0));
        assert_eq!(integral(f64::NAN), None);
        assert_eq!(integral(0.5), None);
    }

    #[test]
    fn integers_past_the_int64_range_are_refused_on_both_sides() {
        // serde_json reads an integer outside i64/u64 as the nearest float: -2^63 - 1 becomes
        // exactly -2^63. Neither side may be stored as a different number.
        for text in [
            "-9223372036854775809",
            "9223372036854775808",
            "1e19",
            "-1e19",
        ] {
            let value: Value = serde_json::from_str(text).unwrap();
            for validate in [false, true] {
                assert!(
                    convert(TopicType::Int64, validate, &value).is_err(),
                    "{text} validate={validate}"
                );
            }
        }
        let min: Value = serde_json::from_str("-9223372036854775808").unwrap();
        assert_eq!(
            convert(TopicType::Int64, false, &min)
                .unwrap()
                .unwrap()
                .to_json(),
            json!(i64::MIN)
        );
    }
}

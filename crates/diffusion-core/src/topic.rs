//! Topic types and topic properties.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The type of a topic's value. Deltas apply to JSON, STRING and BINARY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TopicType {
    /// Any JSON value; canonical bytes are compact JSON with object keys sorted.
    Json,
    /// A UTF-8 string (may be null: the topic has no value).
    String,
    /// A signed 64-bit integer (may be null).
    Int64,
    /// A 64-bit float (may be null).
    Double,
    /// Opaque bytes, base64 on the JSON wire.
    Binary,
}

impl TopicType {
    /// The upper-case wire name (`JSON`, `STRING`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::Json => "JSON",
            Self::String => "STRING",
            Self::Int64 => "INT64",
            Self::Double => "DOUBLE",
            Self::Binary => "BINARY",
        }
    }

    /// Whether binary deltas can be sent for this type.
    pub fn supports_deltas(self) -> bool {
        matches!(self, Self::Json | Self::String | Self::Binary)
    }
}

impl fmt::Display for TopicType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A topic type name that is not one of the five supported types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown topic type '{0}' (expected JSON, STRING, INT64, DOUBLE or BINARY)")]
pub struct UnknownTopicType(pub String);

impl FromStr for TopicType {
    type Err = UnknownTopicType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "JSON" => Ok(Self::Json),
            "STRING" => Ok(Self::String),
            "INT64" => Ok(Self::Int64),
            "DOUBLE" => Ok(Self::Double),
            "BINARY" => Ok(Self::Binary),
            _ => Err(UnknownTopicType(s.to_owned())),
        }
    }
}

/// What a session's queue does with a topic's updates under back pressure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Conflation {
    /// Never merge queued updates.
    Off,
    /// Merge queued updates per topic only when the queue is over its limit (the default).
    #[default]
    Conflate,
    /// Keep at most the latest update per topic in the queue at all times.
    Always,
    /// Under back pressure, unsubscribe the session from the topic.
    Unsubscribe,
}

impl FromStr for Conflation {
    type Err = PropertyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "off" => Ok(Self::Off),
            "conflate" => Ok(Self::Conflate),
            "always" => Ok(Self::Always),
            "unsubscribe" => Ok(Self::Unsubscribe),
            _ => Err(PropertyError::BadValue {
                key: "CONFLATION".to_owned(),
                value: s.to_owned(),
                expected: "off, conflate, always or unsubscribe",
            }),
        }
    }
}

impl Conflation {
    /// The lower-case property value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Conflate => "conflate",
            Self::Always => "always",
            Self::Unsubscribe => "unsubscribe",
        }
    }
}

/// A property map that could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PropertyError {
    /// A key that is not a known property.
    #[error("unknown topic property '{0}'")]
    UnknownKey(String),
    /// A known key with a value of the wrong form.
    #[error("topic property {key} cannot be '{value}' (expected {expected})")]
    BadValue {
        /// The property name.
        key: String,
        /// The value given.
        value: String,
        /// What would have been accepted.
        expected: &'static str,
    },
}

/// The behaviour switches of a topic, as documented in docs/protocol.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TopicProperties {
    /// `PUBLISH_VALUES_ONLY`: never send deltas for this topic.
    pub publish_values_only: bool,
    /// `DONT_RETAIN_VALUE`: keep no value (no initial value, no fetch, no deltas).
    pub dont_retain_value: bool,
    /// `CONFLATION`: back-pressure policy.
    pub conflation: Conflation,
    /// `TIDY_ON_UNSUBSCRIBE`: drop queued updates when a session unsubscribes.
    pub tidy_on_unsubscribe: bool,
    /// `VALIDATE_VALUES`: refuse values that are not valid for the type.
    pub validate_values: bool,
}

fn parse_bool(key: &str, value: &str) -> Result<bool, PropertyError> {
    match value.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(PropertyError::BadValue {
            key: key.to_owned(),
            value: value.to_owned(),
            expected: "true or false",
        }),
    }
}

impl TopicProperties {
    /// Reads properties from their string form; unknown keys are errors so typos are noticed.
    pub fn from_map(map: &BTreeMap<String, String>) -> Result<Self, PropertyError> {
        let mut props = Self::default();
        for (key, value) in map {
            match key.as_str() {
                "PUBLISH_VALUES_ONLY" => props.publish_values_only = parse_bool(key, value)?,
                "DONT_RETAIN_VALUE" => props.dont_retain_value = parse_bool(key, value)?,
                "CONFLATION" => props.conflation = value.parse()?,
                "TIDY_ON_UNSUBSCRIBE" => props.tidy_on_unsubscribe = parse_bool(key, value)?,
                "VALIDATE_VALUES" => props.validate_values = parse_bool(key, value)?,
                _ => return Err(PropertyError::UnknownKey(key.clone())),
            }
        }
        Ok(props)
    }

    /// The string form of every property (defaults included), as the subscription notice
    /// carries them.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        let b = |v: bool| v.to_string();
        BTreeMap::from([
            ("CONFLATION".to_owned(), self.conflation.name().to_owned()),
            ("DONT_RETAIN_VALUE".to_owned(), b(self.dont_retain_value)),
            (
                "PUBLISH_VALUES_ONLY".to_owned(),
                b(self.publish_values_only),
            ),
            (
                "TIDY_ON_UNSUBSCRIBE".to_owned(),
                b(self.tidy_on_unsubscribe),
            ),
            ("VALIDATE_VALUES".to_owned(), b(self.validate_values)),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_parse_case_insensitively() {
        assert_eq!("json".parse::<TopicType>().unwrap(), TopicType::Json);
        assert_eq!("INT64".parse::<TopicType>().unwrap(), TopicType::Int64);
        assert!("TIME".parse::<TopicType>().is_err());
    }

    #[test]
    fn properties_round_trip_and_reject_unknowns() {
        let mut map = BTreeMap::new();
        map.insert("CONFLATION".to_owned(), "always".to_owned());
        map.insert("DONT_RETAIN_VALUE".to_owned(), "true".to_owned());
        let props = TopicProperties::from_map(&map).unwrap();
        assert_eq!(props.conflation, Conflation::Always);
        assert!(props.dont_retain_value);
        assert_eq!(TopicProperties::from_map(&props.to_map()).unwrap(), props);
        map.insert("NOPE".to_owned(), "1".to_owned());
        assert!(matches!(
            TopicProperties::from_map(&map),
            Err(PropertyError::UnknownKey(_))
        ));
        let bad = BTreeMap::from([("VALIDATE_VALUES".to_owned(), "yes".to_owned())]);
        assert!(matches!(
            TopicProperties::from_map(&bad),
            Err(PropertyError::BadValue { .. })
        ));
    }
}

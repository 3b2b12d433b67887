//! A topic's options, chosen when it is created (`POST /topics`) and kept
//! for its life: how many events its history keeps, for how long, and
//! whether its subscribers are told of each other's joins and leaves.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::wire::request::whole_number;

/// What a topic was created with. In cluster mode these travel in the
/// registry entry, so every node keeps the same history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicOptions {
    /// Events kept for replay, recovery and `GET /topics/{name}/messages`.
    pub history_size: usize,
    /// Events older than this are neither replayed nor returned.
    #[serde(default, with = "ttl_text")]
    pub history_ttl: Option<Duration>,
    /// Subscribers get `join` and `leave` for the others.
    #[serde(default)]
    pub presence_events: bool,
}

impl TopicOptions {
    /// What a topic gets when its creation names no option.
    pub fn with_history(history_size: usize) -> Self {
        Self {
            history_size,
            history_ttl: None,
            presence_events: false,
        }
    }

    /// The options of a `POST /topics` body's members, over `defaults`;
    /// an option of the wrong type or out of range is an error naming it.
    /// Other members are not options (`name`) and are left alone.
    pub fn from_members(
        members: &Map<String, Value>,
        defaults: Self,
        max_history_size: usize,
    ) -> Result<Self, String> {
        let mut options = defaults;
        if let Some(size) = members.get("history_size") {
            options.history_size = whole_number(size)
                .and_then(|size| usize::try_from(size).ok())
                .filter(|size| *size <= max_history_size)
                .ok_or_else(|| {
                    format!(
                        "history_size must be an integer from 0 to {max_history_size} (MAX_HISTORY_SIZE)"
                    )
                })?;
        }
        if let Some(ttl) = members.get("history_ttl") {
            let ttl = ttl.as_str().and_then(parse_ttl).ok_or(
                "history_ttl must be a duration such as \"10m\", \"90s\" or \"1h30m\" (units ms, s, m, h, d; \"0s\": none)",
            )?;
            options.history_ttl = (!ttl.is_zero()).then_some(ttl);
        }
        if let Some(presence_events) = members.get("presence_events") {
            options.presence_events = presence_events
                .as_bool()
                .ok_or("presence_events must be true or false")?;
        }
        Ok(options)
    }
}

/// Longest run of digits in one part of a `history_ttl`: bounds the sum
/// far below overflow, and the OpenAPI document's pattern says the same.
const MAX_TTL_DIGITS: usize = 6;

/// A `history_ttl`: one or more `<digits><unit>` parts, no spaces (the
/// pattern `^([0-9]{1,6}(ms|s|m|h|d))+$`).
fn parse_ttl(text: &str) -> Option<Duration> {
    let mut rest = text;
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if !(1..=MAX_TTL_DIGITS).contains(&digits) {
            return None;
        }
        let count: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, millis) = [
            ("ms", 1),
            ("s", 1000),
            ("m", 60_000),
            ("h", 3_600_000),
            ("d", 86_400_000),
        ]
        .into_iter()
        .find(|(unit, _)| rest.starts_with(unit))?;
        rest = &rest[unit.len()..];
        total += Duration::from_millis(count * millis);
    }
    (!text.is_empty()).then_some(total)
}

/// `history_ttl` as text in the largest unit that states it exactly
/// (`"90s"`, `"10m"`), in the registry and in `GET /topics`.
mod ttl_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        ttl: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let Some(ttl) = ttl else {
            return serializer.serialize_none();
        };
        let millis = ttl.as_millis();
        let (count, unit) = [
            (86_400_000, "d"),
            (3_600_000, "h"),
            (60_000, "m"),
            (1000, "s"),
        ]
        .into_iter()
        .find(|(unit, _)| millis % unit == 0)
        .map_or((millis, "ms"), |(size, unit)| (millis / size, unit));
        serializer.serialize_str(&format!("{count}{unit}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|text| humantime::parse_duration(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(body: Value) -> Result<TopicOptions, String> {
        TopicOptions::from_members(
            body.as_object().unwrap(),
            TopicOptions::with_history(100),
            1000,
        )
    }

    #[test]
    fn options_are_read_over_the_defaults() {
        assert_eq!(
            parse(json!({ "name": "a" })),
            Ok(TopicOptions::with_history(100))
        );
        assert_eq!(
            parse(json!({ "history_size": 0.0, "history_ttl": "1m30s", "presence_events": true })),
            Ok(TopicOptions {
                history_size: 0,
                history_ttl: Some(Duration::from_secs(90)),
                presence_events: true,
            })
        );
    }

    #[test]
    fn a_ttl_of_zero_is_none() {
        assert_eq!(
            parse(json!({ "history_ttl": "0s" })),
            Ok(TopicOptions::with_history(100))
        );
        assert_eq!(
            parse_ttl("1d2h3m4s5ms"),
            Some(Duration::from_millis(93_784_005))
        );
        assert_eq!(
            parse_ttl("999999d"),
            Some(Duration::from_secs(999_999 * 86_400))
        );
    }

    #[test]
    fn a_bad_option_is_named() {
        for (body, named) in [
            (json!({ "history_size": 1001 }), "history_size"),
            (json!({ "history_size": -1 }), "history_size"),
            (json!({ "history_size": "5" }), "history_size"),
            (json!({ "history_size": 1.5 }), "history_size"),
            (json!({ "history_size": 1e300 }), "history_size"),
            (json!({ "history_ttl": "soon" }), "history_ttl"),
            (json!({ "history_ttl": "1m 30s" }), "history_ttl"),
            (json!({ "history_ttl": "" }), "history_ttl"),
            (json!({ "history_ttl": "1234567s" }), "history_ttl"),
            (json!({ "history_ttl": "5" }), "history_ttl"),
            (json!({ "history_ttl": 60 }), "history_ttl"),
            (json!({ "presence_events": "yes" }), "presence_events"),
        ] {
            let why = parse(body.clone()).expect_err("refused");
            assert!(why.starts_with(named), "{body}: {why}");
        }
    }

    #[test]
    fn options_survive_the_registry() {
        let options = TopicOptions {
            history_size: 5,
            history_ttl: Some(Duration::from_secs(600)),
            presence_events: true,
        };
        let json = serde_json::to_string(&options).unwrap();
        assert!(json.contains(r#""history_ttl":"10m""#), "{json}");
        assert_eq!(
            serde_json::from_str::<TopicOptions>(&json).unwrap(),
            options
        );
        let odd = TopicOptions {
            history_ttl: parse_ttl("1d2h3m4s5ms"),
            ..options
        };
        let json = serde_json::to_string(&odd).unwrap();
        assert!(json.contains(r#""history_ttl":"93784005ms""#), "{json}");
        assert_eq!(serde_json::from_str::<TopicOptions>(&json).unwrap(), odd);
    }
}

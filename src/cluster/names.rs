//! What ringcast calls things in NATS: the event stream and its subjects,
//! the registry bucket, and the message ids that deduplicate publishes.

use std::time::Duration;

use async_nats::jetstream::stream;

use crate::broker::{is_valid_topic_name, Topic};

/// The stream holding every topic's events.
pub const EVENT_STREAM: &str = "RINGCAST";

/// Event subjects: `ringcast.events.<encoded topic>.<incarnation>`.
pub const EVENT_SUBJECT_PREFIX: &str = "ringcast.events.";

/// The topic registry's key-value bucket.
pub const REGISTRY_BUCKET: &str = "ringcast-topics";

/// The duplicate window of the registry's stream, and of the event stream
/// unless `DEDUP_WINDOW` sets it: a message id republished to the same topic
/// incarnation within it is stored once (see [`scoped_message_id`]).
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// The header a publish's message id travels in when `DEDUP_WINDOW` is
/// off (else it is the scoped `Nats-Msg-Id`).
pub const UNDEDUPLICATED_ID: &str = "Ringcast-Message-Id";

/// The stream behind the registry bucket.
pub fn registry_stream_name() -> String {
    bucket_stream_name(REGISTRY_BUCKET)
}

/// The stream behind a key-value bucket, named as JetStream names it.
pub fn bucket_stream_name(bucket: &str) -> String {
    format!("KV_{bucket}")
}

/// The stream behind key-value bucket `bucket`, one value per key, created
/// by hand as the crate would: its own bucket creation fails against
/// nats-server 2.9.
pub fn bucket_stream(bucket: &str) -> stream::Config {
    stream::Config {
        name: bucket_stream_name(bucket),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    }
}

pub fn event_subject(topic: &str, incarnation: u64) -> String {
    format!(
        "{EVENT_SUBJECT_PREFIX}{}.{incarnation}",
        encode_topic(topic)
    )
}

/// The `Nats-Msg-Id` of a publish: JetStream deduplicates ids across the
/// whole stream, so the client's id is scoped to the topic incarnation
/// (`<encoded topic>.<incarnation>.<id>`), or the same id sent to another
/// topic, or to a topic deleted and created again, would be dropped.
pub fn scoped_message_id(topic: &Topic, id: &str) -> String {
    format!(
        "{}.{}.{id}",
        encode_topic(topic.name()),
        topic.incarnation()
    )
}

/// The client's message id in a scoped `Nats-Msg-Id`: what follows the last
/// `.`, which a UUID never contains. An id without one (another NATS
/// client's publish) is taken whole.
pub fn client_message_id(scoped: &str) -> &str {
    scoped.rsplit_once('.').map_or(scoped, |(_, id)| id)
}

/// The topic and incarnation of an event subject.
pub fn parse_event_subject(subject: &str) -> Option<(String, u64)> {
    let (topic, incarnation) = subject
        .strip_prefix(EVENT_SUBJECT_PREFIX)?
        .rsplit_once('.')?;
    Some((decode_topic(topic)?, incarnation.parse().ok()?))
}

/// A topic name as one subject token and registry key: of the characters
/// topic names allow, `.` separates tokens and `:` is not allowed in keys.
pub fn encode_topic(name: &str) -> String {
    name.replace('.', "=2E").replace(':', "=3A")
}

pub fn decode_topic(encoded: &str) -> Option<String> {
    let name = encoded.replace("=2E", ".").replace("=3A", ":");
    (is_valid_topic_name(&name) && encode_topic(&name) == encoded).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{is_valid_topic_name, Broker};

    #[test]
    fn topic_names_round_trip_through_subjects_and_keys() {
        for name in ["orders", "orders.eu-1:v2_x", "a..b", ":", "=x"] {
            let subject = event_subject(name, 42);
            let token = subject.strip_prefix(EVENT_SUBJECT_PREFIX).unwrap();
            assert_eq!(token.split('.').count(), 2, "{subject}");
            if is_valid_topic_name(name) {
                assert_eq!(parse_event_subject(&subject), Some((name.to_owned(), 42)));
            }
        }
        assert_eq!(encode_topic("a.b:c"), "a=2Eb=3Ac");
    }

    #[test]
    fn message_ids_are_scoped_to_the_topic_incarnation_and_back() {
        let id = "550e8400-e29b-41d4-a716-446655440000";
        let broker = Broker::new(1, 2, Default::default());
        broker.adopt_topic("orders.eu:1", 7, "e7", broker.default_options());
        let scoped = scoped_message_id(&broker.topic("orders.eu:1").unwrap(), id);
        assert_eq!(scoped, format!("orders=2Eeu=3A1.7.{id}"));
        assert_eq!(client_message_id(&scoped), id);
        assert_eq!(client_message_id(id), id, "an unscoped id is kept whole");
    }

    #[test]
    fn foreign_subjects_and_keys_are_refused() {
        for subject in [
            "ringcast.events.orders",
            "ringcast.events.orders.x",
            "other.orders.1",
            "ringcast.events.a=41.1",
        ] {
            assert_eq!(parse_event_subject(subject), None, "{subject}");
        }
        assert_eq!(decode_topic("=2"), None);
    }
}

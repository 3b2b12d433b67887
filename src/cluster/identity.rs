//! A stream's identity, part of every topic's epoch (see
//! `Backplane::epoch`): the same on every node, and new when the stream is
//! created again. It is a random id that the node creating the stream puts
//! in its description: JetStream replicates a stream's configuration, so
//! every server reports it alike, whereas each replica reports its own
//! creation time (the identity before, still used for a stream created
//! without an id until a node updates it).

use async_nats::jetstream::stream;

/// What a stream's description starts with, before its id.
const IDENTITY_PREFIX: &str = "ringcast stream ";

/// `config` with a fresh identity.
pub fn with_new_identity(mut config: stream::Config) -> stream::Config {
    let id = uuid::Uuid::new_v4().simple().to_string();
    config.description = Some(format!("{IDENTITY_PREFIX}{}", &id[..16]));
    config
}

/// Whether `config` carries an identity.
pub fn has_identity(config: &stream::Config) -> bool {
    identity_in(config).is_some()
}

/// The stream's identity: its id, or for a stream created without one,
/// its creation time in hex.
pub fn identity(info: &stream::Info) -> String {
    identity_in(&info.config).map_or_else(
        || format!("{:x}", info.created.unix_timestamp_nanos()),
        str::to_owned,
    )
}

fn identity_in(config: &stream::Config) -> Option<&str> {
    config.description.as_deref()?.strip_prefix(IDENTITY_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_identity_is_read_back_and_differs_each_time() {
        let first = with_new_identity(stream::Config::default());
        let second = with_new_identity(stream::Config::default());
        assert!(has_identity(&first) && has_identity(&second));
        assert_ne!(identity_in(&first), identity_in(&second));
        assert!(!has_identity(&stream::Config::default()));
    }
}

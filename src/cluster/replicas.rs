//! `CLUSTER_STREAM_REPLICAS`: every stream ringcast creates has that many
//! replicas. A stream found with fewer is raised to it (never lowered: a
//! node configured with fewer leaves a stream as durable as it found it).
//! A count the NATS cluster cannot place stops the node at start, naming
//! the setting: it never runs with fewer replicas than configured.

use async_nats::jetstream::context::{CreateStreamError, CreateStreamErrorKind};
use async_nats::jetstream::{stream, ErrorCode};

use crate::cluster::identity::{has_identity, with_new_identity};
use crate::cluster::set_up_error::{ReplicasUnplaceable, SetUpError};
use crate::cluster::Cluster;

impl Cluster {
    /// The stream `config` names, with `CLUSTER_STREAM_REPLICAS` replicas:
    /// created if absent (with a new identity, see `identity`), updated if
    /// it has fewer replicas, another per-subject limit (the events'
    /// `RING_BUFFER_SIZE`) or another duplicate window (the events'
    /// `DEDUP_WINDOW`), keeping its identity.
    pub(super) async fn replicated_stream(
        &self,
        config: stream::Config,
    ) -> Result<stream::Stream, SetUpError> {
        let mut config = with_new_identity(config);
        config.num_replicas = self.replicas;
        let name = config.name.clone();
        let found = self
            .jetstream
            .get_or_create_stream(config.clone())
            .await
            .map_err(|err| self.placement_error(&name, err))?;
        let current = &found.cached_info().config;
        // A zero duplicate window asks for none in particular: the stream
        // keeps its own (NATS's default when it creates one).
        if config.duplicate_window.is_zero() {
            config.duplicate_window = current.duplicate_window;
        }
        // Updated only when needed: nats-server 2.9.10 can crash when
        // several nodes update one stream at the same moment.
        if current.num_replicas >= config.num_replicas
            && current.max_messages_per_subject == config.max_messages_per_subject
            && current.duplicate_window == config.duplicate_window
        {
            return Ok(found);
        }
        config.num_replicas = config.num_replicas.max(current.num_replicas);
        // A stream created without an identity gets one now.
        if has_identity(current) {
            config.description.clone_from(&current.description);
        }
        self.jetstream
            .update_stream(config)
            .await
            .map_err(|err| self.placement_error(&name, err))?;
        Ok(self
            .jetstream
            .get_stream(&name)
            .await
            .map_err(async_nats::Error::from)?)
    }

    fn placement_error(&self, stream: &str, err: CreateStreamError) -> SetUpError {
        match err.kind() {
            CreateStreamErrorKind::JetStream(refusal) if cannot_place(refusal.error_code()) => {
                SetUpError::Fatal(ReplicasUnplaceable {
                    replicas: self.replicas,
                    stream: stream.to_owned(),
                    why: refusal.to_string(),
                })
            }
            _ => SetUpError::Transient(err.into()),
        }
    }
}

/// JetStream's refusals of a replica count that retrying cannot change.
fn cannot_place(code: ErrorCode) -> bool {
    [
        ErrorCode::STREAM_REPLICAS_NOT_SUPPORTED,
        ErrorCode::CLUSTER_NO_PEERS,
        ErrorCode::INSUFFICIENT_RESOURCES,
        ErrorCode::STREAM_REPLICAS_NOT_UPDATABLE,
    ]
    .contains(&code)
}

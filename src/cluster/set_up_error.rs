//! Why a node cannot set up its JetStream objects: retried, or fatal.

/// Why a node cannot set up its streams.
pub enum SetUpError {
    /// Retrying cannot help: the node must stop.
    Fatal(ReplicasUnplaceable),
    /// NATS is unreachable, or busy electing: retried.
    Transient(async_nats::Error),
}

impl From<async_nats::Error> for SetUpError {
    fn from(err: async_nats::Error) -> Self {
        Self::Transient(err)
    }
}

/// The NATS cluster cannot hold a stream with the configured replicas.
#[derive(Debug, thiserror::Error)]
#[error(
    "CLUSTER_STREAM_REPLICAS={replicas}: NATS cannot place stream {stream} with {replicas} \
     replicas ({why}); run at least {replicas} clustered JetStream servers, or lower \
     CLUSTER_STREAM_REPLICAS"
)]
pub struct ReplicasUnplaceable {
    pub replicas: usize,
    pub stream: String,
    /// JetStream's refusal.
    pub why: String,
}

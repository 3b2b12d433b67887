//! The server API's connection commands on every node: the node asked
//! sends the command on [`COMMAND_SUBJECT`], carries it out on its own
//! connections, and gathers the other nodes' counts as presence gathers
//! rows (`Cluster::scatter_gather`), within `CLUSTER_PRESENCE_TIMEOUT`.
//! A node that does not answer in time is named; it was sent the command
//! all the same, and carries it out if it is alive.

use bytes::Bytes;
use futures_util::StreamExt;

use crate::broker::BrokerError;
use crate::cluster::{unavailable, Cluster, RETRY_DELAY};
use crate::connections::{Command, Reach};

/// Where commands go; every node listens.
const COMMAND_SUBJECT: &str = "ringcast.commands";

impl Cluster {
    /// Carries `command` out on every node; the count is the sum of every
    /// answering node's.
    pub async fn command(&self, command: &Command) -> Result<Reach, BrokerError> {
        self.available()?;
        let payload = serde_json::to_vec(command).map_err(unavailable)?;
        let own = command.apply(&self.connections, &self.broker);
        let answer = self
            .scatter_gather(COMMAND_SUBJECT, Bytes::from(payload))
            .await?;
        let others: usize = answer.rows.iter().map(|count| parse_count(count)).sum();
        Ok(Reach {
            count: own + others,
            missing_nodes: answer.missing_nodes,
        })
    }

    /// Carries out every other node's commands on this node's connections
    /// and answers with the count, for ever (the client subscribes again
    /// by itself after a reconnect).
    pub(super) async fn answer_commands(&self) {
        loop {
            match self.client.subscribe(COMMAND_SUBJECT).await {
                Ok(mut commands) => {
                    while let Some(request) = commands.next().await {
                        self.answer_command(request).await;
                    }
                }
                Err(err) => tracing::warn!(error = %err, "cannot listen for server-API commands"),
            }
            tokio::time::sleep(RETRY_DELAY).await;
        }
    }

    async fn answer_command(&self, request: async_nats::Message) {
        if self.asked_by_itself(&request) {
            return;
        }
        let command = match serde_json::from_slice::<Command>(&request.payload) {
            Ok(command) => command,
            Err(err) => {
                tracing::warn!(error = %err, "server-API command not understood; ignored");
                return;
            }
        };
        let count = command.apply(&self.connections, &self.broker);
        tracing::info!(?command, count, "server-API command from another node");
        if let Some(reply) = &request.reply {
            self.reply_in_pieces(reply, vec![Bytes::from(count.to_string())])
                .await;
        }
    }
}

/// A node's count; an answer that is not one counts nothing.
fn parse_count(answer: &[u8]) -> usize {
    std::str::from_utf8(answer)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(0)
}

//! Every open connection on this node (WebSocket or event stream), by id,
//! with its outbox and its token's `sub`: what the server API
//! (`POST /disconnect`, `POST /unsubscribe`) finds connections by, and how
//! it acts on this node's.
//!
//! A connection registers once when it opens and its [`Registration`]
//! removes it however it ends, so nothing outlives a connection. The
//! publish path never reads this map: a subscription's `client_id` is
//! found from the topics' subscriber lists, which the broker keeps anyway.

use std::collections::HashSet;
use std::sync::Arc;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};

use crate::broker::{Broker, ConnectionId};
use crate::send::outbox::Outbox;
use crate::wire::close::CloseReason;
use crate::wire::reply;

/// Which connections a server-API request is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selector {
    /// One connection, by the id presence shows (`connection`).
    Connection(ConnectionId),
    /// Every connection holding a subscription with this `client_id` (a
    /// subscription that named none has its connection's id).
    ClientId(String),
    /// Every connection whose access token has this `sub`.
    Subject(String),
}

/// A server-API command, as every node of a cluster is sent it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Close the connections picked with close code 4000 and `reason`.
    Disconnect { selector: Selector, reason: String },
    /// End the picked connections' subscriptions to `topic`.
    Unsubscribe { topic: String, selector: Selector },
}

impl Command {
    /// Carries the command out on this node's connections; returns how
    /// many connections (or subscriptions) it ended.
    pub fn apply(&self, connections: &Connections, broker: &Broker) -> usize {
        match self {
            Self::Disconnect { selector, reason } => {
                connections.disconnect(broker, selector, &Arc::from(reason.as_str()))
            }
            Self::Unsubscribe { topic, selector } => {
                connections.unsubscribe(broker, topic, selector)
            }
        }
    }
}

/// What a command reached: its count on every node that answered, and
/// (in a cluster) the nodes that did not answer in time; the command was
/// sent to them too.
#[derive(Debug, Default)]
pub struct Reach {
    pub count: usize,
    pub missing_nodes: Vec<String>,
}

#[derive(Default)]
pub struct Connections {
    open: DashMap<ConnectionId, Entry>,
}

struct Entry {
    outbox: Arc<Outbox>,
    subject: Option<Arc<str>>,
}

/// A connection's place in [`Connections`]; dropping it removes it.
pub struct Registration {
    connections: Arc<Connections>,
    id: ConnectionId,
}

impl Registration {
    /// A new token came in force (`auth` frame): its `sub` replaces the
    /// old one's.
    pub fn set_subject(&self, subject: Option<Arc<str>>) {
        if let Some(mut entry) = self.connections.open.get_mut(&self.id) {
            entry.subject = subject;
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.connections.open.remove(&self.id);
    }
}

impl Connections {
    pub fn register(
        self: &Arc<Self>,
        id: ConnectionId,
        outbox: &Arc<Outbox>,
        subject: Option<Arc<str>>,
    ) -> Registration {
        self.open.insert(
            id,
            Entry {
                outbox: outbox.clone(),
                subject,
            },
        );
        Registration {
            connections: self.clone(),
            id,
        }
    }

    /// Closes every connection of this node that `selector` picks with
    /// close code 4000 and `reason`; returns how many.
    pub fn disconnect(&self, broker: &Broker, selector: &Selector, reason: &Arc<str>) -> usize {
        let picked: Vec<Arc<Outbox>> = match selector {
            Selector::Connection(id) => self
                .open
                .get(id)
                .map(|entry| entry.outbox.clone())
                .into_iter()
                .collect(),
            Selector::ClientId(client_id) => {
                let ids: HashSet<ConnectionId> = broker
                    .presence()
                    .into_iter()
                    .flat_map(|(_, subscriptions)| subscriptions)
                    .filter(|presence| {
                        has_client_id(
                            presence.connection,
                            presence.client_id.as_deref(),
                            client_id,
                        )
                    })
                    .map(|presence| presence.connection)
                    .collect();
                ids.iter()
                    .filter_map(|id| Some(self.open.get(id)?.outbox.clone()))
                    .collect()
            }
            Selector::Subject(subject) => self
                .holding(subject)
                .into_iter()
                .map(|(_, outbox)| outbox)
                .collect(),
        };
        for outbox in &picked {
            outbox.close(CloseReason::Disconnected(reason.clone()));
        }
        picked.len()
    }

    /// Ends the subscriptions to topic `name` on this node that `selector`
    /// picks; each connection gets `info` `unsubscribed`. Returns how many
    /// (none where the topic does not exist).
    pub fn unsubscribe(&self, broker: &Broker, name: &str, selector: &Selector) -> usize {
        let Ok(topic) = broker.topic(name) else {
            return 0;
        };
        let subjects: HashSet<ConnectionId> = match selector {
            Selector::Subject(subject) => self
                .holding(subject)
                .into_iter()
                .map(|(id, _)| id)
                .collect(),
            _ => HashSet::new(),
        };
        let ended = topic.unsubscribe_picked(|id, client_id| match selector {
            Selector::Connection(wanted) => id == *wanted,
            Selector::ClientId(wanted) => has_client_id(id, client_id, wanted),
            Selector::Subject(_) => subjects.contains(&id),
        });
        let notice = reply::info(Some(name), "unsubscribed");
        for outbox in &ended {
            outbox.push_reply(notice.clone());
        }
        ended.len()
    }

    /// The connections whose token has `sub` `subject`.
    fn holding(&self, subject: &str) -> Vec<(ConnectionId, Arc<Outbox>)> {
        self.open
            .iter()
            .filter(|entry| entry.subject.as_deref() == Some(subject))
            .map(|entry| (*entry.key(), entry.outbox.clone()))
            .collect()
    }
}

/// Whether a subscription has client id `wanted`: the one its subscribe
/// named, or else its connection's id.
fn has_client_id(connection: ConnectionId, client_id: Option<&str>, wanted: &str) -> bool {
    match client_id {
        Some(client_id) => client_id == wanted,
        None => wanted.parse() == Ok(connection),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SlowConsumerPolicy;
    use crate::metrics::Metrics;
    use crate::send::QueueLimits;

    fn outbox() -> Arc<Outbox> {
        let limits = QueueLimits {
            events: 8,
            bytes: usize::MAX,
        };
        Arc::new(Outbox::new(limits, SlowConsumerPolicy::Disconnect))
    }

    #[test]
    fn a_connection_leaves_the_registry_when_its_registration_drops() {
        let connections = Arc::new(Connections::default());
        let broker = Broker::new(10, 10, Arc::new(Metrics::default()));
        let reason: Arc<str> = Arc::from("bye");
        let first = connections.register(1, &outbox(), Some(Arc::from("alice")));
        let second = connections.register(2, &outbox(), None);
        second.set_subject(Some(Arc::from("alice")));
        let alice = Selector::Subject("alice".into());
        assert_eq!(connections.holding("alice").len(), 2);
        drop((first, second));
        assert!(connections.open.is_empty(), "nothing outlives a connection");
        assert_eq!(connections.disconnect(&broker, &alice, &reason), 0);
    }

    #[test]
    fn commands_travel_as_json() {
        let command = Command::Unsubscribe {
            topic: "a".into(),
            selector: Selector::ClientId("alice".into()),
        };
        let json = serde_json::to_string(&command).unwrap();
        assert_eq!(
            json,
            r#"{"command":"unsubscribe","topic":"a","selector":{"client_id":"alice"}}"#
        );
        assert_eq!(serde_json::from_str::<Command>(&json).unwrap(), command);
    }

    #[test]
    fn a_subscription_without_a_client_id_has_its_connection_s() {
        assert!(has_client_id(7, None, "7"));
        assert!(!has_client_id(7, None, "07x"));
        assert!(has_client_id(7, Some("bob"), "bob"));
        assert!(!has_client_id(7, Some("bob"), "7"));
    }
}

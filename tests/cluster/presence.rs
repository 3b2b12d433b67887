//! Presence in a cluster: every node answers `GET /subscriptions` and
//! `GET /topics/{name}/subscribers` for the whole cluster, each row naming
//! the node its connection is on; a node that does not answer in time is
//! named in `missing_nodes`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{assert_error_reply, is_rfc3339_utc_millis};
use crate::harness::*;
use crate::CONVERGENCE_DEADLINE;

/// `(topic, client_id, node)` of every row of `GET /subscriptions`.
type SubscriptionRows = BTreeSet<(String, String, String)>;
/// `(client_id, node)` of every row of `GET /topics/{name}/subscribers`.
type SubscriberRows = BTreeSet<(String, String)>;

fn text(row: &Value, field: &str) -> String {
    row[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} must be a string: {row}"))
        .to_owned()
}

/// The rows of a presence answer, checking each row's `since` (and
/// `connection` on `/subscriptions`) and that the answer is complete
/// unless `partial` is expected.
fn rows<'a>(body: &'a Value, list: &'a str, partial: bool) -> impl Iterator<Item = &'a Value> {
    assert_eq!(body.get("partial").is_some(), partial, "{body}");
    assert_eq!(body.get("missing_nodes").is_some(), partial, "{body}");
    body[list]
        .as_array()
        .unwrap_or_else(|| panic!("{list} must be an array: {body}"))
        .iter()
        .inspect(move |row| {
            assert!(is_rfc3339_utc_millis(&text(row, "since")), "{row}");
            if list == "subscriptions" {
                assert!(row["connection"].is_u64(), "{row}");
            }
        })
}

fn subscription_rows(body: &Value, partial: bool) -> SubscriptionRows {
    rows(body, "subscriptions", partial)
        .map(|row| {
            (
                text(row, "topic"),
                text(row, "client_id"),
                text(row, "node"),
            )
        })
        .collect()
}

async fn subscriptions(node: &Endpoint) -> SubscriptionRows {
    let (status, body) = node.get_json("/subscriptions").await;
    assert_eq!(status, 200, "{} GET /subscriptions: {body}", node.label);
    subscription_rows(&body, false)
}

async fn subscribers(node: &Endpoint, topic: &str) -> SubscriberRows {
    let (status, body) = node.get_json(&format!("/topics/{topic}/subscribers")).await;
    assert_eq!(status, 200, "{} subscribers of {topic}: {body}", node.label);
    assert_eq!(body["topic"], topic, "{body}");
    rows(&body, "subscribers", false)
        .map(|row| (text(row, "client_id"), text(row, "node")))
        .collect()
}

/// The node `client_id`'s rows name.
fn node_of(rows: &SubscriptionRows, client_id: &str) -> String {
    let nodes: BTreeSet<&String> = rows
        .iter()
        .filter(|(_, client, _)| client == client_id)
        .map(|(_, _, node)| node)
        .collect();
    assert_eq!(nodes.len(), 1, "{client_id} on one node: {rows:?}");
    nodes.into_iter().next().unwrap().clone()
}

fn row(topic: &str, client_id: &str, node: &str) -> (String, String, String) {
    (topic.to_owned(), client_id.to_owned(), node.to_owned())
}

fn subscriber(client_id: &str, node: &str) -> (String, String) {
    (client_id.to_owned(), node.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_cluster_wide_and_names_each_rows_node() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    cluster.node(A).create_topic("orders").await;
    cluster.node(A).create_topic("chat").await;
    let mut alice = Client::connect(cluster.node(A), "alice").await;
    alice.subscribe_as("orders", "alice").await;
    let mut carol = Client::connect(cluster.node(A), "carol").await;
    carol.subscribe_as("chat", "carol").await;
    let mut bob = Client::connect(cluster.node(B), "bob").await;
    bob.subscribe_as("orders", "bob").await;
    bob.subscribe_as("chat", "bob").await;

    // Asked of the node that has none of them.
    let everyone = subscriptions(cluster.node(C)).await;
    let (node_a, node_b) = (node_of(&everyone, "alice"), node_of(&everyone, "bob"));
    assert_ne!(node_a, node_b, "{everyone:?}");
    assert_eq!(
        everyone,
        BTreeSet::from([
            row("chat", "bob", &node_b),
            row("chat", "carol", &node_a),
            row("orders", "alice", &node_a),
            row("orders", "bob", &node_b),
        ])
    );
    for node in cluster.nodes() {
        assert_eq!(
            subscriptions(node).await,
            everyone,
            "asked of {}",
            node.label
        );
    }
    assert_eq!(
        subscribers(cluster.node(C), "orders").await,
        BTreeSet::from([subscriber("alice", &node_a), subscriber("bob", &node_b)])
    );

    bob.unsubscribe("orders").await;
    assert_eq!(
        subscribers(cluster.node(A), "orders").await,
        BTreeSet::from([subscriber("alice", &node_a)]),
        "the unsubscribe's ack came after B let go of it"
    );

    drop(alice);
    poll_until(
        "alice's closed connection to leave presence",
        CONVERGENCE_DEADLINE,
        || async {
            let rows = subscriptions(cluster.node(B)).await;
            match rows.iter().any(|(_, client, _)| client == "alice") {
                true => Err(format!("{rows:?}")),
                false => Ok(()),
            }
        },
    )
    .await;

    let (status, body) = cluster.node(C).delete_json("/topics/chat").await;
    assert_eq!(status, 200, "{body}");
    for node in cluster.nodes() {
        poll_until(
            "the deleted topic to leave presence",
            CONVERGENCE_DEADLINE,
            || async {
                let rows = subscriptions(node).await;
                match rows.is_empty() {
                    true => Ok(()),
                    false => Err(format!("{} {rows:?}", node.label)),
                }
            },
        )
        .await;
        let reply = node.get_json("/topics/chat/subscribers").await;
        assert_error_reply(&reply, 404, "TOPIC_NOT_FOUND", &node.label);
    }
    let reply = cluster.node(A).get_json("/topics/never/subscribers").await;
    assert_error_reply(&reply, 404, "TOPIC_NOT_FOUND", "a topic no node has");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_does_not_answer_is_named_missing_within_the_deadline() {
    const TIMEOUT: Duration = Duration::from_millis(500);
    let Some(mut cluster) = Cluster::spec()
        .node_env("CLUSTER_PRESENCE_TIMEOUT", "500ms")
        .start()
        .await
    else {
        return;
    };
    cluster.node(A).create_topic("orders").await;
    let mut alice = Client::connect(cluster.node(A), "alice").await;
    alice.subscribe_as("orders", "alice").await;
    let mut carol = Client::connect(cluster.node(C), "carol").await;
    carol.subscribe_as("orders", "carol").await;
    let everyone = subscriptions(cluster.node(A)).await;
    let (node_a, node_c) = (node_of(&everyone, "alice"), node_of(&everyone, "carol"));

    cluster.pause_node(C);
    for (path, list) in [
        ("/subscriptions", "subscriptions"),
        ("/topics/orders/subscribers", "subscribers"),
    ] {
        let asked = Instant::now();
        let (status, body) = cluster.node(B).get_json(path).await;
        let took = asked.elapsed();
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body["partial"], true, "{path}: {body}");
        assert_eq!(body["missing_nodes"], serde_json::json!([node_c]), "{body}");
        let clients: Vec<String> = rows(&body, list, true)
            .map(|row| format!("{}@{}", text(row, "client_id"), text(row, "node")))
            .collect();
        assert_eq!(clients, [format!("alice@{node_a}")], "{path}");
        assert!(
            took >= TIMEOUT && took < TIMEOUT + Duration::from_secs(4),
            "{path} answered after {took:?}, CLUSTER_PRESENCE_TIMEOUT is {TIMEOUT:?}"
        );
    }

    cluster.resume_node(C);
    poll_until(
        "the resumed node to answer again",
        CONVERGENCE_DEADLINE,
        || async {
            let (_, body) = cluster.node(B).get_json("/subscriptions").await;
            match body.get("partial") {
                None => Ok(()),
                Some(_) => Err(body.to_string()),
            }
        },
    )
    .await;
    assert_eq!(subscriptions(cluster.node(B)).await, everyone);

    // A node that shuts down takes itself off the node list: not missing.
    cluster.stop_node(C).await;
    assert_eq!(
        subscriptions(cluster.node(B)).await,
        BTreeSet::from([row("orders", "alice", &node_a)])
    );
}

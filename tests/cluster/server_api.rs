//! The server API across a cluster: `POST /disconnect` and
//! `POST /unsubscribe` sent to one node reach the connections of every
//! node and count them all; topic options travel in the registry, so
//! every node keeps the same history; joins and leaves reach the
//! subscribers of every node.

use serde_json::{json, Value};

use crate::harness::*;
use crate::CONVERGENCE_DEADLINE;

async fn command(node: &Endpoint, path: &str, body: Value) -> Value {
    let (status, reply) = node.post_json(path, &body).await;
    assert_eq!(status, 200, "{path} {body} on {}: {reply}", node.label);
    reply
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_and_unsubscribe_reach_every_node() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    cluster.node(A).create_topic("room").await;
    let mut alice_on_a = Client::connect(cluster.node(A), "alice").await;
    alice_on_a.subscribe_as("room", "alice").await;
    let mut alice_on_b = Client::connect(cluster.node(B), "alice").await;
    alice_on_b.subscribe_as("room", "alice").await;
    let mut bob_on_c = Client::connect(cluster.node(C), "bob").await;
    bob_on_c.subscribe_as("room", "bob").await;

    let reply = command(
        cluster.node(C),
        "/unsubscribe",
        json!({ "topic": "room", "client_id": "alice" }),
    )
    .await;
    assert_eq!(reply, json!({ "unsubscribed": 2 }), "counted on A and B");
    for alice in [&mut alice_on_a, &mut alice_on_b] {
        let notice = alice.expect_frame("info unsubscribed").await;
        assert_eq!(
            (&notice["type"], &notice["topic"], &notice["msg"]),
            (&json!("info"), &json!("room"), &json!("unsubscribed")),
            "{notice}"
        );
    }
    bob_on_c.assert_nothing_pending().await;

    let reply = command(
        cluster.node(B),
        "/disconnect",
        json!({ "client_id": "bob", "reason": "banned" }),
    )
    .await;
    assert_eq!(reply, json!({ "disconnected": 1 }), "bob is on C");
    bob_on_c.expect_close(4000).await;

    // A connection id from presence picks that one connection, wherever
    // it is and whichever node is asked.
    alice_on_b.subscribe_as("room", "alice").await;
    let (_, rows) = cluster.node(A).get_json("/subscriptions").await;
    let row = rows["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["client_id"] == "alice")
        .unwrap_or_else(|| panic!("alice's subscription: {rows}"))
        .clone();
    let reply = command(
        cluster.node(A),
        "/disconnect",
        json!({ "connection": row["connection"] }),
    )
    .await;
    assert_eq!(reply, json!({ "disconnected": 1 }), "{row}");
    alice_on_b.expect_close(4000).await;
    alice_on_a.assert_nothing_pending().await;

    let reply = command(
        cluster.node(C),
        "/disconnect",
        json!({ "client_id": "nobody" }),
    )
    .await;
    assert_eq!(reply, json!({ "disconnected": 0 }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_options_are_kept_by_every_node() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let body = json!({ "name": "brief", "history_size": 2, "history_ttl": "10m", "presence_events": true });
    let (status, reply) = cluster.node(A).post_json("/topics", &body).await;
    assert_eq!(status, 201, "{reply}");
    let mut publisher = RestPublisher::new(cluster.node(A), "publisher");
    let mut seqs = Vec::new();
    for _ in 0..5 {
        let acked = publisher.publish("brief").await.expect("acked");
        seqs.push(json!(acked.seq.expect("a REST ack's seq")));
    }
    let last_two = &seqs[3..];
    for node in cluster.nodes() {
        poll_until(
            &format!("{}'s history of brief", node.label),
            CONVERGENCE_DEADLINE,
            || async {
                let (_, row) = node.get_json("/topics/brief").await;
                let options = (
                    &row["history_size"],
                    &row["history_ttl"],
                    &row["presence_events"],
                );
                if options != (&json!(2), &json!("10m"), &json!(true)) {
                    return Err(format!("options: {row}"));
                }
                let (_, history) = node.get_json("/topics/brief/messages").await;
                let kept: Vec<Value> = history["messages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|message| message["seq"].clone())
                    .collect();
                match kept == last_two {
                    true => Ok(()),
                    false => Err(format!("history {history}")),
                }
            },
        )
        .await;
    }
}

/// The next frame of `client` is `kind` of `client_id` on `topic`.
async fn expect_membership(client: &mut Client, kind: &str, topic: &str, client_id: &str) {
    let frame = client.expect_frame(&format!("{kind} of {client_id}")).await;
    assert_eq!(
        (&frame["type"], &frame["topic"], &frame["client_id"]),
        (&json!(kind), &json!(topic), &json!(client_id)),
        "{}: {frame}",
        client.label
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_and_leaves_reach_the_subscribers_on_every_node() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let body = json!({ "name": "room", "presence_events": true });
    let (status, reply) = cluster.node(A).post_json("/topics", &body).await;
    assert_eq!(status, 201, "{reply}");
    let mut alice = Client::connect(cluster.node(A), "alice").await;
    alice.subscribe_as("room", "alice").await;
    let mut bob = Client::connect(cluster.node(B), "bob").await;
    bob.subscribe_as("room", "bob").await;
    expect_membership(&mut alice, "join", "room", "bob").await;
    let mut carol = Client::connect(cluster.node(C), "carol").await;
    carol.subscribe_as("room", "carol").await;
    expect_membership(&mut alice, "join", "room", "carol").await;
    expect_membership(&mut bob, "join", "room", "carol").await;

    bob.unsubscribe("room").await;
    expect_membership(&mut alice, "leave", "room", "bob").await;
    expect_membership(&mut carol, "leave", "room", "bob").await;
    drop(alice);
    expect_membership(&mut carol, "leave", "room", "alice").await;
    bob.assert_nothing_pending().await;
    carol.assert_nothing_pending().await;
}

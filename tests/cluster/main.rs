//! Cluster mode end to end: per test, one nats-server with JetStream and
//! three ringcast nodes as real processes on free loopback ports (one test
//! adds HAProxy in front, one reaches NATS from a node through a proxy that
//! can cut it off), and clients over real sockets.
//!
//! Needs `nats-server` (and `haproxy`): `apt-get install -y nats-server haproxy`.
//! Without them each test prints SKIPPED and passes, unless
//! `RINGCAST_CLUSTER_TESTS=require` is set (CI sets it), which fails instead.
//! A failing test prints the tail of every process log and keeps the logs.

#[path = "../common/mod.rs"]
mod common;
mod durability;
mod harness;
mod presence;
mod server_api;
mod sse;

use std::time::Duration;

use common::assert_error_reply;
use futures_util::TryStreamExt;
use harness::*;
use serde_json::{json, Value};
use tokio::time::Instant;

/// How long other nodes may take to reflect a topic created or deleted
/// elsewhere in `/topics`.
const CONVERGENCE_DEADLINE: Duration = Duration::from_secs(5);
/// How long a node may take to notice that nats-server has gone.
const OUTAGE_DETECTION_DEADLINE: Duration = Duration::from_secs(10);
/// How long a node may take to be healthy again once nats-server is back:
/// the client's reconnect backoff plus catching up.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(15);
/// "Publishes fail fast (well under 1 s)" while the backplane is down.
const FAIL_FAST: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_delivers_every_event_once_in_one_order_on_every_node() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let topic = "fanout";
    cluster.node(A).create_topic(topic).await;
    let mut subscribers = subscribe_on(cluster.nodes(), topic, 2).await;
    let load = Load {
        ws_bursts: 3,
        burst_len: 10,
        rest: 15,
    };
    let acked = publish_from(cluster.nodes(), topic, load).await;
    expect_events_everywhere(&mut subscribers, topic, acked.len()).await;
    assert_nothing_more(&mut subscribers).await;
    assert_same_stream(&subscribers, &acked);
}

/// `CLUSTER_NATS_URL` takes a comma-separated list, as the README and
/// `--help` say: every node is given an address where nothing listens
/// first and the live server second, joins, and fans out as usual (the
/// whole string once went to the client as one address, and no node
/// started).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comma_separated_nats_url_list_is_tried_in_turn() {
    let Some(cluster) = Cluster::spec().dead_server_first().start().await else {
        return;
    };
    let topic = "listed";
    cluster.node(A).create_topic(topic).await;
    let mut subscribers = subscribe_on(cluster.nodes(), topic, 1).await;
    let load = Load {
        ws_bursts: 1,
        burst_len: 5,
        rest: 5,
    };
    let acked = publish_from(cluster.nodes(), topic, load).await;
    expect_events_everywhere(&mut subscribers, topic, acked.len()).await;
    assert_same_stream(&subscribers, &acked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_created_on_one_node_are_usable_at_once_on_the_others() {
    // Many at once, so that the other nodes' registry followers lag and the
    // lookup on a miss is what makes the topics usable at once. The names
    // need the subject encoding of '.' and ':'.
    const TOPICS: usize = 20;
    let Some(mut cluster) = Cluster::start().await else {
        return;
    };
    let nodes: Vec<Endpoint> = cluster.nodes().cloned().collect();
    let names: Vec<String> = (0..TOPICS).map(|i| format!("orders.eu-{i}:v1")).collect();
    let tasks = names.iter().enumerate().map(|(i, name)| {
        let rotate = |by: usize| nodes[(i + by) % nodes.len()].clone();
        let (creating, subscribing, publishing) = (rotate(0), rotate(1), rotate(2));
        let (name, over_rest) = (name.clone(), i % 2 == 1);
        tokio::spawn(async move {
            create_then_use_elsewhere(&creating, &subscribing, &publishing, &name, over_rest).await;
        })
    });
    for task in futures_util::future::join_all(tasks).await {
        task.expect("a topic was not usable at once");
    }
    let mut all_names = assert_usable_at_once_after_a_pause(&mut cluster).await;

    for node in cluster.nodes() {
        for name in &names[..3] {
            let reply = node.try_create_topic(name).await;
            let context = format!("creating {name} again on {}", node.label);
            assert_error_reply(&reply, 409, "TOPIC_EXISTS", &context);
        }
    }
    all_names.extend(names);
    all_names.sort();
    for node in cluster.nodes() {
        let what = format!("{} to list every topic", node.label);
        poll_until(&what, CONVERGENCE_DEADLINE, || async {
            match node.topic_names().await {
                listed if listed == all_names => Ok(()),
                listed => Err(format!("{listed:?}")),
            }
        })
        .await;
        assert_healthy(node, all_names.len()).await;
    }
}

/// Creates `topic` on `creating`; as soon as that answers 201, subscribes
/// on `subscribing` and publishes on `publishing` (over REST or WebSocket),
/// and checks the event arrives.
async fn create_then_use_elsewhere(
    creating: &Endpoint,
    subscribing: &Endpoint,
    publishing: &Endpoint,
    topic: &str,
    over_rest: bool,
) {
    // Connected beforehand: the requests follow the 201 at once.
    let mut subscriber = Client::connect(subscribing, "sub").await;
    let mut ws_publisher = Client::connect(publishing, "pub").await;
    let mut rest_publisher = RestPublisher::new(publishing, "rest");
    creating.create_topic(topic).await;
    let context = format!("right after {topic} was created on {}", creating.label);
    let replayed = subscriber.try_subscribe(topic, 0).await;
    let replayed = replayed.unwrap_or_else(|error| panic!("subscribe {context}: {error}"));
    assert!(replayed.is_empty(), "{context}: replayed {replayed:?}");
    let acked = match over_rest {
        true => rest_publisher
            .publish(topic)
            .await
            .map_err(|e| format!("{e:?}")),
        false => ws_publisher.publish(topic).await.map_err(|e| e.to_string()),
    };
    let acked = acked.unwrap_or_else(|error| panic!("publish {context}: {error}"));
    subscriber.expect_events(topic, 1).await;
    assert_same_stream([&subscriber], &[acked]);
}

/// Asserts `/health` is 200 with the cluster fields and the cluster-wide
/// topic count.
async fn assert_healthy(node: &Endpoint, topics: usize) {
    let (status, health) = node.health().await;
    assert_eq!(status, 200, "{}: {health}", node.label);
    assert_eq!(health["status"], "ok", "{}: {health}", node.label);
    let context = format!("cluster-wide topic count on {}: {health}", node.label);
    assert_eq!(health["topics"], topics, "{context}");
    assert_eq!(
        health["cluster"],
        json!({
            "backplane": "connected",
            "scope": {
                "topics": "cluster",
                "messages": "cluster",
                "subscribers": "node",
                "connections": "node",
            },
        }),
        "{}: {health}",
        node.label
    );
}

/// Creates topics on A while B is frozen, with subscribes for them already
/// waiting in B's sockets when it resumes. B's registry follower has not seen
/// the topics then, and each subscribe must still be acknowledged. Returns
/// the topics' names.
async fn assert_usable_at_once_after_a_pause(cluster: &mut Cluster) -> Vec<String> {
    const TOPICS: usize = 5;
    let names: Vec<String> = (0..TOPICS).map(|i| format!("while-b-paused-{i}")).collect();
    let mut subscribers = Vec::new();
    for _ in &names {
        subscribers.push(Client::connect(cluster.node(B), "sub").await);
    }
    cluster.pause_node(B);
    for name in &names {
        cluster.node(A).create_topic(name).await;
    }
    let subscribing: Vec<_> = subscribers
        .into_iter()
        .zip(names.clone())
        .map(|(mut subscriber, name)| {
            tokio::spawn(async move { (subscriber.try_subscribe(&name, 0).await, name) })
        })
        .collect();
    // Long enough for the subscribe frames to reach B's socket buffers.
    tokio::time::sleep(Duration::from_millis(200)).await;
    cluster.resume_node(B);
    for task in futures_util::future::join_all(subscribing).await {
        let (subscribed, name) = task.expect("subscribe task");
        if let Err(error) = subscribed {
            panic!("subscribing to {name} on B as it resumed: {error}");
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_deleted_on_one_node_is_gone_on_every_node() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let topic = "doomed";
    cluster.node(A).create_topic(topic).await;
    let mut subscribers = subscribe_on(cluster.nodes(), topic, 1).await;
    let three = Load {
        ws_bursts: 1,
        burst_len: 2,
        rest: 1,
    };
    let mut acked = publish_from([cluster.node(A)], topic, three).await;
    expect_events_everywhere(&mut subscribers, topic, acked.len()).await;

    let reply = cluster
        .node(B)
        .delete_json(&format!("/topics/{topic}"))
        .await;
    assert_eq!(reply, (200, json!({ "status": "deleted", "topic": topic })));
    futures_util::future::join_all(
        subscribers
            .iter_mut()
            .map(|subscriber| subscriber.expect_topic_deleted(topic)),
    )
    .await;
    assert_nothing_more(&mut subscribers).await;

    assert_topic_gone(cluster.node(B), topic).await;
    for node in [cluster.node(A), cluster.node(C)] {
        let what = format!("{topic} to leave /topics on {}", node.label);
        poll_until(&what, CONVERGENCE_DEADLINE, || async {
            let names = node.topic_names().await;
            match names.iter().any(|name| name == topic) {
                true => Err(format!("{names:?}")),
                false => Ok(()),
            }
        })
        .await;
        assert_topic_gone(node, topic).await;
    }

    // Recreated, it starts with an empty history everywhere and serves
    // every node again.
    cluster.node(C).create_topic(topic).await;
    for subscriber in &mut subscribers {
        let replayed = subscriber.subscribe(topic, 10).await;
        assert!(
            replayed.is_empty(),
            "{}: the recreated topic replayed {:?}",
            subscriber.label,
            summary(&replayed)
        );
    }
    let fresh = publish_from([cluster.node(A)], topic, three).await;
    expect_events_everywhere(&mut subscribers, topic, fresh.len()).await;
    assert_nothing_more(&mut subscribers).await;
    acked.extend(fresh);
    assert_same_stream(&subscribers, &acked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_committed_in_the_registry_succeeds_even_if_the_node_then_loses_nats() {
    let Some(cluster) = Cluster::spec().nats_link(C).start().await else {
        return;
    };
    let topic = "doomed";
    cluster.node(A).create_topic(topic).await;
    let mut subscriber = Client::connect(cluster.node(A), "sub").await;
    subscriber.subscribe(topic, 0).await;
    // After the registry has the delete, C asks for the registry's latest
    // revision to wait for its own mirror: that request is cut off.
    cluster.cut_nats_link_when_sent(C, "$JS.API.STREAM.INFO.KV_ringcast-topics");
    let node_c = cluster.node(C);
    let deleted = node_c.delete_json(&format!("/topics/{topic}")).await;
    assert_eq!(
        deleted,
        (200, json!({ "status": "deleted", "topic": topic })),
        "DELETE on C, cut off NATS once the registry had the delete"
    );
    subscriber.expect_topic_deleted(topic).await;

    cluster.restore_nats_link(C);
    await_healthy_again(node_c).await;
    for node in cluster.nodes() {
        assert_topic_gone(node, topic).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_topics_events_are_purged_though_the_nodes_that_saw_the_delete_stopped() {
    // Long enough for the nodes to stop before the purge is due.
    const PURGE_DELAY: Duration = Duration::from_secs(10);
    let Some(mut cluster) = Cluster::spec()
        .node_env(
            "CLUSTER_PURGE_DELAY",
            &format!("{}s", PURGE_DELAY.as_secs()),
        )
        .start()
        .await
    else {
        return;
    };
    let jetstream = cluster.jetstream().await;
    // Every node stops within the delay: the node started next purges.
    let topic = "doomed";
    create_publish_delete(&cluster, A, topic, &jetstream).await;
    for node in [A, B, C] {
        cluster.stop_node(node).await;
    }
    assert_still_stored(&jetstream, topic).await;
    cluster.restart_node(B).await;
    assert_purged(&jetstream, topic, PURGE_DELAY).await;
    // Created again, the topic has nothing of its predecessor.
    let node_b = cluster.node(B);
    node_b.create_topic(topic).await;
    let replayed = replay_on(node_b, topic, 10).await;
    assert!(replayed.is_empty(), "replayed {:?}", summary(&replayed));
    let (_, stats) = node_b.get_json("/stats").await;
    assert_eq!(stats["topics"][topic]["messages"], 0, "{stats}");

    // The node that deleted stops within the delay: one that stays purges.
    cluster.restart_node(C).await;
    let topic = "doomed-too";
    create_publish_delete(&cluster, C, topic, &jetstream).await;
    cluster.stop_node(C).await;
    assert_still_stored(&jetstream, topic).await;
    assert_purged(&jetstream, topic, PURGE_DELAY).await;
}

/// Creates `topic` on node `index`, publishes three events and deletes it.
async fn create_publish_delete(
    cluster: &Cluster,
    index: usize,
    topic: &str,
    jetstream: &async_nats::jetstream::Context,
) {
    let node = cluster.node(index);
    node.create_topic(topic).await;
    let mut publisher = RestPublisher::new(node, "rest");
    for _ in 0..3 {
        publisher.publish(topic).await.expect("publish");
    }
    assert_eq!(stored_events(jetstream, topic).await, 3);
    let deleted = node.delete_json(&format!("/topics/{topic}")).await;
    assert_eq!(deleted.0, 200, "{deleted:?}");
}

async fn assert_still_stored(jetstream: &async_nats::jetstream::Context, topic: &str) {
    assert_eq!(
        stored_events(jetstream, topic).await,
        3,
        "{topic} purged before the nodes stopped: the test proves nothing"
    );
}

async fn assert_purged(
    jetstream: &async_nats::jetstream::Context,
    topic: &str,
    purge_delay: Duration,
) {
    let what = format!("{topic}'s events to be purged");
    poll_until(&what, purge_delay + CONVERGENCE_DEADLINE, || async {
        match stored_events(jetstream, topic).await {
            0 => Ok(()),
            left => Err(format!("{left} events stored")),
        }
    })
    .await;
}

/// How many events of `topic`, any incarnation, the event stream holds.
async fn stored_events(jetstream: &async_nats::jetstream::Context, topic: &str) -> usize {
    let events = jetstream
        .get_stream("RINGCAST")
        .await
        .expect("the event stream");
    let subjects = events
        .info_with_subjects(format!("ringcast.events.{topic}.*"))
        .await
        .expect("the event stream's subjects");
    let counts: Vec<(String, usize)> = subjects
        .try_collect()
        .await
        .expect("the event stream's subjects");
    counts.iter().map(|(_, count)| count).sum()
}

/// Asserts `endpoint` answers every use of `topic` as an unknown topic.
async fn assert_topic_gone(endpoint: &Endpoint, topic: &str) {
    let context = |what: &str| format!("{what} of deleted {topic} on {}", endpoint.label);
    let published = RestPublisher::new(endpoint, "rest").publish(topic).await;
    let refused = published.expect_err(&context("REST publish"));
    assert_error_reply(&refused, 404, "TOPIC_NOT_FOUND", &context("REST publish"));
    let deleted = endpoint.delete_json(&format!("/topics/{topic}")).await;
    assert_error_reply(&deleted, 404, "TOPIC_NOT_FOUND", &context("DELETE"));
    let mut client = Client::connect(endpoint, "late").await;
    let refused = client.publish(topic).await.expect_err(&context("publish"));
    assert_error_frame(&refused, "TOPIC_NOT_FOUND", &context("publish"));
    let refused = client
        .try_subscribe(topic, 0)
        .await
        .expect_err(&context("subscribe"));
    assert_error_frame(&refused, "TOPIC_NOT_FOUND", &context("subscribe"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn republished_message_id_is_acknowledged_but_delivered_once() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let topic = "retries";
    cluster.node(A).create_topic(topic).await;
    let mut subscribers = subscribe_on(cluster.nodes(), topic, 1).await;
    let mut on_a = RestPublisher::new(cluster.node(A), "rest");
    let first = on_a.publish(topic).await.expect("first publish");
    // A client retrying on another node, over REST and over WebSocket.
    let again = RestPublisher::new(cluster.node(B), "retry")
        .republish(topic, &first)
        .await
        .expect("REST retry on B");
    assert_eq!(
        (again.seq, again.duplicate, first.duplicate),
        (first.seq, true, false),
        "a retry is acknowledged with the original seq, as a duplicate"
    );
    let over_websocket = Client::connect(cluster.node(C), "retry")
        .await
        .republish(topic, &first)
        .await
        .expect("WebSocket retry on C");
    assert_eq!(
        (over_websocket.seq, over_websocket.duplicate),
        (first.seq, true),
        "the WebSocket ack says so too"
    );
    let next = on_a.publish(topic).await.expect("next publish");
    expect_events_everywhere(&mut subscribers, topic, 2).await;
    assert_nothing_more(&mut subscribers).await;
    assert_same_stream(&subscribers, &[first, next]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_dedup_window_delivers_a_repeated_id_again() {
    let Some(cluster) = Cluster::spec().node_env("DEDUP_WINDOW", "0s").start().await else {
        return;
    };
    let topic = "retries";
    cluster.node(A).create_topic(topic).await;
    let mut subscribers = subscribe_on(cluster.nodes(), topic, 1).await;
    let first = RestPublisher::new(cluster.node(A), "rest")
        .publish(topic)
        .await
        .expect("first publish");
    let again = RestPublisher::new(cluster.node(B), "retry")
        .republish(topic, &first)
        .await
        .expect("the same message on B");
    assert!(again.seq > first.seq && !again.duplicate, "{again:?}");
    expect_events_everywhere(&mut subscribers, topic, 2).await;
    assert_nothing_more(&mut subscribers).await;
    let both = [
        (first.seq.expect("seq"), first.id.as_str()),
        (again.seq.expect("seq"), first.id.as_str()),
    ];
    for subscriber in &subscribers {
        assert_eq!(summary(&subscriber.received), both);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_and_a_broadcast_on_other_nodes_share_one_dedup_window() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let (orders, audit) = ("orders", "audit");
    cluster.node(A).create_topic(orders).await;
    cluster.node(A).create_topic(audit).await;
    let mut on_orders = subscribe_on(cluster.nodes(), orders, 1).await;
    let mut on_audit = subscribe_on(cluster.nodes(), audit, 1).await;
    let ids: Vec<String> = (0..2).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let batch = json!([{ "id": ids[0], "payload": 0 }, { "id": ids[1], "payload": 1 }]);
    let (status, published) = cluster
        .node(A)
        .post_json(&format!("/topics/{orders}/messages"), &batch)
        .await;
    assert_eq!(status, 200, "{published}");
    let seqs: Vec<u64> = serde_json::from_value(published["seqs"].clone()).unwrap();
    // The batch's second message again, now to both topics, from node B.
    let body = json!({ "topics": [orders, audit], "message": { "id": ids[1], "payload": 1 } });
    let (status, broadcast) = cluster.node(B).post_json("/broadcast", &body).await;
    assert_eq!(status, 200, "{broadcast}");
    assert_eq!(
        broadcast["results"][0],
        json!({ "topic": orders, "seq": seqs[1], "duplicate": true })
    );
    let audit_seq = broadcast["results"][1]["seq"]
        .as_u64()
        .expect("audit's seq");
    assert!(
        broadcast["results"][1].get("duplicate").is_none(),
        "{broadcast}"
    );
    expect_events_everywhere(&mut on_orders, orders, 2).await;
    expect_events_everywhere(&mut on_audit, audit, 1).await;
    assert_nothing_more(&mut on_orders).await;
    assert_nothing_more(&mut on_audit).await;
    for subscriber in &on_orders {
        assert_eq!(
            summary(&subscriber.received),
            [(seqs[0], ids[0].as_str()), (seqs[1], ids[1].as_str())]
        );
    }
    for subscriber in &on_audit {
        assert_eq!(
            summary(&subscriber.received),
            [(audit_seq, ids[1].as_str())]
        );
    }
}

/// The README's example id, which every copy-pasting client sends.
const README_MESSAGE_ID: &str = "550e8400-e29b-41d4-a716-446655440000";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_id_deduplicates_within_its_topic_incarnation_only() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let (first, second) = ("first", "second");
    cluster.node(A).create_topic(first).await;
    cluster.node(A).create_topic(second).await;
    let mut on_first = subscribe_on(cluster.nodes(), first, 1).await;
    let mut on_second = subscribe_on(cluster.nodes(), second, 1).await;
    let mut on_a = RestPublisher::new(cluster.node(A), "rest");
    let mut on_b = RestPublisher::new(cluster.node(B), "retry");

    let original = on_a
        .publish_with_id(first, README_MESSAGE_ID)
        .await
        .expect("publish to the first topic");
    let elsewhere = on_b
        .publish_with_id(second, README_MESSAGE_ID)
        .await
        .expect("the same id to the second topic");
    assert_ne!(
        elsewhere.seq, original.seq,
        "the second topic's publish was taken for a duplicate of the first's"
    );
    let retried = on_b
        .republish(first, &original)
        .await
        .expect("retry to the first topic");
    assert_eq!(retried.seq, original.seq, "a retry gets the original seq");
    expect_events_everywhere(&mut on_first, first, 1).await;
    expect_events_everywhere(&mut on_second, second, 1).await;
    assert_nothing_more(&mut on_first).await;
    assert_nothing_more(&mut on_second).await;
    assert_same_stream(&on_first, &[original]);
    assert_same_stream(&on_second, &[elsewhere]);

    // Deleted and created again, the topic is a new incarnation: the id is
    // new to it.
    let deleted = cluster
        .node(C)
        .delete_json(&format!("/topics/{first}"))
        .await;
    assert_eq!(deleted.0, 200, "{deleted:?}");
    for subscriber in &mut on_first {
        subscriber.expect_topic_deleted(first).await;
    }
    cluster.node(C).create_topic(first).await;
    let mut on_first = subscribe_on(cluster.nodes(), first, 1).await;
    let reborn = on_a
        .publish_with_id(first, README_MESSAGE_ID)
        .await
        .expect("the same id to the topic created again");
    expect_events_everywhere(&mut on_first, first, 1).await;
    assert_nothing_more(&mut on_first).await;
    assert_same_stream(&on_first, &[reborn]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_is_the_same_on_every_node_and_bounded_by_the_ring() {
    const RING: usize = 5;
    let Some(cluster) = Cluster::spec()
        .node_env("RING_BUFFER_SIZE", &RING.to_string())
        .start()
        .await
    else {
        return;
    };
    let topic = "history";
    cluster.node(A).create_topic(topic).await;
    cluster.node(B).create_topic("noise").await;
    // One live subscriber per node: once it has an event, that node has
    // consumed it, so its replay can be compared exactly.
    let mut watchers = subscribe_on(cluster.nodes(), topic, 1).await;
    let mut on_a = Client::connect(cluster.node(A), "pub").await;
    let mut on_b = RestPublisher::new(cluster.node(B), "rest");
    let mut noise = RestPublisher::new(cluster.node(C), "noise");
    let mut acked = Vec::new();
    for round in 1..=4 {
        acked.push(on_a.publish(topic).await.expect("publish on A"));
        // Another topic's event in between: seq has gaps, replay must not
        // pick it up.
        noise.publish("noise").await.expect("publish noise on C");
        acked.push(on_b.publish(topic).await.expect("publish on B"));
        if round == 2 {
            expect_events_everywhere(&mut watchers, topic, 4).await;
            let history = watchers[0].received.clone();
            for node in cluster.nodes() {
                let replayed = replay_on(node, topic, 10).await;
                assert_events_eq(
                    &format!("last_n 10 of 4 on {}", node.label),
                    &replayed,
                    &history,
                );
            }
        }
    }
    expect_events_everywhere(&mut watchers, topic, 4).await;
    assert_same_stream(&watchers, &acked);
    let history = &watchers[0].received;
    for node in cluster.nodes() {
        for last_n in [10, RING, 2, 0] {
            let kept = &history[history.len() - last_n.min(RING)..];
            let replayed = replay_on(node, topic, last_n as u64).await;
            let context = format!(
                "last_n {last_n} of 8 with a ring of {RING} on {}",
                node.label
            );
            assert_events_eq(&context, &replayed, kept);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_node_catches_up_when_restarted() {
    // The restarted node has some 800 events to replay (tens of
    // milliseconds) before it may report healthy; the rings keep them all,
    // so every replay below is the whole history.
    const RING: u64 = 1000;
    let Some(mut cluster) = Cluster::spec()
        .node_env("RING_BUFFER_SIZE", &RING.to_string())
        .start()
        .await
    else {
        return;
    };
    let topic = "survivor";
    cluster.node(A).create_topic(topic).await;
    // Connected to A throughout.
    let mut subscribers = subscribe_on([cluster.node(A)], topic, 1).await;
    let small = Load {
        ws_bursts: 1,
        burst_len: 3,
        rest: 2,
    };
    let mut acked = publish_from([cluster.node(C)], topic, small).await;

    cluster.kill_node(C).await;
    let large = Load {
        ws_bursts: 4,
        burst_len: 100,
        rest: 10,
    };
    acked.extend(publish_from([cluster.node(A), cluster.node(B)], topic, large).await);
    cluster.node(B).create_topic("born-while-c-was-down").await;
    cluster.restart_node(C).await;
    // Healthy means caught up: C replays everything at once.
    let replayed_on_c = replay_on(cluster.node(C), topic, RING).await;

    expect_events_everywhere(&mut subscribers, topic, acked.len()).await;
    assert_same_stream(&subscribers, &acked);
    let history = &subscribers[0].received;
    assert_events_eq(
        "replay on C right after its restart",
        &replayed_on_c,
        history,
    );
    for node in [cluster.node(A), cluster.node(B)] {
        let replayed = replay_on(node, topic, RING).await;
        let context = format!("replay on {} after C's restart", node.label);
        assert_events_eq(&context, &replayed, history);
    }
    for node in cluster.nodes() {
        let what = format!("{} to list both topics", node.label);
        poll_until(&what, CONVERGENCE_DEADLINE, || async {
            match node.topic_names().await.as_slice() {
                [first, second] if first == "born-while-c-was-down" && second == topic => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }

    // Live delivery to and from the restarted node.
    let mut late = Client::connect(cluster.node(C), "late").await;
    late.subscribe(topic, RING).await;
    subscribers.push(late);
    let live = publish_from([cluster.node(C), cluster.node(A)], topic, small).await;
    expect_events_everywhere(&mut subscribers, topic, live.len()).await;
    assert_nothing_more(&mut subscribers).await;
    acked.extend(live);
    assert_same_stream(&subscribers, &acked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_awaiting_nats_at_shutdown_are_answered_before_the_close() {
    if let Some(cluster) = Cluster::start().await {
        assert_answered_before_the_close(cluster).await;
    }
}

/// A `SHUTDOWN_TIMEOUT` shorter than the backplane's 2 s request deadline:
/// the publishes were dropped unanswered with their connections before the
/// node cut their wait short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_awaiting_nats_are_answered_within_a_short_shutdown_timeout() {
    let spec = Cluster::spec().node_env("SHUTDOWN_TIMEOUT", "500ms");
    if let Some(cluster) = spec.start().await {
        assert_answered_before_the_close(cluster).await;
    }
}

/// With NATS frozen, publishes sent to node C and then C stopped: each is
/// answered (ack or `INTERNAL`) before the close frame.
async fn assert_answered_before_the_close(mut cluster: Cluster) {
    const PUBLISHES: usize = 5;
    let topic = "last-words";
    cluster.node(A).create_topic(topic).await;
    let mut publisher = Client::connect(cluster.node(C), "pub").await;
    // With NATS frozen the publishes are sent, and their acks cannot come.
    cluster.pause_nats();
    let (request_ids, _) = publisher.send_publishes(topic, PUBLISHES).await;
    // The pong comes once C has read (and sent on) every publish before it.
    publisher.assert_nothing_pending().await;
    let closing = tokio::spawn(async move { publisher.expect_close(1001).await });
    cluster.stop_node(C).await;
    let before_close = closing.await.expect("the publisher's task");
    cluster.resume_nats();

    let mut answered: Vec<&str> = before_close
        .iter()
        .map(|frame| frame["request_id"].as_str().unwrap_or_default())
        .collect();
    answered.sort_unstable();
    let mut expected: Vec<&str> = request_ids.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(
        answered, expected,
        "one answer per publish before the close: {before_close:?}"
    );
    for frame in &before_close {
        if frame["type"] != "ack" {
            assert_error_frame(frame, "INTERNAL", "a publish answered at shutdown");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_outage_fails_publishes_fast_and_loses_no_acknowledged_event() {
    let Some(mut cluster) = Cluster::start().await else {
        return;
    };
    let topic = "steady";
    cluster.node(A).create_topic(topic).await;
    let mut subscribers = subscribe_on(cluster.nodes(), topic, 1).await;
    let load = Load {
        ws_bursts: 1,
        burst_len: 3,
        rest: 2,
    };
    let mut acked = publish_from(cluster.nodes(), topic, load).await;
    let before_outage = acked.len();
    expect_events_everywhere(&mut subscribers, topic, before_outage).await;
    // Publishers whose connections live through the outage.
    let mut publishers = Vec::new();
    for node in cluster.nodes() {
        publishers.push(Client::connect(node, "steady-pub").await);
    }

    cluster.stop_nats().await;
    for node in cluster.nodes() {
        let what = format!("{} to report the backplane down", node.label);
        poll_until(&what, OUTAGE_DETECTION_DEADLINE, || async {
            match node.health().await {
                (503, health) if health["cluster"]["backplane"] != "connected" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }
    for (publisher, node) in publishers.iter_mut().zip(cluster.nodes()) {
        let started = Instant::now();
        let refused = publisher
            .publish(topic)
            .await
            .expect_err("WebSocket publish acknowledged while NATS is down");
        let took = started.elapsed();
        assert_backplane_unavailable(&refused["error"], &publisher.label);
        assert_error_frame(&refused, "INTERNAL", &publisher.label);
        assert!(
            took < FAIL_FAST,
            "{}: refusal took {took:?}",
            publisher.label
        );

        let mut rest = RestPublisher::new(node, "rest-down");
        let started = Instant::now();
        let refused = rest
            .publish(topic)
            .await
            .expect_err("REST publish acknowledged while NATS is down");
        let took = started.elapsed();
        assert_error_reply(&refused, 503, "INTERNAL", &rest.label);
        assert_backplane_unavailable(&refused.1["error"], &rest.label);
        assert!(took < FAIL_FAST, "{}: refusal took {took:?}", rest.label);

        let created = node.try_create_topic("during-outage").await;
        let context = format!("creating a topic on {} while NATS is down", node.label);
        assert_error_reply(&created, 503, "INTERNAL", &context);
        // The refusals left the connection open and nothing behind.
        publisher.assert_nothing_pending().await;
    }
    assert_nothing_more(&mut subscribers).await;

    cluster.restart_nats().await;
    for node in cluster.nodes() {
        await_healthy_again(node).await;
    }
    for publisher in &mut publishers {
        let label = publisher.label.clone();
        let publish = publisher.publish(topic).await;
        acked.push(publish.unwrap_or_else(|error| panic!("{label} after the outage: {error}")));
    }
    acked.extend(publish_from(cluster.nodes(), topic, load).await);
    expect_events_everywhere(&mut subscribers, topic, acked.len() - before_outage).await;
    assert_nothing_more(&mut subscribers).await;
    assert_same_stream(&subscribers, &acked);
    for node in cluster.nodes() {
        let replayed = replay_on(node, topic, 100).await;
        let context = format!("replay on {} after the outage", node.label);
        assert_events_eq(&context, &replayed, &subscribers[0].received);
    }
}

/// Waits until `node`, back in touch with NATS, is healthy again.
async fn await_healthy_again(node: &Endpoint) {
    let what = format!("{} to be healthy again", node.label);
    poll_until(&what, RECOVERY_DEADLINE, || async {
        match node.health().await {
            (200, health) if health["cluster"]["backplane"] == "connected" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

/// Asserts an `error` object says the backplane is unavailable.
#[track_caller]
fn assert_backplane_unavailable(error: &Value, context: &str) {
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("cluster backplane unavailable"),
        "{context}: {error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_cut_off_from_nats_while_its_ring_overflows_drops_its_subscribers() {
    // C is cut off NATS while A publishes more than a ring's worth: the
    // stream discards events C never read. When it is back it must tell its
    // subscribers, which cannot have every event any more, by closing them
    // as slow consumers; A and B are untouched.
    const RING: usize = 5;
    const ROUNDS: usize = 12;
    let Some(cluster) = Cluster::spec()
        .node_env("RING_BUFFER_SIZE", &RING.to_string())
        .nats_link(C)
        .start()
        .await
    else {
        return;
    };
    let topic = "overrun";
    cluster.node(A).create_topic(topic).await;
    let mut subscribers = subscribe_on(cluster.nodes(), topic, 1).await;
    let mut cut_off = subscribers.pop().expect("C's subscriber");
    let mut on_a = Client::connect(cluster.node(A), "pub").await;
    let mut on_c = Client::connect(cluster.node(C), "pub").await;
    // C must have read an event before the cut: a skip only counts after one.
    let mut acked = vec![on_a.publish(topic).await.expect("publish on A")];
    expect_events_everywhere(&mut subscribers, topic, 1).await;
    cut_off.expect_events(topic, 1).await;

    cluster.cut_nats_link(C);
    let node_c = cluster.node(C);
    poll_until(
        "C to report the backplane down",
        OUTAGE_DETECTION_DEADLINE,
        || async {
            match node_c.health().await {
                (503, health) if health["cluster"]["backplane"] == "disconnected" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let started = Instant::now();
    let refused = on_c
        .publish(topic)
        .await
        .expect_err("publish on C acknowledged while it is cut off");
    let took = started.elapsed();
    assert_error_frame(&refused, "INTERNAL", &on_c.label);
    assert_backplane_unavailable(&refused["error"], &on_c.label);
    assert!(took < FAIL_FAST, "{}: refusal took {took:?}", on_c.label);
    // Many rings' worth, paced so that A and B never fall a ring behind
    // (the stream waits for no follower; a ring is the headroom): each
    // round is read before the next is published.
    let mut during_cut = Vec::new();
    for _ in 0..ROUNDS {
        during_cut.extend(on_a.publish_burst(topic, RING - 1).await);
        expect_events_everywhere(&mut subscribers, topic, RING - 1).await;
    }
    let discarded = during_cut.len() - RING;
    acked.extend(during_cut);
    for node in [cluster.node(A), cluster.node(B)] {
        let (status, health) = node.health().await;
        assert_eq!(status, 200, "{} while C is cut off: {health}", node.label);
    }

    cluster.restore_nats_link(C);
    await_healthy_again(node_c).await;
    // The SLOW_CONSUMER error is best effort; the close code is not.
    let before_close = cut_off.expect_close(1008).await;
    assert!(
        before_close.len() <= 1,
        "{}: {before_close:?}",
        cut_off.label
    );
    for frame in &before_close {
        assert_error_frame(frame, "SLOW_CONSUMER", &cut_off.label);
    }
    for (node, missed, disconnected) in [
        (cluster.node(C), discarded, 1),
        (cluster.node(A), 0, 0),
        (cluster.node(B), 0, 0),
    ] {
        let what = format!("{} to count {missed} events missed", node.label);
        poll_until(&what, CONVERGENCE_DEADLINE, || async {
            let (status, stats) = node.get_json("/stats").await;
            let counts = (
                status,
                &stats["backplane_events_missed"],
                &stats["slow_consumer_disconnects"],
            );
            match counts == (200, &json!(missed), &json!(disconnected)) {
                true => Ok(()),
                false => Err(format!("{status} {stats}")),
            }
        })
        .await;
    }

    // Caught up: C's ring holds what A's does (the consumer delivers what
    // the stream kept right after the reconnect, so allow it a moment).
    let ring_on_a = replay_on(cluster.node(A), topic, RING as u64).await;
    let history = &subscribers[0].received;
    assert_events_eq(
        "the ring on A",
        &ring_on_a,
        &history[history.len() - RING..],
    );
    let give_up = Instant::now() + CONVERGENCE_DEADLINE;
    let late = loop {
        let mut late = Client::connect(node_c, "late").await;
        let replayed = late.subscribe(topic, RING as u64).await;
        if replayed == ring_on_a || Instant::now() >= give_up {
            assert_events_eq("the ring on C after the cut", &replayed, &ring_on_a);
            break late;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    subscribers.push(late);

    // Live delivery again, from and to C; A's and B's subscribers stayed.
    acked.push(
        on_c.publish(topic)
            .await
            .expect("publish on C after the cut"),
    );
    acked.push(
        on_a.publish(topic)
            .await
            .expect("publish on A after the cut"),
    );
    expect_events_everywhere(&mut subscribers, topic, 2).await;
    assert_nothing_more(&mut subscribers).await;
    let (stayed, late) = subscribers.split_at(2);
    assert_same_stream(stayed, &acked);
    let history = &stayed[0].received;
    assert_events_eq(
        "the late subscriber on C",
        &late[0].received,
        &history[history.len() - RING - 2..],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_incarnations_the_registry_never_had_do_not_stall_the_others() {
    // Any NATS client can write to the event subjects. The follower waited
    // up to 2 s for the registry to reach each of these incarnations, so
    // the real event behind them took BOGUS × 2 s, far past the subscribers'
    // deadline; skipped at once, it arrives as fast as ever.
    const BOGUS: u64 = 20;
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let topic = "steady";
    cluster.node(A).create_topic(topic).await;
    let mut subscribers = subscribe_on(cluster.nodes(), topic, 1).await;
    let jetstream = cluster.jetstream().await;
    for i in 0..BOGUS {
        // The live topic's name, and a name no topic has.
        let name = if i % 2 == 0 { topic } else { "nobody" };
        let subject = format!("ringcast.events.{name}.{}", u64::MAX - i);
        let stored = jetstream
            .publish(subject, r#"{"bogus":true}"#.into())
            .await
            .expect("sending a bogus event");
        stored.await.expect("storing a bogus event");
    }
    let acked = RestPublisher::new(cluster.node(B), "rest")
        .publish(topic)
        .await
        .expect("publish behind the bogus events");
    expect_events_everywhere(&mut subscribers, topic, 1).await;
    assert_nothing_more(&mut subscribers).await;
    assert_same_stream(&subscribers, &[acked]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_behind_haproxy_get_every_event_once_in_one_order() {
    const SUBSCRIBERS: usize = 30;
    let Some(cluster) = Cluster::spec().behind_haproxy().start().await else {
        return;
    };
    let proxy = cluster.proxy();
    let (status, health) = proxy.health().await;
    assert_eq!(status, 200, "/health through HAProxy: {health}");
    assert_eq!(health["cluster"]["backplane"], "connected", "{health}");
    let topic = "lobby";
    proxy.create_topic(topic).await;
    let mut subscribers = subscribe_on([proxy], topic, SUBSCRIBERS).await;

    // The nodes are asked directly only to see where HAProxy put the
    // subscribers: leastconn must have spread them.
    let mut connections = Vec::new();
    for node in cluster.nodes() {
        let (_, health) = node.health().await;
        let count = health["connections"]
            .as_u64()
            .unwrap_or_else(|| panic!("{}: connections: {health}", node.label));
        connections.push(count);
    }
    assert_eq!(
        connections.iter().sum::<u64>(),
        SUBSCRIBERS as u64,
        "connections per node: {connections:?}"
    );
    assert!(
        connections.iter().filter(|&&count| count > 0).count() >= 2,
        "HAProxy did not spread the subscribers: {connections:?}"
    );

    let load = Load {
        ws_bursts: 2,
        burst_len: 5,
        rest: 5,
    };
    let acked = publish_from([proxy, proxy], topic, load).await;
    expect_events_everywhere(&mut subscribers, topic, acked.len()).await;
    assert_nothing_more(&mut subscribers).await;
    assert_same_stream(&subscribers, &acked);

    // A browser's key travels in the query string; the proxy's log must
    // not keep it.
    proxy.get_json("/stats?api_key=never-logged").await;
    poll_until(
        "HAProxy to log GET /stats",
        CONVERGENCE_DEADLINE,
        || async {
            let log = cluster.proxy_log();
            if log.contains("\"GET /stats HTTP/1.1\"") {
                Ok(())
            } else {
                Err(log)
            }
        },
    )
    .await;
    assert!(!cluster.proxy_log().contains("never-logged"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_resumes_on_any_node_with_no_gap_and_no_duplicate() {
    let Some(mut cluster) = Cluster::spec()
        .node_env("RING_BUFFER_SIZE", "100")
        .behind_haproxy()
        .start()
        .await
    else {
        return;
    };
    let topic = "resumable";
    cluster.node(A).create_topic(topic).await;
    cluster.node(B).create_topic("noise").await;
    // Connected to A throughout: what a subscriber that never left saw.
    let mut reference = subscribe_on([cluster.node(A)], topic, 1).await;
    let mut away = Client::connect(cluster.node(A), "away").await;
    let (ack, replayed) = away.resume(topic, 0, None).await;
    assert_eq!((&ack["recovered"], &ack["seq"]), (&json!(true), &json!(0)));
    assert!(replayed.is_empty(), "{replayed:?}");
    let epoch = ack["epoch"].clone();
    for node in cluster.nodes().chain([cluster.proxy()]) {
        let (_, history) = node.get_json(&format!("/topics/{topic}/messages")).await;
        assert_eq!(history["epoch"], epoch, "the epoch on {}", node.label);
    }

    let load = Load {
        ws_bursts: 1,
        burst_len: 5,
        rest: 3,
    };
    let mut acked = publish_from([cluster.node(A), cluster.node(B)], topic, load).await;
    let mut noise = RestPublisher::new(cluster.node(A), "noise");
    noise.publish("noise").await.expect("noise on A");
    away.expect_events(topic, acked.len()).await;
    let last_seen = away.received.last().expect("events").seq;
    drop(away);

    // Meanwhile C restarts, and publishes go on through B (with another
    // topic's events between, so seqs have gaps).
    cluster.kill_node(C).await;
    let mut on_b = RestPublisher::new(cluster.node(B), "on-b");
    for _ in 0..6 {
        acked.push(on_b.publish(topic).await.expect("publish on B"));
        noise.publish("noise").await.expect("noise on A");
    }
    cluster.restart_node(C).await;
    expect_events_everywhere(&mut reference, topic, acked.len()).await;
    let missed: Vec<Event> = reference[0]
        .received
        .iter()
        .filter(|event| event.seq > last_seen)
        .cloned()
        .collect();
    assert_eq!(missed.len(), 6, "{:?}", summary(&reference[0].received));

    for endpoint in [cluster.node(C), cluster.proxy()] {
        let mut resumed = Client::connect(endpoint, "resumed").await;
        let (ack, replayed) = resumed.resume(topic, last_seen, Some(&epoch)).await;
        let context = format!("resumed on {}", endpoint.label);
        assert_eq!(ack["recovered"], true, "{context}: {ack}");
        assert_eq!(ack["epoch"], epoch, "{context}: {ack}");
        assert_events_eq(&context, &replayed, &missed);
        reference.push(resumed);
    }
    let live = publish_from([cluster.node(B)], topic, load).await;
    expect_events_everywhere(&mut reference, topic, live.len()).await;
    assert_nothing_more(&mut reference).await;
    let resumed_len = missed.len() + live.len();
    acked.extend(live);
    assert_same_stream(&reference[..1], &acked);
    let seen = &reference[0].received;
    let tail = &seen[seen.len() - resumed_len..];
    for resumed in &reference[1..] {
        assert_events_eq(&resumed.label, &resumed.received, tail);
    }
}

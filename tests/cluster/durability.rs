//! Cluster durability (`CLUSTER_STREAM_REPLICAS`, contract section
//! "Cluster durability"): a replica count NATS cannot place stops a node at
//! start; with three clustered nats-servers and three replicas, losing a
//! NATS server or a ringcast node loses no acknowledged event.

use std::time::Duration;

use serde_json::json;

use crate::harness::*;

/// Every stream ringcast creates.
const STREAMS: [&str; 3] = ["RINGCAST", "KV_ringcast-topics", "KV_ringcast-nodes"];
/// Deep enough that every node's replay holds a test's whole history.
const RING: &str = "1000";
/// How long a node's follower may take to catch up after a NATS server
/// died: the watchdog's few seconds, with room for a busy machine.
const FOLLOWER_RECOVERY_DEADLINE: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_replicas_than_nats_can_place_stop_the_node_at_start() {
    let Some((status, log)) = lone_node_exit(&[("CLUSTER_STREAM_REPLICAS", "3")]).await else {
        return;
    };
    assert!(!status.success(), "exited with {status}; log:\n{log}");
    let error = log
        .lines()
        .find(|line| line.contains("ERROR"))
        .unwrap_or_else(|| panic!("no error logged:\n{log}"));
    assert!(
        error.contains("CLUSTER_STREAM_REPLICAS=3") && error.contains("cannot place"),
        "the error names neither the setting nor the cause: {error}"
    );
}

/// Three ringcast nodes on three clustered nats-servers, every stream with
/// three replicas (asserted).
async fn replicated_cluster() -> Option<Cluster> {
    let cluster = Cluster::spec()
        .nats_cluster()
        .node_env("CLUSTER_STREAM_REPLICAS", "3")
        .node_env("RING_BUFFER_SIZE", RING)
        .start()
        .await?;
    assert_replicas(&cluster, 3).await;
    Some(cluster)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_found_with_fewer_replicas_are_raised_and_never_lowered() {
    let Some(mut cluster) = Cluster::spec().nats_cluster().start().await else {
        return;
    };
    assert_replicas(&cluster, 1).await;
    cluster.stop_node(A).await;
    cluster.set_node_env(A, "CLUSTER_STREAM_REPLICAS", "3");
    cluster.restart_node(A).await;
    assert_replicas(&cluster, 3).await;
    // B still asks for one replica: it leaves three.
    cluster.stop_node(B).await;
    cluster.restart_node(B).await;
    assert_replicas(&cluster, 3).await;
    // Right after the raise JetStream is still moving the streams, and
    // refuses writes to them.
    for stream in STREAMS {
        cluster.await_replicas_current(stream).await;
    }
    let topic = "raised";
    cluster.node(B).create_topic(topic).await;
    let mut subscribers = subscribe_on([cluster.node(A)], topic, 1).await;
    let mut publisher = RestPublisher::new(cluster.node(B), "rest");
    let acked = vec![publisher.publish(topic).await.expect("publish on B")];
    expect_events_everywhere(&mut subscribers, topic, 1).await;
    assert_same_stream(&subscribers, &acked);
}

/// Asserts every stream ringcast created has `replicas` replicas.
async fn assert_replicas(cluster: &Cluster, replicas: usize) {
    let jetstream = cluster.jetstream().await;
    for stream in STREAMS {
        let info = jetstream.get_stream(stream).await.expect("stream info");
        assert_eq!(info.cached_info().config.num_replicas, replicas, "{stream}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_nats_server_leading_the_stream_loses_no_acknowledged_event() {
    let Some(mut cluster) = replicated_cluster().await else {
        return;
    };
    let topic = "through-a-crash";
    create_topic_everywhere(&cluster, topic).await;
    let mut subscribers = subscribe_on([cluster.node(B)], topic, 1).await;
    let mut publisher = PublisherTask::start(cluster.node(A), "pub", topic).await;
    publisher.await_more_acks(20).await;

    // Every replica caught up first: in one CI run the leader, killed 66 ms
    // after it was elected, left the other two without a new leader for
    // over 12 s (nats-server 2.9), an outage of NATS's own.
    cluster.await_replicas_current("RINGCAST").await;
    let leader = cluster.stream_leader("RINGCAST").await;
    cluster.kill_nats_server(leader).await;
    // Publishing goes on once a new leader is elected.
    publisher.await_more_acks(30).await;
    let log = publisher.stop().await;
    let refused_at = &log.refused_at;
    if let (Some(first), Some(last)) = (refused_at.first(), refused_at.last()) {
        let outage = *last - *first;
        assert!(
            outage <= PUBLISH_OUTAGE_LIMIT,
            "publishes refused over {outage:?} in all ({} refusals)",
            refused_at.len()
        );
    }
    assert_nothing_acknowledged_lost(&cluster, topic, &log, &mut subscribers).await;
    // C reads the streams' identity again, from the new leader.
    cluster.kill_node(C).await;
    cluster.restart_node(C).await;
    assert_same_epoch_everywhere(&cluster, topic).await;
}

/// Creates `topic` on A; every node must report the same epoch for it.
/// (The nodes, started together, raced to create the streams, and their
/// epochs differed now and then while a stream's identity was the creation
/// time each node was told.)
async fn create_topic_everywhere(cluster: &Cluster, topic: &str) {
    cluster.node(A).create_topic(topic).await;
    assert_same_epoch_everywhere(cluster, topic).await;
}

/// Asserts every node reports the same epoch for `topic`.
async fn assert_same_epoch_everywhere(cluster: &Cluster, topic: &str) {
    let mut epochs = Vec::new();
    for node in cluster.nodes() {
        let (status, history) = node.get_json(&format!("/topics/{topic}/messages")).await;
        assert_eq!(status, 200, "{}: {history}", node.label);
        epochs.push((node.label.clone(), history["epoch"].clone()));
    }
    assert!(
        epochs.iter().all(|(_, epoch)| *epoch == epochs[0].1),
        "{epochs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_resumes_on_another_node_after_its_node_is_killed() {
    let Some(mut cluster) = replicated_cluster().await else {
        return;
    };
    let topic = "node-crash";
    create_topic_everywhere(&cluster, topic).await;
    // Connected to A throughout: what a subscriber that never left saw.
    let mut reference = subscribe_on([cluster.node(A)], topic, 1).await;
    let mut away = Client::connect(cluster.node(C), "away").await;
    let (ack, _) = away.resume(topic, 0, None).await;
    let epoch = ack["epoch"].clone();
    let mut publisher = PublisherTask::start(cluster.node(A), "pub", topic).await;
    publisher.await_more_acks(10).await;
    away.expect_events(topic, 5).await;
    let last_seen = away.received.last().expect("events").seq;

    cluster.kill_node(C).await;
    drop(away);
    // A goes on acknowledging while C is dead and before the resume.
    publisher.await_more_acks(20).await;
    let mut resumed = Client::connect(cluster.node(B), "resumed").await;
    let (ack, _) = resumed.resume(topic, last_seen, Some(&epoch)).await;
    assert_eq!(
        (&ack["recovered"], &ack["epoch"]),
        (&json!(true), &epoch),
        "{ack}"
    );
    publisher.await_more_acks(10).await;
    let log = publisher.stop().await;

    expect_events_everywhere(&mut reference, topic, log.acked.len()).await;
    assert_same_stream(&reference, &log.acked);
    let after_last_seen: Vec<Event> = (reference[0].received.iter())
        .filter(|event| event.seq > last_seen)
        .cloned()
        .collect();
    let still_to_come = after_last_seen.len() - resumed.received.len();
    resumed.expect_events(topic, still_to_come).await;
    assert_nothing_more(std::slice::from_mut(&mut resumed)).await;
    assert_events_eq("resumed on B", &resumed.received, &after_last_seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_nats_server_rejoins_and_nothing_acknowledged_is_lost() {
    let Some(mut cluster) = replicated_cluster().await else {
        return;
    };
    let topic = "through-a-restart";
    create_topic_everywhere(&cluster, topic).await;
    let mut subscribers = subscribe_on([cluster.node(B), cluster.node(C)], topic, 1).await;
    let mut publisher = PublisherTask::start(cluster.node(A), "pub", topic).await;
    publisher.await_more_acks(20).await;

    let restarted = cluster.stream_leader("RINGCAST").await;
    cluster.kill_nats_server(restarted).await;
    publisher.await_more_acks(20).await;
    cluster.restart_nats_server(restarted).await;
    cluster.await_replicas_current("RINGCAST").await;
    publisher.await_more_acks(20).await;
    // With another server down, the restarted one is needed for every
    // write: publishing resumes only if it rejoined with the data.
    let other = (0..3).find(|&i| i != restarted).expect("three servers");
    cluster.kill_nats_server(other).await;
    publisher.await_more_acks(20).await;
    let log = publisher.stop().await;
    assert_nothing_acknowledged_lost(&cluster, topic, &log, &mut subscribers).await;
}

/// Asserts every subscriber received each event the publisher got
/// acknowledged once and in order, and every node replays them all.
async fn assert_nothing_acknowledged_lost(
    cluster: &Cluster,
    topic: &str,
    log: &PublisherLog,
    subscribers: &mut [Client],
) {
    expect_events_everywhere(subscribers, topic, log.acked.len()).await;
    assert_nothing_more(subscribers).await;
    assert_same_stream(subscribers.iter(), &log.acked);
    assert_replayed_everywhere(cluster, topic, &subscribers[0].received).await;
}

/// Asserts every node replays `history`, all of the topic's events, once
/// it has read them all: a node whose follower stalled when the stream's
/// leader died gets there only after its watchdog fired.
async fn assert_replayed_everywhere(cluster: &Cluster, topic: &str, history: &[Event]) {
    let ring = RING.parse().expect("a number");
    for node in cluster.nodes() {
        let what = format!("{} to replay {} events", node.label, history.len());
        poll_until(&what, FOLLOWER_RECOVERY_DEADLINE, || async {
            match replay_on(node, topic, ring).await.len() {
                replayed if replayed >= history.len() => Ok(()),
                replayed => Err(format!("{replayed} events")),
            }
        })
        .await;
        let replayed = replay_on(node, topic, ring).await;
        let context = format!("replay on {}", node.label);
        assert_events_eq(&context, &replayed, history);
    }
}

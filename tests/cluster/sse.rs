//! Server-sent events in cluster mode: a stream's cursor, taken on one
//! node, resumes on another (the epoch is the cluster's), with no gap and
//! no duplicate.

use serde_json::json;

use crate::common::message_body;
use crate::common::sse::SseClient;
use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_taken_on_one_node_resumes_on_another() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let topic = "sse-resume";
    cluster.node(A).create_topic(topic).await;
    let query = format!("topic={topic}");
    let publisher = cluster.node(C);
    let publish = |n: u64| async move {
        let (status, body) = publisher
            .post_json(
                &format!("/topics/{topic}/messages"),
                &message_body(json!(n)),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    };
    let mut first = SseClient::open(cluster.node(A).sse(&query, None).await).await;
    let joined = first.subscribed().await;
    for n in 1..=5 {
        publish(n).await;
    }
    let mut cursor = String::new();
    for seq in 1..=3 {
        let (id, event) = first.event().await;
        assert_eq!(event["seq"], seq);
        cursor = id;
    }
    drop(first);
    for n in 6..=8 {
        publish(n).await;
    }
    let mut resumed = SseClient::open(cluster.node(B).sse(&query, Some(&cursor)).await).await;
    let rejoined = resumed.subscribed().await;
    assert_eq!(rejoined[topic]["epoch"], joined[topic]["epoch"]);
    assert_eq!(rejoined[topic]["recovered"], true, "{rejoined:?}");
    for seq in 4..=8 {
        assert_eq!(resumed.event().await.1["seq"], seq);
    }
}

//! Cluster durability (`CLUSTER_STREAM_REPLICAS`): a replica count NATS
//! cannot place stops a node at start.

use crate::harness::*;

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

//! `GET /metrics`: the Prometheus text exposition over a real server, after
//! real traffic: the contract's names, what the counters say, the
//! breakdowns by cause, code and reason, the histograms, `METRICS_PER_TOPIC`
//! and the key.

use std::collections::HashMap;

use crate::common::*;
use serde_json::json;

const OP_TEXT: u8 = 0x1;
/// A receive buffer small enough that a reader that stops reading stalls
/// the writer after a few large events.
const STALLED_RECV_BUFFER: u32 = 4096;

/// One scrape: each series (name and labels, as written) and its value.
type Scrape = HashMap<String, f64>;

async fn scrape(server: &TestServer) -> Scrape {
    let response = server
        .http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    parse_exposition(&response.text().await.unwrap())
}

fn parse_exposition(text: &str) -> Scrape {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("not a sample line: {line}"));
            let value = value
                .parse()
                .unwrap_or_else(|_| panic!("not a number: {line}"));
            (series.to_owned(), value)
        })
        .collect()
}

#[track_caller]
fn value(scrape: &Scrape, series: &str) -> f64 {
    *scrape
        .get(series)
        .unwrap_or_else(|| panic!("no series {series} in the scrape: {scrape:?}"))
}

#[tokio::test]
async fn the_contracts_metrics_count_real_traffic() {
    const EVENTS: u64 = 20;
    let server = TestServer::start(&[]).await;
    server.create_topic("orders").await;
    let mut subscriber = server.ws().await;
    subscribe(&mut subscriber, "orders", 0).await;
    let mut publisher = server.ws().await;
    for n in 1..=EVENTS {
        publish_acked(&mut publisher, "orders", json!(n), &format!("p{n}")).await;
    }
    for _ in 1..=EVENTS {
        assert_eq!(recv(&mut subscriber).await["type"], "event");
    }
    let missing = server
        .post_json("/topics/nope/messages", &message_body(json!(1)))
        .await;
    assert_eq!(missing.0, 404);
    send(
        &mut publisher,
        publish_frame("nope", json!(1), "missing-over-ws"),
    )
    .await;
    expect_error(
        &mut publisher,
        "TOPIC_NOT_FOUND",
        Some("missing-over-ws"),
        "ws publish",
    )
    .await;
    let plain_get = server.http.get(server.ws_url().replace("ws://", "http://"));
    assert_eq!(plain_get.send().await.unwrap().status(), 426);

    let metrics = scrape(&server).await;
    assert!(
        metrics.keys().all(|series| series.starts_with("ringcast_")),
        "{metrics:?}"
    );
    for (series, expected) in [
        ("ringcast_connections", 2.0),
        ("ringcast_subscriptions", 1.0),
        ("ringcast_topics", 1.0),
        ("ringcast_events_published_total", EVENTS as f64),
        ("ringcast_events_delivered_total", EVENTS as f64),
        ("ringcast_slow_consumer_disconnects_total", 0.0),
        ("ringcast_events_dropped_total", 0.0),
        ("ringcast_connections_opened_total", 2.0),
        ("ringcast_fan_out_duration_seconds_count", EVENTS as f64),
        (
            r#"ringcast_publish_errors_total{code="TOPIC_NOT_FOUND"}"#,
            2.0,
        ),
        (r#"ringcast_publish_errors_total{code="BAD_REQUEST"}"#, 0.0),
        (
            r#"ringcast_websocket_upgrades_refused_total{reason="not_an_upgrade"}"#,
            1.0,
        ),
        (r#"ringcast_build_info{version="0.1.0"}"#, 1.0),
    ] {
        assert_eq!(value(&metrics, series), expected, "{series}");
    }
    // Every event, ack, reply and pong went out in some write.
    let frames = value(&metrics, "ringcast_frames_written_total");
    assert!(frames >= (2 * EVENTS + 2) as f64, "{frames} frames written");
    assert_eq!(value(&metrics, "ringcast_frames_per_write_sum"), frames);
    let writes = value(&metrics, "ringcast_frames_per_write_count");
    assert!(writes >= 1.0 && writes <= frames, "{writes} writes");
    assert_eq!(
        value(&metrics, r#"ringcast_frames_per_write_bucket{le="+Inf"}"#),
        writes
    );
    assert_eq!(
        value(&metrics, "ringcast_subscriber_queue_depth_count"),
        writes,
        "one depth sample per write"
    );
    assert!(value(&metrics, "ringcast_bytes_written_total") > frames);
    assert!(
        !metrics
            .keys()
            .any(|series| series.starts_with("ringcast_topic_")),
        "per-topic series without METRICS_PER_TOPIC"
    );
    assert!(
        !metrics
            .keys()
            .any(|series| series.starts_with("ringcast_cluster_")),
        "cluster series on a single node"
    );
    server.stop().await;
}

#[tokio::test]
async fn slow_consumer_cuts_are_counted_by_cause() {
    const SIZE: usize = 64 * 1024;
    for (cause, flags) in [
        (
            "queue_events",
            ["--subscriber-queue-size", "4", "--write-timeout", "60s"],
        ),
        (
            "queue_bytes",
            [
                "--subscriber-queue-bytes",
                "256KiB",
                "--write-timeout",
                "60s",
            ],
        ),
        (
            "write_timeout",
            [
                "--subscriber-queue-bytes",
                "1GiB",
                "--write-timeout",
                "300ms",
            ],
        ),
    ] {
        let server = TestServer::start(&flags).await;
        server.create_topic("slow").await;
        let mut stalled = RawClient::connect_with_recv_buffer(&server, STALLED_RECV_BUFFER).await;
        let request = json!({ "type": "subscribe", "topic": "slow", "request_id": "s" });
        stalled
            .send_frame(OP_TEXT, true, request.to_string().as_bytes())
            .await;
        assert_ack(&stalled.read_json().await, "slow", "s");
        let mut publisher = server.ws().await;
        for n in 1..=200 {
            publish_acked(&mut publisher, "slow", padded_payload(n, SIZE), "p").await;
            if server.subscribers_of("slow").await == Some(0) {
                break;
            }
        }
        server.wait_for_subscribers("slow", 0).await;
        let metrics = scrape(&server).await;
        assert_eq!(
            value(&metrics, "ringcast_slow_consumer_disconnects_total"),
            1.0,
            "{cause}"
        );
        for other in [
            "queue_events",
            "queue_bytes",
            "write_timeout",
            "backplane_gap",
        ] {
            let series =
                format!(r#"ringcast_slow_consumer_disconnects_by_cause_total{{cause="{other}"}}"#);
            let expected = if other == cause { 1.0 } else { 0.0 };
            assert_eq!(value(&metrics, &series), expected, "{cause}: {series}");
        }
        server.stop().await;
    }
}

#[tokio::test]
async fn per_topic_series_only_behind_the_flag() {
    let server = TestServer::start(&["--metrics-per-topic"]).await;
    server.create_topic("orders").await;
    server.create_topic("news").await;
    let mut subscriber = server.ws().await;
    subscribe(&mut subscriber, "orders", 0).await;
    let published = server
        .post_json("/topics/orders/messages", &message_body(json!(1)))
        .await;
    assert_eq!(published.0, 200, "{}", published.1);
    let metrics = scrape(&server).await;
    for (series, expected) in [
        (r#"ringcast_topic_subscribers{topic="orders"}"#, 1.0),
        (r#"ringcast_topic_subscribers{topic="news"}"#, 0.0),
        (
            r#"ringcast_topic_events_published_total{topic="orders"}"#,
            1.0,
        ),
        (
            r#"ringcast_topic_events_published_total{topic="news"}"#,
            0.0,
        ),
    ] {
        assert_eq!(value(&metrics, series), expected, "{series}");
    }
    server.stop().await;
}

#[tokio::test]
async fn metrics_need_a_key_when_keys_are_set() {
    let server = TestServer::start(&["--api-key", "k1"]).await;
    let url = server.url("/metrics");
    let refused = server.http.get(&url).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    for (header, credential) in [("X-API-Key", "k1"), ("Authorization", "Bearer k1")] {
        let response = server
            .http
            .get(&url)
            .header(header, credential)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{header}");
        let metrics = parse_exposition(&response.text().await.unwrap());
        assert_eq!(
            value(&metrics, "ringcast_auth_failures_total"),
            1.0,
            "{header}"
        );
    }
    server.stop().await;
}

//! API-key authentication: REST requests need `X-API-Key`, the WebSocket
//! upgrade takes the header or `?api_key=`, and no keys means no auth.

use crate::common::*;
use reqwest::Method;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Error as WsError;

const KEYED: [&str; 2] = ["--api-key", "k1,k2"];

/// One REST request with an optional `X-API-Key` and JSON body.
async fn rest(
    server: &TestServer,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut builder = server.http.request(method, server.url(path));
    if let Some(key) = key {
        builder = builder.header("X-API-Key", key);
    }
    if let Some(body) = body {
        builder = builder.json(&body);
    }
    json_reply(builder.send().await.expect("http request")).await
}

/// Every kind of REST request other than `GET /health`.
fn protected_requests() -> Vec<(Method, &'static str, Option<Value>)> {
    let message = message_body(json!(1));
    vec![
        (Method::GET, "/topics", None),
        (Method::POST, "/topics", Some(json!({ "name": "fresh" }))),
        (Method::DELETE, "/topics/orders", None),
        (Method::POST, "/topics/orders/messages", Some(message)),
        (Method::GET, "/topics/orders/messages", None),
        (Method::GET, "/stats", None),
        (Method::POST, "/health", None),
        (Method::GET, "/nowhere", None),
    ]
}

/// Opens `/ws` (plus `suffix`, e.g. a query) with an optional key header.
async fn connect(server: &TestServer, suffix: &str, key: Option<&str>) -> Result<Ws, WsError> {
    let mut request = format!("{}{suffix}", server.ws_url())
        .into_client_request()
        .unwrap();
    if let Some(key) = key {
        request
            .headers_mut()
            .insert("X-API-Key", key.parse().unwrap());
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(ws, _)| ws)
}

/// Asserts the upgrade was refused with HTTP 401 before upgrading.
#[track_caller]
fn assert_refused(result: Result<Ws, WsError>, context: &str) {
    match result {
        Ok(_) => panic!("{context}: upgrade was accepted"),
        Err(WsError::Http(response)) => {
            assert_eq!(response.status().as_u16(), 401, "{context}");
            if let Some(body) = response.body() {
                let body: Value = serde_json::from_slice(body).expect("401 body is JSON");
                assert_eq!(body["error"]["code"], "UNAUTHORIZED", "{context}: {body}");
            }
        }
        Err(other) => panic!("{context}: expected HTTP 401, got {other:?}"),
    }
}

#[tokio::test]
async fn rest_without_a_valid_key_is_401() {
    let server = TestServer::start(&KEYED).await;
    assert_eq!(
        rest(
            &server,
            Method::POST,
            "/topics",
            Some("k1"),
            Some(json!({ "name": "orders" }))
        )
        .await
        .0,
        201
    );
    let wrong_keys = [
        None,
        Some("wrong"),
        Some(""),
        Some("k"),
        Some("k1x"),
        Some("K1"),
        Some("k1,k2"),
    ];
    for (method, path, body) in protected_requests() {
        for key in wrong_keys {
            let reply = rest(&server, method.clone(), path, key, body.clone()).await;
            assert_error_reply(
                &reply,
                401,
                "UNAUTHORIZED",
                &format!("{method} {path} with key {key:?}"),
            );
        }
    }
    // REST does not take the key from the query string.
    let (status, reply) = rest(&server, Method::GET, "/topics?api_key=k1", None, None).await;
    assert_eq!(status, 401, "{reply}");
    // Nothing the refused requests asked for happened.
    let (status, stats) = rest(&server, Method::GET, "/stats", Some("k2"), None).await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(
        stats["topics"],
        json!({ "orders": { "messages": 0, "subscribers": 0 } })
    );
    server.stop().await;
}

#[tokio::test]
async fn both_keys_work_for_rest() {
    let server = TestServer::start(&KEYED).await;
    let message = message_body(json!("hi"));
    let steps = [
        (
            Method::POST,
            "/topics",
            "k1",
            Some(json!({ "name": "orders" })),
            201,
        ),
        (
            Method::POST,
            "/topics",
            "k2",
            Some(json!({ "name": "prices" })),
            201,
        ),
        (Method::GET, "/topics", "k2", None, 200),
        (
            Method::POST,
            "/topics/orders/messages",
            "k2",
            Some(message.clone()),
            200,
        ),
        (
            Method::POST,
            "/topics/orders/messages",
            "k1",
            Some(message),
            200,
        ),
        (Method::GET, "/stats", "k1", None, 200),
        (Method::DELETE, "/topics/prices", "k2", None, 200),
        (Method::DELETE, "/topics/orders", "k1", None, 200),
        (Method::GET, "/nowhere", "k1", None, 404),
        (Method::PUT, "/topics", "k2", None, 405),
    ];
    for (method, path, key, body, expected) in steps {
        let (status, reply) = rest(&server, method.clone(), path, Some(key), body).await;
        assert_eq!(status, expected, "{method} {path} with {key}: {reply}");
    }
    let (_, topics) = rest(&server, Method::GET, "/topics", Some("k1"), None).await;
    assert_eq!(topics, json!({ "topics": [] }));
    server.stop().await;
}

#[tokio::test]
async fn health_needs_no_key() {
    let server = TestServer::start(&KEYED).await;
    for key in [None, Some("k1"), Some("wrong")] {
        let (status, body) = rest(&server, Method::GET, "/health", key, None).await;
        assert_eq!(status, 200, "key {key:?}: {body}");
        assert!(
            body["uptime_sec"].is_u64() && body["topics"].is_u64() && body["subscribers"].is_u64(),
            "{body}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn ws_upgrade_without_a_valid_key_is_401() {
    let server = TestServer::start(&KEYED).await;
    assert_refused(connect(&server, "", None).await, "no key");
    assert_refused(connect(&server, "", Some("wrong")).await, "wrong header");
    assert_refused(
        connect(&server, "", Some("k1k2")).await,
        "concatenated keys",
    );
    assert_refused(
        connect(&server, "?api_key=wrong", None).await,
        "wrong query key",
    );
    assert_refused(connect(&server, "?api_key=", None).await, "empty query key");
    assert_refused(
        connect(&server, "?apikey=k1", None).await,
        "misspelled query parameter",
    );
    // A refused upgrade creates no connection and no subscription.
    let (_, health) = server.get_json("/health").await;
    assert_eq!(health["subscribers"], 0, "{health}");
    server.stop().await;
}

#[tokio::test]
async fn ws_upgrade_accepts_either_key_in_header_or_query() {
    let server = TestServer::start(&KEYED).await;
    let (status, _) = rest(
        &server,
        Method::POST,
        "/topics",
        Some("k1"),
        Some(json!({ "name": "orders" })),
    )
    .await;
    assert_eq!(status, 201);
    let mut by_header = connect(&server, "", Some("k1"))
        .await
        .expect("header k1 accepted");
    let mut by_header2 = connect(&server, "", Some("k2"))
        .await
        .expect("header k2 accepted");
    let mut by_query = connect(&server, "?api_key=k2", None)
        .await
        .expect("query k2 accepted");
    let mut by_query2 = connect(&server, "?x=1&api_key=k1", None)
        .await
        .expect("query k1 among others accepted");
    for (ws, id) in [
        (&mut by_header, "h1"),
        (&mut by_header2, "h2"),
        (&mut by_query, "q2"),
        (&mut by_query2, "q1"),
    ] {
        ping_pong(ws, id).await;
    }
    // An authenticated socket works end to end.
    subscribe(&mut by_query, "orders", 0).await;
    publish_acked(&mut by_header, "orders", json!({ "ok": true }), "pub").await;
    let event = recv(&mut by_query).await;
    assert_eq!(
        (&event["type"], &event["message"]["payload"]),
        (&json!("event"), &json!({ "ok": true })),
        "{event}"
    );
    server.stop().await;
}

#[tokio::test]
async fn ws_path_checks_the_key_before_the_upgrade_headers() {
    let server = TestServer::start(&KEYED).await;
    let reply = rest(&server, Method::GET, "/ws", None, None).await;
    assert_error_reply(&reply, 401, "UNAUTHORIZED", "GET /ws without a key");
    let (status, body) = rest(&server, Method::GET, "/ws", Some("k2"), None).await;
    assert_eq!(status, 426, "{body}");
    server.stop().await;
}

#[tokio::test]
async fn without_api_keys_everything_is_open() {
    let server = TestServer::start(&[]).await;
    for key in [None, Some("anything")] {
        let name = format!("t{}", key.is_some() as u8);
        let (status, body) = rest(
            &server,
            Method::POST,
            "/topics",
            key,
            Some(json!({ "name": name })),
        )
        .await;
        assert_eq!(status, 201, "key {key:?}: {body}");
        for path in ["/topics", "/stats", "/health"] {
            let (status, body) = rest(&server, Method::GET, path, key, None).await;
            assert_eq!(status, 200, "GET {path} with key {key:?}: {body}");
        }
        let message = message_body(json!(1));
        let (status, body) = rest(
            &server,
            Method::POST,
            &format!("/topics/{name}/messages"),
            key,
            Some(message),
        )
        .await;
        assert_eq!(status, 200, "publish with key {key:?}: {body}");
        let mut ws = connect(&server, "", key).await.expect("open upgrade");
        ping_pong(&mut ws, "open").await;
        let (status, body) = rest(
            &server,
            Method::DELETE,
            &format!("/topics/{name}"),
            key,
            None,
        )
        .await;
        assert_eq!(status, 200, "delete with key {key:?}: {body}");
    }
    let mut ws = connect(&server, "?api_key=whatever", None)
        .await
        .expect("query key ignored");
    ping_pong(&mut ws, "query").await;
    server.stop().await;
}

#[tokio::test]
async fn failed_authentications_are_counted_and_challenged() {
    let server = TestServer::start(&KEYED).await;
    for key in [None, Some("wrong"), Some("k1-but-longer")] {
        let mut builder = server.http.get(server.url("/stats"));
        if let Some(key) = key {
            builder = builder.header("X-API-Key", key);
        }
        let response = builder.send().await.unwrap();
        assert_eq!(response.status(), 401, "{key:?}");
        let challenge = response.headers()["www-authenticate"].to_str().unwrap();
        assert!(challenge.contains("X-API-Key"), "{challenge}");
    }
    let (status, stats) = rest(&server, Method::GET, "/stats", Some("k1"), None).await;
    assert_eq!(
        (status, &stats["auth_failures"]),
        (200, &json!(3)),
        "{stats}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_bearer_key_works_wherever_x_api_key_does() {
    let server = TestServer::start(&KEYED).await;
    let bearer = |key: &str| {
        let request = server.http.get(server.url("/stats"));
        request.bearer_auth(key)
    };
    let response = bearer("k2").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let refused = bearer("wrong").send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let challenge = refused.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.contains("Bearer"), "{challenge}");

    let upgrade = |key: &str| {
        let mut request = server.ws_url().into_client_request().unwrap();
        request
            .headers_mut()
            .insert("Authorization", format!("Bearer {key}").parse().unwrap());
        tokio_tungstenite::connect_async(request)
    };
    let (mut ws, _) = upgrade("k1").await.expect("bearer upgrade");
    ping_pong(&mut ws, "bearer").await;
    let refused = upgrade("wrong").await.expect_err("wrong bearer key");
    assert!(
        matches!(&refused, WsError::Http(response) if response.status() == 401),
        "{refused:?}"
    );
    let (_, stats) = rest(&server, Method::GET, "/stats", Some("k1"), None).await;
    assert_eq!(
        stats["auth_failures"], 2,
        "the refused request and the refused upgrade: {stats}"
    );
    server.stop().await;
}

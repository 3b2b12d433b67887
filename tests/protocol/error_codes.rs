//! The README's error-code table against the server: each failure is
//! caused for real, over REST and over a WebSocket, and what comes back
//! (status and code, or the `error` frame's code) must be the table's row.
//! A row with no case here names the test that causes it instead.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::*;
use ringcast::auth::{mint_hs256, Claims};
use ringcast::wire::error::ErrorCode;
use serde_json::{json, Value};

/// One row of the README's table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    /// The HTTP status, or `None` where REST never answers it.
    status: Option<u16>,
    /// The `error` frame's code, or `None` where a WebSocket never gets it.
    websocket: Option<String>,
}

/// Rows caused by other tests, which need a cluster, a shutdown under load
/// or a stalled reader.
const CAUSED_ELSEWHERE: &[(&str, &str)] = &[
    ("SLOW_CONSUMER", "send_path, backpressure"),
    ("SHUTTING_DOWN", "races: shutdown_under_full_load"),
    ("INTERNAL", "cluster: the NATS outage tests"),
    (
        "REQUEST_TIMEOUT",
        "limits: a_body_that_stops_arriving_gets_408",
    ),
];

const SECRET: &str = "error-codes-secret";

fn readme_table() -> BTreeMap<String, Row> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let table = readme
        .split("### Error codes")
        .nth(1)
        .expect("the README has an Error codes section");
    let column = |cell: &str| {
        let cell = cell.trim().trim_matches('`');
        (cell != "—").then(|| cell.to_owned())
    };
    table
        .lines()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .skip(2)
        .map(|line| {
            let cells: Vec<&str> = line.split('|').collect();
            let code = column(cells[1]).expect("a code");
            let row = Row {
                status: column(cells[2]).map(|status| status.parse().expect("a status")),
                websocket: column(cells[3]),
            };
            (code, row)
        })
        .collect()
}

#[test]
fn the_readme_table_is_the_servers_map() {
    let table = readme_table();
    for code in ErrorCode::ALL {
        let columns = code.columns();
        let row = table
            .get(code.as_str())
            .unwrap_or_else(|| panic!("{} is missing from the README", code.as_str()));
        assert_eq!(
            row,
            &Row {
                status: columns.rest.map(|status| status.as_u16()),
                websocket: columns.websocket.map(|code| code.as_str().to_owned()),
            },
            "{}",
            code.as_str()
        );
    }
    assert_eq!(table.len(), ErrorCode::ALL.len(), "no other rows");
}

#[test]
fn the_openapi_document_lists_every_rest_code() {
    let document: Value = serde_json::from_slice(ringcast::http::api_docs::OPENAPI).unwrap();
    let documented: Vec<&str> = document["components"]["schemas"]["Error"]["properties"]["error"]
        ["properties"]["code"]["enum"]
        .as_array()
        .expect("the Error schema's code enum")
        .iter()
        .map(|code| code.as_str().unwrap())
        .collect();
    let mut answered: Vec<&str> = ErrorCode::ALL
        .into_iter()
        .filter(|code| code.columns().rest.is_some())
        .map(ErrorCode::as_str)
        .collect();
    let mut documented_sorted = documented.clone();
    documented_sorted.sort_unstable();
    answered.sort_unstable();
    assert_eq!(documented_sorted, answered);
}

fn token(claims: Claims) -> String {
    mint_hs256(SECRET, &claims)
}

fn claims() -> Claims {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    Claims {
        exp,
        sub: Some("tester".into()),
        aud: None,
        subscribe: vec![],
        publish: vec![],
        admin: false,
    }
}

/// What a REST request answered: its status and error code.
async fn rest(request: reqwest::RequestBuilder) -> (u16, String) {
    let (status, body) = json_reply(request.send().await.expect("request")).await;
    (
        status,
        body["error"]["code"].as_str().unwrap_or("").to_owned(),
    )
}

/// The code of the `error` frame answering `frame` on a fresh connection.
async fn websocket(ws: &mut Ws, frame: Value) -> String {
    send(ws, frame).await;
    loop {
        let reply = recv(ws).await;
        if reply["type"] == "error" {
            return reply["error"]["code"].as_str().unwrap().to_owned();
        }
    }
}

fn publish(topic: &str) -> Value {
    publish_frame(topic, json!(1), "p")
}

/// Causes every failure it can on one transport each and returns what
/// was seen, by the README's code.
async fn observed() -> BTreeMap<&'static str, (Option<(u16, String)>, Option<String>)> {
    let mut seen = BTreeMap::new();
    let plain = TestServer::start(&[
        "--max-topics",
        "2",
        "--max-message-size",
        "200",
        "--publish-rate-limit",
        "1/m",
        "--allowed-origins",
        "https://app.example",
    ])
    .await;
    plain.create_topic("orders").await;
    let http = &plain.http;
    let url = |path: &str| plain.url(path);
    let mut ws = plain.ws().await;

    let bad_body = http.post(url("/topics")).json(&json!({}));
    let malformed = websocket(&mut ws, json!({"type": "subscribe"})).await;
    seen.insert("BAD_REQUEST", (Some(rest(bad_body).await), Some(malformed)));

    let unknown = websocket(&mut ws, json!({"type": "subscribe", "topic": "nope"})).await;
    let delete_unknown = rest(http.delete(url("/topics/nope"))).await;
    seen.insert("TOPIC_NOT_FOUND", (Some(delete_unknown), Some(unknown)));

    let again = http.post(url("/topics")).json(&json!({"name": "orders"}));
    seen.insert("TOPIC_EXISTS", (Some(rest(again).await), None));

    plain.create_topic("second").await;
    let third = http.post(url("/topics")).json(&json!({"name": "third"}));
    seen.insert("TOPIC_LIMIT", (Some(rest(third).await), None));

    let message = message_body(json!(1));
    let publish_rest = || http.post(url("/topics/orders/messages")).json(&message);
    assert_eq!(
        rest(publish_rest()).await.0,
        200,
        "the first publish fits the rate"
    );
    let limited_ws = {
        send(&mut ws, publish("orders")).await;
        websocket(&mut ws, publish("orders")).await
    };
    seen.insert(
        "RATE_LIMITED",
        (Some(rest(publish_rest()).await), Some(limited_ws)),
    );

    let evil = http
        .get(url("/topics"))
        .header("origin", "https://evil.example");
    seen.insert("FORBIDDEN_ORIGIN", (Some(rest(evil).await), None));

    seen.insert(
        "NOT_FOUND",
        (Some(rest(http.get(url("/nope"))).await), None),
    );
    seen.insert(
        "METHOD_NOT_ALLOWED",
        (Some(rest(http.put(url("/topics"))).await), None),
    );
    let large = http
        .post(url("/topics"))
        .json(&json!({"name": "x".repeat(300)}));
    seen.insert("PAYLOAD_TOO_LARGE", (Some(rest(large).await), None));
    let text = http
        .post(url("/topics"))
        .header("content-type", "text/plain")
        .body("{}");
    seen.insert("UNSUPPORTED_MEDIA_TYPE", (Some(rest(text).await), None));
    let not_an_upgrade = rest(http.get(url("/ws"))).await;
    assert_eq!(
        not_an_upgrade,
        (426, "BAD_REQUEST".to_owned()),
        "426 keeps BAD_REQUEST"
    );
    plain.stop().await;

    let full = TestServer::start(&["--max-connections", "1"]).await;
    let _only = full.ws().await;
    let refused = tokio_tungstenite::connect_async(full.ws_url())
        .await
        .expect_err("over MAX_CONNECTIONS");
    let tokio_tungstenite::tungstenite::Error::Http(response) = refused else {
        panic!("{refused}")
    };
    let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
    let status = response.status().as_u16();
    let code = body["error"]["code"].as_str().unwrap().to_owned();
    seen.insert("TOO_MANY_CONNECTIONS", (Some((status, code)), None));
    full.stop().await;

    let tokens = TestServer::start(&["--jwt-secret", SECRET]).await;
    let admin = token(Claims {
        admin: true,
        ..claims()
    });
    let create = tokens
        .http
        .post(tokens.url("/topics"))
        .bearer_auth(&admin)
        .json(&json!({"name": "orders"}));
    assert_eq!(rest(create).await.0, 201);
    let no_key = rest(tokens.http.get(tokens.url("/stats"))).await;
    let reader = token(Claims {
        subscribe: vec!["orders".into()],
        ..claims()
    });
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("{}?token={reader}", tokens.ws_url()))
            .await
            .expect("upgrade with a token");
    let bad_token = websocket(&mut ws, json!({"type": "auth", "token": "nonsense"})).await;
    seen.insert("UNAUTHORIZED", (Some(no_key), Some(bad_token)));
    let not_permitted = websocket(&mut ws, publish("orders")).await;
    let forbidden = tokens
        .http
        .post(tokens.url("/topics/orders/messages"))
        .bearer_auth(&reader)
        .json(&message_body(json!(1)));
    seen.insert(
        "FORBIDDEN",
        (Some(rest(forbidden).await), Some(not_permitted)),
    );
    tokens.stop().await;
    seen
}

async fn check_every_row() {
    let table = readme_table();
    let seen = tokio::time::timeout(Duration::from_secs(60), observed())
        .await
        .expect("every case within a minute");
    for (code, row) in &table {
        if let Some((_, test)) = CAUSED_ELSEWHERE.iter().find(|(name, _)| name == code) {
            assert!(
                !seen.contains_key(code.as_str()),
                "{code} is caused here and in {test}"
            );
            continue;
        }
        let (over_rest, over_websocket) = seen
            .get(code.as_str())
            .unwrap_or_else(|| panic!("no case causes {code}"));
        let expected_rest = row.status.map(|status| (status, code.clone()));
        assert_eq!(over_rest, &expected_rest, "{code} over REST");
        assert_eq!(over_websocket, &row.websocket, "{code} over a WebSocket");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failure_answers_as_the_readme_says() {
    check_every_row().await;
}

#[tokio::test(flavor = "current_thread")]
async fn every_failure_answers_as_the_readme_says_on_one_thread() {
    check_every_row().await;
}

//! `GET /openapi.json` and `GET /asyncapi.json`, checked against the live
//! server so neither can drift from what it answers: the OpenAPI document
//! lists exactly `http::routes::ROUTES`, the server answers each documented
//! operation with a documented status, and every AsyncAPI client example,
//! sent over a real WebSocket, gets the documented server frames.

use std::collections::BTreeSet;

use crate::common::*;
use ringcast::http::routes::ROUTES;
use serde_json::{json, Value};

/// The methods an OpenAPI path item may hold operations under.
const OPERATION_METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

async fn document(server: &TestServer, path: &str) -> Value {
    let response = server.http.get(server.url(path)).send().await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    assert_eq!(response.headers()["content-type"], "application/json");
    let document: Value = response.json().await.unwrap();
    assert_eq!(
        document["info"]["version"],
        env!("CARGO_PKG_VERSION"),
        "{path} names the running version"
    );
    document
}

/// Every (path template, method) the OpenAPI document has an operation for.
fn documented_operations(openapi: &Value) -> BTreeSet<(String, String)> {
    let paths = openapi["paths"].as_object().expect("paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            OPERATION_METHODS
                .iter()
                .filter(|method| item.get(**method).is_some())
                .map(|method| (path.clone(), method.to_uppercase()))
        })
        .collect()
}

/// A request the operation succeeds with, against a server where topic
/// `orders` exists. The event stream is left once its headers arrive.
fn example_request(server: &TestServer, method: &str, path: &str) -> reqwest::RequestBuilder {
    let path = match path {
        "/sse" => "/sse?topic=orders",
        _ => path,
    };
    let url = server.url(&path.replace("{name}", "orders"));
    let request = server.http.request(method.parse().unwrap(), url);
    match (method, path) {
        ("POST", "/topics") => request.json(&json!({ "name": "fresh" })),
        ("POST", "/broadcast") => request.json(&json!({
            "topics": ["orders"],
            "message": message_body(json!({ "order": 42 })),
        })),
        ("POST", "/disconnect") => request.json(&json!({ "client_id": "nobody" })),
        ("POST", "/unsubscribe") => {
            request.json(&json!({ "topic": "orders", "client_id": "nobody" }))
        }
        ("POST", _) => request.json(&message_body(json!({ "order": 42 }))),
        _ => request,
    }
}

#[tokio::test]
async fn the_openapi_document_lists_exactly_the_routes_the_server_answers() {
    let server = TestServer::start(&[]).await;
    let openapi = document(&server, "/openapi.json").await;
    assert_eq!(openapi["openapi"], "3.1.0");
    let routes: BTreeSet<(String, String)> = ROUTES
        .iter()
        .flat_map(|route| {
            route
                .methods
                .iter()
                .map(|method| (route.path.to_owned(), (*method).to_owned()))
        })
        .collect();
    assert_eq!(documented_operations(&openapi), routes);

    server.create_topic("orders").await;
    for route in ROUTES {
        let path = route.path.replace("{name}", "orders");
        let options = server
            .http
            .request(reqwest::Method::OPTIONS, server.url(&path))
            .send()
            .await
            .unwrap();
        assert_eq!(options.status(), 204, "OPTIONS {path}");
        assert_eq!(options.headers()["allow"], route.allow(), "{path}");
    }
    // Deleting last, so every other operation still finds the topic.
    let mut operations: Vec<_> = routes.into_iter().collect();
    operations.sort_by_key(|(_, method)| method == "DELETE");
    for (path, method) in operations {
        let response = example_request(&server, &method, &path)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16().to_string();
        let documented = &openapi["paths"][&path][method.to_lowercase()]["responses"];
        assert!(
            documented.get(&status).is_some(),
            "{method} {path} answered {status}, which the document does not list: {}",
            response.text().await.unwrap()
        );
        assert!(status.starts_with('2'), "{method} {path}: {status}");
    }
    let unknown = server.get_json("/not-documented").await;
    assert_error_reply(&unknown, 404, "NOT_FOUND", "an undocumented path");
    server.stop().await;
}

#[tokio::test]
async fn every_asyncapi_client_example_gets_documented_server_frames() {
    let server = TestServer::start(&[]).await;
    let asyncapi = document(&server, "/asyncapi.json").await;
    assert_eq!(asyncapi["asyncapi"], "3.0.0");
    let messages = asyncapi["components"]["messages"].as_object().unwrap();
    let payload_type = |message: &Value| {
        let schema = &message["payload"]["$ref"];
        let name = schema.as_str().unwrap().rsplit('/').next().unwrap();
        let schema = &asyncapi["components"]["schemas"][name];
        (
            schema["properties"]["type"]["const"].clone(),
            schema.clone(),
        )
    };
    let operation_types = |operation: &str| -> Vec<(Value, Value)> {
        asyncapi["operations"][operation]["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|reference| {
                let name = reference["$ref"].as_str().unwrap().rsplit('/').next();
                let channel_message = &asyncapi["channels"]["ws"]["messages"][name.unwrap()];
                let name = channel_message["$ref"].as_str().unwrap().rsplit('/').next();
                payload_type(&messages[name.unwrap()])
            })
            .collect()
    };
    let client_types = operation_types("sendRequest");
    let server_types = operation_types("receiveFrames");
    let names = |types: &[(Value, Value)]| -> BTreeSet<String> {
        types
            .iter()
            .map(|(kind, _)| kind.as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        names(&client_types),
        BTreeSet::from(["subscribe", "unsubscribe", "publish", "ping", "auth"].map(String::from))
    );

    server.create_topic("orders").await;
    let mut ws = server.ws().await;
    let example = |kind: &str| -> Value {
        let message = messages.values().find(|message| {
            let (message_kind, _) = payload_type(message);
            message_kind == kind
        });
        message.unwrap()["examples"][0]["payload"].clone()
    };
    // Subscribed while publishing, so the publish comes back as an event;
    // subscribed again when the topic is deleted, for its `info`.
    // `auth` without tokens configured is refused: an `error` frame.
    for kind in [
        "subscribe",
        "publish",
        "ping",
        "unsubscribe",
        "auth",
        "subscribe",
    ] {
        send(&mut ws, example(kind)).await;
    }
    send(&mut ws, publish_frame("nope", json!(1), "missing")).await;
    send(&mut ws, json!({ "type": "ping", "request_id": "sync" })).await;
    let mut seen = BTreeSet::new();
    let mut check = |frame: Value| {
        let (_, schema) = server_types
            .iter()
            .find(|(kind, _)| *kind == frame["type"])
            .unwrap_or_else(|| panic!("an undocumented frame: {frame}"));
        for field in schema["required"].as_array().unwrap() {
            let field = field.as_str().unwrap();
            assert!(frame.get(field).is_some(), "{frame} lacks {field}");
        }
        seen.insert(frame["type"].as_str().unwrap().to_owned());
        frame
    };
    while check(recv(&mut ws).await)["request_id"] != "sync" {}
    let (status, _) = server.delete_json("/topics/orders").await;
    assert_eq!(status, 200);
    let deleted = check(recv(&mut ws).await);
    assert_eq!(deleted["msg"], "topic_deleted", "{deleted}");
    // Another subscriber's join and leave, on a topic with presence_events.
    let body = json!({ "name": "room", "presence_events": true });
    assert_eq!(server.post_json("/topics", &body).await.0, 201);
    subscribe(&mut ws, "room", 0).await;
    let mut other = server.ws().await;
    subscribe(&mut other, "room", 0).await;
    drop(other);
    for expected in ["join", "leave"] {
        assert_eq!(check(recv(&mut ws).await)["type"], expected);
    }
    assert_eq!(seen, names(&server_types), "server frames seen");
    server.stop().await;
}

#[tokio::test]
async fn the_documents_need_a_key_when_keys_are_set() {
    let server = TestServer::start(&["--api-key", "k1"]).await;
    for path in ["/openapi.json", "/asyncapi.json"] {
        let refused = server.http.get(server.url(path)).send().await.unwrap();
        assert_eq!(refused.status(), 401, "{path}");
        let allowed = server
            .http
            .get(server.url(path))
            .bearer_auth("k1")
            .send()
            .await
            .unwrap();
        assert_eq!(allowed.status(), 200, "{path}");
    }
    server.stop().await;
}

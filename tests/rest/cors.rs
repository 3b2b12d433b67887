//! CORS for REST (`CORS_ALLOWED_ORIGINS`) over real sockets: headers for a
//! listed origin only, preflights answered without a key, and how it meets
//! `ALLOWED_ORIGINS` and `API_KEY`.

use crate::common::*;
use reqwest::{Method, Response};

const APP: &str = "https://app.example.com";
const OTHER: &str = "https://other.example";

async fn request(
    server: &TestServer,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> Response {
    let mut builder = server.http.request(method, server.url(path));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.send().await.unwrap()
}

fn header<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response
        .headers()
        .get(name)
        .map(|value| value.to_str().unwrap())
}

async fn preflight(server: &TestServer, path: &str, origin: &str) -> Response {
    request(
        server,
        Method::OPTIONS,
        path,
        &[
            ("Origin", origin),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "content-type, x-api-key"),
        ],
    )
    .await
}

#[tokio::test]
async fn no_cors_headers_unless_configured() {
    let server = TestServer::start(&[]).await;
    let response = request(&server, Method::GET, "/topics", &[("Origin", APP)]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "access-control-allow-origin"), None);
    let response = preflight(&server, "/topics", APP).await;
    assert_eq!(response.status(), 204);
    assert_eq!(header(&response, "access-control-allow-methods"), None);
    server.stop().await;
}

#[tokio::test]
async fn listed_origins_get_cors_headers_and_preflights_without_a_key() {
    let origins = format!("{APP}/,http://localhost:3000");
    let server = TestServer::start(&["--cors-allowed-origins", &origins, "--api-key", "k1"]).await;

    let response = preflight(&server, "/topics", "HTTPS://APP.example.com").await;
    assert_eq!(response.status(), 204, "a preflight carries no key");
    assert_eq!(
        header(&response, "access-control-allow-origin"),
        Some("HTTPS://APP.example.com"),
        "the origin as the browser sent it"
    );
    assert_eq!(
        header(&response, "access-control-allow-methods"),
        Some("GET, HEAD, POST, OPTIONS")
    );
    assert_eq!(
        header(&response, "access-control-allow-headers"),
        Some("Content-Type, X-API-Key, Authorization, Last-Event-ID")
    );
    assert_eq!(header(&response, "access-control-max-age"), Some("600"));
    assert_eq!(header(&response, "vary"), Some("Origin"));
    let response = preflight(&server, "/topics/orders/messages", APP).await;
    assert_eq!(
        header(&response, "access-control-allow-methods"),
        Some("GET, HEAD, POST, OPTIONS")
    );

    let listed = request(
        &server,
        Method::GET,
        "/topics",
        &[("Origin", APP), ("X-API-Key", "k1")],
    )
    .await;
    assert_eq!(listed.status(), 200);
    assert_eq!(header(&listed, "access-control-allow-origin"), Some(APP));
    assert_eq!(header(&listed, "vary"), Some("Origin"));
    let refused = request(&server, Method::GET, "/topics", &[("Origin", APP)]).await;
    assert_eq!(refused.status(), 401);
    assert_eq!(
        header(&refused, "access-control-allow-origin"),
        Some(APP),
        "the page may read why it was refused"
    );

    for origin in [OTHER, "null"] {
        let response = request(
            &server,
            Method::GET,
            "/topics",
            &[("Origin", origin), ("X-API-Key", "k1")],
        )
        .await;
        assert_eq!(
            response.status(),
            200,
            "without ALLOWED_ORIGINS anyone is served"
        );
        assert_eq!(
            header(&response, "access-control-allow-origin"),
            None,
            "{origin}"
        );
        assert_eq!(header(&response, "vary"), Some("Origin"), "{origin}");
        let response = preflight(&server, "/topics", origin).await;
        assert_eq!(
            header(&response, "access-control-allow-methods"),
            None,
            "{origin}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn allowed_origins_still_refuse_the_others() {
    let server =
        TestServer::start(&["--cors-allowed-origins", APP, "--allowed-origins", APP]).await;
    let served = request(&server, Method::GET, "/stats", &[("Origin", APP)]).await;
    assert_eq!(served.status(), 200);
    assert_eq!(header(&served, "access-control-allow-origin"), Some(APP));
    let refused = preflight(&server, "/topics", OTHER).await;
    assert_eq!(refused.status(), 403);
    assert_eq!(header(&refused, "access-control-allow-origin"), None);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "FORBIDDEN_ORIGIN");
    server.stop().await;
}

//! Access tokens: JWTs verified with the configured key and algorithm only,
//! their claims as permissions on both transports, refresh over the
//! WebSocket, expiry, and `ringcast token`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::*;
use futures_util::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

const SECRET: &str = "test-secret-of-some-length";
pub(super) const ADMIN_KEY: &str = "admin-key";
const AUDIENCE: &str = "ringcast-tests";

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims valid for five minutes for `AUDIENCE`, with `extra` merged over.
fn claims(extra: Value) -> Value {
    let mut claims = json!({ "exp": now() + 300, "aud": AUDIENCE });
    claims
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    claims
}

fn sign(algorithm: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(algorithm), claims, key).unwrap()
}

/// An HS256 token signed with `SECRET`.
pub(super) fn token(extra: Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        &claims(extra),
    )
}

/// A server taking HS256 tokens for `AUDIENCE`, and `ADMIN_KEY`.
pub(super) async fn hs256_server(extra: &[&str]) -> TestServer {
    let mut args = vec![
        "--jwt-secret",
        SECRET,
        "--jwt-audience",
        AUDIENCE,
        "--api-key",
        ADMIN_KEY,
    ];
    args.extend_from_slice(extra);
    TestServer::start(&args).await
}

pub(super) enum Credential<'a> {
    Key(&'a str),
    Bearer(&'a str),
}

/// One REST request, with its status, JSON body and `WWW-Authenticate`.
pub(super) async fn request(
    server: &TestServer,
    method: Method,
    path: &str,
    credential: Option<Credential<'_>>,
    body: Option<Value>,
) -> (u16, Value, Option<String>) {
    let mut builder = server.http.request(method, server.url(path));
    builder = match credential {
        Some(Credential::Key(key)) => builder.header("X-API-Key", key),
        Some(Credential::Bearer(token)) => builder.bearer_auth(token),
        None => builder,
    };
    if let Some(body) = body {
        builder = builder.json(&body);
    }
    let response = builder.send().await.expect("http request");
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|value| value.to_str().unwrap().to_owned());
    let (status, body) = json_reply(response).await;
    (status, body, challenge)
}

pub(super) async fn create_topics(server: &TestServer, names: &[&str]) {
    for name in names {
        let body = json!({ "name": name });
        let (status, body, _) = request(
            server,
            Method::POST,
            "/topics",
            Some(Credential::Key(ADMIN_KEY)),
            Some(body),
        )
        .await;
        assert_eq!(status, 201, "creating {name}: {body}");
    }
}

async fn publish_rest(server: &TestServer, topic: &str, credential: Credential<'_>) -> u16 {
    let path = format!("/topics/{topic}/messages");
    let body = Some(message_body(json!({ "to": topic })));
    request(server, Method::POST, &path, Some(credential), body)
        .await
        .0
}

/// A counter's value on `/metrics` (read with the admin key).
async fn metric(server: &TestServer, series: &str) -> f64 {
    let text = server
        .http
        .get(server.url("/metrics"))
        .header("X-API-Key", ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
}

/// Opens `/ws` plus `suffix`, with the token as a bearer credential if given.
async fn connect(server: &TestServer, suffix: &str, bearer: Option<&str>) -> Result<Ws, WsError> {
    let mut request = format!("{}{suffix}", server.ws_url())
        .into_client_request()
        .unwrap();
    if let Some(token) = bearer {
        request
            .headers_mut()
            .insert("Authorization", format!("Bearer {token}").parse().unwrap());
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(ws, _)| ws)
}

pub(super) async fn connect_with(server: &TestServer, token: &str) -> Ws {
    connect(server, "", Some(token)).await.expect("upgrade")
}

#[track_caller]
fn assert_refused_upgrade(result: Result<Ws, WsError>, context: &str) {
    match result {
        Err(WsError::Http(response)) => {
            assert_eq!(response.status(), 401, "{context}");
            assert!(
                response.headers().contains_key("www-authenticate"),
                "{context}"
            );
        }
        Err(other) => panic!("{context}: expected 401, got {other}"),
        Ok(_) => panic!("{context}: the upgrade was accepted"),
    }
}

/// `alg: none`: a header and claims with an empty signature.
fn unsigned(claims: &Value) -> String {
    use base64_url as b64;
    let header = b64::encode(br#"{"alg":"none","typ":"JWT"}"#);
    format!("{header}.{}.", b64::encode(claims.to_string().as_bytes()))
}

/// Unpadded base64url, as JWTs use it.
mod base64_url {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    pub fn encode(bytes: &[u8]) -> String {
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, byte)| n | u32::from(*byte) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }
}

#[tokio::test]
async fn a_valid_token_opens_the_upgrade_by_header_or_query() {
    let server = hs256_server(&[]).await;
    let valid = token(json!({ "sub": "alice" }));
    let mut ws = connect_with(&server, &valid).await;
    ping_pong(&mut ws, "by-header").await;
    let mut ws = connect(&server, &format!("?token={valid}"), None)
        .await
        .expect("upgrade with ?token=");
    ping_pong(&mut ws, "by-query").await;
    assert_refused_upgrade(connect(&server, "", None).await, "no credential");
    server.stop().await;
}

#[tokio::test]
async fn bad_tokens_get_401_before_the_upgrade_and_on_rest() {
    let server = hs256_server(&["--jwt-leeway", "5s"]).await;
    create_topics(&server, &["orders"]).await;
    let other_key = EncodingKey::from_secret(b"another-secret");
    let bad = [
        ("expired", token(json!({ "exp": now() - 60 }))),
        ("not yet valid", token(json!({ "nbf": now() + 60 }))),
        (
            "wrong key",
            sign(Algorithm::HS256, &other_key, &claims(json!({}))),
        ),
        ("wrong audience", token(json!({ "aud": "elsewhere" }))),
        (
            "no audience",
            sign(
                Algorithm::HS256,
                &EncodingKey::from_secret(SECRET.as_bytes()),
                &json!({ "exp": now() + 300 }),
            ),
        ),
        (
            "no exp",
            sign(
                Algorithm::HS256,
                &EncodingKey::from_secret(SECRET.as_bytes()),
                &json!({ "aud": AUDIENCE }),
            ),
        ),
        (
            "another algorithm",
            sign(
                Algorithm::HS384,
                &EncodingKey::from_secret(SECRET.as_bytes()),
                &claims(json!({})),
            ),
        ),
        ("alg none", unsigned(&claims(json!({ "publish": ["*"] })))),
        ("malformed", "not-a-jwt".to_owned()),
        ("truncated", token(json!({}))[..40].to_owned()),
        (
            "claims of the wrong type",
            token(json!({ "subscribe": "orders" })),
        ),
    ];
    let failures_before = metric(&server, "ringcast_auth_failures_total").await;
    for (what, bad) in &bad {
        assert_refused_upgrade(connect(&server, "", Some(bad)).await, what);
        assert_refused_upgrade(connect(&server, &format!("?token={bad}"), None).await, what);
        let (status, body, challenge) = request(
            &server,
            Method::POST,
            "/topics/orders/messages",
            Some(Credential::Bearer(bad)),
            Some(message_body(json!(1))),
        )
        .await;
        assert_error_reply(&(status, body), 401, "UNAUTHORIZED", what);
        assert!(challenge.is_some(), "{what}: WWW-Authenticate");
    }
    let failures = metric(&server, "ringcast_auth_failures_total").await - failures_before;
    assert_eq!(failures, 3.0 * bad.len() as f64);

    let (_, body, _) = request(
        &server,
        Method::GET,
        "/openapi.json",
        Some(Credential::Bearer(&bad[0].1)),
        None,
    )
    .await;
    assert_eq!(body["error"]["message"], "token expired", "{body}");

    // Within JWT_LEEWAY either way: accepted.
    let lenient = [
        token(json!({ "exp": now() - 2 })),
        token(json!({ "nbf": now() + 2 })),
    ];
    for accepted in &lenient {
        ping_pong(&mut connect_with(&server, accepted).await, "leeway").await;
    }
    server.stop().await;
}

#[tokio::test]
async fn public_keys_fix_the_algorithm_and_refuse_hmac_with_the_public_key() {
    let rsa_public = std::fs::read(fixture("rsa_public.pem")).unwrap();
    let rsa =
        EncodingKey::from_rsa_pem(&std::fs::read(fixture("rsa_private.pem")).unwrap()).unwrap();
    let ec = EncodingKey::from_ec_pem(&std::fs::read(fixture("ec_private.pem")).unwrap()).unwrap();
    let body = claims(json!({ "sub": "bob" }));
    let rs256 = sign(Algorithm::RS256, &rsa, &body);
    let es256 = sign(Algorithm::ES256, &ec, &body);
    // The classic confusion: the public key, which anyone may hold, used
    // as an HMAC secret.
    let confused = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(&rsa_public),
        &body,
    );

    for (key, accepted, refused) in [
        (
            "rsa_public.pem",
            &rs256,
            [(&es256, "ES256"), (&confused, "HS256 with the public key")],
        ),
        (
            "ec_public.pem",
            &es256,
            [(&rs256, "RS256"), (&confused, "HS256 with a public key")],
        ),
    ] {
        let path = fixture(key);
        let server =
            TestServer::start(&["--jwt-public-key", &path, "--jwt-audience", AUDIENCE]).await;
        ping_pong(&mut connect_with(&server, accepted).await, key).await;
        for (token, what) in refused {
            assert_refused_upgrade(connect(&server, "", Some(token)).await, what);
        }
        server.stop().await;
    }

    for bad_config in [
        ["--jwt-public-key", "/nonexistent.pem"].as_slice(),
        &["--jwt-public-key", "Cargo.toml"],
        &["--jwt-secret", "s", "--jwt-public-key", "x.pem"],
        &["--jwt-secret", ""],
    ] {
        let config = ringcast::Config::from_args(bad_config).unwrap();
        assert!(
            ringcast::Server::bind(config).await.is_err(),
            "{bad_config:?}"
        );
    }
}

#[tokio::test]
async fn websocket_requests_are_checked_against_the_token() {
    let server = hs256_server(&[]).await;
    create_topics(&server, &["orders.eu", "orders.us", "billing"]).await;
    let limited = token(json!({ "subscribe": ["orders.*"], "publish": ["orders.eu"] }));
    let mut ws = connect_with(&server, &limited).await;
    subscribe(&mut ws, "orders.us", 0).await;
    for (frame, context) in [
        (
            json!({ "type": "subscribe", "topic": "billing", "request_id": "r" }),
            "subscribe outside the patterns",
        ),
        (
            json!({ "type": "subscribe", "topic": "nowhere", "request_id": "r" }),
            "an unknown topic outside the patterns: no hint it is unknown",
        ),
        (
            publish_frame("orders.us", json!(1), "r"),
            "publish outside the patterns",
        ),
    ] {
        send(&mut ws, frame).await;
        expect_error(&mut ws, "UNAUTHORIZED", Some("r"), context).await;
    }
    publish_acked(&mut ws, "orders.eu", json!("ok"), "p").await;
    ping_pong(&mut ws, "still-open").await;

    let mut keyed = connect(&server, &format!("?api_key={ADMIN_KEY}"), None)
        .await
        .unwrap();
    subscribe(&mut keyed, "billing", 0).await;
    publish_acked(&mut keyed, "orders.eu", json!(1), "k").await;
    assert_eq!(
        metric(
            &server,
            r#"ringcast_permission_denials_total{transport="websocket"}"#
        )
        .await,
        3.0
    );
    server.stop().await;
}

#[tokio::test]
async fn rest_requests_are_checked_against_the_token() {
    let server = hs256_server(&[]).await;
    create_topics(&server, &["orders.eu", "billing"]).await;
    let publisher = token(json!({ "publish": ["orders.*"] }));
    let admin = token(json!({ "admin": true }));
    assert_eq!(
        publish_rest(&server, "orders.eu", Credential::Bearer(&publisher)).await,
        200
    );
    let admin_only = [
        (Method::GET, "/topics", None),
        (Method::POST, "/topics", Some(json!({ "name": "fresh" }))),
        (Method::DELETE, "/topics/billing", None),
        (Method::GET, "/stats", None),
        (Method::GET, "/metrics", None),
        (Method::GET, "/subscriptions", None),
        (Method::GET, "/topics/orders.eu/subscribers", None),
    ];
    for (method, path, body) in &admin_only {
        let reply = request(
            &server,
            method.clone(),
            path,
            Some(Credential::Bearer(&publisher)),
            body.clone(),
        )
        .await;
        assert_error_reply(&(reply.0, reply.1), 403, "FORBIDDEN", path);
    }
    let (status, body, _) = request(
        &server,
        Method::POST,
        "/topics/billing/messages",
        Some(Credential::Bearer(&publisher)),
        Some(message_body(json!(1))),
    )
    .await;
    assert_error_reply(&(status, body), 403, "FORBIDDEN", "publish outside");
    assert_eq!(
        publish_rest(&server, "billing", Credential::Bearer(&admin)).await,
        403,
        "admin is not publish"
    );
    let (status, _, _) = request(
        &server,
        Method::GET,
        "/openapi.json",
        Some(Credential::Bearer(&publisher)),
        None,
    )
    .await;
    assert_eq!(status, 200, "the API documents need only a valid token");
    for (method, path, body) in admin_only {
        let mut builder = server
            .http
            .request(method, server.url(path))
            .bearer_auth(&admin);
        if let Some(body) = body {
            builder = builder.json(&body);
        }
        let status = builder.send().await.unwrap().status();
        assert!(status.is_success(), "admin {path}: {status}");
    }
    assert_eq!(
        publish_rest(&server, "orders.eu", Credential::Key(ADMIN_KEY)).await,
        200,
        "an API key may do everything"
    );
    assert_eq!(
        metric(
            &server,
            r#"ringcast_publish_errors_total{code="FORBIDDEN"}"#
        )
        .await,
        2.0
    );
    server.stop().await;
}

#[tokio::test]
async fn a_refresh_replaces_the_token_and_drops_what_it_no_longer_allows() {
    let server = hs256_server(&[]).await;
    create_topics(&server, &["orders.eu", "orders.us"]).await;
    let wide = token(json!({ "subscribe": ["orders.*"] }));
    let mut ws = connect_with(&server, &wide).await;
    subscribe(&mut ws, "orders.eu", 0).await;
    subscribe(&mut ws, "orders.us", 0).await;

    for (refused, context) in [
        (token(json!({ "exp": now() - 60 })), "expired"),
        (unsigned(&claims(json!({}))), "alg none"),
        ("garbage".to_owned(), "malformed"),
    ] {
        send(
            &mut ws,
            json!({ "type": "auth", "token": refused, "request_id": "bad" }),
        )
        .await;
        expect_error(&mut ws, "UNAUTHORIZED", Some("bad"), context).await;
    }
    // The old token is still in force: both subscriptions stand.
    assert_eq!(subscribers_of(&server, "orders.us").await, 1);

    let narrow = token(json!({ "subscribe": ["orders.eu"] }));
    send(
        &mut ws,
        json!({ "type": "auth", "token": narrow, "request_id": "refresh" }),
    )
    .await;
    let notice = recv(&mut ws).await;
    assert_eq!(notice["type"], "info", "{notice}");
    assert_eq!(notice["msg"], "permission_revoked", "{notice}");
    assert_eq!(notice["topic"], "orders.us", "{notice}");
    let ack = recv(&mut ws).await;
    assert_eq!(
        (&ack["type"], &ack["request_id"], &ack["status"]),
        (&json!("ack"), &json!("refresh"), &json!("ok")),
        "{ack}"
    );

    for topic in ["orders.us", "orders.eu"] {
        assert_eq!(
            publish_rest(&server, topic, Credential::Key(ADMIN_KEY)).await,
            200
        );
    }
    let event = recv(&mut ws).await;
    assert_eq!(
        event["topic"], "orders.eu",
        "only what the token allows: {event}"
    );
    send(
        &mut ws,
        json!({ "type": "subscribe", "topic": "orders.us", "request_id": "again" }),
    )
    .await;
    expect_error(&mut ws, "UNAUTHORIZED", Some("again"), "narrowed").await;
    assert_eq!(subscribers_of(&server, "orders.us").await, 0);
    server.stop().await;
}

/// Reads frames until the close frame, returning the frames before it and
/// its code.
async fn until_close(ws: &mut Ws, within: Duration) -> (Vec<Value>, u16) {
    let mut frames = Vec::new();
    let reading = async {
        while let Some(message) = ws.next().await {
            match message.expect("ws error") {
                Message::Text(text) => frames.push(serde_json::from_str(&text).unwrap()),
                Message::Close(close) => return close.map(|close| u16::from(close.code)),
                _ => {}
            }
        }
        None
    };
    let code = tokio::time::timeout(within, reading)
        .await
        .expect("no close in time")
        .expect("ended without a close frame");
    (frames, code)
}

#[tokio::test]
async fn an_expiring_token_closes_the_connection_unless_refreshed() {
    let server = hs256_server(&[]).await;
    let short = || token(json!({ "exp": now() + 2, "subscribe": ["*"] }));
    let mut expiring = connect_with(&server, &short()).await;
    let mut refreshed = connect_with(&server, &short()).await;
    send(
        &mut refreshed,
        json!({ "type": "auth", "token": token(json!({})), "request_id": "later" }),
    )
    .await;
    assert_eq!(recv(&mut refreshed).await["type"], "ack");

    let (frames, code) = until_close(&mut expiring, Duration::from_secs(15)).await;
    assert_eq!(code, 1008);
    let last = frames.last().expect("an error before the close");
    assert_eq!(last["type"], "error", "{last}");
    assert_eq!(last["error"]["code"], "UNAUTHORIZED", "{last}");
    assert_eq!(last["error"]["message"], "token expired", "{last}");
    ping_pong(&mut refreshed, "refresh-outlived-the-first-token").await;
    assert_eq!(metric(&server, "ringcast_token_expiries_total").await, 1.0);
    server.stop().await;
}

#[tokio::test]
async fn the_token_subcommand_mints_tokens_the_server_accepts() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ringcast"))
        .args([
            "token",
            "--sub",
            "alice",
            "--subscribe",
            "orders.*",
            "--publish",
            "orders.*",
            "--admin",
            "--ttl",
            "1h",
        ])
        .env("JWT_SECRET", SECRET)
        .env("JWT_AUDIENCE", AUDIENCE)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let minted = String::from_utf8(output.stdout).unwrap().trim().to_owned();

    let mut validation = jsonwebtoken::Validation::new(Algorithm::HS256);
    validation.set_audience(&[AUDIENCE]);
    let decoded = jsonwebtoken::decode::<Value>(
        &minted,
        &jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes()),
        &validation,
    )
    .unwrap()
    .claims;
    assert_eq!(decoded["sub"], "alice");
    assert_eq!(decoded["subscribe"], json!(["orders.*"]));
    assert_eq!(decoded["publish"], json!(["orders.*"]));
    assert_eq!(decoded["admin"], true);
    let ttl = decoded["exp"].as_u64().unwrap() - now();
    assert!((3590..=3600).contains(&ttl), "{ttl}");

    let server = hs256_server(&[]).await;
    let (status, body, _) = request(
        &server,
        Method::POST,
        "/topics",
        Some(Credential::Bearer(&minted)),
        Some(json!({ "name": "orders.eu" })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        publish_rest(&server, "orders.eu", Credential::Bearer(&minted)).await,
        200
    );
    server.stop().await;

    let unset = std::process::Command::new(env!("CARGO_BIN_EXE_ringcast"))
        .args(["token", "--sub", "alice"])
        .env_remove("JWT_SECRET")
        .output()
        .unwrap();
    assert!(!unset.status.success());
    assert!(String::from_utf8_lossy(&unset.stderr).contains("JWT_SECRET"));
}

/// A topic's subscriber count per `GET /topics`, read with the admin key.
async fn subscribers_of(server: &TestServer, topic: &str) -> u64 {
    let (status, body, _) = request(
        server,
        Method::GET,
        "/topics",
        Some(Credential::Key(ADMIN_KEY)),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["name"] == topic)
        .and_then(|row| row["subscribers"].as_u64())
        .unwrap_or_else(|| panic!("{topic} not listed: {body}"))
}

#[tokio::test]
async fn a_broadcast_needs_admin_and_a_batch_needs_publish_on_its_topic() {
    let server = hs256_server(&[]).await;
    create_topics(&server, &["orders.eu", "billing"]).await;
    let publisher = token(json!({ "publish": ["orders.*"] }));
    let admin = token(json!({ "admin": true }));
    let batch = || Some(json!([message_body(json!(1)), message_body(json!(2))]));
    let broadcast =
        || Some(json!({ "topics": ["orders.eu", "billing"], "message": message_body(json!(3)) }));
    let cases = [
        (
            "/topics/orders.eu/messages",
            Some(Credential::Bearer(&publisher)),
            batch(),
            200,
        ),
        (
            "/topics/billing/messages",
            Some(Credential::Bearer(&publisher)),
            batch(),
            403,
        ),
        (
            "/topics/orders.eu/messages",
            Some(Credential::Bearer(&admin)),
            batch(),
            403,
        ),
        ("/topics/orders.eu/messages", None, batch(), 401),
        (
            "/broadcast",
            Some(Credential::Bearer(&publisher)),
            broadcast(),
            403,
        ),
        ("/broadcast", None, broadcast(), 401),
        (
            "/broadcast",
            Some(Credential::Key("wrong")),
            broadcast(),
            401,
        ),
        (
            "/broadcast",
            Some(Credential::Bearer(&admin)),
            broadcast(),
            200,
        ),
        (
            "/broadcast",
            Some(Credential::Key(ADMIN_KEY)),
            broadcast(),
            200,
        ),
        (
            "/topics/billing/messages",
            Some(Credential::Key(ADMIN_KEY)),
            batch(),
            200,
        ),
    ];
    for (path, credential, body, expected) in cases {
        let (status, reply, _) = request(&server, Method::POST, path, credential, body).await;
        assert_eq!(status, expected, "{path}: {reply}");
        match status {
            401 => assert_eq!(reply["error"]["code"], "UNAUTHORIZED", "{reply}"),
            403 => assert_eq!(reply["error"]["code"], "FORBIDDEN", "{reply}"),
            _ => {}
        }
    }
    let (_, stats, _) = request(
        &server,
        Method::GET,
        "/stats",
        Some(Credential::Key(ADMIN_KEY)),
        None,
    )
    .await;
    assert_eq!(
        stats["topics"]["orders.eu"]["messages"], 4,
        "two batches and two broadcasts"
    );
    assert_eq!(
        stats["topics"]["billing"]["messages"], 4,
        "a batch and two broadcasts"
    );
    server.stop().await;
}

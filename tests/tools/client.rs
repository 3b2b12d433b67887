//! `ringcast client`, run as a user would: the built binary as a child
//! process, commands piped into it, its output lines read as JSON, against
//! a real server.

use std::process::{ExitStatus, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::*;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// How long a client may take to finish by itself before the test fails.
const CLIENT_DEADLINE: Duration = Duration::from_secs(20);

/// What a finished client printed.
struct ClientRun {
    status: ExitStatus,
    /// Standard output, each line parsed as JSON, heartbeats left out.
    frames: Vec<Value>,
    stderr: String,
}

impl ClientRun {
    /// The frame replying to `request_id`; fails unless there is exactly one.
    #[track_caller]
    fn reply(&self, request_id: &str) -> &Value {
        let replies: Vec<&Value> = self
            .frames
            .iter()
            .filter(|frame| frame["request_id"] == request_id)
            .collect();
        assert_eq!(replies.len(), 1, "replies to {request_id}: {self:?}");
        replies[0]
    }

    /// The `event` frames, in the order printed.
    fn events(&self) -> Vec<&Value> {
        self.frames
            .iter()
            .filter(|frame| frame["type"] == "event")
            .collect()
    }

    #[track_caller]
    fn assert_success(&self) {
        assert!(self.status.success(), "{self:?}");
    }
}

impl std::fmt::Debug for ClientRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\nstdout: {:#?}\nstderr: {}",
            self.status, self.frames, self.stderr
        )
    }
}

/// Starts `ringcast client URL ARGS` with piped standard streams.
fn spawn_client(url: &str, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ringcast"))
        .arg("client")
        .arg(url)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start ringcast client")
}

/// Runs the client with `script` as its whole input and waits for it to
/// exit by itself.
async fn run_client(server: &TestServer, args: &[&str], script: &str) -> ClientRun {
    let mut child = spawn_client(&server.ws_url(), args);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(script.as_bytes()).await.unwrap();
    drop(stdin);
    finish(child).await
}

/// Waits for the client to exit by itself (the test fails after
/// CLIENT_DEADLINE) and collects what it printed.
async fn finish(child: Child) -> ClientRun {
    let output = tokio::time::timeout(CLIENT_DEADLINE, child.wait_with_output())
        .await
        .expect("the client did not exit by itself")
        .unwrap();
    let stdout = String::from_utf8(output.stdout).expect("stdout is UTF-8");
    let frames = stdout
        .lines()
        .map(|line| {
            serde_json::from_str::<Value>(line)
                .unwrap_or_else(|err| panic!("stdout line {line:?} is not JSON: {err}"))
        })
        .filter(|frame| !(frame["type"] == "info" && frame["msg"] == "ping"))
        .collect();
    ClientRun {
        status: output.status,
        frames,
        stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
    }
}

/// Publishes `payload` to `topic` over REST; returns its seq.
async fn publish_over_rest(server: &TestServer, topic: &str, payload: Value) -> u64 {
    let (status, body) = server
        .post_json(&format!("/topics/{topic}/messages"), &message_body(payload))
        .await;
    assert_eq!(status, 200, "{body}");
    body["seq"].as_u64().unwrap()
}

#[tokio::test]
async fn sub_pub_ping_unsub_get_their_replies_and_the_event() {
    let server = TestServer::start(&[]).await;
    server.create_topic("orders").await;
    let run = run_client(
        &server,
        &[],
        "sub orders\npub orders {\"order\": 42, \"big\": 123456789012345678901234567890}\nping\nunsub orders\n",
    )
    .await;
    run.assert_success();
    assert_eq!(run.stderr, "", "{run:?}");

    assert_ack(run.reply("cli-1"), "orders", "cli-1");
    assert_eq!(run.reply("cli-1")["seq"], 0, "{run:?}");
    assert_ack(run.reply("cli-2"), "orders", "cli-2");
    assert_pong(run.reply("cli-3"), "cli-3");
    assert_ack(run.reply("cli-4"), "orders", "cli-4");

    let events = run.events();
    assert_eq!(events.len(), 1, "{run:?}");
    assert_eq!(events[0]["topic"], "orders");
    assert_eq!(events[0]["seq"], 1);
    assert_eq!(events[0]["message"]["payload"]["order"], 42);
    let id = events[0]["message"]["id"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");

    // The payload went out as typed: every digit of the big number.
    let history = server.get_text("/topics/orders/messages").await;
    assert!(
        history.contains(r#""big": 123456789012345678901234567890}"#),
        "{history}"
    );
    // Nothing but the replies and the event.
    assert_eq!(run.frames.len(), 5, "{run:?}");
    server.stop().await;
}

#[tokio::test]
async fn resume_replays_the_events_after_seq() {
    // Large events, so the replay still arrives well after the ack: the
    // client must print it all before it exits.
    const PAD: usize = 100_000;
    let server = TestServer::start(&[]).await;
    server.create_topic("orders").await;
    for n in 1..=20 {
        publish_over_rest(&server, "orders", padded_payload(n, PAD)).await;
    }
    let (_, history) = server.get_json("/topics/orders/messages?limit=1").await;
    let epoch = history["epoch"].as_str().unwrap().to_owned();

    let run = run_client(&server, &[], &format!("resume orders 2 {epoch}\n")).await;
    run.assert_success();
    let ack = run.reply("cli-1");
    assert_ack(ack, "orders", "cli-1");
    assert_eq!(ack["recovered"], true, "{ack}");
    assert_eq!(ack["epoch"], epoch.as_str(), "{ack}");
    // The ack, then the missed events oldest first.
    assert_eq!(run.frames[0], *ack);
    let replayed: Vec<u64> = run
        .events()
        .into_iter()
        .map(|event| padded_seq(event, PAD))
        .collect();
    assert_eq!(replayed, (3..=20).collect::<Vec<u64>>());

    let run = run_client(&server, &[], "resume orders 1 another-epoch\n").await;
    run.assert_success();
    assert_eq!(run.reply("cli-1")["recovered"], false, "{run:?}");
    assert!(
        run.events().is_empty(),
        "another epoch replays nothing: {run:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_payload_that_is_not_json_is_sent_as_a_string_and_reaches_other_clients() {
    let server = TestServer::start(&[]).await;
    server.create_topic("chat").await;
    let mut listener = server.ws().await;
    subscribe(&mut listener, "chat", 0).await;

    let run = run_client(&server, &[], "pub chat hello, \"world\" {\npub chat 7\n").await;
    run.assert_success();
    assert_ack(run.reply("cli-1"), "chat", "cli-1");
    assert_ack(run.reply("cli-2"), "chat", "cli-2");

    let first = recv(&mut listener).await;
    assert_eq!(first["type"], "event", "{first}");
    assert_eq!(
        first["message"]["payload"], r#"hello, "world" {"#,
        "{first}"
    );
    let second = recv(&mut listener).await;
    assert_eq!(second["message"]["payload"], 7, "{second}");
    server.stop().await;
}

#[tokio::test]
async fn a_bad_command_is_reported_on_stderr_and_the_rest_still_runs() {
    let server = TestServer::start(&[]).await;
    server.create_topic("orders").await;
    let run = run_client(
        &server,
        &[],
        "subscribe orders\nsub orders five\n\nping\npub nope 1\n",
    )
    .await;
    run.assert_success();
    assert!(
        run.stderr.contains("unknown command 'subscribe'")
            && run.stderr.contains("LAST_N must be a whole number"),
        "{run:?}"
    );
    // Skipped lines send nothing: the ping is the first request.
    assert_pong(run.reply("cli-1"), "cli-1");
    let error = run.reply("cli-2");
    assert_eq!(error["type"], "error", "{run:?}");
    assert_eq!(error["error"]["code"], "TOPIC_NOT_FOUND", "{run:?}");
    assert_eq!(run.frames.len(), 2, "{run:?}");
    server.stop().await;
}

#[tokio::test]
async fn an_api_key_or_bearer_credential_opens_the_connection() {
    let server = TestServer::start(&["--api-key", "k1,k2"]).await;
    for args in [&["--api-key", "k1"][..], &["--token", "k2"][..]] {
        let run = run_client(&server, args, "ping\n").await;
        run.assert_success();
        assert_pong(run.reply("cli-1"), "cli-1");
    }
    server.stop().await;
}

#[tokio::test]
async fn an_access_token_is_sent_as_a_bearer_token() {
    let server = TestServer::start(&["--jwt-secret", "s3cret", "--api-key", "admin"]).await;
    server.create_topic_with_key("orders.eu", "admin").await;
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let claims = ringcast::auth::Claims {
        exp,
        sub: Some("alice".into()),
        subscribe: vec!["orders.*".into()],
        ..Default::default()
    };
    let token = ringcast::auth::mint_hs256("s3cret", &claims);
    let run = run_client(
        &server,
        &["--token", &token],
        "sub orders.eu\npub orders.eu 1\n",
    )
    .await;
    run.assert_success();
    assert_ack(run.reply("cli-1"), "orders.eu", "cli-1");
    assert_eq!(
        run.reply("cli-2")["error"]["code"],
        "UNAUTHORIZED",
        "{run:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_refused_upgrade_exits_non_zero_with_the_reason() {
    let server = TestServer::start(&["--api-key", "k1"]).await;
    for args in [&[][..], &["--api-key", "wrong"][..]] {
        let run = run_client(&server, args, "ping\n").await;
        assert!(!run.status.success(), "{args:?}: {run:?}");
        assert!(run.frames.is_empty(), "{run:?}");
        assert!(
            run.stderr
                .contains("the server refused the WebSocket upgrade: 401 Unauthorized"),
            "{args:?}: {run:?}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn an_unreachable_or_unsupported_url_exits_non_zero() {
    let server = TestServer::start(&[]).await;
    let addr = server.addr;
    server.stop().await;
    for (url, expected) in [
        (format!("ws://{addr}/ws"), "cannot connect to"),
        (format!("wss://{addr}/ws"), "wss:// is not supported"),
        (format!("http://{addr}/ws"), "is not a ws:// URL"),
    ] {
        let mut child = spawn_client(&url, &[]);
        drop(child.stdin.take());
        let run = finish(child).await;
        assert!(!run.status.success(), "{url}: {run:?}");
        assert!(run.stderr.contains(expected), "{url}: {run:?}");
    }
}

#[tokio::test]
async fn quit_ends_the_session_while_input_is_still_open() {
    let server = TestServer::start(&[]).await;
    let mut child = spawn_client(&server.ws_url(), &[]);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"quit\n").await.unwrap();
    let run = finish(child).await;
    run.assert_success();
    assert!(run.frames.is_empty(), "{run:?}");
    drop(stdin);
    // The client closed its connection.
    server.wait_until_idle().await;
    server.stop().await;
}

#[tokio::test]
async fn a_server_that_closes_the_connection_makes_the_client_fail() {
    let server = TestServer::start(&[]).await;
    server.create_topic("orders").await;
    let mut child = spawn_client(&server.ws_url(), &[]);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"sub orders\n").await.unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let ack = tokio::time::timeout(RECV_TIMEOUT, stdout.next_line())
        .await
        .expect("the ack in time")
        .unwrap()
        .expect("a line");
    assert_ack(&serde_json::from_str(&ack).unwrap(), "orders", "cli-1");

    // Input stays open: only the server's close ends the client.
    server.stop().await;
    let status = tokio::time::timeout(CLIENT_DEADLINE, child.wait())
        .await
        .expect("the client exits when the server closes")
        .unwrap();
    assert!(!status.success(), "{status:?}");
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr)
        .await
        .unwrap();
    assert!(
        stderr.contains("the server closed the connection: 1001 (server shutting down)"),
        "{stderr}"
    );
    drop(stdin);
}

#[tokio::test]
async fn pub_to_several_topics_broadcasts_with_the_clients_credential() {
    let server = TestServer::start(&["--api-key", "k"]).await;
    for topic in ["a", "b"] {
        server.create_topic_with_key(topic, "k").await;
    }
    let run = run_client(
        &server,
        &["--api-key", "k"],
        "sub a\nsub b\npub a,nope,b {\"x\": 1}\nping\n",
    )
    .await;
    run.assert_success();
    assert_eq!(run.stderr, "", "{run:?}");
    let answer = run
        .frames
        .iter()
        .find(|frame| frame.get("results").is_some())
        .unwrap_or_else(|| panic!("no broadcast answer: {run:?}"));
    assert_eq!(
        answer["results"][0],
        serde_json::json!({ "topic": "a", "seq": 1 })
    );
    assert_eq!(answer["results"][1]["error"]["code"], "TOPIC_NOT_FOUND");
    assert_eq!(
        answer["results"][2],
        serde_json::json!({ "topic": "b", "seq": 1 })
    );
    let events: Vec<(&Value, &Value)> = run
        .events()
        .iter()
        .map(|event| (&event["topic"], &event["message"]["payload"]["x"]))
        .collect();
    assert_eq!(events.len(), 2, "{run:?}");
    assert!(events.iter().all(|(_, x)| **x == 1), "{run:?}");

    // A refused broadcast is told on stderr, and the session goes on.
    let refused = run_client(&server, &["--api-key", "k"], "pub a,a 1\nping\n").await;
    refused.assert_success();
    assert!(
        refused.stderr.contains("POST /broadcast: 400 Bad Request")
            && refused.stderr.contains("topics[1]"),
        "{refused:?}"
    );
    assert_pong(refused.reply("cli-1"), "cli-1");
    server.stop().await;
}

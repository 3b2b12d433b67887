//! A WebSocket route of the embedder's (`Server::route`, what
//! `examples/autobahn_echo.rs` serves the Autobahn TestSuite with): its
//! connections are `/ws` ones with another message handler, so messages
//! reach the handler reassembled and typed, pings are answered, a client's
//! close is echoed, and `/ws` stays the broker's.

use std::sync::Arc;

use ringcast::send::Outbox;
use ringcast::wire::frame::frame_of;
use ringcast::ws::{Message, MessageHandler, Route};

use crate::common::*;

const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// Echoes each message, as the Autobahn echo does (without compression).
struct Echo(Arc<Outbox>);

impl MessageHandler for Echo {
    async fn on_message(&mut self, message: Message) {
        self.0
            .push_held_reply(frame_of(message.opcode(), &[&message.data]));
    }
}

async fn echo_server() -> TestServer {
    TestServer::start_with_route(&[], Route::new("/echo", Echo)).await
}

#[tokio::test]
async fn messages_reach_the_handler_whole_and_typed() {
    let server = echo_server().await;
    let mut raw = RawClient::connect_at(&server, "/echo").await;
    raw.send_frame(OP_TEXT, true, "héllo".as_bytes()).await;
    raw.send_frame(OP_BINARY, false, &[0, 1]).await;
    raw.send_frame(OP_PING, true, b"p").await;
    raw.send_frame(OP_CONTINUATION, true, &[0xFF]).await;
    assert_eq!(
        raw.read_frame().await,
        Some((OP_TEXT, "héllo".as_bytes().to_vec()))
    );
    assert_eq!(raw.read_frame().await, Some((OP_PONG, b"p".to_vec())));
    assert_eq!(raw.read_frame().await, Some((OP_BINARY, vec![0, 1, 0xFF])));
    server.stop().await;
}

/// Failed before the writer learnt that the reader was done from the
/// connection rather than from the broker's session: a handler of the
/// embedder's never let the writer send its close frame.
#[tokio::test]
async fn a_client_close_is_echoed_and_the_connection_ends() {
    let server = echo_server().await;
    let mut raw = RawClient::connect_at(&server, "/echo").await;
    raw.send_frame(OP_TEXT, true, b"last").await;
    raw.send_frame(OP_CLOSE, true, &[0x03, 0xE8]).await;
    assert_eq!(
        raw.read_to_eof().await,
        vec![(OP_TEXT, b"last".to_vec()), (OP_CLOSE, vec![0x03, 0xE8])]
    );
    server.stop().await;
}

#[tokio::test]
async fn protocol_errors_close_as_on_ws() {
    let server = echo_server().await;
    let mut raw = RawClient::connect_at(&server, "/echo").await;
    raw.send_frame(OP_TEXT, true, &[0xC0, 0x80]).await;
    assert_eq!(raw.close_code().await, 1007);
    server.stop().await;
}

#[tokio::test]
async fn ws_stays_the_brokers() {
    let server = echo_server().await;
    let mut raw = RawClient::connect(&server).await;
    raw.send_frame(OP_TEXT, true, br#"{"type":"ping","request_id":"r"}"#)
        .await;
    assert_pong(&raw.read_json().await, "r");
    server.stop().await;
}

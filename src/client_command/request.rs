//! A command line typed to `ringcast client`, read as the contract's
//! request frame.

use serde::Serialize;
use serde_json::value::RawValue;

/// What the client understands, for error messages.
pub const USAGE: &str = "commands: sub TOPIC [LAST_N], resume TOPIC SEQ [EPOCH], unsub TOPIC, \
                         pub TOPIC[,TOPIC...] PAYLOAD, ping, quit";

/// One command line, understood.
#[derive(Debug)]
pub enum Command {
    /// A frame to send; it gets its `request_id` when sent.
    Send(Request),
    /// A message to several topics, which goes over REST (`POST
    /// /broadcast`): the WebSocket protocol has no frame for it.
    Broadcast(Broadcast),
    /// Close the connection now.
    Quit,
}

/// A client frame of the contract, without its `request_id`.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Request {
    Subscribe {
        topic: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        last_n: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        since_seq: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        epoch: Option<String>,
    },
    Unsubscribe {
        topic: String,
    },
    Publish {
        topic: String,
        message: Message,
    },
    Ping,
}

/// A published message: a fresh id, and the payload exactly as typed (not
/// re-encoded, so large numbers keep every digit).
#[derive(Debug, Serialize)]
pub struct Message {
    id: String,
    payload: Box<RawValue>,
}

/// The body of a `POST /broadcast`.
#[derive(Debug, Serialize)]
pub struct Broadcast {
    topics: Vec<String>,
    message: Message,
}

impl Broadcast {
    pub fn to_body(&self) -> String {
        serde_json::to_string(self).expect("a broadcast always serializes")
    }
}

impl Request {
    /// The frame's JSON text, carrying `request_id`.
    pub fn to_frame(&self, request_id: &str) -> String {
        #[derive(Serialize)]
        struct WithId<'a> {
            #[serde(flatten)]
            request: &'a Request,
            request_id: &'a str,
        }
        serde_json::to_string(&WithId {
            request: self,
            request_id,
        })
        .expect("a request always serializes")
    }
}

/// Reads one command line: `Ok(None)` for a blank line, `Err` with what is
/// wrong in words.
pub fn parse(line: &str) -> Result<Option<Command>, String> {
    let line = line.trim();
    let (verb, rest) = split_word(line);
    let command = match verb {
        "" => return Ok(None),
        "quit" => {
            no_more(rest, "quit")?;
            Command::Quit
        }
        "ping" => {
            no_more(rest, "ping")?;
            Command::Send(Request::Ping)
        }
        "sub" => {
            let usage = "sub TOPIC [LAST_N]";
            let (topic, rest) = required_word(rest, usage)?;
            let (last_n, rest) = split_word(rest);
            no_more(rest, usage)?;
            Command::Send(Request::Subscribe {
                topic: topic.to_owned(),
                last_n: optional_count(last_n, "LAST_N")?,
                since_seq: None,
                epoch: None,
            })
        }
        "resume" => {
            let usage = "resume TOPIC SEQ [EPOCH]";
            let (topic, rest) = required_word(rest, usage)?;
            let (since_seq, rest) = required_word(rest, usage)?;
            let (epoch, rest) = split_word(rest);
            no_more(rest, usage)?;
            Command::Send(Request::Subscribe {
                topic: topic.to_owned(),
                last_n: None,
                since_seq: optional_count(since_seq, "SEQ")?,
                epoch: (!epoch.is_empty()).then(|| epoch.to_owned()),
            })
        }
        "unsub" => {
            let usage = "unsub TOPIC";
            let (topic, rest) = required_word(rest, usage)?;
            no_more(rest, usage)?;
            Command::Send(Request::Unsubscribe {
                topic: topic.to_owned(),
            })
        }
        "pub" => {
            let usage = "pub TOPIC[,TOPIC...] PAYLOAD";
            let (topics, payload) = required_word(rest, usage)?;
            if payload.is_empty() {
                return Err(format!("missing PAYLOAD; usage: {usage}"));
            }
            let message = Message {
                id: uuid::Uuid::new_v4().to_string(),
                payload: json_or_string(payload),
            };
            // Topic names have no comma.
            match topics.split(',').collect::<Vec<_>>().as_slice() {
                [topic] => Command::Send(Request::Publish {
                    topic: (*topic).to_owned(),
                    message,
                }),
                several if several.contains(&"") => {
                    return Err(format!("an empty topic name in '{topics}'; usage: {usage}"))
                }
                several => Command::Broadcast(Broadcast {
                    topics: several.iter().map(|topic| (*topic).to_owned()).collect(),
                    message,
                }),
            }
        }
        unknown => return Err(format!("unknown command '{unknown}'; {USAGE}")),
    };
    Ok(Some(command))
}

/// The first word of `text` and the rest, trimmed; both empty at the end.
fn split_word(text: &str) -> (&str, &str) {
    match text.split_once(char::is_whitespace) {
        Some((word, rest)) => (word, rest.trim_start()),
        None => (text, ""),
    }
}

fn required_word<'a>(text: &'a str, usage: &str) -> Result<(&'a str, &'a str), String> {
    match split_word(text) {
        ("", _) => Err(format!("missing argument; usage: {usage}")),
        found => Ok(found),
    }
}

fn no_more(rest: &str, usage: &str) -> Result<(), String> {
    if rest.is_empty() {
        Ok(())
    } else {
        Err(format!("unexpected '{rest}'; usage: {usage}"))
    }
}

/// An optional whole number ≥ 0 (`""` is none).
fn optional_count(word: &str, name: &str) -> Result<Option<u64>, String> {
    if word.is_empty() {
        return Ok(None);
    }
    word.parse()
        .map(Some)
        .map_err(|_| format!("{name} must be a whole number ≥ 0, not '{word}'"))
}

/// `text` itself when it is JSON, else `text` as a JSON string.
fn json_or_string(text: &str) -> Box<RawValue> {
    RawValue::from_string(text.to_owned()).unwrap_or_else(|_| {
        let quoted = serde_json::to_string(text).expect("a string always serializes");
        RawValue::from_string(quoted).expect("a serialized string is JSON")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// The frame a line becomes, as JSON, with request id "r".
    fn frame(line: &str) -> Value {
        match parse(line) {
            Ok(Some(Command::Send(request))) => {
                serde_json::from_str(&request.to_frame("r")).unwrap()
            }
            other => panic!("{line:?} is not a request: {other:?}"),
        }
    }

    #[test]
    fn commands_become_contract_frames() {
        assert_eq!(
            frame("sub orders"),
            json!({"type": "subscribe", "topic": "orders", "request_id": "r"})
        );
        assert_eq!(
            frame("  sub   orders  5 "),
            json!({"type": "subscribe", "topic": "orders", "last_n": 5, "request_id": "r"})
        );
        assert_eq!(
            frame("resume orders 40"),
            json!({"type": "subscribe", "topic": "orders", "since_seq": 40, "request_id": "r"})
        );
        assert_eq!(
            frame("resume orders 40 e-1"),
            json!({"type": "subscribe", "topic": "orders", "since_seq": 40, "epoch": "e-1",
                   "request_id": "r"})
        );
        assert_eq!(
            frame("unsub orders"),
            json!({"type": "unsubscribe", "topic": "orders", "request_id": "r"})
        );
        assert_eq!(frame("ping"), json!({"type": "ping", "request_id": "r"}));
        assert!(matches!(parse("quit"), Ok(Some(Command::Quit))));
        assert!(matches!(parse("   "), Ok(None)));
    }

    #[test]
    fn a_payload_is_json_when_it_parses_and_a_string_otherwise() {
        let published = frame(r#"pub orders {"order": 42, "items": [1, 2]}"#);
        assert_eq!(published["type"], "publish");
        assert_eq!(published["topic"], "orders");
        assert_eq!(
            published["message"]["payload"],
            json!({"order": 42, "items": [1, 2]})
        );
        let id = published["message"]["id"].as_str().unwrap();
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");

        assert_eq!(frame("pub t 42")["message"]["payload"], 42);
        assert_eq!(frame(r#"pub t "quoted""#)["message"]["payload"], "quoted");
        assert_eq!(
            frame(r#"pub t hello "world"  again"#)["message"]["payload"],
            r#"hello "world"  again"#
        );
        assert_eq!(frame("pub t {not json")["message"]["payload"], "{not json");
    }

    #[test]
    fn several_topics_make_a_broadcast_body() {
        let Ok(Some(Command::Broadcast(broadcast))) = parse(r#"pub a,b {"x": 1}"#) else {
            panic!("not a broadcast");
        };
        let body: Value = serde_json::from_str(&broadcast.to_body()).unwrap();
        assert_eq!(body["topics"], json!(["a", "b"]));
        assert_eq!(body["message"]["payload"], json!({"x": 1}));
        assert!(uuid::Uuid::parse_str(body["message"]["id"].as_str().unwrap()).is_ok());
    }

    #[test]
    fn a_json_payload_is_sent_as_typed() {
        let Ok(Some(Command::Send(request))) = parse("pub t 123456789012345678901234567890") else {
            panic!("not a request");
        };
        assert!(
            request
                .to_frame("r")
                .contains(r#""payload":123456789012345678901234567890"#),
            "{}",
            request.to_frame("r")
        );
    }

    #[test]
    fn malformed_commands_say_what_is_wrong() {
        for (line, expected) in [
            ("subscribe orders", "unknown command 'subscribe'"),
            ("sub", "usage: sub TOPIC [LAST_N]"),
            ("sub orders five", "LAST_N must be a whole number"),
            ("sub orders -1", "LAST_N must be a whole number"),
            ("sub orders 1 2", "unexpected '2'"),
            ("resume orders", "usage: resume TOPIC SEQ [EPOCH]"),
            ("resume orders x", "SEQ must be a whole number"),
            ("resume orders 1 e extra", "unexpected 'extra'"),
            ("unsub", "usage: unsub TOPIC"),
            ("pub orders", "missing PAYLOAD"),
            ("pub", "usage: pub TOPIC[,TOPIC...] PAYLOAD"),
            ("pub a,,b 1", "an empty topic name in 'a,,b'"),
            ("ping now", "usage: ping"),
            ("quit now", "usage: quit"),
        ] {
            match parse(line) {
                Err(why) => assert!(why.contains(expected), "{line:?}: {why}"),
                Ok(command) => panic!("{line:?} was accepted: {command:?}"),
            }
        }
    }
}

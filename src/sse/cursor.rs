//! The cursor: the `id:` of every event of a stream, and what a reconnect
//! sends back as `Last-Event-ID`. Opaque to clients; here it is each topic
//! of the stream as `<topic>.<epoch>.<seq>`, joined by `,`: the topic's
//! epoch and the last `seq` of it the stream delivered (or, before any,
//! where its subscription started). Topic names have no `,`, epochs
//! (letters, digits and `-`) and sequence numbers no `.`, so it parses
//! from the right; it names the
//! epoch, so it resumes on any node of a cluster, and after a restart it
//! is told apart from the new history.

use std::io::Write;

use bytes::Bytes;

use crate::broker::is_valid_topic_name;
use crate::error::Error;

/// One topic's place in a cursor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    pub topic: String,
    pub epoch: String,
    /// The last `seq` delivered.
    pub seq: u64,
}

/// A cursor a client sent back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    positions: Vec<Position>,
}

impl Cursor {
    /// A cursor this server wrote; anything else is `BAD_REQUEST`.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let malformed = || Error::BadRequest("the event id is not a ringcast cursor".into());
        let mut positions = Vec::new();
        for entry in text.split(',') {
            let mut fields = entry.rsplitn(3, '.');
            let (Some(seq), Some(epoch), Some(topic)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(malformed());
            };
            let seq = seq.parse::<u64>().map_err(|_| malformed())?;
            let epoch_chars = |byte: u8| byte.is_ascii_alphanumeric() || byte == b'-';
            if epoch.is_empty() || !epoch.bytes().all(epoch_chars) || !is_valid_topic_name(topic) {
                return Err(malformed());
            }
            positions.push(Position {
                topic: topic.to_owned(),
                epoch: epoch.to_owned(),
                seq,
            });
        }
        Ok(Self { positions })
    }

    pub fn position_of(&self, topic: &str) -> Option<&Position> {
        self.positions
            .iter()
            .find(|position| position.topic == topic)
    }
}

/// A stream's cursor as its events are written: each topic's part up to
/// its `seq`, made once, and the `seq` it is at.
pub struct CursorWriter {
    topics: Vec<TopicPart>,
}

struct TopicPart {
    /// `<topic>.<epoch>.`
    part: String,
    topic_len: usize,
    seq: u64,
}

impl CursorWriter {
    /// A stream's cursor before its first event: where each topic's
    /// subscription started.
    pub fn new(start: &[Position]) -> Self {
        Self {
            topics: start
                .iter()
                .map(|position| TopicPart {
                    part: format!("{}.{}.", position.topic, position.epoch),
                    topic_len: position.topic.len(),
                    seq: position.seq,
                })
                .collect(),
        }
    }

    /// An event of `topic` numbered `seq` is written next: the `id:` line
    /// it carries, followed by the start of its `data:` line.
    pub fn advance(&mut self, topic: &str, seq: u64) -> Bytes {
        if let Some(at) = self
            .topics
            .iter_mut()
            .find(|at| &at.part[..at.topic_len] == topic)
        {
            at.seq = seq;
        }
        let longest_seq = 20;
        let len = self
            .topics
            .iter()
            .map(|at| at.part.len() + longest_seq + 1)
            .sum::<usize>();
        let mut line = Vec::with_capacity(len + "id: \ndata: ".len());
        line.extend_from_slice(b"id: ");
        for (index, at) in self.topics.iter().enumerate() {
            if index > 0 {
                line.push(b',');
            }
            line.extend_from_slice(at.part.as_bytes());
            write!(line, "{}", at.seq).expect("writing to a Vec cannot fail");
        }
        line.extend_from_slice(b"\ndata: ");
        Bytes::from(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position(topic: &str, epoch: &str, seq: u64) -> Position {
        Position {
            topic: topic.into(),
            epoch: epoch.into(),
            seq,
        }
    }

    #[test]
    fn a_written_cursor_parses_back() {
        let mut writer =
            CursorWriter::new(&[position("a.b:c", "0f-1", 3), position("a", "0f-2", 0)]);
        assert!(writer
            .advance("a.b:c", 3)
            .starts_with(b"id: a.b:c.0f-1.3,a.0f-2.0\n"));
        let line = writer.advance("a", 9);
        let text = std::str::from_utf8(&line).unwrap();
        let id = text
            .strip_prefix("id: ")
            .unwrap()
            .strip_suffix("\ndata: ")
            .unwrap();
        assert_eq!(id, "a.b:c.0f-1.3,a.0f-2.9");
        let cursor = Cursor::parse(id).unwrap();
        assert_eq!(
            cursor.position_of("a.b:c"),
            Some(&position("a.b:c", "0f-1", 3))
        );
        assert_eq!(cursor.position_of("a"), Some(&position("a", "0f-2", 9)));
        assert_eq!(cursor.position_of("b"), None);
    }

    #[test]
    fn anything_else_is_refused() {
        for text in [
            "", "a", "a.1", "a..1", "a.e.x", "a.e.-1", ".e.1", "a.e.1,", "a b.e.1",
        ] {
            assert!(Cursor::parse(text).is_err(), "{text:?}");
        }
    }
}

//! What a client asks of `GET /sse`: its topics, how many past events of
//! each it wants first, its `client_id`, and where a reconnect resumes.

use hyper::header::HeaderValue;

use crate::broker::is_valid_topic_name;
use crate::error::Error;
use crate::sse::cursor::Cursor;
use crate::wire::request::Replay;

/// Most topics one stream may name (a repeated one counts once).
pub const MAX_TOPICS: usize = 100;

/// A parsed `GET /sse` query.
#[derive(Debug, PartialEq, Eq)]
pub struct SseRequest {
    /// Distinct, in the order first named.
    pub topics: Vec<String>,
    /// `last_n`, for every topic the cursor does not cover.
    pub last_n: usize,
    pub client_id: Option<String>,
    pub cursor: Option<Cursor>,
}

impl SseRequest {
    /// Parses the query and the `Last-Event-ID` header, which wins over
    /// `?last_event_id=` (a browser's reconnect sends its original URL and
    /// the newer cursor in the header); an empty one is none, as an
    /// `EventSource` that got no id would send. Credentials (`api_key`,
    /// `token`) and unknown parameters (a cache-buster) are left alone.
    pub fn parse(query: &str, last_event_id: Option<&HeaderValue>) -> Result<Self, Error> {
        let mut topics: Vec<String> = Vec::new();
        let (mut last_n, mut client_id, mut cursor_param) = (None, None, None);
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "topic" => {
                    if !is_valid_topic_name(&value) {
                        return Err(Error::BadRequest(format!(
                            "topic '{value}' is not a valid topic name"
                        )));
                    }
                    if !topics.iter().any(|topic| *topic == value) {
                        topics.push(value.into_owned());
                    }
                }
                "last_n" => {
                    let parsed = value
                        .parse::<usize>()
                        .map_err(|_| Error::BadRequest("last_n must be an integer >= 0".into()))?;
                    once(&mut last_n, parsed, &key)?;
                }
                "client_id" => once(&mut client_id, value.into_owned(), &key)?,
                "last_event_id" => once(&mut cursor_param, value.into_owned(), &key)?,
                _ => {}
            }
        }
        if topics.is_empty() {
            return Err(Error::BadRequest(
                "name at least one topic: /sse?topic=<name>".into(),
            ));
        }
        if topics.len() > MAX_TOPICS {
            return Err(Error::BadRequest(format!(
                "a stream takes at most {MAX_TOPICS} topics"
            )));
        }
        let header = last_event_id
            .map(|header| {
                header
                    .to_str()
                    .map_err(|_| Error::BadRequest("Last-Event-ID is not a ringcast cursor".into()))
            })
            .transpose()?;
        let cursor = [header, cursor_param.as_deref()]
            .into_iter()
            .flatten()
            .find(|text| !text.is_empty())
            .map(Cursor::parse)
            .transpose()?;
        Ok(Self {
            topics,
            last_n: last_n.unwrap_or(0),
            client_id,
            cursor,
        })
    }

    /// How `topic`'s subscription starts: after the cursor's position, as
    /// `since_seq` with `epoch`, when the cursor covers it; else with its
    /// last `last_n` events.
    pub fn replay_of(&self, topic: &str) -> Replay<'_> {
        match self
            .cursor
            .as_ref()
            .and_then(|cursor| cursor.position_of(topic))
        {
            Some(position) => Replay::Since {
                seq: position.seq,
                epoch: Some(&position.epoch),
            },
            None => Replay::Last(self.last_n),
        }
    }
}

/// Sets a parameter that may be given once.
fn once<T>(slot: &mut Option<T>, value: T, key: &str) -> Result<(), Error> {
    if slot.replace(value).is_some() {
        return Err(Error::BadRequest(format!("{key} is given twice")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &str) -> Result<SseRequest, Error> {
        SseRequest::parse(query, None)
    }

    #[test]
    fn topics_are_distinct_and_in_order() {
        let request = parse("topic=b&topic=a&topic=b&api_key=k&_=1").unwrap();
        assert_eq!(request.topics, ["b", "a"]);
        assert_eq!((request.last_n, request.client_id), (0, None));
        let request = parse("topic=a&last_n=5&client_id=me").unwrap();
        assert_eq!(request.last_n, 5);
        assert_eq!(request.client_id.as_deref(), Some("me"));
    }

    #[test]
    fn bad_parameters_are_refused() {
        let too_many: String = (0..=MAX_TOPICS).map(|n| format!("topic=t{n}&")).collect();
        for query in [
            "",
            "last_n=1",
            "topic=a&last_n=-1",
            "topic=a&last_n=x",
            "topic=a&last_n=1&last_n=2",
            "topic=a%20b",
            "topic=a&last_event_id=nonsense",
            &too_many,
        ] {
            assert!(matches!(parse(query), Err(Error::BadRequest(_))), "{query}");
        }
    }

    #[test]
    fn the_header_cursor_wins_over_the_query() {
        let header = HeaderValue::from_static("a.e-1.7");
        let request = SseRequest::parse("topic=a&last_event_id=a.e-1.3", Some(&header)).unwrap();
        assert_eq!(
            request.replay_of("a"),
            Replay::Since {
                seq: 7,
                epoch: Some("e-1")
            }
        );
        let request =
            SseRequest::parse("topic=a&topic=b&last_n=4&last_event_id=a.e-1.3", None).unwrap();
        assert_eq!(
            request.replay_of("a"),
            Replay::Since {
                seq: 3,
                epoch: Some("e-1")
            }
        );
        assert_eq!(request.replay_of("b"), Replay::Last(4));
    }
}

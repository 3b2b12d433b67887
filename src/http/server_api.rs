//! The server API's connection commands, for application backends:
//! `POST /disconnect` and `POST /unsubscribe`. Each body names its
//! connections by exactly one selector (`connection`, `client_id` or
//! `subject`); the node acts on its own connections and, in cluster mode,
//! has every other node act on theirs.

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{Map, Value};

use crate::connections::{Command, Reach, Selector};
use crate::error::Error;
use crate::http::handlers::{check_name, read_body, Reply};
use crate::http::response::{json_response, Body as ResponseBody};
use crate::node::Node;
use crate::wire::close::fit_close_reason;
use crate::wire::request::whole_number;

/// The close reason when a disconnect gives none.
const DEFAULT_REASON: &str = "disconnected";

/// `POST /disconnect` `{<selector>, "reason"?}`: 200 `{"disconnected":N}`.
pub async fn disconnect(node: &Node, request: Request<Incoming>) -> Reply {
    let mut body = Body::read(node, request, &["reason"]).await?;
    let selector = body.selector()?;
    let reason = body.string("reason")?;
    let reason = fit_close_reason(reason.as_deref().unwrap_or(DEFAULT_REASON)).to_owned();
    let reach = node
        .command(Command::Disconnect { selector, reason })
        .await?;
    Ok(counted("disconnected", reach))
}

/// `POST /unsubscribe` `{"topic":.., <selector>}`: 200 `{"unsubscribed":N}`.
pub async fn unsubscribe(node: &Node, request: Request<Incoming>) -> Reply {
    let mut body = Body::read(node, request, &["topic"]).await?;
    let selector = body.selector()?;
    let topic = body
        .string("topic")?
        .ok_or_else(|| Error::BadRequest("topic is required".into()))?;
    check_name(&topic)?;
    let reach = node
        .command(Command::Unsubscribe { topic, selector })
        .await?;
    Ok(counted("unsubscribed", reach))
}

/// `{"<counted>":N}`; in a cluster where some node did not answer in
/// time, with `"partial":true` and `"missing_nodes"`, as presence says it.
fn counted(counted: &'static str, reach: Reach) -> Response<ResponseBody> {
    let mut body = Map::new();
    body.insert(counted.into(), reach.count.into());
    if !reach.missing_nodes.is_empty() {
        body.insert("partial".into(), true.into());
        body.insert("missing_nodes".into(), reach.missing_nodes.into());
    }
    json_response(StatusCode::OK, &body)
}

/// The selector members, exactly one of which a body must have.
const SELECTORS: [&str; 3] = ["connection", "client_id", "subject"];

/// A command's body: a JSON object of the selectors and `others`, nothing
/// else.
struct Body(Map<String, Value>);

impl Body {
    async fn read(node: &Node, request: Request<Incoming>, others: &[&str]) -> Result<Self, Error> {
        let bytes = read_body(node.config(), request).await?;
        let members = match serde_json::from_slice(&bytes) {
            Ok(Value::Object(members)) => members,
            Ok(_) => return Err(Error::BadRequest("body must be a JSON object".into())),
            Err(why) => return Err(Error::BadRequest(format!("invalid JSON: {why}"))),
        };
        if let Some(unknown) = members
            .keys()
            .find(|key| !SELECTORS.contains(&key.as_str()) && !others.contains(&key.as_str()))
        {
            return Err(Error::BadRequest(format!(
                "unknown member {unknown:?}; expected one of {}, {}",
                SELECTORS.join(", "),
                others.join(", ")
            )));
        }
        Ok(Self(members))
    }

    /// The one selector given.
    fn selector(&mut self) -> Result<Selector, Error> {
        let given: Vec<&str> = SELECTORS
            .into_iter()
            .filter(|name| self.0.contains_key(*name))
            .collect();
        let [name] = given[..] else {
            return Err(Error::BadRequest(format!(
                "give exactly one of connection, client_id, subject (got {})",
                if given.is_empty() {
                    "none".to_owned()
                } else {
                    given.join(" and ")
                }
            )));
        };
        if name == "connection" {
            return match self.0.remove(name).as_ref().and_then(whole_number) {
                Some(id) => Ok(Selector::Connection(id)),
                None => Err(Error::BadRequest(
                    "connection must be a non-negative integer (a connection id)".into(),
                )),
            };
        }
        let value = self
            .string(name)?
            .filter(|value| !value.is_empty())
            .ok_or_else(|| Error::BadRequest(format!("{name} must be a non-empty string")))?;
        Ok(if name == "client_id" {
            Selector::ClientId(value)
        } else {
            Selector::Subject(value)
        })
    }

    /// Member `name` if present, which must then be a string.
    fn string(&mut self, name: &str) -> Result<Option<String>, Error> {
        match self.0.remove(name) {
            None => Ok(None),
            Some(Value::String(value)) => Ok(Some(value)),
            Some(_) => Err(Error::BadRequest(format!("{name} must be a string"))),
        }
    }
}

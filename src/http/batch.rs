//! Batch publish: `POST /topics/{name}/messages` with a JSON array of
//! messages, published in order, all or nothing.

use hyper::{Response, StatusCode};
use serde::Serialize;

use crate::error::Error;
use crate::http::response::{json_response, Body};
use crate::node::Node;
use crate::wire::batch::MessageTexts;

#[derive(Serialize)]
struct BatchPublished<'a> {
    status: &'static str,
    topic: &'a str,
    /// Each message's `seq`, in the batch's order.
    seqs: Vec<u64>,
    /// Indexes of the messages answered as duplicates within
    /// `DEDUP_WINDOW` (their `seq` is the original's); absent when none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    duplicates: Vec<usize>,
}

/// Publishes a batch body to topic `name` (known to exist): every message
/// is checked before any is published.
pub async fn publish_batch(node: &Node, name: &str, body: &[u8]) -> Result<Response<Body>, Error> {
    let mut texts = MessageTexts::of_batch(body).map_err(Error::BadRequest)?;
    let messages = texts.messages().map_err(Error::BadRequest)?;
    let publications = node.publish_batch(name, &messages).await?;
    let mut seqs = Vec::with_capacity(messages.len());
    let mut duplicates = Vec::new();
    for (index, publication) in publications.into_iter().enumerate() {
        let receipt = publication.acknowledged().await?;
        seqs.push(receipt.seq);
        if receipt.duplicate {
            duplicates.push(index);
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &BatchPublished {
            status: "published",
            topic: name,
            seqs,
            duplicates,
        },
    ))
}

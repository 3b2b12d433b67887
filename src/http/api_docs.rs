//! The API's machine-readable documents, kept as JSON files in `api/` (so
//! validators and code generators read them as they are) and embedded in
//! the binary: `GET /openapi.json` (OpenAPI 3.1, the REST API) and
//! `GET /asyncapi.json` (AsyncAPI 3.0, the WebSocket protocol).
//! The REST tests keep the OpenAPI document and `http::routes::ROUTES` equal.

pub const OPENAPI: &[u8] = include_bytes!("../../api/openapi.json");
pub const ASYNCAPI: &[u8] = include_bytes!("../../api/asyncapi.json");

//! REST on the listener's one port: `service` takes each request through
//! origins, credentials, its [`routes`] entry and permissions to the
//! `handlers` (the server API's connection commands in `server_api`),
//! which answer through `response`; beside them the
//! browser `pages`, the API documents ([`api_docs`]), CORS (`cors`) and
//! `GET /metrics` (`prometheus`).

pub mod api_docs;
pub(crate) mod cors;
pub(crate) mod handlers;
pub(crate) mod pages;
pub(crate) mod prometheus;
pub(crate) mod response;
pub mod routes;
pub(crate) mod server_api;
pub(crate) mod service;

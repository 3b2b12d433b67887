//! REST on the listener's one port: `service` takes each request through
//! origins, credentials, its [`routes`] entry and permissions to the
//! `handlers`, which answer through `response` (the server API's batch
//! publish and broadcast in `batch` and `broadcast`, its connection
//! commands in `server_api`); beside them the
//! browser `pages`, the API documents ([`api_docs`]), CORS (`cors`) and
//! `GET /metrics` (`prometheus`).

pub mod api_docs;
pub(crate) mod batch;
pub(crate) mod broadcast;
pub(crate) mod cors;
pub(crate) mod handlers;
pub(crate) mod pages;
pub(crate) mod prometheus;
pub(crate) mod response;
pub mod routes;
pub(crate) mod server_api;
pub(crate) mod service;

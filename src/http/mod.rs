//! REST on the listener's one port: [`service`] takes each request through
//! origins, credentials, its [`routes`] entry and permissions to the
//! [`handlers`], which answer through [`response`]; beside them the
//! browser [`pages`], the API documents ([`api_docs`]), CORS ([`cors`]) and
//! `GET /metrics` ([`prometheus`]).

pub mod api_docs;
pub mod cors;
pub mod handlers;
pub mod pages;
pub mod prometheus;
pub mod response;
pub mod routes;
pub mod service;

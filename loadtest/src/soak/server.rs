//! Readings of the server under soak: its RSS from /proc, its counts from
//! `GET /health` and its process-wide counters from `GET /stats`.

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::http::HttpClient;
use crate::procfs;
use crate::ws::WsUrl;

/// What `GET /health` counts.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize)]
pub struct Health {
    pub connections: u64,
    pub subscribers: u64,
    pub topics: u64,
}

/// The counters of `GET /stats` the soak reports (the per-topic map is skipped).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize)]
pub struct ServerTotals {
    pub connections_total: u64,
    pub published: u64,
    pub delivered: u64,
    pub dropped: u64,
    pub slow_consumer_disconnects: u64,
    pub panics: u64,
}

impl ServerTotals {
    /// What changed from `before` to `self`.
    pub fn since(&self, before: &ServerTotals) -> ServerTotals {
        ServerTotals {
            connections_total: self
                .connections_total
                .saturating_sub(before.connections_total),
            published: self.published.saturating_sub(before.published),
            delivered: self.delivered.saturating_sub(before.delivered),
            dropped: self.dropped.saturating_sub(before.dropped),
            slow_consumer_disconnects: self
                .slow_consumer_disconnects
                .saturating_sub(before.slow_consumer_disconnects),
            panics: self.panics.saturating_sub(before.panics),
        }
    }
}

pub struct Reading {
    pub rss_kib: Option<u64>,
    pub health: Health,
    pub totals: ServerTotals,
}

pub struct Server {
    rest: HttpClient,
    pid: Option<u32>,
}

impl Server {
    pub fn new(url: &WsUrl, api_key: Option<&str>, pid: Option<u32>) -> Server {
        Server {
            rest: HttpClient::new(url, api_key),
            pid,
        }
    }

    pub fn rss_kib(&self) -> Option<u64> {
        self.pid.and_then(procfs::rss_kib)
    }

    pub async fn health(&mut self) -> Result<Health> {
        self.get_json("/health").await
    }

    pub async fn read(&mut self) -> Result<Reading> {
        Ok(Reading {
            rss_kib: self.rss_kib(),
            health: self.health().await?,
            totals: self.get_json("/stats").await?,
        })
    }

    async fn get_json<T: DeserializeOwned>(&mut self, path: &str) -> Result<T> {
        let response = self.rest.get(path).await?;
        if response.status != 200 {
            bail!("GET {path} answered {}", response.status);
        }
        serde_json::from_slice(&response.body)
            .with_context(|| format!("GET {path}: {}", String::from_utf8_lossy(&response.body)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_servers_json() {
        let health: Health = serde_json::from_str(
            r#"{"status":"ok","uptime_sec":3,"topics":2,"subscribers":4,"connections":5}"#,
        )
        .unwrap();
        assert_eq!(
            (health.connections, health.subscribers, health.topics),
            (5, 4, 2)
        );
        let totals: ServerTotals = serde_json::from_str(
            r#"{"topics":{"a":{"messages":1,"subscribers":0}},"connections":0,"connections_total":9,
                "published":42,"delivered":126,"dropped":0,"slow_consumer_disconnects":2,
                "connections_refused":0,"panics":0}"#,
        )
        .unwrap();
        let before = ServerTotals {
            published: 40,
            ..ServerTotals::default()
        };
        let delta = totals.since(&before);
        assert_eq!((delta.published, delta.slow_consumer_disconnects), (2, 2));
    }
}

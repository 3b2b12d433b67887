//! The REST resources: the table the OpenAPI document is checked against,
//! a request path parsed into its route, and what each route lets anyone,
//! or a token, do.

use hyper::header::HeaderValue;
use hyper::Method;

use crate::auth::Permissions;
use crate::error::Error;
use crate::http::pages::{self, Page};

/// A REST resource as the OpenAPI document names it: its path template
/// and the methods it answers, besides `HEAD` (wherever `GET` is) and
/// `OPTIONS` (everywhere).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteSpec {
    pub path: &'static str,
    pub methods: &'static [&'static str],
}

const HEALTH: RouteSpec = RouteSpec {
    path: "/health",
    methods: &["GET"],
};
const STATS: RouteSpec = RouteSpec {
    path: "/stats",
    methods: &["GET"],
};
const METRICS: RouteSpec = RouteSpec {
    path: "/metrics",
    methods: &["GET"],
};
const OPENAPI: RouteSpec = RouteSpec {
    path: "/openapi.json",
    methods: &["GET"],
};
const ASYNCAPI: RouteSpec = RouteSpec {
    path: "/asyncapi.json",
    methods: &["GET"],
};
const TOPICS: RouteSpec = RouteSpec {
    path: "/topics",
    methods: &["GET", "POST"],
};
const TOPIC: RouteSpec = RouteSpec {
    path: "/topics/{name}",
    methods: &["GET", "DELETE"],
};
const TOPIC_MESSAGES: RouteSpec = RouteSpec {
    path: "/topics/{name}/messages",
    methods: &["GET", "POST"],
};
const TOPIC_SUBSCRIBERS: RouteSpec = RouteSpec {
    path: "/topics/{name}/subscribers",
    methods: &["GET"],
};
const SUBSCRIPTIONS: RouteSpec = RouteSpec {
    path: "/subscriptions",
    methods: &["GET"],
};
const SSE: RouteSpec = RouteSpec {
    path: "/sse",
    methods: &["GET"],
};
const BROADCAST: RouteSpec = RouteSpec {
    path: "/broadcast",
    methods: &["POST"],
};
const DISCONNECT: RouteSpec = RouteSpec {
    path: "/disconnect",
    methods: &["POST"],
};
const UNSUBSCRIBE: RouteSpec = RouteSpec {
    path: "/unsubscribe",
    methods: &["POST"],
};

/// Every REST resource the server answers (the WebSocket upgrade, `/ws`,
/// is in the AsyncAPI document instead). The REST tests check the
/// OpenAPI document lists exactly these, and the server answers each.
pub const ROUTES: [RouteSpec; 14] = [
    HEALTH,
    STATS,
    METRICS,
    OPENAPI,
    ASYNCAPI,
    TOPICS,
    TOPIC,
    TOPIC_MESSAGES,
    TOPIC_SUBSCRIBERS,
    SUBSCRIPTIONS,
    SSE,
    BROADCAST,
    DISCONNECT,
    UNSUBSCRIBE,
];

impl RouteSpec {
    /// The `Allow` header's value: the methods, `HEAD` after `GET`, and
    /// `OPTIONS`.
    pub fn allow(&self) -> HeaderValue {
        let mut allow = Vec::with_capacity(self.methods.len() + 2);
        for method in self.methods {
            allow.push(*method);
            if *method == "GET" {
                allow.push("HEAD");
            }
        }
        allow.push("OPTIONS");
        HeaderValue::from_str(&allow.join(", ")).expect("method names are valid header text")
    }
}

/// The REST resources, with their path segments percent-decoded.
pub enum Route {
    Health,
    Stats,
    Metrics,
    OpenApi,
    AsyncApi,
    Topics,
    Topic(String),
    TopicMessages(String),
    TopicSubscribers(String),
    Subscriptions,
    /// The event stream, which answers with a stream rather than a body.
    Sse,
    /// The server API's one message to many topics.
    Broadcast,
    /// The server API's connection commands.
    Disconnect,
    Unsubscribe,
    Page(&'static Page),
}

impl Route {
    pub fn parse(path: &str) -> Result<Self, Error> {
        let mut segments = Vec::new();
        for segment in path.trim_start_matches('/').split('/') {
            let decoded = percent_encoding::percent_decode_str(segment)
                .decode_utf8()
                .map_err(|_| Error::BadRequest("the path is not percent-encoded UTF-8".into()))?;
            segments.push(decoded);
        }
        let route = match segments.as_slice() {
            [health] if health == "health" => Self::Health,
            [stats] if stats == "stats" => Self::Stats,
            [metrics] if metrics == "metrics" => Self::Metrics,
            [openapi] if openapi == "openapi.json" => Self::OpenApi,
            [asyncapi] if asyncapi == "asyncapi.json" => Self::AsyncApi,
            [topics] if topics == "topics" => Self::Topics,
            [topics, name] if topics == "topics" => Self::Topic(name.to_string()),
            [topics, name, messages] if topics == "topics" && messages == "messages" => {
                Self::TopicMessages(name.to_string())
            }
            [topics, name, subscribers] if topics == "topics" && subscribers == "subscribers" => {
                Self::TopicSubscribers(name.to_string())
            }
            [subscriptions] if subscriptions == "subscriptions" => Self::Subscriptions,
            [sse] if sse == "sse" => Self::Sse,
            [broadcast] if broadcast == "broadcast" => Self::Broadcast,
            [disconnect] if disconnect == "disconnect" => Self::Disconnect,
            [unsubscribe] if unsubscribe == "unsubscribe" => Self::Unsubscribe,
            _ => match pages::find(path) {
                Some(page) => Self::Page(page),
                None => return Err(Error::NoRoute(path.to_owned())),
            },
        };
        Ok(route)
    }

    pub fn spec(&self) -> RouteSpec {
        match self {
            Self::Health => HEALTH,
            Self::Stats => STATS,
            Self::Metrics => METRICS,
            Self::OpenApi => OPENAPI,
            Self::AsyncApi => ASYNCAPI,
            Self::Topics => TOPICS,
            Self::Topic(_) => TOPIC,
            Self::TopicMessages(_) => TOPIC_MESSAGES,
            Self::TopicSubscribers(_) => TOPIC_SUBSCRIBERS,
            Self::Subscriptions => SUBSCRIPTIONS,
            Self::Sse => SSE,
            Self::Broadcast => BROADCAST,
            Self::Disconnect => DISCONNECT,
            Self::Unsubscribe => UNSUBSCRIBE,
            Self::Page(page) => RouteSpec {
                path: page.path(),
                methods: &["GET"],
            },
        }
    }

    /// What anyone may ask without a key: health for load balancers, the
    /// pages' scripts and styles, and which methods exist (a browser's
    /// preflight carries no credentials).
    pub fn is_public(&self, method: &Method) -> bool {
        let public_read = match self {
            Self::Health => true,
            Self::Page(page) => page.is_public(),
            _ => false,
        };
        *method == Method::OPTIONS || public_read && is_read(method)
    }

    /// Whether a token's permissions allow the request (an API key's allow
    /// everything). Topic management, presence, the server-wide views and
    /// a broadcast and the server API's connection commands need `admin`;
    /// publishing (one message or a batch) needs the topic in `publish`,
    /// reading its messages the topic in `subscribe`; the API documents
    /// and the pages
    /// need only a valid credential (the dashboard's data comes from
    /// `/stats` and `/topics`, which need `admin`). A stream needs each
    /// of its topics in `subscribe`, which only its query names (see
    /// `sse::open`).
    pub fn permits(&self, method: &Method, permissions: &Permissions) -> bool {
        match self {
            Self::Health | Self::OpenApi | Self::AsyncApi | Self::Page(_) | Self::Sse => true,
            Self::Stats
            | Self::Metrics
            | Self::Topics
            | Self::Topic(_)
            | Self::TopicSubscribers(_)
            | Self::Subscriptions
            | Self::Broadcast
            | Self::Disconnect
            | Self::Unsubscribe => permissions.is_admin(),
            Self::TopicMessages(name) if is_read(method) => permissions.may_subscribe(name),
            Self::TopicMessages(name) => permissions.may_publish(name),
        }
    }
}

/// `HEAD` is answered as `GET`; hyper sends the headers without the body.
pub fn is_read(method: &Method) -> bool {
    *method == Method::GET || *method == Method::HEAD
}

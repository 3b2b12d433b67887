//! What a credential may do: topic patterns for subscribing and publishing,
//! and admin power. Patterns are compiled once per token, so a check per
//! message is a few literal comparisons, never a regex.

/// A credential's permissions. An API key, or a server without
/// authentication, has [`Permissions::all`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permissions {
    subscribe: Patterns,
    publish: Patterns,
    admin: bool,
}

impl Permissions {
    /// Every permission: API keys, and a server without authentication.
    pub fn all() -> Self {
        Self {
            subscribe: Patterns::Any,
            publish: Patterns::Any,
            admin: true,
        }
    }

    /// A token's permissions, from its `subscribe` and `publish` claims
    /// (topic patterns) and its `admin` claim.
    pub fn new<S: AsRef<str>>(subscribe: &[S], publish: &[S], admin: bool) -> Self {
        Self {
            subscribe: Patterns::compile(subscribe),
            publish: Patterns::compile(publish),
            admin,
        }
    }

    /// Whether `topic` may be subscribed to, or its history read.
    pub fn may_subscribe(&self, topic: &str) -> bool {
        self.subscribe.matches(topic)
    }

    pub fn may_publish(&self, topic: &str) -> bool {
        self.publish.matches(topic)
    }

    /// Topic management and the server-wide views: `/topics`, `/stats`,
    /// `/metrics`, `/dashboard`.
    pub fn is_admin(&self) -> bool {
        self.admin
    }
}

/// A list of topic patterns; `Any` when one of them is a lone `*` (and for
/// API keys), so the common wide grant costs a single branch.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Patterns {
    Any,
    List(Box<[Pattern]>),
}

impl Patterns {
    fn compile<S: AsRef<str>>(patterns: &[S]) -> Self {
        let compiled: Box<[Pattern]> = patterns
            .iter()
            .map(|pattern| Pattern::compile(pattern.as_ref()))
            .collect();
        if compiled.iter().any(Pattern::is_any) {
            Self::Any
        } else {
            Self::List(compiled)
        }
    }

    fn matches(&self, topic: &str) -> bool {
        match self {
            Self::Any => true,
            Self::List(patterns) => patterns.iter().any(|pattern| pattern.matches(topic)),
        }
    }
}

/// A pattern split at its `*`s: the topic must start with the first
/// literal, end with the last, and hold the ones between in order.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Pattern {
    literals: Box<[Box<str>]>,
}

impl Pattern {
    fn compile(pattern: &str) -> Self {
        Self {
            literals: pattern.split('*').map(Box::from).collect(),
        }
    }

    fn is_any(&self) -> bool {
        self.literals.iter().all(|literal| literal.is_empty())
    }

    fn matches(&self, topic: &str) -> bool {
        let (first, rest) = self
            .literals
            .split_first()
            .expect("split yields at least one piece");
        let Some((last, middle)) = rest.split_last() else {
            return topic == &**first;
        };
        let Some(mut remaining) = topic.strip_prefix(&**first) else {
            return false;
        };
        let Some(end) = remaining.len().checked_sub(last.len()) else {
            return false;
        };
        if !remaining.ends_with(&**last) {
            return false;
        }
        remaining = &remaining[..end];
        // Taking each literal at its leftmost place leaves the most room
        // for the next, so this greedy scan never misses a match.
        for literal in middle {
            match remaining.find(&**literal) {
                Some(at) => remaining = &remaining[at + literal.len()..],
                None => return false,
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, topic: &str) -> bool {
        Pattern::compile(pattern).matches(topic)
    }

    #[test]
    fn stars_match_any_run_of_characters() {
        for (pattern, topic) in [
            ("orders", "orders"),
            ("orders.*", "orders.eu"),
            ("orders.*", "orders."),
            ("*.eu", "orders.eu"),
            ("orders.*.paid", "orders.eu.west.paid"),
            ("a*b*c", "abc"),
            ("a*b*c", "a-b-b-c"),
            ("*", ""),
            ("**", "x"),
            ("user:*:inbox", "user:alice:inbox"),
        ] {
            assert!(matches(pattern, topic), "{pattern} ~ {topic}");
        }
        for (pattern, topic) in [
            ("orders", "orders.eu"),
            ("orders.*", "order.eu"),
            ("*.eu", "orders.us"),
            ("a*b*c", "acb"),
            ("ab*ba", "aba"),
            ("orders.*.paid", "orders.paid"),
            ("", "x"),
        ] {
            assert!(!matches(pattern, topic), "{pattern} !~ {topic}");
        }
    }

    #[test]
    fn claims_become_permissions() {
        let none: &[&str] = &[];
        let reader = Permissions::new(&["orders.*", "news"], none, false);
        assert!(reader.may_subscribe("orders.eu") && reader.may_subscribe("news"));
        assert!(!reader.may_subscribe("billing") && !reader.may_publish("orders.eu"));
        assert!(!reader.is_admin());
        let wide = Permissions::new(&["x", "*"], &["*"], true);
        assert_eq!(wide, Permissions::all());
    }
}

//! API keys: the shared secrets of `API_KEY`, kept as SHA-256 digests and
//! compared in constant time.

use subtle::ConstantTimeEq;

/// The accepted keys, kept as SHA-256 digests; empty means no key is
/// accepted.
#[derive(Clone, Debug, Default)]
pub struct ApiKeys(Vec<Digest>);

/// Keys are compared as digests: every digest has the same length, so the
/// comparison's time cannot tell a key's length (a constant-time compare of
/// slices returns early when the lengths differ).
pub type Digest = [u8; 32];

pub fn digest(bytes: &[u8]) -> Digest {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .try_into()
        .expect("SHA-256 digests are 32 bytes")
}

impl ApiKeys {
    pub fn new<S: AsRef<str>>(keys: impl IntoIterator<Item = S>) -> Self {
        Self(
            keys.into_iter()
                .filter_map(|key| {
                    let key = key.as_ref().trim();
                    (!key.is_empty()).then(|| digest(key.as_bytes()))
                })
                .collect(),
        )
    }

    pub fn enabled(&self) -> bool {
        !self.0.is_empty()
    }

    /// The candidate's digest if it is one of the keys. Compares against
    /// every key in constant time, so timing tells nothing about which key,
    /// how much of one, or how long a key matched.
    pub fn check(&self, candidate: &[u8]) -> Option<Digest> {
        let candidate = digest(candidate);
        let found: bool = self
            .0
            .iter()
            .fold(subtle::Choice::from(0), |found, key| {
                found | key.ct_eq(&candidate)
            })
            .into();
        found.then_some(candidate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_listed_key_is_accepted() {
        let keys = ApiKeys::new(["alpha", " beta ", ""]);
        assert!(keys.enabled());
        assert!(keys.check(b"alpha").is_some() && keys.check(b"beta").is_some());
        for refused in [&b"alph"[..], b"", b"alphax"] {
            assert_eq!(keys.check(refused), None);
        }
        assert!(!ApiKeys::new(Vec::<String>::new()).enabled());
    }
}

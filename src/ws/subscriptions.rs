//! The topics one connection is subscribed to, by name.

use std::sync::Arc;

use crate::broker::Topic;

/// A connection's topics in a plain list, searched by name: most
/// connections hold one or a few (at most `MAX_SUBSCRIPTIONS_PER_CONNECTION`),
/// and a list of one costs an idle connection 8 bytes of heap where a hash
/// map costs about 140.
#[derive(Default)]
pub(super) struct Subscriptions(Vec<Arc<Topic>>);

impl Subscriptions {
    fn position(&self, name: &str) -> Option<usize> {
        self.0.iter().position(|topic| topic.name() == name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.position(name).is_some()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Adds `topic`, or puts it in place of the one of the same name, which
    /// is returned.
    pub fn insert(&mut self, topic: Arc<Topic>) -> Option<Arc<Topic>> {
        match self.position(topic.name()) {
            Some(index) => Some(std::mem::replace(&mut self.0[index], topic)),
            None => {
                self.0.push(topic);
                None
            }
        }
    }

    pub fn remove(&mut self, name: &str) -> Option<Arc<Topic>> {
        self.position(name).map(|index| self.0.swap_remove(index))
    }

    pub fn retain(&mut self, keep: impl FnMut(&Arc<Topic>) -> bool) {
        self.0.retain(keep);
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Topic>> {
        self.0.iter()
    }
}

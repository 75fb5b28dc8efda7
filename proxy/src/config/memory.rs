//! A route table held in memory, replaced by its owner.
//!
//! Local mode runs the engine and the proxy in one process: the runner
//! builds tables from the Canary's backends and hands them over here instead
//! of going through a file or the Kubernetes API. Tests use it the same way.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use weir_core::{Cohort, Weight};

use super::{ConfigError, ConfigSource};
use crate::route::RouteTable;

/// A [`ConfigSource`] whose tables come from [`MemorySource::replace`].
#[derive(Debug)]
pub struct MemorySource {
    tx: watch::Sender<Arc<RouteTable>>,
    /// Serializes read-modify-write updates.
    lock: Mutex<()>,
    writable: bool,
}

impl MemorySource {
    /// A source serving `table`. When `writable`, `PUT .../weights` may
    /// change it; otherwise only [`MemorySource::replace`] does (the engine
    /// owns the weights).
    pub fn new(table: RouteTable, writable: bool) -> Self {
        let (tx, _) = watch::channel(Arc::new(table));
        MemorySource {
            tx,
            lock: Mutex::new(()),
            writable,
        }
    }

    /// Publishes `table`, with the next generation.
    pub fn replace(&self, table: RouteTable) -> Arc<RouteTable> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let next = self.tx.borrow().generation() + 1;
        let table = Arc::new(table.with_generation(next));
        self.tx.send_replace(Arc::clone(&table));
        table
    }

    /// The table in service.
    pub fn current(&self) -> Arc<RouteTable> {
        Arc::clone(&self.tx.borrow())
    }
}

impl ConfigSource for MemorySource {
    fn subscribe(&self) -> watch::Receiver<Arc<RouteTable>> {
        self.tx.subscribe()
    }

    fn last_error(&self) -> Option<Arc<ConfigError>> {
        None
    }

    fn set_weights(
        &self,
        route: &str,
        weights: &[(Cohort, Weight)],
    ) -> Result<Arc<RouteTable>, ConfigError> {
        if !self.writable {
            return Err(ConfigError::ReadOnly {
                reason: "the rollout engine owns the weights in this mode; use weir promote, abort or pause",
            });
        }
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.current();
        let updated = super::set_weights(&current, route, weights)?;
        let table = Arc::new(updated.with_generation(current.generation() + 1));
        self.tx.send_replace(Arc::clone(&table));
        Ok(table)
    }

    fn describe(&self) -> String {
        "in-process".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::tests::two_cohorts;

    fn table() -> RouteTable {
        RouteTable::new(vec![two_cohorts("chat", 90.0, 10.0)], false, 1).expect("valid")
    }

    #[test]
    fn replace_and_set_weights_publish_with_increasing_generations() {
        let source = MemorySource::new(table(), true);
        let mut rx = source.subscribe();
        source.replace(table());
        assert_eq!(rx.borrow_and_update().generation(), 2);
        let w = |p| Weight::from_percent(p).expect("valid");
        let t = source
            .set_weights(
                "chat",
                &[(Cohort::Stable, w(0.0)), (Cohort::Canary, w(100.0))],
            )
            .expect("applied");
        assert_eq!(t.generation(), 3);
        assert_eq!(
            rx.borrow_and_update().get("chat").expect("exists").share(1),
            1.0
        );
    }

    #[test]
    fn a_read_only_source_refuses_weight_updates() {
        let source = MemorySource::new(table(), false);
        let err = source.set_weights("chat", &[]).expect_err("read-only");
        assert!(matches!(err, ConfigError::ReadOnly { .. }));
        assert_eq!(source.current().generation(), 1);
    }
}

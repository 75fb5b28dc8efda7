//! Upstream connections a client connection keeps between its requests.
//!
//! An inference client keeps its connection and sends the next request on
//! it; with an 80/20 split that request goes, most of the time, to an
//! upstream the previous one used. Handing the upstream connection back to
//! pingora's shared pool after every response and taking it out again
//! before the next costs, per request, a pool insert and lookup under
//! locks, a spawned task that watches the idle connection, a timer, and two
//! task wake-ups: a large part of a small request's cost. So an HTTP/1
//! client connection keeps the upstream connections its last requests used
//! (at most [`KEPT`], one per upstream), as HAProxy's `http-reuse safe`
//! does, and gives them to the shared pool when it ends or when a kept one
//! is pushed out.
//!
//! A kept connection is not watched while it waits, so before it is used
//! again it must be younger than the idle timeout and show no sign of
//! having been closed (a non-blocking read finds nothing); an upstream that
//! closed it in the instant after that check is caught by the forwarder's
//! one replay on a reused connection, as for a pooled one.
//!
//! The cache is generic over what it keeps so its rules are tested without
//! sockets.

use std::time::{Duration, Instant};

/// Upstream connections kept per client connection: one per cohort of a
/// canary split.
pub(super) const KEPT: usize = 2;

/// Up to [`KEPT`] connections, each under the key of the upstream it is
/// connected to (pingora's `reuse_hash` of the peer).
#[derive(Debug)]
pub(super) struct Kept<S> {
    entries: Vec<Entry<S>>,
}

#[derive(Debug)]
struct Entry<S> {
    key: u64,
    stream: S,
    since: Instant,
}

impl<S> Default for Kept<S> {
    fn default() -> Self {
        Kept {
            entries: Vec::new(),
        }
    }
}

impl<S> Kept<S> {
    /// The connection kept for `key`, if one was put back less than
    /// `max_idle` before `now`; an older one is returned in `expired` for
    /// the caller to close.
    pub(super) fn take(&mut self, key: u64, now: Instant, max_idle: Duration) -> Taken<S> {
        let Some(i) = self.entries.iter().position(|e| e.key == key) else {
            return Taken::None;
        };
        let entry = self.entries.swap_remove(i);
        if now.saturating_duration_since(entry.since) < max_idle {
            Taken::Fresh(entry.stream)
        } else {
            Taken::Expired(entry.stream)
        }
    }

    /// Keeps `stream` for `key`. Returns what no longer fits, for the
    /// shared pool: the connection kept longest when all [`KEPT`] places
    /// are taken, or a second one for the same key (the one already kept
    /// stays: it is the one a liveness check saw last).
    pub(super) fn put(&mut self, key: u64, stream: S, now: Instant) -> Option<(u64, S)> {
        if self.entries.iter().any(|e| e.key == key) {
            return Some((key, stream));
        }
        let evicted = if self.entries.len() == KEPT {
            let oldest = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.since)
                .map(|(i, _)| i)?;
            let e = self.entries.swap_remove(oldest);
            Some((e.key, e.stream))
        } else {
            None
        };
        self.entries.push(Entry {
            key,
            stream,
            since: now,
        });
        evicted
    }

    /// Everything kept, for the shared pool when the client connection
    /// ends.
    pub(super) fn drain(&mut self) -> impl Iterator<Item = (u64, S)> + '_ {
        self.entries.drain(..).map(|e| (e.key, e.stream))
    }
}

/// What [`Kept::take`] found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Taken<S> {
    None,
    Fresh(S),
    /// Kept past the idle timeout: the upstream may have closed it
    /// meanwhile, so it is closed rather than used.
    Expired(S),
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(60);

    #[test]
    fn a_connection_is_taken_back_by_its_key_once() {
        let t0 = Instant::now();
        let mut kept = Kept::default();
        assert_eq!(kept.put(1, "a", t0), None);
        assert_eq!(kept.put(2, "b", t0), None);
        assert_eq!(kept.take(3, t0, IDLE), Taken::None);
        assert_eq!(kept.take(2, t0, IDLE), Taken::Fresh("b"));
        assert_eq!(kept.take(2, t0, IDLE), Taken::None, "taken once");
        assert_eq!(kept.take(1, t0, IDLE), Taken::Fresh("a"));
    }

    #[test]
    fn one_kept_past_the_idle_timeout_is_handed_out_to_be_closed() {
        let t0 = Instant::now();
        let mut kept = Kept::default();
        kept.put(1, "a", t0);
        assert_eq!(kept.take(1, t0 + IDLE, IDLE), Taken::Expired("a"));
        kept.put(1, "b", t0);
        assert_eq!(
            kept.take(1, t0 + IDLE - Duration::from_millis(1), IDLE),
            Taken::Fresh("b")
        );
    }

    #[test]
    fn a_third_upstream_pushes_out_the_one_kept_longest() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut kept = Kept::default();
        kept.put(1, "a", t0);
        kept.put(2, "b", t0 + s);
        assert_eq!(kept.put(3, "c", t0 + 2 * s), Some((1, "a")));
        assert_eq!(kept.take(1, t0 + 2 * s, IDLE), Taken::None);
        assert_eq!(kept.put(1, "a2", t0 + 3 * s), Some((2, "b")));
        let mut left: Vec<_> = kept.drain().collect();
        left.sort_unstable();
        assert_eq!(left, [(1, "a2"), (3, "c")]);
        assert_eq!(kept.take(3, t0, IDLE), Taken::None, "drained");
    }

    #[test]
    fn a_second_connection_to_a_kept_upstream_goes_to_the_pool() {
        let t0 = Instant::now();
        let mut kept = Kept::default();
        kept.put(1, "a", t0);
        assert_eq!(kept.put(1, "a2", t0), Some((1, "a2")));
        assert_eq!(kept.take(1, t0, IDLE), Taken::Fresh("a"));
    }
}

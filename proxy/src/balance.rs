//! Per-pod balancing inside one cohort: which ready endpoint of a Service
//! takes a request.
//!
//! In Kubernetes mode a backend is a Service with several pods; the proxy
//! connects to the pods itself rather than through the Service's virtual IP,
//! so that it can balance on what it knows: how many requests each pod is
//! serving right now. LLM requests differ in length by orders of magnitude
//! (a one-token classification next to a 4,000-token generation), so round
//! robin piles long requests on unlucky pods while others idle; the least
//! loaded pod is the right target.
//!
//! Scanning every endpoint for the least loaded one costs O(n) per request
//! and makes every replica of the proxy herd onto the same pod. The *power
//! of two choices* (Mitzenmacher, 2001) draws two distinct endpoints at
//! random and takes the less loaded: O(1), no herding, and the maximum load
//! falls from `log n / log log n` to `log log n`, close to the full scan.
//! Envoy's and linkerd's least-request balancers do the same.
//!
//! [`power_of_two`] is pure (the caller supplies the randomness and the
//! loads), so it is tested exactly and statistically without a socket. The
//! in-flight counters ([`Load`]) live in a [`Loads`] registry kept by the
//! config source: a table rebuild hands the same counter to an address that
//! stays, so a pod with ten open streams still counts ten after its
//! Service's weights change.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Requests in flight on one endpoint, across every route and table that
/// name it.
#[derive(Debug, Default)]
pub struct Load(AtomicU64);

impl Load {
    /// Requests in flight now.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One ready pod: its address and its in-flight counter.
#[derive(Debug, Clone)]
pub struct Endpoint {
    addr: SocketAddr,
    load: Arc<Load>,
}

impl Endpoint {
    /// An endpoint with a counter of its own (tests, one-off tables); use
    /// [`Loads::endpoint`] to share counters across tables.
    pub fn new(addr: SocketAddr) -> Self {
        Endpoint {
            addr,
            load: Arc::default(),
        }
    }

    /// Where to connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests in flight on it now.
    pub fn inflight(&self) -> u64 {
        self.load.get()
    }

    /// Counts one request in flight until the guard is dropped.
    pub fn acquire(&self) -> EndpointGuard {
        self.load.0.fetch_add(1, Ordering::Relaxed);
        EndpointGuard(Arc::clone(&self.load))
    }
}

/// Endpoints are the same when their addresses are: the counter is state,
/// not configuration, so a rebuilt table with the same pods is unchanged.
impl PartialEq for Endpoint {
    fn eq(&self, other: &Self) -> bool {
        self.addr == other.addr
    }
}

/// Holds one request in an endpoint's in-flight count.
#[derive(Debug)]
pub struct EndpointGuard(Arc<Load>);

impl Drop for EndpointGuard {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The ready endpoints of a backend, sorted by address. May be empty: a
/// Service whose pods are all unready, which the proxy treats like a
/// refused connection (counted against the cohort, retried on the other).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Endpoints(Arc<[Endpoint]>);

impl Endpoints {
    /// The set of `endpoints`, sorted by address, duplicates dropped.
    pub fn new(mut endpoints: Vec<Endpoint>) -> Self {
        endpoints.sort_by_key(|e| e.addr);
        endpoints.dedup_by_key(|e| e.addr);
        Endpoints(endpoints.into())
    }

    /// The endpoints, sorted by address.
    pub fn as_slice(&self) -> &[Endpoint] {
        &self.0
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The endpoint for the next request: [`power_of_two`] over the
    /// current in-flight counts, `None` when there is no endpoint.
    pub fn pick(&self, draw: u64) -> Option<&Endpoint> {
        let i = power_of_two(self.0.len(), draw, |i| self.0[i].inflight())?;
        self.0.get(i)
    }

    /// The endpoint for another try after a connection to those at `tried`
    /// failed: [`Endpoints::pick`] among the others, `None` when none is
    /// left. (A retry's path: the list it builds is the only allocation.)
    pub fn pick_untried(&self, draw: u64, tried: &[SocketAddr]) -> Option<&Endpoint> {
        if tried.is_empty() {
            return self.pick(draw);
        }
        let left: Vec<&Endpoint> = self.0.iter().filter(|e| !tried.contains(&e.addr)).collect();
        let i = power_of_two(left.len(), draw, |i| left[i].inflight())?;
        left.get(i).copied()
    }
}

impl fmt::Display for Endpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}", e.addr)?;
        }
        Ok(())
    }
}

/// Picks one of `n` endpoints by the power of two choices: two distinct
/// candidates from `draw` (its low 32 bits choose the first, uniformly, its
/// high 32 bits the second among the others), and the one with the lower
/// `load` wins; on a tie the first, which is itself uniform. `None` when
/// `n == 0`; always `Some(i)` with `i < n` otherwise. `draw` must be
/// uniform on `u64`. Pure.
pub fn power_of_two(n: usize, draw: u64, load: impl Fn(usize) -> u64) -> Option<usize> {
    match n {
        0 => None,
        1 => Some(0),
        _ => {
            let n = n as u64;
            // floor(x * n / 2^32) for uniform 32-bit x: uniform on [0, n)
            // up to 2^-32 relative bias.
            let first = ((draw & 0xFFFF_FFFF) * n) >> 32;
            let mut second = ((draw >> 32) * (n - 1)) >> 32;
            if second >= first {
                second += 1;
            }
            let (first, second) = (first as usize, second as usize);
            Some(if load(second) < load(first) {
                second
            } else {
                first
            })
        }
    }
}

/// The in-flight counters by address, kept by a config source across the
/// tables it builds.
#[derive(Debug, Default)]
pub struct Loads(HashMap<SocketAddr, Arc<Load>>);

impl Loads {
    /// The endpoint at `addr`, with the counter it had in earlier tables.
    pub fn endpoint(&mut self, addr: SocketAddr) -> Endpoint {
        Endpoint {
            addr,
            load: Arc::clone(self.0.entry(addr).or_default()),
        }
    }

    /// Forgets the counters of addresses not in `live` once nothing is in
    /// flight on them (a request still running keeps its counter, so an
    /// address that comes back meanwhile counts it).
    pub fn prune(&mut self, live: &HashSet<SocketAddr>) {
        self.0
            .retain(|addr, load| live.contains(addr) || load.get() > 0);
    }

    /// Addresses with a counter.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no address has a counter.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::tests::SplitMix;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    #[test]
    fn no_endpoint_is_none_and_one_is_always_it() {
        assert_eq!(power_of_two(0, 42, |_| 0), None);
        let mut rng = SplitMix(1);
        assert!((0..1000).all(|_| power_of_two(1, rng.next(), |_| 7) == Some(0)));
        assert!(Endpoints::default().pick(3).is_none());
    }

    #[test]
    fn candidates_are_distinct_and_in_range_at_the_extremes() {
        for n in [2usize, 3, 7, 1000] {
            for draw in [0, u64::MAX, 0xFFFF_FFFF, 0xFFFF_FFFF_0000_0000, 1 << 31] {
                // A load that records which indices were looked at.
                let seen = std::cell::RefCell::new(Vec::new());
                let i = power_of_two(n, draw, |i| {
                    seen.borrow_mut().push(i);
                    0
                })
                .expect("n > 0");
                let seen = seen.into_inner();
                assert!(i < n, "n={n} draw={draw:#x}: {i}");
                assert_eq!(seen.len(), 2);
                assert_ne!(seen[0], seen[1], "n={n} draw={draw:#x}");
                assert!(seen.iter().all(|&s| s < n));
            }
        }
    }

    #[test]
    fn the_less_loaded_of_the_two_candidates_wins() {
        let mut rng = SplitMix(9);
        let loads = [5u64, 0, 9, 3];
        for _ in 0..10_000 {
            let draw = rng.next();
            let seen = std::cell::RefCell::new(Vec::new());
            let i = power_of_two(loads.len(), draw, |i| {
                seen.borrow_mut().push(i);
                loads[i]
            })
            .expect("n > 0");
            let seen = seen.into_inner();
            let best = seen.iter().copied().min_by_key(|&s| loads[s]).expect("two");
            assert_eq!(i, best);
            assert_ne!(i, 2, "the most loaded endpoint never wins");
        }
    }

    /// Binomial band check: `count` of `n` within `p ± z·sd`.
    fn in_band(count: u64, n: u64, p: f64) -> bool {
        let z = 3.290_526_731_491_926; // two-sided 99.9%
        let (nf, c) = (n as f64, count as f64);
        let half = z * (nf * p * (1.0 - p)).sqrt();
        (nf * p - half..=nf * p + half).contains(&c)
    }

    #[test]
    fn picks_fall_in_the_bands_the_two_choices_imply() {
        let n = 40_000u64;
        let mut rng = SplitMix(0x5eed);
        // Equal loads: the first candidate wins every tie, so each of four
        // endpoints gets 1/4.
        let mut counts = [0u64; 4];
        for _ in 0..n {
            counts[power_of_two(4, rng.next(), |_| 1).expect("n > 0")] += 1;
        }
        assert!(counts.iter().all(|&c| in_band(c, n, 0.25)), "{counts:?}");

        // One idle endpoint among four busy ones: it wins whenever it is a
        // candidate, 1 - C(4,2)/C(5,2) = 2/5 of the time; the others share
        // the rest equally (3/20 each).
        let loads = [3u64, 3, 0, 3, 3];
        let mut counts = [0u64; 5];
        for _ in 0..n {
            counts[power_of_two(5, rng.next(), |i| loads[i]).expect("n > 0")] += 1;
        }
        assert!(in_band(counts[2], n, 0.4), "{counts:?}");
        for i in [0, 1, 3, 4] {
            assert!(in_band(counts[i], n, 0.15), "{counts:?}");
        }
        // The band is tight enough to tell 2/5 from round robin's 1/5.
        assert!(!in_band(n / 5, n, 0.4));
    }

    #[test]
    fn guards_count_in_flight_requests_until_dropped() {
        let e = Endpoint::new(addr(1));
        let a = e.acquire();
        let b = e.clone().acquire();
        assert_eq!(e.inflight(), 2);
        drop(a);
        assert_eq!(e.inflight(), 1);
        drop(b);
        assert_eq!(e.inflight(), 0);
    }

    #[test]
    fn pick_prefers_the_endpoint_with_fewer_requests_in_flight() {
        let set = Endpoints::new(vec![Endpoint::new(addr(2)), Endpoint::new(addr(1))]);
        assert_eq!(set.as_slice()[0].addr(), addr(1), "sorted by address");
        let _busy = set.as_slice()[0].acquire();
        let mut rng = SplitMix(3);
        assert!((0..1000).all(|_| set.pick(rng.next()).map(Endpoint::addr) == Some(addr(2))));
    }

    #[test]
    fn counters_survive_rebuilds_for_addresses_that_stay() {
        let mut loads = Loads::default();
        let first = loads.endpoint(addr(1));
        let gone = loads.endpoint(addr(2));
        let held = first.acquire();
        let busy_gone = gone.acquire();
        // A rebuild: addr 1 stays, addr 2 left the Service, addr 3 is new.
        let live: HashSet<_> = [addr(1), addr(3)].into();
        let again = loads.endpoint(addr(1));
        let _new = loads.endpoint(addr(3));
        loads.prune(&live);
        assert_eq!(again.inflight(), 1, "the running request still counts");
        assert_eq!(loads.len(), 3, "addr 2 is kept while a request runs on it");
        drop(busy_gone);
        loads.prune(&live);
        assert_eq!(loads.len(), 2, "and forgotten once it is idle");
        drop(held);
        assert_eq!(again.inflight(), 0);
        assert!(first == again);
    }
}

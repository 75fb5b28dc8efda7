//! Leader election on a `coordination.k8s.io/v1` Lease: of the `weir
//! controller` replicas, only the one holding the Lease reconciles.
//!
//! kube-rs has no leader election. This is client-go's `leaderelection`
//! (which Go controllers use), small, in two parts:
//!
//! - [`decide`] is pure: from the Lease as read ([`LeaseRecord`]), when this
//!   candidate saw it change ([`Observation`]), its identity and `now`, it
//!   decides to [acquire](Decision::Acquire), [renew](Decision::Renew) or
//!   [wait](Decision::Wait). Every case is table-tested without a clock.
//! - [`LeaderElector::run`] is the I/O around it: read, decide, write with
//!   optimistic concurrency (replace with the `resourceVersion` read, so of
//!   two candidates racing for a free Lease one wins and the other gets a
//!   409), publish leadership on a `watch` channel, release on shutdown.
//!
//! # Why expiry is judged by this candidate's clock
//!
//! The holder writes `renewTime` by its own clock. A candidate whose clock
//! runs ahead would find every Lease expired and take it from a live
//! leader. So, as in client-go, a candidate notes *when it saw the record
//! change*, by its own monotonic clock, and holds the Lease expired only
//! once `leaseDurationSeconds` more have passed without a change. The
//! holder's timestamps are for people (`kubectl get lease`), never for
//! expiry: replicas must agree on how fast time passes, not on what time it
//! is. The price: a candidate that starts next to a Lease it has never seen
//! change waits a full lease duration, however old `renewTime` looks. A
//! leader that shuts down therefore releases the Lease (clears the holder),
//! and a successor takes a free Lease at once.
//!
//! # Why a leader stops at the renew deadline
//!
//! A leader that cannot reach the API server cannot know whether another
//! has taken over. It counts from the moment it *sent* its last successful
//! renewal (the write landed later, and others saw it later still) and
//! publishes `false` once `renew_deadline` has passed without another
//! success; any request in flight is cut off at that moment. Since
//! `renew_deadline < lease_duration`, it has stopped acting before any
//! other candidate may hold its Lease expired.

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

use super::MANAGER;
use super::backoff::with_causes;

/// Errors of [`LeaderElector::new`]. Failures of the API server are not
/// errors of the election: [`LeaderElector::run`] logs them and retries.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting cannot work.
    #[error("leader election: {field} {problem}")]
    Invalid {
        /// The setting.
        field: &'static str,
        /// What is wrong with it and how to fix it.
        problem: String,
    },
}

/// How long a Lease lasts, and how a leader keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// How long other candidates wait, after they last saw the Lease
    /// change, before they take it. Written to the Lease, in whole seconds
    /// (rounded up).
    pub lease_duration: Duration,
    /// How long a leader keeps acting without a successful renewal. Must be
    /// shorter than `lease_duration`.
    pub renew_deadline: Duration,
    /// How often a leader renews and a candidate looks at the Lease. Must
    /// be shorter than `renew_deadline`, so that a leader retries a failed
    /// renewal before giving up.
    pub retry_period: Duration,
}

impl Default for Timings {
    /// client-go's defaults: 15 s, 10 s, 2 s.
    fn default() -> Self {
        Timings {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl Timings {
    fn validate(&self) -> Result<(), Error> {
        let Timings {
            lease_duration,
            renew_deadline,
            retry_period,
        } = *self;
        if retry_period.is_zero() {
            return Err(invalid(
                "timings.retry_period",
                "is zero; give it a fraction of renew_deadline (default 2 s)".into(),
            ));
        }
        if renew_deadline <= retry_period {
            return Err(invalid(
                "timings.renew_deadline",
                format!(
                    "({renew_deadline:?}) must be longer than retry_period ({retry_period:?}), \
                     or a leader gives up before it retries a failed renewal"
                ),
            ));
        }
        if lease_duration <= renew_deadline {
            return Err(invalid(
                "timings.lease_duration",
                format!(
                    "({lease_duration:?}) must be longer than renew_deadline ({renew_deadline:?}): \
                     a leader that cannot renew must stop before another may take the Lease"
                ),
            ));
        }
        if lease_seconds(lease_duration).is_none() {
            return Err(invalid(
                "timings.lease_duration",
                format!("({lease_duration:?}) does not fit the Lease's leaseDurationSeconds"),
            ));
        }
        Ok(())
    }
}

fn invalid(field: &'static str, problem: String) -> Error {
    Error::Invalid { field, problem }
}

/// `duration` as the Lease's whole seconds, rounded up so that others
/// never wait less than the leader assumes.
fn lease_seconds(duration: Duration) -> Option<i32> {
    let secs = duration
        .as_secs()
        .checked_add(u64::from(duration.subsec_nanos() > 0))?;
    i32::try_from(secs).ok()
}

/// The Lease as read: its holding and its `resourceVersion`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaseRecord {
    /// Who holds it (None: nobody; an empty holder counts as nobody).
    pub holder: Option<String>,
    /// When the holder took it, by the holder's clock.
    pub acquire_time: Option<Timestamp>,
    /// When the holder last renewed it, by the holder's clock.
    pub renew_time: Option<Timestamp>,
    /// How long it lasts after a change (None when missing or not positive).
    pub duration: Option<Duration>,
    /// How many times it changed hands (missing or negative: 0).
    pub transitions: i32,
    /// The object's version, for the optimistic write.
    pub resource_version: Option<String>,
}

impl LeaseRecord {
    /// The record of `lease`; a Lease without a spec is free.
    pub fn from_lease(lease: &Lease) -> Self {
        let spec = lease.spec.as_ref();
        LeaseRecord {
            holder: spec
                .and_then(|s| s.holder_identity.clone())
                .filter(|h| !h.is_empty()),
            acquire_time: spec.and_then(|s| s.acquire_time.as_ref()).map(|t| t.0),
            renew_time: spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0),
            duration: spec
                .and_then(|s| s.lease_duration_seconds)
                .and_then(|s| u64::try_from(s).ok())
                .filter(|s| *s > 0)
                .map(Duration::from_secs),
            transitions: spec.and_then(|s| s.lease_transitions).unwrap_or(0).max(0),
            resource_version: lease.metadata.resource_version.clone(),
        }
    }

    /// Whether `other` holds the Lease the same way: everything but the
    /// `resourceVersion`, which any write moves (a label edit is not a
    /// renewal).
    fn same_holding(&self, other: &LeaseRecord) -> bool {
        self.holder == other.holder
            && self.acquire_time == other.acquire_time
            && self.renew_time == other.renew_time
            && self.duration == other.duration
            && self.transitions == other.transitions
    }
}

/// What a candidate last read of the Lease, and since when (by its own
/// clock) the holding has looked like that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// The latest read.
    pub record: LeaseRecord,
    /// When this candidate first saw the holding of `record`.
    pub since: Instant,
}

impl Observation {
    /// The observation after reading `record` at `now`: `since` stays when
    /// the holding is unchanged and moves to `now` when it changed (or on
    /// the first read).
    pub fn update(previous: Option<Observation>, record: LeaseRecord, now: Instant) -> Observation {
        let since = match previous {
            Some(p) if p.record.same_holding(&record) => p.since,
            _ => now,
        };
        Observation { record, since }
    }
}

/// What a candidate does with the Lease it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Take it: it is free, released, or expired. Write this candidate as
    /// the holder, `acquireTime` now, and `leaseTransitions` as given (one
    /// more than read: the Lease changes hands).
    Acquire {
        /// `leaseTransitions` to write.
        transitions: i32,
    },
    /// It is this candidate's: write `renewTime` now, keep `acquireTime`
    /// and `leaseTransitions`. Also the case of a replica that restarted
    /// under the same identity: the Lease never changed hands.
    Renew,
    /// Another holds it and it has not expired by this candidate's clock.
    Wait {
        /// Who leads.
        holder: String,
        /// When it expires unless it changes first.
        until: Instant,
    },
}

/// Decides what `identity` does with the Lease it has `seen`, at `now`.
///
/// The Lease expires `seen.record.duration` (else `default_duration`, this
/// candidate's own) after `seen.since`: at that instant exactly it is
/// expired. The holder's timestamps play no part (see the module docs).
/// A duration too large for the clock never expires.
pub fn decide(
    seen: &Observation,
    identity: &str,
    default_duration: Duration,
    now: Instant,
) -> Decision {
    let acquire = Decision::Acquire {
        transitions: seen.record.transitions.saturating_add(1),
    };
    match seen.record.holder.as_ref().filter(|h| !h.is_empty()) {
        None => acquire,
        Some(holder) if holder == identity => Decision::Renew,
        Some(holder) => {
            let duration = seen.record.duration.unwrap_or(default_duration);
            match seen.since.checked_add(duration) {
                Some(until) if now >= until => acquire,
                Some(until) => Decision::Wait {
                    holder: holder.clone(),
                    until,
                },
                None => Decision::Wait {
                    holder: holder.clone(),
                    until: now + default_duration,
                },
            }
        }
    }
}

impl Decision {
    /// Writes this decision into `spec`, for `identity` holding the Lease
    /// for `duration`, at wall-clock time `wall`. A [`Decision::Wait`]
    /// writes nothing. Fields this module does not own
    /// (`preferredHolder`, `strategy`) are kept.
    pub fn write(&self, spec: &mut LeaseSpec, identity: &str, duration: Duration, wall: Timestamp) {
        match self {
            Decision::Acquire { transitions } => {
                spec.holder_identity = Some(identity.to_owned());
                spec.acquire_time = Some(MicroTime(wall));
                spec.lease_transitions = Some(*transitions);
            }
            Decision::Renew => {
                spec.acquire_time.get_or_insert(MicroTime(wall));
            }
            Decision::Wait { .. } => return,
        }
        spec.renew_time = Some(MicroTime(wall));
        spec.lease_duration_seconds = lease_seconds(duration);
    }
}

/// One candidate for leadership, of the replicas sharing one Lease.
#[derive(Debug)]
pub struct LeaderElector {
    api: Api<Lease>,
    /// `namespace/name`, for logs.
    lease: String,
    name: String,
    identity: String,
    timings: Timings,
}

/// The outcome of one look at the Lease.
enum Attempt {
    /// This candidate holds it.
    Held {
        /// It was someone else's or nobody's before this write.
        acquired: bool,
    },
    /// Another holds it.
    Waiting { holder: String, until: Instant },
    /// Another wrote it between the read and the write (409).
    Conflict,
}

/// What the loop remembers between looks.
#[derive(Debug, Default)]
struct State {
    seen: Option<Observation>,
    /// While leading: when the last successful renewal was sent.
    renewed: Option<Instant>,
    /// The last failure, for the log line when leadership is lost.
    last_error: Option<String>,
}

impl LeaderElector {
    /// A candidate named `identity` (unique per replica: the pod name) for
    /// Lease `lease_name` in `namespace`.
    ///
    /// # Errors
    /// [`Error::Invalid`] for an empty name or timings that cannot keep
    /// one leader at a time (they must satisfy `lease_duration >
    /// renew_deadline > retry_period > 0`).
    pub fn new(
        client: Client,
        namespace: impl Into<String>,
        lease_name: impl Into<String>,
        identity: impl Into<String>,
        timings: Timings,
    ) -> Result<Self, Error> {
        let (namespace, name, identity) = (namespace.into(), lease_name.into(), identity.into());
        for (field, value, fix) in [
            ("namespace", &namespace, "the controller's own namespace"),
            ("lease_name", &name, "one name all replicas share"),
            (
                "identity",
                &identity,
                "a name unique to this replica, e.g. the pod name",
            ),
        ] {
            if value.is_empty() {
                return Err(invalid(field, format!("is empty; give {fix}")));
            }
        }
        timings.validate()?;
        Ok(LeaderElector {
            api: Api::namespaced(client, &namespace),
            lease: format!("{namespace}/{name}"),
            name,
            identity,
            timings,
        })
    }

    /// Campaigns until `shutdown` completes (or every receiver of
    /// `leading` is gone: nobody would act on leadership), publishing on
    /// `leading` whether this candidate leads.
    ///
    /// Creates the Lease if it is missing. While leading, renews every
    /// `retry_period` and publishes `false` as soon as `renew_deadline`
    /// has passed since the last successful renewal was sent, or another
    /// holds the Lease. On shutdown it publishes `false` first, then
    /// releases the Lease if it holds it (bounded by `renew_deadline`), so
    /// a successor takes over within its next look. API errors are logged
    /// and retried every `retry_period`; they never end the loop.
    pub async fn run(self, leading: watch::Sender<bool>, shutdown: impl Future<Output = ()>) {
        let mut shutdown = pin!(shutdown);
        let mut state = State::default();
        // A look cut short may have written the Lease: release it then too.
        let interrupted = loop {
            let next = tokio::select! {
                biased;
                () = &mut shutdown => break true,
                () = leading.closed() => break true,
                next = self.look(&mut state, &leading) => next,
            };
            tokio::select! {
                biased;
                () = &mut shutdown => break false,
                () = leading.closed() => break false,
                () = tokio::time::sleep_until(next) => {}
            }
        };
        let was_leading = state.renewed.take().is_some();
        if was_leading {
            leading.send_replace(false);
            tracing::info!(lease = %self.lease, identity = %self.identity, "stopped leading: shutting down");
        }
        if was_leading || interrupted {
            self.release().await;
        }
    }

    /// One look at the Lease (read, decide, write); returns when to look
    /// next.
    async fn look(&self, state: &mut State, leading: &watch::Sender<bool>) -> Instant {
        let Timings {
            renew_deadline,
            retry_period,
            ..
        } = self.timings;
        let started = Instant::now();
        let cutoff = state.renewed.unwrap_or(started) + renew_deadline;
        let attempt = tokio::time::timeout_at(cutoff, self.attempt(state, started)).await;
        let now = Instant::now();
        let next = match attempt {
            Ok(Ok(Attempt::Held { acquired })) => {
                state.last_error = None;
                if state.renewed.replace(started).is_none() {
                    let how = if acquired {
                        "took the Lease"
                    } else {
                        "the Lease was already this replica's"
                    };
                    tracing::info!(lease = %self.lease, identity = %self.identity, "became leader: {how}");
                    leading.send_replace(true);
                }
                started + retry_period
            }
            Ok(Ok(Attempt::Waiting { holder, until })) => {
                state.last_error = None;
                if state.renewed.take().is_some() {
                    tracing::warn!(lease = %self.lease, identity = %self.identity, leader = %holder,
                        "lost leadership: {holder} holds the Lease");
                    leading.send_replace(false);
                }
                // Look again at expiry if that comes first.
                (now + retry_period).min(until)
            }
            Ok(Ok(Attempt::Conflict)) => {
                tracing::debug!(lease = %self.lease, identity = %self.identity, "another replica wrote the Lease first");
                now + retry_period
            }
            Ok(Err(e)) => {
                let e = with_causes(&e);
                tracing::warn!(lease = %self.lease, identity = %self.identity, error = %e, "leader election");
                state.last_error = Some(e);
                now + retry_period
            }
            Err(_) => {
                let e = format!("no answer within {renew_deadline:?}");
                if state.renewed.is_none() {
                    tracing::warn!(lease = %self.lease, identity = %self.identity, error = %e, "leader election");
                }
                state.last_error.get_or_insert(e);
                now + retry_period
            }
        };
        let Some(renewed) = state.renewed else {
            return next;
        };
        let deadline = renewed + renew_deadline;
        if now < deadline {
            return next.min(deadline);
        }
        state.renewed = None;
        let why = state.last_error.as_deref().unwrap_or("no answer");
        tracing::warn!(lease = %self.lease, identity = %self.identity,
            "lost leadership: no successful renewal within {renew_deadline:?} ({why})");
        leading.send_replace(false);
        next
    }

    /// Reads the Lease, decides, writes.
    async fn attempt(&self, state: &mut State, now: Instant) -> Result<Attempt, kube::Error> {
        let wall = Timestamp::now();
        let duration = self.timings.lease_duration;
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let mut spec = LeaseSpec::default();
            Decision::Acquire { transitions: 0 }.write(&mut spec, &self.identity, duration, wall);
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec),
            };
            let created = self.api.create(&params(), &lease).await;
            return written(state, now, created, true);
        };
        let record = LeaseRecord::from_lease(&lease);
        self.log_leader(state.seen.as_ref(), &record);
        let seen = Observation::update(state.seen.take(), record, now);
        let decision = decide(&seen, &self.identity, duration, now);
        state.seen = Some(seen);
        let acquired = match &decision {
            Decision::Wait { holder, until } => {
                return Ok(Attempt::Waiting {
                    holder: holder.clone(),
                    until: *until,
                });
            }
            Decision::Acquire { .. } => true,
            Decision::Renew => false,
        };
        decision.write(
            lease.spec.get_or_insert_default(),
            &self.identity,
            duration,
            wall,
        );
        let replaced = self.api.replace(&self.name, &params(), &lease).await;
        written(state, now, replaced, acquired)
    }

    /// Logs who leads when that changed since the last read.
    fn log_leader(&self, previous: Option<&Observation>, record: &LeaseRecord) {
        let before = previous.map(|p| p.record.holder.as_deref());
        let now = record.holder.as_deref();
        if before == Some(now) || now == Some(self.identity.as_str()) {
            return;
        }
        match now {
            Some(leader) => {
                tracing::info!(lease = %self.lease, identity = %self.identity, leader, "{leader} leads")
            }
            None => {
                tracing::info!(lease = %self.lease, identity = %self.identity, "nobody leads: the Lease is free")
            }
        }
    }

    /// Clears the holder if it is this candidate, so that a successor
    /// takes the Lease at its next look instead of waiting for expiry.
    async fn release(&self) {
        let release = async {
            loop {
                let Some(mut lease) = self.api.get_opt(&self.name).await? else {
                    return Ok(false);
                };
                if LeaseRecord::from_lease(&lease).holder.as_deref() != Some(self.identity.as_str())
                {
                    return Ok(false);
                }
                let spec = lease.spec.get_or_insert_default();
                spec.holder_identity = None;
                spec.renew_time = Some(MicroTime(Timestamp::now()));
                match self.api.replace(&self.name, &params(), &lease).await {
                    Ok(_) => return Ok(true),
                    // A write between the read and ours: read again.
                    Err(kube::Error::Api(status)) if status.code == 409 => continue,
                    Err(e) => return Err(e),
                }
            }
        };
        let timeout = self.timings.renew_deadline;
        let why = match tokio::time::timeout(timeout, release).await {
            Ok(Ok(true)) => {
                tracing::info!(lease = %self.lease, identity = %self.identity, "released the Lease");
                return;
            }
            Ok(Ok(false)) => return,
            Ok(Err(e)) => with_causes(&e),
            Err(_) => format!("no answer within {timeout:?}"),
        };
        tracing::warn!(lease = %self.lease, identity = %self.identity, error = %why,
            "could not release the Lease; a successor takes over when it expires");
    }
}

/// The outcome of this candidate's write of the Lease at `now`.
fn written(
    state: &mut State,
    now: Instant,
    result: Result<Lease, kube::Error>,
    acquired: bool,
) -> Result<Attempt, kube::Error> {
    match result {
        Ok(lease) => {
            state.seen = Some(Observation {
                record: LeaseRecord::from_lease(&lease),
                since: now,
            });
            Ok(Attempt::Held { acquired })
        }
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(Attempt::Conflict),
        Err(e) => Err(e),
    }
}

fn params() -> PostParams {
    PostParams {
        field_manager: Some(MANAGER.to_owned()),
        ..PostParams::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "weir-0";
    const OTHER: &str = "weir-1";
    const LEASE: Duration = Duration::from_secs(15);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn held_by(holder: &str) -> LeaseRecord {
        LeaseRecord {
            holder: Some(holder.to_owned()),
            acquire_time: Some(Timestamp::from_second(1_700_000_000).unwrap_or_default()),
            renew_time: Some(Timestamp::from_second(1_700_000_100).unwrap_or_default()),
            duration: Some(LEASE),
            transitions: 3,
            resource_version: Some("100".into()),
        }
    }

    #[test]
    fn decisions() {
        let t0 = Instant::now();
        let free = LeaseRecord {
            holder: None,
            ..held_by(OTHER)
        };
        let empty_holder = LeaseRecord {
            holder: Some(String::new()),
            ..held_by(OTHER)
        };
        let bare = LeaseRecord::from_lease(&Lease::default());
        let no_duration = LeaseRecord {
            duration: None,
            ..held_by(OTHER)
        };
        let short = LeaseRecord {
            duration: Some(secs(5)),
            ..held_by(OTHER)
        };
        let ours = held_by(ME);
        let others = held_by(OTHER);
        let acquire = |transitions| Decision::Acquire { transitions };
        let wait = |until| Decision::Wait {
            holder: OTHER.into(),
            until,
        };
        #[rustfmt::skip]
        let table: Vec<(&str, &LeaseRecord, Duration, Decision)> = vec![
            // (case, record, now − since, decision)
            ("free", &free, secs(0), acquire(4)),
            ("an empty holder is nobody", &empty_holder, secs(0), acquire(4)),
            ("a Lease with no spec is free", &bare, secs(0), acquire(1)),
            ("ours", &ours, secs(0), Decision::Renew),
            ("ours long after expiry", &ours, secs(3600), Decision::Renew),
            ("another's, just seen", &others, secs(0), wait(t0 + LEASE)),
            ("another's, within its duration", &others, secs(14), wait(t0 + LEASE)),
            ("another's, 1 ns before expiry", &others, LEASE - Duration::from_nanos(1), wait(t0 + LEASE)),
            ("another's, exactly at expiry", &others, LEASE, acquire(4)),
            ("another's, after expiry", &others, secs(60), acquire(4)),
            ("the record's duration rules", &short, secs(5), acquire(4)),
            ("the record's duration rules, before", &short, secs(4), wait(t0 + secs(5))),
            ("no duration: ours (15 s) counts", &no_duration, secs(14), wait(t0 + LEASE)),
            ("no duration: expired after ours", &no_duration, secs(15), acquire(4)),
        ];
        for (case, record, after, want) in table {
            let seen = Observation {
                record: record.clone(),
                since: t0,
            };
            assert_eq!(decide(&seen, ME, LEASE, t0 + after), want, "{case}");
        }
    }

    #[test]
    fn a_negative_or_zero_duration_falls_back_to_ours() {
        let t0 = Instant::now();
        for secs in [0, -5] {
            let lease = Lease {
                spec: Some(LeaseSpec {
                    holder_identity: Some(OTHER.into()),
                    lease_duration_seconds: Some(secs),
                    lease_transitions: Some(-2),
                    ..LeaseSpec::default()
                }),
                ..Lease::default()
            };
            let record = LeaseRecord::from_lease(&lease);
            assert_eq!(record.duration, None, "{secs}");
            assert_eq!(record.transitions, 0, "{secs}");
            let seen = Observation::update(None, record, t0);
            assert_eq!(
                decide(&seen, ME, LEASE, t0 + Duration::from_secs(1)),
                Decision::Wait {
                    holder: OTHER.into(),
                    until: t0 + LEASE
                }
            );
        }
    }

    #[test]
    fn expiry_counts_from_when_this_candidate_saw_the_record_change() {
        let t0 = Instant::now();
        // The holder's clock runs an hour behind ours: its renewTime looks
        // stale, but the Lease was renewed just now. Not expired.
        let mut behind = held_by(OTHER);
        behind.renew_time = Timestamp::now()
            .checked_sub(jiff::SignedDuration::from_hours(1))
            .ok();
        let seen = Observation::update(None, behind, t0);
        assert!(matches!(
            decide(&seen, ME, LEASE, t0 + secs(1)),
            Decision::Wait { .. }
        ));

        // The holder's clock runs a day ahead: renewTime in the future, but
        // the record has not changed for longer than the lease. Expired.
        let mut ahead = held_by(OTHER);
        ahead.renew_time = Timestamp::now()
            .checked_add(jiff::SignedDuration::from_hours(24))
            .ok();
        let first = Observation::update(None, ahead.clone(), t0);
        let again = Observation::update(Some(first), ahead.clone(), t0 + secs(10));
        assert_eq!(again.since, t0, "an unchanged record keeps its first sight");
        assert_eq!(
            decide(&again, ME, LEASE, t0 + secs(15)),
            Decision::Acquire { transitions: 4 }
        );

        // A renewal (renewTime moved) restarts the count.
        let mut renewed = ahead.clone();
        renewed.renew_time = renewed.renew_time.and_then(|t| t.checked_add(secs(2)).ok());
        let seen = Observation::update(Some(again), renewed, t0 + secs(12));
        assert_eq!(seen.since, t0 + secs(12));
        assert_eq!(
            decide(&seen, ME, LEASE, t0 + secs(15)),
            Decision::Wait {
                holder: OTHER.into(),
                until: t0 + secs(27)
            }
        );
    }

    #[test]
    fn a_new_resource_version_alone_is_not_a_renewal() {
        let t0 = Instant::now();
        let first = Observation::update(None, held_by(OTHER), t0);
        let mut relabelled = held_by(OTHER);
        relabelled.resource_version = Some("101".into());
        let seen = Observation::update(Some(first), relabelled, t0 + secs(10));
        assert_eq!(seen.since, t0);
        assert_eq!(seen.record.resource_version.as_deref(), Some("101"));
        // A change of holder or transitions is a change.
        for changed in [
            LeaseRecord {
                holder: Some("weir-2".into()),
                ..held_by(OTHER)
            },
            LeaseRecord {
                transitions: 4,
                ..held_by(OTHER)
            },
            LeaseRecord {
                duration: Some(secs(20)),
                ..held_by(OTHER)
            },
        ] {
            let seen = Observation::update(Some(seen.clone()), changed, t0 + secs(11));
            assert_eq!(seen.since, t0 + secs(11));
        }
    }

    #[test]
    fn writes() {
        let wall = Timestamp::from_second(1_800_000_000).unwrap_or_default();
        let before = LeaseSpec {
            holder_identity: Some(OTHER.into()),
            acquire_time: Some(MicroTime(Timestamp::UNIX_EPOCH)),
            renew_time: Some(MicroTime(Timestamp::UNIX_EPOCH)),
            lease_duration_seconds: Some(15),
            lease_transitions: Some(3),
            preferred_holder: Some(OTHER.into()),
            strategy: None,
        };

        let mut acquired = before.clone();
        Decision::Acquire { transitions: 4 }.write(
            &mut acquired,
            ME,
            Duration::from_millis(1500),
            wall,
        );
        assert_eq!(
            acquired,
            LeaseSpec {
                holder_identity: Some(ME.into()),
                acquire_time: Some(MicroTime(wall)),
                renew_time: Some(MicroTime(wall)),
                lease_duration_seconds: Some(2),
                lease_transitions: Some(4),
                ..before.clone()
            }
        );

        let mut ours = LeaseSpec {
            holder_identity: Some(ME.into()),
            ..before.clone()
        };
        Decision::Renew.write(&mut ours, ME, LEASE, wall);
        assert_eq!(
            ours,
            LeaseSpec {
                holder_identity: Some(ME.into()),
                renew_time: Some(MicroTime(wall)),
                ..before.clone()
            }
        );

        let mut no_acquire_time = LeaseSpec {
            holder_identity: Some(ME.into()),
            ..LeaseSpec::default()
        };
        Decision::Renew.write(&mut no_acquire_time, ME, LEASE, wall);
        assert_eq!(no_acquire_time.acquire_time, Some(MicroTime(wall)));
        assert_eq!(no_acquire_time.lease_duration_seconds, Some(15));

        let mut waiting = before.clone();
        Decision::Wait {
            holder: OTHER.into(),
            until: Instant::now(),
        }
        .write(&mut waiting, ME, LEASE, wall);
        assert_eq!(waiting, before);
    }

    #[test]
    fn transitions_saturate() {
        let record = LeaseRecord {
            holder: None,
            transitions: i32::MAX,
            ..LeaseRecord::default()
        };
        let seen = Observation::update(None, record, Instant::now());
        assert_eq!(
            decide(&seen, ME, LEASE, seen.since),
            Decision::Acquire {
                transitions: i32::MAX
            }
        );
    }

    #[test]
    fn timings_that_cannot_keep_one_leader_are_refused() {
        let ok = Timings::default();
        assert!(ok.validate().is_ok());
        let cases = [
            (
                Timings {
                    retry_period: Duration::ZERO,
                    ..ok
                },
                "timings.retry_period",
            ),
            (
                Timings {
                    renew_deadline: secs(2),
                    ..ok
                },
                "timings.renew_deadline",
            ),
            (
                Timings {
                    lease_duration: secs(10),
                    ..ok
                },
                "timings.lease_duration",
            ),
            (
                Timings {
                    lease_duration: secs(1 << 40),
                    ..ok
                },
                "timings.lease_duration",
            ),
        ];
        for (timings, field) in cases {
            match timings.validate() {
                Err(Error::Invalid { field: f, problem }) => {
                    assert_eq!(f, field, "{timings:?}: {problem}");
                }
                Ok(()) => panic!("{timings:?} accepted"),
            }
        }
    }

    #[test]
    fn lease_seconds_round_up() {
        assert_eq!(lease_seconds(secs(15)), Some(15));
        assert_eq!(lease_seconds(Duration::from_millis(1500)), Some(2));
        assert_eq!(lease_seconds(Duration::from_millis(1)), Some(1));
        assert_eq!(lease_seconds(secs(u64::from(u32::MAX))), None);
    }
}

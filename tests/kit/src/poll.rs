//! Wait on a condition, with a deadline.
//!
//! A check is called until it reports done; between two calls the poll
//! sleeps 5 ms, doubling up to 50 ms, so a quick condition is seen at
//! once and a slow one (an API server, a process) is not hammered. The
//! sleep is only the pace of the looks, never the synchronization: the
//! condition itself is what is waited on.
//!
//! A check returns an [`Option`] (`None`: not yet) or a [`Result`]
//! (`Err(seen)`: not yet, and `seen` is what it saw). On timeout the
//! message names what was awaited and, for a `Result`, the last value
//! seen, so a failure says how far things got:
//!
//! ```no_run
//! # async fn example(phase: impl Fn() -> String) {
//! use std::time::Duration;
//! use weir_test_kit::poll::until;
//! until("the run to pause", Duration::from_secs(60), || async {
//!     let now = phase();
//!     if now == "Paused" { Ok(now) } else { Err(now) }
//! })
//! .await;
//! # }
//! ```
//!
//! [`until`] and [`until_blocking`] panic on timeout (what a test wants);
//! [`try_until`] returns [`TimedOut`] for callers that add context first.

use std::fmt;
use std::future::Future;
use std::time::Duration;

/// First pause between two looks.
const FIRST_PAUSE: Duration = Duration::from_millis(5);
/// Longest pause between two looks.
const MAX_PAUSE: Duration = Duration::from_millis(50);

/// What a check returns: done with a value, or not yet.
pub trait Check {
    /// The value a done check gives.
    type Value;
    /// `Ok(value)` when done; `Err(Some(seen))` when not yet, with what
    /// was seen (rendered with `Debug`); `Err(None)` when not yet with
    /// nothing to show.
    fn done(self) -> Result<Self::Value, Option<String>>;
}

impl<T> Check for Option<T> {
    type Value = T;
    fn done(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

impl<T, E: fmt::Debug> Check for Result<T, E> {
    type Value = T;
    fn done(self) -> Result<T, Option<String>> {
        self.map_err(|seen| Some(format!("{seen:?}")))
    }
}

/// A condition that did not hold within its deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedOut {
    /// What was awaited.
    pub what: String,
    /// How long.
    pub within: Duration,
    /// The last value a `Result` check saw (`None` for `Option` checks).
    pub last: Option<String>,
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "timed out after {:?} waiting for {}",
            self.within, self.what
        )?;
        match &self.last {
            Some(last) => write!(f, "; last seen: {last}"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for TimedOut {}

/// The pace of one poll: what it waits for, and the pause to take next.
struct Pace<'a> {
    what: &'a str,
    within: Duration,
    pause: Duration,
}

impl<'a> Pace<'a> {
    fn new(what: &'a str, within: Duration) -> Self {
        Pace {
            what,
            within,
            pause: FIRST_PAUSE,
        }
    }

    /// After a look that was not done, with `left` until the deadline:
    /// the pause before the next look (never past the deadline), or
    /// [`TimedOut`] with `last` when no time is left.
    fn after(&mut self, left: Duration, last: Option<String>) -> Result<Duration, TimedOut> {
        if left.is_zero() {
            return Err(TimedOut {
                what: self.what.to_string(),
                within: self.within,
                last,
            });
        }
        let pause = self.pause.min(left);
        self.pause = (self.pause * 2).min(MAX_PAUSE);
        Ok(pause)
    }
}

/// Calls `check` until it is done, at most until `within` has passed
/// (tokio's clock: paused time works); the last call is made at the
/// deadline. Returns the check's value, or [`TimedOut`].
///
/// # Errors
/// [`TimedOut`] with the last value seen.
pub async fn try_until<C, F, Fut>(
    what: &str,
    within: Duration,
    mut check: F,
) -> Result<C::Value, TimedOut>
where
    C: Check,
    F: FnMut() -> Fut,
    Fut: Future<Output = C>,
{
    let deadline = tokio::time::Instant::now() + within;
    let mut pace = Pace::new(what, within);
    loop {
        match check().await.done() {
            Ok(value) => return Ok(value),
            Err(last) => {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                tokio::time::sleep(pace.after(left, last)?).await;
            }
        }
    }
}

/// [`try_until`], panicking with the [`TimedOut`] message.
pub async fn until<C, F, Fut>(what: &str, within: Duration, check: F) -> C::Value
where
    C: Check,
    F: FnMut() -> Fut,
    Fut: Future<Output = C>,
{
    try_until(what, within, check)
        .await
        .unwrap_or_else(|timed_out| panic!("{timed_out}"))
}

/// [`try_until`] for synchronous checks, on the calling thread (std's
/// clock).
///
/// # Errors
/// [`TimedOut`] with the last value seen.
pub fn try_until_blocking<C: Check>(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> C,
) -> Result<C::Value, TimedOut> {
    let deadline = std::time::Instant::now() + within;
    let mut pace = Pace::new(what, within);
    loop {
        match check().done() {
            Ok(value) => return Ok(value),
            Err(last) => {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                std::thread::sleep(pace.after(left, last)?);
            }
        }
    }
}

/// [`try_until_blocking`], panicking with the [`TimedOut`] message.
pub fn until_blocking<C: Check>(
    what: &str,
    within: Duration,
    check: impl FnMut() -> C,
) -> C::Value {
    try_until_blocking(what, within, check).unwrap_or_else(|timed_out| panic!("{timed_out}"))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn returns_the_value_once_the_check_is_done() {
        let calls = Cell::new(0);
        let got = until("the third call", Duration::from_secs(1), || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move { (n == 3).then_some(n) }
        })
        .await;
        assert_eq!(got, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_names_what_was_awaited_and_the_last_value_seen() {
        let calls = Cell::new(0);
        let err = try_until("the count to reach 100", Duration::from_secs(1), || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move { if n >= 100 { Ok(()) } else { Err(n) } }
        })
        .await
        .expect_err("100 looks do not fit in 1 s");
        let looks = calls.get();
        assert_eq!(err.last, Some(looks.to_string()), "the last look's value");
        assert_eq!(
            err.to_string(),
            format!("timed out after 1s waiting for the count to reach 100; last seen: {looks}")
        );
        // 5, 10, 20, 40 ms, then 50 ms pauses; the last look at the deadline.
        assert!((20..30).contains(&looks), "{looks} looks");
    }

    #[tokio::test(start_paused = true)]
    async fn an_option_check_that_never_holds_says_only_what_was_awaited() {
        let err = try_until("nothing", Duration::from_millis(50), || async {
            None::<()>
        })
        .await
        .expect_err("never");
        assert_eq!(err.to_string(), "timed out after 50ms waiting for nothing");
    }

    #[test]
    fn the_blocking_poll_returns_the_value_or_the_last_value_seen() {
        let mut n = 0;
        let got = until_blocking("n to reach 3", Duration::from_secs(5), || {
            n += 1;
            (n == 3).then_some(n)
        });
        assert_eq!(got, 3);
        let err = try_until_blocking("never", Duration::from_millis(20), || {
            Err::<(), _>("still no")
        })
        .expect_err("never");
        assert_eq!(err.last.as_deref(), Some("\"still no\""));
    }
}

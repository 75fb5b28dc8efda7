//! One timer for all of a connection's deadlines, checked lazily.
//!
//! A connection always waits under one deadline: for the next request head,
//! for the upstream's response head, for the next bytes of a stream. A
//! timer per wait (tokio's `timeout`) registers in the timer wheel and
//! leaves it again each time: for a small request, three times, about a
//! twentieth of its instructions. Here a deadline is only noted
//! ([`Deadline::set`]); the timer, armed once, is moved on only when it
//! fires before the deadline noted at that moment (at most once per
//! deadline's length), or when a deadline comes earlier than it.

use std::pin::Pin;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// The deadline a connection (or an HTTP/2 stream) waits under.
pub(super) struct Deadline {
    /// Boxed so that the owner can hand `&mut Deadline` down the call
    /// chain; one allocation per connection.
    timer: Pin<Box<Sleep>>,
    due: Instant,
}

impl Deadline {
    /// A deadline `after` from now.
    pub(super) fn new(after: Duration) -> Deadline {
        let due = Instant::now() + after;
        Deadline {
            timer: Box::pin(tokio::time::sleep_until(due)),
            due,
        }
    }

    /// The deadline is now `after` from `now`. Only a deadline earlier than
    /// the timer's moves the timer (a shorter timeout than the last one);
    /// a later one is found when the timer fires.
    pub(super) fn set(&mut self, now: std::time::Instant, after: Duration) {
        self.due = Instant::from_std(now) + after;
        if self.due < self.timer.deadline() {
            let due = self.due;
            self.timer.as_mut().reset(due);
        }
    }

    /// Resolves once the deadline has passed. Cancel-safe: a later call
    /// goes on where this one was.
    pub(super) async fn passed(&mut self) {
        loop {
            self.timer.as_mut().await;
            if Instant::now() >= self.due {
                return;
            }
            // Fired for an earlier deadline: wait for the current one.
            let due = self.due;
            self.timer.as_mut().reset(due);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_deadline_moved_on_is_the_one_that_counts() {
        let start = Instant::now();
        let mut deadline = Deadline::new(Duration::from_secs(10));
        // Moved on before the first one passes: the timer fires at 10 s,
        // finds 25 s, and waits on.
        deadline.set(
            start.into_std() + Duration::from_secs(5),
            Duration::from_secs(20),
        );
        deadline.passed().await;
        assert_eq!(start.elapsed(), Duration::from_secs(25));
        // Moved on after it passed.
        deadline.set(Instant::now().into_std(), Duration::from_secs(3));
        deadline.passed().await;
        assert_eq!(start.elapsed(), Duration::from_secs(28));
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_moves_the_timer_back() {
        let start = Instant::now();
        let mut deadline = Deadline::new(Duration::from_secs(60));
        deadline.set(start.into_std(), Duration::from_secs(1));
        deadline.passed().await;
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_again_after_a_cancelled_wait_keeps_the_deadline() {
        let start = Instant::now();
        let mut deadline = Deadline::new(Duration::from_secs(10));
        let cut = tokio::time::timeout(Duration::from_secs(4), deadline.passed()).await;
        assert!(cut.is_err(), "not passed at 4 s");
        deadline.passed().await;
        assert_eq!(start.elapsed(), Duration::from_secs(10));
    }
}

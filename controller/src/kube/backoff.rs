//! Retrying calls to the API server: exponential backoff with full jitter,
//! and [`connect`], which waits for the API server at start-up.
//!
//! # Why full jitter
//!
//! Many replicas retrying against one API server that just came back must
//! not retry in step. AWS's "Exponential Backoff and Jitter" (Marc Brooker,
//! 2015) compares the ways to spread them: *full jitter* (sleep a uniform
//! draw from `[0, min(cap, base·factor^n))`) and *decorrelated jitter* did
//! the least total work and finished soonest, far ahead of plain or "equal
//! jitter" backoff. Full jitter is chosen because each delay depends only on
//! the attempt number and one draw, so its bounds are stated and tested per
//! attempt, with no state carried from one delay to the next.
//!
//! The draw is a parameter of [`Backoff::delay`], so the arithmetic is
//! tested without randomness; only [`connect`] draws from an RNG.

use std::fmt::Display;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::version::Info;
use kube::Client;
use tokio::time::Instant;

/// Errors of [`connect`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No answer before the deadline.
    #[error(
        "cannot reach the Kubernetes API at {url}: {last}; tried {attempts} times over {}",
        seconds(*.elapsed)
    )]
    Unreachable {
        /// The API server's address.
        url: String,
        /// The last attempt's error, with its causes.
        last: String,
        /// Attempts made.
        attempts: u32,
        /// Time spent trying.
        elapsed: Duration,
    },
    /// The API server answered with an error that retrying will not fix
    /// (bad credentials, a proxy in the way).
    #[error(
        "the Kubernetes API at {url} refused to tell its version ({code} {reason}: {message}); \
         check the credentials and server address in the kubeconfig"
    )]
    Refused {
        /// The API server's address.
        url: String,
        /// HTTP status code.
        code: u16,
        /// The status reason (`Unauthorized`, `Forbidden`, …).
        reason: String,
        /// The status message.
        message: String,
    },
}

/// Exponential backoff with full jitter: the `n`-th retry (from 0) waits a
/// uniform draw from `[0, min(cap, base·factor^n))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first ceiling.
    pub base: Duration,
    /// Growth of the ceiling per attempt.
    pub factor: u32,
    /// The largest ceiling.
    pub cap: Duration,
}

impl Default for Backoff {
    /// 200 ms, doubling, capped at 10 s.
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(200),
            factor: 2,
            cap: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The largest delay of retry `attempt` (from 0): `min(cap,
    /// base·factor^attempt)`, without overflow for any attempt.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        self.base
            .saturating_mul(self.factor.saturating_pow(attempt))
            .min(self.cap)
    }

    /// The delay of retry `attempt` for a uniform `draw` from `[0, 1)`:
    /// `ceiling(attempt)·draw`. A draw outside `[0, 1]` is clamped into it
    /// (NaN counts as 0), so the delay never exceeds the ceiling.
    pub fn delay(&self, attempt: u32, draw: f64) -> Duration {
        let draw = if draw.is_nan() {
            0.0
        } else {
            draw.clamp(0.0, 1.0)
        };
        self.ceiling(attempt).mul_f64(draw)
    }
}

/// Waits until the API server at `url` (the address `client` talks to, for
/// the error message) answers `GET /version`, retrying with the default
/// [`Backoff`] for up to `deadline`. Returns the server's version.
///
/// Each attempt is cut off at the deadline, so this returns within about
/// `deadline` even when the server accepts connections and never answers.
///
/// # Errors
/// [`Error::Unreachable`] when no attempt succeeded by the deadline, with
/// the last error and the number of attempts; [`Error::Refused`] at once
/// when the server answered with a client error that retrying will not
/// fix (401, 403, 404).
pub async fn connect(
    client: &Client,
    url: &impl Display,
    deadline: Duration,
) -> Result<Info, Error> {
    connect_with(url, deadline, || client.apiserver_version()).await
}

/// [`connect`] with each attempt made by `attempt`: the retry loop apart
/// from the client, so tests count the attempts it makes and run it on a
/// paused clock.
///
/// # Errors
/// As [`connect`].
pub async fn connect_with<F, Fut>(
    url: &impl Display,
    deadline: Duration,
    mut attempt: F,
) -> Result<Info, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Info, kube::Error>>,
{
    let backoff = Backoff::default();
    let started = Instant::now();
    let give_up = started + deadline;
    let mut attempts: u32 = 0;
    loop {
        attempts = attempts.saturating_add(1);
        let last = match tokio::time::timeout_at(give_up, attempt()).await {
            Ok(Ok(info)) => return Ok(info),
            Ok(Err(kube::Error::Api(status))) if !retryable(status.code) => {
                return Err(Error::Refused {
                    url: url.to_string(),
                    code: status.code,
                    reason: status.reason.clone(),
                    message: status.message.clone(),
                });
            }
            Ok(Err(e)) => with_causes(&e),
            Err(_) => "no answer before the deadline".to_owned(),
        };
        let now = Instant::now();
        if now >= give_up {
            return Err(Error::Unreachable {
                url: url.to_string(),
                last,
                attempts,
                elapsed: now - started,
            });
        }
        let delay = backoff.delay(attempts - 1, rand::random());
        tracing::debug!(%url, attempt = attempts, error = %last, retry_in = ?delay, "API server not answering");
        tokio::time::sleep_until((now + delay).min(give_up)).await;
        if Instant::now() >= give_up {
            return Err(Error::Unreachable {
                url: url.to_string(),
                last,
                attempts,
                elapsed: started.elapsed(),
            });
        }
    }
}

/// Whether an HTTP status from the API server may go away on its own
/// (overload, a server still starting, a proxy's gateway error).
fn retryable(code: u16) -> bool {
    code == 408 || code == 429 || code >= 500
}

/// An error and its causes, `: `-separated: kube's own message for a
/// refused connection is only "client error (Connect)", the reason is in
/// the causes.
pub fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let more = c.to_string();
        // Wrappers often repeat their source's message; say it once.
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// `1.5 s` below ten seconds, `60 s` above.
fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 10.0 {
        format!("{s:.1} s")
    } else {
        format!("{s:.0} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_ceiling_doubles_from_the_base_up_to_the_cap() {
        let b = Backoff::default();
        let ceilings: Vec<Duration> = (0..8).map(|n| b.ceiling(n)).collect();
        assert_eq!(
            ceilings,
            [
                ms(200),
                ms(400),
                ms(800),
                ms(1600),
                ms(3200),
                ms(6400),
                ms(10_000),
                ms(10_000)
            ]
        );
    }

    #[test]
    fn the_ceiling_never_overflows() {
        let b = Backoff::default();
        for n in [30, 31, 32, 63, 64, 1000, u32::MAX] {
            assert_eq!(b.ceiling(n), b.cap, "attempt {n}");
        }
        let huge = Backoff {
            base: Duration::MAX,
            factor: u32::MAX,
            cap: Duration::MAX,
        };
        assert_eq!(huge.ceiling(u32::MAX), Duration::MAX);
    }

    #[test]
    fn a_delay_is_the_draw_share_of_the_ceiling() {
        let b = Backoff::default();
        assert_eq!(b.delay(0, 0.0), Duration::ZERO);
        assert_eq!(b.delay(0, 0.5), ms(100));
        assert_eq!(b.delay(3, 0.25), ms(400));
        assert_eq!(b.delay(20, 0.5), ms(5000));
    }

    #[test]
    fn delays_stay_within_zero_and_the_ceiling_for_any_draw() {
        let b = Backoff::default();
        let draws = [
            -1.0,
            0.0,
            1e-12,
            0.3,
            0.999_999,
            1.0,
            7.0,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        for n in 0..12 {
            for draw in draws {
                let d = b.delay(n, draw);
                assert!(
                    d <= b.ceiling(n),
                    "attempt {n}, draw {draw}: {d:?} > {:?}",
                    b.ceiling(n)
                );
            }
        }
        assert_eq!(b.delay(2, f64::NAN), Duration::ZERO);
        assert_eq!(b.delay(2, -3.0), Duration::ZERO);
        assert_eq!(b.delay(2, 3.0), b.ceiling(2));
    }

    #[test]
    fn the_same_draw_grows_with_the_attempt_until_the_cap() {
        let b = Backoff::default();
        let delays: Vec<Duration> = (0..10).map(|n| b.delay(n, 0.9)).collect();
        for pair in delays.windows(2) {
            assert!(pair[1] >= pair[0], "{delays:?}");
        }
        assert_eq!(delays[9], ms(9000));
        assert!(delays[3] > delays[2]);
    }

    #[test]
    fn random_draws_spread_over_the_whole_range() {
        // What `connect` does: uniform draws. Their mean is half the
        // ceiling and they reach both ends of the range.
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(6);
        let b = Backoff::default();
        let ceiling = b.ceiling(4).as_secs_f64();
        let delays: Vec<f64> = (0..10_000)
            .map(|_| b.delay(4, rand::RngExt::random(&mut rng)).as_secs_f64())
            .collect();
        let mean = delays.iter().sum::<f64>() / delays.len() as f64;
        assert!(
            (mean / ceiling - 0.5).abs() < 0.02,
            "mean {mean} of {ceiling}"
        );
        assert!(delays.iter().any(|d| *d < 0.01 * ceiling));
        assert!(delays.iter().any(|d| *d > 0.99 * ceiling));
    }

    /// An API error with `code`, as kube reports a status from the server.
    fn status(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("no", "Reason")
                .with_code(code)
                .boxed(),
        )
    }

    fn version() -> Info {
        Info {
            major: "1".into(),
            ..Info::default()
        }
    }

    /// The outcome of `connect_with` over 2 s of a paused clock, the
    /// attempts it made, and the (virtual) time it took.
    async fn paused_connect<Fut>(
        mut answer: impl FnMut(u32) -> Fut,
    ) -> (Result<Info, Error>, u32, Duration)
    where
        Fut: Future<Output = Result<Info, kube::Error>>,
    {
        let mut made = 0;
        let started = Instant::now();
        let result = connect_with(&"https://api", Duration::from_secs(2), || {
            made += 1;
            answer(made)
        })
        .await;
        (result, made, started.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_at_the_first_attempt_is_returned_without_a_retry() {
        let (result, made, took) = paused_connect(|_| async { Ok(version()) }).await;
        assert_eq!(result.expect("connected").major, "1");
        assert_eq!((made, took), (1, Duration::ZERO));
    }

    #[tokio::test(start_paused = true)]
    async fn a_retryable_failure_is_retried_until_an_answer() {
        let (result, made, _) = paused_connect(|n| async move {
            if n < 3 {
                Err(status(503))
            } else {
                Ok(version())
            }
        })
        .await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(made, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_retrying_cannot_fix_ends_at_once() {
        let (result, made, took) = paused_connect(|_| async { Err(status(403)) }).await;
        let Err(Error::Refused { code, .. }) = result else {
            panic!("not Refused: {result:?}");
        };
        assert_eq!((code, made, took), (403, 1, Duration::ZERO));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_retried_until_exactly_the_deadline() {
        let (result, made, took) = paused_connect(|_| async { Err(status(503)) }).await;
        let Err(Error::Unreachable {
            attempts, elapsed, ..
        }) = result
        else {
            panic!("not Unreachable: {result:?}");
        };
        assert_eq!(
            (attempts, elapsed, took),
            (made, took, Duration::from_secs(2))
        );
        // Full jitter from 200 ms: the first three delays sum to at most
        // 1.4 s, so at least four attempts fit in 2 s.
        assert!(made >= 4, "{made} attempts");
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_that_never_answers_is_cut_off_at_the_deadline() {
        let (result, made, took) =
            paused_connect(|_| std::future::pending::<Result<Info, kube::Error>>()).await;
        let Err(Error::Unreachable { last, attempts, .. }) = result else {
            panic!("not Unreachable: {result:?}");
        };
        assert_eq!(last, "no answer before the deadline");
        assert_eq!((attempts, made, took), (1, 1, Duration::from_secs(2)));
    }

    #[test]
    fn seconds_read_naturally() {
        assert_eq!(seconds(ms(1500)), "1.5 s");
        assert_eq!(seconds(Duration::from_secs(60)), "60 s");
    }

    #[test]
    fn causes_are_joined_once() {
        let inner = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        #[derive(Debug, thiserror::Error)]
        #[error("client error (Connect)")]
        struct Outer(#[source] std::io::Error);
        assert_eq!(
            with_causes(&Outer(inner)),
            "client error (Connect): refused"
        );
    }
}

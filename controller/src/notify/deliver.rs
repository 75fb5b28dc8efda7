//! Sending notifications: off the reconcile path, with retries.
//!
//! [`Notifier::send`] only puts the notification on a bounded queue
//! (`try_send`): a reconcile never waits for a webhook. A dispatcher task
//! reads the webhook list (from the Secret, re-read at most every few
//! seconds so an edit takes effect without a restart) and hands each
//! notification to one worker per webhook, so a receiver that is down or
//! never answers delays only its own queue. A worker POSTs with a timeout
//! and retries with doubling backoff up to a bound; every attempt carries
//! the same `Idempotency-Key`. A full queue drops the notification with a
//! warning: bounded memory over completeness when a receiver is gone for
//! good.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Notification;
use super::config::{self, ConfigError, Webhook};
use super::payload;

/// How hard to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Wait before the first retry; doubled after each failure.
    pub first_retry: Duration,
    /// The longest wait between two attempts.
    pub max_backoff: Duration,
    /// Attempts per notification and webhook, the first included.
    pub attempts: u32,
    /// One attempt's limit, connecting and answering together.
    pub timeout: Duration,
    /// Notifications waiting per webhook (and in the dispatcher) before new
    /// ones are dropped.
    pub queue: usize,
    /// How long the webhook list is reused before the Secret is read again.
    pub reload: Duration,
}

impl Default for Policy {
    /// 1 s, 2 s, 4 s ... up to a minute between attempts, 10 attempts (about
    /// 6 minutes in all), 10 s per attempt.
    fn default() -> Self {
        Policy {
            first_retry: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            attempts: 10,
            timeout: Duration::from_secs(10),
            queue: 256,
            reload: Duration::from_secs(10),
        }
    }
}

impl Policy {
    /// The wait after failed attempt `n` (1-based).
    pub fn backoff(&self, n: u32) -> Duration {
        let factor = 2u32.saturating_pow(n.saturating_sub(1).min(20));
        self.first_retry
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// Where the webhook list comes from.
#[derive(Clone)]
pub enum Source {
    /// A fixed list (tests, or none configured).
    Static(Vec<Webhook>),
    /// Key `webhooks.yaml` of a Secret.
    Secret {
        /// The client to read it with.
        client: Client,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Static(w) => f.debug_tuple("Static").field(w).finish(),
            Source::Secret {
                namespace, name, ..
            } => write!(f, "Secret({namespace}/{name})"),
        }
    }
}

/// Why the webhook list could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The Secret could not be read.
    #[error("reading Secret {0}: {1}")]
    Api(String, kube::Error),
    /// The Secret has no `webhooks.yaml`, or it is not UTF-8.
    #[error("Secret {0} has no UTF-8 key {key}", key = config::SECRET_KEY)]
    MissingKey(String),
    /// The list is invalid.
    #[error("Secret {0}: {1}")]
    Config(String, ConfigError),
}

impl Source {
    /// The current webhook list.
    ///
    /// # Errors
    /// The Secret cannot be read or is invalid.
    pub async fn load(&self) -> Result<Vec<Webhook>, LoadError> {
        match self {
            Source::Static(w) => Ok(w.clone()),
            Source::Secret {
                client,
                namespace,
                name,
            } => {
                let what = format!("{namespace}/{name}");
                let secret = Api::<Secret>::namespaced(client.clone(), namespace)
                    .get(name)
                    .await
                    .map_err(|e| LoadError::Api(what.clone(), e))?;
                let text = secret
                    .data
                    .as_ref()
                    .and_then(|d| d.get(config::SECRET_KEY))
                    .and_then(|b| String::from_utf8(b.0.clone()).ok())
                    .ok_or_else(|| LoadError::MissingKey(what.clone()))?;
                config::parse(&text).map_err(|e| LoadError::Config(what, e))
            }
        }
    }
}

/// Counts, for tests and the controller's metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// Notifications a webhook answered with 2xx.
    pub delivered: AtomicU64,
    /// Attempts that failed and will be retried.
    pub failed_attempts: AtomicU64,
    /// Notifications given up on (attempts exhausted, or a 4xx refusal).
    pub given_up: AtomicU64,
    /// Notifications dropped on a full queue.
    pub dropped: AtomicU64,
}

impl Stats {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A counter's value.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// A notification and the webhook names its Canary's `spec.notify` lists.
type Job = (Notification, Vec<String>);

/// The handle the reconciler sends notifications through.
#[derive(Debug, Clone)]
pub struct Notifier {
    tx: mpsc::Sender<Job>,
    stats: Arc<Stats>,
}

impl Notifier {
    /// Starts the dispatcher on the current tokio runtime.
    pub fn start(source: Source, policy: Policy) -> Notifier {
        let (tx, rx) = mpsc::channel(policy.queue.max(1));
        let stats = Arc::new(Stats::default());
        tokio::spawn(dispatch(source, policy, rx, stats.clone()));
        Notifier { tx, stats }
    }

    /// Queues `n` for the webhooks that want it; never waits.
    pub fn send(&self, n: Notification, named: &[String]) {
        let event = n.event.as_str();
        if self.tx.try_send((n, named.to_vec())).is_err() {
            Stats::add(&self.stats.dropped);
            tracing::warn!(event, "notification queue full: notification dropped");
        }
    }

    /// Delivery counts so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

async fn dispatch(source: Source, policy: Policy, mut rx: mpsc::Receiver<Job>, stats: Arc<Stats>) {
    let client = match reqwest::Client::builder().timeout(policy.timeout).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the notifications HTTP client");
            return;
        }
    };
    let mut cached: Option<(Instant, Vec<Webhook>)> = None;
    let mut workers: HashMap<String, mpsc::Sender<(Notification, Webhook)>> = HashMap::new();
    while let Some((n, named)) = rx.recv().await {
        let fresh = cached
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < policy.reload);
        if !fresh {
            match source.load().await {
                Ok(hooks) => cached = Some((Instant::now(), hooks)),
                Err(e) => {
                    // The last good list stays in use.
                    tracing::warn!(error = %e, "cannot read the notification webhooks");
                    if cached.is_none() {
                        continue;
                    }
                }
            }
        }
        let Some((_, hooks)) = &cached else { continue };
        for hook in hooks.iter().filter(|h| h.wants(&named, n.event)) {
            let worker = workers.entry(hook.name.clone()).or_insert_with(|| {
                let (tx, rx) = mpsc::channel(policy.queue.max(1));
                tokio::spawn(work(
                    hook.name.clone(),
                    client.clone(),
                    policy,
                    rx,
                    stats.clone(),
                ));
                tx
            });
            if worker.try_send((n.clone(), hook.clone())).is_err() {
                Stats::add(&stats.dropped);
                tracing::warn!(
                    webhook = %hook.name,
                    event = n.event.as_str(),
                    "webhook queue full: notification dropped"
                );
            }
        }
    }
}

/// What one attempt came to.
enum Attempt {
    Delivered,
    /// Worth another try (connection failed, timeout, 5xx, 408, 429).
    Retry(String),
    /// The receiver refused it for good (other 4xx).
    Refused(u16),
}

async fn post(client: &reqwest::Client, n: &Notification, hook: &Webhook) -> Attempt {
    let mut request = client
        .post(&hook.url)
        .header("Idempotency-Key", &n.id)
        .header("X-Weir-Event", n.event.as_str())
        .json(&payload::body(n, hook.format));
    for (name, value) in &hook.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    match request.send().await {
        Ok(r) if r.status().is_success() => Attempt::Delivered,
        Ok(r) => {
            let code = r.status().as_u16();
            if r.status().is_client_error() && code != 408 && code != 429 {
                Attempt::Refused(code)
            } else {
                Attempt::Retry(format!("HTTP {code}"))
            }
        }
        // Without the URL: it is a secret.
        Err(e) => Attempt::Retry(e.without_url().to_string()),
    }
}

async fn work(
    name: String,
    client: reqwest::Client,
    policy: Policy,
    mut rx: mpsc::Receiver<(Notification, Webhook)>,
    stats: Arc<Stats>,
) {
    while let Some((n, hook)) = rx.recv().await {
        let event = n.event.as_str();
        let mut attempt = 1;
        loop {
            match post(&client, &n, &hook).await {
                Attempt::Delivered => {
                    Stats::add(&stats.delivered);
                    tracing::debug!(webhook = %name, event, id = %n.id, attempt, "notification delivered");
                    break;
                }
                Attempt::Refused(code) => {
                    Stats::add(&stats.given_up);
                    tracing::warn!(webhook = %name, event, id = %n.id, code, "webhook refused the notification");
                    break;
                }
                Attempt::Retry(why) if attempt < policy.attempts => {
                    Stats::add(&stats.failed_attempts);
                    tracing::info!(webhook = %name, event, attempt, error = %why, "notification failed; retrying");
                    tokio::time::sleep(policy.backoff(attempt)).await;
                    attempt += 1;
                }
                Attempt::Retry(why) => {
                    Stats::add(&stats.failed_attempts);
                    Stats::add(&stats.given_up);
                    tracing::warn!(webhook = %name, event, id = %n.id, attempts = attempt, error = %why, "notification given up");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_bound() {
        let p = Policy::default();
        let waits: Vec<u64> = (1..=8).map(|n| p.backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(p.backoff(1000), Duration::from_secs(60));
    }
}

//! weir-test-kit: the helpers every test crate shares and that need no
//! Kubernetes.
//!
//! - [`poll`]: wait on a condition with a bounded deadline; a timeout
//!   names what was awaited and the last value seen. Tests wait on the
//!   condition they assert, never on time.
//! - [`python`]: the Python interpreter with the real `openai` client
//!   (tests/run's venv), and a script run whose JSON answer comes back.
//! - [`sim`]: the `weir sim` flags of a healthy version and a slow one.
//! - [`tls`]: a CA and certificates made with the `openssl` command.
//! - [`webhook`]: a webhook receiver that records what it gets and answers
//!   200, 500-then-200, 400 or never (the notification tests).
//!
//! Why a crate of its own, beside `weir-envtest`: the proxy's loopback
//! tests and the simulator's tests poll and drive the `openai` client
//! too, and they should not compile a Kubernetes client for that. What
//! needs the API server (the server itself, its stop and start for outage
//! tests, the Canary builder) is in `weir-envtest`
//! (`tests/envtest/rust`), which depends on this crate.

pub mod poll;
pub mod python;
pub mod sim;
pub mod tls;
pub mod webhook;

//! Annotations through which `weir promote`, `abort` and `retry` ask the
//! controller to act. Each holds a request id (a timestamp); the controller
//! acts once per new id and records it in `status.acknowledged`, so a
//! command is never applied twice and never by editing status behind the
//! controller's back.

/// Promote now: skip the remaining steps (`full`) or end the current
/// pause or analysis (`step`). Value: `<id>` or `<id>;full`.
pub const PROMOTE: &str = "weir.dev/promote";
/// Abort the run: traffic back to stable first.
pub const ABORT: &str = "weir.dev/abort";
/// Restart an aborted run from its first step.
pub const RETRY: &str = "weir.dev/retry";
/// Set by `weir restore` while it puts a Canary back (its status, the
/// objects it owns): the controller leaves the Canary alone until the
/// annotation is gone, so that it never acts on half a restore (a
/// Canary without its status would be adopted anew). Value: when the
/// restore began.
pub const RESTORING: &str = "weir.dev/restoring";

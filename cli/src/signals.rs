//! SIGTERM and SIGINT for the long-running commands.
//!
//! Listened for as a command starts, not when it first waits on them: a
//! signal that comes while the command is still starting (its proxy may
//! already serve on worker threads, its controller already reconcile)
//! would otherwise get the default action and kill the process, with no
//! drain, no record and the Lease still held.

use anyhow::{Context, Result};
use tokio::signal::unix::{Signal, SignalKind, signal};

/// SIGTERM (systemd, `docker stop`, the kubelet) and SIGINT (Ctrl-C),
/// caught from [`Shutdown::listen`] on.
#[derive(Debug)]
pub struct Shutdown {
    term: Signal,
    int: Signal,
}

impl Shutdown {
    /// Starts catching both signals. Call it inside the runtime, before
    /// anything starts serving.
    ///
    /// # Errors
    /// When the runtime cannot install a handler.
    pub fn listen() -> Result<Self> {
        Ok(Shutdown {
            term: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
        })
    }

    /// Resolves on the first SIGTERM or SIGINT since [`Shutdown::listen`]
    /// (one that came before this was awaited included).
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {},
            _ = self.int.recv() => {},
        }
    }
}

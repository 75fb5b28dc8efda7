//! `weir proxy`: the L7 proxy as a process, configured from a YAML file
//! that is hot-reloaded on change and rewritten by `PUT
//! /v1/routes/{name}/weights`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use weir_proxy::config::file::POLL_INTERVAL;
use weir_proxy::{ConfigSource, FileSource, Observations, Settings};

use crate::exit::Code;

/// Arguments of `weir proxy`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The YAML config file (listen, admin, routes with weighted cohorts).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: PathBuf,
    /// Overrides the file's `listen` address.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Overrides the file's `admin` address (keep it on loopback unless a
    /// network policy protects it: it changes traffic).
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// Worker threads (default: one per core).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
}

/// Runs `weir proxy` until SIGTERM or Ctrl-C, then drains.
pub fn run(args: &Args) -> Result<Code> {
    let (source, config) = FileSource::open(&args.config)?;
    let threads = args.threads.map_or_else(num_threads, usize::from);
    // One thread: a current-thread runtime, with no work-stealing
    // machinery between the I/O driver and the tasks it wakes.
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    let runtime = builder
        .thread_name("weir-proxy")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let source = Arc::new(source);
        let watcher = Arc::clone(&source);
        tokio::spawn(async move { watcher.watch(POLL_INTERVAL).await });
        let settings = Settings {
            listen: args.listen.unwrap_or(config.listen),
            admin: args.admin.unwrap_or(config.admin),
            timeouts: config.timeouts,
            draw_seed: None,
        };
        let instance = format!("{}-{}", std::process::id(), unix_millis());
        let observations = Arc::new(Observations::new(instance));
        let described = source.describe();
        let running = weir_proxy::start(settings, source as Arc<dyn ConfigSource>, observations).await?;
        eprintln!(
            "weir proxy: serving {described} on {}; admin on {} (/metrics, /v1/observations, /v1/routes)",
            running.listen, running.admin
        );
        shutdown_signal().await?;
        eprintln!("weir proxy: draining {} open request(s)…", running.active());
        let drained = running.shutdown().await;
        if drained.abandoned > 0 {
            eprintln!(
                "weir proxy: grace period over, {} request(s) cut after {:.1}s",
                drained.abandoned,
                drained.took.as_secs_f64()
            );
        }
        Ok(Code::Success)
    })
}

fn num_threads() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

fn unix_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    Ok(())
}

//! `weir run -f canary.yaml`: local mode. The proxy runs in this process
//! in front of the two backends of `spec.backends`; the engine moves its
//! weights and judges the cohorts; Ctrl-C aborts with traffic back on
//! stable before the process exits.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use weir_analysis::observations::Snapshot;
use weir_controller::local::file::{self, CanaryFile};
use weir_controller::local::record::{CohortSample, RunRecord};
use weir_controller::local::runner::{self, Dataplane, Progress};
use weir_crds::Traffic;
use weir_proxy::config::file::{MAX_CONFIG_BYTES, read_bounded_text};
use weir_proxy::config::traffic;
use weir_proxy::route::RouteTable;
use weir_proxy::{ConfigSource, MemorySource, Observations, Running, Settings, Timeouts};

use crate::exit::Code;
use crate::signals::Shutdown;

/// Arguments of `weir run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Canary file (the Kubernetes resource's YAML with spec.backends).
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: PathBuf,
    /// Where clients connect (the proxy).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The proxy's admin API (/metrics, /v1/observations); keep it on loopback.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9090")]
    pub admin: SocketAddr,
    /// `text`: progress lines for people; `json`: one JSON event per line.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Write a self-contained HTML report of the run here.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Write the run's record (JSON) here.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
}

/// How progress is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Lines for people.
    Text,
    /// One JSON object per line.
    Json,
}

/// Runs `weir run`.
pub fn run(args: &Args) -> Result<Code> {
    let text = read_bounded_text(&args.file, MAX_CONFIG_BYTES, "any config")
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let canary = file::parse(&text).map_err(|e| anyhow!("{}: {e}", args.file.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("weir-run")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let options = RunOptions {
            listen: args.listen,
            admin: args.admin,
            output: args.output,
            report: args.report.clone(),
            record: args.record.clone(),
        };
        let record = drive(&canary, &options).await?;
        Ok(code_of(&record))
    })
}

/// Settings shared by `weir run` and `weir demo`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Proxy listener.
    pub listen: SocketAddr,
    /// Admin listener.
    pub admin: SocketAddr,
    /// Progress format.
    pub output: Output,
    /// HTML report path.
    pub report: Option<PathBuf>,
    /// JSON record path.
    pub record: Option<PathBuf>,
}

/// The exit code of a finished run.
pub fn code_of(record: &RunRecord) -> Code {
    match record.outcome.as_ref().map(|o| o.exit_code) {
        Some(0) => Code::Success,
        Some(4) => Code::Inconclusive,
        Some(_) => Code::Aborted,
        None => Code::Error,
    }
}

/// Preflight, proxy, run, report. Returns the record of the finished run.
/// Ctrl-C or SIGTERM once the proxy serves aborts the run with traffic
/// back on stable; before, it ends the process (nothing to restore).
pub async fn drive(canary: &CanaryFile, options: &RunOptions) -> Result<RunRecord> {
    // Opened before anything runs: a path that cannot be written is
    // refused now, not after the run it was to record.
    let record_file = OutputFile::open_opt(options.record.as_deref(), "--record")?;
    let report_file = OutputFile::open_opt(options.report.as_deref(), "--report")?;
    runner::preflight(&canary.rollout).await?;
    let initial = table(&canary.name, &runner::stable_only(&canary.rollout))?;
    let source = Arc::new(MemorySource::new(initial, false));
    let observations = Arc::new(Observations::new(format!(
        "weir-run-{}",
        std::process::id()
    )));
    let settings = Settings {
        listen: options.listen,
        admin: options.admin,
        timeouts: Timeouts::default(),
        draw_seed: None,
        max_connections: None,
        tls: None,
        upstream_ca: None,
    };
    // Caught from before the proxy serves, so that a signal while it
    // starts is an abort like any later one, not the process dying.
    let mut shutdown = Shutdown::listen()?;
    let running = weir_proxy::start(
        settings,
        Arc::clone(&source) as Arc<dyn ConfigSource>,
        observations,
    )
    .await?;
    let mut out = Printer::new(options.output);
    out.started(canary, &running);
    let plane = InProcess {
        name: canary.name.clone(),
        source,
        running: &running,
    };
    let run_settings = runner::Settings {
        name: canary.name.clone(),
        tick: Duration::from_millis(250),
    };
    let result = runner::run(
        &canary.rollout,
        &run_settings,
        &plane,
        shutdown.recv(),
        |p| {
            out.progress(&p);
        },
    )
    .await;
    // Open streams finish on whichever table is in service now.
    let drained = running.shutdown().await;
    let record = result?;
    out.finished(&record, drained.abandoned);
    if let Some(file) = record_file {
        file.write(&serde_json::to_string_pretty(&record)?)?;
    }
    if let Some(file) = report_file {
        let path = file.path.clone();
        file.write(&crate::report::render(&record))?;
        out.note(&format!("report: {}", path.display()));
    }
    Ok(record)
}

/// A file named by `--record` or `--report`: checked before the run, written
/// after it, whole or not at all.
///
/// A regular file (or a path not there yet) is written to a temporary file
/// beside it that is then renamed over it, so a run that ends in an error,
/// or a write that fails partway (a full disk), leaves an earlier file as
/// it was and no partial one. The rename replaces a symlink's target, not
/// the link, and keeps an earlier file's permissions (not its owner).
/// Anything else (a pipe, `/dev/stdout`) is opened before the run and
/// written in place: there is nothing to rename over.
#[derive(Debug)]
struct OutputFile {
    /// The path as given, for messages.
    path: PathBuf,
    /// Where the contents go.
    target: Target,
}

#[derive(Debug)]
enum Target {
    /// Written to `temp`, then renamed to `path`.
    Replace {
        /// The file that is replaced (symlinks resolved).
        path: PathBuf,
        /// The temporary file beside it, removed unless renamed.
        temp: PathBuf,
        file: std::fs::File,
    },
    /// A pipe or device, written directly.
    InPlace(std::fs::File),
}

impl OutputFile {
    fn open_opt(path: Option<&Path>, flag: &str) -> Result<Option<Self>> {
        let Some(path) = path else {
            return Ok(None);
        };
        let refused = || format!("{flag} {}: cannot write it", path.display());
        let meta = std::fs::metadata(path).ok();
        let resolved = match &meta {
            Some(m) if m.is_dir() => {
                bail!(
                    "{flag} {}: is a directory; name a file in it",
                    path.display()
                )
            }
            Some(m) if !m.is_file() => {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .with_context(refused)?;
                return Ok(Some(OutputFile {
                    path: path.to_path_buf(),
                    target: Target::InPlace(file),
                }));
            }
            // An existing file must be writable, as it would be to write
            // it in place (the rename alone would only need its directory).
            Some(_) => {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .with_context(refused)?;
                std::fs::canonicalize(path).with_context(refused)?
            }
            None => path.to_path_buf(),
        };
        let name = resolved
            .file_name()
            .ok_or_else(|| anyhow!("{flag} {}: name a file", path.display()))?;
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".weir-{}.tmp", std::process::id()));
        let temp = resolved.with_file_name(temp_name);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .with_context(refused)?;
        Ok(Some(OutputFile {
            path: path.to_path_buf(),
            target: Target::Replace {
                path: resolved,
                temp,
                file,
            },
        }))
    }

    fn write(mut self, contents: &str) -> Result<()> {
        let written = match &mut self.target {
            Target::InPlace(file) => file.write_all(contents.as_bytes()),
            Target::Replace { path, temp, file } => file
                .write_all(contents.as_bytes())
                .and_then(|()| file.sync_all())
                .and_then(|()| match std::fs::metadata(&*path) {
                    Ok(earlier) => std::fs::set_permissions(&*temp, earlier.permissions()),
                    Err(_) => Ok(()),
                })
                .and_then(|()| std::fs::rename(&*temp, &*path)),
        };
        written.with_context(|| match self.target {
            Target::InPlace(_) => format!("cannot write {}", self.path.display()),
            Target::Replace { .. } => format!(
                "cannot write {} (an earlier file there is as it was)",
                self.path.display()
            ),
        })
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        // After a rename the temporary path is gone and this finds nothing.
        if let Target::Replace { temp, .. } = &self.target {
            let _ = std::fs::remove_file(temp);
        }
    }
}

/// The route table for `traffic`: one route named after the Canary, to the
/// URLs of `spec.backends`.
///
/// # Errors
/// When a URL or weight is not one the proxy accepts (validated earlier,
/// so this is a bug report, not a user error).
fn table(name: &str, traffic: &Traffic) -> Result<RouteTable> {
    traffic::url_table(name, traffic).map_err(|e| anyhow!("traffic for {name}: {e}"))
}

/// The in-process proxy behind the runner's [`Dataplane`].
struct InProcess<'a> {
    name: String,
    source: Arc<MemorySource>,
    running: &'a Running,
}

/// Why the in-process proxy did not take a table.
#[derive(Debug, thiserror::Error)]
enum InProcessError {
    /// The engine's table does not make a route (a bug: the spec was
    /// validated before the run).
    #[error("traffic for {name}: {source}")]
    Table {
        /// The route.
        name: String,
        /// What the proxy refused.
        source: weir_proxy::ConfigError,
    },
    /// The proxy's table task did not swap the table in.
    #[error("the proxy did not take the new table within 2 s")]
    NotTaken,
}

impl Dataplane for InProcess<'_> {
    type Error = InProcessError;

    async fn apply(&self, traffic: &Traffic) -> Result<(), InProcessError> {
        let table =
            traffic::url_table(&self.name, traffic).map_err(|source| InProcessError::Table {
                name: self.name.clone(),
                source,
            })?;
        let published = self.source.replace(table);
        // The proxy swaps tables from a task: wait until it serves this
        // one, so "traffic back on stable" is true when we say it is.
        for _ in 0..2000 {
            if self.running.table.load().generation() >= published.generation() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Err(InProcessError::NotTaken)
    }

    /// The proxy's observations, handed over as they are: both sides use
    /// the same document type, so nothing is serialized in between.
    fn snapshot(&self) -> Result<Snapshot, InProcessError> {
        let table = self.running.table.load();
        Ok(self.running.observations.snapshot(&table))
    }
}

/// Prints progress as lines for people or JSON objects.
struct Printer {
    output: Output,
    out: std::io::Stdout,
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "—".into(), |s| format!("{:.0}", s * 1000.0))
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "—".into(), |s| format!("{:.1}%", s * 100.0))
}

fn cohort_line(c: &CohortSample) -> String {
    format!(
        "{:>5.1}/s p50 {:>4} p95 {:>4} ms err {:>5}{}",
        c.rate,
        ms(c.ttft_p50),
        ms(c.ttft_p95),
        pct(c.error_rate),
        c.gpu_util
            .map_or_else(String::new, |g| format!(" gpu {g:.0}%"))
    )
}

impl Printer {
    fn new(output: Output) -> Self {
        Printer {
            output,
            out: std::io::stdout(),
        }
    }

    fn line(&mut self, line: &str) {
        // A closed stdout (a pipe to `head`) must not stop the run.
        let _ = writeln!(self.out, "{line}");
        let _ = self.out.flush();
    }

    fn json(&mut self, value: serde_json::Value) {
        self.line(&value.to_string());
    }

    fn started(&mut self, canary: &CanaryFile, running: &Running) {
        match self.output {
            Output::Text => {
                let mut s = format!(
                    "weir run: canary {} — proxy on http://{}, admin on http://{}\n",
                    canary.name, running.listen, running.admin
                );
                let Some(b) = &canary.spec.backends else {
                    return;
                };
                let _ = write!(s, "  stable {}   canary {}", b.stable.url, b.canary.url);
                self.line(&s);
            }
            Output::Json => self.json(serde_json::json!({
                "type": "started",
                "name": canary.name,
                "listen": running.listen.to_string(),
                "admin": running.admin.to_string(),
            })),
        }
    }

    fn progress(&mut self, p: &Progress<'_>) {
        match (self.output, p) {
            (Output::Text, Progress::Event(e)) => {
                let mark = if e.warning { "!" } else { "▸" };
                self.line(&format!("{:>6.1}s {mark} {}: {}", e.t, e.reason, e.message));
            }
            (Output::Text, Progress::Sample(s)) => {
                self.line(&format!(
                    "{:>6.1}s   {:<22} canary {:>5.1}%  stable {}  canary {}",
                    s.t,
                    s.step,
                    s.canary_weight,
                    cohort_line(&s.cohorts.stable),
                    cohort_line(&s.cohorts.canary),
                ));
                if let Some(w) = &s.warmup {
                    self.line(&format!("          {w}"));
                } else if let Some(rule) = &s.rule {
                    self.line(&format!("          verdict: {rule}"));
                }
            }
            (Output::Json, Progress::Event(e)) => {
                let mut v = serde_json::to_value(e).unwrap_or_default();
                v["type"] = "event".into();
                self.json(v);
            }
            (Output::Json, Progress::Sample(s)) => {
                let mut v = serde_json::to_value(s).unwrap_or_default();
                v["type"] = "sample".into();
                self.json(v);
            }
        }
    }

    fn finished(&mut self, record: &RunRecord, abandoned: usize) {
        let Some(o) = &record.outcome else {
            return;
        };
        match self.output {
            Output::Text => {
                let word = match o.exit_code {
                    0 => "PROMOTED",
                    4 => "ABORTED (inconclusive)",
                    _ => "ABORTED",
                };
                self.line(&format!("{:>6.1}s {word}: {}", o.t, o.message));
                if abandoned > 0 {
                    self.line(&format!(
                        "        {abandoned} open request(s) were cut at exit"
                    ));
                }
            }
            Output::Json => {
                let mut v = serde_json::to_value(o).unwrap_or_default();
                v["type"] = "finished".into();
                v["decision"] = serde_json::to_value(&record.decision).unwrap_or_default();
                self.json(v);
            }
        }
    }

    fn note(&mut self, text: &str) {
        match self.output {
            Output::Text => self.line(text),
            Output::Json => self.json(serde_json::json!({"type": "note", "message": text})),
        }
    }
}

//! The YAML config file (`weir proxy -f proxy.yaml`), reloaded while the
//! proxy runs and updated in place by `PUT /v1/routes/{name}/weights`.
//!
//! ```yaml
//! listen: 127.0.0.1:8080
//! admin: 127.0.0.1:9090      # optional, default 127.0.0.1:9090
//! overrideHeader: true       # optional, default false
//! readTimeout: 60s           # optional, default 300s
//! idleTimeout: 4s            # optional, default 4s
//! gracePeriod: 30s           # optional, default 30s
//! headerTimeout: 60s         # optional, default 60s: a client's whole request head
//! routes:
//!   - name: chat
//!     match: {hosts: [chat.example.com], pathPrefix: /}   # optional, default any host, /
//!     sticky: {header: x-session-id}                       # optional; or {cookie: NAME}
//!     backends:
//!       - {cohort: stable, url: http://127.0.0.1:9001, weight: 80, revision: abc}
//!       - {cohort: canary, url: http://127.0.0.1:9002, weight: 20}
//!   # A model canary: requests whose body asks for `chat` (the top-level
//!   # `model`), split between two adapters on one pool; clients see `chat`.
//!   - name: chat-adapter
//!     match: {pathPrefix: /v1, model: chat}
//!     backends:
//!       - {cohort: stable, url: http://127.0.0.1:9001, weight: 90, model: chat-lora-v7}
//!       - {cohort: canary, url: http://127.0.0.1:9001, weight: 10, model: chat-lora-v8}
//! ```
//!
//! Unknown fields are errors (a typo must not silently mean "default").
//!
//! # Why these choices
//!
//! - **serde-saphyr** parses the YAML: pure Rust on a YAML 1.2 parser,
//!   maintained, panic-free on hostile input, with line/column errors and
//!   [`Spanned`] values. (`serde_yaml` is archived, `serde_yml` has had
//!   soundness advisories.)
//! - **Reload by polling the content** once a second ([`FileSource::watch`]),
//!   not by trusting mtime or inotify: Kubernetes ConfigMap mounts swap a
//!   symlink (no event on the file), editors save by rename, and coarse
//!   mtimes miss two quick edits. Reading a few KiB a second costs nothing,
//!   and an unchanged file (same XXH64 of its bytes) is not re-parsed.
//! - **Weight write-back edits the weight scalars in place.** The spans of
//!   every `weight:` value are kept from parsing, so an update replaces just
//!   those characters: comments, order and formatting survive. The edited
//!   text is parsed again and must yield exactly the new table before it is
//!   written (temporary file in the same directory, fsync, rename), so a
//!   crash leaves the old or the new file, never half of one.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;
use tokio::sync::watch;
use weir_core::{Cohort, Weight};

use super::{ConfigError, ConfigSource, Problem, ProxyConfig, Timeouts, parse_addr};
use crate::route::{Backend, Route, RouteMatch, RouteTable, Sticky, Upstream};

/// The admin listener when the file names none.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9090";

/// How often [`FileSource::watch`] looks at the file.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The file's top level, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FileConfig {
    /// Proxy listener, `ip:port`.
    pub listen: String,
    /// Admin listener, `ip:port`.
    #[serde(default)]
    pub admin: Option<String>,
    /// Whether `x-weir-cohort` may force a cohort.
    #[serde(default)]
    pub override_header: bool,
    /// Upstream read timeout (humantime: `60s`, `5m`).
    #[serde(default)]
    pub read_timeout: Option<DurationText>,
    /// Upstream pool idle timeout.
    #[serde(default)]
    pub idle_timeout: Option<DurationText>,
    /// SIGTERM drain period.
    #[serde(default)]
    pub grace_period: Option<DurationText>,
    /// Deadline for a client's whole request head.
    #[serde(default)]
    pub header_timeout: Option<DurationText>,
    /// The routes.
    pub routes: Vec<FileRoute>,
}

/// A duration as written: `60s` (a bare number is refused: seconds or
/// milliseconds?).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum DurationText {
    /// `60s`, `1m30s`.
    Text(String),
    /// A number without a unit.
    Number(f64),
}

/// One route, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FileRoute {
    /// Unique name (metrics label, admin API path).
    pub name: String,
    /// Which requests the route takes.
    #[serde(rename = "match", default)]
    pub matches: FileMatch,
    /// Session affinity.
    #[serde(default)]
    pub sticky: Option<FileSticky>,
    /// Where requests go.
    pub backends: Vec<FileBackend>,
}

/// A route's match, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FileMatch {
    /// Host names; empty or absent means any host.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Path prefix, default `/`.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// The request body's top-level `model` the route takes.
    #[serde(default)]
    pub model: Option<String>,
}

/// Sticky sessions, as written: exactly one of the two.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSticky {
    /// Header carrying the session key.
    #[serde(default)]
    pub header: Option<String>,
    /// Cookie carrying the session key.
    #[serde(default)]
    pub cookie: Option<String>,
}

/// One backend, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBackend {
    /// `stable`, `canary` or another cohort name.
    pub cohort: String,
    /// `http://host:port`.
    pub url: String,
    /// Percent, 0 to 100, resolution 0.01; with its place in the text so
    /// weight updates can rewrite it in place.
    pub weight: Spanned<f64>,
    /// The version the backend runs.
    #[serde(default)]
    pub revision: Option<RevisionText>,
    /// The model this cohort asks the upstream for, on a route with
    /// `match.model` (rewritten in the request body, and back in the
    /// response).
    #[serde(default)]
    pub model: Option<String>,
}

/// A revision as written: text, or a number YAML read as one (`1234`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RevisionText {
    /// Text.
    Text(String),
    /// A whole number.
    Number(u64),
}

impl FileConfig {
    /// Parses the YAML text (shape only; see `TryFrom` for the rules).
    ///
    /// # Errors
    /// [`ConfigError::Syntax`] with line and column.
    pub fn parse(text: &str) -> Result<FileConfig, ConfigError> {
        serde_saphyr::from_str(text).map_err(|e| ConfigError::Syntax {
            message: e.to_string(),
        })
    }

    /// Byte ranges of every `weight` value: `[route][backend]`.
    fn weight_spans(&self) -> Vec<Vec<Option<Range<usize>>>> {
        self.routes
            .iter()
            .map(|r| {
                r.backends
                    .iter()
                    .map(|b| {
                        let span = b.weight.referenced.span();
                        let start = usize::try_from(span.byte_offset()?).ok()?;
                        let len = usize::try_from(span.byte_len()?).ok()?;
                        Some(start..start + len)
                    })
                    .collect()
            })
            .collect()
    }
}

fn duration(
    field: &str,
    value: Option<&DurationText>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(DurationText::Number(n)) => Err(ConfigError::invalid(
            field,
            Problem::DurationWithoutUnit {
                value: n.to_string(),
            },
        )),
        Some(DurationText::Text(s)) => humantime::parse_duration(s.trim()).map_err(|e| {
            ConfigError::invalid(
                field,
                Problem::InvalidDuration {
                    value: s.clone(),
                    reason: e.to_string(),
                },
            )
        }),
    }
}

impl TryFrom<&FileBackend> for Backend {
    type Error = ConfigError;
    fn try_from(b: &FileBackend) -> Result<Backend, ConfigError> {
        let cohort = Cohort::parse(&b.cohort).map_err(|p| ConfigError::invalid("cohort", p))?;
        let upstream = Upstream::parse(&b.url).map_err(|p| ConfigError::invalid("url", p))?;
        let weight =
            Weight::from_percent(b.weight.value).map_err(|p| ConfigError::invalid("weight", p))?;
        let mut backend = Backend::new(cohort, upstream, weight);
        if let Some(model) = &b.model {
            backend = backend.with_model(model.as_str());
        }
        Ok(match &b.revision {
            None => backend,
            Some(RevisionText::Text(t)) if t.trim().is_empty() => backend,
            Some(RevisionText::Text(t)) => backend.with_revision(t.trim()),
            Some(RevisionText::Number(n)) => backend.with_revision(n.to_string()),
        })
    }
}

impl TryFrom<&FileRoute> for Route {
    type Error = ConfigError;
    fn try_from(r: &FileRoute) -> Result<Route, ConfigError> {
        let sticky = match &r.sticky {
            None => None,
            Some(FileSticky {
                header: Some(h),
                cookie: None,
            }) => Some(Sticky::Header(h.clone())),
            Some(FileSticky {
                header: None,
                cookie: Some(c),
            }) => Some(Sticky::Cookie(c.clone())),
            Some(_) => return Err(ConfigError::invalid("sticky", Problem::StickyKey)),
        };
        let backends = r
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| Backend::try_from(b).map_err(|e| e.within(&format!("backends[{i}]"))))
            .collect::<Result<Vec<_>, _>>()?;
        Route::new(
            &r.name,
            RouteMatch {
                hosts: r.matches.hosts.clone(),
                path_prefix: r.matches.path_prefix.clone().unwrap_or_default(),
                model: r.matches.model.clone(),
            },
            sticky,
            backends,
        )
    }
}

impl TryFrom<&FileConfig> for ProxyConfig {
    type Error = ConfigError;
    /// Validates the whole file; the table's generation is 0.
    fn try_from(f: &FileConfig) -> Result<ProxyConfig, ConfigError> {
        let listen = parse_addr("listen", &f.listen)?;
        let admin = parse_addr("admin", f.admin.as_deref().unwrap_or(DEFAULT_ADMIN))?;
        if listen == admin {
            return Err(ConfigError::invalid(
                "admin",
                Problem::SameAsListen {
                    value: admin.to_string(),
                },
            ));
        }
        let read = duration(
            "readTimeout",
            f.read_timeout.as_ref(),
            Timeouts::DEFAULT_READ,
        )?;
        if read.is_zero() {
            return Err(ConfigError::invalid("readTimeout", Problem::ZeroDuration));
        }
        let header = duration(
            "headerTimeout",
            f.header_timeout.as_ref(),
            Timeouts::DEFAULT_HEADER,
        )?;
        if header.is_zero() {
            return Err(ConfigError::invalid("headerTimeout", Problem::ZeroDuration));
        }
        let timeouts = Timeouts {
            read,
            idle: duration(
                "idleTimeout",
                f.idle_timeout.as_ref(),
                Timeouts::DEFAULT_IDLE,
            )?,
            grace: duration(
                "gracePeriod",
                f.grace_period.as_ref(),
                Timeouts::DEFAULT_GRACE,
            )?,
            header,
        };
        if f.routes.is_empty() {
            return Err(ConfigError::invalid("routes", Problem::NoRoutes));
        }
        let routes = f
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| Route::try_from(r).map_err(|e| e.within(&format!("routes[{i}]"))))
            .collect::<Result<Vec<_>, _>>()?;
        let table = RouteTable::new(routes, f.override_header, 0)?;
        Ok(ProxyConfig {
            listen,
            admin,
            timeouts,
            table,
        })
    }
}

/// Parses and validates config text.
///
/// # Errors
/// [`ConfigError::Syntax`] or [`ConfigError::Invalid`].
pub fn parse(text: &str) -> Result<ProxyConfig, ConfigError> {
    ProxyConfig::try_from(&FileConfig::parse(text)?)
}

/// `text` with the weights of route `route_index` replaced in place.
///
/// # Errors
/// [`ConfigError::WriteBack`] when a weight's position is unknown or two
/// weights share text.
fn rewrite_weights(
    text: &str,
    wire: &FileConfig,
    route_index: usize,
    weights: &[Weight],
) -> Result<String, ConfigError> {
    let cannot = |why: &'static str| ConfigError::WriteBack { reason: why };
    let spans = wire.weight_spans();
    let route_spans = spans
        .get(route_index)
        .ok_or_else(|| cannot("the route moved"))?;
    let mut edits: Vec<(Range<usize>, String)> = route_spans
        .iter()
        .zip(weights)
        .map(|(span, w)| {
            span.clone()
                .filter(|s| text.get(s.clone()).is_some())
                .map(|s| (s, w.to_string()))
                .ok_or_else(|| cannot("a weight's position in the file is unknown"))
        })
        .collect::<Result<_, _>>()?;
    edits.sort_by_key(|(r, _)| r.start);
    if edits.windows(2).any(|w| w[0].0.end > w[1].0.start) {
        return Err(cannot("two weights share text (a YAML alias?)"));
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut at = 0;
    for (range, value) in edits {
        out.push_str(&text[at..range.start]);
        out.push_str(&value);
        at = range.end;
    }
    out.push_str(&text[at..]);
    Ok(out)
}

/// What one look at the file found.
#[derive(Debug, Clone)]
pub enum Reload {
    /// The file has not changed since the last look.
    Unchanged,
    /// A new table was published.
    Applied {
        /// Its generation.
        generation: u64,
        /// Settings that changed but only take effect after a restart
        /// (`listen`, `admin`, `readTimeout`, ...).
        restart_needed: Vec<&'static str>,
    },
    /// Only settings that take effect after a restart changed (`listen`,
    /// `admin`, the timeouts); nothing was published, and
    /// [`ConfigSource::last_error`] says so until a restart or a revert.
    RestartNeeded(Vec<&'static str>),
    /// The file changed but cannot be used; the last good table stays.
    Refused(Arc<ConfigError>),
}

/// A [`ConfigSource`] backed by a YAML file.
#[derive(Debug)]
pub struct FileSource {
    path: PathBuf,
    tx: watch::Sender<Arc<RouteTable>>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// XXH64 of the last content looked at (valid or not).
    fingerprint: Option<u64>,
    /// The settings the proxy started with.
    startup: ProxyConfig,
    last_error: Option<Arc<ConfigError>>,
    generation: u64,
}

fn fingerprint(text: &str) -> u64 {
    xxhash_rust::xxh64::xxh64(text.as_bytes(), 0)
}

impl FileSource {
    /// Reads and validates the file; the proxy refuses to start on an
    /// invalid one. Returns the source and the startup settings (the table
    /// has generation 1).
    ///
    /// # Errors
    /// [`ConfigError::Read`], or a parse/validation error wrapped in
    /// [`ConfigError::InFile`].
    pub fn open(path: impl Into<PathBuf>) -> Result<(FileSource, ProxyConfig), ConfigError> {
        let path = path.into();
        let text = read(&path)?;
        let mut config = parse(&text).map_err(|e| in_file(&path, e))?;
        config.table = config.table.with_generation(1);
        let (tx, _) = watch::channel(Arc::new(config.table.clone()));
        let source = FileSource {
            path,
            tx,
            state: Mutex::new(State {
                fingerprint: Some(fingerprint(&text)),
                startup: config.clone(),
                last_error: None,
                generation: 1,
            }),
        };
        Ok((source, config))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state consistent (every
        // write is a single assignment), so keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Looks at the file once: publishes a new table if it changed and is
    /// valid, records and logs the error if it changed and is not.
    pub fn poll(&self) -> Reload {
        let mut state = self.state();
        let text = match read(&self.path) {
            Ok(text) => text,
            Err(e) => return refuse(&mut state, e, None),
        };
        let print = fingerprint(&text);
        if state.fingerprint == Some(print) {
            return Reload::Unchanged;
        }
        let config = match parse(&text) {
            Ok(config) => config,
            Err(e) => return refuse(&mut state, in_file(&self.path, e), Some(print)),
        };
        state.fingerprint = Some(print);
        let restart_needed = restart_needed(&state.startup, &config);
        // A valid file clears the last refusal; settings it changes that
        // only a restart applies stay reported until then, so an operator
        // who edited only `listen` sees why nothing happened.
        state.last_error = restart_notice(&self.path, &restart_needed);
        if !restart_needed.is_empty() {
            tracing::warn!(
                path = %self.path.display(),
                settings = ?restart_needed,
                "these settings changed in the config file and take effect after a restart"
            );
        }
        if config.table.clone().with_generation(state.generation) == **self.tx.borrow() {
            // Only comments, formatting or restart-only settings changed.
            return if restart_needed.is_empty() {
                Reload::Unchanged
            } else {
                Reload::RestartNeeded(restart_needed)
            };
        }
        state.generation += 1;
        let generation = state.generation;
        self.tx
            .send_replace(Arc::new(config.table.with_generation(generation)));
        tracing::info!(path = %self.path.display(), generation, "config file reloaded");
        Reload::Applied {
            generation,
            restart_needed,
        }
    }

    /// Polls the file every `every` until the returned future is dropped.
    pub async fn watch(&self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is immediate; the file was just read
        loop {
            tick.tick().await;
            self.poll();
        }
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    read_config_text(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Largest config file read: a proxy config or a Canary is a few KiB.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// Reads the proxy's configuration file as text: a regular file (or a link
/// to one) of at most [`MAX_CONFIG_BYTES`]. The proxy reads it again every
/// second, so a FIFO would block it until a writer came and a device such
/// as `/dev/zero` would be read anew each time: each is refused with an
/// I/O error that says what the path is, before reading.
///
/// # Errors
/// The I/O error, or [`std::io::ErrorKind::InvalidInput`] for a path that
/// is not a regular file or is too large.
pub fn read_config_text(path: &Path) -> std::io::Result<String> {
    read_watched_text(path, "a YAML file")
}

/// [`read_config_text`] for any file the proxy reads again when it
/// changes (its config, its certificate and key); `expected` names what
/// the path should be ("a PEM file").
///
/// # Errors
/// As [`read_config_text`].
pub fn read_watched_text(path: &Path, expected: &str) -> std::io::Result<String> {
    use std::io::{Error, ErrorKind};
    use std::os::unix::fs::FileTypeExt as _;
    let kind = std::fs::metadata(path)?.file_type();
    let what = if kind.is_file() {
        None
    } else if kind.is_dir() {
        Some("a directory")
    } else if kind.is_fifo() {
        Some("a FIFO")
    } else if kind.is_char_device() || kind.is_block_device() {
        Some("a device")
    } else if kind.is_socket() {
        Some("a socket")
    } else {
        Some("not a regular file")
    };
    if let Some(what) = what {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("it is {what}; give the path of {expected}"),
        ));
    }
    read_bounded_text(path, MAX_CONFIG_BYTES, "any config")
}

/// Reads a file that a command takes once as text, of at most `max_bytes`:
/// a regular file, or a pipe (`weir run -f <(envsubst < canary.yaml)`,
/// `/dev/stdin`). Past the bound the path is not what it should be (a wrong
/// file, `/dev/zero`), refused before it fills memory; `kind` names what
/// the bound is far above ("any config").
///
/// # Errors
/// The I/O error, or [`std::io::ErrorKind::InvalidInput`] past `max_bytes`.
pub fn read_bounded_text(path: &Path, max_bytes: u64, kind: &str) -> std::io::Result<String> {
    use std::io::{Error, ErrorKind, Read as _};
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(max_bytes + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > max_bytes {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "it is larger than {} MiB, far more than {kind}; is this the right file?",
                max_bytes >> 20
            ),
        ));
    }
    Ok(text)
}

fn in_file(path: &Path, e: ConfigError) -> ConfigError {
    ConfigError::InFile {
        path: path.to_path_buf(),
        source: Box::new(e),
    }
}

/// Records a refused update, logging it only when it is news.
fn refuse(state: &mut State, error: ConfigError, print: Option<u64>) -> Reload {
    let repeated = state
        .last_error
        .as_ref()
        .is_some_and(|last| last.to_string() == error.to_string());
    if !repeated {
        tracing::warn!(error = %error, "config file not applied; keeping the last good route table");
    }
    let error = Arc::new(error);
    state.last_error = Some(Arc::clone(&error));
    if print.is_some() {
        state.fingerprint = print;
    }
    Reload::Refused(error)
}

/// What `last_error` says after a valid version of the file: the settings
/// it changes that only a restart applies, if any.
fn restart_notice(path: &Path, settings: &[&'static str]) -> Option<Arc<ConfigError>> {
    (!settings.is_empty()).then(|| {
        Arc::new(in_file(
            path,
            ConfigError::RestartNeeded {
                settings: settings.to_vec(),
            },
        ))
    })
}

fn restart_needed(startup: &ProxyConfig, now: &ProxyConfig) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let checks = [
        ("listen", startup.listen != now.listen),
        ("admin", startup.admin != now.admin),
        ("readTimeout", startup.timeouts.read != now.timeouts.read),
        ("idleTimeout", startup.timeouts.idle != now.timeouts.idle),
        ("gracePeriod", startup.timeouts.grace != now.timeouts.grace),
        (
            "headerTimeout",
            startup.timeouts.header != now.timeouts.header,
        ),
    ];
    for (name, differs) in checks {
        if differs {
            changed.push(name);
        }
    }
    changed
}

/// Writes `contents` to `path` so that readers see the old or the new file,
/// never a mix: temporary file in the same directory, fsync, rename, then
/// fsync of the directory (best effort). A symlink is followed, so the link
/// stays a link.
fn write_atomically(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let target = std::fs::canonicalize(path)?;
    let dir = target.parent().unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config".into());
    let tmp = dir.join(format!(".{name}.weir-{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
        std::fs::set_permissions(&tmp, std::fs::metadata(&target)?.permissions())?;
        std::fs::rename(&tmp, &target)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Why a weight update was not written to the file.
enum Unsaved {
    /// The update itself is wrong (unknown route, cohorts that do not
    /// match): refused whatever the file holds.
    Request(ConfigError),
    /// The file cannot take it; the update may still go into force.
    File(ConfigError),
}

impl FileSource {
    /// Writes the weights into the file and publishes the result.
    fn save_weights(
        &self,
        state: &mut State,
        route: &str,
        weights: &[(Cohort, Weight)],
    ) -> Result<Arc<RouteTable>, Unsaved> {
        let file = |e| Unsaved::File(in_file(&self.path, e));
        let text = read(&self.path).map_err(Unsaved::File)?;
        let wire = FileConfig::parse(&text).map_err(file)?;
        let config = ProxyConfig::try_from(&wire).map_err(file)?;
        let updated =
            super::set_weights(&config.table, route, weights).map_err(Unsaved::Request)?;
        let index = updated
            .routes()
            .iter()
            .position(|r| r.name() == route)
            .ok_or_else(|| {
                Unsaved::Request(ConfigError::UnknownRoute {
                    route: route.to_string(),
                    known: Vec::new(),
                })
            })?;
        let new_weights: Vec<Weight> = updated.routes()[index]
            .backends()
            .iter()
            .map(|b| b.weight)
            .collect();
        let edited = rewrite_weights(&text, &wire, index, &new_weights).map_err(file)?;
        let saved = match parse(&edited) {
            Ok(check) if check.table == updated => check,
            _ => {
                return Err(file(ConfigError::WriteBack {
                    reason: "the edited file would not read back as the new weights (are weights written through YAML anchors?)",
                }));
            }
        };
        write_atomically(&self.path, &edited).map_err(|source| {
            Unsaved::File(ConfigError::Write {
                path: self.path.clone(),
                source,
            })
        })?;
        state.fingerprint = Some(fingerprint(&edited));
        state.last_error = restart_notice(&self.path, &restart_needed(&state.startup, &saved));
        state.generation += 1;
        let table = Arc::new(updated.with_generation(state.generation));
        self.tx.send_replace(Arc::clone(&table));
        tracing::info!(path = %self.path.display(), route, generation = state.generation, "weights updated and written to the config file");
        Ok(table)
    }
}

impl ConfigSource for FileSource {
    fn subscribe(&self) -> watch::Receiver<Arc<RouteTable>> {
        self.tx.subscribe()
    }

    fn last_error(&self) -> Option<Arc<ConfigError>> {
        self.state().last_error.clone()
    }

    /// Applies the weights to the file as it is now on disk (so an edit not
    /// yet picked up by [`FileSource::poll`] is kept), writes it back and
    /// publishes the result.
    ///
    /// When the file cannot take them (it is invalid, unreadable or on a
    /// read-only mount) the weights still go into force, on the table in
    /// service: this is how an operator moves traffic to stable in an
    /// emergency, and a typo in the file must not stop that. The refusal
    /// to save is reported ([`ConfigError::NotSaved`] in `last_error`),
    /// and the file's own weights apply again at its next valid change.
    fn set_weights(
        &self,
        route: &str,
        weights: &[(Cohort, Weight)],
    ) -> Result<Arc<RouteTable>, ConfigError> {
        let mut state = self.state();
        let unsaved = match self.save_weights(&mut state, route, weights) {
            Ok(table) => return Ok(table),
            Err(Unsaved::Request(e)) => return Err(e),
            Err(Unsaved::File(e)) => e,
        };
        let in_service = Arc::clone(&self.tx.borrow());
        let updated = super::set_weights(&in_service, route, weights)?;
        state.generation += 1;
        let table = Arc::new(updated.with_generation(state.generation));
        self.tx.send_replace(Arc::clone(&table));
        let error = ConfigError::NotSaved {
            path: self.path.clone(),
            source: Box::new(unsaved),
        };
        tracing::warn!(route, generation = state.generation, error = %error, "weights updated in memory only");
        state.last_error = Some(Arc::new(error));
        Ok(table)
    }

    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "\
listen: 127.0.0.1:8080
admin: 127.0.0.1:9090
overrideHeader: true
readTimeout: 60s          # must exceed the worst inter-token gap
idleTimeout: 4s
gracePeriod: 30s
routes:
  - name: chat
    match: {hosts: [chat.example.com], pathPrefix: /}   # hosts optional
    sticky: {header: x-session-id}
    backends:
      - {cohort: stable, url: http://127.0.0.1:9001, weight: 80, revision: abc}   # revision optional
      - {cohort: canary, url: http://127.0.0.1:9002, weight: 20}
  - name: embed
    backends:
      - cohort: stable
        url: http://127.0.0.1:9003
        weight: 100 # all of it
";

    fn invalid(text: &str) -> ConfigError {
        parse(text).expect_err("invalid config")
    }

    /// EXAMPLE with one substring replaced (which must be there).
    fn example_with(from: &str, to: &str) -> String {
        assert!(EXAMPLE.contains(from), "{from}");
        EXAMPLE.replacen(from, to, 1)
    }

    #[test]
    fn the_documented_example_parses_into_the_domain() {
        let c = parse(EXAMPLE).expect("valid");
        assert_eq!(c.listen, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(c.admin, "127.0.0.1:9090".parse().expect("addr"));
        assert_eq!(c.timeouts.read, Duration::from_secs(60));
        assert!(c.table.override_header());
        let chat = c.table.get("chat").expect("exists");
        assert_eq!(chat.hosts(), ["chat.example.com"]);
        assert_eq!(chat.sticky(), Some(&Sticky::Header("x-session-id".into())));
        assert_eq!(chat.backends()[0].revision.as_deref(), Some("abc"));
        assert_eq!(chat.backends()[1].revision, None);
        assert_eq!(
            chat.backends()[1].weight,
            Weight::from_percent(20.0).expect("w")
        );
        assert_eq!(chat.backends()[1].upstream.authority(), "127.0.0.1:9002");
        let embed = c.table.get("embed").expect("exists");
        assert!(embed.hosts().is_empty());
        assert_eq!(embed.path_prefix(), "/");
    }

    #[test]
    fn defaults_apply_to_omitted_settings() {
        let c = parse("listen: 0.0.0.0:80\nroutes: [{name: r, backends: [{cohort: stable, url: 'http://a:1', weight: 1}]}]\n")
            .expect("valid");
        assert_eq!(c.admin, DEFAULT_ADMIN.parse().expect("addr"));
        assert_eq!(c.timeouts, Timeouts::default());
        assert!(!c.table.override_header());
    }

    #[test]
    fn field_errors_name_the_path_and_the_fix() {
        let cases = [
            (
                example_with("weight: 20", "weight: -5"),
                "routes[0].backends[1].weight: -5 is not a weight; use a number between 0 and 100 (percent, resolution 0.01)",
            ),
            (
                example_with("weight: 80", "weight: 0").replacen("weight: 20", "weight: 0", 1),
                "routes[0].backends: every backend has weight 0, so no request could be routed; give at least one backend a positive weight",
            ),
            (
                example_with("name: embed", "name: chat"),
                "routes[1].name: route name \"chat\" is used twice (first at routes[0]); give each route its own name",
            ),
            (
                example_with("weight: 20}", "weight: 20, model: chat-lora-v8}"),
                "routes[0].backends[1].model: a backend can ask for another model only on a route that matches one: add match.model (the name clients ask for), or remove the backend's model",
            ),
            (
                example_with("pathPrefix: /}", "pathPrefix: /, model: \"\"}"),
                "routes[0].match.model: \"\" is not a model name: give the name the server serves, 1 to 256 printable characters, e.g. chat-lora-v8",
            ),
            (
                example_with("cohort: canary", "cohort: stable"),
                "routes[0].backends[1].cohort: cohort stable appears twice (first at backends[0]); give each backend of a route its own cohort",
            ),
            (
                example_with("http://127.0.0.1:9002", "grpc://127.0.0.1:9002"),
                "routes[0].backends[1].url: scheme \"grpc\" is not supported; use http://host:port or https://host:port",
            ),
            (
                example_with("listen: 127.0.0.1:8080", "listen: localhost:8080"),
                "listen: \"localhost:8080\" is not an IP address and port; use e.g. 127.0.0.1:8080 or [::]:8080",
            ),
            (
                example_with("admin: 127.0.0.1:9090", "admin: 127.0.0.1:8080"),
                "admin: 127.0.0.1:8080 is also the listen address; give the admin listener its own port, e.g. 127.0.0.1:9090",
            ),
            (
                example_with("readTimeout: 60s", "readTimeout: 60"),
                "readTimeout: 60 has no unit; write it as 60s (or 5m, 1h...)",
            ),
            (
                example_with(
                    "sticky: {header: x-session-id}",
                    "sticky: {header: x-session-id, cookie: sid}",
                ),
                "routes[0].sticky: give exactly one of header or cookie, e.g. sticky: {header: x-session-id}",
            ),
            (
                example_with(
                    "hosts: [chat.example.com]",
                    "hosts: [\"http://chat.example.com\"]",
                ),
                "routes[0].match.hosts[0]: \"http://chat.example.com\" is not a host name; write just the host, e.g. chat.example.com (no scheme, port or path)",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(invalid(&text).to_string(), want);
        }
        let err = invalid("listen: 127.0.0.1:8080\nroutes: []\n");
        assert_eq!(
            err.to_string(),
            "routes: the proxy needs at least one route; add one under routes"
        );
    }

    #[test]
    fn unknown_fields_and_wrong_types_are_syntax_errors_with_a_line() {
        let err = invalid(&example_with("weight: 20}", "weight: 20, wieght: 3}"));
        let msg = err.to_string();
        assert!(matches!(err, ConfigError::Syntax { .. }), "{msg}");
        assert!(msg.contains("wieght"), "{msg}");
        assert!(msg.contains("13"), "names line 13: {msg}");
        let err = invalid(&example_with(
            "overrideHeader: true",
            "overrideHeaders: true",
        ));
        assert!(err.to_string().contains("overrideHeaders"), "{err}");
        let err = invalid(&example_with("weight: 20", "weight: lots"));
        assert!(matches!(err, ConfigError::Syntax { .. }), "{err}");
    }

    #[test]
    fn weights_are_rewritten_in_place_keeping_comments() {
        let wire = FileConfig::parse(EXAMPLE).expect("valid");
        let weights = [
            Weight::from_percent(62.5).expect("w"),
            Weight::from_percent(37.5).expect("w"),
        ];
        let out = rewrite_weights(EXAMPLE, &wire, 0, &weights).expect("rewritten");
        let want = EXAMPLE.replacen("weight: 80", "weight: 62.5", 1).replacen(
            "weight: 20",
            "weight: 37.5",
            1,
        );
        assert_eq!(out, want);
        let out = rewrite_weights(EXAMPLE, &wire, 1, &[Weight::from_percent(0.01).expect("w")])
            .expect("rewritten");
        assert_eq!(out, EXAMPLE.replacen("weight: 100 #", "weight: 0.01 #", 1));
    }

    fn write(path: &Path, text: &str) {
        std::fs::write(path, text).expect("write test file");
    }

    #[test]
    fn poll_publishes_valid_changes_and_keeps_the_last_good_table() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("proxy.yaml");
        write(&path, EXAMPLE);
        let (source, startup) = FileSource::open(&path).expect("valid");
        assert_eq!(startup.table.generation(), 1);
        let mut rx = source.subscribe();
        assert!(matches!(source.poll(), Reload::Unchanged));

        // A comment-only edit publishes nothing.
        write(&path, &format!("# hello\n{EXAMPLE}"));
        assert!(matches!(source.poll(), Reload::Unchanged));
        assert!(!rx.has_changed().expect("open"));

        write(&path, &example_with("weight: 20", "weight: 40"));
        assert!(
            matches!(source.poll(), Reload::Applied { generation: 2, ref restart_needed } if restart_needed.is_empty())
        );
        assert!(rx.has_changed().expect("open"));
        let t = rx.borrow_and_update().clone();
        assert_eq!(t.generation(), 2);
        assert_eq!(
            t.get("chat").expect("exists").backends()[1]
                .weight
                .basis_points(),
            4000
        );

        // Broken file: refused, reported, last good table stays.
        write(&path, &example_with("weight: 20", "weight: 200"));
        let Reload::Refused(err) = source.poll() else {
            panic!("expected a refusal");
        };
        assert!(
            err.to_string()
                .contains("routes[0].backends[1].weight: 200 is not a weight"),
            "{err}"
        );
        assert!(
            err.to_string().starts_with(&path.display().to_string()),
            "{err}"
        );
        assert!(source.last_error().is_some());
        assert!(!rx.has_changed().expect("open"));
        assert!(
            matches!(source.poll(), Reload::Unchanged),
            "same broken content is not re-reported"
        );

        // Missing file (an editor's rename): refused, table kept.
        std::fs::remove_file(&path).expect("remove");
        assert!(
            matches!(source.poll(), Reload::Refused(e) if matches!(*e, ConfigError::Read { .. }))
        );

        // Fixed, with a listen change: applied, restart reported, error cleared.
        write(
            &path,
            &example_with("listen: 127.0.0.1:8080", "listen: 127.0.0.1:8081"),
        );
        let Reload::Applied {
            generation,
            restart_needed,
        } = source.poll()
        else {
            panic!("expected the fix to apply");
        };
        assert_eq!((generation, restart_needed), (3, vec!["listen"]));
        assert!(
            matches!(source.last_error().as_deref(), Some(ConfigError::InFile { source, .. }) if matches!(**source, ConfigError::RestartNeeded { .. })),
            "the refusal is cleared, the pending restart is reported: {:?}",
            source.last_error()
        );
        assert_eq!(
            rx.borrow_and_update()
                .get("chat")
                .expect("exists")
                .backends()[1]
                .weight
                .basis_points(),
            2000
        );
    }

    #[test]
    fn set_weights_writes_the_file_back_and_publishes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("proxy.yaml");
        write(&path, EXAMPLE);
        let (source, _) = FileSource::open(&path).expect("valid");
        let mut rx = source.subscribe();
        let table = source
            .set_weights(
                "chat",
                &[
                    (Cohort::Canary, Weight::from_percent(50.0).expect("w")),
                    (Cohort::Stable, Weight::from_percent(50.0).expect("w")),
                ],
            )
            .expect("applied");
        assert_eq!(table.generation(), 2);
        assert_eq!(rx.borrow_and_update().generation(), 2);
        let on_disk = std::fs::read_to_string(&path).expect("read");
        assert_eq!(
            on_disk,
            EXAMPLE
                .replacen("weight: 80", "weight: 50", 1)
                .replacen("weight: 20", "weight: 50", 1)
        );
        // Our own write is not seen as an outside change.
        assert!(matches!(source.poll(), Reload::Unchanged));
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 1);

        let err = source
            .set_weights(
                "chat",
                &[
                    (Cohort::Canary, Weight::NONE),
                    (Cohort::Stable, Weight::NONE),
                ],
            )
            .expect_err("all zero");
        assert!(
            matches!(err.problem(), Some((_, Problem::AllWeightsZero))),
            "{err}"
        );
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            on_disk,
            "file untouched"
        );
    }

    #[test]
    fn set_weights_keeps_an_outside_edit_made_since_the_last_poll() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("proxy.yaml");
        write(&path, EXAMPLE);
        let (source, _) = FileSource::open(&path).expect("valid");
        let edited = example_with("revision: abc", "revision: def");
        write(&path, &edited);
        let table = source
            .set_weights(
                "embed",
                &[(Cohort::Stable, Weight::from_percent(100.0).expect("w"))],
            )
            .expect("applied");
        assert_eq!(
            table.get("chat").expect("exists").backends()[0]
                .revision
                .as_deref(),
            Some("def")
        );
        assert_eq!(std::fs::read_to_string(&path).expect("read"), edited);
    }

    #[tokio::test(start_paused = true)]
    async fn watch_picks_up_a_change_on_the_next_tick() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("proxy.yaml");
        write(&path, EXAMPLE);
        let (source, _) = FileSource::open(&path).expect("valid");
        let source = Arc::new(source);
        let mut rx = source.subscribe();
        let watcher = {
            let source = Arc::clone(&source);
            tokio::spawn(async move { source.watch(POLL_INTERVAL).await })
        };
        write(&path, &example_with("weight: 20", "weight: 30"));
        // Paused time: the interval fires as soon as the runtime is idle.
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .expect("a reload within a few ticks")
            .expect("source alive");
        assert_eq!(
            rx.borrow().get("chat").expect("exists").backends()[1]
                .weight
                .basis_points(),
            3000
        );
        watcher.abort();
    }

    #[test]
    fn an_edit_of_only_restart_settings_is_reported_not_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("proxy.yaml");
        write(&path, EXAMPLE);
        let (source, _) = FileSource::open(&path).expect("valid");
        let rx = source.subscribe();
        write(
            &path,
            &example_with("listen: 127.0.0.1:8080", "listen: 127.0.0.1:8081").replacen(
                "gracePeriod: 30s",
                "gracePeriod: 10s",
                1,
            ),
        );
        let Reload::RestartNeeded(settings) = source.poll() else {
            panic!("an edit of listen alone is reported");
        };
        assert_eq!(settings, vec!["listen", "gracePeriod"]);
        assert!(!rx.has_changed().expect("open"), "no table is published");
        let error = source.last_error().expect("reported in lastError");
        assert_eq!(
            error.to_string(),
            format!(
                "{}: listen, gracePeriod changed, which takes effect only after a restart of the proxy; the routes are applied (restart it, or revert the change)",
                path.display()
            )
        );
        // Reverting clears it.
        write(&path, EXAMPLE);
        assert!(matches!(source.poll(), Reload::Unchanged));
        assert!(source.last_error().is_none());
    }

    #[test]
    fn weights_go_into_force_when_the_file_is_invalid_and_the_file_is_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("proxy.yaml");
        write(&path, EXAMPLE);
        let (source, _) = FileSource::open(&path).expect("valid");
        let mut rx = source.subscribe();
        let broken = example_with("weight: 80", "weight: eighty");
        write(&path, &broken);
        assert!(matches!(source.poll(), Reload::Refused(_)));

        // The emergency: all traffic to stable, while the file is broken.
        let table = source
            .set_weights(
                "chat",
                &[
                    (Cohort::Stable, Weight::ALL),
                    (Cohort::Canary, Weight::NONE),
                ],
            )
            .expect("in force despite the broken file");
        let chat = table.get("chat").expect("exists");
        assert_eq!(chat.backends()[1].weight, Weight::NONE);
        assert_eq!(table.generation(), 2);
        assert_eq!(rx.borrow_and_update().generation(), 2, "published");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            broken,
            "the broken file is not touched"
        );
        let error = source.last_error().expect("the unsaved change is reported");
        assert!(matches!(*error, ConfigError::NotSaved { .. }), "{error}");
        assert!(
            error
                .to_string()
                .starts_with("the new weights are in force but not saved to "),
            "{error}"
        );

        // A request that is wrong in itself is still refused.
        assert!(matches!(
            source.set_weights("nope", &[(Cohort::Stable, Weight::ALL)]),
            Err(ConfigError::UnknownRoute { .. })
        ));
        // Polling the same broken file changes nothing; fixing it makes the
        // file's weights the truth again.
        assert!(matches!(source.poll(), Reload::Unchanged));
        assert_eq!(rx.borrow().generation(), 2);
        write(&path, &example_with("weight: 20", "weight: 5"));
        assert!(matches!(source.poll(), Reload::Applied { .. }));
        assert_eq!(
            rx.borrow().get("chat").expect("exists").backends()[1]
                .weight
                .basis_points(),
            500
        );
    }

    #[test]
    fn a_huge_value_is_quoted_as_an_excerpt() {
        let host = "h".repeat(4 << 20);
        let text = example_with("chat.example.com", &host);
        let err = parse(&text).expect_err("not a host name");
        let message = err.to_string();
        assert!(
            message.starts_with("routes[0].match.hosts[0]: \"hhh"),
            "{}",
            &message[..200.min(message.len())]
        );
        assert!(message.contains(&format!("({} bytes) is not a host name", host.len())));
        assert!(message.len() < 512, "{} bytes", message.len());
    }

    #[test]
    fn only_regular_files_of_a_config_size_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo runs");
        assert!(made.success());
        let big = dir.path().join("big.yaml");
        let file = std::fs::File::create(&big).expect("create");
        file.set_len(MAX_CONFIG_BYTES + 1).expect("sparse file");
        let cases = [
            (fifo.as_path(), "it is a FIFO; give the path of a YAML file"),
            (
                Path::new("/dev/zero"),
                "it is a device; give the path of a YAML file",
            ),
            (
                dir.path(),
                "it is a directory; give the path of a YAML file",
            ),
            (
                big.as_path(),
                "it is larger than 16 MiB, far more than any config; is this the right file?",
            ),
        ];
        for (path, expected) in cases {
            // A FIFO with no writer would block an open(); this returns.
            let err = read_config_text(path).expect_err("refused");
            assert_eq!(err.to_string(), expected, "{}", path.display());
            let err = FileSource::open(path).expect_err("refused");
            assert!(
                err.to_string()
                    .starts_with(&format!("cannot read {}: it is", path.display())),
                "{err}"
            );
        }
        write(&big, EXAMPLE);
        assert_eq!(read_config_text(&big).expect("a config"), EXAMPLE);
    }
}

//! What is wrong with a configuration, and how to fix it.
//!
//! The route table validates what every source gives it and the config
//! sources validate their own formats; both report through these types, so
//! they live apart from either and neither imports the other for them. Every message names the field path and ends
//! with the fix.

use std::path::PathBuf;
use std::sync::Arc;

use weir_core::{CohortError, Excerpt, WeightError};

/// What is wrong with one value, and how to fix it. The `Display` of every
/// variant ends with the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A weight outside `[0, 100]` or finer than 0.01.
    #[error(transparent)]
    NotAWeight(#[from] WeightError),
    /// A cohort name that is not a DNS label.
    #[error(transparent)]
    InvalidCohort(#[from] CohortError),
    /// Every backend of a route has weight 0.
    #[error(
        "every backend has weight 0, so no request could be routed; give at least one backend a positive weight"
    )]
    AllWeightsZero,
    /// A route without backends.
    #[error("a route needs at least one backend; add one under backends")]
    NoBackends,
    /// Two backends of one route serve the same cohort.
    #[error(
        "cohort {cohort} appears twice (first at backends[{first}]); give each backend of a route its own cohort"
    )]
    DuplicateCohort {
        /// The repeated cohort.
        cohort: String,
        /// Index of its first backend.
        first: usize,
    },
    /// Two routes share a name.
    #[error(
        "route name {} is used twice (first at routes[{first}]); give each route its own name",
        Excerpt::quoted(name)
    )]
    DuplicateRoute {
        /// The repeated name.
        name: String,
        /// Index of the first route with it.
        first: usize,
    },
    /// A route that can never be chosen.
    #[error(
        "routes[{by}] matches the same hosts and pathPrefix, so this route would never be chosen; change its match or remove it"
    )]
    ShadowedRoute {
        /// Index of the route that takes its requests.
        by: usize,
    },
    /// No routes at all.
    #[error("the proxy needs at least one route; add one under routes")]
    NoRoutes,
    /// An upstream URL with another scheme than `http` or `https`.
    #[error("{}", scheme_message(scheme))]
    UnsupportedScheme {
        /// The scheme found.
        scheme: String,
    },
    /// An upstream URL that cannot be used.
    #[error(
        "{} is not a usable upstream URL: {reason}; use http://host:port",
        Excerpt::quoted(value)
    )]
    InvalidUrl {
        /// The value as written.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A listen address that is not `ip:port`.
    #[error(
        "{} is not an IP address and port; use e.g. 127.0.0.1:8080 or [::]:8080",
        Excerpt::quoted(value)
    )]
    InvalidAddress {
        /// The value as written.
        value: String,
    },
    /// The admin listener on the proxy's own address.
    #[error(
        "{value} is also the listen address; give the admin listener its own port, e.g. 127.0.0.1:9090"
    )]
    SameAsListen {
        /// The address.
        value: String,
    },
    /// A duration that does not parse.
    #[error(
        "{} is not a duration ({}); use e.g. 60s, 5m or 1m30s",
        Excerpt::quoted(value),
        Excerpt::plain(reason)
    )]
    InvalidDuration {
        /// The value as written.
        value: String,
        /// What the parser said.
        reason: String,
    },
    /// A duration without a unit.
    #[error(
        "{} has no unit; write it as {}s (or 5m, 1h...)",
        Excerpt::plain(value),
        Excerpt::plain(value)
    )]
    DurationWithoutUnit {
        /// The number as written.
        value: String,
    },
    /// A zero duration where zero would break the proxy.
    #[error("must be longer than 0; use e.g. 60s")]
    ZeroDuration,
    /// A route name that breaks the naming rule.
    #[error(
        "{} is not a valid route name; use letters, digits, '-', '_' and '.', e.g. chat",
        Excerpt::quoted(value)
    )]
    InvalidRouteName {
        /// The value as written.
        value: String,
    },
    /// A malformed host.
    #[error(
        "{} is not a host name; write just the host, e.g. chat.example.com (no scheme, port or path)",
        Excerpt::quoted(value)
    )]
    InvalidHost {
        /// The value as written.
        value: String,
    },
    /// A malformed path prefix.
    #[error(
        "{} is not a path prefix; it must start with / and have no query or spaces, e.g. /v1",
        Excerpt::quoted(value)
    )]
    InvalidPathPrefix {
        /// The value as written.
        value: String,
    },
    /// A malformed header name.
    #[error(
        "{} is not an HTTP header name; use e.g. x-session-id",
        Excerpt::quoted(value)
    )]
    InvalidHeaderName {
        /// The value as written.
        value: String,
    },
    /// A malformed cookie name.
    #[error(
        "{} is not a cookie name; use letters, digits and -_. (e.g. session)",
        Excerpt::quoted(value)
    )]
    InvalidCookieName {
        /// The value as written.
        value: String,
    },
    /// A model name that is empty, too long or holds control characters.
    #[error(
        "{} is not a model name: give the name the server serves, 1 to 256 printable characters, e.g. chat-lora-v8",
        Excerpt::quoted(value)
    )]
    InvalidModelName {
        /// The value as written.
        value: String,
    },
    /// A backend rewrites the model on a route that matches none.
    #[error(
        "a backend can ask for another model only on a route that matches one: add match.model (the name clients ask for), or remove the backend's model"
    )]
    ModelWithoutMatch,
    /// `sticky` with neither or both of `header` and `cookie`.
    #[error("give exactly one of header or cookie, e.g. sticky: {{header: x-session-id}}")]
    StickyKey,
    /// A value the source needs is absent.
    #[error("is missing; {hint}")]
    Missing {
        /// Who writes it, or how to fix it.
        hint: &'static str,
    },
    /// A Canary's route that another Canary's route hides.
    #[error(
        "Canary {by} already routes the same hosts and pathPrefix, so this route would never be chosen; give one of them other hosts or another pathPrefix"
    )]
    ShadowedByCanary {
        /// `namespace/name` of the Canary that keeps the route.
        by: String,
    },
    /// An EndpointSlice without a port the proxy can tell is the Service's.
    #[error(
        "no port named http, none numbered {port}, and {found} ports to choose from; name the Service's port http"
    )]
    NoSlicePort {
        /// The Service port from `status.traffic`.
        port: u16,
        /// How many TCP ports the slice lists.
        found: usize,
    },
    /// An endpoint address that is not an IP address.
    #[error(
        "{} is not an IP address; the proxy reads IPv4 and IPv6 EndpointSlices only",
        Excerpt::quoted(value)
    )]
    NotAnIp {
        /// The address as listed.
        value: String,
    },
}

fn scheme_message(scheme: &str) -> String {
    if scheme == "https" {
        "https upstreams need weir built with the `tls` feature (on by default); use http:// or rebuild"
            .into()
    } else {
        format!(
            "scheme {} is not supported; use http://host:port or https://host:port",
            Excerpt::quoted(scheme)
        )
    }
}

/// Why a configuration or an update to it was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The input is not valid YAML or does not have the expected shape
    /// (unknown field, wrong type, missing field). The message carries the
    /// line and column.
    #[error("{}", Excerpt::plain(message).max(1024))]
    Syntax {
        /// The parser's message.
        message: String,
    },
    /// One field has a value the proxy cannot use.
    #[error("{}{problem}", field_prefix(field))]
    Invalid {
        /// Path to the field: `routes[0].backends[1].weight`.
        field: String,
        /// What is wrong and how to fix it.
        problem: Problem,
    },
    /// The error happened in a file.
    #[error("{}: {source}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// What went wrong in it.
        source: Box<ConfigError>,
    },
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file could not be written.
    #[error("cannot write {}: {source}{}", path.display(), write_hint(source))]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A weight update could not be written into the file's text.
    #[error("cannot write the weights back into the file: {reason}")]
    WriteBack {
        /// Why.
        reason: &'static str,
    },
    /// A weight update named a route that does not exist.
    #[error("no route named {}; the routes are {}", Excerpt::quoted(route), known.join(", "))]
    UnknownRoute {
        /// The name asked for.
        route: String,
        /// The routes there are.
        known: Vec<String>,
    },
    /// A weight update that does not give one weight per cohort of the route.
    #[error("route {route}: {reason}; give one weight for each of its cohorts ({})", cohorts.join(", "))]
    WeightsMismatch {
        /// The route.
        route: String,
        /// What was wrong (missing, unknown or repeated cohort).
        reason: String,
        /// The route's cohorts.
        cohorts: Vec<String>,
    },
    /// This source does not accept weight updates.
    #[error("weights cannot be set here: {reason}")]
    ReadOnly {
        /// Why, and where weights come from instead.
        reason: &'static str,
    },
    /// A weight-update request body that does not parse.
    #[error(
        "invalid weights body: {reason}; send {{\"weights\": {{\"stable\": 90, \"canary\": 10}}}}"
    )]
    Body {
        /// What the JSON parser said.
        reason: String,
    },
    /// A Kubernetes object the source cannot use, and what it does instead.
    #[error("{kind} {namespace}/{name} {outcome}: {source}")]
    Object {
        /// `Canary`, `EndpointSlice`.
        kind: &'static str,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// What the source does about it (`is left out of the route table`).
        outcome: &'static str,
        /// What is wrong with it.
        source: Box<ConfigError>,
    },
    /// A watch of the Kubernetes API keeps failing (the API server is
    /// unreachable, or refuses: RBAC, a missing CRD).
    #[error(
        "cannot watch the Kubernetes API since {since:.0}: {reason}; the last good route table stays in service and the watch is retried with backoff"
    )]
    WatchFailing {
        /// When the first attempt failed.
        since: jiff::Timestamp,
        /// The last failure.
        reason: String,
    },
    /// A valid config file changes settings that only a restart applies.
    #[error(
        "{} changed, which takes effect only after a restart of the proxy; the routes are applied (restart it, or revert the change)",
        settings.join(", ")
    )]
    RestartNeeded {
        /// The settings' names as written in the file (`listen`, `admin`,
        /// `readTimeout`, ...).
        settings: Vec<&'static str>,
    },
    /// A weight update is in force but could not be saved to the config
    /// file (it is invalid, unreadable or read-only).
    #[error(
        "the new weights are in force but not saved to {}: {source}; the file's own weights apply again when it next changes, so write these weights into it",
        path.display()
    )]
    NotSaved {
        /// The file.
        path: PathBuf,
        /// Why it could not be written.
        source: Box<ConfigError>,
    },
    /// Several problems at once.
    #[error("{}", several(errors))]
    Several {
        /// Each of them.
        errors: Vec<Arc<ConfigError>>,
    },
}

fn several(errors: &[Arc<ConfigError>]) -> String {
    let mut out = format!("{} problems: ", errors.len());
    for (i, e) in errors.iter().enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        out.push_str(&format!("({}) {e}", i + 1));
    }
    out
}

fn field_prefix(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!("{field}: ")
    }
}

fn write_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
            " (is the config a read-only mount, such as a ConfigMap? weights can only be written to a writable file)"
        }
        _ => "",
    }
}

impl ConfigError {
    /// An [`ConfigError::Invalid`] at `field`.
    pub fn invalid(field: impl Into<String>, problem: impl Into<Problem>) -> Self {
        ConfigError::Invalid {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// The same error with its field path placed under `prefix`
    /// (`backends[1].weight` under `routes[0]`).
    #[must_use]
    pub fn within(self, prefix: &str) -> Self {
        match self {
            ConfigError::Invalid { field, problem } => {
                let field = if field.is_empty() {
                    prefix.to_string()
                } else if field.starts_with('[') {
                    format!("{prefix}{field}")
                } else {
                    format!("{prefix}.{field}")
                };
                ConfigError::Invalid { field, problem }
            }
            other => other,
        }
    }

    /// The problem, when this is (or wraps) a field error.
    pub fn problem(&self) -> Option<(&str, &Problem)> {
        match self {
            ConfigError::Invalid { field, problem } => Some((field, problem)),
            ConfigError::InFile { source, .. } | ConfigError::Object { source, .. } => {
                source.problem()
            }
            _ => None,
        }
    }

    /// One error for `errors`: `None` for none, the error itself for one,
    /// [`ConfigError::Several`] for more.
    pub fn combine(mut errors: Vec<Arc<ConfigError>>) -> Option<Arc<ConfigError>> {
        match errors.len() {
            0 => None,
            1 => errors.pop(),
            _ => Some(Arc::new(ConfigError::Several { errors })),
        }
    }
}

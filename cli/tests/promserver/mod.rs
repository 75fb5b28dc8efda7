//! A real Prometheus server for the observability tests: the Debian
//! package's binary (`tests/run` installs it), started with its own config
//! and data directory in a scratch directory, listening on a free loopback
//! port, and killed (its directory removed) when the guard drops.
//!
//! Scrapes and rule evaluations run every second so a test sees data within
//! seconds; every wait polls the HTTP API for a condition with a deadline.

#![allow(dead_code)] // each test binary uses its own subset

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};

use serde_json::Value;
use weir_analysis::source::PrometheusApi;
use weir_analysis::source::prometheus_api::{ApiAnswer, QueryResult};

use crate::common::{Proc, spawn_command};
use crate::stack::PATIENCE;
use weir_test_kit::poll::until;

/// The `prometheus` binary: `$WEIR_PROMETHEUS`, else Debian's.
fn binary(name: &str, var: &str) -> PathBuf {
    let path =
        std::env::var_os(var).map_or_else(|| Path::new("/usr/bin").join(name), PathBuf::from);
    assert!(
        path.exists(),
        "{} is missing: install Debian's prometheus package (`apt-get install prometheus`, \
         as tests/run does) or set {var} to the binary",
        path.display()
    );
    path
}

/// `promtool` from the same package.
pub fn promtool() -> PathBuf {
    binary("promtool", "WEIR_PROMTOOL")
}

/// One scrape job: targets, each with its own extra labels.
#[derive(Debug, Clone)]
pub struct Job {
    /// `job_name`.
    pub name: String,
    /// `(address, labels)` per target.
    pub targets: Vec<(SocketAddr, Vec<(String, String)>)>,
}

impl Job {
    /// A job over these targets, without extra labels.
    pub fn new(name: &str, targets: &[SocketAddr]) -> Job {
        Job {
            name: name.to_string(),
            targets: targets.iter().map(|a| (*a, Vec::new())).collect(),
        }
    }

    /// Adds one target with extra labels.
    pub fn target(mut self, addr: SocketAddr, labels: &[(&str, &str)]) -> Job {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.targets.push((addr, labels));
        self
    }
}

/// Prometheus's config: 1 s scrapes and evaluations, these jobs and rule
/// files. Values are written as JSON strings, which YAML reads verbatim.
pub fn config(jobs: &[Job], rule_files: &[&Path]) -> String {
    let q = |s: &str| Value::String(s.to_string()).to_string();
    let mut out = String::from("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n");
    out.push_str("rule_files:\n");
    for f in rule_files {
        let _ = writeln!(out, "  - {}", q(&f.display().to_string()));
    }
    out.push_str("scrape_configs:\n");
    for job in jobs {
        let _ = writeln!(out, "  - job_name: {}\n    static_configs:", q(&job.name));
        for (addr, labels) in &job.targets {
            let _ = writeln!(out, "      - targets: [{}]", q(&addr.to_string()));
            if !labels.is_empty() {
                out.push_str("        labels:\n");
                for (k, v) in labels {
                    let _ = writeln!(out, "          {k}: {}", q(v));
                }
            }
        }
    }
    out
}

/// A running Prometheus.
#[derive(Debug)]
pub struct Prometheus {
    /// Declared first: killed before its directory is removed.
    proc: Proc,
    dir: PathBuf,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    http: reqwest::Client,
}

impl Prometheus {
    /// Starts Prometheus with `config` (see [`config`]) and waits until
    /// `/-/ready` answers.
    pub async fn start(name: &str, config: &str) -> Prometheus {
        let dir =
            std::env::temp_dir().join(format!("weir-prometheus-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).expect("scratch directory");
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config).expect("write prometheus.yml");
        let addr = crate::common::free_addr();
        let mut cmd = Command::new(binary("prometheus", "WEIR_PROMETHEUS"));
        cmd.arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(std::process::Stdio::null());
        let prometheus = Prometheus {
            proc: spawn_command(&format!("prometheus {name}"), cmd),
            url: format!("http://{addr}"),
            http: reqwest::Client::new(),
            dir,
        };
        let ready = format!("{}/-/ready", prometheus.url);
        until("Prometheus to be ready", PATIENCE, || async {
            let r = prometheus.http.get(&ready).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
        prometheus
    }

    /// The analysis's Prometheus source, pointed at this server.
    pub fn api(&self) -> PrometheusApi {
        PrometheusApi::new(&self.url).expect("a valid URL")
    }

    /// An instant query at `at` (Unix seconds; now when `None`); panics on
    /// an error, naming the expression.
    pub async fn query(&self, expr: &str, at: Option<f64>) -> ApiAnswer {
        self.api()
            .query(expr, at)
            .await
            .unwrap_or_else(|e| panic!("query {expr}: {e}"))
    }

    /// The first sample of an instant query, if it returned one.
    pub async fn scalar(&self, expr: &str, at: Option<f64>) -> Option<f64> {
        match self.query(expr, at).await.result {
            QueryResult::Vector(v) => v.first().and_then(|s| s.sample).map(|p| p.value),
            QueryResult::Scalar(p) => Some(p.value),
            _ => None,
        }
    }

    /// `GET path` (with query parameters) of the HTTP API, its `data`.
    pub async fn get(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let url = reqwest::Url::parse_with_params(&format!("{}{path}", self.url), params)
            .expect("a valid URL");
        let body: Value = self
            .http
            .get(url.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"));
        assert_eq!(body["status"], "success", "GET {url}: {body}");
        body["data"].clone()
    }

    /// Waits until every scrape target is up (`expected` of them).
    pub async fn wait_targets_up(&self, expected: usize) {
        until("every target to be up", PATIENCE, || async {
            let data = self.get("/api/v1/targets", &[("state", "active")]).await;
            let targets = data["activeTargets"].as_array()?;
            (targets.len() == expected && targets.iter().all(|t| t["health"] == "up")).then_some(())
        })
        .await;
    }

    /// What Prometheus logged so far.
    pub fn log(&self) -> String {
        self.proc.stderr.text()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // Stopped before its data directory goes.
        let _ = kill(self.proc.pid(), Signal::SIGKILL);
        let _ = self.proc.wait_exit(Duration::from_secs(10));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

//! The commands of the `weir` binary as a library, one module per
//! subcommand, so that integration tests and other crates can call them as
//! functions: preflight ([`preflight::checks`], [`preflight::run`]), backup
//! ([`backup::export::run`], [`backup::restore::run`]), the cluster
//! commands ([`cluster`]) and the import of Argo Rollouts and Flagger
//! resources ([`import::convert`]). `main.rs` only parses the command line
//! ([`args::Cli`]) and dispatches.
//!
//! Each command returns an [`exit::Code`] from DESIGN.md's table, or an
//! error that [`exit::render`] prints for a person.

pub mod analyze;
pub mod args;
pub mod backup;
pub mod cluster;
pub mod controller;
pub mod crds_cmd;
pub mod demo;
pub mod exit;
pub mod import;
pub mod load;
pub mod logging;
pub mod preflight;
pub mod proxy;
pub mod report;
pub mod run;
pub mod signals;
pub mod sim;

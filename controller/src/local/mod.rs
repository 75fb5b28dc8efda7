//! Local mode: the engine driven against two frontends with the proxy
//! in-process (`weir run`, `weir demo`).

pub mod file;
pub mod record;
pub mod runner;

//! Tests against a real kube-apiserver (see weir-envtest): the Canary CRD,
//! the chart's RBAC, and the built kubectl and helm. One test binary, so one
//! server for all of them.

mod canary;
mod rbac;
mod tools;

use std::time::Duration;

/// The API server's answer when a request failed: HTTP code and message.
fn rejection<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> (u16, String) {
    match result {
        Err(kube::Error::Api(status)) => (status.code, status.message),
        other => panic!("expected the API server to refuse, got {other:?}"),
    }
}

/// Bound on anything that waits for the API server.
const PATIENCE: Duration = Duration::from_secs(30);

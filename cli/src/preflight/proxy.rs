//! The weir proxies: the Service the controller is given with
//! `--proxy-service`, its EndpointSlices' ready endpoints on the port named
//! `admin` (else `--proxy-admin-port`), exactly as the controller finds
//! them (`weir_controller::kube::fleet::admin_endpoints`), and each one's
//! answer to `GET /readyz`. The controller reads every replica's
//! observations: one that does not answer is evidence lost.

use std::net::SocketAddr;

use weir_controller::kube::fleet::AdminEndpoints;

use super::check::{Check, Read, names};

/// What was found of the proxies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxies {
    /// `NAMESPACE/NAME` of their Service.
    pub service: String,
    /// Whether the Service exists.
    pub exists: Read<bool>,
    /// Its endpoints (empty when the Service is missing).
    pub endpoints: Read<AdminEndpoints>,
    /// Each ready endpoint's `/readyz` answer: Ok, or why not.
    pub answers: Vec<(SocketAddr, Result<(), String>)>,
}

/// The verdict on the proxies.
pub fn check(p: &Proxies) -> Check {
    let service = &p.service;
    let (namespace, name) = service.split_once('/').unwrap_or(("", service));
    match &p.exists {
        Err(e) => return e.warn(names::PROXY, &format!("Service {service}")),
        Ok(false) => {
            return Check::fail(
                names::PROXY,
                format!("no proxy Service {service}"),
                format!(
                    "install the proxies (helm install weir charts/weir -n {namespace}), or pass \
                     --proxy-service NAMESPACE/NAME as given to weir controller"
                ),
            );
        }
        Ok(true) => {}
    }
    let endpoints = match &p.endpoints {
        Ok(e) => e,
        Err(e) => return e.warn(names::PROXY, &format!("the EndpointSlices of {service}")),
    };
    if endpoints.ready.is_empty() {
        return Check::fail(
            names::PROXY,
            format!(
                "Service {service} has no ready endpoints ({} not ready): no proxy serves traffic \
                 or reports observations",
                endpoints.not_ready.len()
            ),
            format!(
                "kubectl get endpointslices -n {namespace} -l kubernetes.io/service-name={name}: \
                 start the proxies and look at why their /readyz fails (kubectl describe pod, \
                 kubectl logs); a Service without a selector needs EndpointSlices with that label"
            ),
        );
    }
    let failed: Vec<String> = p
        .answers
        .iter()
        .filter_map(|(addr, r)| r.as_ref().err().map(|e| format!("{addr}: {e}")))
        .collect();
    if !failed.is_empty() {
        return Check::fail(
            names::PROXY,
            format!(
                "{} of {} ready proxy endpoints do not answer GET /readyz from here: {}",
                failed.len(),
                p.answers.len(),
                failed.join("; ")
            ),
            format!(
                "check those proxies (kubectl logs) and that their admin listener (--admin) is on \
                 the pod network at the port the Service names `admin`; the controller polls \
                 the same endpoints (from inside the cluster, run preflight in a pod of {namespace})"
            ),
        );
    }
    if !endpoints.not_ready.is_empty() {
        return Check::warn(
            names::PROXY,
            format!(
                "{} proxy endpoints ready and answering /readyz, {} not ready",
                endpoints.ready.len(),
                endpoints.not_ready.len()
            ),
            format!("kubectl get pods -n {namespace}: look at the proxies that are not ready"),
        );
    }
    Check::pass(
        names::PROXY,
        format!(
            "{} proxy endpoints of {service} ready, each answers /readyz",
            endpoints.ready.len()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preflight::check::Status;

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], 9090))
    }

    fn proxies(ready: &[u8], not_ready: &[u8], answers: &[(u8, bool)]) -> Proxies {
        Proxies {
            service: "weir-system/weir-proxy".into(),
            exists: Ok(true),
            endpoints: Ok(AdminEndpoints {
                ready: ready.iter().map(|&i| addr(i)).collect(),
                not_ready: not_ready.iter().map(|&i| addr(i)).collect(),
            }),
            answers: answers
                .iter()
                .map(|&(i, ok)| {
                    (
                        addr(i),
                        if ok {
                            Ok(())
                        } else {
                            Err("connection refused".into())
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn ready_answering_proxies_pass_and_each_way_of_failing_is_named() {
        let table = [
            (
                proxies(&[1, 2], &[], &[(1, true), (2, true)]),
                Status::Pass,
                "2 proxy endpoints",
            ),
            (
                proxies(&[], &[1], &[]),
                Status::Fail,
                "no ready endpoints (1 not ready)",
            ),
            (
                proxies(&[1, 2], &[], &[(1, true), (2, false)]),
                Status::Fail,
                "10.0.0.2:9090: connection refused",
            ),
            (
                proxies(&[1], &[2], &[(1, true)]),
                Status::Warn,
                "1 not ready",
            ),
        ];
        for (p, status, says) in table {
            let got = check(&p);
            assert_eq!(got.status, status, "{says}: {got:?}");
            assert!(got.detail.contains(says), "{says}: {got:?}");
        }
        let mut missing = proxies(&[], &[], &[]);
        missing.exists = Ok(false);
        let got = check(&missing);
        assert_eq!(got.status, Status::Fail);
        assert!(got.fix.contains("--proxy-service"), "{got:?}");
    }
}

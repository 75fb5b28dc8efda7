//! The Nodes the agent registers: `--node` flags parsed into [`NodeSpec`],
//! and the Node and heartbeat Lease objects built from them. No I/O: the
//! agent creates and renews what these functions return.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    Node, NodeAddress, NodeCondition, NodeSpec as K8sNodeSpec, NodeStatus,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

/// The namespace of node heartbeat Leases (as the kubelet uses it).
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// How long a Lease holds without renewal (the kubelet's default).
pub const LEASE_DURATION_SECONDS: i32 = 40;
/// Pods a node takes unless `--node` says otherwise (the kubelet's default);
/// the scheduler refuses a node with no `pods` allocatable.
const DEFAULT_PODS: &str = "110";

/// A `--node` flag that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NodeSpecError {
    /// The name is not a DNS-1123 subdomain.
    #[error("node name {0:?} is not a lowercase DNS name (a-z, 0-9, '-', '.')")]
    Name(String),
    /// A resource is not `name=quantity`.
    #[error("node {node}: resource {item:?} is not NAME=QUANTITY (e.g. nvidia.com/gpu=2)")]
    Resource {
        /// The node.
        node: String,
        /// The malformed item.
        item: String,
    },
}

/// One node the agent registers: `NAME[:RESOURCE=QUANTITY,...]`, e.g.
/// `gpu-0:cpu=8,memory=32Gi,nvidia.com/gpu=2`. Capacity and allocatable
/// are both these quantities (nothing is reserved for the system).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// The Node's name.
    pub name: String,
    /// Capacity = allocatable, `pods` defaulted to 110.
    pub capacity: BTreeMap<String, String>,
}

impl std::str::FromStr for NodeSpec {
    type Err = NodeSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, resources) = s.split_once(':').unwrap_or((s, ""));
        let valid = !name.is_empty()
            && name.len() <= 253
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            && !name.starts_with(['-', '.'])
            && !name.ends_with(['-', '.']);
        if !valid {
            return Err(NodeSpecError::Name(name.to_string()));
        }
        let mut capacity = BTreeMap::new();
        for item in resources.split(',').filter(|i| !i.is_empty()) {
            match item.split_once('=') {
                Some((k, v)) if !k.is_empty() && !v.is_empty() => {
                    capacity.insert(k.to_string(), v.to_string());
                }
                _ => {
                    return Err(NodeSpecError::Resource {
                        node: name.to_string(),
                        item: item.to_string(),
                    });
                }
            }
        }
        capacity
            .entry("pods".to_string())
            .or_insert_with(|| DEFAULT_PODS.to_string());
        Ok(NodeSpec {
            name: name.to_string(),
            capacity,
        })
    }
}

/// The Node object to apply: labels as a kubelet sets them. Status goes
/// separately ([`node_status`]): the API server drops status on create.
/// `spec.podCIDR` is left empty: the API server never lets it change, and a
/// later agent run re-registering the node may pick another range.
pub fn node(spec: &NodeSpec) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(spec.name.clone()),
            labels: Some(BTreeMap::from([
                ("kubernetes.io/hostname".to_string(), spec.name.clone()),
                ("kubernetes.io/os".to_string(), "linux".to_string()),
                ("kubernetes.io/arch".to_string(), "amd64".to_string()),
                ("weir.dev/node-agent".to_string(), "true".to_string()),
            ])),
            ..ObjectMeta::default()
        },
        spec: Some(K8sNodeSpec::default()),
        status: None,
    }
}

/// The Node's status at heartbeat `now`: Ready (and no pressure) since
/// `since`, capacity = allocatable, its address on the pod bridge.
pub fn node_status(
    spec: &NodeSpec,
    address: Ipv4Addr,
    since: Timestamp,
    now: Timestamp,
) -> NodeStatus {
    let quantities: BTreeMap<String, Quantity> = spec
        .capacity
        .iter()
        .map(|(k, v)| (k.clone(), Quantity(v.clone())))
        .collect();
    let condition = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        last_heartbeat_time: Some(Time(now)),
        last_transition_time: Some(Time(since)),
    };
    NodeStatus {
        capacity: Some(quantities.clone()),
        allocatable: Some(quantities),
        conditions: Some(vec![
            condition(
                "Ready",
                "True",
                "KubeletReady",
                "weir-node-agent is posting ready status",
            ),
            condition(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "no memory pressure",
            ),
            condition(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "no disk pressure",
            ),
            condition(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "no PID pressure",
            ),
        ]),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".to_string(),
                address: address.to_string(),
            },
            NodeAddress {
                type_: "Hostname".to_string(),
                address: spec.name.clone(),
            },
        ]),
        ..NodeStatus::default()
    }
}

/// The node's heartbeat Lease, renewed at `now`.
pub fn lease(node: &str, now: Timestamp) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(node.to_string()),
            namespace: Some(LEASE_NAMESPACE.to_string()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(node.to_string()),
            lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
            renew_time: Some(MicroTime(now)),
            ..LeaseSpec::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_name_and_resources_and_defaults_pods() {
        let spec: NodeSpec = "gpu-0:cpu=8,memory=32Gi,nvidia.com/gpu=2"
            .parse()
            .expect("valid");
        assert_eq!(spec.name, "gpu-0");
        assert_eq!(spec.capacity["cpu"], "8");
        assert_eq!(spec.capacity["memory"], "32Gi");
        assert_eq!(spec.capacity["nvidia.com/gpu"], "2");
        assert_eq!(spec.capacity["pods"], "110");
    }

    #[test]
    fn a_bare_name_is_a_node_with_only_pods() {
        let spec: NodeSpec = "n1".parse().expect("valid");
        assert_eq!(
            spec.capacity,
            BTreeMap::from([("pods".to_string(), "110".to_string())])
        );
        let spec: NodeSpec = "n1:pods=4".parse().expect("valid");
        assert_eq!(spec.capacity["pods"], "4");
    }

    #[test]
    fn refuses_bad_names_and_resources() {
        assert_eq!(
            "GPU-0".parse::<NodeSpec>(),
            Err(NodeSpecError::Name("GPU-0".into()))
        );
        assert_eq!("".parse::<NodeSpec>(), Err(NodeSpecError::Name("".into())));
        assert_eq!(
            "n:cpu".parse::<NodeSpec>(),
            Err(NodeSpecError::Resource {
                node: "n".into(),
                item: "cpu".into()
            })
        );
        assert!("n:cpu=".parse::<NodeSpec>().is_err());
    }

    #[test]
    fn status_is_ready_with_capacity_equal_to_allocatable() {
        let spec: NodeSpec = "g:nvidia.com/gpu=2".parse().expect("valid");
        let now = Timestamp::UNIX_EPOCH;
        let status = node_status(&spec, Ipv4Addr::new(10, 244, 0, 1), now, now);
        assert_eq!(status.capacity, status.allocatable);
        let gpus = status
            .allocatable
            .as_ref()
            .and_then(|a| a.get("nvidia.com/gpu"));
        assert_eq!(gpus, Some(&Quantity("2".into())));
        let conditions = status.conditions.unwrap_or_default();
        let ready = conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .expect("Ready");
        assert_eq!(ready.status, "True");
        assert!(
            conditions
                .iter()
                .filter(|c| c.type_ != "Ready")
                .all(|c| c.status == "False")
        );
    }

    #[test]
    fn lease_is_held_by_the_node_in_kube_node_lease() {
        let lease = lease("g", Timestamp::UNIX_EPOCH);
        assert_eq!(lease.metadata.namespace.as_deref(), Some(LEASE_NAMESPACE));
        let spec = lease.spec.expect("spec");
        assert_eq!(spec.holder_identity.as_deref(), Some("g"));
        assert_eq!(spec.renew_time, Some(MicroTime(Timestamp::UNIX_EPOCH)));
    }
}

//! The committed CRD YAML (`crds/yaml/canary.yaml`, what the chart and the
//! envtest tests install) is generated from the Rust types; these tests fail
//! when the two drift apart. `WEIR_UPDATE_FIXTURES=1` rewrites the
//! committed copy first: the one switch for every committed file a test
//! generates (the proxy's observations fixture too).

use std::path::Path;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use weir_crds::Canary;

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/yaml/canary.yaml");

#[test]
fn committed_crd_yaml_matches_the_types() {
    let generated = weir_crds::crd_yaml().expect("the CRD serializes");
    if std::env::var_os("WEIR_UPDATE_FIXTURES").is_some() {
        std::fs::write(COMMITTED, &generated).expect("write crds/yaml/canary.yaml");
    }
    let committed = std::fs::read_to_string(Path::new(COMMITTED)).unwrap_or_default();
    assert!(
        committed == generated,
        "crds/yaml/canary.yaml is out of date with crds/src/lib.rs; regenerate it with\n  \
         cargo run -p weir -- crds > crds/yaml/canary.yaml\n\
         (or WEIR_UPDATE_FIXTURES=1 cargo test -p weir-crds --test crd_yaml)"
    );
}

#[test]
fn crd_yaml_reads_back_as_the_same_crd() {
    let yaml = weir_crds::crd_yaml().expect("the CRD serializes");
    let parsed: CustomResourceDefinition =
        serde_saphyr::from_str(&yaml).expect("the YAML parses as a CustomResourceDefinition");
    assert_eq!(parsed, Canary::crd());
}

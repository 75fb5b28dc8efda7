//! `weir preflight` when the Canary CRD is missing or differs from this
//! binary's. The CRD is cluster-scoped: a test binary of its own (each
//! binary gets its own API server), so no other test loses it.

mod common;
mod prepared;
mod stack;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt as _;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use prepared::{ALL_PASS, Prepared};
use stack::PATIENCE;
use weir_crds::Canary;
use weir_test_kit::poll::until;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drifted_then_missing_crd_fails_the_crd_check_with_the_command_that_installs_it() {
    let p = Prepared::new("preflight-crd").await;
    let all = p.run();
    assert_eq!(all.with("PASS"), ALL_PASS, "{}", all.text);

    // An older weir's CRD: its schema has no spec.gpuBudget.
    let crds: Api<CustomResourceDefinition> = Api::all(p.env.client.clone());
    let mut older = serde_json::to_value(Canary::crd()).expect("CRD as JSON");
    older
        .pointer_mut("/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties")
        .and_then(|p| p.as_object_mut())
        .expect("the spec's properties")
        .remove("gpuBudget")
        .expect("a gpuBudget property");
    // Nor the rule about it (the API server refuses a rule whose field is
    // not in the schema).
    older
        .pointer_mut(
            "/spec/versions/0/schema/openAPIV3Schema/properties/spec/x-kubernetes-validations",
        )
        .and_then(|v| v.as_array_mut())
        .expect("the spec's rules")
        .retain(|r| !r["rule"].as_str().unwrap_or_default().contains("gpuBudget"));
    let name = Canary::crd().metadata.name.expect("name");
    crds.patch(
        &name,
        &PatchParams::apply("older-weir").force(),
        &Patch::Apply(&older),
    )
    .await
    .expect("older CRD applied");
    let r = p.run();
    let (detail, fix) = r.only_failure("crd");
    assert!(
        detail.contains("spec.properties.gpuBudget is missing from the installed CRD"),
        "{detail}"
    );
    assert_eq!(
        fix,
        "weir crds | kubectl apply --server-side -f - (or, if a newer weir installed it, use that release's weir)"
    );

    // Gone: the Canary checks that need it are skipped, not failed.
    crds.delete(&name, &DeleteParams::default())
        .await
        .expect("CRD deleted");
    until("the CRD to be gone", PATIENCE, || {
        let crds = crds.clone();
        let name = name.clone();
        async move { crds.get_opt(&name).await.ok()?.is_none().then_some(()) }
    })
    .await;
    let r = p.run();
    let (detail, fix) = r.only_failure("crd");
    assert!(
        detail.contains("the Canary CRD (canaries.weir.dev) is not installed"),
        "{detail}"
    );
    assert_eq!(fix, "weir crds | kubectl apply --server-side -f -");
    for skipped in ["canary", "target", "gpu-capacity"] {
        assert_eq!(r.status(skipped), "SKIP", "{skipped}: {}", r.text);
    }
}

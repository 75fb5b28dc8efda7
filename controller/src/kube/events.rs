//! Kubernetes Events on the Canary, one per engine transition.
//!
//! Written directly as `events.k8s.io/v1` Events rather than through
//! kube-runtime's `Recorder`: the Recorder folds events that share a reason
//! into one series within a few minutes and keeps the first note, so
//! "WeightSet: canary weight 10%" followed by "WeightSet: canary weight
//! 50%" would show only the first. Each transition here is its own Event.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, Resource, ResourceExt};
use weir_crds::Canary;

/// Who writes the Events.
pub const CONTROLLER: &str = "weir.dev/controller";

/// The API caps a note at 1 kB.
const MAX_NOTE: usize = 1000;

/// Records one Event about `canary`.
///
/// # Errors
/// The API server's refusal.
pub async fn record(
    client: &Client,
    canary: &Canary,
    instance: &str,
    warning: bool,
    reason: &str,
    note: &str,
) -> Result<(), kube::Error> {
    let namespace = canary.namespace().unwrap_or_default();
    let now = jiff::Timestamp::now();
    let reference: ObjectReference = canary.object_ref(&());
    let note = if note.len() > MAX_NOTE {
        // Cut on a character boundary.
        let mut end = MAX_NOTE;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        &note[..end]
    } else {
        note
    };
    let event = Event {
        metadata: ObjectMeta {
            name: Some(format!("{}.{:x}", canary.name_any(), now.as_nanosecond())),
            namespace: Some(namespace.clone()),
            ..ObjectMeta::default()
        },
        action: Some("Rollout".into()),
        reason: Some(reason.into()),
        note: Some(note.into()),
        type_: Some(if warning { "Warning" } else { "Normal" }.into()),
        event_time: Some(MicroTime(now)),
        regarding: Some(reference),
        reporting_controller: Some(CONTROLLER.into()),
        reporting_instance: Some(instance.into()),
        ..Event::default()
    };
    Api::<Event>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &event)
        .await
        .map(|_| ())
}

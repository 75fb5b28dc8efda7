//! Labels and annotations weir puts on objects: one place for their names.

/// `app.kubernetes.io/managed-by`.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Its value on everything weir owns.
pub const MANAGER: &str = "weir";
/// The Canary an object belongs to.
pub const CANARY_LABEL: &str = "weir.dev/canary";
/// The cohort an object serves (`stable`, `canary`).
pub const COHORT_LABEL: &str = "weir.dev/cohort";
/// The pod-template revision an object carries.
pub const REVISION_ANNOTATION: &str = "weir.dev/revision";

//! The Canary's status conditions: their types, and the one function that
//! sets them.
//!
//! Conditions follow the Kubernetes convention (`metav1.Condition`): one
//! entry per type, `lastTransitionTime` moves only when the status flips,
//! and `observedGeneration` says which spec the condition speaks of. The
//! engine sets all three on every call; the reconciler sets `Ready=False`
//! when a Canary cannot run at all. Both go through [`set`], so the rules
//! live in one place.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The condition types weir writes on a Canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionType {
    /// The stable cohort serves traffic (False: the Canary cannot run, or
    /// is still initializing).
    Ready,
    /// A run is in progress or promoting.
    Progressing,
    /// The last analysis did not find a regression.
    AnalysisPassing,
}

impl ConditionType {
    /// The type as written in `status.conditions[].type`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ConditionType::Ready => "Ready",
            ConditionType::Progressing => "Progressing",
            ConditionType::AnalysisPassing => "AnalysisPassing",
        }
    }
}

/// What one condition should say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted<'a> {
    /// Which condition.
    pub kind: ConditionType,
    /// `True` or `False`.
    pub ok: bool,
    /// A CamelCase reason.
    pub reason: &'a str,
    /// For people.
    pub message: &'a str,
    /// The spec generation it speaks of.
    pub generation: Option<i64>,
}

/// Sets one condition in `conditions`, adding it if absent;
/// `lastTransitionTime` becomes `now` only when the status flips (or the
/// condition is new).
pub fn set(conditions: &mut Vec<Condition>, wanted: Wanted<'_>, now: Timestamp) {
    let status = if wanted.ok { "True" } else { "False" };
    match conditions
        .iter_mut()
        .find(|c| c.type_ == wanted.kind.as_str())
    {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = Time(now);
            }
            c.status = status.into();
            c.reason = wanted.reason.into();
            c.message = wanted.message.into();
            c.observed_generation = wanted.generation;
        }
        None => conditions.push(Condition {
            type_: wanted.kind.as_str().into(),
            status: status.into(),
            reason: wanted.reason.into(),
            message: wanted.message.into(),
            last_transition_time: Time(now),
            observed_generation: wanted.generation,
        }),
    }
}

/// The condition of type `kind`, if set.
pub fn get(conditions: &[Condition], kind: ConditionType) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == kind.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).expect("valid time")
    }

    fn ready(ok: bool, message: &str, generation: i64) -> Wanted<'_> {
        Wanted {
            kind: ConditionType::Ready,
            ok,
            reason: if ok { "Idle" } else { "TargetMissing" },
            message,
            generation: Some(generation),
        }
    }

    #[test]
    fn the_transition_time_moves_only_when_the_status_flips() {
        let mut conditions = Vec::new();
        set(&mut conditions, ready(true, "serving", 1), at(0));
        set(&mut conditions, ready(true, "still serving", 2), at(10));
        assert_eq!(conditions.len(), 1, "one entry per type");
        let c = get(&conditions, ConditionType::Ready).expect("set");
        assert_eq!(c.last_transition_time, Time(at(0)), "same status: no move");
        assert_eq!(c.message, "still serving");
        assert_eq!(c.observed_generation, Some(2));
        set(&mut conditions, ready(false, "gone", 3), at(20));
        let c = get(&conditions, ConditionType::Ready).expect("set");
        assert_eq!(c.status, "False");
        assert_eq!(c.reason, "TargetMissing");
        assert_eq!(c.last_transition_time, Time(at(20)), "flipped");
    }

    #[test]
    fn each_type_is_its_own_entry() {
        let mut conditions = Vec::new();
        set(&mut conditions, ready(true, "serving", 1), at(0));
        set(
            &mut conditions,
            Wanted {
                kind: ConditionType::AnalysisPassing,
                ok: false,
                reason: "Abort",
                message: "ttft +40%",
                generation: Some(1),
            },
            at(5),
        );
        let types: Vec<&str> = conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Ready", "AnalysisPassing"]);
        assert!(get(&conditions, ConditionType::Progressing).is_none());
    }
}

//! How many replicas each cohort runs at a canary share: the arithmetic of
//! `replicas: matchWeight` and of a GPU budget, pure and table-tested.
//!
//! The point of matching replicas to the weight is a fair comparison:
//! inference latency depends on how busy each replica is, so a canary
//! judged against stable must carry the same load *per replica*. A canary
//! taking a share `w` of traffic on `c` replicas while stable takes `1 − w`
//! on `s` replicas is fair when `w / c = (1 − w) / s`.
//!
//! - Without a budget, stable keeps all `total` replicas (an abort can send
//!   it everything at once), so the canary gets `c ≈ total · w / (1 − w)`,
//!   rounded to whichever neighbour is fairer, never more than `total`.
//!   (Above 50% the canary would need more replicas than stable has; it is
//!   capped, and the analysis's load check refuses to judge such a split.)
//! - With a budget `B` (the GPUs both cohorts may hold together), when the
//!   fair canary does not fit beside a full stable, the budget is split in
//!   the ratio of the weights: `c ≈ B · w`, `s = B − c`, never more than
//!   `total` for stable.
//!
//! Imbalance is measured as the analysis measures it: the difference of the
//! per-replica loads over the larger one.

use weir_crds::CohortReplicas;

use super::spec::Share;

/// `|a − b| / max(a, b)` of the cohorts' per-replica loads.
fn imbalance(share: f64, stable: u32, canary: u32) -> f64 {
    let s = (1.0 - share) / f64::from(stable.max(1));
    let c = share / f64::from(canary.max(1));
    (s - c).abs() / s.max(c).max(f64::MIN_POSITIVE)
}

/// Replicas per cohort for a canary share of traffic; `fixed` canary
/// replicas when the spec says so, `budget` when the two cohorts share a
/// GPU budget. `total` is the user's replica count (at least 1).
pub fn for_share(
    total: u32,
    share: Share,
    fixed: Option<u32>,
    budget: Option<u32>,
) -> CohortReplicas {
    let total = total.max(1);
    let w = share.fraction();
    let fits = |stable: u32, canary: u32| budget.is_none_or(|b| stable + canary <= b);
    let canary = match fixed {
        Some(n) => n,
        None if share == Share::NONE => 0,
        None if share == Share::ALL => total,
        None => {
            // Fair beside a full stable.
            let x = f64::from(total) * w / (1.0 - w);
            let beside_full = best(w, x, |c| (total, c), total);
            if fits(total, beside_full) {
                beside_full
            } else if let Some(b) = budget {
                // Split the budget in the ratio of the weights.
                let room = b.saturating_sub(1).max(1);
                best(
                    w,
                    f64::from(b) * w,
                    |c| (total.min(b.saturating_sub(c)).max(1), c),
                    room.min(total),
                )
            } else {
                beside_full
            }
        }
    };
    let stable = match budget {
        Some(b) => total.min(b.saturating_sub(canary)).max(1),
        None => total,
    };
    CohortReplicas { stable, canary }
}

/// The canary count around `x` (floor or ceiling, within `1..=cap`) whose
/// split `pair(c) = (stable, canary)` is fairer; ties go to fewer replicas.
fn best(w: f64, x: f64, pair: impl Fn(u32) -> (u32, u32), cap: u32) -> u32 {
    let cap = cap.max(1);
    let lo = (x.floor() as u32).clamp(1, cap);
    let hi = (x.ceil() as u32).clamp(1, cap);
    let score = |c: u32| {
        let (s, c) = pair(c);
        imbalance(w, s, c)
    };
    if score(hi) < score(lo) - 1e-12 {
        hi
    } else {
        lo
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(p: f64) -> Share {
        Share::from_percent(p).expect("share")
    }

    #[test]
    fn replicas_follow_the_weight_fairly() {
        // (total, share %, budget, stable, canary)
        let table = [
            // One replica each side is fair only at 50/50.
            (1, 50.0, None, 1, 1),
            // 20% of 10: 2 canaries carry 10% each against stable's 8%
            // (20% apart), 3 carry 6.7% (17%): 3.
            (10, 20.0, None, 10, 3),
            (10, 25.0, None, 10, 3),
            (10, 50.0, None, 10, 10),
            (10, 5.0, None, 10, 1),
            (10, 100.0, None, 10, 10),
            (10, 0.0, None, 10, 0),
            // Above 50% the canary is capped at stable's size.
            (4, 75.0, None, 4, 4),
            // A budget that fits the fair canary beside a full stable.
            (10, 50.0, Some(20), 10, 10),
            (10, 20.0, Some(13), 10, 3),
            // One that does not: the budget is split by the weights.
            (10, 20.0, Some(11), 9, 2),
            (10, 50.0, Some(12), 6, 6),
            (10, 50.0, Some(10), 5, 5),
            (4, 25.0, Some(4), 3, 1),
        ];
        for (total, pct, budget, stable, canary) in table {
            let got = for_share(total, share(pct), None, budget);
            assert_eq!(
                (got.stable, got.canary),
                (stable, canary),
                "total {total}, share {pct}%, budget {budget:?}"
            );
            if let Some(b) = budget {
                assert!(got.stable + got.canary <= b, "over budget: {got:?}");
            }
        }
    }

    #[test]
    fn fixed_canary_replicas_are_kept_and_a_budget_shrinks_stable() {
        let got = for_share(10, share(30.0), Some(2), None);
        assert_eq!((got.stable, got.canary), (10, 2));
        let got = for_share(10, share(30.0), Some(2), Some(11));
        assert_eq!((got.stable, got.canary), (9, 2));
    }

    #[test]
    fn the_chosen_split_is_never_less_fair_than_its_neighbour() {
        for total in 1..=16u32 {
            for bp in (100..=5000).step_by(100) {
                let s = Share::from_percent(f64::from(bp) / 100.0).expect("share");
                let got = for_share(total, s, None, None);
                let w = s.fraction();
                let mine = imbalance(w, got.stable, got.canary);
                for other in [got.canary.saturating_sub(1), got.canary + 1] {
                    if (1..=total).contains(&other) {
                        assert!(
                            mine <= imbalance(w, got.stable, other) + 1e-12,
                            "total {total}, {s}%: {} canaries ({mine:.3}) vs {other}",
                            got.canary
                        );
                    }
                }
            }
        }
    }
}

//! Every name the proxy exports, in one place (DESIGN.md, "Metric names").
//!
//! A misspelt metric name does not fail anywhere: dashboards and the
//! analysis just read "no data". So names, label names and histogram
//! buckets live here once, and label values come from the enums they label
//! (`weir_core::Outcome`, `weir_core::Cohort`); `observe` renders from these
//! and a test parses its output back with the analysis crate's reader, which
//! spells the same names in `weir_analysis::names::weir_proxy`.

/// Counter: finished requests, labelled [`ROUTE`], [`COHORT`], [`OUTCOME`].
pub const REQUESTS_TOTAL: &str = "weir_proxy_requests_total";
/// Histogram: time to first non-empty body chunk, seconds; [`ROUTE`], [`COHORT`].
pub const TTFT_SECONDS: &str = "weir_proxy_ttft_seconds";
/// Histogram: gaps between SSE content events, seconds; [`ROUTE`], [`COHORT`].
pub const INTER_TOKEN_SECONDS: &str = "weir_proxy_inter_token_seconds";
/// Histogram: request duration, first byte in to last byte out, seconds.
pub const REQUEST_DURATION_SECONDS: &str = "weir_proxy_request_duration_seconds";
/// Counter: output tokens (usage when reported, else SSE token events; see `meter`).
pub const OUTPUT_TOKENS_TOTAL: &str = "weir_proxy_output_tokens_total";
/// Gauge: requests in flight.
pub const INFLIGHT_REQUESTS: &str = "weir_proxy_inflight_requests";
/// Gauge: the share of a route's traffic a cohort gets, percent (0-100):
/// its weight over the sum of the route's weights.
pub const ROUTE_WEIGHT: &str = "weir_proxy_route_weight";

/// Counter: connections refused by one endpoint and tried again on another
/// ready endpoint of the same cohort, labelled [`ROUTE`], [`COHORT`]. Pod
/// churn, not the cohort failing: these are not in [`REQUESTS_TOTAL`]'s
/// `connect_error`, which counts only a cohort none of whose tried
/// endpoints answered.
pub const CONNECT_RETRIES_TOTAL: &str = "weir_proxy_connect_retries_total";

/// Counter: requests whose body was looked into for its `model` (only when
/// some route matches models), labelled [`LOOKUP`]: what was found.
pub const MODEL_LOOKUPS_TOTAL: &str = "weir_proxy_model_lookups_total";

/// Label: route name.
pub const ROUTE: &str = "route";
/// Label: cohort name (`stable`, `canary`, ...).
pub const COHORT: &str = "cohort";
/// Label: request outcome; its values are [`weir_core::Outcome::as_str`].
pub const OUTCOME: &str = "outcome";
/// Label: the model a cohort asks the upstream for, on a route that
/// rewrites it ([`ROUTE_WEIGHT`] only); absent otherwise.
pub const MODEL: &str = "model";
/// Label: what a model lookup found; its values are
/// [`crate::model::Lookup::as_str`].
pub const LOOKUP: &str = "lookup";

/// Bucket upper bounds (seconds) for [`TTFT_SECONDS`]: vLLM's TTFT buckets,
/// so weir's and vLLM's histograms line up on one dashboard.
pub const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];

/// Bucket upper bounds (seconds) for [`INTER_TOKEN_SECONDS`]: vLLM's
/// inter-token buckets with a finer low end, since small models stream
/// tokens every few milliseconds and coalesced events give gaps of 0.
pub const INTER_TOKEN_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
];

/// Bucket upper bounds (seconds) for [`REQUEST_DURATION_SECONDS`]: vLLM's
/// end-to-end buckets with a low end for non-generating requests.
pub const REQUEST_DURATION_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
    60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
];

#[cfg(test)]
mod tests {
    use super::*;
    use weir_analysis::names::weir_proxy as read_back;

    #[test]
    fn names_match_what_the_analysis_reads() {
        assert_eq!(REQUESTS_TOTAL, read_back::REQUESTS);
        assert_eq!(TTFT_SECONDS, read_back::TTFT);
        assert_eq!(INTER_TOKEN_SECONDS, read_back::INTER_TOKEN);
        assert_eq!(REQUEST_DURATION_SECONDS, read_back::REQUEST_DURATION);
        assert_eq!(OUTPUT_TOKENS_TOTAL, read_back::OUTPUT_TOKENS);
        assert_eq!(INFLIGHT_REQUESTS, read_back::INFLIGHT_REQUESTS);
        assert_eq!(ROUTE_WEIGHT, read_back::ROUTE_WEIGHT);
        assert_eq!(
            (ROUTE, COHORT, OUTCOME),
            (
                read_back::ROUTE_LABEL,
                read_back::COHORT_LABEL,
                read_back::OUTCOME_LABEL
            )
        );
    }

    #[test]
    fn buckets_increase_strictly() {
        for buckets in [TTFT_BUCKETS, INTER_TOKEN_BUCKETS, REQUEST_DURATION_BUCKETS] {
            assert!(buckets.windows(2).all(|w| w[0] < w[1]), "{buckets:?}");
            assert!(buckets.iter().all(|b| b.is_finite() && *b > 0.0));
        }
    }
}

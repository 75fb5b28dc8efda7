//! Metric sources: where cohort observations come from, behind one trait.

//! Placeholder until the HTML report lands (replaced at merge).

use weir_controller::local::record::RunRecord;

/// Renders the run.
pub fn render(record: &RunRecord) -> String {
    format!(
        "<pre>{}</pre>",
        serde_json::to_string_pretty(record).unwrap_or_default()
    )
}

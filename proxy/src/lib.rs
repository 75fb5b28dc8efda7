//! weir-proxy: the embedded L7 proxy (pingora) that splits traffic between
//! cohorts, meters every request and stream, and serves observations.
//!
//! Not built yet: see issue 3. The crate exists so the workspace layout and
//! dependency direction from DESIGN.md are fixed from the start.

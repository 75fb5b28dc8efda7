//! weir-sim: a simulated OpenAI-compatible inference server and a streaming
//! load generator, for the demo, tests and benchmarks.
//!
//! Not built yet: see issue 3.

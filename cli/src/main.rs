//! `weir`: the one binary. Subcommands wire the crates together.

fn main() {}

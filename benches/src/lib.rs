//! Shared helpers for the benches (sizes, throughput reporting).

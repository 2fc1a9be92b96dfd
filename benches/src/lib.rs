//! Shared code of the benches: the per-method training-step cases ([`steps`]) used by the
//! criterion bench `steps` and the `contrast-steps` timing binary that `cargo xtask bench` runs.

pub mod steps;

//! The checks behind the fuzz targets. Each `fuzz_targets/<name>.rs` feeds libFuzzer's inputs
//! to one `check_*` function; the same functions run as seeded mutation tests in the workspace
//! (`crates/contrast-core/tests/fuzz_inputs.rs`, `crates/claires/tests/fuzz_records.rs`,
//! `xtask/src/fuzz.rs`), which include these files with `#[path]`. The parsers of crates that
//! are binaries (xtask) or heavy (claires) are compiled here from their own source files.

pub mod harness;

/// contrast-core: image decode, CIFAR, STL-10, NIfTI, h5, config, checkpoints.
pub mod core;

/// `xtask/src/download/{manifest,extract}.rs`, compiled from the xtask sources.
#[path = "download_shim.rs"]
pub mod download;

/// Manifest and archive checks.
#[path = "download.rs"]
pub mod download_checks;

/// `crates/claires/src/records.rs`, compiled from the claires source.
#[path = "../../crates/claires/src/records.rs"]
pub mod records;

/// Record loader checks.
#[path = "claires.rs"]
pub mod claires_checks;

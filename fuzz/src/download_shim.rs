//! What `manifest.rs` and `extract.rs` expect from their parent module (`xtask::download`).

#[path = "../../xtask/src/download/extract.rs"]
mod extract;
#[path = "../../xtask/src/download/manifest.rs"]
pub mod manifest;

pub use extract::{extract, extract_budget};
pub use manifest::{Extract, Manifest};

/// Where shipped manifests live (only `Manifest::named` uses it; the checks load files).
pub fn manifest_dir() -> std::path::PathBuf {
    std::path::PathBuf::from("datasets")
}

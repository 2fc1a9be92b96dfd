//! `contrast-toy`: the core example method (synthetic blobs, MLP, InfoNCE) through the shared
//! CLI. See `contrast_core::train::example`.

fn main() {
    contrast_core::train::cli::main::<contrast_core::train::example::Toy>(env!(
        "CARGO_MANIFEST_DIR"
    ));
}

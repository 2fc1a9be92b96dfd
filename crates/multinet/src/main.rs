//! `multinet`: MNCLGLF through the shared CLI (`pretrain | eval --run | reproduce | describe`);
//! `reproduce` trains MNCLGLF and the plain-SimCLR baseline with the same settings and prints
//! both beside the paper's numbers.

fn main() {
    contrast_core::train::cli::main::<multinet::method::Multinet>(env!("CARGO_MANIFEST_DIR"));
}

//! `patchmix pretrain | eval --run DIR | reproduce | describe`: the shared method verbs over
//! [`patchmix::PatchMix`] (`reproduce` trains PatchMix and its no-mix baseline, then prints both
//! beside the paper's numbers).

fn main() {
    contrast_core::train::cli::main::<patchmix::PatchMix>(env!("CARGO_MANIFEST_DIR"));
}

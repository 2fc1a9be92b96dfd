//! Build-script helper shared by every package whose binaries, tests, benches or examples link
//! libtorch (through `tch`).
//!
//! torch-sys gives final executables no rpath, and `cargo:rustc-link-arg` does not propagate to
//! dependent packages, so each such package calls [`link_libtorch`] from its own `build.rs`:
//!
//! ```text
//! // build.rs
//! fn main() { contrast_build::link_libtorch(); }
//! ```
//!
//! It emits
//! * `-Wl,-rpath,<libtorch>/lib` so executables run without `LD_LIBRARY_PATH`;
//! * `--no-as-needed -ltorch_cuda --as-needed` when `libtorch_cuda.so` exists, so that
//!   `tch::Cuda::is_available()` is true on a CUDA machine (the linker would otherwise drop the
//!   library because no symbol of it is referenced). Set `CONTRAST_LINK_CUDA=0` to skip it: on a
//!   CPU-only machine that saves ≈ 0.3 s of start-up and ≈ 350 MB of resident memory per process.

use std::path::PathBuf;

/// Where libtorch lives, as torch-sys sees it: `$LIBTORCH` (set by `.cargo/config.toml` to the
/// `.libtorch` link that `cargo xtask setup` creates, or exported by the user).
pub fn libtorch_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("LIBTORCH")?);
    Some(dir.canonicalize().unwrap_or(dir))
}

/// Emit the link arguments described in the crate documentation.
pub fn link_libtorch() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=CONTRAST_LINK_CUDA");
    let Some(dir) = libtorch_dir() else {
        println!(
            "cargo:warning=LIBTORCH is not set: run `cargo xtask setup` (binaries will need LD_LIBRARY_PATH)"
        );
        return;
    };
    let lib = dir.join("lib");
    if !lib.join("libtorch_cpu.so").exists() {
        println!(
            "cargo:warning=no libtorch_cpu.so under {}: run `cargo xtask setup`",
            lib.display()
        );
        return;
    }
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    let want_cuda = std::env::var("CONTRAST_LINK_CUDA").map_or(true, |v| v != "0");
    if want_cuda && lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-L{}", lib.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}

//! Compiles `csrc/dist.cpp` against the headers of the libtorch that tch links (`$LIBTORCH`, as
//! `cargo xtask setup` sets it), with the C++ ABI of the PyPI wheels (`_GLIBCXX_USE_CXX11_ABI=1`;
//! `CONTRAST_CXX11_ABI=0` for an old pre-cxx11 libtorch).
//!
//! `csrc/dist_nccl.cpp` (the NCCL backend) is compiled too where libtorch has
//! `libtorch_cuda.so` and the CUDA runtime and NCCL headers are found, in the `nvidia/*/include`
//! folders of the wheels PyTorch depends on beside `torch/` (or `CONTRAST_CUDA_INCLUDE` /
//! `CONTRAST_NCCL_INCLUDE`); `CONTRAST_LINK_CUDA=0` leaves it out (as it leaves libtorch_cuda
//! unlinked, see contrast-build).

use std::path::{Path, PathBuf};

/// The first `nvidia/*/include` folder beside `torch/` holding `header`, or `$env`.
fn find_include(torch: &Path, header: &str, env: &str) -> Option<PathBuf> {
    println!("cargo:rerun-if-env-changed={env}");
    if let Some(d) = std::env::var_os(env) {
        return Some(PathBuf::from(d));
    }
    let nvidia = torch.parent()?.join("nvidia");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&nvidia)
        .ok()?
        .flatten()
        .map(|e| e.path().join("include"))
        .collect();
    dirs.sort();
    dirs.into_iter().find(|d| d.join(header).exists())
}

fn main() {
    contrast_build::link_libtorch();
    println!("cargo:rerun-if-env-changed=CONTRAST_CXX11_ABI");
    println!("cargo:rerun-if-changed=csrc");
    let Some(torch) = contrast_build::libtorch_dir() else {
        panic!("LIBTORCH is not set: run `cargo xtask setup` (it links the PyTorch 2.11.0 wheel)");
    };
    let include = torch.join("include");
    assert!(
        include
            .join("torch/csrc/distributed/c10d/ProcessGroupGloo.hpp")
            .exists(),
        "{} has no c10d headers: contrast-shim needs the libtorch of a PyTorch wheel",
        include.display()
    );
    let abi = std::env::var("CONTRAST_CXX11_ABI").unwrap_or_else(|_| "1".into());
    let link_cuda = std::env::var("CONTRAST_LINK_CUDA").map_or(true, |v| v != "0");
    let nccl = match (
        link_cuda && torch.join("lib/libtorch_cuda.so").exists(),
        find_include(&torch, "cuda_runtime_api.h", "CONTRAST_CUDA_INCLUDE"),
        find_include(&torch, "nccl.h", "CONTRAST_NCCL_INCLUDE"),
    ) {
        (true, Some(cuda), Some(nccl)) => Some((cuda, nccl)),
        _ => None,
    };
    let mut b = cc::Build::new();
    b.cpp(true)
        .pic(true)
        .warnings(false)
        .include("csrc/gloo-decls")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .file("csrc/dist.cpp");
    if let Some((cuda, nccl_inc)) = &nccl {
        b.include(cuda)
            .include(nccl_inc)
            .define("CONTRAST_HAVE_NCCL", "1")
            .file("csrc/dist_nccl.cpp");
        let lib = torch.join("lib");
        println!("cargo:rustc-link-search=native={}", lib.display());
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
    } else {
        println!(
            "cargo:warning=contrast-shim: built without NCCL (no libtorch_cuda.so, CUDA or NCCL headers, or CONTRAST_LINK_CUDA=0): distributed runs use Gloo"
        );
    }
    b.compile("contrast_shim");
}

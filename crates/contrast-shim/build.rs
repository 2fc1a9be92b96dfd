//! Compiles `csrc/*.cpp` against the headers of the libtorch that tch links (`$LIBTORCH`, as
//! `cargo xtask setup` sets it), with the C++ ABI of the PyPI wheels (`_GLIBCXX_USE_CXX11_ABI=1`;
//! `CONTRAST_CXX11_ABI=0` for an old pre-cxx11 libtorch).

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
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include("csrc/gloo-decls")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .file("csrc/dist.cpp")
        .compile("contrast_shim");
}

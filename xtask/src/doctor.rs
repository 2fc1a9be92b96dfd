//! `cargo xtask doctor`: what is installed, where, and what is missing (with the fix).

use crate::setup::{missing_debian_packages, torch_info, DEBIAN_PACKAGES, TORCH_VERSION};
use crate::util::{cache_dir, link_dir, repo_root, run_output};
use anyhow::Result;
use std::process::Command;

/// What each method's default (smoke) preset needs and where it would come from.
fn data_report() {
    let root = crate::download::data_root(None);
    println!(
        "\ndata (root {}; --data-dir / CONTRAST_DATA change it)",
        root.display()
    );
    match crate::data::shared_data() {
        Some(d) => println!("  development copy: {} (optional speed-up)", d.display()),
        None => {
            println!("  development copy: none (not needed: smoke presets download what they use)")
        }
    }
    for m in crate::methods::methods() {
        let line = match crate::data::plan(m, &m.default_preset, None) {
            Ok(Some(p)) => crate::data::describe(&p),
            Ok(None) => "no data needed".into(),
            Err(e) => format!("cannot tell: {e:#}"),
        };
        println!("  {:<9} --preset {:<6} {line}", m.name, m.default_preset);
    }
}

pub fn doctor() -> Result<()> {
    let mut problems: Vec<String> = Vec::new();
    let cache = cache_dir()?;
    println!("repository      {}", repo_root().display());
    println!("cache           {}", cache.display());
    let python = cache.join("venv/bin/python");
    match torch_info(&python) {
        Ok((version, dir)) => {
            println!("torch (python)  {version} at {}", dir.display());
            if !version.starts_with(TORCH_VERSION) {
                problems.push(format!(
                    "torch is {version}, tch 0.24 needs {TORCH_VERSION}: run `cargo xtask setup --force`"
                ));
            }
            if let Ok(cuda) = run_output(Command::new(&python).args([
                "-c",
                "import torch; print(torch.version.cuda, torch.cuda.is_available(), torch.cuda.device_count())",
            ])) {
                println!("torch CUDA      build {cuda} (build, available, devices)");
            }
        }
        Err(_) => problems.push(format!(
            "no working torch in {}: run `cargo xtask setup`",
            python.display()
        )),
    }
    let links = link_dir();
    let lib = links.join("libtorch");
    match std::fs::read_link(&lib) {
        Ok(t) => println!("LIBTORCH link   {} -> {}", lib.display(), t.display()),
        Err(_) => problems.push(format!(
            "{} is missing: run `cargo xtask setup`",
            lib.display()
        )),
    }
    if let Some(v) = std::env::var_os("LIBTORCH") {
        println!("LIBTORCH        {}", v.to_string_lossy());
    }
    let cuda_so = lib.join("lib/libtorch_cuda.so");
    let link_cuda = std::env::var("CONTRAST_LINK_CUDA").map_or(true, |v| v != "0");
    println!(
        "libtorch_cuda   {} ({})",
        if cuda_so.exists() {
            "present"
        } else {
            "absent"
        },
        if cuda_so.exists() && link_cuda {
            "linked into our executables; CONTRAST_LINK_CUDA=0 to skip"
        } else {
            "not linked"
        }
    );
    let missing = missing_debian_packages(DEBIAN_PACKAGES);
    if missing.is_empty() {
        println!("system packages {} (present)", DEBIAN_PACKAGES.join(" "));
    } else {
        problems.push(format!(
            "missing system packages: apt-get install -y {}",
            missing.join(" ")
        ));
    }
    println!(
        "cpu cores       {}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    data_report();
    if problems.is_empty() {
        println!("\nlibtorch as seen from Rust (cargo run -p contrast-core --bin contrast-info):");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "run",
                "--quiet",
                "-p",
                "contrast-core",
                "--bin",
                "contrast-info",
            ])
            .current_dir(repo_root())
            .status()?;
        if !status.success() {
            problems.push("contrast-info did not build or run (see above)".into());
        }
    }
    if problems.is_empty() {
        println!("\nall good");
        Ok(())
    } else {
        println!("\nmissing:");
        for p in &problems {
            println!("  - {p}");
        }
        anyhow::bail!("{} problem(s) found", problems.len())
    }
}

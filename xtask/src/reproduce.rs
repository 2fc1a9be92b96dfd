//! `cargo xtask reproduce <method> [--preset P] [-- args…]`: ensure libtorch, then run the
//! method's binary (release build) with `configs/<P>.toml`; the run lands in
//! `runs/<method>/<run-name>/` with its config, metrics, checkpoints and `report.json`.

use crate::setup::{setup, SetupArgs};
use crate::util::{repo_root, run_status, step};
use anyhow::{bail, Result};
use clap::Args;
use std::process::Command;

/// A method that `reproduce` knows: name, package, binary, default preset.
pub struct Method {
    pub name: &'static str,
    pub package: &'static str,
    pub binary: &'static str,
    pub default_preset: &'static str,
    pub what: &'static str,
}

pub const METHODS: &[Method] = &[
    Method {
        name: "patchmix",
        package: "patchmix",
        binary: "patchmix",
        default_preset: "smoke",
        what: "PatchMix vs its no-mix baseline (ViT, CIFAR-10)",
    },
    Method {
        name: "multinet",
        package: "multinet",
        binary: "multinet",
        default_preset: "smoke",
        what: "MNCLGLF vs a plain-SimCLR baseline (ResNet-18, CIFAR-10)",
    },
    Method {
        name: "fba-net",
        package: "fba-net",
        binary: "fba-net",
        default_preset: "smoke",
        what: "FBA-Net+ vs a supervised V-Net (semi-supervised 3D LA segmentation)",
    },
    Method {
        name: "spade",
        package: "spade",
        binary: "spade",
        default_preset: "smoke",
        what: "V-Net fine-tune from scratch / 3-D SimCLR / Spade global / Spade global+local (LA)",
    },
    Method {
        name: "claires",
        package: "claires",
        binary: "claires",
        default_preset: "smoke",
        what: "CLAIRES: CLIP text-to-image retrieval on VQA-RAD records (paired + label-match)",
    },
    Method {
        name: "grass",
        package: "grass",
        binary: "grass",
        default_preset: "smoke",
        what: "GraSS vs its SimCLR warm-up baseline (ResNet + DeepLabV3+, mIoU; Dubai tiles)",
    },
    Method {
        name: "spps",
        package: "spps",
        binary: "spps",
        default_preset: "smoke",
        what: "SimCLR vs SimCLR+SPPS semantic positive pairs (ResNet, CIFAR-10)",
    },
    Method {
        name: "toy",
        package: "contrast-core",
        binary: "contrast-toy",
        default_preset: "toy",
        what: "core example: InfoNCE on synthetic blobs (harness smoke test)",
    },
];

#[derive(Args, Debug)]
pub struct ReproduceArgs {
    /// Method to run (`cargo xtask reproduce --list` shows them).
    pub method: Option<String>,
    /// Preset name (configs/<preset>.toml of the method crate).
    #[arg(long, short = 'p')]
    pub preset: Option<String>,
    /// List the methods and exit.
    #[arg(long)]
    pub list: bool,
    /// Build in debug mode instead of release (faster to build, slower to run).
    #[arg(long)]
    pub debug: bool,
    /// Data root (default: $CONTRAST_DATA, else datasets/ in the repository).
    #[arg(long, alias = "dir")]
    pub data_dir: Option<std::path::PathBuf>,
    /// Only make the preset's data available (download, verify, extract), then stop.
    #[arg(long)]
    pub prepare_only: bool,
    /// Extra arguments for the method binary (e.g. `-- --resume --set optim.lr=0.1`).
    #[arg(last = true)]
    pub args: Vec<String>,
}

pub fn reproduce(a: &ReproduceArgs) -> Result<()> {
    if a.list || a.method.is_none() {
        println!("methods:");
        for m in METHODS {
            println!(
                "  {:<10} {} (default preset `{}`)",
                m.name, m.what, m.default_preset
            );
        }
        return Ok(());
    }
    let name = a.method.as_deref().unwrap_or_default();
    let Some(m) = METHODS.iter().find(|m| m.name == name) else {
        bail!(
            "unknown method `{name}`; known: {}",
            METHODS
                .iter()
                .map(|m| m.name)
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    if !a.prepare_only {
        setup(&SetupArgs::default())?;
    }
    let preset = a.preset.as_deref().unwrap_or(m.default_preset);
    step(&format!("reproduce {} --preset {preset}", m.name));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo_root()).args(["run", "--quiet"]);
    if !a.debug {
        cmd.arg("--release");
    }
    cmd.args(["-p", m.package, "--bin", m.binary, "--"]);
    if m.name == "toy" {
        cmd.args(["--preset", preset]);
    } else {
        cmd.args(["reproduce", "--preset", preset]);
    }
    if let Some(plan) = crate::data::plan(m, preset, a.data_dir.as_deref())? {
        for (k, v) in crate::data::prepare(&plan)? {
            cmd.arg("--set").arg(format!("{k}={v}"));
        }
    }
    if a.prepare_only {
        println!(
            "data ready; the run would be: {:?}",
            cmd.get_args().collect::<Vec<_>>()
        );
        return Ok(());
    }
    cmd.args(&a.args);
    run_status(&mut cmd)
}

//! `cargo xtask fresh-clone`: what a new user gets from `git clone` on a machine without the
//! development data. Clones this repository's HEAD into `target/fresh-clone/contrast` (no
//! `../shared` beside it, `CONTRAST_DEV_DATA=none`, an empty `CONTRAST_DATA`), serves small data
//! sets in the official formats from 127.0.0.1 with test manifests (`CONTRAST_MANIFESTS`) that
//! keep the real manifests' names and layouts, then runs in the clone, as a user would:
//!
//! 1. `cargo xtask reproduce <m> --preset smoke --prepare-only` for every method with data:
//!    CIFAR-10 (official binary archive; the server cuts the first transfer half-way, so the
//!    download must resume), LA heart, VQA-RAD, the Dubai tiles;
//! 2. VQA-RAD once with a wrong checksum for one file first: the error must name that file and
//!    the files already verified must stay (the rerun fetches only the bad one);
//! 3. `cargo xtask reproduce patchmix --preset smoke --debug -- --stop-at 3 …`: a few training
//!    steps of the main job on what was downloaded.
//!
//! The clone builds in its own target folder (`target/fresh-clone/target`), so the first run
//! compiles the dependencies once (minutes); later runs reuse them. CI runs it.

use crate::test_server::{Behaviour, Server};
use crate::util::{repo_root, run_output, step};
use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Args, Debug, Default)]
pub struct FreshCloneArgs {
    /// Only the data steps (skip the patchmix training steps and their build).
    #[arg(long)]
    pub no_train: bool,
}

/// The data sets the smoke presets download when there is no development copy.
const SERVED: &[&str] = &["cifar10", "la-heart", "vqa-rad", "dubai-aerial"];

pub fn fresh_clone(a: &FreshCloneArgs) -> Result<()> {
    let t0 = Instant::now();
    let repo = repo_root();
    let work = repo.join("target/fresh-clone");
    let clone = work.join("contrast");
    let (served, manifests, data, runs) = (
        work.join("served"),
        work.join("manifests"),
        work.join("data"),
        work.join("runs"),
    );
    for d in [&clone, &served, &manifests, &data, &runs] {
        if d.exists() {
            std::fs::remove_dir_all(d).with_context(|| format!("removing {}", d.display()))?;
        }
    }
    std::fs::create_dir_all(&data)?;
    let mut log: Vec<(String, f64, String)> = Vec::new();

    step("fresh-clone: git clone (HEAD; uncommitted changes are not in the clone)");
    let head = run_output(
        Command::new("git")
            .current_dir(&repo)
            .args(["rev-parse", "HEAD"]),
    )?;
    let dirty = run_output(Command::new("git").current_dir(&repo).args([
        "status",
        "--porcelain",
        "--untracked-files=no",
    ]))?;
    if !dirty.is_empty() {
        println!("note: the working tree has uncommitted changes; the clone tests {head}");
    }
    run_output(
        Command::new("git")
            .args(["clone", "--quiet"])
            .arg(&repo)
            .arg(&clone),
    )?;
    ensure!(
        !clone.join("../shared").exists(),
        "{} has a ../shared beside it",
        clone.display()
    );
    println!(
        "cloned {head} into {} (no ../shared beside it)",
        clone.display()
    );

    step("fresh-clone: small data sets in the official formats, served from 127.0.0.1");
    let python = crate::util::cache_dir()?.join("venv/bin/python");
    run_output(
        Command::new(&python)
            .arg(repo.join("xtask/fresh_clone/make_datasets.py"))
            .arg(&served),
    )
    .context("making the fixture data sets (needs the cache venv: `cargo xtask setup`)")?;
    // CIFAR-10 from a server that cuts the first transfer of each file half-way (Range honoured)
    let cut = Server::start_for(
        files_under(&served, &["cifar10"])?,
        Behaviour {
            ranges: true,
            cut_first: true,
            ..Behaviour::default()
        },
        Duration::from_secs(3600),
    );
    let plain = Server::start_for(
        files_under(&served, &SERVED[1..])?,
        Behaviour {
            ranges: true,
            ..Behaviour::default()
        },
        Duration::from_secs(3600),
    );
    for name in SERVED {
        let base = if *name == "cifar10" { &cut } else { &plain };
        write_manifest(&repo, &served, &manifests, name, &base.base, None)?;
    }
    println!(
        "{} files in {}; manifests in {}",
        walk(&served)?.len(),
        served.display(),
        manifests.display()
    );

    let xtask = |args: &[&str]| -> Command {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut c = Command::new(cargo);
        c.current_dir(&clone)
            .arg("xtask")
            .args(args)
            .env("CONTRAST_DATA", &data)
            .env("CONTRAST_DEV_DATA", "none")
            .env("CONTRAST_MANIFESTS", &manifests)
            .env("CARGO_TARGET_DIR", work.join("target"))
            // what this repository's .cargo/config.toml exported must not leak into the clone
            .env_remove("LIBTORCH")
            .env_remove("CONTRAST_VENV")
            .env_remove("CONTRAST_MIRROR")
            .env_remove("CONTRAST_RUNS");
        c
    };
    // VQA-RAD first with one wrong checksum: named in the error, nothing verified is lost
    let bad = "testset.json";
    write_manifest(
        &repo,
        &served,
        &manifests,
        "vqa-rad",
        &plain.base,
        Some(bad),
    )?;
    let out = timed(
        &mut log,
        format!("claires data step with a wrong sha256 for {bad} (must fail)"),
        xtask(&[
            "reproduce",
            "claires",
            "--preset",
            "smoke",
            "--prepare-only",
        ]),
        true,
    )?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "a checksum mismatch did not fail");
    ensure!(err.contains(bad), "the error does not name {bad}:\n{err}");
    let kept = walk(&data.join("vqa-rad/images"))?.len();
    ensure!(
        kept == 12,
        "{kept} of 12 verified images kept after the mismatch"
    );
    println!("checked: the error names {bad}; the 12 images already verified stay in place");
    log.last_mut().expect("logged").2 = "failed as it must".into();
    write_manifest(&repo, &served, &manifests, "vqa-rad", &plain.base, None)?;

    // every registered method's default-preset data step (the core example needs none)
    for m in crate::methods::methods()
        .iter()
        .filter(|m| m.package != "contrast-core")
    {
        let (m, preset) = (m.name.as_str(), m.default_preset.as_str());
        let out = timed(
            &mut log,
            format!("cargo xtask reproduce {m} --preset {preset} --prepare-only"),
            xtask(&["reproduce", m, "--preset", preset, "--prepare-only"]),
            false,
        )?;
        if !out.status.success() {
            bail!("the {m} smoke data step failed in the fresh clone (see above)");
        }
    }
    // the resumed CIFAR-10 download and the VQA-RAD rerun, from the servers' logs
    let cifar = cut.requests();
    ensure!(
        cifar.iter().any(|r| r.status == 206),
        "the cut CIFAR-10 transfer was not resumed with a Range request: {cifar:?}"
    );
    let images_fetched = plain
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("vqa-rad/images/"))
        .count();
    ensure!(
        images_fetched == 12,
        "VQA-RAD images fetched {images_fetched} times for 12 files: the rerun fetched verified files again"
    );
    println!(
        "checked: CIFAR-10 resumed after a cut transfer ({} requests); VQA-RAD's 12 images were fetched once",
        cifar.len()
    );

    if !a.no_train {
        let runs_s = runs.display().to_string();
        let out = timed(
            &mut log,
            "cargo xtask reproduce patchmix --preset smoke --debug -- --stop-at 3 (on the downloaded CIFAR-10)".into(),
            xtask(&[
                "reproduce", "patchmix", "--preset", "smoke", "--debug", "--", "--stop-at", "3",
                "--runs-dir", &runs_s, "--set", "data.train_subset=300", "--set",
                "data.test_subset=100", "--set", "optim.batch_size=32", "--set", "log.log_every=1",
            ]),
            false,
        )?;
        ensure!(out.status.success(), "the patchmix smoke steps failed");
        let metrics: Vec<PathBuf> = walk(&runs)?
            .into_iter()
            .filter(|p| p.ends_with("metrics.jsonl"))
            .collect();
        ensure!(
            metrics.len() == 2,
            "expected metrics of PatchMix and its baseline under {}, found {metrics:?}",
            runs.display()
        );
        for p in &metrics {
            let text = std::fs::read_to_string(p)?;
            let steps = text.lines().filter(|l| l.contains("\"total\"")).count();
            ensure!(steps >= 1, "{} logged no training step", p.display());
            let cfg = std::fs::read_to_string(p.with_file_name("config.toml"))?;
            ensure!(
                cfg.contains("format = \"cifar10\""),
                "{} did not train on the downloaded binary CIFAR-10",
                p.display()
            );
        }
        println!(
            "checked: both runs trained on the downloaded CIFAR-10 binary and logged their steps"
        );
    }

    println!("\nfresh clone of {head}, no development data, data from 127.0.0.1:");
    for (what, s, verdict) in &log {
        println!("  {s:>7.1} s  {verdict:<18} {what}");
    }
    println!(
        "xtask fresh-clone: all green in {:.0} s",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Run `cmd`, echo its output, log its wall time and verdict.
fn timed(
    log: &mut Vec<(String, f64, String)>,
    what: String,
    mut cmd: Command,
    capture: bool,
) -> Result<std::process::Output> {
    step(&format!("fresh-clone: {what}"));
    let t = Instant::now();
    let out = if capture {
        let out = cmd
            .output()
            .with_context(|| format!("could not start {cmd:?}"))?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        out
    } else {
        let status = cmd
            .status()
            .with_context(|| format!("could not start {cmd:?}"))?;
        std::process::Output {
            status,
            stdout: vec![],
            stderr: vec![],
        }
    };
    let s = t.elapsed().as_secs_f64();
    let verdict = if out.status.success() { "ok" } else { "FAILED" };
    println!("[{verdict}, {s:.1} s]");
    log.push((what, s, verdict.into()));
    Ok(out)
}

/// Every file under `dir`, recursively, sorted.
fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The server's map: `<name>/<path>` → bytes, for the named data sets under `served`.
fn files_under(served: &Path, names: &[&str]) -> Result<HashMap<String, Vec<u8>>> {
    let mut map = HashMap::new();
    for name in names {
        for p in walk(&served.join(name))? {
            let rel = p.strip_prefix(served)?.to_string_lossy().replace('\\', "/");
            map.insert(rel, std::fs::read(&p)?);
        }
    }
    Ok(map)
}

/// A test manifest for `name`: the real manifest's name, title, licence, citation and layout,
/// with the served files (sizes, checksums of the same kind, extraction) at `base`.
/// `corrupt`: give that file a wrong sha256.
fn write_manifest(
    repo: &Path,
    served: &Path,
    out: &Path,
    name: &str,
    base: &str,
    corrupt: Option<&str>,
) -> Result<()> {
    let real_path = repo.join("datasets").join(format!("{name}.toml"));
    let real: toml::Table = toml::from_str(&std::fs::read_to_string(&real_path)?)
        .with_context(|| format!("parsing {}", real_path.display()))?;
    let mut m = toml::Table::new();
    for k in ["name", "title", "homepage", "license", "citation", "layout"] {
        if let Some(v) = real.get(k) {
            m.insert(k.into(), v.clone());
        }
    }
    m.insert(
        "notes".into(),
        "fresh-clone fixture: small synthetic files in the official layout".into(),
    );
    m.insert(
        "base_urls".into(),
        toml::Value::Array(vec![format!("{base}/{name}/").into()]),
    );
    let real_files = real.get("files").and_then(|f| f.as_array());
    let mut files = Vec::new();
    let dir = served.join(name);
    for p in walk(&dir)? {
        let rel = p.strip_prefix(&dir)?.to_string_lossy().replace('\\', "/");
        let bytes = std::fs::read(&p)?;
        let mut f = toml::Table::new();
        f.insert("path".into(), rel.clone().into());
        f.insert("size".into(), (bytes.len() as i64).into());
        let real_entry = real_files.and_then(|fs| {
            fs.iter()
                .find(|e| e.get("path").and_then(|v| v.as_str()) == Some(rel.as_str()))
        });
        if let Some(x) = real_entry.and_then(|e| e.get("extract")) {
            f.insert("extract".into(), x.clone());
        }
        let mut sha = hex::encode(Sha256::digest(&bytes));
        if corrupt == Some(rel.as_str()) {
            sha = sha.chars().rev().collect();
        }
        f.insert("sha256".into(), sha.into());
        files.push(toml::Value::Table(f));
    }
    ensure!(
        !files.is_empty(),
        "no fixture files under {}",
        dir.display()
    );
    m.insert("files".into(), toml::Value::Array(files));
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join(format!("{name}.toml")), toml::to_string(&m)?)?;
    Ok(())
}

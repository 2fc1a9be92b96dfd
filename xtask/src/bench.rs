//! `cargo xtask bench [--vs-pytorch]`: run our criterion benches and, in the same session, the
//! PyTorch peers of the same work, alternately for several rounds; print per-case medians and the
//! ratio (ours / PyTorch throughput). Machines are noisy: report ratios, not single times.
//!
//! Cases today: the two-view BYOL/PatchMix augmentation pipeline at 32 px (batch 256) and 224 px
//! (batch 64): `benches/benches/augment.rs` against `benches/py/augment_torchvision.py`
//! (torchvision transforms on PIL images, DataLoader with 2 workers).

use crate::setup::{setup, SetupArgs};
use crate::util::{repo_root, run_output, step};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::collections::BTreeMap;
use std::process::Command;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Also run the PyTorch peer scripts and print the ratio.
    #[arg(long)]
    pub vs_pytorch: bool,
    /// Rounds of (ours, PyTorch), alternating.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Measurement seconds per case and round.
    #[arg(long, default_value_t = 4.0)]
    pub seconds: f64,
}

/// `ns/iter` lines of criterion's `--output-format bencher` → images/s per case, using the
/// batch size in the case name (`…_batch256`).
pub fn parse_bencher(out: &str) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    for line in out.lines() {
        let Some(rest) = line.strip_prefix("test ") else {
            continue;
        };
        let Some((name, tail)) = rest.split_once(" ... bench:") else {
            continue;
        };
        let ns: String = tail
            .split("ns/iter")
            .next()
            .unwrap_or("")
            .chars()
            .filter(|c| c.is_ascii_digit())
            .collect();
        let case = name.rsplit('/').next().unwrap_or(name).trim().to_string();
        let batch = case
            .rsplit("_batch")
            .next()
            .and_then(|b| b.parse::<f64>().ok());
        if let (Ok(ns), Some(batch)) = (ns.parse::<f64>(), batch) {
            if ns > 0.0 {
                m.insert(case, batch / (ns * 1e-9));
            }
        }
    }
    m
}

/// `torchvision <case> (…): N images/s` lines of the peer.
pub fn parse_peer(out: &str) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    for line in out.lines() {
        let Some(rest) = line.strip_prefix("torchvision ") else {
            continue;
        };
        let case = rest.split_whitespace().next().unwrap_or("").to_string();
        // the number right before the first "images/s"
        let rate = rest
            .split(" images/s")
            .next()
            .and_then(|r| r.split_whitespace().last())
            .and_then(|r| r.parse::<f64>().ok());
        if let Some(rate) = rate {
            m.insert(case, rate);
        }
    }
    m
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn bench(a: &BenchArgs) -> Result<()> {
    setup(&SetupArgs::default())?;
    let root = repo_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    step("building the benches (release)");
    crate::util::run_status(Command::new(&cargo).current_dir(&root).args([
        "bench",
        "-p",
        "contrast-benches",
        "--bench",
        "augment",
        "--no-run",
    ]))?;
    let python = crate::util::cache_dir()?.join("venv/bin/python");
    let mut ours: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut peer: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for round in 1..=a.rounds {
        step(&format!("round {round}/{}: ours (criterion)", a.rounds));
        let secs = format!("{}", a.seconds);
        let out = run_output(Command::new(&cargo).current_dir(&root).args([
            "bench",
            "-q",
            "-p",
            "contrast-benches",
            "--bench",
            "augment",
            "--",
            "--warm-up-time",
            "1",
            "--measurement-time",
            &secs,
            "--output-format",
            "bencher",
        ]))
        .context("running the augment bench")?;
        let r = parse_bencher(&out);
        if r.is_empty() {
            bail!("no results parsed from the criterion output:\n{out}");
        }
        for (k, v) in r {
            println!("  ours  {k:<24} {v:>10.0} images/s");
            ours.entry(k).or_default().push(v);
        }
        if a.vs_pytorch {
            step(&format!(
                "round {round}/{}: PyTorch peer (torchvision + DataLoader)",
                a.rounds
            ));
            let out = run_output(
                Command::new(&python)
                    .current_dir(&root)
                    .arg("benches/py/augment_torchvision.py")
                    .args(["--seconds", &secs]),
            )
            .context("running benches/py/augment_torchvision.py")?;
            for (k, v) in parse_peer(&out) {
                println!("  torch {k:<24} {v:>10.0} images/s");
                peer.entry(k).or_default().push(v);
            }
        }
    }
    println!("\n| case | ours (images/s, median) | PyTorch (images/s, median) | ratio |\n|---|---|---|---|");
    for (k, v) in ours.iter_mut() {
        let o = median(v);
        match peer.get_mut(k) {
            Some(p) => {
                let p = median(p);
                println!("| augment {k} | {o:.0} | {p:.0} | {:.1}× |", o / p);
            }
            None => println!("| augment {k} | {o:.0} | – | – |"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_criterion_bencher_and_peer_lines() {
        let c = "noise\ntest byol_two_view/32px_batch256 ... bench:    43,264,000 ns/iter (+/- 1,234)\n\
                 test byol_two_view/224px_from256_batch64 ... bench:  1,000,000,000 ns/iter (+/- 9)\n";
        let m = parse_bencher(c);
        assert!((m["32px_batch256"] - 256.0 / 0.043264).abs() < 1e-6);
        assert!((m["224px_from256_batch64"] - 64.0).abs() < 1e-9);
        let p = parse_peer("torchvision 32px_batch256 (blur: torchvision): 96 images/s (960 images in 10.0 s, 2 workers)\nother\n");
        assert_eq!(p["32px_batch256"], 96.0);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}

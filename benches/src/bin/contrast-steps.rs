//! Times one method's training step the way `benches/py/steps.py` times its PyTorch peer (same
//! warm-up, same median over the same wall time, peak RSS of a process that ran only that case),
//! exports a case for the peer's loss check, and measures the fp32 matmul peak.
//!
//! ```text
//! contrast-steps time   --case patchmix [--batch 32] [--threads 1] [--seconds 10] [--device cpu] [--phases] [--malloc keep|default]
//! contrast-steps export --case patchmix --dir DIR      # DIR/<name>.{safetensors,json}
//! contrast-steps peak   [--threads 1] [--n 1024] [--seconds 3]
//! ```
//! `--malloc keep` (the default) applies `contrast_core::train::keep_freed_memory` first, as every
//! training run does (`runtime.keep_freed_memory`); `--malloc default` leaves glibc's settings.
//! `cargo xtask bench --vs-pytorch` drives it; the criterion bench `steps` times the same cases.

use anyhow::{bail, Context, Result};
use contrast_benches::steps::{build, export, matmul_gflops, median, peak_rss_mib};
use std::path::PathBuf;
use tch::Device;

struct Args {
    cmd: String,
    case: String,
    batch: Option<i64>,
    threads: i32,
    seconds: f64,
    n: i64,
    dir: PathBuf,
    device: Device,
    phases: bool,
    keep_freed_memory: bool,
}

fn parse() -> Result<Args> {
    let mut it = std::env::args().skip(1);
    let cmd = it
        .next()
        .context("usage: contrast-steps time|export|peak [options]")?;
    let mut a = Args {
        cmd,
        case: String::new(),
        batch: None,
        threads: 1,
        seconds: 10.0,
        n: 1024,
        dir: PathBuf::from("target/steps"),
        device: Device::Cpu,
        phases: false,
        keep_freed_memory: true,
    };
    while let Some(flag) = it.next() {
        if flag == "--phases" {
            a.phases = true;
            continue;
        }
        let v = it.next().with_context(|| format!("{flag} needs a value"))?;
        let bad = |e: std::num::ParseIntError| anyhow::anyhow!("{flag} {v}: {e}");
        match flag.as_str() {
            "--case" => a.case = v,
            "--batch" => a.batch = Some(v.parse().map_err(bad)?),
            "--threads" => a.threads = v.parse().map_err(bad)?,
            "--n" => a.n = v.parse().map_err(bad)?,
            "--seconds" => a.seconds = v.parse().with_context(|| format!("--seconds {v}"))?,
            "--dir" => a.dir = PathBuf::from(v),
            "--malloc" => {
                a.keep_freed_memory = match v.as_str() {
                    "keep" => true,
                    "default" => false,
                    other => bail!("--malloc {other}: use keep or default"),
                }
            }
            "--device" => {
                a.device = match v.as_str() {
                    "cpu" => Device::Cpu,
                    "cuda" => Device::Cuda(0),
                    other => bail!("--device {other}: use cpu or cuda"),
                }
            }
            other => bail!("unknown option {other}"),
        }
    }
    Ok(a)
}

fn main() -> Result<()> {
    let a = parse()?;
    if a.keep_freed_memory && !contrast_core::train::keep_freed_memory() {
        eprintln!("note: the malloc settings of keep_freed_memory were not applied (not glibc)");
    }
    if a.threads > 0 {
        tch::set_num_threads(a.threads);
    }
    let sync = |d: Device| {
        if let Device::Cuda(i) = d {
            tch::Cuda::synchronize(i as i64);
        }
    };
    match a.cmd.as_str() {
        "time" => {
            let mut case = build(&a.case, a.batch, false, a.device)?;
            case.step()?; // warm-up
            sync(a.device);
            let mut times = Vec::new();
            let start = std::time::Instant::now();
            let mut last = 0.0;
            while start.elapsed().as_secs_f64() < a.seconds || times.len() < 3 {
                let t = std::time::Instant::now();
                last = case.step()?;
                sync(a.device);
                times.push(t.elapsed().as_secs_f64());
            }
            if a.phases {
                let mut ph: [Vec<f64>; 3] = Default::default();
                for _ in 0..3 {
                    let p = case.step_phases()?;
                    for (v, x) in ph.iter_mut().zip(p) {
                        v.push(x);
                    }
                }
                let [f, b, u] = ph.map(|mut v| median(&mut v) * 1e3);
                println!(
                    "phases {} forward+loss {f:.1} ms, backward {b:.1} ms, optimiser {u:.1} ms",
                    case.name()
                );
            }
            if !last.is_finite() {
                bail!("{}: the loss became {last}", case.name());
            }
            let n = times.len();
            let med = median(&mut times);
            println!(
                "step {} {:.3} samples/s (median step {:.1} ms over {n} steps, {} threads, peak RSS {:.0} MiB)",
                case.name(),
                case.batch() as f64 / med,
                med * 1e3,
                tch::get_num_threads(),
                peak_rss_mib().unwrap_or(f64::NAN)
            );
        }
        "export" => {
            let mut case = build(&a.case, a.batch, true, a.device)?;
            let js = export(case.as_mut(), &a.dir)?;
            println!("exported {} {}", case.name(), js.display());
        }
        "peak" => {
            let g = matmul_gflops(a.n, a.seconds, a.device);
            println!(
                "matmul_peak {g:.2} GFLOP/s (fp32 {n}x{n}, {} threads)",
                tch::get_num_threads(),
                n = a.n
            );
        }
        other => bail!("unknown command `{other}`: use time, export or peak"),
    }
    Ok(())
}

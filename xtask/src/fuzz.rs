//! `cargo xtask fuzz [--quick] [--seconds N] [--only T,…] [--no-coverage]`: fuzzing of every
//! parser the workspace owns or wraps.
//!
//! Two kinds of target, over the same checks (`fuzz/src/*.rs`: no panic, no hang, a bounded
//! heap, an error naming the file):
//! * **coverage-guided**: the cargo-fuzz crate `fuzz/` (libFuzzer, AddressSanitizer, nightly;
//!   `cargo install cargo-fuzz`), run for `--seconds` each on the committed seeds and
//!   regression inputs plus its own corpus (`fuzz/corpus/`, git-ignored);
//! * **seeded mutation**: ordinary tests (`crates/contrast-core/tests/fuzz_inputs.rs`,
//!   `crates/claires/tests/fuzz_records.rs`, `crates/grass/tests/fuzz_raster.rs`,
//!   `xtask/tests/fuzz_download.rs`) that replay the seeds and regression inputs and mutate them
//!   with a fixed seed, each input on its own thread under a time bound, with the Rust heap
//!   counted (`fuzz/src/runner.rs`). Every target has one; the ones behind C or C++ libraries
//!   (libhdf5, GDAL, libtorch's index loading) have only this kind.
//!
//! `--quick` (the CI form) runs the seeded mutation tests only, 1,000 mutated inputs per target
//! (300 for the two that fork a child per input; a count: the same inputs on every machine),
//! and prints the table. The full form runs the
//! coverage-guided targets for `--seconds` (default 60) each and the seeded mutation tests of
//! the targets without one for as long, then writes the "Fuzzing" section of `RELIABILITY.md`
//! (everything after the `<!-- fuzzing -->` line).

use crate::util::{repo_root, step};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[derive(Args, Clone, Debug, Default)]
pub struct FuzzArgs {
    /// The CI form: the seeded mutation tests only (every seed and regression input replayed,
    /// then 1,000 mutated inputs per target, 300 for the forked ones); prints the table, writes
    /// nothing.
    #[arg(long)]
    pub quick: bool,
    /// Time per target in seconds, full form (default 60).
    #[arg(long)]
    pub seconds: Option<u64>,
    /// Only these targets (comma-separated; see the table in RELIABILITY.md).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Full form without the coverage-guided runs (no nightly / cargo-fuzz needed).
    #[arg(long)]
    pub no_coverage: bool,
}

/// Mutated inputs per target in the quick form (after the replay of its seeds and regression
/// inputs), and for the targets that run each input in a forked child.
const QUICK_EXECS: u64 = 1000;
const QUICK_EXECS_ISOLATED: u64 = 300;

/// Where a target's seeded mutation test lives.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Suite {
    Core,
    Claires,
    Grass,
    Download,
}

impl Suite {
    /// `cargo test` arguments of the suite's test binary.
    fn cargo_args(self) -> [&'static str; 4] {
        match self {
            Suite::Core => ["-p", "contrast-core", "--test", "fuzz_inputs"],
            Suite::Claires => ["-p", "claires", "--test", "fuzz_records"],
            Suite::Grass => ["-p", "grass", "--test", "fuzz_raster"],
            Suite::Download => ["-p", "xtask", "--test", "fuzz_download"],
        }
    }
}

struct Target {
    name: &'static str,
    parser: &'static str,
    /// Has a cargo-fuzz target of the same name.
    coverage: bool,
    suite: Suite,
    /// The memory bound, as stated.
    memory: &'static str,
    /// The bugs it found and that were fixed (numbers of `fuzz/FINDINGS.md`).
    bugs: &'static str,
    /// The C / C++ library the seeded mutation test isolates itself from ("" if none).
    upstream: &'static str,
}

const TARGETS: &[Target] = &[
    Target {
        name: "image_decode",
        bugs: "7",
        upstream: "",
        parser: "image-folder decode: JPEG / PNG via `image` → RGB8 (`data::folder::decode_rgb`), and JPEGs at 1/2 via `jpeg-decoder` (`decode_rgb_scaled`)",
        coverage: true,
        suite: Suite::Core,
        memory: "decoder ≤ 512 MiB; ≤ 2²⁶ pixels (192 MiB RGB8) per image",
    },
    Target {
        name: "cifar",
        bugs: "none",
        upstream: "",
        parser: "CIFAR-10 / 100 binary records (`data::cifar::read_records`)",
        coverage: true,
        suite: Suite::Core,
        memory: "2 × file size",
    },
    Target {
        name: "stl10",
        bugs: "none",
        upstream: "",
        parser: "STL-10 `*_X.bin` / `*_y.bin` (`data::stl10`)",
        coverage: true,
        suite: Suite::Core,
        memory: "2 × file size (images), 9 × (labels as i64)",
    },
    Target {
        name: "nifti",
        bugs: "5, 6",
        upstream: "",
        parser: "NIfTI-1 `.nii` / `.nii.gz` via `nifti` (`volume::nifti::read_nifti`)",
        coverage: true,
        suite: Suite::Core,
        memory: "voxels checked against the file size before decoding; ≤ 2²⁸ voxels",
    },
    Target {
        name: "h5",
        bugs: "4, 12",
        upstream: "libhdf5",
        parser: "LA h5 via libhdf5 (`volume::h5::read_h5_case`)",
        coverage: false,
        suite: Suite::Core,
        memory: "≤ 2²⁸ voxels per dataset, checked before reading",
    },
    Target {
        name: "config_toml",
        bugs: "13",
        upstream: "",
        parser: "config TOML + `--set` overrides (`train::config::load_config`)",
        coverage: true,
        suite: Suite::Core,
        memory: "heap ≤ 16 MiB per input (asserted)",
    },
    Target {
        name: "checkpoint",
        bugs: "none",
        upstream: "",
        parser: "checkpoint folder: state.json, safetensors, restore (`Checkpointer::load`)",
        coverage: true,
        suite: Suite::Core,
        memory: "≈ 3 × the files (hashed, then parsed into tensors)",
    },
    Target {
        name: "manifest",
        bugs: "none",
        upstream: "",
        parser: "data set manifest TOML (xtask `download::Manifest::load`)",
        coverage: true,
        suite: Suite::Download,
        memory: "heap ≤ 16 MiB per input (asserted)",
    },
    Target {
        name: "tar",
        bugs: "1, 2",
        upstream: "",
        parser: "tar extraction (xtask `download::extract`)",
        coverage: true,
        suite: Suite::Download,
        memory: "streamed; disk ≤ `extract_budget` (100 × archive, ≥ 64 MiB)",
    },
    Target {
        name: "tar_gz",
        bugs: "1, 2, 3",
        upstream: "",
        parser: "tar.gz extraction (xtask `download::extract`)",
        coverage: true,
        suite: Suite::Download,
        memory: "streamed; disk ≤ `extract_budget` (100 × archive, ≥ 64 MiB)",
    },
    Target {
        name: "zip",
        bugs: "2, 3",
        upstream: "",
        parser: "zip extraction (xtask `download::extract`)",
        coverage: true,
        suite: Suite::Download,
        memory: "streamed; disk ≤ `extract_budget` (100 × archive, ≥ 64 MiB)",
    },
    Target {
        name: "claires_json",
        bugs: "none",
        upstream: "",
        parser: "CLAIRES JSON record manifest (`records::load_json`)",
        coverage: true,
        suite: Suite::Claires,
        memory: "heap ≤ 16 MiB per input (asserted)",
    },
    Target {
        name: "claires_csv",
        bugs: "9",
        upstream: "",
        parser: "CLAIRES CSV record manifest (`records::load_csv`)",
        coverage: true,
        suite: Suite::Claires,
        memory: "heap ≤ 16 MiB per input (asserted)",
    },
    Target {
        name: "vqa_rad",
        bugs: "none",
        upstream: "",
        parser: "VQA-RAD question/answer JSON (`records::vqa_rad_records`)",
        coverage: true,
        suite: Suite::Claires,
        memory: "heap ≤ 16 MiB per input (asserted)",
    },
    Target {
        name: "claires_index",
        bugs: "8",
        upstream: "",
        parser: "CLAIRES index folder: `index.json` + embeddings (`index::Index::load`)",
        coverage: false,
        suite: Suite::Claires,
        memory: "heap ≤ 16 MiB per input (asserted)",
    },
    Target {
        name: "geotiff",
        bugs: "10, 11",
        upstream: "GDAL",
        parser: "our code over GDAL: `Raster::open`, `TileIndex::build`, RGB / index mask decode (grass)",
        coverage: false,
        suite: Suite::Grass,
        memory: "heap ≤ 64 MiB per input (asserted); ≤ 64 bands, ≤ 2²² tiles per scene",
    },
];

/// One row of the results.
struct Row {
    target: &'static Target,
    kind: &'static str,
    execs: u64,
    seconds: f64,
    /// Peak Rust heap of one input (seeded mutation) or peak RSS (libFuzzer), bytes.
    peak: Option<u64>,
    /// Inputs that crashed inside a C or C++ library (isolated seeded mutation runs).
    upstream: u64,
}

/// Entry point.
pub fn fuzz(args: &FuzzArgs) -> Result<()> {
    let t0 = Instant::now();
    let root = repo_root();
    for o in &args.only {
        if !TARGETS.iter().any(|t| t.name == o) {
            bail!(
                "unknown fuzz target `{o}`; known: {}",
                TARGETS
                    .iter()
                    .map(|t| t.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let chosen: Vec<&Target> = TARGETS
        .iter()
        .filter(|t| args.only.is_empty() || args.only.iter().any(|o| o == t.name))
        .collect();
    if args.quick && args.seconds.is_some() {
        bail!("--quick runs a fixed count of inputs per target; --seconds is for the full form");
    }
    let seconds = args.seconds.unwrap_or(60);
    let coverage = !args.quick && !args.no_coverage;
    let mut rows = Vec::new();

    // seeded mutation: every target; in the full form those without a coverage-guided target
    // for `seconds`, the others as in the quick form. The statistics are where
    // `fuzz/src/runner.rs` writes them.
    let stats_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("tmp/fuzz-stats");
    let _ = std::fs::remove_dir_all(&stats_dir);
    for suite in [Suite::Core, Suite::Claires, Suite::Grass, Suite::Download] {
        let in_suite: Vec<&&Target> = chosen.iter().filter(|t| t.suite == suite).collect();
        if in_suite.is_empty() {
            continue;
        }
        let args_ = suite.cargo_args();
        step(&format!(
            "seeded mutation: cargo test {} ({})",
            args_.join(" "),
            in_suite
                .iter()
                .map(|t| t.name)
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.arg("test")
            .args(args_)
            .arg("--")
            .arg("--test-threads=1")
            .current_dir(&root)
            .env_remove("CONTRAST_FUZZ_SECONDS")
            .env_remove("CONTRAST_FUZZ_EXECS");
        if args.quick || coverage {
            // a count: the same inputs on every machine (the quick form, and in the full form
            // the mutation tests of the targets that also run under libFuzzer)
            cmd.env("CONTRAST_FUZZ_EXECS", QUICK_EXECS.to_string());
            for t in in_suite.iter().filter(|t| !t.upstream.is_empty()) {
                // a forked child per input: slower, fewer inputs
                cmd.env(
                    format!("CONTRAST_FUZZ_EXECS_{}", t.name.to_ascii_uppercase()),
                    QUICK_EXECS_ISOLATED.to_string(),
                );
            }
        } else {
            cmd.env("CONTRAST_FUZZ_SECONDS", seconds.to_string());
        }
        for t in &in_suite {
            let secs = if coverage && !t.coverage { seconds } else { 0 };
            if secs > 0 {
                cmd.env(
                    format!("CONTRAST_FUZZ_SECONDS_{}", t.name.to_ascii_uppercase()),
                    secs.to_string(),
                );
            }
            cmd.arg(format!("fuzz_{}", t.name));
        }
        // a test name filter matches substrings: `--exact` keeps `fuzz_tar` from `fuzz_tar_gz`
        cmd.arg("--exact");
        crate::util::run_status(&mut cmd)?;
        for t in in_suite {
            let p = stats_dir.join(format!("{}.json", t.name));
            let text = std::fs::read_to_string(&p)
                .with_context(|| format!("the test of `{}` wrote no {}", t.name, p.display()))?;
            let v: serde_json::Value =
                serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
            rows.push(Row {
                target: t,
                kind: "seeded mutation",
                execs: v["execs"].as_u64().unwrap_or(0),
                seconds: v["seconds"].as_f64().unwrap_or(0.0),
                peak: v["peak_heap_bytes"].as_u64(),
                upstream: v["upstream_crashes"].as_u64().unwrap_or(0),
            });
        }
    }

    if coverage {
        let fuzz_dir = root.join("fuzz");
        step("coverage-guided: cargo +nightly fuzz build (libFuzzer, AddressSanitizer)");
        let names: Vec<&str> = chosen
            .iter()
            .filter(|t| t.coverage)
            .map(|t| t.name)
            .collect();
        if !names.is_empty() {
            let mut b = nightly_fuzz(&root);
            b.args(["build", "--target-dir", "target/fuzz"]);
            crate::util::run_status(&mut b).context(
                "building the fuzz targets (needs `rustup toolchain install nightly` and \
                 `cargo install cargo-fuzz`; `--no-coverage` skips this part)",
            )?;
        }
        for t in chosen.iter().filter(|t| t.coverage) {
            step(&format!("coverage-guided: {} for {seconds} s", t.name));
            let corpus = fuzz_dir.join("corpus").join(t.name);
            std::fs::create_dir_all(&corpus)?;
            let mut dirs = vec![corpus];
            for sub in ["seeds", "regressions"] {
                let d = fuzz_dir.join(sub).join(t.name);
                if d.is_dir() {
                    dirs.push(d);
                }
            }
            let mut cmd = nightly_fuzz(&root);
            cmd.args(["run", "--target-dir", "target/fuzz", t.name]);
            cmd.args(&dirs);
            cmd.args([
                "--",
                &format!("-max_total_time={seconds}"),
                "-timeout=20",
                "-rss_limit_mb=2560",
                "-malloc_limit_mb=1024",
                "-max_len=65536",
                "-print_final_stats=1",
            ]);
            let out = cmd
                .output()
                .with_context(|| format!("running cargo fuzz run {}", t.name))?;
            let log = String::from_utf8_lossy(&out.stderr).to_string();
            let log_path = root.join(format!("target/tmp/fuzz-{}.log", t.name));
            let _ = std::fs::write(&log_path, &log);
            if !out.status.success() {
                bail!(
                    "fuzz target {} failed ({}): a crash, leak, timeout or memory bound; its input \
                     is under fuzz/artifacts/{}/ and the log in {}:\n{}",
                    t.name,
                    out.status,
                    t.name,
                    log_path.display(),
                    tail(&log, 40)
                );
            }
            let stat = |k: &str| -> Option<f64> {
                log.lines()
                    .find_map(|l| l.strip_prefix(&format!("stat::{k}:")))
                    .and_then(|v| v.trim().parse().ok())
            };
            let execs = stat("number_of_executed_units").unwrap_or(0.0) as u64;
            let rss = stat("peak_rss_mb").map(|m| (m * 1048576.0) as u64);
            let secs = log
                .lines()
                .find_map(|l| {
                    let rest = l.strip_prefix("Done ")?;
                    let (_, r) = rest.split_once(" runs in ")?;
                    r.split_whitespace().next()?.parse::<f64>().ok()
                })
                .unwrap_or(seconds as f64);
            println!("{}: {execs} executions in {secs:.0} s", t.name);
            rows.push(Row {
                target: t,
                kind: "coverage-guided",
                execs,
                seconds: secs,
                peak: rss,
                upstream: 0,
            });
        }
    }

    rows.sort_by_key(|r| {
        (
            TARGETS.iter().position(|t| t.name == r.target.name),
            r.kind != "coverage-guided",
        )
    });
    let table = table(&root, &rows);
    println!("\n{table}");
    if !args.quick {
        let section = section(&table, seconds, coverage, t0.elapsed().as_secs_f64());
        let path = root.join("RELIABILITY.md");
        write_section(&path, &section)?;
        println!("wrote the Fuzzing section of {}", path.display());
    }
    println!(
        "xtask fuzz: {} target run(s), 0 crashes, in {:.0} s",
        rows.len(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `cargo +nightly fuzz` in the repository root, without the stable toolchain's variables
/// that `cargo xtask` runs under.
fn nightly_fuzz(root: &Path) -> Command {
    let mut c = Command::new("cargo");
    c.arg("+nightly")
        .arg("fuzz")
        .current_dir(root)
        // libtorch_cuda is not needed by any target (≈ 350 MB less resident per process)
        .env("CONTRAST_LINK_CUDA", "0")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("CARGO");
    c
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Regression inputs kept for a target (each broke the contract before its fix).
fn regressions(root: &Path, target: &str) -> usize {
    std::fs::read_dir(root.join("fuzz/regressions").join(target))
        .map(|rd| rd.filter_map(|e| e.ok()).count())
        .unwrap_or(0)
}

fn table(root: &Path, rows: &[Row]) -> String {
    let mut s = String::from(
        "| target | parser | kind | executions | time | crashes in this run | bugs found → fixed (below) | regression inputs | memory bound | peak |\n\
         |---|---|---|---:|---:|---:|---|---:|---|---:|\n",
    );
    for r in rows {
        let kept = regressions(root, r.target.name);
        let crashes = match r.upstream {
            0 => "0".to_string(),
            n => format!("0 ours, {n} inside {}", r.target.upstream),
        };
        let peak = match (r.peak, r.kind) {
            (Some(b), "coverage-guided") => format!("{:.0} MiB RSS", b as f64 / 1048576.0),
            (Some(b), _) => format!("{:.1} MiB heap", b as f64 / 1048576.0),
            (None, _) => "-".into(),
        };
        s.push_str(&format!(
            "| `{}` | {} | {} | {} | {:.0} s | {crashes} | {} | {kept} | {} | {peak} |\n",
            r.target.name,
            r.target.parser,
            r.kind,
            r.execs,
            r.seconds,
            r.target.bugs,
            r.target.memory
        ));
    }
    s
}

/// The marker after which `RELIABILITY.md` holds this section.
pub const MARKER: &str = "<!-- fuzzing -->";

/// The marker from which `RELIABILITY.md` holds figures measured by hand (the CLAIRES index
/// kills, the search server): neither this command nor `torture` rewrites them.
pub const HAND_MARKER: &str = "<!-- measured by hand -->";

fn section(table: &str, seconds: u64, coverage: bool, wall: f64) -> String {
    let date = Command::new("date")
        .arg("+%Y-%m-%d")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let how = if coverage {
        format!(
            "`cargo xtask fuzz --seconds {seconds}`: each coverage-guided target for {seconds} s \
             under libFuzzer with AddressSanitizer (`-rss_limit_mb=2560 -malloc_limit_mb=1024 \
             -timeout=20`), each target without one as a seeded mutation test for {seconds} s, \
             the others' seeded mutation tests as in the quick form"
        )
    } else {
        format!("`cargo xtask fuzz --no-coverage --seconds {seconds}`: the seeded mutation tests, {seconds} s per target")
    };
    let machine = crate::util::machine();
    format!(
        "{MARKER}\n\n## Fuzzing\n\n\
         Every parser the workspace owns or wraps, fed corrupt and hostile inputs. The contract \
         checked on every input: no panic, no hang (20 s per input), no allocation beyond the \
         stated bound, and an error that names the file. Produced by {how}; {date}, {machine}, \
         wall time {wall:.0} s. The CI form is \
         `cargo xtask fuzz --quick` (the seeded mutation tests: every seed and regression input \
         replayed, then 1,000 mutated inputs per target, 300 for the forked ones).\n\n\
         *Coverage-guided*: cargo-fuzz / libFuzzer targets in `fuzz/fuzz_targets/` (peak = the \
         process's RSS). *Seeded mutation*: ordinary tests that replay `fuzz/seeds/` and \
         `fuzz/regressions/`, then mutate them from a fixed seed (bit flips, interesting \
         integers, truncations, splices, random bytes), each input on its own thread under the \
         time bound, the Rust heap counted by a global allocator that refuses any single \
         allocation above 1 GiB (peak = the largest heap growth of one input; C and C++ \
         allocations of libtorch, libhdf5 and GDAL are not seen). The two targets behind \
         C libraries (`h5`: libhdf5, `geotiff`: GDAL) run each input in a forked child: a \
         crash inside the library (a signal) is counted in \"crashes\" as theirs and the input \
         kept under `target/tmp/fuzz-crashes/upstream-*`, while a panic, a hang or a heap \
         bound of ours still fails the run. The parsers behind C \
         libraries (libhdf5, GDAL) and the index loader (libtorch) have only the second kind; \
         the file formats GDAL and libhdf5 parse are theirs and out of scope, our code on top \
         of them is in. A crash of ours fails the run (the command stops, naming the input), so \
         a finished run has 0 of ours in every row; the bugs found earlier are numbered below, \
         and the \
         regression inputs (`fuzz/regressions/<target>/`) broke the contract before their fix \
         and are replayed by every run.\n\n{table}\n{}",
        std::fs::read_to_string(repo_root().join("fuzz/FINDINGS.md")).unwrap_or_default()
    )
}

/// Replace everything from [`MARKER`] on in `path` with `section` (appended when the file has
/// no marker; the file is created when missing).
fn write_section(path: &Path, section: &str) -> Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let hand = old.find(HAND_MARKER);
    let before_hand = &old[..hand.unwrap_or(old.len())];
    let head = match before_hand.find(MARKER) {
        Some(i) => before_hand[..i].to_string(),
        None if before_hand.is_empty() => String::new(),
        None => format!("{}\n\n", before_hand.trim_end()),
    };
    let tail = hand.map_or(String::new(), |i| format!("\n{}", &old[i..]));
    let text = format!("{head}{}\n{tail}", section.trim_end());
    let tmp: PathBuf = path.with_extension("md.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_replaces_everything_after_the_marker_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("RELIABILITY.md");
        std::fs::write(&p, "# Reliability\n\n| torture |\n").unwrap();
        write_section(&p, &format!("{MARKER}\n\n## Fuzzing\n\nfirst\n")).unwrap();
        write_section(&p, &format!("{MARKER}\n\n## Fuzzing\n\nsecond\n")).unwrap();
        let t = std::fs::read_to_string(&p).unwrap();
        // a section measured by hand after it stays
        std::fs::write(&p, format!("{t}\n{HAND_MARKER}\n\n## Server\n\nkept\n")).unwrap();
        write_section(&p, &format!("{MARKER}\n\n## Fuzzing\n\nthird\n")).unwrap();
        let t3 = std::fs::read_to_string(&p).unwrap();
        assert!(t3.contains("third") && !t3.contains("second"), "{t3}");
        assert!(
            t3.ends_with(&format!("{HAND_MARKER}\n\n## Server\n\nkept\n")),
            "{t3}"
        );
        assert!(
            t.starts_with("# Reliability\n\n| torture |\n\n<!-- fuzzing -->"),
            "{t}"
        );
        assert!(t.contains("second") && !t.contains("first"), "{t}");
        assert_eq!(t.matches(MARKER).count(), 1);
    }

    #[test]
    fn every_target_has_seeds_and_coverage_targets_have_a_fuzz_target() {
        let root = repo_root();
        for t in TARGETS {
            let seeds = root.join("fuzz/seeds").join(t.name);
            assert!(
                std::fs::read_dir(&seeds).is_ok_and(|mut d| d.next().is_some()),
                "no seeds in {}",
                seeds.display()
            );
            let bin = root.join(format!("fuzz/fuzz_targets/{}.rs", t.name));
            assert_eq!(bin.exists(), t.coverage, "{}", bin.display());
        }
    }
}

//! The seeded mutation runner of the workspace tests (included with `#[path]` into
//! `crates/contrast-core/tests/fuzz_inputs.rs`, `crates/claires/tests/fuzz_records.rs`,
//! `crates/grass/tests/fuzz_raster.rs` and `xtask/tests/fuzz_download.rs`), next to `harness.rs`:
//!
//! * replays the committed seeds (`fuzz/seeds/<target>/`) and regression inputs
//!   (`fuzz/regressions/<target>/`: every crash found so far), then runs deterministic mutations
//!   of them (fixed seed): 300 inputs in a plain `cargo test`, 1,000 in
//!   `cargo xtask fuzz --quick` (the CI form; a count, so the same inputs on every machine), or
//!   for a time with `CONTRAST_FUZZ_SECONDS[_<TARGET>]` (see `harness::budget`);
//! * runs each input on its own thread under a time bound (20 s);
//! * counts the Rust heap with a global allocator: a single allocation above [`HARD_CAP`] is
//!   refused (the process aborts, naming the size; the input being run is in
//!   `target/tmp/fuzz-crashes/<target>.current`), and each input's peak live heap is checked
//!   against the target's bound. C and C++ allocations (libtorch, libhdf5, GDAL) are not seen.
//!   Targets take a lock, so that the accounting is per input;
//! * writes `target/tmp/fuzz-stats/<target>.json` (read by `cargo xtask fuzz`) and saves a
//!   failing input under `target/tmp/fuzz-crashes/`.

#![allow(dead_code)]

use super::harness;
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// Counts live and peak bytes; refuses single allocations above [`HARD_CAP`].
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// No single Rust allocation made for a fuzzed input may exceed this (1 GiB).
pub const HARD_CAP: usize = 1 << 30;

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Relaxed) + by;
    PEAK.fetch_max(now, Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if l.size() > HARD_CAP {
            return std::ptr::null_mut();
        }
        let p = System.alloc(l);
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if l.size() > HARD_CAP {
            return std::ptr::null_mut();
        }
        let p = System.alloc_zeroed(l);
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l);
        LIVE.fetch_sub(l.size(), Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if new > HARD_CAP {
            return std::ptr::null_mut();
        }
        let q = System.realloc(p, l, new);
        if !q.is_null() {
            if new >= l.size() {
                grew(new - l.size());
            } else {
                LIVE.fetch_sub(l.size() - new, Relaxed);
            }
        }
        q
    }
}

/// The repository root: the first folder above this crate holding `fuzz/seeds`.
pub fn repo(manifest_dir: &str) -> PathBuf {
    let mut d = Path::new(manifest_dir).to_path_buf();
    while !d.join("fuzz/seeds").is_dir() {
        assert!(d.pop(), "no fuzz/seeds above {manifest_dir}");
    }
    d
}

/// `target/tmp` of the repository (statistics and crash inputs).
pub fn tmp_dir(repo: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("target"))
        .join("tmp")
}

/// Seeds then regression inputs of `target`.
pub fn inputs(repo: &Path, target: &str) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    for sub in ["fuzz/seeds", "fuzz/regressions"] {
        for f in harness::files_under(&repo.join(sub).join(target)) {
            v.push(std::fs::read(&f).unwrap());
        }
    }
    v
}

static ONE: Mutex<()> = Mutex::new(());

/// Holds off every other fuzz run of this test binary. A binary that calls [`run_isolated`]
/// must take it in each of its other tests too: `fork()` copies only the forking thread, so a
/// lock held at that moment by another test's thread inside libhdf5 or GDAL is never released
/// in the child, which then hangs on its first call into the library (seen: a GeoTIFF input
/// "took more than 20 s" only when the regression tests ran beside the mutation run).
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}
/// The check being run and the file holding the input being run.
type Current = Option<(fn(&[u8]), PathBuf)>;
static CURRENT: Mutex<Current> = Mutex::new(None);

/// Runs the current check on one input, measuring the input's heap peak above what was live.
fn measured(d: &[u8]) {
    let (check, current) = CURRENT.lock().unwrap().clone().expect("a check is set");
    let _ = std::fs::write(&current, d);
    let before = LIVE.load(Relaxed);
    PEAK.store(before, Relaxed);
    check(d);
    let peak = PEAK.load(Relaxed).saturating_sub(before);
    harness::report_peak(peak as u64);
}

/// Replay + mutate `target` with `check`: panics on a crash, a hang or a heap peak above
/// `heap_bound` bytes.
pub fn run(
    manifest_dir: &str,
    target: &str,
    check: fn(&[u8]),
    seed: u64,
    max_len: usize,
    heap_bound: usize,
) {
    run_with(
        manifest_dir,
        target,
        check,
        seed,
        max_len,
        heap_bound,
        false,
    )
}

/// [`run`] with every input in a forked child: for checks that reach a C or C++ parser
/// (libhdf5, GDAL), whose crashes are counted and saved as upstream crashes instead of ending
/// the run. A panic, a hang or a heap peak above the bound still fails.
pub fn run_isolated(
    manifest_dir: &str,
    target: &str,
    check: fn(&[u8]),
    seed: u64,
    max_len: usize,
    heap_bound: usize,
) {
    run_with(manifest_dir, target, check, seed, max_len, heap_bound, true)
}

fn run_with(
    manifest_dir: &str,
    target: &str,
    check: fn(&[u8]),
    seed: u64,
    max_len: usize,
    heap_bound: usize,
    isolate: bool,
) {
    let _one = serial();
    let repo = repo(manifest_dir);
    let seeds = inputs(&repo, target);
    assert!(!seeds.is_empty(), "no seeds for {target} in fuzz/seeds");
    let (time, execs) = harness::budget(target, 300);
    let tmp = tmp_dir(&repo);
    let crashes = tmp.join("fuzz-crashes");
    std::fs::create_dir_all(&crashes).unwrap();
    let current = crashes.join(format!("{target}.current"));
    *CURRENT.lock().unwrap() = Some((check, current.clone()));
    harness::PEAK_REPORT.store(0, Relaxed);
    let spec = harness::RunSpec {
        target,
        seed,
        max_len,
        time,
        max_execs: execs,
        bound: Duration::from_secs(20),
        crash_dir: &crashes,
        isolate,
    };
    let r = harness::mutation_run(&spec, &seeds, measured);
    let worst = harness::PEAK_REPORT.load(Relaxed) as usize;
    let stats = match r {
        Ok(stats) => stats,
        Err(failures) => panic!("{target}: {}", failures.join("\n")),
    };
    let _ = std::fs::remove_file(&current);
    let line = stats.json(
        "seeded mutation",
        &[
            ("peak_heap_bytes", worst.to_string()),
            ("heap_bound_bytes", heap_bound.to_string()),
            ("replayed", seeds.len().to_string()),
        ],
    );
    let dir = tmp.join("fuzz-stats");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{target}.json")), &line).unwrap();
    eprintln!("{line}");
    assert!(
        worst <= heap_bound,
        "{target}: an input peaked at {worst} bytes of heap, bound {heap_bound}"
    );
}

//! The fuzzing harness shared by the coverage-guided targets (`fuzz/fuzz_targets`, cargo-fuzz /
//! libFuzzer) and the seeded mutation tests in the workspace, which include this file with
//! `#[path]`: scratch files, the "error names the file" oracle, a deterministic mutator and a
//! loop that runs every input on its own thread under a time bound.
//!
//! Only `std` and `anyhow` are used, so that every includer compiles it as is.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A scratch folder for one process (tmpfs when there is one), removed on drop.
pub struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    /// `contrast-fuzz-<tag>-<pid>-<n>` under `/dev/shm` (or the temp dir).
    pub fn new(tag: &str) -> Scratch {
        static N: AtomicU64 = AtomicU64::new(0);
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!(
            "contrast-fuzz-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the fuzz scratch folder");
        Scratch { dir }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Write `data` to `<scratch>/<name>` (parents created) and return the path.
    pub fn file(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.dir.join(name);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).expect("creating a scratch folder");
        }
        std::fs::write(&p, data).expect("writing a scratch file");
        p
    }

    /// An empty folder `<scratch>/<name>` (emptied first when it exists).
    pub fn fresh_dir(&self, name: &str) -> PathBuf {
        let p = self.dir.join(name);
        if p.exists() || p.symlink_metadata().is_ok() {
            let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
        }
        std::fs::create_dir_all(&p).expect("creating a scratch folder");
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The oracle for errors: the whole chain (`{:#}`) names `path`.
pub fn assert_names(err: &anyhow::Error, path: &Path) {
    let msg = format!("{err:#}");
    let want = path.display().to_string();
    assert!(
        msg.contains(&want),
        "the error does not name the file {want}: {msg}"
    );
}

/// A small deterministic PRNG (SplitMix64): the mutation tests need no `rand` dependency and give
/// the same inputs on every machine.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

const INTERESTING: [u64; 12] = [
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    0x8000_0000,
    u64::MAX,
    0x4000_0000,
];

/// Seeded mutations of seed inputs: bit flips, interesting bytes and integers (both byte
/// orders), truncations, random tails, chunk duplication and deletion, splices of two seeds,
/// and wholly random inputs.
pub struct Mutator {
    pub rng: Rng,
    /// Inputs are kept at most this long.
    pub max_len: usize,
}

impl Mutator {
    pub fn new(seed: u64, max_len: usize) -> Mutator {
        Mutator {
            rng: Rng::new(seed),
            max_len,
        }
    }

    /// One mutated input from `seeds` (1 to 4 stacked mutations of a randomly chosen seed).
    pub fn mutate(&mut self, seeds: &[Vec<u8>]) -> Vec<u8> {
        let r = &mut self.rng;
        if seeds.is_empty() || r.chance(50) {
            let n = r.below(self.max_len.min(4096) + 1);
            return (0..n).map(|_| r.next_u64() as u8).collect();
        }
        let mut d = seeds[r.below(seeds.len())].clone();
        let rounds = 1 + r.below(4);
        for _ in 0..rounds {
            match r.below(10) {
                0 | 1 if !d.is_empty() => {
                    // flip 1..8 bits
                    for _ in 0..1 + r.below(8) {
                        let i = r.below(d.len());
                        d[i] ^= 1 << r.below(8);
                    }
                }
                2 if !d.is_empty() => {
                    let i = r.below(d.len());
                    d[i] = INTERESTING[r.below(INTERESTING.len())] as u8;
                }
                3 if d.len() >= 8 => {
                    // an interesting 2/4/8-byte integer, little or big endian
                    let w = [2, 4, 8][r.below(3)];
                    let i = r.below(d.len() - w + 1);
                    let v = INTERESTING[r.below(INTERESTING.len())];
                    let bytes = if r.chance(2) {
                        v.to_le_bytes()
                    } else {
                        v.to_be_bytes()
                    };
                    let src = if r.chance(2) {
                        &bytes[..w]
                    } else {
                        &bytes[8 - w..]
                    };
                    d[i..i + w].copy_from_slice(src);
                }
                4 if !d.is_empty() => {
                    // truncate
                    let n = r.below(d.len());
                    d.truncate(n);
                }
                5 => {
                    // random tail
                    let n = 1 + r.below(64);
                    d.extend((0..n).map(|_| r.next_u64() as u8));
                }
                6 if d.len() > 2 => {
                    // duplicate a chunk in place
                    let a = r.below(d.len());
                    let n = 1 + r.below((d.len() - a).min(256));
                    let chunk = d[a..a + n].to_vec();
                    let at = r.below(d.len());
                    d.splice(at..at, chunk);
                }
                7 if d.len() > 2 => {
                    // delete a chunk
                    let a = r.below(d.len());
                    let n = 1 + r.below((d.len() - a).min(256));
                    d.drain(a..a + n);
                }
                8 if seeds.len() > 1 && !d.is_empty() => {
                    // splice: our head, another seed's tail
                    let o = &seeds[r.below(seeds.len())];
                    if !o.is_empty() {
                        let cut = r.below(d.len());
                        let from = r.below(o.len());
                        d.truncate(cut);
                        d.extend_from_slice(&o[from..]);
                    }
                }
                _ if !d.is_empty() => {
                    // overwrite a short run with random bytes
                    let i = r.below(d.len());
                    let n = 1 + r.below((d.len() - i).min(16));
                    for b in &mut d[i..i + n] {
                        *b = r.next_u64() as u8;
                    }
                }
                _ => d.push(r.next_u64() as u8),
            }
        }
        d.truncate(self.max_len);
        d
    }
}

/// What a mutation run did.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub target: String,
    pub execs: u64,
    pub seconds: f64,
    /// The slowest single input.
    pub max_input_seconds: f64,
    /// Inputs that crashed a C or C++ library in an isolated run (by signal).
    pub upstream_crashes: u64,
}

impl Stats {
    /// One JSON object (no serde: the includers do not all have it).
    pub fn json(&self, kind: &str, extra: &[(&str, String)]) -> String {
        let mut s = format!(
            "{{\"target\":\"{}\",\"kind\":\"{kind}\",\"execs\":{},\"seconds\":{:.3},\"max_input_seconds\":{:.4},\"upstream_crashes\":{}",
            self.target, self.execs, self.seconds, self.max_input_seconds, self.upstream_crashes
        );
        for (k, v) in extra {
            s.push_str(&format!(",\"{k}\":{v}"));
        }
        s.push('}');
        s
    }
}

/// Run `check` on one input on its own thread; a panic or an input slower than `bound` is
/// a failure: the input is saved under `crash_dir` and the returned message says where.
pub fn run_one(
    target: &str,
    input: &[u8],
    bound: Duration,
    crash_dir: &Path,
    check: fn(&[u8]),
) -> Result<Duration, String> {
    let data = input.to_vec();
    let (tx, rx) = std::sync::mpsc::channel();
    let t0 = Instant::now();
    let handle = std::thread::Builder::new()
        .name(format!("fuzz-{target}"))
        .stack_size(64 << 20)
        .spawn(move || {
            let r = std::panic::catch_unwind(|| check(&data));
            let _ = tx.send(r.err().map(|e| {
                e.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into())
            }));
        })
        .expect("spawning a fuzz thread");
    let outcome = match rx.recv_timeout(bound) {
        Ok(None) => {
            let _ = handle.join();
            return Ok(t0.elapsed());
        }
        Ok(Some(msg)) => {
            let _ = handle.join();
            format!("panicked: {msg}")
        }
        // the thread is left running: the caller fails the test, which ends the process
        Err(_) => format!("took more than {:.1} s (hang?)", bound.as_secs_f64()),
    };
    let _ = std::fs::create_dir_all(crash_dir);
    let name = format!("{target}-{:016x}", fnv1a(input));
    let saved = crash_dir.join(&name);
    let _ = std::fs::write(&saved, input);
    Err(format!(
        "{target}: an input of {} bytes {outcome}; saved as {}",
        input.len(),
        saved.display()
    ))
}

/// The largest value a check reported through [`report_peak`] (the runner's heap peak of one
/// input); forked children send theirs back to the parent.
pub static PEAK_REPORT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Record a per-input measurement (kept: the maximum).
pub fn report_peak(v: u64) {
    PEAK_REPORT.fetch_max(v, Ordering::Relaxed);
}

/// How an input run in a child process ended.
pub enum Isolated {
    /// The check returned (the child's reported peak, the time).
    Ok(u64, Duration),
    /// The check failed (panic, or the time bound): a bug in our code. The message says how.
    Failed(String),
    /// The child died of a signal (a crash inside a C or C++ library: libhdf5, GDAL).
    Signal(i32),
}

#[cfg(target_os = "linux")]
mod sys {
    extern "C" {
        pub fn fork() -> i32;
        pub fn waitpid(pid: i32, status: *mut i32, options: i32) -> i32;
        pub fn _exit(code: i32) -> !;
        pub fn kill(pid: i32, sig: i32) -> i32;
        pub fn pipe(fds: *mut i32) -> i32;
        pub fn read(fd: i32, buf: *mut u8, n: usize) -> isize;
        pub fn write(fd: i32, buf: *const u8, n: usize) -> isize;
        pub fn close(fd: i32) -> i32;
    }
    pub const WNOHANG: i32 = 1;
    pub const SIGKILL: i32 = 9;
}

/// Run `check` on one input in a forked child (Linux), so that a crash inside a C library ends
/// the child only. The child reports [`PEAK_REPORT`] back through a pipe; the parent waits at
/// most `bound` (then kills it).
#[cfg(target_os = "linux")]
pub fn run_forked(input: &[u8], bound: Duration, check: fn(&[u8])) -> Isolated {
    use sys::*;
    let mut fds = [0i32; 2];
    // SAFETY: plain POSIX calls; the child only runs `check`, writes 8 bytes and `_exit`s
    // (no destructors, no atexit handlers).
    unsafe {
        if pipe(fds.as_mut_ptr()) != 0 {
            return Isolated::Failed("pipe() failed".into());
        }
        let t0 = Instant::now();
        let pid = fork();
        if pid < 0 {
            close(fds[0]);
            close(fds[1]);
            return Isolated::Failed("fork() failed".into());
        }
        if pid == 0 {
            close(fds[0]);
            PEAK_REPORT.store(0, Ordering::Relaxed);
            let ok = std::panic::catch_unwind(|| check(input)).is_ok();
            let v = PEAK_REPORT.load(Ordering::Relaxed).to_le_bytes();
            write(fds[1], v.as_ptr(), 8);
            _exit(if ok { 0 } else { 101 });
        }
        close(fds[1]);
        let mut status = 0i32;
        let done = loop {
            let r = waitpid(pid, &mut status, WNOHANG);
            if r == pid {
                break true;
            }
            if t0.elapsed() > bound {
                kill(pid, SIGKILL);
                waitpid(pid, &mut status, 0);
                break false;
            }
            std::thread::sleep(Duration::from_micros(200));
        };
        let mut buf = [0u8; 8];
        let got = read(fds[0], buf.as_mut_ptr(), 8);
        close(fds[0]);
        let elapsed = t0.elapsed();
        if !done {
            return Isolated::Failed(format!(
                "took more than {:.1} s (hang?)",
                bound.as_secs_f64()
            ));
        }
        let sig = status & 0x7f;
        if sig != 0 {
            return Isolated::Signal(sig);
        }
        match (status >> 8) & 0xff {
            0 if got == 8 => Isolated::Ok(u64::from_le_bytes(buf), elapsed),
            code => Isolated::Failed(format!(
                "panicked in the child (exit status {code}; its message is above)"
            )),
        }
    }
}

/// FNV-1a, to name saved inputs.
pub fn fnv1a(d: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in d {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Every regular file under `dir` (recursively), sorted; none when it is absent.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() => out.push(p),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// How long and how hard a mutation run of `target` goes, as `(time, inputs)`:
/// * `CONTRAST_FUZZ_SECONDS_<TARGET>` (upper case): that many seconds, inputs unbounded;
/// * else `CONTRAST_FUZZ_SECONDS`: that many seconds, at most `CONTRAST_FUZZ_EXECS` inputs;
/// * else a fixed count, `CONTRAST_FUZZ_EXECS_<TARGET>`, `CONTRAST_FUZZ_EXECS` or
///   `default_execs` mutated inputs (the same inputs on every machine, so that a plain test run
///   is deterministic), stopped after 120 s on a very slow machine.
pub fn budget(target: &str, default_execs: u64) -> (Duration, u64) {
    let num = |k: &str| {
        std::env::var(k)
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
    };
    let upper = target.to_ascii_uppercase();
    let execs = num("CONTRAST_FUZZ_EXECS").map(|n| n as u64);
    if let Some(secs) = num(&format!("CONTRAST_FUZZ_SECONDS_{upper}")) {
        return (Duration::from_secs_f64(secs), u64::MAX);
    }
    if let Some(secs) = num("CONTRAST_FUZZ_SECONDS") {
        return (Duration::from_secs_f64(secs), execs.unwrap_or(u64::MAX));
    }
    let own = num(&format!("CONTRAST_FUZZ_EXECS_{upper}")).map(|n| n as u64);
    (
        Duration::from_secs(120),
        own.or(execs).unwrap_or(default_execs),
    )
}

/// The settings of one mutation run.
pub struct RunSpec<'a> {
    pub target: &'a str,
    /// The mutator's seed.
    pub seed: u64,
    /// Longest mutated input.
    pub max_len: usize,
    /// Time for the mutations (the replay of the seeds always runs to the end).
    pub time: Duration,
    /// Most mutated inputs (the replayed seeds not counted).
    pub max_execs: u64,
    /// Time bound of one input.
    pub bound: Duration,
    /// Where failing inputs are saved.
    pub crash_dir: &'a Path,
    /// Run each input in a forked child ([`run_forked`]): for checks that reach C or C++
    /// parsers, whose crashes (signals) are counted as upstream crashes and saved as
    /// `upstream-<target>-<hash>`, the run going on.
    pub isolate: bool,
}

/// Replay `seeds` (seeds, regression files), then mutate them for `spec.time` (at most
/// `spec.max_execs` inputs), each input under `spec.bound`. Returns the statistics, or every
/// failure found.
pub fn mutation_run(
    spec: &RunSpec,
    seeds: &[Vec<u8>],
    check: fn(&[u8]),
) -> Result<Stats, Vec<String>> {
    let RunSpec {
        target,
        seed,
        max_len,
        time,
        max_execs,
        bound,
        crash_dir,
        isolate,
    } = *spec;
    let t0 = Instant::now();
    let mut stats = Stats {
        target: target.into(),
        ..Stats::default()
    };
    let mut failures: Vec<String> = Vec::new();
    let mut m = Mutator::new(seed, max_len);
    let mut i = 0usize;
    loop {
        let input = if i < seeds.len() {
            seeds[i].clone()
        } else if t0.elapsed() < time && ((i - seeds.len()) as u64) < max_execs {
            m.mutate(seeds)
        } else {
            break;
        };
        i += 1;
        stats.execs += 1;
        if isolate {
            #[cfg(target_os = "linux")]
            match run_forked(&input, bound, check) {
                Isolated::Ok(peak, d) => {
                    report_peak(peak);
                    stats.max_input_seconds = stats.max_input_seconds.max(d.as_secs_f64());
                }
                Isolated::Signal(sig) => {
                    stats.upstream_crashes += 1;
                    let _ = std::fs::create_dir_all(crash_dir);
                    let saved = crash_dir.join(format!("upstream-{target}-{:016x}", fnv1a(&input)));
                    let _ = std::fs::write(&saved, &input);
                    eprintln!(
                        "{target}: signal {sig} inside a C/C++ library on an input of {} bytes \
                         (saved as {}); counted as an upstream crash",
                        input.len(),
                        saved.display()
                    );
                }
                Isolated::Failed(how) => {
                    let saved = crash_dir.join(format!("{target}-{:016x}", fnv1a(&input)));
                    let _ = std::fs::create_dir_all(crash_dir);
                    let _ = std::fs::write(&saved, &input);
                    failures.push(format!(
                        "{target}: an input of {} bytes {how}; saved as {}",
                        input.len(),
                        saved.display()
                    ));
                    if failures.len() >= 5 || how.contains("hang?") {
                        break;
                    }
                }
            }
            continue;
        }
        match run_one(target, &input, bound, crash_dir, check) {
            Ok(d) => stats.max_input_seconds = stats.max_input_seconds.max(d.as_secs_f64()),
            Err(e) => {
                let hang = e.contains("hang?");
                failures.push(e);
                if hang || failures.len() >= 5 {
                    break;
                }
            }
        }
    }
    stats.seconds = t0.elapsed().as_secs_f64();
    if failures.is_empty() {
        Ok(stats)
    } else {
        Err(failures)
    }
}

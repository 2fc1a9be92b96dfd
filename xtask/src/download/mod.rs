//! `cargo xtask download <name>`: fetch a data set described by a manifest in `datasets/`.
//!
//! A manifest (`datasets/<name>.toml`, format in `datasets/README.md`) lists the files of a data
//! set with their official URLs (mirrors after the first), byte sizes and the checksum the
//! official source publishes, plus the paths that must exist once everything is in place (the
//! layout check). This module
//!
//! 1. resolves the data root: `--data-dir` (alias `--dir`), else `$CONTRAST_DATA`, else
//!    `datasets/` in the repository; a data set lands in `<root>/<name>/`;
//! 2. downloads each file into `<root>/<name>/.contrast-download/<file>.part` with HTTP Range
//!    requests: an interrupted transfer resumes where it stopped (also across runs), a server that
//!    ignores `Range` restarts from zero, transient failures are retried a bounded number of times,
//!    and every URL of the file is tried in order;
//! 3. verifies the checksum while the bytes stream in (md5 or sha256, as the manifest says); on a
//!    mismatch the partial file is deleted and the error names the file, the URL and both sums;
//! 4. extracts archives (tar, tar.gz, zip) into `<root>/<name>/` (entries that would escape it are
//!    refused), or moves plain files to their place;
//! 5. runs the layout check and writes `<root>/<name>/.verified`. A later run that finds that
//!    marker (for the same files and checksums) and a passing layout check does nothing.
//!
//! Manual data sets (ImageNet, ISPRS Potsdam: registration required) print their instructions
//! and run the layout check only.
//!
//! Layout of this module: `manifest` (the TOML format and its validation), `fetch` (HTTP with
//! resume, retries and streaming checksums), `extract` (tar, tar.gz, zip); this file holds the
//! command, the orchestration ([`ensure`]), the layout check, the lock and the progress display.

mod extract;
mod fetch;
pub mod manifest;

pub use extract::extract;
#[cfg(test)]
use fetch::judge;
use fetch::{fetch, verify_file};
#[cfg(test)]
pub use manifest::encode_path;
use manifest::known_names;
pub use manifest::{manifest_paths, Checksum, Extract, FileEntry, Manifest};

use crate::util::repo_root;
use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Name of the marker written once a data set is downloaded, verified and laid out.
pub const VERIFIED_MARKER: &str = ".verified";
/// Folder (inside a data set's folder) for partial downloads, archives and per-file markers.
pub const STAGING_DIR: &str = ".contrast-download";

#[derive(Args, Clone, Debug, Default)]
pub struct DownloadArgs {
    /// The data set to fetch: a manifest name in `datasets/` (see `--list`).
    pub name: Option<String>,
    /// List the known data sets, their size and whether they are present.
    #[arg(long)]
    pub list: bool,
    /// Data root (default: $CONTRAST_DATA, else `datasets/` in the repository).
    #[arg(long = "data-dir", visible_alias = "dir", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Use this manifest file instead of `datasets/<name>.toml` (e.g. a private mirror's).
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// Base URL tried before the manifest's URLs, as `<BASE>/<name>/<file path>`
    /// (default: $CONTRAST_MIRROR).
    #[arg(long, value_name = "BASE_URL")]
    pub mirror: Option<String>,
    /// How many times a failed or cut transfer is retried (per URL) before giving up.
    #[arg(long, default_value_t = 5)]
    pub retries: u32,
    /// Keep the downloaded archives after extraction (they are deleted by default).
    #[arg(long)]
    pub keep_archives: bool,
    /// Ignore the `.verified` marker: re-hash plain files in place, fetch archives again.
    #[arg(long)]
    pub force: bool,
}

/// Entry point of `cargo xtask download`.
pub fn download(args: &DownloadArgs) -> Result<()> {
    if args.list {
        return list(&manifest_dir(), &data_root(args.data_dir.as_deref()));
    }
    let mut opts = Options::from_env();
    opts.retries = args.retries;
    opts.keep_archives = args.keep_archives;
    opts.force = args.force;
    if let Some(m) = args.mirror.clone().filter(|m| !m.trim().is_empty()) {
        opts.mirror = Some(m);
    }
    match (&args.manifest, &args.name) {
        (Some(path), name) => {
            let m = Manifest::load(path)?;
            if let Some(n) = name.as_deref().filter(|n| *n != m.name) {
                bail!(
                    "--manifest {} describes `{}`, not `{n}`",
                    path.display(),
                    m.name
                );
            }
            ensure(&m, &data_root(args.data_dir.as_deref()), &opts).map(|_| ())
        }
        (None, Some(name)) => ensure_named(name, args.data_dir.as_deref(), &opts).map(|_| ()),
        (None, None) => bail!(
            "name a data set (`cargo xtask download cifar10`) or pass --list; known: {}",
            known_names(&manifest_dir()).join(", ")
        ),
    }
}

/// Make sure the shipped data set `name` is present, verified and laid out under the data root
/// (`data_dir`, else `$CONTRAST_DATA`, else `datasets/`), fetching it if needed; returns its
/// folder. Takes milliseconds when it is already verified. Other commands (e.g. `reproduce`)
/// call it with `Options::from_env()`.
pub fn ensure_named(name: &str, data_dir: Option<&Path>, opts: &Options) -> Result<PathBuf> {
    let m = Manifest::named(name)?;
    let root = data_root(data_dir);
    ensure(&m, &root, opts)?;
    Ok(root.join(&m.name))
}

/// The data root: `flag`, else `$CONTRAST_DATA`, else `datasets/` in the repository.
pub fn data_root(flag: Option<&Path>) -> PathBuf {
    if let Some(d) = flag {
        return d.to_path_buf();
    }
    if let Some(d) = std::env::var_os("CONTRAST_DATA").filter(|v| !v.is_empty()) {
        return PathBuf::from(d);
    }
    repo_root().join("datasets")
}

/// The folder holding the manifests (`datasets/` in the repository).
pub fn manifest_dir() -> PathBuf {
    repo_root().join("datasets")
}

fn list(dir: &Path, root: &Path) -> Result<()> {
    println!("data root: {}\n", root.display());
    println!(
        "{:<14} {:<10} {:>10}  {:<16} title",
        "name", "kind", "size", "status"
    );
    for path in manifest_paths(dir)? {
        let m = Manifest::load(&path)?;
        let kind = if m.manual { "manual" } else { "download" };
        let size = m
            .total_size()
            .filter(|_| !m.manual)
            .map(human_bytes)
            .unwrap_or_else(|| "-".into());
        let ds = root.join(&m.name);
        let status = if !m.manual && is_verified(&m, &ds) {
            "verified"
        } else if missing_paths(&ds, &m.required_paths()).is_empty() {
            "layout ok"
        } else if ds.exists() {
            "incomplete"
        } else {
            "absent"
        };
        println!(
            "{:<14} {:<10} {:>10}  {:<16} {}",
            m.name, kind, size, status, m.title
        );
    }
    Ok(())
}

/// Knobs of [`ensure`].
#[derive(Clone, Debug)]
pub struct Options {
    /// Retries per URL after a failed or cut transfer.
    pub retries: u32,
    /// Wait before retry `k` is `k × retry_delay`.
    pub retry_delay: Duration,
    /// Keep archives after extraction.
    pub keep_archives: bool,
    /// Base URL tried first (see [`Manifest::urls_for`]).
    pub mirror: Option<String>,
    /// Show progress (a bar on a terminal, periodic lines otherwise).
    pub progress: bool,
    /// Ignore the `.verified` marker (check everything again).
    pub force: bool,
}

impl Options {
    /// The defaults, with the mirror from `$CONTRAST_MIRROR` when set.
    pub fn from_env() -> Options {
        Options {
            mirror: std::env::var("CONTRAST_MIRROR")
                .ok()
                .filter(|m| !m.trim().is_empty()),
            ..Options::default()
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            retries: 5,
            retry_delay: Duration::from_secs(2),
            keep_archives: false,
            mirror: None,
            progress: true,
            force: false,
        }
    }
}

/// What [`ensure`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The `.verified` marker matched and the layout check passed: nothing was fetched.
    AlreadyVerified,
    /// Files were fetched (`fetched` of them, `bytes` transferred in this run) and verified.
    Downloaded { fetched: usize, bytes: u64 },
    /// A manual data set whose layout check passed.
    ManualPresent,
}

/// Make sure the data set of `m` is present, verified and laid out under `root/<name>/`.
pub fn ensure(m: &Manifest, root: &Path, opts: &Options) -> Result<Outcome> {
    let t0 = Instant::now();
    let dir = root.join(&m.name);
    if m.manual {
        return ensure_manual(m, &dir);
    }
    if !opts.force && is_verified(m, &dir) {
        println!(
            "{}: already downloaded and verified in {} (marker {VERIFIED_MARKER}, layout ok); \
             nothing to do [{:.2} s]",
            m.name,
            dir.display(),
            t0.elapsed().as_secs_f64()
        );
        return Ok(Outcome::AlreadyVerified);
    }
    let staging = dir.join(STAGING_DIR);
    fs::create_dir_all(&staging)
        .with_context(|| format!("cannot create the download folder {}", staging.display()))?;
    let _lock = DownloadLock::acquire(&staging.join("lock"), &m.name)?;
    // A stale marker must not survive a failed run.
    let marker = dir.join(VERIFIED_MARKER);
    if marker.exists() {
        fs::remove_file(&marker).with_context(|| format!("cannot remove {}", marker.display()))?;
    }

    println!("{}: {} -> {}", m.name, m.title, dir.display());
    println!("licence: {}", m.license);
    if let Some(notes) = &m.notes {
        println!("note: {}", notes.trim());
    }
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(30))
        .timeout_read(Duration::from_secs(60))
        .user_agent(concat!("contrast-xtask/", env!("CARGO_PKG_VERSION")))
        .build();
    let bar = Progress::new(m.total_size(), opts.progress);
    let (mut fetched, mut bytes) = (0usize, 0u64);
    for f in &m.files {
        let flat = f.path.replace('/', "__");
        let done_marker = staging.join(format!("{flat}.done"));
        let want = f.checksum();
        // Plain files are checked in place; archives extracted earlier in an interrupted run
        // have a per-file marker (removed once the whole data set is verified).
        let in_place = f.extract == Extract::None && placed_ok(f, &dir.join(&f.path));
        if in_place || fs::read_to_string(&done_marker).is_ok_and(|s| s.trim() == want.to_string())
        {
            bar.inc(f.size.unwrap_or(0));
            continue;
        }
        let target = staging.join(&flat);
        let mut have_file = false;
        if target.exists() {
            // Complete and verified in an earlier run that stopped before extraction.
            match verify_file(&target, &want) {
                Ok(()) => have_file = true,
                Err(e) => {
                    eprintln!("{}: {e:#}; fetching it again", f.path);
                    fs::remove_file(&target)
                        .with_context(|| format!("cannot remove {}", target.display()))?;
                }
            }
        }
        if !have_file {
            bar.set_message(f.path.clone());
            let urls = m.urls_for(f, opts.mirror.as_deref());
            bytes += fetch(&agent, &urls, f, &target, opts, &bar)?;
            fetched += 1;
        } else {
            bar.inc(f.size.unwrap_or(0));
        }
        place(f, &target, &dir, opts.keep_archives, &bar)?;
        fs::write(&done_marker, want.to_string())
            .with_context(|| format!("cannot write {}", done_marker.display()))?;
    }
    bar.finish_and_clear();

    let missing = missing_paths(&dir, &m.required_paths());
    if !missing.is_empty() {
        // Forget what was extracted, so that the next run extracts (or fetches) it again
        // instead of trusting markers that led here.
        for f in &m.files {
            let _ = fs::remove_file(staging.join(format!("{}.done", f.path.replace('/', "__"))));
        }
        bail!(
            "{}: layout check failed in {}: {} of {} expected paths are missing: {} (the next \
             run starts the archives over; if this repeats, the manifest's layout is wrong)",
            m.name,
            dir.display(),
            missing.len(),
            m.required_paths().len(),
            preview(&missing)
        );
    }
    fs::write(&marker, format!("{}\n", m.fingerprint()))
        .with_context(|| format!("cannot write {}", marker.display()))?;
    // The per-file markers only serve an interrupted run; `.verified` takes over now.
    if opts.keep_archives {
        for f in &m.files {
            let _ = fs::remove_file(staging.join(format!("{}.done", f.path.replace('/', "__"))));
        }
    } else {
        drop(_lock);
        fs::remove_dir_all(&staging)
            .with_context(|| format!("cannot remove {}", staging.display()))?;
    }
    println!(
        "{}: fetched {fetched} file(s), {}, verified, layout ok [{:.1} s]",
        m.name,
        human_bytes(bytes),
        t0.elapsed().as_secs_f64()
    );
    Ok(Outcome::Downloaded { fetched, bytes })
}

fn ensure_manual(m: &Manifest, dir: &Path) -> Result<Outcome> {
    let missing = missing_paths(dir, &m.required_paths());
    if missing.is_empty() {
        println!(
            "{}: found in {} (layout ok; manual data set, checked by layout only)",
            m.name,
            dir.display()
        );
        return Ok(Outcome::ManualPresent);
    }
    println!("{} ({})\n", m.title, m.homepage);
    println!("licence: {}\n", m.license);
    if let Some(notes) = &m.notes {
        println!("note: {}\n", notes.trim());
    }
    println!("{}", m.instructions.as_deref().unwrap_or_default().trim());
    println!("\nPut it in {} so that these paths exist:", dir.display());
    for p in &m.layout.paths {
        println!("    {p}");
    }
    bail!(
        "{} must be obtained by hand (see above); layout check failed in {}: missing {}",
        m.name,
        dir.display(),
        preview(&missing)
    )
}

/// Keeps two downloads of the same data set from writing the same files: a lock file holding the
/// owner's process id, removed when the guard drops. A lock left by a process that no longer
/// runs (Ctrl-C, a crash) is taken over, as far as `/proc` can tell.
struct DownloadLock {
    path: PathBuf,
}

impl DownloadLock {
    fn acquire(path: &Path, name: &str) -> Result<DownloadLock> {
        for _ in 0..2 {
            match OpenOptions::new().write(true).create_new(true).open(path) {
                Ok(mut f) => {
                    write!(f, "{}", std::process::id())
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    return Ok(DownloadLock {
                        path: path.to_path_buf(),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let owner = fs::read_to_string(path).unwrap_or_default();
                    let pid = owner.trim().parse::<u32>().ok();
                    let alive = match pid {
                        Some(pid) if Path::new("/proc/self").exists() => {
                            Path::new(&format!("/proc/{pid}")).exists()
                        }
                        Some(_) => true, // no /proc: cannot tell, assume it runs
                        None => false,   // unreadable or empty: a torn write, stale
                    };
                    if alive {
                        bail!(
                            "another download of {name} is running (process {}); wait for it, or \
                             delete {} if that is wrong",
                            owner.trim(),
                            path.display()
                        );
                    }
                    eprintln!(
                        "{name}: taking over the lock {} left by process {} (no longer running)",
                        path.display(),
                        owner.trim()
                    );
                    fs::remove_file(path).with_context(|| {
                        format!("cannot remove the stale lock {}", path.display())
                    })?;
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot create {}", path.display()))
                }
            }
        }
        bail!("could not take the lock {}", path.display())
    }
}

impl Drop for DownloadLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// A plain file already at its place, with the right checksum (or, when no checksum is known,
/// the right size).
fn placed_ok(f: &FileEntry, dest: &Path) -> bool {
    match fs::metadata(dest) {
        Ok(md) if md.is_file() => match f.checksum() {
            Checksum::Unknown => f.size.is_none_or(|s| s == md.len()),
            want => verify_file(dest, &want).is_ok(),
        },
        _ => false,
    }
}

/// True when `dir` holds a `.verified` marker for `m`'s current fingerprint and the layout
/// check passes.
pub fn is_verified(m: &Manifest, dir: &Path) -> bool {
    fs::read_to_string(dir.join(VERIFIED_MARKER)).is_ok_and(|s| s.trim() == m.fingerprint())
        && missing_paths(dir, &m.required_paths()).is_empty()
}

/// The entries of `paths` (relative to `dir`) that do not exist; a trailing `/` requires a folder.
pub fn missing_paths(dir: &Path, paths: &[String]) -> Vec<String> {
    paths
        .iter()
        .filter(|p| {
            let full = dir.join(p.trim_end_matches('/'));
            if p.ends_with('/') {
                !full.is_dir()
            } else {
                !full.exists()
            }
        })
        .cloned()
        .collect()
}

fn preview(items: &[String]) -> String {
    let mut s = items
        .iter()
        .take(5)
        .map(|p| format!("`{p}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > 5 {
        s.push_str(&format!(" and {} more", items.len() - 5));
    }
    s
}

/// Progress of one data set: an indicatif bar on a terminal; otherwise (CI, logs) a plain line at
/// most every [`Progress::PLAIN_EVERY`], so that long downloads are not silent.
struct Progress {
    bar: ProgressBar,
    total: Option<u64>,
    /// `Some(last line printed)` in plain mode.
    plain: Option<std::cell::Cell<Instant>>,
}

impl Progress {
    const PLAIN_EVERY: Duration = Duration::from_secs(15);

    fn new(total: Option<u64>, visible: bool) -> Progress {
        use std::io::IsTerminal;
        if !visible {
            return Progress {
                bar: ProgressBar::hidden(),
                total,
                plain: None,
            };
        }
        if !io::stderr().is_terminal() {
            return Progress {
                bar: ProgressBar::hidden(),
                total,
                plain: Some(std::cell::Cell::new(Instant::now())),
            };
        }
        let bar = ProgressBar::new(total.unwrap_or(0));
        let template = if total.is_some() {
            "{bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {wide_msg}"
        } else {
            "{spinner} {bytes} {bytes_per_sec} {wide_msg}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        Progress {
            bar,
            total,
            plain: None,
        }
    }

    fn position(&self) -> u64 {
        self.bar.position()
    }

    fn set_position(&self, pos: u64) {
        self.bar.set_position(pos);
        self.tick();
    }

    fn inc(&self, delta: u64) {
        self.bar.inc(delta);
        self.tick();
    }

    fn set_message(&self, msg: String) {
        self.bar.set_message(msg);
    }

    fn suspend<F: FnOnce()>(&self, f: F) {
        self.bar.suspend(f)
    }

    fn finish_and_clear(&self) {
        self.bar.finish_and_clear()
    }

    fn tick(&self) {
        let Some(last) = &self.plain else { return };
        if last.get().elapsed() < Self::PLAIN_EVERY {
            return;
        }
        last.set(Instant::now());
        let pos = self.bar.position();
        match self.total.filter(|t| *t > 0) {
            Some(t) => eprintln!(
                "  {} of {} ({:.0} %) {}",
                human_bytes(pos),
                human_bytes(t),
                100.0 * pos as f64 / t as f64,
                self.bar.message()
            ),
            None => eprintln!("  {} {}", human_bytes(pos), self.bar.message()),
        }
    }
}

fn place(f: &FileEntry, target: &Path, dir: &Path, keep: bool, bar: &Progress) -> Result<()> {
    match f.extract {
        Extract::None => {
            let dest = dir.join(&f.path);
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            fs::rename(target, &dest).with_context(|| {
                format!("cannot move {} to {}", target.display(), dest.display())
            })?;
            return Ok(());
        }
        kind => {
            bar.set_message(format!("extracting {}", f.path));
            let n = extract(target, kind, dir)
                .with_context(|| format!("extracting into {}", dir.display()))?;
            bar.suspend(|| println!("{}: extracted {n} entries", f.path));
        }
    }
    if !keep {
        fs::remove_file(target).with_context(|| format!("cannot remove {}", target.display()))?;
    }
    Ok(())
}

/// `1.5 GiB`-style sizes.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests;

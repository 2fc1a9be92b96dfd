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

use crate::util::repo_root;
use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
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

// ---------------------------------------------------------------------------------------------
// Manifests
// ---------------------------------------------------------------------------------------------

/// One data set, as written in `datasets/<name>.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Short name; equals the manifest's file stem and the folder under the data root.
    pub name: String,
    /// Human-readable title.
    pub title: String,
    /// The data set's official page.
    pub homepage: String,
    /// Licence or terms of use, as published.
    pub license: String,
    /// What to cite (BibTeX or a plain reference).
    pub citation: String,
    /// True when the data must be obtained by hand (registration); then `instructions` is required
    /// and `files` is empty.
    #[serde(default)]
    pub manual: bool,
    /// What the user has to do (manual data sets), printed by the downloader.
    #[serde(default)]
    pub instructions: Option<String>,
    /// Free-form remarks (provenance of checksums, mirrors, ...).
    #[serde(default)]
    pub notes: Option<String>,
    /// Base URLs for files without their own `urls`: a file's URL is base + its (percent-encoded)
    /// path. Tried in order.
    #[serde(default)]
    pub base_urls: Vec<String>,
    /// What to download.
    #[serde(default)]
    pub files: Vec<FileEntry>,
    /// What must exist after extraction.
    pub layout: Layout,
}

/// One file to download.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Relative path: the archive's name, or (for `extract = "none"`) where the file goes inside
    /// the data set's folder.
    pub path: String,
    /// URLs, official first, then mirrors. Empty: built from the manifest's `base_urls`.
    #[serde(default)]
    pub urls: Vec<String>,
    /// Size in bytes, when known (progress and a size check before hashing).
    #[serde(default)]
    pub size: Option<u64>,
    /// MD5 (hex) as published by the source, or "unknown".
    #[serde(default)]
    pub md5: Option<String>,
    /// SHA-256 (hex), or "unknown".
    #[serde(default)]
    pub sha256: Option<String>,
    /// What to do with the file once verified.
    #[serde(default)]
    pub extract: Extract,
}

/// How a downloaded file is put in place.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum Extract {
    /// Moved to `<dataset>/<path>` as is.
    #[default]
    #[serde(rename = "none")]
    None,
    #[serde(rename = "tar")]
    Tar,
    #[serde(rename = "tar.gz")]
    TarGz,
    #[serde(rename = "zip")]
    Zip,
}

/// The layout check: paths relative to the data set's folder. A trailing `/` demands a folder.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layout {
    pub paths: Vec<String>,
}

/// An expected checksum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Checksum {
    Md5(String),
    Sha256(String),
    /// No verifiable value is known: the downloader warns and prints the SHA-256 it computed.
    Unknown,
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Checksum::Md5(h) => write!(f, "md5 {h}"),
            Checksum::Sha256(h) => write!(f, "sha256 {h}"),
            Checksum::Unknown => write!(f, "unknown"),
        }
    }
}

impl FileEntry {
    /// The expected checksum (validated by [`Manifest::validate`]).
    pub fn checksum(&self) -> Checksum {
        match (&self.md5, &self.sha256) {
            (Some(h), _) if h != "unknown" => Checksum::Md5(h.to_ascii_lowercase()),
            (_, Some(h)) if h != "unknown" => Checksum::Sha256(h.to_ascii_lowercase()),
            _ => Checksum::Unknown,
        }
    }
}

impl Manifest {
    /// The shipped manifest `datasets/<name>.toml`.
    pub fn named(name: &str) -> Result<Manifest> {
        let path = manifest_dir().join(format!("{name}.toml"));
        if !path.exists() {
            bail!(
                "no manifest for `{name}` ({} does not exist); known data sets: {}",
                path.display(),
                known_names(&manifest_dir()).join(", ")
            );
        }
        let m = Manifest::load(&path)?;
        if m.name != name {
            bail!(
                "{} says its name is `{}`, not `{name}`",
                path.display(),
                m.name
            );
        }
        Ok(m)
    }

    /// Parse and validate a manifest file.
    pub fn load(path: &Path) -> Result<Manifest> {
        let text = fs::read_to_string(path)
            .with_context(|| format!("cannot read the manifest {}", path.display()))?;
        let m = Manifest::parse(&text).with_context(|| format!("in {}", path.display()))?;
        Ok(m)
    }

    /// Parse and validate manifest text.
    pub fn parse(text: &str) -> Result<Manifest> {
        let m: Manifest = toml::from_str(text).context("not a valid data set manifest")?;
        m.validate()?;
        Ok(m)
    }

    /// Check the fields that serde cannot: non-empty texts, checksums, URLs, safe paths.
    pub fn validate(&self) -> Result<()> {
        let n = &self.name;
        if n.is_empty()
            || !n
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            bail!("name `{n}` must be non-empty lowercase ASCII letters, digits and '-'");
        }
        for (field, value) in [
            ("title", &self.title),
            ("homepage", &self.homepage),
            ("license", &self.license),
            ("citation", &self.citation),
        ] {
            if value.trim().is_empty() {
                bail!("{n}: `{field}` is empty");
            }
        }
        if self.layout.paths.is_empty() {
            bail!("{n}: `layout.paths` is empty: the layout check needs at least one path");
        }
        for p in &self.layout.paths {
            check_rel_path(p.trim_end_matches('/')).with_context(|| format!("{n}: layout path"))?;
        }
        for b in &self.base_urls {
            check_url(b).with_context(|| format!("{n}: base_urls"))?;
        }
        if self.manual {
            if self
                .instructions
                .as_deref()
                .is_none_or(|s| s.trim().is_empty())
            {
                bail!("{n}: a manual data set needs `instructions`");
            }
            if !self.files.is_empty() {
                bail!("{n}: a manual data set lists no `files`");
            }
            return Ok(());
        }
        if self.files.is_empty() {
            bail!("{n}: no `files` to download (or set `manual = true`)");
        }
        let mut seen = std::collections::HashSet::new();
        for f in &self.files {
            let p = &f.path;
            check_rel_path(p).with_context(|| format!("{n}: file path"))?;
            if !seen.insert(p.as_str()) {
                bail!("{n}: file `{p}` is listed twice");
            }
            match (&f.md5, &f.sha256) {
                (Some(_), Some(_)) => bail!("{n}: `{p}` has both md5 and sha256; keep the one the source publishes"),
                (None, None) => bail!("{n}: `{p}` has no checksum; write `sha256 = \"unknown\"` (with a comment) if none is known"),
                (Some(h), None) => check_hex(h, 32).with_context(|| format!("{n}: md5 of `{p}`"))?,
                (None, Some(h)) => check_hex(h, 64).with_context(|| format!("{n}: sha256 of `{p}`"))?,
            }
            if f.urls.is_empty() && self.base_urls.is_empty() {
                bail!("{n}: `{p}` has no `urls` and the manifest has no `base_urls`");
            }
            for u in &f.urls {
                check_url(u).with_context(|| format!("{n}: URL of `{p}`"))?;
            }
            if f.size == Some(0) {
                bail!("{n}: `{p}` has size 0; leave `size` out when it is unknown");
            }
        }
        Ok(())
    }

    /// The URLs to try for `file`, in order: the mirror (if any), then the manifest's.
    pub fn urls_for(&self, file: &FileEntry, mirror: Option<&str>) -> Vec<String> {
        let mut urls = Vec::new();
        if let Some(m) = mirror {
            urls.push(format!(
                "{}/{}/{}",
                m.trim_end_matches('/'),
                self.name,
                encode_path(&file.path)
            ));
        }
        if file.urls.is_empty() {
            urls.extend(
                self.base_urls
                    .iter()
                    .map(|b| format!("{b}{}", encode_path(&file.path))),
            );
        } else {
            urls.extend(file.urls.iter().cloned());
        }
        urls
    }

    /// Total size in bytes if every file's size is known.
    pub fn total_size(&self) -> Option<u64> {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Paths the layout check requires: `layout.paths` plus every file placed as is.
    pub fn required_paths(&self) -> Vec<String> {
        let mut paths = self.layout.paths.clone();
        for f in &self.files {
            if f.extract == Extract::None && !paths.contains(&f.path) {
                paths.push(f.path.clone());
            }
        }
        paths
    }

    /// A digest of what makes a download valid: files, checksums, extraction and layout. Stored
    /// in the `.verified` marker, so that a changed manifest triggers a new check.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for f in &self.files {
            h.update(format!(
                "file\t{}\t{}\t{:?}\n",
                f.path,
                f.checksum(),
                f.extract
            ));
        }
        for p in &self.layout.paths {
            h.update(format!("layout\t{p}\n"));
        }
        hex::encode(h.finalize())
    }
}

fn check_rel_path(p: &str) -> Result<()> {
    let path = Path::new(p);
    if p.is_empty()
        || p.contains('\\')
        || !path.components().all(|c| matches!(c, Component::Normal(_)))
    {
        bail!("`{p}` must be a relative path without `..`, `.` or a leading `/`");
    }
    Ok(())
}

fn check_url(u: &str) -> Result<()> {
    if !(u.starts_with("https://") || u.starts_with("http://")) || u.contains(char::is_whitespace) {
        bail!("`{u}` is not an http(s) URL");
    }
    Ok(())
}

fn check_hex(h: &str, len: usize) -> Result<()> {
    if h == "unknown" {
        return Ok(());
    }
    if h.len() != len || !h.chars().all(|c| c.is_ascii_hexdigit()) {
        bail!("`{h}` is not {len} hex digits (or \"unknown\")");
    }
    Ok(())
}

/// Percent-encode a relative path for a URL (keeps `/` and RFC 3986 unreserved characters).
pub fn encode_path(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    for b in p.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn known_names(dir: &Path) -> Vec<String> {
    manifest_paths(dir)
        .unwrap_or_default()
        .iter()
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect()
}

/// All `*.toml` files in `dir`, sorted.
pub fn manifest_paths(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("cannot list the manifests in {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    out.sort();
    Ok(out)
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

// ---------------------------------------------------------------------------------------------
// Downloading
// ---------------------------------------------------------------------------------------------

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

/// Streaming hash of the expected algorithm (sha256 when the checksum is unknown).
enum Hasher {
    Md5(md5::Md5),
    Sha256(sha2::Sha256),
}

impl Hasher {
    fn new(c: &Checksum) -> Hasher {
        use sha2::Digest;
        match c {
            Checksum::Md5(_) => Hasher::Md5(md5::Md5::new()),
            _ => Hasher::Sha256(sha2::Sha256::new()),
        }
    }
    fn update(&mut self, data: &[u8]) {
        use sha2::Digest;
        match self {
            Hasher::Md5(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
        }
    }
    fn hex(self) -> String {
        use sha2::Digest;
        match self {
            Hasher::Md5(h) => hex::encode(h.finalize()),
            Hasher::Sha256(h) => hex::encode(h.finalize()),
        }
    }
}

/// Hash the first `len` bytes of `file` (from its start) into `h`.
fn hash_prefix(file: &mut File, len: u64, h: &mut Hasher) -> io::Result<()> {
    file.seek(SeekFrom::Start(0))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shorter than expected",
            ));
        }
        h.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(())
}

/// Check a complete file on disk against `want` (and nothing for `Unknown`).
fn verify_file(path: &Path, want: &Checksum) -> Result<()> {
    if *want == Checksum::Unknown {
        return Ok(());
    }
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = file.metadata()?.len();
    let mut h = Hasher::new(want);
    hash_prefix(&mut file, len, &mut h)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let got = h.hex();
    match want {
        Checksum::Md5(w) | Checksum::Sha256(w) if *w != got => bail!(
            "{} fails its checksum: expected {want}, got {got}",
            path.display()
        ),
        _ => Ok(()),
    }
}

/// Why one attempt at one URL stopped.
enum Attempt {
    /// Worth retrying (cut connection, timeout, 5xx, ...).
    Transient(anyhow::Error),
    /// Not worth retrying this URL (404, 403, ...): go to the next one.
    Fatal(anyhow::Error),
}

/// Download `f` into `target` (through `target.part`) from the first URL that works, verifying
/// its size and checksum. Returns the number of bytes transferred.
fn fetch(
    agent: &ureq::Agent,
    urls: &[String],
    f: &FileEntry,
    target: &Path,
    opts: &Options,
    bar: &Progress,
) -> Result<u64> {
    let part = PathBuf::from(format!("{}.part", target.display()));
    let bar_base = bar.position();
    let mut errors = Vec::new();
    let mut transferred = 0u64;
    for url in urls {
        match fetch_url(agent, url, f, &part, opts, bar, bar_base, &mut transferred) {
            Ok(got) => {
                let size = fs::metadata(&part)
                    .with_context(|| format!("cannot stat {}", part.display()))?
                    .len();
                match judge(f, url, size, &got) {
                    Ok(warnings) => {
                        for w in warnings {
                            bar.suspend(|| eprintln!("{w}"));
                        }
                        fs::rename(&part, target).with_context(|| {
                            format!("cannot rename {} to {}", part.display(), target.display())
                        })?;
                        return Ok(transferred);
                    }
                    Err(why) => {
                        remove_quietly(&part);
                        errors.push(why);
                        bar.set_position(bar_base);
                    }
                }
            }
            Err(e) => {
                errors.push(format!("{url}: {e:#}"));
            }
        }
        if urls.last() != Some(url) {
            let why = errors.last().cloned().unwrap_or_default();
            bar.suspend(|| eprintln!("{}: {why}; trying the next URL", f.path));
        }
    }
    bail!(
        "could not fetch `{}` from any of its {} URL(s):\n  {}",
        f.path,
        urls.len(),
        errors.join("\n  ")
    )
}

/// Judge a complete download of `f` (`size` bytes, digest `got`) from `url`: `Ok(warnings)` to
/// accept it, `Err(reason)` to reject it. The checksum decides; the size decides only when no
/// checksum is known.
fn judge(
    f: &FileEntry,
    url: &str,
    size: u64,
    got: &str,
) -> std::result::Result<Vec<String>, String> {
    let want = f.checksum();
    let wrong_size = f.size.filter(|s| *s != size);
    match &want {
        Checksum::Md5(w) | Checksum::Sha256(w) => {
            let algo = if matches!(want, Checksum::Md5(_)) {
                "md5"
            } else {
                "sha256"
            };
            let size_note = wrong_size
                .map(|e| format!(" ({size} bytes; the manifest says {e})"))
                .unwrap_or_default();
            if w != got {
                return Err(format!(
                    "checksum mismatch for `{}` from {url}: expected {want}, got {algo} {got}\
                     {size_note}; the downloaded file was deleted",
                    f.path
                ));
            }
            Ok(wrong_size
                .map(|_| {
                    format!(
                        "{}: warning: checksum verified, but the size in the manifest is \
                         wrong{size_note}; fix the manifest",
                        f.path
                    )
                })
                .into_iter()
                .collect())
        }
        Checksum::Unknown => {
            if let Some(expected) = wrong_size {
                return Err(format!(
                    "`{}` from {url} has {size} bytes, the manifest says {expected} (and knows \
                     no checksum); the downloaded file was deleted",
                    f.path
                ));
            }
            Ok(vec![format!(
                "\n*** WARNING: `{}` has NO known checksum in the manifest: it was NOT \
                 verified. ***\n*** sha256 of what {url} sent: {got} ({size} bytes); record it \
                 in the manifest. ***\n",
                f.path
            )])
        }
    }
}

/// Fetch one URL into `part` with resume and bounded retries; returns the hex digest.
#[allow(clippy::too_many_arguments)]
fn fetch_url(
    agent: &ureq::Agent,
    url: &str,
    f: &FileEntry,
    part: &Path,
    opts: &Options,
    bar: &Progress,
    bar_base: u64,
    transferred: &mut u64,
) -> Result<String> {
    let want = f.checksum();
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(false)
        .open(part)
        .with_context(|| format!("cannot open {}", part.display()))?;
    // Bytes already on disk (an earlier run or URL) are hashed first, so the hash can then
    // follow the stream.
    let mut have = file.metadata()?.len();
    let mut hasher = Hasher::new(&want);
    hash_prefix(&mut file, have, &mut hasher)
        .with_context(|| format!("cannot read {}", part.display()))?;
    if have > 0 {
        bar.suspend(|| println!("{}: resuming at byte {have}", f.path));
    }
    let mut retries = 0u32;
    loop {
        bar.set_position(bar_base + have);
        let result = attempt(
            agent,
            url,
            &mut file,
            &mut have,
            &mut hasher,
            bar,
            bar_base,
            f,
            transferred,
        );
        match result {
            Ok(()) => return Ok(hasher.hex()),
            Err(Attempt::Fatal(e)) => return Err(e),
            Err(Attempt::Transient(e)) => {
                if retries >= opts.retries {
                    let kept = if have > 0 {
                        format!(
                            "; {have} bytes kept in {} for a later resume",
                            part.display()
                        )
                    } else {
                        drop(file);
                        remove_quietly(part);
                        String::new()
                    };
                    return Err(e.context(format!("gave up after {} attempts{kept}", retries + 1)));
                }
                retries += 1;
                bar.suspend(|| {
                    eprintln!(
                        "{}: {e:#}; retry {retries}/{} from byte {have}",
                        f.path, opts.retries
                    )
                });
                std::thread::sleep(opts.retry_delay * retries);
            }
        }
    }
}

/// One HTTP request: ask for the bytes after `have`, append them to `file` and the hash.
#[allow(clippy::too_many_arguments)]
fn attempt(
    agent: &ureq::Agent,
    url: &str,
    file: &mut File,
    have: &mut u64,
    hasher: &mut Hasher,
    bar: &Progress,
    bar_base: u64,
    f: &FileEntry,
    transferred: &mut u64,
) -> std::result::Result<(), Attempt> {
    let io_err =
        |e: io::Error, what: &str| Attempt::Fatal(anyhow::Error::new(e).context(what.to_string()));
    let mut req = agent.get(url);
    if *have > 0 {
        req = req.set("Range", &format!("bytes={have}-"));
    }
    let resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(416, _)) if *have > 0 && f.size == Some(*have) => {
            return Ok(()); // we already hold every byte
        }
        Err(ureq::Error::Status(416, _)) if *have > 0 => {
            // The server cannot serve that range: start over.
            restart(file, have, hasher, f)
                .map_err(|e| io_err(e, "cannot truncate the partial file"))?;
            return Err(Attempt::Transient(anyhow::anyhow!(
                "HTTP 416 for a resume request; restarting from zero"
            )));
        }
        Err(ureq::Error::Status(code, _)) if code >= 500 || code == 408 || code == 429 => {
            return Err(Attempt::Transient(anyhow::anyhow!("HTTP {code}")));
        }
        Err(ureq::Error::Status(code, r)) => {
            return Err(Attempt::Fatal(anyhow::anyhow!(
                "HTTP {code} {}",
                r.status_text()
            )))
        }
        Err(ureq::Error::Transport(t)) => {
            // Display of a transport error repeats the URL; the caller names it already.
            let mut msg = t.kind().to_string();
            if let Some(m) = t.message() {
                msg.push_str(&format!(": {m}"));
            }
            return Err(Attempt::Transient(anyhow::anyhow!(msg)));
        }
    };
    let status = resp.status();
    let offset = match status {
        206 => {
            let start = resp
                .header("Content-Range")
                .and_then(|v| v.trim().strip_prefix("bytes "))
                .and_then(|v| v.split('-').next())
                .and_then(|v| v.trim().parse::<u64>().ok());
            if start != Some(*have) {
                restart(file, have, hasher, f)
                    .map_err(|e| io_err(e, "cannot truncate the partial file"))?;
                return Err(Attempt::Transient(anyhow::anyhow!(
                    "the server answered a resume request with an unexpected Content-Range {:?}; \
                     restarting from zero",
                    resp.header("Content-Range")
                )));
            }
            *have
        }
        200 => {
            if *have > 0 {
                bar.suspend(|| {
                    println!(
                        "{}: the server does not support resuming (Range ignored); restarting from zero",
                        f.path
                    )
                });
                restart(file, have, hasher, f)
                    .map_err(|e| io_err(e, "cannot truncate the partial file"))?;
            }
            0
        }
        other => {
            return Err(Attempt::Fatal(anyhow::anyhow!(
                "unexpected HTTP status {other} {}",
                resp.status_text()
            )))
        }
    };
    let expected_end = resp
        .header("Content-Length")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|n| n + offset);
    if let (Some(end), Some(size)) = (expected_end, f.size) {
        if end != size {
            // The checksum decides; a size copied wrongly into a manifest must not block.
            bar.suspend(|| {
                eprintln!(
                    "{}: warning: the server announces {end} bytes, the manifest says {size}",
                    f.path
                )
            });
        }
    }
    file.seek(SeekFrom::Start(*have))
        .map_err(|e| io_err(e, "cannot seek in the partial file"))?;
    let mut reader = resp.into_reader();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(Attempt::Transient(
                    anyhow::Error::new(e).context(format!("transfer cut at byte {have}")),
                ))
            }
        };
        file.write_all(&buf[..n])
            .map_err(|e| io_err(e, "cannot write the partial file (disk full?)"))?;
        hasher.update(&buf[..n]);
        *have += n as u64;
        *transferred += n as u64;
        bar.set_position(bar_base + *have);
    }
    file.flush()
        .map_err(|e| io_err(e, "cannot flush the partial file"))?;
    match expected_end {
        Some(end) if *have < end => Err(Attempt::Transient(anyhow::anyhow!(
            "transfer cut at byte {have} of {end}"
        ))),
        _ => Ok(()),
    }
}

fn restart(file: &mut File, have: &mut u64, hasher: &mut Hasher, f: &FileEntry) -> io::Result<()> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    *have = 0;
    *hasher = Hasher::new(&f.checksum());
    Ok(())
}

fn remove_quietly(p: &Path) {
    let _ = fs::remove_file(p);
}

// ---------------------------------------------------------------------------------------------
// Putting files in place
// ---------------------------------------------------------------------------------------------

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
            let n = extract(target, kind, dir).with_context(|| {
                format!("extracting {} into {}", target.display(), dir.display())
            })?;
            bar.suspend(|| println!("{}: extracted {n} entries", f.path));
        }
    }
    if !keep {
        fs::remove_file(target).with_context(|| format!("cannot remove {}", target.display()))?;
    }
    Ok(())
}

/// Extract `archive` into `dir`; entries that would land outside `dir` are refused. Returns the
/// number of entries written.
pub fn extract(archive: &Path, kind: Extract, dir: &Path) -> Result<usize> {
    let file = File::open(archive).with_context(|| format!("cannot open {}", archive.display()))?;
    let reader = io::BufReader::with_capacity(1 << 20, file);
    match kind {
        Extract::None => Ok(0),
        Extract::Tar => untar(tar::Archive::new(reader), dir),
        Extract::TarGz => untar(tar::Archive::new(flate2::read::GzDecoder::new(reader)), dir),
        Extract::Zip => unzip(reader, dir),
    }
}

fn untar<R: Read>(mut ar: tar::Archive<R>, dir: &Path) -> Result<usize> {
    ar.set_overwrite(true);
    ar.set_preserve_permissions(false);
    let mut n = 0;
    for entry in ar.entries().context("not a readable tar archive")? {
        let mut entry = entry.context("corrupt tar entry")?;
        let name = entry
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if !entry
            .unpack_in(dir)
            .with_context(|| format!("cannot unpack `{name}`"))?
        {
            bail!(
                "refusing the tar entry `{name}`: it would land outside {}",
                dir.display()
            );
        }
        n += 1;
    }
    Ok(n)
}

fn unzip<R: Read + Seek>(reader: R, dir: &Path) -> Result<usize> {
    let mut zip = zip::ZipArchive::new(reader).context("not a readable zip archive")?;
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .with_context(|| format!("corrupt zip entry #{i}"))?;
        let Some(rel) = entry.enclosed_name() else {
            bail!(
                "refusing the zip entry `{}`: it would land outside {}",
                entry.name(),
                dir.display()
            );
        };
        let out = dir.join(rel);
        if entry.is_dir() {
            fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
            continue;
        }
        if let Some(parent) = out.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let mut w =
            File::create(&out).with_context(|| format!("cannot create {}", out.display()))?;
        io::copy(&mut entry, &mut w)
            .with_context(|| format!("cannot extract `{}`", entry.name()))?;
    }
    Ok(zip.len())
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
#[path = "download_tests.rs"]
mod tests;

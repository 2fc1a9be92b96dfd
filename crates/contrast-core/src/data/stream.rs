//! Streaming image folders: the `image-folder` layout read and decoded per sample, for data sets
//! too large to decode into memory (ImageNet: 1.28 M JPEGs, ≈ 0.5 TB as RGB).
//!
//! * **File list.** The folder is scanned once ([`scan_image_folder`], the same order as the
//!   in-memory path: classes sorted, then files sorted) and the list is cached as JSON next to
//!   the data, in `<parent>/.<folder>.contrast-files.json`, or, when that directory is not
//!   writable, in `$CONTRAST_CACHE_DIR` (else `$XDG_CACHE_HOME/contrast`, `~/.cache/contrast`,
//!   the temp dir) under `filelists/<hash of the folder path>.json`, when the folder holds at
//!   least [`CACHE_MIN_FILES`] files (smaller ones are listed again each run). The cache is keyed by the
//!   modification times of the folder and of every class folder (adding, removing or renaming a
//!   file changes its class folder's mtime; adding a class changes the folder's), so a later run
//!   only lists the class folders and reads the JSON.
//! * **Decoding** happens in [`Dataset::get`] / [`Dataset::get_scaled`], i.e. in the
//!   [`Loader`](super::Loader)'s worker threads, one sample at a time per thread; the decoded
//!   image is dropped once its views are written into the batch tensors.
//! * **Scaled decoding** (`data.scaled_decode`, off by default): the loader takes a sample's
//!   random draws from the image size in the JPEG header, before decoding
//!   ([`Recipe::draw`](super::Recipe::draw)); when every view's crop is at least `d` times its
//!   output side (`d` = 2, 4, 8: [`Recipe::decode_denom`](super::Recipe::decode_denom)), the
//!   JPEG is decoded at `1/d` in the DCT domain and the crop boxes are mapped into it. Measured
//!   against torchvision's full decode + antialiased bicubic resize on the same file and boxes:
//!   mean 0.8–1.2 grey levels, 99.9th percentile 5–8 (`tests/data_scaled_decode.rs`). On
//!   ImageNet-size images (≈ 400 × 350) a 224-px crop almost never allows `d = 2`; large
//!   photographs gain (`benches/RESULTS.md`).
//! * **Memory bound.** Pixels resident at any time, whatever the number of files:
//!   `(prefetch + 2) · batch · Σ_views 3·S_v²·4` bytes of batch tensors (the `prefetch` queued
//!   batches, the one being filled, the one the consumer holds) plus at most `threads` decoded
//!   images (`H·W·3` bytes each, plus their file bytes). The file list itself is
//!   ≈ `N · (file-name length + 24)` bytes (≈ 70 MB for ImageNet's 1.28 M training files).
//!   Example: ImageNet at 224 px, two views, batch 256, prefetch 2: 4 · 256 · 2 · 602 KB ≈
//!   1.2 GB of batches, independent of the data-set size.
//! * **Same results as in memory.** Same samples in the same order, decoded by the same
//!   [`decode_rgb`], augmented with the same per-sample streams: the batches are bit-identical
//!   (`tests/data_stream.rs`).
//!
//! **Which path.** [`open_image_folder`] estimates the decoded size of a folder from the image
//! headers of up to [`SIZE_PROBES`] files spread over the list (no pixel is decoded) and streams
//! when it exceeds [`StreamPolicy::stream_above_mib`] (default [`DEFAULT_STREAM_ABOVE_MIB`] MiB:
//! CIFAR, STL-10 and Tiny ImageNet stay in memory, ImageNet streams); [`StreamPolicy::stream`]
//! forces either path (a method's `data.stream = "auto" | "always" | "never"` and
//! `data.stream_above_mib`: [`StreamPolicy::new`]). [`StreamPolicy::with_env`] applies the
//! overrides `CONTRAST_STREAM` (`1`/`true` or `0`/`false`), `CONTRAST_STREAM_ABOVE_MIB` and
//! `CONTRAST_SCALED_DECODE`.

use super::augment::Source;
use super::dataset::{decoded_in_full, Dataset, ImageRef, InMemoryDataset, OnCorrupt, Skipped};
use super::folder::{decode_all, decode_rgb, decode_rgb_scaled, image_size, scan_image_folder};
use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

/// Default decoded size (MiB) above which an image folder is streamed: 4 GiB.
pub const DEFAULT_STREAM_ABOVE_MIB: u64 = 4096;

/// Files whose headers are read to estimate a folder's decoded size.
pub const SIZE_PROBES: usize = 64;

const CACHE_VERSION: u32 = 1;

/// `data.stream`: stream an image folder when its estimated decoded size is above
/// `data.stream_above_mib` (`auto`), always, or never.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamMode {
    #[default]
    Auto,
    Always,
    Never,
}

/// In memory or streamed: see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamPolicy {
    /// `Some(true)` always streams, `Some(false)` always decodes into memory, `None` decides by
    /// size (`data.stream`).
    pub stream: Option<bool>,
    /// Estimated decoded size in MiB above which the folder is streamed
    /// (`data.stream_above_mib`).
    pub stream_above_mib: u64,
    /// Decode a streamed JPEG at 1/2, 1/4 or 1/8 of its size in the DCT domain when every view
    /// of the sample still downsamples from it (`data.scaled_decode`, default off: the pixels
    /// then differ from torchvision's full decode + antialiased resize; `benches/RESULTS.md`
    /// gives the measured difference and speed).
    pub scaled_decode: bool,
    /// A file that fails to read or decode stops the run naming it, or is skipped and counted
    /// (`data.on_corrupt`, [`OnCorrupt`]), on both paths.
    pub on_corrupt: OnCorrupt,
}

impl Default for StreamPolicy {
    fn default() -> Self {
        Self {
            stream: None,
            stream_above_mib: DEFAULT_STREAM_ABOVE_MIB,
            scaled_decode: false,
            on_corrupt: OnCorrupt::Stop,
        }
    }
}

impl StreamPolicy {
    /// The policy of a method's `data.stream`, `data.stream_above_mib` and
    /// `data.scaled_decode`.
    pub fn new(mode: StreamMode, stream_above_mib: u64, scaled_decode: bool) -> Self {
        Self {
            stream: match mode {
                StreamMode::Auto => None,
                StreamMode::Always => Some(true),
                StreamMode::Never => Some(false),
            },
            stream_above_mib,
            scaled_decode,
            on_corrupt: OnCorrupt::Stop,
        }
    }

    /// This policy with `data.on_corrupt`.
    pub fn with_on_corrupt(mut self, on_corrupt: OnCorrupt) -> Self {
        self.on_corrupt = on_corrupt;
        self
    }

    /// This policy (a method's `data.stream`, `data.stream_above_mib`, `data.scaled_decode`)
    /// with the environment's overrides applied on top: `CONTRAST_STREAM` (`1`, `true`, `0`,
    /// `false`; empty = decide by size), `CONTRAST_STREAM_ABOVE_MIB` (an integer) and
    /// `CONTRAST_SCALED_DECODE` (`1`/`0`).
    pub fn with_env(self) -> Result<Self> {
        let mut p = self;
        if let Ok(v) = std::env::var("CONTRAST_SCALED_DECODE") {
            p.scaled_decode = match v.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" => true,
                "0" | "false" | "no" | "" => false,
                other => bail!("CONTRAST_SCALED_DECODE={other}: use 1/true or 0/false"),
            };
        }
        if let Ok(v) = std::env::var("CONTRAST_STREAM") {
            p.stream = match v.trim().to_ascii_lowercase().as_str() {
                "" => None,
                "1" | "true" | "yes" => Some(true),
                "0" | "false" | "no" => Some(false),
                other => bail!("CONTRAST_STREAM={other}: use 1/true, 0/false or leave it empty"),
            };
        }
        if let Ok(v) = std::env::var("CONTRAST_STREAM_ABOVE_MIB") {
            p.stream_above_mib = v
                .trim()
                .parse()
                .with_context(|| format!("CONTRAST_STREAM_ABOVE_MIB={v} is not an integer"))?;
        }
        Ok(p)
    }
}

/// The `(class folder / file name, class index)` list of an image folder, compactly: one string
/// of file names with end offsets (≈ name length + 24 bytes per file).
#[derive(Debug, Clone)]
pub struct FileList {
    root: PathBuf,
    classes: Vec<String>,
    names: String,
    ends: Vec<usize>,
    labels: Vec<u32>,
}

impl FileList {
    /// Number of files.
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    /// `true` without files.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Class names by index.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }
    /// Class index of file `i`.
    pub fn label(&self, i: usize) -> i64 {
        self.labels[i] as i64
    }
    /// Path of file `i`.
    pub fn path(&self, i: usize) -> PathBuf {
        let lo = if i == 0 { 0 } else { self.ends[i - 1] };
        self.root
            .join(&self.classes[self.labels[i] as usize])
            .join(&self.names[lo..self.ends[i]])
    }
    /// `(path, class index)` per file (the form [`scan_image_folder`] returns).
    pub fn samples(&self) -> Vec<(PathBuf, i64)> {
        (0..self.len())
            .map(|i| (self.path(i), self.label(i)))
            .collect()
    }

    fn from_scan(root: &Path, samples: Vec<(PathBuf, i64)>, classes: Vec<String>) -> Result<Self> {
        let mut names = String::new();
        let mut ends = Vec::with_capacity(samples.len());
        let mut labels = Vec::with_capacity(samples.len());
        for (p, l) in samples {
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .with_context(|| format!("{}: file name is not UTF-8", p.display()))?;
            names.push_str(name);
            ends.push(names.len());
            labels.push(l as u32);
        }
        Ok(Self {
            root: root.to_path_buf(),
            classes,
            names,
            ends,
            labels,
        })
    }
}

/// On-disk form of a [`FileList`] (`files[c]` = the file names of class `c`, in order).
#[derive(Serialize, Deserialize)]
struct CacheFile {
    version: u32,
    root: String,
    key: Vec<(u64, u32)>,
    classes: Vec<String>,
    files: Vec<Vec<String>>,
}

fn mtime(p: &Path) -> Result<(u64, u32)> {
    let t = std::fs::metadata(p)
        .and_then(|m| m.modified())
        .with_context(|| format!("reading the modification time of {}", p.display()))?;
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    Ok((d.as_secs(), d.subsec_nanos()))
}

/// The cache key: the folder's mtime, then `(class folder count, 0)` and each class folder's
/// mtime, in sorted class order.
fn cache_key(root: &Path) -> Result<Vec<(u64, u32)>> {
    let mut classes = Vec::new();
    for e in std::fs::read_dir(root).with_context(|| format!("listing {}", root.display()))? {
        let e = e.with_context(|| format!("listing {}", root.display()))?;
        if e.file_type()?.is_dir() {
            if let Ok(n) = e.file_name().into_string() {
                classes.push(n);
            }
        }
    }
    classes.sort();
    let mut key = vec![mtime(root)?, (classes.len() as u64, 0)];
    for c in &classes {
        key.push(mtime(&root.join(c))?);
    }
    Ok(key)
}

/// The cache file next to the data (`<parent>/.<name>.contrast-files.json`), if `root` has a
/// parent and a UTF-8 name.
fn cache_next_to(root: &Path) -> Option<PathBuf> {
    let abs = std::path::absolute(root).ok()?;
    let name = abs.file_name()?.to_str()?;
    Some(abs.parent()?.join(format!(".{name}.contrast-files.json")))
}

/// The cache file in the user's cache directory.
fn cache_in_cache_dir(root: &Path) -> PathBuf {
    let abs = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
    let hash = hex::encode(&Sha256::digest(abs.to_string_lossy().as_bytes())[..8]);
    let base = std::env::var_os("CONTRAST_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("contrast")))
        .or_else(|| std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/contrast")))
        .unwrap_or_else(|| std::env::temp_dir().join("contrast-cache"));
    base.join("filelists").join(format!("{hash}.json"))
}

fn read_cache(file: &Path, root: &Path, key: &[(u64, u32)]) -> Option<FileList> {
    let text = std::fs::read(file).ok()?;
    let c: CacheFile = serde_json::from_slice(&text).ok()?;
    let abs = std::path::absolute(root).ok()?;
    if c.version != CACHE_VERSION
        || c.key != key
        || c.root != abs.to_string_lossy()
        || c.files.len() != c.classes.len()
    {
        return None;
    }
    let total: usize = c.files.iter().map(Vec::len).sum();
    let mut names = String::new();
    let mut ends = Vec::with_capacity(total);
    let mut labels = Vec::with_capacity(total);
    for (ci, files) in c.files.iter().enumerate() {
        for f in files {
            names.push_str(f);
            ends.push(names.len());
            labels.push(ci as u32);
        }
    }
    Some(FileList {
        root: root.to_path_buf(),
        classes: c.classes,
        names,
        ends,
        labels,
    })
}

fn write_cache(file: &Path, list: &FileList, key: &[(u64, u32)]) -> Result<()> {
    let mut files: Vec<Vec<String>> = vec![Vec::new(); list.classes.len()];
    for i in 0..list.len() {
        let lo = if i == 0 { 0 } else { list.ends[i - 1] };
        files[list.labels[i] as usize].push(list.names[lo..list.ends[i]].to_string());
    }
    let c = CacheFile {
        version: CACHE_VERSION,
        root: std::path::absolute(&list.root)?
            .to_string_lossy()
            .into_owned(),
        key: key.to_vec(),
        classes: list.classes.clone(),
        files,
    };
    if let Some(d) = file.parent() {
        std::fs::create_dir_all(d)?;
    }
    let tmp = file.with_extension(format!("json.tmp{}", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec(&c)?)?;
    std::fs::rename(&tmp, file).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    Ok(())
}

/// Where [`scan_cached`] found the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListSource {
    /// Read from a valid cache file.
    Cache,
    /// Scanned now (and cached when a cache file could be written).
    Scan,
}

/// The file list of `root`, from its cache when the folder and its class folders have not been
/// modified since, else scanned now and cached (see the module docs). A cache that cannot be
/// written anywhere is not an error.
pub fn scan_cached(root: impl AsRef<Path>) -> Result<(FileList, ListSource)> {
    scan_cached_from(root.as_ref(), 0)
}

/// Folders with fewer files than this are listed again on every run rather than leave a cache
/// file beside the data ([`open_image_folder`]): listing 10,000 files takes milliseconds.
pub const CACHE_MIN_FILES: usize = 10_000;

/// [`scan_cached`], writing a new cache file only for a list of at least `min_files` files (a
/// valid cache is read whatever the size).
pub fn scan_cached_from(root: &Path, min_files: usize) -> Result<(FileList, ListSource)> {
    let key = cache_key(root)?;
    let places: Vec<PathBuf> = cache_next_to(root)
        .into_iter()
        .chain([cache_in_cache_dir(root)])
        .collect();
    for p in &places {
        if let Some(list) = read_cache(p, root, &key) {
            return Ok((list, ListSource::Cache));
        }
    }
    let (samples, classes) = scan_image_folder(root)?;
    let list = FileList::from_scan(root, samples, classes)?;
    for p in places.iter().filter(|_| list.len() >= min_files) {
        if write_cache(p, &list, &key).is_ok() {
            break;
        }
    }
    Ok((list, ListSource::Scan))
}

/// Estimated decoded (RGB8) size of the files of `list`, in bytes: the mean `H·W·3` of up to
/// [`SIZE_PROBES`] files spread evenly over the list (headers only) times the file count.
pub fn estimate_decoded_bytes(list: &FileList) -> Result<u64> {
    let n = list.len();
    if n == 0 {
        return Ok(0);
    }
    let k = n.min(SIZE_PROBES);
    let mut sum = 0u64;
    for j in 0..k {
        let i = j * n / k;
        let p = list.path(i);
        let (h, w) = image_size(&p)?;
        sum += w as u64 * h as u64 * 3;
    }
    Ok(sum * n as u64 / k as u64)
}

/// An image folder read and decoded per sample (see the module docs).
#[derive(Debug, Clone)]
pub struct StreamingFolder {
    list: FileList,
    scaled_decode: bool,
    /// `Some` with [`OnCorrupt::Skip`]: the files that failed, shared by clones.
    skipped: Option<Skipped>,
}

impl StreamingFolder {
    /// Stream `root` (file list from [`scan_cached`]).
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        Self::from_list(scan_cached(root)?.0)
    }

    /// Stream the files of `list`.
    pub fn from_list(list: FileList) -> Result<Self> {
        ensure!(
            !list.is_empty(),
            "{}: no .jpg/.jpeg/.png files in the class folders",
            list.root.display()
        );
        Ok(Self {
            list,
            scaled_decode: false,
            skipped: None,
        })
    }

    /// Stop at a file that fails to decode (the default), or hand the next file in list order
    /// that decodes in its place and note the failed one ([`OnCorrupt::Skip`]).
    pub fn with_on_corrupt(mut self, on_corrupt: OnCorrupt) -> Self {
        self.skipped = match on_corrupt {
            OnCorrupt::Stop => None,
            OnCorrupt::Skip => Some(Skipped::default()),
        };
        self
    }

    /// `read(index)`, or with [`OnCorrupt::Skip`] the first of `read(index + 1)`,
    /// `read(index + 2)`, … (wrapping around) that succeeds, noting each file that failed.
    fn or_next<T>(&self, index: usize, mut read: impl FnMut(usize) -> Result<T>) -> Result<T> {
        let Some(skipped) = &self.skipped else {
            return read(index);
        };
        let n = self.len();
        for k in 0..n {
            let j = (index + k) % n;
            match read(j) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    skipped.record(&self.list.path(j).display().to_string(), &e);
                }
            }
        }
        bail!(
            "{}: every one of its {n} files failed to decode",
            self.list.root.display()
        )
    }

    /// Decode JPEGs at a reduced scale where every view allows it ([`Dataset::get_scaled`],
    /// [`StreamPolicy::scaled_decode`]).
    pub fn with_scaled_decode(mut self, on: bool) -> Self {
        self.scaled_decode = on;
        self
    }

    /// The file list.
    pub fn list(&self) -> &FileList {
        &self.list
    }
}

impl Dataset for StreamingFolder {
    fn len(&self) -> usize {
        self.list.len()
    }

    fn get(&self, index: usize) -> Result<(ImageRef<'_>, i64)> {
        ensure!(
            index < self.len(),
            "sample index {index} out of range (data set has {})",
            self.len()
        );
        let ((pixels, height, width), label) = self.or_next(index, |j| {
            let img = decode_rgb(&self.list.path(j)).with_context(|| format!("sample {j}"))?;
            Ok((img, self.list.label(j)))
        })?;
        Ok((
            ImageRef {
                pixels: Cow::Owned(pixels),
                height,
                width,
                channels: 3,
            },
            label,
        ))
    }

    fn label(&self, index: usize) -> Result<i64> {
        ensure!(
            index < self.len(),
            "sample index {index} out of range (data set has {})",
            self.len()
        );
        Ok(self.list.label(index))
    }

    fn get_scaled(
        &self,
        index: usize,
        denom: &mut dyn FnMut(usize, usize) -> usize,
    ) -> Result<(ImageRef<'_>, i64, Source)> {
        if !self.scaled_decode {
            return Ok(decoded_in_full(self.get(index)?, denom));
        }
        ensure!(
            index < self.len(),
            "sample index {index} out of range (data set has {})",
            self.len()
        );
        let ((pixels, height, width, source), label) = self.or_next(index, |j| {
            let img = decode_rgb_scaled(&self.list.path(j), &mut *denom)
                .with_context(|| format!("sample {j}"))?;
            Ok((img, self.list.label(j)))
        })?;
        let img = ImageRef {
            pixels: Cow::Owned(pixels),
            height,
            width,
            channels: 3,
        };
        Ok((img, label, source))
    }

    fn classes(&self) -> &[String] {
        &self.list.classes
    }

    fn skipped(&self) -> Option<Skipped> {
        self.skipped.clone()
    }
}

/// An image folder opened by [`open_image_folder`].
#[derive(Debug)]
pub enum FolderData {
    InMemory(InMemoryDataset),
    Streaming(StreamingFolder),
}

impl FolderData {
    /// `true` on the streaming path.
    pub fn is_streaming(&self) -> bool {
        matches!(self, Self::Streaming(_))
    }
    /// As a shareable [`Dataset`].
    pub fn into_dataset(self) -> Arc<dyn Dataset> {
        match self {
            Self::InMemory(d) => Arc::new(d),
            Self::Streaming(d) => Arc::new(d),
        }
    }
}

/// Open `root` in memory or streamed, as `policy` decides (module docs). The choice is printed
/// as one line on stderr when the folder is streamed.
pub fn open_image_folder(root: impl AsRef<Path>, policy: &StreamPolicy) -> Result<FolderData> {
    let root = root.as_ref();
    let (list, _) = scan_cached_from(root, CACHE_MIN_FILES)?;
    ensure!(
        !list.is_empty(),
        "{}: no .jpg/.jpeg/.png files in the class folders",
        root.display()
    );
    let stream = match policy.stream {
        Some(s) => s,
        None => estimate_decoded_bytes(&list)? > policy.stream_above_mib.saturating_mul(1 << 20),
    };
    if stream {
        eprintln!(
            "data: streaming {} ({} files, decoded per sample in the loader's threads)",
            root.display(),
            list.len()
        );
        Ok(FolderData::Streaming(
            StreamingFolder::from_list(list)?
                .with_scaled_decode(policy.scaled_decode)
                .with_on_corrupt(policy.on_corrupt),
        ))
    } else {
        let classes = list.classes.clone();
        Ok(FolderData::InMemory(decode_all(
            root,
            list.samples(),
            classes,
            policy.on_corrupt,
        )?))
    }
}

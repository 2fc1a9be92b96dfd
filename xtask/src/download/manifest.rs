//! Data set manifests (`datasets/<name>.toml`): the format, its validation, and the URLs a file
//! is fetched from. The format is documented in `datasets/README.md`.

use super::manifest_dir;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::fmt;
use std::fs;
use std::path::{Component, Path, PathBuf};

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
    /// The shipped manifest `datasets/<name>.toml`, or `$CONTRAST_MANIFESTS/<name>.toml` when
    /// that folder has one (a private mirror, or the tests' local server).
    pub fn named(name: &str) -> Result<Manifest> {
        let own = std::env::var_os("CONTRAST_MANIFESTS")
            .filter(|d| !d.is_empty())
            .map(|d| PathBuf::from(d).join(format!("{name}.toml")))
            .filter(|p| p.is_file());
        let path = match own {
            Some(p) => {
                println!("{name}: manifest {} (CONTRAST_MANIFESTS)", p.display());
                p
            }
            None => manifest_dir().join(format!("{name}.toml")),
        };
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

pub(super) fn known_names(dir: &Path) -> Vec<String> {
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

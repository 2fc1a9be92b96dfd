//! Archive extraction (tar, tar.gz, zip) that refuses entries escaping the destination, links,
//! and archives that expand past a bound (decompression bombs). Errors name the archive.

use super::Extract;
use anyhow::{bail, Context, Result};
use std::fs::{self, File};
use std::io::{self, Read, Seek};
use std::path::Path;

/// What an archive of `archive_bytes` may write in all: 100 × its size, at least 64 MiB. Data
/// sets (images, volumes, binaries) compress far less than that; a decompression bomb (deflate
/// reaches ≈ 1000×, overlapping zip entries more) is refused before it fills the disk. Every
/// entry counts at least 512 bytes, so that millions of empty files are refused too.
pub fn extract_budget(archive_bytes: u64) -> u64 {
    archive_bytes.saturating_mul(100).max(64 << 20)
}

/// Extract `archive` into `dir`. Entries that would land outside `dir`, symbolic and hard
/// links, sparse files, and archives writing more than [`extract_budget`] are refused. Returns
/// the number of entries written.
pub fn extract(archive: &Path, kind: Extract, dir: &Path) -> Result<usize> {
    let file = File::open(archive).with_context(|| format!("cannot open {}", archive.display()))?;
    let size = file
        .metadata()
        .with_context(|| format!("cannot read {}", archive.display()))?
        .len();
    let budget = Budget {
        left: extract_budget(size),
        total: extract_budget(size),
    };
    let reader = io::BufReader::with_capacity(1 << 20, file);
    match kind {
        Extract::None => Ok(0),
        Extract::Tar => untar(tar::Archive::new(reader), dir, budget),
        Extract::TarGz => untar(
            tar::Archive::new(flate2::read::GzDecoder::new(reader)),
            dir,
            budget,
        ),
        Extract::Zip => unzip(reader, dir, budget),
    }
    .with_context(|| format!("archive {}", archive.display()))
}

/// Bytes an archive may still write.
struct Budget {
    left: u64,
    total: u64,
}

impl Budget {
    /// Charge an entry of `bytes` (at least 512) named `name`.
    fn charge(&mut self, bytes: u64, name: &str) -> Result<()> {
        let cost = bytes.max(512);
        if cost > self.left {
            bail!(
                "refusing the entry `{name}` ({bytes} bytes): the archive would expand past {} \
                 bytes (100 × its size; a decompression bomb?)",
                self.total
            );
        }
        self.left -= cost;
        Ok(())
    }
}

fn untar<R: Read>(mut ar: tar::Archive<R>, dir: &Path, mut budget: Budget) -> Result<usize> {
    ar.set_overwrite(true);
    ar.set_preserve_permissions(false);
    let mut n = 0;
    for entry in ar.entries().context("not a readable tar archive")? {
        let mut entry = entry.context("corrupt tar entry")?;
        let name = entry
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            bail!(
                "refusing the tar entry `{name}`: a {} link (a data set holds plain files)",
                if kind.is_symlink() {
                    "symbolic"
                } else {
                    "hard"
                }
            );
        }
        if kind.is_gnu_sparse() {
            bail!("refusing the tar entry `{name}`: a sparse file (a data set holds plain files)");
        }
        budget.charge(entry.size(), &name)?;
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

fn unzip<R: Read + Seek>(reader: R, dir: &Path, mut budget: Budget) -> Result<usize> {
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
        if entry.is_symlink() {
            bail!(
                "refusing the zip entry `{}`: a symbolic link (a data set holds plain files)",
                entry.name()
            );
        }
        // a link already in the folder must not redirect the entry elsewhere
        let mut at = dir.to_path_buf();
        for c in rel.components() {
            at.push(c);
            if at
                .symlink_metadata()
                .is_ok_and(|m| m.file_type().is_symlink())
            {
                bail!(
                    "refusing the zip entry `{}`: {} is a symbolic link",
                    entry.name(),
                    at.display()
                );
            }
        }
        let out = dir.join(rel);
        if entry.is_dir() {
            budget.charge(0, entry.name())?;
            fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
            continue;
        }
        budget.charge(entry.size(), entry.name())?;
        if let Some(parent) = out.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let mut w =
            File::create(&out).with_context(|| format!("cannot create {}", out.display()))?;
        // the declared size was charged; a stream longer than declared is cut and refused
        let declared = entry.size();
        let name = entry.name().to_string();
        let written = io::copy(&mut (&mut entry).take(declared + 1), &mut w)
            .with_context(|| format!("cannot extract `{name}`"))?;
        if written > declared {
            bail!(
                "refusing the zip entry `{name}`: it holds more than its declared {declared} bytes"
            );
        }
    }
    Ok(zip.len())
}

//! Archive extraction (tar, tar.gz, zip) that refuses entries escaping the destination.

use super::Extract;
use anyhow::{bail, Context, Result};
use std::fs::{self, File};
use std::io::{self, Read, Seek};
use std::path::Path;

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

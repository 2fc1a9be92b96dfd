//! The LA h5 format of UA-MT (`code/dataloaders/la_heart_processing.py`), also read by MC-Net+
//! and FBA-Net: one file per case, `<root>/2018LA_Seg_Training Set/<ID>/mri_norm2.h5`, with
//! datasets `image` (float32, z-scored, axes x, y, z) and `label` (uint8 0/1).

use super::{Case, Volume};
use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};

/// Reads one dataset of an HDF5 file as a 3-D array of `T`, converting the stored type
/// (HDF5 converts between numeric types on read).
fn read_dataset<T: hdf5::H5Type + Copy + Default>(
    file: &hdf5::File,
    name: &str,
    path: &Path,
) -> Result<Volume<T>> {
    let ds = file
        .dataset(name)
        .map_err(|e| anyhow!("{}: no dataset `{name}`: {e}", path.display()))?;
    let shape = ds.shape();
    if shape.len() != 3 {
        bail!(
            "{}: dataset `{name}` has shape {shape:?}, expected 3 axes (x, y, z)",
            path.display()
        );
    }
    if super::voxels_within_bound(&shape).is_none() {
        bail!(
            "{}: dataset `{name}` has shape {shape:?}, more than {} voxels (corrupt file?)",
            path.display(),
            super::MAX_VOXELS
        );
    }
    check_storage(file, &ds, name, path)?;
    let data: Vec<T> = ds
        .read_raw::<T>()
        .map_err(|e| anyhow!("{}: reading dataset `{name}`: {e}", path.display()))?;
    Volume::new([shape[0], shape[1], shape[2]], data)
        .with_context(|| format!("{}: dataset `{name}`", path.display()))
}

/// Refuses a dataset whose storage cannot hold its shape: libhdf5 (1.10.8) trusts the layout
/// message and copies past its buffer (SIGSEGV) when, say, a compact dataset of 24 floats holds
/// 0 bytes or contiguous data runs past the end of the file. Chunked data is left to libhdf5.
fn check_storage(file: &hdf5::File, ds: &hdf5::Dataset, name: &str, path: &Path) -> Result<()> {
    use hdf5::dataset::Layout;
    let elem = ds
        .dtype()
        .map_err(|e| {
            anyhow!(
                "{}: dataset `{name}` has no readable type: {e}",
                path.display()
            )
        })?
        .size() as u64;
    let need = ds.size() as u64 * elem;
    let have = ds.storage_size();
    let short = || {
        anyhow!(
            "{}: dataset `{name}` needs {need} bytes but its storage holds {have} (corrupt file?)",
            path.display()
        )
    };
    match ds.layout() {
        Layout::Compact if have < need => return Err(short()),
        Layout::Contiguous => {
            // no offset: never written, read as its fill value
            if let Some(off) = ds.offset() {
                if have < need {
                    return Err(short());
                }
                if off.saturating_add(need) > file.size() {
                    bail!(
                        "{}: dataset `{name}`'s {need} bytes at offset {off} run past the end of \
                         the file ({} bytes; cut short?)",
                        path.display(),
                        file.size()
                    );
                }
            }
        }
        Layout::Compact | Layout::Chunked => {}
        #[allow(unreachable_patterns)]
        other => bail!(
            "{}: dataset `{name}` has the unsupported layout {other:?}",
            path.display()
        ),
    }
    Ok(())
}

/// Opens an HDF5 file, with an error naming it (also for truncated / non-HDF5 files).
fn open(path: &Path) -> Result<hdf5::File> {
    if !path.is_file() {
        bail!("{}: no such file", path.display());
    }
    hdf5::File::open(path).map_err(|e| anyhow!("{}: not a readable HDF5 file: {e}", path.display()))
}

/// Reads an image/label pair from one h5 file (`image_key`, `label_key` are the dataset names;
/// the LA files use `image` and `label`).
pub fn read_h5_case(
    path: impl AsRef<Path>,
    id: &str,
    image_key: &str,
    label_key: &str,
) -> Result<Case> {
    let path = path.as_ref();
    let file = open(path)?;
    let image = read_dataset::<f32>(&file, image_key, path)?;
    let label = read_dataset::<u8>(&file, label_key, path)?;
    Case::new(id, image, label).with_context(|| path.display().to_string())
}

/// Reads one float volume (any numeric type on disk) from an h5 file.
pub fn read_h5_volume(path: impl AsRef<Path>, key: &str) -> Result<Volume<f32>> {
    let path = path.as_ref();
    let file = open(path)?;
    read_dataset::<f32>(&file, key, path)
}

/// Writes an image/label pair as an h5 file with the LA layout (used by tests and to export
/// converted cases).
pub fn write_h5_case(path: impl AsRef<Path>, case: &Case) -> Result<()> {
    let path = path.as_ref();
    let file = hdf5::File::create(path)
        .map_err(|e| anyhow!("{}: creating HDF5 file: {e}", path.display()))?;
    let [x, y, z] = case.image.shape;
    file.new_dataset::<f32>()
        .shape([x, y, z])
        .create("image")
        .and_then(|d| d.write_raw(&case.image.data))
        .map_err(|e| anyhow!("{}: writing `image`: {e}", path.display()))?;
    file.new_dataset::<u8>()
        .shape([x, y, z])
        .create("label")
        .and_then(|d| d.write_raw(&case.label.data))
        .map_err(|e| anyhow!("{}: writing `label`: {e}", path.display()))?;
    Ok(())
}

/// The LA data set layout: `<root>/2018LA_Seg_Training Set/<ID>/mri_norm2.h5` (note the space
/// in the folder name, as in the original repositories) with `train.list` / `test.list` in
/// `<root>`.
#[derive(Debug, Clone)]
pub struct LaHeart {
    /// Folder holding the lists and `2018LA_Seg_Training Set/`.
    pub root: PathBuf,
}

impl LaHeart {
    /// Sub-folder of the cases.
    pub const CASES_DIR: &'static str = "2018LA_Seg_Training Set";

    /// A data set root; errors when the cases folder is missing.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        if !root.join(Self::CASES_DIR).is_dir() {
            bail!(
                "{}: no `{}` folder (LA data root expected; `cargo xtask download la-heart`)",
                root.display(),
                Self::CASES_DIR
            );
        }
        Ok(Self { root })
    }

    /// Path of a case's h5 file.
    pub fn case_path(&self, id: &str) -> PathBuf {
        self.root
            .join(Self::CASES_DIR)
            .join(id)
            .join("mri_norm2.h5")
    }

    /// Case ids of a list file in the root (`train.list`, `test.list`).
    pub fn list(&self, name: &str) -> Result<Vec<String>> {
        super::caselist::read_case_list(self.root.join(name))
    }

    /// Reads one case.
    pub fn case(&self, id: &str) -> Result<Case> {
        read_h5_case(self.case_path(id), id, "image", "label")
    }
}

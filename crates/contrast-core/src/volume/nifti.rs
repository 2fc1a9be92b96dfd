//! NIfTI-1 (`.nii`, `.nii.gz`) with the `nifti` crate (0.17).
//!
//! Reading: the header is checked first and the file read only as far as its voxels reach
//! (see [`read_nifti`]); the crate decodes any integer or float datatype, big- or little-endian, applies
//! `scl_slope`/`scl_inter` when the slope is non-zero, and returns a **column-major** array of
//! logical shape `(x, y, z, …)`; here it is copied into the C-order [`Volume`] layout (same
//! logical axes, so `vol.get(i, j, k)` is NIfTI voxel `(i, j, k)` as in nibabel's
//! `get_fdata()[i, j, k]`). Trailing dimensions of size 1 are dropped; a genuine 4-D series is an
//! error. NIfTI-2 files and `.hdr`/`.img` pairs are rejected. gz is detected from the file name.
//!
//! Writing: [`write_nifti`] stores a volume (e.g. a predicted label map) with `pixdim` from the
//! volume's spacing (or a reference header), `.nii.gz` compressed by name.

use super::Volume;
use anyhow::{anyhow, bail, Context, Result};
use ndarray::Array3;
use nifti::{InMemNiftiObject, IntoNdArray, NiftiHeader, NiftiObject};
use std::path::Path;

/// A NIfTI volume with its header.
#[derive(Debug, Clone)]
pub struct NiftiVolume {
    /// Voxel values as `f32` after scaling; `spacing` from `pixdim[1..4]`.
    pub volume: Volume<f32>,
    /// The file's header (affine, units, description …), e.g. as the reference header for
    /// writing a prediction aligned with the image.
    pub header: NiftiHeader,
}

/// Reads a 3-D NIfTI-1 file as `f32` (scaled).
///
/// The header is checked before any voxel buffer is sized (a corrupt or hostile header must not
/// make the reader allocate or panic): a supported datatype whose `bitpix` agrees with it (the
/// `nifti` crate sizes the data by `bitpix` and decodes it by `datatype`, and panics when they
/// disagree), at most [`MAX_VOXELS`](super::MAX_VOXELS) voxels, `vox_offset` ≤ 64 MiB, and
/// every voxel byte present in the (decompressed) file. Memory then grows with the bytes
/// actually read, never with what the header claims.
pub fn read_nifti(path: impl AsRef<Path>) -> Result<NiftiVolume> {
    let path = path.as_ref();
    if !path.is_file() {
        bail!("{}: no such file", path.display());
    }
    let bytes = read_checked(path)?;
    let obj = InMemNiftiObject::from_reader(std::io::Cursor::new(bytes))
        .map_err(|e| anyhow!("{}: not a readable NIfTI-1 file: {e}", path.display()))?;
    let header = obj.header().clone();
    let arr = obj
        .into_volume()
        .into_ndarray::<f32>()
        .map_err(|e| anyhow!("{}: decoding voxels: {e}", path.display()))?;
    let shape = arr.shape().to_vec();
    if shape.len() < 3 || shape[3..].iter().any(|&d| d != 1) {
        bail!(
            "{}: shape {shape:?} is not a 3-D volume (trailing dimensions must be 1)",
            path.display()
        );
    }
    let [x, y, z] = [shape[0], shape[1], shape[2]];
    let arr3 = arr
        .into_shape_with_order(((x, y, z), ndarray::Order::F))
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("{}: reshaping to ({x}, {y}, {z})", path.display()))?;
    let data: Vec<f32> = arr3.as_standard_layout().iter().copied().collect();
    let mut volume = Volume::new([x, y, z], data)?;
    let p = header.pixdim;
    if p[1] > 0.0 && p[2] > 0.0 && p[3] > 0.0 {
        volume.spacing = Some([p[1] as f64, p[2] as f64, p[3] as f64]);
    }
    Ok(NiftiVolume { volume, header })
}

/// The largest `vox_offset` accepted (header + extensions): 64 MiB.
const MAX_VOX_OFFSET: f32 = (64 << 20) as f32;

/// The file's bytes (decompressed for `.gz`) up to the end of the voxel data, after checking
/// the header (see [`read_nifti`]).
fn read_checked(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let name = path.display();
    let file = std::fs::File::open(path).with_context(|| format!("reading {name}"))?;
    let file = std::io::BufReader::new(file);
    let mut r: Box<dyn Read> = if path.to_string_lossy().ends_with(".gz") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut bytes = Vec::with_capacity(352);
    r.by_ref()
        .take(348)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {name}"))?;
    let header = NiftiHeader::from_reader(&bytes[..])
        .map_err(|e| anyhow!("{name}: not a readable NIfTI-1 file: {e}"))?;
    let dt = header
        .data_type()
        .map_err(|e| anyhow!("{name}: not a readable NIfTI-1 file: {e}"))?;
    use nifti::NiftiType::*;
    if !matches!(
        dt,
        Uint8 | Int8 | Uint16 | Int16 | Uint32 | Int32 | Uint64 | Int64 | Float32 | Float64
    ) {
        bail!("{name}: NIfTI datatype {dt:?} is not supported (integers and floats are)");
    }
    if header.bitpix as usize != 8 * dt.size_of() {
        bail!(
            "{name}: bitpix {} does not match datatype {dt:?} ({} bits): corrupt header",
            header.bitpix,
            8 * dt.size_of()
        );
    }
    let dims: Vec<usize> = header
        .dim()
        .map_err(|e| anyhow!("{name}: not a readable NIfTI-1 file: {e}"))?
        .iter()
        .map(|&d| d as usize)
        .collect();
    let Some(voxels) = super::voxels_within_bound(&dims) else {
        bail!(
            "{name}: dimensions {dims:?} exceed {} voxels (corrupt header?)",
            super::MAX_VOXELS
        );
    };
    // as the crate reads it: the voxels start at vox_offset, never before byte 352
    let off = header.vox_offset;
    if off > MAX_VOX_OFFSET {
        bail!("{name}: vox_offset {off} is beyond {MAX_VOX_OFFSET} (corrupt header?)");
    }
    let start = if off > 352.0 { off as u64 } else { 352 };
    let need = start + voxels * dt.size_of() as u64;
    r.take(need - bytes.len() as u64)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {name}"))?;
    if (bytes.len() as u64) < need {
        bail!(
            "{name}: holds {} bytes, its header needs {need} ({dims:?} × {} bytes from byte \
             {start}): cut short?",
            bytes.len(),
            dt.size_of()
        );
    }
    Ok(bytes)
}

/// Element types a NIfTI file can be written with (`u8` label maps, `i16`, `f32`).
pub trait NiftiElement: Copy + Default {
    #[doc(hidden)]
    fn write_array(opts: &nifti::writer::WriterOptions, arr: &Array3<Self>) -> nifti::Result<()>;
}
macro_rules! nifti_element {
    ($($t:ty),*) => {$(
        impl NiftiElement for $t {
            fn write_array(
                opts: &nifti::writer::WriterOptions,
                arr: &Array3<Self>,
            ) -> nifti::Result<()> {
                opts.write_nifti(arr)
            }
        }
    )*};
}
nifti_element!(u8, i16, f32);

/// Writes a volume as NIfTI-1 (`.nii.gz` compressed when the name ends in `.gz`). The header is
/// `reference` (qform/sform, description …) when given, with `dim`, `datatype` and scaling set for
/// `vol`; `pixdim[1..4]` is the volume's spacing when it has one (1 mm without either).
pub fn write_nifti<T: NiftiElement>(
    path: impl AsRef<Path>,
    vol: &Volume<T>,
    reference: Option<&NiftiHeader>,
) -> Result<()> {
    let path = path.as_ref();
    let [x, y, z] = vol.shape;
    // C-order (x, y, z); the writer transposes to NIfTI's column-major order itself.
    let arr = Array3::from_shape_vec((x, y, z), vol.data.clone()).map_err(|e| anyhow!("{e}"))?;
    let mut header = reference.cloned().unwrap_or_default();
    if let Some(s) = vol.spacing {
        header.pixdim[1] = s[0] as f32;
        header.pixdim[2] = s[1] as f32;
        header.pixdim[3] = s[2] as f32;
    } else if reference.is_none() {
        header.pixdim[1..4].copy_from_slice(&[1.0, 1.0, 1.0]);
    }
    let gz = path.to_string_lossy().ends_with(".gz");
    let opts = nifti::writer::WriterOptions::new(path)
        .reference_header(&header)
        .compress(gz);
    T::write_array(&opts, &arr).map_err(|e| anyhow!("{}: writing NIfTI: {e}", path.display()))
}

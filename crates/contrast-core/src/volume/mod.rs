//! 3D volumes for medical segmentation (FBA-Net, Spade): I/O, augmentation and sliding-window
//! inference. Generic: nothing here knows about a particular data set.
//!
//! * [`Volume`]: a dense `f32` (or label `u8`) array in **C order with logical axes (x, y, z)** —
//!   the axis order of numpy/h5py arrays in the UA-MT/MC-Net/FBA-Net pipelines and of NIfTI's
//!   `(i, j, k)` voxel indices. Index `(x, y, z)` lives at `(x·Y + y)·Z + z`.
//! * [`h5`]: the LA h5 format (`image` float32, `label` uint8), read with `hdf5-metno`.
//! * [`nifti`]: NIfTI-1 `.nii`/`.nii.gz` read (scaling, endianness and column-major order handled
//!   by the `nifti` crate + a transpose here) and write (predictions).
//! * [`caselist`]: `train.list` / `test.list` files (one case id per line).
//! * [`augment3d`]: rot90 in the x-y plane + flip, random crop with the UA-MT padding rule,
//!   centre crop, and the two-stream (labelled / unlabelled) batch sampler.
//! * [`sliding`]: sliding-window inference with a voxel stride, averaging probabilities.

pub mod augment3d;
pub mod caselist;
pub mod crops;
pub mod h5;
pub mod nifti;
pub mod sliding;

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

/// The most voxels a volume read from a file may have: 2²⁸ (268 million, 1 GiB as `f32`; a
/// 512 × 512 × 1024 CT is 2²⁸). A header claiming more (a corrupt or hostile file: an h5 dataset
/// of unwritten chunks or a NIfTI header costs a few bytes whatever the shape it declares) is
/// refused before anything is allocated.
pub const MAX_VOXELS: u64 = 1 << 28;

/// The voxel count of `shape` when it is at most [`MAX_VOXELS`].
pub fn voxels_within_bound(shape: &[usize]) -> Option<u64> {
    shape
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
        .filter(|&n| n <= MAX_VOXELS)
}

/// A 3D array in C order, logical axes (x, y, z), with optional voxel spacing in mm.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume<T> {
    /// `[X, Y, Z]`.
    pub shape: [usize; 3],
    /// `X·Y·Z` values, index `(x·Y + y)·Z + z`.
    pub data: Vec<T>,
    /// Voxel size along (x, y, z) in mm, when the file carries it (NIfTI `pixdim[1..4]`).
    pub spacing: Option<[f64; 3]>,
}

impl<T: Copy + Default> Volume<T> {
    /// A volume from C-order data; errors when the length does not match the shape.
    pub fn new(shape: [usize; 3], data: Vec<T>) -> Result<Self> {
        let n = shape.iter().product::<usize>();
        if data.len() != n {
            bail!(
                "volume data has {} values, shape {:?} needs {n}",
                data.len(),
                shape
            );
        }
        Ok(Self {
            shape,
            data,
            spacing: None,
        })
    }

    /// All-default volume of a shape.
    pub fn zeros(shape: [usize; 3]) -> Self {
        Self {
            shape,
            data: vec![T::default(); shape.iter().product()],
            spacing: None,
        }
    }

    /// Flat index of `(x, y, z)`.
    #[inline]
    pub fn idx(&self, x: usize, y: usize, z: usize) -> usize {
        (x * self.shape[1] + y) * self.shape[2] + z
    }

    /// Value at `(x, y, z)`.
    #[inline]
    pub fn get(&self, x: usize, y: usize, z: usize) -> T {
        self.data[self.idx(x, y, z)]
    }

    /// Number of voxels.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True for a volume without voxels.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Map every value.
    pub fn map<U: Copy + Default>(&self, f: impl Fn(T) -> U) -> Volume<U> {
        Volume {
            shape: self.shape,
            data: self.data.iter().map(|&v| f(v)).collect(),
            spacing: self.spacing,
        }
    }
}

impl Volume<f32> {
    /// `[X, Y, Z]` float tensor (CPU).
    pub fn to_tensor(&self) -> Tensor {
        let s = self.shape.map(|v| v as i64);
        Tensor::from_slice(&self.data).reshape(s)
    }

    /// From a 3-D tensor `[X, Y, Z]` (any float kind, any device).
    pub fn from_tensor(t: &Tensor) -> Result<Self> {
        let size = t.size();
        if size.len() != 3 {
            bail!("expected a 3-D tensor [X, Y, Z], got {size:?}");
        }
        let flat = t
            .to_kind(Kind::Float)
            .to_device(tch::Device::Cpu)
            .contiguous()
            .view(-1);
        let data = Vec::<f32>::try_from(&flat)?;
        Volume::new([size[0] as usize, size[1] as usize, size[2] as usize], data)
    }
}

impl Volume<u8> {
    /// `[X, Y, Z]` uint8 tensor (CPU).
    pub fn to_tensor(&self) -> Tensor {
        let s = self.shape.map(|v| v as i64);
        Tensor::from_slice(&self.data).reshape(s)
    }

    /// Binary mask `v != 0`.
    pub fn to_mask(&self) -> Volume<bool> {
        self.map(|v| v != 0)
    }
}

/// An image with its label map, one case of a segmentation data set.
#[derive(Debug, Clone)]
pub struct Case {
    /// Case identifier (the line of the case list).
    pub id: String,
    /// Intensities.
    pub image: Volume<f32>,
    /// Class index per voxel (0 = background).
    pub label: Volume<u8>,
}

impl Case {
    /// Checks that image and label have the same shape.
    pub fn new(id: impl Into<String>, image: Volume<f32>, label: Volume<u8>) -> Result<Self> {
        let id = id.into();
        if image.shape != label.shape {
            bail!(
                "case {id}: image shape {:?} differs from label shape {:?}",
                image.shape,
                label.shape
            );
        }
        Ok(Self { id, image, label })
    }
}

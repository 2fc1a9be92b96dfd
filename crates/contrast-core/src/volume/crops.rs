//! 3-D crops that remember where they came from: the geometry that spatial-prior methods (Spade,
//! PGL-style local contrast) need to relate two crops.
//!
//! A [`CropGeometry`] is a box of a volume `[X, Y, Z]` (origin + size, in voxels) followed by
//! optional flips of the crop's axes and `rot90` quarter turns in its (x, y) plane (in that
//! order, as [`CropGeometry::extract`] applies them with libtorch's `flip` and `rot90`). It maps
//! every voxel of the transformed crop back to volume coordinates ([`CropGeometry::to_volume`])
//! and back ([`CropGeometry::from_volume`]), so the voxels two crops of one volume share are
//! known exactly ([`correspondences`]). Positions are also expressed in a normalised frame
//! (`[0, 1]³` relative to the whole volume or to a body bounding box, [`body_bbox`]), which is
//! how crops of *different* volumes are compared ([`spatial_negative_mask`]).
#![allow(clippy::needless_range_loop)] // per-axis index arithmetic over [i64; 3] reads best with `a`

use anyhow::{ensure, Result};
use tch::{Kind, Tensor};

/// A crop box plus the flips and rotation applied to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropGeometry {
    /// `[X, Y, Z]` of the source volume.
    pub volume: [i64; 3],
    /// First voxel of the box in the volume.
    pub origin: [i64; 3],
    /// Box size (before rotation).
    pub size: [i64; 3],
    /// Flip along the crop's x, y, z (applied before the rotation).
    pub flips: [bool; 3],
    /// Quarter turns in the (x, y) plane, `torch.rot90(k, dims=(0, 1))` (0…3); odd `k` needs a
    /// square (x, y) box so that every crop of a batch keeps its shape.
    pub rot90: i64,
}

impl CropGeometry {
    /// A checked geometry: the box lies inside the volume, `rot90` in 0…3, square (x, y) for odd
    /// turns.
    pub fn new(
        volume: [i64; 3],
        origin: [i64; 3],
        size: [i64; 3],
        flips: [bool; 3],
        rot90: i64,
    ) -> Result<Self> {
        ensure!(
            (0..3).all(|a| size[a] > 0 && origin[a] >= 0 && origin[a] + size[a] <= volume[a]),
            "crop origin {origin:?} size {size:?} does not fit the volume {volume:?}"
        );
        ensure!((0..4).contains(&rot90), "rot90 must be 0…3, got {rot90}");
        ensure!(
            rot90 % 2 == 0 || size[0] == size[1],
            "an odd number of quarter turns needs a square (x, y) crop, got {size:?}"
        );
        Ok(Self {
            volume,
            origin,
            size,
            flips,
            rot90,
        })
    }

    /// Shape of the extracted (transformed) crop.
    pub fn shape(&self) -> [i64; 3] {
        if self.rot90 % 2 == 1 {
            [self.size[1], self.size[0], self.size[2]]
        } else {
            self.size
        }
    }

    /// The crop of `[..., X, Y, Z]` (leading channel dimensions allowed) with flips and rotation.
    pub fn extract(&self, vol: &Tensor) -> Result<Tensor> {
        let d = vol.dim() as i64;
        ensure!(
            d >= 3,
            "a volume needs at least 3 dimensions, got {:?}",
            vol.size()
        );
        let s = &vol.size()[(d - 3) as usize..];
        ensure!(
            s == self.volume,
            "volume {:?} is not the crop's source shape {:?}",
            s,
            self.volume
        );
        let mut t = vol.shallow_clone();
        for a in 0..3 {
            t = t.narrow(d - 3 + a, self.origin[a as usize], self.size[a as usize]);
        }
        let flip: Vec<i64> = (0..3)
            .filter(|&a| self.flips[a as usize])
            .map(|a| d - 3 + a)
            .collect();
        if !flip.is_empty() {
            t = t.flip(&flip);
        }
        if self.rot90 != 0 {
            t = t.rot90(self.rot90, [d - 3, d - 2]);
        }
        Ok(t)
    }

    /// Volume coordinates of voxel `v` of the extracted crop.
    pub fn to_volume(&self, v: [i64; 3]) -> [i64; 3] {
        // undo the quarter turns one at a time: after one turn out[i][j] = in[j][n1 − 1 − i],
        // where n1 is the input's size along y
        let mut c = v;
        let mut dims = self.size;
        // sizes of the tensor before each of the k turns
        let mut before = Vec::with_capacity(self.rot90 as usize);
        for _ in 0..self.rot90 {
            before.push(dims);
            dims = [dims[1], dims[0], dims[2]];
        }
        for sz in before.iter().rev() {
            c = [c[1], sz[1] - 1 - c[0], c[2]];
        }
        for a in 0..3 {
            if self.flips[a] {
                c[a] = self.size[a] - 1 - c[a];
            }
            c[a] += self.origin[a];
        }
        c
    }

    /// The crop voxel showing volume voxel `p`, or `None` outside the box.
    pub fn from_volume(&self, p: [i64; 3]) -> Option<[i64; 3]> {
        let mut c = [0; 3];
        for a in 0..3 {
            c[a] = p[a] - self.origin[a];
            if c[a] < 0 || c[a] >= self.size[a] {
                return None;
            }
            if self.flips[a] {
                c[a] = self.size[a] - 1 - c[a];
            }
        }
        // apply the turns forward: in[x][y] lands at out[n1 − 1 − y][x]
        let mut dims = self.size;
        for _ in 0..self.rot90 {
            c = [dims[1] - 1 - c[1], c[0], c[2]];
            dims = [dims[1], dims[0], dims[2]];
        }
        Some(c)
    }

    /// Box centre in a normalised frame `[lo, hi)` of the volume (`[0, 1]³` for the whole
    /// volume: `lo = 0`, `hi = volume`).
    pub fn normalized_centre(&self, lo: [i64; 3], hi: [i64; 3]) -> [f64; 3] {
        let mut out = [0.0; 3];
        for a in 0..3 {
            let centre = self.origin[a] as f64 + self.size[a] as f64 / 2.0;
            out[a] = (centre - lo[a] as f64) / (hi[a] - lo[a]).max(1) as f64;
        }
        out
    }
}

/// Corresponding voxels of two crops of one volume: every voxel of `a` whose volume position
/// lies inside `b`, as `(voxel in a, voxel in b)` in `a`'s row-major order.
pub fn correspondences(a: &CropGeometry, b: &CropGeometry) -> Result<Vec<([i64; 3], [i64; 3])>> {
    ensure!(
        a.volume == b.volume,
        "crops of different volumes ({:?} vs {:?}) have no voxel correspondence",
        a.volume,
        b.volume
    );
    let s = a.shape();
    let mut out = Vec::new();
    for i in 0..s[0] {
        for j in 0..s[1] {
            for k in 0..s[2] {
                if let Some(w) = b.from_volume(a.to_volume([i, j, k])) {
                    out.push(([i, j, k], w));
                }
            }
        }
    }
    Ok(out)
}

/// Bounding box `[lo, hi)` of the voxels above `threshold` in `[X, Y, Z]` (the body after
/// intensity thresholding); the whole volume when none is.
pub fn body_bbox(vol: &Tensor, threshold: f64) -> Result<([i64; 3], [i64; 3])> {
    let s = vol.size();
    ensure!(s.len() == 3, "body_bbox expects [X, Y, Z], got {s:?}");
    let idx = vol.gt(threshold).nonzero(); // [K, 3]
    if idx.size()[0] == 0 {
        return Ok(([0; 3], [s[0], s[1], s[2]]));
    }
    let lo = Vec::<i64>::try_from(idx.amin(0, false))?;
    let hi = Vec::<i64>::try_from(idx.amax(0, false) + 1)?;
    Ok(([lo[0], lo[1], lo[2]], [hi[0], hi[1], hi[2]]))
}

/// Which pairs of crops may serve as negatives: `[N, N]` bool, false on the diagonal and where
/// the Euclidean distance of the crops' normalised centres `[N, 3]` is below `threshold` (the
/// spatial debiasing: crops at corresponding positions of different volumes are likely the same
/// anatomy, so they are not pushed apart).
pub fn spatial_negative_mask(centres: &Tensor, threshold: f64) -> Result<Tensor> {
    let s = centres.size();
    ensure!(
        s.len() == 2 && s[1] == 3,
        "normalised crop centres must be [N, 3], got {s:?}"
    );
    let c = centres.to_kind(Kind::Double);
    let d = c
        .unsqueeze(1)
        .f_sub(&c.unsqueeze(0))?
        .square()
        .sum_dim_intlist(2, false, Kind::Double)
        .sqrt();
    let eye = Tensor::eye(s[0], (Kind::Bool, centres.device()));
    Ok(d.ge(threshold).logical_and(&eye.logical_not()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A volume whose voxel values encode their coordinates: `x·10⁴ + y·10² + z`.
    fn coded(shape: [i64; 3]) -> Tensor {
        let x = Tensor::arange(shape[0], (Kind::Int64, tch::Device::Cpu)).view([-1, 1, 1]) * 10_000;
        let y = Tensor::arange(shape[1], (Kind::Int64, tch::Device::Cpu)).view([1, -1, 1]) * 100;
        let z = Tensor::arange(shape[2], (Kind::Int64, tch::Device::Cpu)).view([1, 1, -1]);
        x + y + z
    }

    fn decode(v: i64) -> [i64; 3] {
        [v / 10_000, v / 100 % 100, v % 100]
    }

    #[test]
    fn geometry_maps_every_voxel_after_flips_and_turns() {
        let shape = [20, 18, 12];
        let vol = coded(shape);
        for rot in 0..4 {
            for f in 0..8u8 {
                let flips = [f & 1 != 0, f & 2 != 0, f & 4 != 0];
                let g = CropGeometry::new(shape, [3, 5, 2], [8, 8, 6], flips, rot).unwrap();
                let crop = g.extract(&vol).unwrap();
                assert_eq!(crop.size(), g.shape().to_vec());
                let s = g.shape();
                for i in 0..s[0] {
                    for j in 0..s[1] {
                        for k in 0..s[2] {
                            let p = decode(crop.int64_value(&[i, j, k]));
                            assert_eq!(g.to_volume([i, j, k]), p, "rot {rot} flips {flips:?}");
                            assert_eq!(g.from_volume(p), Some([i, j, k]));
                        }
                    }
                }
                assert_eq!(g.from_volume([2, 5, 2]), None);
            }
        }
        // a non-square box rotates by an even number of turns only
        assert!(CropGeometry::new(shape, [0; 3], [8, 6, 4], [false; 3], 1).is_err());
        let g = CropGeometry::new(shape, [1, 2, 3], [8, 6, 4], [true, false, true], 2).unwrap();
        let crop = g.extract(&vol).unwrap();
        assert_eq!(decode(crop.int64_value(&[0, 0, 0])), g.to_volume([0, 0, 0]));
        assert!(CropGeometry::new(shape, [15, 0, 0], [8, 8, 4], [false; 3], 0).is_err());
    }

    #[test]
    fn overlap_from_geometry_matches_voxel_content() {
        let shape = [24, 24, 16];
        let vol = coded(shape);
        let a = CropGeometry::new(shape, [2, 3, 1], [12, 12, 10], [true, false, false], 1).unwrap();
        let b = CropGeometry::new(shape, [8, 6, 4], [12, 12, 10], [false, true, true], 3).unwrap();
        let (ca, cb) = (a.extract(&vol).unwrap(), b.extract(&vol).unwrap());
        let pairs = correspondences(&a, &b).unwrap();
        // overlap of [2,14)×[3,15)×[1,11) and [8,20)×[6,18)×[4,14): 6 × 9 × 7 voxels
        assert_eq!(pairs.len(), 6 * 9 * 7);
        for (p, q) in &pairs {
            assert_eq!(
                ca.int64_value(&[p[0], p[1], p[2]]),
                cb.int64_value(&[q[0], q[1], q[2]])
            );
        }
        let far = CropGeometry::new(shape, [14, 14, 0], [8, 8, 4], [false; 3], 0).unwrap();
        let near = CropGeometry::new(shape, [0, 0, 0], [8, 8, 4], [false; 3], 0).unwrap();
        assert!(correspondences(&near, &far).unwrap().is_empty());
    }

    #[test]
    fn debiasing_mask_removes_exactly_the_negatives_within_the_threshold() {
        let c = Tensor::from_slice(&[
            0.5f32, 0.5, 0.5, //
            0.55, 0.5, 0.5, // 0.05 from the first
            0.5, 0.9, 0.5, // 0.4 from the first
            0.1, 0.1, 0.1, // far from all
        ])
        .view([4, 3]);
        let m = spatial_negative_mask(&c, 0.1).unwrap();
        let got: Vec<bool> = Vec::<bool>::try_from(m.view([-1])).unwrap();
        #[rustfmt::skip]
        let want = [
            false, false, true, true,
            false, false, true, true,
            true, true, false, true,
            true, true, true, false,
        ];
        assert_eq!(got, want);
        // the normalised frame: centre of a box relative to a body box
        let g = CropGeometry::new([40, 40, 40], [10, 10, 10], [10, 10, 10], [false; 3], 0).unwrap();
        assert_eq!(g.normalized_centre([0; 3], [40; 3]), [0.375; 3]);
        assert_eq!(g.normalized_centre([10; 3], [30; 3]), [0.25; 3]);
        let v = Tensor::zeros([10, 10, 10], (Kind::Float, tch::Device::Cpu));
        let _ = v.narrow(0, 2, 3).narrow(1, 4, 2).narrow(2, 1, 6).fill_(1.0);
        assert_eq!(body_bbox(&v, 0.5).unwrap(), ([2, 4, 1], [5, 6, 7]));
    }
}

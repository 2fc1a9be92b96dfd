//! Our own restatement (no official code: medpy is not installed): the 3D volume floor — h5 /
//! NIfTI I/O on the real shared files, 3D augmentation, the sliding-window lattice and the
//! segmentation metrics — against a numpy/scipy reference (`tests/py/volume_reference.py`,
//! medpy's surface-distance semantics re-implemented with scipy.ndimage).

use contrast_core::data::dev_data;
use contrast_core::eval::segmentation::{asd, case_metrics, dice, hd95, jaccard, SegMetrics};
use contrast_core::testing::{assert_close, get, run_reference, tempdir};
use contrast_core::volume::augment3d::{
    center_crop, crop_padding, flip, random_crop, random_rot_flip, rot90_xy, TwoStreamSampler,
};
use contrast_core::volume::h5::{read_h5_case, write_h5_case, LaHeart};
use contrast_core::volume::nifti::{read_nifti, write_nifti};
use contrast_core::volume::sliding::{window_grid, window_starts, SlidingWindow};
use contrast_core::volume::{Case, Volume};
use rand::SeedableRng;
use std::path::Path;
use tch::{Kind, Tensor};

fn la(test: &str) -> Option<LaHeart> {
    let root = dev_data(test, "la-heart")?;
    Some(LaHeart::new(root).unwrap())
}

/// prediction, ground truth, shape, spacing
type MetricCase = (Vec<bool>, Vec<bool>, [usize; 3], [f64; 3]);

fn mask_tensor(m: &[bool], shape: [usize; 3]) -> Tensor {
    let v: Vec<u8> = m.iter().map(|&b| b as u8).collect();
    Tensor::from_slice(&v).reshape(shape.map(|s| s as i64))
}

fn ball(shape: [usize; 3], c: [f64; 3], r: f64) -> Vec<bool> {
    let mut out = vec![false; shape.iter().product()];
    for x in 0..shape[0] {
        for y in 0..shape[1] {
            for z in 0..shape[2] {
                let d2 = (x as f64 - c[0]).powi(2)
                    + (y as f64 - c[1]).powi(2)
                    + (z as f64 - c[2]).powi(2);
                out[(x * shape[1] + y) * shape[2] + z] = d2 <= r * r;
            }
        }
    }
    out
}

fn cube(shape: [usize; 3], lo: [usize; 3], hi: [usize; 3]) -> Vec<bool> {
    let mut out = vec![false; shape.iter().product()];
    for x in lo[0]..hi[0] {
        for y in lo[1]..hi[1] {
            for z in lo[2]..hi[2] {
                out[(x * shape[1] + y) * shape[2] + z] = true;
            }
        }
    }
    out
}

/// Every metric (and the augmentations and NIfTI decoding) against the Python reference, in one
/// script call.
#[test]
fn metrics_augment_and_nifti_match_reference() {
    let s1 = [40, 36, 30];
    let s2 = [20, 22, 18];
    let mut cases: Vec<MetricCase> = vec![
        // shifted spheres, isotropic and anisotropic spacing
        (
            ball(s1, [16., 16., 12.], 8.),
            ball(s1, [19., 15., 13.], 7.),
            s1,
            [1.0; 3],
        ),
        (
            ball(s1, [16., 16., 12.], 8.),
            ball(s1, [19., 15., 13.], 7.),
            s1,
            [0.625, 0.625, 2.5],
        ),
        // cubes, one touching the volume border (surface at the border)
        (
            cube(s2, [2, 3, 4], [12, 15, 10]),
            cube(s2, [0, 5, 2], [10, 22, 9]),
            s2,
            [1.0; 3],
        ),
        // disjoint objects
        (
            cube(s2, [1, 1, 1], [4, 4, 4]),
            ball(s2, [14., 15., 12.], 3.),
            s2,
            [1.0, 2.0, 0.5],
        ),
    ];
    if let Some(la) = la("segmentation metrics (real LA label case)") {
        // A real label against itself shifted by (3, −2, 1) voxels with a ball removed.
        let c = la.case("06SR5RBREL16DQ6M8LWS").unwrap();
        let sh = c.label.shape;
        let gt: Vec<bool> = c.label.data.iter().map(|&v| v != 0).collect();
        let mut pred = vec![false; gt.len()];
        for x in 3..sh[0] {
            for y in 0..sh[1] - 2 {
                for z in 1..sh[2] {
                    pred[(x * sh[1] + y) * sh[2] + z] =
                        gt[((x - 3) * sh[1] + y + 2) * sh[2] + z - 1];
                }
            }
        }
        let hole = ball(sh, [90., 70., 44.], 12.);
        pred.iter_mut().zip(&hole).for_each(|(p, h)| *p &= !h);
        cases.push((pred, gt, sh, [0.625, 0.625, 0.625]));
    }
    let mut named: Vec<(String, Tensor)> = vec![];
    for (i, (p, g, s, sp)) in cases.iter().enumerate() {
        named.push((format!("p{i}"), mask_tensor(p, *s)));
        named.push((format!("g{i}"), mask_tensor(g, *s)));
        named.push((format!("s{i}"), Tensor::from_slice(sp)));
    }
    let vol_shape = [5usize, 3, 4];
    let vol = Volume::new(vol_shape, (0..60).map(|v| v as f32).collect()).unwrap();
    named.push(("vol".into(), vol.to_tensor()));
    let inputs: Vec<(&str, &Tensor)> = named.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mni = dev_data("volume reference (NIfTI part)", "mni152").unwrap_or_default();
    let nii = [
        mni.join("image_10426.nii.gz"),
        mni.join("mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"),
    ];
    let nii_args: Vec<String> = nii.iter().map(|p| p.display().to_string()).collect();
    let have_nii = nii.iter().all(|p| p.is_file());
    let args: Vec<&str> = if have_nii {
        nii_args.iter().map(String::as_str).collect()
    } else {
        vec![]
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/volume_reference.py");
    let Some(out) = run_reference(&script, &inputs, &args).unwrap() else {
        return;
    };
    for (i, (p, g, s, sp)) in cases.iter().enumerate() {
        let r = Vec::<f64>::try_from(get(&out, &format!("m{i}"))).unwrap();
        let sp = Some(*sp);
        let ours = [
            dice(p, g),
            jaccard(p, g),
            hd95(p, g, *s, sp).unwrap(),
            asd(p, g, *s, sp).unwrap(),
        ];
        // Dice / Jaccard are exact ratios of counts; distances to float rounding.
        assert_eq!(ours[0], r[0], "case {i}: dice");
        assert_eq!(ours[1], r[1], "case {i}: jaccard");
        assert!(
            (ours[2] - r[2]).abs() < 1e-9,
            "case {i}: hd95 {} vs {}",
            ours[2],
            r[2]
        );
        assert!(
            (ours[3] - r[3]).abs() < 1e-9,
            "case {i}: asd {} vs {}",
            ours[3],
            r[3]
        );
        let m = case_metrics(p, g, *s, sp).unwrap();
        assert_eq!([m.dice, m.jaccard, m.hd95, m.asd], ours);
    }
    for k in 0..4 {
        let ours = rot90_xy(&vol, k).to_tensor();
        assert_close(&ours, get(&out, &format!("rot{k}")), 0.0, 0.0, "rot90");
    }
    for a in 0..3 {
        let ours = flip(&vol, a).to_tensor();
        assert_close(&ours, get(&out, &format!("flip{a}")), 0.0, 0.0, "flip");
    }
    if have_nii {
        for (j, p) in nii.iter().enumerate() {
            let v = read_nifti(p).unwrap().volume;
            let r = get(&out, &format!("nii{j}"));
            assert_eq!(
                r.size(),
                v.shape.map(|s| s as i64).to_vec(),
                "{}",
                p.display()
            );
            assert_close(&v.to_tensor(), r, 0.0, 0.0, &p.display().to_string());
        }
    }
}

#[test]
fn empty_prediction_scores_zero_and_empty_masks_have_no_distance() {
    let s = [8, 8, 8];
    let g = cube(s, [2, 2, 2], [5, 5, 5]);
    let empty = vec![false; 512];
    let m = case_metrics(&empty, &g, s, None).unwrap();
    assert_eq!(
        m,
        SegMetrics {
            dice: 0.0,
            jaccard: 0.0,
            hd95: 0.0,
            asd: 0.0
        }
    );
    assert_eq!(hd95(&g, &empty, s, None), None);
    assert_eq!(asd(&g, &empty, s, None), None);
    assert_eq!(dice(&empty, &empty), 0.0);
    // Identical masks: 1, 1, 0, 0 (hand-derived).
    let m = case_metrics(&g, &g, s, None).unwrap();
    assert_eq!(
        m,
        SegMetrics {
            dice: 1.0,
            jaccard: 1.0,
            hd95: 0.0,
            asd: 0.0
        }
    );
    // A 3×3×3 cube vs the same cube shifted by one voxel in x: |A∩B| = 18, Dice = 36/54.
    let h = cube(s, [3, 2, 2], [6, 5, 5]);
    assert_eq!(dice(&g, &h), 36.0 / 54.0);
    assert_eq!(jaccard(&g, &h), 18.0 / 36.0);
    // Mean skips NaN entries per metric.
    let nan = SegMetrics {
        dice: 0.5,
        jaccard: 0.25,
        hd95: f64::NAN,
        asd: 2.0,
    };
    let mean = SegMetrics::mean(&[m, nan]);
    assert_eq!(mean.hd95, 0.0);
    assert_eq!(mean.dice, 0.75);
}

#[test]
fn sliding_window_lattice_matches_reference_starts_and_covers_every_voxel() {
    // 194×142×88, patch 112×112×80, stride (18, 18, 4): 6×3×3 = 54 windows.
    assert_eq!(window_starts(194, 112, 18), vec![0, 18, 36, 54, 72, 82]);
    assert_eq!(window_starts(142, 112, 18), vec![0, 18, 30]);
    assert_eq!(window_starts(88, 80, 4), vec![0, 4, 8]);
    assert_eq!(window_starts(112, 112, 18), vec![0]);
    let grid = window_grid([194, 142, 88], [112, 112, 80], [18, 18, 4]);
    assert_eq!(grid.len(), 54);
    assert_eq!(grid[1], [0, 0, 4]);
    assert_eq!(grid[53], [82, 30, 8]);
    let mut covered = vec![false; 194 * 142 * 88];
    for s in &grid {
        for x in s[0]..s[0] + 112 {
            for y in s[1]..s[1] + 112 {
                for z in s[2]..s[2] + 80 {
                    covered[(x * 142 + y) * 88 + z] = true;
                }
            }
        }
    }
    assert!(covered.iter().all(|&c| c));
}

#[test]
fn sliding_window_averages_probabilities_and_pads_small_volumes() {
    // A predictor that returns [1 − v, v] of the input: the average of identical values is
    // the input itself, for an interior lattice and a padded one (axis 1 smaller than the patch).
    let img = Tensor::rand([13, 5, 11], (Kind::Float, tch::Device::Cpu));
    for (patch, stride, batch) in [([8, 4, 6], [3, 2, 4], 1), ([8, 8, 6], [5, 3, 2], 4)] {
        let mut calls = 0;
        let sw = SlidingWindow {
            patch,
            stride,
            batch,
        };
        let probs = sw
            .run(&img, |x| {
                calls += 1;
                Ok(Tensor::cat(&[x.ones_like() - x, x.shallow_clone()], 1))
            })
            .unwrap();
        assert_eq!(probs.size(), vec![2, 13, 5, 11]);
        assert_close(&probs.get(1), &img, 1e-6, 0.0, "averaged foreground");
        assert_close(
            &probs.get(0),
            &(img.ones_like() - &img),
            1e-6,
            0.0,
            "averaged background",
        );
        let padded = [13, 5.max(patch[1]), 11];
        let n = window_grid(padded, patch, stride).len();
        assert_eq!(calls, n.div_ceil(batch));
    }
    // Constant predictor 1 on an odd count of windows: counts divide exactly.
    let sw = SlidingWindow {
        patch: [4, 4, 4],
        stride: [3, 3, 3],
        batch: 2,
    };
    let p = sw.run(&img, |x| Ok(x.ones_like())).unwrap();
    assert_close(&p, &img.ones_like().unsqueeze(0), 0.0, 0.0, "constant");
}

#[test]
fn la_h5_case_reads_like_h5py() {
    let Some(la) = la("la_h5_case_reads_like_h5py") else {
        return;
    };
    // DEPENDENCIES.md: image [183, 140, 88] f32 (mean 1.458397), label u8 (sum 154296), as h5py.
    let c = la.case("06SR5RBREL16DQ6M8LWS").unwrap();
    assert_eq!(c.image.shape, [183, 140, 88]);
    let mean = c.image.data.iter().map(|&v| v as f64).sum::<f64>() / c.image.len() as f64;
    assert!((mean - 1.458397).abs() < 1e-5, "mean {mean}");
    assert_eq!(c.label.data.iter().map(|&v| v as u64).sum::<u64>(), 154296);
    let train = la.list("train.list").unwrap();
    let test = la.list("test.list").unwrap();
    assert_eq!((train.len(), test.len()), (12, 4));
    assert_eq!(train[0], "06SR5RBREL16DQ6M8LWS");
}

#[test]
fn truncated_files_fail_with_their_name() {
    let dir = tempdir().unwrap();
    // A valid small h5 and NIfTI written by us, then truncated.
    let img = Volume::new([4, 5, 6], (0..120).map(|v| v as f32 * 0.5).collect()).unwrap();
    let lab = img.map(|v| (v > 20.0) as u8);
    let case = Case::new("toy", img.clone(), lab.clone()).unwrap();
    let h5 = dir.join("case.h5");
    write_h5_case(&h5, &case).unwrap();
    let back = read_h5_case(&h5, "toy", "image", "label").unwrap();
    assert_eq!(back.image, img);
    assert_eq!(back.label, lab);
    let mut lab_sp = lab.clone();
    lab_sp.spacing = Some([0.5, 0.75, 2.0]);
    for name in ["pred.nii.gz", "pred.nii"] {
        let p = dir.join(name);
        write_nifti(&p, &lab_sp, None).unwrap();
        let r = read_nifti(&p).unwrap();
        assert_eq!(
            r.volume.data,
            lab.data.iter().map(|&v| v as f32).collect::<Vec<_>>()
        );
        assert_eq!(r.volume.spacing, Some([0.5, 0.75, 2.0]));
    }
    for name in ["case.h5", "pred.nii.gz", "pred.nii"] {
        let p = dir.join(name);
        let bytes = std::fs::read(&p).unwrap();
        let cut = dir.join(format!("cut-{name}"));
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let err = if name.ends_with(".h5") {
            format!(
                "{:#}",
                read_h5_case(&cut, "x", "image", "label").unwrap_err()
            )
        } else {
            format!("{:#}", read_nifti(&cut).unwrap_err())
        };
        assert!(
            err.contains(&format!("cut-{name}")),
            "error does not name the file: {err}"
        );
    }
    let missing = format!("{:#}", read_nifti(dir.join("nope.nii")).unwrap_err());
    assert!(missing.contains("nope.nii"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn crops_follow_the_official_padding_rule() {
    // any axis ≤ patch → pad every axis by max((p − s)//2 + 3, 0) (Python floor division)
    assert_eq!(crop_padding([183, 140, 88], [112, 112, 80]), [0, 0, 0]);
    assert_eq!(crop_padding([100, 140, 81], [112, 112, 80]), [9, 0, 2]);
    assert_eq!(crop_padding([100, 140, 80], [112, 112, 80]), [9, 0, 3]);
    let img = Volume::new([10, 7, 6], (0..420).map(|v| v as f32).collect()).unwrap();
    let case = Case::new("c", img.clone(), img.map(|v| (v as i32 % 2) as u8)).unwrap();
    // centre crop of 10×7×6 to 4×4×4: offsets round(6/2)=3, round(3/2)=2 (half to even), round(2/2)=1
    let c = center_crop(&case, [4, 4, 4]).unwrap();
    assert_eq!(c.image.get(0, 0, 0), img.get(3, 2, 1));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    for _ in 0..50 {
        let r = random_crop(&case, [4, 4, 4], &mut rng).unwrap();
        assert_eq!(r.image.shape, [4, 4, 4]);
        let v = r.image.get(0, 0, 0) as usize;
        let (x, y, z) = (v / 42, (v / 6) % 7, v % 6);
        // exclusive upper bound: offsets < s − p
        assert!(x < 6 && y < 3 && z < 2, "offset ({x}, {y}, {z})");
        assert_eq!(
            r.label.get(1, 2, 3),
            (r.image.get(1, 2, 3) as i32 % 2) as u8
        );
        let rf = random_rot_flip(&case, &mut rng);
        assert_eq!(rf.image.data.len(), 420);
        assert_eq!(rf.label, rf.image.map(|v| (v as i32 % 2) as u8));
    }
}

#[test]
fn two_stream_sampler_draws_each_labelled_case_once_per_epoch() {
    let mut s = TwoStreamSampler::new((0..16).collect(), (16..80).collect(), 2, 2).unwrap();
    assert_eq!(s.epoch_len(), 8);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let mut seen_l = vec![];
    let mut seen_u = vec![];
    for _ in 0..8 {
        let (l, u) = s.next_batch(&mut rng);
        assert_eq!((l.len(), u.len()), (2, 2));
        seen_l.extend(l);
        seen_u.extend(u);
    }
    seen_l.sort();
    assert_eq!(seen_l, (0..16).collect::<Vec<_>>());
    assert!(seen_u.iter().all(|&u| (16..80).contains(&u)));
    seen_u.sort();
    seen_u.dedup();
    assert_eq!(
        seen_u.len(),
        16,
        "unlabelled drawn without repetition within a permutation"
    );
    assert!(TwoStreamSampler::new(vec![0], vec![1, 2], 2, 2).is_err());
}

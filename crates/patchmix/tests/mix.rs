//! Properties of the PatchMix mixer and soft targets (issue: "Tests (assert numbers)").

use contrast_core::testing::global_rng_lock;
use patchmix::mix::{patchify, PatchMixer};
use tch::{Device, Kind, Tensor};

/// Pixel value encodes (image, position): `x[b, c, y, x] = 100000·b + 10·(patch index) + c`.
fn coded_batch(b: i64, c: i64, h: i64, w: i64, p: i64) -> Tensor {
    let mut v = Vec::with_capacity((b * c * h * w) as usize);
    for bi in 0..b {
        for ci in 0..c {
            for y in 0..h {
                for x in 0..w {
                    let t = (y / p) * (w / p) + x / p;
                    v.push((100_000 * bi + 10 * t + ci) as f32);
                }
            }
        }
    }
    Tensor::from_slice(&v).view([b, c, h, w])
}

#[test]
fn every_patch_comes_from_a_listed_source_at_its_own_position() {
    let _rng = global_rng_lock();
    for (m, b, hw, p) in [
        (2i64, 6i64, 8i64, 2i64),
        (3, 5, 12, 2),
        (4, 8, 32, 4),
        (2, 4, 32, 2),
    ] {
        tch::manual_seed(3);
        let mixer = PatchMixer::new(m, 1.0, p, 0.0).unwrap();
        let x = coded_batch(b, 3, hw, hw, p);
        let out = mixer.mix(&x, b, 0).unwrap();
        assert!(out.mixed);
        let tokens = patchify(&out.images, p).unwrap(); // [B, T, D]
        let t = tokens.size()[1];
        let s = t / m;
        let perm: Vec<i64> = Vec::try_from(out.permutation.as_ref().unwrap()).unwrap();
        for g in 0..b {
            let mut owned = vec![0i64; m as usize];
            for pos in 0..t {
                // every element of the patch agrees on one source image and this position
                let patch = tokens.get(g).get(pos);
                let vals: Vec<f32> = Vec::try_from(patch.flatten(0, -1)).unwrap();
                let v0 = vals[0] as i64;
                let (src, code) = (v0 / 100_000, v0 % 100_000);
                assert_eq!(code / 10, pos, "m={m}: patch moved from its position");
                for (k, v) in vals.iter().enumerate() {
                    let v = *v as i64;
                    assert_eq!(v / 100_000, src, "mixed patch has two sources");
                    assert_eq!(v % 10, (k as i64) / (p * p), "channel order changed");
                }
                let j = (src - g).rem_euclid(b);
                assert!(
                    j < m,
                    "m={m}: image {g} took a patch from {src}, not a listed source"
                );
                // which chunk the position is in decides the source
                let rank = perm.iter().position(|&q| q == pos).unwrap() as i64;
                let chunk = if rank < s * m { rank / s } else { 0 };
                assert_eq!(
                    j, chunk,
                    "m={m}: position {pos} in chunk {chunk} came from source +{j}"
                );
                owned[j as usize] += 1;
            }
            // each source owns ⌊T/m⌋ positions; the image itself also keeps the leftovers
            assert_eq!(owned[0], s + (t - s * m));
            for (k, owned_k) in owned.iter().enumerate().skip(1) {
                assert_eq!(*owned_k, s, "m={m}: source +{k} owns {owned_k} positions");
            }
        }
    }
}

#[test]
fn permutation_is_reproducible_with_a_fixed_seed() {
    let _rng = global_rng_lock();
    let mixer = PatchMixer::new(2, 1.0, 2, 0.0).unwrap();
    let x = Tensor::randn([4, 3, 8, 8], (Kind::Float, Device::Cpu));
    tch::manual_seed(42);
    let a = mixer.mix(&x, 4, 0).unwrap();
    tch::manual_seed(42);
    let b = mixer.mix(&x, 4, 0).unwrap();
    assert!(a.images.equal(&b.images));
    assert!(a.permutation.unwrap().equal(&b.permutation.unwrap()));
    let c = mixer.mix(&x, 4, 0).unwrap();
    assert!(
        !a.images.equal(&c.images),
        "a new call draws a new permutation"
    );
}

#[test]
fn targets_are_exact_and_rows_sum_to_one() {
    for m in [2i64, 3, 4] {
        let b = 9;
        let mixer = PatchMixer::new(m, 1.0, 2, 0.0).unwrap();
        let (mix, mixmix) = mixer.targets(b, b, 0, Device::Cpu);
        for g in 0..b {
            for col in 0..b {
                let j = (col - g).rem_euclid(b);
                let want = if j < m { 1.0 / m as f64 } else { 0.0 };
                assert_eq!(
                    mix.double_value(&[g, col]),
                    want as f32 as f64,
                    "mix m={m} [{g},{col}]"
                );
                // distance d with |d| < m, either direction around the ring
                let d = [j, j - b].into_iter().find(|d| d.abs() < m);
                let want = d.map_or(0.0, |d| (m - d.abs()) as f64 / (m * m) as f64);
                assert_eq!(
                    mixmix.double_value(&[g, col]),
                    want as f32 as f64,
                    "mixmix m={m} [{g},{col}]"
                );
            }
        }
        for t in [&mix, &mixmix] {
            let sums = t.sum_dim_intlist([1].as_slice(), false, Kind::Double);
            assert!((sums - 1.0).abs().max().double_value(&[]) < 1e-6);
        }
    }
    // m = 2: the official {g−1: ¼, g: ½, g+1: ¼}
    let (_, mm) = PatchMixer::new(2, 1.0, 2, 0.0)
        .unwrap()
        .targets(5, 5, 0, Device::Cpu);
    let row: Vec<f32> = Vec::try_from(mm.get(0)).unwrap();
    assert_eq!(row, vec![0.5, 0.25, 0.0, 0.0, 0.25]);
}

#[test]
fn m_one_or_p_zero_gives_identity_and_offset_places_columns() {
    let x = Tensor::randn([4, 3, 8, 8], (Kind::Float, Device::Cpu));
    for mixer in [
        PatchMixer::new(1, 1.0, 2, 0.0).unwrap(),
        PatchMixer::new(2, 0.0, 2, 0.0).unwrap(),
    ] {
        let out = mixer.mix(&x, 12, 4).unwrap();
        assert!(!out.mixed);
        assert!(out.images.equal(&x));
        let want = Tensor::zeros([4, 12], (Kind::Float, Device::Cpu));
        want.narrow(1, 4, 4)
            .copy_(&Tensor::eye(4, (Kind::Float, Device::Cpu)));
        assert!(out.mix_target.equal(&want) && out.mixmix_target.equal(&want));
    }
    // global offset: the local batch's columns start at `offset`
    let (mix, _) = PatchMixer::new(2, 1.0, 2, 0.0)
        .unwrap()
        .targets(3, 9, 6, Device::Cpu);
    let row: Vec<f32> = Vec::try_from(mix.get(2)).unwrap();
    assert_eq!(row, vec![0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.0, 0.5]);
}

#[test]
fn smoothing_and_argument_checks() {
    let s = 0.1;
    let mixer = PatchMixer::new(2, 1.0, 2, s).unwrap();
    let (mix, _) = mixer.targets(4, 8, 0, Device::Cpu);
    let got = mix.double_value(&[0, 0]);
    assert!((got - ((1.0 - s) / 2.0 + s / 8.0)).abs() < 1e-7);
    assert!((mix.double_value(&[0, 5]) - s / 8.0).abs() < 1e-7);
    assert!(PatchMixer::new(0, 1.0, 2, 0.0).is_err());
    assert!(PatchMixer::new(2, 1.5, 2, 0.0).is_err());
    let e = PatchMixer::new(2, 1.0, 3, 0.0)
        .unwrap()
        .mix(
            &Tensor::zeros([2, 3, 8, 8], (Kind::Float, Device::Cpu)),
            2,
            0,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("8×8") && e.contains("patch size 3"), "{e}");
}

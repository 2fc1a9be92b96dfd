//! The batch pipeline: shapes, labels, per-epoch permutation, determinism across thread counts
//! and prefetch depths, resume mid-epoch, and error propagation.

use contrast_core::data::augment::{sample_rng, IMAGENET_MEAN, IMAGENET_STD};
use contrast_core::data::{Dataset, InMemoryDataset, Loader, LoaderConfig, Op, Recipe, ViewSpec};
use std::sync::Arc;
use tch::Tensor;

fn dataset(n: usize) -> Arc<InMemoryDataset> {
    let mut px = Vec::with_capacity(n * 32 * 32 * 3);
    for k in 0..n {
        for i in 0..32 * 32 * 3 {
            px.push(((k * 37 + i * 11 + (i * i) % 97) % 256) as u8);
        }
    }
    let labels = (0..n).map(|k| (k % 10) as i64).collect();
    Arc::new(InMemoryDataset::from_nhwc(px, 32, 32, 3, labels, vec![]).unwrap())
}

fn loader(ds: Arc<InMemoryDataset>, threads: usize, prefetch: usize) -> Loader {
    let recipe = Recipe::byol(32, 0.08)
        .unwrap()
        .with_local_crops(2, 16, (0.05, 0.3))
        .unwrap();
    let cfg = LoaderConfig {
        batch_size: 16,
        shuffle: true,
        drop_last: true,
        seed: 42,
        prefetch,
        threads,
        shard: Default::default(),
    };
    Loader::new(ds, recipe, cfg).unwrap()
}

fn all(l: &Loader, epoch: u64) -> Vec<contrast_core::data::Batch> {
    l.epoch(epoch).map(|b| b.unwrap()).collect()
}

fn equal(a: &Tensor, b: &Tensor) -> bool {
    a.size() == b.size() && a.equal(b)
}

#[test]
fn batches_are_deterministic_shaped_and_cover_the_epoch() {
    let ds = dataset(70);
    let one = loader(ds.clone(), 1, 1);
    let two = loader(ds.clone(), 2, 3);
    assert_eq!(one.batches_per_epoch(), 4); // 70 / 16, last 6 dropped
    let a = all(&one, 3);
    let b = all(&two, 3);
    assert_eq!(a.len(), 4);
    let mut seen = Vec::new();
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.views.len(), 4);
        assert_eq!(x.views[0].size(), vec![16, 3, 32, 32]);
        assert_eq!(x.views[1].size(), vec![16, 3, 32, 32]);
        assert_eq!(x.views[2].size(), vec![16, 3, 16, 16]);
        for (v, w) in x.views.iter().zip(&y.views) {
            assert!(
                equal(v, w),
                "1 thread / prefetch 1 and 2 threads / prefetch 3 differ"
            );
            assert_eq!(v.kind(), tch::Kind::Float);
        }
        assert!(equal(&x.indices, &y.indices));
        let idx = Vec::<i64>::try_from(&x.indices).unwrap();
        let lab = Vec::<i64>::try_from(&x.labels).unwrap();
        for (i, l) in idx.iter().zip(&lab) {
            assert_eq!(*l, ds.get(*i as usize).unwrap().1);
        }
        seen.extend(idx);
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 64, "an epoch visits each sample at most once");
    // Normalised values lie in the ImageNet-normalised range of [0, 1] inputs.
    let lo = (0..3)
        .map(|c| (0.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c])
        .fold(f32::MAX, f32::min);
    let hi = (0..3)
        .map(|c| (1.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c])
        .fold(f32::MIN, f32::max);
    let v = &a[0].views[0];
    assert!(v.min().double_value(&[]) >= lo as f64 - 1e-5);
    assert!(v.max().double_value(&[]) <= hi as f64 + 1e-5);
    // The two global views of one sample differ (independent draws).
    assert!(!equal(&a[0].views[0], &a[0].views[1]));
    // Another epoch: another order and other augmentations.
    let c = all(&one, 4);
    assert!(!equal(&a[0].indices, &c[0].indices));
    // Resume mid-epoch: batch 2 of epoch 3 is the same whether iterated, resumed or computed.
    let resumed: Vec<_> = one.epoch_from(3, 2).map(|b| b.unwrap()).collect();
    assert_eq!(resumed.len(), 2);
    let direct = one.batch(3, 2).unwrap();
    for ((r, d), x) in resumed[0].views.iter().zip(&direct.views).zip(&a[2].views) {
        assert!(equal(r, d) && equal(r, x));
    }
    // Stopping early drops the iterator and joins the worker without hanging.
    let mut it = two.epoch(5);
    assert!(it.next().unwrap().is_ok());
    drop(it);
}

#[test]
fn a_sample_depends_only_on_seed_epoch_and_index() {
    // One view, computed by hand with the sample's stream, equals the loader's output.
    let ds = dataset(8);
    let view = ViewSpec::new(vec![
        Op::Resize {
            size: 32,
            interpolation: contrast_core::data::Interpolation::Bilinear,
        },
        Op::HorizontalFlip { p: 0.5 },
        Op::Solarize {
            p: 0.5,
            threshold: 0.5,
        },
    ])
    .unwrap();
    let recipe = Recipe {
        views: vec![view.clone()],
    };
    let cfg = LoaderConfig {
        batch_size: 8,
        shuffle: false,
        drop_last: false,
        seed: 9,
        prefetch: 1,
        threads: 2,
        shard: Default::default(),
    };
    let l = Loader::new(ds.clone(), recipe, cfg).unwrap();
    let b = l.batch(1, 0).unwrap();
    let mut flipped_or_solarized = 0;
    for i in 0..8 {
        let (img, _) = ds.get(i).unwrap();
        let mut out = vec![0f32; 3 * 32 * 32];
        view.apply(&img, &mut sample_rng(9, 1, i as u64), &mut out)
            .unwrap();
        let mine = Tensor::from_slice(&out).view([3, 32, 32]);
        assert!(equal(&mine, &b.views[0].get(i as i64)), "sample {i}");
        // A plain resize to the same size is the identity: x/255 exactly.
        let plain: Vec<f32> = (0..3 * 32 * 32)
            .map(|k| img.at(k % 1024 / 32, k % 32, k / 1024) as f32 / 255.0)
            .collect();
        if out != plain {
            flipped_or_solarized += 1;
        }
    }
    assert!(
        flipped_or_solarized > 0 && flipped_or_solarized < 8,
        "p = 0.5 ops never/always fired"
    );
}

#[test]
fn bad_recipes_are_rejected_with_the_reason() {
    let e = ViewSpec::new(vec![Op::HorizontalFlip { p: 0.5 }]).unwrap_err();
    assert!(format!("{e}").contains("first op"), "{e}");
    let e = Recipe::byol(32, 1.5).unwrap_err();
    assert!(format!("{e}").contains("scale"), "{e}");
    let e = ViewSpec::new(vec![
        Op::Resize {
            size: 8,
            interpolation: contrast_core::data::Interpolation::Bicubic,
        },
        Op::GaussianBlur {
            p: 1.0,
            kernel_size: 4,
            sigma: (0.1, 2.0),
        },
    ])
    .unwrap_err();
    assert!(format!("{e}").contains("odd"), "{e}");
}

/// A data set whose sample 5 cannot be read.
struct Broken(Arc<InMemoryDataset>);

impl Dataset for Broken {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn get(&self, index: usize) -> anyhow::Result<(contrast_core::data::ImageRef<'_>, i64)> {
        if index == 5 {
            anyhow::bail!("sample {index}: unreadable");
        }
        self.0.get(index)
    }
}

#[test]
fn a_failing_sample_ends_the_epoch_with_its_error() {
    let cfg = LoaderConfig {
        batch_size: 4,
        shuffle: false,
        drop_last: true,
        seed: 1,
        prefetch: 2,
        threads: 2,
        shard: Default::default(),
    };
    let l = Loader::new(
        Arc::new(Broken(dataset(12))),
        Recipe::simclr(32, 0.5).unwrap(),
        cfg,
    )
    .unwrap();
    let got: Vec<_> = l.epoch(0).collect();
    // Batch 0 fine, batch 1 (samples 4..8) fails, then the producer stops.
    assert_eq!(got.len(), 2);
    assert!(got[0].is_ok());
    let e = format!("{:#}", got[1].as_ref().unwrap_err());
    assert!(e.contains("sample 5: unreadable"), "{e}");
}

#[test]
fn eval_recipe_is_to_tensor_and_normalize_at_native_size() {
    let ds = dataset(3);
    let r = Recipe::eval(32).unwrap();
    let (img, _) = ds.get(2).unwrap();
    let mut out = vec![0f32; 3 * 32 * 32];
    r.views[0]
        .apply(&img, &mut sample_rng(0, 0, 2), &mut out)
        .unwrap();
    for c in 0..3 {
        for y in 0..32 {
            for x in 0..32 {
                let want = (img.at(y, x, c) as f32 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
                let got = out[(c * 32 + y) * 32 + x];
                assert!((got - want).abs() <= 1e-6, "({c},{y},{x}): {got} vs {want}");
            }
        }
    }
}

#[test]
fn byol_recipe_follows_the_patchmix_notes() {
    // Notes §1d: blur p 1.0 / 0.1, solarize p 0 / 0.2, CJ(0.4, 0.4, 0.2, 0.1) p 0.8, gray 0.2,
    // bicubic RRC with scale (min_scale, 1); local crops: blur 0.5, no solarize.
    let r = Recipe::byol(32, 0.2)
        .unwrap()
        .with_local_crops(6, 16, (0.05, 0.2))
        .unwrap();
    assert_eq!(r.views.len(), 8);
    let probs = |v: &ViewSpec| {
        let (mut blur, mut sol, mut cj, mut gray) = (None, 0.0, None, None);
        for op in &v.ops {
            match op {
                // PIL's radius-σ blur as the official code (no kernel size: 0 here)
                Op::PilGaussianBlur { p, sigma } => {
                    assert_eq!(*sigma, (0.1, 2.0));
                    blur = Some((*p, 0))
                }
                Op::Solarize { p, .. } => sol = *p,
                Op::ColorJitter { p, jitter } => cj = Some((*p, *jitter)),
                Op::Grayscale { p } => gray = Some(*p),
                Op::RandomResizedCrop {
                    scale,
                    interpolation,
                    ..
                } => assert_eq!(
                    *interpolation,
                    contrast_core::data::Interpolation::Bicubic,
                    "{scale:?}"
                ),
                _ => {}
            }
        }
        (blur, sol, cj, gray)
    };
    let cj = contrast_core::data::ColorJitter::new(0.4, 0.4, 0.2, 0.1);
    assert_eq!(
        probs(&r.views[0]),
        (Some((1.0, 0)), 0.0, Some((0.8, cj)), Some(0.2))
    );
    assert_eq!(
        probs(&r.views[1]),
        (Some((0.1, 0)), 0.2, Some((0.8, cj)), Some(0.2))
    );
    assert_eq!(
        probs(&r.views[2]),
        (Some((0.5, 0)), 0.0, Some((0.8, cj)), Some(0.2))
    );
    assert_eq!(r.views[0].size(), 32);
    assert_eq!(r.views[7].size(), 16);
    assert_eq!(contrast_core::data::augment::default_blur_kernel(224), 23);
}

#[test]
fn simclr_recipes_differ_only_in_their_blur() {
    // SimCLR's own blur (fixed kernel) vs VISSL's PIL blur (GraSS), same ops otherwise
    let a = Recipe::simclr(32, 0.5).unwrap();
    let b = Recipe::simclr_pil_blur(32, 0.5).unwrap();
    assert_eq!(a.views.len(), 2);
    for (va, vb) in a.views.iter().zip(&b.views) {
        assert_eq!(va.ops.len(), vb.ops.len());
        for (oa, ob) in va.ops.iter().zip(&vb.ops) {
            match (oa, ob) {
                (Op::GaussianBlur { p, sigma, .. }, Op::PilGaussianBlur { p: q, sigma: s }) => {
                    assert_eq!((p, sigma), (q, s))
                }
                _ => assert_eq!(oa, ob),
            }
        }
    }
}

//! Linear probe behaviour: separable data is learnt (~100 %), random labels stay at chance, the
//! run is deterministic for a seed, the lr follows the cosine, and bad inputs are errors.

use contrast_core::eval::linear::{
    linear_probe, linear_probe_with, FeatureNorm, LinearProbeConfig,
};
use tch::{Device, Kind, Tensor};

/// `n` points around `classes` centres (scale 3, noise `noise`), labels balanced-ish.
fn blobs(centres: &Tensor, n: i64, noise: f64) -> (Tensor, Tensor) {
    let c = centres.size()[0];
    let d = centres.size()[1];
    let y = Tensor::randint(c, [n], (Kind::Int64, Device::Cpu));
    let x = centres.index_select(0, &y) + Tensor::randn([n, d], (Kind::Float, Device::Cpu)) * noise;
    (x, y)
}

fn cfg(epochs: usize) -> LinearProbeConfig {
    LinearProbeConfig {
        epochs,
        batch_size: 64,
        lr: 0.1,
        ..Default::default()
    }
}

#[test]
fn separable_data_is_learnt_and_random_labels_stay_at_chance() {
    tch::manual_seed(3);
    let centres = Tensor::randn([4, 16], (Kind::Float, Device::Cpu)) * 3.0;
    let (xtr, ytr) = blobs(&centres, 600, 0.5);
    let (xte, yte) = blobs(&centres, 400, 0.5);
    for norm in [FeatureNorm::None, FeatureNorm::L2, FeatureNorm::BatchNorm] {
        let c = LinearProbeConfig {
            feature_norm: norm,
            ..cfg(15)
        };
        let r = linear_probe(&xtr, &ytr, &xte, &yte, 4, &c).unwrap();
        eprintln!(
            "separable, {norm:?}: last top-1 {:.4}, best {:.4} (epoch {}), loss {:.4} → {:.4}",
            r.last_top1,
            r.best_top1,
            r.best_epoch,
            r.epochs[0].train_loss,
            r.epochs.last().unwrap().train_loss
        );
        assert_eq!(r.epochs.len(), 15);
        assert!(r.last_top1 >= 0.99, "{norm:?}: last top-1 {}", r.last_top1);
        assert!(r.best_top1 >= r.last_top1);
        assert_eq!(r.topk, 4);
        assert_eq!(r.last_top5, 1.0, "top-4 of 4 classes is always right");
        let first = r.epochs[0].train_loss;
        let last = r.epochs.last().unwrap().train_loss;
        assert!(last < 0.1 * first, "{norm:?}: loss {first} → {last}");
    }
    // random labels: test accuracy at chance (1/4), whatever the fit on train
    let xr = Tensor::randn([600, 16], (Kind::Float, Device::Cpu));
    let yr = Tensor::randint(4, [600], (Kind::Int64, Device::Cpu));
    let xq = Tensor::randn([2000, 16], (Kind::Float, Device::Cpu));
    let yq = Tensor::randint(4, [2000], (Kind::Int64, Device::Cpu));
    let r = linear_probe(&xr, &yr, &xq, &yq, 4, &cfg(15)).unwrap();
    eprintln!(
        "random labels: last top-1 {:.4}, train loss {:.4}",
        r.last_top1,
        r.epochs.last().unwrap().train_loss
    );
    assert!(
        (r.last_top1 - 0.25).abs() < 0.05,
        "random labels: top-1 {} should be ≈ 0.25",
        r.last_top1
    );
}

#[test]
fn deterministic_for_a_seed_and_cosine_lr() {
    tch::manual_seed(4);
    let centres = Tensor::randn([10, 8], (Kind::Float, Device::Cpu)) * 2.0;
    let (xtr, ytr) = blobs(&centres, 300, 1.0);
    let (xte, yte) = blobs(&centres, 200, 1.0);
    let c = cfg(6);
    let a = linear_probe(&xtr, &ytr, &xte, &yte, 10, &c).unwrap();
    tch::manual_seed(999); // the global torch seed does not matter
    let b = linear_probe(&xtr, &ytr, &xte, &yte, 10, &c).unwrap();
    assert_eq!(a, b, "same seed, same report");
    let other = LinearProbeConfig {
        seed: 1,
        ..c.clone()
    };
    let o = linear_probe(&xtr, &ytr, &xte, &yte, 10, &other).unwrap();
    assert_ne!(a.epochs[0].train_loss, o.epochs[0].train_loss);
    assert_eq!(a.topk, 5);
    assert!(a.last_top5 >= a.last_top1);
    // per-epoch cosine (CosineAnnealingLR, T_max = epochs): lr_e = 0.05·(1 + cos(π e / 6))
    for e in &a.epochs {
        let want = 0.05 * (1.0 + (std::f64::consts::PI * (e.epoch - 1) as f64 / 6.0).cos());
        assert!(
            (e.lr - want).abs() < 1e-12,
            "epoch {}: {} vs {want}",
            e.epoch,
            e.lr
        );
    }
    let best = a.epochs.iter().map(|e| e.top1).fold(f64::MIN, f64::max);
    assert_eq!(best, a.best_top1);
    assert_eq!(a.epochs[a.best_epoch - 1].top1, a.best_top1);
}

#[test]
fn bad_inputs_are_errors() {
    let x = Tensor::randn([10, 4], (Kind::Float, Device::Cpu));
    let c = cfg(1);
    let y3 = Tensor::from_slice(&[0i64, 1, 2, 0, 1, 2, 0, 1, 2, 2]);
    let e = linear_probe(&x, &y3, &x, &y3, 2, &c)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("labels span [0, 2] but there are 2 classes"),
        "{e}"
    );
    let e = linear_probe(
        &x,
        &y3,
        &Tensor::randn([5, 3], (Kind::Float, Device::Cpu)),
        &y3.narrow(0, 0, 5),
        3,
        &c,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("4 dimensions but test features have 3"), "{e}");
    let e = linear_probe(&x, &y3.narrow(0, 0, 9), &x, &y3, 3, &c)
        .unwrap_err()
        .to_string();
    assert!(e.contains("train labels must be [10]"), "{e}");
    let zero = LinearProbeConfig { epochs: 0, ..c };
    assert!(linear_probe(&x, &y3, &x, &y3, 3, &zero).is_err());
}

#[test]
fn per_epoch_features_are_drawn_once_per_epoch_in_order() {
    let _g = contrast_core::testing::global_rng_lock();
    tch::manual_seed(5);
    let centres = Tensor::randn([3, 8], (Kind::Float, Device::Cpu)) * 3.0;
    let (xtr, ytr) = blobs(&centres, 300, 0.5);
    let (xte, yte) = blobs(&centres, 200, 0.5);
    let c = cfg(6);
    // the same features every epoch: identical to the precomputed probe, bit for bit
    let mut calls = Vec::new();
    let fixed = linear_probe(&xtr, &ytr, &xte, &yte, 3, &c).unwrap();
    let with = linear_probe_with(
        &mut |e| {
            calls.push(e);
            Ok(xtr.shallow_clone())
        },
        &ytr,
        &xte,
        &yte,
        3,
        &c,
    )
    .unwrap();
    assert_eq!(calls, vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(fixed, with);
    // fresh "augmented" features per epoch change the run, and still learn the blobs
    let noisy = linear_probe_with(
        &mut |e| {
            let g = Tensor::randn(xtr.size(), (Kind::Float, Device::Cpu)) * (0.3 + 0.1 * e as f64);
            Ok(&xtr + g)
        },
        &ytr,
        &xte,
        &yte,
        3,
        &c,
    )
    .unwrap();
    assert_ne!(noisy.epochs, fixed.epochs);
    assert!(noisy.best_top1 > 0.9, "best top-1 {}", noisy.best_top1);
    // a wrong shape in a later epoch names the epoch
    let e = linear_probe_with(
        &mut |e| {
            Ok(if e < 2 {
                xtr.shallow_clone()
            } else {
                xtr.narrow(0, 0, 10)
            })
        },
        &ytr,
        &xte,
        &yte,
        3,
        &c,
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("epoch 3"), "{e:#}");
}

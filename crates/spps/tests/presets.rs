//! Every preset parses (unknown keys are errors) and carries the published settings.

use contrast_core::train::{load_config, ConfigSource};
use spps::config::SppsConfig;

fn preset(name: &str) -> SppsConfig {
    let p = format!("{}/configs/{name}.toml", env!("CARGO_MANIFEST_DIR"));
    load_config(Some(ConfigSource::file(&p).unwrap()), &[]).unwrap()
}

#[test]
fn presets_parse() {
    let im = preset("paper-imagenet");
    assert_eq!((im.optim.batch_size, im.optim.epochs), (1024, 800));
    assert_eq!(im.paper.linear_delta, Some(4.18));
    for p in ["paper-cifar10", "paper-stl10", "smoke"] {
        let c = preset(p);
        assert_eq!((c.simclr.out_dim, c.sampler.top_k), (128, 1), "{p}");
    }
    let s = preset("smoke");
    assert_eq!(s.runtime.threads, 1);
    assert_eq!(s.mocov2.temperature, 0.2);
}

/// The training views equal the official recipes, op by op. References are the official
/// constants, not our code: `google-research/simclr` `data_util.py` (`random_crop_with_resize`
/// area (0.08, 1.0), aspect (3/4, 4/3); `color_jitter` brightness / contrast / saturation
/// 0.8·s, hue 0.2·s, applied with p 0.8; `to_grayscale` p 0.2; blur p 0.5 with σ ∈ [0.1, 2.0])
/// with its README's CIFAR-10 (`--color_jitter_strength=0.5 --use_blur=False`) and ImageNet
/// (strength 1.0, blur) runs; `facebookresearch/moco` `main_moco.py --aug-plus`
/// (`RandomResizedCrop(224, scale=(0.2, 1.))`, `ColorJitter(0.4, 0.4, 0.4, 0.1)` p 0.8,
/// `RandomGrayscale(p=0.2)`, `GaussianBlur([.1, 2.])` p 0.5, flip).
#[test]
fn training_views_follow_the_official_recipes() {
    use contrast_core::data::{ColorJitter, Op};
    use spps::config::Framework;
    let ops = |cfg: &SppsConfig| {
        spps::train::train_recipe(cfg, 2).unwrap().views[0]
            .ops
            .clone()
    };
    let crop = |ops: &[Op]| match &ops[0] {
        Op::RandomResizedCrop { scale, ratio, .. } => (*scale, *ratio),
        o => panic!("first op {o:?}"),
    };
    let jitter = |ops: &[Op]| {
        ops.iter()
            .find_map(|o| match o {
                Op::ColorJitter { p, jitter } => Some((*p, *jitter)),
                _ => None,
            })
            .expect("a colour jitter")
    };
    let blur_p = |ops: &[Op]| {
        ops.iter()
            .find_map(|o| match o {
                Op::GaussianBlur { p, sigma, .. } | Op::PilGaussianBlur { p, sigma } => {
                    assert_eq!(*sigma, (0.1, 2.0));
                    Some(*p)
                }
                _ => None,
            })
            .unwrap_or(0.0)
    };
    let gray = |ops: &[Op]| {
        ops.iter()
            .any(|o| matches!(o, Op::Grayscale { p } if *p == 0.2))
    };
    let ratio = (3.0 / 4.0, 4.0 / 3.0);

    for (name, s, blur) in [
        ("paper-cifar10", 0.5, 0.0),
        ("smoke", 0.5, 0.0),
        ("paper-imagenet", 1.0, 0.5),
    ] {
        let cfg = preset(name);
        assert_eq!(cfg.framework, Framework::Simclr, "{name}");
        let o = ops(&cfg);
        assert_eq!(crop(&o), ((0.08, 1.0), ratio), "{name}");
        let (p, j) = jitter(&o);
        assert_eq!(p, 0.8);
        let want = ColorJitter::new(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s);
        for (a, b) in [
            (j.brightness, want.brightness),
            (j.contrast, want.contrast),
            (j.saturation, want.saturation),
            (j.hue, want.hue),
        ] {
            assert!((a - b).abs() < 1e-12, "{name}: jitter {j:?}, want {want:?}");
        }
        assert!(gray(&o), "{name}");
        assert_eq!(blur_p(&o), blur, "{name}");
    }

    let mut moco = preset("smoke");
    moco.framework = Framework::Mocov2;
    let o = ops(&moco);
    assert_eq!(crop(&o), ((0.2, 1.0), ratio));
    assert_eq!(jitter(&o), (0.8, ColorJitter::new(0.4, 0.4, 0.4, 0.1)));
    assert!(gray(&o));
    assert!(matches!(
        o.iter().find(|o| matches!(o, Op::PilGaussianBlur { .. })),
        Some(Op::PilGaussianBlur { p, .. }) if *p == 0.5
    ));
}

/// The optimisers of the presets: SimCLR's LARS + warm-up where the paper presets follow
/// SimCLR (`run.py` defaults), MoCo v2's own lr and decay (`main_moco.py`: 0.03 per 256, 1e-4)
/// whatever the preset's SimCLR values are.
#[test]
fn presets_take_each_frameworks_official_optimiser() {
    use spps::config::Framework;
    for (name, lr, wd) in [
        ("paper-imagenet", 1.2, 1e-6),
        ("paper-cifar10", 2.0, 1e-4),
        ("paper-stl10", 2.0, 1e-4),
    ] {
        let c = preset(name);
        assert_eq!(c.optim.optimizer, "lars", "{name}");
        assert_eq!(
            (c.optim.warmup_epochs, c.optim.lars_trust),
            (10, 1e-3),
            "{name}"
        );
        assert_eq!(c.optim.lr_and_decay(Framework::Simclr), (lr, wd), "{name}");
        let (mlr, mwd) = c.optim.lr_and_decay(Framework::Mocov2);
        let want = 0.03 * c.optim.batch_size as f64 / 256.0;
        assert!(
            (mlr - want).abs() < 1e-12 && mwd == 1e-4,
            "{name}: {mlr} {mwd}"
        );
        // 10 linear warm-up epochs from 0, then cosine to 0
        let s = spps::train::lr_schedule(&c, 100, 100 * c.optim.epochs).unwrap();
        assert_eq!(s.value(0), 0.0);
        assert!(s.value(500) < lr && s.value(999) <= lr);
        assert!(
            (s.value(1000) - lr).abs() < 1e-9,
            "{name}: peak after warm-up"
        );
        assert!(s.value(100 * c.optim.epochs - 1) < 1e-3 * lr);
        // SimCLR's `WarmUpAndCosineDecay` exactly: lr·s/W, then a cosine over T + 1 − W steps
        // (`get_train_steps` adds one)
        let (w, t) = (1000.0, 100.0 * c.optim.epochs as f64);
        assert_eq!(s.value(500), lr * 500.0 / w, "{name}");
        let k = 30_000.0;
        let want = lr * 0.5 * (1.0 + (std::f64::consts::PI * (k - w) / (t + 1.0 - w)).cos());
        assert!((s.value(k as u64) - want).abs() < 1e-12, "{name}");
        // MoCo v2 (`main_moco.py adjust_learning_rate --cos`): no warm-up, one lr per epoch
        let mut m = c.clone();
        m.framework = Framework::Mocov2;
        let s = spps::train::lr_schedule(&m, 100, 100 * m.optim.epochs).unwrap();
        let e = m.optim.epochs as f64;
        assert_eq!((s.value(0), s.value(99)), (mlr, mlr), "{name}");
        let e1 = mlr * 0.5 * (1.0 + (std::f64::consts::PI / e).cos());
        assert_eq!((s.value(100), s.value(199)), (e1, e1), "{name}");
    }
    assert_eq!(preset("smoke").optim.optimizer, "sgd");
    // SimCLR's linear evaluation trains on augmented crops in the paper presets
    for name in ["paper-imagenet", "paper-cifar10", "paper-stl10"] {
        assert!(preset(name).eval.linear_augment, "{name}");
    }
    assert!(!preset("smoke").eval.linear_augment);
}

/// `optim.optimizer` builds what it names; an unknown name is an error that names it.
#[test]
fn optimiser_names_are_checked() {
    let mut c = preset("smoke");
    c.model.layers = vec![1, 1, 1, 1];
    c.simclr.hidden = 16;
    c.simclr.out_dim = 8;
    c.runtime.device = "cpu".into();
    let model = spps::model::Model::new(&c, tch::Device::Cpu).unwrap();
    for name in ["sgd", "lars"] {
        c.optim.optimizer = name.into();
        spps::train::build_optimizer(&c, model.trained_vs()).unwrap();
    }
    c.optim.optimizer = "adam".into();
    let e = spps::train::build_optimizer(&c, model.trained_vs())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("adam"), "{e}");
}

/// Evaluation and sampler views: SimCLR's eval preprocessing (no crop at ≤ 32 px; above, a
/// centre crop of 0.875 of the side, `CROP_PROPORTION` in `data_util.py`): ImageNet
/// Resize(256) + CenterCrop(224), STL-10 Resize(109) + CenterCrop(96), CIFAR a plain 32-px view.
#[test]
fn evaluation_views_follow_simclrs_eval_preprocessing() {
    use contrast_core::data::Op;
    for (name, want) in [
        ("paper-imagenet", Some((256, 224))),
        ("paper-stl10", Some((109, 96))),
        ("paper-cifar10", None),
        ("smoke", None),
    ] {
        let r = spps::train::eval_recipe(&preset(name)).unwrap();
        let got = match &r.views[0].ops[0] {
            Op::ResizeCenterCrop { resize, size, .. } => Some((*resize, *size)),
            Op::Resize { size, .. } => {
                assert_eq!(*size, 32, "{name}");
                None
            }
            o => panic!("{name}: {o:?}"),
        };
        assert_eq!(got, want, "{name}");
    }
}

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

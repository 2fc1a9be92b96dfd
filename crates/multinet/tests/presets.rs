//! Every preset parses (unknown keys are errors) and carries the released settings.

use contrast_core::nn::resnet::Stem;
use contrast_core::train::{load_config, ConfigSource};
use multinet::config::MultinetConfig;

fn preset(name: &str) -> MultinetConfig {
    let p = format!("{}/configs/{name}.toml", env!("CARGO_MANIFEST_DIR"));
    load_config(Some(ConfigSource::file(&p).unwrap()), &[]).unwrap()
}

#[test]
fn presets_parse_with_the_released_settings() {
    for (name, top1) in [
        ("paper-cifar10", 90.18),
        ("paper-cifar100", 65.20),
        ("paper-tinyimagenet", 41.70),
    ] {
        let c = preset(name);
        assert_eq!(c.model.stem, Stem::ImageNet, "{name}");
        assert_eq!(c.data.image_size, 224, "{name}");
        assert_eq!(c.optim.epochs, 200, "{name}");
        assert_eq!(c.optim.lr, 0.1);
        assert_eq!(c.optim.momentum, 0.9);
        assert_eq!(c.optim.weight_decay, 1e-4);
        assert_eq!(c.optim.clip_grad_norm, 1.0);
        assert!(c.optim.constant_predictor_lr);
        assert_eq!(c.model.ema_momentum, 0.99);
        assert_eq!(c.model.bank_size, 16384);
        assert_eq!(
            (c.model.proj_hidden, c.model.proj_out, c.model.pred_hidden),
            (2048, 2048, 512)
        );
        assert_eq!(c.loss.temperature_global_local, 1.0);
        assert_eq!(c.loss.temperature_nn, 1.0);
        assert_eq!(c.loss.nn_weight, 6.0);
        // the released code detaches L1 (infoNCE.py:44-48, network_builder.py:217-229)
        assert!(c.loss.released_code_l1, "{name}");
        assert_eq!(c.eval.linear_epochs, 90);
        // the released probe: LARS at 0.8, augmented training views, ONECROP test view
        assert_eq!(
            c.eval.linear_optimizer,
            contrast_core::eval::linear::ProbeOptimizer::Lars
        );
        assert_eq!((c.eval.linear_lr, c.eval.linear_weight_decay), (0.8, 0.0));
        assert!(c.eval.linear_augment, "{name}");
        assert_eq!((c.eval.eval_resize, c.data.eval_size), (256, 224), "{name}");
        assert_eq!(c.paper.mnclglf_top1, Some(top1));
    }
    assert_eq!(preset("paper-tinyimagenet").data.format, "tiny-imagenet");
    let s = preset("smoke");
    assert_eq!(s.model.stem, Stem::Cifar);
    assert_eq!(s.data.image_size, 32);
    assert_eq!(s.runtime.threads, 2);
}

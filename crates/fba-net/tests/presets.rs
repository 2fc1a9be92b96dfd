//! Every preset parses (unknown keys are errors) and checkpoints by iterations only; the UA-MT
//! baseline presets carry UA-MT's `train_LA.py` recipe and their lr steps down as its loop does;
//! `reproduce`'s baseline is the supervised V-Net with Dice weight 1.

use contrast_core::train::{load_config, ConfigSource, Method};
use fba_net::config::FbaNetConfig;
use fba_net::loss::DiceForm;
use fba_net::FbaNetMethod;

fn preset(name: &str) -> FbaNetConfig {
    let p = format!("{}/configs/{name}.toml", env!("CARGO_MANIFEST_DIR"));
    load_config(Some(ConfigSource::file(&p).unwrap()), &[])
        .unwrap_or_else(|e| panic!("{name}: {e:#}"))
}

#[test]
fn presets_parse_and_the_uamt_baselines_follow_train_la() {
    for name in [
        "smoke",
        "paper-la-8",
        "paper-la-16",
        "baseline-uamt-8",
        "baseline-uamt-16",
    ] {
        // a [log] table fills missing keys from core's defaults (checkpoint every epoch): the
        // presets spell out the iteration cadence
        let c = preset(name);
        assert_eq!(c.log.checkpoint_every_epochs, 0, "{name}");
        assert_eq!(c.log.keep_checkpoints, 2, "{name}");
        assert!(c.log.checkpoint_every > 0, "{name}");
    }
    assert_eq!(FbaNetConfig::default().log.checkpoint_every_epochs, 0);
    for name in ["smoke", "paper-la-8", "paper-la-16"] {
        let c = preset(name);
        let (suffix, b) = FbaNetMethod::baseline(&c).unwrap();
        assert_eq!(suffix, "supervised");
        assert_eq!(
            (b.model.variant.as_str(), b.loss.lambda_seg),
            ("supervised", 1.0)
        );
        assert_eq!(
            (b.optim.clone(), b.data.clone()),
            (c.optim.clone(), c.data.clone())
        );
        assert_eq!(
            (c.loss.ce_weight, c.loss.dice),
            (0.0, DiceForm::FbaNet),
            "{name}"
        );
        assert_eq!(
            c.optim.lr_step, 0,
            "{name}: train_3d.py keeps the lr constant"
        );
    }
    for (name, labeled) in [("baseline-uamt-8", 8), ("baseline-uamt-16", 16)] {
        let c = preset(name);
        assert_eq!(c.model.variant, "supervised");
        assert_eq!((c.data.labeled, c.data.batch_size), (labeled, 4), "{name}");
        assert_eq!(c.data.patch, [112, 112, 80]);
        // loss = 0.5·(CE + Dice), UA-MT's dice_loss
        assert_eq!((c.loss.lambda_seg, c.loss.ce_weight), (0.5, 0.5));
        assert_eq!(c.loss.dice, DiceForm::UaMt);
        // lr_ = base_lr * 0.1 ** (iter_num // 2500), 6000 iterations, final model evaluated
        assert_eq!(c.optim.iterations, 6000);
        assert_eq!(c.eval.every, 0);
        let s = fba_net::method::lr_schedule(&c, c.optim.iterations).unwrap();
        for (i, lr) in [
            (0, 0.01),
            (2499, 0.01),
            (2500, 0.001),
            (4999, 0.001),
            (5000, 1e-4),
            (5999, 1e-4),
        ] {
            assert!(
                (s.value(i) - lr).abs() < 1e-12,
                "{name}: iteration {i}: {}",
                s.value(i)
            );
        }
    }
}

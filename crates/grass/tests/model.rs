//! Network pieces: the head quirk, the DeepLabV3+ decoder on the ResNet's layer-1/layer-4
//! maps, the GraSS parameter groups, the presets and the required warm-up length.

use contrast_core::tensors::named_variables;
use contrast_core::train::{load_config, ConfigSource, RunOptions, Trainer};
use grass::config::GrassConfig;
use grass::deeplab::{DeepLabConfig, DeepLabV3Plus};
use grass::method::{grass_groups, Pretrain};
use grass::model::GrassNet;
use tch::{Device, Kind, Tensor};

/// Without the ReLU the head is affine: f(a + b) − f(b) = f(a) − f(0) exactly (up to float
/// rounding); with the ReLU (default) it is not.
#[test]
fn head_without_relu_is_exactly_affine() {
    let _g = contrast_core::testing::global_rng_lock();
    tch::manual_seed(1);
    let a = Tensor::randn([3, 512], (Kind::Float, Device::Cpu));
    let b = Tensor::randn([3, 512], (Kind::Float, Device::Cpu));
    let zero = Tensor::zeros([3, 512], (Kind::Float, Device::Cpu));
    let gap = |net: &GrassNet| {
        let f = |x: &Tensor| net.project(x, false);
        let lhs = f(&(&a + &b)) - f(&b);
        let rhs = f(&a) - f(&zero);
        (lhs - rhs).abs().max().double_value(&[])
    };
    let linear = GrassNet::new(Device::Cpu, "resnet18", 128, false).unwrap();
    let relu = GrassNet::new(Device::Cpu, "resnet18", 128, true).unwrap();
    assert!(gap(&linear) < 1e-4, "linear head gap {}", gap(&linear));
    assert!(gap(&relu) > 1e-2, "ReLU head gap {}", gap(&relu));
    // widths: C4 → C4 → 128, biases present
    let names: Vec<(String, Vec<i64>)> = named_variables(&linear.vs)
        .into_iter()
        .filter(|(n, _)| n.starts_with("head"))
        .map(|(n, t)| (n, t.size()))
        .collect();
    assert!(
        names.contains(&("head.0.0.weight".into(), vec![512, 512])),
        "{names:?}"
    );
    assert!(
        names.contains(&("head.1.0.weight".into(), vec![128, 512])),
        "{names:?}"
    );
    assert!(
        names.contains(&("head.1.0.bias".into(), vec![128])),
        "{names:?}"
    );
    assert!(GrassNet::new(Device::Cpu, "vgg", 128, true).is_err());
}

#[test]
fn deeplab_on_layer1_and_layer4_gives_full_size_logits() {
    let _g = contrast_core::testing::global_rng_lock();
    tch::manual_seed(2);
    let net = GrassNet::new(Device::Cpu, "resnet18", 128, true).unwrap();
    let x = Tensor::randn([2, 3, 64, 96], (Kind::Float, Device::Cpu));
    let f = net.trunk.forward_features(&x, false).unwrap();
    assert_eq!(f.layer1.size(), vec![2, 64, 16, 24]); // stride 4
    assert_eq!(f.layer4.size(), vec![2, 512, 2, 3]); // stride 32
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let dec = DeepLabV3Plus::new(
        vs.root() / "decode_head",
        &DeepLabConfig {
            in_channels: 512,
            low_channels: 64,
            channels: 32,
            c1_channels: 48,
            dilations: vec![1, 12, 24, 36],
            dropout: 0.1,
            num_classes: 6,
        },
    )
    .unwrap();
    let y = dec.forward_t(&f.layer1, &f.layer4, (64, 96), true);
    assert_eq!(y.size(), vec![2, 6, 64, 96]);
    // the fine-tune's encoder at output stride 8: same weights (names and shapes), layer 4 at
    // 1/8 of the input, and the decoder takes it
    let d8 = GrassNet::with_output_stride(Device::Cpu, "resnet18", 128, true, 8).unwrap();
    let names = |vs: &tch::nn::VarStore| {
        named_variables(vs)
            .into_iter()
            .map(|(n, t)| (n, t.size()))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    assert_eq!(names(&d8.vs), names(&net.vs));
    let f8 = d8.trunk.forward_features(&x, false).unwrap();
    assert_eq!(f8.layer1.size(), vec![2, 64, 16, 24]);
    assert_eq!(f8.layer4.size(), vec![2, 512, 8, 12]); // stride 8
    let y8 = dec.forward_t(&f8.layer1, &f8.layer4, (64, 96), false);
    assert_eq!(y8.size(), vec![2, 6, 64, 96]);
    let shapes: std::collections::HashMap<String, Vec<i64>> = named_variables(&vs)
        .into_iter()
        .map(|(n, t)| (n, t.size()))
        .collect();
    // rate 1: 1×1 conv; rates 12/24/36: depthwise 3×3 (groups = C4) + pointwise
    assert_eq!(
        shapes["decode_head.aspp_modules.0.conv.weight"],
        vec![32, 512, 1, 1]
    );
    assert_eq!(
        shapes["decode_head.aspp_modules.3.depthwise_conv.conv.weight"],
        vec![512, 1, 3, 3]
    );
    assert_eq!(
        shapes["decode_head.bottleneck.conv.weight"],
        vec![32, 5 * 32, 3, 3]
    );
    assert_eq!(
        shapes["decode_head.c1_bottleneck.conv.weight"],
        vec![48, 64, 1, 1]
    );
    assert_eq!(shapes["decode_head.conv_seg.weight"], vec![6, 32, 1, 1]);
}

/// BN parameters (`bn*`, `downsample.1`) are not decayed; conv weights and head biases are.
#[test]
fn grass_groups_exclude_only_batch_norm() {
    let net = GrassNet::new(Device::Cpu, "resnet18", 128, true).unwrap();
    let g = grass_groups(named_variables(&net.vs), 1e-6);
    let names = |i: usize| -> Vec<&str> { g[i].params.iter().map(|(n, _)| n.as_str()).collect() };
    assert!(names(0).contains(&"head.0.bias"));
    assert!(names(0).contains(&"trunk.conv1.weight"));
    assert!(names(1).contains(&"trunk.bn1.weight"));
    assert!(names(1).contains(&"trunk.layer2.0.downsample.1.bias"));
    assert!(!names(0).iter().any(|n| n.contains(".bn")));
    assert_eq!((g[0].weight_decay, g[1].weight_decay), (1e-6, 0.0));
    // every trainable tensor is in exactly one group (BN running statistics are buffers)
    let trainable = named_variables(&net.vs)
        .iter()
        .filter(|(_, t)| t.requires_grad())
        .count();
    assert_eq!(g[0].params.len() + g[1].params.len(), trainable);
}

#[test]
fn presets_parse_and_warmup_length_is_required() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    for p in [
        "smoke",
        "paper-potsdam",
        "paper-loveda-urban",
        "paper-loveda-rural",
    ] {
        let cfg: GrassConfig = load_config(
            Some(ConfigSource::file(dir.join(format!("{p}.toml"))).unwrap()),
            &[],
        )
        .unwrap_or_else(|e| panic!("{p}: {e:#}"));
        assert!(cfg.pretrain.warmup_epochs.is_some(), "{p}");
        // both stages checkpoint by steps: a [log] table that left the epoch cadence out would
        // take core's default (every epoch)
        assert_eq!(cfg.log.checkpoint_every_epochs, 0, "{p}");
        // the official head (VISSL `MLP([2048, 2048], use_relu=True)` with
        // `skip_last_layer_relu_bn=True`: no ReLU after its only layer) is linear
        assert!(!cfg.model.head_relu, "{p}");
        if p.starts_with("paper") {
            assert_eq!(
                (cfg.pretrain.epochs, cfg.pretrain.batch_size),
                (350, 256),
                "{p}"
            );
            assert_eq!(cfg.model.arch, "resnet50");
            assert_eq!(cfg.finetune.dilations, vec![1, 12, 24, 36]);
            // MMSeg's -d8 encoder (the group's DeepLabV3+ configs)
            assert_eq!(cfg.finetune.output_stride, 8, "{p}");
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut opts = RunOptions::new("grass", "no-warmup");
    opts.runs_root = tmp.path().to_path_buf();
    let Err(e) = Trainer::<Pretrain>::new(GrassConfig::default(), opts).run(None) else {
        panic!("a config without pretrain.warmup_epochs must be refused");
    };
    assert!(
        format!("{e:#}").contains("warmup_epochs is required"),
        "{e:#}"
    );
}

/// `model.layers` builds the trunk with that many blocks per stage (the reduced model of the
/// official-code comparisons); a stage without a block is refused naming the key.
#[test]
fn model_layers_set_the_blocks_per_stage() {
    let mut m = grass::config::ModelConfig::default();
    assert_eq!(grass::model::model_trunk(&m).unwrap().layers, [3, 4, 6, 3]);
    m.layers = Some([1, 1, 1, 1]);
    let t = grass::model::model_trunk(&m).unwrap();
    assert_eq!(t.layers, [1, 1, 1, 1]);
    let net = GrassNet::with_trunk(Device::Cpu, &t, 128, false).unwrap();
    let names: Vec<String> = net.vs.variables().into_keys().collect();
    assert!(names.iter().any(|n| n.starts_with("trunk.layer4.0.")));
    assert!(
        !names.iter().any(|n| n.starts_with("trunk.layer1.1.")),
        "{names:?}"
    );
    m.layers = Some([1, 0, 1, 1]);
    let e = grass::model::model_trunk(&m).unwrap_err().to_string();
    assert!(e.contains("model.layers"), "{e}");
}

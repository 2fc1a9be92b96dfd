//! Backbones against timm's / torchvision's own models, heads against our own restatement in
//! torch.nn (no official code covers them as such) (tests/py/nn_reference.py), loaded
//! there by parameter name from our VarStores; plus initialisation and drop-path statistics.

use contrast_core::nn::heads::{
    byol_head, moco_v3_predictor, moco_v3_projector, simclr_head, MlpHead,
};
use contrast_core::nn::resnet::{resnet18, resnet50, ResNet, ResNetConfig, Stem};
use contrast_core::nn::vit::{
    resample_abs_pos_embed, sincos_pos_embed_2d, vit_small, vit_tiny, PosEmbed, VisionTransformer,
};
use contrast_core::nn::{count_parameters, drop_path, load_pytorch_weights};
use contrast_core::tensors::named_variables;
use contrast_core::testing::{assert_close, get, run_reference};
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Kind, Tensor};

const CPU: Device = Device::Cpu;

fn script(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(name)
}

/// Give normalisation layers non-trivial values (weights, biases, running statistics) so that
/// eval-mode comparisons exercise them.
fn perturb_norms(vs: &VarStore) {
    tch::no_grad(|| {
        for (name, mut t) in named_variables(vs) {
            let n = t.size();
            let r = Tensor::rand(n.as_slice(), (Kind::Float, CPU));
            if name.ends_with("running_mean") || name.ends_with("bias") {
                t.copy_(&((r - 0.5) * 0.2));
            } else if name.ends_with("running_var") || (name.ends_with("weight") && n.len() == 1) {
                t.copy_(&(r + 0.5));
            }
        }
    });
}

/// Every variable of `vs`, deep-copied, as `prefix.name`.
fn export(vs: &VarStore, prefix: &str) -> Vec<(String, Tensor)> {
    named_variables(vs)
        .into_iter()
        .map(|(n, t)| (format!("{prefix}.{n}"), t.detach().copy()))
        .collect()
}

/// Every variable's shape as an int64 tensor, as `shape_prefix.name`.
fn shapes(vs: &VarStore, prefix: &str) -> Vec<(String, Tensor)> {
    named_variables(vs)
        .into_iter()
        .map(|(n, t)| (format!("shape_{prefix}.{n}"), Tensor::from_slice(&t.size())))
        .collect()
}

fn var(vs: &VarStore, name: &str) -> Tensor {
    vs.variables()
        .remove(name)
        .unwrap_or_else(|| panic!("no variable `{name}`"))
}

fn head_pair(name: &str, build: impl Fn(tch::nn::Path) -> MlpHead) -> (VarStore, MlpHead, String) {
    let vs = VarStore::new(CPU);
    let h = build(vs.root());
    perturb_norms(&vs);
    (vs, h, name.to_string())
}

#[test]
fn backbones_and_heads_match_timm_and_torchvision() {
    tch::manual_seed(3);
    let mut inputs: Vec<(String, Tensor)> = Vec::new();

    // ViT-T/4 at 32 px, learnable position embedding.
    let vit_vs = VarStore::new(CPU);
    let vit = VisionTransformer::new(vit_vs.root(), &vit_tiny(32, 4)).unwrap();
    perturb_norms(&vit_vs);
    inputs.extend(export(&vit_vs, "vit32"));
    let x32 = Tensor::randn([2, 3, 32, 32], (Kind::Float, CPU));
    let x48 = Tensor::randn([2, 3, 48, 48], (Kind::Float, CPU));
    let vit_r = Tensor::randn([2, 192], (Kind::Float, CPU));
    let (tokens, cls, cls48) = tch::no_grad(|| {
        (
            vit.forward_features(&x32, false).unwrap(),
            vit.forward_t(&x32, false),
            vit.forward_t(&x48, false),
        )
    });
    (vit.forward_t(&x32, true) * &vit_r)
        .sum(Kind::Float)
        .backward();

    // Position embeddings.
    let pe_in = Tensor::randn([1, 65, 192], (Kind::Float, CPU));
    let pe =
        |g: (i64, i64), aa: bool| resample_abs_pos_embed(&pe_in, g, Some((8, 8)), 1, aa).unwrap();
    let sincos = sincos_pos_embed_2d(16, 16, 192, 10000.0).unwrap();

    // Names / shapes / counts (weights not sent).
    let mut counts = Vec::new();
    for (prefix, cfg) in [
        ("vit_t224", vit_tiny(224, 16)),
        ("vit_s224", vit_small(224, 16)),
        ("vit_t2", vit_tiny(32, 2)),
    ] {
        let vs = VarStore::new(CPU);
        let num_classes = if prefix == "vit_t2" { None } else { Some(1000) };
        VisionTransformer::new(
            vs.root(),
            &contrast_core::nn::vit::VitConfig { num_classes, ..cfg },
        )
        .unwrap();
        inputs.extend(shapes(&vs, prefix));
        counts.push((prefix, count_parameters(&vs)));
    }
    for (prefix, cfg) in [("r18", resnet18()), ("r50", resnet50())] {
        let vs = VarStore::new(CPU);
        ResNet::new(
            vs.root(),
            &ResNetConfig {
                num_classes: Some(1000),
                ..cfg
            },
        )
        .unwrap();
        inputs.extend(shapes(&vs, prefix));
        counts.push((prefix, count_parameters(&vs)));
    }

    // ResNet-18, CIFAR stem: eval forward, then one train forward.
    let r18_vs = VarStore::new(CPU);
    let r18 = ResNet::new(
        r18_vs.root(),
        &ResNetConfig {
            stem: Stem::cifar(),
            ..resnet18()
        },
    )
    .unwrap();
    perturb_norms(&r18_vs);
    inputs.extend(export(&r18_vs, "r18c"));
    let xr = Tensor::randn([4, 3, 32, 32], (Kind::Float, CPU));
    let r18c_r = Tensor::randn([4, 512], (Kind::Float, CPU));
    let r18_eval = tch::no_grad(|| r18.forward_features(&xr, false).unwrap());
    let r18_loss = (r18.forward_t(&xr, true) * &r18c_r).sum(Kind::Float);
    r18_loss.backward();

    // ResNet-50 with a 10-class fc, ImageNet stem, at 64 px.
    let r50_vs = VarStore::new(CPU);
    let r50 = ResNet::new(
        r50_vs.root(),
        &ResNetConfig {
            num_classes: Some(10),
            ..resnet50()
        },
    )
    .unwrap();
    perturb_norms(&r50_vs);
    inputs.extend(export(&r50_vs, "r50w"));
    let x64 = Tensor::randn([2, 3, 64, 64], (Kind::Float, CPU));
    let r50_logits = tch::no_grad(|| r50.forward_t(&x64, false));
    // The same weights at output stride 16 and 8 (dilated layer 4 / layers 3 and 4).
    let dilated: Vec<(i64, Tensor)> = [16i64, 8]
        .iter()
        .map(|&os| {
            let mut vs = VarStore::new(CPU);
            let net = ResNet::new(
                vs.root(),
                &ResNetConfig {
                    num_classes: Some(10),
                    output_stride: os,
                    ..resnet50()
                },
            )
            .unwrap();
            vs.copy(&r50_vs).unwrap();
            let l4 = tch::no_grad(|| net.forward_features(&x64, false).unwrap().layer4);
            (os, l4)
        })
        .collect();

    // Heads (MoCo-v3 builder, SimCLR, BYOL).
    let heads = [
        head_pair("mocoproj", |p| moco_v3_projector(p, 3, 16, 32, 8).unwrap()),
        head_pair("mocopred", |p| {
            moco_v3_predictor(p, 2, 8, 32, 8, true).unwrap()
        }),
        head_pair("mocopred_nobn", |p| {
            moco_v3_predictor(p, 2, 8, 32, 8, false).unwrap()
        }),
        head_pair("simclr", |p| simclr_head(p, 16, 32, 8, false).unwrap()),
        head_pair("simclr_bn", |p| simclr_head(p, 16, 32, 8, true).unwrap()),
        head_pair("byol", |p| byol_head(p, 16, 32, 8).unwrap()),
    ];
    let h_in16 = Tensor::randn([8, 16], (Kind::Float, CPU));
    let h_in8 = Tensor::randn([8, 8], (Kind::Float, CPU));
    let mut head_out = Vec::new();
    for (vs, h, name) in &heads {
        inputs.extend(export(vs, name));
        let x = if name.starts_with("mocopred") {
            &h_in8
        } else {
            &h_in16
        };
        let (e, t) = tch::no_grad(|| (h.forward_t(x, false), h.forward_t(x, true)));
        head_out.push((name.clone(), e, t));
    }

    inputs.extend([
        ("x32".to_string(), x32.shallow_clone()),
        ("x48".to_string(), x48.shallow_clone()),
        ("vit_r".to_string(), vit_r.shallow_clone()),
        ("pe_in".to_string(), pe_in.shallow_clone()),
        ("xr".to_string(), xr.shallow_clone()),
        ("r18c_r".to_string(), r18c_r.shallow_clone()),
        ("x64".to_string(), x64.shallow_clone()),
        ("h_in16".to_string(), h_in16.shallow_clone()),
        ("h_in8".to_string(), h_in8.shallow_clone()),
    ]);
    let refs: Vec<(&str, &Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let Some(out) = run_reference(script("nn_reference.py"), &refs, &[]).unwrap() else {
        return;
    };

    // ViT forward (eval) and gradients.
    assert_close(
        &tokens,
        get(&out, "vit32_tokens"),
        1e-4,
        1e-4,
        "ViT-T/4 tokens",
    );
    assert_close(
        &cls,
        get(&out, "vit32_cls"),
        1e-4,
        1e-4,
        "ViT-T/4 class token",
    );
    assert_close(
        &cls48,
        get(&out, "vit48_cls"),
        1e-4,
        1e-4,
        "ViT-T/4 at 48 px (resampled pos-embed)",
    );
    for n in [
        "cls_token",
        "pos_embed",
        "patch_embed.proj.weight",
        "blocks.0.attn.qkv.weight",
        "blocks.11.mlp.fc2.bias",
        "norm.weight",
    ] {
        assert_close(
            &var(&vit_vs, n).grad(),
            get(&out, &format!("vit_grad.{n}")),
            1e-4,
            1e-3,
            &format!("ViT dL/d{n}"),
        );
    }

    // Position embeddings.
    assert_close(
        &pe((12, 12), true),
        get(&out, "pe_12x12_aa"),
        1e-5,
        1e-5,
        "resample 8→12 (aa)",
    );
    assert_close(
        &pe((4, 4), true),
        get(&out, "pe_4x4_aa"),
        1e-5,
        1e-5,
        "resample 8→4 (aa)",
    );
    assert_close(
        &pe((6, 10), true),
        get(&out, "pe_6x10_aa"),
        1e-5,
        1e-5,
        "resample 8→6×10 (aa)",
    );
    assert_close(
        &pe((12, 12), false),
        get(&out, "pe_12x12_noaa"),
        1e-5,
        1e-5,
        "resample 8→12",
    );
    assert_close(
        &sincos,
        get(&out, "sincos_16_192"),
        1e-5,
        1e-5,
        "MoCo-v3 sin-cos table",
    );

    // Counts: ours == timm / torchvision == the published figures.
    let expected = [
        ("vit_t224", 5_717_416i64),
        ("vit_s224", 22_050_664),
        (
            "vit_t2",
            5_524_416 - 192 * 3 * 16 * 16 + 192 * 3 * 2 * 2 + 192 * (256 - 196),
        ),
        ("r18", 11_689_512),
        ("r50", 25_557_032),
    ];
    for ((prefix, ours), (p2, lit)) in counts.iter().zip(expected) {
        assert_eq!(*prefix, p2);
        let theirs = get(&out, &format!("count_{prefix}")).int64_value(&[]);
        assert_eq!(*ours, theirs, "{prefix}: our parameter count vs PyTorch's");
        assert_eq!(
            *ours, lit,
            "{prefix}: parameter count vs the published figure"
        );
    }

    // ResNet-18 CIFAR.
    assert_close(
        &r18_eval.pooled,
        get(&out, "r18c_eval_pooled"),
        1e-4,
        1e-4,
        "R18 pooled (eval)",
    );
    assert_close(
        &r18_eval.layer4,
        get(&out, "r18c_eval_layer4"),
        1e-4,
        1e-4,
        "R18 layer4 (eval)",
    );
    assert_eq!(r18_eval.layer4.size(), [4, 512, 4, 4]);
    assert_close(
        &r18_loss,
        get(&out, "r18c_train_loss"),
        1e-3,
        1e-4,
        "R18 train-mode loss",
    );
    assert_close(
        &var(&r18_vs, "conv1.weight").grad(),
        get(&out, "r18c_grad.conv1.weight"),
        1e-4,
        1e-3,
        "R18 dL/dconv1",
    );
    assert_close(
        &var(&r18_vs, "layer4.1.bn2.weight").grad(),
        get(&out, "r18c_grad.layer4.1.bn2.weight"),
        1e-4,
        1e-3,
        "R18 dL/dlayer4.1.bn2.weight",
    );
    for n in ["bn1.running_mean", "layer4.0.downsample.1.running_var"] {
        assert_close(
            &var(&r18_vs, n),
            get(&out, &format!("r18c_after.{n}")),
            1e-5,
            1e-4,
            &format!("R18 {n} after one train step"),
        );
    }

    // ResNet-50: 53 convolutions in fp32, computed here with the test's libtorch threads and in
    // the reference with one thread (different convolution algorithms and summation orders), so
    // differences up to a few 1e-4 on O(1) logits are rounding; a wrong name, stride or block
    // gives O(1) differences.
    assert_close(
        &r50_logits,
        get(&out, "r50_logits"),
        1e-3,
        1e-3,
        "R50 logits (eval)",
    );
    for (os, l4) in &dilated {
        // 64 px: layer 4 is 4×4 at stride 16 and 8×8 at stride 8
        assert_eq!(l4.size(), [2, 2048, 64 / os, 64 / os], "output stride {os}");
        // 50 layers of fp32 convolutions (other algorithms for dilated ones, other thread
        // counts) on maps of scale ~1e3 (the perturbed norms): rounding measured at ~1e-6 of
        // the scale; a wrong stride or dilation changes the receptive fields and gives
        // differences of the order of the map itself
        let reference = get(&out, &format!("r50_os{os}_layer4"));
        let scale = reference.abs().max().double_value(&[]);
        assert_close(
            l4,
            reference,
            1e-5 * scale,
            1e-3,
            &format!(
                "R50 layer 4 at output stride {os} (torchvision replace_stride_with_dilation)"
            ),
        );
    }

    // Heads.
    for (name, e, t) in &head_out {
        assert_close(
            e,
            get(&out, &format!("{name}_eval")),
            1e-5,
            1e-4,
            &format!("{name} eval"),
        );
        assert_close(
            t,
            get(&out, &format!("{name}_train")),
            1e-5,
            1e-4,
            &format!("{name} train"),
        );
    }
}

#[test]
fn vit_initialisation_follows_moco_v3() {
    tch::manual_seed(0);
    let vs = VarStore::new(CPU);
    VisionTransformer::new(vs.root(), &vit_tiny(32, 2)).unwrap();
    let d = 192.0f64;
    // (name, uniform bound): qkv treats q, k, v as separate D×D matrices; patch embed 3·2·2 in.
    let cases = [
        ("blocks.0.attn.qkv.weight", (6.0 / (d + d)).sqrt()),
        ("blocks.0.attn.proj.weight", (6.0 / (d + d)).sqrt()),
        ("blocks.3.mlp.fc1.weight", (6.0 / (d + 4.0 * d)).sqrt()),
        ("patch_embed.proj.weight", (6.0 / (12.0 + d)).sqrt()),
    ];
    for (n, bound) in cases {
        let w = var(&vs, n);
        let max = w.abs().max().double_value(&[]);
        let std = w.std(false).double_value(&[]);
        assert!(
            max <= bound && max > 0.99 * bound,
            "{n}: max |w| {max} vs bound {bound}"
        );
        let want = bound / 3f64.sqrt();
        assert!((std - want).abs() < 0.03 * want, "{n}: std {std} vs {want}");
    }
    for n in [
        "blocks.0.attn.qkv.bias",
        "blocks.0.mlp.fc2.bias",
        "patch_embed.proj.bias",
    ] {
        assert_eq!(
            var(&vs, n).abs().max().double_value(&[]),
            0.0,
            "{n} is zero"
        );
    }
    let cls = var(&vs, "cls_token").std(false).double_value(&[]);
    assert!(cls > 0.5e-6 && cls < 2e-6, "cls_token std {cls}");
    let pos = var(&vs, "pos_embed");
    assert_eq!(pos.size(), [1, 257, 192]);
    let pstd = pos.std(false).double_value(&[]);
    assert!((pstd - 0.02).abs() < 0.001, "pos_embed std {pstd}");
    assert_eq!(
        count_parameters(&vs),
        5_524_416 - 192 * 3 * 16 * 16 + 192 * 3 * 2 * 2 + 192 * (256 - 196)
    );

    // Fixed sin-cos: not trainable, not counted, value = the table.
    let vs2 = VarStore::new(CPU);
    let cfg = contrast_core::nn::vit::VitConfig {
        pos_embed: PosEmbed::SinCos,
        ..vit_tiny(32, 2)
    };
    VisionTransformer::new(vs2.root(), &cfg).unwrap();
    let pe = var(&vs2, "pos_embed");
    assert!(!pe.requires_grad());
    assert_close(
        &pe,
        &sincos_pos_embed_2d(16, 16, 192, 1e4).unwrap(),
        0.0,
        0.0,
        "sin-cos",
    );
    assert_eq!(count_parameters(&vs2), count_parameters(&vs) - 257 * 192);

    // MoCo-v3's stop_grad_conv1: the patch projection gets no gradient.
    let vs3 = VarStore::new(CPU);
    let cfg = contrast_core::nn::vit::VitConfig {
        stop_grad_patch_embed: true,
        depth: 1,
        ..vit_tiny(8, 4)
    };
    let m = VisionTransformer::new(vs3.root(), &cfg).unwrap();
    m.forward_t(&Tensor::randn([2, 3, 8, 8], (Kind::Float, CPU)), true)
        .sum(Kind::Float)
        .backward();
    for n in ["patch_embed.proj.weight", "patch_embed.proj.bias"] {
        let t = var(&vs3, n);
        assert!(
            !t.requires_grad() && !t.grad().defined(),
            "{n} must be frozen"
        );
    }
    assert!(var(&vs3, "cls_token").grad().defined());
}

#[test]
fn resnet_initialisation_follows_torchvision() {
    tch::manual_seed(0);
    let vs = VarStore::new(CPU);
    let cfg = ResNetConfig {
        zero_init_residual: true,
        num_classes: Some(10),
        ..resnet50()
    };
    let m = ResNet::new(vs.root(), &cfg).unwrap();
    assert_eq!(m.num_features(), 2048);
    // Kaiming normal, fan_out, ReLU gain: std = √(2 / (C_out·k·k)).
    for (n, fan_out) in [
        ("conv1.weight", 64.0 * 49.0),
        ("layer3.2.conv2.weight", 256.0 * 9.0),
    ] {
        let s = var(&vs, n).std(false).double_value(&[]);
        let want = (2.0f64 / fan_out).sqrt();
        assert!((s - want).abs() < 0.03 * want, "{n}: std {s} vs {want}");
    }
    assert_eq!(
        var(&vs, "layer2.1.bn3.weight")
            .abs()
            .max()
            .double_value(&[]),
        0.0
    );
    assert_eq!(var(&vs, "layer2.1.bn2.weight").min().double_value(&[]), 1.0);
    let fc = var(&vs, "fc.weight").abs().max().double_value(&[]);
    let bound = 1.0 / 2048f64.sqrt();
    assert!(fc <= bound && fc > 0.99 * bound, "fc max {fc} vs {bound}");
    // Zero-init residual: every block starts as the identity + ReLU of its shortcut.
    let x = Tensor::rand([1, 3, 64, 64], (Kind::Float, CPU));
    let f = tch::no_grad(|| m.forward_features(&x, false).unwrap());
    assert_eq!(f.layer4.size(), [1, 2048, 2, 2]);
    assert_eq!(f.pooled.size(), [1, 2048]);
    // Errors name the numbers.
    let e = m.forward_features(&Tensor::zeros([1, 1, 8, 8], (Kind::Float, CPU)), false);
    assert!(format!("{:#}", e.unwrap_err()).contains("1 channels"));
}

#[test]
fn drop_path_rates_and_statistics() {
    tch::manual_seed(5);
    let x = Tensor::ones([4000, 3], (Kind::Float, CPU));
    let y = drop_path(&x, 0.3, true);
    let kept = y.select(1, 0).gt(0.0).to_kind(Kind::Float);
    let frac = kept.mean(Kind::Float).double_value(&[]);
    assert!((frac - 0.7).abs() < 0.03, "kept fraction {frac}");
    // Survivors scaled by 1/keep, whole rows at once.
    let survivors = y.select(1, 2).masked_select(&kept.gt(0.0));
    assert_close(
        &survivors,
        &survivors.ones_like().divide_scalar(0.7),
        1e-6,
        0.0,
        "scale",
    );
    assert_close(&y.select(1, 0), &y.select(1, 1), 0.0, 0.0, "row-wise mask");
    assert_close(&drop_path(&x, 0.3, false), &x, 0.0, 0.0, "eval identity");

    let vs = VarStore::new(CPU);
    let cfg = contrast_core::nn::vit::VitConfig {
        depth: 5,
        drop_path_rate: 0.1,
        ..vit_tiny(8, 4)
    };
    let m = VisionTransformer::new(vs.root(), &cfg).unwrap();
    let rates = m.drop_path_rates();
    let want = [0.0, 0.025, 0.05, 0.075, 0.1];
    for (r, w) in rates.iter().zip(want) {
        assert!((r - w).abs() < 1e-12, "rates {rates:?}");
    }
    let xs = Tensor::randn([16, 3, 8, 8], (Kind::Float, CPU));
    let (a, b, e1, e2) = tch::no_grad(|| {
        (
            m.forward_t(&xs, true),
            m.forward_t(&xs, true),
            m.forward_t(&xs, false),
            m.forward_t(&xs, false),
        )
    });
    assert!(
        !a.allclose(&b, 1e-6, 1e-6, false),
        "drop-path is random in training"
    );
    assert_close(&e1, &e2, 0.0, 0.0, "eval is deterministic");
}

#[test]
fn patch_level_mixing_through_forward_tokens() {
    // Swapping pixel patches between two images, then embedding, equals embedding, then
    // swapping the tokens: the PatchMix path (mix tokens, continue with forward_tokens).
    tch::manual_seed(9);
    let vs = VarStore::new(CPU);
    let cfg = contrast_core::nn::vit::VitConfig {
        depth: 2,
        ..vit_tiny(8, 2)
    };
    let m = VisionTransformer::new(vs.root(), &cfg).unwrap();
    let x = Tensor::randn([2, 3, 8, 8], (Kind::Float, CPU));
    // Image 0 takes the top-left 2×2 patch (token 0) and token 5 (row 1, col 1) from image 1.
    let mixed_px = x.copy();
    for (r, c) in [(0i64, 0i64), (1, 1)] {
        let src = x.get(1).narrow(1, 2 * r, 2).narrow(2, 2 * c, 2);
        let mut dst = mixed_px.get(0).narrow(1, 2 * r, 2).narrow(2, 2 * c, 2);
        dst.copy_(&src);
    }
    tch::no_grad(|| {
        let (tok, grid) = m.embed_patches(&x).unwrap();
        assert_eq!(grid, (4, 4));
        let mixed_tok = tok.copy();
        for t in [0i64, 5] {
            let mut dst = mixed_tok.get(0).get(t);
            dst.copy_(&tok.get(1).get(t));
        }
        let a = m.forward_features(&mixed_px, false).unwrap();
        let b = m.forward_tokens(&mixed_tok, grid, false).unwrap();
        assert_close(&a, &b, 1e-5, 1e-5, "pixel-mix vs token-mix");
        assert_eq!(a.size(), [2, 17, 192]);
    });
    let e = m.forward_features(&Tensor::zeros([1, 3, 9, 8], (Kind::Float, CPU)), false);
    assert_eq!(
        format!("{:#}", e.unwrap_err()),
        "image height 9 is not a multiple of patch height 2"
    );
}

#[test]
fn pytorch_state_dicts_load_by_name() {
    // A MoCo-v3-style checkpoint: `module.base_encoder.` prefix, BN counters, a foreign entry.
    tch::manual_seed(11);
    let src = VarStore::new(CPU);
    let cfg = ResNetConfig {
        layers: [1, 1, 1, 1],
        ..resnet18()
    };
    ResNet::new(src.root(), &cfg).unwrap();
    perturb_norms(&src);
    let mut entries: Vec<(String, Tensor)> = named_variables(&src)
        .into_iter()
        .map(|(n, t)| (format!("module.base_encoder.{n}"), t))
        .collect();
    entries.push((
        "module.base_encoder.bn1.num_batches_tracked".into(),
        Tensor::from(7i64),
    ));
    entries.push((
        "module.predictor.0.weight".into(),
        Tensor::zeros([2, 2], (Kind::Float, CPU)),
    ));
    let dir = contrast_core::testing::tempdir().unwrap();
    let file = dir.join("ckpt.npz");
    Tensor::write_npz(&entries, &file).unwrap();

    let dst = VarStore::new(CPU);
    ResNet::new(dst.root(), &cfg).unwrap();
    load_pytorch_weights(&dst, &file, "module.base_encoder.", true).unwrap();
    for ((n, a), (_, b)) in named_variables(&dst).into_iter().zip(named_variables(&src)) {
        assert!(a.equal(&b), "{n} differs after loading");
    }
    // Without the prefix the predictor entry is unexpected, and nothing matches.
    let e = load_pytorch_weights(&dst, &file, "", true).unwrap_err();
    assert!(format!("{e:#}").contains("missing variables"), "{e:#}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn configs_are_data() {
    use contrast_core::eval::knn::{KnnConfig, KnnMetric};
    use contrast_core::nn::heads::{LastNorm, MlpConfig};
    use contrast_core::nn::resnet::BlockKind;
    use contrast_core::nn::vit::VitConfig;
    use contrast_core::train::config::{load_config, ConfigSource};

    #[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Cfg {
        vit: VitConfig,
        resnet: ResNetConfig,
        head: MlpConfig,
        knn: KnnConfig,
    }
    let text = "[vit]\npatch_size = 4\npos_embed = \"sincos\"\n\
                [resnet]\nstem = \"cifar_pad2\"\nblock = \"bottleneck\"\n\
                [head]\ndims = [512, 2048, 128]\nlast_norm = \"none\"\n\
                [knn]\nmetric = \"euclidean\"";
    let cfg: Cfg = load_config(
        Some(ConfigSource::text(text, "preset.toml")),
        &[
            "knn.ks=[10, 20, 100, 200]".into(),
            "vit.drop_path_rate=0.1".into(),
        ],
    )
    .unwrap();
    assert_eq!(
        cfg.vit,
        VitConfig {
            patch_size: 4,
            pos_embed: PosEmbed::SinCos,
            drop_path_rate: 0.1,
            ..vit_tiny(32, 2)
        }
    );
    assert_eq!(
        (cfg.resnet.stem, cfg.resnet.block),
        (Stem::CifarPad2, BlockKind::Bottleneck)
    );
    assert_eq!(cfg.resnet.layers, [2, 2, 2, 2]);
    assert_eq!(cfg.head.dims, [512, 2048, 128]);
    assert_eq!(cfg.head.last_norm, LastNorm::None);
    assert_eq!(
        (cfg.knn.metric, cfg.knn.ks.clone()),
        (KnnMetric::Euclidean, vec![10, 20, 100, 200])
    );
    assert_eq!(cfg.knn.temperature, 0.07);
    let bad = ConfigSource::text("[resnet]\nstem = \"cifar3\"", "preset.toml");
    assert!(load_config::<Cfg>(Some(bad), &[]).is_err());

    // solo-learn's padded stem: 34×34 after the stem, 5×5 after layer 4.
    let vs = VarStore::new(CPU);
    let m = ResNet::new(
        vs.root(),
        &ResNetConfig {
            stem: Stem::CifarPad2,
            ..resnet18()
        },
    )
    .unwrap();
    let f = tch::no_grad(|| {
        m.forward_features(&Tensor::zeros([1, 3, 32, 32], (Kind::Float, CPU)), false)
    })
    .unwrap();
    assert_eq!(f.layer4.size(), [1, 512, 5, 5]);
}

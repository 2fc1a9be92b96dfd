//! Export a trained backbone as a state dict that the matching Python model loads with
//! `load_state_dict(..., strict=True)`: timm's `VisionTransformer` for our ViT, torchvision's
//! `ResNet` for our ResNet (names are already theirs; see [`super::vit`], [`super::resnet`]).
//!
//! The file pair is `<stem>.safetensors` (the tensors) and `<stem>.json` (which class to build,
//! with which arguments, and a Python snippet that does it). What the export adds to our
//! variables: torchvision's BatchNorm `num_batches_tracked` counters (int64 scalars, which tch
//! does not keep; they only matter for a BN with `momentum=None`). The classifier head is not
//! part of a backbone export: build the Python model headless (`num_classes=0` in timm,
//! `model.fc = torch.nn.Identity()` in torchvision), as the snippet does.

use super::resnet::{BlockKind, ResNetConfig, Stem};
use super::vit::{PosEmbed, VitConfig};
use crate::tensors::Named;
use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// A backbone ready to write: tensors (Python names) and how to build the model in Python.
pub struct Export {
    pub tensors: Named,
    pub meta: Value,
}

/// The variables under `prefix.` with the prefix removed (an empty prefix: all of them), on the
/// CPU, contiguous, detached, plus a `num_batches_tracked` counter beside every BatchNorm's
/// `running_mean`. Tensors named `fc.*` / `head.*` (classifiers) are left out.
pub fn backbone_state(named: &Named, prefix: &str) -> Named {
    let mut out: Named = Vec::new();
    for (n, t) in named {
        let Some(rest) = (if prefix.is_empty() {
            Some(n.as_str())
        } else {
            n.strip_prefix(prefix).and_then(|r| r.strip_prefix('.'))
        }) else {
            continue;
        };
        if rest.starts_with("fc.") || rest.starts_with("head.") {
            continue;
        }
        out.push((
            rest.to_string(),
            t.detach().to_device(Device::Cpu).contiguous(),
        ));
        if let Some(bn) = rest.strip_suffix(".running_mean") {
            out.push((
                format!("{bn}.num_batches_tracked"),
                Tensor::from(0i64).to_kind(Kind::Int64),
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// How to build our ResNet in torchvision (headless).
pub fn resnet_meta(cfg: &ResNetConfig) -> Value {
    let arch = match (cfg.block, cfg.layers) {
        (BlockKind::Basic, [2, 2, 2, 2]) => "resnet18",
        (BlockKind::Basic, [3, 4, 6, 3]) => "resnet34",
        (BlockKind::Bottleneck, [3, 4, 6, 3]) => "resnet50",
        (BlockKind::Bottleneck, [3, 4, 23, 3]) => "resnet101",
        _ => "custom",
    };
    let block = match cfg.block {
        BlockKind::Basic => "BasicBlock",
        BlockKind::Bottleneck => "Bottleneck",
    };
    let stem = match cfg.stem {
        Stem::ImageNet => "",
        Stem::Cifar => {
            "m.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False); m.maxpool = torch.nn.Identity()\n"
        }
        Stem::CifarPad2 => {
            "m.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 2, bias=False); m.maxpool = torch.nn.Identity()\n"
        }
    };
    let dil = match cfg.output_stride {
        16 => "[False, False, True]",
        8 => "[False, True, True]",
        _ => "None",
    };
    json!({
        "library": "torchvision",
        "class": "torchvision.models.resnet.ResNet",
        "arch": arch,
        "block": block,
        "layers": cfg.layers,
        "stem": format!("{:?}", cfg.stem),
        "replace_stride_with_dilation": dil,
        "output": "global-average-pooled layer4 feature",
        "python": format!(
            "import torch, torchvision\nfrom safetensors.torch import load_file\n\
             m = torchvision.models.resnet.ResNet(torchvision.models.resnet.{block}, {:?}, \
             replace_stride_with_dilation={dil})\n{stem}m.fc = torch.nn.Identity()\n\
             m.load_state_dict(load_file('backbone.safetensors'), strict=True)\nm.eval()\n",
            cfg.layers
        ),
    })
}

/// How to build our ViT in timm (headless, class-token pooling).
pub fn vit_meta(cfg: &VitConfig) -> Value {
    let kwargs = json!({
        "img_size": cfg.img_size,
        "patch_size": cfg.patch_size,
        "in_chans": cfg.in_chans,
        "embed_dim": cfg.embed_dim,
        "depth": cfg.depth,
        "num_heads": cfg.num_heads,
        "mlp_ratio": cfg.mlp_ratio,
        "qkv_bias": cfg.qkv_bias,
        "num_classes": 0,
        "global_pool": "token",
    });
    json!({
        "library": "timm",
        "class": "timm.models.vision_transformer.VisionTransformer",
        "kwargs": kwargs,
        "norm_eps": cfg.norm_eps,
        "pos_embed": match cfg.pos_embed { PosEmbed::Learnable => "learnable", PosEmbed::SinCos => "sincos (fixed; stored as the pos_embed parameter)" },
        "output": "final-norm class token",
        "python": format!(
            "import functools, torch, timm\nfrom safetensors.torch import load_file\n\
             m = timm.models.vision_transformer.VisionTransformer({}, \
             norm_layer=functools.partial(torch.nn.LayerNorm, eps={}))\n\
             m.load_state_dict(load_file('backbone.safetensors'), strict=True)\nm.eval()\n",
            py_kwargs(&kwargs),
            cfg.norm_eps
        ),
    })
}

/// A JSON object as Python keyword arguments (`a=1, b=True, c='x'`).
fn py_kwargs(v: &Value) -> String {
    let lit = |v: &Value| match v {
        Value::Bool(true) => "True".to_string(),
        Value::Bool(false) => "False".to_string(),
        Value::Null => "None".to_string(),
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    };
    v.as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| format!("{k}={}", lit(v)))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// Write `<dir>/<stem>.safetensors` and `<dir>/<stem>.json`; returns both paths.
pub fn write_export(e: &Export, dir: &Path, stem: &str) -> Result<[PathBuf; 2]> {
    ensure!(!e.tensors.is_empty(), "nothing to export (no tensors)");
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let st = dir.join(format!("{stem}.safetensors"));
    crate::tensors::write_safetensors_atomic(&st, &e.tensors)?;
    let js = dir.join(format!("{stem}.json"));
    let mut meta = e.meta.clone();
    if let Some(o) = meta.as_object_mut() {
        o.insert("file".into(), json!(format!("{stem}.safetensors")));
        o.insert("tensors".into(), json!(e.tensors.len()));
    }
    crate::train::checkpoint::write_atomic(&js, &serde_json::to_vec_pretty(&meta)?)?;
    Ok([st, js])
}

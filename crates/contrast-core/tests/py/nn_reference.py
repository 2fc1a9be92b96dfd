"""timm's and torchvision's own ViT and ResNet for contrast_core::nn; the MLP heads are our own restatement in plain torch.nn (no official code covers them as such).

Inputs (prefix.name keys): model weights exported from our VarStores by name, input images,
random cotangents, and `shape_<model>.<name>` int64 tensors holding each variable's shape.
Every model is rebuilt here with timm / torchvision / plain torch.nn and loaded by *name*
(strict up to BatchNorm's num_batches_tracked), so a naming mistake fails this script.
"""
import math
import sys
from functools import partial

import numpy as np
import timm
import torch
import torch.nn as nn
import torchvision
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer

torch.manual_seed(0)
inp = dict(np.load(sys.argv[1]))
out = {}


def group(prefix):
    p = prefix + "."
    return {k[len(p):]: torch.from_numpy(v) for k, v in inp.items() if k.startswith(p)}


def load(model, prefix):
    missing, unexpected = model.load_state_dict(group(prefix), strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    assert not missing and not unexpected, f"{prefix}: missing {missing}, unexpected {unexpected}"
    return model


def check_names(model, prefix):
    """Our variable names and shapes equal the model's state dict (minus num_batches_tracked);
    returns the model's parameter count."""
    ours = {k: tuple(int(d) for d in v) for k, v in group("shape_" + prefix).items()}
    theirs = {k: tuple(v.shape) for k, v in model.state_dict().items()
              if not k.endswith("num_batches_tracked")}
    assert ours.keys() == theirs.keys(), (
        f"{prefix}: only ours {sorted(ours.keys() - theirs.keys())[:8]}, "
        f"only theirs {sorted(theirs.keys() - ours.keys())[:8]}")
    bad = [(k, ours[k], theirs[k]) for k in ours if ours[k] != theirs[k]]
    assert not bad, f"{prefix}: shape mismatch {bad[:5]}"
    return np.array(sum(p.numel() for p in model.parameters()), dtype=np.int64)


def vit(img, patch, dim, heads, classes=0, dynamic=False):
    return VisionTransformer(img_size=img, patch_size=patch, embed_dim=dim, depth=12,
                             num_heads=heads, mlp_ratio=4, qkv_bias=True,
                             norm_layer=partial(nn.LayerNorm, eps=1e-6), num_classes=classes,
                             dynamic_img_size=dynamic)


# ---- ViT-T/4 at 32 px: forward (eval) at 32 and 48 px, gradients ----------------------------
m = load(vit(32, 4, 192, 3, dynamic=True), "vit32").eval()
with torch.no_grad():
    x32 = torch.from_numpy(inp["x32"])
    out["vit32_tokens"] = m.forward_features(x32).numpy()
    out["vit32_cls"] = m(x32).numpy()
    out["vit48_cls"] = m(torch.from_numpy(inp["x48"])).numpy()
m.train()  # no dropout / drop-path: identical to eval, but exercises autograd
loss = (m(x32) * torch.from_numpy(inp["vit_r"])).sum()
loss.backward()
named = dict(m.named_parameters())
for n in ["cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.attn.qkv.weight",
          "blocks.11.mlp.fc2.bias", "norm.weight"]:
    out["vit_grad." + n] = named[n].grad.numpy()

# ---- position embeddings -------------------------------------------------------------------
pe = torch.from_numpy(inp["pe_in"])  # [1, 1 + 8*8, 192]
out["pe_12x12_aa"] = resample_abs_pos_embed(pe, [12, 12], [8, 8], 1).numpy()
out["pe_4x4_aa"] = resample_abs_pos_embed(pe, [4, 4], [8, 8], 1).numpy()
out["pe_6x10_aa"] = resample_abs_pos_embed(pe, [6, 10], [8, 8], 1).numpy()
out["pe_12x12_noaa"] = resample_abs_pos_embed(pe, [12, 12], [8, 8], 1, antialias=False).numpy()


def moco_sincos(h, w, embed_dim, temperature=10000.0):  # MoCo-v3 vits.py, verbatim formula
    grid_w = torch.arange(w, dtype=torch.float32)
    grid_h = torch.arange(h, dtype=torch.float32)
    grid_w, grid_h = torch.meshgrid(grid_w, grid_h, indexing="ij")
    pos_dim = embed_dim // 4
    omega = torch.arange(pos_dim, dtype=torch.float32) / pos_dim
    omega = 1.0 / (temperature ** omega)
    out_w = torch.einsum("m,d->md", [grid_w.flatten(), omega])
    out_h = torch.einsum("m,d->md", [grid_h.flatten(), omega])
    pos_emb = torch.cat([torch.sin(out_w), torch.cos(out_w), torch.sin(out_h), torch.cos(out_h)],
                        dim=1)[None, :, :]
    return torch.cat([torch.zeros([1, 1, embed_dim]), pos_emb], dim=1)


out["sincos_16_192"] = moco_sincos(16, 16, 192).numpy()

# ---- names, shapes and parameter counts -----------------------------------------------------
out["count_vit_t224"] = check_names(timm.create_model("vit_tiny_patch16_224"), "vit_t224")
out["count_vit_s224"] = check_names(vit(224, 16, 384, 12, classes=1000), "vit_s224")
out["count_vit_t2"] = check_names(vit(32, 2, 192, 3), "vit_t2")
out["count_r18"] = check_names(torchvision.models.resnet18(), "r18")
out["count_r50"] = check_names(torchvision.models.resnet50(), "r50")

# ---- ResNet-18 CIFAR stem: eval forward, then one train forward (batch stats, grads) ---------
r = torchvision.models.resnet18()
r.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
r.maxpool = nn.Identity()
r.fc = nn.Identity()
r = load(r, "r18c").eval()
xr = torch.from_numpy(inp["xr"])
body = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1, r.layer2, r.layer3, r.layer4)
with torch.no_grad():
    out["r18c_eval_pooled"] = r(xr).numpy()
    out["r18c_eval_layer4"] = body(xr).numpy()
r.train()
loss = (r(xr) * torch.from_numpy(inp["r18c_r"])).sum()
loss.backward()
out["r18c_train_loss"] = loss.detach().numpy()
out["r18c_grad.conv1.weight"] = r.conv1.weight.grad.numpy()
out["r18c_grad.layer4.1.bn2.weight"] = r.layer4[1].bn2.weight.grad.numpy()
out["r18c_after.bn1.running_mean"] = r.bn1.running_mean.numpy()
out["r18c_after.layer4.0.downsample.1.running_var"] = r.layer4[0].downsample[1].running_var.numpy()

# ---- ResNet-50 ImageNet stem with fc: eval forward at 64 px ----------------------------------
r50 = load(torchvision.models.resnet50(num_classes=10), "r50w").eval()
with torch.no_grad():
    out["r50_logits"] = r50(torch.from_numpy(inp["x64"])).numpy()
# the same weights with torchvision's replace_stride_with_dilation (output stride 16 and 8)
for os_, rep in [(16, [False, False, True]), (8, [False, True, True])]:
    rd = load(torchvision.models.resnet50(num_classes=10, replace_stride_with_dilation=rep), "r50w")
    rd = rd.eval()
    body = nn.Sequential(rd.conv1, rd.bn1, rd.relu, rd.maxpool, rd.layer1, rd.layer2, rd.layer3,
                         rd.layer4)
    with torch.no_grad():
        out[f"r50_os{os_}_layer4"] = body(torch.from_numpy(inp["x64"])).numpy()


# ---- heads -----------------------------------------------------------------------------------
def build_mlp(num_layers, input_dim, mlp_dim, output_dim, last_bn=True):  # MoCo-v3 builder.py
    mlp = []
    for l in range(num_layers):
        dim1 = input_dim if l == 0 else mlp_dim
        dim2 = output_dim if l == num_layers - 1 else mlp_dim
        mlp.append(nn.Linear(dim1, dim2, bias=False))
        if l < num_layers - 1:
            mlp.append(nn.BatchNorm1d(dim2))
            mlp.append(nn.ReLU(inplace=True))
        elif last_bn:
            mlp.append(nn.BatchNorm1d(dim2, affine=False))
    return nn.Sequential(*mlp)


heads = {
    "mocoproj": build_mlp(3, 16, 32, 8),
    "mocopred": build_mlp(2, 8, 32, 8, last_bn=True),
    "mocopred_nobn": build_mlp(2, 8, 32, 8, last_bn=False),
    "simclr": nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8)),
    "simclr_bn": nn.Sequential(nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 8)),
    "byol": nn.Sequential(nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 8)),
}
for name, h in heads.items():
    load(h, name)
    x = torch.from_numpy(inp["h_in8" if name.startswith("mocopred") else "h_in16"])
    with torch.no_grad():
        out[name + "_eval"] = h.eval()(x).numpy()
        out[name + "_train"] = h.train()(x).numpy()

np.savez(sys.argv[2], **out)

"""PatchMix step peer (see benches/src/steps/patchmix.rs)."""
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

from step_base import Step, crate_py

crate_py("patchmix")
from patchmix_torch import patchmix_objective, soft_targets  # noqa: E402


def mlp(layers, d_in, hidden, d_out, last_bn):
    """MoCo-v3 `_build_mlp`: Linear(no bias)–BN–ReLU … Linear, then BN(affine=False)."""
    mods = []
    for i in range(layers):
        a = d_in if i == 0 else hidden
        b = d_out if i == layers - 1 else hidden
        mods.append(nn.Linear(a, b, bias=False))
        if i < layers - 1:
            mods += [nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
        elif last_bn:
            mods.append(nn.BatchNorm1d(b, affine=False))
    return nn.Sequential(*mods)


class PatchMixNet(nn.Module):
    def __init__(self, s):
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        self.base_encoder = VisionTransformer(
            img_size=s["image"], patch_size=s["patch"], embed_dim=s["embed_dim"], depth=s["depth"],
            num_heads=s["heads"], mlp_ratio=4, qkv_bias=True,
            norm_layer=partial(nn.LayerNorm, eps=1e-6), num_classes=0, drop_path_rate=s["drop_path"])
        self.base_encoder.head = mlp(s["proj_layers"], s["embed_dim"], s["mlp_dim"], s["out_dim"], True)
        self.predictor = mlp(s["pred_layers"], s["out_dim"], s["mlp_dim"], s["out_dim"], True)


def mix_images(x, p, m):
    """PatchMix's mixing (crates/patchmix/src/mix.rs): one permutation of patch positions shared
    by the batch; image g takes its j-th share from image (g+j) mod B; patches keep positions."""
    b, c, h, w = x.shape
    hp, wp = h // p, w // p
    tokens = x.view(b, c, hp, p, wp, p).permute(0, 2, 4, 1, 3, 5).reshape(b, hp * wp, c * p * p)
    t = tokens.shape[1]
    perm = torch.randperm(t).to(x.device)  # drawn on the CPU, as the check's RNG stream
    s = t // m
    out = tokens.clone()
    g = torch.arange(b, device=x.device)
    for j in range(1, m):
        pos = perm[j * s:(j + 1) * s]
        out[:, pos] = tokens[(g + j) % b][:, pos]
    return out.view(b, hp, wp, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


class PatchMixStep(Step):
    def __init__(self, s, x1=None, x2=None):
        self.s = s
        self.net = PatchMixNet(s)
        b = s["batch"]
        self.x1 = x1 if x1 is not None else torch.randn(b, 3, s["image"], s["image"])
        self.x2 = x2 if x2 is not None else torch.randn(b, 3, s["image"], s["image"])
        self.mix_t, self.mixmix_t = soft_targets(b, s["m"])
        decay = [p for n, p in self.net.named_parameters() if p.ndim > 1]
        no_decay = [p for n, p in self.net.named_parameters() if p.ndim <= 1]
        self.opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": s["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
            lr=s["lr"], betas=tuple(s["betas"]))
        self.net.train()

    def loss(self):
        s, enc, pred = self.s, self.net.base_encoder, self.net.predictor
        xm1 = mix_images(self.x1, s["patch"], s["m"])
        xm2 = mix_images(self.x2, s["patch"], s["m"])
        z1 = enc(self.x1)
        q1 = pred(z1)
        k1 = z1.detach()
        with torch.no_grad():
            k2 = enc(self.x2)
            mk1 = enc(xm1)
        mq2 = pred(enc(xm2))
        return patchmix_objective(q1, k1, k2, mq2, mk1, [], [], s["tau"], self.mix_t, self.mixmix_t,
                                  s["src_smoothing"])[0]


CASE = PatchMixStep

"""Our own restatement (no official code runs in the training-step bench, which must work without
the official checkout): PatchMix's step peer (see benches/src/steps/patchmix.rs), the same network,
mixing and objective as our step, written from the official `module/loss.py` and
`main_pretrain.py`, so that the bench times equal work (before timing, `steps.py check` makes it
compute our loss on our weights). Our step itself is checked against the official code by
crates/patchmix/tests/official_step.rs.

L = CE(q1, k2, I_s) + 1/2 CE(mq2, k1, T_mix) + 1/2 CE(mq2, mk1, T_mixmix)
(I_s: the identity smoothed by s, as the official `no_mixer = PatchMixer(mix_p=0.0, mix_n=1)` builds
it with PatchMixer's default smoothing=0.1: s/B everywhere, 1 - s + s/B on the diagonal)
with CE(q, k, T) = mean_i sum_j -T_ij log_softmax_j(norm(q)_i . norm(k)_j / tau), keys without gradient.
"""
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

from step_base import Step


def soft_targets(B, m):
    """(T_mix, T_mixmix) from their definition: m sources per mixed image, ring distance."""
    mix_t = torch.zeros(B, B)
    mixmix_t = torch.zeros(B, B)
    for g in range(B):
        for j in range(m):
            mix_t[g, (g + j) % B] += 1.0 / m
        for d in range(-(m - 1), m):
            mixmix_t[g, (g + d) % B] += (m - abs(d)) / (m * m)
    return mix_t, mixmix_t


def source_target(B, s):
    """The official `PatchMixer._one_hot` for an unmixed batch: off = s/B, on = (1 - s)/1 + off."""
    off = s / B
    return torch.full((B, B), off).scatter_(1, torch.arange(B).view(-1, 1), (1.0 - s) + off)


def ce(q, k, target, tau):
    q = F.normalize(q, dim=1)
    with torch.no_grad():
        k = F.normalize(k, dim=1)
    logits = torch.einsum("nc,mc->nm", q, k) / tau
    return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()


def patchmix_objective(q1, k1, k2, mq2, mk1, tau, mix_t, mixmix_t, src_s):
    """The total of the three terms (the bench's step has no local crops)."""
    eye = source_target(q1.shape[0], src_s).to(q1.device)
    return ce(q1, k2, eye, tau) + 0.5 * (ce(mq2, k1, mix_t, tau) + ce(mq2, mk1, mixmix_t, tau))


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
        return patchmix_objective(q1, k1, k2, mq2, mk1, s["tau"], self.mix_t, self.mixmix_t,
                                  s["src_smoothing"])


CASE = PatchMixStep

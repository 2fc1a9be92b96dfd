"""Our own restatement (no official code covers Spade; it has none; its V-Net is the official FBA-Net one): Spade's pretraining network and losses in PyTorch (vectorised, from
the formulas in `contrast_core::spatial_contrast`; `crates/contrast-core/tests/py/
spatial_reference.py` states the same losses as explicit loops). Imported by
`benches/py/step_spade.py` (the training-step bench's PyTorch peer).

Network: the official V-Net encoder (`fba_torch.Encoder`), a global head Linear–BN–ReLU–Linear
on the pooled deepest features, and a V-Net decoder whose 1×1×1 output conv gives `local_dim`
voxel features (names `encoder.*`, `head.{0,1,3}.*`, `local.*`).
"""
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "fba-net", "tests", "py"))
from fba_torch import DecoderBlocks, Encoder  # noqa: E402


class LocalDecoder(DecoderBlocks):
    """V-Net decoder (transposed-conv up-sampling) ending in a 1×1×1 conv to `dim` channels."""

    def __init__(self, f, dim):
        super().__init__(f, 0)
        self.out_conv = nn.Conv3d(f, dim, 1, padding=0)

    def forward(self, feats):
        return self.out_conv(self.decode(feats))


class PretrainNet(nn.Module):
    def __init__(self, f, proj_dim, local_dim):
        super().__init__()
        self.encoder = Encoder(f)
        self.head = nn.Sequential(nn.Linear(16 * f, 16 * f), nn.BatchNorm1d(16 * f), nn.ReLU(inplace=True),
                                  nn.Linear(16 * f, proj_dim))
        self.local = LocalDecoder(f, local_dim)

    def forward(self, x):
        feats = self.encoder(x)
        z = self.head(feats[-1].mean(dim=(2, 3, 4)))
        return z, self.local(feats)


def weighted_multi_positive(logits, pos, neg, w):
    """-1/|P_i| sum_p log(e^{s_ip} / (sum_P e^{s} + sum_N w e^{s})), rows without a positive skipped."""
    posf = pos.float()
    m = logits.detach().amax(1, keepdim=True)
    e = (logits - m).exp()
    denom = (e * (posf + neg.float() * w.float())).sum(1, keepdim=True)
    log_prob = logits - m - denom.log()
    npos = posf.sum(1)
    has = npos > 0
    per = -(log_prob * posf).sum(1) / npos.clamp_min(1.0)
    return per[has].mean()


def global_loss(z, twin, volume, centres, tau, cross_r, neg_r, power, far_r):
    n = z.shape[0]
    zn = F.normalize(z, dim=1)
    logits = zn @ zn.T / tau
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    twin_mask = torch.zeros(n, n, dtype=torch.bool, device=z.device)
    twin_mask[torch.arange(n), twin] = True
    d = torch.cdist(centres.double(), centres.double())
    other = volume[:, None] != volume[None, :]
    pos = twin_mask & ~eye
    if cross_r > 0:
        pos = pos | ((d < cross_r) & other)
    neg = ~eye & ~pos
    if neg_r > 0:
        neg = neg & (d >= neg_r)
    w = (d / max(far_r, 1e-12)).clamp_max(1.0) ** power if power > 0 else torch.ones(n, n, dtype=torch.float64)
    return weighted_multi_positive(logits, pos, neg, w)


def local_loss(fa, fb, pos_b, tau, neg_r):
    m = fa.shape[0]
    a, b = F.normalize(fa, dim=1), F.normalize(fb, dim=1)
    logits = a @ b.T / tau
    eye = torch.eye(m, dtype=torch.bool, device=fa.device)
    neg = ~eye
    if neg_r > 0:
        neg = neg & (torch.cdist(pos_b.double(), pos_b.double()) >= neg_r)
    return weighted_multi_positive(logits, eye, neg, torch.ones(m, m, device=fa.device))

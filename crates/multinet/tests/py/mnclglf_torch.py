"""Our own restatement (no official code runs in the training-step bench, which must work without
the official checkout): MNCLGLF in PyTorch, written from the equations of the official
loss_functions/infoNCE.py, utils/network_builder.py and lightly's NTXentLoss that the
repository copies as utils/ntx_ent_loss.py. Imported by `mnclglf_ref.py` (the tests' reference)
and by `benches/py/step_multinet.py` (the training-step bench's PyTorch peer).

  local split:  cols = x.split(W/s, dim=3); cells = [c.split(H/s, dim=2) for c in cols]; cat(dim=0)
  combine:      cat([sum(c) / r for c in itertools.combinations(cells, r)], dim=0)
  L1  = mean over 12 of CE(norm(p_other) @ norm(k_chunk).T / tau1, arange)
  NTX(j, p) = lightly NT-Xent on cat([norm(j), norm(p)]) with the diagonal removed
  L   = L1 + a * (0.5 NTX(j3, p1) + 0.5 NTX(j1, p3))
"""
import itertools

import torch
import torch.nn as nn
import torch.nn.functional as F


def local_split(x, s):
    side = x.size(2) // s, x.size(3) // s
    cells = []
    for col in x.split(side[1], dim=3):
        cells += col.split(side[0], dim=2)
    return torch.cat(cells, dim=0)


def combine(f, cells, r):
    parts = list(f.split(f.size(0) // cells, dim=0))
    return torch.cat([sum(c) / r for c in itertools.combinations(parts, r=r)], dim=0)


def ntx(j, p, tau):
    # lightly NTXentLoss(temperature=tau)(j, p), single process, no memory bank
    n = j.shape[0]
    o = F.normalize(torch.cat([j, p], dim=0), dim=1)
    logits = torch.einsum("nc,mc->nm", o, o) / tau
    logits = logits[~torch.eye(2 * n, dtype=torch.bool, device=o.device)].view(2 * n, -1)
    labels = torch.arange(n, dtype=torch.long, device=o.device)
    labels = torch.cat([labels + n - 1, labels])
    return F.cross_entropy(logits, labels)


def loss1(p_g, k, tau1):
    k = k / k.norm(dim=-1, keepdim=True)
    logits = p_g.mm(k.T) / tau1
    return F.cross_entropy(logits, torch.arange(p_g.shape[0], device=p_g.device))


def mnclglf_objective(p1, p2, p3, k1, k2, j1, j3, tau1, tau2, a, detach):
    """(total, L1, L2); `detach` = the released code's L1 without gradient through p."""
    n = p1.shape[0]
    q1 = p1 / p1.norm(dim=-1, keepdim=True)
    q2 = p2 / p2.norm(dim=-1, keepdim=True)
    if detach:
        q1, q2 = q1.detach(), q2.detach()
    terms = [loss1(q2, k, tau1) for k in k1.split(n, dim=0)] + [loss1(q1, k, tau1) for k in k2.split(n, dim=0)]
    l1 = sum(terms) / len(terms)
    l2 = 0.5 * ntx(j3.detach(), p1, tau2) + 0.5 * ntx(j1.detach(), p3, tau2)
    return l1 + a * l2, l1, l2


def mlp(dims, last_bn):
    """Linear–BN–ReLU … Linear (biases), then BN(affine) when `last_bn` (crate `MlpHead`)."""
    mods = []
    for i in range(len(dims) - 1):
        mods.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            mods += [nn.BatchNorm1d(dims[i + 1]), nn.ReLU(inplace=True)]
        elif last_bn:
            mods.append(nn.BatchNorm1d(dims[i + 1]))
    return nn.Sequential(*mods)


class Encoder(nn.Module):
    """torchvision ResNet (CIFAR stem, no fc) + projector: names `backbone.*`, `projector.*`."""

    def __init__(self, layers, hidden, out):
        super().__init__()
        import torchvision

        self.backbone = torchvision.models.resnet.ResNet(
            torchvision.models.resnet.BasicBlock, layers, zero_init_residual=True)
        self.backbone.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.backbone.maxpool = nn.Identity()
        self.backbone.fc = nn.Identity()
        self.projector = mlp([512, hidden, hidden, out], True)

    def forward(self, x):
        return self.projector(self.backbone(x))


class MultiNet(nn.Module):
    """Online encoder, predictor and a separately initialised EMA encoder (`FastMoCo`)."""

    def __init__(self, s):
        super().__init__()
        self.s = s
        self.encoder = Encoder(s["layers"], s["proj_hidden"], s["proj_out"])
        self.predictor = mlp([s["proj_out"], s["pred_hidden"], s["proj_out"]], False)
        self.ema = Encoder(s["layers"], s["proj_hidden"], s["proj_out"])
        for p in self.ema.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update_ema(self):
        m = self.s["ema_momentum"]
        for pe, po in zip(self.ema.parameters(), self.encoder.parameters()):
            pe.mul_(m).add_(po.detach(), alpha=1 - m)

    def local_keys(self, x):
        s, r = self.s["split_num"], self.s["combs"]
        with torch.no_grad():
            f = self.encoder.backbone(local_split(x, s))
            return self.encoder.projector(combine(f, s * s, r))

    def forward(self, x1, x2, x3):
        p = [self.predictor(self.encoder(x)) for x in (x1, x2, x3)]
        k1, k2 = self.local_keys(x1), self.local_keys(x2)
        with torch.no_grad():
            e1, e3 = self.ema(x1), self.ema(x3)
        return p, k1, k2, e1, e3


class Bank:
    """FIFO memory bank (`contrast_core::memory::MemoryBank`): nearest stored row by cosine."""

    def __init__(self, rows, ptr=0):
        self.rows, self.ptr = rows.clone(), int(ptr)

    def nearest(self, q):
        i = (F.normalize(q, dim=1) @ F.normalize(self.rows, dim=1).T).argmax(dim=1)
        return self.rows[i].detach()

    def push(self, keys):
        keys = keys.detach()
        k = self.rows.shape[0]
        for i in range(keys.shape[0]):
            self.rows[(self.ptr + i) % k] = keys[i]
        self.ptr = (self.ptr + keys.shape[0]) % k

"""PyTorch reference for MNCLGLF (our own code, written from the equations of the official
loss_functions/infoNCE.py, utils/network_builder.py and lightly's NTXentLoss that the
repository copies as utils/ntx_ent_loss.py):

  local split:  cols = x.split(W/s, dim=3); cells = [c.split(H/s, dim=2) for c in cols]; cat(dim=0)
  combine:      cat([sum(c) / r for c in itertools.combinations(cells, r)], dim=0)
  L1  = mean over 12 of CE(norm(p_other) @ norm(k_chunk).T / tau1, arange)
  NTX(j, p) = lightly NT-Xent on cat([norm(j), norm(p)]) with the diagonal removed
  L   = L1 + a * (0.5 NTX(j3, p1) + 0.5 NTX(j1, p3))
Computed twice: with gradient through p in L1 (paper) and with p detached in L1 (released code).
"""
import itertools
import sys

import numpy as np
import torch
import torch.nn.functional as F

inp = np.load(sys.argv[1])
tau1, tau2, a = float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
t = {k: torch.from_numpy(inp[k]) for k in inp.files}
out = {}

# local split + pair averaging on the constructed image / feature tensors
x = t["image"]
s = 2
side = x.size(2) // s, x.size(3) // s
cells = []
for col in x.split(side[1], dim=3):
    cells += col.split(side[0], dim=2)
out["split"] = torch.cat(cells, dim=0).numpy()
f = t["cell_features"]
parts = list(f.split(f.size(0) // s**2, dim=0))
out["combined"] = torch.cat([sum(c) / 2 for c in itertools.combinations(parts, r=2)], dim=0).numpy()


def ntx(j, p, tau):
    # lightly NTXentLoss(temperature=tau)(j, p), single process, no memory bank
    n = j.shape[0]
    o = F.normalize(torch.cat([j, p], dim=0), dim=1)
    logits = torch.einsum("nc,mc->nm", o, o) / tau
    logits = logits[~torch.eye(2 * n, dtype=torch.bool)].view(2 * n, -1)
    labels = torch.arange(n, dtype=torch.long)
    labels = torch.cat([labels + n - 1, labels])
    return F.cross_entropy(logits, labels)


def loss1(p_g, k):
    k = k / k.norm(dim=-1, keepdim=True)
    logits = p_g.mm(k.T) / tau1
    return F.cross_entropy(logits, torch.arange(p_g.shape[0]))


for variant, detach in (("paper", False), ("released", True)):
    p1 = t["p1"].clone().requires_grad_(True)
    p2 = t["p2"].clone().requires_grad_(True)
    p3 = t["p3"].clone().requires_grad_(True)
    k1, k2, j1, j3 = t["k1"], t["k2"], t["j1"], t["j3"]
    n = p1.shape[0]
    q1 = p1 / p1.norm(dim=-1, keepdim=True)
    q2 = p2 / p2.norm(dim=-1, keepdim=True)
    if detach:
        q1, q2 = q1.detach(), q2.detach()
    terms = [loss1(q2, k) for k in k1.split(n, dim=0)] + [loss1(q1, k) for k in k2.split(n, dim=0)]
    l1 = sum(terms) / len(terms)
    l2 = 0.5 * ntx(j3, p1, tau2) + 0.5 * ntx(j1, p3, tau2)
    total = l1 + a * l2
    total.backward()
    out[f"{variant}_global_local"] = l1.detach().numpy()
    out[f"{variant}_nn"] = l2.detach().numpy()
    out[f"{variant}_total"] = total.detach().numpy()
    for name, p in (("p1", p1), ("p2", p2), ("p3", p3)):
        # a prediction that receives no gradient (p2 with the released code) is reported as zeros
        out[f"{variant}_grad_{name}"] = (p.grad if p.grad is not None else torch.zeros_like(p)).numpy()

np.savez(sys.argv[2], **out)

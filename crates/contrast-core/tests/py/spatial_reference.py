"""Our own restatement (no official code covers Spade's losses; Spade has no code): contrast_core::spatial_contrast (our inferred Spade losses) in PyTorch, written
as explicit per-row loops from the formulas in the module docs (not a port of the vectorised
Rust): global loss with cross-volume positives, removed near negatives and distance weights, and
the local loss with removed near negatives. Outputs the losses and the gradients of the inputs.
argv: in.npz out.npz tau cross_radius neg_radius power far_radius local_tau local_radius
"""
import sys

import numpy as np
import torch
import torch.nn.functional as F

inp = np.load(sys.argv[1])
t = {k: torch.from_numpy(inp[k]) for k in inp.files}
tau, cross_r, neg_r, power, far_r, ltau, lrad = (float(a) for a in sys.argv[3:10])
out = {}


def multi_positive(s, pos_idx, neg_idx, w):
    """-1/|P| sum_p log(e^{s_p} / (sum_P e^{s} + sum_N w e^{s}))"""
    den = sum(torch.exp(s[p]) for p in pos_idx) + sum(w[j] * torch.exp(s[j]) for j in neg_idx)
    return -sum(s[p] - torch.log(den) for p in pos_idx) / len(pos_idx)


z = t["z"].double().clone().requires_grad_(True)
twin, vol, c = t["twin"].long(), t["volume"].long(), t["centres"].double()
n = z.shape[0]
zn = F.normalize(z, dim=1)
rows = []
for i in range(n):
    s = torch.stack([zn[i] @ zn[j] for j in range(n)]) / tau
    d = [float(torch.linalg.norm(c[i] - c[j])) for j in range(n)]
    pos = [j for j in range(n) if j != i and (j == int(twin[i]) or (cross_r > 0 and vol[j] != vol[i] and d[j] < cross_r))]
    neg = [j for j in range(n) if j != i and j not in pos and not (neg_r > 0 and d[j] < neg_r)]
    w = [min(1.0, d[j] / far_r) ** power if power > 0 else 1.0 for j in range(n)]
    if pos:
        rows.append(multi_positive(s, pos, neg, w))
g = sum(rows) / len(rows)
g.backward()
out["global"] = g.detach().reshape(1)
out["grad_z"] = z.grad

fa = t["fa"].double().clone().requires_grad_(True)
fb = t["fb"].double().clone().requires_grad_(True)
pb = t["pos_b"].double()
m = fa.shape[0]
a, b = F.normalize(fa, dim=1), F.normalize(fb, dim=1)
rows = []
for i in range(m):
    s = torch.stack([a[i] @ b[j] for j in range(m)]) / ltau
    neg = [j for j in range(m) if j != i and not (lrad > 0 and float(torch.linalg.norm(pb[i] - pb[j])) < lrad)]
    rows.append(multi_positive(s, [i], neg, [1.0] * m))
loc = sum(rows) / m
loc.backward()
out["local"] = loc.detach().reshape(1)
out["grad_fa"] = fa.grad
out["grad_fb"] = fb.grad
np.savez(sys.argv[2], **{k: v.numpy() for k, v in out.items()})

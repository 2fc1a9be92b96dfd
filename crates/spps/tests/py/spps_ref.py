"""PyTorch reference for the SPPS objectives (our own code, written from the formulas):

SimCLR + SPPS (solo-learn `simclr_loss_func(z, indexes)` / SupCon form):
  z = normalize(cat[z1, z2, zs]); ids = cat[arange N, arange N, anchor]
  logits = z z^T / tau with the diagonal removed; pos = (ids_i == ids_j), i != j
  L = mean_i  -(1/|P_i|) sum_{p in P_i} log_softmax(logits_i)_p
MoCo-v2 + SPPS:
  logits_i = [q_i.k_i, q_i.e_m (anchor[m] == i), q_i.queue] / tau
  L = mean_i  -(1/P_i) sum over its positives of log_softmax(logits_i)
Also the gradients of z1, z2, zs (SimCLR) and q (MoCo).
"""
import sys

import numpy as np
import torch
import torch.nn.functional as F

inp = np.load(sys.argv[1])
tau, tau_m = float(sys.argv[3]), float(sys.argv[4])
t = {k: torch.from_numpy(inp[k]) for k in inp.files}
out = {}

z1 = t["z1"].double().requires_grad_()
z2 = t["z2"].double().requires_grad_()
zs = t["zs"].double().requires_grad_()
anchor = t["anchor"].long()
n = z1.shape[0]
z = F.normalize(torch.cat([z1, z2, zs]), dim=1)
ids = torch.cat([torch.arange(n), torch.arange(n), anchor])
logits = z @ z.T / tau
eye = torch.eye(z.shape[0], dtype=torch.bool)
logits = logits.masked_fill(eye, float("-inf"))
pos = (ids[:, None] == ids[None, :]) & ~eye
logp = torch.log_softmax(logits, dim=1).masked_fill(eye, 0.0)
per = -(logp * pos).sum(1) / pos.sum(1)
loss = per.mean()
loss.backward()
out["simclr_loss"] = loss.detach().float().reshape(1)
out["g_z1"] = z1.grad.float()
out["g_z2"] = z2.grad.float()
out["g_zs"] = zs.grad.float()

# the same with no partners = NT-Xent
z = F.normalize(torch.cat([t["z1"], t["z2"]]).double(), dim=1)
lg = (z @ z.T / tau).masked_fill(torch.eye(2 * n, dtype=torch.bool), float("-inf"))
target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
out["nt_xent"] = F.cross_entropy(lg, target).float().reshape(1)

q = F.normalize(t["q"].double(), dim=1).detach().requires_grad_()
k = F.normalize(t["k"].double(), dim=1)
e = F.normalize(t["e"].double(), dim=1)
queue = F.normalize(t["queue"].double(), dim=1)
ea = t["e_anchor"].long()
rows = []
for i in range(q.shape[0]):
    cols = [q[i] @ k[i]]
    npos = 1
    for m in range(e.shape[0]):
        if ea[m] == i:
            cols.append(q[i] @ e[m])
            npos += 1
    cols += list(queue @ q[i])
    lg = torch.stack(cols) / tau_m
    lsm = torch.log_softmax(lg, 0)
    rows.append(-lsm[:npos].sum() / npos)
ml = torch.stack(rows).mean()
ml.backward()
out["moco_loss"] = ml.detach().float().reshape(1)
out["g_q"] = q.grad.float()
np.savez(sys.argv[2], **{k: v.numpy() for k, v in out.items()})

"""Our own restatement (no official code covers SPPS's extra positives; SPPS has no code): the SPPS objectives in PyTorch, written from the formulas.

The plain NT-Xent (no partners) is checked against the official SimCLR instead
(`tests/official_simclr.rs`), the plain MoCo loss against the official MoCo v2
(`tests/official_mocov2_steps.rs`).


SimCLR + SPPS: `spps_torch.spps_simclr_loss` (shared with the bench peer).
MoCo-v2 + SPPS:
  logits_i = [q_i.k_i, q_i.e_m (anchor[m] == i), q_i.queue] / tau
  L = mean_i  -(1/P_i) sum over its positives of log_softmax(logits_i)
Also the gradients of z1, z2, zs (SimCLR) and q (MoCo).
"""
import sys

import numpy as np
import torch
import torch.nn.functional as F

from spps_torch import spps_simclr_loss

inp = np.load(sys.argv[1])
tau, tau_m = float(sys.argv[3]), float(sys.argv[4])
t = {k: torch.from_numpy(inp[k]) for k in inp.files}
out = {}

z1 = t["z1"].double().requires_grad_()
z2 = t["z2"].double().requires_grad_()
zs = t["zs"].double().requires_grad_()
n = z1.shape[0]
loss = spps_simclr_loss(z1, z2, zs, t["anchor"], tau)
loss.backward()
out["simclr_loss"] = loss.detach().float().reshape(1)
out["g_z1"] = z1.grad.float()
out["g_z2"] = z2.grad.float()
out["g_zs"] = zs.grad.float()

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

"""PyTorch reference for the PatchMix objective (our own code, from the equations in
module/loss.py and main_pretrain.py of the official repository):

L = CE(q1, k2, I) + 1/2 CE(mq2, k1, T_mix) + 1/2 CE(mq2, mk1, T_mixmix)
    + sum_c [CE(lq_c, k1, I) + CE(lq_c, k2, I)] / n + sum_c [CE(lmq_c, k1, T_mix) + CE(lmq_c, k2, T_mix)] / n
with CE(q, k, T) = mean_i sum_j -T_ij log_softmax_j(norm(q)_i . norm(k)_j / tau), keys without gradient.
The soft targets are rebuilt here from their definition (m sources, ring distance).
"""
import sys

import numpy as np
import torch
import torch.nn.functional as F

inp = np.load(sys.argv[1])
tau, m = float(sys.argv[3]), int(sys.argv[4])
t = {k: torch.from_numpy(inp[k]) for k in inp.files}
q1 = t["q1"].clone().requires_grad_(True)
mq2 = t["mq2"].clone().requires_grad_(True)
lq = t["lq"].clone().requires_grad_(True)  # [n, B, D]
lmq = t["lmq"].clone().requires_grad_(True)
k1, k2, mk1 = t["k1"], t["k2"], t["mk1"]
B = q1.shape[0]

mix_t = torch.zeros(B, B)
mixmix_t = torch.zeros(B, B)
for g in range(B):
    for j in range(m):
        mix_t[g, (g + j) % B] += 1.0 / m
    for d in range(-(m - 1), m):
        mixmix_t[g, (g + d) % B] += (m - abs(d)) / (m * m)
eye = torch.eye(B)


def ce(q, k, target):
    q = F.normalize(q, dim=1)
    with torch.no_grad():
        k = F.normalize(k, dim=1)
    logits = torch.einsum("nc,mc->nm", q, k) / tau
    return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()


orig = ce(q1, k2, eye)
mix_orig = ce(mq2, k1, mix_t)
mix_mix = ce(mq2, mk1, mixmix_t)
n = lq.shape[0]
multi = sum((ce(lq[c], k1, eye) + ce(lq[c], k2, eye)) / n for c in range(n))
multi_mix = sum((ce(lmq[c], k1, mix_t) + ce(lmq[c], k2, mix_t)) / n for c in range(n))
total = orig + 0.5 * (mix_orig + mix_mix) + multi + multi_mix
total.backward()
np.savez(
    sys.argv[2],
    orig=orig.detach().numpy(), mix_orig=mix_orig.detach().numpy(), mix_mix=mix_mix.detach().numpy(),
    multi=multi.detach().numpy(), multi_mix=multi_mix.detach().numpy(), total=total.detach().numpy(),
    grad_q1=q1.grad.numpy(), grad_mq2=mq2.grad.numpy(), grad_lq=lq.grad.numpy(), grad_lmq=lmq.grad.numpy(),
    mix_target=mix_t.numpy(), mixmix_target=mixmix_t.numpy(),
)

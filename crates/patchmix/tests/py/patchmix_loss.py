"""OUR OWN restatement (not official code) of the PatchMix objective (it is in `patchmix_torch.py`,
shared with the training-step bench's PyTorch peer). Inputs: q1, k1, k2, mq2, mk1 [B, D] and
local-crop queries lq, lmq [n, B, D]; outputs: the terms, the gradients of the queries, and the
soft targets rebuilt from their definition.
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from patchmix_torch import patchmix_objective, soft_targets, source_target  # noqa: E402

inp = np.load(sys.argv[1])
tau, m, src_s = float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
t = {k: torch.from_numpy(inp[k]) for k in inp.files}
q1 = t["q1"].clone().requires_grad_(True)
mq2 = t["mq2"].clone().requires_grad_(True)
lq = t["lq"].clone().requires_grad_(True)  # [n, B, D]
lmq = t["lmq"].clone().requires_grad_(True)
k1, k2, mk1 = t["k1"], t["k2"], t["mk1"]
mix_t, mixmix_t = soft_targets(q1.shape[0], m)
total, orig, mix_orig, mix_mix, multi, multi_mix = patchmix_objective(
    q1, k1, k2, mq2, mk1, list(lq.unbind(0)), list(lmq.unbind(0)), tau, mix_t, mixmix_t, src_s)
total.backward()
np.savez(
    sys.argv[2],
    orig=orig.detach().numpy(), mix_orig=mix_orig.detach().numpy(), mix_mix=mix_mix.detach().numpy(),
    multi=multi.detach().numpy(), multi_mix=multi_mix.detach().numpy(), total=total.detach().numpy(),
    grad_q1=q1.grad.numpy(), grad_mq2=mq2.grad.numpy(), grad_lq=lq.grad.numpy(), grad_lmq=lmq.grad.numpy(),
    mix_target=mix_t.numpy(), mixmix_target=mixmix_t.numpy(),
    src_target=source_target(q1.shape[0], src_s).numpy(),
)

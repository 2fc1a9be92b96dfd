"""Our own restatement (no official code covers the paper-intent variant, gradient through L1):
MNCLGLF's objective with the gradient through the global-vs-local term (the released code
detaches it) and any temperatures; the math is in `mnclglf_torch.py`, shared with the
training-step bench's PyTorch peer. The released variant, the local split and the pair averaging
are compared with the official code itself (`official_loss.rs`, `official_steps.rs`).
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mnclglf_torch import mnclglf_objective  # noqa: E402

inp = np.load(sys.argv[1])
tau1, tau2, a = float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
t = {k: torch.from_numpy(inp[k]) for k in inp.files}
out = {}

for variant, detach in (("paper", False),):
    p1 = t["p1"].clone().requires_grad_(True)
    p2 = t["p2"].clone().requires_grad_(True)
    p3 = t["p3"].clone().requires_grad_(True)
    k1, k2, j1, j3 = t["k1"], t["k2"], t["j1"], t["j3"]
    total, l1, l2 = mnclglf_objective(p1, p2, p3, k1, k2, j1, j3, tau1, tau2, a, detach)
    total.backward()
    out[f"{variant}_global_local"] = l1.detach().numpy()
    out[f"{variant}_nn"] = l2.detach().numpy()
    out[f"{variant}_total"] = total.detach().numpy()
    for name, p in (("p1", p1), ("p2", p2), ("p3", p3)):
        # a prediction that receives no gradient (p2 with the released code) is reported as zeros
        out[f"{variant}_grad_{name}"] = (p.grad if p.grad is not None else torch.zeros_like(p)).numpy()

np.savez(sys.argv[2], **out)

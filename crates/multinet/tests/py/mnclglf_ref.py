"""OUR OWN restatement (not official code) of MNCLGLF (the math is in `mnclglf_torch.py`, shared with the
training-step bench's PyTorch peer): local split and pair averaging on constructed tensors, and
the objective computed twice — with gradient through p in L1 (paper) and with p detached in L1
(released code).
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mnclglf_torch import combine, local_split, mnclglf_objective  # noqa: E402

inp = np.load(sys.argv[1])
tau1, tau2, a = float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
t = {k: torch.from_numpy(inp[k]) for k in inp.files}
out = {}

# local split + pair averaging on the constructed image / feature tensors
out["split"] = local_split(t["image"], 2).numpy()
out["combined"] = combine(t["cell_features"], 4, 2).numpy()

for variant, detach in (("paper", False), ("released", True)):
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

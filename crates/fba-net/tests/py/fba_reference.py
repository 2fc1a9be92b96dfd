"""OUR OWN restatement (not official code): the FBA-Net objective and network (they live in
`fba_torch.py`, shared with the training-step bench's PyTorch peer).

Inputs: o{d} logits [N,2,X,Y,Z], f{d}/b{d} embeddings [N,D] for d = 0..2, y labels [L,X,Y,Z],
and for the network check `x` [N,1,X,Y,Z] with `w:<name>` state-dict entries and the model
outputs computed in Rust are compared by the caller. Outputs: loss terms and gradients.
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fba_torch import FBAPnet, fba_objective, sim_max, sim_min  # noqa: E402

inp = np.load(sys.argv[1])
t = {k: torch.from_numpy(inp[k]) for k in inp.files}
lamda, cons_w, temp = float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
out = {}

logits = [t[f"o{d}"].clone().requires_grad_(True) for d in range(3)]
fgs = [t[f"f{d}"].clone().requires_grad_(True) for d in range(3)]
bgs = [t[f"b{d}"].clone().requires_grad_(True) for d in range(3)]
total, seg, consist, contra = fba_objective(logits, fgs, bgs, t["y"], lamda, cons_w, temp)
total.backward()
out["terms"] = torch.stack([total, seg, consist, contra]).detach().double()
out["sim_max_f0"] = sim_max(t["f0"]).double().reshape(1)
out["sim_min_f0b0"] = sim_min(t["f0"], t["b0"]).double().reshape(1)
for d in range(3):
    out[f"go{d}"] = logits[d].grad
    out[f"gf{d}"] = fgs[d].grad
    out[f"gb{d}"] = bgs[d].grad
ramp = [np.exp(-5.0 * (1.0 - np.clip(it // 150, 0, 40) / 40.0) ** 2) for it in [1, 149, 150, 3000, 5999, 6000, 15000]]
out["ramp"] = np.array(ramp)


if "x" in t:
    x = t["x"]
    f = int(sys.argv[6])
    vox = int(np.prod([(s + 1) // 2 for s in x.shape[2:]]))
    net = FBAPnet(f, vox, int(sys.argv[7]))
    sd = {k[2:]: v for k, v in t.items() if k.startswith("w:")}
    missing, unexpected = net.load_state_dict(sd, strict=False)
    missing = [m for m in missing if not m.endswith("num_batches_tracked")]
    assert not missing and not unexpected, (missing, unexpected)
    out["n_params"] = np.array([sum(p.numel() for p in net.parameters())])
    net.eval()
    with torch.no_grad():
        res = net(x)
    for d, (fg, bg, o) in enumerate(res):
        out[f"net_o{d}"] = o
        out[f"net_f{d}"] = fg
        out[f"net_b{d}"] = bg
    net.train()  # batch statistics (dropout off: the reference test model has has_dropout=False)
    res = net(x)
    for d, (fg, bg, o) in enumerate(res):
        out[f"train_o{d}"] = o.detach()

np.savez(sys.argv[2], **{k: (v.numpy() if torch.is_tensor(v) else v) for k, v in out.items()})

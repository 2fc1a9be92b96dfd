"""Steps of the OFFICIAL MNCLGLF LARS (`optimizer/lars.py` of liweiquan39/MNCLGLF, checked out
by `cargo xtask official fetch multinet`; not ours) on our linear probe's weights and batches:
`LARS(params, lr, momentum, weight_decay, eta, implementation='PyTorch')`, cross entropy on
`x_k @ W.T + b`, the lr set per step from `lr_k` (a cosine, as the probe's schedule).

Inputs (npz): w.weight [C, D], w.bias [C], x_k [B, D], y_k [B] (int64), lr [steps].
argv[3:]: checkout, momentum, weight_decay, eta, steps.
Outputs: loss_k per step, g.weight / g.bias (last step), w.weight / w.bias after the steps.
"""
import sys

import numpy as np
import torch

inp, outp = sys.argv[1], sys.argv[2]
official, momentum, wd, eta, steps = sys.argv[3:8]
momentum, wd, eta, steps = float(momentum), float(wd), float(eta), int(steps)
sys.path.insert(0, official)
from optimizer.lars import LARS  # noqa: E402

torch.set_num_threads(1)
d = np.load(inp)
weight = torch.nn.Parameter(torch.from_numpy(d["w.weight"]).clone())
bias = torch.nn.Parameter(torch.from_numpy(d["w.bias"]).clone())
lrs = d["lr"]
opt = LARS([weight, bias], lr=float(lrs[0]), momentum=momentum, weight_decay=wd, eta=eta,
           implementation="PyTorch")
out = {}
for k in range(steps):
    for g in opt.param_groups:
        g["lr"] = float(lrs[k])
    x = torch.from_numpy(d[f"x_{k}"])
    y = torch.from_numpy(d[f"y_{k}"])
    loss = torch.nn.functional.cross_entropy(x @ weight.t() + bias, y)
    opt.zero_grad()
    loss.backward()
    out[f"loss_{k}"] = loss.detach().numpy()
    out["g.weight"] = weight.grad.detach().clone().numpy()
    out["g.bias"] = bias.grad.detach().clone().numpy()
    opt.step()
out["w.weight"] = weight.detach().numpy()
out["w.bias"] = bias.detach().numpy()
np.savez(outp, **out)

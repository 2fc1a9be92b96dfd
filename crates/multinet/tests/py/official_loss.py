"""The OFFICIAL MNCLGLF objective (`InfoNCE.forward` of `loss_functions/infoNCE.py`,
liweiquan39/MNCLGLF, checked out by `cargo xtask official fetch multinet`; not ours) on our
predictions, local keys and memory-bank neighbours.

Glue (not official code): the file imports a `core` package that the repository does not
contain. `core.utils.dist` is stubbed for one process (rank 0, world size 1, a one-process gloo
group for `dist.all_gather`), and `core.utils.ntx_ent_loss.NTXentLoss` is lightly's
`NTXentLoss` — the loss MNCLGLF's NN term is documented as (our assumption: the missing file is
not available to check). `.cuda()` is a no-op on a machine without CUDA.

Inputs (npz): p1, p2, p3 [N, D]; k1, k2 [C·N, D]; j1, j3 [N, D]. argv[3:]: checkout.
Outputs: total, g.p1, g.p2, g.p3 (d total / d p).
"""
import importlib.util
import os
import sys
import types

import numpy as np
import torch
import torch.distributed as dist
from lightly.loss import NTXentLoss

inp, outp, official = sys.argv[1], sys.argv[2], sys.argv[3]
if not torch.cuda.is_available():
    torch.Tensor.cuda = lambda self, *a, **k: self
for name in ["core", "core.utils"]:
    sys.modules[name] = types.ModuleType(name)
link = types.ModuleType("core.utils.dist")
link.get_rank = lambda: 0
link.get_world_size = lambda: 1
sys.modules["core.utils.dist"] = link
sys.modules["core.utils"].dist = link
ntx = types.ModuleType("core.utils.ntx_ent_loss")
ntx.NTXentLoss = NTXentLoss
sys.modules["core.utils.ntx_ent_loss"] = ntx
if not dist.is_initialized():
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(22000 + os.getpid() % 20000))
    dist.init_process_group("gloo", rank=0, world_size=1)

spec = importlib.util.spec_from_file_location("info_nce", official + "/loss_functions/infoNCE.py")
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)

d = np.load(inp)
t = {k: torch.from_numpy(d[k]) for k in d.files}
p = {k: t[k].clone().requires_grad_(True) for k in ["p1", "p2", "p3"]}
loss = mod.InfoNCE(temperature=1).forward(p["p1"], t["k1"], p["p2"], t["k2"], p["p3"], t["j3"], t["j1"])
loss.backward()
out = {"total": loss.detach().numpy()}
for k, v in p.items():
    out["g." + k] = (v.grad if v.grad is not None else torch.zeros_like(v)).numpy()
np.savez(outp, **out)

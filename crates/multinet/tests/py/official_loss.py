"""The OFFICIAL MNCLGLF objective (`InfoNCE.forward` of `loss_functions/infoNCE.py`,
liweiquan39/MNCLGLF, checked out by `cargo xtask official fetch multinet`; not ours) on our
predictions, local keys and memory-bank neighbours.

Glue (not official code): the file imports a `core` package; the repository holds its
`core.utils` as the `utils/` folder, so `core` is mapped onto the checkout and the loss's
`NTXentLoss` is the repository's own `utils/ntx_ent_loss.py` (with its `memory_bank.py`).
What the repository lacks: `core.utils.dist2` (lightly's distributed helpers; rank 0, world
size 1 here). `concat_all_gather`'s `dist.all_gather` is the one-process copy (no process group:
nothing else runs here that would need one). `.cuda()` is a no-op on a machine without CUDA.

Inputs (npz): p1, p2, p3 [N, D]; k1, k2 [C·N, D]; j1, j3 [N, D]. argv[3:]: checkout.
Outputs: total, g.p1, g.p2, g.p3 (d total / d p).
"""
import importlib.util
import sys
import types

import numpy as np
import torch

inp, outp, official = sys.argv[1], sys.argv[2], sys.argv[3]
if not torch.cuda.is_available():
    torch.Tensor.cuda = lambda self, *a, **k: self
core = types.ModuleType("core")
core.__path__ = [official]
sys.modules["core"] = core
dist2 = types.ModuleType("core.utils.dist2")
dist2.rank = lambda: 0
dist2.world_size = lambda: 1
sys.modules["core.utils.dist2"] = dist2


class OneProcess:  # torch.distributed.all_gather of a one-process run
    @staticmethod
    def all_gather(tensors, tensor, *a, **k):
        tensors[0].copy_(tensor)


spec = importlib.util.spec_from_file_location("info_nce", official + "/loss_functions/infoNCE.py")
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
mod.dist = OneProcess

d = np.load(inp)
t = {k: torch.from_numpy(d[k]) for k in d.files}
p = {k: t[k].clone().requires_grad_(True) for k in ["p1", "p2", "p3"]}
loss = mod.InfoNCE(temperature=1).forward(p["p1"], t["k1"], p["p2"], t["k2"], p["p3"], t["j3"], t["j1"])
loss.backward()
out = {"total": loss.detach().numpy()}
for k, v in p.items():
    out["g." + k] = (v.grad if v.grad is not None else torch.zeros_like(v)).numpy()
np.savez(outp, **out)

"""The OFFICIAL GraSS gradient-guided sampling (`getHeadMapCut` + `DACrop` of
`vissl/trainer/train_steps/GraSS_train_step.py`, GeoX-Lab/GraSS, checked out by
`cargo xtask official fetch grass`; not ours) on our views, layer-4 maps and gradients.

Glue (not official code): the module imports VISSL's trainer and classy_vision at the top; those
names are stubbed in `sys.modules` (none of them is used by the two functions), and the module
is loaded from its file. The loss is `sum(F * R)`, so dL/dF = R exactly; `F` is a non-leaf
tensor, as the network output is in the official step.

Inputs (npz): x [B, 3, S, S] views, f [B, C, h, w] layer-4 maps, r [B, C, h, w] gradients.
argv[3:]: checkout. Outputs: crops [B, 3, S, S] (the official `sample` after the call).
"""
import importlib.util
import sys
import types

import numpy as np
import torch

inp, outp, official = sys.argv[1], sys.argv[2], sys.argv[3]


def stub(name, **attrs):
    m = types.ModuleType(name)
    for k, v in attrs.items():
        setattr(m, k, v)
    sys.modules[name] = m
    return m


class _Any:
    def __init__(self, *a, **k):
        pass

    def __getattr__(self, name):
        return _Any()


stub("classy_vision")
stub("classy_vision.generic")
stub("classy_vision.generic.distributed_util", all_reduce_mean=lambda x: x)
stub("classy_vision.tasks", ClassyTask=_Any)
stub("classy_vision.tasks.classification_task", AmpType=_Any())
stub("vissl")
stub("vissl.hooks", SSLClassyHookFunctions=_Any())
stub("vissl.trainer")
stub("vissl.trainer.train_steps", register_train_step=lambda name: (lambda f: f))
stub("vissl.utils")
stub("vissl.utils.activation_checkpointing", manual_gradient_all_reduce=None, manual_sync_params=None)
stub("vissl.utils.misc", is_apex_available=lambda: False)
stub("vissl.utils.perf_stats", PerfTimer=_Any)
stub("vissl.utils.profiler", record_function=_Any)

path = official + "/vissl/trainer/train_steps/GraSS_train_step.py"
spec = importlib.util.spec_from_file_location("grass_train_step", path)
step = importlib.util.module_from_spec(spec)
spec.loader.exec_module(step)

d = np.load(inp)
x = torch.from_numpy(d["x"]).clone()
f0 = torch.from_numpy(d["f"]).requires_grad_(True)
features = f0 * 1.0  # a non-leaf map, as the network's output
r = torch.from_numpy(d["r"])
loss = (features * r).sum()
crops = step.TrainInsectionOperation({"input": x}, loss, features)
np.savez(outp, crops=crops.detach().numpy())

"""The OFFICIAL SimCLR loss of GraSS's VISSL fork (`SimclrInfoNCELoss` of
`vissl/losses/simclr_info_nce_loss.py`, GeoX-Lab/GraSS, checked out by
`cargo xtask official fetch grass`; not ours) on our projections, one process.

Glue (not official code): the module's classy_vision / VISSL imports are stubbed (rank 0, no
CUDA, `ClassyLoss` = `nn.Module`, `register_loss` a no-op decorator, `AttrDict` a namespace);
without an initialised process group the loss gathers nothing, as on one GPU.

Inputs (npz): z [2N, D] (rows i and i + N are the two views). argv[3:]: checkout, temperature.
Outputs: loss, g.z.
"""
import importlib.util
import sys
import types

import numpy as np
import torch

inp, outp, official, temperature = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])


def stub(name, **attrs):
    m = types.ModuleType(name)
    for k, v in attrs.items():
        setattr(m, k, v)
    sys.modules[name] = m


stub("classy_vision")
stub("classy_vision.generic")
stub("classy_vision.generic.distributed_util", get_cuda_device_index=lambda: -1, get_rank=lambda: 0)
stub("classy_vision.losses", ClassyLoss=torch.nn.Module, register_loss=lambda name: (lambda c: c))
stub("vissl")
stub("vissl.config", AttrDict=types.SimpleNamespace)
stub("vissl.utils")
stub("vissl.utils.distributed_utils", gather_from_all=lambda x: x)

path = official + "/vissl/losses/simclr_info_nce_loss.py"
spec = importlib.util.spec_from_file_location("simclr_info_nce_loss", path)
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)

z = torch.from_numpy(np.load(inp)["z"]).clone().requires_grad_(True)
cfg = types.SimpleNamespace(
    temperature=temperature,
    buffer_params=types.SimpleNamespace(world_size=1, embedding_dim=z.shape[1],
                                        effective_batch_size=z.shape[0]),
)
loss = mod.SimclrInfoNCELoss(cfg)(z, None)
loss.backward()
np.savez(outp, loss=loss.detach().numpy(), **{"g.z": z.grad.numpy()})

"""N steps of the OFFICIAL MNCLGLF training loop (`ImageNetSolver.train` of `train.py`,
liweiquan39/MNCLGLF, checked out by `cargo xtask official fetch multinet`; not ours) on our
initial weights, memory bank and views.

The released `train.py` imports a `core` package. The repository holds most of it under other
names: `core.utils.*` is its `utils/` folder (`dist.py`, `misc.py`, `memory_bank.py`,
`nn_memory_bank.py`, `ntx_ent_loss.py`, `network_builder.py`) and `core.model` its `model/`
folder; `core` is therefore mapped onto the checkout, and these files run unchanged. Official
code run here: the training loop itself (`ImageNetSolver.train`: forward, `criterion.forward`,
`zero_grad`, backward, `clip_grad_norm_` at `clip_grad_norm: 1`, `optimizer.step`),
`ImageNetSolver.build_optimizer` (two groups: predictor / the rest), the network
(`FastMoCo` of `utils/network_builder.py`: projector, predictor, the EMA update inside the
forward, `_local_split`, the pair combinations, `NNMemoryBankModule`), the ResNet
(`model/resnet_official.py`), the loss (`InfoNCE` of `loss_functions/infoNCE.py` with the
repository's own `utils/ntx_ent_loss.py` NTXentLoss), and `nn.SyncBatchNorm.convert_sync_batchnorm`
as `build_model` applies it (FastMoCo's heads put `BatchNorm2d` on 2-D features, which only the
converted module accepts; with one process it computes plain batch norm).

Glue (not official code), and why:
* missing from the repository: `core.utils.dist2` (lightly's distributed helpers: rank 0,
  world size 1), `core.solver.ssl_solver.SSLSolver` (a base class whose `pre_train` makes the
  meters), `model_entry` / `unsupervised_entry` / `optim_entry` / `loss_entry` (type-name
  registries; here the config's types: `ResNet`, `FastMoCo`, `torch.optim.SGD`, `InfoNCE`),
  the data loader (our views, concatenated on channels as the loader's `[N, 9, H, W]`), and the
  `WCosConEpoch` schedule the config names (absent: the lr of every step is passed in, ours;
  group 1, the predictor, at the constant base lr as `WCosCon`);
* `build_model` is mirrored (its model wrapping: `DistributedDataParallel` of one process is the
  module itself and is left out; `.to(cuda:1)` becomes the CPU: the modules' `device` globals);
* `torch.distributed` of one process: `all_reduce` / `barrier` do nothing, `all_gather` copies
  (an initialised process group would make SyncBatchNorm demand a GPU);
* `easydict` (imported by `utils/misc.py`, used by none of the code run) is stubbed when absent;
* REDUCED MODEL: a ResNet with one BasicBlock per stage (`ResNet(BasicBlock, [1, 1, 1, 1])`),
  heads 256 / 128 / 64 wide, a 64-row memory bank (FastMoCo hard-codes 16384: replaced after
  construction), 32-px views; then every weight and the bank are replaced by ours;
* observation only: the criterion's `loss1` / `loss2` calls are recorded to report the terms.

Inputs (npz): w.<official name> for every parameter and BN statistic, bank [size, D] (ours,
rows), lr [steps], v<i>_<k> [N, 3, H, W] the three views of step k. argv[3:]: checkout, steps,
proj_hidden, proj_out, pred_hidden. Outputs: total, global_local, nn ([steps]); wcoscon
[steps] (the repository's `WCosConLR` of `lr_scheduler/lambda_scheduler.py` over the same steps,
for the record); w.<name> and bank after the steps.
"""
import importlib.util
import sys
import tempfile
import types

import numpy as np
import torch
import torch.nn as nn

inp, outp, official = sys.argv[1], sys.argv[2], sys.argv[3]
steps, proj_hidden, proj_out, pred_hidden = (int(v) for v in sys.argv[4:8])
torch.set_num_threads(1)
if not torch.cuda.is_available():
    torch.Tensor.cuda = lambda self, *a, **k: self  # `labels.cuda()` in InfoNCE.loss1


class AttrDict(dict):
    __setattr__ = dict.__setitem__

    def __getattr__(self, k):
        try:
            return self[k]
        except KeyError as e:
            raise AttributeError(k) from e


def attr(d):
    if isinstance(d, dict):
        return AttrDict({k: attr(v) for k, v in d.items()})
    return d


def module(name, **attrs):
    m = types.ModuleType(name)
    for k, v in attrs.items():
        setattr(m, k, v)
    sys.modules[name] = m
    return m


# ---- glue: `core` is the checkout; what it lacks ---------------------------------------------
core = types.ModuleType("core")
core.__path__ = [official]
sys.modules["core"] = core
if importlib.util.find_spec("easydict") is None:
    module("easydict", EasyDict=AttrDict)
module("core.utils.dist2", rank=lambda: 0, world_size=lambda: 1)


class OneProcess:  # torch.distributed of a one-process run
    @staticmethod
    def all_reduce(tensor, *a, **k):
        return None

    @staticmethod
    def barrier(*a, **k):
        return None

    @staticmethod
    def all_gather(tensors, tensor, *a, **k):
        tensors[0].copy_(tensor)

    @staticmethod
    def get_world_size(*a, **k):
        return 1


class SSLSolver:
    def pre_train(self):
        from core.utils.misc import AverageMeter
        self.meters = AttrDict(data_time=AverageMeter(1), batch_time=AverageMeter(1),
                               losses=AverageMeter(1))


module("core.solver")
module("core.solver.ssl_solver", SSLSolver=SSLSolver)

import core.utils  # noqa: E402  (the checkout's utils/ as a namespace package)
import core.utils.dist  # noqa: E402
import core.utils.misc as misc  # noqa: E402
import core.utils.network_builder as network_builder  # noqa: E402
import core.utils.nn_memory_bank as nn_memory_bank  # noqa: E402
import core.model.resnet_official as resnet_official  # noqa: E402
import core.loss_functions.infoNCE as info_nce  # noqa: E402
import core.optimizer  # noqa: E402
import core.data  # noqa: E402

core.utils.dist2 = sys.modules["core.utils.dist2"]
for m in (network_builder, resnet_official, misc):
    m.device = torch.device("cpu")
misc.dist = OneProcess
info_nce.dist = OneProcess

d = np.load(inp)
views = [[torch.from_numpy(d[f"v{i}_{k}"]) for i in range(3)] for k in range(steps)]
lrs = [float(v) for v in d["lr"]]
bn = attr({"use_sync_bn": False, "kwargs": {}})
recorded = {"loss1": [], "loss2": [], "total": []}


def model_entry(cfg):  # the reduced backbone (see the docstring)
    return resnet_official.ResNet(resnet_official.BasicBlock, [1, 1, 1, 1], **cfg["kwargs"])


def unsupervised_entry(cfg):
    return network_builder.FastMoCo(**cfg["kwargs"])


def optim_entry(cfg):  # config `optimizer.type: SGD`
    kwargs = dict(cfg["kwargs"])
    return torch.optim.SGD(kwargs.pop("params"), **kwargs)


def loss_entry(cfg):  # config `criterion.type: InfoNCE`; calls recorded
    crit = info_nce.InfoNCE(**cfg["kwargs"])
    loss1, loss2, forward = crit.loss1, crit.loss2, crit.forward

    def rec(name, f):
        def g(*a):
            v = f(*a)
            recorded[name].append(float(v.detach()))
            return v
        return g
    crit.loss1, crit.loss2, crit.forward = rec("loss1", loss1), rec("loss2", loss2), rec(
        "total", forward)
    return crit


core.model.model_entry = model_entry
core.utils.unsupervised_entry = unsupervised_entry
core.optimizer.optim_entry = optim_entry
core.data.build_imagenet_train_dataloader = None
core.loss_functions = sys.modules["core.loss_functions"]
core.loss_functions.loss_entry = loss_entry

spec = importlib.util.spec_from_file_location("mnclglf_train", official + "/train.py")
train = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train)
train.device = torch.device("cpu")
train.dist = OneProcess

config = attr({
    "backbone": {"type": "resnet18_official", "kwargs": {
        "zero_init_residual": True, "num_classes": 10, "bn": bn}},
    "model": {"type": "FastMoCo", "kwargs": {
        "ema": True, "arch": "comb_patch", "split_num": 2, "combs": 2,
        "projector": {"hidden_dim": proj_hidden, "out_dim": proj_out},
        "predictor": {"in_dim": proj_out, "hidden_dim": pred_hidden, "out_dim": proj_out}}},
    "clip_grad_norm": 1,
    "criterion": {"type": "InfoNCE", "kwargs": {"temperature": 1}},
    "optimizer": {"type": "SGD", "kwargs": {"nesterov": False, "momentum": 0.9,
                                            "weight_decay": 0.0001}},
    "lr_scheduler": {"type": "WCosConEpoch", "kwargs": {"base_lr": 0.1}},
    "data": {"iter_per_epoch": steps, "max_epoch": 1},
    "saver": {"print_freq": 10 ** 9, "val_freq": 10 ** 9, "save_many": False},
})

# build_model, mirrored (glue; see the docstring)
kw = config.model.kwargs
kw.bn = bn
kw.backbone = model_entry(config.backbone)
kw.backbone_ema = model_entry(config.backbone)
model = unsupervised_entry(config.model)
model.memory_bank = nn_memory_bank.NNMemoryBankModule(size=d["bank"].shape[0])
model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
state = {k[2:]: torch.from_numpy(d[k]) for k in d.files if k.startswith("w.")}
missing, unexpected = model.load_state_dict(state, strict=False)
assert not unexpected, f"names the official model does not have: {unexpected}"
aliases = ("backbone.", "bbone_ema.")  # the same modules as encoder.0 / encoder_ema.0
missing = [k for k in missing if not k.startswith(aliases) and "num_batches_tracked" not in k]
assert not missing, f"weights not given: {missing}"
model.memory_bank.bank = torch.from_numpy(d["bank"]).t().contiguous()
model.memory_bank.bank_ptr = torch.zeros(1, dtype=torch.long)
model.train()


class Scheduler:  # glue: `WCosConEpoch` is missing; ours per step, predictor constant
    def __init__(self, optimizer):
        self.optimizer = optimizer

    def step(self, curr_step):
        self.optimizer.param_groups[0]["lr"] = lrs[curr_step - 1]
        self.optimizer.param_groups[1]["lr"] = 0.1

    def get_lr(self):
        return [g["lr"] for g in self.optimizer.param_groups]


class Null:
    def __getattr__(self, name):
        return lambda *a, **k: None


solver = train.ImageNetSolver.__new__(train.ImageNetSolver)
solver.config = config
solver.state = {"last_iter": 0}
solver.dist = AttrDict(rank=0, world_size=1, local_id=0)
solver.prototype_info = AttrDict()
solver.model = model
solver.logger = solver.tb_logger = Null()
solver.path = AttrDict(save_path=tempfile.mkdtemp())
train.ImageNetSolver.build_optimizer(solver)
solver.lr_scheduler = Scheduler(solver.optimizer)
solver.train_data = {"loader": [{"image": torch.cat(v, dim=1)} for v in views]}
train.ImageNetSolver.train(solver)

module("lr_scheduler").__path__ = [official + "/lr_scheduler"]
import lr_scheduler.lambda_scheduler as lambda_scheduler  # noqa: E402

probe = torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)]},
                         {"params": [torch.zeros(1, requires_grad=True)]}], lr=0.1)
wcoscon = lambda_scheduler.WCosConLR(probe, max_iter=steps, warmup_steps=0, init_lr=0.1,
                                     base_lr=0.1, min_lr=0.0)
wcos = []
for k in range(1, steps + 1):
    wcoscon.step(k)
    wcos.append(wcoscon.get_lr()[0])

l1 = np.array(recorded["loss1"], dtype=np.float64).reshape(steps, -1)
l2 = np.array(recorded["loss2"], dtype=np.float64).reshape(steps, 2)
out = {"total": np.array(recorded["total"]), "global_local": l1.mean(axis=1),
       "nn": 0.5 * l2[:, 0] + 0.5 * l2[:, 1], "wcoscon": np.array(wcos),
       "bank": model.memory_bank.bank.t().contiguous().numpy()}
for k, v in model.state_dict().items():
    if not k.startswith(aliases) and "num_batches_tracked" not in k and not k.startswith(
            "memory_bank"):
        out["w." + k] = v.detach().numpy()
np.savez(outp, **out)

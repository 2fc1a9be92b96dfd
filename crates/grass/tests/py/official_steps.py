"""N steps of the OFFICIAL GraSS training step (`GraSS_train_step` of
`vissl/trainer/train_steps/GraSS_train_step.py`, GeoX-Lab/GraSS, checked out by
`cargo xtask official fetch grass`; not ours) on our initial weights and views.

Official code run here, unchanged, loaded from the checkout by file: the train step itself
(`GraSS_train_step`, `construct_sample_for_model`, `TrainInsectionOperation`,
`getHeadMapCut`, `DACrop`), the model (`BaseSSLMultiInputOutputModel` of
`vissl/models/base_ssl_model.py`, its ResNe(X)t trunk `vissl/models/trunks/resnext.py` with the
fork's `get_trunk_forward_outputs` of `vissl/models/model_helpers.py` that also returns the
layer-4 map, two `MLP` heads of `vissl/models/heads/mlp.py` as `grass_1gpu_resnet_b256.yaml`),
the loss (`SimclrInfoNCELoss`, τ 0.5), the parameter groups
(`get_optimizer_param_groups` of `vissl/optimizers/optimizer_helper.py`: BN without decay, biases
with it), LARC (`LARC_FSDP` of `vissl/optimizers/larc_fsdp.py` with `distributed_norm=False`,
documented there as "the same computations as APEX LARC", which the config's `use_larc` selects;
`clip: False`, trust 0.001, eps 1e-8) over `torch.optim.SGD` (momentum 0.9, wd 1e-6, no
Nesterov), and the fork's `CosineWarmRestartScheduler`.

Glue (not official code), and why:
* every framework module those files import (classy_vision, fairscale, fvcore and the VISSL
  modules not listed above) is a stub in `sys.modules`: none of them computes anything in the
  step (registries, perf timers, hooks, the all-reduce of a one-process run, `set_torch_seed`,
  which the fork's `vissl/utils/misc.py` does not even define);
* the model config is a plain attribute dict with the config's values (VISSL's defaults for what
  the config does not set);
* REDUCED MODEL: `BLOCK_CONFIG[50]` is set to (1, 1, 1, 1) (a one-block-per-stage Bottleneck
  ResNet at full width, so the heads stay 2048 → 2048 → 128) and the views are small; the
  weights are then replaced by ours;
* the task object the step reads (`data_iterator`, `optimizer`, `where`, `loss`, hooks): our
  views as the batch, `where = step / N`; the optimizer wrapper does what classy-vision's
  `ClassyOptimizer.step(where)` does (set every group's lr from the schedule, then step LARC);
* the lr schedule's `composite` (classy-vision's `CompositeParamScheduler`, rescaled intervals,
  `WHERE_EPSILON` 1e-6) and `linear` (fvcore's `LinearParamScheduler`) are not in the fork:
  ported here in six lines; the cosine part is the fork's own class;
* REDUCED SETTING: every lr of the schedule times the lr scale of argv (the test says why).

Inputs (npz): w.<official name> for every parameter and BN statistic; x_<k> [2N, 3, S, S] the
views of step k (`[x_1..x_N, x'_1..x'_N]`, the `simclr_collator` layout). argv[3:]: checkout,
steps, lr scale (ours: `pretrain.lr_scale`; the same factor on every value of the official
schedule, glue of the reduced setting). Outputs: lr, loss_guide, loss, crop_l2 ([steps] each: the lr, the first forward's loss,
the training loss, Σ over views of the L2 norm of the cropped view) and w.<name> after the steps.
"""
import bisect  # noqa: F401  (the scheduler module uses it)
import contextlib
import importlib.util
import sys
import types

import numpy as np
import torch

inp, outp, official = sys.argv[1], sys.argv[2], sys.argv[3]
steps, lr_scale = int(sys.argv[4]), float(sys.argv[5])
torch.set_num_threads(1)


# ---- glue: framework stubs ------------------------------------------------------------------
class AttrDict(dict):
    def __getattr__(self, k):
        try:
            return self[k]
        except KeyError as e:
            raise AttributeError(k) from e


def attr(d):
    if isinstance(d, dict):
        return AttrDict({k: attr(v) for k, v in d.items()})
    return d


class _Any:
    def __init__(self, *a, **k):
        pass

    def __call__(self, *a, **k):
        return _Any()

    def __getattr__(self, name):
        return _Any()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def stub(name, **attrs):
    m = types.ModuleType(name)
    m.__path__ = []
    for k, v in attrs.items():
        setattr(m, k, v)
    sys.modules[name] = m
    return m


def registry():
    reg = {}

    def register(name):
        def add(cls):
            reg[name] = cls
            return cls
        return add
    return reg, register


trunks, register_trunk = registry()
heads, register_head = registry()


class ClassyTask:
    pass


class AmpType:
    APEX, PYTORCH = "apex", "pytorch"


class _Hooks:
    def __getattr__(self, name):
        return types.SimpleNamespace(name=name)


class ParamScheduler:
    def __init__(self, update_interval=None):
        pass


class UpdateInterval:
    STEP = "step"

    @staticmethod
    def from_config(config, default):
        return default


for name in ["classy_vision", "classy_vision.generic", "classy_vision.optim", "fairscale",
             "vissl.optimizers.param_scheduler",
             "fairscale.nn", "fvcore", "fvcore.common", "vissl", "vissl.models", "vissl.utils",
             "vissl.data", "vissl.data.collators", "vissl.trainer", "vissl.losses",
             "vissl.optimizers"]:
    stub(name)
stub("classy_vision.generic.distributed_util", all_reduce_mean=lambda x: x,
     get_cuda_device_index=lambda: -1, get_rank=lambda: 0)
stub("classy_vision.generic.registry_utils", import_all_modules=lambda *a: None)
stub("classy_vision.tasks", ClassyTask=ClassyTask)
stub("classy_vision.tasks.classification_task", AmpType=AmpType)
stub("classy_vision.models", ClassyModel=torch.nn.Module, register_model=lambda n: (lambda c: c))
stub("classy_vision.losses", ClassyLoss=torch.nn.Module, register_loss=lambda n: (lambda c: c))
stub("classy_vision.optim", SGD=object, register_optimizer=lambda n: (lambda c: c))
stub("classy_vision.optim.param_scheduler", ClassyParamScheduler=ParamScheduler,
     UpdateInterval=UpdateInterval, register_param_scheduler=lambda n: (lambda c: c))
stub("fairscale.nn.data_parallel", FullyShardedDataParallel=_Any)
stub("fvcore.common.param_scheduler", ParamScheduler=ParamScheduler)
stub("vissl.config", AttrDict=AttrDict)
stub("vissl.hooks", SSLClassyHookFunctions=_Hooks())
stub("vissl.trainer.train_steps", register_train_step=lambda name: (lambda f: f))
stub("vissl.data.collators.collator_helper", MultiDimensionalTensor=type("MDT", (), {}))
stub("vissl.utils.activation_checkpointing", checkpoint_trunk=None,
     manual_gradient_all_reduce=None, manual_sync_params=None)
stub("vissl.utils.misc", is_apex_available=lambda: False,
     set_torch_seed=lambda seed: contextlib.nullcontext())
stub("vissl.utils.perf_stats", PerfTimer=_Any)
stub("vissl.utils.profiler", record_function=_Any)
stub("vissl.utils.distributed_utils", gather_from_all=lambda x: x)
stub("vissl.utils.fsdp_utils", fsdp_auto_wrap_bn=lambda m: m, fsdp_wrapper=lambda m, **k: m,
     fsdp_recursive_reset_lazy_init=lambda m: None,
     get_global_group=lambda: None)
stub("vissl.utils.checkpoint", CheckpointLoader=_Any, init_model_from_consolidated_weights=_Any)
stub("vissl.utils.env", get_machine_local_and_dist_rank=lambda: (0, 0))
stub("vissl.models.trunks", register_model_trunk=register_trunk,
     get_model_trunk=lambda n: trunks[n])
stub("vissl.models.trunks.feature_extractor", FeatureExtractorModel=_Any)
stub("vissl.models.heads", register_model_head=register_head, get_model_head=lambda n: heads[n])


def load(name, rel):
    """An official file, executed as module `name`."""
    spec = importlib.util.spec_from_file_location(name, f"{official}/{rel}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


# ---- the official units ---------------------------------------------------------------------
helpers = load("vissl.models.model_helpers", "vissl/models/model_helpers.py")
resnext = load("vissl.models.trunks.resnext", "vissl/models/trunks/resnext.py")
load("vissl.models.heads.mlp", "vissl/models/heads/mlp.py")
base = load("vissl.models.base_ssl_model", "vissl/models/base_ssl_model.py")
simclr = load("vissl.losses.simclr_info_nce_loss", "vissl/losses/simclr_info_nce_loss.py")
helper = load("vissl.optimizers.optimizer_helper", "vissl/optimizers/optimizer_helper.py")
larc = load("vissl.optimizers.larc_fsdp", "vissl/optimizers/larc_fsdp.py")
cosine = load("vissl.optimizers.param_scheduler.cosine_warm_restart_scheduler",
              "vissl/optimizers/param_scheduler/cosine_warm_restart_scheduler.py")
step = load("grass_train_step", "vissl/trainer/train_steps/GraSS_train_step.py")

resnext.BLOCK_CONFIG[50] = (1, 1, 1, 1)  # glue: the reduced model (see the docstring)

model_config = attr({
    "INPUT_TYPE": "rgb",
    "TRUNK": {"NAME": "resnet", "RESNETS": {
        "DEPTH": 50, "WIDTH_MULTIPLIER": 1, "NORM": "BatchNorm", "GROUPNORM_GROUPS": 32,
        "GROUPS": 1, "ZERO_INIT_RESIDUAL": False, "WIDTH_PER_GROUP": 64, "LAYER4_STRIDE": 2}},
    "ACTIVATION_CHECKPOINTING": {"USE_ACTIVATION_CHECKPOINTING": False,
                                 "NUM_ACTIVATION_CHECKPOINTING_SPLITS": 2},
    "HEAD": {"PARAMS": [["mlp", {"dims": [2048, 2048], "use_relu": True}],
                        ["mlp", {"dims": [2048, 128]}]],
             "BATCHNORM_EPS": 1e-5, "BATCHNORM_MOMENTUM": 0.1, "PARAMS_MULTIPLIER": 1.0},
    "FEATURE_EVAL_SETTINGS": {"EVAL_MODE_ON": False, "FREEZE_TRUNK_ONLY": False,
                              "EXTRACT_TRUNK_FEATURES_ONLY": False,
                              "LINEAR_EVAL_FEAT_POOL_OPS_MAP": []},
    "MULTI_INPUT_HEAD_MAPPING": [],
    "NON_TRAINABLE_PARAMS": [],
    "_MODEL_INIT_SEED": 0,
})
optimizer_config = attr({
    "weight_decay": 1e-6, "momentum": 0.9, "nesterov": False, "regularize_bn": False,
    "regularize_bias": True, "non_regularized_parameters": [],
    "construct_single_param_group_only": False,
    "head_optimizer_params": {"use_different_lr": False, "use_different_wd": False,
                              "weight_decay": 1e-6},
})

d = np.load(inp)
model = base.BaseSSLMultiInputOutputModel(model_config, optimizer_config)
state = {k[2:]: torch.from_numpy(d[k]) for k in d.files if k.startswith("w.")}
missing, unexpected = model.load_state_dict(state, strict=False)
assert not unexpected, f"names the official model does not have: {unexpected}"
assert all(k.endswith("num_batches_tracked") for k in missing), f"weights not given: {missing}"
model.train()

# lr: composite [linear 0.6 → 4.8 (0.1), cosine_warm_restart 4.8 → 0.0048 (0.9)], rescaled
restart = cosine.CosineWarmRestartScheduler(
    start_value=4.8, end_value=0.0048, restart_interval_length=0.334, wave_type="full",
    lr_multiplier=1.0, is_adaptive=True)
pieces = [(0.1, lambda w: 4.8 * w + 0.6 * (1 - w)), (0.9, restart)]


def schedule(where):  # glue: classy-vision's CompositeParamScheduler.__call__
    i, total = 0, pieces[0][0]
    while where + 1e-6 > total and i < len(pieces) - 1:
        i += 1
        total += pieces[i][0]
    length, fn = pieces[i]
    return fn((where - (total - length)) / length)


groups = helper.get_optimizer_param_groups(model, model_config, optimizer_config,
                                           {"lr": schedule(0.0), "lr_head": schedule(0.0)})
sgd = torch.optim.SGD(groups, lr=schedule(0.0), momentum=0.9, weight_decay=1e-6, nesterov=False)
lars = larc.LARC_FSDP(sgd, distributed_norm=False, trust_coefficient=0.001, clip=False, eps=1e-8)
loss_cfg = attr({"temperature": 0.5, "buffer_params": {
    "world_size": 1, "embedding_dim": 128, "effective_batch_size": d["x_0"].shape[0]}})
criterion = simclr.SimclrInfoNCELoss(loss_cfg)


class Optimizer:  # glue: classy-vision's ClassyOptimizer.step(where) over LARC
    def __init__(self):
        self.lrs = []

    def zero_grad(self):
        lars.zero_grad()

    def step(self, where):
        lr = schedule(where) * lr_scale
        for g in lars.param_groups:
            g["lr"] = lr
        self.lrs.append(lr)
        lars.step()


class Task(ClassyTask):  # glue: what GraSS_train_step reads of VISSL's task
    def __init__(self, batches):
        self.data_iterator = iter(batches)
        self.data_and_label_keys = {"input": ["data"], "target": ["label"]}
        self.perf_stats = None
        self.train = True
        self.enable_manual_gradient_reduction = False
        self.amp_type = None
        self.model = model
        self.optimizer = Optimizer()
        self.losses, self.meters, self.calls = [], [], []
        self.num_updates = 0
        self.config = {"METERS": {"enable_training_meter": False}}

    def loss(self, output, target):
        v = criterion(output, target)
        self.calls.append(float(v.detach()))
        return v

    def run_hooks(self, name):
        pass

    def get_global_batchsize(self):
        return 1

    @property
    def where(self):
        return self.num_updates / steps


batches = []
for k in range(steps):
    x = torch.from_numpy(d[f"x_{k}"]).clone()
    batches.append({"data": [x], "label": [torch.zeros(x.shape[0], dtype=torch.long)],
                    "data_valid": [torch.ones(x.shape[0])]})
task = Task(batches)
crop_l2 = []
for k in range(steps):
    step.GraSS_train_step(task)
    crops = task.last_batch.sample["input"]
    crop_l2.append(float(crops.detach().double().flatten(1).norm(dim=1).sum()))

calls = np.array(task.calls, dtype=np.float64).reshape(steps, 2)
out = {"lr": np.array(task.optimizer.lrs), "loss_guide": calls[:, 0], "loss": calls[:, 1],
       "crop_l2": np.array(crop_l2)}
for k, v in model.state_dict().items():
    if not k.endswith("num_batches_tracked"):
        out["w." + k] = v.detach().numpy()
np.savez(outp, **out)

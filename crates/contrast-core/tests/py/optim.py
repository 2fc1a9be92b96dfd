"""torch.optim's own SGD / AdamW / MultiStepLR / PolynomialLR; our own restatement (no official code installed) of apex LARC and of the DINO/PatchMix, MMSeg and VISSL schedules: references for contrast_core::optim.

Optimisers: torch.optim.SGD / AdamW with parameter groups; LARC written after apex
`apex/parallel/LARC.py` (wrapping torch SGD, weight decay absorbed from the groups) and the
solo-learn `solo/utils/lars.py` exclusion of 1-D parameters. Each case runs STEPS steps from the
same initial parameters with given gradients, lr and weight decay per step.

Schedules: PatchMix/DINO `cosine_scheduler` (numpy), PatchMix `adjust_moco_momentum`,
torch MultiStepLR / PolynomialLR, MMSeg poly with min_lr, and VISSL/classy-vision's composite
+ cosine_warm_restart as configured by GraSS (re-typed from their formulas).

Usage: python optim.py IN.npz OUT.npz
"""
import bisect
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from larc import larc_step  # noqa: E402

inp = {k: torch.from_numpy(v) for k, v in np.load(sys.argv[1]).items()}
out = {}
NAMES = ["b", "w", "zero"]
STEPS = int(inp["steps"])
lrs = inp["lrs"].tolist()
wds = inp["wds"].tolist()


def params():
    return {n: inp[f"init.{n}"].clone() for n in NAMES}


def groups(ps, lr, wd):
    # decay group [w], scaled decay group [zero] at lr x 0.5, no-decay group [b]
    return [
        {"params": [ps["w"]], "weight_decay": wd, "scale": 1.0, "lr": lr},
        {"params": [ps["zero"]], "weight_decay": wd, "scale": 0.5, "lr": lr * 0.5},
        {"params": [ps["b"]], "weight_decay": 0.0, "scale": 1.0, "lr": lr},
    ]


def set_hparams(opt, t):
    for g in opt.param_groups:
        g["lr"] = lrs[t] * g["scale"]
        if g["weight_decay"] != 0.0:
            g["weight_decay"] = wds[t]


def set_grads(ps, t):
    for n in NAMES:
        ps[n].grad = inp[f"grad.{n}.{t}"].clone()


def run(case, make, lars=None):
    ps = params()
    for p in ps.values():
        p.requires_grad_(True)
    opt = make(groups(ps, lrs[0], wds[0]))
    for t in range(STEPS):
        set_hparams(opt, t)
        set_grads(ps, t)
        if lars is None:
            opt.step()
        else:
            larc_step(opt, **lars)
    for n in NAMES:
        out[f"{case}.{n}"] = ps[n].detach().numpy()
        st = opt.state[ps[n]]
        for key, v in st.items():
            v = v.detach().numpy()
            if key == "step":
                v = v.reshape(1)
            out[f"{case}.state.{key}.{n}"] = v


run("sgd", lambda g: torch.optim.SGD(g, lr=lrs[0], momentum=0.9, dampening=0.1))
run("sgd_nesterov", lambda g: torch.optim.SGD(g, lr=lrs[0], momentum=0.9, nesterov=True))
run("adamw", lambda g: torch.optim.AdamW(g, lr=lrs[0], betas=(0.9, 0.999), eps=1e-8))
run("adamw_ams", lambda g: torch.optim.AdamW(g, lr=lrs[0], betas=(0.8, 0.99), eps=1e-6, amsgrad=True))
sgd_m = lambda g: torch.optim.SGD(g, lr=lrs[0], momentum=0.9)
run("larc_clip", sgd_m, dict(trust=0.02, clip=True, eps=1e-8, exclude=False))
run("lars_scale", sgd_m, dict(trust=0.001, clip=False, eps=1e-8, exclude=False))
run("lars_excl", lambda g: torch.optim.SGD(g, lr=lrs[0], momentum=0.9, nesterov=True),
    dict(trust=0.001, clip=True, eps=1e-8, exclude=True))

# ---------------------------------------------------------------- schedules


def cosine_scheduler(base_value, final_value, epochs, niter_per_ep, warmup_epochs=0, start_warmup_value=0):
    warmup_schedule = np.array([])
    warmup_iters = warmup_epochs * niter_per_ep
    if warmup_epochs > 0:
        warmup_schedule = np.linspace(start_warmup_value, base_value, warmup_iters)
    iters = np.arange(epochs * niter_per_ep - warmup_iters)
    schedule = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * iters / len(iters)))
    return np.concatenate((warmup_schedule, schedule))


EP, NIT = 8, 5
out["sched.warmup_cosine"] = cosine_scheduler(2e-3 * 512 / 256, 1e-6, EP, NIT, 2)
out["sched.wd_cosine"] = cosine_scheduler(0.02, 0.2, EP, NIT)
out["sched.ema"] = np.array(
    [1.0 - 0.5 * (1.0 + math.cos(math.pi * (s / NIT) / EP)) * (1.0 - 0.996) for s in range(EP * NIT)]
)


def torch_sched(make, n):
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=0.1)
    sch = make(opt)
    vals = []
    for _ in range(n):
        vals.append(sch.get_last_lr()[0])
        opt.step()
        sch.step()
    return np.array(vals)


out["sched.step"] = torch_sched(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [10, 25], 0.1), 40)
out["sched.poly"] = torch_sched(lambda o: torch.optim.lr_scheduler.PolynomialLR(o, 30, 0.9), 40)
out["sched.poly_min"] = np.array(
    [(0.01 - 1e-4) * (1 - min(s, 30) / 30) ** 0.9 + 1e-4 for s in range(40)]
)


class CosineWarmRestartFull:
    """classy-vision/VISSL cosine_warm_restart, wave_type full, is_adaptive."""

    def __init__(self, start, end, length):
        self.start, self.end, self.length = start, end, length
        self.restart_steps = [0.0] + np.arange(length, 1.0, 2 * length).tolist()
        self.values = [
            end + 0.5 * (start - end) * (1 + math.cos(math.pi * (length + r))) for r in self.restart_steps
        ]

    def __call__(self, where):
        k = max(bisect.bisect(self.restart_steps, where) - 1, 0)
        return self.end + 0.5 * (self.values[k] - self.end) * (1 + math.cos(math.pi * where / self.length))


def grass(where):
    # classy CompositeParamScheduler: lengths [0.1, 0.9], interval_scaling rescaled
    lengths = [0.1, 0.9]
    i, running = 0, lengths[0]
    while where + 1e-6 > running and i < 1:
        i += 1
        running += lengths[i]
    w = (where - (running - lengths[i])) / lengths[i]
    if i == 0:
        return 4.8 * w + 0.6 * (1 - w)  # LinearParamScheduler(0.6, 4.8)
    return CosineWarmRestartFull(4.8, 0.0048, 0.334)(w)


for T in (1000, 1234):
    out[f"sched.grass{T}"] = np.array([grass(s / T) for s in range(T)])

np.savez(sys.argv[2], **out)

"""PyTorch peer of the training-step bench (`benches/src/steps.rs`): the same step of each method
in eager PyTorch (timm ViT / our re-statement of the official FBA-Net network), rebuilt from the
spec JSON that `contrast-steps export` writes, so the settings have one source.

    python benches/py/steps.py check SPEC.json            # loss on the exported weights + inputs
    python benches/py/steps.py time  SPEC.json [--threads 1] [--seconds 10]
    python benches/py/steps.py flops SPEC.json            # FLOPs of one step (FlopCounterMode)
    python benches/py/steps.py peak  [--threads 1] [--n 1024] [--seconds 3]

`time` prints `step <name> <samples/s> samples/s (median step … ms over N steps, T threads,
peak RSS M MiB)` exactly like the Rust binary; `check` prints `loss <name> <value>`.
"""
import argparse
import json
import os
import statistics
import sys
import time
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "crates/patchmix/tests/py"))
sys.path.insert(0, os.path.join(ROOT, "crates/fba-net/tests/py"))
sys.path.insert(0, os.path.join(ROOT, "crates/multinet/tests/py"))
from fba_torch import FBAPnet, fba_objective  # noqa: E402
from mnclglf_torch import Bank, MultiNet, mnclglf_objective  # noqa: E402
from patchmix_torch import patchmix_objective, soft_targets  # noqa: E402


def peak_rss_mib():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


class Step:
    """One training step: `loss()` (forward + objective) then backward and the optimiser."""

    def to(self, dev):
        """Move the network (its parameters in place, so the optimiser keeps them) and inputs."""
        self.net.to(dev)
        for k, v in list(vars(self).items()):
            if torch.is_tensor(v):
                setattr(self, k, v.to(dev))

    def update(self):
        self.opt.step()

    def check_loss(self):
        """The loss the check compares (no state update other than what the Rust side does)."""
        return self.loss()

    def step(self):
        loss = self.loss()
        self.opt.zero_grad(set_to_none=False)
        loss.backward()
        self.update()
        return loss.item()

    def step_phases(self):
        """Seconds in (forward + loss, backward, optimiser) of one step."""
        t = time.perf_counter()
        loss = self.loss()
        loss.item()
        f = time.perf_counter() - t
        self.opt.zero_grad(set_to_none=False)
        loss.backward()
        b = time.perf_counter() - t - f
        self.update()
        return f, b, time.perf_counter() - t - f - b


# ---- PatchMix ---------------------------------------------------------------------------------
def mlp(layers, d_in, hidden, d_out, last_bn):
    """MoCo-v3 `_build_mlp`: Linear(no bias)–BN–ReLU … Linear, then BN(affine=False)."""
    mods = []
    for i in range(layers):
        a = d_in if i == 0 else hidden
        b = d_out if i == layers - 1 else hidden
        mods.append(nn.Linear(a, b, bias=False))
        if i < layers - 1:
            mods += [nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
        elif last_bn:
            mods.append(nn.BatchNorm1d(b, affine=False))
    return nn.Sequential(*mods)


class PatchMixNet(nn.Module):
    def __init__(self, s):
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        self.base_encoder = VisionTransformer(
            img_size=s["image"], patch_size=s["patch"], embed_dim=s["embed_dim"], depth=s["depth"],
            num_heads=s["heads"], mlp_ratio=4, qkv_bias=True,
            norm_layer=partial(nn.LayerNorm, eps=1e-6), num_classes=0, drop_path_rate=s["drop_path"])
        self.base_encoder.head = mlp(s["proj_layers"], s["embed_dim"], s["mlp_dim"], s["out_dim"], True)
        self.predictor = mlp(s["pred_layers"], s["out_dim"], s["mlp_dim"], s["out_dim"], True)


def mix_images(x, p, m):
    """PatchMix's mixing (crates/patchmix/src/mix.rs): one permutation of patch positions shared
    by the batch; image g takes its j-th share from image (g+j) mod B; patches keep positions."""
    b, c, h, w = x.shape
    hp, wp = h // p, w // p
    tokens = x.view(b, c, hp, p, wp, p).permute(0, 2, 4, 1, 3, 5).reshape(b, hp * wp, c * p * p)
    t = tokens.shape[1]
    perm = torch.randperm(t)
    s = t // m
    out = tokens.clone()
    g = torch.arange(b)
    for j in range(1, m):
        pos = perm[j * s:(j + 1) * s]
        out[:, pos] = tokens[(g + j) % b][:, pos]
    return out.view(b, hp, wp, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


class PatchMixStep(Step):
    def __init__(self, s, x1=None, x2=None):
        self.s = s
        self.net = PatchMixNet(s)
        b = s["batch"]
        self.x1 = x1 if x1 is not None else torch.randn(b, 3, s["image"], s["image"])
        self.x2 = x2 if x2 is not None else torch.randn(b, 3, s["image"], s["image"])
        self.mix_t, self.mixmix_t = soft_targets(b, s["m"])
        decay = [p for n, p in self.net.named_parameters() if p.ndim > 1]
        no_decay = [p for n, p in self.net.named_parameters() if p.ndim <= 1]
        self.opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": s["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
            lr=s["lr"], betas=tuple(s["betas"]))
        self.net.train()

    def loss(self):
        s, enc, pred = self.s, self.net.base_encoder, self.net.predictor
        xm1 = mix_images(self.x1, s["patch"], s["m"])
        xm2 = mix_images(self.x2, s["patch"], s["m"])
        z1 = enc(self.x1)
        q1 = pred(z1)
        k1 = z1.detach()
        with torch.no_grad():
            k2 = enc(self.x2)
            mk1 = enc(xm1)
        mq2 = pred(enc(xm2))
        return patchmix_objective(q1, k1, k2, mq2, mk1, [], [], s["tau"], self.mix_t, self.mixmix_t)[0]


# ---- MNCLGLF (multinet) ------------------------------------------------------------------------
class MultinetStep(Step):
    def __init__(self, s, x1=None, x2=None, x3=None, bank=None, ptr=None):
        self.s = s
        self.net = MultiNet(s)
        b = s["batch"]
        self.x1, self.x2, self.x3 = (x if x is not None else torch.randn(b, 3, 32, 32) for x in (x1, x2, x3))
        if bank is None:
            bank = F.normalize(torch.randn(s["bank_size"], s["proj_out"]), dim=1)
        self.bank = Bank(bank, 0 if ptr is None else int(ptr.reshape(-1)[0]))
        self.params = [p for n, p in self.net.named_parameters() if not n.startswith("ema.")]
        self.opt = torch.optim.SGD(self.params, lr=s["lr"], momentum=s["momentum"],
                                   weight_decay=s["weight_decay"])
        self.net.train()

    def forward_loss(self):
        s = self.s
        p, k1, k2, e1, e3 = self.net(self.x1, self.x2, self.x3)
        j1, j3 = self.bank.nearest(e1), self.bank.nearest(e3)
        self.bank.push(e3)
        return mnclglf_objective(p[0], p[1], p[2], k1, k2, j1, j3, s["tau_global_local"], s["tau_nn"],
                                 s["nn_weight"], s["released_code_l1"])[0]

    def loss(self):
        self.net.update_ema()
        return self.forward_loss()

    def check_loss(self):
        return self.forward_loss()  # the Rust check runs the learner's loss without the EMA step

    def update(self):
        torch.nn.utils.clip_grad_norm_(self.params, self.s["clip_grad_norm"])
        self.opt.step()

    def to(self, dev):
        super().to(dev)
        self.bank.rows = self.bank.rows.to(dev)


# ---- FBA-Net ----------------------------------------------------------------------------------
class FbaStep(Step):
    def __init__(self, s, x=None, y=None):
        self.s = s
        p = s["patch"]
        vox = 1
        for d in p:
            vox *= (d + 1) // 2
        self.net = FBAPnet(s["n_filters"], vox, s["dim"])
        b, lab = s["batch"], s["labeled"]
        self.x = x if x is not None else torch.randn(b, 1, *p)
        self.y = y if y is not None else torch.randint(0, 2, (lab, *p))
        self.opt = torch.optim.SGD(self.net.parameters(), lr=s["lr"], momentum=s["momentum"],
                                   weight_decay=s["weight_decay"])
        self.net.train()

    def loss(self):
        s = self.s
        res = self.net(self.x)
        fgs = [r[0] for r in res]
        bgs = [r[1] for r in res]
        logits = [r[2] for r in res]
        return fba_objective(logits, fgs, bgs, self.y, s["lambda_seg"], s["consistency"], s["temperature"])[0]


STEPS = {"patchmix": PatchMixStep, "multinet": MultinetStep, "fba-net": FbaStep}


def load_case(spec_path, with_tensors):
    with open(spec_path) as f:
        s = json.load(f)
    cls = STEPS[s["case"]]
    if not with_tensors:
        return s, cls(s)
    from safetensors.torch import load_file

    t = load_file(os.path.join(os.path.dirname(spec_path), s["tensors"]))
    inputs = {k[3:]: v for k, v in t.items() if k.startswith("in:")}
    case = cls(s, **inputs)
    sd = {k[2:]: v for k, v in t.items() if k.startswith("w:")}
    missing, unexpected = case.net.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise SystemExit(f"{s['name']}: weight names differ: missing {missing[:6]}, unexpected {unexpected[:6]}")
    return s, case


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["check", "time", "flops", "peak"])
    ap.add_argument("spec", nargs="?")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--phases", action="store_true")
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    if a.cmd == "peak":
        x, y = torch.randn(a.n, a.n), torch.randn(a.n, a.n)
        x @ y
        times = []
        start = time.perf_counter()
        while time.perf_counter() - start < a.seconds or len(times) < 3:
            t = time.perf_counter()
            x @ y
            times.append(time.perf_counter() - t)
        g = 2 * a.n ** 3 / statistics.median(times) / 1e9
        print(f"matmul_peak {g:.2f} GFLOP/s (fp32 {a.n}x{a.n}, {torch.get_num_threads()} threads)")
        return
    if a.spec is None:
        raise SystemExit(f"{a.cmd} needs the spec JSON written by `contrast-steps export`")
    if a.cmd == "check":
        s, case = load_case(a.spec, True)
        torch.manual_seed(s["seed"])
        with torch.no_grad():
            loss = case.check_loss().item()
        print(f"loss {s['name']} {loss:.8g}")
        return
    s, case = load_case(a.spec, False)
    torch.manual_seed(s["seed"])
    if a.cmd == "flops":
        from torch.utils.flop_counter import FlopCounterMode

        case.step()
        with FlopCounterMode(display=False) as fc:
            case.step()
        print(f"flops {s['name']} {fc.get_total_flops()}")
        return
    if "drop_path_timing" in s:  # the check ran without drop-path; the method trains with it
        s["drop_path"] = s["drop_path_timing"]
        case = STEPS[s["case"]](s)
    dev = torch.device(a.device)
    case.to(dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    case.step()  # warm-up
    sync()
    times = []
    start = time.perf_counter()
    last = 0.0
    while time.perf_counter() - start < a.seconds or len(times) < 3:
        t = time.perf_counter()
        last = case.step()
        sync()
        times.append(time.perf_counter() - t)
    if last != last:
        raise SystemExit(f"{s['name']}: the loss became NaN")
    if a.phases:
        ph = list(zip(*[case.step_phases() for _ in range(3)]))
        f, b, u = (statistics.median(v) * 1000 for v in ph)
        print(f"phases {s['name']} forward+loss {f:.1f} ms, backward {b:.1f} ms, optimiser {u:.1f} ms")
    med = statistics.median(times)
    print(f"step {s['name']} {s['batch'] / med:.3f} samples/s (median step {med * 1000:.1f} ms over "
          f"{len(times)} steps, {torch.get_num_threads()} threads, peak RSS {peak_rss_mib():.0f} MiB)")


if __name__ == "__main__":
    main()

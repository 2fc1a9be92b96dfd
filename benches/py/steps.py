"""PyTorch peer of the training-step bench (`benches/src/steps/`): the same step of each method
in eager PyTorch, one module per case (`step_<case>.py`, class `CASE`), rebuilt from the spec JSON
that `contrast-steps export` writes, so the settings have one source.

    python benches/py/steps.py check SPEC.json            # loss on the exported weights + inputs
    python benches/py/steps.py time  SPEC.json [--threads 1] [--seconds 10]
    python benches/py/steps.py flops SPEC.json            # FLOPs of one step (FlopCounterMode)
    python benches/py/steps.py peak  [--threads 1] [--n 1024] [--seconds 3] [--device cpu]

`time` prints `step <name> <samples/s> samples/s (median step … ms over N steps, T threads,
peak RSS M MiB)` exactly like the Rust binary; `check` prints `loss <name> <value>`.
"""
import argparse
import importlib
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from step_base import peak_rss_mib  # noqa: E402


def step_class(case):
    """The peer of a case: `CASE` in `benches/py/step_<case>.py` (`fba-net` → `step_fba_net`)."""
    return importlib.import_module("step_" + case.replace("-", "_")).CASE


def load_case(spec_path, with_tensors):
    with open(spec_path) as f:
        s = json.load(f)
    cls = step_class(s["case"])
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
        dev = torch.device(a.device)
        x, y = torch.randn(a.n, a.n, device=dev), torch.randn(a.n, a.n, device=dev)
        x @ y
        times = []
        start = time.perf_counter()
        while time.perf_counter() - start < a.seconds or len(times) < 3:
            t = time.perf_counter()
            z = x @ y
            if dev.type != "cpu":  # the same synchronisation as the Rust side
                z.sum().item()
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
        case = step_class(s["case"])(s)
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

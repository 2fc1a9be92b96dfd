"""GPU verification run of one method (copied into the bundle by `cargo xtask gpu-bundle`).

Runs, for the same number of epochs, seed, data and settings:
  (a) ours        our method (the Rust binary in bin/)
  (b) baseline    ours with the method switched off
  (c) official    the official PyTorch code, through our adapter
and writes $OUT/verify-<method>.json (per-epoch metrics, samples/s, GPU memory and utilisation)
plus $OUT/verify-<method>.png (the curves side by side) and one log per run.

Without --tiny, for PatchMix it first times a few steps of (a) and (c) and picks the number of
epochs so that the three runs end within the bundle's minutes; FBA-Net runs the bundle's fixed
number of iterations. Each run gets an equal share of the time left. --tiny: a few steps of each on a few images (on
the CPU when there is no GPU), to check that the bundle still works; its numbers mean nothing.
Needs: python3 with torch (+ torchvision, timm, einops; matplotlib for the PNG), no network.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def log(msg):
    print(f"[run.py {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class GpuSampler:
    """Polls nvidia-smi (utilisation %, memory used MiB) while a run is going."""

    def __init__(self):
        self.util, self.mem = [], []
        self.proc = None
        if shutil.which("nvidia-smi"):
            self.proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits",
                 "-lms", "500"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self.thread = threading.Thread(target=self._read, daemon=True)
            self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                u, m = (float(x) for x in line.strip().split(",")[:2])
            except ValueError:
                continue
            self.util.append(u)
            self.mem.append(m)

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait()
        busy = [u for u in self.util if u > 0]
        return {
            "gpu_util_mean_pct": statistics.mean(self.util) if self.util else None,
            "gpu_util_mean_busy_pct": statistics.mean(busy) if busy else None,
            "gpu_mem_peak_mib": max(self.mem) if self.mem else None,
        }


def run_cmd(name, cmd, env, timeout_s, out_dir):
    """Run one command with a deadline; stdout+stderr go to $OUT/log-<name>.txt."""
    log(f"{name}: {' '.join(cmd)}")
    path = os.path.join(out_dir, f"log-{name}.txt")
    sampler = GpuSampler()
    t0 = time.time()
    status = "ok"
    with open(path, "w") as f:
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=HERE)
        try:
            rc = p.wait(timeout=max(timeout_s, 1))
            if rc != 0:
                status = f"failed (exit {rc})"
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            status = f"timed out after {timeout_s:.0f} s"
    gpu = sampler.stop()
    wall = time.time() - t0
    log(f"{name}: {status} in {wall:.0f} s")
    if status != "ok":
        with open(path) as f:
            tail = f.read()[-3000:]
        print(tail, flush=True)
    return status, wall, gpu


# ------------------------------------------------------------------ patchmix


class PatchMix:
    """(a) patchmix pretrain, (b) the same with mix.enabled=false, (c) official/patchmix.py."""

    x_label = "epoch"

    def __init__(self, b, s, data, device, work, env):
        self.b, self.s, self.data, self.device, self.work, self.env = b, s, data, device, work, env

    def primary(self):
        return f"knn_top1_k{self.s['knn_k'][0]}"

    def ours_cmd(self, name, epochs, warmup, mix=True, stop_at=None):
        s = self.s
        sets = {
            "data.format": '"image-folder"', "data.root": json.dumps(self.data),
            "data.train_subset": 0, "data.test_subset": 0, "data.threads": s["workers"],
            "model.depth": s["depth"], "model.patch_size": s["patch"], "model.mlp_dim": s["mlp_dim"],
            "optim.epochs": epochs, "optim.warmup_epochs": warmup, "optim.batch_size": s["batch"],
            "mix.enabled": str(mix).lower(), "eval.knn_every": 1, "eval.linear_epochs": 0,
            "eval.knn_k": json.dumps(s["knn_k"]), "log.log_every": 1,
            "log.checkpoint_every_epochs": 100000, "runtime.seed": s["seed"],
            "runtime.threads": s["torch_threads"], "runtime.autocast_bf16": "true",
        }
        cmd = [os.path.join(HERE, "bin", "patchmix"), "pretrain", "--preset", os.path.join(HERE, "cfg", "patchmix.toml"),
               "--runs-dir", os.path.join(self.work, "runs"), "--name", name, "--device", self.device]
        for k, v in sets.items():
            cmd += ["--set", f"{k}={v}"]
        if stop_at:
            cmd += ["--stop-at", str(stop_at)]
        return cmd

    def official_cmd(self, out, epochs, warmup, mix_p=1.0, max_steps=0, knn=True):
        s = self.s
        cmd = [sys.executable, os.path.join(HERE, "official", "adapter.py"), "--official",
               os.path.join(HERE, "official", "src"), "--data", self.data, "--out", out,
               "--epochs", str(epochs), "--warmup-epochs", str(warmup), "--batch", str(s["batch"]),
               "--depth", str(s["depth"]), "--patch", str(s["patch"]), "--mlp-dim", str(s["mlp_dim"]),
               "--mix-p", str(mix_p), "--workers", str(s["workers"]), "--seed", str(s["seed"]),
               "--knn-k", ",".join(str(k) for k in s["knn_k"])]
        if max_steps:
            cmd += ["--max-steps", str(max_steps)]
        if not knn:
            cmd += ["--no-knn"]
        return cmd

    def variants(self, epochs, warmup):
        d = os.path.join(self.work, "official-metrics.jsonl")
        return [
            ("ours", "PatchMix (ours)", self.ours_cmd("ours", epochs, warmup, True),
             lambda: self.read_ours("ours")),
            ("baseline", "no-mix baseline (ours)", self.ours_cmd("baseline", epochs, warmup, False),
             lambda: self.read_ours("baseline")),
            ("official", "PatchMix (official code)", self.official_cmd(d, epochs, warmup),
             lambda: read_jsonl(d)),
        ]

    def calibrate(self, out_dir, steps):
        """Seconds per step of ours and of the official code, and one kNN pass (official)."""
        cal = {}
        status, wall, _ = run_cmd("calibrate-ours", self.ours_cmd("calibrate", 1, 0, True, stop_at=steps),
                                  self.env, 240, out_dir)
        rows = [r for r in read_jsonl(os.path.join(self.work, "runs", "patchmix", "calibrate", "metrics.jsonl"))
                if "elapsed_s" in r]
        if status == "ok" and len(rows) >= 4:
            cal["ours_step_s"] = (rows[-1]["elapsed_s"] - rows[1]["elapsed_s"]) / (len(rows) - 2)
        cal["ours_startup_s"] = wall - cal.get("ours_step_s", 0) * steps
        out = os.path.join(self.work, "calibrate-official.jsonl")
        status, wall, _ = run_cmd("calibrate-official", self.official_cmd(out, 1, 0, max_steps=steps),
                                  self.env, 240, out_dir)
        rows = read_jsonl(out)
        r = rows[0] if rows else {}
        if status == "ok" and rows:
            cal["official_step_s"] = self.s["batch"] / r["samples_per_s"]
            cal["knn_s"] = r.get("knn_s", 0.0)
        cal["official_startup_s"] = wall - r.get("epoch_train_s", 0) - cal.get("knn_s", 0)
        return cal

    def read_ours(self, name):
        """Per-epoch rows from our metrics.jsonl and report.json (the last epoch's kNN)."""
        d = os.path.join(self.work, "runs", "patchmix", name)
        rows = read_jsonl(os.path.join(d, "metrics.jsonl"))
        steps = [r for r in rows if "total" in r]
        evals = {r["step"]: r for r in rows if any(k.startswith("knn_top1") for k in r)}
        by_epoch = {}
        for r in steps:
            by_epoch.setdefault(int(r["epoch"]), []).append(r)
        out = []
        report = None
        if os.path.exists(os.path.join(d, "report.json")):
            with open(os.path.join(d, "report.json")) as f:
                report = json.load(f)
        for e in sorted(by_epoch):
            rs = by_epoch[e]
            row = {"epoch": e + 1, "steps": rs[-1]["step"], "loss": statistics.mean(r["total"] for r in rs),
                   "src_loss": statistics.mean(r["orig"] for r in rs)}
            if len(rs) > 1:
                dt = rs[-1]["elapsed_s"] - rs[0]["elapsed_s"]
                row["samples_per_s"] = (len(rs) - 1) * self.s["batch"] / max(dt, 1e-9)
            ev = evals.get(rs[-1]["step"])
            if ev:
                row.update({k: v for k, v in ev.items() if k.startswith("knn_top1")})
            elif report and e == max(by_epoch) and report.get("knn"):
                row.update({f"knn_top1_k{x['k']}": x["top1"] for x in report["knn"]})
            out.append(row)
        return out


# ------------------------------------------------------------------ fba-net


class FbaNet:
    """(a) fba-net train, FBA-Net+; (b) the same with model.variant = supervised (V-Net on the
    labelled cases only); (c) the official train_3d.py through official/adapter.py. A fixed number
    of iterations (`settings.iterations`, or --epochs N read as iterations): the official script
    evaluates the test Dice every 200 iterations from 800, and ours is set to the same points."""

    x_label = "iteration"

    def __init__(self, b, s, data, device, work, env):
        self.b, self.s, self.data, self.device, self.work, self.env = b, s, data, device, work, env

    def primary(self):
        return "dice"

    def ours_cmd(self, name, iters, variant):
        s = self.s
        sets = {
            "data.root": json.dumps(self.data), "data.labeled": s["labeled"], "data.max_samples": 0,
            "data.patch": json.dumps(s["patch"]), "model.n_filters": s["n_filters"],
            "model.variant": json.dumps(variant), "optim.iterations": iters,
            "eval.every": s["eval_every"], "eval.start": s["eval_start"], "eval.stride": json.dumps(s["stride"]),
            "log.log_every": 1, "log.checkpoint_every": 100000, "runtime.seed": s["seed"],
            "runtime.threads": s["torch_threads"],
        }
        cmd = [os.path.join(HERE, "bin", "fba-net"), "train", "--preset", os.path.join(HERE, "cfg", "fba-net.toml"),
               "--runs-dir", os.path.join(self.work, "runs"), "--name", name, "--device", self.device]
        for k, v in sets.items():
            cmd += ["--set", f"{k}={v}"]
        return cmd

    def official_cmd(self, out, iters):
        return [sys.executable, os.path.join(HERE, "official", "adapter.py"), "--official",
                os.path.join(HERE, "official", "src"), "--data", self.data, "--work",
                os.path.join(self.work, "official"), "--out", out, "--iterations", str(iters),
                "--labeled", str(self.s["labeled"]), "--seed", str(self.s["seed"])]

    def variants(self, iters, _warmup):
        d = os.path.join(self.work, "official-metrics.jsonl")
        return [
            ("ours", "FBA-Net+ (ours)", self.ours_cmd("ours", iters, "fba-net+"), lambda: self.read_ours("ours")),
            ("baseline", "supervised V-Net (ours)", self.ours_cmd("baseline", iters, "supervised"),
             lambda: self.read_ours("baseline")),
            ("official", "FBA-Net+ (official code)", self.official_cmd(d, iters), lambda: self.read_official(d)),
        ]

    def points(self, losses, dices, batch):
        """Rows at the evaluation iterations (and the last one): test Dice %, the mean loss of the
        iterations since the previous row, samples/s over them."""
        out, prev = [], None
        marks = sorted(set(dices) | ({max(losses)} if losses else set()))
        for it in marks:
            seg = [losses[i] for i in losses if (prev is None or i > prev) and i <= it]
            row = {"epoch": it, "iteration": it}
            if it in dices:
                row["dice"] = dices[it]
            if seg:
                row["loss"] = statistics.mean(r["loss"] for r in seg)
                if len(seg) > 1:
                    dt = seg[-1]["elapsed_s"] - seg[0]["elapsed_s"]
                    row["samples_per_s"] = (len(seg) - 1) * batch / max(dt, 1e-9)
            out.append(row)
            prev = it
        return out

    def read_ours(self, name):
        rows = read_jsonl(os.path.join(self.work, "runs", "fba-net", name, "metrics.jsonl"))
        losses = {r["step"]: {"loss": r["total"], "elapsed_s": r["elapsed_s"]} for r in rows if "total" in r}
        dices = {r["step"]: r["test_dice"] for r in rows if "test_dice" in r}
        report = os.path.join(self.work, "runs", "fba-net", name, "report.json")
        if os.path.exists(report) and losses:
            with open(report) as f:
                last = json.load(f).get("last_iteration", {}).get("mean", {}).get("dice")
            # the final evaluation (same sliding window, all test cases) of the last iteration
            if last is not None:
                dices.setdefault(max(losses), last)
        batch = self.s["batch"] if name == "ours" else self.s["labeled_bs"]
        return self.points(losses, dices, batch)

    def read_official(self, path):
        rows = read_jsonl(path)
        losses = {r["iteration"]: r for r in rows if r.get("tag") == "loss"}
        dices = {r["iteration"]: 100.0 * r["value"] for r in rows if r.get("tag") == "Var_dice/Dice"}
        return self.points(losses, dices, self.s["batch"])


def read_jsonl(path):
    if not os.path.exists(path):
        return []
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
    return rows


def tiny_data(src, dst, per_class):
    """A few images per class (symbolic links) for --tiny."""
    for split, n in per_class.items():
        for c in sorted(os.listdir(os.path.join(src, split))):
            d = os.path.join(dst, split, c)
            os.makedirs(d, exist_ok=True)
            for fn in sorted(os.listdir(os.path.join(src, split, c)))[:n]:
                os.symlink(os.path.join(src, split, c, fn), os.path.join(d, fn))
    return dst


def plot(result, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib missing: no PNG")
        return False
    key, xl = result["primary"], result.get("x_label", "epoch")
    fig, ax = plt.subplots(1, 3, figsize=(16, 4.5))
    for name, r in result["runs"].items():
        pts = [(x["epoch"], x[key]) for x in r["epochs"] if key in x]
        if pts:
            ax[0].plot(*zip(*pts), marker="o", label=r["label"])
        ls = [(x["epoch"], x["loss"]) for x in r["epochs"] if "loss" in x]
        if ls:
            ax[1].plot(*zip(*ls), marker="o", label=r["label"])
        ax[2].bar(r["label"].replace(" (", "\n("), r.get("samples_per_s") or 0)
    ax[0].set(xlabel=xl, ylabel=result.get("primary_label", key), title=result.get("primary_title", key))
    ax[1].set(xlabel=xl, ylabel=f"training loss (mean per {xl} span)", title="loss")
    ax[2].set(ylabel="samples / s", title="training throughput")
    for a in ax[:2]:
        a.legend()
        a.grid(alpha=0.3)
    s = result
    fig.suptitle(f"{s['method']}: {s['device']} · {s['epochs']} {xl}s · {s['data']['train']} train / "
                 f"{s['data']['test']} test · commit {s['commit'][:10]}" + (" · TINY CHECK" if s["tiny"] else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true", help="a few steps on a few images: does the bundle work?")
    ap.add_argument("--minutes", type=float, default=None, help="wall-clock budget (default: the bundle's)")
    ap.add_argument("--epochs", type=int, default=0,
                    help="patchmix: skip the calibration, run this many epochs; fba-net: iterations")
    ap.add_argument("--out", default=os.environ.get("OUT") or os.path.join(HERE, "out"))
    a = ap.parse_args()
    t_start = time.time()
    with open(os.path.join(HERE, "bundle.json")) as f:
        b = json.load(f)
    os.makedirs(a.out, exist_ok=True)
    work = os.path.join(HERE, "work-tiny" if a.tiny else "work")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)

    import torch
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    env = dict(os.environ)
    torch_lib = os.path.join(os.path.dirname(torch.__file__), "lib")
    env["LD_LIBRARY_PATH"] = torch_lib + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    try:  # our figures' chart text: matplotlib ships DejaVu Sans (a machine may have no fonts)
        import matplotlib
        font = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "fonts", "ttf", "DejaVuSans.ttf")
        if os.path.exists(font):
            env.setdefault("CONTRAST_FONT", font)
    except ImportError:
        pass
    gpu_name = torch.cuda.get_device_name(0) if cuda else "CPU"
    log(f"device {gpu_name}, torch {torch.__version__}, python {sys.executable}")

    s = dict(b["settings"])
    data = os.path.join(HERE, "data")
    if a.tiny:
        s.update(b["tiny"])
    minutes = a.minutes or b["minutes"]
    budget = minutes * 60
    calibration = {}
    if b["method"] == "patchmix":
        if a.tiny:
            data = tiny_data(data, os.path.join(work, "data"),
                             {"train": s["train_per_class"], "test": s["test_per_class"]})
        m = PatchMix(b, s, data, device, work, env)
        n_train = sum(len(os.listdir(os.path.join(data, "train", c))) for c in os.listdir(os.path.join(data, "train")))
        n_test = sum(len(os.listdir(os.path.join(data, "test", c))) for c in os.listdir(os.path.join(data, "test")))
        iters = n_train // s["batch"]
        if a.tiny:
            epochs = s["epochs"]
        elif a.epochs:
            epochs = a.epochs
        else:
            calibration = m.calibrate(a.out, s["calibrate_steps"])
            log(f"calibration: {calibration}")
            step_s = max(calibration.get("ours_step_s", 0), calibration.get("official_step_s", 0)) or 1.0
            # one kNN pass (train + test features); ours also evaluates once more at the end and
            # draws its figures: counted as two more passes (measured on an H100: ≈ 4-5 s each)
            knn_s = max(calibration.get("knn_s", 0.0), 1.0) * 1.2
            startup = max(calibration.get("ours_startup_s", 30), calibration.get("official_startup_s", 30))
            per_run = (budget - (time.time() - t_start) - 15) / 3
            epochs = int((per_run - startup - 2 * knn_s) // (iters * step_s * 1.1 + knn_s))
            epochs = max(1, min(epochs, s.get("max_epochs", 800)))
            calibration.update({"per_run_budget_s": per_run, "chosen_epochs": epochs})
        warmup = max(1, round(epochs * s["warmup_fraction"])) if epochs > 1 else 0
        log(f"{epochs} epochs ({warmup} warm-up) of {iters} steps, batch {s['batch']}, {n_train} train / {n_test} test")
        primary = (m.primary(), f"kNN top-1 % (k={s['knn_k'][0]})", "kNN on the class token")
    elif b["method"] == "fba-net":
        m = FbaNet(b, s, data, device, work, env)
        lists = [os.path.join(data, f) for f in ("train.list", "test.list")]
        n_train, n_test = (len([x for x in open(f) if x.strip()]) for f in lists)
        iters = 1
        epochs = a.epochs or s["iterations"]  # iterations: the official schedule has no epochs
        warmup = 0
        log(f"{epochs} iterations, {s['labeled']} labelled + {n_train - s['labeled']} unlabelled, {n_test} test")
        primary = ("dice", "test Dice % (sliding window)", "test Dice every 200 iterations from 800")
    else:
        sys.exit(f"run.py knows no method `{b['method']}`")

    result = {
        "method": b["method"], "device": gpu_name, "torch": torch.__version__, "commit": b["commit"],
        "official": b["official"], "tiny": a.tiny, "epochs": epochs, "warmup_epochs": warmup,
        "steps_per_epoch": iters, "settings": s, "data": {"train": n_train, "test": n_test, "source": b["data"]},
        "calibration": calibration, "paper": b.get("paper", {}), "precision": b.get("precision", {}),
        "x_label": m.x_label, "primary": primary[0], "primary_label": primary[1], "primary_title": primary[2],
        "runs": {},
    }
    variants = m.variants(epochs, warmup)
    if not b["official"].get("present", True):
        # a bundle built where the official code could not be fetched (CI): ours only, said once
        log("official code not in this bundle: running ours and our baseline only")
        variants = [v for v in variants if v[0] != "official"]
    deadline = t_start + budget
    for i, (name, label, cmd, read) in enumerate(variants):
        left = deadline - time.time()
        # what is left, shared by this and the remaining runs, with some slack for this one
        share = left / (len(variants) - i)
        # an equal share of what is left: a run that overruns must not starve the next ones
        timeout = share if not a.tiny else 900
        status, wall, gpu = run_cmd(name, cmd, env, timeout, a.out)
        rows = read()
        sps = [r["samples_per_s"] for r in rows if r.get("samples_per_s")]
        result["runs"][name] = {"label": label, "status": status, "wall_s": wall, "epochs": rows,
                                "samples_per_s": statistics.median(sps) if sps else None, **gpu}
        with open(os.path.join(a.out, f"verify-{b['method']}.json"), "w") as f:
            json.dump(result, f, indent=1)
    result["wall_s"] = time.time() - t_start
    path = os.path.join(a.out, f"verify-{b['method']}.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    plot(result, os.path.join(a.out, f"verify-{b['method']}.png"))
    key = result["primary"]
    for name, r in result["runs"].items():
        last = r["epochs"][-1] if r["epochs"] else {}
        log(f"{name:9} {r['status']:10} points {len(r['epochs'])}  {key} {last.get(key)}  "
            f"loss {last.get('loss')}  samples/s {r['samples_per_s']}  util {r['gpu_util_mean_pct']}  "
            f"mem {r['gpu_mem_peak_mib']} MiB")
    log(f"wrote {path} in {result['wall_s']:.0f} s")
    bad = [n for n, r in result["runs"].items() if r["status"] != "ok" or not r["epochs"]]
    if bad:
        sys.exit(f"runs that did not finish: {bad}")


if __name__ == "__main__":
    main()

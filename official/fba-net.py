"""Adapter: runs the OFFICIAL FBA-Net training script (`code/train_3d.py` of cys1102/FBA-Net,
checked out by `cargo xtask official fetch fba-net`, never committed) unchanged, as a script, on an
LA folder in the official layout, and writes one JSON line per iteration / evaluation.

The script runs as it is (`runpy`, `__main__`): its network, losses, sampler, augmentation,
SGD, consistency ramp-up and its own test-Dice evaluation (`utils/test_patch.var_all_case`,
every 200 iterations from 800). What is ours (glue, listed here and nowhere else):
* the working directory: `./data/LA` links to the data folder (the script and `var_all_case`
  read that relative path);
* `args.max_samples` is hard-coded to 80 for LA (the 80 training cases of the full set); with a
  smaller `train.list` the unlabelled indices `range(labelnum, 80)` would point past it, so the
  sampler's unlabelled indices are cut to the cases the list has;
* `tensorboardX.SummaryWriter` is replaced by a writer that records the scalars the script logs
  (loss terms per iteration, test Dice) as JSON lines, with wall-clock time, and a logging
  handler records its per-iteration loss line (the script's own log file is then not written);
* modules the run never calls but the script imports, stubbed only when they are missing:
  `nibabel` (saving predictions), `skimage.measure.label` (largest component, unused by
  `var_all_case`), and `medpy.metric.binary.dc`, replaced by its definition
  `2|A∩B| / (|A| + |B|)` (0 when both are empty) when MedPy is not installed;
* on a machine without CUDA (the `--tiny` checks): `.cuda()` is a no-op.

usage: python fba-net.py --official DIR --data DIR --work DIR --out FILE --iterations N
       [--labeled 4] [--seed 1337]
"""
import argparse
import json
import os
import runpy
import sys
import time
import types


def parse():
    p = argparse.ArgumentParser()
    p.add_argument("--official", required=True)
    p.add_argument("--data", required=True, help="LA folder: train.list, test.list, 2018LA_Seg_Training Set/")
    p.add_argument("--work", required=True, help="working directory (data link, snapshots)")
    p.add_argument("--out", required=True, help="metrics, one JSON line per record")
    p.add_argument("--iterations", type=int, required=True)
    p.add_argument("--labeled", type=int, default=4)
    p.add_argument("--seed", type=int, default=1337)
    return p.parse_args()


def stub_missing():
    import numpy as np
    try:
        import nibabel  # noqa: F401
    except ImportError:
        sys.modules["nibabel"] = types.ModuleType("nibabel")
    try:
        from skimage.measure import label  # noqa: F401
    except ImportError:
        sk = types.ModuleType("skimage")
        meas = types.ModuleType("skimage.measure")

        def label(*a, **k):
            raise RuntimeError("skimage is not installed (stub)")
        meas.label = label
        sk.measure = meas
        sk.transform = types.ModuleType("skimage.transform")
        sys.modules.update({"skimage": sk, "skimage.measure": meas, "skimage.transform": sk.transform})
    try:
        from medpy import metric  # noqa: F401
    except ImportError:
        medpy = types.ModuleType("medpy")
        metric = types.ModuleType("medpy.metric")
        binary = types.ModuleType("medpy.metric.binary")

        def dc(result, reference):  # medpy.metric.binary.dc
            result = np.atleast_1d(result.astype(bool))
            reference = np.atleast_1d(reference.astype(bool))
            size = np.count_nonzero(result) + np.count_nonzero(reference)
            return 2.0 * np.count_nonzero(result & reference) / float(size) if size else 0.0
        binary.dc = dc
        metric.binary = binary
        medpy.metric = metric
        sys.modules.update({"medpy": medpy, "medpy.metric": metric, "medpy.metric.binary": binary})


def main():
    a = parse()
    os.makedirs(os.path.join(a.work, "data"), exist_ok=True)
    link = os.path.join(a.work, "data", "LA")
    if not os.path.exists(link):
        os.symlink(os.path.abspath(a.data), link)
    with open(os.path.join(a.data, "train.list")) as f:
        n_train = len([line for line in f if line.strip()])
    code = os.path.join(os.path.abspath(a.official), "code")
    sys.path.insert(0, code)
    os.chdir(a.work)

    import torch
    cuda = torch.cuda.is_available()
    if not cuda:
        torch.Tensor.cuda = lambda self, *args, **kw: self
        torch.nn.Module.cuda = lambda self, *args, **kw: self
    stub_missing()

    out = open(a.out, "w")
    t0 = time.time()

    class Writer:  # tensorboardX.SummaryWriter, recording what train_3d.py logs
        def __init__(self, *args, **kw):
            pass

        def add_scalar(self, tag, value, step):
            row = {"tag": tag, "iteration": int(step), "value": float(value), "elapsed_s": time.time() - t0}
            out.write(json.dumps(row) + "\n")
            out.flush()

        def add_images(self, *args, **kw):
            pass

        def close(self):
            out.flush()

    import logging
    import re

    class Losses(logging.Handler):  # the per-iteration loss line train_3d.py logs
        pat = re.compile(r"iteration (\d+) : loss : ([-\d.e]+), loss_d: ([-\d.e]+), "
                         r"loss_cosist: ([-\d.e]+), loss_contra: ([-\d.e]+)")

        def emit(self, record):
            m = self.pat.match(record.getMessage())
            if m:
                it, loss, dice, cons, contra = m.groups()
                row = {"tag": "loss", "iteration": int(it), "loss": float(loss), "seg_dice": float(dice),
                       "consistency": float(cons), "contrast": float(contra), "elapsed_s": time.time() - t0}
                out.write(json.dumps(row) + "\n")
                out.flush()
    # the script's basicConfig(level=INFO, filename=...) is then a no-op: set the level here
    logging.getLogger().addHandler(Losses())
    logging.getLogger().setLevel(logging.INFO)

    tbx = types.ModuleType("tensorboardX")
    tbx.SummaryWriter = Writer
    sys.modules["tensorboardX"] = tbx

    import dataloaders.dataset as dataset
    Sampler = dataset.TwoStreamBatchSampler

    class CutSampler(Sampler):  # glue: max_samples = 80 is hard-coded for LA
        def __init__(self, primary, secondary, batch_size, secondary_batch_size):
            super().__init__(primary, [i for i in secondary if i < n_train], batch_size, secondary_batch_size)
    dataset.TwoStreamBatchSampler = CutSampler

    sys.argv = ["train_3d.py", "--dataset_name", "LA", "--root_path", "./", "--exp", "bundle",
                "--max_iteration", str(a.iterations), "--labelnum", str(a.labeled), "--seed", str(a.seed),
                "--gpu", "0"]
    runpy.run_path(os.path.join(code, "train_3d.py"), run_name="__main__")
    out.write(json.dumps({"tag": "done", "iteration": a.iterations, "elapsed_s": time.time() - t0}) + "\n")
    out.close()


if __name__ == "__main__":
    main()

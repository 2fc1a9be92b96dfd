"""Statistics of the OFFICIAL PatchMix views (`module/augmentation.py` TwoCropsTransform of the
checkout `cargo xtask official fetch patchmix` makes: torchvision v1 transforms on PIL images,
PIL's GaussianBlur) on a list of images, several draws each.

argv[3:]: checkout, a text file with one image path per line, draws per image.
Output: `stats` [2 views, n images · draws, 4] = (mean, std, mean |Laplacian|, grayscale flag) of
the un-normalised [0, 1] view (see crates/patchmix/tests/official_views.rs).
"""
import argparse
import random
import sys

import numpy as np
import torch
from PIL import Image

inp, outp, official, listfile, draws = sys.argv[1:6]
draws = int(draws)
sys.path.insert(0, official)
from module.augmentation import TwoCropsTransform  # noqa: E402

args = argparse.Namespace(input_size=32, min_crop=0.1)
tf = TwoCropsTransform(args)
mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
random.seed(0)
torch.manual_seed(0)


def stats(v):
    x = v * std + mean
    lap = (4 * x[:, 1:-1, 1:-1] - x[:, :-2, 1:-1] - x[:, 2:, 1:-1] - x[:, 1:-1, :-2] - x[:, 1:-1, 2:]).abs().mean()
    gray = float((x[0] - x[1]).abs().max() < 1e-3 and (x[1] - x[2]).abs().max() < 1e-3)
    return [float(x.mean()), float(x.std()), float(lap), gray]


out = [[], []]
for path in open(listfile).read().split("\n"):
    if not path:
        continue
    img = Image.open(path).convert("RGB")
    for _ in range(draws):
        for k, v in enumerate(tf(img)):
            out[k].append(stats(v))
np.savez(outp, stats=np.array(out, dtype=np.float32))

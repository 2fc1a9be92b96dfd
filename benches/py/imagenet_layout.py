"""A synthetic ImageNet-layout folder for the start-up check of the ImageNet presets
(`benches/imagenet-start.sh`): `<root>/train/n%08d/*.JPEG` (1,000 classes x 100 files = 100,000)
and `<root>/val/n%08d/*.JPEG` (10 per class). The files are 1,000 distinct baseline JPEGs of
160 x 120 px (smooth colour fields with noise, quality 90), each hard-linked into 110 places, so
the folder costs ~5 MB of disk while the loader sees 110,000 separate paths. Its estimated
decoded size (100,000 x 160 x 120 x 3 B = 5.4 GiB) is above the 4 GiB threshold, so the presets
stream it, as they would ImageNet.

usage: python benches/py/imagenet_layout.py ROOT
"""
import os
import sys

import numpy as np
from PIL import Image

root = sys.argv[1]
done = os.path.join(root, ".done")
if os.path.exists(done):
    print(root)
    raise SystemExit(0)
src = os.path.join(root, "distinct")
os.makedirs(src, exist_ok=True)
rng = np.random.default_rng(0)
y, x = np.mgrid[0:120, 0:160]
files = []
for k in range(1000):
    base = np.stack([(x * (1 + k % 7) + y * (1 + k % 5) + 40 * c + k) % 256 for c in range(3)], -1)
    img = np.clip(base + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)
    p = os.path.join(src, f"{k:04d}.JPEG")
    Image.fromarray(img).save(p, quality=90)
    files.append(p)
for split, per_class in [("train", 100), ("val", 10)]:
    for c in range(1000):
        d = os.path.join(root, split, f"n{c:08d}")
        os.makedirs(d, exist_ok=True)
        for i in range(per_class):
            dst = os.path.join(d, f"n{c:08d}_{i}.JPEG")
            if not os.path.exists(dst):
                os.link(files[(c * 7 + i) % 1000], dst)
open(done, "w").close()
print(root)

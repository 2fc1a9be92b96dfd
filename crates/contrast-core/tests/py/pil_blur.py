"""Reference for `data::pil_blur`: Pillow's own `ImageFilter.GaussianBlur(radius=sigma)` (the
official augmentations call it) on the same 8-bit images. Input: `img` [c, h, w] (values 0..255,
c = 1 or 3); argv[3:]: the sigmas. Output: `out_<i>` [c, h, w] for the i-th sigma.
"""
import sys

import numpy as np
from PIL import Image, ImageFilter

inp = np.load(sys.argv[1])
img = inp["img"].astype(np.uint8)
c = img.shape[0]
pil = Image.fromarray(img[0] if c == 1 else img.transpose(1, 2, 0), "L" if c == 1 else "RGB")
out = {}
for i, s in enumerate(sys.argv[3:]):
    b = np.asarray(pil.filter(ImageFilter.GaussianBlur(radius=float(s))))
    out[f"out_{i}"] = (b[None] if c == 1 else b.transpose(2, 0, 1)).astype(np.float32)
np.savez(sys.argv[2], **out)

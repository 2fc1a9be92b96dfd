"""torchvision reference for tests/data_scaled_decode.rs: the file decoded in full by PIL (as
torchvision's ImageFolder loads it), then `F.resized_crop` of each box to `size` x `size`,
bicubic, antialiased, on the uint8 tensor.

Inputs (npz): `jpeg` uint8 [N] (the file's bytes); `boxes` int64 [K, 4] = (top, left, h, w);
`size` int64 [1]. Outputs: crop_k uint8 [3, size, size].
"""
import io
import sys

import numpy as np
import torch
import torchvision.transforms.functional as F
from PIL import Image
from torchvision.transforms import InterpolationMode

torch.set_num_threads(1)
inp = np.load(sys.argv[1])
img = Image.open(io.BytesIO(inp["jpeg"].tobytes())).convert("RGB")
x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).contiguous()
s = int(inp["size"][0])
out = {}
for k, (top, left, h, w) in enumerate(inp["boxes"].tolist()):
    out[f"crop_{k}"] = F.resized_crop(x, top, left, h, w, [s, s], InterpolationMode.BICUBIC,
                                      antialias=True).numpy()
np.savez(sys.argv[2], **out)

"""torchvision references for contrast_core::data::augment (tests/data_augment.rs).

Inputs (npz): `img` uint8 [H, W, 3]; `boxes` int64 [K, 7] = (top, left, h, w, out_h, out_w,
interp 0=bilinear 1=bicubic); `x` float32 [3, S, S] in [0, 1]; `rrc` float64 [M, 6] =
(height, width, scale0, scale1, ratio0, ratio1) and `draws` int64 [1].
Outputs: crop_u8_k (uint8 tensor path), crop_f_k (float32 path, 0..255, unrounded), one entry
per float op, and per RRC config the mean/std of (top, left, h, w) over `draws` get_params calls.
"""
import sys

import numpy as np
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as F
from torchvision.transforms import InterpolationMode

torch.set_num_threads(1)
inp = np.load(sys.argv[1])
out = {}
img = torch.from_numpy(inp["img"]).permute(2, 0, 1).contiguous()  # [3, H, W] uint8
modes = [InterpolationMode.BILINEAR, InterpolationMode.BICUBIC]
for k, (top, left, h, w, oh, ow, m) in enumerate(inp["boxes"].tolist()):
    out[f"crop_u8_{k}"] = F.resized_crop(img, top, left, h, w, [oh, ow], modes[m], antialias=True).numpy()
    out[f"crop_f_{k}"] = F.resized_crop(img.float(), top, left, h, w, [oh, ow], modes[m], antialias=True).numpy()

# Resize(int) (shorter side, aspect kept) + CenterCrop on uint8, on the image and its transpose.
for k, (rs, cs) in enumerate([(36, 32), (44, 33), (40, 40)]):
    for t, im in [("w", img), ("t", img.transpose(1, 2).contiguous())]:
        v = F.center_crop(F.resize(im, rs, InterpolationMode.BICUBIC, antialias=True), [cs, cs])
        out[f"eval_crop_{t}_{k}"] = v.numpy()

x = torch.from_numpy(inp["x"])
out["hflip"] = F.hflip(x).numpy()
out["gray"] = F.rgb_to_grayscale(x, num_output_channels=3).numpy()
out["solarize"] = F.solarize(x, 128 / 255).numpy()
out["normalize"] = F.normalize(x, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]).numpy()
for f in [0.6, 1.4]:
    out[f"brightness_{f}"] = F.adjust_brightness(x, f).numpy()
    out[f"contrast_{f}"] = F.adjust_contrast(x, f).numpy()
    out[f"saturation_{f}"] = F.adjust_saturation(x, f).numpy()
for f in [-0.45, -0.1, 0.1, 0.25]:
    out[f"hue_{f}"] = F.adjust_hue(x, f).numpy()
for i, (k, s) in enumerate([(3, 0.7), (3, 2.0), (23, 1.8), (9, 0.1)]):
    out[f"blur_{i}"] = F.gaussian_blur(x, [k, k], [s, s]).numpy()

# A composed deterministic view: Resize(24, bicubic) on uint8 -> /255 -> grayscale -> blur
# (k=3, sigma=0.8) -> solarize -> hflip -> normalize.
v = F.resize(img, [24, 24], InterpolationMode.BICUBIC, antialias=True).float() / 255
v = F.rgb_to_grayscale(v, num_output_channels=3)
v = F.gaussian_blur(v, [3, 3], [0.8, 0.8])
v = F.solarize(v, 128 / 255)
v = F.hflip(v)
out["composed"] = F.normalize(v, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]).numpy()

torch.manual_seed(0)
n = int(inp["draws"][0])
for c, (hh, ww, s0, s1, r0, r1) in enumerate(inp["rrc"].tolist()):
    dummy = torch.empty(3, int(hh), int(ww), dtype=torch.uint8)
    boxes = np.array(
        [T.RandomResizedCrop.get_params(dummy, [s0, s1], [r0, r1]) for _ in range(n)], dtype=np.float64
    )
    out[f"rrc_mean_{c}"] = boxes.mean(0)
    out[f"rrc_std_{c}"] = boxes.std(0)
np.savez(sys.argv[2], **out)

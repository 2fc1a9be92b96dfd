"""PyTorch peer of benches/benches/models.rs: forward + backward of ViT-T/2 (timm, MoCo-v3
settings, drop-path 0.1) and torchvision ResNet-18 with the CIFAR stem on 32×32 batches.

    python benches/py/models.py [--batch 64] [--threads 2] [--seconds 5]

Prints images/s per model (median over timed steps after one warm-up step).
"""
import argparse
import statistics
import time
from functools import partial

import torch
import torch.nn as nn
import torchvision
from timm.models.vision_transformer import VisionTransformer

ap = argparse.ArgumentParser()
ap.add_argument("--batch", type=int, default=64)
ap.add_argument("--threads", type=int, default=0)
ap.add_argument("--seconds", type=float, default=5.0)
args = ap.parse_args()
if args.threads > 0:
    torch.set_num_threads(args.threads)
torch.manual_seed(0)

vit = VisionTransformer(img_size=32, patch_size=2, embed_dim=192, depth=12, num_heads=3,
                        mlp_ratio=4, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6),
                        num_classes=0, drop_path_rate=0.1)
r18 = torchvision.models.resnet18()
r18.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
r18.maxpool = nn.Identity()
r18.fc = nn.Identity()

x = torch.randn(args.batch, 3, 32, 32)
for name, model in [(f"vit_tiny_p2_b{args.batch}", vit), (f"resnet18_cifar_b{args.batch}", r18)]:
    model.train()

    def step():
        model.zero_grad(set_to_none=False)
        model(x).square().mean().backward()

    step()  # warm-up
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < args.seconds or len(times) < 3:
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    print(f"{name}: {args.batch / med:.1f} images/s (median step {med * 1000:.0f} ms over "
          f"{len(times)} steps, {torch.get_num_threads()} threads)")

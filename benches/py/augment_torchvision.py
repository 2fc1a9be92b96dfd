"""Peer of benches/benches/augment.rs: the same two-view BYOL/PatchMix asymmetric recipe with
torchvision transforms (v1, on PIL images, as the official PatchMix/BYOL code does) and a
DataLoader with 2 workers; prints images/s (one image = both views).

32 px: the CIFAR-10 JPEG test split decoded once into a uint8 array (like
torchvision.datasets.CIFAR10: Image.fromarray per item). 224 px: RandomResizedCrop(224) from
synthetic 256x256 images. 224 px JPEG: RandomResizedCrop(224) from real photographs decoded per
item (torchvision.datasets.ImageFolder, PIL loader) — 256 JPEGs of ImageNet-like size made by
`make_jpegs` from scikit-image's sample photographs (see there). Blur: PIL's radius-sigma GaussianBlur, sigma in [0.1, 2] (what the
official code and our recipe apply); `--blur torchvision` uses torchvision's fixed-kernel blur
(23 at 224, 3 at 32) instead.

usage: python benches/py/augment_torchvision.py [--seconds 8] [--workers 2] [--only CASE]
       python benches/py/augment_torchvision.py --make-jpegs   (only write the JPEG set)
"""
import argparse
import os
import random
import tarfile
import tempfile
import time

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image, ImageFilter

p = argparse.ArgumentParser()
p.add_argument("--seconds", type=float, default=8.0)
p.add_argument("--workers", type=int, default=2)
p.add_argument("--blur", choices=["torchvision", "pil"], default="pil",
               help="PIL's radius-sigma filter (what the official BYOL/PatchMix code and our recipe "
                    "use) or torchvision's fixed-kernel GaussianBlur")
p.add_argument("--only", default="", help="run only the cases whose name contains this")
p.add_argument("--make-jpegs", action="store_true", help="write the JPEG set and exit")
args = p.parse_args()
# where benches/benches/augment.rs reads the JPEG set (std::env::temp_dir() there)
JPEG_DIR = os.path.join(tempfile.gettempdir(), "contrast-cache", "imagenet-like-jpeg-v1", "train")
LARGE_JPEG_DIR = os.path.join(tempfile.gettempdir(), "contrast-cache", "large-photo-jpeg-v1", "train")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class PilBlur:
    """The official recipes' blur: PIL ImageFilter.GaussianBlur(radius=sigma), sigma ~ U(0.1, 2)."""

    def __call__(self, img):
        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(0.1, 2.0)))


def view(size, blur_p, solarize_p):
    k = max(3, round(size * 0.1)) | 1
    blur = PilBlur() if args.blur == "pil" else T.GaussianBlur(k, sigma=(0.1, 2.0))
    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.08, 1.0), interpolation=T.InterpolationMode.BICUBIC),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2),
        T.RandomApply([blur], p=blur_p),
        T.RandomSolarize(128, p=solarize_p),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(MEAN, STD),
    ])


class TwoViews(torch.utils.data.Dataset):
    def __init__(self, images, size):
        self.images = images
        self.v1, self.v2 = view(size, 1.0, 0.0), view(size, 0.1, 0.2)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        img = Image.fromarray(self.images[i])
        return self.v1(img), self.v2(img), 0


def cifar_test():
    tar = os.path.join(os.path.dirname(__file__), "../../../shared/data/cifar10-jpeg/CIFAR-10-images.tar")
    if not os.path.exists(tar):
        print("synthetic 32x32 images (no CIFAR tar)")
        return np.random.default_rng(0).integers(0, 256, (10000, 32, 32, 3), dtype=np.uint8)
    imgs = []
    with tarfile.open(tar) as tf:
        for m in tf.getmembers():
            if m.name.startswith("test/") and m.name.endswith(".jpg"):
                imgs.append(np.asarray(Image.open(tf.extractfile(m)).convert("RGB")))
    return np.stack(imgs)


def synthetic(n, side):
    y, x = np.mgrid[0:side, 0:side]
    rng = np.random.default_rng(0)
    base = np.stack([(x * 255 // side + y * 3 + c * 50) % 200 for c in range(3)], -1)
    return np.stack([np.clip(base + k * 7 % 200 + rng.integers(0, 64, base.shape), 0, 255).astype(np.uint8) for k in range(n)])


def make_jpegs(root=JPEG_DIR, n=256, seed=0, width=(300, 500)):
    """The real-JPEG set: 256 files in 4 class folders, each a random crop (50-100 % of the area,
    aspect 3:4 to 4:3) of one of scikit-image's nine colour sample photographs (astronaut,
    chelsea, coffee, rocket, hubble_deep_field, immunohistochemistry, retina, the two
    stereo_motorcycle views), resized (PIL bicubic) to ImageNet's typical size (width uniform in
    300-500 px, height/width uniform in 0.7-1.05: mean about 400x350) and saved as baseline JPEG,
    quality 90, 4:2:0. Deterministic for a seed; written once (a `.done` marker). The large set
    (`make_large_jpegs`) is the same recipe at width 1200-2000 px (camera photographs, the tail
    of ImageNet's size distribution), where scaled decoding applies."""
    if os.path.exists(os.path.join(root, ".done")):
        return root
    import skimage.data as d
    left, right, _ = d.stereo_motorcycle()
    photos = [d.astronaut(), d.chelsea(), d.coffee(), d.rocket(), d.hubble_deep_field(),
              d.immunohistochemistry(), d.retina(), left, right]
    rng = random.Random(seed)
    for i in range(n):
        src = Image.fromarray(photos[i % len(photos)][..., :3])
        W, H = src.size
        for _ in range(20):
            area = W * H * rng.uniform(0.5, 1.0)
            ar = rng.uniform(3 / 4, 4 / 3)
            w, h = int(round((area * ar) ** 0.5)), int(round((area / ar) ** 0.5))
            if w <= W and h <= H:
                break
        else:
            w, h = W, H
        x, y = rng.randint(0, W - w), rng.randint(0, H - h)
        tw = rng.randint(*width)
        th = int(round(tw * rng.uniform(0.7, 1.05)))
        img = src.crop((x, y, x + w, y + h)).resize((tw, th), Image.BICUBIC)
        cls = os.path.join(root, f"class{i % 4}")
        os.makedirs(cls, exist_ok=True)
        img.save(os.path.join(cls, f"img{i:04d}.JPEG"), quality=90)
    open(os.path.join(root, ".done"), "w").close()
    return root


def make_large_jpegs():
    return make_jpegs(LARGE_JPEG_DIR, n=64, seed=1, width=(1200, 2000))


class TwoViewsFolder(torch.utils.data.Dataset):
    """ImageFolder (PIL loader: open + convert("RGB") per item) with the two views."""

    def __init__(self, root, size):
        import torchvision.datasets as D
        self.folder = D.ImageFolder(root)
        self.v1, self.v2 = view(size, 1.0, 0.0), view(size, 0.1, 0.2)

    def __len__(self):
        return len(self.folder)

    def __getitem__(self, i):
        img, label = self.folder[i]
        return self.v1(img), self.v2(img), label


def run(name, images, size, batch, dataset=None):
    if args.only and args.only not in name:
        return
    dl = torch.utils.data.DataLoader(
        dataset if dataset is not None else TwoViews(images, size), batch_size=batch, shuffle=True, num_workers=args.workers,
        drop_last=True, persistent_workers=True, prefetch_factor=2,
    )
    it = iter(dl)
    next(it)  # warm up the workers
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < args.seconds:
        try:
            b = next(it)
        except StopIteration:
            it = iter(dl)
            b = next(it)
        n += b[0].shape[0]
    dt = time.perf_counter() - t0
    print(f"torchvision {name} (blur: {args.blur}): {n / dt:.0f} images/s "
          f"({n} images in {dt:.1f} s, {args.workers} workers)")


if __name__ == "__main__":
    if args.make_jpegs:
        print(make_jpegs())
        print(make_large_jpegs())
        raise SystemExit(0)
    torch.set_num_threads(1)
    if not args.only or args.only in "32px_batch256":
        run("32px_batch256", cifar_test(), 32, 256)
    if not args.only or args.only in "224px_from256_batch64":
        run("224px_from256_batch64", synthetic(512, 256), 224, 64)
    if not args.only or args.only in "224px_jpeg_batch64":
        run("224px_jpeg_batch64", None, 224, 64, TwoViewsFolder(make_jpegs(), 224))
    if not args.only or args.only in "224px_jpeg_large_batch16":
        run("224px_jpeg_large_batch16", None, 224, 16, TwoViewsFolder(make_large_jpegs(), 224))

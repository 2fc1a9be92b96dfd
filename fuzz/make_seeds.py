"""Writes the seed inputs of the fuzz targets that Python can make (fuzz/seeds/<target>/):
small valid images, CIFAR / STL-10 records, archives (benign and hostile), manifests, config and
CLAIRES records. The NIfTI, h5 and checkpoint seeds are written by Rust
(`cargo test -p contrast-core --test fuzz_inputs -- --ignored write_seeds`).

Run with the project's venv (Pillow): `.contrast/venv/bin/python fuzz/make_seeds.py`.
Deterministic: the same files on every run."""

import gzip
import io
import json
import os
import random
import shutil
import struct
import tarfile
import zipfile

from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SEEDS = os.path.join(HERE, "seeds")
rng = random.Random(20240524)


def out(target, name, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def noise(n):
    return bytes(rng.randrange(256) for _ in range(n))


# ---- images: as the image-folder loader meets them
def img(mode, size):
    im = Image.new(mode, size)
    px = im.load()
    for y in range(size[1]):
        for x in range(size[0]):
            if mode in ("RGB", "RGBA"):
                px[x, y] = tuple(rng.randrange(256) for _ in range(len(mode)))
            elif mode == "P":
                px[x, y] = rng.randrange(4)
            elif mode == "I;16":
                px[x, y] = rng.randrange(65536)
            else:
                px[x, y] = rng.randrange(256)
    if mode == "P":
        im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])
    return im


def save(im, fmt, **kw):
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


out("image_decode", "rgb.png", save(img("RGB", (8, 6)), "PNG"))
out("image_decode", "gray.png", save(img("L", (5, 7)), "PNG"))
out("image_decode", "palette.png", save(img("P", (6, 6)), "PNG"))
out("image_decode", "rgba-interlaced.png", save(img("RGBA", (9, 4)), "PNG", interlace=1))
out("image_decode", "gray16.png", save(img("I;16", (4, 4)), "PNG"))
out("image_decode", "baseline.jpg", save(img("RGB", (16, 8)), "JPEG", quality=80))
out("image_decode", "progressive.jpg", save(img("RGB", (17, 9)), "JPEG", progressive=True))
out("image_decode", "gray.jpg", save(img("L", (8, 8)), "JPEG"))
out("image_decode", "subsampled.jpg", save(img("RGB", (24, 16)), "JPEG", subsampling=2))

# ---- CIFAR: two CIFAR-10 records; one CIFAR-100 record (coarse, fine)
out("cifar", "cifar10-2.bin", bytes([3]) + noise(3072) + bytes([9]) + noise(3072))
out("cifar", "cifar100-1.bin", bytes([4, 57]) + noise(3072))

# ---- STL-10: one image record; a label file
out("stl10", "train_X-1.bin", noise(3 * 96 * 96))
out("stl10", "train_y.bin", bytes([1, 10, 5, 3]))


# ---- archives
def tar_bytes(entries, fmt=tarfile.GNU_FORMAT):
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w", format=fmt) as t:
        for e in entries:
            ti = tarfile.TarInfo(e["name"])
            ti.mtime = 0
            ti.mode = 0o644
            kind = e.get("kind", "file")
            if kind == "file":
                data = e["data"]
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
            elif kind == "dir":
                ti.type = tarfile.DIRTYPE
                ti.mode = 0o755
                t.addfile(ti)
            elif kind == "symlink":
                ti.type = tarfile.SYMTYPE
                ti.linkname = e["target"]
                t.addfile(ti)
            elif kind == "hardlink":
                ti.type = tarfile.LNKTYPE
                ti.linkname = e["target"]
                t.addfile(ti)
            elif kind == "fifo":
                ti.type = tarfile.FIFOTYPE
                t.addfile(ti)
    return b.getvalue()


benign = [
    {"name": "cifar-10-batches-bin", "kind": "dir"},
    {"name": "cifar-10-batches-bin/batches.meta.txt", "data": b"airplane\nautomobile\n"},
    {"name": "cifar-10-batches-bin/data_batch_1.bin", "data": noise(300)},
]
archives = {
    "benign.tar": tar_bytes(benign),
    "benign-pax.tar": tar_bytes(benign + [{"name": "a/" + "long" * 40 + ".txt", "data": b"x"}], tarfile.PAX_FORMAT),
    "symlink-out.tar": tar_bytes([{"name": "link", "kind": "symlink", "target": "/etc"}, {"name": "link/passwd", "data": b"x"}]),
    "symlink-rel.tar": tar_bytes([{"name": "up", "kind": "symlink", "target": "../other"}, {"name": "up/canary", "data": b"pwned"}]),
    "hardlink-out.tar": tar_bytes([{"name": "h", "kind": "hardlink", "target": "../other/canary"}]),
    "fifo.tar": tar_bytes([{"name": "f", "kind": "fifo"}]),
    "dotdot.tar": tar_bytes([{"name": "../escape.txt", "data": b"evil"}]),
    "absolute.tar": tar_bytes([{"name": "/tmp/contrast-fuzz-absolute.txt", "data": b"evil"}]),
}
# the two link archives extracted a link before the fix: they are regression inputs of `tar`
REGRESSION = {"symlink-out.tar": "symlink-to-etc.tar", "symlink-rel.tar": "symlink-to-sibling.tar"}
for name, data in archives.items():
    if name in REGRESSION:
        d = os.path.join(HERE, "regressions", "tar")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, REGRESSION[name]), "wb") as f:
            f.write(data)
    else:
        out("tar", name, data)
    out("tar_gz", name, data)  # the tar_gz target gzips its input first
    # and as real .tar.gz, passed through as is (first byte 0xff)
    out("tar_gz", name + ".gz.raw", b"\xff" + gzip.compress(data, mtime=0))


def zip_bytes(entries):
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data, attr in entries:
            zi = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            zi.compress_type = zipfile.ZIP_DEFLATED
            if attr is not None:
                zi.external_attr = attr << 16
            z.writestr(zi, data)
    return b.getvalue()


out("zip", "benign.zip", zip_bytes([("images/", b"", 0o40755), ("images/a.png", noise(64), None), ("train.json", b"[]", None)]))
out("zip", "dotdot.zip", zip_bytes([("../escape.txt", b"evil", None)]))
out("zip", "absolute.zip", zip_bytes([("/tmp/contrast-fuzz-absolute.txt", b"evil", None)]))
out("zip", "symlink.zip", zip_bytes([("link", b"/etc", 0o120777), ("link/passwd", b"x", None)]))
out("zip", "zeros.zip", zip_bytes([("zeros.bin", bytes(1 << 16), None)]))

# ---- manifests: the shipped ones
ds = os.path.join(REPO, "datasets")
for f in sorted(os.listdir(ds)):
    if f.endswith(".toml"):
        out("manifest", f, open(os.path.join(ds, f), "rb").read())

# ---- config: the toy preset, then `--set` overrides after a NUL byte
toy = open(os.path.join(REPO, "crates/contrast-core/configs/toy.toml"), "rb").read()
out("config_toml", "toy.toml", toy)
out("config_toml", "toy-overrides", toy + b"\0steps=3\nruntime.seed=7\nlog.checkpoint_every=0\nlr=1e-3\n")
out("config_toml", "overrides-only", b"\0runtime.device=cpu\nbatch=4\n")

# ---- CLAIRES records
rows = [
    {"image": "images/a.jpg", "id": "a", "modality": "CT", "plane": "axial", "organ": "head", "findings": "hemorrhage"},
    {"image": "/abs/b.png", "sex": "female", "age_band": "40-49", "diagnosis": "periodontitis stage III"},
]
out("claires_json", "manifest.json", json.dumps(rows, indent=1).encode())
out("claires_csv", "manifest.csv", b'image,id,modality,organ,findings\nimages/a.jpg,a,CT,head,"mass, edema"\nimages/b.jpg,,"X-ray",chest,""\n')
out("claires_csv", "bom.csv", b'\xef\xbb\xbfimage,plane\n"q""uoted.jpg",PA\n')
qas = [
    {"qid": 1, "image_name": "synpic100.jpg", "image_organ": "CHEST", "answer": "Yes", "answer_type": "CLOSED", "question_type": "PRES", "question": "Is there a pneumothorax on this x-ray?", "phrase_type": "freeform"},
    {"qid": 2, "image_name": "synpic100.jpg", "image_organ": "CHEST", "answer": "x-ray", "answer_type": "OPEN", "question_type": "MODALITY", "question": "What imaging modality is this?", "phrase_type": "freeform"},
    {"qid": 3, "image_name": "synpic200.jpg", "image_organ": "HEAD", "answer": 2, "answer_type": "OPEN", "question_type": "COUNT", "question": "How many lesions on this MRI?", "phrase_type": "para"},
    {"qid": 4, "image_name": "synpic300.jpeg", "image_organ": "ABD", "answer": "No", "answer_type": "CLOSED", "question_type": "ABN", "question": "Is this image normal?", "phrase_type": "freeform"},
]
out("vqa_rad", "trainset.json", json.dumps(qas, indent=1).encode())
print("seeds written to", SEEDS)

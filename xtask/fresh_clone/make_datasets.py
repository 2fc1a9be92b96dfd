"""Small data sets in the official formats, for `cargo xtask fresh-clone` (served from 127.0.0.1).

Usage: python make_datasets.py OUT

Writes OUT/<name>/<file> for every data set a smoke preset downloads on a machine without the
development copy, each in the layout of its manifest in datasets/ (same paths, same formats, far
fewer and smaller items). Pixels are synthetic and deterministic (seeded), never real data.
"""
import io
import json
import os
import sys
import tarfile

import h5py
import numpy as np
from PIL import Image

rng = np.random.default_rng(0)
out = sys.argv[1]


def write(path, data):
    path = os.path.join(out, path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


# CIFAR-10 binary version: cifar-10-binary.tar.gz holding cifar-10-batches-bin/ with
# data_batch_1..5.bin and test_batch.bin (records of 1 label byte + 3072 bytes, R then G then B
# planes, row-major) and batches.meta.txt. 100 records per file (10 per class): a bright square
# in a class-dependent place on noise, so a few steps see learnable images.
def cifar_file(n, seed):
    r = np.random.default_rng(seed)
    recs = []
    for i in range(n):
        c = i % 10
        img = r.integers(0, 96, size=(3, 32, 32), dtype=np.uint8)
        y, x = (c // 4) * 10, (c % 4) * 8
        img[c % 3, y:y + 10, x:x + 8] = 230
        recs.append(bytes([c]) + img.tobytes())
    return b"".join(recs)


buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w:gz") as tar:
    files = {f"data_batch_{k}.bin": cifar_file(100, k) for k in range(1, 6)}
    files["test_batch.bin"] = cifar_file(100, 99)
    files["batches.meta.txt"] = "\n".join(
        ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck", ""]
    ).encode()
    for name, data in files.items():
        info = tarfile.TarInfo("cifar-10-batches-bin/" + name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
write("cifar10/cifar-10-binary.tar.gz", buf.getvalue())


# LA heart, UA-MT preprocessing: `2018LA_Seg_Training Set/<ID>/mri_norm2.h5` with `image`
# (float32, z-scored, axes x y z) and `label` (uint8 0/1), train.list / test.list of ids. 14 train
# and 4 test cases of 40x40x36 voxels, an ellipsoid "atrium" brighter than the background.
def la_case(seed):
    r = np.random.default_rng(seed)
    shape = (40, 40, 36)
    g = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).astype(np.float32)
    c = np.array([20, 20, 18]) + r.integers(-4, 5, size=3)
    lab = (((g - c) / np.array([9.0, 7.0, 6.0])) ** 2).sum(-1) < 1.0
    img = r.normal(0, 1, size=shape).astype(np.float32) + 2.5 * lab
    img = (img - img.mean()) / img.std()
    return img.astype(np.float32), lab.astype(np.uint8)


ids = [f"FIXTURE{k:02d}CASE" for k in range(18)]
for k, cid in enumerate(ids):
    img, lab = la_case(k)
    p = os.path.join(out, "la-heart", "2018LA_Seg_Training Set", cid, "mri_norm2.h5")
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with h5py.File(p, "w") as f:
        f.create_dataset("image", data=img, compression="gzip")
        f.create_dataset("label", data=lab, compression="gzip")
write("la-heart/train.list", ("\n".join(ids[:14]) + "\n").encode())
write("la-heart/test.list", ("\n".join(ids[14:]) + "\n").encode())


# VQA-RAD in MEVF's split: images/synpicN.jpg, trainset.json / testset.json records with qid,
# image_name, image_organ, answer, answer_type, question_type, question, phrase_type.
organs = ["HEAD", "CHEST", "ABD"]
records = []
for k in range(12):
    name = f"synpic{1000 + k}.jpg"
    organ = organs[k % 3]
    a = rng.integers(0, 256, size=(64, 64), dtype=np.uint8)
    a[8 + (k % 3) * 16: 24 + (k % 3) * 16, 8:56] = 250
    b = io.BytesIO()
    Image.fromarray(a, "L").convert("RGB").save(b, format="JPEG", quality=90)
    write(f"vqa-rad/images/{name}", b.getvalue())
    for j, (q, ans, at, qt) in enumerate([
        (f"Is this an image of the {organ.lower()}?", "Yes", "CLOSED", "ORGAN"),
        ("What imaging modality was used?", ["CT", "MRI", "X-ray"][k % 3], "OPEN", "MODALITY"),
    ]):
        records.append({
            "qid": len(records) + 1, "image_name": name, "image_organ": organ, "answer": ans,
            "answer_type": at, "question_type": qt, "question": q, "phrase_type": "freeform",
        })
test = [r for r in records if r["qid"] % 5 == 0]
train = [r for r in records if r["qid"] % 5 != 0]
write("vqa-rad/trainset.json", json.dumps(train, indent=1).encode())
write("vqa-rad/testset.json", json.dumps(test, indent=1).encode())


# Dubai aerial tiles: `Semantic segmentation dataset/Tile N/images/image_part_00K.jpg` with RGB
# masks `masks/image_part_00K.png` in the published colours, and classes.json. Tiles 1 and 8
# (the manifest's layout check names both), 2 scenes each, 96x96 px.
colours = ["#3C1098", "#8429F6", "#6EC1E4", "#FEDD3A", "#E2A929", "#9B9B9B"]
names = ["Building", "Land", "Road", "Vegetation", "Water", "Unlabeled"]
base = "dubai-aerial/Semantic segmentation dataset"
write(f"{base}/classes.json", json.dumps(
    {"classes": [{"title": n, "color": c} for n, c in zip(names, colours)]}, indent=1).encode())
rgb = [tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)) for c in colours]
for tile in (1, 8):
    for part in (1, 2):
        cls = rng.integers(0, 6, size=(6, 6))
        m = np.kron(cls, np.ones((16, 16), dtype=np.int64))
        mask = np.array(rgb, dtype=np.uint8)[m]
        img = np.clip(mask.astype(np.int32) // 2 + rng.integers(0, 60, size=mask.shape), 0, 255)
        b = io.BytesIO()
        Image.fromarray(img.astype(np.uint8)).save(b, format="JPEG", quality=90)
        write(f"{base}/Tile {tile}/images/image_part_00{part}.jpg", b.getvalue())
        b = io.BytesIO()
        Image.fromarray(mask).save(b, format="PNG")
        write(f"{base}/Tile {tile}/masks/image_part_00{part}.png", b.getvalue())
print("fixtures written to", out)

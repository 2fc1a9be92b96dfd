"""Our own restatement (no official code: medpy is not installed; its semantics via scipy) for the 3D volume floor (volume, eval::segmentation).

* medpy.metric.binary dc / jc / hd95 / asd re-implemented exactly like medpy 0.5
  (__surface_distances: border = X ^ binary_erosion(X, generate_binary_structure(3, 1)),
  distances = distance_transform_edt(~border_ref, sampling=spacing)[border_x]; hd95 = percentile of
  both directions pooled; asd = mean of result -> reference), for cases p{i}, g{i}, s{i} (spacing).
* np.rot90(v, k, axes=(0, 1)) and np.flip(v, axis) of `vol`.
* NIfTI-1 decoded independently with gzip + numpy (header fields at their byte offsets,
  column-major voxels, scl_slope/scl_inter) for the files given on the command line.
"""
import gzip
import struct
import sys

import numpy as np
from scipy.ndimage import binary_erosion, distance_transform_edt, generate_binary_structure

inp = np.load(sys.argv[1])
out = {}


def surface_distances(result, reference, spacing):
    result = result.astype(bool)
    reference = reference.astype(bool)
    fp = generate_binary_structure(result.ndim, 1)
    rb = result ^ binary_erosion(result, structure=fp, iterations=1)
    gb = reference ^ binary_erosion(reference, structure=fp, iterations=1)
    dt = distance_transform_edt(~gb, sampling=spacing)
    return dt[rb]


i = 0
while f"p{i}" in inp.files:
    p, g, s = inp[f"p{i}"].astype(bool), inp[f"g{i}"].astype(bool), inp[f"s{i}"].astype(np.float64)
    inter = np.count_nonzero(p & g)
    dc = 2.0 * inter / float(np.count_nonzero(p) + np.count_nonzero(g))
    jc = inter / float(np.count_nonzero(p | g))
    hd1 = surface_distances(p, g, s)
    hd2 = surface_distances(g, p, s)
    hd95 = np.percentile(np.hstack((hd1, hd2)), 95)
    asd = hd1.mean()
    out[f"m{i}"] = np.array([dc, jc, hd95, asd], dtype=np.float64)
    i += 1

vol = inp["vol"]
for k in range(4):
    out[f"rot{k}"] = np.ascontiguousarray(np.rot90(vol, k, axes=(0, 1)))
for a in range(3):
    out[f"flip{a}"] = np.ascontiguousarray(np.flip(vol, a))

dtypes = {2: np.uint8, 4: np.int16, 8: np.int32, 16: np.float32, 64: np.float64, 512: np.uint16}
for j, path in enumerate(sys.argv[3:]):
    raw = gzip.open(path).read() if path.endswith(".gz") else open(path, "rb").read()
    endian = "<" if struct.unpack("<i", raw[:4])[0] == 348 else ">"
    dim = struct.unpack(endian + "8h", raw[40:56])
    datatype = struct.unpack(endian + "h", raw[70:72])[0]
    vox_offset = int(struct.unpack(endian + "f", raw[108:112])[0])
    slope, inter = struct.unpack(endian + "2f", raw[112:120])
    shape = dim[1 : 1 + dim[0]]
    n = int(np.prod(shape))
    dt = np.dtype(dtypes[datatype]).newbyteorder(endian)
    data = np.frombuffer(raw, dtype=dt, count=n, offset=vox_offset).reshape(shape, order="F")
    data = data.astype(np.float64)
    if slope != 0:
        data = data * slope + inter
    out[f"nii{j}"] = np.ascontiguousarray(data.astype(np.float32))

np.savez(sys.argv[2], **out)

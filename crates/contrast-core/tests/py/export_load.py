"""Load our exported backbones the way a user would: run the Python snippet of each export's
JSON (timm VisionTransformer / torchvision ResNet, `load_state_dict(strict=True)`), then embed
the same input. Self-written glue; the models are timm's and torchvision's own classes.

usage: export_load.py in.npz out.npz <export dir>...
"""
import json
import os
import sys

import numpy as np
import torch


def main():
    inp, out, dirs = sys.argv[1], sys.argv[2], sys.argv[3:]
    data = np.load(inp)
    res = {}
    for d in dirs:
        meta = json.load(open(os.path.join(d, "backbone.json")))
        cwd = os.getcwd()
        os.chdir(d)
        scope = {}
        try:
            exec(meta["python"], scope)  # builds `m` and loads the state dict strictly
        finally:
            os.chdir(cwd)
        m = scope["m"]
        name = os.path.basename(d.rstrip("/"))
        x = torch.from_numpy(data[f"x_{name}"])
        with torch.no_grad():
            res[f"feat_{name}"] = m(x).numpy()
    np.savez(out, **res)


if __name__ == "__main__":
    main()

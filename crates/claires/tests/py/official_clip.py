"""CLAIRES's objective and training step against the OFFICIAL open_clip (mlfoundations/open_clip
v3.3.0, checked out by `cargo xtask official fetch open-clip` into `.official/open-clip`): its
`ClipLoss` (`src/open_clip/loss.py`) is imported from the checkout; what open_clip's model and
training loop do around it is restated, each line ending with `# <file>:<line> <official line>`,
and this script stops unless the checkout reads so at those lines.

Modes (argv[3] is the checkout, argv[4] the mode):
* `loss`: inputs `img` [B, D], `txt` [B, D] (projected, not normalised), `logit_scale` [] (the
  log-scale parameter); the model's normalisation and `logit_scale.exp()`, then `ClipLoss`.
  Outputs `loss`, `g_img`, `g_txt`, `g_scale`.
* `steps embed_dim lr_head lr_image wd steps`: N training steps of CLAIRES's network. NOT
  official (CLAIRES has no code): torchvision's ResNet-18 (no fc) as the image encoder and the
  projection head of the OpenAI-CLIP tutorial that CLAIRES follows (`image_proj`, `text_proj`:
  Linear, GELU, Linear, dropout (off here), residual, LayerNorm), loaded with our weights; the
  text encoder is frozen, so its sentence features are inputs (ours, from the pretrained
  MiniLM); PyTorch's AdamW with our parameter groups (heads decayed; image encoder at its own
  lr; logit scale at the heads' lr, not decayed). Official: the normalisation and the scale
  (`model.py`), the loss (`ClipLoss`), the step's order and the logit-scale clamp (`train.py`).
  Inputs: `w.<name>` (our initial variables, trained ones), `x_k` [B, 3, S, S] and `t_k`
  [B, 384] per step. Outputs: `loss_k`, `scale_k` (the exp(logit_scale) the step used),
  `g1.<name>` (step-1 gradients), `w.<name>` after the steps.
"""
import math
import os
import re
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

inp, outp, official, mode = sys.argv[1:5]
sys.path.insert(0, os.path.join(official, "src"))
from open_clip.loss import ClipLoss  # noqa: E402  (official, from the checkout)
import open_clip  # noqa: E402

if not os.path.abspath(open_clip.__file__).startswith(os.path.abspath(official)):
    sys.exit(f"open_clip was imported from {open_clip.__file__}, not from the checkout {official}")


def check_citations():
    """Each `# file:line text` comment of this script must be line `line` of `src/file`."""
    me = open(os.path.abspath(__file__), encoding="utf-8").read().splitlines()
    cited = 0
    for i, line in enumerate(me, 1):
        m = re.search(r"#\s(open_clip(?:_train)?/[a-z_]+\.py):(\d+) (.+)$", line)
        if not m:
            continue
        path, n, text = m.group(1), int(m.group(2)), m.group(3).strip()
        src = open(os.path.join(official, "src", path), encoding="utf-8").read().splitlines()
        got = src[n - 1].strip() if n <= len(src) else "<past the end>"
        if got != text:
            sys.exit(f"official_clip.py:{i} cites {path}:{n} as `{text}` but the checkout reads `{got}`")
        cited += 1
    if cited < 6:
        sys.exit(f"only {cited} citations found")


check_citations()
loss = ClipLoss()
d = np.load(inp)
out = {}


def model_out(image_embeds, text_embeds, logit_scale):
    """CLIP.forward with output_dict: normalised features and the exponentiated scale."""
    image_features = F.normalize(image_embeds, dim=-1)  # open_clip/model.py:328 return F.normalize(features, dim=-1) if normalize else features
    text_features = F.normalize(text_embeds, dim=-1)  # open_clip/model.py:345 return F.normalize(x, dim=-1) if normalize else x
    return {
        "image_features": image_features,
        "text_features": text_features,
        "logit_scale": logit_scale.exp(),  # open_clip/model.py:471 "logit_scale": self.logit_scale.exp()
    }


if mode == "loss":
    img = torch.from_numpy(d["img"]).requires_grad_(True)
    txt = torch.from_numpy(d["txt"]).requires_grad_(True)
    scale = torch.from_numpy(d["logit_scale"]).requires_grad_(True)
    losses = loss(**model_out(img, txt, scale), output_dict=True)  # open_clip_train/train.py:107 losses = loss(**model_out, output_dict=True)
    total_loss = sum(losses.values())  # open_clip_train/train.py:109 total_loss = sum(losses.values())
    total_loss.backward()
    out["loss"] = total_loss.detach().numpy().reshape(1)
    out["g_img"] = img.grad.numpy()
    out["g_txt"] = txt.grad.numpy()
    out["g_scale"] = scale.grad.numpy().reshape(1)
elif mode == "steps":
    import torchvision

    embed_dim, lr_head, lr_image, wd, steps = sys.argv[5:10]
    embed_dim, steps = int(embed_dim), int(steps)
    lr_head, lr_image, wd = float(lr_head), float(lr_image), float(wd)

    class ProjectionHead(nn.Module):
        """The OpenAI-CLIP tutorial's head as CLAIRES uses it (not official), dropout off."""

        def __init__(self, d_in, d):
            super().__init__()
            self.projection = nn.Linear(d_in, d)
            self.fc = nn.Linear(d, d)
            self.layer_norm = nn.LayerNorm(d)

        def forward(self, x):
            p = self.projection(x)
            return self.layer_norm(self.fc(F.gelu(p)) + p)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.image = torchvision.models.resnet18()
            self.image.fc = nn.Identity()
            self.image_proj = ProjectionHead(512, embed_dim)
            self.text_proj = ProjectionHead(384, embed_dim)
            self.loss = nn.Module()
            self.loss.logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / 0.07))

    net = Net()
    state = {k[2:]: torch.from_numpy(d[k]) for k in d.files if k.startswith("w.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        sys.exit(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    net.train()
    named = dict(net.named_parameters())
    head = [p for n, p in sorted(named.items()) if n.startswith(("image_proj.", "text_proj."))]
    image = [p for n, p in sorted(named.items()) if n.startswith("image.")]
    optimizer = torch.optim.AdamW(
        [
            {"params": head, "weight_decay": wd, "lr": lr_head},
            {"params": image, "weight_decay": 0.0, "lr": lr_image},
            {"params": [net.loss.logit_scale], "weight_decay": 0.0, "lr": lr_head},
        ],
        betas=(0.9, 0.999),
        eps=1e-8,
    )
    for k in range(steps):
        x = torch.from_numpy(d[f"x_{k}"])
        t = torch.from_numpy(d[f"t_{k}"])
        optimizer.zero_grad()  # open_clip_train/train.py:97 optimizer.zero_grad()
        mo = model_out(net.image_proj(net.image(x)), net.text_proj(t), net.loss.logit_scale)
        losses = loss(**mo, output_dict=True)  # open_clip_train/train.py:107 losses = loss(**model_out, output_dict=True)
        total_loss = sum(losses.values())  # open_clip_train/train.py:109 total_loss = sum(losses.values())
        total_loss.backward()  # open_clip_train/train.py:112 backward(total_loss, scaler)
        if k == 0:
            for name, p in net.named_parameters():
                out["g1." + name] = p.grad.numpy().copy()
        optimizer.step()  # open_clip_train/train.py:181 optimizer.step()
        with torch.no_grad():
            net.loss.logit_scale.clamp_(0, math.log(100))  # open_clip_train/train.py:189 unwrap_model(model).logit_scale.clamp_(0, math.log(100))
        out[f"loss_{k}"] = total_loss.detach().numpy().reshape(1)
        out[f"scale_{k}"] = mo["logit_scale"].detach().numpy().reshape(1)
    for name, t in net.state_dict().items():
        if not name.endswith("num_batches_tracked"):
            out["w." + name] = t.numpy().astype(np.float32)
else:
    sys.exit(f"unknown mode {mode}")
np.savez(outp, **out)

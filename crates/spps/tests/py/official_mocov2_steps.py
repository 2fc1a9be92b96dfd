"""N training steps of the OFFICIAL MoCo v2 (facebookresearch/moco, checked out by `cargo xtask
official fetch moco` into `.official/moco`; not ours) on our initial weights, queue and views:
`moco.builder.MoCo(..., mlp=True)` trained by `main_moco.py`'s own `train()` one epoch at a time,
its `adjust_learning_rate` (with `--cos`) before each epoch, its criterion and its SGD
(momentum, weight decay). What the official code draws itself: the shuffle-BN permutation of
each step (one process: a permutation of the batch, which leaves batch-norm statistics as they
are up to the order of the sum).

Glue (not official): the pinned `main_moco.py` imports its modules under Meta's internal path
`deeplearning.cross_image_ssl.moco`, aliased here to the checkout's `moco` package; a
one-process gloo group (the builder all-gathers keys and broadcasts the shuffle); `.cuda()` is a
no-op without CUDA; the base encoder is torchvision's ResNet with BasicBlocks and `layers`
blocks per stage (ResNet-18 is [2, 2, 2, 2]; the builder calls `base_encoder(num_classes=dim)`),
with the CIFAR stem when asked;
the criterion records each step's loss, and the optimiser's `step` records the lr of each step
and the gradients of the first; the meters' `accuracy` (see below).

Inputs (npz): `w.<name>` for every variable of our query and key encoders and `queue` [dim, K]
(official names and layout); `xq_k`, `xk_k` the views of step k. argv[3:]: checkout, dim, K, m,
T, lr, wd, steps, epochs, per_epoch, layers ("1,1,1,1"), stem (cifar | imagenet).
Outputs: `loss_k`, `lr_k` per step; `g1.<name>` (gradients of step 1); `w.<name>` after the steps
(queue included).
"""
import argparse
import os
import sys
import types

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torchvision

inp, outp = sys.argv[1], sys.argv[2]
official, dim, K, m, T, lr, wd, steps, epochs, per_epoch, layers, stem = sys.argv[3:15]
dim, K, steps, epochs, per_epoch = int(dim), int(K), int(steps), int(epochs), int(per_epoch)
m, T, lr, wd = float(m), float(T), float(lr), float(wd)
layers = [int(v) for v in layers.split(",")]
sys.path.insert(0, official)
if not torch.cuda.is_available():
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
import moco.builder  # noqa: E402
import moco.loader  # noqa: E402

for name, mod in [
    ("deeplearning", types.ModuleType("deeplearning")),
    ("deeplearning.cross_image_ssl", types.ModuleType("deeplearning.cross_image_ssl")),
    ("deeplearning.cross_image_ssl.moco", moco),
    ("deeplearning.cross_image_ssl.moco.builder", moco.builder),
    ("deeplearning.cross_image_ssl.moco.loader", moco.loader),
]:
    sys.modules[name] = mod
sys.modules["deeplearning"].cross_image_ssl = sys.modules["deeplearning.cross_image_ssl"]
sys.modules["deeplearning.cross_image_ssl"].moco = moco
import main_moco  # noqa: E402

# glue: the meters' `accuracy` calls `.view(-1)` on a non-contiguous slice, which current
# PyTorch refuses; it only feeds the printed Acc@1/Acc@5 meters (nothing of the step), so it is
# replaced by zeros
main_moco.accuracy = lambda output, target, topk=(1,): [torch.zeros(1) for _ in topk]

if not dist.is_initialized():
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(21000 + os.getpid() % 20000))
    dist.init_process_group("gloo", rank=0, world_size=1)

d = np.load(inp)


def base_encoder(num_classes):
    """Glue: torchvision's ResNet with `layers` BasicBlocks per stage; with the CIFAR stem (what
    the CIFAR ports of MoCo use, and ours' `Stem::Cifar`) its first conv is 3×3 / 1 and there is
    no max-pool."""
    net = torchvision.models.resnet.ResNet(
        torchvision.models.resnet.BasicBlock, layers, num_classes=num_classes
    )
    if stem == "cifar":
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    return net


model = moco.builder.MoCo(base_encoder, dim, K, m, T, mlp=True)
state = {k[2:]: torch.from_numpy(d[k]) for k in d.files if k.startswith("w.")}
state["queue"] = torch.from_numpy(d["queue"])
state["queue_ptr"] = torch.zeros(1, dtype=torch.long)
missing, unexpected = model.load_state_dict(state, strict=False)
missing = [k for k in missing if not k.endswith("num_batches_tracked")]
if missing or unexpected:
    sys.exit(f"state dict mismatch: missing {missing}, unexpected {unexpected}")

out = {}
losses = []


class RecordingCrossEntropy(nn.CrossEntropyLoss):
    """main_moco.py's `nn.CrossEntropyLoss()`, recording each step's value."""

    def forward(self, output, target):
        loss = super().forward(output, target)
        losses.append(loss.item())
        return loss


criterion = RecordingCrossEntropy()
# main_moco.py: torch.optim.SGD(model.parameters(), args.lr, momentum=args.momentum,
# weight_decay=args.weight_decay)
optimizer = torch.optim.SGD(model.parameters(), lr, momentum=0.9, weight_decay=wd)
lrs = []
official_step = optimizer.step


def recording_step(*a, **k):
    if not lrs:
        for name, p in model.named_parameters():
            if p.grad is not None:
                out["g1." + name] = p.grad.numpy().copy()
    lrs.append(optimizer.param_groups[0]["lr"])
    return official_step(*a, **k)


optimizer.step = recording_step
args = argparse.Namespace(lr=lr, cos=True, epochs=epochs, schedule=[], gpu=None, print_freq=10**9)
batches = [
    ([torch.from_numpy(d[f"xq_{k}"]), torch.from_numpy(d[f"xk_{k}"])], None) for k in range(steps)
]
for epoch in range(epochs):  # main_moco.py main_worker
    loader = batches[epoch * per_epoch:(epoch + 1) * per_epoch]
    if not loader:
        break
    main_moco.adjust_learning_rate(optimizer, epoch, args)
    main_moco.train(loader, model, criterion, optimizer, epoch, args)
if len(losses) != steps:
    sys.exit(f"{len(losses)} steps ran, {steps} asked")
for k in range(steps):
    out[f"loss_{k}"] = np.array([losses[k]], dtype=np.float64)
    out[f"lr_{k}"] = np.array([lrs[k]], dtype=np.float64)
for name, t in model.state_dict().items():
    if not name.endswith("num_batches_tracked") and name != "queue_ptr":
        out["w." + name] = t.numpy().astype(np.float32)
np.savez(outp, **out)

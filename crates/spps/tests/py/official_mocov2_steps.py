"""N training steps of the OFFICIAL MoCo v2 (facebookresearch/moco, checked out by `cargo xtask
official fetch moco` into `.official/moco`; not ours) on our initial weights, queue and views:
`moco.builder.MoCo(..., mlp=True)` trained by `main_moco.py`'s own `train()` one epoch at a time,
its `adjust_learning_rate` (with `--cos`) before each epoch, its criterion and its SGD
(momentum, weight decay), the model wrapped in `DistributedDataParallel` as `main_worker` wraps it
(CPU: no `device_ids`). What the official code draws itself: the shuffle-BN permutation of
each step (one process: a permutation of the batch, which leaves batch-norm statistics as they
are up to the order of the sum), unless the inputs hold ours (`perm_k`, see below).

Several ranks (`world` > 1): `world` processes (forked, a gloo group on 127.0.0.1, one per rank
as `main_moco.py` spawns one per GPU), each training on its own rows of every step's global
batch; `torch.randperm` returns our recorded shuffle-BN permutation of the step (`perm_k`), which
the official `_batch_shuffle_ddp` draws and broadcasts from rank 0.

Glue (not official): the pinned `main_moco.py` imports its modules under Meta's internal path
`deeplearning.cross_image_ssl.moco`, aliased here to the checkout's `moco` package; a
one-process gloo group (the builder all-gathers keys and broadcasts the shuffle); `.cuda()` is a
no-op without CUDA; the base encoder is torchvision's ResNet with BasicBlocks and `layers`
blocks per stage (ResNet-18 is [2, 2, 2, 2]; the builder calls `base_encoder(num_classes=dim)`),
with the CIFAR stem when asked;
the criterion records each step's loss, and the optimiser's `step` records the lr of each step
and the gradients of the first; the meters' `accuracy` (see below).

Inputs (npz): `w.<name>` for every variable of our query and key encoders and `queue` [dim, K]
(official names and layout); `xq_k`, `xk_k` the views of step k (rank r > 0: `xq_k.r<r>`,
`xk_k.r<r>`); optionally `perm_k`. argv[3:]: checkout, dim, K, m, T, lr, wd, steps, epochs,
per_epoch, layers ("1,1,1,1"), stem (cifar | imagenet), and optionally world (1).
Outputs: `loss_k`, `lr_k` per step (rank r > 0: `loss_k.r<r>`); `g1.<name>` (gradients of step 1,
rank 0's, averaged over the ranks); `w.<name>` after the steps (rank 0's; queue included).
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
world = int(sys.argv[15]) if len(sys.argv) > 15 else 1
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

os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
os.environ.setdefault("MASTER_PORT", str(21000 + os.getpid() % 20000))


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


def main(rank):
    """One rank of main_moco.py's main_worker + train loop (glue: the gloo group, the inputs)."""
    dist.init_process_group("gloo", rank=rank, world_size=world)
    suffix = f".r{rank}" if rank else ""
    d = np.load(inp)  # each process its own file handle
    net = moco.builder.MoCo(base_encoder, dim, K, m, T, mlp=True)
    model = net
    state = {k[2:]: torch.from_numpy(d[k]) for k in d.files if k.startswith("w.")}
    state["queue"] = torch.from_numpy(d["queue"])
    state["queue_ptr"] = torch.zeros(1, dtype=torch.long)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        sys.exit(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    # main_worker: `model.cuda(); model = DistributedDataParallel(model)` (no GPU: no device_ids)
    model = torch.nn.parallel.DistributedDataParallel(net)
    if "perm_0" in d.files:
        # our recorded shuffle-BN permutations, in the order `_batch_shuffle_ddp` draws them
        perms = iter(torch.from_numpy(d[f"perm_{k}"]).long() for k in range(steps))
        torch.randperm = lambda n, *a, **k: next(perms)

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
            for name, p in net.named_parameters():
                if p.grad is not None:
                    out["g1." + name] = p.grad.numpy().copy()
        lrs.append(optimizer.param_groups[0]["lr"])
        return official_step(*a, **k)

    optimizer.step = recording_step
    args = argparse.Namespace(lr=lr, cos=True, epochs=epochs, schedule=[], gpu=None, print_freq=10**9)
    batches = [
        ([torch.from_numpy(d[f"xq_{k}{suffix}"]), torch.from_numpy(d[f"xk_{k}{suffix}"])], None)
        for k in range(steps)
    ]
    for epoch in range(epochs):  # main_moco.py main_worker
        loader = batches[epoch * per_epoch:(epoch + 1) * per_epoch]
        if not loader:
            break
        main_moco.adjust_learning_rate(optimizer, epoch, args)
        main_moco.train(loader, model, criterion, optimizer, epoch, args)
    if len(losses) != steps:
        sys.exit(f"{len(losses)} steps ran, {steps} asked")
    every = [None] * world
    dist.all_gather_object(every, losses)
    if rank:
        return
    for r, rl in enumerate(every):
        for k in range(steps):
            out[f"loss_{k}" + (f".r{r}" if r else "")] = np.array([rl[k]], dtype=np.float64)
    for k in range(steps):
        out[f"lr_{k}"] = np.array([lrs[k]], dtype=np.float64)
    for name, t in net.state_dict().items():
        if not name.endswith("num_batches_tracked") and name != "queue_ptr":
            out["w." + name] = t.numpy().astype(np.float32)
    np.savez(outp, **out)


if world == 1:
    main(0)
else:
    torch.multiprocessing.start_processes(main, nprocs=world, start_method="fork")

"""Training steps of the OFFICIAL MoCo v2 (`moco/builder.py` of facebookresearch/moco, checked out
by `cargo xtask official fetch moco`; not ours) on our weights, queue and batches: `MoCo(resnet18,
mlp=True)` — momentum update of the key encoder, shuffle-BN (one process: a permutation of the
batch), queries, keys, logits [l_pos, l_neg] / T, enqueue — then `CrossEntropyLoss` and SGD as
`main_moco.py` (momentum 0.9, weight decay 1e-4).

Glue: a one-process gloo group (the model all-gathers keys and broadcasts the shuffle); on a
machine without CUDA `.cuda()` is a no-op.

Inputs (npz): xq_k, xk_k per step; `w.<name>` for every variable of our query and key encoders
and `queue` [dim, K] (official names and layout). argv[3:]: checkout, dim, K, m, T, lr, steps.
Outputs: loss_k per step; `g.<name>` (last step), `w.<name>` after the steps, queue, queue_ptr.
"""
import os
import sys

import numpy as np
import torch
import torch.distributed as dist
import torchvision

inp, outp = sys.argv[1], sys.argv[2]
official, dim, K, m, T, lr, steps = sys.argv[3:10]
dim, K, steps, m, T, lr = int(dim), int(K), int(steps), float(m), float(T), float(lr)
sys.path.insert(0, official)
if not torch.cuda.is_available():
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
import moco.builder  # noqa: E402

if not dist.is_initialized():
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(21000 + os.getpid() % 20000))
    dist.init_process_group("gloo", rank=0, world_size=1)

d = np.load(inp)
model = moco.builder.MoCo(torchvision.models.resnet18, dim, K, m, T, mlp=True)
state = {k[2:]: torch.from_numpy(d[k]) for k in d.files if k.startswith("w.")}
state["queue"] = torch.from_numpy(d["queue"])
state["queue_ptr"] = torch.zeros(1, dtype=torch.long)
missing, unexpected = model.load_state_dict(state, strict=False)
missing = [k for k in missing if not k.endswith("num_batches_tracked")]
if missing or unexpected:
    sys.exit(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
criterion = torch.nn.CrossEntropyLoss()
optimizer = torch.optim.SGD(model.parameters(), lr, momentum=0.9, weight_decay=1e-4)
model.train()
out = {}
for k in range(steps):  # main_moco.py train()
    output, target = model(im_q=torch.from_numpy(d[f"xq_{k}"]), im_k=torch.from_numpy(d[f"xk_{k}"]))
    loss = criterion(output, target)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    out[f"loss_{k}"] = loss.detach().numpy()
for name, p in model.named_parameters():
    if p.grad is not None:
        out["g." + name] = p.grad.numpy()
for name, t in model.state_dict().items():
    if not name.endswith("num_batches_tracked"):
        out["w." + name] = t.numpy().astype(np.float32)
np.savez(outp, **out)

"""Training steps of the OFFICIAL PatchMix code (`.official/patchmix`, fetched by
`cargo xtask official fetch patchmix`; not ours) on our weights, our batches and our patch
permutations.

Inputs (npz), for each step k: x1_k, x2_k [B, 3, H, W] (the two views), lc<j>_k (local crops),
perm1_k, perm2_k, permL<j>_k [T] (the patch permutations our mixer drew for them: the official
`random_indexes` returns them instead of shuffling); and `w.<name>` for every variable of our
network (official state-dict names).
argv[3:]: `key=value` pairs: official, repo, depth, patch, mlp_dim, out_dim, m, use_moco (0/1),
moco_m, n_local, eps, epochs (the schedules' length), run_epochs, iters (steps per epoch), and
either lr, wd (constant: the one-step cases) or base_lr, min_lr, warmup_epochs, wd, wd_end (the
schedules `main_worker` builds).

Runs `main_pretrain.train_epoch` for epochs 0 .. run_epochs-1 on loaders of those batches (the
official steps: lr / wd from the schedules, momentum update, mixing, four forwards, loss,
backward, AdamW). Writes the loss terms averaged over the last epoch, as the official meters do
(`src_loss`, `mix_loss`, `mix2_loss`, `multi_loss`, `multi_mix_loss`, `loss`), every step's terms
in that order (`curve` [steps, 6]), the lr, weight decay and EMA momentum each step used (`lr`,
`wd`, `momentum`), every gradient of the last step (`g.<name>`) and every variable after the last
step (`w.<name>`).

Glue (ours, said here): the CPU glue of `official/patchmix.py`; a one-process gloo group (the
mixer asks for the rank); the schedule lines of `main_worker` (lr scaled by batch/256,
`misc.cosine_scheduler` for lr and wd, the temperature schedule); a `.module` attribute on the
momentum model pointing at itself, because `train_epoch` calls
`model.module.update_momentum_encoder` (it assumes a DistributedDataParallel wrapper); and a
subclass of the official `AverageMeter` that also keeps every value it is given (the official
loop reports only epoch averages), with a wrapper on `update_momentum_encoder` that notes its
argument.
"""
import os
import sys

import numpy as np
import torch

inp, outp = sys.argv[1], sys.argv[2]
a = dict(kv.split("=", 1) for kv in sys.argv[3:])
depth, patch, mlp_dim, out_dim, m = (int(a[k]) for k in ("depth", "patch", "mlp_dim", "out_dim", "m"))
use_moco, n_local = a["use_moco"] == "1", int(a["n_local"])
epochs, run_epochs, iters = int(a["epochs"]), int(a["run_epochs"]), int(a["iters"])
steps = run_epochs * iters
sys.path.insert(0, a["official"])
sys.path.insert(0, a["repo"] + "/official")
from patchmix import glue  # noqa: E402  (our adapter's CPU glue)

glue(torch.cuda.is_available())
import main_pretrain  # noqa: E402
import module.mix as mix  # noqa: E402
from config.pretrain.vit_tiny_pretrain import vit_tiny_pretrain  # noqa: E402
from module.frame.contrast_momentum import ContrastMomentum_ViT  # noqa: E402
from module.frame.contrast_no_momentum import ContrastNoMomentum_ViT  # noqa: E402
from module.loss import MultiTempContrastiveLoss  # noqa: E402
from module.vits import ViT  # noqa: E402
from utils import misc  # noqa: E402

import torch.distributed as dist  # noqa: E402

if not dist.is_initialized():
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(20000 + os.getpid() % 20000))
    dist.init_process_group("gloo", rank=0, world_size=1)

d = np.load(inp)
batches = [[torch.from_numpy(d[f"x1_{k}"]), torch.from_numpy(d[f"x2_{k}"])] for k in range(steps)]
if n_local:
    for k in range(steps):
        batches[k].append([torch.from_numpy(d[f"lc{j}_{k}"]) for j in range(n_local)])
perms = [d[name].astype(np.int64) for k in range(steps)
         for name in [f"perm1_{k}", f"perm2_{k}"] + [f"permL{j}_{k}" for j in range(n_local)]]
mix.random_indexes = lambda size: (lambda f: (f, np.argsort(f)))(perms.pop(0))
B, _, H, _ = batches[0][0].shape

args = vit_tiny_pretrain()
args.dataset, args.distributed, args.world_size, args.rank = "cifar10", False, 1, 0
args.patch_size = args.mix_size = patch
args.input_size, args.batch_size = H, B
args.hidden_dim, args.out_dim, args.mix_num = mlp_dim, out_dim, m
args.epochs = epochs
args.warmup_temp_epochs = min(args.warmup_temp_epochs, epochs)
args.use_moco, args.moco_m, args.moco_m_cos = use_moco, float(a["moco_m"]), True
args.multi_crop_num = n_local
torch.manual_seed(0)


def vit():
    return ViT(patch_size=args.patch_size, img_size=H, num_classes=args.out_dim, embed_dim=192,
               depth=depth, num_heads=3, mlp_ratio=4, drop_path_rate=0.0)


momenta = []
if use_moco:
    model = ContrastMomentum_ViT(vit(), vit(), args.proj_layer, args.pred_layer, args.out_dim, args.hidden_dim)
    object.__setattr__(model, "module", model)  # glue: train_epoch calls model.module.update_momentum_encoder
    update = model.update_momentum_encoder
    object.__setattr__(model, "update_momentum_encoder", lambda mm: (momenta.append(mm), update(mm))[1])
else:
    model = ContrastNoMomentum_ViT(vit(), args.proj_layer, args.pred_layer, args.out_dim, args.hidden_dim)
ours = {k[2:]: torch.from_numpy(d[k]) for k in d.files if k.startswith("w.")}
missing, unexpected = model.load_state_dict(ours, strict=False)
missing = [k for k in missing if not k.endswith("num_batches_tracked")]
if missing or unexpected:
    sys.exit(f"state dict mismatch: missing {missing}, unexpected {unexpected}")

mixer = mix.PatchMixer(num_classes=B, mix_s=args.mix_size, mix_n=args.mix_num, mix_p=1.0,
                       smoothing=args.smoothing)
optimizer = torch.optim.AdamW(misc.get_params_groups(model.named_parameters()), eps=float(a["eps"]))

# --- main_worker's schedules (ported) ---
if "base_lr" in a:
    args.lr, args.min_lr = float(a["base_lr"]), float(a["min_lr"])
    args.warmup_epoch = int(a["warmup_epochs"])
    args.weight_decay, args.weight_decay_end = float(a["wd"]), float(a["wd_end"])
    args.lr = args.lr * args.batch_size / 256
    lr_schedule = misc.cosine_scheduler(args.lr, args.min_lr, args.epochs, iters,
                                        warmup_epochs=args.warmup_epoch)
    wd_schedule = misc.cosine_scheduler(args.weight_decay, args.weight_decay_end, args.epochs, iters)
else:
    lr_schedule, wd_schedule = np.full(steps, float(a["lr"])), np.full(steps, float(a["wd"]))
temp_schedule = np.concatenate((
    np.linspace(args.warmup_temp, args.temp, args.warmup_temp_epochs),
    np.ones(args.epochs - args.warmup_temp_epochs) * args.temp
))
# ---

METERS = ["Src Loss", "Mix Loss", "Mix Mix Loss", "Multi Loss", "Multi Mix Loss", "Loss", "LR", "WD"]
seen = {name: [] for name in METERS}


class Meter(misc.AverageMeter):  # glue: the official meter, keeping every value
    def update(self, val, n=1):
        seen[self.name].append(float(val))
        super().update(val, n)


main_pretrain.AverageMeter = Meter


class TB:
    values = {}

    def add_scalar(self, name, value, step):
        TB.values[name.split("/", 1)[1].lower().replace(" ", "_")] = float(value)


for epoch in range(run_epochs):
    loader = [(b, torch.zeros(B, dtype=torch.long)) for b in batches[epoch * iters:(epoch + 1) * iters]]
    main_pretrain.train_epoch(loader, model, MultiTempContrastiveLoss(), optimizer, lr_schedule, wd_schedule,
                              temp_schedule, mixer, main_pretrain.GradScaler(enabled=False), (TB(), None),
                              epoch, args)
out = {k: np.array(v, dtype=np.float32) for k, v in TB.values.items() if k.endswith("loss")}
out["curve"] = np.ascontiguousarray(np.array([seen[name] for name in METERS[:6]], dtype=np.float64).T)
out["lr"], out["wd"] = np.array(seen["LR"]), np.array(seen["WD"])
out["momentum"] = np.array(momenta, dtype=np.float64)
for name, p in model.named_parameters():
    if p.grad is not None:
        out["g." + name] = p.grad.numpy()
for name, t in model.state_dict().items():
    if not name.endswith("num_batches_tracked"):
        out["w." + name] = t.numpy()
np.savez(outp, **out)

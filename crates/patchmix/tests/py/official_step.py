"""One training step of the OFFICIAL PatchMix code (`.official/patchmix`, fetched by
`cargo xtask official fetch patchmix`; not ours) on our weights and our batch.

Inputs (npz), for each step k: x1_k, x2_k [B, 3, H, W] (the two views), perm1_k, perm2_k [T] (the
patch permutations our mixer drew for them: the official `random_indexes` returns them instead of
shuffling); and `w.<name>` for every variable of our network (official state-dict names).
argv[3:]: official checkout, repository root, lr, weight decay, depth, patch, mlp_dim, out_dim, m,
steps, use_moco (0/1), moco_m, epochs.

Runs `main_pretrain.train_epoch` on a loader of those batches (the official steps: momentum
update, mixing, four forwards, loss, backward, AdamW), then writes the loss terms (averaged over
the steps, as the official meters do), every gradient of the last step (`g.<name>`) and every
variable after the last step (`w.<name>`). With use_moco the model is `ContrastMomentum_ViT`; it is
given a `.module` attribute pointing at itself, because the official loop calls
`model.module.update_momentum_encoder` (it assumes a DistributedDataParallel wrapper): glue.
"""
import sys

import numpy as np
import torch

inp, outp = sys.argv[1], sys.argv[2]
official, repo, lr, wd, depth, patch, mlp_dim, out_dim, m, steps, use_moco, moco_m, epochs, eps, n_local = sys.argv[3:18]
steps, use_moco, epochs, n_local = int(steps), use_moco == "1", int(epochs), int(n_local)
sys.path.insert(0, official)
sys.path.insert(0, repo + "/official")
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

import os  # noqa: E402
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
args.patch_size = args.mix_size = int(patch)
args.input_size, args.batch_size = H, B
args.hidden_dim, args.out_dim, args.mix_num = int(mlp_dim), int(out_dim), int(m)
args.epochs, args.warmup_temp_epochs = epochs, 1
args.use_moco, args.moco_m, args.moco_m_cos = use_moco, float(moco_m), True
args.multi_crop_num = n_local
torch.manual_seed(0)


def vit():
    return ViT(patch_size=args.patch_size, img_size=H, num_classes=args.out_dim, embed_dim=192,
               depth=int(depth), num_heads=3, mlp_ratio=4, drop_path_rate=0.0)


if use_moco:
    model = ContrastMomentum_ViT(vit(), vit(), args.proj_layer, args.pred_layer, args.out_dim, args.hidden_dim)
    object.__setattr__(model, "module", model)  # glue: train_epoch calls model.module.update_momentum_encoder
else:
    model = ContrastNoMomentum_ViT(vit(), args.proj_layer, args.pred_layer, args.out_dim, args.hidden_dim)
ours = {k[2:]: torch.from_numpy(d[k]) for k in d.files if k.startswith("w.")}
missing, unexpected = model.load_state_dict(ours, strict=False)
missing = [k for k in missing if not k.endswith("num_batches_tracked")]
if missing or unexpected:
    sys.exit(f"state dict mismatch: missing {missing}, unexpected {unexpected}")

mixer = mix.PatchMixer(num_classes=B, mix_s=args.mix_size, mix_n=args.mix_num, mix_p=1.0,
                       smoothing=args.smoothing)
optimizer = torch.optim.AdamW(misc.get_params_groups(model.named_parameters()), eps=float(eps))


class TB:
    values = {}

    def add_scalar(self, name, value, step):
        TB.values[name.split("/", 1)[1].lower().replace(" ", "_")] = float(value)


loader = [(b, torch.zeros(B, dtype=torch.long)) for b in batches]
main_pretrain.train_epoch(loader, model, MultiTempContrastiveLoss(), optimizer,
                          np.full(steps, float(lr)), np.full(steps, float(wd)), np.full(epochs, 0.2), mixer,
                          main_pretrain.GradScaler(enabled=False), (TB(), None), 0, args)
out = {k: np.array(v, dtype=np.float32) for k, v in TB.values.items()}
for name, p in model.named_parameters():
    if p.grad is not None:
        out["g." + name] = p.grad.numpy()
for name, t in model.state_dict().items():
    if not name.endswith("num_batches_tracked"):
        out["w." + name] = t.numpy()
np.savez(outp, **out)

"""One training step of the OFFICIAL PatchMix code (`.official/patchmix`, fetched by
`cargo xtask official fetch patchmix`; not ours) on our weights and our batch.

Inputs (npz): x1, x2 [B, 3, H, W] (the two views), perm1, perm2 [T] (the patch permutations our
mixer drew for x1 and x2: the official `random_indexes` returns them instead of shuffling), and
`w.<name>` for every variable of our network (official state-dict names).
argv[3:]: official checkout, repository root, lr, weight decay, depth, patch, mlp_dim, out_dim, m.

Runs `main_pretrain.train_epoch` on a one-batch loader (the official step: mixing, four forwards,
loss, backward, AdamW), then writes the loss terms, every gradient (`g.<name>`) and every
variable after the step (`w.<name>`).
"""
import sys

import numpy as np
import torch

inp, outp = sys.argv[1], sys.argv[2]
official, repo, lr, wd, depth, patch, mlp_dim, out_dim, m = sys.argv[3:12]
sys.path.insert(0, official)
sys.path.insert(0, repo + "/official")
from patchmix import glue  # noqa: E402  (our adapter's CPU glue)

glue(torch.cuda.is_available())
import main_pretrain  # noqa: E402
import module.mix as mix  # noqa: E402
from config.pretrain.vit_tiny_pretrain import vit_tiny_pretrain  # noqa: E402
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
x1, x2 = torch.from_numpy(d["x1"]), torch.from_numpy(d["x2"])
perms = [d["perm1"].astype(np.int64), d["perm2"].astype(np.int64)]
mix.random_indexes = lambda size: (lambda f: (f, np.argsort(f)))(perms.pop(0))
B, _, H, _ = x1.shape

args = vit_tiny_pretrain()
args.dataset, args.distributed, args.world_size, args.rank = "cifar10", False, 1, 0
args.patch_size = args.mix_size = int(patch)
args.input_size, args.batch_size = H, B
args.hidden_dim, args.out_dim, args.mix_num = int(mlp_dim), int(out_dim), int(m)
args.epochs, args.warmup_temp_epochs = 1, 1
torch.manual_seed(0)
enc = ViT(patch_size=args.patch_size, img_size=H, num_classes=args.out_dim, embed_dim=192,
          depth=int(depth), num_heads=3, mlp_ratio=4, drop_path_rate=0.0)
model = ContrastNoMomentum_ViT(enc, args.proj_layer, args.pred_layer, args.out_dim, args.hidden_dim)
ours = {k[2:]: torch.from_numpy(d[k]) for k in d.files if k.startswith("w.")}
missing, unexpected = model.load_state_dict(ours, strict=False)
missing = [k for k in missing if not k.endswith("num_batches_tracked")]
if missing or unexpected:
    sys.exit(f"state dict mismatch: missing {missing}, unexpected {unexpected}")

mixer = mix.PatchMixer(num_classes=B, mix_s=args.mix_size, mix_n=args.mix_num, mix_p=1.0,
                       smoothing=args.smoothing)
optimizer = torch.optim.AdamW(misc.get_params_groups(model.named_parameters()))


class TB:
    values = {}

    def add_scalar(self, name, value, step):
        TB.values[name.split("/", 1)[1].lower().replace(" ", "_")] = float(value)


main_pretrain.train_epoch([([x1, x2], torch.zeros(B, dtype=torch.long))], model, MultiTempContrastiveLoss(),
                          optimizer, np.array([float(lr)]), np.array([float(wd)]), np.array([0.2]), mixer,
                          main_pretrain.GradScaler(enabled=False), (TB(), None), 0, args)
out = {k: np.array(v, dtype=np.float32) for k, v in TB.values.items()}
for name, p in model.named_parameters():
    out["g." + name] = p.grad.numpy()
for name, t in model.state_dict().items():
    if not name.endswith("num_batches_tracked"):
        out["w." + name] = t.numpy()
np.savez(outp, **out)

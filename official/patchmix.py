"""Adapter: trains the OFFICIAL PatchMix code (visresearch/patchmix, checked out by
`cargo xtask official fetch patchmix`, never committed) on an image folder, and evaluates a kNN
after every epoch, writing one JSON line per epoch.

What is official (imported, not copied): the ViT (`module/vits.py`), the MoCo-v3 heads without
momentum (`module/frame/contrast_no_momentum.py`), the mixer (`module/mix.py`), the loss
(`module/loss.py`), the BYOL two-crop augmentation (`module/augmentation.py`), the parameter
groups and schedules (`utils/misc.py`), the whole training epoch (`main_pretrain.train_epoch`:
mixing, the four forwards, AMP autocast + GradScaler, the lr / wd updates) and the weighted kNN
(`main_knn.knn_classifier`).

What is ours (glue, because the official entry points hard-code their settings): the part of
`main_pretrain.main_worker` that builds the model, loader, optimiser and schedules, ported with
the depth, data root and epochs as arguments; a one-process process group (the mixer asks for the
rank, the loss all-gathers its keys); the kNN features (the class token after the final norm,
the same feature our crate evaluates, under the official evaluation transform
Resize(36, bicubic) + CenterCrop(32)); and, on a machine without CUDA only, `Tensor.cuda`
made a no-op so that the official code runs on the CPU (`--tiny` checks).
"""
import argparse
import json
import os
import sys
import time


def parse():
    p = argparse.ArgumentParser()
    p.add_argument("--official", required=True, help="the official checkout")
    p.add_argument("--data", required=True, help="image folder with train/ and test/")
    p.add_argument("--out", required=True, help="metrics, one JSON line per epoch")
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--warmup-epochs", type=int, default=0)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--depth", type=int, default=12)
    p.add_argument("--patch", type=int, default=2)
    p.add_argument("--mlp-dim", type=int, default=4096)
    p.add_argument("--mix-p", type=float, default=1.0, help="0 = the no-mix baseline")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (timing)")
    p.add_argument("--knn-k", default="10,20,100,200")
    p.add_argument("--no-knn", action="store_true")
    return p.parse_args()


def glue(cuda):
    """What the official code needs to run here, and nothing else: on a machine without CUDA,
    `.cuda()` is a no-op and the mixer builds its targets on the CPU (it asks for
    `device='cuda'`); `utils/logger.py` imports tensorboard, stubbed when it is missing (the
    adapter passes its own logger). Call after the official checkout is on `sys.path`."""
    import torch
    if not cuda:
        torch.Tensor.cuda = lambda self, *args, **kw: self
        torch.nn.Module.cuda = lambda self, *args, **kw: self
        from module.mix import PatchMixer
        one_hot = PatchMixer._one_hot
        PatchMixer._one_hot = lambda self, t, n, on=1., off=0., device='cuda': one_hot(self, t, n, on, off, 'cpu')
    try:
        import torch.utils.tensorboard  # noqa: F401
    except Exception:
        import types
        stub = types.ModuleType("utils.logger")
        stub.Logger = stub.console_logger = None
        sys.modules["utils.logger"] = stub


def main():
    a = parse()
    sys.path.insert(0, os.path.abspath(a.official))
    import numpy as np
    import torch
    import torch.distributed as dist
    from torchvision import datasets, transforms

    cuda = torch.cuda.is_available()
    glue(cuda)

    import main_pretrain as official
    from main_knn import knn_classifier
    from config.pretrain.vit_tiny_pretrain import vit_tiny_pretrain
    from module.augmentation import TwoCropsTransform
    from module.frame.contrast_no_momentum import ContrastNoMomentum_ViT
    from module.loss import MultiTempContrastiveLoss
    from module.mix import PatchMixer
    from module.vits import ViT
    from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    from utils import misc

    if not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
        dist.init_process_group("nccl" if cuda else "gloo", rank=0, world_size=1)

    # the official CIFAR settings (config/pretrain/vit_tiny_pretrain.py), then ours
    args = vit_tiny_pretrain()
    args.dataset = "cifar10"
    args.distributed = False
    args.world_size = 1
    args.rank = 0
    args.seed = a.seed
    args.epochs = a.epochs
    args.warmup_epoch = a.warmup_epochs
    args.batch_size = a.batch
    args.num_workers = a.workers
    args.patch_size = a.patch
    args.mix_size = a.patch
    args.hidden_dim = a.mlp_dim
    args.mix_p = a.mix_p
    args.warmup_temp_epochs = min(args.warmup_temp_epochs, a.epochs)
    misc.fix_random_seeds(args.seed)

    # --- main_worker, ported (model, data, optimiser, schedules) ---
    base_encoder = ViT(patch_size=args.patch_size, img_size=args.input_size, num_classes=args.out_dim,
                       embed_dim=192, depth=a.depth, num_heads=3, mlp_ratio=4,
                       drop_path_rate=args.drop_path)
    model = ContrastNoMomentum_ViT(base_encoder, args.proj_layer, args.pred_layer,
                                   args.out_dim, args.hidden_dim)
    device = torch.device("cuda" if cuda else "cpu")
    model = model.to(device)
    args.lr = args.lr * args.batch_size / 256
    train_set = datasets.ImageFolder(os.path.join(a.data, "train"), transform=TwoCropsTransform(args))
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=args.batch_size, shuffle=True, num_workers=args.num_workers,
        pin_memory=cuda, drop_last=True,
        prefetch_factor=args.prefetch_factor if args.num_workers > 0 else None,
        persistent_workers=args.num_workers > 0)
    if len(loader) == 0:
        sys.exit(f"error: {len(train_set)} training images are fewer than one batch ({args.batch_size})")
    args.niters_per_epoch = len(train_set) // args.batch_size
    mixer = PatchMixer(num_classes=args.batch_size, mix_s=args.mix_size, mix_n=args.mix_num,
                       mix_p=args.mix_p, smoothing=args.smoothing)
    criterion = MultiTempContrastiveLoss()
    optimizer = torch.optim.AdamW(misc.get_params_groups(model.named_parameters()))
    scaler = official.GradScaler()
    lr_schedule = misc.cosine_scheduler(args.lr, args.min_lr, args.epochs, len(loader),
                                        warmup_epochs=args.warmup_epoch)
    wd_schedule = misc.cosine_scheduler(args.weight_decay, args.weight_decay_end, args.epochs, len(loader))
    temp_schedule = np.concatenate((
        np.linspace(args.warmup_temp, args.temp, args.warmup_temp_epochs),
        np.ones(args.epochs - args.warmup_temp_epochs) * args.temp))

    # kNN data: the official evaluation transform (main_knn.build_transform)
    eval_tf = transforms.Compose([
        transforms.Resize(int(args.input_size / 224 * 256), interpolation=3),
        transforms.CenterCrop(args.input_size),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)])
    eval_sets = [datasets.ImageFolder(os.path.join(a.data, s), transform=eval_tf) for s in ("train", "test")]
    ks = [int(k) for k in a.knn_k.split(",") if k]

    @torch.no_grad()
    def features(ds):
        model.eval()
        dl = torch.utils.data.DataLoader(ds, batch_size=256, shuffle=False, num_workers=args.num_workers)
        feats, labels = [], []
        for x, y in dl:
            f = model.base_encoder.forward_features(x.to(device, non_blocking=True))[:, 0]
            feats.append(torch.nn.functional.normalize(f.float(), dim=1))
            labels.append(y.to(device))
        model.train()
        return torch.cat(feats), torch.cat(labels)

    class TB:  # receives the official epoch averages (train_epoch's logger_tb.add_scalar)
        def __init__(self):
            self.values = {}

        def add_scalar(self, name, value, step):
            self.values[name.split("/", 1)[1].lower().replace(" ", "_")] = float(value)

    class Timed:
        """The loader as train_epoch sees it: remembers when the second batch is asked for (the
        first step is done then), so samples/s leaves out start-up as ours does; `--max-steps`
        cuts the epoch short (timing runs)."""

        def __init__(self, dl, n):
            self.dl, self.n, self.t_second = dl, n, None

        def __len__(self):
            return min(self.n, len(self.dl)) if self.n else len(self.dl)

        def __iter__(self):
            for i, b in enumerate(self.dl):
                if self.n and i >= self.n:
                    break
                if i == 1:
                    if cuda:
                        torch.cuda.synchronize()
                    self.t_second = time.time()
                yield b

    loader = Timed(loader, a.max_steps)

    out = open(a.out, "w")
    t0 = time.time()
    for epoch in range(args.epochs):
        tb = TB()
        if cuda:
            torch.cuda.synchronize()
        te = time.time()
        official.train_epoch(loader, model, criterion, optimizer, lr_schedule, wd_schedule, temp_schedule,
                             mixer, scaler, (tb, None), epoch, args)
        if cuda:
            torch.cuda.synchronize()
        dt = time.time() - te
        steady = time.time() - loader.t_second if loader.t_second else dt
        row = {"epoch": epoch + 1, "steps": (epoch + 1) * len(loader), "epoch_train_s": dt,
               "samples_per_s": max(len(loader) - 1, 1) * args.batch_size / steady,
               "elapsed_s": time.time() - t0}
        row.update(tb.values)
        if not a.no_knn:
            tk = time.time()
            tr, te_ = features(eval_sets[0]), features(eval_sets[1])
            for k in ks:
                top1, _ = knn_classifier(tr[0], tr[1], te_[0], te_[1], k, 0.07, use_cuda=cuda,
                                         num_classes=len(eval_sets[0].classes))
                row[f"knn_top1_k{k}"] = float(top1)
            row["knn_s"] = time.time() - tk
        if cuda:
            row["max_memory_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
        out.write(json.dumps(row) + "\n")
        out.flush()
        print(json.dumps(row), flush=True)
        if a.max_steps:
            break
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

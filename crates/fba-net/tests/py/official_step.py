"""Training iterations of the OFFICIAL FBA-Net+ code (`.official/fba-net`, fetched by
`cargo xtask official fetch fba-net`; not ours) on our weights and our batches.

Imported from the official checkout: the network (`networks/VNet.py` FBAnet, three decoders,
contrastive modules), the losses (`utils/losses.py`: Binary_dice_loss, SimMaxLoss, SimMinLoss,
mse_loss) and the ramp-up (`utils/ramps.py`). Ported, because `train_3d.py` cannot be imported
without h5py / medpy / nibabel / skimage and runs its loop at module level: the loop body of one
iteration (train_3d.py lines 150-190, run once per batch: softmax, Dice on the labelled half, sharpening, SimMax /
SimMin per decoder, the mutual consistency, the weighting) and its two helpers `sharpening` and
`get_current_consistency_weight`; and one line of glue: the official decoder sizes its
contrastive MLPs for the 112x112x80 LA patch (56*56*40 inputs), here they take the test patch's
stride-2 map.

Inputs (npz): for each iteration k, x_k [N, 1, X, Y, Z] and y_k [labeled_bs, X, Y, Z]; `w.<name>`
for every variable of our network (official state-dict names). argv[3:]: official checkout,
n_filters, dim, labeled_bs, lr, iteration (the official `iter_num` before the first of them),
consistency, rampup, temperature, lamda, steps.
Outputs: the last iteration's seg_dice, consistency, contrast, loss, consistency_weight; every
iteration's (seg_dice, consistency, contrast, loss) as `curve` [steps, 4] and its consistency
weight as `weights` [steps]; the last iteration's gradients `g.<name>`; every variable after the
last SGD step, `w.<name>`; the network's outputs in eval mode after the last step on the last
batch (`eval.logits<d>`, `eval.fg<d>`, `eval.bg<d>` per decoder); and the official consistency
weight after iterations 1, 149, 150, 3000, 5999, 6000, 15000 (`ramp`).
"""
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

inp, outp = sys.argv[1], sys.argv[2]
official, n_filters, dim, labeled_bs, lr, it, consistency, rampup, temperature, lamda, steps = sys.argv[3:14]
n_filters, dim, labeled_bs, it, steps = int(n_filters), int(dim), int(labeled_bs), int(it), int(steps)
lr, consistency, rampup = float(lr), float(consistency), float(rampup)
temperature, lamda = float(temperature), float(lamda)
sys.path.insert(0, official + "/code")
from networks.VNet import FBAnet  # noqa: E402
from utils import losses, ramps  # noqa: E402

d = np.load(inp)
x = torch.from_numpy(d["x_0"])
model = FBAnet(n_channels=1, n_classes=2, n_filters=n_filters, normalization="batchnorm",
               has_dropout=False, dim=dim, dataset="none")
map_voxels = int(np.prod([(s + 1) // 2 for s in x.shape[2:]]))
for dec in (model.decoder1, model.decoder2, model.decoder3):  # glue: the MLP input size
    dec.f_mlp = nn.Sequential(nn.Linear(map_voxels, dim), nn.ReLU())
    dec.b_mlp = nn.Sequential(nn.Linear(map_voxels, dim), nn.ReLU())
ours = {k[2:]: torch.from_numpy(d[k]) for k in d.files if k.startswith("w.")}
missing, unexpected = model.load_state_dict(ours, strict=False)
missing = [k for k in missing if not k.endswith("num_batches_tracked")]
if missing or unexpected:
    sys.exit(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=0.0001)


def sharpening(P):  # train_3d.py
    T = 1 / temperature
    return P ** T / (P ** T + (1 - P) ** T)


def get_current_consistency_weight(epoch):  # train_3d.py
    return consistency * ramps.sigmoid_rampup(epoch, rampup)


dice_loss, min_loss, max_loss = losses.Binary_dice_loss, losses.SimMinLoss(), losses.SimMaxLoss()
consistency_criterion = losses.mse_loss
iter_num = it
curve, weights = [], []
for k in range(steps):
    volume_batch, label_batch = torch.from_numpy(d[f"x_{k}"]), torch.from_numpy(d[f"y_{k}"]).long()
    # --- train_3d.py, one iteration ---
    model.train()
    fg_feats, bg_feats, outputs = model(volume_batch)
    num_outputs = len(outputs)
    y_ori = torch.zeros((num_outputs,) + outputs[0].shape)
    y_pseudo_label = torch.zeros((num_outputs,) + outputs[0].shape)
    loss_seg_dice = 0
    loss1, loss2, neg_loss = 0, 0, 0
    for idx in range(num_outputs):
        y = outputs[idx][:labeled_bs, ...]
        y_prob = F.softmax(y, dim=1)
        loss_seg_dice += dice_loss(y_prob[:, 1, ...], label_batch[:labeled_bs, ...] == 1)
        y_all = outputs[idx]
        y_prob_all = F.softmax(y_all, dim=1)
        y_ori[idx] = y_prob_all
        y_pseudo_label[idx] = sharpening(y_prob_all)
        loss1 += max_loss(fg_feats[idx])
        loss2 += max_loss(bg_feats[idx])
        neg_loss += min_loss(fg_feats[idx], bg_feats[idx])
    loss_contra = loss1 + loss2 + neg_loss
    loss_consist = 0
    for i in range(num_outputs):
        for j in range(num_outputs):
            if i != j:
                loss_consist += consistency_criterion(y_ori[i], y_pseudo_label[j])
    iter_num = iter_num + 1
    consistency_weight = get_current_consistency_weight(iter_num // 150)
    loss = lamda * loss_seg_dice + consistency_weight * loss_consist + loss_contra
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    # ---
    curve.append([float(v) for v in (loss_seg_dice, loss_consist, loss_contra, loss)])
    weights.append(consistency_weight)
out = {"seg_dice": loss_seg_dice.detach().numpy(), "consistency": loss_consist.detach().numpy(),
       "contrast": loss_contra.detach().numpy(), "loss": loss.detach().numpy(),
       "consistency_weight": np.array(consistency_weight, dtype=np.float32),
       "curve": np.array(curve, dtype=np.float64), "weights": np.array(weights, dtype=np.float64)}
# after the last iteration: the network in eval mode (running statistics) on the last batch, and
# the official consistency weight at iterations spanning the ramp-up (its end is at 40 x 150)
model.eval()
with torch.no_grad():
    fg_feats, bg_feats, outputs = model(volume_batch)
for idx in range(len(outputs)):
    out[f"eval.logits{idx}"] = outputs[idx].numpy()
    out[f"eval.fg{idx}"] = fg_feats[idx].numpy()
    out[f"eval.bg{idx}"] = bg_feats[idx].numpy()
RAMP_ITERATIONS = [1, 149, 150, 3000, 5999, 6000, 15000]
out["ramp"] = np.array([get_current_consistency_weight(i // 150) for i in RAMP_ITERATIONS])
for name, p in model.named_parameters():
    out["g." + name] = p.grad.numpy()
for name, t in model.state_dict().items():
    if not name.endswith("num_batches_tracked"):
        out["w." + name] = t.numpy().astype(np.float32)
np.savez(outp, **out)

"""UA-MT's supervised objective, from the OFFICIAL `code/utils/losses.py` (yulequan/UA-MT, checked
out by `cargo xtask official fetch ua-mt`; not ours) and the loss lines of its `train_LA.py`:
`loss = 0.5 * (F.cross_entropy(outputs, label) + dice_loss(softmax(outputs)[:, 1], label == 1))`.

Inputs (npz): logits [B, 2, X, Y, Z] (float32), labels [B, X, Y, Z] (int64). argv[3:]: checkout.
Outputs: ce, dice, total, g.logits (d total / d logits).
"""
import sys

import numpy as np
import torch
import torch.nn.functional as F

inp, outp, official = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, official + "/code")
# losses.py imports numpy and calls .cuda() only inside functions we do not use
from utils.losses import dice_loss  # noqa: E402

d = np.load(inp)
outputs = torch.from_numpy(d["logits"]).requires_grad_(True)
label_batch = torch.from_numpy(d["labels"])
loss_seg = F.cross_entropy(outputs, label_batch)
outputs_soft = F.softmax(outputs, dim=1)
loss_seg_dice = dice_loss(outputs_soft[:, 1, :, :, :], label_batch == 1)
loss = 0.5 * (loss_seg + loss_seg_dice)
loss.backward()
np.savez(outp, ce=loss_seg.detach().numpy(), dice=loss_seg_dice.detach().numpy(),
         total=loss.detach().numpy(), **{"g.logits": outputs.grad.numpy()})

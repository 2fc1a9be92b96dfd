"""Our own restatement (no official code covers SPPS; SPPS has no code): the SPPS objectives and the SimCLR network in PyTorch, written from
the formulas. Imported by `spps_ref.py` (the tests' reference, in float64) and by
`benches/py/step_spps.py` (the training-step bench's PyTorch peer, in float32).

SimCLR + SPPS (solo-learn `simclr_loss_func(z, indexes)` / SupCon form):
  z = normalize(cat[z1, z2, zs]); ids = cat[arange N, arange N, anchor]
  logits = z z^T / tau with the diagonal removed; pos = (ids_i == ids_j), i != j
  L = mean_i  -(1/|P_i|) sum_{p in P_i} log_softmax(logits_i)_p
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


def spps_simclr_loss(z1, z2, zs, anchor, tau):
    """Multi-positive NT-Xent over the two views and the partner views `zs` (rows of `anchor`)."""
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2, zs]), dim=1)
    ids = torch.cat([torch.arange(n), torch.arange(n), anchor.long().cpu()]).to(z.device)
    logits = z @ z.T / tau
    eye = torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(eye, float("-inf"))
    pos = (ids[:, None] == ids[None, :]) & ~eye
    logp = torch.log_softmax(logits, dim=1).masked_fill(eye, 0.0)
    per = -(logp * pos).sum(1) / pos.sum(1)
    return per.mean()


class SimClrNet(nn.Module):
    """torchvision ResNet (CIFAR stem, no fc) + SimCLR head Linear–BN–ReLU–Linear: the names of
    `contrast_core::frameworks::SimClr` (`backbone.*`, `projector.{0,1,3}.*`)."""

    def __init__(self, layers, hidden, out, head_bn=True):
        super().__init__()
        import torchvision

        self.backbone = torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, layers)
        self.backbone.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.backbone.maxpool = nn.Identity()
        self.backbone.fc = nn.Identity()
        mods = [nn.Linear(512, hidden)]
        mods += [nn.BatchNorm1d(hidden) if head_bn else nn.Identity(), nn.ReLU(inplace=True)]
        mods.append(nn.Linear(hidden, out))
        self.projector = nn.Sequential(*mods)

    def forward(self, x):
        return self.projector(self.backbone(x))

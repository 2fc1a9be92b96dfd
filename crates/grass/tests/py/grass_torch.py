"""Our own restatement (no official code runs in the training-step bench, which must work without
the official checkout): the GraSS pre-training step in PyTorch (our own code, written from
`shared/papers/grass-claires.md` §1 and the crate's `sampling.rs` docs): the network, NT-Xent in
the 2N layout, the gradient-guided crops, and the VISSL parameter groups for LARC. Imported by
`benches/py/step_grass.py` (the training-step bench's PyTorch peer).

Sampling (the official `getHeadMapCut` / `DACrop`, control ratio 0.5):
  G = dL/dF (F = layer-4 map);  cam = mean_c(F * mean_hw(G)) / max_hw(...)
  H = bilinear(cam -> S x S, align_corners=False);  B = H > min + r (max - min)
  box = bbox of the 8-connected component whose bbox window holds the largest H (ties: the later
  label in raster order); flat map -> view kept;  x' = nearest(x[box] -> S x S)
"""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

FLAT_TOL = np.float32(1e-5)


class GrassNet(nn.Module):
    """torchvision ResNet trunk (ImageNet stem, no fc) + head Linear-ReLU-Linear: the names of
    `grass::model::GrassNet` (`trunk.*`, `head.{0,2}.*`)."""

    def __init__(self, layers, out_dim):
        super().__init__()
        import torchvision

        self.trunk = torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, layers)
        self.trunk.fc = nn.Identity()
        c = 512
        self.head = nn.Sequential(nn.Linear(c, c), nn.ReLU(inplace=True), nn.Linear(c, out_dim))

    def forward(self, x):
        """Images -> (layer-4 map, projection)."""
        t = self.trunk
        x = t.maxpool(t.relu(t.bn1(t.conv1(x))))
        f = t.layer4(t.layer3(t.layer2(t.layer1(x))))
        return f, self.head(torch.flatten(t.avgpool(f), 1))


def nt_xent(z, tau):
    """SimCLR NT-Xent, rows i and i + N are the two views of sample i; mean over the 2N rows."""
    n2 = z.shape[0]
    z = F.normalize(z, dim=1)
    eye = torch.eye(n2, dtype=torch.bool, device=z.device)
    logits = (z @ z.T / tau).masked_fill(eye, float("-inf"))
    targets = (torch.arange(n2, device=z.device) + n2 // 2) % n2
    return F.cross_entropy(logits, targets)


def heat_map(feat, grad):
    w = grad.mean((2, 3), keepdim=True)
    cam = (feat.detach() * w).mean(1)
    return cam / cam.amax((1, 2), keepdim=True)


def box_from_heat(h, ratio):
    """(r0, r1, c0, c1) of one up-sampled heat map (float32 [S, S]), or None for a flat map."""
    from scipy import ndimage

    lo, hi = h.min(), h.max()
    tol = FLAT_TOL * max(abs(hi), abs(lo), np.float32(1.0))
    if not (hi - lo > tol):
        return None
    thr = lo + np.float32(ratio) * (hi - lo)
    labels, n = ndimage.label(h > thr, structure=np.ones((3, 3), dtype=bool))
    best, best_score = None, None
    for sl in ndimage.find_objects(labels):  # labels in raster order of their first pixel
        score = h[sl].max()
        if best_score is None or score >= best_score:
            best, best_score = (sl[0].start, sl[0].stop, sl[1].start, sl[1].stop), score
    return best


def gradient_guided_crops(x, feat, grad, ratio):
    size = x.shape[2]
    up = F.interpolate(heat_map(feat, grad).unsqueeze(1).float(), size=(size, size), mode="bilinear",
                       align_corners=False).squeeze(1)
    maps = up.cpu().numpy()
    views = []
    for i in range(x.shape[0]):
        b = box_from_heat(maps[i], ratio)
        v = x[i:i + 1]
        if b is not None:
            r0, r1, c0, c1 = b
            v = F.interpolate(v[:, :, r0:r1, c0:c1], size=(size, size), mode="nearest")
        views.append(v)
    return torch.cat(views)


def gs_loss(net, x, tau, ratio):
    """The loss of one gradient-guided-sampling step: first forward -> dL/dF -> crops -> second
    forward."""
    feat, z = net(x)
    (g,) = torch.autograd.grad(nt_xent(z, tau), feat)
    crops = gradient_guided_crops(x, feat.detach(), g, ratio)
    return nt_xent(net(crops)[1], tau)


def grass_groups(net, wd, lr):
    """VISSL groups: BN parameters without weight decay, all others (biases too) with it."""
    bn, rest = [], []
    for n, p in net.named_parameters():
        (bn if (".bn" in n or "downsample.1" in n) else rest).append(p)
    return [{"params": rest, "weight_decay": wd, "lr": lr}, {"params": bn, "weight_decay": 0.0, "lr": lr}]

"""Our own restatement (no official code runs in the training-step bench, which must work without
the official checkout): FBA-Net in PyTorch, the objective and the network, written from the
official cys1102/FBA-Net code/utils/losses.py, code/train_3d.py and code/networks/VNet.py (notes
§1b-§1c). Imported by the bench's PyTorch peers: `benches/py/step_fba_net.py` (whose loss
`xtask bench` checks against ours before timing) and, through `crates/spade/tests/py/spade_torch.py`,
Spade's (the V-Net encoder and decoder blocks). Our FBA-Net itself is checked against the official
code by `crates/fba-net/tests/official_step.rs`.
"""
import torch
import torch.nn.functional as F
from torch import nn


def cos_simi(a, b):
    a = F.normalize(a, dim=1)
    b = F.normalize(b, dim=1)
    return torch.clamp(torch.matmul(a, b.T), min=0.0005, max=0.9995)


def ranked(loss, sim, alpha):
    _, indices = sim.sort(descending=True, dim=1)
    _, rank = indices.sort(dim=1)
    rank = rank - 1
    return loss * torch.exp(-rank.float() * alpha)


def sim_min(fg, bg, alpha=2.5):
    sim = cos_simi(fg, bg)
    loss = -torch.log(1 - sim)
    loss[loss < 0] = 0
    return torch.mean(ranked(loss, sim, alpha))


def sim_max(z, alpha=0.25):
    sim = cos_simi(z, z)
    loss = -torch.log(sim)
    loss[loss < 0] = 0
    return torch.mean(ranked(loss, sim, alpha))


def dice_loss(p, g, ep=1e-8):
    return 1 - (2 * torch.sum(p * g) + ep) / (torch.sum(p) + torch.sum(g) + ep)


def sharpening(P, temp):
    T = 1 / temp
    return P ** T / (P ** T + (1 - P) ** T)



def fba_objective(logits, fgs, bgs, y, lamda, cons_w, temp):
    """Total and terms (total, seg, consist, contra) over the decoders' outputs: `logits[d]`
    [N,2,X,Y,Z], `fgs[d]`/`bgs[d]` [N,D], labels `y` [L,X,Y,Z] of the first L images."""
    D = len(logits)
    L = y.shape[0]
    seg = 0
    l1 = l2 = neg = 0
    y_ori = []
    y_pseudo = []
    for d in range(D):
        p = F.softmax(logits[d][:L], dim=1)
        seg += dice_loss(p[:, 1], y == 1)
        pa = F.softmax(logits[d], dim=1)
        y_ori.append(pa)
        y_pseudo.append(sharpening(pa, temp))
        l1 += sim_max(fgs[d])
        l2 += sim_max(bgs[d])
        neg += sim_min(fgs[d], bgs[d])
    contra = l1 + l2 + neg
    consist = 0
    for i in range(D):
        for j in range(D):
            if i != j:
                consist += torch.mean((y_ori[i] - y_pseudo[j]) ** 2)
    total = lamda * seg + cons_w * consist + contra
    return total, seg, consist, contra


# ---- network: the official V-Net blocks (batchnorm, no residual), FBAPnet with 3 decoders ----
# ---- network: the official V-Net blocks (batchnorm, no residual), FBAPnet with 3 decoders ----
class ConvBlock(nn.Module):
    def __init__(self, n, i, o):
        super().__init__()
        ops = []
        for s in range(n):
            ops += [nn.Conv3d(i if s == 0 else o, o, 3, padding=1), nn.BatchNorm3d(o), nn.ReLU(inplace=True)]
        self.conv = nn.Sequential(*ops)

    def forward(self, x):
        return self.conv(x)


class Down(nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv3d(i, o, 2, padding=0, stride=2), nn.BatchNorm3d(o), nn.ReLU(inplace=True))

    def forward(self, x):
        return self.conv(x)


class Up(nn.Module):
    def __init__(self, i, o, mode):
        super().__init__()
        if mode == 0:
            ops = [nn.ConvTranspose3d(i, o, 2, padding=0, stride=2)]
        elif mode == 1:
            ops = [nn.Upsample(scale_factor=2, mode="trilinear", align_corners=True), nn.Conv3d(i, o, 3, padding=1)]
        else:
            ops = [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv3d(i, o, 3, padding=1)]
        ops += [nn.BatchNorm3d(o), nn.ReLU(inplace=True)]
        self.conv = nn.Sequential(*ops)

    def forward(self, x):
        return self.conv(x)


class Encoder(nn.Module):
    def __init__(self, f):
        super().__init__()
        self.block_one = ConvBlock(1, 1, f)
        self.block_one_dw = Down(f, 2 * f)
        self.block_two = ConvBlock(2, 2 * f, 2 * f)
        self.block_two_dw = Down(2 * f, 4 * f)
        self.block_three = ConvBlock(3, 4 * f, 4 * f)
        self.block_three_dw = Down(4 * f, 8 * f)
        self.block_four = ConvBlock(3, 8 * f, 8 * f)
        self.block_four_dw = Down(8 * f, 16 * f)
        self.block_five = ConvBlock(3, 16 * f, 16 * f)

    def forward(self, x):
        x1 = self.block_one(x)
        x2 = self.block_two(self.block_one_dw(x1))
        x3 = self.block_three(self.block_two_dw(x2))
        x4 = self.block_four(self.block_three_dw(x3))
        x5 = self.block_five(self.block_four_dw(x4))
        return [x1, x2, x3, x4, x5]


class ContraModule(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.activation_head = nn.Conv3d(c, 1, 3, padding=1, stride=2, bias=False)
        self.bn_head = nn.BatchNorm3d(1)

    def forward(self, x):
        ccam = torch.sigmoid(self.bn_head(self.activation_head(x)))
        N, C, H, W, Z = ccam.size()
        c = ccam.reshape(N, 1, H * W * Z)
        return (c / (H * W * Z)).reshape(N, -1), ((1 - c) / (H * W * Z)).reshape(N, -1)


class DecoderBlocks(nn.Module):
    """The V-Net decoder's up-sampling path (`block_five_up` … `block_nine`), skip connections
    added; subclasses add their output layers."""

    def __init__(self, f, mode):
        super().__init__()
        self.block_five_up = Up(16 * f, 8 * f, mode)
        self.block_six = ConvBlock(3, 8 * f, 8 * f)
        self.block_six_up = Up(8 * f, 4 * f, mode)
        self.block_seven = ConvBlock(3, 4 * f, 4 * f)
        self.block_seven_up = Up(4 * f, 2 * f, mode)
        self.block_eight = ConvBlock(2, 2 * f, 2 * f)
        self.block_eight_up = Up(2 * f, f, mode)
        self.block_nine = ConvBlock(1, f, f)

    def decode(self, feats):
        x1, x2, x3, x4, x5 = feats
        x = self.block_six(self.block_five_up(x5) + x4)
        x = self.block_seven(self.block_six_up(x) + x3)
        x = self.block_eight(self.block_seven_up(x) + x2)
        return self.block_nine(self.block_eight_up(x) + x1)


class Decoder(DecoderBlocks):
    def __init__(self, f, mode, vox, dim):
        super().__init__(f, mode)
        self.out_conv = nn.Conv3d(f, 2, 1, padding=0)
        self.cm = ContraModule(2)
        self.f_mlp = nn.Sequential(nn.Linear(vox, dim), nn.ReLU())
        self.b_mlp = nn.Sequential(nn.Linear(vox, dim), nn.ReLU())

    def forward(self, feats):
        o = self.out_conv(self.decode(feats))
        fg, bg = self.cm(o)
        return self.f_mlp(fg), self.b_mlp(bg), o


class FBAPnet(nn.Module):
    def __init__(self, f, vox, dim):
        super().__init__()
        self.encoder = Encoder(f)
        self.decoder1 = Decoder(f, 0, vox, dim)
        self.decoder2 = Decoder(f, 1, vox, dim)
        self.decoder3 = Decoder(f, 2, vox, dim)

    def forward(self, x):
        feats = self.encoder(x)
        return [d(feats) for d in (self.decoder1, self.decoder2, self.decoder3)]


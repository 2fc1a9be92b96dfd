"""Our own restatement (a timing peer, not a reference; no official code covers Spade): Spade pretraining step peer (see benches/src/steps/spade.rs): the same crops and voxel samples
(exported by our side, or random ones of the same shapes for timing)."""
import torch

from step_base import Step, crate_py

crate_py("spade")
from spade_torch import PretrainNet, global_loss, local_loss  # noqa: E402


class SpadeStep(Step):
    def __init__(self, s, images=None, volume=None, centres=None, pair_k=None, pair_counts=None,
                 ia=None, ib=None, pos=None):
        self.s = s
        c = s["crop"]
        self.net = PretrainNet(s["n_filters"], s["proj_dim"], s["local_dim"])
        n = s["batch"]
        v = n // 2
        vox = c[0] * c[1] * c[2]
        m = 64
        self.images = images if images is not None else torch.randn(n, 1, *c)
        self.volume = volume if volume is not None else torch.arange(n) % v
        self.centres = centres if centres is not None else torch.rand(n, 3)
        self.pair_k = pair_k if pair_k is not None else torch.arange(v)
        self.pair_counts = pair_counts if pair_counts is not None else torch.full((v,), m)
        self.ia = ia if ia is not None else torch.randint(0, vox, (v * m,))
        self.ib = ib if ib is not None else torch.randint(0, vox, (v * m,))
        self.pos = pos if pos is not None else torch.rand(v * m, 3) * 32
        self.twin = torch.cat([torch.arange(v, n), torch.arange(v)])
        decay = [p for p in self.net.parameters() if p.ndim > 1]
        no_decay = [p for p in self.net.parameters() if p.ndim <= 1]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": s["weight_decay"]},
                                      {"params": no_decay, "weight_decay": 0.0}], lr=s["lr"])
        self.net.train()

    def loss(self):
        s = self.s
        z, maps = self.net(self.images)
        g = global_loss(z, self.twin, self.volume, self.centres, s["temperature"], s["cross_volume_radius"],
                        s["negative_radius"], s["weight_power"], s["far_radius"])
        n, ch = maps.shape[:2]
        flat = maps.reshape(n, ch, -1)
        v = n // 2
        fa, fb, start = [], [], 0
        for k, cnt in zip(self.pair_k.tolist(), self.pair_counts.tolist()):
            fa.append(flat[k][:, self.ia[start:start + cnt]].T)
            fb.append(flat[k + v][:, self.ib[start:start + cnt]].T)
            start += cnt
        loc = local_loss(torch.cat(fa), torch.cat(fb), self.pos, s["local_temperature"], s["local_negative_radius"])
        return g + s["local_weight"] * loc


CASE = SpadeStep

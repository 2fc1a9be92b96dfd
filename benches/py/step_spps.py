"""Our own restatement (a timing peer, not a reference; no official code covers SPPS): SPPS (SimCLR + semantic positive pairs) step peer (see benches/src/steps/spps.rs)."""
import torch

from step_base import Step, crate_py

crate_py("spps")
from spps_torch import SimClrNet, spps_simclr_loss  # noqa: E402


class SppsStep(Step):
    def __init__(self, s, x1=None, x2=None, xs=None, anchor=None):
        self.s = s
        self.net = SimClrNet(s["layers"], s["hidden"], s["out_dim"], s["head_bn"])
        b, m = s["batch"], s["partners"]
        self.x1 = x1 if x1 is not None else torch.randn(b, 3, 32, 32)
        self.x2 = x2 if x2 is not None else torch.randn(b, 3, 32, 32)
        self.xs = xs if xs is not None else torch.randn(m, 3, 32, 32)
        self.anchor = anchor if anchor is not None else torch.randperm(b)[:m]
        self.opt = torch.optim.SGD(self.net.parameters(), lr=s["lr"], momentum=s["momentum"],
                                   weight_decay=s["weight_decay"])
        self.net.train()

    def loss(self):
        # one forward per view, as our SimCLR (`joint_forward = false`): BN statistics per view
        z1, z2, zs = self.net(self.x1), self.net(self.x2), self.net(self.xs)
        return spps_simclr_loss(z1, z2, zs, self.anchor, self.s["tau"])


CASE = SppsStep

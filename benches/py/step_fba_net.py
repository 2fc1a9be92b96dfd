"""Our own restatement (no official code runs in the training-step bench, which must work without
the official checkout): FBA-Net's step peer (see benches/src/steps/fba_net.rs), the network and
objective of `crates/fba-net/tests/py/fba_torch.py` with SGD, so that the bench times equal work
(before timing, `steps.py check` makes it compute our loss on our weights). Our step itself is
checked against the official code by crates/fba-net/tests/official_step.rs.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from step_base import Step, crate_py

crate_py("fba-net")
from fba_torch import FBAPnet, fba_objective  # noqa: E402


class FbaStep(Step):
    def __init__(self, s, x=None, y=None):
        self.s = s
        p = s["patch"]
        vox = 1
        for d in p:
            vox *= (d + 1) // 2
        self.net = FBAPnet(s["n_filters"], vox, s["dim"])
        b, lab = s["batch"], s["labeled"]
        self.x = x if x is not None else torch.randn(b, 1, *p)
        self.y = y if y is not None else torch.randint(0, 2, (lab, *p))
        self.opt = torch.optim.SGD(self.net.parameters(), lr=s["lr"], momentum=s["momentum"],
                                   weight_decay=s["weight_decay"])
        self.net.train()

    def loss(self):
        s = self.s
        res = self.net(self.x)
        fgs = [r[0] for r in res]
        bgs = [r[1] for r in res]
        logits = [r[2] for r in res]
        return fba_objective(logits, fgs, bgs, self.y, s["lambda_seg"], s["consistency"], s["temperature"])[0]


CASE = FbaStep

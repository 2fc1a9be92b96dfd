"""Our own restatement (no official code runs in the training-step bench, which must work without
the official checkout; the step itself is compared with the official GraSS_train_step in
crates/grass/tests/official_steps.rs): the GraSS gradient-guided-sampling step peer (see
benches/src/steps/grass.rs), LARC (apex, scale mode) over SGD with momentum."""
import torch

from step_base import Step, crate_py

crate_py("grass")
crate_py("contrast-core")
from grass_torch import GrassNet, grass_groups, gs_loss  # noqa: E402
from larc import larc_step  # noqa: E402


class GrassStep(Step):
    def __init__(self, s, x=None):
        self.s = s
        self.net = GrassNet(s["layers"], s["out_dim"])
        b, c = s["batch"], s["crop"]
        self.x = x if x is not None else torch.randn(2 * b, 3, c, c)
        self.opt = torch.optim.SGD(grass_groups(self.net, s["weight_decay"], s["lr"]), lr=s["lr"],
                                   momentum=s["momentum"])
        self.net.train()

    def loss(self):
        return gs_loss(self.net, self.x, self.s["tau"], self.s["threshold_ratio"])

    def check_loss(self):
        with torch.enable_grad():  # the sampling needs dL/dF of the first forward
            return self.loss()

    def update(self):
        larc_step(self.opt, trust=self.s["trust_coefficient"], clip=False, eps=1e-8, exclude=False)


CASE = GrassStep

"""Our own restatement (no official code runs in the training-step bench, which must work without
the official checkout; the step itself is compared with the released training loop in
crates/multinet/tests/official_steps.rs): the MNCLGLF (multinet) step peer (see
benches/src/steps/multinet.rs)."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from step_base import Step, crate_py

crate_py("multinet")
from mnclglf_torch import Bank, MultiNet, mnclglf_objective  # noqa: E402


class MultinetStep(Step):
    def __init__(self, s, x1=None, x2=None, x3=None, bank=None, ptr=None):
        self.s = s
        self.net = MultiNet(s)
        b = s["batch"]
        self.x1, self.x2, self.x3 = (x if x is not None else torch.randn(b, 3, 32, 32) for x in (x1, x2, x3))
        if bank is None:
            bank = F.normalize(torch.randn(s["bank_size"], s["proj_out"]), dim=1)
        self.bank = Bank(bank, 0 if ptr is None else int(ptr.reshape(-1)[0]))
        self.params = [p for n, p in self.net.named_parameters() if not n.startswith("ema.")]
        self.opt = torch.optim.SGD(self.params, lr=s["lr"], momentum=s["momentum"],
                                   weight_decay=s["weight_decay"])
        self.net.train()

    def forward_loss(self):
        s = self.s
        p, k1, k2, e1, e3 = self.net(self.x1, self.x2, self.x3)
        j1, j3 = self.bank.nearest(e1), self.bank.nearest(e3)
        self.bank.push(e3)
        return mnclglf_objective(p[0], p[1], p[2], k1, k2, j1, j3, s["tau_global_local"], s["tau_nn"],
                                 s["nn_weight"], s["released_code_l1"])[0]

    def loss(self):
        self.net.update_ema()
        return self.forward_loss()

    def check_loss(self):
        return self.forward_loss()  # the Rust check runs the learner's loss without the EMA step

    def update(self):
        torch.nn.utils.clip_grad_norm_(self.params, self.s["clip_grad_norm"])
        self.opt.step()

    def to(self, dev):
        super().to(dev)
        self.bank.rows = self.bank.rows.to(dev)


CASE = MultinetStep

"""Our own restatement (a timing peer, not a reference; no official code covers CLAIRES): CLAIRES step peer (see benches/src/steps/claires.rs): AdamW with the heads (decayed), image
and text encoders at their own rates."""
import torch

from step_base import Step, crate_py

crate_py("claires")
from claires_torch import ClairesNet, soft_clip_loss  # noqa: E402


class ClairesStep(Step):
    def __init__(self, s, x=None, ids=None, mask=None):
        self.s = s
        self.net = ClairesNet(s["layers"], s["bert"], s["embed_dim"], s["head_dropout"])
        b, l, px = s["batch"], s["tokens"], s["image"]
        self.x = x if x is not None else torch.randn(b, 3, px, px)
        if ids is None:
            lens = torch.randint(8, l + 1, (b, 1))
            mask = (torch.arange(l)[None, :] < lens).long()
            ids = torch.randint(1000, 30000, (b, l)) * mask
        self.ids, self.mask = ids, mask
        n = self.net
        heads = list(n.image_proj.parameters()) + list(n.text_proj.parameters())
        self.opt = torch.optim.AdamW([
            {"params": heads, "lr": s["lr_head"], "weight_decay": s["weight_decay"]},
            {"params": n.image.parameters(), "lr": s["lr_image"], "weight_decay": 0.0},
            {"params": n.text.parameters(), "lr": s["lr_text"], "weight_decay": 0.0},
        ], betas=tuple(s["betas"]), eps=s["eps"])
        self.net.train()

    def loss(self):
        img, txt = self.net(self.x, self.ids, self.mask)
        return soft_clip_loss(img, txt, self.s["tau"])

    def check_loss(self):
        # dropout off (text encoder and heads in eval mode), BatchNorm in training mode as in the step
        n = self.net
        for m in (n.text, n.image_proj, n.text_proj):
            m.eval()
        loss = self.loss()
        self.net.train()
        return loss


CASE = ClairesStep

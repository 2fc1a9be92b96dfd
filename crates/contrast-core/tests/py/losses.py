"""Our own restatement (no official code covers these forms): PyTorch statements of contrast_core::loss, written from the original codes' formulas.

InfoNce hard/soft (PatchMix module/loss.py + timm SoftTargetCrossEntropy; as PatchMix uses it,
it is also inside the official PatchMix step of crates/patchmix/tests/official_step.rs),
MultiPositiveInfoNce (HobbitLong/SupContrast SupConLoss, anchors without positives excluded),
our soft-target CLIP and SoftClipLoss (moein-shariatnia/OpenAI-CLIP CLIP.py). Not here because an
official comparison covers them: NtXent (google-research/simclr's objective.py,
crates/spps/tests/official_simclr.rs; VISSL's SimclrInfoNCELoss in the GraSS fork,
crates/grass/tests/official_sampling.rs) and the hard CLIP loss (open_clip's ClipLoss,
crates/claires/tests/official_clip.rs).

Usage: python losses.py IN.npz OUT.npz
"""
import sys

import numpy as np
import torch
import torch.nn.functional as F

inp = {k: torch.from_numpy(v) for k, v in np.load(sys.argv[1]).items()}
out = {}


def leaf(name):
    return inp[name].clone().requires_grad_(True)


def save(tag, loss, **leaves):
    loss.backward()
    out[f"{tag}.loss"] = loss.detach().numpy()
    for n, t in leaves.items():
        out[f"{tag}.grad_{n}"] = t.grad.numpy()


def soft_ce(logits, t):
    return torch.sum(-t * F.log_softmax(logits, dim=-1), dim=-1).mean()


# InfoNCE, hard targets with extra keys (positive of query i is key i)
tau = float(inp["tau"])
q, k = leaf("q"), leaf("k")
logits = F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / tau
save("info_hard", F.cross_entropy(logits, torch.arange(q.shape[0])), q=q, k=k)

# InfoNCE, soft targets (PatchMix MultiTempContrastiveLoss, one temperature)
q, k = leaf("q"), leaf("k")
logits = F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / tau
save("info_soft", soft_ce(logits, inp["soft"]), q=q, k=k)

# SupCon (HobbitLong/SupContrast SupConLoss, contrast_mode='all' with one view, base_T = T)
def supcon(features, mask, temperature):
    nn_ = features.shape[0]
    adc = features @ features.T / temperature
    logits_max, _ = torch.max(adc, dim=1, keepdim=True)
    logits = adc - logits_max.detach()
    logits_mask = torch.scatter(torch.ones_like(mask), 1, torch.arange(nn_).view(-1, 1), 0)
    mask = mask * logits_mask
    exp_logits = torch.exp(logits) * logits_mask
    log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True))
    npos = mask.sum(1)
    valid = npos > 0  # our departure: anchors without positives are excluded
    mean_log_prob_pos = (mask * log_prob).sum(1)[valid] / npos[valid]
    return -mean_log_prob_pos.mean()


f = leaf("feat")
labels = inp["labels"]
mask = (labels[:, None] == labels[None, :]).float()
tm = float(inp["tau_mp"])
save("supcon", supcon(F.normalize(f, dim=1), mask, tm), f=f)

# weighted multi-positive, queries vs keys, no self exclusion
q, k = leaf("q"), leaf("k")
w = inp["w"]
logp = F.log_softmax(F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / tm, dim=1)
npos = w.sum(1)
valid = npos > 0
per = -(w * logp).sum(1)[valid] / npos[valid]
save("mp_qk", per.mean(), q=q, k=k)

# CLIP with given soft targets (text->image direction: targets^T renormalised by rows)
img, txt = leaf("img"), leaf("txt")
ls = torch.tensor(float(inp["logit_scale2"]), dtype=torch.float32, requires_grad=True)
i_, t_ = F.normalize(img, dim=1), F.normalize(txt, dim=1)
lpi = ls.exp() * i_ @ t_.T
lpt = ls.exp() * t_ @ i_.T
tg = inp["clip_targets"]
tt = tg.T / tg.T.sum(1, keepdim=True)
loss = (soft_ce(lpi, tg) + soft_ce(lpt, tt)) / 2
loss.backward()
out["clip_soft.loss"] = loss.detach().numpy()
out["clip_soft.grad_img"] = img.grad.numpy()
out["clip_soft.grad_txt"] = txt.grad.numpy()
out["clip_soft.grad_scale"] = ls.grad.detach().numpy().reshape(1)


# OpenAI-CLIP tutorial (moein-shariatnia) CLIPModel.forward, targets not detached
def tutorial(image_embeddings, text_embeddings, temperature):
    logits = (text_embeddings @ image_embeddings.T) / temperature
    images_similarity = image_embeddings @ image_embeddings.T
    texts_similarity = text_embeddings @ text_embeddings.T
    targets = F.softmax((images_similarity + texts_similarity) / 2 * temperature, dim=-1)

    def cross_entropy(preds, targets):
        return (-targets * F.log_softmax(preds, dim=-1)).sum(1)

    texts_loss = cross_entropy(logits, targets)
    images_loss = cross_entropy(logits.T, targets.T)
    return ((images_loss + texts_loss) / 2.0).mean()


for tag, tmp in (("tut1", 1.0), ("tut05", 0.5)):
    img, txt = leaf("pimg"), leaf("ptxt")
    save(tag, tutorial(img, txt, tmp), img=img, txt=txt)

np.savez(sys.argv[2], **out)

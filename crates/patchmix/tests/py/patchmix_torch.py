"""The PatchMix objective in PyTorch (our own code, from the equations in module/loss.py and
main_pretrain.py of the official repository). Imported by `patchmix_loss.py` (the tests'
reference) and by `benches/py/step_patchmix.py` (the training-step bench's PyTorch peer).

L = CE(q1, k2, I_s) + 1/2 CE(mq2, k1, T_mix) + 1/2 CE(mq2, mk1, T_mixmix)
    + sum_c [CE(lq_c, k1, I) + CE(lq_c, k2, I)] / n + sum_c [CE(lmq_c, k1, T_mix) + CE(lmq_c, k2, T_mix)] / n
(I_s: the identity smoothed by s, as the official `no_mixer = PatchMixer(mix_p=0.0, mix_n=1)` builds
it with PatchMixer's default smoothing=0.1: s/B everywhere, 1 - s + s/B on the diagonal)
with CE(q, k, T) = mean_i sum_j -T_ij log_softmax_j(norm(q)_i . norm(k)_j / tau), keys without gradient.
"""
import torch
import torch.nn.functional as F


def soft_targets(B, m):
    """(T_mix, T_mixmix) from their definition: m sources per mixed image, ring distance."""
    mix_t = torch.zeros(B, B)
    mixmix_t = torch.zeros(B, B)
    for g in range(B):
        for j in range(m):
            mix_t[g, (g + j) % B] += 1.0 / m
        for d in range(-(m - 1), m):
            mixmix_t[g, (g + d) % B] += (m - abs(d)) / (m * m)
    return mix_t, mixmix_t


def source_target(B, s):
    """The official `PatchMixer._one_hot` for an unmixed batch: off = s/B, on = (1 - s)/1 + off."""
    off = s / B
    return torch.full((B, B), off).scatter_(1, torch.arange(B).view(-1, 1), (1.0 - s) + off)


def ce(q, k, target, tau):
    q = F.normalize(q, dim=1)
    with torch.no_grad():
        k = F.normalize(k, dim=1)
    logits = torch.einsum("nc,mc->nm", q, k) / tau
    return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()


def patchmix_objective(q1, k1, k2, mq2, mk1, lq, lmq, tau, mix_t, mixmix_t, src_s=0.1):
    """(total, orig, mix_orig, mix_mix, multi, multi_mix); `lq`/`lmq` are lists of local-crop
    queries (possibly empty); `src_s` smooths the source target (official 0.1)."""
    eye = source_target(q1.shape[0], src_s).to(q1.device)
    orig = ce(q1, k2, eye, tau)
    mix_orig = ce(mq2, k1, mix_t, tau)
    mix_mix = ce(mq2, mk1, mixmix_t, tau)
    n = len(lq)
    multi = sum((ce(lq[c], k1, eye, tau) + ce(lq[c], k2, eye, tau)) / n for c in range(n)) if n else q1.new_zeros(())
    multi_mix = (sum((ce(lmq[c], k1, mix_t, tau) + ce(lmq[c], k2, mix_t, tau)) / n for c in range(n))
                 if n else q1.new_zeros(()))
    total = orig + 0.5 * (mix_orig + mix_mix) + multi + multi_mix
    return total, orig, mix_orig, mix_mix, multi, multi_mix

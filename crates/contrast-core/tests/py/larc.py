"""Our own restatement (no official code: apex is not installed): LARC after NVIDIA apex `apex/parallel/LARC.py` (as VISSL, and so GraSS, use it), with the
solo-learn `solo/utils/lars.py` exclusion of 1-D parameters: the PyTorch reference of
`contrast_core::optim::lars`. Used by `optim.py` (the optimiser tests) and by the GraSS
training-step peer (`benches/py/step_grass.py`).

`larc_step(opt, ...)` wraps one `opt.step()` of a torch SGD whose groups carry the weight
decay: it absorbs the decay into the gradient, scales it by the adaptive rate, and steps the
SGD with its decay set to 0 (restored afterwards).
"""
import torch


def larc_step(opt, trust, clip, eps, exclude):
    with torch.no_grad():
        saved = []
        for group in opt.param_groups:
            wd = group["weight_decay"]
            saved.append(wd)
            group["weight_decay"] = 0
            for p in group["params"]:
                if p.grad is None:
                    continue
                if exclude and p.ndim == 1:
                    continue
                param_norm = torch.norm(p.data)
                grad_norm = torch.norm(p.grad.data)
                if param_norm != 0 and grad_norm != 0:
                    adaptive_lr = trust * param_norm / (grad_norm + param_norm * wd + eps)
                    if clip:
                        adaptive_lr = min(adaptive_lr / group["lr"], 1)
                    p.grad.data += wd * p.data
                    p.grad.data *= adaptive_lr
    opt.step()
    for g, wd in zip(opt.param_groups, saved):
        g["weight_decay"] = wd

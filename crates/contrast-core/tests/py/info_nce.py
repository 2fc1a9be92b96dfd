"""Our own restatement (no official code covers core info_nce on its own; PatchMix's use of InfoNCE is inside the official PatchMix step): contrast_core::loss::info_nce in PyTorch (hard diagonal targets)."""
import sys

import numpy as np
import torch
import torch.nn.functional as F

inp = np.load(sys.argv[1])
tau = float(sys.argv[3])
q = torch.from_numpy(inp["q"]).requires_grad_(True)
k = torch.from_numpy(inp["k"]).requires_grad_(True)
logits = F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / tau
loss = F.cross_entropy(logits, torch.arange(q.shape[0]))
loss.backward()
np.savez(sys.argv[2], loss=loss.detach().numpy(), grad_q=q.grad.numpy(), grad_k=k.grad.numpy())

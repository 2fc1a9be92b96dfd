"""Our own restatement (no official code covers the kNN evaluation here): contrast_core::eval::knn, the weighted-vote formula written as DINO's
`knn_classifier` (one-hot retrieval × exp(s/T) weights, cosine) and solo-learn's
`WeightedKNNClassifier` (1/(d+eps) weights, euclidean), on the same features.

argv[3]: comma-separated k values; argv[4]: T; argv[5]: num_classes; argv[6]: eps.
Outputs per k and metric: class scores of every query, top-1 / top-5 accuracy (percent);
top-5 ignores classes without a vote (documented in knn.rs).
"""
import sys

import numpy as np
import torch
import torch.nn.functional as F

inp = np.load(sys.argv[1])
ks = [int(k) for k in sys.argv[3].split(",")]
T = float(sys.argv[4])
C = int(sys.argv[5])
eps = float(sys.argv[6])
train_f = torch.from_numpy(inp["train_f"])
train_y = torch.from_numpy(inp["train_y"])
test_f = torch.from_numpy(inp["test_f"])
test_y = torch.from_numpy(inp["test_y"])
out = {}

for metric in ["cosine", "euclidean"]:
    if metric == "cosine":
        similarity = F.normalize(test_f, dim=1) @ F.normalize(train_f, dim=1).T
    else:
        similarity = 1 / (torch.cdist(test_f, train_f) + eps)
    B = test_f.shape[0]
    for k in ks:
        k_eff = min(k, train_f.shape[0])
        distances, indices = similarity.topk(k_eff, largest=True, sorted=True)
        candidates = train_y.view(1, -1).expand(B, -1)
        retrieved = torch.gather(candidates, 1, indices)
        one_hot = torch.zeros(B * k_eff, C).scatter_(1, retrieved.view(-1, 1), 1)
        w = distances.div(T).exp() if metric == "cosine" else distances
        probs = torch.sum(one_hot.view(B, -1, C) * w.view(B, -1, 1), 1)
        sorted_probs, pred = probs.sort(1, True)
        # A class without a vote is not a prediction (DINO would count it in arbitrary order).
        correct = pred.eq(test_y.view(-1, 1)) & (sorted_probs > 0)
        out[f"{metric}_scores_k{k}"] = probs.numpy()
        out[f"{metric}_top1_k{k}"] = np.array(correct[:, :1].sum().item() * 100.0 / B)
        out[f"{metric}_top5_k{k}"] = np.array(correct[:, :min(5, C)].sum().item() * 100.0 / B)

np.savez(sys.argv[2], **out)

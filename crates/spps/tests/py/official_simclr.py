"""The OFFICIAL SimCLR objective and lr schedule (google-research/simclr, checked out by `cargo xtask
official fetch simclr` into `.official/simclr`), re-expressed in PyTorch line by line: the
official code is TensorFlow, which this workspace does not install. Every restated line ends
with a comment `# <file>:<line> <the official line>`; before anything runs, this script reads
those lines in the checkout and stops unless each one reads exactly so (whitespace aside).

* `add_contrastive_loss` of `objective.py` (TF1; `tf2/objective.py` computes the same value),
  one replica (`tpu_context=None`), `weights=1.0`: `tf.losses.softmax_cross_entropy` with a
  scalar weight is the mean over the batch (reduction SUM_BY_NONZERO_WEIGHTS), so the loss is
  `loss_a + loss_b`, two means over N rows.
* `WarmUpAndCosineDecay` and `get_train_steps` of `tf2/model.py` (linear lr scaling).

Modes (argv[3] is the checkout, argv[4] the mode):
* `loss T`: inputs `z` [2N, D]; outputs `loss` and `g_z` (dL/dz), float32.
* `steps T layers hidden out lr_base wd momentum warmup_epochs epochs examples batch steps`:
  N training steps of a SimCLR network on our views. The network is NOT official code (the
  official ResNet and head are TensorFlow): torchvision's ResNet with the CIFAR stem and the
  head Linear-BN-ReLU-Linear, the layout and names of our `SimClr` (`backbone.*`,
  `projector.{0,1,3}.*`); the optimiser is PyTorch's SGD (momentum, weight decay on every
  variable), what our `optim.optimizer = "sgd"` is. Official in each step: both views through
  the network as one batch (`tf2/model.py`), the loss above, the lr of the schedule above.
  Inputs: `w.<name>` (our initial variables) and `x1_k`, `x2_k` (the step's two views).
  Outputs: `loss_k`, `lr_k` per step, `g1.<name>` (gradients of step 1), `w.<name>` after.
"""
import math
import os
import re
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

inp, outp, official, mode = sys.argv[1:5]


def check_citations():
    """Each `# file:line text` comment of this script must be the official line `line` of `file`."""
    me = open(os.path.abspath(__file__), encoding="utf-8").read().splitlines()
    cited = 0
    for i, line in enumerate(me, 1):
        m = re.search(r"#\s((?:tf2/)?[a-z_]+\.py):(\d+) (.+)$", line)
        if not m:
            continue
        path, n, text = m.group(1), int(m.group(2)), m.group(3).strip()
        src = open(os.path.join(official, path), encoding="utf-8").read().splitlines()
        got = src[n - 1].strip() if n <= len(src) else "<past the end>"
        if got != text:
            sys.exit(f"official_simclr.py:{i} cites {path}:{n} as `{text}` but the checkout reads `{got}`")
        cited += 1
    if cited < 20:
        sys.exit(f"only {cited} citations found")


check_citations()

LARGE_NUM = 1e9  # objective.py:26 LARGE_NUM = 1e9


def l2_normalize(x, axis):
    # tf.math.l2_normalize(x, axis, epsilon=1e-12) as TensorFlow defines it:
    # x * rsqrt(maximum(reduce_sum(square(x), axis, keepdims=True), epsilon))
    return x * torch.rsqrt(torch.clamp((x * x).sum(axis, keepdim=True), min=1e-12))


def softmax_cross_entropy(onehot_labels, logits):
    # tf.compat.v1.losses.softmax_cross_entropy(onehot_labels, logits, weights=1.0): per row
    # softmax_cross_entropy_with_logits_v2, then reduction SUM_BY_NONZERO_WEIGHTS with a scalar
    # weight = the mean over the rows
    return (-(onehot_labels * F.log_softmax(logits, dim=-1)).sum(-1)).mean()


def add_contrastive_loss(hidden, hidden_norm=True, temperature=1.0):  # objective.py:34 def add_contrastive_loss(hidden,
    if hidden_norm:  # objective.py:54 if hidden_norm:
        hidden = l2_normalize(hidden, -1)  # objective.py:55 hidden = tf.math.l2_normalize(hidden, -1)
    hidden1, hidden2 = torch.chunk(hidden, 2, 0)  # objective.py:56 hidden1, hidden2 = tf.split(hidden, 2, 0)
    batch_size = hidden1.shape[0]  # objective.py:57 batch_size = tf.shape(hidden1)[0]
    # one replica: the `else` branch
    hidden1_large = hidden1  # objective.py:70 hidden1_large = hidden1
    hidden2_large = hidden2  # objective.py:71 hidden2_large = hidden2
    labels = F.one_hot(torch.arange(batch_size), batch_size * 2).to(hidden.dtype)  # objective.py:72 labels = tf.one_hot(tf.range(batch_size), batch_size * 2)
    masks = F.one_hot(torch.arange(batch_size), batch_size).to(hidden.dtype)  # objective.py:73 masks = tf.one_hot(tf.range(batch_size), batch_size)

    logits_aa = torch.matmul(hidden1, hidden1_large.T) / temperature  # objective.py:75 logits_aa = tf.matmul(hidden1, hidden1_large, transpose_b=True) / temperature
    logits_aa = logits_aa - masks * LARGE_NUM  # objective.py:76 logits_aa = logits_aa - masks * LARGE_NUM
    logits_bb = torch.matmul(hidden2, hidden2_large.T) / temperature  # objective.py:77 logits_bb = tf.matmul(hidden2, hidden2_large, transpose_b=True) / temperature
    logits_bb = logits_bb - masks * LARGE_NUM  # objective.py:78 logits_bb = logits_bb - masks * LARGE_NUM
    logits_ab = torch.matmul(hidden1, hidden2_large.T) / temperature  # objective.py:79 logits_ab = tf.matmul(hidden1, hidden2_large, transpose_b=True) / temperature
    logits_ba = torch.matmul(hidden2, hidden1_large.T) / temperature  # objective.py:80 logits_ba = tf.matmul(hidden2, hidden1_large, transpose_b=True) / temperature

    loss_a = softmax_cross_entropy(  # objective.py:82 loss_a = tf.losses.softmax_cross_entropy(
        labels, torch.cat([logits_ab, logits_aa], 1))  # objective.py:83 labels, tf.concat([logits_ab, logits_aa], 1), weights=weights)
    loss_b = softmax_cross_entropy(  # objective.py:84 loss_b = tf.losses.softmax_cross_entropy(
        labels, torch.cat([logits_ba, logits_bb], 1))  # objective.py:85 labels, tf.concat([logits_ba, logits_bb], 1), weights=weights)
    loss = loss_a + loss_b  # objective.py:86 loss = loss_a + loss_b

    return loss, logits_ab, labels  # objective.py:88 return loss, logits_ab, labels


class FLAGS:
    """The flags the schedule reads (`tf2/run.py` defines them; values from argv)."""


def get_train_steps(num_examples):  # tf2/model.py:72 def get_train_steps(num_examples):
    return FLAGS.train_steps or (  # tf2/model.py:74 return FLAGS.train_steps or (
        num_examples * FLAGS.train_epochs // FLAGS.train_batch_size + 1)  # tf2/model.py:75 num_examples * FLAGS.train_epochs // FLAGS.train_batch_size + 1)


def cosine_decay(initial_learning_rate, decay_steps, step):
    # tf.keras.experimental.CosineDecay(initial, decay_steps, alpha=0.0)(step):
    # initial * ((1 - alpha) * 0.5 * (1 + cos(pi * min(step, decay_steps) / decay_steps)) + alpha)
    s = min(step, decay_steps)
    return initial_learning_rate * 0.5 * (1.0 + math.cos(math.pi * s / decay_steps))


def warmup_and_cosine_decay(base_learning_rate, num_examples, step):  # tf2/model.py:87 def __call__(self, step):
    warmup_steps = int(  # tf2/model.py:89 warmup_steps = int(
        round(FLAGS.warmup_epochs * num_examples //  # tf2/model.py:90 round(FLAGS.warmup_epochs * self.num_examples //
              FLAGS.train_batch_size))  # tf2/model.py:91 FLAGS.train_batch_size))
    # learning_rate_scaling == 'linear'
    scaled_lr = base_learning_rate * FLAGS.train_batch_size / 256.  # tf2/model.py:93 scaled_lr = self.base_learning_rate * FLAGS.train_batch_size / 256.
    learning_rate = (  # tf2/model.py:99 learning_rate = (
        step / float(warmup_steps) * scaled_lr if warmup_steps else scaled_lr)  # tf2/model.py:100 step / float(warmup_steps) * scaled_lr if warmup_steps else scaled_lr)

    total_steps = get_train_steps(num_examples)  # tf2/model.py:103 total_steps = get_train_steps(self.num_examples)
    # tf2/model.py:105-108: tf.where(step < warmup_steps, learning_rate, cosine_decay(step - warmup_steps))
    return learning_rate if step < warmup_steps else cosine_decay(scaled_lr, total_steps - warmup_steps, step - warmup_steps)


d = np.load(inp)
out = {}
if mode == "loss":
    T = float(sys.argv[5])
    z = torch.from_numpy(d["z"]).requires_grad_(True)
    loss, _, _ = add_contrastive_loss(z, hidden_norm=True, temperature=T)
    loss.backward()
    out["loss"] = loss.detach().numpy().reshape(1)
    out["g_z"] = z.grad.numpy()
elif mode == "steps":
    import torchvision

    (T, layers, hidden, out_dim, lr_base, wd, momentum, warmup_epochs, epochs, examples, batch,
     steps) = sys.argv[5:17]
    T, lr_base, wd, momentum = float(T), float(lr_base), float(wd), float(momentum)
    layers = [int(v) for v in layers.split(",")]
    hidden, out_dim, steps, examples = int(hidden), int(out_dim), int(steps), int(examples)
    FLAGS.train_steps = 0
    FLAGS.warmup_epochs = int(warmup_epochs)
    FLAGS.train_epochs = int(epochs)
    FLAGS.train_batch_size = int(batch)

    class Net(nn.Module):
        """Not official (see the docstring): torchvision ResNet, CIFAR stem, + our head layout."""

        def __init__(self):
            super().__init__()
            self.backbone = torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, layers)
            self.backbone.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
            self.backbone.maxpool = nn.Identity()
            self.backbone.fc = nn.Identity()
            self.projector = nn.Sequential(nn.Linear(512, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                                           nn.Linear(hidden, out_dim))

        def forward(self, x):
            return self.projector(self.backbone(x))

    net = Net()
    state = {k[2:]: torch.from_numpy(d[k]) for k in d.files if k.startswith("w.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        sys.exit(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.0, momentum=momentum, weight_decay=wd)
    # the base lr of the flags: our `lr` is the scaled one (lr_base · batch / 256)
    base_learning_rate = lr_base * 256.0 / FLAGS.train_batch_size
    for k in range(steps):
        lr = warmup_and_cosine_decay(base_learning_rate, examples, k)  # optimizer.iterations = k
        for g in opt.param_groups:
            g["lr"] = lr
        features = torch.cat([torch.from_numpy(d[f"x1_{k}"]), torch.from_numpy(d[f"x2_{k}"])], 0)  # tf2/model.py:259 features = tf.concat(features_list, 0)  # (num_transforms * bsz, h, w, c)
        hiddens = net(features)
        loss, _, _ = add_contrastive_loss(hiddens, hidden_norm=True, temperature=T)  # tf2/run.py:582 con_loss, logits_con, labels_con = obj_lib.add_contrastive_loss(
        opt.zero_grad()
        loss.backward()
        if k == 0:
            for name, p in net.named_parameters():
                out["g1." + name] = p.grad.numpy().copy()
        opt.step()
        out[f"loss_{k}"] = loss.detach().numpy().reshape(1)
        out[f"lr_{k}"] = np.array([lr], dtype=np.float64)
    for name, t in net.state_dict().items():
        if not name.endswith("num_batches_tracked"):
            out["w." + name] = t.numpy().astype(np.float32)
else:
    sys.exit(f"unknown mode {mode}")
np.savez(outp, **out)

"""Shared parts of the PyTorch step peers (`benches/py/step_<case>.py`): the `Step` protocol
that `steps.py` times, and the paths of the method crates' PyTorch modules."""
import os
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def crate_py(crate):
    """Make `crates/<crate>/tests/py` importable (the PyTorch modules the crate's tests use)."""
    p = os.path.join(ROOT, "crates", crate, "tests", "py")
    if p not in sys.path:
        sys.path.insert(0, p)


def peak_rss_mib():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


class Step:
    """One training step: `loss()` (forward + objective) then backward and the optimiser."""

    def to(self, dev):
        """Move the network (its parameters in place, so the optimiser keeps them) and inputs."""
        self.net.to(dev)
        for k, v in list(vars(self).items()):
            if torch.is_tensor(v):
                setattr(self, k, v.to(dev))

    def update(self):
        self.opt.step()

    def check_loss(self):
        """The loss the check compares (no state update other than what the Rust side does)."""
        return self.loss()

    def step(self):
        loss = self.loss()
        self.opt.zero_grad(set_to_none=False)
        loss.backward()
        self.update()
        return loss.item()

    def step_phases(self):
        """Seconds in (forward + loss, backward, optimiser) of one step."""
        t = time.perf_counter()
        loss = self.loss()
        loss.item()
        f = time.perf_counter() - t
        self.opt.zero_grad(set_to_none=False)
        loss.backward()
        b = time.perf_counter() - t - f
        self.update()
        return f, b, time.perf_counter() - t - f - b



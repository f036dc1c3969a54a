"""Watch a training run from outside: a global torch forward hook records, for every
training-mode forward of a compmech model (integer token input), the input tokens, the
parameters before the update and the gradient of the loss with respect to the logits.

With a loss that is a mean over the ``B x L`` predicted positions of a cross-entropy against a
target distribution ``q``, ``dloss/dlogits = (softmax(logits) - q) / (B L)``, so the targets
the step used are recovered exactly, whatever the trainer's internals look like."""
from __future__ import annotations

import torch
from torch.nn.modules.module import register_module_forward_hook


class TrainSpy:
    def __init__(self):
        self.steps = []  # dicts: x, logits, params (list of tensors), grad (filled on backward)

    def __enter__(self):
        self._handle = register_module_forward_hook(self._hook)
        return self

    def __exit__(self, *exc):
        self._handle.remove()
        return False

    def _hook(self, module, args, out):
        if not (module.training and torch.is_grad_enabled() and isinstance(out, torch.Tensor)):
            return
        if not type(module).__module__.startswith("compmech") or not args:
            return
        x = args[0]
        if not (isinstance(x, torch.Tensor) and not x.is_floating_point() and x.ndim == 2 and out.ndim == 3):
            return
        rec = {"x": x.detach().clone(), "logits": out.detach().clone(),
               "params": [p.detach().clone() for p in module.parameters()], "module": module}

        def keep(g, rec=rec):
            rec["grad"] = g.detach().clone()

        if out.requires_grad:
            out.register_hook(keep)
        self.steps.append(rec)

    def targets(self, i: int) -> torch.Tensor:
        """The target distributions ``(B, L, V)`` of training step ``i`` (0-based)."""
        rec = self.steps[i]
        B, L, _ = rec["logits"].shape
        return torch.softmax(rec["logits"].double(), -1) - rec["grad"].double() * (B * L)

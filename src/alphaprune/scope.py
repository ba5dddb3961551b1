"""What a public call of alphaprune may change in the caller's process, put back after it.

A notebook calls ``train``, ``prune``, ``evaluate``, ``load_model`` ... in one long-lived
process. Inside a call alphaprune needs autograd on and float32 as torch's default dtype
(its files hold float32 weights, its probes are float32), seeds torch's global generator
for its own runs and draws from it when it builds modules, and Lightning replaces the
SIGINT handler. :func:`isolated` gives the call those conditions and, when the outermost
such call ends (returns or raises), restores the caller's grad mode, default dtype, global
generator state and SIGINT handler. Calls nested inside one (compare's prune runs) share
their caller's scope, so a comparison's rows see the generator as they always did.
"""

from __future__ import annotations

import functools
import signal
import threading

import torch

__all__ = ["isolated"]

_depth = threading.local()


def isolated(fn):
    """Decorate a public function: see the module's docstring."""

    @functools.wraps(fn)
    def call(*args, **kwargs):
        if getattr(_depth, "n", 0):
            return fn(*args, **kwargs)
        grad, dtype = torch.is_grad_enabled(), torch.get_default_dtype()
        rng = torch.random.get_rng_state()
        main = threading.current_thread() is threading.main_thread()
        handler = signal.getsignal(signal.SIGINT) if main else None
        _depth.n = 1
        torch.set_grad_enabled(True)
        torch.set_default_dtype(torch.float32)
        try:
            return fn(*args, **kwargs)
        finally:
            _depth.n = 0
            torch.set_grad_enabled(grad)
            torch.set_default_dtype(dtype)
            torch.random.set_rng_state(rng)
            if handler is not None:
                signal.signal(signal.SIGINT, handler)

    return call

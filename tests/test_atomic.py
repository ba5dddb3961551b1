"""Crash-safe writes (``alphaprune.atomic``)."""

import os
import signal
from collections import OrderedDict

import pytest
import torch

from alphaprune.atomic import atomic_torch_save


class _CtrlCWhilePickled:
    """Sends this process a Ctrl-C while torch.save is writing it."""

    def __reduce__(self):
        os.kill(os.getpid(), signal.SIGINT)
        return (OrderedDict, ())  # a global torch.load(weights_only=True) allows


def test_a_ctrl_c_during_a_save_is_an_interrupt_after_the_file_is_whole(tmp_path):
    # Python's own handler: a suite started in the background would ignore SIGINT
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            atomic_torch_save({"w": torch.arange(3.0), "x": _CtrlCWhilePickled()}, tmp_path / "a.pt")
    finally:
        signal.signal(signal.SIGINT, old)
    got = torch.load(tmp_path / "a.pt", weights_only=True)
    assert torch.equal(got["w"], torch.arange(3.0)) and got["x"] == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt"]  # no temporary file left

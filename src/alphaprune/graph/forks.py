"""Many forward passes of one traced network that differ only from some node on.

The sensitivity table (:func:`alphaprune.blend.sensitivity.unit_sensitivity`) scores every
unit cut to every width of a grid, on the same images. A cut hooks only a few modules (the
unit's consumers, or a stream's writers), so everything the graph computes before the first
of them is the same for every cut of that unit and for the uncut network. :class:`Forks`
runs that shared part once per batch and lets each cut run only the rest: at each fork
position the uncut run stops and every cut waiting there resumes from a copy of what is
live, with its hooks in place. The values are those of ``gm(x)``: the same nodes run the
same modules and functions on the same inputs.

Each value is dropped after its last use, so a fork holds only what is live at its node
(a few tensors), not the whole network's activations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.fx as fx

__all__ = ["Forks"]


class Forks:
    """Runs ``gm``'s graph node by node, with forks (see the module docstring)."""

    def __init__(self, gm: fx.GraphModule):
        self.nodes = list(gm.graph.nodes)
        at = {n: i for i, n in enumerate(self.nodes)}
        self._dies: list[list[fx.Node]] = [[] for _ in self.nodes]  # freed after node i
        for n in self.nodes:
            self._dies[max([at[u] for u in n.users], default=at[n])].append(n)
        self._first: dict[str, int] = {}
        for i, n in enumerate(self.nodes):
            if n.op == "call_module":
                self._first.setdefault(n.target, i)
        self._input = next((n for n in self.nodes if n.op == "placeholder"), None)
        self._interp = fx.Interpreter(gm)

    def position(self, modules: Iterable[str]) -> int:
        """The first node that calls any of ``modules``: where a hook on them starts to
        change values (0, the whole graph, for a module the graph does not call)."""
        return min((self._first.get(m, 0) for m in modules), default=0)

    def run(self, x: torch.Tensor, forks: Iterable[int],
            visit: Callable[[int, Callable[[], torch.Tensor]], None]) -> torch.Tensor:
        """``gm(x)``; before the node at each position in ``forks`` it calls
        ``visit(position, resume)``, where ``resume()`` runs the graph from that node on
        (with whatever hooks are set when it is called) and returns its output."""
        end = len(self.nodes)
        env: dict[fx.Node, object] = {}
        start = 0
        for stop in sorted(set(forks)):
            self._advance(env, x, start, stop)
            visit(stop, lambda s=stop: self._advance(dict(env), x, s, end))
            start = stop
        return self._advance(env, x, start, end)

    def _advance(self, env: dict, x: torch.Tensor, start: int, stop: int):
        """Runs nodes ``start`` to ``stop - 1`` in ``env``, freeing each value after its
        last use; returns the graph's output if it ran the output node (else None). The
        first placeholder is ``x``; any other takes its default."""
        interp, out = self._interp, None
        for i in range(start, stop):
            n = self.nodes[i]
            interp.env, interp.args_iter = env, iter([x] if n is self._input else [])
            value = interp.run_node(n)
            if n.op == "output":
                out = value
            else:
                env[n] = value
            for dead in self._dies[i]:
                env.pop(dead, None)
        return out

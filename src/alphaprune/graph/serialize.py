"""A traced model as plain data, rebuilt without the code that defined it.

A fused user model is an fx ``GraphModule`` whose leaves are standard ``torch.nn`` layers.
:func:`graph_to_data` writes it as JSON-ready data: each leaf module's type and constructor
arguments, and each graph node (op, target, arguments). :func:`graph_from_data` rebuilds it
from **allow-lists** only: layer types of ``torch.nn``, functions of ``operator``, ``torch``
and ``torch.nn.functional``, and tensor methods that compute, so reading a model file can
never call anything else (the weights themselves load with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import builtins
import inspect
import json
import operator
import sys

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from alphaprune.errors import UserError, first_line
from alphaprune.graph.trace import always_on_dropouts

__all__ = ["graph_to_data", "graph_from_data", "shape_mismatch", "GRAPH_VERSION"]

GRAPH_VERSION = 1

_MODULES = {c.__name__: c for c in (
    nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm,
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid,
    nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.CELU, nn.SELU, nn.Softplus, nn.PReLU,
    nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Dropout,
    nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity, nn.Flatten, nn.Softmax,
    nn.LogSoftmax, nn.Upsample, nn.ZeroPad2d)}
# constructor arguments that are not attributes of the same name
_DERIVED = {"bias": lambda m: m.bias is not None, "num_parameters": lambda m: m.weight.numel(),
            "elementwise_affine": lambda m: m.weight is not None}
_SKIP_ARGS = {"self", "device", "dtype", "init", "args", "kwargs"}

_FUNCTION_NAMES = {
    "operator": ["add", "sub", "mul", "truediv", "floordiv", "matmul", "neg", "getitem",
                 "iadd", "imul", "isub", "pow", "mod"],
    "torch": ["flatten", "cat", "concat", "concatenate", "stack", "relu", "sigmoid", "tanh",
              "add", "sub", "mul", "div", "mean", "sum", "amax", "reshape", "softmax", "relu_",
              "log_softmax", "chunk", "split",
              "transpose", "permute", "squeeze", "unsqueeze", "clamp", "abs", "exp", "sqrt",
              "maximum", "minimum", "matmul", "conv2d", "max_pool2d"],
    "torch.nn.functional": ["relu", "relu6", "leaky_relu", "elu", "gelu", "silu", "hardswish",
                            "hardsigmoid", "mish", "sigmoid", "tanh", "hardtanh", "selu", "celu",
                            "softplus", "softmax", "log_softmax", "max_pool2d", "avg_pool2d",
                            "adaptive_avg_pool2d", "adaptive_max_pool2d", "dropout", "dropout1d",
                            "dropout2d", "alpha_dropout",
                            "interpolate", "pad", "linear", "conv2d", "batch_norm", "layer_norm"],
    "builtins": ["getattr"],
}
_ROOTS = {"operator": operator, "torch": torch, "torch.nn.functional": F, "builtins": builtins}
_FUNCTIONS = {(mod, n): getattr(_ROOTS[mod], n) for mod, names in _FUNCTION_NAMES.items()
              for n in names}
_FUNCTION_KEYS = {id(f): k for k, f in _FUNCTIONS.items()}
_METHODS = frozenset({"view", "reshape", "flatten", "size", "mean", "sum", "amax", "relu",
                      "relu_", "sigmoid", "tanh", "permute", "transpose", "contiguous", "add",
                      "add_", "mul", "mul_", "sub", "div", "chunk", "split", "squeeze",
                      "unsqueeze", "softmax", "log_softmax", "expand", "expand_as", "repeat",
                      "clamp", "abs", "exp", "pow", "max", "min", "view_as", "reshape_as", "neg",
                      "dim"})
_ATTRS = frozenset({"shape", "dtype", "device", "ndim"})


def _module_data(m: nn.Module) -> dict:
    name = type(m).__name__
    if _MODULES.get(name) is not type(m):
        raise UserError(f"{type(m).__module__}.{name} layers are not supported: a model file "
                        "holds only the layers alphaprune rebuilds without your code (convs, "
                        "linears, norms, activations, pooling, dropout; graph/serialize.py)")
    args = {}
    for p in inspect.signature(type(m).__init__).parameters.values():
        if p.name in _SKIP_ARGS or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        v = _DERIVED[p.name](m) if p.name in _DERIVED else getattr(m, p.name)
        args[p.name] = _encode(v)
    return {"type": name, "args": args}


def _encode(v):
    if isinstance(v, fx.Node):
        return {"node": v.name}
    if isinstance(v, tuple):
        return {"tuple": [_encode(a) for a in v]}
    if isinstance(v, list):
        return [_encode(a) for a in v]
    if isinstance(v, dict):
        return {"dict": {str(k): _encode(a) for k, a in v.items()}}
    if isinstance(v, slice):
        return {"slice": [_encode(v.start), _encode(v.stop), _encode(v.step)]}
    if isinstance(v, torch.dtype):
        return {"dtype": str(v).removeprefix("torch.")}
    if isinstance(v, torch.memory_format):  # the fused network's channels-last cats
        return {"memory_format": str(v).removeprefix("torch.")}
    if v is Ellipsis:
        return {"ellipsis": True}
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise UserError(f"cannot save a graph argument of type {type(v).__name__}")


def _decode(v, nodes: dict):
    if isinstance(v, list):
        return [_decode(a, nodes) for a in v]
    if not isinstance(v, dict):
        return v
    if "node" in v:
        return nodes[v["node"]]
    if "tuple" in v:
        return tuple(_decode(a, nodes) for a in v["tuple"])
    if "dict" in v:
        return {k: _decode(a, nodes) for k, a in v["dict"].items()}
    if "slice" in v:
        return slice(*(_decode(a, nodes) for a in v["slice"]))
    if "dtype" in v:
        dt = getattr(torch, str(v["dtype"]), None)
        if not isinstance(dt, torch.dtype):
            raise UserError(f"unknown dtype {v['dtype']!r} in the model file")
        return dt
    if "memory_format" in v:
        mf = getattr(torch, str(v["memory_format"]), None)
        if not isinstance(mf, torch.memory_format):
            raise UserError(f"unknown memory format {v['memory_format']!r} in the model file")
        return mf
    if "ellipsis" in v:
        return Ellipsis
    raise UserError(f"malformed graph argument {v!r} in the model file")


def _target_data(n: fx.Node):
    if n.op == "call_function":
        key = _FUNCTION_KEYS.get(id(n.target))
        _check_getattr(n.target, n.args)
        if key is None:
            raise UserError(f"cannot save a call of {getattr(n.target, '__qualname__', n.target)}: "
                            "alphaprune stores only torch, torch.nn.functional and operator calls")
        return list(key)
    if n.op == "call_method" and n.target not in _METHODS:
        raise UserError(f"cannot save the tensor method .{n.target}() in a model file")
    return n.target


def _check_getattr(fn, args) -> None:
    """``getattr`` nodes may read only plain tensor attributes (``x.shape``, ...)."""
    if fn is builtins.getattr and (len(args) != 2 or args[1] not in _ATTRS):
        raise UserError(f"graph reads the attribute {args[1:]!r}: only {sorted(_ATTRS)} are allowed")


def graph_to_data(gm: fx.GraphModule) -> dict:
    """The graph and leaf modules of ``gm`` as JSON-ready data (weights not included).

    Raises:
        UserError: a leaf module, function or method outside the allow-lists.
    """
    modules = {n.target: _module_data(gm.get_submodule(n.target))
               for n in gm.graph.nodes if n.op == "call_module"}
    params = {n for n, _ in gm.named_parameters()}
    attrs = {n.target: ("parameter" if n.target in params else "buffer")
             for n in gm.graph.nodes if n.op == "get_attr"}
    nodes = [{"op": n.op, "name": n.name, "target": _target_data(n), "args": _encode(n.args),
              "kwargs": _encode(dict(n.kwargs))} for n in gm.graph.nodes]
    for n in nodes:
        n["kwargs"] = n["kwargs"]["dict"]
    return {"version": GRAPH_VERSION, "modules": modules, "attrs": attrs, "nodes": nodes}


def _build_module(spec: dict) -> nn.Module:
    cls = _MODULES.get(spec.get("type"))
    if cls is None:
        raise UserError(f"model file names a layer type {spec.get('type')!r} that alphaprune "
                        "does not build: it was not written by alphaprune")
    return cls(**{k: _decode(v, {}) for k, v in spec.get("args", {}).items()})


def _set(root: nn.Module, path: str, value) -> None:
    *parents, leaf = path.split(".")
    for p in parents:
        if not hasattr(root, p):
            setattr(root, p, nn.Module())
        root = getattr(root, p)
    if isinstance(value, nn.Module):
        setattr(root, leaf, value)
    elif isinstance(value, nn.Parameter):
        root.register_parameter(leaf, value)
    else:
        root.register_buffer(leaf, value)


def _check_module_shapes(modules: dict, state_dict: dict) -> None:
    """Build the recorded layers on the meta device (no memory) and compare their weights'
    shapes with the file's: recorded sizes that would allocate terabytes are refused first."""
    for path, spec in modules.items():
        try:
            with torch.device("meta"):
                probe = _build_module(spec)
        except UserError:
            raise
        except Exception as e:
            raise UserError(f"the model file's layer {path} cannot be built ({first_line(e)}): "
                            "re-save it") from e
        if (bad := shape_mismatch(probe, state_dict, f"{path}.")) is not None:
            key, want, got = bad
            raise UserError(f"the model file's weights do not fit its graph ({key}: the layer "
                            f"has {want}, the file {got})")


def shape_mismatch(probe: nn.Module, state_dict: dict, prefix: str = ""):
    """The first entry of ``probe``'s state (a meta-device build) whose tensor in
    ``state_dict`` (under ``prefix``) has another shape: (key, its shape, the file's), or
    None. Missing or non-tensor entries are left to the strict load."""
    for name, t in probe.state_dict().items():
        got = state_dict.get(prefix + name)
        if isinstance(got, torch.Tensor) and got.shape != t.shape:
            return prefix + name, tuple(t.shape), tuple(got.shape)
    return None


def graph_from_data(data: dict, state_dict: dict) -> fx.GraphModule:
    """Rebuild the ``GraphModule`` that :func:`graph_to_data` described, with these weights.

    Raises:
        UserError: an unknown layer type, function or method, or weights that do not fit.
    """
    if not isinstance(data, dict) or data.get("version") != GRAPH_VERSION:
        raise UserError("the model file's graph has an unknown version: re-save it with this alphaprune")
    _check_module_shapes(data["modules"], state_dict)
    root = nn.Module()
    for path, spec in data["modules"].items():
        _set(root, path, _build_module(spec))
    for path, kind in data.get("attrs", {}).items():
        t = state_dict[path]
        _set(root, path, nn.Parameter(t.clone()) if kind == "parameter" else t.clone())
    graph, nodes = fx.Graph(), {}
    for n in data["nodes"]:
        op, target = n["op"], n["target"]
        args, kwargs = _decode(n["args"], nodes), _decode({"dict": n["kwargs"]}, nodes)
        if op == "call_function":
            key = tuple(target) if isinstance(target, list) else None
            if key not in _FUNCTIONS:
                raise UserError(f"model file calls {target!r}, which alphaprune does not allow")
            target = _FUNCTIONS[key]
            _check_getattr(target, args)
        elif op == "call_method" and target not in _METHODS:
            raise UserError(f"model file calls the method {target!r}, which alphaprune does not allow")
        elif op not in ("placeholder", "get_attr", "call_module", "call_method", "output"):
            raise UserError(f"model file holds a graph node of kind {op!r}")
        if op == "output":
            nodes[n["name"]] = graph.output(args[0])
        else:
            node = graph.create_node(op, target, args, kwargs, name=n["name"])
            nodes[n["name"]] = node
    gm = fx.GraphModule(root, graph, "GraphModel")
    try:
        gm.load_state_dict(state_dict)
    except RuntimeError as e:
        raise UserError(f"the model file's weights do not fit its graph ({first_line(e)})") from e
    _warn_dropouts(gm, data)
    return gm


_WARNED: set[str] = set()  # graphs warned of (once per process: runs load a file many times)


def _warn_dropouts(gm: fx.GraphModule, data: dict) -> None:
    """Say so when the graph drops activations in eval mode too."""
    drops = always_on_dropouts(gm.graph)
    if not drops:
        return
    key = json.dumps(data["nodes"], sort_keys=True, default=str)
    if key in _WARNED:
        return
    _WARNED.add(key)
    print(f"alphaprune: warning: the model file's graph applies dropout in eval mode too "
          f"({', '.join(n.name for n in drops)}: training=True), so its outputs are random at "
          "inference; if its model wrote training=self.training (earlier alphaprune versions "
          "stored that frozen), train or save it again from its module with this version and "
          "prune that file", file=sys.stderr, flush=True)

"""The summary schema every command shares, and what a pruning run gained in one place.

``summary.json`` of ``train`` and ``prune`` carries ``schema`` (2), ``command`` and a
``model`` block for the model the run ships; ``prune`` adds ``original`` with the same
keys and, first of all, a ``headline``. ``compare``'s result rows use the same names
(:data:`MODEL_KEYS`). Older flat keys (``params_after``, ``test_acc_before``, ...) stay for
readers of earlier runs."""

from __future__ import annotations

__all__ = ["headline", "headline_rows", "model_block", "shipped", "fmt_acc", "seen_note", "MODEL_KEYS",
           "SCHEMA"]

SCHEMA = 2
MODEL_KEYS = ("params", "flops", "val_acc", "val_loss", "test_acc", "test_loss",
              "latency_b1_ms", "latency_b128_ms")


def model_block(params: int, flops: int, scores: dict, latency: dict | None = None) -> dict:
    """One model's numbers under the shared names (``scores``: ``split_scores``'s dict;
    ``latency``: ``measure_side_by_side``'s entry for the model, if measured)."""
    latency = latency or {}
    return {"params": params, "flops": flops,
            **{k: scores.get(k) for k in ("val_acc", "val_loss", "test_acc", "test_loss")},
            "latency_b1_ms": latency.get("latency_b1_ms"),
            "latency_b128_ms": latency.get("latency_b128_ms")}


def shipped(s: dict) -> dict:
    """The shipped model's block of a summary, also for runs written before the schema (their
    flat ``*_after`` or plain keys); empty for an unfinished run."""
    if isinstance(s.get("model"), dict):
        return s["model"]
    if not s:
        return {}
    after = (s.get("latency") or {}).get("after", {})
    return {k: s.get(f"{k}_after", s.get(k, after.get(k))) for k in MODEL_KEYS}


def _ratio(a, b):
    return a / b if a and b else None


def headline(s: dict) -> dict:
    """The result of a prune summary ``s``: shares of parameters and FLOPs removed, the
    measured speed-up at batch 1 and 128 beside the FLOP ratio (the most a structured cut
    can give), and accuracy before and after."""
    lat = s.get("latency", {})
    before, after = lat.get("before", {}), lat.get("after", {})
    return {
        "target": {"measure": s.get("target_measure", "params"), "fraction": s["target_reduction"]},
        "removed_params": s["achieved_reduction"],
        "removed_flops": s.get("achieved_flops_reduction",
                               1 - s["flops_after"] / s["flops_before"] if s["flops_before"] else None),
        "flop_ratio": _ratio(s["flops_before"], s["flops_after"]),
        "speedup_b1": _ratio(before.get("latency_b1_ms"), after.get("latency_b1_ms")),
        "speedup_b128": _ratio(before.get("latency_b128_ms"), after.get("latency_b128_ms")),
        "latency_threads": lat.get("threads"),
        "test_acc_before": s["test_acc_before"], "test_acc_after": s["test_acc_after"],
        "val_acc_before": s["val_acc_before"], "val_acc_after": s["val_acc_after"],
        **({"speedup": s["speedup"]} if "speedup" in s else {}),
        **({"folds": _folds(s["folds"])} if "folds" in s else {}),
        **({"test_seen_in_pretraining": s["test_seen_in_pretraining"]}
           if "test_seen_in_pretraining" in s else {}),
    }


def seen_note(seen: dict) -> str:
    """One sentence on :func:`seen_test_images`' result, for the console and the report."""
    return (f"{seen['images']} of the {seen['of']} test images were in the pretrained model's "
            f"training split, so test accuracies read high ({seen['split']} carves the split "
            "it was trained with)")


def _folds(f: dict) -> dict:
    """A ``--folds`` run in the headline: how many folds, the mean and spread of their
    accuracies and the fold that ships."""
    return {"k": f["k"], "shipped_fold": f["shipped_fold"], "chosen_by": f["chosen_by"],
            **{f"{key}_{stat}": f[stat].get(f"{key}_after")
               for key in ("test_acc", "val_acc") for stat in ("mean", "std")}}


def _x(v) -> str:
    return "–" if v is None else f"{v:.2f}×"


def _speed(v) -> str:
    """A measured speed-up in words: a ratio under 1 is a slow-down."""
    if v is None:
        return "– faster"
    return f"{v:.2f}× faster" if v >= 1 else f"{1 / v:.2f}× slower"


def fmt_acc(v) -> str:
    """An accuracy, or a dash where there is none (``--test-frac 0``: no test split), for
    the report page and the console."""
    return "–" if v is None or v != v else f"{v:.4f}"


def headline_rows(h: dict) -> tuple[str, list[list[str]]]:
    """(one sentence, table rows) of a headline for the report page."""
    what = {"flops": "FLOPs", "params": "parameters"}.get(h["target"]["measure"], "latency")
    flops = "–" if h["removed_flops"] is None else f"{h['removed_flops']:.1%}"
    target = f"{h['target']['fraction']:.0%} of the {what}"
    sp = h.get("speedup")
    if sp:
        target = (f"{sp['target']:g}× faster at batch {sp['batch']}; measured {sp['achieved']:.2f}×, "
                  + ("met" if sp["shortfall"] == 0 else f"{sp['shortfall']:.0%} short"))
    text = (f"{h['removed_params']:.1%} of the parameters and {flops} of the FLOPs removed "
            f"(target: {target}); test accuracy "
            f"{fmt_acc(h['test_acc_before'])} → {fmt_acc(h['test_acc_after'])}; measured "
            f"{_speed(h['speedup_b128'])} at batch 128 for a FLOP ratio of {_x(h['flop_ratio'])}.")
    threads = h.get("latency_threads")
    on = f" ({threads} thread{'s' if threads != 1 else ''}, medians of interleaved rounds)" \
        if threads else ""
    rows = [["parameters removed", f"{h['removed_params']:.1%}"],
            ["FLOPs removed", flops],
            ["FLOP ratio (before / after)", _x(h["flop_ratio"])],
            [f"measured speed-up, batch 1{on}", _x(h["speedup_b1"])],
            [f"measured speed-up, batch 128{on}", _x(h["speedup_b128"])],
            ["test accuracy", f"{fmt_acc(h['test_acc_before'])} → {fmt_acc(h['test_acc_after'])}"],
            ["val accuracy", f"{fmt_acc(h['val_acc_before'])} → {fmt_acc(h['val_acc_after'])}"]]
    seen = h.get("test_seen_in_pretraining")
    if seen:
        text += f" Caution: {seen_note(seen)}."
        rows.append(["test images the pretrained model trained on", f"{seen['images']} of {seen['of']}"])
    f = h.get("folds")
    if f:
        cv = f"{fmt_acc(f['test_acc_mean'])} ± {fmt_acc(f['test_acc_std'])}"
        text += (f" Over {f['k']} cross-validation folds the test accuracy was {cv} (mean ± "
                 f"std); the model shipped is fold {f['shipped_fold']}'s, the best validation "
                 "accuracy, and the accuracies above are its.")
        rows += [[f"test accuracy over {f['k']} folds (mean ± std)", cv],
                 [f"val accuracy over {f['k']} folds (mean ± std)",
                  f"{fmt_acc(f['val_acc_mean'])} ± {fmt_acc(f['val_acc_std'])}"],
                 ["shipped fold (best val accuracy)", str(f["shipped_fold"])]]
    return text, rows

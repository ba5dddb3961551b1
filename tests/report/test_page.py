"""Report pages of a run: report.md, self-contained report.html, and model measurements."""

from __future__ import annotations

import base64
import json
import re

import pytest
import torch.nn as nn

from alphaprune.report import page
from alphaprune.report.page import markdown_table, measure_models, write_report

from .synthetic import PHASES, PRUNE_SUMMARY, phase_rows, prune_metrics, write_prune_run


def _sections(md: str) -> dict[str, str]:
    """``## title`` -> the text up to the next heading."""
    parts = re.split(r"^## (.+)$", md, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def _table(text: str) -> list[list[str]]:
    """Body rows of the first Markdown table in ``text`` (header and rule dropped)."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    assert len(lines) >= 2 and re.fullmatch(r"\|(---\|)+", lines[1]), lines[:2]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]


@pytest.fixture(scope="module")
def prune_report(tmp_path_factory):
    """A synthetic prune run reported once: (run folder, returned paths, md text, html text)."""
    run = write_prune_run(tmp_path_factory.mktemp("page") / "prune_run")
    paths = write_report(run)
    return run, paths, (run / "report.md").read_text(), (run / "report.html").read_text()


@pytest.fixture
def no_plots(monkeypatch):
    """Skip the (slow) plots where a test only reads the tables."""
    monkeypatch.setattr(page, "plot_run", lambda run, out_dir: [])


# ---------------------------------------------------------------------------------------- markdown_table


def test_markdown_table_format():
    assert markdown_table(["a", "b"], [[1, 2.5], ["x", None]]) == (
        "| a | b |\n|---|---|\n| 1 | 2.5 |\n| x | None |")


def test_markdown_table_without_rows_is_header_and_rule():
    assert markdown_table(["only"], []) == "| only |\n|---|"


# ---------------------------------------------------------------------------------------- write_report


def test_write_report_writes_md_html_and_plots(prune_report):
    run, paths, md, html = prune_report
    assert paths["md"] == run / "report.md" and paths["html"] == run / "report.html"
    for key in ("loss", "accuracy", "alpha"):
        assert paths[key] == run / f"{key}.png" and paths[key].is_file()
    assert md.startswith("# Run report: prune_run\n")
    for name in ("loss", "accuracy", "alpha"):
        assert f"![{name}]({name}.png)" in md


def test_md_phase_table_has_one_row_per_phase(prune_report):
    md = prune_report[2]
    rows = _table(_sections(md)["Phases (one per α)"])
    assert len(rows) == len(PHASES)
    expected = phase_rows(prune_metrics())
    for row, ph, (alpha, n) in zip(rows, expected, PHASES):
        phase, a, epochs, best_loss, best_acc, best_ship, reason = row
        assert int(phase) == ph["phase"]
        assert float(a) == alpha
        assert epochs == str(n)
        assert best_loss == f"{ph['best_val_loss']:.4f}"
        assert best_acc == f"{ph['best_val_acc']:.4f}"
        assert best_ship == f"{ph['best_ship_val_acc']:.4f}"
        assert reason == ph["stop_reason"]


def test_md_before_after_table_has_summary_numbers(prune_report):
    md = prune_report[2]
    section = _sections(md)["Before / after"]
    rows = {r[0]: r[1:] for r in _table(section)}
    assert rows["parameters"] == ["1,234,567", "443,001"]
    assert rows["FLOPs (MACs, one image)"] == ["313,524,224", "98,765,432"]
    assert rows["latency batch 1 (ms, median)"] == ["1.23", "0.57"]
    assert rows["latency batch 128 (ms, median)"] == ["45.7", "20.0"]
    assert rows["throughput (images/s, batch 128)"] == ["2,803", "6,387"]
    assert rows["test accuracy"] == ["0.9123", "0.9057"]
    assert rows["val accuracy"] == ["0.9251", "0.9132"]
    assert rows["model file (KiB)"] == ["4,824", "1,702"]
    assert len(rows) == 8
    assert "64.12% of the parameters removed (target 65% of the parameters)" in section


def test_the_settings_list_what_was_set_and_count_the_rest(prune_report):
    section = _sections(prune_report[2])["Settings"]
    rows = dict(_table(section))
    assert "None" not in rows.values() and "decay_rate" not in rows and rows["prune"] == "0.65"
    assert re.search(r"\d+ options left unset \(their defaults applied\) are not listed", section)


def test_a_slower_model_is_called_slower(tmp_path):
    """A measured ratio under 1 is a slow-down, said as one (\"0.64× faster\" before)."""
    from alphaprune.report.headline import headline, headline_rows

    h = headline(PRUNE_SUMMARY)
    text, _ = headline_rows({**h, "speedup_b128": 0.64})
    assert "measured 1.56× slower at batch 128" in text
    assert "measured 2.28× faster at batch 128" in headline_rows(h)[0]


def test_the_page_opens_with_the_result_and_ends_with_the_settings(prune_report):
    md = prune_report[2]
    titles = list(_sections(md))
    assert titles[0] == "Result" and titles[-2:] == ["Settings", "Plots"]
    result = _sections(md)["Result"]
    first = result.strip().splitlines()[0]
    assert first.startswith("64.1% of the parameters and 68.5% of the FLOPs removed (target: 65% "
                            "of the parameters); test accuracy 0.9123 → 0.9057; measured 2.28× "
                            "faster at batch 128 for a FLOP ratio of 3.17×")
    rows = {r[0]: r[1] for r in _table(result)}
    assert rows["measured speed-up, batch 1"] == "2.17×"
    assert rows["test accuracy"] == "0.9123 → 0.9057"


def test_md_settings_flatten_optim_and_data(prune_report):
    settings = dict(_table(_sections(prune_report[2])["Settings"]))
    assert settings["scheduler"] == "step"
    assert settings["prune"] == "0.65"
    assert settings["optim.lr"] == "0.01"
    assert settings["optim.schedule"] == "constant"
    assert settings["data.data"] == "digits"
    assert settings["data.batch_size"] == "128"
    assert "optim" not in settings and "data" not in settings


def test_html_is_self_contained(prune_report):
    run, paths, _, html = prune_report
    assert html.startswith("<!doctype html>") and html.rstrip().endswith("</html>")
    srcs = re.findall(r'src\s*=\s*["\']?([^"\'\s>]+)', html)
    assert len(srcs) == 3
    assert all(s.startswith("data:image/png;base64,") for s in srcs), [s[:40] for s in srcs]
    assert "href=" not in html and ".png" not in html
    # the embedded images are exactly the written PNG files
    embedded = {base64.b64decode(s.split(",", 1)[1]) for s in srcs}
    assert embedded == {paths[k].read_bytes() for k in ("loss", "accuracy", "alpha")}


def test_html_tables_match_markdown(prune_report):
    html = prune_report[3]
    assert "<h1>Run report: prune_run</h1>" in html
    assert html.count("<table>") == 4  # result, phases, before/after, settings
    assert "<td>1,234,567</td><td>443,001</td>" in html
    # one body row per phase in the phase table
    phase_table = html.split("<h2>Phases (one per α)</h2>", 1)[1].split("</table>", 1)[0]
    assert phase_table.count("<tr>") == 1 + len(PHASES)


def test_html_escapes_the_run_name(tmp_path, no_plots):
    run = write_prune_run(tmp_path / "a&b<c>", phases=[(0.5, 1), (0.0, 1)])
    write_report(run)
    html = (run / "report.html").read_text()
    assert "<title>a&amp;b&lt;c&gt;</title>" in html
    assert "a&b<c>" not in html


def test_report_without_latency_shows_dashes(tmp_path, no_plots):
    summary = {k: v for k, v in PRUNE_SUMMARY.items()
               if k not in ("latency", "file_bytes_before", "file_bytes_after")}
    run = write_prune_run(tmp_path / "old_run", phases=[(0.5, 1), (0.0, 1)], summary=summary)
    write_report(run)
    rows = {r[0]: r[1:] for r in _table(_sections((run / "report.md").read_text())["Before / after"])}
    assert rows["latency batch 1 (ms, median)"] == ["–", "–"]
    assert rows["model file (KiB)"] == ["–", "–"]
    assert rows["parameters"] == ["1,234,567", "443,001"]


def test_train_report_has_result_table_and_two_plots(train_run):
    paths = write_report(train_run)
    assert set(paths) == {"md", "html", "loss", "accuracy"}
    md = paths["md"].read_text()
    sections = _sections(md)
    assert "Phases (one per α)" not in sections and "Before / after" not in sections
    result = dict(_table(sections["Result"]))
    assert result["params"] == "612345" and result["test_acc"] == "0.9276"
    settings = dict(_table(sections["Settings"]))
    assert settings["model"] == "vgg11" and settings["optim.schedule"] == "onecycle"
    assert "alpha.png" not in md
    html = paths["html"].read_text()
    assert html.count("data:image/png;base64,") == 2


def test_unfinished_prune_run_report_has_no_before_after(tmp_path, no_plots):
    run = write_prune_run(tmp_path / "partial", phases=[(0.75, 2), (0.5, 1)], summary=None)
    md = write_report(run)["md"].read_text()
    sections = _sections(md)
    assert "Before / after" not in sections and "Result" not in sections
    assert len(_table(sections["Phases (one per α)"])) == 2
    # it opens by saying the run is unfinished and how it may go on
    assert list(sections)[0] == "Unfinished"
    assert "wrote no checkpoint to resume from" in sections["Unfinished"]
    assert "|" not in sections["Unfinished"]
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    text = _sections(write_report(run)["md"].read_text())["Unfinished"]
    assert f"If it was interrupted, `alphaprune prune --out {run} --resume` continues it" in text


# ---------------------------------------------------------------------------------------- measure_models


def test_measure_models_latency_and_throughput():
    models = {"before": nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3)),
              "after": nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 8, 3))}
    out = measure_models(models, (3, 8, 8), repeats=2)
    assert set(out) == {"before", "after"}
    for m in out.values():
        assert set(m) == {"latency_b1_ms", "latency_b128_ms", "throughput_img_s"}
        assert m["latency_b1_ms"] > 0 and m["latency_b128_ms"] > 0
        # 128 images per batch-128 pass
        assert m["throughput_img_s"] == pytest.approx(128 / (m["latency_b128_ms"] / 1e3), rel=1e-9)
    json.dumps(out)  # goes into summary.json as is


def test_measure_side_by_side_takes_the_median_of_alternating_rounds(monkeypatch):
    import alphaprune.report.page as page

    calls = []
    times = iter([5.0, 1.0, 9.0, 2.0, 7.0, 3.0])  # a, b, a, b, a, b

    def fake(models, shape, batches):
        (name,) = models
        assert batches == (1, 128)
        calls.append(name)
        t = next(times)
        return {name: {"latency_b1_ms": t, "latency_b128_ms": 10 * t}}

    monkeypatch.setattr(page, "measure_models", fake)
    out = page.measure_side_by_side({"a": None, "b": None}, (3, 8, 8), rounds=3)
    assert calls == ["a", "b"] * 3
    assert out == {"a": {"latency_b1_ms": 7.0, "latency_b128_ms": 70.0},
                   "b": {"latency_b1_ms": 2.0, "latency_b128_ms": 20.0}}


def test_measure_models_times_the_batch_sizes_asked():
    import torch.nn as nn

    out = measure_models({"m": nn.Conv2d(3, 4, 3)}, (3, 8, 8), repeats=1, batches=(1, 8))
    assert set(out["m"]) == {"latency_b1_ms", "latency_b8_ms"}
    assert all(v > 0 for v in out["m"].values())

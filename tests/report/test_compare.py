"""Run comparisons and the ``alphaprune report`` command, including bad input."""

from __future__ import annotations

import json

import pytest

from alphaprune.cli import main
from alphaprune.errors import UserError
from alphaprune.report.page import _CMP_HEADER, write_comparison

from .synthetic import (
    PRUNE_METRIC_COLS,
    TRAIN_METRIC_COLS,
    prune_metrics,
    train_metrics,
    write_prune_run,
    write_train_run,
)


def _md_rows(md: str) -> list[list[str]]:
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]


def _assert_one_line_error(capsys, rc):
    out, err = capsys.readouterr()
    assert rc == 2
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("alphaprune: error: ")
    return lines[0]


# ---------------------------------------------------------------------------------------- write_comparison


def test_write_comparison_files_and_rows(prune_run, train_run, tmp_path):
    out = tmp_path / "cmp"
    paths = write_comparison([prune_run, train_run], out)
    assert paths == {"png": out / "compare.png", "pareto": out / "pareto.png", "md": out / "compare.md",
                     "json": out / "compare.json"}
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths["pareto"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    md = paths["md"].read_text()
    rows = _md_rows(md)
    assert [r[0] for r in rows] == ["prune_run", "train_run"]
    assert "![validation accuracy](compare.png)" in md and "(pareto.png)" in md
    best_ship = max(r["ship_val_acc"] for r in prune_metrics())
    best_val = max(r["val_acc"] for r in train_metrics())
    assert rows[0] == ["prune_run", "step", "11", f"{best_ship:.4f}", "0.9132", "0.9057", "443,001",
                       "64.12%", "yes"]
    assert rows[1] == ["train_run", "–", "4", f"{best_val:.4f}", "0.9312", "0.9276", "612,345", "–",
                       "yes"]

    data = json.loads(paths["json"].read_text())
    assert [d["run"] for d in data] == ["prune_run", "train_run"]
    assert all(list(d) == _CMP_HEADER for d in data)
    assert data[0]["epochs"] == 11 and data[1]["epochs"] == 4
    assert data[0]["removed"] == "64.12%"


def test_the_pareto_points_are_the_shipped_models(prune_run, train_run, tmp_path):
    from alphaprune.report.page import _pareto_point
    from alphaprune.report.runs import read_run

    p, t = _pareto_point(read_run(prune_run)), _pareto_point(read_run(train_run))
    assert p == {"method": "prune_run", "test_acc": 0.90567, "params": 443001, "latency_b128_ms": 20.04}
    assert t == {"method": "train_run", "test_acc": 0.9276, "params": 612345, "latency_b128_ms": None}
    partial = write_prune_run(tmp_path / "partial", phases=[(0.75, 2)], summary=None)
    assert _pareto_point(read_run(partial)) is None


def test_runs_with_the_same_folder_name_are_told_apart_and_a_run_twice_refused(tmp_path):
    """``report a/p b/p`` labelled both rows "p"; the same run twice made two rows."""
    a = write_prune_run(tmp_path / "a" / "p")
    b = write_prune_run(tmp_path / "b" / "p")
    paths = write_comparison([a, b], tmp_path / "cmp")
    assert [r["run"] for r in json.loads(paths["json"].read_text())] == ["a/p", "b/p"]
    deeper = write_prune_run(tmp_path / "x" / "a" / "p")  # a/p twice: one more part each
    paths = write_comparison([a, deeper], tmp_path / "cmp3")
    assert [r["run"] for r in json.loads(paths["json"].read_text())] == [
        f"{tmp_path.name}/a/p", "x/a/p"]
    with pytest.raises(UserError, match="is given twice"):
        write_comparison([a, tmp_path / "a" / ".." / "a" / "p"], tmp_path / "cmp2")
    assert not (tmp_path / "cmp2").exists()


def test_a_onecycle_run_shows_no_alpha_scheduler(tmp_path):
    """A onecycle run records the scheduler field's default (step), but none ran."""
    from .synthetic import PRUNE_SETTINGS

    one = write_prune_run(tmp_path / "one", settings={**PRUNE_SETTINGS, "recipe": "onecycle"})
    step = write_prune_run(tmp_path / "step")
    paths = write_comparison([one, step], tmp_path / "cmp")
    rows = json.loads(paths["json"].read_text())
    assert [r["scheduler"] for r in rows] == ["none (onecycle)", PRUNE_SETTINGS["scheduler"]]


def test_write_comparison_marks_unfinished_runs(prune_run, tmp_path):
    partial = write_prune_run(tmp_path / "partial", phases=[(0.75, 2)], summary=None)
    paths = write_comparison([prune_run, partial], tmp_path / "cmp")
    rows = _md_rows(paths["md"].read_text())
    assert rows[0][-1] == "yes"
    assert rows[1][0] == "partial" and rows[1][2] == "2" and rows[1][-1] == "no (unfinished)"
    assert rows[1][4] == "–" and rows[1][5] == "–"


def test_write_comparison_refuses_a_file_as_out(prune_run, train_run, tmp_path):
    f = tmp_path / "taken.txt"
    f.write_text("x")
    with pytest.raises(UserError, match="is a file"):
        write_comparison([prune_run, train_run], f)


# ---------------------------------------------------------------------------------------- CLI


def test_cli_report_one_run(prune_run, capsys):
    assert main(["report", str(prune_run)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("wrote ") and "report.md" in out and "report.html" in out
    for name in ("report.md", "report.html", "loss.png", "accuracy.png", "alpha.png"):
        assert (prune_run / name).is_file(), name


def test_cli_report_one_run_out_writes_elsewhere_and_keeps_a_users_folder(prune_run, tmp_path,
                                                                          capsys):
    before = sorted(p.name for p in prune_run.iterdir())
    out = tmp_path / "elsewhere"
    assert main(["report", str(prune_run), "--out", str(out)]) == 0
    for name in ("report.md", "report.html", "loss.png", "accuracy.png", "alpha.png"):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in prune_run.iterdir()) == before, "the run folder is untouched"
    assert main(["report", str(prune_run), "--out", str(out)]) == 0  # its own folder again
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.md").write_text("my notes")
    (mine / "thesis.tex").write_text("precious")
    line = _assert_one_line_error(capsys, main(["report", str(prune_run), "--out", str(mine)]))
    assert "no earlier report made" in line
    assert (mine / "report.md").read_text() == "my notes"


def test_cli_report_unwritable_run_folder_names_out(prune_run, train_run, tmp_path, capsys,
                                                    monkeypatch):
    import errno
    import os

    import alphaprune.report.page as page

    before = sorted(p.name for p in prune_run.iterdir())
    # a read-only run folder (chmod does not stop root, so the check is made to see one)
    monkeypatch.setattr(page.os, "access", lambda path, mode: False)
    line = _assert_one_line_error(capsys, main(["report", str(prune_run)]))
    assert f"cannot write the report into {prune_run}" in line and "--out DIR" in line
    assert sorted(p.name for p in prune_run.iterdir()) == before
    monkeypatch.undo()

    def read_only(path, text):  # a read-only file system fails the write itself
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(page, "atomic_write_text", read_only)
    for argv in (["report", str(prune_run)],
                 ["report", str(prune_run), str(train_run), "--out", str(tmp_path / "c")]):
        line = _assert_one_line_error(capsys, main(argv))
        assert "Read-only file system" in line and "--out DIR" in line, line


def test_cli_report_two_runs(prune_run, train_run, tmp_path, capsys):
    out_dir = tmp_path / "cmp_out"
    assert main(["report", str(prune_run), str(train_run), "--out", str(out_dir)]) == 0
    for name in ("compare.png", "compare.md", "compare.json"):
        assert (out_dir / name).is_file(), name
    md = (out_dir / "compare.md").read_text()
    assert "prune_run" in md and "train_run" in md
    assert not (prune_run / "report.md").exists(), "a comparison writes no per-run report"
    assert "compare.md" in capsys.readouterr().out


def test_cli_report_two_runs_default_out(prune_run, train_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(prune_run), str(train_run)]) == 0
    assert (tmp_path / "comparison" / "compare.json").is_file()


def test_cli_report_dot_names_the_run_folder(prune_run, monkeypatch):
    """``alphaprune report .`` from inside a run folder names the report after the folder."""
    monkeypatch.chdir(prune_run)
    assert main(["report", "."]) == 0
    md = (prune_run / "report.md").read_text()
    assert md.splitlines()[0] == "# Run report: prune_run"


def test_cli_report_not_a_run(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(b"not really")
    line = _assert_one_line_error(capsys, main(["report", str(folder)]))
    assert "not an alphaprune run folder" in line
    assert not (folder / "report.md").exists()


def test_cli_report_of_a_comparison_or_its_peer_folder_names_the_comparisons_page(tmp_path,
                                                                                 capsys,
                                                                                 monkeypatch):
    """compare writes its own page; a peer's folder (Torch-Pruning's: its model and metrics,
    no settings) is no run: its report read as an empty, settings-less run."""
    cmp = tmp_path / "cmp"
    os_run = write_prune_run(cmp / "p50" / "os-step")
    peer = write_train_run(cmp / "p50" / "tp-l1")
    (peer / "config.yaml").unlink()  # what compare leaves in a peer's folder: no settings
    (cmp / "results.jsonl").write_text('{"method": "pretrained"}\n')
    line = _assert_one_line_error(capsys, main(["report", str(cmp)]))
    assert "is a comparison, not a run" in line and str(cmp / "results.md") in line
    assert f"e.g. {os_run}" in line
    line = _assert_one_line_error(capsys, main(["report", str(peer)]))
    assert f"tp-l1's folder in the comparison {cmp}" in line
    assert not (peer / "report.md").exists()
    assert main(["report", str(os_run)]) == 0  # a comparison's own runs report as before
    assert (os_run / "report.md").is_file()
    monkeypatch.chdir(cmp / "p50")  # relative: the comparison is above the path as typed
    line = _assert_one_line_error(capsys, main(["report", "tp-l1"]))
    assert f"tp-l1's folder in the comparison {cmp.resolve()}" in line


def test_cli_report_header_only_metrics(tmp_path, capsys):
    run = tmp_path / "starting"
    run.mkdir()
    (run / "config.yaml").write_text("command: prune\nprune: {scheduler: step}\n")
    (run / "metrics.csv").write_text(",".join(PRUNE_METRIC_COLS) + "\n")
    line = _assert_one_line_error(capsys, main(["report", str(run)]))
    assert "no finished epoch" in line
    assert not (run / "report.md").exists() and not (run / "loss.png").exists()


def test_cli_report_header_only_train_metrics_without_config(tmp_path, capsys):
    run = tmp_path / "starting_train"
    run.mkdir()
    (run / "metrics.csv").write_text(",".join(TRAIN_METRIC_COLS) + "\n")
    assert "no finished epoch" in _assert_one_line_error(capsys, main(["report", str(run)]))


def test_cli_report_nonexistent_folder(tmp_path, capsys):
    missing = tmp_path / "does" / "not" / "exist"
    line = _assert_one_line_error(capsys, main(["report", str(missing)]))
    assert str(missing) in line
    assert not missing.exists()


def test_cli_compare_with_one_bad_run(prune_run, tmp_path, capsys):
    out_dir = tmp_path / "cmp"
    rc = main(["report", str(prune_run), str(tmp_path / "missing"), "--out", str(out_dir)])
    _assert_one_line_error(capsys, rc)
    assert not (out_dir / "compare.md").exists()


def test_cli_compare_out_is_a_file(prune_run, tmp_path, capsys):
    other = write_train_run(tmp_path / "t")
    f = tmp_path / "file.txt"
    f.write_text("x")
    line = _assert_one_line_error(capsys, main(["report", str(prune_run), str(other), "--out", str(f)]))
    assert "is a file" in line


def _assert_clean_exit(capsys, argv):
    """Bad run files: either reported (0) or refused with a one-line error (2), never a crash."""
    try:
        rc = main(argv)
    except Exception as e:  # the point is that nothing escapes
        pytest.fail(f"alphaprune {' '.join(argv)} crashed: {type(e).__name__}: {e}")
    assert rc in (0, 2)
    if rc == 2:
        _assert_one_line_error(capsys, rc)
    return rc


def test_cli_report_truncated_summary_json(prune_run, capsys):
    """A summary.json cut short (process killed while writing it) gives no traceback."""
    (prune_run / "summary.json").write_text('{"arch": "vgg11", "target_red')
    _assert_clean_exit(capsys, ["report", str(prune_run)])


def test_cli_report_broken_config_yaml(train_run, capsys):
    (train_run / "config.yaml").write_text("command: [train\n")
    _assert_clean_exit(capsys, ["report", str(train_run)])


def test_cli_report_truncated_last_metrics_row(tmp_path, capsys):
    """An interrupted run whose last metrics.csv row was cut short can still be reported."""
    partial = write_prune_run(tmp_path / "partial", summary=None)
    with open(partial / "metrics.csv", "a") as f:
        f.write("11,3,0.0,0.4")  # no newline, 7 fields missing
    assert main(["report", str(partial)]) == 0
    capsys.readouterr()
    other = write_train_run(tmp_path / "other")
    if _assert_clean_exit(capsys, ["report", str(partial), str(other), "--out", str(tmp_path / "c")]) == 0:
        rows = _md_rows((tmp_path / "c" / "compare.md").read_text())
        best_ship = max(r["ship_val_acc"] for r in prune_metrics())
        assert rows[0][0] == "partial" and rows[0][3] == f"{best_ship:.4f}"


def test_write_comparison_never_writes_into_a_folder_it_did_not_make(prune_run, train_run,
                                                                      tmp_path):
    """A user's folder (or a run folder) keeps its files; a comparison's own folder may be
    written again."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "compare.md").write_text("my notes")
    (mine / "thesis.tex").write_text("precious")
    with pytest.raises(UserError, match="no earlier comparison made"):
        write_comparison([prune_run, train_run], mine)
    assert sorted(p.name for p in mine.iterdir()) == ["compare.md", "thesis.tex"]
    assert (mine / "compare.md").read_text() == "my notes"
    with pytest.raises(UserError, match="no earlier comparison made"):
        write_comparison([prune_run, train_run], prune_run)
    out = tmp_path / "cmp"
    write_comparison([prune_run, train_run], out)
    write_comparison([prune_run], out)  # its own folder: replaced
    assert len(json.loads((out / "compare.json").read_text())) == 1
    (out / ".alphaprune-comparison").unlink()  # as a version before the marker left it
    write_comparison([prune_run, train_run], out)
    assert len(json.loads((out / "compare.json").read_text())) == 2

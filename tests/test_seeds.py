"""Runs of one pipeline over seeds: tagged with their seed and a group key, shown by compare and
report as one row (mean and 95% t-interval over seeds), differences within noise marked, and
compare's markdown safe whatever a name holds."""

from __future__ import annotations

import csv
import io
import math
import statistics

import pytest
from click.testing import CliRunner

from aepipe.cli import cli

from conftest import PIPELINES, QUIET as QUIET_ALL

pytestmark = pytest.mark.usefixtures("one_torch_thread")

QUIET = [*QUIET_ALL, "train.epochs=1"]
#: Student's t quantiles t(0.975, df), from printed tables (not computed by the code under test)
T975 = {1: 12.7062, 2: 4.3027}


def _sets(args):
    return [a for q in args for a in ("--set", q)]


def test_train_over_seeds_tags_each_run_and_compare_shows_one_row_with_mean_and_interval(aepipe_store):
    from mlflow import MlflowClient

    runner = CliRunner()
    other = runner.invoke(cli, ["train", str(PIPELINES / "vanilla.toml"), *_sets([*QUIET, "model.code_dim=4"]), "-q"])
    assert other.exit_code == 0, other.output
    out = runner.invoke(cli, ["train", str(PIPELINES / "vanilla.toml"), *_sets(QUIET), "--seeds", "2", "-q"])
    assert out.exit_code == 0, out.output
    ids = out.stdout.split()
    assert len(ids) == 2
    client = MlflowClient()
    runs = [client.get_run(i) for i in ids]
    assert [r.data.tags["aepipe.seed"] for r in runs] == ["0", "1"]
    assert [r.data.params["train.seed"] for r in runs] == ["0", "1"]
    assert runs[0].data.tags["aepipe.group"] == runs[1].data.tags["aepipe.group"]
    assert client.get_run(other.stdout.split()[0]).data.tags["aepipe.group"] != runs[0].data.tags["aepipe.group"]
    mse = [r.data.metrics["test_mse"] for r in runs]
    assert mse[0] != mse[1]  # two seeds, two models

    # no target: the latest vanilla run, with the other seed of its pipeline (not the older code_dim = 4 run)
    latest = list(csv.DictReader(io.StringIO(runner.invoke(cli, ["compare", "--format", "csv"]).stdout)))
    assert len(latest) == 1 and set(latest[0]["run_id"].split(";")) == set(ids)
    table = runner.invoke(cli, ["compare", *ids, other.stdout.split()[0], "--format", "csv"])
    assert table.exit_code == 0, table.output
    rows = list(csv.DictReader(io.StringIO(table.stdout)))
    assert len(rows) == 2  # the two seeds in one row, the other pipeline in its own
    grouped = next(r for r in rows if r["seeds"] == "0,1")
    assert set(grouped["run_id"].split(";")) == set(ids)
    mean = statistics.fmean(mse)
    half = T975[1] * statistics.stdev(mse) / math.sqrt(2)
    assert float(grouped["test_mse"]) == pytest.approx(mean, rel=1e-9)
    assert float(grouped["test_mse_ci95_lo"]) == pytest.approx(mean - half, rel=1e-6)
    assert float(grouped["test_mse_ci95_hi"]) == pytest.approx(mean + half, rel=1e-6)
    text = runner.invoke(cli, ["compare", *ids, "--format", "markdown"]).stdout
    assert f"{mean:.4g} ± {half:.2g}" in text and "| seeds |" in text
    apart = list(
        csv.DictReader(io.StringIO(runner.invoke(cli, ["compare", *ids, "--format", "csv", "--per-run"]).stdout))
    )
    assert [r["run_id"] for r in apart] == ids


def test_the_interval_over_seeds_is_students_t():
    from aepipe.seeds import interval

    mean, lo, hi = interval([1.0, 2.0, 3.0])
    assert (
        mean == 2.0
        and lo == pytest.approx(2.0 - T975[2] / math.sqrt(3), rel=1e-4)
        and hi == pytest.approx(2.0 + T975[2] / math.sqrt(3), rel=1e-4)
    )
    assert interval([5.0])[0] == 5.0 and math.isnan(interval([5.0])[1])  # one seed: no interval
    assert interval([4.0, 4.0]) == (4.0, 4.0, 4.0)
    assert interval([1.0, float("nan"), 3.0])[0] == 2.0  # a NaN is left out


def test_the_group_key_ignores_the_seed_and_tracking_but_not_the_model():
    from aepipe.seeds import group_key

    base = {"train.seed": 0, "model.code_dim": 8, "tracking.experiment": "a", "description": "x"}
    assert group_key(base) == group_key({**base, "train.seed": 7, "tracking.experiment": "b", "description": "y"})
    assert group_key(base) != group_key({**base, "model.code_dim": 4})
    assert group_key(base) != group_key({**base, "data.split_seed": 1})


def test_the_report_marks_differences_within_noise():
    from aepipe.evaluation.report.page import render_html
    from aepipe.evaluation.report.table import RunPage, TableRow, best_rows

    rows = [TableRow("a (3 seeds)", "d", ["a" * 32, "a" * 31 + "b"], {"eval_fid": 10.0},
                     {"eval_fid": (8.0, 12.0, "seeds")}, ["0", "1"]),
            TableRow("b (3 seeds)", "d", ["b" * 32, "b" * 31 + "c"], {"eval_fid": 11.5},
                     {"eval_fid": (11.0, 12.5, "seeds")}, ["0", "1"]),
            TableRow("c (3 seeds)", "d", ["c" * 32, "c" * 31 + "d"], {"eval_fid": 20.0},
                     {"eval_fid": (19.0, 21.0, "seeds")}, ["0", "1"]),
            TableRow("d", "d", ["d" * 32], {"eval_fid": 12.2}),  # one run, no interval: inside a's
            TableRow("reference", "d", [], {"eval_fid": 1.0}, reference=True)]
    best, near = best_rows(rows, "eval_fid")
    assert best == {"a" * 32}  # the reference scores lower but is no contender
    assert near == {"b" * 32}  # overlaps a's interval; c's does not; d's value lies outside a's interval
    pages = [RunPage(r.run_ids[0], r.label, "d", "FINISHED", r.metrics) for r in rows if r.run_ids]
    text = render_html("t", pages, ["eval_fid"], None, [], None, rows)
    assert text.count('class="near"') == 1 and "&asymp; 11.5" in text and 'class="best"' in text
    assert "10 &plusmn; 2" in text
    higher = [TableRow("a", "d", ["a"], {"eval_precision": 0.9}, {"eval_precision": (0.85, 0.95, "samples")}),
              TableRow("b", "d", ["b"], {"eval_precision": 0.8}, {"eval_precision": (0.7, 0.86, "samples")}),
              TableRow("c", "d", ["c"], {"eval_precision": 0.5}, {"eval_precision": (0.4, 0.6, "samples")})]
    assert best_rows(higher, "eval_precision") == ({"a"}, {"b"})  # higher is better; bootstrap intervals count too
    kl = [TableRow(r.label, "d", r.run_ids, {"eval_kl": v}) for r, v in zip(higher, (1.0, 5.0, 9.0))]
    assert best_rows(kl, "eval_kl") == (set(), set())  # a KL has no better direction: never marked


def test_compare_markdown_escapes_pipes_html_and_newlines():
    from aepipe.compare import render

    rows = [
        {"variant": "a|b <script>alert(1)</script>\nsecond line", "dataset": "x & y", "run_id": "r1", "test_mse": 0.5},
        {"variant": "plain", "dataset": "d\\|", "run_id": "r2", "test_mse": 0.25},
    ]
    text = render(rows, "markdown")
    lines = text.strip().splitlines()
    assert len(lines) == 4  # header, rule, two rows: no line broken by a newline in a name
    for line in lines:
        unescaped = line.replace("\\\\", "").replace("\\|", "")
        assert unescaped.count("|") == lines[0].count("|")  # every row has the header's cells
    assert "<script>" not in text and "&lt;script&gt;" in text and "x &amp; y" in text
    assert "a\\|b" in lines[2]
    assert "d\\\\\\|" in lines[3]  # a backslash before a pipe cannot unescape it


def test_compare_marks_the_best_value_and_those_within_noise_with_a_legend():
    from aepipe.compare import marks, render

    rows = [{"variant": "a", "dataset": "d", "run_id": "a +2", "seeds": "0,1,2", "_n": 3, "eval_fid": 10.0,
             "eval_kl": 3.0, "eval_recall": 0.5,
             "_ci": {"eval_fid": (8.0, 12.0), "eval_kl": (2.0, 4.0), "eval_recall": (0.45, 0.55)}},
            {"variant": "b", "dataset": "d", "run_id": "b +2", "seeds": "0,1,2", "_n": 3, "eval_fid": 11.5,
             "eval_kl": 9.0, "eval_recall": 0.7,
             "_ci": {"eval_fid": (11.0, 12.5), "eval_kl": (8.0, 10.0), "eval_recall": (0.6, 0.8)}},
            {"variant": "c", "dataset": "d", "run_id": "c", "eval_fid": 20.0, "eval_fid_lo": 19.0, "eval_fid_hi": 21.0,
             "eval_recall": 0.62},  # one run: its interval over samples
            {"variant": "reference", "dataset": "d", "run_id": "", "eval_fid": 1.0, "eval_recall": 0.99,
             "_reference": True}]
    names = ["variant", "eval_fid", "eval_kl", "eval_recall"]
    assert marks(rows, names) == {(0, "eval_fid"): "best", (1, "eval_fid"): "near",  # c's interval: outside a's
                                  (1, "eval_recall"): "best", (2, "eval_recall"): "near"}  # c's value: inside b's
    text = render(rows, "markdown", names)
    lines = text.splitlines()
    assert lines[2] == "| a | **10 ± 2** | 3 ± 1 | 0.5 ± 0.05 |"  # no KL marked: it has no better direction
    assert lines[3] == "| b | ≈ 11.5 ± 0.75 | 9 ± 1 | **0.7 ± 0.1** |"
    assert lines[4] == "| c | 20 [19, 21] |  | ≈ 0.62 |"
    assert lines[5] == "| reference | 1 |  | 0.99 |"  # the reference row is no contender
    assert any(line.startswith("**bold**: the best value of the column") and "≈" in line for line in lines)
    plain = render(rows, "text", names)
    assert "10 ± 2 *" in plain and "≈ 11.5 ± 0.75" in plain and "0.7 ± 0.1 *" in plain
    assert "a *: the best value" in plain
    one = render(rows[2:], "markdown", ["variant", "eval_fid", "eval_recall"])
    assert "**" not in one and "≈" not in one  # one contender: no mark, no legend

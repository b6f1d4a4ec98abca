"""Reference rows: real data against real data in the same feature space, dataset and sample
count, shown under every generation table (compare, report, the zoo), computed once and kept in
the store, logged to no run."""

from __future__ import annotations

import csv
import io
import json
from html.parser import HTMLParser
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner

from aepipe.cli import cli

from conftest import PIPELINES, store_at, use_store, QUIET as QUIET_ALL

pytestmark = pytest.mark.usefixtures("one_torch_thread")

QUIET = [*QUIET_ALL, "train.epochs=1"]


def _direct(space_name: str = "domain") -> dict[str, float]:
    """The reference of the digits at a sample count beyond their training and validation rows,
    computed here from the pieces: the test split against every training and validation row."""
    from aepipe.evaluation.generation import feature_space, generation_metrics
    from aepipe.evaluation.image_sets import load_dataset

    data = load_dataset({"name": "digits"}, "cpu")
    space = feature_space(space_name, data, "cpu")
    other = torch.cat([data.train.x, data.val.x])
    return {
        **generation_metrics(space.features(data.test.x), space.features(other)),
        "rows": len(other),
        "real": len(data.test),
    }


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A vanilla run on the digits with generation metrics logged to it (as `aepipe evaluate`
    would, without its cost), its compare rows and its report."""
    from mlflow import MlflowClient

    from aepipe.compare import collect
    from aepipe.config import resolve
    from aepipe.evaluation.report import build_report
    from aepipe.plugins import get_plugin_manager
    from aepipe.training import train

    folder = tmp_path_factory.mktemp("reference")
    home = folder / "mlruns"
    with store_at(home):
        pm = get_plugin_manager()
        run = train(resolve(pm, PIPELINES / "vanilla.toml", [*QUIET, 'tracking.experiment="refs"']), pm).run_id
        client = MlflowClient()
        for key, value in (("eval_fid", 123.0), ("eval_precision", 0.25), ("eval_mse", 0.05)):
            client.log_metric(run, key, value)
        before = client.get_run(run).data
        rows = collect([run], [], pm=pm)
        output = folder / "report.html"
        build_report([run], output, log=False, pm=pm)
        after = client.get_run(run).data
        artifacts = [a.path for a in client.list_artifacts(run)]
        direct = _direct()
    return SimpleNamespace(home=home, run=run, rows=rows, text=output.read_text(encoding="utf-8"), before=before,
                           after=after, artifacts=artifacts, direct=direct)


def test_compare_shows_the_reference_row_with_the_figures_of_a_direct_computation(made):
    refs = [r for r in made.rows if r.get("_reference")]
    assert len(refs) == 1
    ref = refs[0]
    # the run's [evaluate] samples (2000) exceed the digits' training and validation rows: all of them
    assert ref["variant"] == f"reference: real test ({made.direct['real']}) vs {made.direct['rows']} real " \
                             f"(all there are; the runs drew 2000)"
    assert ref["dataset"] == "digits"
    assert ref["eval_fid"] == pytest.approx(made.direct["fid"], rel=1e-9)
    assert ref["eval_precision"] == pytest.approx(made.direct["precision"], rel=1e-9)
    assert "eval_mse" not in ref  # only the generation columns the runs have
    assert 0 <= ref["eval_fid"] < 123.0  # real data lies closer to real data than this run's samples


def test_the_reference_follows_the_sample_count_of_the_runs_evaluation_record(made, monkeypatch):
    """A run judged by `aepipe evaluate --samples 100` gets a reference of 100 real rows."""
    from mlflow import MlflowClient

    from aepipe.compare import collect
    from aepipe.evaluation.reference import reference_metrics

    use_store(monkeypatch, made.home)
    client = MlflowClient()
    record = {"settings": {"samples": 100}, "metrics": {"eval_fid": 123.0}, "groups": {}, "version": 1}
    client.log_text(made.run, json.dumps(record), "evaluation/0123456789abcdef.json")
    try:
        rows = collect([made.run], [])
        ref = next(r for r in rows if r.get("_reference"))
        assert ref["variant"].startswith(f"reference: real test ({made.direct['real']}) vs 100 real")
        assert ref["eval_fid"] == reference_metrics({"name": "digits"}, "domain", 100)["metrics"]["fid"]
        assert ref["eval_fid"] != pytest.approx(made.direct["fid"])  # another sample count, another figure
    finally:
        client.log_text(
            made.run, json.dumps({**record, "metrics": {"eval_fid": -1.0}}), "evaluation/0123456789abcdef.json"
        )


def test_the_reference_is_cached_in_the_store_and_logged_to_no_run(made, monkeypatch):
    from aepipe.evaluation import image_sets
    from aepipe.evaluation.reference import reference_metrics

    use_store(monkeypatch, made.home)
    cached = list((made.home / "references").glob("*.json"))
    assert cached and all(json.loads(p.read_text())["space"] == "domain" for p in cached)

    def no_load(*args, **kwargs):
        raise AssertionError("a cached reference loads no data")

    monkeypatch.setattr(image_sets, "load_dataset", no_load)
    again = reference_metrics({"name": "digits"}, "domain", 2000)
    assert again["metrics"]["fid"] == pytest.approx(made.direct["fid"], rel=1e-9) and again["n"] == made.direct["rows"]
    # compare and report wrote nothing to the run: the same metrics, no new artifact
    assert made.after.metrics == made.before.metrics and made.after.tags == made.before.tags
    assert not any(a.startswith(("reference", "evaluation")) for a in made.artifacts)


class _Rows(HTMLParser):
    def __init__(self, text: str):
        super().__init__()
        self.reference: dict[str, dict[str, str]] = {}
        self._in = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if tag == "tr":
            self._in = a.get("data-reference") == "1"
        elif tag == "td" and self._in:
            self.reference[a["data-col"]] = a


def test_the_report_shows_the_reference_row_and_says_how_to_read_it(made):
    ref = _Rows(made.text).reference
    assert float(ref["eval_fid"]["data-value"]) == pytest.approx(made.direct["fid"], rel=1e-9)
    assert float(ref["eval_precision"]["data-value"]) == pytest.approx(made.direct["precision"], rel=1e-9)
    assert ref["variant"]["data-value"].startswith("reference: real test")
    assert "best" not in ref["eval_fid"].get("class", "")  # the reference is no contender
    assert 'id="reading"' in made.text and "the floor a perfect generator would score" in made.text


def test_the_cli_shows_the_reference_row_and_drops_it_on_request(made, monkeypatch):
    use_store(monkeypatch, made.home)
    runner = CliRunner()
    out = runner.invoke(cli, ["compare", made.run, "--format", "csv"])
    assert out.exit_code == 0, out.output
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert [r["run_id"] for r in rows] == [made.run, ""]
    assert float(rows[1]["eval_fid"]) == pytest.approx(made.direct["fid"], rel=1e-6)
    bare = runner.invoke(cli, ["compare", made.run, "--format", "csv", "--no-reference"])
    assert [r["run_id"] for r in csv.DictReader(io.StringIO(bare.stdout))] == [made.run]
    md = runner.invoke(cli, ["compare", made.run, "--format", "markdown"])
    assert "| reference: real test" in md.stdout and "the floor a perfect generator would score" in md.stdout


def test_a_reference_of_another_space_fills_that_spaces_columns_only():
    from aepipe.evaluation.reference import parse

    assert parse("eval_fid") == ("fid", "domain", None)
    assert parse("eval_precision_inception.gmm") == ("precision", "inception", "gmm")
    assert parse("eval_fid_lo") is None and parse("eval_fid_inception_hi.gmm") is None  # bounds of intervals
    assert parse("eval_mse") is None and parse("test_fid") is None

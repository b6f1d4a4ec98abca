"""``train.cuda_graphs`` (issue 35): refused in one line off CUDA; the graphed epoch's bookkeeping
(full batches only, the means over the rows trained, a stop between two batches) checked on the
CPU with the step run eagerly where the graph would replay it. The capture itself needs a GPU
(benchmarks/gpu_check.sh)."""

from __future__ import annotations

import pytest
import torch

from aepipe.errors import ConfigError


def _pipeline(**train):
    from aepipe.config import resolve
    from aepipe.plugins import get_plugin_manager

    tree = {"variant": "vae", "data": {"name": "digits"},
            "model": {"code_dim": 4, "encoder": {"name": "mlp", "hidden": [16]},
                      "decoder": {"name": "mlp", "hidden": [16]}},
            "train": {"batch_size": 100, "device": "cpu", "epochs": 1, **train}}
    return resolve(get_plugin_manager(), tree=tree)


def test_cuda_graphs_on_a_cpu_is_refused_in_one_line_before_any_data_is_read():
    from aepipe.training.assemble import assemble

    def no_data(*args):
        raise AssertionError("the data was read")

    with pytest.raises(ConfigError, match=r"train.cuda_graphs = true needs a CUDA device; this run is on cpu") as info:
        assemble(_pipeline(cuda_graphs=True), load=no_data)
    assert "\n" not in str(info.value)


def test_the_cli_refuses_cuda_graphs_on_a_cpu_with_exit_code_2(tmp_path, store):
    from click.testing import CliRunner

    from aepipe.cli import cli

    path = tmp_path / "p.toml"
    path.write_text('variant = "vae"\n[data]\nname = "digits"\n[train]\ndevice = "cpu"\ncuda_graphs = true\n')
    result = CliRunner().invoke(cli, ["train", str(path)])
    assert result.exit_code == 2 and "needs a CUDA device" in result.output and "Traceback" not in result.output


class _Eager:
    """Stands in for the CUDA graph on the CPU: each replay runs the captured body eagerly."""

    def __init__(self, step):
        self.step, self.replays = step, 0

    def replay(self):
        self.replays += 1
        self.step._body(self.step.total)


class _Run:
    def __init__(self, stop=None):
        self.stop = stop
        self.schedule = type("S", (), {"after_batch": lambda self: None})()


def _graphed(pipeline):
    import contextlib

    from aepipe.model import build_model
    from aepipe.training import load_data
    from aepipe.training.graphs import GraphedStep

    data = load_data(pipeline, torch.device("cpu"))
    model = build_model(pipeline, data)
    optimizer = torch.optim.Adam(model.parameter_groups(), lr=1e-3)
    step = GraphedStep(model, optimizer, data, torch.device("cpu"), contextlib.nullcontext(), 100, 0.0, "p.toml")
    step._body(None)  # the warm-up: the metric names
    step.total = torch.zeros(len(step.keys))
    step.graph = _Eager(step)
    return step, data


def test_the_graphed_epoch_trains_full_batches_only_and_averages_over_the_rows_trained():
    from aepipe.training.epoch import EpochPass

    step, data = _graphed(_pipeline())
    n = len(data.train)
    full = n // 100
    assert n % 100, "the digits' training split has a short last batch"
    metrics = step.run_epoch(_Run(), EpochPass(torch.randperm(n), 0, -(-n // 100), None, None, 0.0))
    assert step.graph.replays == full  # the short batch is dropped
    assert list(metrics) == ["loss", "recon", "penalty.kl"]
    sums = step.total.clone()
    torch.testing.assert_close(torch.stack(list(metrics.values())), sums / (full * 100))
    torch.testing.assert_close(metrics["loss"], metrics["recon"] + metrics["penalty.kl"])


def test_the_graphed_epoch_stops_between_two_batches_where_the_eager_one_would():
    from aepipe.training.epoch import EpochPass, Stopped

    class Stop:
        def __init__(self):
            self.calls = 0
            self.signal_name = "SIGTERM"

        @property
        def requested(self):
            self.calls += 1
            return self.calls > 3

    step, data = _graphed(_pipeline())
    perm = torch.randperm(len(data.train))
    with pytest.raises(Stopped) as info:
        step.run_epoch(_Run(Stop()), EpochPass(perm, 0, 13, None, None, 0.0))
    position = info.value.position
    assert position.batch == 3 and step.graph.replays == 3 and torch.equal(position.perm, perm)
    assert position.keys == ["loss", "recon", "penalty.kl"] and position.sums.shape == (3,)
    torch.testing.assert_close(position.sums, step.total)
    resumed = step.run_epoch(_Run(), EpochPass(perm, position.batch, 13, position.keys, position.sums, 0.0))
    assert step.graph.replays == len(data.train) // 100 and set(resumed) == set(position.keys)

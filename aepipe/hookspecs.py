"""The aepipe hook contract: every hook a plugin can implement.

A plugin is a module (or object) whose functions are decorated with :data:`aepipe.hookimpl` and
named after the hooks below. Distributions declare it in the ``aepipe`` entry-point group::

    [project.entry-points.aepipe]
    my-plugin = "my_package.aepipe_plugin"

Keep the plugin module's import light (no ``torch`` at module level): ``aepipe --help`` loads
plugins to collect their CLI commands. Import your components inside the registration hooks.

Hooks are grouped by lifecycle: registration, run start, epoch end, run end, trial end, CLI
commands.
Every hook name starts with ``aepipe_``. Hooks are called as pluggy intends, so hook wrappers
(``@hookimpl(wrapper=True)``) work on every one of them. All hooks are called for every plugin that
implements them, except ``aepipe_train_epoch``, where the first result wins (aepipe's own
implementation comes last).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import pluggy

from aepipe.kinds import KINDS, Kind

if TYPE_CHECKING:  # pragma: no cover - typing only
    import click

    from aepipe.context import RunContext

hookspec = pluggy.HookspecMarker("aepipe")
#: the marker of a hook implementation (``from aepipe import hookimpl`` in a plugin)
hookimpl = pluggy.HookimplMarker("aepipe")

Register = Callable[[Any], Any]

# --- registration -----------------------------------------------------------------------
# One hook per component kind, declared from the table in :mod:`aepipe.kinds`.


def _registration_hook(kind: Kind) -> Callable[..., None]:
    def hook(register: Register) -> None:
        pass

    what = "an instance of" if kind.instance else "a subclass of"
    hook.__name__ = hook.__qualname__ = kind.hook
    hook.__doc__ = f"""{kind.summary}

    :param register: call ``register(obj)`` with {what} ``{kind.base.replace(':', '.')}`` that sets a
        class-level ``name`` and, for components, optionally a ``Config`` (a subclass of
        :class:`aepipe.components.ComponentConfig`): {kind.returns}. A name registered twice
        is an error that names both plugins.
    :returns: nothing; registration happens through ``register``.
    """
    return hookspec(hook)


for _kind in KINDS:
    globals()[_kind.hook] = _registration_hook(_kind)
del _kind


# --- run lifecycle ----------------------------------------------------------------------


@hookspec
def aepipe_run_start(run: RunContext) -> None:
    """Act once a training run has started (or resumed), before its next epoch.

    :param run: the :class:`aepipe.context.RunContext`: ``config`` (the resolved pipeline),
        ``model``, ``data``, ``device``, ``run_id``, ``state`` (the :class:`TrainState`:
        ``epoch``, ``history``, ``best``...), ``optimizer`` and the helpers ``log_metrics``,
        ``log_params``, ``log_figure``, ``log_text`` and ``log_artifact``.
    :returns: nothing.
    """


@hookspec(firstresult=True)
def aepipe_train_epoch(run: RunContext, epoch: int) -> dict[str, Any] | None:
    """Train one epoch. aepipe implements it (one pass over the training data in shuffled
    batches); a plugin wraps it with ``@hookimpl(wrapper=True)`` to act around every epoch (to
    time or profile it, say), or replaces it by returning a result first.

    :param run: the :class:`aepipe.context.RunContext` of the run.
    :param epoch: the epoch to train, counted from 1.
    :returns: the epoch's training metrics by bare name (``loss``, ``recon``,
        ``penalty.<key>``...), as floats or 0-d tensors, or None to leave the epoch to the next
        implementation. The first result that is not None wins.
    """


@hookspec
def aepipe_epoch_end(run: RunContext, epoch: int, metrics: dict[str, float]) -> dict[str, float] | None:
    """Add metrics at the end of every epoch.

    :param run: the :class:`aepipe.context.RunContext` of the run.
    :param epoch: the epoch just finished, counted from 1.
    :param metrics: the epoch's metrics so far (``loss``, ``recon``, each penalty, ``val_*``,
        ``lr``, ``weight.<key>``), already read back from the device.
    :returns: a dict of extra metrics of the validation data by bare name (``code.mean_activation``)
        to floats; aepipe logs each as ``val_<name>`` at this epoch's step, as it does for a
        regularizer's ``evaluate``. Or None.
    """


@hookspec
def aepipe_run_end(run: RunContext, metrics: dict[str, float]) -> dict[str, float] | None:
    """Add final metrics and artifacts once a run has trained and been evaluated on its test
    data, before its tracked run closes.

    :param run: the :class:`aepipe.context.RunContext` of the run (the model holds the best
        epoch's weights); log artifacts through ``run.log_artifact`` and friends.
    :param metrics: the final test metrics (``test_loss``, ``test_recon``, ``test_mse``, ...).
    :returns: a dict of extra test metrics by bare name (``iw_nll``); aepipe logs each as
        ``test_<name>``, as it does for a regularizer's ``evaluate``. Or None.
    """


@hookspec
def aepipe_trial_end(
    study: str, number: int, state: str, values: list[float] | None, params: dict[str, Any], run_id: str | None
) -> None:
    """Act after each ``aepipe tune`` trial has been told to Optuna.

    :param study: the study's name.
    :param number: the trial's number in the study.
    :param state: ``COMPLETE``, ``PRUNED`` or ``FAIL``.
    :param values: the objective values (in ``[tune]`` metric order) of a complete trial, else None.
    :param params: the trial's sampled settings, by dotted key.
    :param run_id: the trial's MLflow run, where one was started.
    :returns: nothing.
    """


# --- command line -----------------------------------------------------------------------


@hookspec
def aepipe_cli_commands(cli: click.Group) -> None:
    """Add commands to the ``aepipe`` command line.

    :param cli: the root :class:`click.Group`; call ``cli.add_command(command)``. Import heavy
        packages inside the command's body, not at module level.
    :returns: nothing.
    """

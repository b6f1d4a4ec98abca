"""The aepipe hook contract: every hook a plugin can implement.

A plugin is a module (or object) whose functions are decorated with :data:`aepipe.hookimpl` and
named after the hooks below. Distributions declare it in the ``aepipe`` entry-point group::

    [project.entry-points.aepipe]
    my-plugin = "my_package.aepipe_plugin"

Keep the plugin module's import light (no ``torch`` at module level): ``aepipe --help`` loads
plugins to collect their CLI commands. Import your components inside the registration hooks.

Hooks are grouped by lifecycle: registration, run start, epoch end, run end, trial end, CLI
commands.
Every hook name starts with ``aepipe_``. All hooks are called for every plugin that implements
them (none is ``firstresult``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import pluggy

if TYPE_CHECKING:  # pragma: no cover - typing only
    import click

    from aepipe.training import RunContext

hookspec = pluggy.HookspecMarker("aepipe")

Register = Callable[[Any], Any]

# --- registration -----------------------------------------------------------------------


@hookspec
def aepipe_register_datasets(register: Register) -> None:
    """Register dataset components.

    :param register: call ``register(cls)`` with a subclass of :class:`aepipe.components.Dataset`
        that sets a class-level ``name`` and, optionally, a ``Config`` (a subclass of
        :class:`aepipe.components.ComponentConfig`). A name registered twice is an error that
        names both plugins.
    :returns: nothing; registration happens through ``register``.
    """


@hookspec
def aepipe_register_encoders(register: Register) -> None:
    """Register encoder components.

    :param register: call ``register(cls)`` with a subclass of :class:`aepipe.components.Encoder`
        (an ``nn.Module`` built as ``cls(config, spec)``, whose ``forward(x, y)`` returns an
        :class:`aepipe.components.Encoding`).
    :returns: nothing.
    """


@hookspec
def aepipe_register_decoders(register: Register) -> None:
    """Register decoder components.

    :param register: call ``register(cls)`` with a subclass of :class:`aepipe.components.Decoder`
        (an ``nn.Module`` built as ``cls(config, spec)``, whose ``forward(z, y)`` returns the
        likelihood's parameters for every input dimension: logits for Bernoulli, means for
        Gaussian).
    :returns: nothing.
    """


@hookspec
def aepipe_register_corruptions(register: Register) -> None:
    """Register corruption components (x -> x~, applied in training only).

    :param register: call ``register(cls)`` with a subclass of
        :class:`aepipe.components.Corruption`.
    :returns: nothing.
    """


@hookspec
def aepipe_register_regularizers(register: Register) -> None:
    """Register regularizer components (penalties added to the loss).

    :param register: call ``register(cls)`` with a subclass of
        :class:`aepipe.components.Regularizer`. A regularizer that owns parameters sets
        ``owns_parameters = True`` and takes its own optimisation step in ``step``.
    :returns: nothing.
    """


@hookspec
def aepipe_register_priors(register: Register) -> None:
    """Register prior components p(z).

    :param register: call ``register(cls)`` with a subclass of :class:`aepipe.components.Prior`
        (``sample`` always, ``log_prob`` where it is defined).
    :returns: nothing.
    """


@hookspec
def aepipe_register_variants(register: Register) -> None:
    """Register variants: named compositions of components with default settings.

    :param register: call ``register(Variant(name=..., description=..., defaults={...}))``
        with an :class:`aepipe.components.Variant`; ``defaults`` is a partial pipeline
        configuration (for example ``{"model": {"encoder": {"name": "mlp"}}}``) that a pipeline
        file naming the variant starts from.
    :returns: nothing.
    """


# --- run lifecycle ----------------------------------------------------------------------


@hookspec
def aepipe_run_start(run: RunContext) -> None:
    """Act once a training run has started, before the first epoch.

    :param run: the :class:`aepipe.training.RunContext`: ``config`` (the resolved pipeline),
        ``model``, ``data``, ``device``, ``run_id`` (the MLflow run) and the helpers
        ``log_metrics``, ``log_params``, ``log_figure``, ``log_text`` and ``log_artifact``.
    :returns: nothing.
    """


@hookspec
def aepipe_epoch_end(run: RunContext, epoch: int, metrics: dict[str, float]) -> dict[str, float] | None:
    """Add metrics at the end of every epoch.

    :param run: the :class:`aepipe.training.RunContext` of the run.
    :param epoch: the epoch just finished, counted from 1.
    :param metrics: the epoch's metrics so far (``loss``, ``recon``, each penalty, ``val_*``),
        already read back from the device.
    :returns: a dict of extra metric names to floats, logged at this epoch's step, or None.
    """


@hookspec
def aepipe_run_end(run: RunContext, metrics: dict[str, float]) -> dict[str, float] | None:
    """Add final metrics and artifacts once a run has trained and been evaluated, before its
    MLflow run closes.

    :param run: the :class:`aepipe.training.RunContext` of the run (the model holds the best
        epoch's weights); log artifacts through ``run.log_artifact`` and friends.
    :param metrics: the final test metrics (``test_loss``, ``test_recon``, ``test_mse``, ...).
    :returns: a dict of extra final metrics (logged, and part of the run's summary), or None.
    """


@hookspec
def aepipe_trial_end(study: str, number: int, state: str, values: list[float] | None, params: dict[str, Any], run_id: str | None) -> None:
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

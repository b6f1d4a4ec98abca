"""The aepipe error hierarchy.

Every error a user can cause is an :class:`AepipeError`. Its message is one line that says what
was found, what was expected and where (file, key, plugin). The CLI prints it as such and exits
with code 2; ``aepipe --debug`` shows the traceback.
"""

from __future__ import annotations


class AepipeError(Exception):
    """Base class of every error aepipe reports to a user."""

    exit_code = 2


class ConfigError(AepipeError):
    """A pipeline file, a ``--set`` override or a component setting is wrong."""


class PluginError(AepipeError):
    """A plugin failed to load, registered a clashing component or raised in a hook.

    ``plugin`` names the plugin (its entry point or registered name) where it is known.
    """

    def __init__(self, message: str, plugin: str | None = None):
        super().__init__(message)
        self.plugin = plugin


class DataError(AepipeError):
    """A dataset could not be found, read or split."""


class TrainingError(AepipeError):
    """Training could not go on (for example the loss became NaN or infinite)."""


class RunNotFoundError(AepipeError):
    """An MLflow run, its model or its checkpoint does not exist."""


class StoreError(AepipeError):
    """The tracking store cannot serve a command: it is read-only for a command that writes,
    damaged, or cannot be created where it is asked to be."""


class WriteError(AepipeError):
    """A file could not be written (a full disk, a read-only folder); the message names the
    file and, for a full disk, the space left."""

"""aepipe's own hook implementations, the defaults that plugins may wrap or replace: registered on
every plugin manager before any plugin (so called last). The training epoch itself is the run's
(:attr:`aepipe.context.RunContext.default_epoch`, set by the lifecycle), so this registry-level
module names nothing above it. Light at import."""

from __future__ import annotations

from typing import Any

from aepipe.hookspecs import hookimpl


@hookimpl(trylast=True)
def aepipe_train_epoch(run: Any, epoch: int) -> dict[str, Any]:
    return run.default_epoch(run, epoch)

"""aepipe's own hook implementations, registered on every plugin manager before any plugin
(so called last): the training epoch that plugins may wrap or replace. Light at import."""

from __future__ import annotations

from typing import Any

from aepipe import hookimpl


@hookimpl(trylast=True)
def aepipe_train_epoch(run: Any, epoch: int) -> dict[str, Any]:
    from aepipe.training.epoch import train_epoch

    return train_epoch(run, epoch)

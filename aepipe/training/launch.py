"""``python -m aepipe.training.launch TORCHRUN-ARGS``: torch.distributed.run as ``aepipe train
--nproc`` uses it, with its answers to a signal or a failed process as one line each instead of
its tracebacks. The exit code: 130 after Ctrl-C, 143 after SIGTERM, 1 when a process failed."""

from __future__ import annotations

import signal
import sys


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"{code} ({signal.Signals(-code).name})"
        except ValueError:
            pass
    return str(code)


def main() -> None:
    import logging

    # its story of a stop or a failure: told below
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as run

    try:
        run(sys.argv[1:])
    except SignalException as exc:
        sys.exit(130 if exc.sigval == signal.SIGINT else 143)
    except ChildFailedError as exc:
        failures = sorted(exc.failures.items(), key=lambda item: item[1].timestamp)  # by global rank
        codes = {f.exitcode for _, f in failures}
        if codes <= {130, 143}:  # stopped on purpose: each process said so already
            sys.exit(130 if 130 in codes else 143)
        # the cause, not its echo: a process killed by a signal before one that lost contact with it
        rank, first = min(failures, key=lambda item: (item[1].exitcode >= 0, item[1].timestamp))
        sys.stderr.write(f"Error: the training process of rank {rank} (pid {first.pid}) exited with "
                         f"{_describe(first.exitcode)}; the others were stopped\n")
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()

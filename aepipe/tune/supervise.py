"""Worker processes on this machine: where each runs (GPUs, threads), starting and restarting
them, and stopping a worker whose command died."""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass
from aepipe.tune.study import COMMAND_ENV


@dataclass(frozen=True)
class Placement:
    """Where one of ``aepipe tune --n-workers``' workers runs: the environment a child worker
    starts with, and the GPU index this process selects when it is the first worker."""

    env: dict[str, str]
    gpu: int | None
    summary: str


def worker_placement(n_workers: int, device: str, gpus: int, cpu_count: int, visible: str | None) -> list[Placement]:
    """One worker per GPU, round robin, when the device is left to aepipe (``auto``/``cuda``) and
    GPUs exist: child ``i`` sees only GPU ``i % gpus`` of those visible to this process
    (``visible``: this process's CUDA_VISIBLE_DEVICES, whose entries children must keep). A
    named device (``cpu``, ``cuda:1``) is used by every worker as it is. The CPU threads are
    shared out between the workers."""
    threads = str(max(1, cpu_count // n_workers))
    spread = gpus > 0 and device in ("auto", "cuda")
    if not spread:
        return [
            Placement({"AEPIPE_NUM_THREADS": threads}, None, f"{threads} CPU thread(s) each") for _ in range(n_workers)
        ]
    ids = [v.strip() for v in visible.split(",")][:gpus] if visible else [str(g) for g in range(gpus)]
    return [Placement({"AEPIPE_NUM_THREADS": threads, "CUDA_VISIBLE_DEVICES": ids[i % gpus]}, 0 if i == 0 else None,
                      f"one GPU each, round robin over {gpus}") for i in range(n_workers)]


def stop_with_parent(poll: float = 1.0) -> None:
    """In a worker process: when the command that started it dies, stop as if sent SIGTERM (the
    trial in training stops between batches, its run KILLED), within ``poll`` seconds or so. The
    command is the pid it passed down (``host:pid``), so one that died before this began watching
    is noticed too."""
    import signal

    command = os.environ.get(COMMAND_ENV, "").rpartition(":")[2]
    parent = int(command) if command.isdigit() else os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="aepipe-parent-watch", daemon=True).start()


def start_workers(st, pipeline, overrides, n_workers, timeout, device, placed_on, echo) -> "Workers":
    """Start the ``n_workers - 1`` child workers of study ``st`` (opened: its name, storage and
    trial count are known); :meth:`Workers.run` then makes this process the first worker. A
    command starts them as soon as the study is open, so that their start-up (importing torch,
    MLflow and Optuna) overlaps its own."""
    import subprocess

    import torch

    from aepipe.tune.study import command_id

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    placement = worker_placement(
        n_workers, placed_on, gpus, os.cpu_count() or 1, os.environ.get("CUDA_VISIBLE_DEVICES")
    )
    # the storage URL travels in the environment: a password never shows in the process list
    args = [sys.executable, "-m", "aepipe.cli", "tune", str(pipeline), "--worker", "--study", st.name,
            "--n-trials", str(st.settings.n_trials)]
    for text in overrides:
        args += ["--set", text]
    if timeout is not None:
        args += ["--timeout", str(timeout)]
    if device is not None:
        args += ["--device", device]

    def start(i: int):
        env = {**os.environ, **placement[i].env, "AEPIPE_STORAGE": st.storage_url, COMMAND_ENV: command_id()}
        return subprocess.Popen(args, env=env)

    return Workers(placement, start, {i: start(i) for i in range(1, n_workers)})


class Workers:
    """The child workers of one command, and how to restart one (see :func:`start_workers`)."""

    def __init__(self, placement: list[Placement], start, procs: dict):
        self.placement, self.start, self.procs = placement, start, procs
        self.done = threading.Event()

    def stop(self) -> None:
        """Stop every child (this command failed, or was stopped)."""
        self.done.set()
        stop_children(list(self.procs.values()))

    def run(self, pm, st, device, echo) -> None:
        """This process as the first worker, while the children are watched (one that dies is
        restarted while the study is short); Ctrl-C, SIGTERM or an error here stops them too."""
        import torch

        from aepipe.tune.study import finished_count
        from aepipe.tune.worker import run_worker

        procs, done, n_workers = self.procs, self.done, len(self.placement)
        echo(f"study '{st.name}': {n_workers} workers ({self.placement[0].summary}): "
             f"this process ({os.getpid()}) and {[p.pid for p in procs.values()]}")

        def supervise() -> None:
            restarts = 0
            while procs:
                if done.wait(1.0):  # once this process's worker is done, its children are watched closely
                    time.sleep(0.05)
                for i, proc in list(procs.items()):
                    rc = proc.poll()
                    if rc is None:
                        continue
                    del procs[i]
                    stopped = rc in (130, -2, -15, 143)  # Ctrl-C or SIGTERM: stopped on purpose, not died
                    if (rc != 0 and not stopped and not done.is_set()
                            and finished_count(st.study) < st.settings.n_trials
                            and restarts < 2 * n_workers):
                        restarts += 1
                        echo(f"worker {i} (pid {proc.pid}) exited with {rc}; starting a new one")
                        procs[i] = self.start(i)
                    elif rc != 0:
                        echo(f"worker {i} (pid {proc.pid}) exited with {rc}")

        supervisor = threading.Thread(target=supervise, daemon=True)
        supervisor.start()
        if self.placement[0].gpu is not None:
            torch.cuda.set_device(self.placement[0].gpu)
        torch.set_num_threads(int(self.placement[0].env["AEPIPE_NUM_THREADS"]))
        try:
            run_worker(pm, st, device=device, echo=echo)
        except BaseException:  # Ctrl-C, SIGTERM or an error here: the children stop too
            self.stop()
            raise
        finally:
            done.set()
            supervisor.join()


def stop_children(procs: list, grace: float = 30.0) -> None:
    """Ask each child worker to stop (SIGTERM: its trial stops between batches, its run KILLED),
    and kill any still there after ``grace`` seconds."""
    import signal

    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired
            proc.kill()

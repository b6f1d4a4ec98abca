"""Training one run: the loop (:mod:`.loop`), one epoch (:mod:`.epoch`), the run's state and
checkpoints (:mod:`.state`), schedules (:mod:`.schedules`), resuming (:mod:`.resume`), what a run
records (:mod:`.run_log`), devices (:mod:`.device`), what a run is set up with (:mod:`.setup`:
data, first-step check, optimizer), one optimizer step (:mod:`.step`) and what it measures
(:mod:`.metrics`).

The names below load on first use: importing one of the light modules here does not import the loop."""

from aepipe.lazy import facade

_NAMES = {
    "train": "aepipe.training.loop", "Trainer": "aepipe.training.loop", "RunResult": "aepipe.training.loop",
    "Interrupted": "aepipe.training.loop", "TrainState": "aepipe.training.state",
    "split_metrics": "aepipe.training.metrics",
    "load_data": "aepipe.training.setup", "make_optimizer": "aepipe.training.setup",
    "sanity_check": "aepipe.training.setup",
    "select_device": "aepipe.training.device", "autocast": "aepipe.training.device",
    "prepare_for_device": "aepipe.training.device", "seed_everything": "aepipe.training.device",
    "optimizer_step": "aepipe.training.step",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = facade(__name__, _NAMES)

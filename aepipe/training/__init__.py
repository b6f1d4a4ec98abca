"""Training one run: the loop (:mod:`.loop`), one epoch (:mod:`.epoch`), the run's state and
checkpoints (:mod:`.state`), schedules (:mod:`.schedules`), resuming (:mod:`.resume`), what a run
records (:mod:`.report`), devices (:mod:`.device`) and evaluation (:mod:`.evaluate`)."""

from aepipe.training.device import autocast, prepare_for_device, seed_everything, select_device
from aepipe.training.evaluate import evaluate, load_data, make_optimizer, sanity_check
from aepipe.training.loop import Interrupted, RunResult, Trainer, train
from aepipe.training.state import TrainState

__all__ = ["train", "Trainer", "RunResult", "Interrupted", "TrainState", "evaluate", "load_data", "make_optimizer",
           "sanity_check", "select_device", "autocast", "prepare_for_device", "seed_everything"]

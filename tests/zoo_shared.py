"""What the model-zoo test modules share: one CPU thread for the models they train, and the
plain digits VAE that several of them compare their variants against (trained once a session)."""

from __future__ import annotations

from pathlib import Path
from conftest import QUIET


#: the baseline's budget: vae.toml for 30 epochs, test_iw_nll with K = 100 (the claims of
#: test_zoo_perceptual and test_learned_priors train their variants at the same 30 epochs)
DIGITS_VAE = [*QUIET, "train.epochs=30", "model.regularizers.kl.iw_samples=100"]


def one_torch_thread():
    """Torch on one CPU thread for the block, then the thread count as it was
    (:func:`aepipe.training.device.one_cpu_thread`): the zoo's models are small, two threads
    gain nothing, and on two busy cores their waiting for each other makes a step up to 15 times
    slower (the digits VAE, 30 epochs: 256 s against 25 s)."""
    from aepipe.training.device import one_cpu_thread

    return one_cpu_thread()


def train_digits_vae(folder: Path):
    """vae.toml at :data:`DIGITS_VAE`'s budget, tracked in memory under ``folder``."""
    from aepipe.config import resolve
    from aepipe.plugins import get_plugin_manager
    from aepipe.tracking.memory import MemoryTracker
    from aepipe.training import train

    from conftest import PIPELINES

    pm = get_plugin_manager()
    with one_torch_thread():
        return train(resolve(pm, PIPELINES / "vae.toml", DIGITS_VAE), pm, tracker=MemoryTracker(folder))

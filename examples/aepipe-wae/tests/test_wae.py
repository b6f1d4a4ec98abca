"""The plugin passes aepipe's conformance suite and does what it claims."""

import pytest
import torch

from aepipe.plugin import check_component, registered_components


@pytest.mark.parametrize("kind,name", registered_components(plugin="wae"))
def test_conforms(kind, name):
    check_component(kind, name)


def test_registered_through_the_entry_point(aepipe_pm):
    info = aepipe_pm.infos["wae"]
    assert info.dist == "aepipe-wae" and "mmd" in aepipe_pm.registry.names("regularizer")


def test_mmd_pulls_codes_to_the_prior(aepipe_pm, aepipe_store):
    from aepipe import resolve, train
    from aepipe.plugin import mmd_rbf

    quiet = {"tracking.log_model": False, "tracking.log_images": False, "train.epochs": 8}
    wae = train(resolve(aepipe_pm, tree={"variant": "wae"}, values=quiet), aepipe_pm)
    plain = train(
        resolve(aepipe_pm, tree={"variant": "wae"}, values={**quiet, "model.regularizers.mmd.enabled": False}),
        aepipe_pm,
    )

    def distance(result):
        torch.manual_seed(0)
        with torch.no_grad():
            codes = result.model.encode(result.data.x_test).code
        return float(mmd_rbf(codes, torch.randn_like(codes)))

    assert distance(wae) < distance(plain) / 3

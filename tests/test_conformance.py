"""Every first-party component passes the conformance suite third parties use."""

from __future__ import annotations

import pytest

from aepipe.testing import check_component, registered_components

COMPONENTS = registered_components()  # aepipe's own; the test environment installs no other plugin


@pytest.mark.parametrize("kind,name", COMPONENTS, ids=[f"{k}:{n}" for k, n in COMPONENTS])
def test_component_conforms(kind, name):
    check_component(kind, name)


def test_the_suite_catches_a_broken_component(aepipe_pm, aepipe_plugin):
    import types

    from aepipe import hookimpl

    plugin = types.ModuleType("wrongshape")

    @hookimpl
    def aepipe_register_decoders(register):
        from aepipe_plugins.networks.basic import OneLayerDecoder

        class Short(OneLayerDecoder):
            name = "short"

            def forward(self, z, y_onehot=None):
                return super().forward(z, y_onehot)[:, :-1]

        register(Short)

    plugin.aepipe_register_decoders = aepipe_register_decoders
    aepipe_plugin(plugin, name="wrongshape")
    with pytest.raises(
        AssertionError, match=r"decoder 'short' \(plugin 'wrongshape'\): output shape \(16, 63\), expected \(16, 64\)"
    ):
        check_component("decoder", "short", aepipe_pm)


def test_the_suite_catches_a_component_that_cannot_learn(aepipe_pm, aepipe_plugin):
    """The loss check stops once the loss has gone down; a decoder whose output ignores its
    weights never gets there, and fails after all the steps."""
    import types

    from aepipe import hookimpl

    plugin = types.ModuleType("stuck")

    @hookimpl
    def aepipe_register_decoders(register):
        from aepipe_plugins.networks.basic import OneLayerDecoder

        class Stuck(OneLayerDecoder):
            name = "stuck"

            def forward(self, z, y_onehot=None):
                return 0.0 * super().forward(z, y_onehot)

        register(Stuck)

    plugin.aepipe_register_decoders = aepipe_register_decoders
    aepipe_plugin(plugin, name="stuck")
    with pytest.raises(
        AssertionError,
        match=r"decoder 'stuck' \(plugin 'stuck'\): 30 training steps on one batch did not lower the loss",
    ):
        check_component("decoder", "stuck", aepipe_pm)


def _register_trimming_decoder(aepipe_plugin, declared: tuple) -> None:
    """A decoder whose output loses a column only under the non-default setting ``trim = true``."""
    import types

    from aepipe import hookimpl
    from aepipe.plugin import ComponentConfig

    plugin = types.ModuleType("trimming")

    @hookimpl
    def aepipe_register_decoders(register):
        from aepipe_plugins.networks.basic import OneLayerDecoder

        class TrimConfig(ComponentConfig):
            trim: bool = False

        class Trimming(OneLayerDecoder):
            name = "trimming"
            Config = TrimConfig
            conformance_settings = declared

            def forward(self, z, y_onehot=None):
                out = super().forward(z, y_onehot)
                return out[:, :-1] if self.config.trim else out

        register(Trimming)

    plugin.aepipe_register_decoders = aepipe_register_decoders
    aepipe_plugin(plugin, name="trimming")


def test_the_suite_checks_each_declared_setting(aepipe_pm, aepipe_plugin):
    """A bug behind a non-default setting passes the defaults' checks and is caught under the
    settings the component declares, which the failure names; ``settings=`` checks one."""
    _register_trimming_decoder(aepipe_plugin, ({"trim": True},))
    check_component("decoder", "trimming", aepipe_pm, settings={})  # the defaults alone pass
    with pytest.raises(AssertionError,
                       match=r"decoder 'trimming' \(plugin 'trimming'\) under settings \{'trim': True\}: "
                             r"output shape \(16, 63\), expected \(16, 64\)"):
        check_component("decoder", "trimming", aepipe_pm)


def test_declared_settings_the_config_refuses_are_a_finding(aepipe_pm, aepipe_plugin):
    _register_trimming_decoder(aepipe_plugin, ({"trim": "yes please"},))
    with pytest.raises(AssertionError,
                       match=r"under settings \{'trim': 'yes please'\}: its Config refuses the settings it declares"):
        check_component("decoder", "trimming", aepipe_pm)


def test_plugins_check_command(aepipe_pm, monkeypatch):
    from click.testing import CliRunner

    from aepipe import cli as cli_module

    out = CliRunner().invoke(cli_module.cli, ["plugins", "--check", "--plugin", "weights"])
    assert out.exit_code == 0 and "plugin weights: every component passes" in out.stderr
    out = CliRunner().invoke(cli_module.cli, ["plugins", "--check", "--plugin", "nope"])
    assert out.exit_code == 2 and "--plugin nope: no such plugin" in out.stderr


def test_every_variant_is_checked_by_training_one_batch(aepipe_pm, aepipe_plugin):
    """The suite covers variants too: their defaults resolve, the model builds, one batch trains
    (a variant that cannot learn, or whose defaults are invalid, fails naming its plugin)."""
    import types

    from aepipe import hookimpl
    from aepipe.variant import Variant

    assert {("variant", name) for name in aepipe_pm.registry.names("variant")} <= set(COMPONENTS)
    plugin = types.ModuleType("badvariants")
    frozen = {"model": {"encoder": {"name": "one-layer"}, "decoder": {"name": "one-layer"}}, "train": {"lr": 1e-30}}
    invalid = {"model": {"encoder": {"name": "mlp", "hidden": "wide"}, "decoder": {"name": "one-layer"}}}
    plugin.aepipe_register_variants = hookimpl(lambda register: [register(Variant("frozen", defaults=frozen)),
                                                                 register(Variant("invalid", defaults=invalid))])
    aepipe_plugin(plugin, name="badvariants")
    with pytest.raises(
        AssertionError, match=r"variant 'frozen' \(plugin 'badvariants'\): one batch of training changed no parameter"
    ):
        check_component("variant", "frozen", aepipe_pm)
    with pytest.raises(
        AssertionError,
        match=r"variant 'invalid' \(plugin 'badvariants'\): its defaults do not make a valid pipeline: "
        r"variant 'invalid' of plugin 'badvariants': 'model.encoder.hidden' = 'wide'",
    ):
        check_component("variant", "invalid", aepipe_pm)

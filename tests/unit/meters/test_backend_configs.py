"""One configuration model per meter backend, chosen by ``kind``; the flat CLI options map onto
them and a bad value is refused naming the option the user gave."""

from __future__ import annotations

import pytest

from joulebench.errors import ConfigError, UnknownName
from joulebench.meters.registry import (
    KNOWN_METERS,
    EstimateConfig,
    FakeConfig,
    MeterOptions,
    NvmlConfig,
    RaplConfig,
    backend_config,
    meter_configs,
)


def test_kind_picks_the_backend_model() -> None:
    c = backend_config({"kind": "estimate", "scope": "system", "target_ports": [8000]})
    assert isinstance(c, EstimateConfig) and c.scope == "system" and c.target_ports == (8000,)
    assert backend_config({"kind": "fake"}) == FakeConfig(power_w=100.0)
    with pytest.raises(ConfigError, match="power_w"):
        backend_config({"kind": "fake", "power_w": -1})
    with pytest.raises(ConfigError, match="scrape_interval"):
        backend_config({"kind": "fake", "scrape_interval_s": 2})  # another backend's field
    with pytest.raises(UnknownName, match="unknown meter 'bogus'"):
        backend_config({"kind": "bogus"})


def test_flat_options_map_onto_the_backends_in_use() -> None:
    nvml, rapl = meter_configs("nvml+rapl", gpus="0,1", nvml_mode="polled", rapl_root="/x")
    assert nvml == NvmlConfig(mode="polled", gpus="0,1") and str(rapl.root) == "/x"
    assert isinstance(rapl, RaplConfig)
    # a value is checked by the backend that reads it, and named as the user gave it
    with pytest.raises(ConfigError, match="fake_power_w"):
        meter_configs("fake", fake_power_w=-1.0)
    with pytest.raises(ConfigError, match="nvml_mode"):
        meter_configs("auto", nvml_mode="sometimes")
    assert meter_configs("estimate", nvml_mode="sometimes")  # nvml is not opened: not read
    with pytest.raises(ConfigError, match="invalid meter options"):
        meter_configs("fake", not_an_option=1)


def test_every_flat_option_belongs_to_a_backend_field() -> None:
    read = set()
    for name, spec in KNOWN_METERS.items():
        assert spec.config.model_fields["kind"].default == name
        assert set(spec.fields.values()) <= set(spec.config.model_fields) - {"kind"}, name
        read |= set(spec.fields)
    assert read == set(MeterOptions.model_fields) - {"allow_missing_gpu"}

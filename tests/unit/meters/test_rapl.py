"""RAPL meter on a fake powercap tree: domains, µJ → J, wraparound, dedupe, permission errors."""

from __future__ import annotations

import os

import pytest

from joulebench.errors import MeterUnavailable
from joulebench.meters import rapl
from joulebench.meters.base import Method
from joulebench.meters.rapl import RaplMeter


def zone(root, name, label, energy_uj, max_uj=1_000_000):
    d = root / name
    d.mkdir(parents=True)
    (d / "name").write_text(label + "\n")
    (d / "energy_uj").write_text(f"{energy_uj}\n")
    (d / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return d


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "powercap"
    zone(root, "intel-rapl:0", "package-0", 900_000)
    zone(root / "intel-rapl:0", "intel-rapl:0:0", "core", 5)
    zone(root / "intel-rapl:0", "intel-rapl:0:1", "dram", 100)
    zone(root, "intel-rapl:1", "package-1", 10)
    zone(root, "intel-rapl-mmio:0", "package-0", 42)  # duplicate of intel-rapl:0
    zone(root, "intel-rapl:2", "psys", 0)  # platform: would double count
    return root


def test_domains_dedupe_and_skip_core_psys(tree):
    m = RaplMeter(tree)
    assert m.domains == {"cpu:0": Method.RAPL, "cpu:1": Method.RAPL, "dram:0": Method.RAPL}
    assert m.parameters()["zones"]["cpu:0"] == "intel-rapl:0"


def test_wraparound_and_microjoules(tree):
    m = RaplMeter(tree)
    (tree / "intel-rapl:0" / "energy_uj").write_text("400000\n")  # wrapped past 1_000_000 µJ
    (tree / "intel-rapl:0" / "intel-rapl:0:1" / "energy_uj").write_text("2100\n")
    r = m.read()
    assert r.energy_j["cpu:0"] == pytest.approx(0.5)  # 0.1 J to the wrap + 0.4 J after
    assert r.energy_j["dram:0"] == pytest.approx(0.002)
    assert r.energy_j["cpu:1"] == 0.0


def test_missing_tree_is_explained(tmp_path):
    with pytest.raises(MeterUnavailable, match="no Linux powercap interface"):
        RaplMeter(tmp_path / "none")
    a = rapl.probe(tmp_path / "none")
    assert not a.available and "modprobe" in a.hint


def test_tree_without_packages(tmp_path):
    zone(tmp_path, "intel-rapl:0", "psys", 1)
    with pytest.raises(MeterUnavailable, match="no RAPL package zone"):
        RaplMeter(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files regardless of mode")
def test_permission_error_gives_chmod_hint(tree):
    (tree / "intel-rapl:0" / "energy_uj").chmod(0)
    with pytest.raises(MeterUnavailable, match=r"permission denied.*chmod"):
        RaplMeter(tree)
    a = rapl.probe(tree)
    assert not a.available and "sudo" in a.hint


def test_permission_error_translated_when_root(tree, monkeypatch):
    real = type(tree).read_text

    def deny(self, *a, **k):
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied")
        return real(self, *a, **k)

    monkeypatch.setattr(type(tree), "read_text", deny)
    with pytest.raises(MeterUnavailable, match="chmod a\\+r"):
        RaplMeter(tree)

from __future__ import annotations

import pytest

from joulebench.errors import ConfigError
from joulebench.profile.sweep import load_sweep
from joulebench.reproduce.plan import load_plan
from joulebench.yamlfile import read_yaml


def test_reads_a_mapping(tmp_path):
    f = tmp_path / "a.yaml"
    f.write_text("name: x\nmodels: [tiny]\n")
    assert read_yaml(f, "sweep file") == {"name": "x", "models": ["tiny"]}


@pytest.mark.parametrize("loader", [load_sweep, load_plan])
def test_missing_file_and_bad_yaml_name_the_file(tmp_path, loader):
    with pytest.raises(ConfigError, match=r"cannot read .* file .*none\.yaml"):
        loader(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        loader(bad)

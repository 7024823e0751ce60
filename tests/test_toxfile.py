"""toxfile.py: pip's package sources become uv's, so tox-uv installs what pip would."""
from __future__ import annotations

import importlib.util

import pytest


@pytest.fixture(scope="module")
def toxfile(repo_root):
    spec = importlib.util.spec_from_file_location("toxfile", repo_root / "toxfile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CONFIG = [
    ":env:.find-links='/opt/wheels'",
    ":env:.default-timeout='180'",
    "global.constraint='/etc/xdg/pip/constraints.txt'",
    "global.extra-index-url='file:///opt/pypi/simple file:///opt/pypi-more/simple'",
    "global.find-links='/elsewhere'",
    "user.index-url='https://user.example/simple'",   # a section pip does not apply to installs
]


def test_pip_sources_become_uv_settings_and_the_environment_wins_over_files(toxfile):
    settings = toxfile.uv_settings(toxfile.pip_settings(CONFIG), environ={})
    assert settings == {
        "UV_FIND_LINKS": "/opt/wheels",   # PIP_FIND_LINKS over the file's find-links
        "UV_CONSTRAINT": "/etc/xdg/pip/constraints.txt",
        "UV_EXTRA_INDEX_URL": "file:///opt/pypi/simple file:///opt/pypi-more/simple",
        "UV_INDEX_STRATEGY": "unsafe-best-match",
    }


def test_a_uv_setting_already_made_is_kept(toxfile):
    settings = toxfile.uv_settings(toxfile.pip_settings(CONFIG), environ={"UV_FIND_LINKS": "/mine",
                                                                          "UV_INDEX_STRATEGY": "first-index"})
    assert "UV_FIND_LINKS" not in settings and "UV_INDEX_STRATEGY" not in settings
    assert settings["UV_EXTRA_INDEX_URL"].startswith("file:///opt/pypi/simple")


def test_without_pip_settings_uv_keeps_its_defaults(toxfile):
    assert toxfile.uv_settings(toxfile.pip_settings([":env:.default-timeout='180'"]), environ={}) == {}

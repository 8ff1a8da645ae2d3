"""The modules' documentation agrees with their argument specs and renders with ansible-doc.

What ansible-test's validate-modules checks for options: every option documented, no
undocumented option, same type, default, required flag and choices.  The installed
collection (``make collection``) is the one checked.
"""

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(os.environ.get("CBACK_ANSIBLE_BIN") or Path(sys.executable).parent)
# The per-peer modules (the action group) and the run modules (a whole run in one execution).
MODULES = ["cback_collect_indicator", "cback_stage", "cback_managed_action"]
RUN_MODULES = ["cback_stage_run", "cback_managed_run"]


@pytest.fixture(scope="module")
def docs(installed_collections):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(installed_collections))
    names = ["cedarbackup.peer.%s" % m for m in MODULES + RUN_MODULES]
    out = subprocess.run(
        [str(VENV_BIN / "ansible-doc"), "--json"] + names,
        env=env, capture_output=True, text=True, timeout=120, check=True,
    )
    return json.loads(out.stdout)


def _argument_spec(module_name, monkeypatch):
    """The keyword arguments the module's main() gives AnsibleModule."""
    module = importlib.import_module("ansible_collections.cedarbackup.peer.plugins.modules." + module_name)
    captured = {}

    class Stop(Exception):
        pass

    def fake(**kwargs):
        captured.update(kwargs)
        raise Stop()

    monkeypatch.setattr(module, "AnsibleModule", fake)
    with pytest.raises(Stop):
        module.main()
    return captured


def _compare_options(spec, documented, where):
    assert sorted(documented) == sorted(spec), where
    for name, arg in spec.items():
        doc = documented[name]
        label = where + name
        assert doc.get("type", "str") == arg.get("type", "str"), label
        assert bool(doc.get("required", False)) == bool(arg.get("required", False)), label
        assert doc.get("default") == arg.get("default"), label
        assert doc.get("choices") == arg.get("choices"), label
        assert doc.get("elements") == arg.get("elements"), label
        assert doc.get("description"), label
        if "options" in arg:
            _compare_options(arg["options"], doc.get("suboptions") or {}, label + ".")
        else:
            assert "suboptions" not in doc, label


@pytest.mark.parametrize("module_name", MODULES + RUN_MODULES)
def test_options_match_argument_spec(module_name, docs, monkeypatch):
    kwargs = _argument_spec(module_name, monkeypatch)
    assert kwargs["supports_check_mode"] is True
    _compare_options(kwargs["argument_spec"], docs["cedarbackup.peer." + module_name]["doc"]["options"], "")


@pytest.mark.parametrize("module_name", MODULES + RUN_MODULES)
def test_doc_blocks_complete(module_name, docs):
    entry = docs["cedarbackup.peer." + module_name]
    assert entry["doc"]["attributes"]["check_mode"]["support"] == "full"
    if module_name in MODULES:
        assert entry["doc"]["attributes"]["action_group"]["membership"] == ["cedarbackup.peer.cback"]
    else:
        assert "action_group" not in entry["doc"]["attributes"]
    assert entry["examples"].strip()
    assert entry["return"]
    for value in entry["return"].values():
        assert value.get("description") and value.get("type") and value.get("returned")


def test_action_group_lists_the_modules():
    import yaml

    runtime = yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text())
    assert sorted(runtime["action_groups"]["cback"]) == sorted(MODULES)
    assert runtime["requires_ansible"] == ">=2.16.0"

"""The modules' documentation renders with ansible-doc and says what this collection promises.

Whether the documentation agrees with the argument specs (every option documented, same
type, default, required flag, choices and elements, suboptions too), has EXAMPLES and
well-formed RETURN entries is ansible-test's validate-modules (``make sanity``).  What it
does not check is here: the documentation renders with the ansible-doc under test (the
oldest supported ansible-core too, ``make test-compat``), every module has RETURN values,
supports check mode fully, and the per-peer modules, only they, are in the
``cedarbackup.peer.cback`` action group.  The installed collection (``make collection``)
is the one checked.
"""

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


@pytest.mark.parametrize("module_name", MODULES + RUN_MODULES)
def test_doc_blocks_complete(module_name, docs):
    entry = docs["cedarbackup.peer." + module_name]
    # with validate-modules (attributes-check-mode), "full" also means supports_check_mode=True
    assert entry["doc"]["attributes"]["check_mode"]["support"] == "full"
    if module_name in MODULES:
        assert entry["doc"]["attributes"]["action_group"]["membership"] == ["cedarbackup.peer.cback"]
    else:
        assert "action_group" not in entry["doc"]["attributes"]
    assert entry["return"]  # validate-modules wants RETURN of new modules only


def test_action_group_lists_the_modules():
    import yaml

    runtime = yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text())
    assert sorted(runtime["action_groups"]["cback"]) == sorted(MODULES)
    assert runtime["requires_ansible"] == ">=2.16.0"

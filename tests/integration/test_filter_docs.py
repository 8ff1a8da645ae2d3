"""The filters' documentation (plugins/filter/<name>.yml) renders with ansible-doc and fits the code.

The filters live together in plugins/filter/cback.py; ansible-core (2.14+) reads the
documentation of each from a YAML file of the filter's name beside it.  The installed
collection (``make collection``) is the one checked, with ansible-doc from .venv/bin
(``CBACK_ANSIBLE_BIN`` overrides, as in test_documentation.py).
"""

import inspect
import json
import os
import subprocess
from pathlib import Path

import pytest

from ansible_collections.cedarbackup.peer.plugins.filter import cback

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(os.environ.get("CBACK_ANSIBLE_BIN") or ROOT / ".venv" / "bin")
FILTERS = sorted(cback.FilterModule().filters())
INTERNAL = "its interface may change without notice"  # every filter is a helper, not a stable API
# The filters of the settings model (0.2.0); the others came with 0.1.0.
ADDED_IN_0_2_0 = {"cback_inventory_problem", "cback_resolve", "cback_role_variables", "cback_run_failure", "cback_run_outcome"}
PROBLEMS = ("[WARNING]", "[ERROR]", "[DEPRECATION WARNING]")


def _ansible_doc(collections, *args):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false",
               ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    return subprocess.run(
        [str(VENV_BIN / "ansible-doc"), "-t", "filter"] + list(args),
        env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, check=False,
    )


def _no_problems(result):
    assert result.returncode == 0, result.stdout + result.stderr
    for problem in PROBLEMS:
        assert problem not in result.stderr, result.stderr
        assert problem not in result.stdout, result.stdout


@pytest.fixture(scope="module")
def docs(installed_collections):
    result = _ansible_doc(installed_collections, "--json", *["cedarbackup.peer." + name for name in FILTERS])
    _no_problems(result)
    return json.loads(result.stdout)


def test_every_filter_has_a_doc_file():
    assert FILTERS == sorted([
        "cback_inventory_problem", "cback_peer_failure", "cback_peers", "cback_resolve", "cback_role_variables", "cback_run_failure",
        "cback_run_outcome", "cback_summary_table",
    ])
    assert sorted(path.stem for path in (ROOT / "plugins" / "filter").glob("*.yml")) == FILTERS


def test_list_shows_every_filter_documented(installed_collections):
    result = _ansible_doc(installed_collections, "-l", "cedarbackup.peer")
    _no_problems(result)
    listed = {}
    for line in result.stdout.splitlines():
        if line.strip():
            name, dummy, summary = line.strip().partition(" ")
            listed[name] = summary.strip()
    assert sorted(listed) == ["cedarbackup.peer." + name for name in FILTERS]
    for name, summary in listed.items():
        assert summary and "UNDOCUMENTED" not in summary, name


@pytest.mark.parametrize("name", FILTERS)
def test_renders_without_warnings(name, installed_collections):
    result = _ansible_doc(installed_collections, "cedarbackup.peer." + name)
    _no_problems(result)
    assert "cedarbackup.peer." + name in result.stdout
    assert "plugins/filter/%s.yml" % name in result.stdout
    assert "Missing documentation" not in result.stdout + result.stderr


@pytest.mark.parametrize("name", FILTERS)
def test_doc_blocks_complete(name, docs):
    entry = docs["cedarbackup.peer." + name]
    doc = entry["doc"]
    assert doc["name"] == name
    assert str(doc["version_added"]) == ("0.2.0" if name in ADDED_IN_0_2_0 else "0.1.0")
    assert doc["short_description"]
    assert doc["author"]
    description = " ".join(doc["description"]) if isinstance(doc["description"], list) else doc["description"]
    assert INTERNAL in " ".join(description.split())
    options = doc["options"]
    assert options["_input"]["required"] is True
    for option, spec in options.items():
        assert spec.get("description"), option
        assert spec.get("type"), option
    assert entry["examples"].strip()
    assert "cedarbackup.peer." + name in entry["examples"]
    value = entry["return"]["_value"]
    assert value.get("description") and value.get("type")


@pytest.mark.parametrize("name", FILTERS)
def test_options_match_signature(name, docs):
    """Every argument after the input documented, with its required flag and default; positional in order."""
    doc = docs["cedarbackup.peer." + name]["doc"]
    parameters = list(inspect.signature(getattr(cback, name)).parameters.values())[1:]
    options = dict(doc["options"])
    options.pop("_input")
    assert sorted(options) == sorted(p.name for p in parameters)
    for parameter in parameters:
        spec = options[parameter.name]
        required = parameter.default is inspect.Parameter.empty
        assert bool(spec.get("required", False)) == required, parameter.name
        if not required:
            assert spec.get("default") == parameter.default, parameter.name
    positional = doc.get("positional") or []
    if isinstance(positional, str):
        positional = [item.strip() for item in positional.split(",") if item.strip()]
    positional = [item for item in positional if item != "_input"]
    assert positional == [p.name for p in parameters[:len(positional)]]
    assert all(p.name in positional for p in parameters if p.default is inspect.Parameter.empty)


def _contains(value):
    return sorted(value.get("contains") or {})


def test_returns_documented_as_returned(docs):
    """The keys the peers and the resolution really have are the documented ones.

    The run summaries are the run modules' (cback_stage_run, cback_managed_run), documented
    and checked with the modules.
    """
    hostvars = {
        "bk": {"cback_staging_dir": "/srv/stage"},
        "good": {"cback_collect_dir": "/var/backup/collect", "cback_managed": True},
        "bad": {"cback_collect_dir": "relative", "cback_managed": True},
    }
    peers = cback.cback_peers(["good", "bad"], hostvars, {"managed_actions": "collect"})
    documented = docs["cedarbackup.peer.cback_peers"]["return"]["_value"]
    assert sorted(peers[0]) == _contains(documented)
    assert set(peers[1]) <= set(_contains(documented))

    resolved = cback.cback_resolve(["good", "bad"], hostvars, "stage", {}, ["bk"])  # {}: the table's defaults
    assert resolved["error"] is None
    described = " ".join(docs["cedarbackup.peer.cback_resolve"]["return"]["_value"]["description"].split())
    for key in resolved:
        assert "C(%s)" % key in described, key


@pytest.mark.parametrize("role", ["stage", "managed", "setup"])
def test_the_roles_documented_are_those_the_filters_take(role, docs):
    for name in ("cback_resolve", "cback_role_variables"):
        options = docs["cedarbackup.peer." + name]["doc"]["options"]
        choices = (options.get("role") or options["_input"]).get("choices")
        assert choices is None or role in choices, name

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
        "cback_managed_summary", "cback_peer_failure", "cback_peers", "cback_run_peers", "cback_run_settings", "cback_stage_summary",
        "cback_summary_table", "cback_variable_warnings",
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
    assert str(doc["version_added"]) == "0.1.0"
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


def _peer_vars():
    hostvars = {
        "good": {"cback_collect_dir": "/var/backup/collect", "cback_managed": True},
        "bad": {"cback_collect_dir": "relative", "cback_managed": True},
    }
    peers = cback.cback_peers(["good", "bad"], hostvars, {"managed_actions": "collect"})
    return peers, {
        "good": {"__cback_peer": peers[0], "__cback_outcome": {"count": 1, "bytes": 10, "seconds": 0.1, "rc": 0}},
        "bad": {"__cback_peer": peers[1]},
    }


def test_returns_documented_as_returned(docs):
    """The keys the summaries and the peers really have are the documented ones."""
    peers, hostvars = _peer_vars()
    documented = docs["cedarbackup.peer.cback_peers"]["return"]["_value"]
    assert sorted(peers[0]) == _contains(documented)

    stage = cback.cback_stage_summary(["good", "bad"], hostvars, date="2024/05/06", daily_dir="/srv/stage/2024/05/06")
    documented = docs["cedarbackup.peer.cback_stage_summary"]["return"]["_value"]
    assert sorted(stage) == _contains(documented)
    rows = documented["contains"]["peers"]
    assert [row["status"] for row in stage["peers"]] == ["staged", "failed"]
    assert all(sorted(row) == _contains(rows) for row in stage["peers"])
    assert set(rows["contains"]["status"]["choices"]) == {"staged", "not ready", "ignored", "failed"}

    managed = cback.cback_managed_summary(["good", "bad"], hostvars, action="collect")
    documented = docs["cedarbackup.peer.cback_managed_summary"]["return"]["_value"]
    assert sorted(managed) == _contains(documented)
    rows = documented["contains"]["peers"]
    assert [row["status"] for row in managed["peers"]] == ["ok", "failed"]
    assert all(sorted(row) == _contains(rows) for row in managed["peers"])
    assert set(rows["contains"]["status"]["choices"]) == {"ok", "failed"}

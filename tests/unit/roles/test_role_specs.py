"""The roles' argument specs, defaults and tasks agree with each other.

Every variable a role defaults is documented in meta/argument_specs.yml with the same
default, every documented default is in defaults/main.yml, and every cback_* variable the
tasks read is documented. The setup role's main.yml imports each of its task files, the
checks of its variables first.
"""

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
ROLES = ["stage", "managed", "setup"]


def _load(path):
    with open(str(path)) as handle:
        return yaml.safe_load(handle) or {}


@pytest.mark.parametrize("role", ROLES)
def test_defaults_are_documented_with_the_same_value(role):
    defaults = _load(ROOT / "roles" / role / "defaults" / "main.yml")
    options = _load(ROOT / "roles" / role / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    for name, value in defaults.items():
        assert name in options, "%s: %s is not documented" % (role, name)
        assert options[name].get("default") == value, "%s: %s default differs" % (role, name)
    for name, spec in options.items():
        assert spec.get("description"), "%s: %s has no description" % (role, name)
        if "default" in spec:
            assert name in defaults, "%s: %s documents a default that defaults/main.yml lacks" % (role, name)


@pytest.mark.parametrize("role", ROLES)
def test_tasks_read_only_documented_variables(role):
    options = _load(ROOT / "roles" / role / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]
    text = "".join(path.read_text() for path in (ROOT / "roles" / role / "tasks").glob("*.yml"))
    # variables, not attributes (x.cback_...), quoted keys, option keys or module/filter names
    used = set(re.findall(r"(?<![.\w'])(cback_[a-z_]+)\b(?!:)", text))
    produced = {"cback_stage_summary", "cback_managed_summary", "cback_stage_summaries", "cback_managed_summaries"}  # facts the roles set for the caller
    undocumented = sorted(used - set(options) - produced)
    assert undocumented == [], "%s reads undocumented variables: %s" % (role, undocumented)


@pytest.mark.parametrize("role", ROLES)
def test_modules_and_filters_are_fully_qualified(role):
    for path in (ROOT / "roles" / role / "tasks").glob("*.yml"):
        for task in _load(path):
            for block in [task] + task.get("block", []) + task.get("rescue", []):
                modules = [key for key in block if "." in key and key not in ("ansible.builtin.include_role",)]
                assert modules or "block" in block, "%s: task %r has no fully qualified module" % (path.name, block.get("name"))
                for key in modules:
                    assert key.startswith(("ansible.builtin.", "cedarbackup.peer.")), (path.name, key)


def test_setup_main_imports_each_task_file_once_checks_first():
    """The setup role's main.yml is its table of contents: one import per task file, each
    file imported once, the checks of the role's variables first; they make nothing."""
    tasks = ROOT / "roles" / "setup" / "tasks"
    main = _load(tasks / "main.yml")
    for task in main:
        assert sorted(task) == ["ansible.builtin.import_tasks", "name"], task
    imported = [task["ansible.builtin.import_tasks"] for task in main]
    assert imported[0] == "checks.yml"
    assert sorted(imported) == sorted(path.name for path in tasks.glob("*.yml") if path.name != "main.yml")
    for task in _load(tasks / "checks.yml"):
        modules = [key for key in task if key.startswith("ansible.builtin.")]
        assert modules in (["ansible.builtin.fail"], ["ansible.builtin.set_fact"]), task.get("name")

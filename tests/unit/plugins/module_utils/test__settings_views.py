# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every view of a setting agrees with the table of settings (``module_utils/_settings.py``).

The roles' defaults and argument specs, the modules' documented options (argument specs and
doc fragments, which ``ansible-test sanity`` holds to each other), the stage and managed
roles' module tasks and the tables of ``docs/inventory.md``: a setting added or changed in
one place and not in the table (or the other way round) fails here.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from ansible_collections.cedarbackup.peer.plugins.module_utils import _settings as settings

ROOT = Path(__file__).resolve().parents[4]
PRODUCED = {"cback_stage_summary", "cback_managed_summary"}
# The argument-spec (and doc) type each kind of setting takes in a module.
MODULE_TYPES = dict(bool="bool", count="int", seconds="int", port="int", abs_path="path", file_path="path", collect_dir="path")


def _load(path):
    with open(str(path)) as handle:
        return yaml.safe_load(handle) or {}


def _role_options(role):
    return _load(ROOT / "roles" / role / "meta" / "argument_specs.yml")["argument_specs"]["main"]["options"]


@pytest.fixture(scope="module")
def module_docs():
    """The modules' documented options, doc fragments merged, as ansible-doc gives them."""
    names = sorted({option.split(".")[0] for setting in settings.TABLE for option in setting.options})
    binary = Path(os.environ.get("CBACK_ANSIBLE_BIN") or ROOT / ".venv" / "bin") / "ansible-doc"
    output = subprocess.run([str(binary), "-t", "module", "--json"] + ["cedarbackup.peer." + name for name in names],
                            check=True, capture_output=True, text=True, timeout=120).stdout
    return dict((name.split(".")[-1], entry["doc"]["options"]) for name, entry in json.loads(output).items())


def test_every_setting_has_a_known_kind_scope_and_role():
    for setting in settings.TABLE:
        assert setting.scope in (settings.RUN, settings.PEER, settings.BOTH, settings.PLAY), setting
        assert setting.roles and set(setting.roles) <= set(settings.ROLES), setting
        assert setting.doc, setting
        if setting.default is not None:
            assert settings.default_of(setting) is not None or setting.default in ("", []), setting
    assert len(settings.BY_VARIABLE) == len(settings.TABLE)


@pytest.mark.parametrize("role", settings.ROLES)
def test_role_defaults_are_the_tables(role):
    defaults = _load(ROOT / "roles" / role / "defaults" / "main.yml")
    for name, value in defaults.items():
        setting = settings.BY_VARIABLE.get(name)
        assert setting is not None, "%s defaults %s, which is not in the table" % (role, name)
        assert role in setting.roles, "%s defaults %s, which the table does not give to it" % (role, name)
        assert value == setting.default, "%s: default of %s is %r, the table's %r" % (role, name, value, setting.default)
    for setting in settings.settings_of(role):
        if setting.default is not None:
            assert setting.variable in defaults, "%s has no default for %s" % (role, setting.variable)


@pytest.mark.parametrize("role", settings.ROLES)
def test_role_argument_specs_are_the_tables(role):
    options = _role_options(role)
    documented = set(options) - PRODUCED
    table = {setting.variable for setting in settings.settings_of(role)}
    assert documented == table, "%s: documented but not in the table %s; in the table, not documented %s" % (
        role, sorted(documented - table), sorted(table - documented))
    for name in table:
        setting, spec = settings.BY_VARIABLE[name], options[name]
        assert spec.get("default") == setting.default, (role, name)
        # Types that Ansible's role argument validation would reject with a dump of the whole
        # spec are raw: the settings model checks them, with a one-line message.
        if setting.kind in ("bool", "count", "seconds", "port", "actions"):
            assert spec["type"] == "raw", (role, name, spec["type"])
        assert "choices" not in spec, (role, name)


@pytest.mark.parametrize("setting", [setting for setting in settings.TABLE if setting.options], ids=repr)
def test_module_options_are_the_tables(setting, module_docs):
    for option in setting.options:
        parts = option.split(".")
        docs = module_docs[parts[0]]
        if len(parts) == 3:
            docs = docs[parts[1]]["suboptions"]
        assert parts[-1] in docs, "%s: %s is not an option" % (setting, option)
        doc = docs[parts[-1]]
        expected = MODULE_TYPES.get(setting.kind, "str")
        # A collect directory is a path wherever a module takes it (~ and $VAR expanded alike).
        assert doc["type"] in (expected, "str" if setting.kind == "abs_path" else expected), (option, doc["type"])
        if "default" in doc and doc["default"] is not None and setting.default not in (None, ""):
            assert doc["default"] == setting.default, (option, doc["default"], setting.default)


@pytest.mark.parametrize("role", [settings.STAGE, settings.MANAGED])
def test_the_roles_module_task_passes_every_run_option_of_the_table(role):
    module = "cback_%s_run" % role
    tasks = _load(ROOT / "roles" / role / "tasks" / "execute.yml")
    args = [task["cedarbackup.peer." + module] for task in tasks if "cedarbackup.peer." + module in task][0]
    table = {option.split(".")[1] for setting in settings.settings_of(role) for option in setting.options
             if option.startswith(module + ".") and option.count(".") == 1}
    assert set(args) - {"peers"} == table


def test_the_inventory_reference_names_every_setting():
    text = (ROOT / "docs" / "inventory.md").read_text()
    for setting in settings.TABLE:
        assert "`%s`" % setting.variable in text, setting
        if setting.element:
            assert "`%s`" % setting.element.split("/")[-1] in text, setting


def test_the_inventory_reference_says_which_role_reads_what():
    text = (ROOT / "docs" / "inventory.md").read_text()
    section = text.split("## Which role reads what", 1)[1].split("\n## ", 1)[0]
    for role in settings.ROLES:
        row = [line for line in section.splitlines() if line.startswith("| `cedarbackup.peer.%s`" % role)]
        assert row, role
        cells = row[0].split("|")
        run_wide, per_peer = set(re.findall(r"`(cback_[a-z_]+)`", cells[2])), set(re.findall(r"`(cback_[a-z_]+)`", cells[3]))
        assert run_wide == set(settings.variables_of(role)), (role, sorted(run_wide ^ set(settings.variables_of(role))))
        peer_table = {setting.variable for setting in settings.settings_of(role, (settings.PEER, settings.BOTH))}
        assert per_peer == peer_table, (role, sorted(per_peer ^ peer_table))


def test_the_inventory_plugin_maps_each_element_to_the_tables_variable():
    from ansible_collections.cedarbackup.peer.plugins.inventory import cback3_conf

    options = {(setting.element.split("/")[1], setting.variable) for setting in settings.TABLE
               if setting.element and setting.element.startswith("options/")}
    assert set(cback3_conf.OPTIONS) == options
    peer = {(setting.element.split("/")[1], setting.variable) for setting in settings.TABLE
            if setting.element and setting.element.startswith("peer/") and setting.key != "peer_name"}
    both = {(setting.element.split("/")[1], setting.variable) for setting in settings.TABLE if setting.scope == settings.BOTH}
    assert set(cback3_conf.REMOTE_PEER_ELEMENTS) == peer | both
    assert set(cback3_conf.LOCAL_PEER_ELEMENTS) <= peer
    assert settings.BY_KEY["staging_dir"].element == "stage/staging_dir"

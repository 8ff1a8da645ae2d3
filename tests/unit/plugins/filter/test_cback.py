# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for the ``cedarbackup.peer.cback`` filter plugin.

Plain dicts stand in for Ansible's ``hostvars``; ``current`` is what the roles pass to
``cback_resolve``: each of ``cback_role_variables`` with its value where the role runs (the
role's default, the table's), ``''`` when unset.  The rows and summaries the tables are built from are ``_report``'s, tested in
``tests/unit/plugins/module_utils/test__report.py``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.cedarbackup.peer.plugins.filter import cback
from ansible_collections.cedarbackup.peer.plugins.module_utils._settings import BY_VARIABLE
from ansible_collections.cedarbackup.peer.tests.support.run_summaries import (
    failed_outcome, managed_summary, not_ready_outcome, peer_entry, stage_summary, staged_outcome,
)

SETTINGS = dict(backup_user="backup", rcp_command="", rsh_command="", cback_command="", managed_actions=[])

WHERE = "set it in the master's variables (host_vars/bk, the group_vars of its group, or group_vars/all), or with -e."


def resolve(hostvars, settings=None, hosts=None):
    """``cback_peers`` as a dict by host."""
    peers = cback.cback_peers(list(hostvars) if hosts is None else hosts, hostvars, SETTINGS if settings is None else settings)
    return dict((peer["host"], peer) for peer in peers)


def one(variables, settings=None):
    return resolve({"web1": variables}, settings)["web1"]


def role_default(name):
    """What a role sees of a variable nobody sets: its default (the table's, as ``test_role_specs`` holds), else ``''``."""
    default = BY_VARIABLE[name].default
    return "" if default is None else list(default) if isinstance(default, list) else default


def run(role, hostvars, hosts=None, current=None, masters=("bk",), host=None):
    """``cback_resolve`` as a role calls it: the peers are every host but the master unless ``hosts`` says."""
    names = cback.cback_role_variables(role)
    values = dict((name, role_default(name)) for name in names)
    values.update(current or {})
    hosts = [name for name in hostvars if name not in masters] if hosts is None else hosts
    return cback.cback_resolve(hosts, hostvars, role, values, list(masters), host)


def stage(peers=None, master=None, **kwargs):
    """A stage run's resolution: ``bk`` the master (staging dir ``/srv/stage``), ``peers`` the peers' variables."""
    hostvars = dict(bk=dict(dict(cback_staging_dir="/srv/stage"), **(master or {})))
    hostvars.update(peers or {})
    return run("stage", hostvars, **kwargs)


def managed(peers=None, master=None, action="collect", **kwargs):
    """A managed run of ``action`` (given with -e: every host has it, and the play sees it)."""
    hostvars = dict(bk=dict(master or {}))
    hostvars.update(peers or {})
    if action is not None:
        for values in hostvars.values():
            values.setdefault("cback_action", action)
        kwargs["current"] = dict(dict(cback_action=action), **(kwargs.get("current") or {}))
    return run("managed", hostvars, **kwargs)


@pytest.fixture
def warnings_shown(monkeypatch):
    """The Ansible warnings shown during a test."""
    shown = []
    monkeypatch.setattr("ansible.utils.display.Display.warning", lambda self, message, *args, **kwargs: shown.append(message))
    return shown


# ---------------------------------------------------------------------------
# FilterModule
# ---------------------------------------------------------------------------


def test_the_filters_the_plugin_provides():
    assert cback.FilterModule().filters() == {
        "cback_peers": cback.cback_peers,
        "cback_resolve": cback.cback_resolve,
        "cback_role_variables": cback.cback_role_variables,
        "cback_inventory_problem": cback.cback_inventory_problem,
        "cback_run_failure": cback.cback_run_failure,
        "cback_peer_failure": cback.cback_peer_failure,
        "cback_summary_table": cback.cback_summary_table,
        "cback_run_outcome": cback.cback_run_outcome,
    }


# ---------------------------------------------------------------------------
# cback_peers: resolution
# ---------------------------------------------------------------------------


def test_a_peer_with_only_a_collect_dir_is_a_remote_peer_named_after_its_host():
    assert one({"cback_collect_dir": "/opt/backup/collect"}) == dict(
        host="web1", name="web1", error=None, type="remote", collect_dir="/opt/backup/collect", remote_user="backup",
        rcp_command=None, rsh_command=None, cback_command=None, ignore_failure_mode=None, managed=False, managed_actions=[],
    )


def test_every_peer_variable_is_read():
    peer = one({
        "cback_peer_type": "remote",
        "cback_peer_name": "web1.example.org",
        "cback_collect_dir": "/srv/collect",
        "cback_remote_user": "cback",
        "cback_rcp_command": "/usr/bin/scp -F /etc/cback/ssh_config -B",
        "cback_rsh_command": "/usr/bin/ssh -F /etc/cback/ssh_config",
        "cback_cback_command": "/usr/bin/cback3 --config /etc/cback3-web1.conf",
        "cback_ignore_failure_mode": "weekly",
        "cback_managed": True,
        "cback_managed_actions": ["collect", "purge"],
    })
    assert peer == dict(
        host="web1", name="web1.example.org", error=None, type="remote", collect_dir="/srv/collect", remote_user="cback",
        rcp_command="/usr/bin/scp -F /etc/cback/ssh_config -B", rsh_command="/usr/bin/ssh -F /etc/cback/ssh_config",
        cback_command="/usr/bin/cback3 --config /etc/cback3-web1.conf", ignore_failure_mode="weekly",
        managed=True, managed_actions=["collect", "purge"],
    )


def test_a_local_peer_name_is_only_a_label():
    peer = one({"cback_peer_type": "local", "cback_peer_name": "master self", "cback_collect_dir": "/opt/backup/collect"})
    assert peer["error"] is None
    assert (peer["type"], peer["name"]) == ("local", "master self")


def test_a_local_collect_dir_may_hold_any_character():
    peer = one({"cback_peer_type": "local", "cback_collect_dir": "/srv/collect;odd $name"})
    assert (peer["error"], peer["collect_dir"]) == (None, "/srv/collect;odd $name")


def test_the_inventory_order_is_kept():
    hostvars = dict((host, {"cback_collect_dir": "/c"}) for host in ("zeta", "alpha", "mid"))
    peers = cback.cback_peers(["zeta", "alpha", "mid"], hostvars, SETTINGS)
    assert [peer["host"] for peer in peers] == ["zeta", "alpha", "mid"]


@pytest.mark.parametrize("hosts", [None, []])
def test_no_hosts_no_peers(hosts):
    assert cback.cback_peers(hosts, {}, SETTINGS) == []


def test_the_run_wide_values_may_be_left_out():
    peers = cback.cback_peers(["web1"], {"web1": {"cback_collect_dir": "/c"}})
    assert peers[0]["error"] is None
    assert peers[0]["remote_user"] is None
    assert peers[0]["managed_actions"] == []


def test_the_run_wide_values_given_are_not_changed():
    settings = dict(SETTINGS, managed_actions="collect, purge")
    cback.cback_peers(["web1"], {"web1": {"cback_collect_dir": "/c"}}, settings)
    assert settings["managed_actions"] == "collect, purge"


def test_values_that_are_no_run_wide_setting_are_left_alone():
    peer = cback.cback_peers(["web1"], {"web1": {"cback_collect_dir": "/c"}}, dict(SETTINGS, something_else="x"))[0]
    assert peer["error"] is None


@pytest.mark.parametrize("key", ["rcp_command", "rsh_command", "cback_command"])
def test_a_peer_command_wins_over_the_run_wide_one(key):
    settings = dict(SETTINGS, **{key: "/usr/bin/run-wide -x"})
    assert one({"cback_collect_dir": "/c"}, settings)[key] == "/usr/bin/run-wide -x"
    assert one({"cback_collect_dir": "/c", "cback_" + key: "/usr/bin/peer -y"}, settings)[key] == "/usr/bin/peer -y"


@pytest.mark.parametrize("key", ["rcp_command", "rsh_command", "cback_command"])
@pytest.mark.parametrize("unset", ["", None])
def test_an_empty_command_is_the_default_command(key, unset):
    # the role's defaults are "": the module's default command
    assert one({"cback_collect_dir": "/c"}, dict(SETTINGS, **{key: unset}))[key] is None
    assert one({"cback_collect_dir": "/c", "cback_" + key: unset})[key] is None


@pytest.mark.parametrize("key", ["rcp_command", "rsh_command", "cback_command"])
def test_a_blank_command_is_not_a_command(key):
    # only the empty string is unset: "   " is a command without a program, as before the settings model
    assert one({"cback_collect_dir": "/c", "cback_" + key: "   "})["error"] == (
        "invalid settings: cback_%s: '   ' is not a command; give the program and its arguments." % key)
    with pytest.raises(AnsibleFilterError) as info:
        one({"cback_collect_dir": "/c"}, dict(SETTINGS, **{key: "   "}))
    assert str(info.value) == "cback_%s '   ' is not a command; give the program and its arguments." % key


def test_the_remote_user_defaults_to_the_backup_user():
    assert one({"cback_collect_dir": "/c"}, dict(SETTINGS, backup_user="cbackup"))["remote_user"] == "cbackup"
    assert one({"cback_collect_dir": "/c", "cback_remote_user": "other"}, dict(SETTINGS, backup_user="cbackup"))["remote_user"] == "other"
    assert one({"cback_collect_dir": "/c"}, dict(SETTINGS, backup_user=""))["remote_user"] is None
    assert one({"cback_collect_dir": "/c"}, dict(SETTINGS, backup_user=None))["remote_user"] is None


def test_the_peer_name_defaults_to_the_inventory_hostname():
    assert one({"cback_collect_dir": "/c"})["name"] == "web1"
    assert one({"cback_collect_dir": "/c", "cback_peer_name": ""})["name"] == "web1"
    # a blank peer name is no name either: the inventory hostname (checked as the peer's name)
    assert one({"cback_collect_dir": "/c", "cback_peer_name": "  "})["name"] == "web1"
    assert one({"cback_collect_dir": "/c", "cback_peer_name": "10.0.0.5"})["name"] == "10.0.0.5"


def test_the_peer_type_defaults_to_remote():
    assert one({"cback_collect_dir": "/c"})["type"] == "remote"
    assert one({"cback_collect_dir": "/c", "cback_peer_type": None})["type"] == "remote"
    assert one({"cback_collect_dir": "/c", "cback_peer_type": ""})["type"] == "remote"
    assert one({"cback_collect_dir": "/c", "cback_peer_type": "local"})["type"] == "local"


@pytest.mark.parametrize(
    "value, expected",
    [
        (True, True), ("true", True), ("yes", True), ("True", True), ("on", True), (1, True), ("1", True),
        (False, False), ("false", False), ("no", False), ("False", False), ("off", False), (0, False), ("0", False),
        (None, False),
    ],
)
def test_managed_takes_the_boolean_forms(value, expected):
    peer = one({"cback_collect_dir": "/c", "cback_managed": value})
    assert peer["error"] is None
    assert peer["managed"] is expected


def test_a_peer_is_not_managed_by_default():
    assert one({"cback_collect_dir": "/c"})["managed"] is False


@pytest.mark.parametrize(
    "value, expected",
    [
        (["collect", "purge"], ["collect", "purge"]),
        (("collect",), ["collect"]),
        ([" collect ", "purge"], ["collect", "purge"]),
        ("collect", ["collect"]),
        ("collect,purge", ["collect", "purge"]),
        ("collect, purge ,  store", ["collect", "purge", "store"]),
        ("collect,,purge,", ["collect", "purge"]),
        ("my-action,other_one,x2", ["my-action", "other_one", "x2"]),
        ("", []),
        ([], []),
    ],
)
def test_managed_actions_are_a_list_or_a_comma_separated_string(value, expected):
    peer = one({"cback_collect_dir": "/c", "cback_managed": True, "cback_managed_actions": value})
    assert peer["error"] is None
    assert peer["managed_actions"] == expected


@pytest.mark.parametrize(
    "run_wide, expected",
    [
        (["collect"], ["collect"]),
        ("collect, purge", ["collect", "purge"]),
        ("", []),
        (None, []),
        ([], []),
    ],
)
def test_managed_actions_fall_back_to_the_run_wide_ones(run_wide, expected):
    peer = one({"cback_collect_dir": "/c", "cback_managed": "yes"}, dict(SETTINGS, managed_actions=run_wide))
    assert peer["error"] is None
    assert peer["managed_actions"] == expected


def test_a_peers_managed_actions_win_over_the_run_wide_ones():
    settings = dict(SETTINGS, managed_actions="collect, purge")
    assert one({"cback_collect_dir": "/c", "cback_managed_actions": ["store"]}, settings)["managed_actions"] == ["store"]
    assert one({"cback_collect_dir": "/c", "cback_managed_actions": "stage"}, settings)["managed_actions"] == ["stage"]
    # an explicit empty list is the peer's own value: no actions
    assert one({"cback_collect_dir": "/c", "cback_managed_actions": []}, settings)["managed_actions"] == []
    assert one({"cback_collect_dir": "/c", "cback_managed_actions": None}, settings)["managed_actions"] == ["collect", "purge"]


@pytest.mark.parametrize("mode", ["none", "all", "daily", "weekly"])
def test_every_ignore_failure_mode_is_taken(mode):
    peer = one({"cback_collect_dir": "/c", "cback_ignore_failure_mode": mode})
    assert peer["error"] is None
    assert peer["ignore_failure_mode"] == mode


def test_an_empty_ignore_failure_mode_is_unset():
    assert one({"cback_collect_dir": "/c", "cback_ignore_failure_mode": ""})["ignore_failure_mode"] is None


@pytest.mark.parametrize("name", ["192.0.2.10", "::1", "2001:db8::1", "web1.example.org", "web1.example.org."])
def test_ip_addresses_and_hostnames_are_remote_peer_names(name):
    assert one({"cback_collect_dir": "/c", "cback_peer_name": name})["error"] is None


# ---------------------------------------------------------------------------
# cback_peers: invalid settings
# ---------------------------------------------------------------------------

INVALID = [
    # (host vars, the variable the error names, a piece of the reason)
    ({"cback_peer_name": "../x", "cback_collect_dir": "/c"}, "cback_peer_name", "'../x'"),
    ({"cback_peer_name": "a/b", "cback_collect_dir": "/c"}, "cback_peer_name", "one directory name"),
    ({"cback_peer_name": "..", "cback_collect_dir": "/c"}, "cback_peer_name", "one directory name"),
    ({"cback_peer_name": "-oProxyCommand=x", "cback_collect_dir": "/c"}, "cback_peer_name", "leading '-'"),
    ({"cback_peer_name": "not a host", "cback_collect_dir": "/c"}, "cback_peer_name", "'not a host' is not a hostname or IP address"),
    ({"cback_peer_name": 5, "cback_collect_dir": "/c"}, "cback_peer_name", "must be a string, not 5"),
    ({"cback_peer_type": "local", "cback_peer_name": "../x", "cback_collect_dir": "/c"}, "cback_peer_name", "'../x'"),
    ({"cback_collect_dir": "relative/collect"}, "cback_collect_dir", "must be an absolute path, not 'relative/collect'"),
    ({"cback_peer_type": "local", "cback_collect_dir": "relative"}, "cback_collect_dir", "must be an absolute path, not 'relative'"),
    ({}, "cback_collect_dir", "is required for every peer"),
    ({"cback_collect_dir": ""}, "cback_collect_dir", "is required for every peer"),
    ({"cback_collect_dir": None}, "cback_collect_dir", "is required for every peer"),
    ({"cback_collect_dir": "/c;rm -rf /"}, "cback_collect_dir", "cannot pass safely"),
    ({"cback_collect_dir": ["/c"]}, "cback_collect_dir", "must be a string, not ['/c']"),
    ({"cback_peer_type": "other", "cback_collect_dir": "/c"}, "cback_peer_type", "must be local or remote, not 'other'"),
    ({"cback_peer_type": "Remote", "cback_collect_dir": "/c"}, "cback_peer_type", "not 'Remote'"),
    ({"cback_ignore_failure_mode": "sometimes", "cback_collect_dir": "/c"}, "cback_ignore_failure_mode",
     "must be one of none, all, daily, weekly, not 'sometimes'"),
    ({"cback_ignore_failure_mode": "Daily", "cback_collect_dir": "/c"}, "cback_ignore_failure_mode", "not 'Daily'"),
    ({"cback_managed_actions": "Collect", "cback_collect_dir": "/c"}, "cback_managed_actions",
     "holds 'Collect', which is not a bare action name"),
    ({"cback_managed_actions": ["collect", "rm -rf"], "cback_collect_dir": "/c"}, "cback_managed_actions", "holds 'rm -rf'"),
    ({"cback_managed_actions": "collect;purge", "cback_collect_dir": "/c"}, "cback_managed_actions", "holds 'collect;purge'"),
    ({"cback_managed_actions": "-x", "cback_collect_dir": "/c"}, "cback_managed_actions", "holds '-x'"),
    ({"cback_managed_actions": 5, "cback_collect_dir": "/c"}, "cback_managed_actions", "must be a list or a comma-separated string, not 5"),
    ({"cback_managed_actions": {"collect": True}, "cback_collect_dir": "/c"}, "cback_managed_actions", "must be a list"),
    ({"cback_managed": "maybe", "cback_collect_dir": "/c"}, "cback_managed", "must be true or false, not 'maybe'"),
    ({"cback_managed": 2, "cback_collect_dir": "/c"}, "cback_managed", "must be true or false, not 2"),
    # an empty string is no boolean: only None leaves cback_managed unset
    ({"cback_managed": "", "cback_collect_dir": "/c"}, "cback_managed", "must be true or false, not ''"),
    ({"cback_peer_type": "  ", "cback_collect_dir": "/c"}, "cback_peer_type", "must be local or remote, not '  '"),
    ({"cback_collect_dir": "   "}, "cback_collect_dir", "must be an absolute path, not '   '"),
    ({"cback_remote_user": "bad user", "cback_collect_dir": "/c"}, "cback_remote_user", "'bad user' is not a valid user name"),
    ({"cback_rcp_command": '""', "cback_collect_dir": "/c"}, "cback_rcp_command", "is not a command"),
    ({"cback_rsh_command": "-x ssh", "cback_collect_dir": "/c"}, "cback_rsh_command", "starts with the option '-x'"),
    ({"cback_cback_command": '""', "cback_collect_dir": "/c"}, "cback_cback_command", "is not a command"),
]


@pytest.mark.parametrize("variables, option, reason", INVALID)
def test_an_invalid_setting_is_the_peers_error_naming_the_variable(variables, option, reason):
    peer = one(variables)
    assert peer["error"].startswith("invalid settings: %s: " % option), peer["error"]
    assert reason in peer["error"], peer["error"]
    # one sentence, one period
    assert peer["error"].endswith(".") and not peer["error"].endswith(".."), peer["error"]
    # what identifies the peer in a summary is always there
    assert peer["host"] == "web1"
    assert peer["name"] == variables.get("cback_peer_name") or peer["name"] == "web1"


@pytest.mark.parametrize("host, message", [
    ("not a host", "remote peer name 'not a host' is not a hostname or IP address"),
    ("-oProxyCommand=x", "peer name '-oProxyCommand=x' must be usable as one directory name (no '/', not '.' or '..', no leading '-')"),
])
def test_a_bad_inventory_hostname_is_reported_as_the_inventory_hostname(host, message):
    for variables in ({"cback_collect_dir": "/c"}, {"cback_collect_dir": "/c", "cback_peer_name": ""}):
        peer = resolve({host: variables})[host]
        assert peer["error"] == "invalid settings: inventory hostname: %s; set cback_peer_name to the peer's name." % message
        assert peer["name"] == host


def test_a_bad_inventory_hostname_is_fine_with_a_peer_name_or_as_a_local_peer():
    assert resolve({"not a host": {"cback_collect_dir": "/c", "cback_peer_name": "web1"}})["not a host"]["error"] is None
    assert resolve({"not a host": {"cback_collect_dir": "/c", "cback_peer_type": "local"}})["not a host"]["error"] is None


def test_an_invalid_peer_leaves_the_others_alone():
    peers = resolve({"good": {"cback_collect_dir": "/c"}, "bad": {"cback_collect_dir": "rel"}, "also": {"cback_collect_dir": "/d"}})
    assert peers["good"]["error"] is None and peers["also"]["error"] is None
    assert peers["bad"]["error"] is not None


def test_a_managed_peer_with_invalid_settings_is_still_known_as_managed():
    peer = one({"cback_managed": "true", "cback_managed_actions": "collect", "cback_collect_dir": "rel"})
    assert peer["error"].startswith("invalid settings: cback_collect_dir: ")
    assert peer["managed"] is True
    assert peer["managed_actions"] == ["collect"]


def test_a_peer_with_an_unreadable_managed_may_be_managed():
    peer = one({"cback_managed": "maybe", "cback_collect_dir": "/c"})
    assert peer["managed"] is None


def test_duplicate_peer_names_mark_both_peers():
    peers = resolve({
        "web1": {"cback_collect_dir": "/c"},
        "web1-alias": {"cback_collect_dir": "/c", "cback_peer_name": "web1"},
        "db1": {"cback_collect_dir": "/c"},
    })
    assert peers["web1"]["error"] == "invalid settings: peer name 'web1' is also used by web1-alias."
    assert peers["web1-alias"]["error"] == "invalid settings: peer name 'web1' is also used by web1."
    assert peers["db1"]["error"] is None


def test_a_peer_name_used_three_times_names_the_two_others():
    peers = resolve(dict((host, {"cback_collect_dir": "/c", "cback_peer_name": "shared"}) for host in ("a", "b", "c")))
    assert peers["a"]["error"] == "invalid settings: peer name 'shared' is also used by b, c."
    assert peers["b"]["error"] == "invalid settings: peer name 'shared' is also used by a, c."
    assert peers["c"]["error"] == "invalid settings: peer name 'shared' is also used by a, b."


def test_a_duplicate_peer_name_keeps_an_earlier_error():
    peers = resolve({
        "a": {"cback_collect_dir": "relative", "cback_peer_name": "shared"},
        "b": {"cback_collect_dir": "/c", "cback_peer_name": "shared"},
    })
    assert peers["a"]["error"].startswith("invalid settings: cback_collect_dir: ")
    assert peers["b"]["error"] == "invalid settings: peer name 'shared' is also used by a."


def test_a_local_and_a_remote_peer_may_not_share_a_name():
    peers = resolve({
        "master": {"cback_peer_type": "local", "cback_collect_dir": "/c", "cback_peer_name": "web1"},
        "web1": {"cback_collect_dir": "/c"},
    })
    assert "also used by web1" in peers["master"]["error"]
    assert "also used by master" in peers["web1"]["error"]


@pytest.mark.parametrize("value, message", [
    ("Collect", "cback_managed_actions holds 'Collect', which is not a bare action name (lowercase letters, digits, _ and -)."),
    ("collect;purge", "cback_managed_actions holds 'collect;purge', which is not a bare action name"),
    (["ok", "no way"], "cback_managed_actions holds 'no way', which is not a bare action name"),
    (5, "cback_managed_actions must be a list or a comma-separated string, not 5."),
    ({"a": 1}, "cback_managed_actions must be a list or a comma-separated string, not {'a': 1}."),
])
def test_an_invalid_run_wide_value_fails_the_filter_naming_the_variable(value, message):
    with pytest.raises(AnsibleFilterError) as info:
        cback.cback_peers(["web1"], {"web1": {"cback_collect_dir": "/c"}}, dict(SETTINGS, managed_actions=value))
    assert str(info.value).startswith(message), str(info.value)


def test_an_invalid_run_wide_command_fails_the_filter():
    with pytest.raises(AnsibleFilterError) as info:
        cback.cback_peers(["a", "b"], {"a": {"cback_collect_dir": "/c"}, "b": {"cback_collect_dir": "/c"}}, dict(SETTINGS, rcp_command='""'))
    assert str(info.value) == "cback_rcp_command '\"\"' is not a command; give the program and its arguments."


# ---------------------------------------------------------------------------
# cback_resolve: run-wide settings from the master, else the play, never a peer
# ---------------------------------------------------------------------------

STAGE_MODULE = dict(
    staging_dir="/srv/stage", backup_user="backup", backup_group="backup", starting_day="monday", full=False,
    stage_indicator="cback.stage", collect_indicator="cback.collect", parallel=8, timeout=0, connect_timeout=30,
    ssh_multiplex=True, quick_check=True, verify=False, peer_timeout=21600, copy_as_backup_user=True,
)

MANAGED_MODULE = dict(
    action="collect", backup_user="backup", full=False, parallel=8, timeout=0, connect_timeout=30, peer_timeout=21600,
    copy_as_backup_user=True,
)


def test_a_stage_run_without_settings_takes_the_defaults():
    result = stage({"web1": {"cback_collect_dir": "/c"}})
    assert result["error"] is None
    assert result["master"] == "bk"
    assert result["module"] == STAGE_MODULE
    assert result["run"] == dict(
        staging_dir="/srv/stage", working_dir=None, backup_user="backup", backup_group="backup", rcp_command=None, rsh_command=None,
        cback_command=None, managed_actions=[], starting_day="monday", full=False, stage_indicator="cback.stage",
        collect_indicator="cback.collect", master_group="cback_master", stage_parallel=8, command_timeout=0, connect_timeout=30,
        ssh_multiplex=True, quick_check=True, verify=False, peer_timeout=21600, copy_as_backup_user=True, metrics_file=None,
        fail_on_peer_error=True,
    )


def test_a_managed_run_without_settings_takes_the_defaults():
    result = managed({"db1": {"cback_managed": True, "cback_managed_actions": "collect"}})
    assert result["error"] is None
    assert result["module"] == MANAGED_MODULE
    assert result["run"]["fail_on_peer_error"] is True
    assert "staging_dir" not in result["run"]


@pytest.mark.parametrize("role, variable, value, option, expected", [
    ("stage", "cback_stage_parallel", "3", "parallel", 3),
    ("stage", "cback_command_timeout", 600, "timeout", 600),
    ("stage", "cback_connect_timeout", "0", "connect_timeout", 0),
    ("stage", "cback_working_dir", "/var/tmp/cback", "working_dir", "/var/tmp/cback"),
    ("stage", "cback_full", "yes", "full", True),
    ("stage", "cback_verify", "true", "verify", True),
    ("stage", "cback_starting_day", "sunday", "starting_day", "sunday"),
    ("stage", "cback_collect_indicator", "ready.flag", "collect_indicator", "ready.flag"),
    ("managed", "cback_managed_parallel", 2, "parallel", 2),
    ("managed", "cback_command_timeout", "60", "timeout", 60),
    ("managed", "cback_peer_timeout", 3600, "peer_timeout", 3600),
    ("managed", "cback_copy_as_backup_user", "no", "copy_as_backup_user", False),
    ("stage", "cback_metrics_file", "/var/lib/node-exporter/cedarbackup.prom", "metrics_file", "/var/lib/node-exporter/cedarbackup.prom"),
    ("managed", "cback_metrics_file", "/var/lib/node-exporter/cedarbackup.prom", "metrics_file", "/var/lib/node-exporter/cedarbackup.prom"),
])
def test_a_run_wide_setting_reaches_its_module_option_typed(role, variable, value, option, expected):
    result = (stage if role == "stage" else managed)(master={variable: value})
    assert result["error"] is None, result["error"]
    assert result["module"][option] == expected


def test_settings_the_run_module_does_not_take_are_no_module_options():
    result = stage(master={"cback_rcp_command": "/usr/bin/scp -B", "cback_fail_on_peer_error": False, "cback_stage_parallel": 2})
    assert result["run"]["rcp_command"] == "/usr/bin/scp -B" and result["run"]["fail_on_peer_error"] is False
    assert set(result["module"]) == set(STAGE_MODULE)
    assert "working_dir" not in result["module"]  # unset: left to the module


def test_a_run_wide_value_comes_from_the_master():
    result = stage({"web1": {"cback_collect_dir": "/c"}}, master={"cback_stage_parallel": 2},
                   current={"cback_staging_dir": "/from/play", "cback_stage_parallel": 5})
    assert result["run"]["staging_dir"] == "/srv/stage"
    assert result["run"]["stage_parallel"] == 2


def test_without_the_masters_value_the_plays_value_is_taken():
    result = run("stage", {"bk": {}, "web1": {"cback_collect_dir": "/c"}}, current={"cback_staging_dir": "/from/play", "cback_verify": True})
    assert result["error"] is None
    assert (result["run"]["staging_dir"], result["run"]["verify"]) == ("/from/play", True)


def test_a_run_wide_value_is_never_taken_from_a_peers_own_variables():
    # web1 is the host the role's run_once tasks run for: its own variables are what the play sees
    hostvars = {"bk": {"cback_staging_dir": "/srv/stage"}, "web1": {"cback_collect_dir": "/c", "cback_verify": True, "cback_stage_parallel": 2}}
    result = run("stage", hostvars, current={"cback_verify": True, "cback_stage_parallel": 2}, host="web1")
    assert (result["run"]["verify"], result["run"]["stage_parallel"]) == (False, 8)
    # a play value that differs from the peer's is the play's
    result = run("stage", hostvars, current={"cback_verify": True, "cback_stage_parallel": 4}, host="web1")
    assert (result["run"]["verify"], result["run"]["stage_parallel"]) == (False, 4)


def test_a_staging_dir_only_a_peer_sets_is_not_set():
    hostvars = {"bk": {}, "web1": {"cback_collect_dir": "/c", "cback_staging_dir": "/from/peer"}}
    result = run("stage", hostvars, current={"cback_staging_dir": "/from/peer"}, host="web1")
    assert result["error"].startswith("cback_staging_dir is not set")


def test_a_peer_value_wins_over_the_run_wide_one():
    result = stage({"web1": {"cback_collect_dir": "/c"}, "web2": {"cback_collect_dir": "/c", "cback_rsh_command": "/usr/bin/ssh -p 2222",
                                                                  "cback_remote_user": "cback"}},
                   master={"cback_rsh_command": "/usr/bin/ssh -F /etc/cback/ssh_config", "cback_backup_user": "bkp"})
    peers = dict((peer["host"], peer) for peer in result["peers"])
    assert (peers["web1"]["rsh_command"], peers["web1"]["remote_user"]) == ("/usr/bin/ssh -F /etc/cback/ssh_config", "bkp")
    assert (peers["web2"]["rsh_command"], peers["web2"]["remote_user"]) == ("/usr/bin/ssh -p 2222", "cback")


def test_the_peers_are_resolved_as_cback_peers_resolves_them():
    peers = {"web1": {"cback_collect_dir": "/c", "cback_rcp_command": "/usr/bin/scp -B"}, "self": {"cback_peer_type": "local", "cback_collect_dir": "/c"},
             "bad": {"cback_collect_dir": "rel"}}
    result = stage(peers, master={"cback_backup_user": "cbackup", "cback_rsh_command": "/usr/bin/ssh -x"})
    assert result["peers"] == cback.cback_peers(["web1", "self", "bad"], dict(peers), result["run"])
    assert [peer["host"] for peer in result["peers"]] == ["web1", "self", "bad"]


RUN_WIDE_MESSAGES = [
    ("stage", {"cback_staging_dir": ""},
     "cback_staging_dir is not set (the staging directory, <stage><staging_dir> of cback3.conf); " + WHERE),
    ("stage", {"cback_staging_dir": "stage"}, "cback_staging_dir must be an absolute path, not 'stage'; " + WHERE),
    ("stage", {"cback_working_dir": "tmp"}, "cback_working_dir must be an absolute path or empty, not 'tmp'; " + WHERE),
    ("stage", {"cback_metrics_file": "cb.prom"}, "cback_metrics_file must be an absolute path or empty, not 'cb.prom'; " + WHERE),
    ("managed", {"cback_metrics_file": "/var/lib/node-exporter/"},
     "cback_metrics_file '/var/lib/node-exporter/' must be the absolute path of a file, not of a directory; " + WHERE),
    ("stage", {"cback_starting_day": "Monday"}, "cback_starting_day must be a lowercase English weekday (monday, tuesday, wednesday, "
                                                "thursday, friday, saturday, sunday), not 'Monday'; " + WHERE),
    ("stage", {"cback_stage_parallel": 0}, "cback_stage_parallel must be a whole number of at least 1, not 0; " + WHERE),
    ("stage", {"cback_stage_parallel": True}, "cback_stage_parallel must be a whole number of at least 1, not True; " + WHERE),
    ("managed", {"cback_managed_parallel": "many"}, "cback_managed_parallel must be a whole number of at least 1, not 'many'; " + WHERE),
    ("stage", {"cback_peer_timeout": -5}, "cback_peer_timeout must be a whole number of at least 1, not -5; " + WHERE),
    ("stage", {"cback_connect_timeout": "-1"}, "cback_connect_timeout must be a whole number of seconds, 0 for none, not '-1'; " + WHERE),
    ("managed", {"cback_command_timeout": 1.5}, "cback_command_timeout must be a whole number of seconds, 0 for none, not 1.5; " + WHERE),
    ("stage", {"cback_verify": "perhaps"}, "cback_verify must be true or false, not 'perhaps'; " + WHERE),
    ("managed", {"cback_full": "maybe"}, "cback_full must be true or false, not 'maybe'; " + WHERE),
    ("stage", {"cback_backup_user": "bad user"}, "cback_backup_user 'bad user' is not a valid user name; " + WHERE),
    ("stage", {"cback_backup_group": "bad group"}, "cback_backup_group 'bad group' is not a valid user name; " + WHERE),
    ("stage", {"cback_stage_indicator": "a/b"},
     "cback_stage_indicator 'a/b' must be a plain file name (no '/', not '.' or '..', no leading '-'); " + WHERE),
    ("stage", {"cback_rcp_command": '""'}, "cback_rcp_command '\"\"' is not a command; give the program and its arguments; " + WHERE),
    ("stage", {"cback_rsh_command": "  "}, "cback_rsh_command '  ' is not a command; give the program and its arguments; " + WHERE),
    # an empty string is unset only where empty means the default: for a number, a boolean, a day or a file name it is a bad value
    ("stage", {"cback_stage_parallel": ""}, "cback_stage_parallel must be a whole number of at least 1, not ''; " + WHERE),
    ("managed", {"cback_connect_timeout": ""}, "cback_connect_timeout must be a whole number of seconds, 0 for none, not ''; " + WHERE),
    ("stage", {"cback_verify": ""}, "cback_verify must be true or false, not ''; " + WHERE),
    ("stage", {"cback_starting_day": ""}, "cback_starting_day must be a lowercase English weekday (monday, tuesday, wednesday, "
                                          "thursday, friday, saturday, sunday), not ''; " + WHERE),
    ("stage", {"cback_collect_indicator": ""},
     "cback_collect_indicator '' must be a plain file name (no '/', not '.' or '..', no leading '-'); " + WHERE),
    ("managed", {"cback_managed_actions": "Purge"},
     "cback_managed_actions holds 'Purge', which is not a bare action name (lowercase letters, digits, _ and -); " + WHERE),
]


@pytest.mark.parametrize("role, master, message", RUN_WIDE_MESSAGES)
def test_each_run_wide_setting_has_its_one_line_message_naming_the_variable_and_where_to_set_it(role, master, message):
    result = (stage if role == "stage" else managed)({"web1": {"cback_collect_dir": "/c"}}, master=master)
    assert result["error"] == message
    assert "\n" not in result["error"]
    assert (result["run"], result["module"], result["peers"], result["run_peers"]) == ({}, {}, [], [])


def test_an_empty_run_wide_value_stays_unset():
    # no default-filling after the check: an empty backup user is no backup user (the module option is left out)
    result = stage({"web1": {"cback_collect_dir": "/c"}}, master={"cback_backup_user": "", "cback_backup_group": "", "cback_working_dir": ""})
    assert result["error"] is None
    assert (result["run"]["backup_user"], result["run"]["backup_group"], result["run"]["working_dir"]) == (None, None, None)
    assert not {"backup_user", "backup_group", "working_dir"} & set(result["module"])
    assert result["peers"][0]["remote_user"] is None
    assert "remote_user" not in result["run_peers"][0]


def test_an_empty_run_wide_value_of_the_play_stays_unset_too():
    result = stage({"web1": {"cback_collect_dir": "/c"}}, current={"cback_backup_user": "", "cback_rsh_command": ""})
    assert (result["run"]["backup_user"], result["run"]["rsh_command"]) == (None, None)
    assert "backup_user" not in result["module"]


def test_a_variable_the_play_does_not_pass_takes_the_tables_default():
    hostvars = {"bk": {"cback_staging_dir": "/srv/stage"}, "web1": {"cback_collect_dir": "/c"}}
    result = cback.cback_resolve(["web1"], hostvars, "stage", {}, ["bk"])
    assert result["error"] is None
    assert result["module"] == STAGE_MODULE
    assert result["run"]["master_group"] == "cback_master"


def test_a_bad_play_value_is_reported_too():
    result = run("stage", {"bk": {}}, current={"cback_staging_dir": "/s", "cback_stage_parallel": "lots"})
    assert result["error"] == "cback_stage_parallel must be a whole number of at least 1, not 'lots'; " + WHERE


def test_a_run_needs_a_master():
    result = run("stage", {"bk": {"cback_staging_dir": "/s"}, "web1": {"cback_collect_dir": "/c"}}, masters=[], hosts=["web1"])
    assert result["error"].startswith(
        "The inventory needs a host in the group cback_master (the master, where the run's work happens); it has none.")
    # no master at all: most likely an inventory Ansible could not parse
    assert "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED=true" in result["error"]
    assert (result["master"], result["peers"], result["run_peers"], result["pools"]) == (None, [], [], [])


def test_the_missing_master_message_names_the_master_group():
    result = run("managed", {"web1": {}}, masters=[], current={"cback_master_group": "backup_servers", "cback_action": "collect"})
    assert result["error"].startswith("The inventory needs a host in the group backup_servers ")


@pytest.mark.parametrize("action", ["", None])
def test_a_managed_run_needs_an_action(action):
    result = managed({"db1": {"cback_managed": True}}, action=action)
    assert result["error"] == ("cback_action is not set: the action to run on the managed peers, such as collect or purge; "
                               "pass it with -e cback_action=collect.")


@pytest.mark.parametrize("action, shown", [("Collect", "'Collect'"), ("-oProxyCommand=x", "'-oProxyCommand=x'"), ("collect purge", "'collect purge'"),
                                           ("  ", "'  '")])
def test_a_managed_runs_action_must_be_a_bare_action_name(action, shown):
    result = managed({"db1": {"cback_managed": True}}, action=action)
    # a play setting: the master's variables, never read for it, are not where to set it
    assert result["error"] == ("cback_action must be a bare action name such as collect or purge (lowercase letters, digits, _ and -, "
                               "starting with a letter or digit), not %s; set it in the play's variables or with -e." % shown)


def test_a_managed_runs_action_must_be_a_string():
    assert managed(action=5)["error"] == "cback_action must be a string, not 5; set it in the play's variables or with -e."
    assert stage(current={"cback_master_group": ["bk"]})["error"] == (
        "cback_master_group must be a string, not ['bk']; set it in the play's variables or with -e.")


def test_the_action_is_only_read_for_a_managed_run():
    result = stage(master={"cback_action": "Not An Action"})
    assert result["error"] is None
    assert "action" not in result["run"]


def test_the_action_comes_from_the_play_never_the_master():
    result = managed({"db1": {"cback_managed": True, "cback_managed_actions": "purge"}}, action=None, current={"cback_action": "purge"})
    assert (result["error"], result["run"]["action"], result["module"]["action"]) == (None, "purge", "purge")
    # a play setting: the master's host_vars are not read for it
    result = managed(master={"cback_action": "purge"}, action=None)
    assert result["error"].startswith("cback_action is not set: ")
    assert result["run"] == {}


def test_an_action_given_with_e_is_taken_for_whichever_host_the_role_runs_for():
    # -e is in every host's variables, the run_once host's and the master's too: not that peer's own value
    peers = {"db1": {"cback_collect_dir": "/c", "cback_managed": True, "cback_managed_actions": "collect"}, "web1": {"cback_collect_dir": "/c"}}
    for host in ("db1", "web1"):
        result = managed(peers, host=host)
        assert (result["error"], result["run"]["action"]) == (None, "collect"), host
    # the play's value that only that peer's own variables hold is still not taken
    result = managed({"db1": {"cback_collect_dir": "/c", "cback_action": "purge"}}, action=None, current={"cback_action": "purge"}, host="db1")
    assert result["error"].startswith("cback_action is not set: ")


def test_the_master_group_comes_from_the_play_never_the_master():
    result = stage(master={"cback_master_group": "elsewhere"})
    assert (result["error"], result["run"]["master_group"]) == (None, "cback_master")
    result = stage(current={"cback_master_group": "backup_servers"})
    assert result["run"]["master_group"] == "backup_servers"


@pytest.mark.parametrize("role", ["backup", "Stage", None])
def test_only_a_stage_managed_or_setup_run_is_resolved(role):
    with pytest.raises(AnsibleFilterError, match="cback_resolve: role must be one of stage, managed, setup, not %r" % (role,)):
        cback.cback_resolve([], {}, role, {}, ["bk"])


# ---------------------------------------------------------------------------
# cback_resolve: what the run modules take (run_peers)
# ---------------------------------------------------------------------------


def test_a_stage_run_takes_every_peer_with_its_stage_settings_only():
    result = stage({
        "web1": {"cback_collect_dir": "/srv/collect", "cback_rcp_command": "/usr/bin/scp -B", "cback_managed": True,
                 "cback_cback_command": "/usr/bin/cback3"},
        "self": {"cback_peer_type": "local", "cback_collect_dir": "/opt/collect", "cback_ignore_failure_mode": "all"},
    })
    assert result["run_peers"] == [
        dict(name="web1", host="web1", type="remote", collect_dir="/srv/collect", remote_user="backup", rcp_command="/usr/bin/scp -B"),
        dict(name="self", host="self", type="local", collect_dir="/opt/collect", remote_user="backup", ignore_failure_mode="all"),
    ]


def test_the_run_wide_commands_reach_every_peer_entry():
    result = stage({"web1": {"cback_collect_dir": "/c"}}, master={"cback_rcp_command": "/usr/bin/scp -q", "cback_rsh_command": "/usr/bin/ssh -q"})
    assert result["run_peers"] == [dict(name="web1", host="web1", type="remote", collect_dir="/c", remote_user="backup",
                                        rcp_command="/usr/bin/scp -q", rsh_command="/usr/bin/ssh -q")]


def test_a_peer_with_an_error_is_passed_with_its_name_host_and_error_only():
    result = stage({"bad": {"cback_peer_type": "floppy", "cback_collect_dir": "/c", "cback_peer_name": "bad-name"},
                    "web 2": {"cback_collect_dir": "/c"}})
    assert result["error"] is None
    assert result["run_peers"] == [
        dict(name="bad-name", host="bad", error="invalid settings: cback_peer_type: must be local or remote, not 'floppy'."),
        dict(name="web 2", host="web 2", error="invalid settings: inventory hostname: remote peer name 'web 2' is not a hostname "
                                               "or IP address; set cback_peer_name to the peer's name."),
    ]


def test_duplicate_peer_names_are_errors_of_a_run_too():
    result = stage({"web1": {"cback_collect_dir": "/c"}, "alias": {"cback_collect_dir": "/c", "cback_peer_name": "web1"}})
    assert [entry["error"] for entry in result["run_peers"]] == [
        "invalid settings: peer name 'web1' is also used by alias.", "invalid settings: peer name 'web1' is also used by web1."]


def test_a_managed_run_takes_only_the_peers_that_run_the_action():
    result = managed({
        "db1": {"cback_collect_dir": "/c", "cback_managed": True, "cback_managed_actions": "collect,purge",
                "cback_cback_command": "/usr/bin/cback3 --config /etc/db1.conf"},
        "web1": {"cback_collect_dir": "/c", "cback_managed": True, "cback_managed_actions": "purge"},
        "plain": {"cback_collect_dir": "/c"},
        "not-managed": {"cback_managed": False, "cback_managed_actions": "collect"},
        "broken": {"cback_managed": True, "cback_peer_type": "floppy"},
        "unreadable": {"cback_managed": "maybe"},
        "unmanaged-broken": {"cback_peer_type": "floppy", "cback_managed": False},
    })
    assert [entry["host"] for entry in result["run_peers"]] == ["db1", "broken", "unreadable"]
    assert result["run_peers"][0] == dict(name="db1", host="db1", type="remote", remote_user="backup",
                                          cback_command="/usr/bin/cback3 --config /etc/db1.conf")
    assert set(result["run_peers"][1]) == set(result["run_peers"][2]) == {"name", "host", "error"}
    # every peer is resolved all the same
    assert len(result["peers"]) == 7


def test_the_run_wide_managed_actions_decide_who_runs_the_action():
    peers = {"db1": {"cback_collect_dir": "/c", "cback_managed": True},
             "web1": {"cback_collect_dir": "/c", "cback_managed": True, "cback_managed_actions": "purge"}}
    result = managed(peers, master={"cback_managed_actions": "collect, purge", "cback_rsh_command": "/usr/bin/ssh -q"})
    assert result["run_peers"] == [dict(name="db1", host="db1", type="remote", remote_user="backup", rsh_command="/usr/bin/ssh -q")]


# ---------------------------------------------------------------------------
# cback_resolve: warnings about the inventory's variables
# ---------------------------------------------------------------------------


def test_unknown_variables_and_run_wide_ones_set_on_a_peer_are_warned_about(warnings_shown):
    hostvars = {
        "bk": {"cback_staging_dir": "/srv/stage", "cback_stage_paralel": 4, "cback_full": False},
        "web1": {"cback_collect_dir": "/c", "cback_ignore_failures": "all", "cback_full": False, "cback_rcp_command": "scp",
                 "cback_stage_summary": {}, "cback_qwqwqwqwqw": 1},
        "web2": {"cback_collect_dir": "/c", "cback_staging_dir": "/elsewhere", "cback_peer_type": "local", "cback_verify": True},
        "web3": {"cback_collect_dir": "/c", "cback_verify": "yes"},
    }
    result = run("stage", hostvars)
    assert result["warnings"] == [
        "Unknown variable cback_ignore_failures (set for web1) is ignored; did you mean cback_ignore_failure_mode?",
        "Unknown variable cback_qwqwqwqwqw (set for web1) is ignored",
        "Unknown variable cback_stage_paralel (set for bk) is ignored; did you mean cback_stage_parallel?",
        "cback_staging_dir is set for the peer web2, but run-wide settings are read from the master (bk) only: ignored there; "
        "set it in the master's variables",
        "cback_verify is set for the peers web2, web3, but run-wide settings are read from the master (bk) only: ignored there; "
        "set it in the master's variables",
    ]
    assert warnings_shown == result["warnings"]
    assert result["run"]["verify"] is False


def test_an_unknown_variable_set_on_several_hosts_is_one_warning(warnings_shown):
    result = run("stage", {"bk": {"cback_staging_dir": "/s", "cback_colect_dir": "/c"}, "web1": {"cback_colect_dir": "/c"},
                           "web2": {"cback_colect_dir": "/c"}})
    assert result["warnings"] == ["Unknown variable cback_colect_dir (set for bk, web1, web2) is ignored; did you mean cback_collect_dir?"]


def test_a_run_wide_variable_a_peer_shares_with_the_master_is_no_warning(warnings_shown):
    # group_vars/all: the master and every peer have it
    result = managed({"db1": {"cback_managed": True, "cback_full": True}}, master={"cback_full": True})
    assert result["warnings"] == []
    assert warnings_shown == []


def test_only_the_run_wide_variables_of_the_role_are_warned_about(warnings_shown):
    # cback_staging_dir is no setting of a managed run; a peer's commands are its own
    result = managed({"db1": {"cback_managed": True, "cback_staging_dir": "/s", "cback_rsh_command": "/usr/bin/ssh"}})
    assert result["warnings"] == []


def test_a_run_without_master_warns_about_nothing(warnings_shown):
    result = run("stage", {"web1": {"cback_colect_dir": "/c"}}, masters=[])
    assert result["warnings"] == [] and warnings_shown == []


# ---------------------------------------------------------------------------
# cback_resolve: what each role cannot go without (Setting.required)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("role, variable, unset, what", [
    ("stage", "cback_staging_dir", "", "the staging directory, <stage><staging_dir> of cback3.conf"),
    ("stage", "cback_staging_dir", None, "the staging directory, <stage><staging_dir> of cback3.conf"),
    ("setup", "cback_backup_user", "", "the backup user, <options><backup_user> of cback3.conf"),
    ("setup", "cback_backup_group", "", "the backup group, <options><backup_group> of cback3.conf"),
    # an empty path is a bad path (below); only null leaves these unset
    ("setup", "cback_setup_ssh_dir", None, "the master's directory for the backup user's ssh key and configuration"),
    ("setup", "cback_setup_shell", None, "the login shell of the remote peers' login users"),
])
def test_a_required_run_wide_setting_that_is_unset(role, variable, unset, what):
    values = {variable: unset}
    for where in ("master", "current"):
        if where == "master":
            result = run(role, {"bk": dict(values), "web1": {"cback_collect_dir": "/c"}})
        else:
            result = run(role, {"bk": {}, "web1": {"cback_collect_dir": "/c"}}, current=values)
        assert result["error"] == "%s is not set (%s); %s" % (variable, what, WHERE), where
        assert (result["run"], result["peers"]) == ({}, [])


@pytest.mark.parametrize("variable", ["cback_backup_user", "cback_backup_group"])
def test_what_the_set_up_needs_a_stage_run_may_go_without(variable):
    result = stage({"web1": {"cback_collect_dir": "/c"}}, master={variable: ""})
    assert result["error"] is None


def test_a_managed_run_may_go_without_a_backup_user():
    result = managed({"db1": {"cback_collect_dir": "/c", "cback_managed": True, "cback_managed_actions": "collect"}}, master={"cback_backup_user": ""})
    assert result["error"] is None
    assert "backup_user" not in result["module"]
    assert "remote_user" not in result["run_peers"][0]


@pytest.mark.parametrize("role", ["stage", "managed", "setup"])
def test_every_role_needs_each_peers_collect_dir(role):
    result = run(role, {"bk": {"cback_staging_dir": "/s"}, "web1": {"cback_managed": True}}, current={"cback_action": "collect"})
    assert result["error"] is None
    assert result["peers"][0]["error"] == "invalid settings: cback_collect_dir: is required for every peer."


# ---------------------------------------------------------------------------
# cback_resolve for the setup role: each peer's set-up settings and sshd address
# ---------------------------------------------------------------------------

SETUP_DEFAULTS = dict(
    setup_collect_owner="", setup_collect_group="", setup_collect_mode="0750", setup_ssh_host="", setup_ssh_port=0,
    setup_host_key_file="/etc/ssh/ssh_host_ed25519_key.pub", setup_restrict_key=True, setup_key_from="", setup_key_command="",
)


def setup(peers=None, master=None, **kwargs):
    hostvars = dict(bk=dict(master or {}))
    hostvars.update(peers or {})
    return run("setup", hostvars, **kwargs)


def test_a_setup_run_without_settings_takes_the_defaults():
    result = setup({"web1": {"cback_collect_dir": "/c"}})
    assert result["error"] is None
    assert result["run"] == dict(backup_user="backup", backup_group="backup", copy_as_backup_user=True, master_group="cback_master",
                                 setup_ssh_dir="/etc/cback", setup_shell="/bin/sh", setup_manage_users=True, setup_ssh_key=None)
    assert result["module"] == {} and result["run_peers"] == []
    peer = result["peers"][0]
    assert dict((key, peer[key]) for key in SETUP_DEFAULTS) == SETUP_DEFAULTS
    assert (peer["error"], peer["ssh_host"], peer["ssh_port"]) == (None, "web1", 22)


def test_a_stage_run_has_no_set_up_settings():
    peer = stage({"web1": {"cback_collect_dir": "/c"}})["peers"][0]
    assert not [key for key in peer if key.startswith("setup_") or key.startswith("ssh_")]


def test_a_peers_own_set_up_settings_are_checked_and_typed():
    peer = setup({"web1": {"cback_collect_dir": "/c", "cback_setup_collect_owner": "cback", "cback_setup_collect_group": "backup",
                           "cback_setup_collect_mode": 0o2750, "cback_setup_restrict_key": "no", "cback_setup_key_from": "192.0.2.0/24",
                           "cback_setup_key_command": "/usr/bin/rrsync -ro /c", "cback_setup_host_key_file": "/etc/ssh/key.pub"}})["peers"][0]
    assert peer["error"] is None
    assert (peer["setup_collect_owner"], peer["setup_collect_group"], peer["setup_collect_mode"], peer["setup_restrict_key"]) == (
        "cback", "backup", "2750", False)
    assert (peer["setup_key_from"], peer["setup_key_command"], peer["setup_host_key_file"]) == (
        "192.0.2.0/24", "/usr/bin/rrsync -ro /c", "/etc/ssh/key.pub")


@pytest.mark.parametrize("variables, message", [
    ({"cback_setup_collect_mode": "rwx"}, "cback_setup_collect_mode: must be an octal mode such as 0750, not 'rwx'."),
    ({"cback_setup_collect_mode": ""}, "cback_setup_collect_mode: must be an octal mode such as 0750, not ''."),
    ({"cback_setup_ssh_port": ""}, "cback_setup_ssh_port: must be a port number from 1 to 65535, 0 for ssh's default, not ''."),
    ({"cback_setup_restrict_key": "maybe"}, "cback_setup_restrict_key: must be true or false, not 'maybe'."),
    ({"cback_setup_key_from": "a, b"}, "cback_setup_key_from: must be a comma-separated list of patterns without spaces or quotes, not 'a, b'."),
    ({"cback_setup_key_command": 'echo "x"'}, "cback_setup_key_command: must be one line without double quotes, not 'echo \"x\"'."),
    ({"cback_setup_host_key_file": "key.pub"}, "cback_setup_host_key_file: must be an absolute path without spaces or quotes, not 'key.pub'."),
    ({"cback_setup_collect_owner": "bad user"}, "cback_setup_collect_owner: 'bad user' is not a valid user name."),
    ({"cback_setup_ssh_host": "web 1"}, "cback_setup_ssh_host: must be a host name or address, not 'web 1'."),
])
def test_a_bad_set_up_setting_is_the_peers_error(variables, message):
    peer = setup({"web1": dict({"cback_collect_dir": "/c"}, **variables)})["peers"][0]
    assert peer["error"] == "invalid settings: " + message


@pytest.mark.parametrize("variables, address", [
    ({}, ("web1", 22)),
    ({"cback_peer_name": "web1.example.org"}, ("web1.example.org", 22)),
    ({"ansible_host": "192.0.2.10", "ansible_port": 2222}, ("192.0.2.10", 2222)),
    ({"ansible_host": "192.0.2.10", "ansible_port": "2222", "cback_setup_ssh_host": "10.0.0.1", "cback_setup_ssh_port": 22022},
     ("10.0.0.1", 22022)),
    ({"cback_setup_ssh_host": "", "cback_setup_ssh_port": 0, "ansible_host": "web1.lan"}, ("web1.lan", 22)),
    # a local peer's sshd is never reached
    ({"cback_peer_type": "local", "ansible_host": "not an address", "ansible_port": "x"}, ("web1", 22)),
])
def test_a_remote_peers_sshd_is_its_set_up_address_else_ansible_host_else_its_name(variables, address):
    peer = setup({"web1": dict({"cback_collect_dir": "/c"}, **variables)})["peers"][0]
    assert peer["error"] is None
    assert (peer["ssh_host"], peer["ssh_port"]) == address


def test_a_bad_sshd_address_or_port_is_the_peers_error():
    peer = setup({"web1": {"cback_collect_dir": "/c", "ansible_host": "web 1"}})["peers"][0]
    assert peer["error"] == ("invalid settings: cback_setup_ssh_host: must be a host name or address, not 'web 1' (the address of the "
                             "peer's sshd: cback_setup_ssh_host, else ansible_host, else the peer's name).")
    peer = setup({"web1": {"cback_collect_dir": "/c", "ansible_port": 70000}})["peers"][0]
    assert peer["error"] == "invalid settings: ansible_port: must be a port number from 1 to 65535, 0 for ssh's default, not 70000."


def test_a_setup_runs_run_wide_settings_come_from_the_master():
    result = setup({"web1": {"cback_collect_dir": "/c"}}, master={"cback_setup_ssh_dir": "/srv/cback", "cback_backup_user": "cbackup"})
    assert (result["run"]["setup_ssh_dir"], result["run"]["backup_user"]) == ("/srv/cback", "cbackup")
    assert result["peers"][0]["remote_user"] == "cbackup"
    result = setup({"web1": {"cback_collect_dir": "/c"}}, master={"cback_setup_shell": "/bin/bash -l"})
    assert result["error"] == "cback_setup_shell must be an absolute path without spaces or quotes, not '/bin/bash -l'; " + WHERE
    result = setup({"web1": {"cback_collect_dir": "/c"}}, master={"cback_setup_ssh_dir": ""})
    assert result["error"] == "cback_setup_ssh_dir must be an absolute path without spaces or quotes, not ''; " + WHERE


# ---------------------------------------------------------------------------
# cback_run_failure
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("role, option, variable", [
    ("stage", "backup_user", "cback_backup_user"),
    ("stage", "staging_dir", "cback_staging_dir"),
    ("stage", "parallel", "cback_stage_parallel"),
    ("stage", "timeout", "cback_command_timeout"),
    ("managed", "backup_user", "cback_backup_user"),
    ("managed", "parallel", "cback_managed_parallel"),
    ("managed", "action", "cback_action"),
])
def test_a_run_failure_over_a_module_option_names_the_inventory_variable(role, option, variable):
    result = dict(failed=True, option=option, msg="%s: no such user 'bkp' on the master." % option)
    assert cback.cback_run_failure(result, role) == "%s: no such user 'bkp' on the master." % variable


@pytest.mark.parametrize("result", [
    dict(failed=True, msg="staging_dir: not writable."),  # no option: the message as it is
    dict(failed=True, option="staging_dir", msg="staging_dir: not writable."),  # not an option of the managed run
    dict(failed=True, option="peers", msg="peers: two peers named web1."),  # no setting's option
    dict(failed=True, option="backup_user", msg="The backup user backup_user is unknown."),  # the option does not lead
])
def test_a_run_failure_over_anything_else_is_the_modules_message(result):
    assert cback.cback_run_failure(result, "managed") == result["msg"]


def test_only_a_leading_option_is_replaced():
    result = dict(failed=True, option="backup_user", msg="backup_user: backup_user 'x' unknown; backup_user: again")
    assert cback.cback_run_failure(result, "stage") == "cback_backup_user: backup_user 'x' unknown; backup_user: again"
    # a longer option of the same start is another option
    assert cback.cback_run_failure(dict(option="backup_user", msg="backup_users: x"), "stage") == "backup_users: x"


@pytest.mark.parametrize("result", [None, {}, dict(failed=True), dict(failed=True, msg="")])
def test_a_run_without_a_message(result):
    assert cback.cback_run_failure(result, "stage") == "the stage run gave no result"
    assert cback.cback_run_failure(result, "managed") == "the managed run gave no result"


# ---------------------------------------------------------------------------
# cback_role_variables, cback_inventory_problem
# ---------------------------------------------------------------------------


def test_the_variables_of_a_roles_run_wide_settings():
    stage_variables = cback.cback_role_variables("stage")
    managed_variables = cback.cback_role_variables("managed")
    assert {"cback_staging_dir", "cback_stage_parallel", "cback_rcp_command", "cback_master_group"} <= set(stage_variables)
    assert "cback_action" not in stage_variables and "cback_collect_dir" not in stage_variables
    assert {"cback_action", "cback_managed_parallel", "cback_cback_command", "cback_master_group"} <= set(managed_variables)
    assert "cback_staging_dir" not in managed_variables and "cback_managed" not in managed_variables
    assert {"cback_setup_ssh_dir", "cback_backup_user"} <= set(cback.cback_role_variables("setup"))


def test_role_variables_of_an_unknown_role_fail():
    with pytest.raises(AnsibleFilterError, match="role must be one of stage, managed, setup, not 'backup'"):
        cback.cback_role_variables("backup")


@pytest.mark.parametrize("groups, missing", [
    ({}, "no host in the group cback_master (the master) and no host in the group cback_peers (the peers)"),
    (None, "no host in the group cback_master (the master) and no host in the group cback_peers (the peers)"),
    ({"cback_master": ["bk"]}, "no host in the group cback_peers (the peers)"),
    ({"cback_master": [], "cback_peers": ["web1"]}, "no host in the group cback_master (the master)"),
])
def test_an_inventory_without_master_or_peers_is_a_problem_with_its_likely_cause(groups, missing):
    assert cback.cback_inventory_problem(groups) == (
        "The inventory has %s. A broken inventory source is the likely cause: Ansible only warns when it cannot parse one. Make it "
        "stop instead with ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED=true in the environment (or any_unparsed_is_failed = true in the "
        "[inventory] section of ansible.cfg)." % missing)


def test_an_inventory_with_master_and_peers_is_no_problem():
    assert cback.cback_inventory_problem({"cback_master": ["bk"], "cback_peers": ["web1"]}) == ""


def test_the_inventory_problem_names_the_groups_given():
    groups = {"cback_master": ["bk"], "cback_peers": ["web1"], "backup": ["bk"]}
    assert cback.cback_inventory_problem(groups, "backup", "clients").startswith(
        "The inventory has no host in the group clients (the peers). ")


# ---------------------------------------------------------------------------
# cback_peer_failure
# ---------------------------------------------------------------------------


def test_a_peer_failure_of_a_stage_run_is_found_by_host():
    summary = stage_summary(
        (peer_entry("ok"), staged_outcome()),
        (peer_entry("nr", name="nr-name"), not_ready_outcome()),
        (peer_entry("ign", mode="all"), not_ready_outcome()),
        (peer_entry("boom"), failed_outcome(msg="copy failed.")),
    )
    assert cback.cback_peer_failure(summary, "ok") == ""
    assert cback.cback_peer_failure(summary, "ign") == ""
    assert cback.cback_peer_failure(summary, "nr") == "Peer nr-name: not ready, no collect indicator (peer not ready or unreachable)."
    assert cback.cback_peer_failure(summary, "boom") == "Peer boom: failed, copy failed."
    assert cback.cback_peer_failure(summary, "unknown") == ""
    assert cback.cback_peer_failure({}, "ok") == ""


def test_a_peer_failure_of_a_managed_run_is_found_by_host():
    summary = managed_summary(
        (peer_entry("m1", managed=True, actions=["collect"]), dict(rc=0)),
        (peer_entry("m2", managed=True, actions=["collect"]), dict(failed=True, rc=1, msg="failed with rc 1")),
    )
    assert cback.cback_peer_failure(summary, "m1") == ""
    assert cback.cback_peer_failure(summary, "m2") == "Peer m2: failed, failed with rc 1"


# ---------------------------------------------------------------------------
# cback_summary_table
# ---------------------------------------------------------------------------


def test_a_stage_table_has_a_row_per_peer_then_totals_then_reasons():
    summary = stage_summary(
        (peer_entry("local1"), staged_outcome(files=("a", "b", "c"), size=5000, seconds=1.234)),
        (peer_entry("remote-peer-2", type="remote"), failed_outcome(msg="copy failed.", files=("a",), size=10, seconds=0.5)),
        (peer_entry("r3", type="remote", mode="all"), not_ready_outcome(seconds=0.1)),
        (peer_entry("r4", type="remote"), not_ready_outcome(seconds=0.1)),
        (peer_entry("again"), staged_outcome(files=(), size=0, seconds=0.01, unchanged=("a",))),
    )
    assert cback.cback_summary_table(summary) == [
        "peer           type    status     files    bytes  seconds",
        "local1         local   staged         3  4.9 KiB     1.23",
        "remote-peer-2  remote  failed         1     10 B     0.50",
        "r3             remote  ignored        0      0 B     0.10",
        "r4             remote  not ready      0      0 B     0.10",
        "again          local   staged         0      0 B     0.01",
        "5 peers, 2 failed; 4 files, 4.9 KiB staged; 1 already staged",
        "remote-peer-2: copy failed.",
        "r3: no collect indicator (peer not ready or unreachable), ignored by ignore-failure mode all.",
        "r4: no collect indicator (peer not ready or unreachable).",
    ]


def test_a_stage_table_counts_the_verified_files():
    verified = dict(staged_outcome(files=("a", "b"), size=2, seconds=0), verified=2)
    summary = stage_summary((peer_entry("p1"), verified), (peer_entry("p2"), staged_outcome(files=("a",), size=1, seconds=0)))
    assert summary["peers"][0]["verified"] == 2 and "verified" not in summary["peers"][1]
    assert summary["peers"][0]["message"] == "2 verified (sha256)"
    assert cback.cback_summary_table(summary)[-1] == "2 peers, 0 failed; 3 files, 3 B staged; 2 files verified (sha256)"


def test_a_stage_table_in_check_mode_says_so_first():
    summary = stage_summary((peer_entry("p1"), staged_outcome(files=("a",), size=1, seconds=0)), check_mode=True)
    assert cback.cback_summary_table(summary) == [
        "check mode: what a run would do; nothing was written or run",
        "peer  type   status       files  bytes  seconds",
        "p1    local  would stage      1    1 B     0.00",
        "1 peer, 0 failed; 1 file, 1 B would be staged",
    ]


def test_a_stage_table_names_the_daily_directory_after_the_totals():
    summary = stage_summary((peer_entry("p1"), staged_outcome(files=("a",), size=1, seconds=0)),
                            (peer_entry("p2"), failed_outcome(msg="copy failed.", files=(), size=0, seconds=0)),
                            date="2026/11/26", daily_dir="/srv/stage/2026/11/26")
    assert cback.cback_summary_table(summary)[-3:] == [
        "2 peers, 1 failed; 1 file, 1 B staged",
        "daily directory: /srv/stage/2026/11/26",
        "p2: copy failed.",
    ]


def test_a_stage_table_shows_invalid_and_not_attempted_peers():
    summary = stage_summary(
        (peer_entry("bad", error="invalid settings: cback_peer_name: nope."), None),
        (peer_entry("skipped"), None),
    )
    assert cback.cback_summary_table(summary) == [
        "peer     type   status  files  bytes  seconds",
        "bad      local  failed      0    0 B     0.00",
        "skipped  local  failed      0    0 B     0.00",
        "2 peers, 2 failed; 0 files, 0 B staged",
        "bad: invalid settings: cback_peer_name: nope.",
        "skipped: was not attempted.",
    ]


def test_a_stage_table_without_peers():
    assert cback.cback_summary_table(stage_summary()) == [
        "peer  type  status  files  bytes  seconds",
        "0 peers, 0 failed; 0 files, 0 B staged",
    ]


@pytest.mark.parametrize(
    "size, shown",
    [
        (0, "0 B"),
        (1, "1 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (10 * 1024 + 512, "10.5 KiB"),
        (1024 * 1024, "1.0 MiB"),
        (512 * 1024 * 1024, "512.0 MiB"),
        (1024 ** 3, "1.0 GiB"),
        (5 * 1024 ** 3 + 1024 ** 3 // 4, "5.2 GiB"),
        (3 * 1024 ** 4, "3072.0 GiB"),
    ],
)
def test_a_stage_table_shows_sizes_in_binary_units(size, shown):
    summary = stage_summary((peer_entry("p"), staged_outcome(files=("a",), size=size)))
    lines = cback.cback_summary_table(summary)
    assert re.split(r"\s{2,}", lines[1]) == ["p", "local", "staged", "1", shown, "1.25"], lines
    assert lines[2] == "1 peer, 0 failed; 1 file, %s staged" % shown


def test_a_stage_tables_totals_add_up():
    summary = stage_summary(
        (peer_entry("a"), staged_outcome(files=("1", "2"), size=1024 * 1024)),
        (peer_entry("b"), staged_outcome(files=("1",), size=1024 * 1024)),
        (peer_entry("c"), failed_outcome(files=("1",), size=1024 * 1024)),
    )
    assert cback.cback_summary_table(summary)[4] == "3 peers, 1 failed; 4 files, 3.0 MiB staged"


def test_a_managed_table_has_a_row_per_peer_then_totals_then_reasons():
    summary = managed_summary(
        (peer_entry("db1", type="remote", managed=True, actions=["collect"]), dict(rc=0, seconds=12.5)),
        (peer_entry("web-server-2", type="remote", managed=True, actions=["collect"]),
         dict(failed=True, rc=3, seconds=0.25, msg="action [collect] failed with rc 3: no config")),
        (peer_entry("bad", managed=True, error="invalid settings: cback_peer_name: x."), None),
    )
    assert cback.cback_summary_table(summary) == [
        "peer          type    status  rc  seconds",
        "db1           remote  ok       0    12.50",
        "web-server-2  remote  failed   3     0.25",
        "bad           local   failed   -     0.00",
        "3 peers ran collect, 2 failed",
        "web-server-2: action [collect] failed with rc 3: no config",
        "bad: invalid settings: cback_peer_name: x.",
    ]


def test_a_managed_table_in_check_mode_says_so_first():
    summary = managed_summary((peer_entry("m1", managed=True, actions=["collect"]), dict(changed=True)), check_mode=True)
    assert cback.cback_summary_table(summary) == [
        "check mode: what a run would do; nothing was written or run",
        "peer  type   status  rc  seconds",
        "m1    local  ok       -     0.00",
        "1 peer ran collect, 0 failed",
    ]


# ---------------------------------------------------------------------------


# ---------------------------------------------------------------------------
# Fleets: several masters, each with the pool of peers that name it
# ---------------------------------------------------------------------------

def fleet(peers, masters=None, hosts=None, **kwargs):
    """A stage run's resolution over masters ``bk1`` and ``bk2`` (staging dirs /srv/bk1, /srv/bk2)."""
    masters = masters or {"bk1": {"cback_staging_dir": "/srv/bk1"}, "bk2": {"cback_staging_dir": "/srv/bk2"}}
    hostvars = dict((name, dict(values)) for name, values in masters.items())
    hostvars.update(peers)
    return run("stage", hostvars, hosts=list(peers) if hosts is None else hosts, masters=list(masters), **kwargs)


def peer_of(master, **extra):
    return dict(cback_collect_dir="/c", cback_master_host=master, **extra)


def test_each_pool_is_a_master_and_the_peers_that_name_it():
    result = fleet({"a1": peer_of("bk1"), "b1": peer_of("bk2"), "a2": peer_of("bk1")})
    assert [pool["master"] for pool in result["pools"]] == ["bk1", "bk2"]
    bk1, bk2 = result["pools"]
    assert [peer["host"] for peer in bk1["peers"]] == ["a1", "a2"] and [peer["host"] for peer in bk2["peers"]] == ["b1"]
    assert bk1["module"]["staging_dir"] == "/srv/bk1" and bk2["module"]["staging_dir"] == "/srv/bk2"
    assert (bk1["leader"], bk2["leader"]) == ("a1", "b1")
    assert result["leaders"] == ["a1", "b1"] and result["delegates"] == {"a1": "bk1", "b1": "bk2"}
    assert result["leader_pools"] == {"a1": 0, "b1": 1} and result["fleet"] is True
    # the top-level keys of a one-pool run are not those of any pool
    assert (result["error"], result["master"], result["run_peers"]) == (None, None, [])


def test_each_pool_reads_its_own_masters_run_wide_values():
    masters = {"bk1": {"cback_staging_dir": "/srv/bk1", "cback_stage_parallel": 2},
               "bk2": {"cback_staging_dir": "/srv/bk2", "cback_backup_user": "bkp"}}
    result = fleet({"a1": peer_of("bk1"), "b1": peer_of("bk2")}, masters=masters)
    bk1, bk2 = result["pools"]
    assert (bk1["module"]["parallel"], bk2["module"]["parallel"]) == (2, 8)
    assert (bk1["run"]["backup_user"], bk2["run"]["backup_user"]) == ("backup", "bkp")
    assert bk2["run_peers"][0]["remote_user"] == "bkp"


def test_a_bad_run_wide_value_is_its_pools_error_only():
    masters = {"bk1": {"cback_staging_dir": "/srv/bk1"}, "bk2": {"cback_staging_dir": "/srv/bk2", "cback_stage_parallel": "eight"}}
    result = fleet({"a1": peer_of("bk1"), "b1": peer_of("bk2")}, masters=masters)
    bk1, bk2 = result["pools"]
    assert bk1["error"] is None and bk2["error"].startswith("cback_stage_parallel must be a whole number of at least 1, not 'eight'; ")
    assert "host_vars/bk2" in bk2["error"]
    assert bk2["leader"] is None and result["leaders"] == ["a1"] and result["fleet"] is True


def test_with_several_masters_a_peer_must_name_one_of_them():
    result = fleet({"a1": peer_of("bk1"), "x": {"cback_collect_dir": "/c"}, "y": peer_of("bk9"), "z": peer_of(["bk1"])})
    assert [pool["master"] for pool in result["pools"]] == ["bk1"] and result["fleet"] is False
    orphans = dict((orphan["host"], orphan["error"]) for orphan in result["orphans"])
    assert orphans["x"] == ("invalid settings: cback_master_host: not set, while the group cback_master holds several masters "
                            "(bk1, bk2); set it to the inventory host of this peer's master.")
    assert orphans["y"] == "invalid settings: cback_master_host: must be a host of the group cback_master (bk1, bk2), not 'bk9'."
    assert orphans["z"] == "invalid settings: cback_master_host: must be a string, not ['bk1']."


def test_with_one_master_cback_master_host_may_be_left_out_or_name_it():
    result = stage({"a": {"cback_collect_dir": "/c"}, "b": peer_of("bk"), "c": peer_of("other")})
    assert [peer["host"] for peer in result["peers"]] == ["a", "b"] and result["master"] == "bk"
    assert [orphan["host"] for orphan in result["orphans"]] == ["c"]


def test_one_pool_is_led_by_the_plays_first_host():
    """The role includes the run module task once (run_once): for the play's first host."""
    result = fleet({"y": peer_of("bk9"), "a1": peer_of("bk1")})
    assert result["pools"][0]["leader"] == "y" and result["delegates"] == {"y": "bk1"}


def test_peer_names_may_repeat_across_pools_but_not_within_one():
    result = fleet({"a1": peer_of("bk1", cback_peer_name="web"), "b1": peer_of("bk2", cback_peer_name="web"),
                    "b2": peer_of("bk2", cback_peer_name="web")})
    bk1, bk2 = result["pools"]
    assert bk1["peers"][0]["error"] is None
    assert all(peer["error"] and "web" in peer["error"] for peer in bk2["peers"])


def test_a_master_in_the_play_stands_for_its_peers_a_limit_left_out():
    peers = {"a1": peer_of("bk1"), "a2": peer_of("bk1"), "b1": peer_of("bk2")}
    hostvars = dict(bk1={"cback_staging_dir": "/srv/bk1"}, bk2={"cback_staging_dir": "/srv/bk2"}, **peers)
    # --limit bk1: the play holds the master alone
    result = cback.cback_resolve(["bk1"], hostvars, "stage", {}, ["bk1", "bk2"], "bk1", ["bk1"], ["a1", "a2", "b1"])
    assert [pool["master"] for pool in result["pools"]] == ["bk1"]
    pool = result["pools"][0]
    assert [peer["host"] for peer in pool["peers"]] == ["a1", "a2"] and pool["stands_for"] == ["a1", "a2"]
    assert pool["hosts"] == ["bk1"] and pool["leader"] == "bk1"
    # no limit: the masters are in the play, their peers report for themselves
    every = ["a1", "a2", "b1", "bk1", "bk2"]
    result = cback.cback_resolve(every, hostvars, "stage", {}, ["bk1", "bk2"], "a1", every, ["a1", "a2", "b1"])
    assert [(pool["hosts"], pool["stands_for"], pool["leader"]) for pool in result["pools"]] == [
        (["a1", "a2"], [], "a1"), (["b1"], [], "b1")]
    # --limit 'all:!a2': the masters are in the play, and a2 stays out of it
    limited = ["a1", "b1", "bk1", "bk2"]
    result = cback.cback_resolve(limited, hostvars, "stage", {}, ["bk1", "bk2"], "a1", limited, ["a1", "a2", "b1"])
    assert [peer["host"] for peer in result["pools"][0]["peers"]] == ["a1"] and result["pools"][0]["stands_for"] == []
    # a peer that failed earlier in the play is no longer in it, and its master does not bring it back
    result = cback.cback_resolve(["a1", "b1", "bk1", "bk2"], hostvars, "stage", {}, ["bk1", "bk2"], "a1", every, ["a1", "a2", "b1"])
    assert [peer["host"] for peer in result["pools"][0]["peers"]] == ["a1"]


def test_without_the_peers_group_every_host_is_a_peer():
    """A play of one's own whose hosts hold the master as a local peer."""
    hostvars = dict(bk={"cback_staging_dir": "/s", "cback_collect_dir": "/c", "cback_peer_type": "local"}, web={"cback_collect_dir": "/c"})
    result = cback.cback_resolve(["bk", "web"], hostvars, "stage", {}, ["bk"], "bk")
    assert [peer["host"] for peer in result["peers"]] == ["bk", "web"]


# ---------------------------------------------------------------------------
# cback_run_outcome: what each host reports, pool by pool
# ---------------------------------------------------------------------------

def module_result(master, rows):
    """A cback_stage_run result with ``rows`` (host, status, message)."""
    table = [dict(name=host, host=host, type="local", status=status, files=1, bytes=10, seconds=0.1, message=message)
             for host, status, message in rows]
    from ansible_collections.cedarbackup.peer.plugins.module_utils import _report as report
    summary = report.stage_summary(table, False, "monday", "2026/12/07", "/srv/%s/2026/12/07" % master, False, staging_dir="/srv/" + master)
    return dict(changed=True, summary=summary, hosts=report.host_reports(table, [status == "staged" for _h, status, _m in rows]))


def test_each_host_reports_its_own_pools_result():
    resolved = fleet({"a1": peer_of("bk1"), "a2": peer_of("bk1"), "b1": peer_of("bk2")})
    hostvars = dict(a1={"r": module_result("bk1", [("a1", "staged", ""), ("a2", "not ready", "no collect indicator")])},
                    b1={"r": module_result("bk2", [("b1", "staged", "")])})
    outcome = cback.cback_run_outcome(resolved, "stage", hostvars, "r")
    reports = outcome["reports"]
    assert sorted(reports) == ["a1", "a2", "b1"]
    assert reports["a1"] == dict(msg="staged", changed=True, failed=False, reasons="")
    assert reports["a2"]["failed"] is True and reports["a2"]["msg"] == "Peer a2: not ready, no collect indicator"
    assert sorted(outcome["summaries"]) == ["bk1", "bk2"] and outcome["summary"] is None
    assert outcome["lines"][0] == "Pool of bk1 (staging directory /srv/bk1):"
    assert "Pool of bk2 (staging directory /srv/bk2):" in outcome["lines"]


def test_a_pool_that_failed_as_a_whole_fails_its_hosts_only():
    masters = {"bk1": {"cback_staging_dir": "/srv/bk1"}, "bk2": {"cback_staging_dir": "/srv/bk2"},
               "bk3": {"cback_staging_dir": "/srv/bk3", "cback_verify": "perhaps"}}
    resolved = fleet({"a1": peer_of("bk1"), "b1": peer_of("bk2"), "b2": peer_of("bk2"), "c1": peer_of("bk3"), "x": {}}, masters=masters)
    hostvars = dict(a1={"r": module_result("bk1", [("a1", "staged", "")])},
                    b1={"r": {"unreachable": True, "msg": "Failed to connect to the host via ssh: refused\n"}})
    reports = cback.cback_run_outcome(resolved, "stage", hostvars, "r")["reports"]
    assert reports["a1"]["failed"] is False
    assert reports["b1"] == reports["b2"] == dict(
        msg="The master bk2 could not be reached: Failed to connect to the host via ssh: refused", changed=False, failed=True,
        reasons="The master bk2 could not be reached: Failed to connect to the host via ssh: refused")
    assert reports["c1"]["failed"] and reports["c1"]["msg"].startswith("cback_verify must be true or false, not 'perhaps'; ")
    assert reports["x"]["failed"] and reports["x"]["msg"].startswith("Peer x: failed, invalid settings: cback_master_host: not set")


def test_a_run_that_could_not_start_names_the_inventory_variable():
    resolved = stage({"a": {"cback_collect_dir": "/c"}}, hosts=["a"])
    hostvars = dict(a={"r": {"failed": True, "option": "backup_user", "msg": "backup_user: no such user: nobody2"}})
    outcome = cback.cback_run_outcome(resolved, "stage", hostvars, "r")
    assert outcome["reports"]["a"]["msg"] == "cback_backup_user: no such user: nobody2" and outcome["lines"] == []


def test_one_pool_shows_its_table_as_a_single_master_run_did():
    resolved = stage({"a": {"cback_collect_dir": "/c"}}, hosts=["a"])
    result = module_result("bk", [("a", "staged", "")])
    outcome = cback.cback_run_outcome(resolved, "stage", {"a": {"r": result}}, "r")
    assert outcome["lines"] == cback.cback_summary_table(result["summary"]) and outcome["summary"] == result["summary"]
    assert outcome["summaries"] == {"bk": result["summary"]}


def test_a_master_that_stands_for_its_peers_reports_for_them():
    peers = {"a1": peer_of("bk1"), "a2": peer_of("bk1")}
    hostvars = dict(bk1={"cback_staging_dir": "/srv/bk1"}, bk2={}, **peers)
    resolved = cback.cback_resolve(["bk1"], hostvars, "stage", {}, ["bk1", "bk2"], "bk1", ["bk1"], ["a1", "a2"])
    hostvars["bk1"]["r"] = module_result("bk1", [("a1", "staged", ""), ("a2", "failed", "copy failed")])
    report = cback.cback_run_outcome(resolved, "stage", hostvars, "r")["reports"]["bk1"]
    assert report == dict(msg="2 peers of the pool of bk1: 1 failed: Peer a2: failed, copy failed", changed=True, failed=True,
                          reasons="Peer a2: failed, copy failed")


def test_no_master_fails_every_host():
    resolved = cback.cback_resolve(["a", "b"], {"a": {}, "b": {}}, "stage", {}, [])
    reports = cback.cback_run_outcome(resolved, "stage", {}, "r", ["a", "b"])["reports"]
    assert sorted(reports) == ["a", "b"] and reports["a"]["msg"].startswith("The inventory needs a host in the group cback_master")

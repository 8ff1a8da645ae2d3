# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for the ``cedarbackup.peer.cback`` filter plugin.

Plain dicts stand in for Ansible's ``hostvars``.  The ignore-failure expectations are the
table of docs/cback3-behaviour.md, the project's record of cback3's behaviour ("Not ready, and the ignore-failure modes").
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.cedarbackup.peer.plugins.filter import cback

SETTINGS = dict(backup_user="backup", rcp_command="", rsh_command="", cback_command="", managed_actions=[])


def resolve(hostvars, settings=None, hosts=None):
    """``cback_peers`` as a dict by host (and the list, to check the order)."""
    peers = cback.cback_peers(list(hostvars) if hosts is None else hosts, hostvars, SETTINGS if settings is None else settings)
    return dict((peer["host"], peer) for peer in peers)


def one(variables, settings=None):
    return resolve({"web1": variables}, settings)["web1"]


# ---------------------------------------------------------------------------
# FilterModule
# ---------------------------------------------------------------------------


def test_filter_names():
    assert cback.FilterModule().filters() == {
        "cback_peers": cback.cback_peers,
        "cback_run_settings": cback.cback_run_settings,
        "cback_variable_warnings": cback.cback_variable_warnings,
        "cback_run_peers": cback.cback_run_peers,
        "cback_peer_failure": cback.cback_peer_failure,
        "cback_stage_summary": cback.cback_stage_summary,
        "cback_managed_summary": cback.cback_managed_summary,
        "cback_summary_table": cback.cback_summary_table,
    }


# ---------------------------------------------------------------------------
# cback_peers: resolution
# ---------------------------------------------------------------------------


def test_minimal_remote_peer():
    assert one({"cback_collect_dir": "/opt/backup/collect"}) == dict(
        host="web1", name="web1", error=None, type="remote", collect_dir="/opt/backup/collect", remote_user="backup",
        rcp_command=None, rsh_command=None, cback_command=None, ignore_failure_mode=None, managed=False, managed_actions=[],
    )


def test_every_peer_var():
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


def test_local_peer_name_is_only_a_label():
    peer = one({"cback_peer_type": "local", "cback_peer_name": "master self", "cback_collect_dir": "/opt/backup/collect"})
    assert peer["error"] is None
    assert (peer["type"], peer["name"]) == ("local", "master self")


def test_inventory_order_is_kept():
    hostvars = dict((host, {"cback_collect_dir": "/c"}) for host in ("zeta", "alpha", "mid"))
    peers = cback.cback_peers(["zeta", "alpha", "mid"], hostvars, SETTINGS)
    assert [peer["host"] for peer in peers] == ["zeta", "alpha", "mid"]


@pytest.mark.parametrize("hosts", [None, []])
def test_no_hosts(hosts):
    assert cback.cback_peers(hosts, {}, SETTINGS) == []


def test_settings_may_be_omitted():
    peers = cback.cback_peers(["web1"], {"web1": {"cback_collect_dir": "/c"}})
    assert peers[0]["error"] is None
    assert peers[0]["remote_user"] is None
    assert peers[0]["managed_actions"] == []


def test_settings_are_not_changed():
    settings = dict(SETTINGS, managed_actions="collect, purge")
    cback.cback_peers(["web1"], {"web1": {"cback_collect_dir": "/c"}}, settings)
    assert settings["managed_actions"] == "collect, purge"


@pytest.mark.parametrize("key", ["rcp_command", "rsh_command", "cback_command"])
def test_command_peer_var_wins_over_run_wide(key):
    settings = dict(SETTINGS, **{key: "/usr/bin/run-wide -x"})
    assert one({"cback_collect_dir": "/c"}, settings)[key] == "/usr/bin/run-wide -x"
    assert one({"cback_collect_dir": "/c", "cback_" + key: "/usr/bin/peer -y"}, settings)[key] == "/usr/bin/peer -y"


@pytest.mark.parametrize("key", ["rcp_command", "rsh_command", "cback_command"])
def test_empty_run_wide_command_is_the_default(key):
    # the role's defaults are "": the module's default command
    assert one({"cback_collect_dir": "/c"}, dict(SETTINGS, **{key: ""}))[key] is None
    assert one({"cback_collect_dir": "/c"}, dict(SETTINGS, **{key: None}))[key] is None


def test_remote_user_defaults_to_backup_user():
    assert one({"cback_collect_dir": "/c"}, dict(SETTINGS, backup_user="cbackup"))["remote_user"] == "cbackup"
    assert one({"cback_collect_dir": "/c", "cback_remote_user": "other"}, dict(SETTINGS, backup_user="cbackup"))["remote_user"] == "other"
    assert one({"cback_collect_dir": "/c"}, dict(SETTINGS, backup_user=""))["remote_user"] is None
    assert one({"cback_collect_dir": "/c"}, dict(SETTINGS, backup_user=None))["remote_user"] is None


def test_peer_name_defaults_to_the_inventory_host():
    assert one({"cback_collect_dir": "/c"})["name"] == "web1"
    assert one({"cback_collect_dir": "/c", "cback_peer_name": ""})["name"] == "web1"
    assert one({"cback_collect_dir": "/c", "cback_peer_name": "10.0.0.5"})["name"] == "10.0.0.5"


def test_peer_type_defaults_to_remote():
    assert one({"cback_collect_dir": "/c"})["type"] == "remote"
    assert one({"cback_collect_dir": "/c", "cback_peer_type": None})["type"] == "remote"
    assert one({"cback_collect_dir": "/c", "cback_peer_type": "local"})["type"] == "local"


@pytest.mark.parametrize(
    "value, expected",
    [
        (True, True), ("true", True), ("yes", True), ("True", True), ("on", True), (1, True), ("1", True),
        (False, False), ("false", False), ("no", False), ("False", False), ("off", False), (0, False), ("0", False),
        (None, False),
    ],
)
def test_managed_boolean_forms(value, expected):
    peer = one({"cback_collect_dir": "/c", "cback_managed": value})
    assert peer["error"] is None
    assert peer["managed"] is expected


def test_managed_defaults_to_false():
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
        ("my-action,other_one,x2", ["my-action", "other_one", "x2"]),
        ("", []),
        ([], []),
    ],
)
def test_managed_actions_list_or_comma_string(value, expected):
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
def test_managed_actions_fall_back_to_run_wide(run_wide, expected):
    peer = one({"cback_collect_dir": "/c", "cback_managed": "yes"}, dict(SETTINGS, managed_actions=run_wide))
    assert peer["error"] is None
    assert peer["managed_actions"] == expected


def test_managed_actions_peer_var_wins_over_run_wide():
    settings = dict(SETTINGS, managed_actions="collect, purge")
    assert one({"cback_collect_dir": "/c", "cback_managed_actions": ["store"]}, settings)["managed_actions"] == ["store"]
    assert one({"cback_collect_dir": "/c", "cback_managed_actions": "stage"}, settings)["managed_actions"] == ["stage"]
    # an explicit empty list is the peer's own value: no actions
    assert one({"cback_collect_dir": "/c", "cback_managed_actions": []}, settings)["managed_actions"] == []
    assert one({"cback_collect_dir": "/c", "cback_managed_actions": None}, settings)["managed_actions"] == ["collect", "purge"]


@pytest.mark.parametrize("mode", ["none", "all", "daily", "weekly"])
def test_ignore_failure_modes(mode):
    peer = one({"cback_collect_dir": "/c", "cback_ignore_failure_mode": mode})
    assert peer["error"] is None
    assert peer["ignore_failure_mode"] == mode


def test_empty_ignore_failure_mode_is_none():
    assert one({"cback_collect_dir": "/c", "cback_ignore_failure_mode": ""})["ignore_failure_mode"] is None


def test_ip_addresses_as_remote_names():
    for name in ("192.0.2.10", "::1", "2001:db8::1"):
        assert one({"cback_collect_dir": "/c", "cback_peer_name": name})["error"] is None, name


# ---------------------------------------------------------------------------
# cback_peers: invalid settings
# ---------------------------------------------------------------------------

INVALID = [
    # (host vars, the variable the error names, a piece of the reason)
    ({"cback_peer_name": "../x", "cback_collect_dir": "/c"}, "cback_peer_name", "'../x'"),
    ({"cback_peer_name": "a/b", "cback_collect_dir": "/c"}, "cback_peer_name", "one directory name"),
    ({"cback_peer_name": "..", "cback_collect_dir": "/c"}, "cback_peer_name", "one directory name"),
    ({"cback_peer_name": "-oProxyCommand=x", "cback_collect_dir": "/c"}, "cback_peer_name", "leading '-'"),
    ({"cback_peer_name": "not a host", "cback_collect_dir": "/c"}, "cback_peer_name", "not a hostname or IP address"),
    ({"cback_peer_type": "local", "cback_peer_name": "../x", "cback_collect_dir": "/c"}, "cback_peer_name", "'../x'"),
    ({"cback_collect_dir": "relative/collect"}, "cback_collect_dir", "must be an absolute path"),
    ({"cback_peer_type": "local", "cback_collect_dir": "relative"}, "cback_collect_dir", "must be an absolute path"),
    ({}, "cback_collect_dir", "is required for every peer"),
    ({"cback_collect_dir": ""}, "cback_collect_dir", "is required for every peer"),
    ({"cback_collect_dir": None}, "cback_collect_dir", "is required for every peer"),
    ({"cback_collect_dir": "/c;rm -rf /"}, "cback_collect_dir", "cannot pass safely"),
    ({"cback_peer_type": "other", "cback_collect_dir": "/c"}, "cback_peer_type", "must be local or remote, not 'other'"),
    ({"cback_peer_type": "Remote", "cback_collect_dir": "/c"}, "cback_peer_type", "not 'Remote'"),
    ({"cback_ignore_failure_mode": "sometimes", "cback_collect_dir": "/c"}, "cback_ignore_failure_mode", "not 'sometimes'"),
    ({"cback_ignore_failure_mode": "Daily", "cback_collect_dir": "/c"}, "cback_ignore_failure_mode", "none, all, daily, weekly"),
    ({"cback_managed_actions": "Collect", "cback_collect_dir": "/c"}, "cback_managed_actions", "'Collect' is not a bare action name"),
    ({"cback_managed_actions": ["collect", "rm -rf"], "cback_collect_dir": "/c"}, "cback_managed_actions", "'rm -rf'"),
    ({"cback_managed_actions": "collect;purge", "cback_collect_dir": "/c"}, "cback_managed_actions", "'collect;purge'"),
    ({"cback_managed_actions": "-x", "cback_collect_dir": "/c"}, "cback_managed_actions", "'-x'"),
    ({"cback_managed_actions": 5, "cback_collect_dir": "/c"}, "cback_managed_actions", "must be a list or a comma-separated string"),
    ({"cback_managed_actions": {"collect": True}, "cback_collect_dir": "/c"}, "cback_managed_actions", "must be a list"),
    ({"cback_managed": "maybe", "cback_collect_dir": "/c"}, "cback_managed", "'maybe' is not a boolean"),
    ({"cback_managed": 2, "cback_collect_dir": "/c"}, "cback_managed", "is not a boolean"),
    ({"cback_remote_user": "bad user", "cback_collect_dir": "/c"}, "cback_remote_user", "'bad user' is not a valid user name"),
    ({"cback_rcp_command": '""', "cback_collect_dir": "/c"}, "cback_rcp_command", "is not a command"),
    ({"cback_rsh_command": "   ", "cback_collect_dir": "/c"}, "cback_rsh_command", "is not a command"),
    ({"cback_cback_command": '""', "cback_collect_dir": "/c"}, "cback_cback_command", "is not a command"),
]


@pytest.mark.parametrize("variables, option, reason", INVALID)
def test_invalid_settings_name_the_variable(variables, option, reason):
    peer = one(variables)
    assert peer["error"].startswith("invalid settings: %s: " % option), peer["error"]
    assert reason in peer["error"], peer["error"]
    # what identifies the peer in a summary is always there
    assert peer["host"] == "web1"
    assert peer["name"] == variables.get("cback_peer_name") or peer["name"] == "web1"


def test_invalid_run_wide_command_marks_every_peer():
    peers = resolve({"a": {"cback_collect_dir": "/c"}, "b": {"cback_collect_dir": "/c"}}, dict(SETTINGS, rcp_command='""'))
    for peer in peers.values():
        assert peer["error"].startswith("invalid settings: cback_rcp_command: "), peer


def test_invalid_peer_leaves_the_others_alone():
    peers = resolve({"good": {"cback_collect_dir": "/c"}, "bad": {"cback_collect_dir": "rel"}, "also": {"cback_collect_dir": "/d"}})
    assert peers["good"]["error"] is None and peers["also"]["error"] is None
    assert peers["bad"]["error"] is not None


def test_managed_peer_with_invalid_settings_is_still_known_as_managed():
    peer = one({"cback_managed": "true", "cback_managed_actions": "collect", "cback_collect_dir": "rel"})
    assert peer["error"].startswith("invalid settings: cback_collect_dir: ")
    assert peer["managed"] is True
    assert peer["managed_actions"] == ["collect"]


def test_duplicate_peer_names_mark_both():
    peers = resolve({
        "web1": {"cback_collect_dir": "/c"},
        "web1-alias": {"cback_collect_dir": "/c", "cback_peer_name": "web1"},
        "db1": {"cback_collect_dir": "/c"},
    })
    assert peers["web1"]["error"] == "invalid settings: peer name 'web1' is also used by web1-alias."
    assert peers["web1-alias"]["error"] == "invalid settings: peer name 'web1' is also used by web1."
    assert peers["db1"]["error"] is None


def test_duplicate_peer_names_three_ways():
    peers = resolve(dict((host, {"cback_collect_dir": "/c", "cback_peer_name": "shared"}) for host in ("a", "b", "c")))
    assert peers["a"]["error"] == "invalid settings: peer name 'shared' is also used by b, c."
    assert peers["b"]["error"] == "invalid settings: peer name 'shared' is also used by a, c."
    assert peers["c"]["error"] == "invalid settings: peer name 'shared' is also used by a, b."


def test_duplicate_peer_name_keeps_an_earlier_error():
    peers = resolve({
        "a": {"cback_collect_dir": "relative", "cback_peer_name": "shared"},
        "b": {"cback_collect_dir": "/c", "cback_peer_name": "shared"},
    })
    assert peers["a"]["error"].startswith("invalid settings: cback_collect_dir: ")
    assert peers["b"]["error"] == "invalid settings: peer name 'shared' is also used by a."


def test_duplicate_names_local_and_remote():
    peers = resolve({
        "master": {"cback_peer_type": "local", "cback_collect_dir": "/c", "cback_peer_name": "web1"},
        "web1": {"cback_collect_dir": "/c"},
    })
    assert "also used by web1" in peers["master"]["error"]
    assert "also used by master" in peers["web1"]["error"]


@pytest.mark.parametrize("value", ["Collect", "collect;purge", 5, ["ok", "no way"], {"a": 1}])
def test_invalid_run_wide_managed_actions_raises(value):
    with pytest.raises(AnsibleFilterError) as info:
        cback.cback_peers(["web1"], {"web1": {"cback_collect_dir": "/c"}}, dict(SETTINGS, managed_actions=value))
    assert str(info.value).startswith("Run-wide cback_managed_actions: "), str(info.value)


# ---------------------------------------------------------------------------
# cback_run_settings
# ---------------------------------------------------------------------------


def test_run_settings_master_value_wins():
    current = dict(staging_dir="/default", backup_user="backup", full=True, rcp_command="")
    master = dict(cback_staging_dir="/opt/backup/stage", cback_full=False, cback_rcp_command=None, other="x")
    assert cback.cback_run_settings(current, master) == dict(
        staging_dir="/opt/backup/stage", backup_user="backup", full=False, rcp_command=None,
    )


def test_run_settings_fall_back_to_current():
    current = dict(staging_dir="/stage", starting_day="monday")
    assert cback.cback_run_settings(current, {}) == current
    # only the keys of current: the master's other cback_ vars are not taken
    assert cback.cback_run_settings(current, {"cback_staging_dir": "/m", "cback_unrelated": 1}) == dict(staging_dir="/m", starting_day="monday")


def test_run_settings_without_current():
    assert cback.cback_run_settings(None, {"cback_staging_dir": "/m"}) == {}
    assert cback.cback_run_settings({}, {"cback_staging_dir": "/m"}) == {}


# ---------------------------------------------------------------------------
# cback_stage_summary
# ---------------------------------------------------------------------------


def peer_entry(host, name=None, type="local", error=None, mode=None, managed=False, actions=()):
    return dict(
        host=host, name=name or host, type=type, error=error, ignore_failure_mode=mode, managed=managed, managed_actions=list(actions),
    )


def staged_outcome(files=("a", "b"), size=3000, seconds=1.25, unchanged=()):
    return dict(
        changed=bool(files), ready=True, count=len(files), files=list(files), bytes=size, unchanged=list(unchanged),
        seconds=seconds, stage_indicator_written=True, target_dir="/stage/x",
    )


def not_ready_outcome(seconds=0.25):
    return dict(changed=False, ready=False, count=0, files=[], bytes=0, unchanged=[], seconds=seconds, stage_indicator_written=False)


def failed_outcome(msg="Peer x: Error (1) copying files from remote host. scp: nope", files=("a",), size=10, seconds=0.5, rc=1):
    return dict(
        failed=True, changed=bool(files), msg=msg, ready=True, count=len(files), files=list(files), bytes=size, unchanged=[],
        seconds=seconds, rc=rc, stage_indicator_written=False,
    )


def run_vars(*entries):
    """hostvars from ``(peer entry, outcome or MISSING)`` pairs."""
    hostvars = {}
    for peer, outcome in entries:
        values = {"__cback_peer": peer}
        if outcome is not MISSING:
            values["__cback_outcome"] = outcome
        hostvars[peer["host"]] = values
    return hostvars


MISSING = object()


def stage_summary(*entries, **kwargs):
    hostvars = run_vars(*entries)
    return cback.cback_stage_summary(list(hostvars), hostvars, **kwargs)


def row_of(summary, name):
    rows = [row for row in summary["peers"] if row["name"] == name]
    assert len(rows) == 1, summary
    return rows[0]


def test_stage_summary_staged():
    summary = stage_summary((peer_entry("p1"), staged_outcome(files=("a", "b", "c"), size=4096, seconds=1.5)))
    assert summary["peers"] == [
        dict(name="p1", host="p1", type="local", status="staged", files=3, bytes=4096, seconds=1.5, message=""),
    ]
    assert summary["failed"] == []
    assert summary["failure_message"] == ""


def test_stage_summary_staged_with_unchanged_files():
    row = stage_summary((peer_entry("p1"), staged_outcome(files=(), size=0, unchanged=("a", "b"))))["peers"][0]
    assert (row["status"], row["files"], row["bytes"], row["message"]) == ("staged", 0, 0, "2 already staged")


def test_stage_summary_keys():
    summary = stage_summary(
        (peer_entry("p1"), staged_outcome()), full=True, start_of_week=False, date="2026/11/26", daily_dir="/s/2026/11/26",
        check_mode=True,
    )
    assert set(summary) == {"date", "daily_dir", "full", "start_of_week", "check_mode", "peers", "failed", "failure_message"}
    assert (summary["date"], summary["daily_dir"]) == ("2026/11/26", "/s/2026/11/26")
    assert (summary["full"], summary["start_of_week"], summary["check_mode"]) == (True, False, True)


def test_stage_summary_boolean_forms():
    summary = stage_summary((peer_entry("p1"), staged_outcome()), full="yes", start_of_week="False", check_mode="true")
    assert (summary["full"], summary["start_of_week"], summary["check_mode"]) == (True, False, True)
    summary = stage_summary((peer_entry("p1"), staged_outcome()))
    assert (summary["full"], summary["start_of_week"], summary["check_mode"]) == (False, False, False)
    assert (summary["date"], summary["daily_dir"]) == (None, None)


def test_stage_summary_invalid_peer():
    error = "invalid settings: cback_collect_dir: 'rel' must be an absolute path."
    for outcome in (MISSING, None, dict(skipped=True, changed=False)):
        summary = stage_summary((peer_entry("bad", error=error), outcome))
        assert summary["peers"] == [
            dict(name="bad", host="bad", type="local", status="failed", files=0, bytes=0, seconds=0.0, message=error),
        ]
        assert summary["failed"] == ["bad"]


def test_stage_summary_invalid_peer_wins_over_an_outcome():
    row = stage_summary((peer_entry("bad", error="invalid settings: x"), staged_outcome()))["peers"][0]
    assert (row["status"], row["message"]) == ("failed", "invalid settings: x")


@pytest.mark.parametrize(
    "outcome",
    [MISSING, None, dict(skipped=True, changed=False, skip_reason="Conditional result was False"), dict(skipped=True)],
)
def test_stage_summary_not_attempted(outcome):
    summary = stage_summary((peer_entry("p1"), outcome))
    assert summary["peers"] == [
        dict(name="p1", host="p1", type="local", status="failed", files=0, bytes=0, seconds=0.0, message="was not attempted."),
    ]
    assert summary["failed"] == ["p1"]


def test_stage_summary_failed_outcome():
    outcome = failed_outcome(msg="  Peer r1: Error (1) copying files from remote host. scp: x: not a regular file\n", files=("a", "b"), size=20, seconds=0.75)
    row = stage_summary((peer_entry("r1", type="remote"), outcome))["peers"][0]
    assert row == dict(
        name="r1", host="r1", type="remote", status="failed", files=2, bytes=20, seconds=0.75,
        message="Error (1) copying files from remote host. scp: x: not a regular file",
    )


def test_stage_summary_failed_outcome_without_message():
    row = stage_summary((peer_entry("r1"), dict(failed=True, rc=2)))["peers"][0]
    assert (row["status"], row["message"]) == ("failed", "failed without a message (rc 2).")
    assert (row["files"], row["bytes"], row["seconds"]) == (0, 0, 0.0)
    row = stage_summary((peer_entry("r1"), dict(failed=True, msg="")))["peers"][0]
    assert row["message"] == "failed without a message (rc None)."


def test_stage_summary_failed_outcome_even_when_not_ready():
    row = stage_summary((peer_entry("r1", mode="all"), dict(failed=True, ready=False, msg="boom")))["peers"][0]
    assert (row["status"], row["message"]) == ("failed", "boom")


# The ignore-failure table of docs/cback3-behaviour.md: is a not-ready peer ignored on a
# normal day, on a full run, at the start of the week?
IGNORE_TABLE = [
    (None, False, False, False),
    ("none", False, False, False),
    ("all", True, True, True),
    ("daily", True, False, False),
    ("weekly", False, True, True),
]

# (full, start_of_week, column of IGNORE_TABLE that applies)
DAYS = [(False, False, 1), (True, False, 2), (False, True, 3), (True, True, 2)]


@pytest.mark.parametrize("mode, normal, full_run, start", IGNORE_TABLE)
@pytest.mark.parametrize("full, start_of_week, column", DAYS)
def test_stage_summary_not_ready_or_ignored(mode, normal, full_run, start, full, start_of_week, column):
    ignored = (None, normal, full_run, start)[column]
    if full and start_of_week:
        assert full_run == start
    summary = stage_summary((peer_entry("p1", mode=mode), not_ready_outcome(seconds=0.5)), full=full, start_of_week=start_of_week)
    row = summary["peers"][0]
    assert (row["files"], row["bytes"], row["seconds"]) == (0, 0, 0.5)
    if ignored:
        assert row["status"] == "ignored"
        assert row["message"] == "no collect indicator (peer not ready or unreachable), ignored by ignore-failure mode %s." % mode
        assert summary["failed"] == []
        assert summary["failure_message"] == ""
    else:
        assert row["status"] == "not ready"
        assert row["message"] == "no collect indicator (peer not ready or unreachable)."
        assert summary["failed"] == ["p1"]
        assert summary["failure_message"] == (
            "Stage run failed for 1 of 1 peers: p1: not ready, no collect indicator (peer not ready or unreachable)."
        )


def test_stage_summary_ready_without_key_is_staged():
    outcome = staged_outcome()
    del outcome["ready"]
    assert stage_summary((peer_entry("p1"), outcome))["peers"][0]["status"] == "staged"


def test_stage_summary_failed_list_and_message():
    summary = stage_summary(
        (peer_entry("ok"), staged_outcome()),
        (peer_entry("bad", name="bad-name", error="invalid settings: cback_collect_dir: is required for every peer."), MISSING),
        (peer_entry("nr"), not_ready_outcome()),
        (peer_entry("ign", mode="all"), not_ready_outcome()),
        (peer_entry("boom", type="remote"), failed_outcome(msg="Peer boom: Error (255) copying files from remote host.")),
        (peer_entry("skip"), dict(skipped=True)),
    )
    assert [row["name"] for row in summary["peers"]] == ["ok", "bad-name", "nr", "ign", "boom", "skip"]
    assert [row["status"] for row in summary["peers"]] == ["staged", "failed", "not ready", "ignored", "failed", "failed"]
    assert summary["failed"] == ["bad-name", "nr", "boom", "skip"]
    assert summary["failure_message"] == (
        "Stage run failed for 4 of 6 peers: "
        "bad-name: failed, invalid settings: cback_collect_dir: is required for every peer; "
        "nr: not ready, no collect indicator (peer not ready or unreachable); "
        "boom: failed, Error (255) copying files from remote host; "
        "skip: failed, was not attempted."
    )


def test_stage_summary_hosts_without_peer_settings_are_left_out():
    hostvars = run_vars((peer_entry("p1"), staged_outcome()))
    hostvars["backup-master"] = {"ansible_facts": {}}
    summary = cback.cback_stage_summary(["backup-master", "p1"], hostvars)
    assert [row["host"] for row in summary["peers"]] == ["p1"]


def test_stage_summary_custom_keys():
    hostvars = {"p1": {"mine": peer_entry("p1"), "result": not_ready_outcome()}}
    summary = cback.cback_stage_summary(["p1"], hostvars, peer_key="mine", outcome_key="result")
    assert summary["peers"][0]["status"] == "not ready"


def test_stage_summary_no_hosts():
    summary = cback.cback_stage_summary(None, {})
    assert (summary["peers"], summary["failed"], summary["failure_message"]) == ([], [], "")


# ---------------------------------------------------------------------------
# cback_managed_summary
# ---------------------------------------------------------------------------


def managed_summary(*entries, **kwargs):
    hostvars = run_vars(*entries)
    kwargs.setdefault("action", "collect")
    return cback.cback_managed_summary(list(hostvars), hostvars, **kwargs)


def test_managed_summary_only_managed_peers_with_the_action():
    summary = managed_summary(
        (peer_entry("m1", type="remote", managed=True, actions=["collect", "purge"]), dict(changed=True, rc=0, seconds=2.5, stdout="", stderr="")),
        (peer_entry("m2", managed=True, actions=["purge"]), dict(skipped=True)),
        (peer_entry("m3", managed=False, actions=["collect"]), dict(skipped=True)),
        (peer_entry("m4", managed=True, actions=[]), dict(skipped=True)),
    )
    assert summary == dict(
        action="collect", check_mode=False,
        peers=[dict(name="m1", host="m1", type="remote", status="ok", rc=0, seconds=2.5, message="")],
        failed=[], failure_message="",
    )


def test_managed_summary_failed_with_rc():
    summary = managed_summary(
        (
            peer_entry("db1", type="remote", managed=True, actions=["collect"]),
            dict(failed=True, changed=True, rc=3, seconds=1.0, msg="Peer db1: action [collect] failed with rc 3: cback3: boom"),
        ),
    )
    assert summary["peers"] == [
        dict(name="db1", host="db1", type="remote", status="failed", rc=3, seconds=1.0,
             message="action [collect] failed with rc 3: cback3: boom"),
    ]
    assert summary["failed"] == ["db1"]
    assert summary["failure_message"] == (
        "Managed action collect failed for 1 of 1 peers: db1: failed, action [collect] failed with rc 3: cback3: boom."
    )


def test_managed_summary_not_attempted():
    for outcome in (MISSING, None, dict(skipped=True)):
        summary = managed_summary((peer_entry("m1", managed=True, actions=["collect"]), outcome))
        assert summary["peers"] == [dict(name="m1", host="m1", type="local", status="failed", rc=None, seconds=0.0, message="was not attempted.")]
        assert summary["failed"] == ["m1"]


def test_managed_summary_invalid_peers():
    summary = managed_summary(
        (peer_entry("bad-managed", managed=True, actions=["purge"], error="invalid settings: cback_collect_dir: x"), MISSING),
        (peer_entry("bad-other", managed=False, error="invalid settings: cback_collect_dir: y"), MISSING),
    )
    # a managed peer with bad settings is reported (whatever its actions); another one is not part of a managed run
    assert summary["peers"] == [
        dict(name="bad-managed", host="bad-managed", type="local", status="failed", rc=None, seconds=0.0,
             message="invalid settings: cback_collect_dir: x"),
    ]
    assert summary["failed"] == ["bad-managed"]


def test_managed_summary_check_mode():
    summary = managed_summary((peer_entry("m1", managed=True, actions=["collect"]), dict(changed=True, cmd=["x"])), check_mode="yes")
    assert summary["check_mode"] is True
    assert summary["peers"][0]["status"] == "ok"
    assert summary["peers"][0]["rc"] is None


def test_managed_summary_action():
    summary = managed_summary(
        (peer_entry("m1", managed=True, actions=["collect", "purge"]), dict(rc=0, seconds=1)),
        action="purge",
    )
    assert summary["action"] == "purge"
    assert summary["peers"][0]["seconds"] == 1.0


# ---------------------------------------------------------------------------
# cback_peer_failure
# ---------------------------------------------------------------------------


def test_peer_failure_messages():
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


def test_peer_failure_managed():
    summary = managed_summary(
        (peer_entry("m1", managed=True, actions=["collect"]), dict(rc=0)),
        (peer_entry("m2", managed=True, actions=["collect"]), dict(failed=True, rc=1, msg="failed with rc 1")),
    )
    assert cback.cback_peer_failure(summary, "m1") == ""
    assert cback.cback_peer_failure(summary, "m2") == "Peer m2: failed, failed with rc 1"


# ---------------------------------------------------------------------------
# cback_summary_table
# ---------------------------------------------------------------------------


def test_stage_table():
    summary = stage_summary(
        (peer_entry("local1"), staged_outcome(files=("a", "b", "c"), size=5000, seconds=1.234)),
        (peer_entry("remote-peer-2", type="remote"), failed_outcome(msg="Peer remote-peer-2: copy failed.", files=("a",), size=10, seconds=0.5)),
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


def test_stage_table_counts_verified_files():
    verified = dict(staged_outcome(files=("a", "b"), size=2, seconds=0), verified=2)
    summary = stage_summary((peer_entry("p1"), verified), (peer_entry("p2"), staged_outcome(files=("a",), size=1, seconds=0)))
    assert summary["peers"][0]["verified"] == 2 and "verified" not in summary["peers"][1]
    assert summary["peers"][0]["message"] == "2 verified (sha256)"
    assert cback.cback_summary_table(summary)[-1] == "2 peers, 0 failed; 3 files, 3 B staged; 2 files verified (sha256)"


def test_stage_table_check_mode_line_first():
    summary = stage_summary((peer_entry("p1"), staged_outcome(files=("a",), size=1, seconds=0)), check_mode=True)
    assert cback.cback_summary_table(summary) == [
        "check mode: what a run would do; nothing was written or run",
        "peer  type   status       files  bytes  seconds",
        "p1    local  would stage      1    1 B     0.00",
        "1 peer, 0 failed; 1 file, 1 B would be staged",
    ]


def test_stage_table_invalid_and_not_attempted_peers():
    summary = stage_summary(
        (peer_entry("bad", error="invalid settings: cback_peer_name: nope."), MISSING),
        (peer_entry("skipped"), dict(skipped=True)),
    )
    assert cback.cback_summary_table(summary) == [
        "peer     type   status  files  bytes  seconds",
        "bad      local  failed      0    0 B     0.00",
        "skipped  local  failed      0    0 B     0.00",
        "2 peers, 2 failed; 0 files, 0 B staged",
        "bad: invalid settings: cback_peer_name: nope.",
        "skipped: was not attempted.",
    ]


def test_empty_stage_table():
    assert cback.cback_summary_table(cback.cback_stage_summary([], {})) == [
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
def test_stage_table_sizes(size, shown):
    summary = stage_summary((peer_entry("p"), staged_outcome(files=("a",), size=size)))
    lines = cback.cback_summary_table(summary)
    assert re.split(r"\s{2,}", lines[1]) == ["p", "local", "staged", "1", shown, "1.25"], lines
    assert lines[2] == "1 peer, 0 failed; 1 file, %s staged" % shown


def test_stage_table_totals_add_up():
    summary = stage_summary(
        (peer_entry("a"), staged_outcome(files=("1", "2"), size=1024 * 1024)),
        (peer_entry("b"), staged_outcome(files=("1",), size=1024 * 1024)),
        (peer_entry("c"), failed_outcome(files=("1",), size=1024 * 1024)),
    )
    assert cback.cback_summary_table(summary)[4] == "3 peers, 1 failed; 4 files, 3.0 MiB staged"


def test_managed_table():
    summary = managed_summary(
        (peer_entry("db1", type="remote", managed=True, actions=["collect"]), dict(rc=0, seconds=12.5)),
        (peer_entry("web-server-2", type="remote", managed=True, actions=["collect"]),
         dict(failed=True, rc=3, seconds=0.25, msg="Peer web-server-2: action [collect] failed with rc 3: no config")),
        (peer_entry("bad", managed=True, error="invalid settings: cback_peer_name: x."), MISSING),
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


def test_managed_table_check_mode():
    summary = managed_summary((peer_entry("m1", managed=True, actions=["collect"]), dict(changed=True)), check_mode=True)
    assert cback.cback_summary_table(summary) == [
        "check mode: what a run would do; nothing was written or run",
        "peer  type   status  rc  seconds",
        "m1    local  ok       -     0.00",
        "1 peer ran collect, 0 failed",
    ]


# ---------------------------------------------------------------------------
# cback_run_peers: what the run modules take
# ---------------------------------------------------------------------------


def resolved(hostvars, hosts):
    return cback.cback_peers(hosts, hostvars, SETTINGS)


def test_run_peers_for_a_stage_run_keep_only_the_stage_settings():
    peers = resolved({
        "web1": {"cback_collect_dir": "/srv/collect", "cback_rcp_command": "/usr/bin/scp -B", "cback_managed": True},
        "self": {"cback_peer_type": "local", "cback_collect_dir": "/opt/collect", "cback_ignore_failure_mode": "all"},
    }, hosts=["web1", "self"])
    assert cback.cback_run_peers(peers, "stage") == [
        dict(name="web1", host="web1", type="remote", collect_dir="/srv/collect", remote_user="backup", rcp_command="/usr/bin/scp -B"),
        dict(name="self", host="self", type="local", collect_dir="/opt/collect", remote_user="backup", ignore_failure_mode="all"),
    ]


def test_run_peers_pass_an_invalid_peer_with_its_error_only():
    peers = resolved({"bad": {"cback_peer_type": "floppy", "cback_collect_dir": "/c"}}, hosts=["bad"])
    entries = cback.cback_run_peers(peers, "stage")
    assert entries == [dict(name="bad", host="bad", error=peers[0]["error"])]
    assert entries[0]["error"].startswith("invalid settings: cback_peer_type")


def test_run_peers_for_a_managed_run_are_the_peers_that_run_the_action():
    peers = resolved({
        "db1": {"cback_collect_dir": "/c", "cback_managed": True, "cback_managed_actions": "collect,purge",
                "cback_cback_command": "/usr/bin/cback3 --config /etc/db1.conf"},
        "web1": {"cback_collect_dir": "/c", "cback_managed": True, "cback_managed_actions": "purge"},
        "plain": {"cback_collect_dir": "/c"},
        "broken": {"cback_collect_dir": "relative", "cback_managed": True},
        "unmanaged-broken": {"cback_collect_dir": "relative", "cback_managed": False},
    }, hosts=["db1", "web1", "plain", "broken", "unmanaged-broken"])
    entries = cback.cback_run_peers(peers, "managed", "collect")
    assert [entry["host"] for entry in entries] == ["db1", "broken"]
    assert entries[0] == dict(name="db1", host="db1", type="remote", remote_user="backup",
                              cback_command="/usr/bin/cback3 --config /etc/db1.conf")
    assert set(entries[1]) == {"name", "host", "error"}


def test_run_peers_needs_a_known_run():
    with pytest.raises(AnsibleFilterError, match="stage or managed"):
        cback.cback_run_peers([], "backup")


# ---------------------------------------------------------------------------
# Run-wide settings from the master only, each checked; warnings about variables
# ---------------------------------------------------------------------------

ROLE_DEFAULTS = {"cback_working_dir": "", "cback_starting_day": "monday", "cback_stage_parallel": 8, "cback_full": False}


def test_run_settings_take_the_masters_value_else_the_play_value_never_a_peers():
    current = {"staging_dir": "/from/peer", "working_dir": "/from/play", "starting_day": "monday"}
    peer_vars = {"cback_staging_dir": "/from/peer"}
    settings = cback.cback_run_settings(current, {}, dict(ROLE_DEFAULTS, cback_staging_dir="/x"), "master", peer_vars)
    assert settings == {"staging_dir": "/x", "working_dir": "/from/play", "starting_day": "monday"}
    settings = cback.cback_run_settings(current, {"cback_staging_dir": "/srv/stage"}, ROLE_DEFAULTS, "master", peer_vars)
    assert settings["staging_dir"] == "/srv/stage"


@pytest.mark.parametrize("settings, message", [
    ({"staging_dir": ""}, "cback_staging_dir is not set (the staging directory, <stage><staging_dir> of cback3.conf); set it in "
                          "the master's variables (host_vars/bk, the group_vars of its group, or group_vars/all), or with -e."),
    ({"staging_dir": "stage"}, "cback_staging_dir must be an absolute path, not 'stage'; set it in the master's variables"),
    ({"working_dir": "tmp"}, "cback_working_dir must be an absolute path or empty, not 'tmp';"),
    ({"starting_day": "Monday"}, "cback_starting_day must be a lowercase English weekday (monday, tuesday, wednesday, thursday, "
                                 "friday, saturday, sunday), not 'Monday';"),
    ({"stage_parallel": 0}, "cback_stage_parallel must be a whole number of at least 1, not 0;"),
    ({"managed_parallel": "many"}, "cback_managed_parallel must be a whole number of at least 1, not 'many';"),
    ({"peer_timeout": -5}, "cback_peer_timeout must be a whole number of at least 1, not -5;"),
    ({"connect_timeout": "-1"}, "cback_connect_timeout must be a whole number of seconds, 0 for none, not '-1';"),
    ({"verify": "perhaps"}, "cback_verify must be true or false, not 'perhaps';"),
    ({"backup_user": "bad user"}, "cback_backup_user is not a valid user or group name: 'bad user';"),
])
def test_each_run_setting_has_its_own_message(settings, message):
    with pytest.raises(AnsibleFilterError) as info:
        cback.cback_run_settings(settings, settings and {}, {}, "bk")
    assert str(info.value).startswith(message), str(info.value)


def test_run_settings_without_defaults_are_not_checked():
    assert cback.cback_run_settings({"staging_dir": ""}, {}) == {"staging_dir": ""}


def test_variable_warnings(tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr("ansible.utils.display.Display.warning", lambda self, message, *args, **kwargs: shown.append(message))
    role_path = os.path.join(os.path.dirname(os.path.dirname(cback.__file__)), "..", "roles", "stage")
    hostvars = {
        "bk": {"cback_staging_dir": "/srv/stage", "cback_stage_paralel": 4, "cback_full": False},
        "web1": {"cback_collect_dir": "/c", "cback_ignore_failures": "all", "cback_full": False, "cback_rcp_command": "scp"},
        "web2": {"cback_collect_dir": "/c", "cback_staging_dir": "/elsewhere", "cback_peer_type": "local"},
    }
    warnings = cback.cback_variable_warnings(["web1", "web2"], hostvars, "bk", role_path,
                                             ["staging_dir", "full", "rcp_command"], ["rcp_command"])
    assert warnings == [
        "Unknown variable cback_ignore_failures (set for web1) is ignored; did you mean cback_ignore_failure_mode?",
        "Unknown variable cback_stage_paralel (set for bk) is ignored; did you mean cback_stage_parallel?",
        "cback_staging_dir is set for the peer web2, but run-wide settings are read from the master (bk) only: ignored there; "
        "set it in the master's variables",
    ]
    assert shown == warnings


@pytest.mark.parametrize("action, message", [
    ("", "cback_action is not set: the action to run on the managed peers, such as collect or purge; pass it with "
         "-e cback_action=collect."),
    ("Collect", "cback_action must be a bare action name such as collect or purge (lowercase letters, digits, _ and -, "
                "starting with a letter or digit); it is 'Collect'."),
    ("-oProxyCommand=x", "cback_action must be a bare action name"),
])
def test_the_managed_action_is_checked_with_the_run_settings(action, message):
    with pytest.raises(AnsibleFilterError) as info:
        cback.cback_run_settings({"action": action}, {}, {}, "bk")
    assert str(info.value).startswith(message)
    assert cback.cback_run_settings({"action": "purge"}, {}, {}, "bk") == {"action": "purge"}

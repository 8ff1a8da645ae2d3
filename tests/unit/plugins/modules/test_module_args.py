# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Option validation of the three modules, through ``_tasks`` on plain parameter dicts.

The parameters are built from each module's real argument spec (captured from the
module's ``main()``), so the defaults are exactly what Ansible would pass.  Every bad
value must fail with a ``TaskFailure`` whose message names the peer and the option,
before any command runs and without changing anything on disk.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import stat

import pytest

from ansible_collections.cedarbackup.peer.plugins.module_utils import _argspec, _tasks
from ansible_collections.cedarbackup.peer.plugins.module_utils import peer as peer_module
from ansible_collections.cedarbackup.peer.tests.support.module_params import MODULES, SPECS, module_params, snapshot

TASKS = {
    "cback_collect_indicator": _tasks.collect_indicator,
    "cback_stage": _tasks.stage,
    "cback_managed_action": _tasks.managed_action,
}
NO_SUCH_USER = "cbt_no_such_user_x"
NO_SUCH_GROUP = "cbt_no_such_group_x"


# Options every module of the action group takes, so that ``module_defaults`` for
# ``group/cedarbackup.peer.cback`` can set them once for all three modules.
CONNECTION_OPTIONS = {"name", "type", "remote_user", "local_user", "rcp_command", "rsh_command", "working_dir", "timeout"}
MODULE_OPTIONS = {
    "cback_collect_indicator": {"collect_dir", "collect_indicator"},
    "cback_stage": {"collect_dir", "target_dir", "owner", "group", "mode", "write_stage_indicator", "stage_indicator"},
    "cback_managed_action": {"action", "full", "cback_command"},
}


def test_specs_share_the_connection_options():
    for name in MODULES:
        spec = SPECS[name]["argument_spec"]
        assert CONNECTION_OPTIONS | MODULE_OPTIONS[name] <= set(spec), (name, sorted(spec))
        for key, value in _argspec.PEER_OPTIONS.items():
            assert spec[key] == value, (name, key)
        assert SPECS[name]["kwargs"].get("supports_check_mode") is True, name
        assert spec["type"]["choices"] == ["local", "remote"] and spec["type"]["default"] == "remote"
        assert spec["timeout"]["default"] == 0


def test_module_specific_defaults():
    ci = SPECS["cback_collect_indicator"]["argument_spec"]
    assert ci["collect_indicator"]["default"] == "cback.collect"
    assert ci["collect_dir"]["required"] is True
    st = SPECS["cback_stage"]["argument_spec"]
    assert st["write_stage_indicator"]["default"] is True
    assert st["stage_indicator"]["default"] == "cback.stage"
    assert st["target_dir"]["required"] is True
    assert st["collect_dir"]["required"] is True
    for key in ("owner", "group", "mode"):
        assert st[key].get("default") is None
    ma = SPECS["cback_managed_action"]["argument_spec"]
    assert ma["action"]["required"] is True
    assert ma["full"]["default"] is False
    assert ma["cback_command"].get("default") is None
    assert ("type", "remote", ("name",)) in [tuple(item) for item in SPECS["cback_managed_action"]["kwargs"]["required_if"]]
    assert module_params("cback_stage")["type"] == "remote"
    assert module_params("cback_stage")["write_stage_indicator"] is True


# ---------------------------------------------------------------------------
# Fixtures: a valid peer layout, a tripwire on every command runner
# ---------------------------------------------------------------------------


@pytest.fixture
def dirs(tmp_path):
    collect = tmp_path / "collect"
    target = tmp_path / "target"
    work = tmp_path / "work"
    for path in (collect, target, work):
        path.mkdir()
    (collect / "cback.collect").write_bytes(b"")
    (collect / "data.tar").write_bytes(b"x" * 100)
    os.chmod(str(collect / "data.tar"), 0o644)
    return dict(root=tmp_path, collect=str(collect), target=str(target), work=str(work))


@pytest.fixture
def ran(fake_runner):
    """Every command a task tries to run is recorded (and fails), so a test can assert none ran."""
    return fake_runner(_tasks, peer_module, forbid="a command ran: %r").calls


def valid_params(module_name, peer_type, dirs):
    """Valid parameters for one module and peer type; a case then spoils one option."""
    if module_name == "cback_managed_action":
        extra = dict(action="collect")
        if peer_type == "remote":
            extra.update(name="peer.example.org", remote_user="root")
        return module_params(module_name, type=peer_type, **extra)
    extra = dict(collect_dir=dirs["collect"])
    if peer_type == "remote":
        extra.update(name="peer.example.org", remote_user="root", working_dir=dirs["work"])
    else:
        extra.update(name="self")
    if module_name == "cback_stage":
        extra.update(target_dir=dirs["target"])
    return module_params(module_name, type=peer_type, **extra)


def expect_option_failure(module_name, params, option, check_mode):
    with pytest.raises(_tasks.TaskFailure) as info:
        TASKS[module_name](params, check_mode)
    label = params.get("name") or "localhost"
    msg = info.value.msg
    assert msg.startswith("Peer %s: %s: " % (label, option)), msg
    return info.value


# ---------------------------------------------------------------------------
# The table of bad values: (module, peer type, option, bad value)
# ---------------------------------------------------------------------------

ALL = MODULES
COLLECTING = ("cback_collect_indicator", "cback_stage")


def _cases():
    cases = []

    def add(modules, types, option, values, param=None):
        for module_name in modules:
            if (param or option) not in SPECS[module_name]["argument_spec"]:
                continue  # test_specs_share_the_connection_options reports a missing option
            for peer_type in types:
                for value in values:
                    cases.append((module_name, peer_type, option, param or option, value))

    # peer names: a remote one must be a host name, any one a single directory name
    add(ALL, ("remote",), "name", ["-x", "a/b", "..", ".", "host;rm", "", None, "a b", "host$(id)", "ho`st`", "host\n"])
    add(ALL, ("local",), "name", ["-x", "a/b", "..", "."])
    add(ALL, ("remote",), "remote_user", ["bad user", "a;b", "-root", "root@host", "", "$(id)", "root\n"])
    add(ALL, ("remote", "local"), "local_user", ["a;b", "bad user", NO_SUCH_USER])
    add(ALL, ("remote", "local"), "timeout", [-1, -3600])
    # paths
    add(COLLECTING, ("remote", "local"), "collect_dir", ["relative/collect", "collect", ""])
    add(COLLECTING, ("remote",), "collect_dir",
        ["/srv/$HOME", "/srv/a;b", "/srv/`id`", "/srv/$(id)", "/srv/a|b", "/srv/a'b", "/srv/a\"b", "/srv/a\nb", "/srv/c\n"])
    add(ALL, ("remote",), "working_dir", ["work", "relative/work", ""])
    add(("cback_stage",), ("remote", "local"), "target_dir", ["stage/peer", "peer"])
    # indicator names
    add(("cback_collect_indicator",), ("remote", "local"), "collect_indicator", ["a/b", "..", ".", "-x", ""])
    add(("cback_collect_indicator",), ("remote",), "collect_indicator", ["a;b", "a$b", "`x`", "x\n"])
    add(("cback_stage",), ("remote", "local"), "stage_indicator", ["a/b", "..", ".", "-x"])
    add(("cback_stage",), ("remote",), "stage_indicator", ["a;b", "`x`", "a$b"])
    # ownership and mode
    add(("cback_stage",), ("remote", "local"), "mode", ["999", "rwx", "0o640", "u=rw", "12", "0x1a4", "", "0648", "77777", -1, 0o10000, True])
    add(("cback_stage",), ("remote", "local"), "owner", [NO_SUCH_USER])
    add(("cback_stage",), ("remote", "local"), "group", [NO_SUCH_GROUP])
    # commands
    add(ALL, ("remote",), "rcp_command", ["", "   ", '""', "-oProxyCommand=/usr/bin/touch /tmp/x"])
    add(ALL, ("remote",), "rsh_command", ["", "   ", '""', "-oProxyCommand=/usr/bin/touch /tmp/x"])
    # managed actions
    add(("cback_managed_action",), ("remote", "local"), "action", ["Collect", "-x", "a b", "a;b", "", None, "_x", "col/lect", "$(id)", "collect\n", "COLLECT"])
    add(("cback_managed_action",), ("remote", "local"), "cback_command",
        ["", "   ", '""', "-oProxyCommand=/usr/bin/touch /tmp/x", '"-oProxyCommand=touch x" cback3'])
    return cases


CASES = _cases()


def _case_id(case):
    module_name, peer_type, option, _param, value = case
    return "%s-%s-%s=%r" % (module_name.replace("cback_", ""), peer_type, option, value)


@pytest.mark.parametrize("check_mode", [False, True], ids=["run", "check"])
@pytest.mark.parametrize("case", CASES, ids=[_case_id(case) for case in CASES])
def test_bad_option_fails_naming_it_and_changes_nothing(case, check_mode, dirs, ran):
    module_name, peer_type, option, param, value = case
    params = valid_params(module_name, peer_type, dirs)
    params[param] = value
    before = snapshot(dirs["root"])
    failure = expect_option_failure(module_name, params, option, check_mode)
    assert ran == [], "a command ran before the option was rejected: %r" % ran
    assert snapshot(dirs["root"]) == before
    assert not failure.result.get("changed"), failure.result


@pytest.mark.parametrize("module_name", ALL)
@pytest.mark.parametrize("peer_type", ["remote", "local"])
def test_valid_base_parameters_are_accepted_by_validation(module_name, peer_type, dirs, ran):
    """The base of every case is itself valid: only the spoiled option can fail.

    Remote peers get as far as running a command (the tripwire), local peers succeed
    (collect indicator, stage) or run the command (managed action).
    """
    params = valid_params(module_name, peer_type, dirs)
    if module_name == "cback_stage" and peer_type == "local":
        result = _tasks.stage(params, True)
        assert result["count"] == 2 and not ran
        return
    if module_name == "cback_collect_indicator" and peer_type == "local":
        assert _tasks.collect_indicator(params, False)["ready"] is True and not ran
        return
    if module_name == "cback_collect_indicator":
        # any failure to fetch the indicator is "not ready"; the fetch was attempted
        assert _tasks.collect_indicator(params, False)["ready"] is False
    else:
        with pytest.raises(AssertionError, match="a command ran"):
            TASKS[module_name](params, False)
    assert len(ran) == 1


def test_remote_peer_without_name_names_the_name_option(dirs, ran):
    for module_name in ALL:
        params = valid_params(module_name, "remote", dirs)
        del params["name"]
        with pytest.raises(_tasks.TaskFailure) as info:
            TASKS[module_name](params, False)
        assert info.value.msg == "Peer localhost: name: a remote peer needs a name (its hostname or IP address).", module_name
    assert ran == []


@pytest.mark.parametrize("name", ["peer1", "db-1.example.org", "10.0.0.7", "::1", "fe80::1", "web_1", "host."])
def test_good_remote_names_pass_validation(name, dirs, ran):
    params = valid_params("cback_managed_action", "remote", dirs)
    params["name"] = name
    result = _tasks.managed_action(params, True)
    assert result["cmd"][-2] == "root@%s" % name
    assert ran == []


@pytest.mark.parametrize("name", [None, "", "self", "my peer", "peer;with$odd`chars", "Local_Peer"])
def test_local_peer_names_are_labels(name, dirs, ran):
    params = valid_params("cback_stage", "local", dirs)
    params["name"] = name
    result = _tasks.stage(params, True)
    assert result["count"] == 2
    assert ran == []


@pytest.mark.parametrize("user", ["root", "backup", "cback.user", "user-1", "_svc", "machine$"])
def test_good_remote_users_pass_validation(user, dirs, ran):
    params = valid_params("cback_managed_action", "remote", dirs)
    params["remote_user"] = user
    assert _tasks.managed_action(params, True)["cmd"][-2] == "%s@peer.example.org" % user
    assert ran == []


def test_local_collect_dir_may_hold_shell_characters(tmp_path, ran):
    """Only a remote collect dir is restricted; a local one is a plain filesystem path."""
    collect = tmp_path / "col $x;y `z` 'q'"
    target = tmp_path / "target"
    collect.mkdir()
    target.mkdir()
    (collect / "cback.collect").write_bytes(b"")
    params = module_params("cback_stage", type="local", collect_dir=str(collect), target_dir=str(target))
    result = _tasks.stage(params, False)
    assert result["files"] == ["cback.collect"]
    assert (collect / "cback.stage").is_file()
    assert ran == []


@pytest.mark.parametrize("mode", [0o640, "0640", "640", " 0640 "], ids=["int", "0640", "640", "padded"])
def test_accepted_mode_forms_give_0640(mode, dirs, ran):
    params = valid_params("cback_stage", "local", dirs)
    params["mode"] = mode
    result = _tasks.stage(params, False)
    assert sorted(result["files"]) == ["cback.collect", "data.tar"]
    for name in result["files"]:
        assert stat.S_IMODE(os.stat(os.path.join(dirs["target"], name)).st_mode) == 0o640, name
    assert ran == []


@pytest.mark.parametrize("mode, expected", [("0600", 0o600), ("0755", 0o755), ("2750", 0o2750), ("00644", 0o644), (0o444, 0o444), (0, 0)])
def test_parse_mode_values(mode, expected):
    assert _argspec.parse_mode(mode) == expected


def test_unknown_owner_and_group_messages_name_the_value(dirs, ran):
    params = valid_params("cback_stage", "local", dirs)
    params["owner"] = NO_SUCH_USER
    failure = expect_option_failure("cback_stage", params, "owner", False)
    assert NO_SUCH_USER in failure.msg
    params = valid_params("cback_stage", "local", dirs)
    params["group"] = NO_SUCH_GROUP
    failure = expect_option_failure("cback_stage", params, "group", False)
    assert NO_SUCH_GROUP in failure.msg
    assert ran == []


def test_unknown_local_user_message_names_the_user(dirs, ran):
    params = valid_params("cback_managed_action", "remote", dirs)
    params["local_user"] = NO_SUCH_USER
    failure = expect_option_failure("cback_managed_action", params, "local_user", False)
    assert NO_SUCH_USER in failure.msg
    assert ran == []


def test_missing_working_dir_fails_naming_it(dirs, ran):
    params = valid_params("cback_stage", "remote", dirs)
    params["working_dir"] = os.path.join(dirs["work"], "missing")
    before = snapshot(dirs["root"])
    expect_option_failure("cback_stage", params, "working_dir", False)
    assert snapshot(dirs["root"]) == before
    assert ran == []


@pytest.mark.parametrize("timeout", [0, 1, 3600])
def test_good_timeouts_pass(timeout, dirs, ran):
    params = valid_params("cback_managed_action", "local", dirs)
    params["timeout"] = timeout
    assert _tasks.managed_action(params, True)["cmd"] == ["/usr/bin/cback3", "collect"]
    assert ran == []


@pytest.mark.parametrize("action", ["collect", "stage", "store", "purge", "rebuild", "validate", "initialize", "amazons3", "my_ext-2", "0day"])
def test_good_actions_pass(action, dirs, ran):
    params = valid_params("cback_managed_action", "local", dirs)
    params["action"] = action
    assert _tasks.managed_action(params, True)["cmd"] == ["/usr/bin/cback3", action]
    assert ran == []

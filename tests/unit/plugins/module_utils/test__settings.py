# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``_settings``: the one check of a setting's value, per kind, and the table's views.

``check`` returns the typed value, ``None`` for unset, or raises ``SettingError`` with a
message that follows the setting's name (``cback_stage_parallel must be ...``).  ``None`` is
unset for every kind; ``""`` only for the kinds whose empty value means the default (or none);
a blank string is never unset.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.cedarbackup.peer.plugins.module_utils import _settings as settings
from ansible_collections.cedarbackup.peer.plugins.module_utils._settings import SettingError


def check(key, value, **kwargs):
    return settings.check(settings.BY_KEY[key], value, **kwargs)


def problem(key, value, **kwargs):
    with pytest.raises(SettingError) as info:
        check(key, value, **kwargs)
    return str(info.value)


# A setting of each kind the table uses.
KINDS = dict(
    bool="verify", actions="managed_actions", count="stage_parallel", seconds="command_timeout", port="setup_ssh_port",
    abs_path="working_dir", collect_dir="collect_dir", user="backup_user", command="rsh_command", weekday="starting_day",
    failure_mode="ignore_failure_mode", peer_type="peer_type", peer_name="peer_name", file_name="stage_indicator",
    action="action", mode="setup_collect_mode", group_name="master_group", plain_path="setup_ssh_dir", host="setup_ssh_host",
    patterns="setup_key_from", line="setup_key_command", file_path="metrics_file", opt_plain_path="setup_ssh_key",
)

# The kinds whose empty string is unset, as a role's default of "" means: the default, or none.
EMPTY_IS_UNSET = {"abs_path", "file_path", "collect_dir", "user", "command", "actions", "failure_mode", "peer_name", "peer_type", "action",
                  "group_name", "host", "patterns", "line", "opt_plain_path"}

# What each other kind says of an empty string: a bad value, not the default.
EMPTY_IS_BAD = dict(
    bool="must be true or false, not ''",
    count="must be a whole number of at least 1, not ''",
    seconds="must be a whole number of seconds, 0 for none, not ''",
    port="must be a port number from 1 to 65535, 0 for ssh's default, not ''",
    weekday="must be a lowercase English weekday (monday, tuesday, wednesday, thursday, friday, saturday, sunday), not ''",
    file_name="'' must be a plain file name (no '/', not '.' or '..', no leading '-')",
    mode="must be an octal mode such as 0750, not ''",
    plain_path="must be an absolute path without spaces or quotes, not ''",
)

# A text setting the table does not use (yet): taken as written.
TEXT = settings.Setting("note", "text", "", settings.RUN, settings.ROLES)


def test_every_kind_of_the_table_is_tested_here():
    assert set(setting.kind for setting in settings.TABLE) == set(KINDS)
    for kind, key in KINDS.items():
        assert settings.BY_KEY[key].kind == kind


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_an_unset_value_is_none(kind):
    assert check(KINDS[kind], None) is None


def test_the_kinds_an_empty_string_leaves_unset():
    assert settings._EMPTY_IS_UNSET == EMPTY_IS_UNSET | {"text"}
    assert set(KINDS) == EMPTY_IS_UNSET | set(EMPTY_IS_BAD)


@pytest.mark.parametrize("kind", sorted(EMPTY_IS_UNSET))
def test_an_empty_string_is_unset(kind):
    assert check(KINDS[kind], "") is None


@pytest.mark.parametrize("kind", sorted(EMPTY_IS_BAD))
def test_an_empty_string_is_a_bad_value_where_empty_means_nothing(kind):
    assert problem(KINDS[kind], "") == EMPTY_IS_BAD[kind]


@pytest.mark.parametrize("kind", sorted(set(KINDS) - {"actions"}))
def test_a_blank_string_is_never_unset(kind):
    # "   " is a value: checked as one (a blank command is not a command, as before the settings model)
    try:
        assert check(KINDS[kind], "   ") is not None
    except SettingError as exc:
        assert "'   '" in str(exc), str(exc)


@pytest.mark.parametrize("key, message", [
    ("rsh_command", "'   ' is not a command; give the program and its arguments"),
    ("backup_user", "'   ' is not a valid user name"),
    ("staging_dir", "must be an absolute path, not '   '"),
    ("verify", "must be true or false, not '   '"),
    ("stage_parallel", "must be a whole number of at least 1, not '   '"),
    ("setup_ssh_host", "must be a host name or address, not '   '"),
    ("action", "must be a bare action name such as collect or purge (lowercase letters, digits, _ and -, starting with a letter or digit), "
               "not '   '"),
])
def test_a_blank_string_is_a_bad_value(key, message):
    assert problem(key, "   ") == message


def test_a_blank_string_of_a_kind_taken_as_written_stays_as_written():
    assert check("master_group", "   ") == "   "
    assert check("setup_key_command", "   ") == "   "
    assert settings.check(TEXT, "   ") == "   "


def test_a_text_kind_unset_and_as_written():
    assert settings.check(TEXT, None) is None
    assert settings.check(TEXT, "") is None
    assert settings.check(TEXT, "any text; at all") == "any text; at all"
    with pytest.raises(SettingError, match=r"^must be a string, not 5$"):
        settings.check(TEXT, 5)


@pytest.mark.parametrize("kind", sorted(set(KINDS) - {"actions", "bool", "count", "seconds", "port"}))
def test_a_text_setting_takes_only_a_string(kind):
    if kind != "mode":  # a mode may be the number YAML makes of an unquoted 0750
        assert problem(KINDS[kind], 5) == "must be a string, not 5"
    assert problem(KINDS[kind], ["x"]) == "must be a string, not ['x']"
    assert problem(KINDS[kind], True) == "must be a string, not True"


# ---------------------------------------------------------------------------
# bool
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", [True, "true", "True", "TRUE", "yes", "y", "on", "t", "1", 1, " yes "])
def test_true_forms(value):
    assert settings.to_bool(value) is True
    assert check("verify", value) is True


@pytest.mark.parametrize("value", [False, "false", "False", "no", "n", "off", "f", "0", 0])
def test_false_forms(value):
    assert settings.to_bool(value) is False
    assert check("verify", value) is False


@pytest.mark.parametrize("value, shown", [
    ("maybe", "'maybe'"), (2, "2"), (-1, "-1"), (1.0, "1.0"), ("2", "'2'"), ([True], "[True]"), ({}, "{}"), (None, "None"),
])
def test_other_values_are_no_booleans(value, shown):
    with pytest.raises(SettingError) as info:
        settings.to_bool(value)
    assert str(info.value) == "must be true or false, not %s" % shown


def test_a_bool_setting_says_what_it_takes():
    assert problem("full", "perhaps") == "must be true or false, not 'perhaps'"


# ---------------------------------------------------------------------------
# actions, action
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [
    (["collect", "purge"], ["collect", "purge"]),
    (("collect",), ["collect"]),
    ([" collect ", "purge"], ["collect", "purge"]),
    ("collect", ["collect"]),
    ("collect,purge", ["collect", "purge"]),
    ("collect, purge ,  store", ["collect", "purge", "store"]),
    ("collect,,purge,", ["collect", "purge"]),
    (["collect", "", " "], ["collect"]),
    ("my-action,other_one,x2,2nd", ["my-action", "other_one", "x2", "2nd"]),
    ("", []),
    ("  ", []),
    (None, []),
    ([], []),
])
def test_actions_are_a_list_or_a_comma_separated_string(value, expected):
    assert settings.to_actions(value) == expected


def test_unset_actions_are_none_but_an_empty_list_is_no_actions():
    assert check("managed_actions", None) is None
    assert check("managed_actions", "") is None  # the role's default "" : the run-wide actions
    assert check("managed_actions", []) == []
    assert check("managed_actions", "  ") == []  # a value: no action in it
    assert check("managed_actions", "collect, purge") == ["collect", "purge"]


@pytest.mark.parametrize("value, item", [
    ("Collect", "'Collect'"), ("collect;purge", "'collect;purge'"), (["collect", "rm -rf"], "'rm -rf'"), ("-x", "'-x'"),
    ("_x", "'_x'"), ("collect purge", "'collect purge'"), ([None], "'None'"),
])
def test_an_action_that_is_no_bare_name_is_named(value, item):
    with pytest.raises(SettingError) as info:
        settings.to_actions(value)
    assert str(info.value) == "holds %s, which is not a bare action name (lowercase letters, digits, _ and -)" % item


@pytest.mark.parametrize("value, shown", [(5, "5"), ({"collect": True}, "{'collect': True}"), (True, "True")])
def test_actions_are_no_other_type(value, shown):
    with pytest.raises(SettingError) as info:
        settings.to_actions(value)
    assert str(info.value) == "must be a list or a comma-separated string, not %s" % shown


@pytest.mark.parametrize("value", ["collect", "purge", "my-action", "x_2", "2nd"])
def test_an_action_is_a_bare_name(value):
    assert check("action", value) == value


@pytest.mark.parametrize("value", ["Collect", "-oProxyCommand=x", "collect purge", "_x", "collect,purge"])
def test_an_action_that_is_not_a_bare_name(value):
    assert problem("action", value) == ("must be a bare action name such as collect or purge (lowercase letters, digits, _ and -, "
                                        "starting with a letter or digit), not '%s'" % value)


# ---------------------------------------------------------------------------
# count, seconds, port
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [(1, 1), (8, 8), ("3", 3), (" 4 ", 4), ("08", 8), (21600, 21600)])
def test_a_count_is_a_whole_number_of_at_least_one(value, expected):
    assert check("stage_parallel", value) == expected


@pytest.mark.parametrize("value, shown", [(0, "0"), (-5, "-5"), ("many", "'many'"), ("4.0", "'4.0'"), (2.5, "2.5"), (True, "True"), ("  ", "'  '")])
def test_a_count_that_is_not(value, shown):
    assert problem("peer_timeout", value) == "must be a whole number of at least 1, not %s" % shown


@pytest.mark.parametrize("value, expected", [(0, 0), ("0", 0), (30, 30), ("600", 600)])
def test_seconds_are_a_whole_number_zero_for_none(value, expected):
    assert check("connect_timeout", value) == expected


@pytest.mark.parametrize("value, shown", [(-1, "-1"), ("-1", "'-1'"), ("soon", "'soon'"), (1.5, "1.5"), (False, "False")])
def test_seconds_that_are_not(value, shown):
    assert problem("command_timeout", value) == "must be a whole number of seconds, 0 for none, not %s" % shown


@pytest.mark.parametrize("value, expected", [(0, 0), (22, 22), ("2222", 2222), (65535, 65535)])
def test_a_port_is_a_port_number_or_zero(value, expected):
    assert check("setup_ssh_port", value) == expected


@pytest.mark.parametrize("value, shown", [(65536, "65536"), (-1, "-1"), ("ssh", "'ssh'"), (True, "True")])
def test_a_port_that_is_not(value, shown):
    assert problem("setup_ssh_port", value) == "must be a port number from 1 to 65535, 0 for ssh's default, not %s" % shown


# ---------------------------------------------------------------------------
# abs_path, collect_dir, file_name
# ---------------------------------------------------------------------------


def test_an_absolute_path():
    assert check("staging_dir", "/srv/stage") == "/srv/stage"
    assert check("working_dir", "/var/tmp/cback dir") == "/var/tmp/cback dir"


def test_a_path_that_is_not_absolute_says_whether_it_may_be_empty():
    assert problem("staging_dir", "stage") == "must be an absolute path, not 'stage'"
    assert problem("working_dir", "tmp") == "must be an absolute path or empty, not 'tmp'"


def test_a_path_with_a_nul_byte():
    assert problem("working_dir", "/a\0b") == "'/a\\x00b' contains a NUL byte"


def test_a_collect_dir_of_a_remote_peer_holds_only_characters_a_remote_copy_passes():
    assert check("collect_dir", "/srv/collect dir/@host_1,x=y:z~") == "/srv/collect dir/@host_1,x=y:z~"
    assert problem("collect_dir", "/c;rm -rf /") == (
        "'/c;rm -rf /' holds characters a remote copy cannot pass safely; use letters, digits, space and _ . / @ % + = : , ~ -")
    assert check("collect_dir", "/c;odd $name", remote=False) == "/c;odd $name"


@pytest.mark.parametrize("remote", [True, False])
def test_a_collect_dir_must_be_absolute(remote):
    assert problem("collect_dir", "relative/collect", remote=remote) == "must be an absolute path, not 'relative/collect'"


def test_a_file_path():
    assert check("metrics_file", "/var/lib/prometheus/node-exporter/cedarbackup.prom") == "/var/lib/prometheus/node-exporter/cedarbackup.prom"
    assert problem("metrics_file", "cedarbackup.prom") == "must be an absolute path or empty, not 'cedarbackup.prom'"


@pytest.mark.parametrize("value", ["/var/lib/node-exporter/", "/", "/var/lib/..", "/var/."])
def test_a_file_path_names_a_file(value):
    assert problem("metrics_file", value) == "'%s' must be the absolute path of a file, not of a directory" % value


def test_a_file_name():
    assert check("stage_indicator", "cback.stage") == "cback.stage"
    assert check("collect_indicator", "ready flag") == "ready flag"


@pytest.mark.parametrize("value", ["a/b", "..", ".", "-x"])
def test_a_file_name_is_one_plain_name(value):
    assert problem("stage_indicator", value) == "'%s' must be a plain file name (no '/', not '.' or '..', no leading '-')" % value


def test_a_file_name_travels_to_remote_peers():
    assert problem("collect_indicator", "a;b") == "'a;b' holds characters a remote copy cannot pass safely"


# ---------------------------------------------------------------------------
# user, command, weekday, failure_mode, peer_type, peer_name, mode, group_name, text
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["backup", "cback_1", "svc.backup", "host$", "_x"])
def test_a_user_name(value):
    assert check("remote_user", value) == value


@pytest.mark.parametrize("value", ["bad user", "-x", "a:b"])
def test_a_user_name_that_is_not(value):
    assert problem("backup_group", value) == "'%s' is not a valid user name" % value


def test_a_command_is_kept_as_written():
    assert check("rcp_command", "/usr/bin/scp -F '/etc/cback/ssh config' -B") == "/usr/bin/scp -F '/etc/cback/ssh config' -B"


def test_a_command_that_is_not():
    assert problem("cback_command", '""') == "'\"\"' is not a command; give the program and its arguments"
    assert problem("rsh_command", "-x ssh") == "'-x ssh' starts with the option '-x'; give the program first"


@pytest.mark.parametrize("value", ["monday", "sunday"])
def test_a_weekday(value):
    assert check("starting_day", value) == value


@pytest.mark.parametrize("value", ["Monday", "mon", "lundi"])
def test_a_weekday_is_a_lowercase_english_weekday(value):
    assert problem("starting_day", value) == (
        "must be a lowercase English weekday (monday, tuesday, wednesday, thursday, friday, saturday, sunday), not '%s'" % value)


@pytest.mark.parametrize("value", ["none", "all", "daily", "weekly"])
def test_a_failure_mode(value):
    assert check("ignore_failure_mode", value) == value


@pytest.mark.parametrize("value", ["sometimes", "Daily", "ALL"])
def test_a_failure_mode_that_is_not(value):
    assert problem("ignore_failure_mode", value) == "must be one of none, all, daily, weekly, not '%s'" % value


@pytest.mark.parametrize("value", ["local", "remote"])
def test_a_peer_type(value):
    assert check("peer_type", value) == value


@pytest.mark.parametrize("value", ["Remote", "floppy"])
def test_a_peer_type_that_is_not(value):
    assert problem("peer_type", value) == "must be local or remote, not '%s'" % value


@pytest.mark.parametrize("value", ["web1", "web1.example.org", "192.0.2.10", "2001:db8::1"])
def test_a_remote_peer_name_is_a_hostname_or_an_ip_address(value):
    assert check("peer_name", value) == value


def test_a_remote_peer_name_that_is_not():
    assert problem("peer_name", "not a host") == "remote peer name 'not a host' is not a hostname or IP address"


def test_a_local_peer_name_is_one_directory_name():
    assert check("peer_name", "master self", remote=False) == "master self"
    assert problem("peer_name", "../x", remote=False) == (
        "peer name '../x' must be usable as one directory name (no '/', not '.' or '..', no leading '-')")


def test_a_mode():
    assert check("setup_collect_mode", "0750") == "0750"
    assert check("setup_collect_mode", "640") == "640"
    assert check("setup_collect_mode", "2775") == "2775"


@pytest.mark.parametrize("value", ["999", "0o750", "rwxr-x---", "75", "07500", " 0750"])
def test_a_mode_that_is_not(value):
    assert problem("setup_collect_mode", value) == "must be an octal mode such as 0750, not '%s'" % value


@pytest.mark.parametrize("value, expected", [(0o750, "0750"), (488, "0750"), (0o640, "0640"), (0o2775, "2775"), (0, "0000")])
def test_a_mode_yaml_read_as_a_number_is_that_mode(value, expected):
    # YAML reads an unquoted 0750 as 488
    assert check("setup_collect_mode", value) == expected


@pytest.mark.parametrize("value", [4750, 0o10000, 7777, 10000, -1])
def test_a_number_that_is_no_mode(value):
    # an unquoted 4750 is the number 4750 (0o11216), not the mode 4750: as Ansible's file module, not taken as its digits
    assert problem("setup_collect_mode", value) == "must be an octal mode such as 0750, not %d" % value


def test_a_group_name_is_taken_as_written():
    assert check("master_group", "backup_servers") == "backup_servers"


@pytest.mark.parametrize("value", ["/etc/cback", "/bin/sh", "/usr/local/etc/cback-ssh_1.d"])
def test_a_plain_path(value):
    assert check("setup_ssh_dir", value) == value
    assert check("setup_host_key_file", value) == value


@pytest.mark.parametrize("value", ["etc/cback", "/etc/c back", "/etc/\tx", "/etc/'x'", '/etc/"x"', "/etc/x\n"])
def test_a_plain_path_that_is_not(value):
    assert problem("setup_shell", value) == "must be an absolute path without spaces or quotes, not %s" % settings.shown(value)


@pytest.mark.parametrize("value", ["/var/backups/.ssh/id_rsa", "/etc/cback/id_ed25519"])
def test_an_optional_plain_path(value):
    assert check("setup_ssh_key", value) == value
    assert check("setup_ssh_key", "") is None  # unset: the role's own key


@pytest.mark.parametrize("value", ["id_rsa", "/var/backups/my key", "/x/'k'"])
def test_an_optional_plain_path_that_is_not(value):
    assert problem("setup_ssh_key", value) == "must be an absolute path without spaces or quotes, or empty, not %s" % settings.shown(value)


@pytest.mark.parametrize("value", ["web1", "web1.example.org", "192.0.2.10", "2001:db8::1", "host_1-a"])
def test_a_host(value):
    assert check("setup_ssh_host", value) == value


@pytest.mark.parametrize("value", ["web 1", "web1;x", "a/b", "[::1]", "user@web1"])
def test_a_host_that_is_not(value):
    assert problem("setup_ssh_host", value) == "must be a host name or address, not '%s'" % value


@pytest.mark.parametrize("value", ["192.0.2.0/24", "*.example.org,!bad.example.org", "10.0.0.1"])
def test_patterns(value):
    assert check("setup_key_from", value) == value


@pytest.mark.parametrize("value", ["192.0.2.1, 192.0.2.2", '"x"', "a\tb"])
def test_patterns_that_are_not(value):
    assert problem("setup_key_from", value) == (
        "must be a comma-separated list of patterns without spaces or quotes, not %s" % settings.shown(value))


def test_a_line():
    assert check("setup_key_command", "/usr/bin/rrsync -ro /srv") == "/usr/bin/rrsync -ro /srv"
    assert check("setup_key_command", "cmd 'quoted'") == "cmd 'quoted'"


@pytest.mark.parametrize("value", ["a\nb", 'echo "x"'])
def test_a_line_that_is_not(value):
    assert problem("setup_key_command", value) == "must be one line without double quotes, not %s" % settings.shown(value)


@pytest.mark.parametrize("kind", sorted(set(KINDS) - {"actions", "bool", "count", "seconds", "port", "group_name"}))
def test_no_message_ends_a_sentence_itself(kind):
    # each edge puts the setting's name in front and ends the sentence
    for value in ("x/../y", "-x y", "Bad Value;", "/a\0b"):
        try:
            check(KINDS[kind], value)
        except SettingError as exc:
            assert not str(exc).endswith("."), str(exc)


# ---------------------------------------------------------------------------
# The table's views
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("setting", settings.TABLE, ids=lambda setting: setting.variable)
def test_every_default_passes_its_own_check(setting):
    typed = settings.default_of(setting)
    assert (typed is None) is (setting.default is None)
    if setting.default in ("", []):
        assert typed == setting.default  # an empty default stays itself


def test_typed_defaults():
    assert settings.default_of(settings.BY_KEY["stage_parallel"]) == 8
    assert settings.default_of(settings.BY_KEY["managed_actions"]) == []
    assert settings.default_of(settings.BY_KEY["rcp_command"]) == ""
    assert settings.default_of(settings.BY_KEY["staging_dir"]) is None


def test_a_setting_is_known_by_key_and_by_variable():
    setting = settings.BY_KEY["stage_parallel"]
    assert setting.variable == "cback_stage_parallel"
    assert settings.BY_VARIABLE["cback_stage_parallel"] is setting
    assert repr(setting) == "Setting(cback_stage_parallel)"
    assert len(settings.BY_KEY) == len(settings.BY_VARIABLE) == len(settings.TABLE)


def test_the_run_wide_variables_of_each_role():
    assert "cback_staging_dir" in settings.variables_of("stage") and "cback_staging_dir" not in settings.variables_of("managed")
    assert "cback_action" in settings.variables_of("managed") and "cback_action" not in settings.variables_of("stage")
    # a setting a peer's value may win over is read run-wide too; a peer-only one is not
    assert "cback_rcp_command" in settings.variables_of("stage") and "cback_collect_dir" not in settings.variables_of("stage")
    assert settings.variables_of("stage", (settings.PEER,)) == [
        "cback_peer_type", "cback_peer_name", "cback_collect_dir", "cback_remote_user", "cback_ignore_failure_mode", "cback_managed",
        "cback_master_host"]


def test_the_roles_that_cannot_go_without_a_setting():
    assert dict((setting.key, setting.required) for setting in settings.TABLE if setting.required) == dict(
        staging_dir=("stage",), action=("managed",), collect_dir=("stage", "managed", "setup"), backup_user=("setup",),
        backup_group=("setup",), setup_ssh_dir=("setup",), setup_shell=("setup",))
    for setting in settings.TABLE:
        assert isinstance(setting.required, tuple), setting
        # a role can only need what it reads
        assert set(setting.required) <= set(setting.roles), setting


def test_a_required_setting_has_no_empty_default():
    for setting in settings.TABLE:
        if setting.required and setting.default is not None:
            assert settings.default_of(setting) is not None, setting


def test_a_path_says_it_may_be_empty_only_where_no_role_needs_it():
    # the backup user is needed by the set-up only; a working directory by no role
    assert problem("working_dir", "x") == "must be an absolute path or empty, not 'x'"
    assert problem("staging_dir", "x") == "must be an absolute path, not 'x'"


def test_a_setting_needs_no_role_by_default():
    assert settings.Setting("x", "text", None, settings.RUN, settings.ROLES).required == ()


def test_a_kind_without_a_check_is_a_bug_of_the_table():
    with pytest.raises(AssertionError, match="no check for the kind 'colour' of cback_x"):
        settings.check(settings.Setting("x", "colour", None, settings.RUN, settings.ROLES), "red")

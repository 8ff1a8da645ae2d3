# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Mistakes in the inventory get a message that names the variable and the fix.

Each test runs the ``cedarbackup.peer.stage`` playbook as a user does, over local peers,
and asserts what the user sees: a warning for a ``cback_*`` variable no role knows (with the
closest known name), a failure naming a run-wide variable that is missing or bad and where
to set it, and a run-wide variable set on a peer (any peer, first or not) ignored with a
warning, so that the run does the same whichever peer comes first.
"""

import os

import pytest

from ansible_collections.cedarbackup.peer.tests.support.ansible_run import (
    fill,
    today,
    write_inventory,
)

WHERE = "set it in the master's variables (host_vars/localhost, the group_vars of its group, or group_vars/all), or with -e."


def peers(data, **extra):
    """Two local peers, ready; ``extra`` maps a peer to more host vars."""
    found = {}
    for name in ("p1", "p2"):
        collect = fill(data / name, {"a.tar": (b"a", 0o644), "cback.collect": (b"", 0o644)})
        found[name] = dict(dict(cback_peer_type="local", cback_collect_dir=str(collect)), **extra.get(name, {}))
    return found


# A run-wide failure (a missing master, a bad run-wide value, a run that cannot start) fails
# every peer's host at the roles' one task per host.
REPORT = "Report the peer"


def failure(run, task):
    records = [record for record in run.find(task) if record["status"] == "failed"]
    assert records, run
    return str(records[0]["result"].get("msg", ""))


def test_an_unknown_variable_warns_with_the_closest_known_name(runner, data):
    inventory = write_inventory(runner.base / "typo.ini", dict(cback_staging_dir=str(data / "stage"), cback_stage_paralel=2),
                                peers(data, p2=dict(cback_ignore_failures="all")))
    run = runner.run("stage", inventory)
    assert run.rc == 0, run
    text = " ".join((run.stdout + run.stderr).split())
    assert "Unknown variable cback_ignore_failures (set for p2) is ignored; did you mean cback_ignore_failure_mode?" in text, run
    assert "Unknown variable cback_stage_paralel (set for localhost) is ignored; did you mean cback_stage_parallel?" in text, run


def test_a_missing_staging_dir_names_the_variable_and_where_to_set_it(runner, data):
    inventory = write_inventory(runner.base / "nostage.ini", {}, peers(data))
    run = runner.run("stage", inventory)
    assert run.rc != 0, run
    message = failure(run, REPORT)
    assert message.endswith("cback_staging_dir is not set (the staging directory, <stage><staging_dir> of cback3.conf); "
                            + WHERE), message
    assert not (data / "stage").exists()


@pytest.mark.parametrize("peer", ["p1", "p2"])
def test_a_run_wide_variable_on_a_peer_is_ignored_whichever_peer_it_is(runner, data, peer):
    """Set on the first peer or on a later one, ``cback_staging_dir`` is ignored the same way:
    the run fails as without it, and a warning names the peer."""
    inventory = write_inventory(runner.base / ("onpeer-%s.ini" % peer), {},
                                peers(data, **{peer: dict(cback_staging_dir=str(data / "stage"))}))
    run = runner.run("stage", inventory)
    assert run.rc != 0, run
    assert "cback_staging_dir is not set" in failure(run, REPORT)
    text = " ".join((run.stdout + run.stderr).split())
    assert ("cback_staging_dir is set for the peer %s, but run-wide settings are read from the master (localhost) only: "
            "ignored there; set it in the master's variables" % peer) in text, run
    assert not (data / "stage").exists()


@pytest.mark.parametrize("variable, value, message", [
    ("cback_starting_day", "Funday", "cback_starting_day must be a lowercase English weekday (monday, tuesday, wednesday, "
                                     "thursday, friday, saturday, sunday), not 'Funday'; " + WHERE),
    ("cback_stage_parallel", 0, "cback_stage_parallel must be a whole number of at least 1, not 0; " + WHERE),
    ("cback_working_dir", "relative/work", "cback_working_dir must be an absolute path or empty, not 'relative/work'; " + WHERE),
])
def test_a_bad_run_wide_value_has_its_own_message(runner, data, variable, value, message):
    inventory = write_inventory(runner.base / "bad.ini", {"cback_staging_dir": str(data / "stage"), variable: value}, peers(data))
    run = runner.run("stage", inventory)
    assert run.rc != 0, run
    assert failure(run, REPORT).endswith(message)
    assert not (data / "stage").exists()


# ---------------------------------------------------------------------------
# Loud configuration failures: short messages, every peer's host, never exit 0
# ---------------------------------------------------------------------------

def peer_failures(run, task):
    """``{host: message}`` of the peers' failed results of ``task``."""
    return dict((record["host"], str(record["result"].get("msg", ""))) for record in run.find(task) if record["status"] == "failed")


@pytest.mark.parametrize("variable, value, expected", [
    ("cback_stage_parallel", "eight", "cback_stage_parallel must be a whole number of at least 1, not 'eight'; "),
    ("cback_verify", "perhaps", "cback_verify must be true or false, not 'perhaps'; "),
    ("cback_peer_timeout", "-1", "cback_peer_timeout must be a whole number of at least 1, not '-1'; "),
])
def test_a_type_error_given_with_e_is_one_short_line_on_every_peer(runner, data, variable, value, expected):
    """``-e cback_stage_parallel=eight`` is no dump of the role's argument spec: one line, on every peer's host."""
    inventory = write_inventory(runner.base / "typed.ini", {"cback_staging_dir": str(data / "stage")}, peers(data))
    run = runner.run("stage", inventory, extra=["%s=%s" % (variable, value)])
    assert run.rc != 0, run
    failures = peer_failures(run, REPORT)
    assert sorted(failures) == ["p1", "p2"], run
    for message in failures.values():
        assert message == expected + WHERE, message
        assert "\n" not in message and len(message) < 300, message
    assert "argument_spec" not in run.stdout + run.stderr, run
    recap = run.recap()
    assert recap["p1"]["failed"] == 1 and recap["p2"]["failed"] == 1, recap
    assert not (data / "stage").exists()


def test_a_run_that_cannot_start_fails_every_peers_host(runner, data):
    """A staging directory that cannot be made (a file is in its way) is the run's failure, so every peer's."""
    blocker = data / "not-a-dir"
    blocker.write_text("a file\n")
    inventory = write_inventory(runner.base / "nostart.ini", {"cback_staging_dir": str(blocker / "stage")}, peers(data))
    run = runner.run("stage", inventory)
    assert run.rc != 0, run
    failures = peer_failures(run, REPORT)
    assert sorted(failures) == ["p1", "p2"], run
    assert len(set(failures.values())) == 1 and str(blocker) in failures["p1"], failures
    recap = run.recap()
    assert recap["p1"]["failed"] == 1 and recap["p2"]["failed"] == 1, recap


def test_a_missing_managed_action_fails_every_peer(runner, data):
    inventory = write_inventory(runner.base / "noaction.ini", {}, peers(data, p1=dict(cback_managed=True)))
    run = runner.run("managed", inventory)
    assert run.rc != 0, run
    failures = peer_failures(run, REPORT)
    assert sorted(failures) == ["p1", "p2"], run
    assert failures["p2"].startswith("cback_action is not set"), failures


@pytest.mark.parametrize("playbook", ["stage", "managed", "pool", "setup"])
def test_an_inventory_without_peers_fails_every_playbook(runner, data, playbook):
    """With Ansible's default settings, an inventory that has no peer (a broken source is only a
    warning) makes the run fail, naming the likely cause and the setting that stops on it."""
    inventory = runner.base / "empty.ini"
    inventory.write_text("[cback_master]\nlocalhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n")
    run = runner.run(playbook, inventory, extra=["cback_action=collect"])
    assert run.rc != 0, run
    message = peer_failures(run, "Check that the inventory has a master and peers")["localhost"]
    assert message.startswith("The inventory has no host in the group cback_peers (the peers). A broken inventory source is the "
                              "likely cause"), message
    assert "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED=true" in message


def test_a_broken_cback3_conf_source_fails_the_stage_run(runner, data):
    """A ``cback3.conf`` the inventory plugin refuses is only a warning to Ansible: the run still fails."""
    conf = data / "cback3.conf"
    conf.write_text("<cb_config><options><starting_day>monday</starting_day></options><stage><staging_dir>%s</staging_dir>"
                    "<peer><name>p1</name><type>local</type></peer></stage>" % (data / "stage"))  # no collect_dir, no end tag
    source = runner.base / "broken.cback3_conf.yml"
    source.write_text("plugin: cedarbackup.peer.cback3_conf\npath: %s\n" % conf)
    run = runner.run("stage", source)
    assert run.rc != 0, run
    text = " ".join((run.stdout + run.stderr).split())
    assert "The inventory has no host in the group cback_master (the master) and no host in the group cback_peers" in text, run
    assert str(conf) in text, run  # Ansible's warning names the file the plugin refused
    assert not (data / "stage").exists()


def test_with_several_masters_each_peer_names_its_master(runner, data):
    """Two hosts in cback_master and peers that do not say which is theirs: each peer's host fails,
    naming cback_master_host; nothing is staged."""
    inventory = write_inventory(runner.base / "twomasters.ini", {"cback_staging_dir": str(data / "stage")}, peers(data))
    text = inventory.read_text().replace("[cback_master]\n", "[cback_master]\nsecond-master ansible_connection=local\n")
    inventory.write_text(text)
    run = runner.run("stage", inventory)
    assert run.rc != 0, run
    failures = peer_failures(run, REPORT)
    assert sorted(failures) == ["p1", "p2"], run
    assert "cback_master_host" in failures["p1"] and "several masters (second-master, localhost)" in failures["p1"], failures
    assert not (data / "stage").exists()


def test_a_backup_user_the_master_lacks_names_the_inventory_variable(runner, data):
    """What only the master can check (does the backup user exist there?) fails every peer's host,
    naming the inventory variable, not the module option it was passed as."""
    master = {"cback_staging_dir": str(data / "stage"), "cback_backup_user": "cbnosuchuser"}
    inventory = write_inventory(runner.base / "nouser.ini", master, peers(data))
    run = runner.run("stage", inventory)
    assert run.rc != 0, run
    failures = peer_failures(run, REPORT)
    assert sorted(failures) == ["p1", "p2"], run
    assert failures["p1"].startswith("cback_backup_user: no such user 'cbnosuchuser' on the master"), failures


def test_group_vars_and_host_vars_beside_a_cback3_conf_source_override_the_file(runner, data):
    """The plugin's run-wide values are the master group's variables and its peer values host
    variables: group_vars/cback_master.yml and host_vars/<peer>.yml beside the source win, as
    Ansible users expect, and -e wins over both."""
    collect = dict((name, fill(data / name, {"a.tar": (name.encode(), 0o644), "cback.collect": (b"", 0o644)})) for name in ("p1", "p2"))
    elsewhere = fill(data / "p1-elsewhere", {"moved.tar": (b"moved", 0o644), "cback.collect": (b"", 0o644)})
    work = data / "work"
    work.mkdir()
    conf = data / "cback3.conf"
    conf.write_text(
        "<?xml version='1.0'?>\n<cb_config>\n<options><starting_day>monday</starting_day><working_dir>%s</working_dir>"
        "<backup_user>root</backup_user><backup_group>root</backup_group><rcp_command>/usr/bin/scp -B -q -C</rcp_command>"
        "</options>\n<stage><staging_dir>%s</staging_dir>%s</stage>\n</cb_config>\n" % (
            work, data / "stage-from-file",
            "".join("<peer><name>%s</name><type>local</type><collect_dir>%s</collect_dir></peer>" % (name, path)
                    for name, path in sorted(collect.items()))))
    source = runner.base / "pool.cback3_conf.yml"
    source.write_text("plugin: cedarbackup.peer.cback3_conf\npath: %s\nmaster_vars:\n  ansible_python_interpreter: /usr/bin/python3\n"
                      % conf)
    (runner.base / "group_vars").mkdir()
    (runner.base / "group_vars" / "cback_master.yml").write_text("cback_staging_dir: %s\n" % (data / "stage-from-group-vars"))
    (runner.base / "host_vars").mkdir()
    (runner.base / "host_vars" / "p1.yml").write_text("cback_collect_dir: %s\n" % elsewhere)

    run = runner.run("stage", source)
    assert run.rc == 0, run
    assert not (data / "stage-from-file").exists(), "the file's staging_dir was used"
    daily = data / "stage-from-group-vars" / today()[0]
    assert sorted(os.listdir(str(daily / "p1"))) == ["cback.collect", "moved.tar"], run
    assert sorted(os.listdir(str(daily / "p2"))) == ["a.tar", "cback.collect"], run

    run = runner.run("stage", source, extra=["cback_staging_dir=%s" % (data / "stage-from-e")])
    assert run.rc == 0, run
    assert (data / "stage-from-e" / today()[0] / "p2" / "a.tar").is_file(), run

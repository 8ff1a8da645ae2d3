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

import pytest

from ansible_collections.cedarbackup.peer.tests.support.ansible_run import (
    fill,
    public_dir,
    remove_tree,
    write_inventory,
)

WHERE = "set it in the master's variables (host_vars/localhost, the group_vars of its group, or group_vars/all), or with -e."


@pytest.fixture
def data():
    path = public_dir("cbmistake-")
    try:
        yield path
    finally:
        remove_tree(path)


def peers(data, **extra):
    """Two local peers, ready; ``extra`` maps a peer to more host vars."""
    found = {}
    for name in ("p1", "p2"):
        collect = fill(data / name, {"a.tar": (b"a", 0o644), "cback.collect": (b"", 0o644)})
        found[name] = dict(dict(cback_peer_type="local", cback_collect_dir=str(collect)), **extra.get(name, {}))
    return found


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
    message = failure(run, "Check the run-wide settings")
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
    assert "cback_staging_dir is not set" in failure(run, "Check the run-wide settings")
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
    assert failure(run, "Check the run-wide settings").endswith(message)
    assert not (data / "stage").exists()

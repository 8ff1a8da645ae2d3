# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``cedarbackup.peer.cback3_conf`` inventory plugin against Debian's ``CedarBackup3.config``.

A table of cback3.conf files, valid and invalid, covers each rule ``Config.validate()`` applies
to the options, stage and peers sections.  For each file:

- the oracle: ``CedarBackup3.config.Config(xmlPath=..., validate=True)`` run by ``/usr/bin/python3``
  (the system Python of Debian's ``cedar-backup3``) in a subprocess, and what ``cback3 stage`` and
  cback3's managed actions take from the result: the staged peers (the stage section's when it
  has any, else the peers section's) with their collect directory, type, ignore-failure mode,
  remote user and rcp command, and the managed peers of the peers section with their actions,
  remote user, rsh and cback commands;
- the plugin: the same, from its inventory, resolved as the roles resolve it (a peer variable wins
  over the run-wide variable of the same name).

Both must make the same accept/reject decision and yield the same effective settings.  Where cback3
itself uses two values for one peer (its stage and peers entries disagree), the inventory has one,
and the plugin must have warned, naming both entries.  A few files also go through
``ansible-inventory --list``, the whole way a user runs the plugin.
"""

import json
import os
import subprocess

import pytest

from ansible_collections.cedarbackup.peer.plugins.inventory import cback3_conf as plugin
from ansible_collections.cedarbackup.peer.tests.support.ansible_run import ansible_environment

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.environ.get("CBACK_ANSIBLE_BIN") or os.path.join(ROOT, ".venv", "bin")
SYSTEM_PYTHON = "/usr/bin/python3"

# Run by /usr/bin/python3: argv[1:] are cback3.conf paths; prints {path: outcome} as JSON.
ORACLE = r'''
import json, sys
from CedarBackup3.config import Config


def peer_type(peer):
    return "remote" if hasattr(peer, "remoteUser") else "local"


def outcome(path):
    try:
        conf = Config(xmlPath=path, validate=True)
    except ValueError as exc:
        return dict(accepted=False, error=str(exc))
    options = conf.options
    staged = {}
    section = conf.stage if conf.stage is not None and conf.stage.hasPeers() else conf.peers
    if section is not None:
        for peer in (section.localPeers or []) + (section.remotePeers or []):
            values = dict(type=peer_type(peer), collect_dir=peer.collectDir, ignore_failures=peer.ignoreFailureMode or "none")
            if values["type"] == "remote":
                values["remote_user"] = peer.remoteUser or options.backupUser
                values["rcp_command"] = peer.rcpCommand or options.rcpCommand
            staged[peer.name] = values
    managed = {}
    for peer in (conf.peers.remotePeers or []) if conf.peers is not None else []:
        if peer.managed:  # CedarBackup3.cli._ActionSet._buildPeerMap and its _get* helpers
            actions = peer.managedActions if peer.managedActions is not None else options.managedActions
            managed[peer.name] = dict(actions=list(actions or []), remote_user=peer.remoteUser or options.backupUser,
                                      rsh_command=peer.rshCommand or options.rshCommand,
                                      cback_command=peer.cbackCommand or options.cbackCommand)
    return dict(accepted=True, staging_dir=conf.stage.targetDir if conf.stage is not None else None,
                starting_day=options.startingDay, working_dir=options.workingDir, backup_user=options.backupUser,
                backup_group=options.backupGroup, staged=staged, managed=managed)


print(json.dumps(dict((path, outcome(path)) for path in sys.argv[1:])))
'''

# ---------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------

OPTION_VALUES = (
    ("starting_day", "monday"),
    ("working_dir", "/var/backups/cback/tmp"),
    ("backup_user", "backup"),
    ("backup_group", "backup"),
    ("rcp_command", "/usr/bin/scp -B -q -C"),
    ("rsh_command", "/usr/bin/ssh"),
    ("cback_command", "/usr/bin/cback3"),
    ("managed_actions", "collect, purge"),
)


def options(drop=(), **values):
    """An options section: every element (OPTION_VALUES), less ``drop``, with ``values`` replaced or added."""
    elements = dict(OPTION_VALUES)
    elements.update(values)
    body = "".join("<%s>%s</%s>" % (tag, value, tag) for tag, value in elements.items() if tag not in drop)
    return "<options>%s</options>" % body


def peer(name, peer_type="remote", collect_dir=None, **elements):
    """A <peer>; ``collect_dir`` defaults to /collect/<name>; an element given as None is left out."""
    parts = [("name", name), ("type", peer_type), ("collect_dir", "/collect/%s" % name if collect_dir is None else collect_dir)]
    parts += sorted(elements.items())
    return "<peer>%s</peer>" % "".join("<%s>%s</%s>" % (tag, value, tag) for tag, value in parts if value is not None)


def stage(*peers, **kwargs):
    staging = kwargs.get("staging", "<staging_dir>/var/backups/cback/stage</staging_dir>")
    return "<stage>%s%s</stage>" % (staging, "".join(peers))


def peers(*entries):
    return "<peers>%s</peers>" % "".join(entries)


def conf(*sections, **kwargs):
    return "<?xml version='1.0'?>\n<cb_config>%s%s</cb_config>\n" % (kwargs.get("opts", options()), "".join(sections))


COLLECT = "<collect><collect_dir>/var/backups/cback/collect</collect_dir></collect>"
PURGE = "<purge/>"
L1, L2 = peer("l1", "local"), peer("l2", "local")
R1, R2 = peer("r1"), peer("r2")
MANAGED = peer("m1", managed="Y")

CASES = [
    # Options: the section and its required elements; values cback3 checks.
    ("minimal", conf(stage(L1))),
    ("no-options", conf(stage(L1), opts="")),
    ("empty-options", conf(stage(L1), opts="<options/>")),
] + [
    ("options-without-" + tag, conf(stage(L1, R1), opts=options(drop=(tag,))))
    for tag, _value in OPTION_VALUES
] + [
    ("options-only-required", conf(stage(L1, R1), opts=options(drop=("rsh_command", "cback_command", "managed_actions")))),
    ("options-empty-rcp-command", conf(stage(R1), opts=options(rcp_command=""))),
    ("options-blank-rcp-command", conf(stage(R1), opts=options(rcp_command=" "))),
] + [
    ("starting-day-" + day, conf(stage(L1), opts=options(starting_day=day)))
    for day in ("sunday", "saturday", "Monday", "mon", " monday", "funday")
] + [
    ("relative-working-dir", conf(stage(L1), opts=options(working_dir="tmp"))),
    ("options-actions-bad", conf(stage(L1), opts=options(managed_actions="collect, Store"))),
    ("options-actions-dash", conf(stage(L1), opts=options(managed_actions="my-action"))),
    ("options-actions-commas", conf(stage(L1), opts=options(managed_actions=" , ,collect,, "))),
    ("options-override-ok", conf(stage(L1), opts=options().replace(
        "</options>", "<override><command>cdrecord</command><abs_path>/opt/bin/cdrecord</abs_path></override></options>"))),
    ("options-override-relative", conf(stage(L1), opts=options().replace(
        "</options>", "<override><command>cdrecord</command><abs_path>cdrecord</abs_path></override></options>"))),
    ("options-hook-ok", conf(stage(L1), opts=options().replace(
        "</options>", "<pre_action_hook><action>stage</action><command>echo hi</command></pre_action_hook></options>"))),
    ("options-hook-bad-action", conf(stage(L1), opts=options().replace(
        "</options>", "<post_action_hook><action>st age</action><command>echo hi</command></post_action_hook></options>"))),
    ("options-unknown-element", conf(stage(L1), opts=options(workdir="/x"))),

    # Sections: at least one action section; where the peers come from.
    ("no-action-section", conf(peers(L1))),
    ("no-sections", conf()),
    ("collect-only", conf(COLLECT)),
    ("peers-and-collect", conf(peers(L1, R1, MANAGED), COLLECT)),
    ("peers-and-purge", conf(peers(R1), PURGE)),
    ("stage-peers-only", conf(stage(L1, L2, R1, R2))),
    ("stage-without-peers-and-no-peers-section", conf(stage())),
    ("stage-without-peers-takes-peers-section", conf(stage(), peers(L1, R1, MANAGED))),
    ("both-sections-stage-wins", conf(stage(L1, R1), peers(L2, R2))),
    ("empty-peers-section", conf(stage(L1), peers())),
    ("peers-section-of-untyped-peers", conf(stage(L1), peers(peer("x", None)))),
    ("stage-without-staging-dir", conf(stage(L1, staging=""))),
    ("stage-empty-staging-dir", conf(stage(L1, staging="<staging_dir></staging_dir>"))),
    ("stage-relative-staging-dir", conf(stage(L1, staging="<staging_dir>stage</staging_dir>"))),
    ("not-cb-config", conf(stage(L1)).replace("cb_config", "config")),

    # Peers: required elements and their values.
    ("local-without-name", conf(stage(peer(None, "local")))),
    ("remote-without-name", conf(stage(L1, peer(None)))),
    ("local-without-collect-dir", conf(stage(peer("l", "local", collect_dir="")))),
    ("remote-without-collect-dir", conf(stage(peer("r", collect_dir="")))),
    ("relative-collect-dir", conf(stage(peer("r", collect_dir="collect")))),
    ("peer-without-type", conf(stage(L1, peer("x", None)))),
    ("peer-bad-type", conf(stage(L1, peer("x", "Remote")))),
    ("only-peer-bad-type", conf(stage(peer("x", "ssh")))),
    ("bad-type-in-peers-section", conf(stage(L1), peers(R1, peer("x", "other")))),
    ("duplicate-names-stage", conf(stage(L1, R1, peer("l1")))),
    ("duplicate-names-peers", conf(stage(L1), peers(R1, peer("r1", "local")))),
    ("same-name-in-both-sections", conf(stage(L1, R1), peers(peer("r1", collect_dir="/collect/r1")))),
    ("names-odd-but-accepted", conf(stage(peer("a b", "local"), peer("x/y", "local"), peer(" r ")))),
] + [
    ("ignore-failures-%s-%s" % (peer_type, mode), conf(stage(peer("p", peer_type, ignore_failures=mode), L2)))
    for peer_type in ("local", "remote") for mode in ("none", "all", "daily", "weekly", "None", "sometimes")
] + [
    # Remote peers: per-peer overrides of the run-wide values.
    ("remote-overrides", conf(stage(peer("r", backup_user="cback", rcp_command="/usr/bin/scp -P 2222",
                                         rsh_command="/usr/bin/ssh -p 2222", cback_command="/opt/cback3"), L1))),
    ("remote-user-from-peer-only", conf(stage(peer("r", backup_user="cback")), opts=options(drop=("backup_user",)))),
    ("rcp-from-peer-only", conf(stage(peer("r", rcp_command="/usr/bin/scp")), opts=options(drop=("rcp_command",)))),
    ("local-peer-remote-elements", conf(stage(peer("l", "local", backup_user="x", managed="Y", rcp_command="/bin/false")))),

    # Managed peers.
    ("managed-in-peers", conf(stage(), peers(MANAGED, R1))),
    ("managed-lowercase-y", conf(stage(), peers(peer("m", managed="y"), peer("u", managed="n")))),
    ("managed-bad-value", conf(stage(), peers(peer("m", managed="yes")))),
    ("managed-bad-value-in-stage", conf(stage(peer("m", managed="true")))),
    ("managed-peer-overrides", conf(stage(), peers(peer("m", managed="Y", backup_user="cback", rsh_command="/usr/bin/ssh -4",
                                                        cback_command="/usr/local/bin/cback3", managed_actions="store")))),
    ("managed-without-rsh", conf(stage(), peers(MANAGED), opts=options(drop=("rsh_command",)))),
    ("managed-rsh-from-peer", conf(stage(), peers(peer("m", managed="Y", rsh_command="/usr/bin/ssh")),
                                   opts=options(drop=("rsh_command",)))),
    ("managed-without-cback-command", conf(stage(), peers(MANAGED), opts=options(drop=("cback_command",)))),
    ("managed-without-actions", conf(stage(), peers(MANAGED), opts=options(drop=("managed_actions",)))),
    ("managed-empty-actions-both", conf(stage(), peers(peer("m", managed="Y", managed_actions=" , ")),
                                        opts=options(managed_actions=","))),
    ("managed-empty-peer-actions", conf(stage(), peers(peer("m", managed="Y", managed_actions=",")))),
    ("managed-actions-from-peer", conf(stage(), peers(peer("m", managed="Y", managed_actions="collect")),
                                       opts=options(drop=("managed_actions",)))),
    ("managed-bad-peer-action", conf(stage(), peers(peer("m", managed="Y", managed_actions="collect,rm -rf")))),
    ("unmanaged-without-rsh", conf(stage(), peers(R1), opts=options(drop=("rsh_command", "cback_command", "managed_actions")))),
    ("managed-in-stage-needs-rsh-too", conf(stage(MANAGED), opts=options(drop=("rsh_command",)))),
    ("managed-in-stage-only", conf(stage(MANAGED, L1))),
    ("managed-in-both", conf(stage(peer("m", rsh_command="/usr/bin/ssh -6")), peers(peer("m", managed="Y", managed_actions="store")))),
    ("managed-stage-says-y-peers-says-n", conf(stage(peer("m", managed="Y")), peers(peer("m", managed="N")))),
    ("managed-left-out-of-stage", conf(stage(R1), peers(R1, MANAGED))),
    ("managed-users-disagree", conf(stage(peer("m", backup_user="stager")), peers(peer("m", managed="Y", backup_user="manager")))),
    ("managed-collect-dirs-disagree", conf(stage(peer("m", collect_dir="/a")), peers(peer("m", managed="Y", collect_dir="/b")))),
    ("managed-types-disagree", conf(stage(peer("m", "local")), peers(peer("m", managed="Y")))),

    # XML as cback3 reads it.
    ("malformed", conf(stage(L1)).replace("</stage>", "")),
    ("first-text-wins", conf(stage("<peer><name></name><name>p</name><type>local</type><collect_dir>/c</collect_dir>"
                                   "<collect_dir>/d</collect_dir></peer>"))),
    ("padded-type", conf(stage(L1, peer("x", " remote")))),
    ("padded-collect-dir", conf(stage(peer("x", "local", collect_dir=" /c")))),
    ("cdata-collect-dir", conf(stage(peer("x", "local", collect_dir="<![CDATA[/c]]>")))),
]
assert len(set(name for name, _text in CASES)) == len(CASES), "case names are unique"


# ---------------------------------------------------------------------------
# The two sides
# ---------------------------------------------------------------------------


def plugin_outcome(path):
    """What the plugin yields from ``path`` (the functions its parse() uses), resolved as the roles do."""
    try:
        conf = plugin.read_cback3_conf(path)
    except plugin.Cback3ConfError as exc:
        return dict(accepted=False, error=str(exc)), []
    master = plugin.master_variables(conf)
    staged = {}
    managed = {}
    for host, entry in plugin.peer_hosts(conf["peers"], "localhost"):
        hostvars = plugin.peer_variables(entry)
        name = hostvars.get("cback_peer_name", entry["name"])

        def get(var, run_wide=None):
            return hostvars[var] if var in hostvars else master.get(run_wide or var)

        values = dict(type=hostvars["cback_peer_type"], collect_dir=hostvars["cback_collect_dir"],
                      ignore_failures=hostvars.get("cback_ignore_failure_mode") or "none")
        if values["type"] == "remote":
            values["remote_user"] = get("cback_remote_user", "cback_backup_user")
            values["rcp_command"] = get("cback_rcp_command")
        staged[name] = values
        if hostvars.get("cback_managed"):
            managed[name] = dict(actions=list(get("cback_managed_actions") or []), remote_user=values["remote_user"],
                                 rsh_command=get("cback_rsh_command"), cback_command=get("cback_cback_command"))
    outcome = dict(accepted=True, staging_dir=master.get("cback_staging_dir"), starting_day=master.get("cback_starting_day"),
                   working_dir=master.get("cback_working_dir"), backup_user=master.get("cback_backup_user"),
                   backup_group=master.get("cback_backup_group"), staged=staged, managed=managed)
    return outcome, conf["warnings"]


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """{case: (path, cback3's outcome)}: every file of the table, through the oracle in one subprocess."""
    base = tmp_path_factory.mktemp("differential")
    paths = {}
    for name, text in CASES:
        paths[name] = str(base / ("%s.conf" % name))
        with open(paths[name], "w") as handle:
            handle.write(text)
    proc = subprocess.run([SYSTEM_PYTHON, "-c", ORACLE] + list(paths.values()), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    oracle = json.loads(proc.stdout.decode())
    return dict((name, (path, oracle[path])) for name, path in paths.items())


def warned_about(warnings, *words):
    return any(all(word in warning for word in words) for warning in warnings)


@pytest.mark.parametrize("name", [name for name, _text in CASES])
def test_plugin_decides_as_cback3(cases, name):
    path, expected = cases[name]
    got, warnings = plugin_outcome(path)
    assert got["accepted"] == expected["accepted"], "cback3: %s\nplugin: %s" % (expected, got)
    if not expected["accepted"]:
        assert got["error"], got
        return
    for key in ("staging_dir", "starting_day", "working_dir", "backup_user", "backup_group"):
        assert got[key] == expected[key], key
    # Staged: the same peers, each with the same settings as cback3 stage takes.
    assert sorted(got["staged"]) == sorted(expected["staged"])
    for peer_name, values in expected["staged"].items():
        mine = dict(got["staged"][peer_name])
        if peer_name in got["managed"] and mine.get("remote_user") != values.get("remote_user"):
            # One remote user per host: a managed peer's is its peers entry's; cback3 stages with its stage entry's.
            assert warned_about(warnings, "(%s)" % peer_name, "backup_user", "peers/peer["), warnings
            mine["remote_user"] = values["remote_user"]
        assert mine == values, peer_name
    # Managed: cback3's managed peers of the peers section; those the inventory leaves out are warned about.
    for peer_name, values in expected["managed"].items():
        if peer_name in got["managed"]:
            assert got["managed"][peer_name] == values, peer_name
        else:
            assert warned_about(warnings, peer_name, "managed"), (peer_name, warnings)
    assert set(got["managed"]) <= set(expected["managed"]), "managed in the inventory, not for cback3"


def test_table_covers_both_decisions(cases):
    decisions = [outcome["accepted"] for _path, outcome in cases.values()]
    assert decisions.count(True) >= 30 and decisions.count(False) >= 30, decisions


# ---------------------------------------------------------------------------
# The whole way: ansible-inventory --list
# ---------------------------------------------------------------------------


def ansible_inventory(source, env, cwd):
    proc = subprocess.run([os.path.join(VENV_BIN, "ansible-inventory"), "-i", source, "--list"], cwd=cwd, env=env,
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120, check=False)
    return proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")


@pytest.mark.parametrize("name", ["remote-overrides", "managed-in-both", "managed-without-rsh", "no-options"])
def test_ansible_inventory_decides_as_cback3(cases, installed_collections, tmp_path, name):
    path, expected = cases[name]
    source = str(tmp_path / "pool.cback3_conf.yml")
    with open(source, "w") as handle:
        json.dump(dict(plugin="cedarbackup.peer.cback3_conf", path=path), handle)
    env = ansible_environment(installed_collections, tmp_path / "ansible")
    env["ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED"] = "true"
    rc, stdout, stderr = ansible_inventory(source, env, str(tmp_path))
    if not expected["accepted"]:
        assert rc != 0 and path in stderr, stderr
        return
    assert rc == 0, stderr
    data = json.loads(stdout)
    hosts = data["_meta"]["hostvars"]
    assert sorted(data["cback_peers"]["hosts"]) == sorted(expected["staged"])
    unwrap = plain_value
    assert unwrap(hosts["localhost"]["cback_staging_dir"]) == expected["staging_dir"]
    for peer_name, values in expected["staged"].items():
        assert unwrap(hosts[peer_name]["cback_collect_dir"]) == values["collect_dir"]
        assert bool(hosts[peer_name].get("cback_managed")) == (peer_name in expected["managed"])


def plain_value(value):
    """A value of ``ansible-inventory --list`` without the marker of an untrusted string (ansible-core >= 2.19)."""
    if isinstance(value, dict) and list(value) == ["__ansible_unsafe"]:
        return value["__ansible_unsafe"]
    return value

# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hostile inputs: shell metacharacters, option injection, path traversal and control characters in
every module option and inventory variable, against real processes.

Each case plants a payload that would create a marker file of its own (an absolute path under the
test's data directory, which the backup user can write) if any shell, ``su -c``, ssh ``ProxyCommand``
or ``LocalCommand`` ever read it, on the master or on the sshd peer (the same machine).  Payloads in
values that cannot hold a ``/`` (names) spell each ``/`` of the marker's path as ``$(pwd | cut -c1)``.
Every case checks that

1. the marker never appears (nor any other marker),
2. nothing outside the intended staging directories changed: a snapshot of the data directory (bait
   collect directories that a run would stage, the sentinel tree, scripts, ssh config) is compared
   before and after, and the case's own target or staging directory stays empty or absent,
3. an invalid value fails its task (or its peer) with a message naming the option or inventory
   variable; a legal but strange value (a collect, target, staging or working directory, file names,
   command words) is used literally: the files with those exact names are staged byte for byte, the
   command words reach the program unchanged.

The cases run in few processes: one ``ansible-playbook`` run loops over every module-option case
(``cback_stage``, ``cback_collect_indicator``, ``cback_managed_action``, ``cback_stage_run``,
``cback_managed_run``); one run each of ``cedarbackup.peer.stage`` and ``cedarbackup.peer.managed``
takes every peer-variable case as a peer of its own; the run-wide variables that fail a whole run get a
run each, side by side; a few control-character cases call the module_utils task functions directly.
Remote peers are the session's sshd peer1, reached under aliases (``hx-*``), copies run as the
backup user (the child drops to its ids).
"""

import concurrent.futures
import json
import os
import pwd
import shutil
import subprocess

import pytest

from ansible_collections.cedarbackup.peer.plugins.module_utils import _argspec, _runs, _tasks
from ansible_collections.cedarbackup.peer.tests.support.ansible_run import (
    VENV_BIN,
    AnsibleRunner,
    files_only,
    fill,
    public_dir,
    ready,
    remove_tree,
    run_playbook,
    script,
    snapshot,
    today,
    write_inventory,
)
from ansible_collections.cedarbackup.peer.tests.support.module_params import module_params
from ansible_collections.cedarbackup.peer.tests.support.run_summaries import run_reports

# The words a payload is built from; ``{c}`` creates the case's marker, ``{h}`` too without a '/'.
PAYLOAD_FORMS = {
    "semicolon": "x; {c}",
    "substitution": "$({c})",
    "backticks": "`{c}`",
    "pipe": "x | {c}",
    "and": "x && {c}",
    "single quotes": "x'; {c}; '",
    "double quotes": 'x"; {c}; "',
    "newline": "x\n{c}",
    "hidden": "$({h})",
}

# A '/' spelt without '/', '\\' or '$NAME' (which a path option expands): for payloads in single names.
SLASH = "$(pwd | cut -c1)"

SYSTEM_PYTHON = "/usr/bin/python3"  # what modules run with on the master (the local connection)

# Logs one JSON line per call: its arguments, the user and the ssh connection it came over.
RECORDER = """#!/usr/bin/python3
import json, os, pwd, sys
with open({log!r}, "a") as handle:
    handle.write(json.dumps(dict(argv=sys.argv[1:], user=pwd.getpwuid(os.geteuid()).pw_name,
                                 ssh=bool(os.environ.get("SSH_CONNECTION")))) + "\\n")
"""

# An rcp command that logs its first two words, then runs scp with the rest.
RCP_WRAPPER = """#!/usr/bin/python3
import json, os, sys
with open({log!r}, "a") as handle:
    handle.write(json.dumps(sys.argv[1:3]) + "\\n")
os.execv("/usr/bin/scp", ["scp"] + sys.argv[3:])
"""


# ---------------------------------------------------------------------------
# The world the cases run in
# ---------------------------------------------------------------------------


class World(object):
    """The data directory of the module: markers, logs, scripts, bait collect dirs, sentinel, ssh aliases."""

    def __init__(self, root, backup_user, backup_rcp):
        self.root = root
        self.user = backup_user
        self.marks = self._dir("marks", 0o1777)
        self.logs = self._dir("logs", 0o1777)
        self.bin = self._dir("bin")
        self.sentinel = fill(root / "sentinel", {"keep.txt": (b"sentinel\n", 0o644), "secret": (b"root only\n", 0o600)})
        # The backup user's ssh config, with every hx-* name an alias of peer1.
        config = backup_rcp.split()[2]
        with open(config) as handle:
            text = handle.read()
        assert "Host peer1\n" in text, text
        self.ssh_config = self._dir("ssh") / "config"
        self.ssh_config.write_text(text.replace("Host peer1\n", "Host peer1 hx-*\n", 1))
        os.chmod(str(self.ssh_config), 0o644)
        self.rcp = "/usr/bin/scp -F %s -B -q -C" % self.ssh_config
        self.rsh = "/usr/bin/ssh -F %s" % self.ssh_config

    def _dir(self, name, mode=0o755):
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(str(path), mode)
        return path

    def marker(self, case):
        return self.marks / case

    def fields(self, case, **extra):
        """Template fields of a case: ``{c}``/``{h}`` create its marker, ``{m}`` is the marker."""
        marker = str(self.marker(case))
        values = dict(m=marker, c="touch %s" % marker, h='touch "%s"' % marker.replace("/", SLASH), data=str(self.root), case=case)
        values.update(extra)
        return values

    def bait(self, case):
        """A ready collect dir that a run would stage (and mark with ``cback.stage``) if it ran."""
        return ready(self.root / "bait" / case, {"bait.tar": (os.urandom(700), 0o644)})

    def empty_dir(self, *parts):
        path = self.root.joinpath(*parts)
        path.mkdir(parents=True)
        return path

    def recorder(self, name):
        """A script that logs each call to ``logs/<name>.log``; ``(path, log)``."""
        log = self.logs / (name + ".log")
        return script(self.bin / ("record-" + name), RECORDER.format(log=str(log))), log

    def rcp_wrapper(self, name):
        log = self.logs / (name + ".log")
        return script(self.bin / ("rcp-" + name), RCP_WRAPPER.format(log=str(log))), log

    def fired(self):
        """Markers that exist."""
        return sorted(os.listdir(str(self.marks)))


def hostile_files(world, case, remote=True):
    """Collect-dir files whose names hold shell syntax and option look-alikes: ``{name: (bytes, mode)}``."""
    fields = world.fields(case)
    names = ["$({h})", "`{h}`", "x; {h}", "a && {h} | b", "-oProxyCommand={h}", "it's \"quoted\" > out",
             "tab\there", "star*glob?[ab]", "~tilde", "--"]
    # A local peer's names are joined to its path as Cedar Backup's pathJoin does, which turns '\\' into '/';
    # scp -O encodes a newline in a remote name (test_security.py, finding 13).
    names += ["back\\slash"] if remote else ["new\nline", "escape\x1b[31m"]
    return dict((name.format(**fields), (os.urandom(300 + 7 * index), 0o644)) for index, name in enumerate(names))


def outside(root, skip=()):
    """Every entry under ``root`` but the ``skip`` paths (subtrees or files), directory mtimes left out."""
    skip = [os.path.relpath(str(path), str(root)) for path in skip]
    return dict((key, value) for key, value in files_only(snapshot(root)).items()
                if not any(key == part or key.startswith(part + "/") for part in skip))


def changes(before, after):
    return sorted(key for key in set(before) | set(after) if before.get(key) != after.get(key))


def staged_names(directory):
    return sorted(name for name in os.listdir(str(directory)) if not name.startswith("."))


def assert_staged_exactly(directory, files):
    """``directory`` holds exactly ``files`` (and ``cback.collect``), byte for byte."""
    expected = dict(files, **{"cback.collect": (b"", 0o644)})
    assert staged_names(directory) == sorted(expected), (staged_names(directory), sorted(expected))
    for name, (content, _mode) in expected.items():
        with open(os.path.join(str(directory), name), "rb") as handle:
            assert handle.read() == content, name


def shown(result):
    """A task result as text, without Ansible's own keys (assertion messages)."""
    return json.dumps(dict((key, value) for key, value in result.items() if not key.startswith("_ansible")), sort_keys=True)


def calls(log):
    """The JSON lines a recorder or rcp wrapper logged (``[]`` when it never ran)."""
    if not os.path.exists(str(log)):
        return []
    with open(str(log)) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def quoted_command(program, words):
    """A command line as Cedar Backup splits it (spaces, double quotes) for ``program`` and ``words``."""
    assert not [word for word in words if '"' in word], words
    return " ".join([program] + ['"%s"' % word if " " in word else word for word in words])


class Outcome(object):
    """What a scenario left: its run(s), the tree outside the intended directories before and after."""

    def __init__(self, world, runs, before, after, **extra):
        self.world, self.runs, self.before, self.after = world, runs, before, after
        self.__dict__.update(extra)

    def assert_nothing_ran(self, case):
        assert not os.path.lexists(str(self.world.marker(case))), "the payload of %s ran" % case
        assert self.world.fired() == [], "payloads ran: %s" % self.world.fired()

    def assert_outside_unchanged(self):
        changed = changes(self.before, self.after)
        assert not changed, "changed outside the intended directories: %s" % changed


def snapshot_around(world, skip, action):
    """``(before, result, after)`` of ``outside(world.root, skip)`` around ``action()``."""
    before = outside(world.root, skip)
    result = action()
    return before, result, outside(world.root, skip)


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data():
    """A directory under /tmp every local user can traverse: markers, collect dirs, staging trees."""
    path = public_dir("cbhostile-")
    try:
        yield path
    finally:
        remove_tree(path)


@pytest.fixture(scope="module")
def world(data, backup_user, ssh_pool):
    rcp, _rsh = ssh_pool.client_for_user(backup_user)
    return World(data, backup_user, rcp)


def new_runner(installed_collections, base):
    """An ``AnsibleRunner`` under ``base``, with pipelining (module runs on the master are local)."""
    runner = AnsibleRunner(installed_collections, base)
    runner.env["ANSIBLE_PIPELINING"] = "true"
    return runner


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("hostile-runs")
    try:
        yield path
    finally:
        shutil.rmtree(str(path), ignore_errors=True)


def test_payloads_run_when_a_shell_reads_them(world):
    """The payloads are live: as the backup user, each form creates its marker when a shell reads it
    in the context it breaks out of, and ``-oProxyCommand=`` does when ssh reads it.

    So a marker that never appears in the cases below means that nothing ever evaluated the value.
    """
    contexts = {"single quotes": "echo '%s'", "double quotes": 'echo "%s"'}
    for index, form in enumerate(sorted(PAYLOAD_FORMS)):
        case = "control-%d" % index
        payload = PAYLOAD_FORMS[form].format(**world.fields(case))
        subprocess.run(["su", world.user, "-c", contexts.get(form, "echo %s") % payload], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=30, check=False)
        assert world.marker(case).exists(), (form, payload)
        world.marker(case).unlink()
    fields = world.fields("control-ssh")
    subprocess.run(["/usr/bin/ssh", "-F", "/dev/null", "-oBatchMode=yes", "-oProxyCommand=" + fields["h"], "hx-none", "true"],
                   user=world.user, env=dict(os.environ, HOME=pwd.getpwnam(world.user).pw_dir), cwd="/",
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30, check=False)
    assert world.marker("control-ssh").exists()
    world.marker("control-ssh").unlink()
    assert world.fired() == []


# ---------------------------------------------------------------------------
# Module options, through one ansible-playbook run
# ---------------------------------------------------------------------------

# (case, module, option overrides, option the failure message must name).  Each case starts from
# valid options that would stage the case's bait collect dir into its own target (or run a recorder
# on the peer) if the hostile value were let through.  ``peer.<option>``: an option of the run
# modules' one peer, which then fails alone.
REFUSED_OPTIONS = [
    ("stage-name-semicolon", "stage", {"name": "hx-a;{h}"}, "name"),
    ("stage-name-substitution", "stage", {"name": "$({h})"}, "name"),
    ("stage-name-proxycommand", "stage", {"name": "-oProxyCommand={h}"}, "name"),
    ("stage-name-newline", "stage", {"name": "hx-a\n{h}"}, "name"),
    ("stage-name-nul", "stage", {"name": "hx-a\x00-oProxyCommand={h}"}, "name"),
    ("stage-name-dotdot-local", "stage", {"type": "local", "name": ".."}, "name"),
    ("stage-name-slash-local", "stage", {"type": "local", "name": "../../sentinel"}, "name"),
    ("stage-remote-user-semicolon", "stage", {"remote_user": "root;{c}"}, "remote_user"),
    ("stage-remote-user-proxycommand", "stage", {"remote_user": "-oProxyCommand={c}"}, "remote_user"),
    ("stage-remote-user-at-host", "stage", {"remote_user": "root@127.0.0.1:"}, "remote_user"),
    ("stage-local-user-substitution", "stage", {"local_user": "cbackpeer$({c})"}, "local_user"),
    ("stage-local-user-option", "stage", {"local_user": "--session-command={c}"}, "local_user"),
    ("stage-collect-dir-semicolon", "stage", {"collect_dir": "{bait}; {c}"}, "collect_dir"),
    ("stage-collect-dir-backticks", "stage", {"collect_dir": "{bait}/`{c}`"}, "collect_dir"),
    ("stage-collect-dir-newline", "stage", {"collect_dir": "{bait}\n{c}"}, "collect_dir"),
    ("stage-collect-dir-relative", "stage", {"collect_dir": "../../../../etc"}, "collect_dir"),
    ("stage-working-dir-relative", "stage", {"working_dir": "work/../../sentinel"}, "working_dir"),
    ("stage-target-dir-relative", "stage", {"target_dir": "../sentinel"}, "target_dir"),
    ("stage-target-dir-dotdot-missing", "stage", {"target_dir": "{data}/sentinel/../no-such-dir"}, "target_dir"),
    ("stage-indicator-traversal", "stage", {"stage_indicator": "../../sentinel/planted"}, "stage_indicator"),
    ("stage-indicator-option", "stage", {"stage_indicator": "-oProxyCommand={h}"}, "stage_indicator"),
    ("stage-indicator-substitution", "stage", {"stage_indicator": "cback.stage$({h})"}, "stage_indicator"),
    ("stage-collect-indicator-traversal", "stage", {"collect_indicator": "../../../../etc/shadow"}, "collect_indicator"),
    ("stage-owner-semicolon", "stage", {"owner": "root;{c}"}, "owner"),
    ("stage-owner-nul", "stage", {"owner": "root\x00;{c}"}, "owner"),
    ("stage-group-substitution", "stage", {"group": "$({c})"}, "group"),
    ("stage-mode-semicolon", "stage", {"mode": "0640;{c}"}, "mode"),
    ("stage-mode-symbolic", "stage", {"mode": "u+s"}, "mode"),
    ("stage-rcp-command-proxycommand", "stage", {"rcp_command": "-oProxyCommand={c}"}, "rcp_command"),
    ("stage-type-semicolon", "stage", {"type": "remote;{c}"}, "type"),
    ("indicator-collect-indicator-pipe", "indicator", {"collect_indicator": "cback.collect|{h}"}, "collect_indicator"),
    ("indicator-name-backticks", "indicator", {"name": "`{h}`"}, "name"),
    ("indicator-rsh-command-localcommand", "indicator", {"rsh_command": "-oPermitLocalCommand=yes -oLocalCommand={c}"},
     "rsh_command"),
    ("action-semicolon", "action", {"action": "collect; {c}"}, "action"),
    ("action-substitution", "action", {"action": "$({c})"}, "action"),
    ("action-option", "action", {"action": "--config={data}/sentinel/keep.txt"}, "action"),
    ("action-newline", "action", {"action": "collect\n{c}"}, "action"),
    ("action-traversal", "action", {"action": "../../../bin/sh"}, "action"),
    ("action-cback-command-proxycommand", "action", {"cback_command": "-oProxyCommand={c}"}, "cback_command"),
    ("action-cback-command-nul", "action", {"cback_command": "{recorder}\x00;{c}"}, "cback_command"),
    ("action-name-proxycommand", "action", {"name": "-oProxyCommand={h}"}, "name"),
    ("action-remote-user-quotes", "action", {"remote_user": "root'; {c}; '"}, "remote_user"),
    ("run-staging-dir-relative", "stage_run", {"staging_dir": "../{case}"}, "staging_dir"),
    ("run-backup-user-semicolon", "stage_run", {"backup_user": "cbackpeer;{c}"}, "backup_user"),
    ("run-backup-group-substitution", "stage_run", {"backup_group": "$({c})"}, "backup_group"),
    ("run-stage-indicator-traversal", "stage_run", {"stage_indicator": "../../../../sentinel/planted"}, "stage_indicator"),
    ("run-collect-indicator-backticks", "stage_run", {"collect_indicator": "cback.collect`{h}`"}, "collect_indicator"),
    ("run-starting-day-semicolon", "stage_run", {"starting_day": "monday;{c}"}, "starting_day"),
    ("run-peer-name-proxycommand", "stage_run", {"peer.name": "-oProxyCommand={h}"}, "peers[0].name"),
    ("run-peer-collect-dir-and", "stage_run", {"peer.collect_dir": "{bait} && {c}"}, "peers[0].collect_dir"),
    ("managed-run-action-and", "managed_run", {"action": "collect && {c}"}, "action"),
    ("managed-run-peer-cback-command-option", "managed_run", {"peer.cback_command": "-oProxyCommand={c}"},
     "peers[0].cback_command"),
]

# Legal values the modules must use literally (checked one by one in test_module_uses_legal_value_literally).
LITERAL_OPTIONS = [
    "stage-remote-hostile-file-names",
    "stage-remote-hostile-file-names-legacy-scp",
    "stage-remote-sftp-request-paths",
    "stage-local-hostile-paths-and-indicator",
    "indicator-remote-collect-dir-with-spaces",
    "action-remote-cback-command-words",
    "action-local-cback-command-words-as-backup-user",
    "stage-rcp-command-words-as-backup-user",
]

TASKS = [
    ("stage", "cedarbackup.peer.cback_stage",
     ("name", "type", "collect_dir", "remote_user", "local_user", "rcp_command", "rsh_command", "working_dir", "target_dir",
      "owner", "group", "mode", "stage_indicator", "collect_indicator", "check_collect_indicator", "connect_timeout")),
    ("indicator", "cedarbackup.peer.cback_collect_indicator",
     ("name", "type", "collect_dir", "remote_user", "local_user", "rcp_command", "rsh_command", "working_dir",
      "collect_indicator", "connect_timeout")),
    ("action", "cedarbackup.peer.cback_managed_action",
     ("name", "type", "action", "full", "cback_command", "remote_user", "local_user", "rsh_command", "connect_timeout")),
    ("stage_run", "cedarbackup.peer.cback_stage_run",
     ("peers", "staging_dir", "working_dir", "backup_user", "backup_group", "starting_day", "stage_indicator",
      "collect_indicator", "connect_timeout")),
    ("managed_run", "cedarbackup.peer.cback_managed_run", ("peers", "action", "backup_user", "connect_timeout")),
]

# Command words with shell syntax: they must reach the program as they are, one word each.
HOSTILE_WORDS = ["$({c})", ";{c}", "`{c}`", "x'y;{c}", "a b && {c} | c"]


def module_base(world, module, case):
    """Valid options of ``module`` for ``case``, with its bait collect dir, target and recorder."""
    alias = "hx-" + case
    peer = dict(name=alias, type="remote", collect_dir=str(world.bait(case)), remote_user="root", local_user=world.user,
                rcp_command=world.rcp, rsh_command=world.rsh, connect_timeout=10)
    if module == "stage":
        return dict(peer, target_dir=str(world.empty_dir("targets", case)), check_collect_indicator=True)
    if module == "indicator":
        return peer
    recorder, _log = world.recorder(case)
    if module == "action":
        return dict(name=alias, action="collect", cback_command=recorder, remote_user="root", local_user=world.user,
                    rsh_command=world.rsh, connect_timeout=10)
    if module == "stage_run":
        return dict(staging_dir=str(world.root / "runs" / case), backup_user=world.user, backup_group=world.user,
                    connect_timeout=10, peers=[dict(name=alias, collect_dir=peer["collect_dir"], remote_user="root",
                                                    rcp_command=world.rcp, rsh_command=world.rsh)])
    return dict(action="collect", backup_user=world.user, connect_timeout=10,
                peers=[dict(name=alias, remote_user="root", rsh_command=world.rsh, cback_command=recorder)])


def refused_args(world, case, module, overrides):
    args = module_base(world, module, case)
    fields = world.fields(case, bait=str(world.root / "bait" / case), recorder=str(world.bin / ("record-" + case)))
    for key, value in overrides.items():
        value = value.format(**fields)
        if key.startswith("peer."):
            args["peers"][0][key[5:]] = value
        else:
            args[key] = value
    return args


def literal_cases(world):
    """``{case: (module, args)}`` of LITERAL_OPTIONS, and what each check needs."""
    cases, expect = {}, {}
    # Remote peers whose file names hold shell syntax; target and working dirs with shell syntax too.
    for case, extra in (("stage-remote-hostile-file-names", ""), ("stage-remote-hostile-file-names-legacy-scp", " -O")):
        fields = world.fields(case)
        files = hostile_files(world, case)
        collect = ready(world.root / "remote" / case, files)
        target = world.empty_dir("targets", "{case} $({h}) ;|&'\"".format(**fields))
        work = world.empty_dir("work", "{case} `{h}`".format(**fields))
        cases[case] = ("stage", dict(name="hx-" + case, type="remote", collect_dir=str(collect), remote_user="root",
                                     local_user=world.user, rcp_command=world.rcp + extra, rsh_command=world.rsh,
                                     working_dir=str(work), target_dir=str(target), check_collect_indicator=True,
                                     connect_timeout=10))
        expect[case] = dict(files=files, collect=collect, target=target, work=work)
    # Over SFTP (the peer's session takes local and remote paths in its requests): a collect
    # directory with every character a remote one may hold, and a working directory (local, in
    # get and put requests) with glob characters and quotes, taken literally.
    case = "stage-remote-sftp-request-paths"
    fields = world.fields(case)
    files = hostile_files(world, case)
    collect = ready(world.root / "remote" / ("%s a b %%+=:,~@-x" % case), files)
    target = world.empty_dir("targets", case)
    work = world.empty_dir("work", '{case} *?[w] "q"'.format(**fields))
    world.empty_dir("work", '{case} aw "q"'.format(**fields))  # what the pattern would match
    cases[case] = ("stage", dict(name="hx-" + case, type="remote", collect_dir=str(collect), remote_user="root",
                                 local_user=world.user, rcp_command=world.rcp, rsh_command=world.rsh,
                                 working_dir=str(work), target_dir=str(target), check_collect_indicator=True,
                                 connect_timeout=10))
    expect[case] = dict(files=files, collect=collect, target=target, work=work)
    # A local peer: collect dir, target dir and stage indicator with shell syntax, every kind of name.
    case = "stage-local-hostile-paths-and-indicator"
    fields = world.fields(case)
    files = hostile_files(world, case, remote=False)
    collect = ready(world.root / "local" / "{case} $({h}) ;|&'\"".format(**fields), files)
    target = world.empty_dir("targets", "{case} `{h}`".format(**fields))
    indicator = "cback.stage;{h}".format(**fields)
    cases[case] = ("stage", dict(type="local", collect_dir=str(collect), target_dir=str(target), stage_indicator=indicator))
    expect[case] = dict(files=files, collect=collect, target=target, indicator=indicator)
    # A remote collect dir with spaces: the readiness check finds its indicator.
    case = "indicator-remote-collect-dir-with-spaces"
    collect = ready(world.root / "remote" / ("%s with spaces" % case), {"a.tar": (b"a", 0o644)})
    cases[case] = ("indicator", dict(name="hx-" + case, type="remote", collect_dir=str(collect), remote_user="root",
                                     local_user=world.user, rcp_command=world.rcp, rsh_command=world.rsh, connect_timeout=10))
    expect[case] = dict(collect=collect)
    # cback_command words with shell syntax: over ssh to the peer, and locally as the backup user.
    for case, local in (("action-remote-cback-command-words", False), ("action-local-cback-command-words-as-backup-user", True)):
        fields = world.fields(case)
        words = [word.format(**fields) for word in HOSTILE_WORDS]
        recorder, log = world.recorder(case)
        args = dict(action="collect", full=True, cback_command=quoted_command(recorder, words), local_user=world.user)
        if local:
            args.update(type="local")
        else:
            args.update(name="hx-" + case, type="remote", remote_user="root", rsh_command=world.rsh, connect_timeout=10)
        cases[case] = ("action", args)
        expect[case] = dict(words=words, log=log, ssh=not local, user=world.user if local else "root")
    # rcp command words with shell syntax, as the backup user, to a wrapper that logs them and runs scp.
    case = "stage-rcp-command-words-as-backup-user"
    fields = world.fields(case)
    words = ["$({c})".format(**fields), "x';{c};'`{c}`".format(**fields)]
    wrapper, log = world.rcp_wrapper(case)
    files = {"plain.tar": (os.urandom(900), 0o644)}
    collect = ready(world.root / "remote" / case, files)
    target = world.empty_dir("targets", case)
    rcp = " ".join([quoted_command(wrapper, words)] + world.rcp.split()[1:])
    cases[case] = ("stage", dict(name="hx-" + case, type="remote", collect_dir=str(collect), remote_user="root",
                                 local_user=world.user, rcp_command=rcp, rsh_command=world.rsh, target_dir=str(target),
                                 check_collect_indicator=True, connect_timeout=10))
    expect[case] = dict(files=files, collect=collect, target=target, words=words, log=log)
    return cases, expect


WORKERS = 4  # inventory hosts (local connection) the module cases are spread over, one fork each


@pytest.fixture(scope="module")
def module_run(world, installed_collections, runs_dir):
    """One ansible-playbook run: a task per module, looping over its refused and literal cases
    (spread over WORKERS local hosts, which run side by side)."""
    cases = [(case, module, refused_args(world, case, module, overrides)) for case, module, overrides, _option in REFUSED_OPTIONS]
    literal, expect = literal_cases(world)
    cases += [(case, module, args) for case, (module, args) in literal.items()]
    items = dict(("w%d" % worker, dict((module, []) for module, _name, _options in TASKS)) for worker in range(WORKERS))
    for index, (case, module, args) in enumerate(cases):
        items["w%d" % (index % WORKERS)][module].append(dict(id=case, args=args))
    tasks = []
    for module, name, options in TASKS:
        tasks.append({
            "name": module, name: dict((option, "{{ item.args.%s | default(omit) }}" % option) for option in options),
            "loop": "{{ cases[inventory_hostname].%s }}" % module, "loop_control": {"label": "{{ item.id }}"},
            "ignore_errors": True,
        })
    play = runs_dir / "modules.yml"
    play.write_text(json.dumps([dict(name="Hostile module options", hosts="all", gather_facts=False, tasks=tasks)]))
    variables = runs_dir / "modules-vars.json"
    variables.write_text(json.dumps(dict(cases=items)))
    runner = new_runner(installed_collections, runs_dir / "modules")
    inventory = runner.base / "modules.ini"
    inventory.write_text("\n".join("w%d ansible_connection=local ansible_python_interpreter=%s" % (worker, SYSTEM_PYTHON)
                                   for worker in range(WORKERS)) + "\n")
    argv = [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), "-f", str(WORKERS), str(play), "-e", "@%s" % variables]
    skip = [world.logs, world.root / "runs"]  # runs: checked case by case
    for case, values in expect.items():
        if "target" in values:
            skip.append(values["target"])
        if case.startswith("stage-"):
            skip.append(values["collect"] / values.get("indicator", "cback.stage"))
    before, run, after = snapshot_around(world, skip, lambda: run_playbook(argv, runner.env, runner.base, runner.base / "modules.json"))
    results = {}
    for module, _name, _options in TASKS:
        for record in run.find(module):
            for result in record["result"].get("results", []):
                results[result["item"]["id"]] = result
    assert sorted(results) == sorted(case for case, _module, _args in cases), run
    return Outcome(world, [run], before, after, results=results, expect=expect)


def refusal_message(result, option):
    """The message of a refused case: the task's, or (``peers[0].*``) its one peer's."""
    if option and option.startswith("peers["):
        assert not result.get("failed"), shown(result)
        peer = result["peers"][0]
        assert peer["status"] == "failed" and not peer.get("ready") and not peer.get("count"), peer
        return peer["message"]
    assert result.get("failed"), shown(result)
    return result.get("msg", "") + result.get("module_stderr", "")


@pytest.mark.parametrize("case, module, overrides, option", REFUSED_OPTIONS, ids=[case[0] for case in REFUSED_OPTIONS])
def test_module_refuses_hostile_option(module_run, world, case, module, overrides, option):
    """The task (or its one peer) fails naming the option; nothing ran, nothing was staged or written."""
    result = module_run.results[case]
    message = refusal_message(result, option)
    assert option in message, (option, message)
    module_run.assert_nothing_ran(case)
    module_run.assert_outside_unchanged()
    if module == "stage":
        assert os.listdir(str(world.root / "targets" / case)) == [], "staged although refused"
    if module in ("action", "managed_run"):
        assert calls(world.logs / (case + ".log")) == [], "the cback command ran although refused"
    if module == "stage_run" and not option.startswith("peers["):
        assert not (world.root / "runs" / case).exists(), "the staging dir was created although refused"
    if module == "stage_run" and option.startswith("peers["):
        daily = world.root / "runs" / case / today()[0]
        assert sorted(os.listdir(str(daily))) == ["cback.stage"], "a refused peer got a directory"


def check_stage_remote(outcome, case):
    values, result = outcome.expect[case], outcome.results[case]
    assert not result.get("failed") and result["ready"] and result["stage_indicator_written"], shown(result)
    assert sorted(result["files"]) == sorted(list(values["files"]) + ["cback.collect"]), shown(result)
    assert_staged_exactly(values["target"], values["files"])
    assert (values["collect"] / "cback.stage").is_file()
    assert os.listdir(str(values["work"])) == [], "the private working directory is removed"


def check_stage_local(outcome, case):
    values, result = outcome.expect[case], outcome.results[case]
    assert not result.get("failed") and result["stage_indicator_written"], shown(result)
    assert_staged_exactly(values["target"], values["files"])
    indicator = values["collect"] / values["indicator"]
    assert indicator.is_file() and indicator.stat().st_size == 0
    assert not (values["collect"] / "cback.stage").exists()


def check_indicator_spaces(outcome, case):
    result = outcome.results[case]
    assert not result.get("failed") and result["ready"] is True, shown(result)


def check_action_words(outcome, case):
    values, result = outcome.expect[case], outcome.results[case]
    assert not result.get("failed") and result["rc"] == 0, shown(result)
    logged = calls(values["log"])
    assert len(logged) == 1, logged
    assert logged[0]["argv"] == values["words"] + ["--full", "collect"], logged
    assert (logged[0]["user"], logged[0]["ssh"]) == (values["user"], values["ssh"]), logged


def check_rcp_words(outcome, case):
    values, result = outcome.expect[case], outcome.results[case]
    assert not result.get("failed") and result["stage_indicator_written"], shown(result)
    assert_staged_exactly(values["target"], values["files"])
    logged = calls(values["log"])
    # three calls: the readiness check, the copy, the stage indicator
    assert len(logged) == 3 and all(words == values["words"] for words in logged), logged


LITERAL_CHECKS = {
    "stage-remote-hostile-file-names": check_stage_remote,
    "stage-remote-hostile-file-names-legacy-scp": check_stage_remote,
    "stage-remote-sftp-request-paths": check_stage_remote,
    "stage-local-hostile-paths-and-indicator": check_stage_local,
    "indicator-remote-collect-dir-with-spaces": check_indicator_spaces,
    "action-remote-cback-command-words": check_action_words,
    "action-local-cback-command-words-as-backup-user": check_action_words,
    "stage-rcp-command-words-as-backup-user": check_rcp_words,
}


@pytest.mark.parametrize("case", LITERAL_OPTIONS)
def test_module_uses_legal_value_literally(module_run, case):
    """A legal value with shell syntax is data: the exact names are staged byte for byte, the exact
    words reach the program; nothing ran, nothing outside the target changed."""
    LITERAL_CHECKS[case](module_run, case)
    module_run.assert_nothing_ran(case)
    module_run.assert_outside_unchanged()


# ---------------------------------------------------------------------------
# Peer variables of the stage role: one cedarbackup.peer.stage run, a peer per case
# ---------------------------------------------------------------------------

# (case, inventory host (None: hx-<case>), host vars over a remote peer with the case's bait collect
# dir, variable the peer's failure must name).  Each refused peer fails alone; the others are staged.
STAGE_PEER_REFUSED = [
    ("peer-name-dotdot", None, {"cback_peer_type": "local", "cback_peer_name": ".."}, "cback_peer_name"),
    ("peer-name-traversal", None, {"cback_peer_type": "local", "cback_peer_name": "../../sentinel"}, "cback_peer_name"),
    ("peer-host-proxycommand", "-oProxyCommand={h}", {}, "cback_peer_name"),
    ("peer-name-substitution", None, {"cback_peer_name": "$({h})"}, "cback_peer_name"),
    ("peer-name-newline", None, {"cback_peer_name": "hx-x\n{h}"}, "cback_peer_name"),
    ("peer-remote-user-proxycommand", None, {"cback_remote_user": "-oProxyCommand={c}"}, "cback_remote_user"),
    ("peer-collect-dir-semicolon", None, {"cback_collect_dir": "{bait}; {c}"}, "cback_collect_dir"),
    ("peer-collect-dir-relative", None, {"cback_collect_dir": "../bait/{case}"}, "cback_collect_dir"),
    ("peer-rcp-command-proxycommand", None, {"cback_rcp_command": "-oProxyCommand={c}"}, "cback_rcp_command"),
    ("peer-rsh-command-localcommand", None, {"cback_rsh_command": "-oLocalCommand={c}"}, "cback_rsh_command"),
    ("peer-type-semicolon", None, {"cback_peer_type": "remote;{c}"}, "cback_peer_type"),
    ("peer-ignore-failure-mode-substitution", None, {"cback_ignore_failure_mode": "all$({c})"}, "cback_ignore_failure_mode"),
    ("peer-managed-semicolon", None, {"cback_managed": "yes;{c}"}, "cback_managed"),
    ("peer-managed-actions-backticks", None, {"cback_managed_actions": "collect,`{c}`"}, "cback_managed_actions"),
]

STAGE_PEER_LITERAL = [
    "staging-and-working-dirs-with-shell-syntax",
    "remote-peer-hostile-file-names",
    "remote-peer-hostile-file-names-legacy-scp",
    "peer-ansible-connection-vars-never-used",
    "local-peer-hostile-name-and-collect-dir",
    "peer-rcp-command-words-as-backup-user",
    "remote-collect-dir-with-spaces",
]


def yaml_inventory(path, master_vars, peers, all_vars=None):
    """A YAML inventory (any host name, any value): ``write_inventory`` with the interpreter set."""
    return write_inventory(path, dict(master_vars, ansible_python_interpreter=SYSTEM_PYTHON), peers, all_vars, fmt="yaml")


def run_wide(world, staging, **extra):
    """Run-wide vars: stage as root for the backup user, copies as that user over the hx-* aliases."""
    values = dict(cback_staging_dir=str(staging), cback_backup_user=world.user, cback_backup_group=world.user,
                  cback_rcp_command=world.rcp, cback_rsh_command=world.rsh, cback_connect_timeout=10)
    values.update(extra)
    return values


def host_records(run, task, host):
    return [record for record in run.find(task) if record["host"] == host]


def peer_report(run, host):
    """``(status, message)`` of the task ``Report the peer`` on ``host``."""
    records = host_records(run, "Report the peer", host)
    assert len(records) == 1, (host, run)
    return records[0]["status"], str(records[0]["result"].get("msg", ""))


@pytest.fixture(scope="module")
def stage_role_run(world, installed_collections, runs_dir):
    """``ansible-playbook cedarbackup.peer.stage``: a staging and a working dir with shell syntax, a
    peer per refused case, and peers whose legal values hold shell syntax."""
    peers, expect = {}, {}
    for case, host, overrides, _variable in STAGE_PEER_REFUSED:
        fields = world.fields(case, bait=str(world.bait(case)))
        host = (host or "hx-" + case).format(**fields)
        hostvars = dict(cback_collect_dir=fields["bait"], cback_remote_user="root")
        hostvars.update((key, value.format(**fields)) for key, value in overrides.items())
        peers[host] = hostvars
        expect[case] = dict(host=host)
    case = "staging-and-working-dirs-with-shell-syntax"
    fields = world.fields(case)
    staging = world.root / "{case} $({h}) ;|&'\"".format(**fields)
    work = world.empty_dir("{case} `{h}`".format(**fields))
    expect[case] = dict(staging=staging, work=work)
    for case, rcp in (("remote-peer-hostile-file-names", None), ("remote-peer-hostile-file-names-legacy-scp", world.rcp + " -O")):
        files = hostile_files(world, case)
        peers["hx-" + case] = dict(cback_collect_dir=str(ready(world.root / "remote" / case, files)), cback_remote_user="root")
        if rcp:
            peers["hx-" + case]["cback_rcp_command"] = rcp
        expect[case] = dict(name="hx-" + case, files=files)
    case = "peer-ansible-connection-vars-never-used"
    fields, files = world.fields(case), {"plain.tar": (os.urandom(500), 0o644)}
    peers["hx-" + case] = dict(
        cback_collect_dir=str(ready(world.root / "remote" / case, files)), cback_remote_user="root",
        ansible_host="127.0.0.1;{c}".format(**fields), ansible_user="$({c})".format(**fields),
        ansible_ssh_common_args="-oProxyCommand={c}".format(**fields),
        ansible_ssh_extra_args="-oPermitLocalCommand=yes -oLocalCommand={c}".format(**fields),
    )
    expect[case] = dict(name="hx-" + case, files=files)
    case = "local-peer-hostile-name-and-collect-dir"
    fields, files = world.fields(case), hostile_files(world, case, remote=False)
    name = "hx-local $({h}) ;|&'\"".format(**fields)
    peers[name] = dict(cback_peer_type="local",
                       cback_collect_dir=str(ready(world.root / "local" / "{case} `{h}` ;|&'\"".format(**fields), files)))
    expect[case] = dict(name=name, files=files)
    case = "peer-rcp-command-words-as-backup-user"
    fields, files = world.fields(case), {"plain.tar": (os.urandom(600), 0o644)}
    words = ["$({c})".format(**fields), "x';{c};'`{c}`".format(**fields)]
    wrapper, log = world.rcp_wrapper(case)
    peers["hx-" + case] = dict(cback_collect_dir=str(ready(world.root / "remote" / case, files)), cback_remote_user="root",
                               cback_rcp_command=" ".join([quoted_command(wrapper, words)] + world.rcp.split()[1:]))
    expect[case] = dict(name="hx-" + case, files=files, words=words, log=log)
    case = "remote-collect-dir-with-spaces"
    files = {"plain.tar": (os.urandom(400), 0o644), "other file.tar": (os.urandom(300), 0o644)}
    peers["hx-" + case] = dict(cback_collect_dir=str(ready(world.root / "remote" / "collect dir with spaces", files)),
                               cback_remote_user="root")
    expect[case] = dict(name="hx-" + case, files=files)
    master = run_wide(world, staging, cback_working_dir=str(work), ansible_connection="local")
    runner = new_runner(installed_collections, runs_dir / "stage-role")
    inventory = yaml_inventory(runner.base / "stage.yml", master, peers)
    staged = [values["name"] for values in expect.values() if "name" in values]
    skip = [world.logs, staging] + [os.path.join(peers[name]["cback_collect_dir"], "cback.stage") for name in staged]
    before, run, after = snapshot_around(world, skip, lambda: runner.run("stage", inventory))
    return Outcome(world, [run], before, after, run=run, expect=expect, peers=peers, staging=staging,
                   daily=staging / today()[0], staged=staged)


@pytest.mark.parametrize("case, host, overrides, variable", STAGE_PEER_REFUSED, ids=[case[0] for case in STAGE_PEER_REFUSED])
def test_stage_role_refuses_hostile_peer_variable(stage_role_run, case, host, overrides, variable):
    """The peer fails naming the variable, gets no staging directory, its bait is not staged or
    marked; the other peers are staged; nothing ran."""
    run = stage_role_run.run
    status, message = peer_report(run, stage_role_run.expect[case]["host"])
    assert status == "failed" and variable in message and "invalid settings" in message, (status, message)
    assert sorted(os.listdir(str(stage_role_run.daily))) == sorted(stage_role_run.staged + ["cback.stage"]), run
    assert not (stage_role_run.world.root / "bait" / case / "cback.stage").exists()
    stage_role_run.assert_nothing_ran(case)
    stage_role_run.assert_outside_unchanged()


def check_role_dirs(outcome, case):
    values, date = outcome.expect[case], today()[0]
    assert sorted(os.listdir(str(outcome.staging))) == [date[:4]]
    assert sorted(os.listdir(str(outcome.staging / date[:7]))) == sorted([date[8:]] + [os.path.basename(path) for path in run_reports(date)])
    assert sorted(os.listdir(str(outcome.daily))) == sorted(outcome.staged + ["cback.stage"])
    assert os.listdir(str(values["work"])) == [], "the private working directories are removed"


def check_role_staged(outcome, case):
    values = outcome.expect[case]
    status, message = peer_report(outcome.run, values["name"])
    assert status == "ok", (status, message, outcome.run)
    assert_staged_exactly(outcome.daily / values["name"], values["files"])
    assert os.path.isfile(os.path.join(outcome.peers[values["name"]]["cback_collect_dir"], "cback.stage"))
    if "words" in values:
        logged = calls(values["log"])
        assert len(logged) == 3 and all(words == values["words"] for words in logged), logged


def check_role_spaces(outcome, case):
    """The files are staged byte for byte; whatever the outcome, nothing else is written."""
    values = outcome.expect[case]
    assert_staged_exactly(outcome.daily / values["name"], values["files"])


STAGE_ROLE_CHECKS = {
    "staging-and-working-dirs-with-shell-syntax": check_role_dirs,
    "remote-peer-hostile-file-names": check_role_staged,
    "remote-peer-hostile-file-names-legacy-scp": check_role_staged,
    "peer-ansible-connection-vars-never-used": check_role_staged,
    "local-peer-hostile-name-and-collect-dir": check_role_staged,
    "peer-rcp-command-words-as-backup-user": check_role_staged,
    "remote-collect-dir-with-spaces": check_role_spaces,
}


@pytest.mark.parametrize("case", STAGE_PEER_LITERAL)
def test_stage_role_uses_legal_value_literally(stage_role_run, case):
    """Legal values with shell syntax (staging and working dirs, peer and file names, command words,
    Ansible's own connection variables of a peer, which the run never uses) are data."""
    STAGE_ROLE_CHECKS[case](stage_role_run, case)
    stage_role_run.assert_nothing_ran(case)
    stage_role_run.assert_outside_unchanged()


# ---------------------------------------------------------------------------
# Run-wide variables that fail a whole run: a run each, side by side
# ---------------------------------------------------------------------------

# (case, playbook, variables (the master's, or -e for cback_action), name the failure must show).
RUN_WIDE_REFUSED = [
    ("wide-staging-dir-relative", "stage", {"cback_staging_dir": "../sentinel; {c}"}, "cback_staging_dir"),
    ("wide-staging-dir-substitution", "stage", {"cback_staging_dir": "$({c})"}, "cback_staging_dir"),
    ("wide-working-dir-semicolon", "stage", {"cback_working_dir": "work;{c}"}, "cback_working_dir"),
    ("wide-starting-day-semicolon", "stage", {"cback_starting_day": "monday;{c}"}, "cback_starting_day"),
    ("wide-backup-user-semicolon", "stage", {"cback_backup_user": "root;{c}"}, "backup_user"),
    ("wide-backup-group-substitution", "stage", {"cback_backup_group": "$({c})"}, "backup_group"),
    ("wide-managed-actions-backticks", "stage", {"cback_managed_actions": "collect,`{c}`"}, "cback_managed_actions"),
    ("wide-action-semicolon", "managed", {"cback_action": "collect; {c}"}, "cback_action"),
    ("wide-action-proxycommand", "managed", {"cback_action": "-oProxyCommand={c}"}, "cback_action"),
    ("wide-action-newline", "managed", {"cback_action": "collect\n{c}"}, "cback_action"),
    ("wide-stage-indicator-traversal", "stage", {"cback_stage_indicator": "../../sentinel/{c}"}, "cback_stage_indicator"),
    ("wide-collect-indicator-substitution", "stage", {"cback_collect_indicator": "$({c})"}, "cback_collect_indicator"),
    ("wide-metrics-file-substitution", "stage", {"cback_metrics_file": "$({c}).prom"}, "cback_metrics_file"),
    ("wide-metrics-file-directory", "managed", {"cback_metrics_file": "/tmp/`{c}`/", "cback_action": "collect"}, "cback_metrics_file"),
]


def run_wide_case(world, installed_collections, base, case, playbook, variables):
    """The run of ``playbook`` with the case's hostile run-wide variable, ready to go:
    ``(start, staging, recorder log)``; ``start()`` runs it."""
    fields = world.fields(case)
    values = dict((key, value.format(**fields)) for key, value in variables.items())
    staging = world.root / "wide" / case / "staging"
    recorder, log = world.recorder(case)
    peers = {
        "hx-" + case: dict(cback_collect_dir=str(world.bait(case)), cback_remote_user="root", cback_managed=True,
                           cback_managed_actions="collect", cback_cback_command=recorder),
        "hx-%s-local" % case: dict(cback_peer_type="local", cback_collect_dir=str(world.bait(case + "-local"))),
    }
    extra = []
    if "cback_action" in values:
        extra = [json.dumps(dict(cback_action=values.pop("cback_action")))]
    runner = new_runner(installed_collections, base / case)
    inventory = yaml_inventory(runner.base / "inventory.yml", run_wide(world, staging, ansible_connection="local", **values), peers)
    return (lambda: runner.run(playbook, inventory, extra=extra)), staging, log


@pytest.fixture(scope="module")
def run_wide_runs(world, installed_collections, runs_dir):
    """Every RUN_WIDE_REFUSED case, each its own ansible-playbook run, four at a time."""
    prepared = dict((case, run_wide_case(world, installed_collections, runs_dir / "wide", case, playbook, variables))
                    for case, playbook, variables, _name in RUN_WIDE_REFUSED)

    def all_runs():
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            futures = dict((case, pool.submit(start)) for case, (start, _staging, _log) in prepared.items())
            return dict((case, future.result()) for case, future in futures.items())

    before, runs, after = snapshot_around(world, [world.logs], all_runs)
    results = dict((case, (runs[case], staging, log)) for case, (_start, staging, log) in prepared.items())
    return Outcome(world, list(runs.values()), before, after, results=results)


@pytest.mark.parametrize("case, playbook, variables, name", RUN_WIDE_REFUSED, ids=[case[0] for case in RUN_WIDE_REFUSED])
def test_run_wide_hostile_variable_fails_the_run(run_wide_runs, world, case, playbook, variables, name):
    """The run fails before anything is staged or run, saying which setting and what value."""
    run, staging, log = run_wide_runs.results[case]
    assert run.rc != 0, run
    failed = [record for record in run.records if record["status"] == "failed"]
    assert failed, run
    message = str(failed[0]["result"].get("msg", ""))
    assert name in message and str(world.marker(case)) in message, (name, message)  # the setting and its value
    assert not staging.exists(), "a staging directory was created"
    assert calls(log) == [], "the cback command ran"
    for bait in (case, case + "-local"):
        assert not (world.root / "bait" / bait / "cback.stage").exists()
    run_wide_runs.assert_nothing_ran(case)
    run_wide_runs.assert_outside_unchanged()


# ---------------------------------------------------------------------------
# Peer variables of the managed role: one cedarbackup.peer.managed run, a peer per case
# ---------------------------------------------------------------------------

# (case, inventory host (None: hx-<case>), host vars over a managed remote peer whose cback command
# is the case's recorder, variable the peer's failure must name).
MANAGED_PEER_REFUSED = [
    ("managed-cback-command-proxycommand", None, {"cback_cback_command": "-oProxyCommand={c}"}, "cback_cback_command"),
    ("managed-actions-semicolon", None, {"cback_managed_actions": "collect;{c}"}, "cback_managed_actions"),
    ("managed-remote-user-substitution", None, {"cback_remote_user": "$({c})"}, "cback_remote_user"),
    ("managed-rsh-command-localcommand", None, {"cback_rsh_command": "-oLocalCommand={c}"}, "cback_rsh_command"),
    ("managed-host-proxycommand", "-oProxyCommand={h}", {}, "cback_peer_name"),
    ("managed-flag-semicolon", None, {"cback_managed": "true;{c}"}, "cback_managed"),
    ("managed-peer-type-pipe", None, {"cback_peer_type": "local|{c}"}, "cback_peer_type"),
]

MANAGED_PEER_LITERAL = [
    "managed-remote-cback-command-words",
    "managed-run-wide-cback-command-words",
    "managed-local-cback-command-words",
]


@pytest.fixture(scope="module")
def managed_role_run(world, installed_collections, runs_dir):
    """``ansible-playbook cedarbackup.peer.managed -e cback_action=collect``: a peer per refused case,
    and peers whose cback command words hold shell syntax (their own, or the run-wide one)."""
    peers, expect = {}, {}
    for case, host, overrides, _variable in MANAGED_PEER_REFUSED:
        recorder, log = world.recorder(case)
        fields = world.fields(case)
        host = (host or "hx-" + case).format(**fields)
        hostvars = dict(cback_collect_dir=str(world.bait(case)), cback_remote_user="root", cback_managed=True,
                        cback_managed_actions="collect", cback_cback_command=recorder)
        hostvars.update((key, value.format(**fields)) for key, value in overrides.items())
        peers[host] = hostvars
        expect[case] = dict(host=host, log=log)
    for case in MANAGED_PEER_LITERAL:
        recorder, log = world.recorder(case)
        words = [word.format(**world.fields(case)) for word in HOSTILE_WORDS]
        hostvars = dict(cback_collect_dir=str(world.bait(case)), cback_remote_user="root", cback_managed=True,
                        cback_managed_actions=["collect"], cback_cback_command=quoted_command(recorder, words))
        if case == "managed-run-wide-cback-command-words":
            master_command = hostvars.pop("cback_cback_command")
        if case == "managed-local-cback-command-words":
            hostvars["cback_peer_type"] = "local"
        peers["hx-" + case] = hostvars
        expect[case] = dict(host="hx-" + case, log=log, words=words, ssh=case != "managed-local-cback-command-words")
    master = run_wide(world, world.root / "managed-staging", cback_cback_command=master_command, ansible_connection="local")
    runner = new_runner(installed_collections, runs_dir / "managed-role")
    inventory = yaml_inventory(runner.base / "managed.yml", master, peers)
    before, run, after = snapshot_around(world, [world.logs], lambda: runner.run("managed", inventory, extra=["cback_action=collect"]))
    return Outcome(world, [run], before, after, run=run, expect=expect)


@pytest.mark.parametrize("case, host, overrides, variable", MANAGED_PEER_REFUSED, ids=[case[0] for case in MANAGED_PEER_REFUSED])
def test_managed_role_refuses_hostile_peer_variable(managed_role_run, case, host, overrides, variable):
    """The peer fails naming the variable and its cback command never runs; nothing ran."""
    values = managed_role_run.expect[case]
    status, message = peer_report(managed_role_run.run, values["host"])
    assert status == "failed" and variable in message and "invalid settings" in message, (status, message)
    assert calls(values["log"]) == [], "the cback command ran"
    managed_role_run.assert_nothing_ran(case)
    managed_role_run.assert_outside_unchanged()


@pytest.mark.parametrize("case", MANAGED_PEER_LITERAL)
def test_managed_role_passes_command_words_literally(managed_role_run, case):
    """Each word of the cback command reaches the program as it is, once, over ssh for a remote peer."""
    values = managed_role_run.expect[case]
    status, message = peer_report(managed_role_run.run, values["host"])
    assert status == "ok", (status, message, managed_role_run.run)
    logged = calls(values["log"])
    assert len(logged) == 1 and logged[0]["argv"] == values["words"] + ["collect"], logged
    assert (logged[0]["user"], logged[0]["ssh"]) == ("root", values["ssh"]), logged
    managed_role_run.assert_nothing_ran(case)
    managed_role_run.assert_outside_unchanged()


# ---------------------------------------------------------------------------
# Control characters, through the task functions the modules run
# ---------------------------------------------------------------------------

# (case, module, option overrides, option the failure must name).
DIRECT_REFUSED = [
    ("direct-stage-collect-dir-escape", "stage", {"collect_dir": "{bait}\x1b]2;{c}\x07"}, "collect_dir"),
    ("direct-stage-indicator-carriage-return", "stage", {"stage_indicator": "cback.stage\r{h}"}, "stage_indicator"),
    ("direct-stage-local-user-newline", "stage", {"local_user": "cbackpeer\n{c}"}, "local_user"),
    ("direct-indicator-collect-indicator-tab", "indicator", {"collect_indicator": "cback.collect\t{h}"}, "collect_indicator"),
    ("direct-indicator-name-unicode-hyphen", "indicator", {"name": "hx\u2010{h}"}, "name"),
    ("direct-action-tab", "action", {"action": "collect\t{c}"}, "action"),
    ("direct-action-cyrillic-lookalike", "action", {"action": "coll\u0435ct"}, "action"),
    ("direct-action-remote-user-delete", "action", {"remote_user": "root\x7f;{c}"}, "remote_user"),
    ("direct-stage-run-starting-day-newline", "stage_run", {"starting_day": "monday\n{c}"}, "starting_day"),
    ("direct-managed-run-action-nul", "managed_run", {"action": "collect\x00{c}"}, "action"),
]

DIRECT_FUNCTIONS = {
    "stage": ("cback_stage", _tasks.stage),
    "indicator": ("cback_collect_indicator", _tasks.collect_indicator),
    "action": ("cback_managed_action", _tasks.managed_action),
    "stage_run": (_argspec.STAGE_RUN_OPTIONS, _runs.stage_run),
    "managed_run": (_argspec.MANAGED_RUN_OPTIONS, _runs.managed_run),
}


@pytest.mark.parametrize("case, module, overrides, option", DIRECT_REFUSED, ids=[case[0] for case in DIRECT_REFUSED])
def test_task_function_refuses_control_characters(world, case, module, overrides, option):
    """As root, the module's task function fails naming the option before it runs or writes anything."""
    args = refused_args(world, case, module, overrides)
    spec, function = DIRECT_FUNCTIONS[module]
    if isinstance(spec, str):
        params = module_params(spec, **args)
    else:
        params = dict((key, value.get("default")) for key, value in spec.items())
        params.update(args)
        params["peers"] = [dict(dict((key, None) for key in spec["peers"]["options"]), type="remote", **peer) for peer in params["peers"]]
    before = outside(world.root, [world.logs])
    with pytest.raises(_tasks.TaskFailure) as failure:
        function(params, False)
    assert option in failure.value.msg, failure.value.msg
    assert changes(before, outside(world.root, [world.logs])) == []
    assert calls(world.logs / (case + ".log")) == []
    assert not (world.root / "runs" / case).exists()
    if module == "stage":
        assert os.listdir(str(world.root / "targets" / case)) == []
    assert not os.path.lexists(str(world.marker(case))) and world.fired() == []


def test_case_names_are_unique():
    """Every case has its own marker, bait and target: no two cases share a name."""
    names = ([case[0] for case in REFUSED_OPTIONS] + LITERAL_OPTIONS + [case[0] for case in STAGE_PEER_REFUSED]
             + STAGE_PEER_LITERAL + [case[0] for case in RUN_WIDE_REFUSED] + [case[0] for case in MANAGED_PEER_REFUSED]
             + MANAGED_PEER_LITERAL + [case[0] for case in DIRECT_REFUSED])
    assert len(names) == len(set(names)), sorted(name for name in names if names.count(name) > 1)

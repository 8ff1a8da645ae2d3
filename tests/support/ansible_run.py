# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test support (private): run the collection's playbooks as a user does, and look at the result.

``AnsibleRunner`` runs ``ansible-playbook -i INVENTORY cedarbackup.peer.<playbook>`` in a
subprocess with a timeout, with the normal ``default`` stdout callback (so the screen output,
the summary tables and ``PLAY RECAP`` are what a user sees) plus a small recording callback,
enabled beside it, that writes every task result as JSON.  ``PlaybookRun`` gives both.
``run_playbook`` does the same for any ``ansible-playbook`` command line.

Also here: inventory writers (INI as in docs/inventory.md's example, or YAML), tree snapshots,
an sshd pool that logs logins (``Accepted publickey``), and a TCP server that accepts
connections and never answers (a hanging peer).
"""

import hashlib
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from ansible_collections.cedarbackup.peer.tests.support.sshd import SshPeerPool, free_port

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(os.environ.get("CBACK_ANSIBLE_BIN") or ROOT / ".venv" / "bin")
TARGET_PYTHON = "/usr/bin/python3"
PLAYBOOK_TIMEOUT = 150

RECORD_CALLBACK = '''
from __future__ import annotations

import json
import os

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    """Record every task result beside the normal output; JSON to $CBTEST_JSON_OUT at the end."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "cbtest_record"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.records = []

    def _record(self, status, result):
        data = getattr(result, "result", None)
        if data is None:
            data = result._result
        host = getattr(result, "host", None) or result._host
        task = getattr(result, "task", None) or result._task
        data = json.loads(json.dumps(data, default=str))
        self.records.append(dict(task=task.get_name(), host=host.get_name(), status=status, result=data, time=__import__("time").time()))

    def v2_runner_on_ok(self, result):
        self._record("ok", result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record("failed", result)

    def v2_runner_on_skipped(self, result):
        self._record("skipped", result)

    def v2_runner_on_unreachable(self, result):
        self._record("unreachable", result)

    def v2_playbook_on_stats(self, stats):
        summary = dict((host, stats.summarize(host)) for host in sorted(stats.processed))
        with open(os.environ["CBTEST_JSON_OUT"], "w") as handle:
            json.dump(dict(tasks=self.records, stats=summary), handle)
'''


def ansible_environment(collections_path, base):
    """Environment for ansible-playbook: the installed collection, the recording callback.

    Ansible's own scratch files (local temp, remote temp, async job status) go under
    ``base`` so that the tests leave nothing in root's home directory.
    """
    base = Path(base)
    (base / "callbacks").mkdir(parents=True, exist_ok=True)
    (base / "callbacks" / "cbtest_record.py").write_text(RECORD_CALLBACK)
    (base / "ansible.cfg").write_text("[defaults]\n")
    env = dict((key, value) for key, value in os.environ.items() if not key.startswith("ANSIBLE_"))
    env.update(
        ANSIBLE_CONFIG=str(base / "ansible.cfg"),
        ANSIBLE_COLLECTIONS_PATH=str(collections_path),
        ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false",
        ANSIBLE_CALLBACK_PLUGINS=str(base / "callbacks"),
        ANSIBLE_CALLBACKS_ENABLED="cbtest_record",
        ANSIBLE_STDOUT_CALLBACK="default",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_RETRY_FILES_ENABLED="false",
        ANSIBLE_LOCAL_TEMP=str(base / "local-tmp"),
        ANSIBLE_REMOTE_TEMP=str(base / "remote-tmp"),
        ANSIBLE_ASYNC_DIR=str(base / "async"),
        ANSIBLE_HOST_KEY_CHECKING="false",
        LANG="C.UTF-8",
        LC_ALL="C.UTF-8",
    )
    return env


class PlaybookRun(object):
    """One ansible-playbook run: ``rc``, ``stdout``, ``stderr``, ``elapsed``, task ``records``, ``stats``."""

    def __init__(self, argv, rc, stdout, stderr, data, elapsed):
        self.argv, self.rc, self.stdout, self.stderr, self.elapsed = argv, rc, stdout, stderr, elapsed
        self.records = data.get("tasks", []) if data else []
        self.stats = data.get("stats", {}) if data else {}

    def __str__(self):
        return "%s\nrc=%s elapsed=%.1fs\n--- stdout ---\n%s\n--- stderr ---\n%s" % (
            " ".join(self.argv), self.rc, self.elapsed, self.stdout[-20000:], self.stderr[-5000:])

    __repr__ = __str__

    @staticmethod
    def short_name(name):
        """A task name without the ``<role> : `` prefix Ansible gives role tasks."""
        return name.split(" : ", 1)[1] if re.match(r"^[\w.]+ : ", name) else name

    def task_names(self):
        return [self.short_name(record["task"]) for record in self.records]

    def find(self, task, prefix=False):
        """Every record of ``task`` (exact name, or names starting with it when ``prefix``)."""
        found = []
        for record in self.records:
            name = self.short_name(record["task"])
            if name == task or (prefix and name.startswith(task)):
                found.append(record)
        return found

    def result(self, task, prefix=False):
        found = self.find(task, prefix)
        if not found:
            raise AssertionError("no task %r in\n%s" % (task, self))
        return found[-1]["result"]

    def status(self, task, prefix=False):
        found = self.find(task, prefix)
        if not found:
            raise AssertionError("no task %r in\n%s" % (task, self))
        return found[-1]["status"]

    def __getitem__(self, task):
        """``run[task]``: the result of ``task`` (exact name), as ``result(task)``."""
        return self.result(task)

    def task_seconds(self, task):
        """Wall time of ``task``: from the last result of the task before it to its own last result."""
        names = self.task_names()
        last = max(index for index, name in enumerate(names) if name == task)
        first = min(index for index, name in enumerate(names) if name == task)
        assert first > 0, self
        return self.records[last]["time"] - self.records[first - 1]["time"]

    def recap(self):
        """``PLAY RECAP`` of the screen output: ``{host: {"ok": n, "changed": n, ...}}``."""
        found = {}
        lines = self.stdout.splitlines()
        try:
            start = max(index for index, line in enumerate(lines) if line.startswith("PLAY RECAP"))
        except ValueError:
            raise AssertionError("no PLAY RECAP in\n%s" % self)
        for line in lines[start + 1:]:
            match = re.match(r"^(\S+)\s+:\s+(.*)$", line)
            if not match:
                continue
            found[match.group(1)] = dict((key, int(value)) for key, value in re.findall(r"(\w+)=(\d+)", match.group(2)))
        return found


class AnsibleRunner(object):
    """Runs ``cedarbackup.peer.<playbook>`` against inventories written under ``base``."""

    def __init__(self, collections_path, base):
        self.base = Path(base)
        self.base.mkdir(parents=True, exist_ok=True)
        self.env = ansible_environment(collections_path, self.base / "ansible")
        self.counter = 0

    def run(self, playbook, inventory, extra=(), check=False, timeout=PLAYBOOK_TIMEOUT, umask=0o022, limit=None):
        """``ansible-playbook -i inventory cedarbackup.peer.<playbook> [-e k=v ...] [--check] [--limit limit]``."""
        self.counter += 1
        out = self.base / ("run-%02d-%s.json" % (self.counter, playbook))
        argv = [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), "cedarbackup.peer." + playbook]
        for item in extra:
            argv += ["-e", item]
        if check:
            argv.append("--check")
        if limit:
            argv += ["--limit", limit]
        return run_playbook(argv, self.env, self.base, out, timeout=timeout, umask=umask)

    def run_play(self, play, inventory=None, extra=None, timeout=PLAYBOOK_TIMEOUT):
        """Run the playbook ``play`` (a list of plays, written as JSON) against ``inventory``
        (default: localhost, with the test's python); ``extra``: a dict of extra vars."""
        self.counter += 1
        stem = self.base / ("play-%02d" % self.counter)
        if inventory is None:
            inventory = write_inventory(stem.with_suffix(".ini"), {})
        playbook = stem.with_suffix(".yml")
        playbook.write_text(json.dumps(play))
        argv = [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), str(playbook)]
        if extra:
            argv += ["-e", json.dumps(extra)]
        return run_playbook(argv, self.env, self.base, stem.with_suffix(".json"), timeout=timeout)


def run_playbook(argv, env, cwd, out, timeout=PLAYBOOK_TIMEOUT, umask=0o022):
    """Run the ``ansible-playbook`` command line ``argv`` in ``cwd``; the recording callback
    (``env`` from ``ansible_environment``) writes the task results to ``out``.  A ``PlaybookRun``.
    """
    out = Path(out)
    env = dict(env, CBTEST_JSON_OUT=str(out))
    started = time.monotonic()
    proc = subprocess.run(
        argv, cwd=str(cwd), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, timeout=timeout, umask=umask, check=False,
    )
    elapsed = time.monotonic() - started
    data = None
    if out.is_file():
        with open(str(out)) as handle:
            data = json.load(handle)
    run = PlaybookRun(argv, proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"), data, elapsed)
    assert data is not None, "no results recorded (rc %s)\n%s" % (proc.returncode, run)
    return run


# ---------------------------------------------------------------------------
# Inventories
# ---------------------------------------------------------------------------


def _ini_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple, dict)):
        text = json.dumps(value, separators=(",", ":"))
        assert "'" not in text
        return "'%s'" % text
    text = str(value)
    if re.match(r"^[A-Za-z0-9_./@:+-]+$", text):
        return text
    assert "'" not in text, text
    return "'%s'" % text


def write_inventory(path, master_vars=None, peers=None, all_vars=None, fmt="ini"):
    """An inventory: ``cback_master`` (localhost, local connection) and ``cback_peers``.

    ``peers`` maps inventory host names to their host vars (order kept).  ``fmt`` is
    ``ini`` (values written the way a user writes them in an INI file) or ``yaml``.
    """
    path = Path(path)
    master = dict(ansible_connection="local", ansible_python_interpreter=TARGET_PYTHON)
    master.update(master_vars or {})
    peers = peers or {}
    if fmt == "yaml":
        data = {
            "all": {"vars": dict(all_vars or {})},
            "cback_master": {"hosts": {"localhost": master}},
            "cback_peers": {"hosts": dict((name, dict(hostvars)) for name, hostvars in peers.items())},
        }
        path.write_text(json.dumps(data, indent=2))  # JSON is YAML
        if not path.name.endswith((".yml", ".yaml", ".json")):
            raise ValueError("a YAML inventory needs a .yml name")
        return path
    lines = ["[cback_master]", "localhost " + " ".join("%s=%s" % (k, _ini_value(v)) for k, v in master.items()), "", "[cback_peers]"]
    for name, hostvars in peers.items():
        lines.append(" ".join([name] + ["%s=%s" % (k, _ini_value(v)) for k, v in hostvars.items()]))
    if all_vars:
        lines += ["", "[all:vars]"] + ["%s=%s" % (k, _ini_value(v)) for k, v in all_vars.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_fleet_inventory(path, masters, peers, all_vars=None):
    """A YAML inventory with several masters: ``masters`` maps each master's inventory name to its
    variables (a local connection and the test's python unless they say otherwise), ``peers`` each
    peer's (its ``cback_master_host`` among them); order kept."""
    path = Path(path)
    if not path.name.endswith((".yml", ".yaml", ".json")):
        raise ValueError("a YAML inventory needs a .yml name")
    hosts = {}
    for name, values in masters.items():
        hosts[name] = dict(dict(ansible_connection="local", ansible_python_interpreter=TARGET_PYTHON), **values)
    data = {
        "all": {"vars": dict(all_vars or {})},
        "cback_master": {"hosts": hosts},
        "cback_peers": {"hosts": dict((name, dict(values)) for name, values in peers.items())},
    }
    path.write_text(json.dumps(data, indent=2))  # JSON is YAML
    return path


# ---------------------------------------------------------------------------
# Files and trees
# ---------------------------------------------------------------------------


def fill(directory, files):
    """Write ``{name: (bytes, mode)}`` into ``directory`` (created)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, (content, mode) in files.items():
        path = directory / name
        path.write_bytes(content)
        os.chmod(str(path), mode)
    return directory


def ready(directory, files):
    """A collect directory holding ``files`` and its ``cback.collect``."""
    return fill(directory, dict(files, **{"cback.collect": (b"", 0o644)}))


def remote_peer(collect, user="root", **extra):
    """A remote peer's inventory variables: ``collect`` reached as ``user``, plus ``extra``."""
    values = dict(cback_collect_dir=str(collect), cback_remote_user=user)
    values.update(extra)
    return values


def local_peer(collect, **extra):
    """A local peer's inventory variables: ``collect``, plus ``extra``."""
    values = dict(cback_peer_type="local", cback_collect_dir=str(collect))
    values.update(extra)
    return values


def sha256_of(path):
    """The sha256 of the file at ``path``, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(str(path), "rb") as handle:
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def snapshot(root):
    """Every entry under ``root`` and ``root`` itself: kind, mode, ids, size, mtime, inode, sha256.

    Directories carry their mtime too, so that an entry created and removed again is seen.
    """
    found = {}
    root = str(root)
    if not os.path.lexists(root):
        return {".": None}

    def entry(path):
        info = os.lstat(path)
        record = [stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid, info.st_size, info.st_mtime_ns, info.st_ino]
        if stat.S_ISREG(info.st_mode):
            with open(path, "rb") as handle:
                record.append(hashlib.sha256(handle.read()).hexdigest())
        return tuple(record)

    found["."] = entry(root)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            found[os.path.relpath(path, root)] = entry(path)
    return found


def files_only(snap):
    """A snapshot without directory mtimes (a temporary entry made and removed changes those)."""
    return dict((key, value if value is None or value[0] != stat.S_IFDIR else value[:5] + value[6:]) for key, value in snap.items())


def tree(root):
    """Relative paths of everything under ``root`` (sorted), directories ending in ``/``."""
    found = []
    for dirpath, dirnames, filenames in os.walk(str(root)):
        rel = os.path.relpath(dirpath, str(root))
        for name in dirnames:
            found.append(os.path.normpath(os.path.join(rel, name)) + "/")
        for name in filenames:
            found.append(os.path.normpath(os.path.join(rel, name)))
    return sorted(found)


def mode_of(path):
    return stat.S_IMODE(os.lstat(str(path)).st_mode)


def owner_of(path):
    info = os.lstat(str(path))
    return info.st_uid, info.st_gid


def public_dir(prefix):
    """A fresh directory under /tmp that other local users can traverse (mode 0755).

    pytest's own temporary directories are private to root; a backup user that the run
    su's to must reach the staging directory.  Remove it with ``shutil.rmtree``.
    """
    path = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    os.chmod(path, 0o755)
    return Path(path)


def remove_tree(path):
    shutil.rmtree(str(path), ignore_errors=True)


def today():
    """``(YYYY/MM/DD, lowercase English weekday)`` of local time now."""
    now = time.localtime()
    weekday = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")[now.tm_wday]
    return time.strftime("%Y/%m/%d", now), weekday


def other_weekday(weekday):
    days = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
    return days[(days.index(weekday) + 3) % 7]


# ---------------------------------------------------------------------------
# Peers that log their logins, and a peer that hangs
# ---------------------------------------------------------------------------


class LoggingSshPeerPool(SshPeerPool):
    """An ``SshPeerPool`` whose sshds log at INFO level: one ``Accepted publickey`` per login."""

    def _sshd_config(self, peer, host_key):
        return super(LoggingSshPeerPool, self)._sshd_config(peer, host_key).replace("LogLevel ERROR", "LogLevel INFO")

    def log_offset(self, name):
        try:
            return os.path.getsize(self.peer(name).log)
        except OSError:
            return 0

    def log_since(self, name, offset=0):
        with open(self.peer(name).log, "rb") as handle:
            handle.seek(offset)
            return handle.read().decode(errors="replace")

    def logins_since(self, name, offset=0):
        """``Accepted publickey`` lines the peer's sshd logged after byte ``offset``."""
        with open(self.peer(name).log, "rb") as handle:
            handle.seek(offset)
            text = handle.read().decode(errors="replace")
        return [line for line in text.splitlines() if "Accepted publickey" in line]


class HangingServer(object):
    """A TCP server on ``address`` that accepts connections and never sends a byte.

    Started and stopped by the test (context manager); its thread is joined, every socket
    closed.  ``connections`` counts the connections it accepted.
    """

    def __init__(self, address):
        self.address = address
        self.port = None
        self.connections = 0
        self._listener = None
        self._accepted = []
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self):
        self.port = free_port(self.address)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.address, self.port))
        listener.listen(16)
        listener.settimeout(0.2)
        self._listener = listener
        self._thread = threading.Thread(target=self._serve, name="hanging-server", daemon=True)
        self._thread.start()
        return self

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _addr = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            self._accepted.append(conn)

    def __exit__(self, *exc_info):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for conn in self._accepted:
            try:
                conn.close()
            except OSError:
                pass
        if self._listener is not None:
            self._listener.close()
        return False


def write_ssh_config(path, host, address, port, connect_timeout=None):
    """An ssh client config with one ``Host`` block (no host key can match: BatchMode)."""
    lines = [
        "Host %s" % host,
        "    HostName %s" % address,
        "    Port %d" % port,
        "    BatchMode yes",
        "    StrictHostKeyChecking yes",
        "    UserKnownHostsFile /dev/null",
        "    GlobalKnownHostsFile /dev/null",
        "    PasswordAuthentication no",
        "    LogLevel ERROR",
    ]
    if connect_timeout:
        lines.append("    ConnectTimeout %d" % connect_timeout)
    Path(path).write_text("\n".join(lines) + "\n")
    return str(path)


def script(path, text):
    """An executable shell script."""
    path = Path(path)
    path.write_text(text)
    os.chmod(str(path), 0o755)
    return str(path)


# ---------------------------------------------------------------------------
# What a run shows: the summary table, the failure messages, PLAY RECAP
# ---------------------------------------------------------------------------


def table_lines(run, title="Stage run summary", role="cedarbackup.peer.stage"):
    """The on-screen table: the debug task's message lines, also present in the screen output."""
    statuses = [record["status"] for record in run.find(title)]
    assert statuses and "ok" in statuses, run
    msg = run.result(title)["msg"]
    lines = msg if isinstance(msg, list) else str(msg).splitlines()
    assert "TASK [%s : %s]" % (role, title) in run.stdout, run
    screen = run.stdout.replace('\\"', '"')
    for line in lines:
        assert line.strip()[:40] in screen, (line, run)
    return lines


def assert_table_row(lines, name, peer_type, status):
    """A table line ``<name> <type> <status> ...``."""
    pattern = re.compile(r"^\s*%s\s+%s\s+%s(\s|$)" % (re.escape(name), re.escape(peer_type), re.escape(status)))
    assert any(pattern.match(line) for line in lines), (name, status, lines)


def fail_message(run, title="Report the peer"):
    """The failure message(s) of the task ``title`` (one per failed peer, or one in all)."""
    failed = [record for record in run.find(title) if record["status"] == "failed"]
    assert failed, run
    return "\n".join(str(record["result"].get("msg", "")) for record in failed)


def no_failure(run, title="Report the peer"):
    """The task ``title`` ran and failed nowhere."""
    records = run.find(title)
    assert records and all(record["status"] != "failed" for record in records), run


def changed_total(run):
    """``changed=`` summed over every host of ``PLAY RECAP``."""
    return sum(counts.get("changed", 0) for counts in run.recap().values())

# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test support (private): follow a guide's code blocks literally, under a test root.

A guide marks the fenced code blocks a test follows with an HTML comment on the line before
the fence (it does not show when the Markdown is rendered)::

    <!-- migrate-test: run NAME -->      commands, run with bash
    <!-- migrate-test: file PATH -->     the whole content of the file PATH
    <!-- migrate-test: expect NAME -->   text the test compares with what it finds

``Guide`` reads them in the guide's order and remembers which ones a test took, so that a test
can check that it followed every marked block.  ``PathMap`` moves the absolute paths the guide
names (``/etc/cron.d``, ``/opt/...``) under a test root, word by word, so that the commands run
as written without touching the machine's own ``/etc``.  ``run_shell`` runs a command line in
a session of its own with a clean environment, bounded in time (on timeout the whole session
is killed, by its id); ``cron_jobs`` and ``unit_file`` read a cron.d file and a systemd unit as
cron and systemd read them.
"""

import collections
import os
import re
import shlex
import signal
import subprocess

MARK_RE = re.compile(r"^<!-- migrate-test: (run|file|expect) (\S+) -->\n```[\w-]*\n(.*?)^```$", re.M | re.S)
CRON_ENV_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$")

Block = collections.namedtuple("Block", "kind name text line")
Shell = collections.namedtuple("Shell", "argv rc output")


class Guide(object):
    """The marked blocks of the Markdown file ``path``."""

    def __init__(self, path):
        self.path = str(path)
        with open(self.path) as handle:
            text = handle.read()
        self.blocks = [Block(match.group(1), match.group(2), match.group(3), text.count("\n", 0, match.start()) + 1)
                       for match in MARK_RE.finditer(text)]
        marks = text.count("<!-- migrate-test:")
        assert marks == len(self.blocks), "%s: %d marks, %d of them before a fenced block" % (self.path, marks, len(self.blocks))
        self.taken = set()

    def _take(self, kind, name):
        found = [index for index, block in enumerate(self.blocks) if block.kind == kind and block.name == name and index not in self.taken]
        assert found, "%s: no (further) block marked '%s %s'" % (self.path, kind, name)
        self.taken.add(found[0])
        return self.blocks[found[0]].text

    def run(self, name):
        """The commands of the block marked ``run NAME``."""
        return self._take("run", name)

    def file(self, path):
        """The content of the next block marked ``file PATH``."""
        return self._take("file", path)

    def expect(self, name):
        return self._take("expect", name)

    def untaken(self):
        """The marked blocks no test took: ``kind name (line N)``."""
        return ["%s %s (line %d)" % (block.kind, block.name, block.line) for index, block in enumerate(self.blocks)
                if index not in self.taken]


class PathMap(object):
    """Absolute paths of a guide (``{guide path: test path}``), rewritten wherever they stand as a path
    or the start of one: ``/etc/cback`` in ``/etc/cback/ssh_config``, not in ``/etc/cback3.conf``."""

    def __init__(self, paths):
        self.paths = dict((source, str(target)) for source, target in paths.items())
        for target in self.paths.values():
            assert not any(char.isspace() for char in target), target

    def __call__(self, text):
        for source in sorted(self.paths, key=len, reverse=True):
            pattern = r"(?<![\w.~/-])%s(?![\w.-])" % re.escape(source)
            text = re.sub(pattern, lambda match, source=source: self.paths[source], text)
        return text

    def path(self, source):
        """Where the guide's path ``source`` is under the test root."""
        mapped = self(source)
        assert mapped != source, "%s is none of the guide's mapped paths" % source
        return mapped


def run_shell(argv, env, cwd, timeout, umask=0o022):
    """``argv`` with exactly ``env``, in ``cwd``, in a session of its own; stdout and stderr together.

    A command still running after ``timeout`` seconds is killed with its whole session (by the
    session's id, the pid this call started) and fails the test.
    """
    process = subprocess.Popen(argv, cwd=str(cwd), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, start_new_session=True, umask=umask)
    try:
        output, _unused = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _unused = process.communicate(timeout=30)
        raise AssertionError("%s still running after %d s, killed:\n%s" % (argv, timeout, output.decode(errors="replace")))
    return Shell(argv, process.returncode, output.decode(errors="replace"))


def cron_jobs(text):
    """``(environment, [(schedule fields, user, command)])`` of a cron.d file, as cron reads it."""
    env, jobs = {}, []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = CRON_ENV_RE.match(stripped)  # a job line starts with a time field: a digit, * or @
        if match:
            env[match.group(1)] = match.group(2).strip().strip("'\"")
            continue
        fields = stripped.split(None, 6)
        assert len(fields) == 7, "not a cron.d job line (5 time fields, a user, a command): %r" % line
        jobs.append((tuple(fields[:5]), fields[5], fields[6]))
    return env, jobs


def unit_file(text):
    """``{section: [(key, value)]}`` of a systemd unit file (comments dropped, keys in order, repeats kept)."""
    sections, current = {}, None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        if stripped.startswith("[") and stripped.endswith("]"):
            current = sections.setdefault(stripped[1:-1], [])
            continue
        assert current is not None and "=" in stripped, "not a unit file line: %r" % line
        key, value = stripped.split("=", 1)
        current.append((key.strip(), value.strip()))
    return sections


def unit_values(sections, section, key):
    return [value for name, value in sections.get(section, []) if name == key]


def unit_command(sections):
    """The service's ``ExecStart`` as an argv and its ``Environment`` as a dict (no specifiers or
    variables in them: split as the shell splits, which is how systemd splits such a line)."""
    starts = unit_values(sections, "Service", "ExecStart")
    assert len(starts) == 1, starts
    for value in starts + unit_values(sections, "Service", "Environment"):
        assert "%" not in value and "$" not in value, "a specifier or variable systemd would expand: %r" % value
    env = {}
    for value in unit_values(sections, "Service", "Environment"):
        for word in shlex.split(value):
            name, _eq, setting = word.partition("=")
            env[name] = setting
    return shlex.split(starts[0]), env

# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to cedarbackup.peer: not a public API, may change without notice.
"""Command lines: splitting like CedarBackup3.util.splitCommandLine, running argv lists.

Nothing here ever goes through a local shell.  A string that another program will parse
as a shell command line (the remote side of ssh, ``su -c``) is built with
``join_command`` from a list, every piece quoted.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from collections import namedtuple

_FIELDS = re.compile(r'[^ "]+|"[^"]+"')

# Locale variables CedarBackup3.util.sanitizeEnvironment removes before every command.
_LOCALE_VARS = (
    "LC_ADDRESS", "LC_ALL", "LC_COLLATE", "LC_CTYPE", "LC_IDENTIFICATION", "LC_MEASUREMENT",
    "LC_MESSAGES", "LC_MONETARY", "LC_NAME", "LC_NUMERIC", "LC_PAPER", "LC_TELEPHONE", "LC_TIME",
)

# Exit status reported when a command could not be started at all (as CedarBackup3 does).
EXEC_FAILED = 256

# Exit status reported when a command ran past its timeout and was killed.
TIMED_OUT = 124

CommandResult = namedtuple("CommandResult", ["argv", "rc", "stdout", "stderr", "timed_out"])

# The deadline (``time.monotonic()`` value) of the job the current thread works on: every
# command it runs is bounded by it (see ``deadline``).
_job = threading.local()


@contextlib.contextmanager
def deadline(seconds):
    """Bound every ``run_command`` of this thread, for the duration, to ``seconds`` in all.

    A command started with less time left gets that much as its timeout; one started after
    the deadline is not run (a timed-out result).  ``None`` or ``0``: no bound.  Each thread
    has its own deadline, so jobs running side by side in threads are bounded separately.
    """
    previous = getattr(_job, "deadline", None)
    _job.deadline = time.monotonic() + seconds if seconds else None
    try:
        yield
    finally:
        _job.deadline = previous


def time_left():
    """Seconds left before this thread's deadline, or ``None`` without one."""
    end = getattr(_job, "deadline", None)
    return None if end is None else end - time.monotonic()


def _bounded(timeout):
    left = time_left()
    if left is None:
        return timeout
    return left if not timeout else min(timeout, left)


def split_command_line(command_line):
    """Split a command line into fields as ``CedarBackup3.util.splitCommandLine`` does.

    Fields are separated by spaces; a double-quoted run is one field and loses its
    quotes.  No other shell syntax is interpreted.  ``None`` raises ``ValueError``.
    """
    if command_line is None:
        raise ValueError("Cannot split command line of None.")
    return [field.replace('"', "") for field in _FIELDS.findall(command_line)]


def join_command(argv):
    """One POSIX shell command line for ``argv``, every word quoted with ``shlex.quote``."""
    return " ".join(shlex.quote(str(word)) for word in argv)


def sanitized_environment(base=None):
    """A copy of the environment with the locale reset, as CedarBackup3 runs commands."""
    env = dict(os.environ if base is None else base)
    for var in _LOCALE_VARS:
        env.pop(var, None)
    if "LANG" in env:
        env["LANG"] = "C"
    return env


def _decode(data):
    return data.decode("utf-8", "replace") if data else ""


def run_command(argv, timeout=None, env=None, cwd=None):
    """Run ``argv`` (a list, never a shell) and capture its output.

    Standard input is ``/dev/null`` so that nothing can wait on a prompt.  The command
    runs in its own process group; when ``timeout`` (seconds) runs out, the whole group
    is killed and the result has ``rc`` ``TIMED_OUT`` and ``timed_out`` true.  The thread's
    ``deadline``, when set, bounds ``timeout`` further.  A command
    that cannot be started gives ``rc`` ``EXEC_FAILED`` and the reason in ``stderr``.
    """
    argv = [str(word) for word in argv]
    if not argv:
        raise ValueError("Cannot run an empty command.")
    timeout = _bounded(timeout)
    if timeout is not None and timeout <= 0:
        return CommandResult(argv, TIMED_OUT, "", "Not started: the time for this peer had run out.\n", True)
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=sanitized_environment() if env is None else env,
            cwd=cwd,
            close_fds=True,
            start_new_session=True,
        )
    except OSError as exc:
        return CommandResult(argv, EXEC_FAILED, "", "%s: %s" % (argv[0], exc.strerror or exc), False)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        stdout, stderr = proc.communicate()
        message = _decode(stderr) + "Command timed out after %s seconds and was killed.\n" % _seconds(timeout)
        return CommandResult(argv, TIMED_OUT, _decode(stdout), message, True)
    except BaseException:
        _kill_group(proc)
        proc.wait()
        raise
    return CommandResult(argv, proc.returncode, _decode(stdout), _decode(stderr), False)


def _seconds(value):
    return "%d" % value if float(value).is_integer() else "%.1f" % value


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        try:
            proc.kill()
        except OSError:
            pass

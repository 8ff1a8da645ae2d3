# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to cedarbackup.peer: not a public API, may change without notice.
"""Command lines: splitting like CedarBackup3.util.splitCommandLine, running argv lists.

Nothing here ever goes through a local shell.  A string that another program will parse
as a shell command line (the remote side of ssh) is built with ``join_command`` from a
list, every piece quoted.  A command run as another local user is started by this process
itself, which drops to that user's uid, gid and groups in the child: no ``su``, no shell.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import namedtuple

from . import _ids

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

CommandResult = namedtuple("CommandResult", ["argv", "rc", "stdout", "stderr", "timed_out", "truncated"])
CommandResult.__new__.__defaults__ = (False,)

# What is kept of each output stream of a command: its first and its last KEEP_BYTES (what a
# failure message needs); the middle of a flood is read and dropped, never held in memory.
KEEP_BYTES = 256 * 1024

# How long the output of a killed command is still read (a process that escaped the kill may
# hold the pipes open); after that the readers are left behind.
DRAIN_SECONDS = 5

# The PATH of a command run as another local user: system directories only, none of root's.
# Its program is looked up there by this process, so that it starts by absolute path.
USER_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

# Whether Popen sets the child's user, group and groups itself (Python 3.9+).
POPEN_DROPS = sys.version_info >= (3, 9)

LocalUser = namedtuple("LocalUser", ["name", "uid", "gid", "groups", "home"])
LocalUser.__doc__ = """The account a command runs as: ``name``, ``uid``, ``gid`` (primary group),
``groups`` (every group id it is a member of, the primary one included) and ``home``."""

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


@contextlib.contextmanager
def within(seconds):
    """``deadline(seconds)``, unless this thread's deadline is earlier (it then stays)."""
    left = time_left()
    if not seconds or (left is not None and left <= seconds):
        yield
        return
    with deadline(seconds):
        yield


def current_deadline():
    """This thread's deadline (a ``time.monotonic()`` value), ``None`` without one: for
    ``deadline_at`` in a thread that works for this one."""
    return getattr(_job, "deadline", None)


@contextlib.contextmanager
def deadline_at(end):
    """This thread's deadline set to ``end`` (``current_deadline()`` of the thread it works for;
    ``None``: no bound) for the duration."""
    previous = getattr(_job, "deadline", None)
    _job.deadline = end
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


# Cancellation of a whole module execution (a signal, or Ansible no longer reading the
# result: its task timeout, a killed ansible-playbook, a dropped connection).  Once
# cancelled, every running command is killed with its tree and no new one is started; the
# code that started them goes through its cleanup and stops.
_cancel = {"reason": None}
_running = {}
_running_lock = threading.Lock()


def cancelled():
    """Why this module execution was cancelled, or ``None`` while it was not."""
    return _cancel["reason"]


def cancel(reason):
    """Cancel: kill every command running now (with its tree), refuse new ones."""
    with _running_lock:
        if _cancel["reason"] is None:
            _cancel["reason"] = reason
        pids = [pid for pid, cleanup in _running.items() if not cleanup]
    for pid in pids:
        kill_tree(pid)


def _uncancel():
    """For tests: forget a cancellation."""
    _cancel["reason"] = None


_SIGNALS = ("SIGTERM", "SIGHUP", "SIGINT", "SIGPIPE")


def cancel_on_exit_of_caller(poll=0.5):
    """Cancel on SIGTERM, SIGHUP, SIGINT or SIGPIPE, when nobody reads standard output any
    more (its pipe's reader is gone: Ansible gave up on the task, or died), and when a process
    it was started from ends (``ansible-playbook`` was killed: Ansible's worker runs in a
    session of its own and would otherwise wait for a result nobody reads).

    Call it from the main thread of a module before the work starts.  The handlers only
    cancel (the work then stops through its normal error paths, cleaning up); the watcher
    is a daemon thread that polls every ``poll`` seconds.
    """
    def on_signal(number, _frame):
        # The kills run in a thread of their own: the interrupted code may hold the lock.
        killer = threading.Thread(target=cancel, args=("signal %s" % signal.Signals(number).name,))
        killer.daemon = True
        killer.start()

    for name in _SIGNALS:
        number = getattr(signal, name, None)
        if number is not None:
            with contextlib.suppress(ValueError, OSError):
                signal.signal(number, on_signal)
    ancestors = _ancestors()
    try:
        import select

        watcher = select.poll()
        watcher.register(1, 0)  # POLLERR/POLLHUP are always reported
    except (ImportError, AttributeError, ValueError, OSError):
        watcher = None

    def watch():
        while cancelled() is None:
            if watcher is None:
                time.sleep(poll)
            else:
                try:
                    events = watcher.poll(int(poll * 1000))
                except (OSError, ValueError):
                    return
                if any(event & (select.POLLERR | select.POLLHUP | select.POLLNVAL) for _fd, event in events):
                    cancel("the caller stopped reading the result (task timeout or ansible-playbook stopped)")
                    return
            gone = [pid for pid, started in ancestors if _start_time(pid) != started]
            if gone:
                # ansible-playbook was killed: its worker (in a session of its own) may still
                # read, but nobody will ever see the result.
                cancel("the process that started it (pid %d) is gone" % gone[0])
                return

    thread = threading.Thread(target=watch, name="cback-cancel-watch")
    thread.daemon = True
    thread.start()


def _start_time(pid):
    """When the process ``pid`` started (clock ticks since boot), ``None`` when it is gone:
    with the pid, it names one process even after pids are reused."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        return int(fields[19])
    except (IOError, OSError, IndexError, ValueError):
        return None


def _parent_of(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as handle:
            return int(handle.read().rsplit(b")", 1)[1].split()[1])
    except (IOError, OSError, IndexError, ValueError):
        return None


def _ancestors(limit=16):
    """``(pid, start time)`` of the processes this one was started from: its ancestors in its
    own session (Ansible's worker and the shell it runs the module with), then the first one
    outside it (``ansible-playbook``, or the ssh server of a remote connection).  Nothing
    beyond: a login shell that ends after starting ``nohup ansible-playbook`` is no concern."""
    chain = []
    try:
        session = os.getsid(0)
    except OSError:
        return chain
    pid = os.getppid()
    while pid and pid > 1 and len(chain) < limit:
        started = _start_time(pid)
        if started is None:
            break
        chain.append((pid, started))
        try:
            if os.getsid(pid) != session:
                break
        except OSError:
            break
        pid = _parent_of(pid)
    return chain


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


def as_local_user(argv, user, what):
    """``argv`` unchanged, once it is clear that this process may run it as ``user``.

    ``None`` is the current user.  Another user needs root (Cedar Backup's rule and message:
    ``Only root can remote <what> as another user.``, ``IOError``); ``run_command`` then runs
    the command with ``user=`` as that user, dropping to its ids in the child.
    """
    if user is not None and not _ids.is_running_as_root():
        raise IOError("Only root can remote %s as another user." % what)
    return list(argv)


def local_user(name):
    """The ``LocalUser`` of the account ``name`` (``KeyError`` for an unknown one): its
    supplementary groups are the ones the system's group database gives it, as a login would."""
    entry = pwd.getpwnam(name)
    try:
        groups = os.getgrouplist(entry.pw_name, entry.pw_gid)
    except (OSError, AttributeError):
        groups = [entry.pw_gid]
    if entry.pw_gid not in groups:
        groups = [entry.pw_gid] + list(groups)
    return LocalUser(entry.pw_name, entry.pw_uid, entry.pw_gid, tuple(sorted(set(groups))), entry.pw_dir or "/")


def user_environment(user):
    """The whole environment of a command run as ``user`` (a name or a ``LocalUser``): ``PATH``
    (``USER_PATH``), ``HOME`` (the user's home, ``/`` for an unknown user), ``USER``, ``LOGNAME``
    and ``LANG=C``.

    That user can read the environment of its own processes (``/proc/<pid>/environ``):
    nothing of root's environment may be in it.
    """
    if isinstance(user, LocalUser):
        name, home = user.name, user.home
    else:
        name = user
        try:
            home = pwd.getpwnam(user).pw_dir or "/"
        except KeyError:
            home = "/"
    return {"PATH": USER_PATH, "HOME": home, "USER": name, "LOGNAME": name, "LANG": "C"}


def _program(word, path):
    """``word`` as an absolute path: unchanged with a ``/`` in it, else found in ``path``."""
    if "/" in word:
        return word
    return shutil.which(word, path=path)


def _drop_to(user):
    """Popen keyword arguments that start the child as ``user``: the child sets its groups, gid
    and uid itself before it runs the program (Python 3.9+: in the interpreter's C code, safe
    with threads; earlier: a ``preexec_fn``)."""
    if POPEN_DROPS:
        return dict(user=user.uid, group=user.gid, extra_groups=list(user.groups))

    def drop():
        os.setgroups(list(user.groups))
        os.setgid(user.gid)
        os.setuid(user.uid)

    return dict(preexec_fn=drop)


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


def run_command(argv, timeout=None, env=None, cwd=None, keep=KEEP_BYTES, pass_fds=(), cleanup=False, user=None):
    """Run ``argv`` (a list, never a shell) and capture its output.

    Standard input is ``/dev/null`` so that nothing can wait on a prompt.  The command
    runs in its own session; when ``timeout`` (seconds) runs out, it is killed with every
    process it started (``kill_tree``) and the result has ``rc`` ``TIMED_OUT`` and
    ``timed_out`` true.  Of each output stream the first and last ``keep`` bytes are kept
    (``None``: all of it); ``truncated`` tells when some were dropped.  The thread's
    ``deadline``, when set, bounds ``timeout`` further.

    ``user`` (a name): run the command as that local user (root only; see ``as_local_user``).
    The child drops to the user's uid, gid and groups itself before the program starts; the
    program is looked up in ``USER_PATH`` and started by absolute path, in ``/`` unless ``cwd``
    says otherwise.  ``env`` ``None``: such a command gets ``user_environment`` only, nothing
    of this process's; any other command gets ``sanitized_environment``.  An unknown user, or
    a program not found, gives ``rc`` ``EXEC_FAILED``.  ``pass_fds``: descriptors the
    command inherits (every other one is closed).  After a ``cancel`` no command is started
    (a timed-out result) unless it is a ``cleanup`` command (one that stops what the run
    started, such as closing a shared ssh connection).  A command
    that cannot be started gives ``rc`` ``EXEC_FAILED`` and the reason in ``stderr``.
    """
    timeout = _bounded(timeout)
    started = _start(argv, timeout, env, cwd, pass_fds, cleanup, user, subprocess.DEVNULL)
    if isinstance(started, CommandResult):
        return started
    proc, argv = started
    try:
        return _wait(proc, argv, timeout, keep)
    finally:
        _forget(proc)


def _start(argv, timeout, env, cwd, pass_fds, cleanup, user, stdin):
    """Start ``argv`` as ``run_command`` does (its rules for ``user``, ``env``, ``cwd``,
    ``pass_fds``, ``cleanup`` and cancellation), with ``stdin``, stdout and stderr pipes:
    ``(proc, argv)`` (registered for ``cancel``; ``_forget`` it once it is reaped), or the
    ``CommandResult`` of a command that did not start."""
    argv = [str(word) for word in argv]
    if not argv:
        raise ValueError("Cannot run an empty command.")
    drop = {}
    if user is not None:
        try:
            account = local_user(user)
        except KeyError:
            return CommandResult(argv, EXEC_FAILED, "", "Local user %s does not exist: the command cannot run as that user.\n" % user, False)
        program = _program(argv[0], USER_PATH)
        if program is None:
            return CommandResult(argv, EXEC_FAILED, "", "%s: not found in %s\n" % (argv[0], USER_PATH), False)
        argv = [program] + argv[1:]
        drop = _drop_to(account)
        cwd = "/" if cwd is None else cwd
        if env is None:
            env = user_environment(account)
    elif env is None:
        env = sanitized_environment()
    if timeout is not None and timeout <= 0:
        return CommandResult(argv, TIMED_OUT, "", "Not started: the time for this peer had run out.\n", True)
    # Started and registered under the lock, so that a cancellation either finds the command
    # (and kills it) or comes first (and it is never started).
    with _running_lock:
        if cancelled() and not cleanup:
            return CommandResult(argv, TIMED_OUT, "", "Not started: the run was cancelled (%s).\n" % cancelled(), True)
        try:
            proc = subprocess.Popen(
                argv,
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                cwd=cwd,
                close_fds=True,
                pass_fds=tuple(pass_fds),
                start_new_session=True,
                **drop
            )
        except OSError as exc:
            return CommandResult(argv, EXEC_FAILED, "", "%s: %s" % (argv[0], exc.strerror or exc), False)
        except subprocess.SubprocessError as exc:  # the child could not become the user
            return CommandResult(argv, EXEC_FAILED, "", "%s: %s" % (argv[0], exc), False)
        _running[proc.pid] = cleanup
    if cancelled() and not cleanup:  # a cancellation that came in while it was being started
        kill_tree(proc.pid)
    return proc, argv


def _forget(proc):
    with _running_lock:
        _running.pop(proc.pid, None)


def _exited(proc, timeout):
    """Wait for ``proc`` to end, at most ``timeout`` seconds (``None``: no bound): whether it
    ended.  A blocking ``waitpid`` in a thread, so that the end is seen at once (``Popen.wait``
    with a timeout polls, up to 50 ms late each time)."""
    if timeout is None:
        proc.wait()
        return True
    waiter = threading.Thread(target=proc.wait, name="cback-command-wait")
    waiter.daemon = True
    waiter.start()
    waiter.join(max(0.0, timeout))
    return not waiter.is_alive()


def _wait(proc, argv, timeout, keep):
    out, err = _Capture(proc.stdout, keep), _Capture(proc.stderr, keep)
    started = time.monotonic()
    timed_out = False
    try:
        if not _exited(proc, timeout):
            timed_out = True
            kill_tree(proc.pid)
            proc.wait()
    except BaseException:
        kill_tree(proc.pid)
        proc.wait()
        raise
    finally:
        # The output ends when the last process holding the pipes is gone.  One that the
        # command left running (in its session) is bounded by what is left of the timeout.
        if timed_out:
            wait = DRAIN_SECONDS
        elif timeout is None:
            wait = None
        else:
            wait = max(0.0, timeout - (time.monotonic() - started))
        for capture in (out, err):
            capture.finish(wait)
        if out.thread.is_alive() or err.thread.is_alive():
            kill_tree(proc.pid)
            for capture in (out, err):
                capture.finish(DRAIN_SECONDS)
    truncated = out.dropped > 0 or err.dropped > 0
    if cancelled() and not timed_out and proc.returncode < 0:
        message = err.text() + "Command killed: the run was cancelled (%s).\n" % cancelled()
        return CommandResult(argv, TIMED_OUT, out.text(), message, True, truncated)
    if timed_out:
        message = err.text() + "Command timed out after %s seconds and was killed.\n" % _seconds(timeout)
        return CommandResult(argv, TIMED_OUT, out.text(), message, True, truncated)
    return CommandResult(argv, proc.returncode, out.text(), err.text(), False, truncated)


class Conversation(object):
    """A command kept running and given requests on its standard input, one after the other
    (OpenSSH's ``sftp -b -``): ``start_conversation`` starts it.

    ``ask`` writes a request (whole lines) and reads the command's standard output until a
    line the caller expects after the answer (the echo of a marker line it sent after the
    request); ``close`` ends its input and waits for it.  Every wait is bounded by its
    ``timeout`` and the thread's ``deadline``: a command that does not answer in time is
    killed with its tree, as ``run_command`` kills one, and so is every one on ``cancel``.
    Of standard error the first and last ``keep`` bytes are kept.
    """

    def __init__(self, proc, argv, keep):
        self.proc, self.argv = proc, argv
        self.timeout = None  # the timeout that ran out, once one has
        self._out = bytearray()
        self._ended = False
        self._changed = threading.Condition()
        self._err = _Capture(proc.stderr, keep)
        self._reader = threading.Thread(target=self._read, name="cback-conversation-output")
        self._reader.daemon = True
        self._reader.start()

    def _read(self):
        fd = self.proc.stdout.fileno()
        try:
            while True:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                with self._changed:
                    self._out += chunk
                    self._changed.notify_all()
        except (OSError, ValueError):
            pass
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def alive(self):
        return self.timeout is None and self.proc.poll() is None and not self._ended

    def ask(self, request, until, timeout=None, keep=KEEP_BYTES):
        """Write ``request`` (text, whole lines) and read standard output up to ``until``:
        the text before it (what came after stays for the next request), or ``None`` when
        the command ended, ran out of time (it is then killed) or wrote more than ``keep``
        bytes before ``until``."""
        if not self.alive() or cancelled():
            return None
        timeout = _bounded(timeout)
        end = None if timeout is None else time.monotonic() + timeout
        marker = until.encode("utf-8", "surrogateescape")
        try:
            self.proc.stdin.write(request.encode("utf-8", "surrogateescape"))
            self.proc.stdin.flush()
        except (OSError, ValueError):
            return None
        with self._changed:
            while True:
                found = self._out.find(marker)
                if found > keep:
                    return None
                if found >= 0:
                    answer = bytes(self._out[:found])
                    del self._out[:found + len(marker)]
                    return _decode(answer)
                if self._ended or len(self._out) > keep:
                    return None
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._changed.wait(left)
        self.timeout = timeout
        kill_tree(self.proc.pid)
        return None

    def close(self, timeout=DRAIN_SECONDS):
        """End the command's input and wait for it (killed with its tree after ``timeout``
        seconds, or at once after a timeout of ``ask``): its ``CommandResult``, standard output
        being what no ``ask`` read."""
        with contextlib.suppress(OSError, ValueError):
            self.proc.stdin.close()
        try:
            if not _exited(self.proc, _bounded(timeout)):
                kill_tree(self.proc.pid)
                self.proc.wait()
        finally:
            _forget(self.proc)
        self._reader.join(DRAIN_SECONDS)
        self._err.finish(DRAIN_SECONDS)
        with contextlib.suppress(OSError, ValueError):
            self.proc.stdout.close()
        with self._changed:
            out = _decode(bytes(self._out))
        err = self._err.text()
        if self.timeout is not None:
            message = err + "Command timed out after %s seconds and was killed.\n" % _seconds(self.timeout)
            return CommandResult(self.argv, TIMED_OUT, out, message, True)
        if cancelled() and self.proc.returncode < 0:
            message = err + "Command killed: the run was cancelled (%s).\n" % cancelled()
            return CommandResult(self.argv, TIMED_OUT, out, message, True)
        return CommandResult(self.argv, self.proc.returncode, out, err, False, self._err.dropped > 0)


def start_conversation(argv, timeout=None, env=None, cwd=None, pass_fds=(), user=None, keep=KEEP_BYTES):
    """Start ``argv`` (as ``run_command`` would start it) for a ``Conversation``; the
    ``CommandResult`` of a command that could not start instead.  ``timeout`` only decides
    whether it may start (a thread whose deadline has passed starts nothing)."""
    started = _start(argv, _bounded(timeout), env, cwd, pass_fds, False, user, subprocess.PIPE)
    if isinstance(started, CommandResult):
        return started
    return Conversation(started[0], started[1], keep)


class _Capture(object):
    """Reads one output stream of a command in a thread; keeps its head and tail only."""

    def __init__(self, stream, keep):
        self.stream = stream
        self.keep = keep
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0
        self.thread = threading.Thread(target=self._read, name="cback-command-output")
        self.thread.daemon = True
        self.thread.start()

    def _read(self):
        fd = self.stream.fileno()
        try:
            while True:
                chunk = os.read(fd, 65536)
                if not chunk:
                    return
                if self.keep is None:
                    self.head += chunk
                    continue
                room = self.keep - len(self.head)
                if room > 0:
                    self.head += chunk[:room]
                    chunk = chunk[room:]
                if chunk:
                    self.tail += chunk
                    if len(self.tail) > self.keep:
                        cut = len(self.tail) - self.keep
                        self.dropped += cut
                        del self.tail[:cut]
        except (OSError, ValueError):
            return

    def finish(self, wait):
        """Wait for the end of the stream (at most ``wait`` seconds when given)."""
        self.thread.join(wait)
        if not self.thread.is_alive():
            self.stream.close()

    def text(self):
        middle = b""
        if self.dropped:
            middle = ("\n[... %d bytes of output not kept ...]\n" % self.dropped).encode("ascii")
        return _decode(bytes(self.head) + middle + bytes(self.tail))


def _processes():
    """``{pid: (ppid, session id)}`` of every process, from ``/proc``."""
    found = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as handle:
                data = handle.read()
            fields = data[data.rindex(")") + 2:].split()
            found[int(entry)] = (int(fields[1]), int(fields[3]))
        except (IOError, OSError, ValueError, IndexError):
            continue
    return found


def _tree(pid, known):
    """``pid``, ``known`` and everything they started: descendants, and members of ``pid``'s
    session (a process left behind by one that exited is no descendant any more)."""
    processes = _processes()
    children = {}
    for member, (ppid, session) in processes.items():
        children.setdefault(ppid, []).append(member)
    found = [pid] + [member for member in known if member != pid]
    found += [member for member, (_ppid, session) in processes.items() if session == pid and member not in found]
    todo = list(found)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.append(child)
                todo.append(child)
    return found


def kill_tree(pid):
    """Kill ``pid`` and every process it started, whatever session or group it moved to.

    A command may start a new session of its own (ssh's connection master does), so killing
    the process group alone could miss some of it.  The tree is stopped first (so that nobody forks
    or is reparented while it is being found), then killed.
    """
    stopped = []
    for _round in range(3):
        new = [member for member in _tree(pid, stopped) if member not in stopped]
        if not new:
            break
        for member in new:
            _signal(member, signal.SIGSTOP)
        stopped.extend(new)
    for member in reversed(stopped):
        _signal(member, signal.SIGKILL)
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass


def _signal(pid, number):
    try:
        os.kill(pid, number)
    except OSError:
        pass


def _seconds(value):
    return "%d" % value if float(value).is_integer() else "%.1f" % value

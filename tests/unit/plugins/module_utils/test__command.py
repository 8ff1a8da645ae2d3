# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``_command``: the per-thread deadline that bounds every command of a peer's job."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import threading
import time

import pytest

from ansible_collections.cedarbackup.peer.plugins.module_utils import _command


def test_deadline_bounds_a_command_without_its_own_timeout():
    started = time.monotonic()
    with _command.deadline(1):
        result = _command.run_command(["sleep", "20"])
    assert result.timed_out and result.rc == _command.TIMED_OUT
    assert time.monotonic() - started < 10


def test_deadline_shortens_a_longer_timeout_and_keeps_a_shorter_one():
    with _command.deadline(30):
        started = time.monotonic()
        result = _command.run_command(["sleep", "20"], timeout=1)
        assert result.timed_out and time.monotonic() - started < 10
        assert 25 < _command.time_left() <= 30


def test_a_command_after_the_deadline_is_not_started(tmp_path):
    marker = tmp_path / "ran"
    with _command.deadline(0.01):
        time.sleep(0.05)
        result = _command.run_command(["touch", str(marker)])
    assert result.timed_out and "Not started" in result.stderr
    assert not marker.exists()


def test_no_deadline_outside_and_each_thread_has_its_own():
    assert _command.time_left() is None
    seen = {}

    def other():
        seen["other"] = _command.time_left()

    with _command.deadline(5):
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        assert _command.time_left() is not None
    assert seen["other"] is None
    assert _command.time_left() is None


def test_zero_means_no_deadline():
    with _command.deadline(0):
        assert _command.time_left() is None
        assert _command.run_command(["true"]).rc == 0


# ---------------------------------------------------------------------------
# A timed-out command is killed with everything it started; output is bounded
# ---------------------------------------------------------------------------

def _processes_running(word):
    """Pids whose command line holds ``word``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/cmdline" % entry, "rb") as handle:
                    if word.encode() in handle.read():
                        found.append(int(entry))
            except (IOError, OSError):
                pass
    return found


@pytest.mark.parametrize("launcher", ["setsid", "su"])
def test_timeout_kills_the_whole_tree_even_in_another_session(launcher):
    """``su -c`` (and ``setsid``) move the command to a new session, out of the process group."""
    if launcher == "su" and os.getuid() != 0:
        pytest.skip("su to another user needs root")
    marker = "31.%d" % os.getpid()  # a sleep no other test runs
    inner = "sleep %s; sleep %s" % (marker, marker)
    argv = ["setsid", "-w", "sh", "-c", inner] if launcher == "setsid" else ["su", "-s", "/bin/sh", "nobody", "-c", inner]
    started = time.monotonic()
    result = _command.run_command(argv, timeout=1)
    elapsed = time.monotonic() - started
    assert result.timed_out and result.rc == _command.TIMED_OUT
    assert elapsed < _command.DRAIN_SECONDS + 4, elapsed
    deadline = time.monotonic() + 5
    while _processes_running("sleep " + marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_running("sleep " + marker) == []


def test_a_process_left_behind_holding_the_output_is_bounded_by_the_timeout():
    """The command exits, a child it left running keeps the pipes open: the wait is bounded."""
    marker = "32.%d" % os.getpid()
    started = time.monotonic()
    result = _command.run_command(["sh", "-c", "sleep %s & echo started" % marker], timeout=2)
    assert time.monotonic() - started < 2 + _command.DRAIN_SECONDS + 3
    assert result.rc == 0 and result.stdout == "started\n"
    deadline = time.monotonic() + 5
    while _processes_running("sleep " + marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_running("sleep " + marker) == []


def test_a_flood_of_output_is_not_kept_in_memory():
    result = _command.run_command(["sh", "-c", "head -c 20000000 /dev/zero | tr '\\0' x; echo END >&2"])
    assert result.rc == 0 and result.truncated
    assert len(result.stdout) < 3 * _command.KEEP_BYTES
    assert result.stdout.startswith("x" * 1000) and result.stdout.endswith("x" * 1000)
    assert "bytes of output not kept" in result.stdout
    assert result.stderr == "END\n"


def test_all_output_is_kept_when_asked():
    result = _command.run_command(["head", "-c", str(3 * _command.KEEP_BYTES), "/dev/zero"], keep=None)
    assert len(result.stdout) == 3 * _command.KEEP_BYTES and not result.truncated


@pytest.fixture
def cancellation():
    yield _command.cancel
    _command._uncancel()


def test_cancel_kills_a_running_command_and_refuses_new_ones(cancellation):
    results = []
    worker = threading.Thread(target=lambda: results.append(_command.run_command(["sleep", "30"], timeout=60)))
    started = time.monotonic()
    worker.start()
    time.sleep(0.5)
    cancellation("signal SIGTERM")
    worker.join(10)
    assert not worker.is_alive() and time.monotonic() - started < 10
    (killed,) = results
    assert killed.timed_out and "the run was cancelled (signal SIGTERM)" in killed.stderr
    refused = _command.run_command(["true"])
    assert refused.timed_out and refused.stderr.startswith("Not started: the run was cancelled")
    # what stops what the run started (closing the shared ssh connection) still runs
    assert _command.run_command(["true"], cleanup=True).rc == 0

# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``_command``: the per-thread deadline that bounds every command of a peer's job."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import threading
import time

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

# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``_failure``: the ignore-failure table of docs/cback3-behaviour.md, start-of-week days.

Expected values come from Cedar Backup 3.7 (``CedarBackup3.actions.stage``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.cedarbackup.peer.plugins.module_utils import _failure


# (mode, normal day, --full, start of week): True means "ignored" (INFO), False "reported" (ERROR)
FAILURE_TABLE = [
    (None, False, False, False),
    ("none", False, False, False),
    ("all", True, True, True),
    ("daily", True, False, False),
    ("weekly", False, True, True),
]


@pytest.mark.parametrize("mode, normal, full, start", FAILURE_TABLE)
def test_ignored_on_a_normal_day(mode, normal, full, start):
    assert _failure.ignored_on(mode, False, False) is normal


@pytest.mark.parametrize("mode, normal, full, start", FAILURE_TABLE)
def test_ignored_on_a_full_run(mode, normal, full, start):
    assert _failure.ignored_on(mode, True, False) is full


@pytest.mark.parametrize("mode, normal, full, start", FAILURE_TABLE)
def test_ignored_on_the_start_of_the_week(mode, normal, full, start):
    assert _failure.ignored_on(mode, False, True) is start


@pytest.mark.parametrize("mode, normal, full, start", FAILURE_TABLE)
def test_ignored_on_a_full_run_on_the_start_of_the_week(mode, normal, full, start):
    assert _failure.ignored_on(mode, True, True) is start


@pytest.mark.parametrize("mode", ["Daily", "never", "", "ALL", 1])
def test_ignored_on_an_invalid_mode(mode):
    with pytest.raises(ValueError) as info:
        _failure.ignored_on(mode, False, False)
    assert str(info.value) == "Ignore failure mode must be one of ['none', 'all', 'daily', 'weekly']."


def test_valid_failure_modes_match_cedar_backup():
    assert _failure.VALID_FAILURE_MODES == ["none", "all", "daily", "weekly"]


@pytest.mark.parametrize("index, day", list(enumerate(["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"])))
def test_weekday_index(index, day):
    assert _failure.weekday_index(day) == index


@pytest.mark.parametrize("day", ["Monday", "MONDAY", "mon", "", "funday", None, " monday"])
def test_weekday_index_errors(day):
    with pytest.raises(ValueError) as info:
        _failure.weekday_index(day)
    assert str(info.value) == "Starting day must be one of monday, tuesday, wednesday, thursday, friday, saturday, sunday."

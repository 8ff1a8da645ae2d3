# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to cedarbackup.peer: not a public API, may change without notice.
"""Ignore-failure modes: when a peer that is not ready is quietly skipped.

Mirrors ``CedarBackup3.actions.stage._getIgnoreFailuresFlag`` and
``CedarBackup3.util.isStartOfWeek``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

VALID_FAILURE_MODES = ["none", "all", "daily", "weekly"]

WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


def weekday_index(day):
    """Index (Monday = 0) of a lowercase English weekday; ``ValueError`` otherwise."""
    try:
        return WEEKDAYS.index(day)
    except ValueError:
        raise ValueError("Starting day must be one of %s." % ", ".join(WEEKDAYS))


def ignored_on(mode, full, start_of_week):
    """Whether a *not ready* peer with ignore-failure ``mode`` is ignored on this run.

    ``mode`` is ``None`` or one of ``VALID_FAILURE_MODES``; ``full`` is the ``--full`` flag,
    ``start_of_week`` whether today is the week's starting day.  ``weekly`` ignores on a full
    run or on the week's starting day, ``daily`` on the other days, ``all`` always, ``none``
    never.
    """
    if mode is not None and mode not in VALID_FAILURE_MODES:
        raise ValueError("Ignore failure mode must be one of %s." % VALID_FAILURE_MODES)
    if mode is None or mode == "none":
        return False
    if mode == "all":
        return True
    if full or start_of_week:
        return mode == "weekly"
    return mode == "daily"

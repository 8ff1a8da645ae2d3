# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to cedarbackup.peer: not a public API, may change without notice.
"""Daily staging directory naming (``<staging_dir>/YYYY/MM/DD``, local time)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ._paths import path_join


def daily_subdir(now=None):
    """``YYYY/MM/DD`` for ``now`` (a ``time.struct_time``; default local time now)."""
    when = time.localtime() if now is None else now
    return time.strftime("%Y/%m/%d", when)


def daily_dir(staging_dir, now=None):
    """The daily staging directory under ``staging_dir``, as cback3 names it."""
    return path_join(staging_dir, daily_subdir(now))

# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to cedarbackup.peer: not a public API, may change without notice.
"""Path helpers equivalent to CedarBackup3.util.encodePath and pathJoin."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import sys


def encode_path(path):
    """Return ``path`` as text, decoding bytes the way ``os.listdir()`` does.

    ``None`` stays ``None``.  Raises ``ValueError`` when bytes cannot be decoded.
    """
    if path is None:
        return path
    if isinstance(path, bytes):
        encoding = sys.getfilesystemencoding() or sys.getdefaultencoding()
        try:
            return path.decode(encoding, "surrogateescape")
        except UnicodeError as exc:
            raise ValueError("Path could not be safely encoded as %s: %s" % (encoding, str(exc)))
    return path


def path_join(path, *paths):
    """``os.path.join`` with forward slashes, as CedarBackup3's ``pathJoin``."""
    return os.path.join(path, *paths).replace("\\", "/")


def is_single_name(value):
    """True when ``value`` can be used as exactly one directory entry name."""
    return (
        isinstance(value, str)
        and value not in ("", ".", "..")
        and "/" not in value
        and "\0" not in value
    )

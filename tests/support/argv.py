# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Argv lists of recorded commands, in the form Cedar Backup would run them."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re

PRIVATE_DIR = re.compile(r"/cback-peer-[0-9a-f]{12}(?=/|$|')")
PROC_FD = re.compile(r"^/proc/self/fd/([0-9]+)")


def cedar_form(argv, private=PRIVATE_DIR):
    """``argv`` as Cedar Backup would run it: the private directory of the indicators (a
    ``cback-peer-*`` directory inside the working directory) is Cedar Backup's working
    directory itself, and a directory handed to the command as ``/proc/self/fd/N`` is named
    by its path.  Call it while the command runs (the descriptor must be open)."""
    words = []
    for word in argv:
        match = PROC_FD.match(word)
        if match:
            word = os.readlink("/proc/self/fd/%s" % match.group(1)) + word[match.end():]
        words.append(private.sub("", word))
    return words

# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run the commands of a JSON file, all at once or at most N at a time (private to bench/).

    python3 bench/_all_at_once.py [--at-most N] COMMANDS.json

COMMANDS.json holds a list of argv lists (no shell).  Without ``--at-most`` every command
starts at once; with it, the first N start and the next one starts whenever one exits
(in the file's order).  Exit status 0 when every command exited 0, else 1, with the
failing commands and their exit status on standard error.  The one command of
``bench/bare_fetch.yml`` (and of the bounded ``ParallelScp`` side): the least an Ansible
task can do to fetch every peer.
"""

import json
import os
import subprocess
import sys

USAGE = "usage: _all_at_once.py [--at-most N] COMMANDS.json\n"


def parse(argv):
    """``(at_most or None, path)``; ``ValueError`` on a bad command line."""
    words = list(argv[1:])
    at_most = None
    if words[:1] == ["--at-most"]:
        if len(words) < 2:
            raise ValueError("--at-most needs a number")
        at_most = int(words[1])
        if at_most < 1:
            raise ValueError("--at-most must be at least 1")
        words = words[2:]
    if len(words) != 1:
        raise ValueError("one COMMANDS.json expected")
    return at_most, words[0]


def run(commands, at_most=None):
    """Run ``commands`` with at most ``at_most`` running at once (all when None); the list of
    ``(command, exit status)`` of those that failed, in the order they were given."""
    limit = len(commands) if at_most is None else at_most
    waiting = list(enumerate(commands))
    running, status = {}, {}  # pid: (index, Popen), index: exit status
    while waiting or running:
        while waiting and len(running) < limit:
            index, command = waiting.pop(0)
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
            running[process.pid] = (index, process)  # kept referenced: Popen must not reap it on its own
        # Every pid in ``running`` is a child of this process: os.wait returns one of them.
        pid, code = os.wait()
        if pid in running:
            index, process = running.pop(pid)
            process.returncode = status[index] = os.waitstatus_to_exitcode(code)
    return [(commands[index], status[index]) for index in sorted(status) if status[index] != 0]


def main(argv):
    try:
        at_most, path = parse(argv)
    except ValueError as exc:
        sys.stderr.write("%s%s\n" % (USAGE, exc))
        return 2
    with open(path) as handle:
        commands = json.load(handle)
    failed = run(commands, at_most)
    for command, status in failed:
        sys.stderr.write("exit status %d: %s\n" % (status, json.dumps(command)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

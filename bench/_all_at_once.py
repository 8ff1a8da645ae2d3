# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run every command of a JSON file at once and wait for all (private to bench/).

    python3 bench/_all_at_once.py COMMANDS.json

COMMANDS.json holds a list of argv lists (no shell).  Exit status 0 when every command
exited 0, else 1, with the failing commands and their exit status on standard error.  The
one command of ``bench/bare_fetch.yml``: the least an Ansible task can do to fetch every
peer at once.
"""

import json
import subprocess
import sys


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: _all_at_once.py COMMANDS.json\n")
        return 2
    with open(argv[1]) as handle:
        commands = json.load(handle)
    processes = [(command, subprocess.Popen(command, stdin=subprocess.DEVNULL)) for command in commands]
    failed = [(command, process.wait()) for command, process in processes]
    failed = [(command, status) for command, status in failed if status != 0]
    for command, status in failed:
        sys.stderr.write("exit status %d: %s\n" % (status, json.dumps(command)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

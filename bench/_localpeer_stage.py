# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Stage local peers with ``LocalPeer.stagePeer`` (a side of bench/run.py, scenario c).

    /usr/bin/python3 _localpeer_stage.py COLLECTIONS_PATH COLLECT_ROOT TARGET_ROOT NAME...

Imports ``ansible_collections.cedarbackup.peer.plugins.module_utils.peer`` from
COLLECTIONS_PATH (the installed collection) and stages every peer ``COLLECT_ROOT/NAME`` into
the existing directory ``TARGET_ROOT/NAME``, one peer after the other, as ``cback3 stage``
does; prints the number of files staged.
"""

import os
import sys


def main(argv):
    if len(argv) < 5:
        sys.exit(__doc__)
    collections, collect_root, target_root = argv[1:4]
    sys.path.insert(0, collections)
    from ansible_collections.cedarbackup.peer.plugins.module_utils.peer import LocalPeer

    count = 0
    for name in argv[4:]:
        count += LocalPeer(name, os.path.join(collect_root, name)).stagePeer(os.path.join(target_root, name))
    print(count)


if __name__ == "__main__":
    main(sys.argv)

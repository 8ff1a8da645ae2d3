# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Stand-in for the get-pip.py script that ansible-test downloads to bootstrap pip.

ansible-test creates each sanity test's virtual environment without pip, then runs its
cached ``~/.ansible/test/cache/get_pip_<version>.py`` (``make sanity`` copies this file
there) as ``python get_pip_<version>.py [pip install options] pip==<version>
--no-setuptools --no-wheel``.  The download host is not reachable here, the package index
is: pip comes from the Python's own ``ensurepip``, then the requested pip from the index.
"""

import subprocess
import sys

GET_PIP_OPTIONS = ("--no-setuptools", "--no-wheel")


def main():
    """Bootstrap pip, then ``pip install`` what get-pip.py was asked for."""
    args = [arg for arg in sys.argv[1:] if arg not in GET_PIP_OPTIONS]
    python = sys.executable
    subprocess.run([python, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL, check=True)
    subprocess.run([python, "-m", "pip", "install"] + args, check=True)
    if "--no-setuptools" in sys.argv[1:]:
        # ensurepip of Python < 3.12 installs setuptools too; get-pip.py would not
        subprocess.run([python, "-m", "pip", "uninstall", "--yes", "--quiet", "--disable-pip-version-check", "setuptools"], check=True)


if __name__ == "__main__":
    try:
        main()
    except subprocess.CalledProcessError as exc:
        sys.exit(exc.returncode)

"""Benchmark: a stage run of N remote peers, `cback3 stage` against `cedarbackup.peer.stage`.

Starts N real sshd peers on loopback (tests/support/sshd.py), fills each collect directory
with F files of S KiB plus cback.collect, then times, on fresh copies of the same input:

- `cback3 --config <cfg> stage` (Debian's cedar-backup3), as root with a backup user, so
  every remote copy runs as `su <backup user> -c scp ...`, as in production;
- `ansible-playbook cedarbackup.peer.stage` with the same peers and settings (first run),
- and its second run on the same day (nothing to copy).

Each measurement is repeated R times; the median and the range are printed, plus the
number of ssh logins each side made per peer (from the sshd logs).  Run as root:

    .venv/bin/python bench/stage_remote.py --peers 8 --files 16 --size-kib 4096 --repeat 3

Needs: `make collection` done, Debian packages openssh-server and cedar-backup3.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "support"))

from sshd import SshPeerPool, ensure_local_user, remove_local_user  # noqa: E402

BACKUP_USER = "cbackpeer"
PLAYBOOK_TIMEOUT = 3600


def fill(collect_dir, files, size_kib):
    os.makedirs(collect_dir)
    for index in range(files):
        with open(os.path.join(collect_dir, "file%03d" % index), "wb") as handle:
            handle.write(os.urandom(size_kib * 1024))
    open(os.path.join(collect_dir, "cback.collect"), "w").close()


def cback3_config(path, staging_dir, work_dir, rcp_command, peers):
    remote = "".join(
        "<peer><name>%s</name><type>remote</type><collect_dir>%s</collect_dir><backup_user>root</backup_user></peer>"
        % (name, collect) for name, collect in peers
    )
    with open(path, "w") as handle:
        handle.write(
            "<?xml version='1.0'?><cb_config><reference><author>bench</author></reference><options>"
            "<starting_day>monday</starting_day><working_dir>%s</working_dir><backup_user>%s</backup_user>"
            "<backup_group>%s</backup_group><rcp_command>%s</rcp_command></options>"
            "<stage><staging_dir>%s</staging_dir>%s</stage></cb_config>\n"
            % (work_dir, BACKUP_USER, BACKUP_USER, rcp_command, staging_dir, remote)
        )


def inventory(path, staging_dir, work_dir, rcp_command, rsh_command, peers, parallel, multiplex=True):
    lines = ["[cback_master]", "localhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3", "",
             "[cback_peers]"]
    lines += ["%s cback_collect_dir=%s cback_remote_user=root" % (name, collect) for name, collect in peers]
    lines += ["", "[all:vars]", "cback_staging_dir=%s" % staging_dir, "cback_working_dir=%s" % work_dir,
              "cback_backup_user=%s" % BACKUP_USER, "cback_backup_group=%s" % BACKUP_USER,
              "cback_rcp_command=%s" % rcp_command, "cback_rsh_command=%s" % rsh_command,
              "cback_stage_parallel=%d" % parallel, "cback_ssh_multiplex=%s" % str(multiplex).lower()]
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")


def logins(pool):
    total = 0
    for peer in pool.peers:
        with open(peer.log) as handle:
            total += handle.read().count("Accepted publickey")
    return total


def staged_files(staging_dir):
    return sum(len(files) for _dirs, _subdirs, files in os.walk(staging_dir))


def timed(argv, env=None):
    started = time.monotonic()
    result = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            timeout=PLAYBOOK_TIMEOUT)
    return time.monotonic() - started, result


def report(label, seconds, extra=""):
    print("%-34s median %7.2f s  (min %.2f, max %.2f, n=%d)%s" % (
        label, statistics.median(seconds), min(seconds), max(seconds), len(seconds), extra))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=8)
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--size-kib", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=8, help="cback_stage_parallel (and ansible forks)")
    parser.add_argument("--no-multiplex", action="store_true", help="cback_ssh_multiplex=false")
    parser.add_argument("--skip-cback3", action="store_true", help="time only the playbook")
    args = parser.parse_args()
    if os.getuid() != 0:
        parser.error("run as root (cback3 stage su's to the backup user, as in production)")

    base = tempfile.mkdtemp(prefix="cback-bench-")
    os.chmod(base, 0o755)  # the backup user the copies run as must get through
    created_user = ensure_local_user(BACKUP_USER)
    names = ["bpeer%02d" % index for index in range(1, args.peers + 1)]
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".build", "collections"),
               ANSIBLE_FORKS=str(max(5, args.parallel)))
    try:
        with SshPeerPool(os.path.join(base, "pool"), names=names, first_address="127.0.4.1") as pool:
            rcp, rsh = pool.client_for_user(BACKUP_USER)
            source = os.path.join(base, "source")
            for name in names:
                fill(os.path.join(source, name), args.files, args.size_kib)
            size = args.peers * args.files * args.size_kib / 1024.0
            print("%d remote peers x %d files x %d KiB = %.0f MiB; ssh via %s" % (args.peers, args.files, args.size_kib, size, rcp))
            expected = args.peers * (args.files + 1) + 1  # files + cback.collect per peer, daily cback.stage
            results = {"cback3 stage": [], "cedarbackup.peer.stage": [], "cedarbackup.peer.stage re-run": []}
            login_counts = {key: [] for key in results}
            for attempt in range(args.repeat):
                for side in (("ours",) if args.skip_cback3 else ("cback3", "ours")):
                    run_dir = os.path.join(base, "%s-%d" % (side, attempt))
                    collect_root = os.path.join(run_dir, "collect")
                    shutil.copytree(source, collect_root)
                    staging, work = os.path.join(run_dir, "stage"), os.path.join(run_dir, "work")
                    os.makedirs(staging)
                    os.makedirs(work)
                    subprocess.run(["chown", "-R", "%s:%s" % (BACKUP_USER, BACKUP_USER), staging, work], check=True)
                    peers = [(name, os.path.join(collect_root, name)) for name in names]
                    if side == "cback3":
                        config = os.path.join(run_dir, "cback3.conf")
                        cback3_config(config, staging, work, rcp, peers)
                        before = logins(pool)
                        seconds, result = timed(["/usr/bin/cback3", "--config", config, "--logfile",
                                                 os.path.join(run_dir, "cback3.log"), "stage"])
                        assert result.returncode == 0, result.stdout
                        assert staged_files(staging) == expected, "cback3 staged %d files" % staged_files(staging)
                        results["cback3 stage"].append(seconds)
                        login_counts["cback3 stage"].append((logins(pool) - before) / float(args.peers))
                    else:
                        inv = os.path.join(run_dir, "inventory.ini")
                        inventory(inv, staging, work, rcp, rsh, peers, args.parallel, not args.no_multiplex)
                        for key in ("cedarbackup.peer.stage", "cedarbackup.peer.stage re-run"):
                            before = logins(pool)
                            seconds, result = timed([os.path.join(ROOT, ".venv", "bin", "ansible-playbook"), "-i", inv,
                                                     "cedarbackup.peer.stage"], env=env)
                            assert result.returncode == 0, result.stdout.decode(errors="replace")[-3000:]
                            # + the daily cback.stage; the JSON summary lies beside the daily dir
                            assert staged_files(staging) == expected + 1, "staged %d files" % staged_files(staging)
                            results[key].append(seconds)
                            login_counts[key].append((logins(pool) - before) / float(args.peers))
                    shutil.rmtree(run_dir)
            for key, seconds in results.items():
                if not seconds:
                    continue
                report(key, seconds, "  ssh logins per peer: %.1f" % statistics.median(login_counts[key]))
    finally:
        shutil.rmtree(base, ignore_errors=True)
        if created_user:
            remove_local_user(BACKUP_USER)


if __name__ == "__main__":
    main()

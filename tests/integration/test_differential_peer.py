"""Differential tests: ``CedarBackup3.peer`` (Debian's cedar-backup3) against our ``peer``.

Every scenario builds two identical datasets, one per implementation, under
``<base>/cedarbackup3`` and ``<base>/ours``, runs the same call sequence through each and
compares what came out: each step's return value or ``(exception type, message)``, and a
snapshot of the whole dataset tree (relative path, kind, size, sha256, mode bits, uid,
gid, link target).  Paths inside values and messages are made relative to the copy's
root (``<ROOT>``).

Remote peers are real sshd servers on loopback (``tests/support/sshd.py``); the two
implementations run one after the other, never concurrently.  Scenarios whose outcome
differs on purpose (listed in the module docstring of our ``peer.py``) are in the
``Intended differences`` section and assert the documented difference explicitly.
"""

import grp
import hashlib
import os
import pwd
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from ansible_collections.cedarbackup.peer.tests.support.sshd import SshPeerPool

pytestmark = pytest.mark.differential

NOBODY = pwd.getpwnam("nobody").pw_uid
NOGROUP = grp.getgrnam("nogroup").gr_gid
ROOT_TOKEN = "<ROOT>"
DEAD_ADDRESS = "127.0.1.250"  # a loopback address nothing in these tests listens on


# ----------------------------------------------------------------------------------------
# observation helpers
# ----------------------------------------------------------------------------------------


def _normalize(value, root):
    root = str(root)
    if isinstance(value, str):
        return value.replace(root, ROOT_TOKEN)
    if isinstance(value, bytes):
        return value.replace(root.encode(), ROOT_TOKEN.encode())
    if isinstance(value, (list, tuple)):
        return type(value)(_normalize(item, root) for item in value)
    return value


def attempt(function, *args, **kwargs):
    """One step: ``("ok", value)`` or ``("raised", type name, message)``."""
    try:
        return ("ok", function(*args, **kwargs))
    except Exception as exc:  # pylint: disable=broad-except
        return ("raised", type(exc).__name__, str(exc))


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(handle.read())
    return digest.hexdigest()


def snapshot(root):
    """Sorted ``(relpath, kind, size, sha256, mode, uid, gid, link)`` of everything below root."""
    root = str(root)
    entries = []

    def record(path):
        info = os.lstat(path)
        rel = os.path.relpath(path, root)
        size = digest = link = None
        if stat.S_ISLNK(info.st_mode):
            kind, link = "link", os.readlink(path).replace(root, ROOT_TOKEN)
        elif stat.S_ISDIR(info.st_mode):
            kind = "dir"
        elif stat.S_ISREG(info.st_mode):
            kind, size, digest = "file", info.st_size, _sha256(path)
        else:
            kind = "other"
        entries.append((rel, kind, size, digest, oct(stat.S_IMODE(info.st_mode)), info.st_uid, info.st_gid, link))

    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            record(os.path.join(dirpath, name))
    return sorted(entries)


def entries(observation, prefix):
    """Snapshot entries directly inside ``prefix`` (a relative dir), keyed by name."""
    found = {}
    for entry in observation["tree"]:
        rel = entry[0]
        if os.path.dirname(rel) == prefix:
            found[os.path.basename(rel)] = {
                "kind": entry[1], "size": entry[2], "mode": int(entry[4], 8), "uid": entry[5], "gid": entry[6],
            }
    return found


def differential(implementations, base, setup, steps, umask=None):
    """Run ``setup(root)`` then ``steps(module, root)`` once per implementation.

    :returns: ``(cedarbackup3 observation, our observation)``, each
        ``{"steps": [...], "tree": snapshot}`` normalised to the copy's root
    """
    observations = []
    for label in ("cedarbackup3", "ours"):
        module = implementations[label]
        root = Path(base) / label
        root.mkdir(parents=True)
        setup(root)
        old = os.umask(umask) if umask is not None else None
        try:
            result = steps(module, root)
        finally:
            if old is not None:
                os.umask(old)
        observations.append({"steps": _normalize(result, root), "tree": snapshot(root)})
    return observations[0], observations[1]


def write(path, data=b"", mode=0o644):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(str(path), mode)


STANDARD_FILES = {
    "alpha.txt": (b"alpha\n" * 10, 0o644),
    "beta.bin": (bytes(range(256)) * 16, 0o600),
    "gamma script.sh": (b"#!/bin/sh\necho gamma\n", 0o755),
    "world.txt": (b"world", 0o666),
    "readonly.dat": (b"ro", 0o400),
    ".dotfile": (b"hidden\n", 0o644),
    "cback.collect": (b"", 0o644),
}


def make_collect(root, files=STANDARD_FILES, name="collect"):  # pylint: disable=dangerous-default-value  # read-only constant
    collect = Path(root) / name
    collect.mkdir()
    for fileName, (data, mode) in files.items():
        write(collect / fileName, data, mode)
    return collect


def make_dirs(root, *names):
    for name in names:
        (Path(root) / name).mkdir()


@pytest.fixture
def impls(cedarbackup3, ourpeer):
    return {"cedarbackup3": cedarbackup3, "ours": ourpeer}


# ----------------------------------------------------------------------------------------
# local peers
# ----------------------------------------------------------------------------------------


def _local(module, root, collect="collect"):
    return module.LocalPeer("local", str(Path(root) / collect))


def _setup_standard(root):
    make_collect(root)
    make_dirs(root, "target")


def _setup_symlink(root):
    collect = make_collect(root, {"a.txt": (b"a", 0o644), "z.txt": (b"z", 0o644)})
    os.symlink(str(collect / "a.txt"), str(collect / "m-link"))
    make_dirs(root, "target")


def _setup_subdir(root):
    collect = make_collect(root, {"a.txt": (b"a", 0o644), "z.txt": (b"z", 0o644)})
    write(collect / "sub" / "inner.txt", b"inner")
    make_dirs(root, "target")


def _setup_umask_modes(root):
    make_collect(root, {"private": (b"p" * 100, 0o600), "tool": (b"#!/bin/sh\n", 0o755)})
    make_dirs(root, "target")


def _setup_empty(root):
    make_collect(root, {})
    make_dirs(root, "target")


def _setup_no_collect(root):
    make_dirs(root, "target")


def _setup_no_target(root):
    make_collect(root)


def _setup_indicators(root):
    make_collect(root, {"cback.collect": (b"", 0o644), "ready.flag": (b"", 0o600), "data": (b"d", 0o644)})


def _setup_no_indicator(root):
    make_collect(root, {"data": (b"d", 0o644)})


def _setup_stale_stage(root):
    make_collect(root, {"cback.stage": (b"old contents", 0o600), "data": (b"d", 0o644)})


def _second_stage(module, root):
    peer = _local(module, root)
    first = attempt(peer.stagePeer, str(root / "target"))
    write(root / "collect" / "alpha.txt", b"changed alpha", 0o640)
    write(root / "collect" / "new.txt", b"new", 0o644)
    return [first, attempt(peer.stagePeer, str(root / "target"))]


def _expect_count(count):
    def check(observation):
        assert observation["steps"] == [("ok", count)]

    return check


def _expect_raised(type_name, message):
    def check(observation):
        assert observation["steps"][-1] == ("raised", type_name, message)

    return check


def _expect_standard_staged(observation):
    assert observation["steps"] == [("ok", 7)]
    staged = entries(observation, "target")
    assert set(staged) == set(STANDARD_FILES)  # local copies include dotfiles
    assert {name: item["mode"] for name, item in staged.items()} == {name: mode for name, (dummy, mode) in STANDARD_FILES.items()}


def _expect_owned_640(observation):
    assert observation["steps"] == [("ok", 7)]
    staged = entries(observation, "target")
    assert len(staged) == 7
    assert all((item["uid"], item["gid"], item["mode"]) == (NOBODY, NOGROUP, 0o640) for item in staged.values())


def _expect_umask_modes(observation):
    assert observation["steps"] == [("ok", 2)]
    assert {name: item["mode"] for name, item in entries(observation, "target").items()} == {"private": 0o600, "tool": 0o755}


def _expect_partial(observation):
    assert observation["steps"][0][:2] == ("raised", "ValueError")
    assert entries(observation, "target")  # something was staged before the failure...
    assert len(entries(observation, "target")) < 3  # ...but not everything


def _expect_second_stage(observation):
    assert observation["steps"] == [("ok", 7), ("ok", 8)]
    staged = entries(observation, "target")
    assert staged["alpha.txt"]["size"] == len(b"changed alpha") and staged["alpha.txt"]["mode"] == 0o640


def _expect_indicators(observation):
    assert [step[1] for step in observation["steps"]] == [True, True, False, True, False]


def _expect_stage_file(name, uid=0, gid=0, mode=0o644):
    def check(observation):
        assert observation["steps"][-1] == ("ok", None)
        written = entries(observation, "collect")[name]
        assert (written["kind"], written["size"], written["uid"], written["gid"], written["mode"]) == ("file", 0, uid, gid, mode)

    return check


LOCAL_SCENARIOS = {
    "stage_normal": (_setup_standard, lambda m, r: [attempt(_local(m, r).stagePeer, str(r / "target"))], _expect_standard_staged, None),
    "stage_ownership_permissions": (
        _setup_standard,
        lambda m, r: [attempt(_local(m, r).stagePeer, str(r / "target"), (NOBODY, NOGROUP), 0o640)],
        _expect_owned_640,
        None,
    ),
    "stage_ownership_with_none_uid": (
        _setup_standard,
        lambda m, r: [attempt(_local(m, r).stagePeer, str(r / "target"), (None, NOGROUP))],
        _expect_raised("TypeError", "uid should be integer, not NoneType"),
        None,
    ),
    "stage_modes_under_umask_077": (
        _setup_umask_modes,
        lambda m, r: [attempt(_local(m, r).stagePeer, str(r / "target"))],
        _expect_umask_modes,
        0o077,
    ),
    "stage_empty_collect": (
        _setup_empty,
        lambda m, r: [attempt(_local(m, r).stagePeer, str(r / "target"))],
        _expect_raised("OSError", "Did not copy any files from local peer."),
        None,
    ),
    "stage_missing_collect": (
        _setup_no_collect,
        lambda m, r: [attempt(_local(m, r).stagePeer, str(r / "target"))],
        _expect_raised("ValueError", "Collect directory is not a directory or does not exist on disk."),
        None,
    ),
    "stage_symlink_in_collect": (_setup_symlink, lambda m, r: [attempt(_local(m, r).stagePeer, str(r / "target"))], _expect_partial, None),
    "stage_subdirectory_in_collect": (_setup_subdir, lambda m, r: [attempt(_local(m, r).stagePeer, str(r / "target"))], _expect_partial, None),
    "stage_relative_target": (
        _setup_standard,
        lambda m, r: [attempt(_local(m, r).stagePeer, "target")],
        _expect_raised("ValueError", "Target directory must be an absolute path."),
        None,
    ),
    "stage_missing_target": (
        _setup_no_target,
        lambda m, r: [attempt(_local(m, r).stagePeer, str(r / "target"))],
        _expect_raised("ValueError", "Target directory is not a directory or does not exist on disk."),
        None,
    ),
    "stage_bytes_target": (
        _setup_standard,
        lambda m, r: [attempt(_local(m, r).stagePeer, str(r / "target").encode())],
        _expect_count(7),
        None,
    ),
    "stage_second_run_over_staged_target": (_setup_standard, _second_stage, _expect_second_stage, None),
    "check_indicator_default_custom": (
        _setup_indicators,
        lambda m, r: [
            attempt(_local(m, r).checkCollectIndicator),
            attempt(_local(m, r).checkCollectIndicator, "ready.flag"),
            attempt(_local(m, r).checkCollectIndicator, "absent.flag"),
            attempt(_local(m, r).checkCollectIndicator, b"ready.flag"),
            attempt(_local(m, r, "missing").checkCollectIndicator),
        ],
        _expect_indicators,
        None,
    ),
    "check_indicator_absent": (
        _setup_no_indicator,
        lambda m, r: [attempt(_local(m, r).checkCollectIndicator), attempt(_local(m, r, "missing").checkCollectIndicator, "x")],
        lambda o: o["steps"] == [("ok", False), ("ok", False)] or pytest.fail(o["steps"]),
        None,
    ),
    "write_stage_default": (
        _setup_no_indicator,
        lambda m, r: [attempt(_local(m, r).writeStageIndicator)],
        _expect_stage_file("cback.stage"),
        None,
    ),
    "write_stage_custom": (
        _setup_no_indicator,
        lambda m, r: [attempt(_local(m, r).writeStageIndicator, "custom.stage")],
        _expect_stage_file("custom.stage"),
        None,
    ),
    "write_stage_ownership": (
        _setup_no_indicator,
        lambda m, r: [attempt(_local(m, r).writeStageIndicator, None, (NOBODY, NOGROUP))],
        _expect_stage_file("cback.stage", NOBODY, NOGROUP),
        None,
    ),
    "write_stage_permissions": (
        _setup_no_indicator,
        lambda m, r: [attempt(_local(m, r).writeStageIndicator, "p.stage", None, 0o600)],
        _expect_stage_file("p.stage", mode=0o600),
        None,
    ),
    "write_stage_ownership_permissions_over_stale": (
        _setup_stale_stage,
        lambda m, r: [attempt(_local(m, r).writeStageIndicator, None, (NOBODY, NOGROUP), 0o640)],
        _expect_stage_file("cback.stage", NOBODY, NOGROUP, 0o640),
        None,
    ),
    "write_stage_missing_collect": (
        _setup_no_collect,
        lambda m, r: [attempt(_local(m, r).writeStageIndicator)],
        _expect_raised("ValueError", "Collect directory is not a directory or does not exist on disk."),
        None,
    ),
}


@pytest.mark.parametrize("scenario", sorted(LOCAL_SCENARIOS))
def test_local_peer(impls, tmp_path, scenario):
    setup, steps, expect, umask = LOCAL_SCENARIOS[scenario]
    theirs, ours = differential(impls, tmp_path, setup, steps, umask)
    expect(theirs)
    assert ours == theirs


# ----------------------------------------------------------------------------------------
# constructor and property validation
# ----------------------------------------------------------------------------------------


def _local_props(peer):
    return (peer.name, peer.collectDir, peer.ignoreFailureMode)


def _remote_props(peer):
    return (
        peer.name, peer.collectDir, peer.workingDir, peer.remoteUser, peer.localUser,
        peer.rcpCommand, peer.rshCommand, peer.cbackCommand, peer.ignoreFailureMode,
    )


def _set(peer, attribute, value):
    setattr(peer, attribute, value)
    return getattr(peer, attribute)


def _validation_steps(module, root):
    L, R = module.LocalPeer, module.RemotePeer
    steps = [
        attempt(lambda: _local_props(L(None, "/abs/collect"))),
        attempt(lambda: _local_props(L("", "/abs/collect"))),
        attempt(lambda: _local_props(L("p", "relative/collect"))),
        attempt(lambda: _local_props(L("p", None))),
        attempt(lambda: _local_props(L("p", "/abs/collect", "bogus"))),
        attempt(lambda: _local_props(L("p", "/abs/collect", "weekly"))),
        attempt(lambda: _local_props(L("p", b"/abs/bytes/collect", "all"))),
        attempt(lambda: _local_props(L("p", b"/abs/\xff\xfe/collect"))),
        attempt(lambda: _local_props(L("p", b"relative/bytes"))),
        attempt(lambda: _local_props(L("p", "/abs/collect", ""))),
        attempt(lambda: _set(L("p", "/abs"), "name", "")),
        attempt(lambda: _set(L("p", "/abs"), "name", None)),
        attempt(lambda: _set(L("p", "/abs"), "name", "renamed")),
        attempt(lambda: _set(L("p", "/abs"), "collectDir", "rel")),
        attempt(lambda: _set(L("p", "/abs"), "collectDir", b"/other")),
        attempt(lambda: _set(L("p", "/abs"), "ignoreFailureMode", "daily")),
        attempt(lambda: _set(L("p", "/abs", "none"), "ignoreFailureMode", None)),
        attempt(lambda: _set(L("p", "/abs"), "ignoreFailureMode", "never")),
        attempt(lambda: _remote_props(R())),
        attempt(lambda: _remote_props(R(""))),
        attempt(lambda: _remote_props(R("h"))),
        attempt(lambda: _remote_props(R("h", "/c", "/w", ""))),
        attempt(lambda: _remote_props(R("h", "rel", "/w", "u"))),
        attempt(lambda: _remote_props(R("h", "/c", "rel", "u"))),
        attempt(lambda: _remote_props(R("h", "/c", "/w", "u", ""))),
        attempt(lambda: _remote_props(R("h", "/c", "/w", "u", None, ""))),
        attempt(lambda: _remote_props(R("h", "/c", "/w", "u", None, None, ""))),
        attempt(lambda: _remote_props(R("h", "/c", "/w", "u", None, None, None, ""))),
        attempt(lambda: _remote_props(R("h", "/c", "/w", "u", ignoreFailureMode="sometimes"))),
        attempt(lambda: _remote_props(R("h", None, None, "u"))),
        attempt(lambda: _remote_props(R("h", b"/c/bytes", b"/w/bytes", "u", '/usr/bin/scp -o "A B"', "lu", "/usr/bin/ssh -x", "cb -q", "weekly"))),
        attempt(lambda: _set(R("h", "/c", "/w", "u"), "rcpCommand", None)),
        attempt(lambda: _set(R("h", "/c", "/w", "u", "scp"), "rcpCommand", "")),
        attempt(lambda: _set(R("h", "/c", "/w", "u"), "localUser", "")),
        attempt(lambda: _set(R("h", "/c", "/w", "u", localUser="x"), "localUser", None)),
        attempt(lambda: _set(R("h", "/c", "/w", "u"), "workingDir", "rel")),
        attempt(lambda: _set(R("h", "/c", "/w", "u"), "workingDir", None)),
        attempt(lambda: _set(R("h", "/c", "/w", "u"), "collectDir", None)),
        attempt(lambda: _set(R("h", "/c", "/w", "u"), "remoteUser", None)),
        attempt(lambda: _set(R("h", "/c", "/w", "u"), "cbackCommand", None)),
        attempt(lambda: _set(R("h", "/c", "/w", "u"), "ignoreFailureMode", "all")),
        # calls that fail before any command runs
        attempt(R("h", "/c", str(root), "u").executeManagedAction, None, False),
        attempt(R("h", "/c", str(root), "u").executeManagedAction, None, True),
        attempt(R("h", "/c", str(root), "u").stagePeer, "relative/target"),
        attempt(R("h", "/c", str(root), "u").stagePeer, str(root / "missing-target")),
    ]
    return steps


def test_constructor_and_property_validation(impls, tmp_path):
    theirs, ours = differential(impls, tmp_path, lambda root: None, _validation_steps)
    raised = [step for step in theirs["steps"] if step[0] == "raised"]
    assert len(raised) == 30
    assert ("raised", "ValueError", "Peer name must be a non-empty string.") in raised
    assert ("ok", ("p", "/abs/bytes/collect", "all")) in theirs["steps"]
    assert ours == theirs


# ----------------------------------------------------------------------------------------
# remote peers over real sshd
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dead_pool(tmp_path_factory):
    """A pool whose only peer, ``deadpeer``, has been stopped: it refuses connections."""
    pool = SshPeerPool(tmp_path_factory.mktemp("deadpool"), names=("deadpeer",), first_address="127.0.1.200")
    with pool:
        pool.stop_peer("deadpeer")
        yield pool


def _remote(module, root, pool, name="peer1", collect="collect", work="work", **kwargs):
    return module.RemotePeer(
        name=name,
        collectDir=str(Path(root) / collect),
        workingDir=None if work is None else str(Path(root) / work),
        remoteUser="root",
        rcpCommand=kwargs.pop("rcpCommand", pool.rcp_command),
        rshCommand=kwargs.pop("rshCommand", pool.rsh_command),
        **kwargs
    )


def _setup_remote(files=STANDARD_FILES, collect="collect", extra=None):  # pylint: disable=dangerous-default-value  # read-only constant
    def setup(root):
        if files is not None:
            make_collect(root, files, collect)
        make_dirs(root, "target", "work")
        if extra is not None:
            extra(root)

    return setup


REMOTE_STAGED = {name: item for name, item in STANDARD_FILES.items() if not name.startswith(".")}


def _expect_remote_staged(umask):
    def check(observation):
        assert observation["steps"][0] == ("ok", len(REMOTE_STAGED))
        staged = entries(observation, "target")
        assert set(staged) == set(REMOTE_STAGED)  # the "*" glob leaves the dotfile behind
        for name, (dummy, mode) in REMOTE_STAGED.items():
            assert staged[name]["mode"] == (mode | 0o200) & ~umask, name

    return check


def _expect_steps(*expected):
    def check(observation):
        assert observation["steps"] == list(expected)

    return check


def _expect_work_empty_and(*expected):
    def check(observation):
        assert observation["steps"] == list(expected)
        assert entries(observation, "work") == {}

    return check


def _write_script(root, exit_code=0):
    script = Path(root) / "fake-cback"
    # identical bytes in both copies: the log goes next to the script, found through $0
    body = '#!/bin/sh\nlog="$(dirname "$0")/argv.log"\nprintf \'%%s|\' "$@" >> "$log"\necho >> "$log"\nexit %d\n' % exit_code
    write(script, body.encode(), 0o755)
    return str(script)


def _managed(module, root, pool, exit_code=0, suffix=""):
    peer = _remote(module, root, pool, cbackCommand=_write_script(root, exit_code) + suffix)
    return [
        attempt(peer.executeManagedAction, "collect", False),
        attempt(peer.executeManagedAction, "stage", True),
        attempt(peer.executeManagedAction, "all", 1),
    ]


def _argv_log(observation):
    for entry in observation["tree"]:
        if entry[0] == "argv.log":
            return entry[3]
    return None


def _block_work(root):
    (Path(root) / "work" / "cback.collect").mkdir()
    write(Path(root) / "work" / "cback.collect" / "keep", b"k")


def _stale_indicator(root):
    write(Path(root) / "work" / "cback.collect", b"stale")


def _remote_scenarios(pool, dead):
    """id -> (setup, steps(module, root), expectation on Cedar Backup's observation, umask)."""

    def r(m, root, **kw):
        return _remote(m, root, pool, **kw)

    def touch(m, root):
        return [attempt(r(m, root).executeRemoteCommand, "touch %s/collect/touched" % root)]

    staged = len(REMOTE_STAGED)
    return {
        "check_true": (_setup_remote(), lambda m, root: [attempt(r(m, root).checkCollectIndicator)], _expect_work_empty_and(("ok", True)), None),
        "check_false": (
            _setup_remote({"data": (b"d", 0o644)}),
            lambda m, root: [attempt(r(m, root).checkCollectIndicator)],
            _expect_work_empty_and(("ok", False)),
            None,
        ),
        "check_custom_name": (
            _setup_remote({"ready.flag": (b"", 0o600)}),
            lambda m, root: [
                attempt(r(m, root).checkCollectIndicator, "ready.flag"),
                attempt(r(m, root).checkCollectIndicator, "other.flag"),
                attempt(r(m, root).checkCollectIndicator, b"ready.flag"),
                attempt(r(m, root).checkCollectIndicator),
            ],
            _expect_work_empty_and(("ok", True), ("ok", False), ("ok", True), ("ok", False)),
            None,
        ),
        "check_dead_peer": (
            _setup_remote(),
            lambda m, root: [attempt(_remote(m, root, dead, name="deadpeer").checkCollectIndicator)],
            _expect_work_empty_and(("ok", False)),
            None,
        ),
        "check_missing_collect": (
            _setup_remote(None),
            lambda m, root: [attempt(r(m, root).checkCollectIndicator)],
            _expect_work_empty_and(("ok", False)),
            None,
        ),
        "check_stale_indicator_in_workdir": (
            _setup_remote({"data": (b"d", 0o644)}, extra=_stale_indicator),
            lambda m, root: [attempt(r(m, root).checkCollectIndicator)],
            _expect_work_empty_and(("ok", False)),
            None,
        ),
        "check_workdir_blocked_by_directory": (
            _setup_remote(extra=_block_work),
            lambda m, root: [attempt(r(m, root).checkCollectIndicator)],
            _expect_steps(("raised", "Exception", "Error: collect indicator [<ROOT>/work/cback.collect] already exists!")),
            None,
        ),
        "check_collect_dir_with_space": (
            _setup_remote(collect="collect dir"),
            lambda m, root: [attempt(r(m, root, collect="collect dir").checkCollectIndicator)],
            _expect_work_empty_and(("ok", True)),
            None,
        ),
        "stage_normal": (
            _setup_remote(),
            lambda m, root: [attempt(r(m, root).stagePeer, str(root / "target"))],
            _expect_remote_staged(0o027),
            0o027,
        ),
        "stage_ownership_permissions": (
            _setup_remote(),
            lambda m, root: [attempt(r(m, root).stagePeer, str(root / "target"), (NOBODY, NOGROUP), 0o640)],
            lambda o: (o["steps"] == [("ok", staged)] and all(
                (e["uid"], e["gid"], e["mode"]) == (NOBODY, NOGROUP, 0o640) for e in entries(o, "target").values()
            )) or pytest.fail(repr(o)),
            None,
        ),
        "stage_second_run": (
            _setup_remote(),
            lambda m, root: [attempt(r(m, root).stagePeer, str(root / "target")), attempt(r(m, root).stagePeer, str(root / "target"))],
            _expect_steps(("ok", staged), ("raised", "OSError", "Apparently did not copy any new files from remote peer.")),
            None,
        ),
        "stage_subdirectory_in_collect": (
            _setup_remote(extra=lambda root: write(Path(root) / "collect" / "subdir" / "inner", b"inner")),
            lambda m, root: [attempt(r(m, root).stagePeer, str(root / "target"))],
            lambda o: (o["steps"] == [("raised", "OSError", "Error (1) copying files from remote host.")]
                       and len(entries(o, "target")) == staged) or pytest.fail(repr(o)),
            None,
        ),
        "stage_collect_dir_with_space": (
            _setup_remote(collect="collect dir"),
            lambda m, root: [attempt(r(m, root, collect="collect dir").stagePeer, str(root / "target"))],
            _expect_steps(("ok", staged)),
            None,
        ),
        "stage_target_with_preexisting_files": (
            _setup_remote(extra=lambda root: [write(Path(root) / "target" / "alpha.txt", b"old"),
                                              write(Path(root) / "target" / "deep" / "keep.txt", b"k")]),
            lambda m, root: [attempt(r(m, root).stagePeer, str(root / "target"), None, 0o600)],
            _expect_steps(("ok", staged - 1)),
            None,
        ),
        "stage_empty_collect": (
            _setup_remote({}),
            lambda m, root: [attempt(r(m, root).stagePeer, str(root / "target"))],
            _expect_steps(("raised", "OSError", "Error (1) copying files from remote host.")),
            None,
        ),
        "stage_dead_peer": (
            _setup_remote(),
            lambda m, root: [attempt(_remote(m, root, dead, name="deadpeer").stagePeer, str(root / "target"))],
            _expect_steps(("raised", "OSError", "Error (255) copying files from remote host.")),
            None,
        ),
        "stage_without_working_dir": (
            _setup_remote(),
            lambda m, root: [attempt(r(m, root, work=None).stagePeer, str(root / "target"))],
            _expect_steps(("ok", staged)),
            None,
        ),
        "write_stage_default": (
            _setup_remote({"data": (b"d", 0o644)}),
            lambda m, root: [attempt(r(m, root).writeStageIndicator)],
            lambda o: (o["steps"] == [("ok", None)] and "cback.stage" in entries(o, "collect")
                       and entries(o, "work") == {}) or pytest.fail(repr(o)),
            None,
        ),
        "write_stage_custom": (
            _setup_remote({"data": (b"d", 0o644)}),
            lambda m, root: [attempt(r(m, root).writeStageIndicator, "custom.stage"), attempt(r(m, root).writeStageIndicator, b"b.stage")],
            lambda o: (o["steps"] == [("ok", None)] * 2 and {"custom.stage", "b.stage"} <= set(entries(o, "collect"))
                       and "cback.stage" not in entries(o, "collect")) or pytest.fail(repr(o)),
            None,
        ),
        "write_stage_missing_collect": (
            _setup_remote(None),
            lambda m, root: [attempt(r(m, root).writeStageIndicator)],
            _expect_steps(("raised", "OSError", "Error (1) copying [<ROOT>/work/cback.stage] to remote host.")),
            None,
        ),
        "exec_touch": (
            _setup_remote({"data": (b"d", 0o644)}),
            touch,
            lambda o: (o["steps"] == [("ok", None)] and "touched" in entries(o, "collect")) or pytest.fail(repr(o)),
            None,
        ),
        "exec_false": (
            _setup_remote({}),
            lambda m, root: [attempt(r(m, root).executeRemoteCommand, "false")],
            _expect_steps(("raised", "OSError", "Command failed [%s root@peer1 'false']" % pool.rsh_command)),
            None,
        ),
        "exec_dead_peer": (
            _setup_remote({}),
            lambda m, root: [attempt(_remote(m, root, dead, name="deadpeer").executeRemoteCommand, "true")],
            _expect_steps(("raised", "OSError", "Command failed [%s root@deadpeer 'true']" % dead.rsh_command)),
            None,
        ),
        "exec_rsh_with_quoted_field": (
            _setup_remote({}),
            lambda m, root: [attempt(r(m, root, rshCommand=pool.rsh_command + ' -o "ConnectTimeout 5"').executeRemoteCommand, "false")],
            _expect_steps(("raised", "OSError", "Command failed [%s -o \"ConnectTimeout 5\" root@peer1 'false']" % pool.rsh_command)),
            None,
        ),
        "missing_command_binaries": (
            _setup_remote(),
            lambda m, root: [
                attempt(r(m, root, rcpCommand="/nonexistent/scp -B").stagePeer, str(root / "target")),
                attempt(r(m, root, rcpCommand="/nonexistent/scp -B").checkCollectIndicator),
                attempt(r(m, root, rcpCommand="/nonexistent/scp -B").writeStageIndicator),
                attempt(r(m, root, rshCommand="/nonexistent/ssh -x").executeRemoteCommand, "true"),
            ],
            _expect_steps(
                ("raised", "OSError", "Error (256) copying files from remote host."),
                ("ok", False),
                ("raised", "OSError", "Error (256) copying [<ROOT>/work/cback.stage] to remote host."),
                ("raised", "OSError", "Command failed [/nonexistent/ssh -x root@peer1 'true']"),
            ),
            None,
        ),
        "managed_action_script": (
            _setup_remote({}),
            lambda m, root: _managed(m, root, pool),
            lambda o: (o["steps"] == [("ok", None)] * 3 and _argv_log(o) is not None) or pytest.fail(repr(o)),
            None,
        ),
        "managed_action_failing_script": (
            _setup_remote({}),
            lambda m, root: _managed(m, root, pool, exit_code=3),
            _expect_steps(
                ("raised", "OSError", "Failed to execute action [collect] on managed client [peer1]."),
                ("raised", "OSError", "Failed to execute action [stage] on managed client [peer1]."),
                ("raised", "OSError", "Failed to execute action [all] on managed client [peer1]."),
            ),
            None,
        ),
        "managed_action_dead_peer": (
            _setup_remote({}),
            lambda m, root: [attempt(_remote(m, root, dead, name="deadpeer", cbackCommand="/bin/true").executeManagedAction, "collect", True)],
            _expect_steps(("raised", "OSError", "Failed to execute action [collect] on managed client [deadpeer].")),
            None,
        ),
    }


REMOTE_IDS = [
    "check_true", "check_false", "check_custom_name", "check_dead_peer", "check_missing_collect",
    "check_stale_indicator_in_workdir", "check_workdir_blocked_by_directory", "check_collect_dir_with_space",
    "stage_normal", "stage_ownership_permissions", "stage_second_run", "stage_subdirectory_in_collect",
    "stage_collect_dir_with_space", "stage_target_with_preexisting_files", "stage_empty_collect", "stage_dead_peer",
    "stage_without_working_dir", "write_stage_default", "write_stage_custom",
    "write_stage_missing_collect", "exec_touch", "exec_false", "exec_dead_peer", "exec_rsh_with_quoted_field",
    "missing_command_binaries", "managed_action_script", "managed_action_failing_script", "managed_action_dead_peer",
]


@pytest.mark.parametrize("scenario", REMOTE_IDS)
def test_remote_peer(impls, ssh_pool, dead_pool, tmp_path, scenario):
    scenarios = _remote_scenarios(ssh_pool, dead_pool)
    assert sorted(scenarios) == sorted(REMOTE_IDS)
    setup, steps, expect, umask = scenarios[scenario]
    theirs, ours = differential(impls, tmp_path, setup, steps, umask)
    expect(theirs)
    assert ours == theirs


def test_managed_action_argv(impls, ssh_pool, tmp_path):
    """The script sees the same argv from both: ``[--full] <action>``."""
    theirs, ours = differential(impls, tmp_path, _setup_remote({}), lambda m, root: _managed(m, root, ssh_pool))
    logs = []
    for label in ("cedarbackup3", "ours"):
        logs.append((tmp_path / label / "argv.log").read_text())
    assert logs[0] == "collect|\n--full|stage|\n--full|all|\n"
    assert logs[1] == logs[0]
    assert ours == theirs


# ----------------------------------------------------------------------------------------
# remote peers as a local user (Cedar Backup: su <localUser> -c ...; ours: the child drops to its ids)
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def user_client(ssh_pool, backup_user):
    rcp_command, rsh_command = ssh_pool.client_for_user(backup_user)
    return backup_user, rcp_command, rsh_command


@pytest.fixture
def user_base():
    """A directory the backup user can reach (pytest's tmp dirs are private to root)."""
    base = tempfile.mkdtemp(prefix="cbackpeer-diff-")
    os.chmod(base, 0o755)
    try:
        yield Path(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _setup_user(user, files=STANDARD_FILES, collect="collect"):  # pylint: disable=dangerous-default-value  # read-only constant
    entry = pwd.getpwnam(user)

    def setup(root):
        os.chmod(str(root), 0o755)
        make_collect(root, files, collect)
        make_dirs(root, "target", "work")
        for name in ("target", "work"):
            os.chown(str(Path(root) / name), entry.pw_uid, entry.pw_gid)

    return setup


def _user_remote(module, root, client, collect="collect", **kwargs):
    user, rcp_command, rsh_command = client
    return module.RemotePeer(
        name=kwargs.pop("name", "peer1"),
        collectDir=str(Path(root) / collect),
        workingDir=str(Path(root) / "work"),
        remoteUser="root",
        localUser=user,
        rcpCommand=kwargs.pop("rcpCommand", rcp_command),
        rshCommand=kwargs.pop("rshCommand", rsh_command),
        **kwargs
    )


def test_local_user_check_collect_indicator(impls, user_client, user_base):
    def steps(m, root):
        return [
            attempt(_user_remote(m, root, user_client).checkCollectIndicator),
            attempt(_user_remote(m, root, user_client).checkCollectIndicator, "absent.flag"),
            attempt(_user_remote(m, root, user_client, collect="missing").checkCollectIndicator),
        ]

    theirs, ours = differential(impls, user_base, _setup_user(user_client[0]), steps)
    assert theirs["steps"] == [("ok", True), ("ok", False), ("ok", False)]
    assert entries(theirs, "work") == {}
    assert ours == theirs


def test_local_user_check_collect_dir_with_space(impls, user_client, user_base):
    def steps(m, root):
        return [attempt(_user_remote(m, root, user_client, collect="collect dir").checkCollectIndicator)]

    theirs, ours = differential(impls, user_base, _setup_user(user_client[0], collect="collect dir"), steps)
    assert theirs["steps"] == [("ok", True)]
    assert ours == theirs


def test_local_user_stage_peer(impls, user_client, user_base):
    uid = pwd.getpwnam(user_client[0]).pw_uid

    def steps(m, root):
        peer = _user_remote(m, root, user_client)
        return [attempt(peer.stagePeer, str(root / "target")), attempt(peer.stagePeer, str(root / "target"))]

    theirs, ours = differential(impls, user_base, _setup_user(user_client[0]), steps)
    assert theirs["steps"] == [
        ("ok", len(REMOTE_STAGED)),
        ("raised", "OSError", "Apparently did not copy any new files from remote peer."),
    ]
    staged = entries(theirs, "target")
    assert set(staged) == set(REMOTE_STAGED) and all(item["uid"] == uid for item in staged.values())
    assert ours == theirs


def test_local_user_stage_peer_ownership_and_failure(impls, user_client, user_base):
    def steps(m, root):
        return [
            attempt(_user_remote(m, root, user_client).stagePeer, str(root / "target"), (NOBODY, NOGROUP), 0o600),
            attempt(_user_remote(m, root, user_client, collect="missing").stagePeer, str(root / "target")),
        ]

    theirs, ours = differential(impls, user_base, _setup_user(user_client[0]), steps)
    assert theirs["steps"] == [
        ("ok", len(REMOTE_STAGED)),
        ("raised", "OSError", "Error (1) copying files from remote host as local user [%s]." % user_client[0]),
    ]
    assert all((e["uid"], e["mode"]) == (NOBODY, 0o600) for e in entries(theirs, "target").values())
    assert ours == theirs


def test_local_user_write_stage_and_commands(impls, user_client, user_base):
    user, dummy, rsh_command = user_client

    def steps(m, root):
        peer = _user_remote(m, root, user_client)
        return [
            attempt(peer.writeStageIndicator),
            attempt(peer.writeStageIndicator, "custom.stage"),
            attempt(peer.executeRemoteCommand, "touch %s/collect/touched" % root),
            attempt(peer.executeRemoteCommand, "false"),
        ]

    theirs, ours = differential(impls, user_base, _setup_user(user, {"data": (b"d", 0o644)}), steps)
    assert theirs["steps"] == [
        ("ok", None),
        ("ok", None),
        ("ok", None),
        ("raised", "OSError", "Command failed [su -c %s \"%s root@peer1 'false'\"]" % (user, rsh_command)),
    ]
    assert {"cback.stage", "custom.stage", "touched"} <= set(entries(theirs, "collect"))
    assert ours == theirs


# ----------------------------------------------------------------------------------------
# Intended differences (documented in the module docstring of our peer.py)
# ----------------------------------------------------------------------------------------


def test_intended_no_working_dir_check_collect_indicator(impls, ssh_pool, tmp_path):
    """Cedar Backup crashes without a workingDir; we use a private temporary directory."""
    theirs, ours = differential(
        impls, tmp_path, _setup_remote(), lambda m, root: [attempt(_remote(m, root, ssh_pool, work=None).checkCollectIndicator)]
    )
    assert theirs["steps"][0][:2] in (("raised", "UnboundLocalError"), ("raised", "TypeError"))
    assert ours["steps"] == [("ok", True)]
    assert ours["tree"] == theirs["tree"]


def test_intended_no_working_dir_write_stage_indicator(impls, ssh_pool, tmp_path):
    theirs, ours = differential(
        impls, tmp_path, _setup_remote({"data": (b"d", 0o644)}),
        lambda m, root: [attempt(_remote(m, root, ssh_pool, work=None).writeStageIndicator)],
    )
    assert theirs["steps"][0][:2] in (("raised", "TypeError"), ("raised", "UnboundLocalError"))
    assert "cback.stage" not in entries(theirs, "collect")
    assert ours["steps"] == [("ok", None)]
    assert entries(ours, "collect")["cback.stage"]["size"] == 0


def test_intended_working_dir_with_space_write_stage_indicator(impls, ssh_pool, tmp_path):
    """Cedar Backup escapes spaces in the local source path of the pushed indicator."""

    def setup(root):
        _setup_remote({"data": (b"d", 0o644)})(root)
        (root / "work dir").mkdir()

    theirs, ours = differential(
        impls, tmp_path, setup, lambda m, root: [attempt(_remote(m, root, ssh_pool, work="work dir").writeStageIndicator)]
    )
    assert theirs["steps"][0][:2] == ("raised", "OSError")
    assert theirs["steps"][0][2].startswith("Error (")  # scp's exit status (255 here)
    assert theirs["steps"][0][2].endswith(") copying [<ROOT>/work dir/cback.stage] to remote host.")
    assert "cback.stage" not in entries(theirs, "collect")
    assert ours["steps"] == [("ok", None)]
    assert "cback.stage" in entries(ours, "collect")


def test_intended_collect_dir_with_space_write_stage_indicator(impls, ssh_pool, tmp_path):
    """OpenSSH's scp (SFTP mode, its default) takes the pushed indicator's destination
    literally: Cedar Backup's escaped spaces name another file there; ours are not escaped."""
    theirs, ours = differential(
        impls, tmp_path, _setup_remote({"data": (b"d", 0o644)}, collect="collect dir"),
        lambda m, root: [attempt(_remote(m, root, ssh_pool, collect="collect dir").writeStageIndicator)],
    )
    assert theirs["steps"][0][:2] == ("raised", "OSError")
    assert theirs["steps"][0][2].endswith(") copying [<ROOT>/work/cback.stage] to remote host.")
    assert "cback.stage" not in entries(theirs, "collect dir")
    assert ours["steps"] == [("ok", None)]
    assert entries(ours, "collect dir")["cback.stage"]["size"] == 0


def test_intended_cback_command_words_are_quoted(impls, ssh_pool, tmp_path):
    """Cedar Backup hands ``cbackCommand`` to the remote shell as is; we quote each word."""
    theirs, ours = differential(
        impls, tmp_path, _setup_remote({}), lambda m, root: _managed(m, root, ssh_pool, suffix=" $USER")
    )
    assert theirs["steps"] == ours["steps"] == [("ok", None)] * 3
    assert (tmp_path / "cedarbackup3" / "argv.log").read_text() == "root|collect|\nroot|--full|stage|\nroot|--full|all|\n"
    assert (tmp_path / "ours" / "argv.log").read_text() == "$USER|collect|\n$USER|--full|stage|\n$USER|--full|all|\n"


def test_intended_local_user_collect_dir_with_space_stage(impls, user_client, user_base):
    """Cedar Backup's ``su -c`` command line is not quoted, so a space splits the path."""
    user = user_client[0]

    def steps(m, root):
        return [attempt(_user_remote(m, root, user_client, collect="collect dir").stagePeer, str(root / "target"))]

    theirs, ours = differential(impls, user_base, _setup_user(user, collect="collect dir"), steps)
    assert theirs["steps"][0][:2] == ("raised", "OSError")
    assert theirs["steps"][0][2].endswith("copying files from remote host as local user [%s]." % user)
    assert entries(theirs, "target") == {}
    assert ours["steps"] == [("ok", len(REMOTE_STAGED))]
    assert set(entries(ours, "target")) == set(REMOTE_STAGED)


def test_intended_local_user_without_rcp_command(impls, user_client, user_base):
    """With localUser and no rcpCommand Cedar Backup runs ``None``; we run the default scp.

    The peer is an address where nothing listens, so the default scp fails too, with its
    own exit status instead of the shell's 127.
    """
    user = user_client[0]

    def steps(m, root):
        peer = _user_remote(m, root, user_client, name=DEAD_ADDRESS, rcpCommand=None)
        return [attempt(peer.checkCollectIndicator), attempt(peer.stagePeer, str(root / "target"))]

    theirs, ours = differential(impls, user_base, _setup_user(user), steps)
    assert theirs["steps"][0] == ours["steps"][0] == ("ok", False)
    assert theirs["steps"][1] == ("raised", "OSError", "Error (127) copying files from remote host as local user [%s]." % user)
    assert ours["steps"][1][:2] == ("raised", "OSError")
    assert ours["steps"][1][2] != theirs["steps"][1][2]
    assert ours["steps"][1][2].endswith("copying files from remote host as local user [%s]." % user)
    assert ours["tree"] == theirs["tree"]


def test_intended_local_user_without_rsh_command(impls, user_client, user_base):
    """Cedar Backup shows (and, through ``su -c``, runs) ``None`` for an unset rsh command."""
    user = user_client[0]

    def steps(m, root):
        return [attempt(_user_remote(m, root, user_client, name=DEAD_ADDRESS, rshCommand=None).executeRemoteCommand, "true")]

    theirs, ours = differential(impls, user_base, _setup_user(user, {}), steps)
    expected = "Command failed [su -c %s \"%%s root@%s 'true'\"]" % (user, DEAD_ADDRESS)
    assert theirs["steps"] == [("raised", "OSError", expected % "None")]
    assert ours["steps"] == [("raised", "OSError", expected % "/usr/bin/ssh")]


@pytest.mark.parametrize(
    "command, action, full",
    [(None, "collect", False), (None, "collect", True), ("cback", "collect", True), ('"/opt/my cback" -c x', "purge", False), (None, None, False)],
)
def test_build_cback_command_same_as_cedar_backup(cedarbackup3, ourpeer, command, action, full):
    """``RemotePeer._buildCbackCommand`` (Cedar Backup's own tests call it) gives Debian's results."""
    outcomes = []
    for module in (cedarbackup3, ourpeer):
        try:
            outcomes.append(("ok", module.RemotePeer._buildCbackCommand(command, action, full)))
        except ValueError as exc:
            outcomes.append(("ValueError", str(exc)))
    assert outcomes[0] == outcomes[1]

# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to cedarbackup.peer: not a public API, may change without notice.
"""What the three modules do, on plain parameter dicts (no AnsibleModule here).

Each function takes the module's validated ``params`` and ``check_mode`` and returns the
result dict, or raises ``TaskFailure`` whose message names the peer and the option.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import os
import stat
import time

from . import _argspec as spec
from . import _diagnose as diagnose
from ._command import EXEC_FAILED, as_local_user, cancel_on_exit_of_caller, cancelled, join_command, run_command
from ._ids import current_umask, current_user_name, is_running_as_root, primary_ids, resolve_gid, resolve_uid
from ._paths import path_join
from ._ssh import ssh_options, ssh_session
from .peer import (
    DEF_COLLECT_INDICATOR,
    DEF_STAGE_INDICATOR,
    LocalPeer,
    PeerError,
    RemotePeer,
    TARGET_MISSING,
    StageResult,
    target_fd as open_target,
    build_cback_argv,
    failure_of,
)


class TaskFailure(Exception):
    """The task failed; ``msg`` for the user, ``result`` for the rest of the task result."""

    def __init__(self, msg, **result):
        Exception.__init__(self, msg)
        self.msg = msg
        self.result = result


def run(module, task):
    """Run ``task`` for an AnsibleModule and exit: the one place failures become fail_json.

    A signal, or Ansible giving up on the task, cancels it (``cancel_on_exit_of_caller``):
    its commands are killed, what it started is cleaned up, and it fails saying so.
    """
    cancel_on_exit_of_caller()
    try:
        result = task(module.params, module.check_mode)
    except TaskFailure as failure:
        module.fail_json(msg=failure.msg, **failure.result)
    if cancelled():
        module.fail_json(msg="Cancelled (%s): stopped, and cleaned up what it had started." % cancelled(), **result)
    for warning in result.pop("warnings", []):
        module.warn(warning)
    module.exit_json(**result)


def _label(params):
    return params.get("name") or "localhost"


def _fail(params, message, **result):
    raise TaskFailure("Peer %s: %s" % (_label(params), message), **result)


def _output_of(exc, peer=None):
    """stderr of the command behind a peer exception (cleaned, on one line) and, where the cause
    is known (from that stderr, else from the exception's own text), its hint, for the failure
    message; with the command's result fields."""
    command = failure_of(exc).command
    if command is None:
        cause = diagnose.from_output(str(exc), peer)
        detail, extra = "", {}
    else:
        cause = diagnose.from_output(command.stderr, peer, _program(peer))
        detail = " " + cause.output if cause.output else ""
        extra = dict(rc=command.rc, stdout=command.stdout, stderr=command.stderr, cmd=command.argv)
    if cause.hint:
        detail += " (%s)" % cause.hint
        extra.update(cause=cause.kind, hint=cause.hint)
    return detail, extra


def _program(peer):
    """The rcp command's program (what a "not found" in a copy's output names)."""
    commands = getattr(peer, "effectiveRcpCommand", None)
    return commands[0] if commands else None


def _not_ready_cause(peer, params, indicator):
    """Why a peer that was checked is not ready: a ``diagnose.Cause``.

    For a remote peer, the readiness check's stderr is read; when it only says the file is
    missing, one command over the same connection tells a missing collect directory from an
    indicator that is not there yet.
    """
    path = path_join(peer.collectDir, indicator)
    if params["type"] == "local":
        if not os.path.isdir(peer.collectDir):
            return diagnose.Cause("collect-dir-missing", "collect directory %s does not exist" % peer.collectDir, "")
        return diagnose.Cause("not-collected", "%s is not there yet: the peer has not finished its collect action" % path, "")
    result = peer.collectCheckResult
    output = result.stderr if result is not None else ""
    cause = diagnose.from_output(output, peer, _program(peer))
    if cause.kind != "unknown" or cancelled() or result is None or result.rc == EXEC_FAILED:
        return cause
    # The copy said too little (scp -q, Cedar Backup's default, keeps ssh's own errors to
    # itself): one command over the rsh command tells a connection problem, a missing collect
    # directory and an indicator that is not there yet apart.
    probe = peer.runRemoteCommand(join_command(["test", "-d", peer.collectDir]), keep=4096)
    found = diagnose.from_output(probe.stderr, peer, peer.effectiveRshCommand[0])
    both = "; ".join(part for part in (cause.output, found.output) if part)
    if found.kind != "unknown":
        return diagnose.Cause(found.kind, found.hint, both)
    if probe.rc == 0 and "No such file or directory" in output:
        return diagnose.Cause("not-collected", "%s is not there yet: the peer has not finished its collect action" % path, cause.output)
    if probe.rc == 1 and not probe.stderr.strip():
        return diagnose.Cause(
            "collect-dir-missing",
            "collect directory %s does not exist on the peer (or remote user %s cannot reach it)" % (peer.collectDir, peer.remoteUser),
            cause.output,
        )
    return diagnose.Cause("unknown", "", both)


def _not_ready(result, cause, command=None):
    """Mark ``result`` not ready, with the cause (and the failed check command's fields)."""
    result.update(ready=False, cause=cause.kind, hint=cause.hint, output=cause.output)
    if command is not None:
        # No rc: ansible-core takes a result whose rc is not 0 as a failure, and a peer that is
        # not ready is not one.
        result.update(stdout=command.stdout, stderr=command.stderr, cmd=command.argv)


def _check_peer_options(params, with_collect=True):
    remote = params["type"] == "remote"
    spec.check_peer_name(params.get("name"), params["type"])
    spec.check_user("remote_user", params.get("remote_user"))
    spec.check_user("local_user", params.get("local_user"))
    spec.check_timeout(params.get("timeout"))
    spec.check_timeout(params.get("connect_timeout"), "connect_timeout")
    if with_collect:
        spec.check_absolute("collect_dir", params.get("collect_dir"), remote=remote)
    # The copy commands take paths below it as their target: the same characters as a remote path.
    spec.check_absolute("working_dir", params.get("working_dir"), remote=True)
    spec.check_command("rcp_command", params.get("rcp_command"))
    spec.check_command("rsh_command", params.get("rsh_command"))
    if params.get("local_user") is not None:
        if not is_running_as_root():
            raise spec.OptionError("local_user", "only root can run the peer commands as another user.")
        try:
            primary_ids(params["local_user"])
        except KeyError:
            raise spec.OptionError("local_user", "no such local user %r." % params["local_user"])


def _peer(params, working_dir=None):
    """The LocalPeer or RemotePeer the parameters describe."""
    if params["type"] == "local":
        return LocalPeer(params.get("name") or "localhost", params["collect_dir"])
    peer = RemotePeer(
        name=params["name"],
        collectDir=params.get("collect_dir"),
        workingDir=working_dir,
        remoteUser=params.get("remote_user") or current_user_name(),
        rcpCommand=params.get("rcp_command"),
        localUser=params.get("local_user"),
        rshCommand=params.get("rsh_command"),
        cbackCommand=params.get("cback_command"),
    )
    peer.commandTimeout = spec.check_timeout(params.get("timeout"))
    return peer


def _working_dir(params):
    """``working_dir`` (checked), or ``None``: the peer makes its private directory in it."""
    base = params.get("working_dir")
    if base is None or params["type"] == "local":
        return None
    if not os.path.isdir(base):
        raise spec.OptionError("working_dir", "%r does not exist or is not a directory." % base)
    return base


def collect_indicator(params, check_mode=False):
    """Is the peer ready?  Read-only, so it runs the same in check mode."""
    try:
        _check_peer_options(params)
        spec.check_file_name("collect_indicator", params.get("collect_indicator"), params["type"] == "remote")
        indicator = params.get("collect_indicator") or DEF_COLLECT_INDICATOR
        result = dict(changed=False, ready=True)
        peer = _peer(params, _working_dir(params))
        early = diagnose.before_connecting(peer) if params["type"] == "remote" else None
        if early is not None:
            _not_ready(result, early)
            return result
        with _session(dict(params, ssh_multiplex=params["type"] == "remote"), peer) as peer:
            if not peer.checkCollectIndicator(indicator):
                _not_ready(result, _not_ready_cause(peer, params, indicator), getattr(peer, "collectCheckResult", None))
    except ValueError as exc:
        _fail(params, str(exc))
    return result


def ownership_of(params, user_option, group_option, where=""):
    """``(uid, gid)`` of the options ``user_option``/``group_option`` (names or ids), each
    ``None`` when unset; ``None`` when both are unset.  An unknown name fails naming its option."""
    try:
        uid = resolve_uid(params.get(user_option))
    except (KeyError, ValueError):  # ValueError: a NUL byte in the name
        raise spec.OptionError(user_option, "no such user %r%s." % (params.get(user_option), where))
    try:
        gid = resolve_gid(params.get(group_option))
    except (KeyError, ValueError):
        raise spec.OptionError(group_option, "no such group %r%s." % (params.get(group_option), where))
    if uid is None and gid is None:
        return None
    return (uid, gid)


def _ownership(params):
    return ownership_of(params, "owner", "group")


def _stage_failure(params, exc, target_dir, seconds, peer=None):
    known = failure_of(exc)
    message = str(exc)
    if known.option is not None:
        message = "%s: %s" % (known.option, message)
    if isinstance(exc, OSError) and exc.errno is not None and exc.strerror and known.command is None:
        # "[Errno 28] No space left on device" reads as what it is, with where it happened.
        message = "%s (staging into %s)" % (exc.strerror, target_dir)
    if known.entry is not None:
        message = "%s [%s]" % (message.rstrip("."), known.entry)
    detail, extra = _output_of(exc, peer)
    result = dict(
        target_dir=target_dir, ready=True, count=0, files=[], bytes=0, unchanged=[], stage_indicator_written=False,
        seconds=round(seconds, 3),
    )
    if known.partial is not None:
        partial = known.partial
        result.update(count=len(partial.copied), files=list(partial.copied), bytes=partial.bytes, unchanged=list(partial.unchanged))
    if known.verified is not None:
        result["verified"] = known.verified
    result["changed"] = bool(result["files"])
    result.update(extra)
    _fail(params, message + detail, **result)


def stage(params, check_mode=False):
    """Stage one peer into ``target_dir``, then write its stage indicator.

    With ``check_collect_indicator`` the peer's readiness is checked first, over the same
    ssh connection; a peer that is not ready gives ``ready: false`` and stages nothing.
    """
    started = time.monotonic()
    target_dir = params["target_dir"]
    try:
        _check_peer_options(params)
        spec.check_absolute("target_dir", target_dir)
        indicator = params.get("stage_indicator") or DEF_STAGE_INDICATOR
        spec.check_file_name("stage_indicator", indicator, params["type"] == "remote")
        spec.check_file_name("collect_indicator", params.get("collect_indicator"), params["type"] == "remote")
        ownership = _ownership(params)
        mode = spec.parse_mode(params.get("mode"))
    except ValueError as exc:
        _fail(params, str(exc))
    remote = params["type"] == "remote"
    warnings = []
    peer = None
    result = dict(
        changed=False, ready=True, count=0, files=[], bytes=0, unchanged=[], target_dir=target_dir, stage_indicator_written=False
    )
    try:
        peer = _peer(params, _working_dir(params))
        if remote and params.get("check_collect_indicator"):
            early = diagnose.before_connecting(peer)
            if early is not None:  # nothing can run: not ready, and why (nothing was started)
                _not_ready(result, early)
                result["seconds"] = round(time.monotonic() - started, 3)
                return result
        if remote:
            problem = diagnose.rsh_problem(peer)
            if problem:
                warnings.append("%s (the file sizes cannot be checked against the peer's listing)." % problem)
        with _session(params, peer) as peer, contextlib.ExitStack() as stack:
            if params.get("check_collect_indicator"):
                collect_indicator = params.get("collect_indicator") or DEF_COLLECT_INDICATOR
                if not peer.checkCollectIndicator(collect_indicator):
                    _not_ready(result, _not_ready_cause(peer, params, collect_indicator), getattr(peer, "collectCheckResult", None))
            if result["ready"]:
                # The run's descriptor for the peer's directory, else target_dir opened once.
                target_fd = stack.enter_context(open_target(target_dir, params.get("target_fd"), mayBeMissing=check_mode))
                if remote and check_mode:
                    staged, present = _predict_remote(peer, target_fd, indicator, warnings)
                else:
                    quick = _quick_check(peer, target_fd, indicator, ownership, mode) if remote and params.get("quick_check") else None
                    if quick is not None:
                        staged, present = quick
                    elif remote:
                        staged = peer.stageFiles(target_dir, ownership, mode, exclude=(indicator,), targetFd=target_fd)
                        present = indicator in staged.excluded
                    else:
                        staged = peer.stageFiles(target_dir, ownership, mode, exclude=(indicator,), checkOnly=check_mode,
                                                 targetFd=TARGET_MISSING if target_fd is None else target_fd)
                        present = os.path.isfile(path_join(peer.collectDir, indicator))
                if params.get("verify") and not check_mode:
                    result["verified"] = _verify(peer, target_dir, target_fd, staged)
                written = bool(params.get("write_stage_indicator", True)) and not present
                if written and not check_mode:
                    if cancelled():
                        raise IOError("The run was cancelled (%s); no stage indicator written." % cancelled())
                    peer.writeStageIndicator(indicator)
                result.update(
                    changed=bool(staged.copied) or written or bool(warnings),
                    count=len(staged.copied),
                    files=list(staged.copied),
                    bytes=staged.bytes,
                    unchanged=list(staged.unchanged),
                    stage_indicator_written=written,
                )
    except spec.OptionError as exc:
        _fail(params, str(exc))
    except (IOError, OSError, ValueError) as exc:
        _stage_failure(params, exc, target_dir, time.monotonic() - started, peer)
    result["seconds"] = round(time.monotonic() - started, 3)
    if warnings:
        result["warnings"] = warnings
    return result


def _verify(peer, target_dir, target_fd, staged):
    """sha256 of every staged file (copied or found identical) against the peer's: the count
    verified; a file that differs is removed and the peer fails (``IOError``)."""
    names = list(staged.copied) + list(staged.unchanged)
    verified, mismatched = peer.verifyFiles(target_dir, names, targetFd=target_fd)
    if mismatched:
        shown = ", ".join(mismatched[:5]) + (" and %d more" % (len(mismatched) - 5) if len(mismatched) > 5 else "")
        partial = StageResult([name for name in staged.copied if name not in mismatched],
                              [name for name in staged.unchanged if name not in mismatched], staged.excluded, staged.bytes)
        raise PeerError("Verification failed: the sha256 of %s differs from the peer's (or the peer gave none); "
                        "removed from the staging directory." % shown, partial=partial, verified=len(verified))
    return len(verified)


@contextlib.contextmanager
def _session(params, peer):
    """For a remote peer: one shared OpenSSH connection and bounded connects, as configured."""
    if params["type"] != "remote":
        yield peer
        return
    with ssh_session(peer, bool(params.get("ssh_multiplex", True)), params.get("connect_timeout") or 0) as session:
        yield session


def _quick_check(peer, target_fd, indicator, ownership, mode):
    """A remote peer already staged: nothing to fetch?  ``(StageResult, indicator present)`` or ``None``.

    Lists the collect directory over the rsh command (GNU ``find``, on the shared
    connection) and finds every file already in the target directory (open as
    ``target_fd``) with the same size, the mode and ownership a copy would give it, and
    staged no earlier than the file last changed on the peer.  Anything else (a new or
    changed file, a listing that fails) gives ``None``: the peer is fetched and compared
    in full.
    """
    try:
        if not [name for name in os.listdir(target_fd) if not name.startswith(".")]:
            return None  # nothing staged yet (a first run): no listing, straight to the copy
        entries = peer.listCollectDir()
    except (IOError, OSError, ValueError):
        return None
    umask = current_umask()
    names, present = [], False
    for entry in entries:
        if entry.name == indicator:
            present = True
            continue
        if entry.kind != "file" or entry.mtime is None:
            return None
        try:
            info = os.stat(entry.name, dir_fd=target_fd, follow_symlinks=False)
        except OSError:
            return None
        expected = (mode if mode is not None else entry.mode & ~umask) & 0o777  # never set-id or sticky
        if not stat.S_ISREG(info.st_mode) or info.st_size != entry.size or info.st_mtime < entry.mtime:
            return None
        if stat.S_IMODE(info.st_mode) != expected:
            return None
        if ownership is not None:
            uid, gid = ownership
            if (uid is not None and info.st_uid != uid) or (gid is not None and info.st_gid != gid):
                return None
        names.append(entry.name)
    if not names:
        return None
    return StageResult([], names, [indicator] if present else [], 0), present


def _predict_remote(peer, target_fd, indicator, warnings):
    """Check mode for a remote peer: list the collect dir, compare names and sizes.

    Returns the predicted ``StageResult`` and whether the stage indicator is present.  A
    target directory that does not exist yet (``target_fd`` ``None``: not created in check
    mode) counts as empty.
    """
    try:
        entries = peer.listCollectDir()
    except IOError as exc:
        detail, _extra = _output_of(exc)
        warnings.append(
            "Could not list the remote collect directory to predict the copy (%s%s); reporting a change." % (exc, detail)
        )
        return StageResult([], [], [], 0), False
    copied, unchanged, size, present = [], [], 0, False
    for entry in entries:
        if entry.name == indicator:
            present = True
            continue
        if entry.kind != "file":
            raise PeerError("Remote entry is a %s; the copy would fail." % entry.kind, partial=StageResult(copied, unchanged, [], size), entry=entry.name)
        try:
            info = None if target_fd is None else os.stat(entry.name, dir_fd=target_fd, follow_symlinks=False)
        except OSError:
            info = None
        if info is not None and stat.S_ISREG(info.st_mode) and info.st_size == entry.size:
            unchanged.append(entry.name)
        else:
            copied.append(entry.name)
            size += entry.size
    if not copied and not unchanged:
        raise IOError("Did not copy any files from remote peer.")
    return StageResult(copied, unchanged, [indicator] if present else [], size), present


def managed_action(params, check_mode=False):
    """Run ``<cback_command> [--full] <action>`` on the peer (remote) or right here (local)."""
    peer = None
    try:
        spec.check_action(params.get("action"))
        spec.check_command("cback_command", params.get("cback_command"))
        _check_peer_options(params, with_collect=False)
        if params["type"] == "local":
            argv = as_local_user(
                build_cback_argv(params.get("cback_command"), params["action"], params.get("full")),
                params.get("local_user"),
                "shell",
            )
        else:
            peer = _peer(params)
            peer.sshOptions = ssh_options(None, params.get("connect_timeout") or 0)
            argv = peer.remoteShellArgv(peer.managedActionCommand(params["action"], params.get("full")))
    except (IOError, ValueError) as exc:
        _fail(params, str(exc))
    if check_mode:
        # No rc: ansible-core takes a result whose rc is not 0 as a failure.
        return dict(changed=True, cmd=argv, stdout="", stderr="")
    started = time.monotonic()
    outcome = run_command(argv, timeout=spec.check_timeout(params.get("timeout")))
    result = dict(
        changed=True, cmd=outcome.argv, rc=outcome.rc, stdout=outcome.stdout, stderr=outcome.stderr,
        seconds=round(time.monotonic() - started, 3),
    )
    if outcome.timed_out:
        _fail(params, "action [%s] timed out after %s seconds." % (params["action"], params["timeout"]), **result)
    if outcome.rc != 0:
        detail = outcome.stderr.strip() or outcome.stdout.strip()
        cause = diagnose.from_output(outcome.stderr, peer if params["type"] == "remote" else None, argv[0])
        if cause.hint:
            result.update(cause=cause.kind, hint=cause.hint)
            detail = "%s (%s)" % (detail, cause.hint)
        _fail(params, "action [%s] failed with rc %s: %s" % (params["action"], outcome.rc, detail), **result)
    return result

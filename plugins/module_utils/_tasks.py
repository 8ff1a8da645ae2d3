# -*- coding: utf-8 -*-
# Copyright: cedarbackup.peer contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Private to cedarbackup.peer: not a public API, may change without notice.
"""One peer's work, on typed values: is it ready, stage it, run a managed action on it.

``check_ready``, ``stage_peer`` and ``run_action`` take a checked ``PeerSpec`` and
``Conduct`` (``_argspec``) and call the peer API; they check nothing again and raise
``TaskFailure`` with the reason alone.  The module functions ``collect_indicator``,
``stage`` and ``managed_action`` are the per-peer modules' edge: they check the module's
parameters once (``_argspec``), call the work, and name the peer in a failure.  The run
modules (``_runs``) call the work functions directly.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import os
import re
import stat
import time

from . import _argspec as spec
from . import _diagnose as diagnose
from ._command import (
    EXEC_FAILED, as_local_user, cancel_on_exit_of_caller, cancelled, join_command, run_command, time_left, within,
)
from ._ids import current_umask
from ._paths import path_join
from ._report import peer_message
from ._ssh import ssh_options, ssh_session
from .peer import (
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


@contextlib.contextmanager
def _module_edge(params):
    """A per-peer module's failures, checks included, name the peer once (``Peer <name>: ...``)."""
    try:
        yield
    except (spec.OptionError, IOError, ValueError) as exc:  # a check of the edge, or a peer that cannot be made
        raise TaskFailure(peer_message(params.get("name") or "localhost", str(exc)))
    except TaskFailure as failure:
        raise TaskFailure(peer_message(params.get("name") or "localhost", failure.msg), **failure.result)


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


# A remote peer whose readiness check failed without saying why gets one command over the rsh
# command to find out; it may take what is left of connect_timeout after the check, plus this
# many seconds (at least this many).  A peer that does not answer so costs one connect_timeout,
# not two.
DIAGNOSIS_GRACE = 3


def _probe_seconds(connect_timeout, spent):
    """How long the diagnosis command may take after a readiness check that took ``spent``
    seconds (``None``: no bound of its own, when no connect_timeout is set)."""
    if not connect_timeout:
        return None
    return max(DIAGNOSIS_GRACE, connect_timeout + DIAGNOSIS_GRACE - spent)


def _not_ready_cause(peer, indicator, probe_seconds=None):
    """Why a peer that was checked is not ready: a ``diagnose.Cause``.

    For a remote peer, the readiness check's stderr is read (it carries ssh's own errors: the
    modules run OpenSSH programs without ``-q``); only when it says nothing known, one command
    over the rsh command, bounded by ``probe_seconds``, tells a connection problem, a missing
    collect directory, an indicator that is not there yet and an SFTP server that did not start
    apart.
    """
    path = path_join(peer.collectDir, indicator)
    not_collected = "%s is not there yet: the peer has not finished its collect action" % path
    if isinstance(peer, LocalPeer):
        if not os.path.isdir(peer.collectDir):
            return diagnose.Cause("collect-dir-missing", "collect directory %s does not exist" % peer.collectDir, "")
        return diagnose.Cause("not-collected", not_collected, "")
    result = peer.collectCheckResult
    output = result.stderr if result is not None else ""
    cause = diagnose.from_output(output, peer, _program(peer))
    if cause.kind != "unknown" or cancelled() or result is None or result.rc == EXEC_FAILED:
        return cause
    # Whether the diagnosis's own bound is the one that may stop the command (not the command
    # timeout, nor the time left for the peer).
    bounded = probe_seconds is not None and all(
        limit is None or limit > probe_seconds for limit in (peer.commandTimeout or None, time_left()))
    with within(probe_seconds):
        probe = peer.runRemoteCommand(join_command(["test", "-d", peer.collectDir]), keep=4096)
    if probe.timed_out and bounded and not cancelled():
        return diagnose.Cause(
            "connect-timeout",
            "no answer: the readiness check failed without saying why, and a command over the rsh command got no answer "
            "in the %.0f seconds connect_timeout left: the peer does not answer (host down or filtered, or not an ssh "
            "server); bring it up, open the firewall or fix its address or port" % probe_seconds,
            cause.output,
        )
    found = diagnose.from_output(probe.stderr, peer, peer.effectiveRshCommand[0])
    both = "; ".join(part for part in (cause.output, found.output) if part)
    if found.kind != "unknown":
        return diagnose.Cause(found.kind, found.hint, both)
    reached = probe.rc in (0, 1) and not probe.stderr.strip()
    if reached and "Connection closed" in output:
        return diagnose.SFTP_DID_NOT_START._replace(output=cause.output)
    if probe.rc == 0 and _says_missing(output):
        return diagnose.Cause("not-collected", not_collected, cause.output)
    if probe.rc == 1 and reached:
        return diagnose.Cause(
            "collect-dir-missing",
            "collect directory %s does not exist on the peer (or remote user %s cannot reach it)" % (peer.collectDir, peer.remoteUser),
            cause.output,
        )
    return diagnose.Cause("unknown", "", both)


def _says_missing(output):
    """Whether a copy's output says the file it fetched is not there (scp's words, or those of a
    ``get`` request of the peer's SFTP session)."""
    return "No such file or directory" in output or re.search(r'^File ".*" not found\.', output, re.MULTILINE) is not None


def _check(api, conduct, indicator, result):
    """Whether the peer is ready: the readiness check, and when it fails, ``result`` marked not
    ready with the cause (the diagnosis bounded to fit in the check's connect_timeout)."""
    started = time.monotonic()
    if api.checkCollectIndicator(indicator):
        return True
    cause = _not_ready_cause(api, indicator, _probe_seconds(conduct.connect_timeout, time.monotonic() - started))
    _not_ready(result, cause, getattr(api, "collectCheckResult", None))
    return False


def _not_ready(result, cause, command=None):
    """Mark ``result`` not ready, with the cause (and the failed check command's fields)."""
    result.update(ready=False, cause=cause.kind, hint=cause.hint, output=cause.output)
    if command is not None:
        # No rc: ansible-core takes a result whose rc is not 0 as a failure, and a peer that is
        # not ready is not one.
        result.update(stdout=command.stdout, stderr=command.stderr, cmd=command.argv)


def _peer(peer, conduct):
    """The LocalPeer or RemotePeer of a checked ``PeerSpec``."""
    if not peer.remote:
        return LocalPeer(peer.name, peer.collect_dir)
    api = RemotePeer(
        name=peer.name,
        collectDir=peer.collect_dir,
        workingDir=conduct.working_dir,
        remoteUser=peer.remote_user,
        rcpCommand=peer.rcp_command,
        localUser=peer.local_user,
        rshCommand=peer.rsh_command,
        cbackCommand=peer.cback_command,
    )
    api.commandTimeout = conduct.timeout
    api.sshErrors = True  # ssh's own errors in every command's stderr, whatever -q the commands carry
    return api


def check_ready(peer, conduct, indicator):
    """Is the peer ready (its collect indicator there)?  Read-only: the same in check mode."""
    result = dict(changed=False, ready=True)
    api = _peer(peer, conduct)
    early = diagnose.before_connecting(api) if peer.remote else None
    if early is not None:
        _not_ready(result, early)
        return result
    with _session(peer, conduct, api) as api:
        _check(api, conduct, indicator, result)
    return result


def collect_indicator(params, check_mode=False):
    """The ``cback_collect_indicator`` module: is the peer ready?"""
    with _module_edge(params):
        peer = spec.peer_spec(params, local_user=spec.check_local_user("local_user", params.get("local_user")))
        _stage_indicator, indicator = spec.indicators(params, peer.remote)
        return check_ready(peer, spec.conduct(dict(params, ssh_multiplex=True), peer.remote), indicator)


def _stage_failure(exc, target_dir, seconds, peer=None):
    """The ``TaskFailure`` of a peer whose staging raised ``exc``: the reason, the command's
    output and hint where known, and what was staged before it failed."""
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
    return TaskFailure(message + detail, **result)


def stage_peer(peer, conduct, staging, check_mode=False):
    """Stage one checked peer into ``staging.target_dir``, then write its stage indicator.

    With ``staging.check_collect_indicator`` the peer's readiness is checked first, over the
    same ssh connection; a peer that is not ready gives ``ready: false`` and stages nothing.
    """
    started = time.monotonic()
    target_dir = staging.target_dir
    indicator = staging.stage_indicator
    warnings = []
    api = None
    result = dict(
        changed=False, ready=True, count=0, files=[], bytes=0, unchanged=[], target_dir=target_dir, stage_indicator_written=False
    )
    try:
        api = _peer(peer, conduct)
        if peer.remote and staging.check_collect_indicator:
            early = diagnose.before_connecting(api)
            if early is not None:  # nothing can run: not ready, and why (nothing was started)
                _not_ready(result, early)
                result["seconds"] = round(time.monotonic() - started, 3)
                return result
        if peer.remote:
            problem = diagnose.rsh_problem(api)
            if problem:
                warnings.append("%s (the file sizes cannot be checked against the peer's listing)." % problem)
        with _session(peer, conduct, api) as api, contextlib.ExitStack() as stack:
            if peer.remote:
                # The readiness check, the listing after the copy and the stage indicator push
                # in one SFTP session, whose connection the copy shares.
                stack.enter_context(api.conversation())
            if staging.check_collect_indicator:
                _check(api, conduct, staging.collect_indicator, result)
            if result["ready"]:
                # The run's descriptor for the peer's directory, else target_dir opened once.
                target_fd = stack.enter_context(open_target(target_dir, staging.target_fd, mayBeMissing=check_mode))
                # What verification compares: the hashes the stage computed on its own descriptors.
                digests = {} if staging.verify and not check_mode else None
                staged, present = _stage_files(peer, api, staging, target_fd, check_mode, warnings, digests)
                if digests is not None:
                    result["verified"] = _verify(api, target_dir, target_fd, staged, None if peer.remote else conduct.timeout, digests)
                written = staging.write_stage_indicator and not present
                if written and not check_mode:
                    if cancelled():
                        raise IOError("The run was cancelled (%s); no stage indicator written." % cancelled())
                    api.writeStageIndicator(indicator)
                result.update(
                    changed=bool(staged.copied) or written or bool(warnings),
                    count=len(staged.copied),
                    files=list(staged.copied),
                    bytes=staged.bytes,
                    unchanged=list(staged.unchanged),
                    stage_indicator_written=written,
                )
    except (IOError, OSError, ValueError) as exc:
        raise _stage_failure(exc, target_dir, time.monotonic() - started, api)
    result["seconds"] = round(time.monotonic() - started, 3)
    if warnings:
        result["warnings"] = warnings
    return result


def _stage_files(peer, api, staging, target_fd, check_mode, warnings, digests=None):
    """Copy (or, in check mode, predict) the peer's files: ``(StageResult, stage indicator present)``.

    ``digests`` (a dict, or ``None``) is filled by ``stageFiles`` with the sha256 of each file it
    staged, hashed on its own descriptors; a remote peer found staged by the quick check
    fetches nothing and adds none."""
    indicator = staging.stage_indicator
    if peer.remote and check_mode:
        return _predict_remote(api, target_fd, indicator, warnings)
    if peer.remote:
        quick = _quick_check(api, target_fd, indicator, staging.ownership, staging.mode) if staging.quick_check else None
        if quick is not None:
            return quick
        staged = api.stageFiles(staging.target_dir, staging.ownership, staging.mode, exclude=(indicator,), targetFd=target_fd,
                                digests=digests)
        return staged, indicator in staged.excluded
    staged = api.stageFiles(staging.target_dir, staging.ownership, staging.mode, exclude=(indicator,), checkOnly=check_mode,
                            targetFd=TARGET_MISSING if target_fd is None else target_fd, digests=digests)
    return staged, indicator in staged.excluded  # a regular file, seen through the collect dir's descriptor


def stage(params, check_mode=False):
    """The ``cback_stage`` module: its parameters checked once, then ``stage_peer``."""
    with _module_edge(params):
        peer = spec.peer_spec(params, local_user=spec.check_local_user("local_user", params.get("local_user")))
        spec.check_absolute("target_dir", params["target_dir"])
        stage_indicator, collect_indicator = spec.indicators(params, peer.remote)
        staging = spec.Staging(
            params["target_dir"],
            ownership=spec.ownership(params.get("owner"), params.get("group"), "owner", "group"),
            mode=spec.parse_mode(params.get("mode")),
            write_stage_indicator=bool(params.get("write_stage_indicator", True)),
            stage_indicator=stage_indicator,
            check_collect_indicator=bool(params.get("check_collect_indicator")),
            collect_indicator=collect_indicator,
            quick_check=bool(params.get("quick_check")),
            verify=bool(params.get("verify")),
        )
        return stage_peer(peer, spec.conduct(params, peer.remote), staging, check_mode)


def _verify(peer, target_dir, target_fd, staged, timeout=None, digests=None):
    """sha256 of every staged file (copied or found identical) against the peer's: the count
    verified; a file that differs is removed and the peer fails (``IOError``).

    ``digests``: the sha256 the stage computed on its own descriptors (``stageFiles``); a staged
    file found there is not opened again, any other is read back by name (``verifyFiles``).
    ``timeout``: the seconds root's own hashing may take (a local peer's, bounded like one
    command); every read stops at the thread's deadline too."""
    names = list(staged.copied) + list(staged.unchanged)
    with within(timeout):
        verified, mismatched = peer.verifyFiles(target_dir, names, targetFd=target_fd, digests=digests)
    if mismatched:
        shown = ", ".join(mismatched[:5]) + (" and %d more" % (len(mismatched) - 5) if len(mismatched) > 5 else "")
        partial = StageResult([name for name in staged.copied if name not in mismatched],
                              [name for name in staged.unchanged if name not in mismatched], staged.excluded, staged.bytes)
        raise PeerError("Verification failed: the sha256 of %s differs from the peer's (or the peer gave none); "
                        "removed from the staging directory." % shown, partial=partial, verified=len(verified))
    return len(verified)


@contextlib.contextmanager
def _session(peer, conduct, api):
    """For a remote peer: one shared OpenSSH connection and bounded connects, as configured."""
    if not peer.remote:
        yield api
        return
    with ssh_session(api, conduct.ssh_multiplex, conduct.connect_timeout or 0) as session:
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


def run_action(peer, conduct, action, full, check_mode=False):
    """Run ``<cback_command> [--full] <action>`` on a checked peer (remote) or right here (local)."""
    api = None
    if peer.remote:
        api = _peer(peer, conduct)
        api.sshOptions = ssh_options(None, conduct.connect_timeout or 0)
        argv = api.remoteShellArgv(api.managedActionCommand(action, full))
        user = api.localUser
    else:
        argv = as_local_user(build_cback_argv(peer.cback_command, action, full), peer.local_user, "shell")
        user = peer.local_user
    if check_mode:
        # No rc: ansible-core takes a result whose rc is not 0 as a failure.
        return dict(changed=True, cmd=argv, stdout="", stderr="")
    started = time.monotonic()
    outcome = run_command(argv, timeout=conduct.timeout, user=user)
    result = dict(
        changed=True, cmd=outcome.argv, rc=outcome.rc, stdout=outcome.stdout, stderr=outcome.stderr,
        seconds=round(time.monotonic() - started, 3),
    )
    if outcome.timed_out:
        raise TaskFailure("action [%s] timed out after %s seconds." % (action, conduct.timeout), **result)
    if outcome.rc != 0:
        detail = outcome.stderr.strip() or outcome.stdout.strip()
        cause = diagnose.from_output(outcome.stderr, api, argv[0])
        if cause.hint:
            result.update(cause=cause.kind, hint=cause.hint)
            detail = "%s (%s)" % (detail, cause.hint)
        raise TaskFailure("action [%s] failed with rc %s: %s" % (action, outcome.rc, detail), **result)
    return result


def managed_action(params, check_mode=False):
    """The ``cback_managed_action`` module: its parameters checked once, then ``run_action``."""
    with _module_edge(params):
        action = spec.check_action(params.get("action"))
        local_user = spec.check_local_user("local_user", params.get("local_user"))
        peer = spec.peer_spec(params, collect=False, local_user=local_user)
        if not peer.remote:
            peer.local_user = local_user  # a local managed action runs as that user too
        return run_action(peer, spec.conduct(params, peer.remote), action, params.get("full"), check_mode)

"""Run untrusted Python (a policy's generated code) in a sandbox and return what it printed.

Each run is one chain of exec'd util-linux tools, so no Python code runs between fork and exec
in this process (``preexec_fn`` is unsafe with threads):

    prlimit (rlimits) -> unshare (new mount, network, PID, IPC, UTS namespaces; --fork makes the
    next process PID 1 of the new PID namespace) -> sh (as root inside: private tmpfs over /tmp,
    /var/tmp, /dev/shm, /run/lock; a fresh /proc; the work dir /tmp/sandbox) -> setpriv (drop to
    a fresh unprivileged uid/gid, no supplementary groups, no capabilities, no_new_privs) ->
    python -I (the code, read from a file on stdin; stdin is then /dev/null)

What that buys, and why each piece is there:
- **No network**: a new network namespace holds only a loopback device that is down; the host's
  127.0.0.1 is a different stack. Abstract Unix sockets are per namespace too.
- **Processes**: RLIMIT_NPROC counts the processes of a uid, and root ignores it — hence a
  fresh uid per run (random in 20000-59999, skipping existing accounts), so the limit is this
  run's alone. When PID 1 of the namespace exits or is killed, the kernel kills every process
  left in it, so nothing outlives the run (a fork bomb included) even if it called setsid().
- **Wall time**: the chain starts in its own session; at the deadline the whole process group
  gets SIGKILL, ``unshare --kill-child`` passes it to PID 1, and the namespace goes with it.
- **CPU time, address space, file size, open files, core dumps**: rlimits (prlimit).
- **Files**: the uid owns nothing on the host, so it can write only where everyone may; those
  places (/tmp, /var/tmp, /dev/shm, /run/lock) are private tmpfs mounts of ``disk_mb`` each that
  vanish with the run. It can still *read* whatever is world-readable (the code base, the venv).
- **Secrets**: the environment is PATH and LANG only; the fresh /proc shows only the sandbox's
  own processes, so the parent's environment and command line are out of sight.
- **Output**: at most ``max_output_bytes`` of each stream is kept; the rest is read and dropped.

Fails closed: the first call checks that the namespaces, mounts and uid switch work (root, or
CAP_SYS_ADMIN + CAP_SETUID, and util-linux's prlimit, unshare, setpriv) and raises
``SandboxUnavailableError`` if not; code never runs unisolated. Not covered: it is no defence
against kernel exploits (use a VM or gVisor for hostile code), CPU time of a run is not
capped across its processes (each process has the CPU limit; wall time caps them all), and
tmpfs pages count as memory of the host.
"""

from __future__ import annotations

import functools
import math
import os
import pwd
import random
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# Inside the namespaces, as root: $1 uid, $2 interpreter, $3 tmpfs size (MiB), $4 bootstrap code.
_LAUNCHER = r"""
set -e
mount -t proc -o nosuid,nodev,noexec proc /proc
for d in /tmp /var/tmp /dev/shm /run/lock; do
  if [ -d "$d" ]; then mount -t tmpfs -o "size=${3}m,mode=1777,nosuid,nodev" tmpfs "$d"; fi
done
mkdir -m 700 /tmp/sandbox
chown "$1:$1" /tmp/sandbox
cd /tmp/sandbox
unset OLDPWD PWD
exec setpriv --reuid="$1" --regid="$1" --clear-groups --no-new-privs --bounding-set=-all -- "$2" -I -c "$4"
"""

# Read the program from stdin, then point fd 0 at /dev/null so the program cannot re-read its
# own source (a code-test harness keeps a nonce there), and run it as __main__.
_BOOTSTRAP = (
    "import os,sys\n"
    "_src=sys.stdin.buffer.read()\n"
    "_fd=os.open(os.devnull,os.O_RDONLY);os.dup2(_fd,0);os.close(_fd)\n"
    "exec(compile(_src,'<sandbox>','exec'),{'__name__':'__main__','__builtins__':__builtins__})\n"
)

_UNSHARE_SIGKILL_NOTE = b"unshare: sigprocmask unblock failed: Invalid argument\n"
_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
_UID_RANGE = (20000, 60000)


class SandboxUnavailableError(RuntimeError):
    """The sandbox cannot be built on this machine (so the code was not run)."""


@dataclass(frozen=True)
class SandboxResult:
    """What a sandboxed run did. ``returncode`` < 0 means killed by that signal (−9 on timeout)."""

    returncode: int
    stdout: str
    stderr: str
    timed_out: bool
    truncated: bool  # some output past max_output_bytes was dropped
    wall_s: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


def run_in_sandbox(
    code: str,
    *,
    timeout_s: float = 10.0,
    memory_mb: int = 512,
    cpu_s: int | None = None,
    max_processes: int = 32,
    max_file_mb: int = 16,
    max_open_files: int = 64,
    disk_mb: int = 64,
    max_output_bytes: int = 64 * 1024,
    uid: int | None = None,
    python: str | None = None,
) -> SandboxResult:
    """Run ``code`` with ``python -I`` in the sandbox described above; never raises for anything
    the code does (only ``SandboxUnavailableError`` when the sandbox cannot be built).

    ``timeout_s``: wall time from start to SIGKILL of everything; ``memory_mb``: address space
    per process (RLIMIT_AS); ``cpu_s``: CPU seconds per process (default ⌈timeout_s⌉);
    ``max_processes``: processes and threads of the run's uid; ``max_file_mb``: largest file it
    may write; ``max_open_files``: file descriptors; ``disk_mb``: size of each private tmpfs;
    ``max_output_bytes``: kept per stream; ``uid``: fixed uid (default: a fresh one per run);
    ``python``: interpreter (default: this one).
    """
    python = python or sys.executable
    _check_available(python)
    return _run(
        code, timeout_s=timeout_s, memory_mb=memory_mb, cpu_s=cpu_s, max_processes=max_processes,
        max_file_mb=max_file_mb, max_open_files=max_open_files, disk_mb=disk_mb,
        max_output_bytes=max_output_bytes, uid=uid if uid is not None else _fresh_uid(), python=python,
    )


def _run(code, *, timeout_s, memory_mb, cpu_s, max_processes, max_file_mb, max_open_files, disk_mb,
         max_output_bytes, uid, python) -> SandboxResult:
    cpu_s = cpu_s if cpu_s is not None else max(1, math.ceil(timeout_s))
    command = [
        "prlimit", f"--cpu={cpu_s}", f"--as={memory_mb << 20}", f"--nproc={max_processes}",
        f"--fsize={max_file_mb << 20}", f"--nofile={max_open_files}", "--core=0", "--",
        "unshare", "--mount", "--net", "--pid", "--ipc", "--uts", "--fork", "--kill-child", "--",
        "/bin/sh", "-c", _LAUNCHER, "sandbox", str(uid), python, str(disk_mb), _BOOTSTRAP,
    ]
    with tempfile.TemporaryFile() as source:
        source.write(code.encode("utf-8", "replace"))
        source.seek(0)
        start = time.monotonic()
        process = subprocess.Popen(
            command, stdin=source, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_ENV, cwd="/",
            start_new_session=True, close_fds=True,
        )
        try:
            stdout, stderr, truncated, timed_out = _collect(process, start + timeout_s, max_output_bytes)
            if not timed_out:  # both pipes closed; the code may still run without them
                try:
                    process.wait(timeout=max(start + timeout_s - time.monotonic(), 0.0))
                except subprocess.TimeoutExpired:
                    timed_out = True
        finally:
            _stop(process)  # a no-op after a normal exit; unshare is not reaped yet, so its group id is ours
            returncode = process.wait()
    if returncode == 1 and stderr.endswith(_UNSHARE_SIGKILL_NOTE):
        # util-linux 2.38's unshare cannot re-raise SIGKILL on itself and exits 1 with this note.
        returncode, stderr = -signal.SIGKILL, stderr[: -len(_UNSHARE_SIGKILL_NOTE)]
    return SandboxResult(
        returncode=returncode,
        stdout=stdout.decode("utf-8", "replace"),
        stderr=stderr.decode("utf-8", "replace"),
        timed_out=timed_out,
        truncated=truncated,
        wall_s=time.monotonic() - start,
    )


def _collect(process, deadline: float, limit: int) -> tuple[bytes, bytes, bool, bool]:
    """Read both pipes until they close or the deadline passes (then kill, drain for ≤ 1 s)."""
    out_fd, err_fd = process.stdout.fileno(), process.stderr.fileno()
    kept = {out_fd: bytearray(), err_fd: bytearray()}
    truncated = timed_out = False
    with selectors.DefaultSelector() as selector:
        for fd in kept:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if timed_out:
                    break  # killed, yet a pipe stays open: give up on the rest
                timed_out = True
                _stop(process)
                deadline = time.monotonic() + 1.0
                continue
            for key, _ in selector.select(remaining):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fd)
                    continue
                room = limit - len(kept[key.fd])
                kept[key.fd] += chunk[: max(room, 0)]
                truncated |= len(chunk) > room
    process.stdout.close()
    process.stderr.close()
    return bytes(kept[out_fd]), bytes(kept[err_fd]), truncated, timed_out


def _stop(process) -> None:
    """SIGKILL PID 1 of the sandbox and wait for unshare to report it: the kernel kills and
    reaps every other process of the namespace before PID 1's exit is reported, so nothing of
    the run is left when this returns. (Killing the group instead would let unshare die first.)"""
    try:
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        for pid in children:
            os.kill(int(pid), signal.SIGKILL)
        process.wait(timeout=5)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        pass
    _kill_group(process)


def _kill_group(process) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _fresh_uid() -> int:
    """A random uid no account uses, so RLIMIT_NPROC and file ownership are this run's alone."""
    taken = {entry.pw_uid for entry in pwd.getpwall()}
    while True:
        uid = random.randrange(*_UID_RANGE)
        if uid not in taken:
            return uid


_PROBE = "import os, socket; print(os.getuid(), os.getpid(), sorted(n for _, n in socket.if_nameindex()))"


@functools.cache
def _check_available(python: str) -> None:
    """Fail closed: run a probe once per interpreter and insist on every isolation it checks."""
    missing = [tool for tool in ("prlimit", "unshare", "setpriv") if shutil.which(tool, path=_ENV["PATH"]) is None]
    if missing:
        raise SandboxUnavailableError(f"the sandbox needs util-linux's {', '.join(missing)} on {_ENV['PATH']}")
    uid = _fresh_uid()
    probe = _run(_PROBE, timeout_s=30.0, memory_mb=1024, cpu_s=None, max_processes=8, max_file_mb=1,
                 max_open_files=64, disk_mb=1, max_output_bytes=4096, uid=uid, python=python)
    expected = f"{uid} 1 ['lo']"
    if probe.returncode != 0 or probe.stdout.strip() != expected:
        raise SandboxUnavailableError(
            "cannot build the code sandbox (it needs root, or CAP_SYS_ADMIN and CAP_SETUID, to make "
            "namespaces, mount tmpfs and switch uid, and an interpreter other users may run); generated "
            f"code is not run without it. Probe: rc={probe.returncode}, stdout={probe.stdout.strip()!r}, "
            f"expected {expected!r}, stderr={probe.stderr.strip()[-500:]!r}"
        )

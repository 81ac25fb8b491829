"""The code sandbox: each escape route is tried from inside, and the host is checked afterwards."""

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from alignkit.rewards import SandboxResult, run_in_sandbox
from alignkit.rewards import sandbox as sandbox_module


def processes_of(uid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            if any(line.split()[1:2] == [str(uid)] for line in status.splitlines() if line.startswith("Uid:")):
                found.append(int(entry.name))
    return found


def test_runs_code_and_reports_its_exit():
    result = run_in_sandbox("import sys\nprint('hi')\nprint('err', file=sys.stderr)\nsys.exit(3)", timeout_s=10, memory_mb=256)
    assert isinstance(result, SandboxResult)
    assert (result.returncode, result.stdout, result.stderr, result.timed_out) == (3, "hi\n", "err\n", False)
    failing = run_in_sandbox("1 / 0", timeout_s=10, memory_mb=256)
    assert failing.returncode == 1 and "ZeroDivisionError" in failing.stderr and not failing.ok
    assert run_in_sandbox("import os; print(os.getcwd(), os.getuid() != 0)", timeout_s=10, memory_mb=256).stdout == "/tmp/sandbox True\n"


def test_infinite_loop_is_killed_at_the_wall_time():
    start = time.monotonic()
    result = run_in_sandbox("print('started', flush=True)\nwhile True:\n    pass", timeout_s=1.0, memory_mb=256)
    elapsed = time.monotonic() - start
    assert result.timed_out and result.returncode == -9
    assert result.stdout == "started\n"  # output before the kill is kept
    assert elapsed < 2.0


def test_fork_bomb_is_contained_and_leaves_nothing_behind():
    uid = 54321 if 54321 not in {u for u in map(lambda e: e.pw_uid, __import__("pwd").getpwall())} else 54322
    # Each child sleeps; the parent counts how many forks succeed before RLIMIT_NPROC stops it.
    counted = run_in_sandbox(
        "import os, time\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n            time.sleep(60)\n"
        "            os._exit(0)\n        n += 1\nexcept OSError:\n    print(n)",
        timeout_s=10, memory_mb=256, max_processes=8, uid=uid,
    )
    assert counted.returncode == 0 and 0 < int(counted.stdout) < 8
    bomb = run_in_sandbox(
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
        timeout_s=1.0, memory_mb=256, max_processes=16, uid=uid,
    )
    assert bomb.timed_out
    assert processes_of(uid) == []  # the sleeping children and the bomb died with the namespace
    assert subprocess.run(["true"]).returncode == 0  # the host can still spawn


def test_memory_hog_fails_inside_the_sandbox():
    result = run_in_sandbox("chunks = []\nwhile True:\n    chunks.append(bytearray(16 << 20))", timeout_s=10, memory_mb=256)
    assert result.returncode == 1 and "MemoryError" in result.stderr and not result.timed_out
    assert run_in_sandbox("x = bytearray(64 << 20); print(len(x))", timeout_s=10, memory_mb=256).stdout == f"{64 << 20}\n"


def test_no_network_even_to_the_hosts_loopback():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    code = (
        "import socket\ntry:\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n    print('connected')\n"
        "except OSError as error:\n    print('blocked', type(error).__name__)"
    )
    try:
        # A positive control: the same code run on the host does connect.
        host = subprocess.run(["python3", "-c", code], capture_output=True, text=True, timeout=10)
        assert host.stdout.startswith("connected")
        listener.accept()[0].close()
        result = run_in_sandbox(code, timeout_s=10, memory_mb=256)
        assert result.stdout.startswith("blocked"), result
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()


@pytest.fixture
def host_dir():
    """A root-owned directory outside every tmpfs the sandbox mounts, traversable by all."""
    path = Path(tempfile.mkdtemp(prefix=".sandbox-probe-", dir=Path(__file__).parent))
    path.chmod(0o755)
    (path / "existing.txt").write_text("original")
    (path / "existing.txt").chmod(0o644)
    yield path
    shutil.rmtree(path)


def test_cannot_write_outside_its_directory(host_dir, tmp_path):
    code = (
        "import os\n"
        "def attempt(path, mode):\n"
        "    try:\n        with open(path, mode) as f:\n            f.write('pwned')\n        return 'wrote'\n"
        "    except OSError as error:\n        return type(error).__name__\n"
        f"print(attempt({str(host_dir / 'existing.txt')!r}, 'w'), attempt({str(host_dir / 'new.txt')!r}, 'w'))\n"
        f"os.makedirs({str(tmp_path)!r}, exist_ok=True)\n"  # the host's /tmp is hidden: this is a private copy
        f"print(attempt({str(tmp_path / 'new.txt')!r}, 'w'), attempt('own.txt', 'w'))\n"
    )
    result = run_in_sandbox(code, timeout_s=10, memory_mb=256)
    assert result.stdout == "PermissionError PermissionError\nwrote wrote\n", result
    assert (host_dir / "existing.txt").read_text() == "original"
    assert sorted(p.name for p in host_dir.iterdir()) == ["existing.txt"]
    assert list(tmp_path.iterdir()) == []


def test_large_files_and_output_are_capped():
    result = run_in_sandbox(
        "try:\n    open('big', 'wb').write(bytes(3 << 20))\nexcept OSError as error:\n    print(type(error).__name__)\n"
        "print('x' * 100000)",
        timeout_s=10, memory_mb=256, max_file_mb=1, max_output_bytes=1000,
    )
    assert result.stdout.startswith("OSError\nxxx") and len(result.stdout) == 1000 and result.truncated


def test_environment_secrets_do_not_reach_the_code(monkeypatch):
    monkeypatch.setenv("ALIGNKIT_TEST_SECRET", "s3cr3t-value")
    code = (
        "import os, glob\nprint(sorted(os.environ), [p for p in os.listdir('/proc') if p.isdigit()])\n"
        "for path in glob.glob('/proc/*/environ'):\n"
        "    try:\n        print(open(path, 'rb').read())\n    except OSError:\n        pass"
    )
    result = run_in_sandbox(code, timeout_s=10, memory_mb=256)
    assert result.returncode == 0
    assert result.stdout.splitlines()[0] == "['LANG', 'PATH'] ['1']"  # its own /proc: no host process in sight
    assert "s3cr3t-value" not in result.stdout + result.stderr


def test_unavailable_sandbox_fails_closed(monkeypatch):
    monkeypatch.setattr(sandbox_module, "_ENV", {"PATH": "/nonexistent", "LANG": "C.UTF-8"})
    sandbox_module._check_available.cache_clear()
    try:
        with pytest.raises(sandbox_module.SandboxUnavailableError, match="util-linux"):
            run_in_sandbox("print('should not run')", timeout_s=5, memory_mb=256)
    finally:
        sandbox_module._check_available.cache_clear()

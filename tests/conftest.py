"""Shared test fixtures.

- Every test session gets its own CTRKERNEL_HOME in a temporary directory, removed at the end,
  so the suite never touches a learner's real state.
- `requires(...)` skips with a reason when the host lacks a probe check (runc's bats style).
- `binder_sim(...)` runs a command as a Binder session would see this machine (uid 1000, no
  capabilities, no_new_privs, read-only cgroups, user namespaces blocked unless userns=True).
- At the end of the session the suite fails if anything of ours is left: mounts, cgroups,
  proot scratch directories, shim processes (one per container nobody removed).
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BINDER_SIM = Path(os.environ.get("CTRKERNEL_BINDER_SIM", REPO.parent / "shared" / "tools" / "binder-sim"))

from session_home import HOME as _session_home  # noqa: E402 (the plugin made it, see there)


def host():
    from ctrkernel.host import doctor
    return doctor()


def requires(*checks):
    """A pytest mark skipping the test unless every named probe check passed."""
    report = host()
    missing = [c for c in checks if not report.ok(c)]
    return pytest.mark.skipif(bool(missing), reason=f"host lacks: {', '.join(missing)}")


def requires_isolation(*levels):
    level = host().isolation
    return pytest.mark.skipif(level not in levels, reason=f"isolation is {level}, needs {levels}")


def binder_sim(command, userns=False, env=None, timeout=300, cwd=None):
    """Run command (a list) as a Binder-like unprivileged session; returns CompletedProcess."""
    if os.geteuid() != 0:
        pytest.skip("binder-sim needs root to drop privileges")
    if not BINDER_SIM.exists():
        pytest.fail(f"binder-sim not found at {BINDER_SIM} (set CTRKERNEL_BINDER_SIM)")
    argv = [sys.executable, str(BINDER_SIM)] + (["--userns"] if userns else []) + ["--"] + command
    # Where CI cloned us below a directory only root may enter, make the repository reachable.
    argv = [sys.executable, str(REPO / "tests" / "reach_as_user.py"), str(REPO), "--"] + argv
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=full_env,
                          cwd=cwd)


# Every CTRKERNEL_HOME this session uses: its shims (<home>/bin/ctrkernel-shim-*) are ours to
# account for at the end; other sessions' homes (a lead running the suite alongside) are not.
_homes = [str(_session_home)]


@pytest.fixture
def unprivileged_home(tmp_path_factory):
    """A CTRKERNEL_HOME an unprivileged user (uid 1000) may write, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="ctrkernel-test-user-"))
    _homes.append(str(path))
    os.chown(path, 1000, 1000)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _our_mounts():
    with open("/proc/mounts") as f:
        return [line for line in f if "ctrkernel" in line]


def _our_cgroups():
    found = []
    for root, dirs, _ in os.walk("/sys/fs/cgroup"):
        for d in dirs:
            if "ctrkernel" in d:
                found.append(os.path.join(root, d))
        if root.count("/") > 6:
            dirs[:] = []
    return found


def _our_shims():
    """{(pid, start time): command line} of running processes whose executable is a shim
    built in one of this session's homes: each is a container nobody removed."""
    import psutil
    found = {}
    for p in psutil.process_iter():
        try:
            exe = p.exe()
            if os.path.basename(exe).startswith("ctrkernel-shim-") and any(
                    exe.startswith(os.path.join(home, "bin") + os.sep) for home in _homes):
                found[(p.pid, p.create_time())] = " ".join(p.cmdline())
        except psutil.Error:
            continue  # gone meanwhile, or a zombie: nothing runs any more
    return found


def _leaked_shims(before):
    # A shim leaves a moment after its container's status is written: give it that moment.
    deadline = time.monotonic() + 3
    while True:
        leaked = {k: v for k, v in _our_shims().items() if k not in before}
        if not leaked or time.monotonic() > deadline:
            return leaked
        time.sleep(0.1)


@pytest.fixture(scope="session", autouse=True)
def leave_no_trace():
    """Fail the session if the tests leave mounts, cgroups, proot scratch dirs, shim
    processes or state behind."""
    mounts_before, cgroups_before = set(_our_mounts()), set(_our_cgroups())
    proot_before = set(_proot_scratch())
    shims_before = set(_our_shims())
    homes_before = set(_test_homes())
    yield
    leaked_mounts = [m for m in _our_mounts() if m not in mounts_before]
    leaked_cgroups = [c for c in _our_cgroups() if c not in cgroups_before]
    leaked_scratch = sorted(set(_proot_scratch()) - proot_before)
    # a child Python that imported conftest made a session home of its own, and kept it
    leaked_homes = sorted(set(_test_homes()) - homes_before - {str(_session_home)})
    # Looked for before the home is removed: a deleted executable no longer has its path.
    leaked_shims = sorted(f"pid {pid}: {cmd}" for (pid, _), cmd in
                          _leaked_shims(shims_before).items())
    shutil.rmtree(_session_home, ignore_errors=True)
    # One report naming every kind of leak: a leaked container usually leaks several at once.
    leaks = [f"{what} left behind: {found}" for what, found in (
        ("mounts", leaked_mounts), ("cgroups", leaked_cgroups),
        ("proot scratch directories", leaked_scratch), ("shim processes", leaked_shims),
        ("test homes", leaked_homes)) if found]
    assert not leaks, "\n".join(leaks)


def _test_homes():
    return [str(p) for p in Path(tempfile.gettempdir()).glob("ctrkernel-test-home-*")]


def _proot_scratch():
    """proot's own `prooted-*` directories in the shared temp dir (left when it is killed)."""
    return [str(p) for p in Path(tempfile.gettempdir()).glob("prooted-*")]

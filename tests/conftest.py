"""Shared test fixtures.

- Every test session gets its own CTRKERNEL_HOME in a temporary directory, removed at the end,
  so the suite never touches a learner's real state.
- `requires(...)` skips with a reason when the host lacks a probe check (runc's bats style).
- `binder_sim(...)` runs a command as a Binder session would see this machine (uid 1000, no
  capabilities, no_new_privs, read-only cgroups, user namespaces blocked unless userns=True).
- At the end of the session the suite fails if anything of ours is left: mounts, cgroups,
  processes.
"""
import os
import shutil
import subprocess
import sys
import tempfile
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


@pytest.fixture
def unprivileged_home(tmp_path_factory):
    """A CTRKERNEL_HOME an unprivileged user (uid 1000) may write, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="ctrkernel-test-user-"))
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


@pytest.fixture(scope="session", autouse=True)
def leave_no_trace():
    """Fail the session if the tests leave mounts, cgroups, proot scratch dirs or state
    behind."""
    mounts_before, cgroups_before = set(_our_mounts()), set(_our_cgroups())
    proot_before = set(_proot_scratch())
    yield
    leaked_mounts = [m for m in _our_mounts() if m not in mounts_before]
    leaked_cgroups = [c for c in _our_cgroups() if c not in cgroups_before]
    leaked_scratch = sorted(set(_proot_scratch()) - proot_before)
    shutil.rmtree(_session_home, ignore_errors=True)
    assert not leaked_mounts, f"mounts left behind: {leaked_mounts}"
    assert not leaked_cgroups, f"cgroups left behind: {leaked_cgroups}"
    assert not leaked_scratch, f"proot scratch directories left behind: {leaked_scratch}"


def _proot_scratch():
    """proot's own `prooted-*` directories in the shared temp dir (left when it is killed)."""
    return [str(p) for p in Path(tempfile.gettempdir()).glob("prooted-*")]

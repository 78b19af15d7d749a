"""Chapter 02's one-namespace-at-a-time demos really isolate, as root, rootless and not at all."""
import json
import os
import socket
import subprocess
import sys

import pytest

from conftest import binder_sim, requires_isolation
from ctrkernel.errors import CtrkernelError
from ctrkernel.lessons.nsdemo import KINDS, alone, holding, ps_sees_only_itself

pytestmark = requires_isolation("full", "rootless")


def test_uts_alone_renames_the_child_not_us():
    demo = alone("uts")
    assert demo.inside["view"] == "container"
    assert socket.gethostname() != "container" and demo.outside["view"] == socket.gethostname()
    assert demo.isolated


def test_uts_alone_uses_the_hostname_given():
    demo = alone("uts", hostname="exercise-7")
    assert demo.inside["view"] == "exercise-7" and socket.gethostname() != "exercise-7"


def test_a_hostname_is_refused_where_it_means_nothing_or_is_invalid():
    with pytest.raises(CtrkernelError, match="only applies to the uts"):
        alone("pid", hostname="x")
    with pytest.raises(CtrkernelError, match="1 to 64 bytes"):
        alone("uts", hostname="x" * 65)
    with pytest.raises(CtrkernelError, match="1 to 64 bytes"):
        with holding("uts", hostname=""):
            pass


def _gone(pid):
    """True when no process (not even a zombie waiting to be reaped) has this PID."""
    return not os.path.exists(f"/proc/{pid}")


def test_holding_keeps_a_uts_namespace_to_inspect_from_outside():
    ours = os.readlink("/proc/self/ns/uts")
    with holding("uts", hostname="held-box") as pid:
        assert os.readlink(f"/proc/{pid}/ns/uts") != ours
        # What a learner would type in a terminal: join the namespace and ask its hostname.
        seen = subprocess.run(["nsenter", f"--target={pid}", "--uts", "hostname"],
                              capture_output=True, text=True, timeout=30)
        assert seen.returncode == 0, seen.stderr
        assert seen.stdout.strip() == "held-box"
        assert socket.gethostname() != "held-box"
    assert _gone(pid)


@pytest.mark.parametrize("kind", KINDS)
def test_holding_any_namespace_leaves_no_process_or_zombie(kind):
    with holding(kind) as pid:
        assert os.readlink(f"/proc/{pid}/ns/{kind}") != os.readlink(f"/proc/self/ns/{kind}")
        with open(f"/proc/{pid}/stat") as f:
            assert f.read().rsplit(")", 1)[1].split()[0] in "SR"  # alive, not a zombie
        if kind == "pid":  # the PID the host sees is PID 1 inside
            with open(f"/proc/{pid}/status") as f:
                nspid = next(line for line in f if line.startswith("NSpid:")).split()
            assert nspid[1:] == [str(pid), "1"]
    assert _gone(pid)


def test_holding_ends_the_process_when_the_block_raises():
    with pytest.raises(KeyboardInterrupt):
        with holding("pid") as pid:
            raise KeyboardInterrupt  # a learner interrupting the cell
    assert _gone(pid)


def test_ps_sees_only_itself_with_a_pid_namespace_and_a_fresh_proc_only():
    assert ps_sees_only_itself("pid") is False  # the host's /proc still lists every process
    assert ps_sees_only_itself("mnt") is False  # a mount table alone hides no process
    assert ps_sees_only_itself("pid", "mnt") is True
    with pytest.raises(CtrkernelError):
        ps_sees_only_itself("net")


def test_pid_alone_makes_pid_1_that_sees_only_itself():
    assert alone("pid").inside["view"] == "I am PID 1; visible: [1]"


def test_mnt_alone_mounts_are_invisible_to_the_host():
    demo = alone("mnt")
    assert "hello" in demo.inside["view"]
    with open("/proc/mounts") as f:
        assert demo.inside["dir"] not in f.read()
    assert not os.path.exists(demo.inside["dir"])


def test_net_alone_has_only_loopback():
    assert alone("net").inside["view"] == "lo"


@pytest.mark.parametrize("kind", KINDS)
def test_every_demo_is_in_a_namespace_of_its_own(kind):
    assert alone(kind).isolated


SCRIPT = ("import json; from ctrkernel.lessons.nsdemo import alone, KINDS; "
          "print(json.dumps({k: alone(k).inside['view'] for k in KINDS}))")

HOLD_SCRIPT = """
import json, os, subprocess
from ctrkernel.lessons.nsdemo import holding, ps_sees_only_itself
with holding("uts", hostname="rootless-box") as pid:
    differs = os.readlink(f"/proc/{pid}/ns/uts") != os.readlink("/proc/self/ns/uts")
    seen = subprocess.run(["nsenter", f"--target={pid}", "--user", "--preserve-credentials",
                           "--uts", "hostname"], capture_output=True, text=True).stdout.strip()
print(json.dumps({"differs": differs, "hostname": seen, "gone": not os.path.exists(f"/proc/{pid}"),
                  "ps": [ps_sees_only_itself(*k) for k in (["pid"], ["mnt"], ["pid", "mnt"])]}))
"""


def test_rootless_demos_work_inside_a_user_namespace():
    done = binder_sim([sys.executable, "-c", SCRIPT], userns=True)
    assert done.returncode == 0, done.stderr
    views = json.loads(done.stdout)
    assert views["uts"] == "container" and views["pid"] == "I am PID 1; visible: [1]"
    assert views["user"] == "uid 0"  # root inside, uid 1000 outside


def test_rootless_holding_and_ps_experiment_work_in_a_user_namespace():
    done = binder_sim([sys.executable, "-c", HOLD_SCRIPT], userns=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"differs": True, "hostname": "rootless-box", "gone": True,
                                       "ps": [False, False, True]}


def test_without_namespaces_the_demo_says_why():
    done = binder_sim([sys.executable, "-c", "from ctrkernel.lessons.nsdemo import alone; alone('uts')"])
    assert done.returncode != 0
    assert "HostLacks" in done.stderr and "user namespaces are disabled" in done.stderr


def test_chroot_can_be_escaped_but_pivot_root_cannot():
    from ctrkernel.lessons.nsdemo import escape_attempt
    chroot = escape_attempt("chroot")
    assert chroot["escaped"] and "usr" in chroot["after_escape"]  # the host's root
    pivot = escape_attempt("pivot_root")
    assert not pivot["escaped"] and "inside-the-jail" in pivot["after_escape"]
    assert "usr" not in pivot["after_escape"]

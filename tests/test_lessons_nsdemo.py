"""Chapter 02's one-namespace-at-a-time demos really isolate, as root, rootless and not at all."""
import json
import os
import socket
import sys

import pytest

from conftest import binder_sim, requires_isolation
from ctrkernel.lessons.nsdemo import KINDS, alone

pytestmark = requires_isolation("full", "rootless")


def test_uts_alone_renames_the_child_not_us():
    demo = alone("uts")
    assert demo.inside["view"] == "container"
    assert socket.gethostname() != "container" and demo.outside["view"] == socket.gethostname()
    assert demo.isolated


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


def test_rootless_demos_work_inside_a_user_namespace():
    done = binder_sim([sys.executable, "-c", SCRIPT], userns=True)
    assert done.returncode == 0, done.stderr
    views = json.loads(done.stdout)
    assert views["uts"] == "container" and views["pid"] == "I am PID 1; visible: [1]"
    assert views["user"] == "uid 0"  # root inside, uid 1000 outside


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

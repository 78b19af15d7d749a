"""The host probe: its decision logic (pure), and real runs as root, rootless and Binder-like."""
import json
import os
import subprocess
import sys

import pytest

from ctrkernel.errors import HostLacks
from ctrkernel.host import CONTAINER_NAMESPACES, Check, HostReport, decide_isolation, doctor
from conftest import binder_sim

ALL_NAMESPACES = {n: True for n in CONTAINER_NAMESPACES} | {"pivot_root": True}


@pytest.mark.parametrize("ok, expected", [
    (ALL_NAMESPACES | {"root": True}, "full"),
    (ALL_NAMESPACES | {"root": False, "userns": True, "userns_mount": True}, "rootless"),
    # user namespaces exist but mounts inside them are refused: nothing useful can be isolated
    (ALL_NAMESPACES | {"root": False, "userns": True, "userns_mount": False}, "none"),
    ({"root": False, "userns": False}, "none"),
    # root, but a PID namespace is refused (some container sandboxes): not full isolation
    (ALL_NAMESPACES | {"root": True, "pidns": False}, "none"),
    (ALL_NAMESPACES | {"root": True, "pivot_root": False}, "none"),
])
def test_isolation_decision(ok, expected):
    assert decide_isolation(ok) == expected


def test_require_names_the_missing_check_and_the_remedy():
    report = HostReport.from_checks([Check("root", False, "uid 1000"),
                                     Check("pidns", False, "EPERM")])
    with pytest.raises(HostLacks) as info:
        report.require("pidns", "running a container")
    message = str(info.value)
    assert "running a container" in message and "pidns" in message and "EPERM" in message
    assert info.value.remedy and "host process" in info.value.remedy
    assert report.isolation == "none"


def test_report_renders_for_terminal_json_and_notebook():
    report = doctor()
    as_json = json.loads(report.to_json())
    assert as_json["isolation"] in ("full", "rootless", "none")
    assert {"name", "ok", "detail"} <= set(as_json["checks"][0])
    assert "isolation:" in str(report)
    assert "<table>" in report._repr_html_()


def test_probe_is_computed_once_per_process():
    assert doctor() is doctor()
    assert doctor(refresh=True) is doctor()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_real_probe_as_root_reports_full_isolation():
    report = doctor()
    assert report.ok("root")
    assert report.isolation == "full", str(report)
    # This machine mounts cgroup v1 controllers (plus an empty v2 hierarchy).
    assert report.cgroup["driver"] in ("v1", "v2")


def probe_as(command_prefix):
    done = subprocess.run(command_prefix + [sys.executable, "-m", "ctrkernel", "doctor", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges")
def test_unprivileged_user_gets_a_lower_level_truthfully():
    # uid 65534 with no capabilities at all: user namespaces still work on this kernel.
    result = probe_as(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
                       "--inh-caps=-all", "--bounding-set=-all"])
    checks = {c["name"]: c for c in result["checks"]}
    assert not checks["root"]["ok"]
    assert result["isolation"] == ("rootless" if checks["userns"]["ok"] else "none")
    assert result["cgroup"]["driver"] == "none"  # nobody cannot create cgroups here


def test_binder_like_host_reports_none():
    done = binder_sim([sys.executable, "-m", "ctrkernel", "doctor", "--json"])
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    checks = {c["name"]: c for c in result["checks"]}
    assert result["isolation"] == "none"
    assert not checks["userns"]["ok"] and "disabled" in checks["userns"]["detail"]
    assert not checks["cgroups"]["ok"]
    assert not checks["no_new_privs"]["ok"]
    assert checks["pidns"]["remedy"]  # every failed check says what to do


def test_binder_with_user_namespaces_is_rootless():
    done = binder_sim([sys.executable, "-m", "ctrkernel", "doctor", "--json"], userns=True)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["isolation"] == "rootless"
    names = {c["name"]: c for c in result["checks"]}
    assert "inside a user namespace" in names["pidns"]["detail"]

"""The cgroup driver is chosen once from the probe, and never pretends to limit."""
from ctrkernel.host import Check, HostReport
from ctrkernel.runtime.cgroups import cgroup_manager, manager_for


def report_with(driver):
    layout = {"driver": driver, "version": driver, "writable": [], "v1_mounts": {},
              "v2_mount": "/sys/fs/cgroup"}
    return HostReport.from_checks([Check("cgroups", driver != "none", f"driver {driver}", layout)])


def test_read_only_cgroups_give_the_null_manager_with_a_reason():
    manager = manager_for(report_with("none"))
    assert manager.enforces is False and "cgroup" in manager.why_not


def test_v2_gets_the_v2_driver_on_the_probed_mount():
    manager = manager_for(report_with("v2"))
    assert manager.driver == "v2" and manager.enforces is True
    assert (manager.mount, manager.group) == ("/sys/fs/cgroup", "/")


def test_the_manager_is_chosen_once_per_process():
    assert cgroup_manager() is cgroup_manager()

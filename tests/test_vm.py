"""Real virtual machines: a minimal VM booted here (emulation where KVM does not work), the
guest's markers and power-off, run_in_guest, a small density run, and the recorded fallback.
Nothing may be left running: every test checks that no QEMU of ours survives it."""
import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from conftest import requires
from ctrkernel.vm import cpio, initramfs

REPO = Path(__file__).resolve().parent.parent


def our_qemus():
    """QEMU processes started by this test session (their initrd lives in our CTRKERNEL_HOME)."""
    home = os.environ["CTRKERNEL_HOME"]
    found = []
    for p in psutil.process_iter(["name", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if ("qemu-system" in cmd or "virtiofsd" in cmd) and home in cmd:
            found.append(p.pid)
    return found


@pytest.fixture(autouse=True)
def nothing_left_running():
    yield
    assert our_qemus() == [], "a QEMU or virtiofsd process outlived its test"


def test_cpio_newc_archive_lists_what_was_added():
    archive = cpio.CpioWriter()
    archive.add_file("etc/hostname", "vm\n")
    archive.add_symlink("bin/sh", "busybox")
    archive.add_char_device("dev/console", 5, 1)
    data = archive.bytes()
    assert data.startswith(b"070701")
    assert len(data) % 4 == 0
    assert cpio.read_names(data) == ["etc", "etc/hostname", "bin", "bin/sh", "dev", "dev/console"]


def test_cpio_is_readable_by_the_cpio_tool(tmp_path):
    archive = cpio.CpioWriter()
    archive.add_file("a/b.txt", "hello\n")
    listing = subprocess.run(["cpio", "-it"], input=archive.bytes(), capture_output=True)
    assert listing.stdout.decode().split() == ["a", "a/b.txt"]


@requires("vm_kernel")
def test_modules_load_after_their_dependencies():
    from ctrkernel.vm.qemu import find_kernel
    release = initramfs.kernel_release(find_kernel())
    order = [initramfs.module_name(p) for p in initramfs.resolve_modules(release)]
    if "virtio_net" in order:
        assert order.index("virtio") < order.index("virtio_net")
        assert order.index("failover") < order.index("virtio_net")


@requires("qemu", "vm_kernel", "busybox")
def test_minimal_vm_boots_reports_and_powers_off():
    from ctrkernel.vm import boot, qemu
    record = boot("echo hello from the guest; uname -s; exit 3", timeout=180)
    assert record.accelerator in ("kvm", "tcg")
    assert record.powered_off, record.console[-2000:]
    assert record.exit_status == 3
    assert record.output.split() == ["hello", "from", "the", "guest", "Linux"]
    assert 0 < record.seconds_to_ready <= record.seconds_total
    assert initramfs.READY in record.console
    verdict = qemu.accelerator()
    assert verdict["cached"] and verdict["accel"] == record.accelerator and verdict["why"]


@requires("qemu", "vm_kernel", "busybox", "root")
def test_run_in_guest_sees_a_read_only_host_root_and_its_own_cgroup2():
    from ctrkernel.vm import run_in_guest
    result = run_in_guest(
        "test -f /host/etc/os-release && echo host-visible\n"
        "touch /host/ctrkernel-must-not-exist 2>/dev/null || echo read-only\n"
        "mount -t cgroup2 none /sys/fs/cgroup && grep -o memory /sys/fs/cgroup/cgroup.controllers\n"
        "exit 5", timeout=180)
    assert result.exit_code == 5
    assert result.output.split() == ["host-visible", "read-only", "memory"]
    assert not Path("/ctrkernel-must-not-exist").exists()


@requires("qemu", "vm_kernel", "busybox")
def test_density_run_small_enough_for_ci():
    from ctrkernel.vm import density
    result = density.run_density(budget_mb=4096, cap=2, timeout=180)
    vm = result["VM"]
    assert vm["fitted"] == 2 and vm["answering"] == 2 and vm["stopped_by"] == "cap"
    assert all(r["pss"] > 0 for r in vm["rows"])
    from ctrkernel.host import doctor
    if doctor().isolation != "none":  # containers run here: both sides of the experiment
        container = result["container"]
        assert container["fitted"] == 2 and container["answering"] == 2, container
        # the point of the chapter: a container costs far less host memory than a VM
        assert max(r["pss"] for r in container["rows"]) < min(r["pss"] for r in vm["rows"])


def test_fallback_without_qemu_is_visible(tmp_path):
    """With QEMU hidden (an empty PATH), `vm boot` fails clearly and the lessons load data/."""
    env = dict(os.environ, PATH=str(tmp_path), CTRKERNEL_HOME=str(tmp_path / "home"))
    done = subprocess.run([sys.executable, "-m", "ctrkernel", "vm", "boot", "--json"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 125
    assert "qemu" in done.stderr.lower() and "Traceback" not in done.stderr
    code = ("from ctrkernel.lessons import vm\n"
            "d = vm.start_times()\n"
            "print(d['source'])\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("recorded")


@requires("qemu", "vm_kernel", "busybox")
def test_cli_vm_boot_json_reports_accelerator_and_time():
    done = subprocess.run([sys.executable, "-m", "ctrkernel", "vm", "boot", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["accelerator"] in ("kvm", "tcg") and report["accelerator_why"]
    assert report["seconds_to_ready"] > 0 and report["powered_off"] is True
    assert "Linux" in report["output"]


@requires("qemu", "vm_kernel")
def test_accelerator_verdict_falls_back_to_emulation_and_is_cached(tmp_path, monkeypatch):
    """The decision logic with stand-in trial boots (the real ones run in the boot test)."""
    from ctrkernel.vm import qemu
    monkeypatch.setenv("CTRKERNEL_HOME", str(tmp_path))
    monkeypatch.setattr(qemu, "_kvm_opens", lambda: True)
    tried = []

    def hangs(accel, cpu, kernel):
        tried.append(cpu)
        return False, f"-cpu {cpu}: no userspace marker within 15 s"
    verdict = qemu.accelerator(trial=hangs)
    assert verdict["accel"] == "tcg" and tried == ["host", None] and not verdict["cached"]
    assert qemu.accelerator(trial=hangs)["cached"] and len(tried) == 2
    works = lambda accel, cpu, kernel: (True, "userspace in 0.4 s")  # noqa: E731
    assert qemu.accelerator(trial=works, refresh=True)["accel"] == "kvm"

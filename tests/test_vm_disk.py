"""A real VM disk image built from this machine's files (ctrkernel.vm.disk): an ext4 filesystem
holding busybox, the kernel's modules and /boot, read back without mounting, its sizes checked
against qemu-img and the file system, booted under QEMU, and nothing left behind."""
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import requires
from ctrkernel.errors import HostLacks, VMError
from ctrkernel.host import doctor
from ctrkernel.vm import disk, initramfs, qemu

pytestmark = requires("busybox", "vm_kernel", "vm_disk")


@pytest.fixture(scope="module")
def built():
    directory = Path(tempfile.mkdtemp(prefix="ctrkernel-test-disk-"))
    try:
        yield disk.build(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    assert not directory.exists()


def test_the_disk_is_an_ext4_filesystem(built):
    with open(built.path, "rb") as f:
        f.seek(1024 + 56)                       # the ext superblock's magic number
        assert f.read(2) == b"\x53\xef"
    features = disk.filesystem(built.path)["Filesystem features"].split()
    assert {"has_journal", "extent"} <= set(features)   # what makes ext2's layout ext4
    assert disk.filesystem(built.path)["Filesystem volume name"] == disk.LABEL


def test_the_disk_holds_busybox_init_modules_and_boot(built, tmp_path):
    bin_dir = disk.listing(built.path, "/bin")
    busybox = initramfs.find_busybox()
    assert bin_dir["busybox"] == busybox.stat().st_size
    assert {"sh", "mount", "poweroff"} <= set(bin_dir)
    assert "init" in disk.listing(built.path, "/sbin")
    # the very same bytes as the host's busybox, read back out of the filesystem
    copy = disk.extract(built.path, "/bin/busybox", tmp_path / "busybox")
    assert copy.read_bytes() == busybox.read_bytes()
    release = initramfs.kernel_release(qemu.find_kernel())
    assert built.release == release
    assert release in disk.listing(built.path, "/lib/modules")
    modules = disk.listing(built.path, f"/lib/modules/{release}")
    assert {"modules.dep", "kernel"} <= set(modules)
    assert modules["modules.dep"] == (initramfs.modules_dir(release) / "modules.dep").stat().st_size
    assert f"vmlinuz-{release}" in disk.listing(built.path, "/boot")


def test_sizes_are_reported_consistently(built):
    raw = Path(built.path)
    info = disk.info(raw)
    assert info["format"] == "raw"
    assert built.virtual_size == info["virtual-size"] == raw.stat().st_size
    du = int(subprocess.run(["du", "-B1", str(raw)], capture_output=True, text=True,
                            check=True).stdout.split()[0])
    assert built.allocated == raw.stat().st_blocks * 512 == du
    # sparse: the free space is not allocated, but every file's bytes are
    assert built.content <= built.allocated < built.virtual_size
    assert built.content == sum(built.parts.values())
    modules = initramfs.modules_dir(built.release)
    host_modules = sum(os.lstat(os.path.join(r, f)).st_size for r, _, fs in os.walk(modules)
                       for f in fs)
    assert built.parts["kernel modules"] == host_modules
    # the shipped form: compressed qcow2, smaller than what the raw disk allocates
    assert disk.info(built.qcow2_path)["format"] == "qcow2"
    assert built.qcow2_bytes == Path(built.qcow2_path).stat().st_size
    assert 0 < built.qcow2_bytes < built.allocated
    assert not [p for p in raw.parent.iterdir() if p.name.startswith("disk-root-")]


@requires("qemu")
def test_the_disk_boots_to_its_own_init(built):
    before = Path(built.path).read_bytes()[:1 << 20]
    booted = disk.boot(built, timeout=120)
    assert booted.pid1 == "init", booted.console[-2000:]
    assert booted.root == "/dev/vda,ext4"
    assert booted.powered_off
    # the guest's writes went to a throw-away overlay: the measured disk is unchanged
    assert Path(built.path).read_bytes()[:1 << 20] == before
    assert not list(Path(os.environ["CTRKERNEL_HOME"], "vm").glob("disk-boot-*"))


def test_a_file_that_is_not_ext4_is_refused(tmp_path):
    junk = tmp_path / "junk.raw"
    junk.write_bytes(b"\0" * (1 << 20))
    with pytest.raises(VMError, match="Bad magic number"):
        disk.listing(junk, "/bin")


def test_a_path_missing_from_the_disk_is_an_error(built, tmp_path):
    with pytest.raises(VMError, match="not found"):
        disk.listing(built.path, "/no/such/dir")
    with pytest.raises(VMError, match="not found"):
        disk.extract(built.path, "/etc/no-such-file", tmp_path / "x")


def test_without_qemu_img_the_lesson_says_so_and_falls_back(monkeypatch, tmp_path):
    from ctrkernel.lessons import images as L
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))      # qemu-img (in /usr/bin) is not found
    doctor(refresh=True)                         # the probe decides, as for every feature
    try:
        assert ("qemu-img", "qemu-utils") in disk.missing_tools()
        with pytest.raises(HostLacks, match="qemu-utils"):
            disk.require_tools()
        sizes = L.vm_disk_sizes(tmp_path / "vm")
        assert sizes["disk"] is None
        assert "qemu-img" in sizes["why"] and "apt-get install" in sizes["why"]
        assert sizes["kernel"] > 0 and sizes["modules"] > 0
        assert not (tmp_path / "vm" / "disk.raw").exists()
    finally:
        monkeypatch.undo()
        doctor(refresh=True)

"""Booting one virtual machine: launch QEMU, watch the serial console, always clean up.

    with VM(workload="uname -r") as vm:        # builds the initramfs, picks the accelerator
        vm.wait_ready()                          # seconds from launch to the userspace marker
        vm.wait()                                # the workload's exit status; QEMU powers off

Every wait has a timeout, and `stop()` (also on leaving the `with` block, and on any error)
kills QEMU and its helpers and removes the run directory. QEMU also gets PR_SET_PDEATHSIG, so
it dies if the Python process that started it dies.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ctrkernel import _libc, paths
from ctrkernel.errors import HostLacks, VMError
from ctrkernel.vm import initramfs, qemu

PRINTK = re.compile(r"^\[\s*\d+\.\d+\] ")


def _die_with_parent():
    # Note: the signal comes when the *thread* that started QEMU ends, so start VMs from a
    # thread that outlives them (the main thread, as notebooks and tests do).
    _libc.prctl(_libc.PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def share_kind(kernel):
    """How this guest kernel can see the host's root: "9p", "virtiofs" or None."""
    release = initramfs.kernel_release(kernel)
    root = initramfs.modules_dir(release)
    try:
        listed = (root / "modules.dep").read_text() + (root / "modules.builtin").read_text()
    except OSError:
        listed = ""
    if "/9pnet_virtio.ko" in listed and "/9p.ko" in listed:
        return "9p"
    if "/virtiofs.ko" in listed and qemu.virtiofsd_binary() and os.geteuid() == 0:
        return "virtiofs"
    return None


class VM:
    """One QEMU virtual machine running ctrkernel's initramfs.

    workload: a shell script run as root after the readiness marker (None: power off at once;
    a script that never ends, such as a web server, keeps the VM up until `stop()`).
    forwards: {guest_port: host_port} through QEMU user-mode networking, on 127.0.0.1 only.
    initrd: boot this initrd instead of building ctrkernel's (a disk image's own, for one).
    disks: raw disk images to attach (/dev/vda first), guest writes thrown away.
    """

    def __init__(self, workload=None, *, kernel=None, machine=None, accel=None, cpu=None,
                 memory_mb=128, cpus=1, forwards=None, share_host_root=False, files=None,
                 env=None, append=(), initrd=None, disks=()):
        self.kernel = qemu.find_kernel(kernel)
        self.machine = machine or qemu.default_machine()
        if accel is None:
            verdict = qemu.accelerator(self.kernel)
            accel, cpu = verdict["accel"], verdict["cpu"]
        self.accel, self.cpu = accel, cpu
        self.workload, self.memory_mb, self.cpus = workload, memory_mb, cpus
        self.forwards = dict(forwards or {})
        self.share_host_root, self.files, self.append = share_host_root, files, append
        self.initrd, self.disks = initrd, list(disks)
        self.env = dict(env or {})
        self.process = None
        self.helpers = []
        self.lines = []            # (seconds since launch, line) from the serial console
        self.started = None
        self.run_dir = None
        self._changed = threading.Condition()
        self._reader = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self):
        self.run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=paths.subdir("vm")))
        try:
            share = self._start_share() if self.share_host_root else None
            if self.forwards:
                self.env["CTRKERNEL_NET"] = "1"
            initrd = self.initrd or initramfs.build(self.kernel, self.run_dir, env=self.env,
                                                    workload=self.workload, files=self.files)
            self.argv = qemu.command(
                self.kernel, initrd, accel=self.accel, cpu=self.cpu, machine=self.machine,
                memory_mb=self.memory_mb, cpus=self.cpus, append=self.append,
                forwards=[(h, g) for g, h in self.forwards.items()], share=share,
                disks=self.disks)
            self.stderr = open(self.run_dir / "qemu.stderr", "w+")
            self.started = time.monotonic()
            # TMPDIR: where QEMU keeps a disk's snapshot overlay; removed with the run dir
            self.process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                            stdout=subprocess.PIPE, stderr=self.stderr,
                                            env=dict(os.environ, TMPDIR=str(self.run_dir)),
                                            preexec_fn=_die_with_parent)
        except BaseException:
            self.stop()
            raise
        self._reader = threading.Thread(target=self._read_console, daemon=True)
        self._reader.start()
        return self

    def _start_share(self):
        kind = share_kind(self.kernel)
        if kind is None:
            raise HostLacks("sharing the host's root with a guest",
                            "a guest kernel with 9p, or virtiofs with virtiofsd and root",
                            "run as root (virtiofsd), or boot a kernel with 9p modules")
        self.env["CTRKERNEL_HOSTROOT"] = kind
        if kind == "9p":
            return ("9p", "/")
        # virtiofsd exports a read-only bind of / made in its own mount namespace: the host's
        # mount table never sees it, and the guest cannot write to the host even as its root.
        view, sock = self.run_dir / "hostroot", self.run_dir / "virtiofs.sock"
        view.mkdir()
        script = (f'mount --bind / "{view}" && mount -o remount,bind,ro "{view}" && '
                  f'exec "{qemu.virtiofsd_binary()}" --socket-path="{sock}" '
                  f'-o source="{view}" -o cache=none -o log_level=err')
        helper = subprocess.Popen(["unshare", "--mount", "--propagation", "private",
                                   "sh", "-c", script], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  preexec_fn=_die_with_parent)
        self.helpers.append(helper)
        deadline = time.monotonic() + 10
        while not sock.exists():
            if helper.poll() is not None or time.monotonic() > deadline:
                raise VMError("virtiofsd did not start: " + helper.stderr.read().decode()[-500:])
            time.sleep(0.02)
        return ("virtiofs", str(sock))

    def _read_console(self):
        for raw in self.process.stdout:
            line = raw.decode(errors="replace").rstrip("\r\n")
            with self._changed:
                self.lines.append((time.monotonic() - self.started, line))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def _wait_for(self, predicate, timeout, what):
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = predicate()
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                reader_done = self._reader is None or not self._reader.is_alive()
                if left <= 0 or reader_done:
                    break
                self._changed.wait(min(left, 0.5))
        if self.process and self._reader is not None and not self._reader.is_alive():
            try:  # the console closed: QEMU is exiting, let it finish to read its status
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        if self.process and self.process.poll() is None:
            why = f"no {what} within {timeout:.0f} s"
        else:
            why = f"QEMU exited with status {self.process.returncode} before {what}"
        detail = self.qemu_errors()
        self.stop()
        raise VMError(f"{why}{': ' + detail if detail else ''}", console=self.console)

    def marker(self, name):
        """(seconds since launch, {key: value}) of the first console line starting with name."""
        for t, line in self.lines:
            if line.startswith(name):
                return t, dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
        return None

    def wait_marker(self, name, timeout=120, what=None):
        """(seconds since launch, {key: value}) of the console line starting with `name`, once
        it comes; VMError (QEMU stopped) if it does not within `timeout` seconds."""
        return self._wait_for(lambda: self.marker(name), timeout, what or f"{name} marker")

    def wait_ready(self, timeout=120):
        """Seconds from launching QEMU to the guest's userspace marker (CTRKERNEL-READY)."""
        return self.wait_marker(initramfs.READY, timeout, "userspace marker")[0]

    def wait(self, timeout=120):
        """Wait for the workload's exit marker and for QEMU to exit; the workload's status."""
        _, fields = self._wait_for(lambda: self.marker(initramfs.EXIT), timeout,
                                   "exit marker")
        try:
            self.process.wait(timeout=max(5.0, timeout / 4))
        except subprocess.TimeoutExpired:
            pass  # it printed its status; power-off is reported by powered_off
        return int(fields["status"])

    def wait_poweroff(self, timeout=60):
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        return self.powered_off

    @property
    def powered_off(self):
        """True when the guest powered the machine off itself (QEMU exited with status 0)."""
        return self.process is not None and self.process.poll() == 0

    @property
    def pid(self):
        return self.process.pid if self.process else None

    @property
    def console(self):
        return "\n".join(line for _, line in self.lines)

    @property
    def output(self):
        """What the workload printed: console lines between the BEGIN and EXIT markers, kernel
        messages left out."""
        out, inside = [], False
        for _, line in self.lines:
            if line.startswith(initramfs.BEGIN):
                inside = True
            elif line.startswith(initramfs.EXIT):
                break
            elif inside and not PRINTK.match(line):
                out.append(line)
        return "\n".join(out) + ("\n" if out else "")

    def qemu_errors(self):
        try:
            self.stderr.seek(0)
            text = self.stderr.read().strip()
        except (AttributeError, ValueError, OSError):
            return ""
        return " ".join(text.splitlines()[-3:])[-400:]

    def stop(self):
        """Kill QEMU and its helpers (if still running) and remove the run directory."""
        for proc in ([self.process] if self.process else []) + self.helpers:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        if self._reader is not None:
            self._reader.join(timeout=5)
        if self.process and self.process.stdout:
            self.process.stdout.close()
        for helper in self.helpers:
            if helper.stderr:
                helper.stderr.close()
        if getattr(self, "stderr", None):
            self.stderr.close()
        if self.run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def __enter__(self):
        if self.process is None:
            self.start()
        return self

    def __exit__(self, *exc):
        self.stop()


@dataclass
class BootRecord:
    """What one boot measured. Times are seconds, from QEMU's launch as seen by the host."""
    accelerator: str
    machine: str
    kernel: str
    memory_mb: int
    qemu_version: str
    seconds_to_ready: float          # launch -> the guest's userspace marker on the console
    guest_uptime_at_ready: float     # the guest kernel's own clock at that moment
    seconds_total: float             # launch -> QEMU exited after the guest powered off
    exit_status: int = None
    powered_off: bool = False
    output: str = ""
    console: str = field(default="", repr=False)

    def to_dict(self):
        return asdict(self)


def boot(workload=None, *, timeout=120, **options):
    """Boot a minimal VM, run `workload` (a shell script, optional), power off; a BootRecord."""
    with VM(workload or "true", **options) as vm:
        ready = vm.wait_ready(timeout)
        status = vm.wait(timeout)
        vm.wait_poweroff(30)
        total = time.monotonic() - vm.started
        return BootRecord(
            accelerator=vm.accel, machine=vm.machine, kernel=str(vm.kernel),
            memory_mb=vm.memory_mb, qemu_version=qemu.qemu_version(),
            seconds_to_ready=round(ready, 3),
            guest_uptime_at_ready=float(vm.marker(initramfs.READY)[1].get("uptime", "nan")),
            seconds_total=round(total, 3), exit_status=status, powered_off=vm.powered_off,
            output=vm.output, console=vm.console)


def trial_boot(accel, cpu, kernel):
    """One bounded boot to test an accelerator: (reached userspace?, what happened)."""
    vm = VM(None, kernel=kernel, accel=accel, cpu=cpu, memory_mb=128)
    try:
        vm.start()
        seconds = vm.wait_ready(qemu.KVM_TRIAL_TIMEOUT)
        return True, f"-cpu {cpu or 'default'}: userspace in {seconds:.1f} s"
    except VMError as e:
        return False, f"-cpu {cpu or 'default'}: {e}"
    finally:
        vm.stop()


@dataclass
class GuestResult:
    output: str          # what the script printed (stdout and stderr), kernel messages removed
    exit_code: int       # the script's exit status inside the guest
    seconds: float       # launch to power-off, as seen by the host
    accelerator: str = ""
    console: str = field(default="", repr=False)  # the whole serial console, for debugging


def run_in_guest(script, timeout=120, share_host_root=True, memory_mb=512, **options):
    """Run a shell script as root inside a freshly booted VM, and return what it printed.

    The guest boots the host's Linux kernel (ctrkernel.vm.qemu.find_kernel: Debian's cloud
    kernel from /boot, or `kernel=`) with ctrkernel's busybox initramfs: /proc, /sys, /dev,
    /tmp and /run are mounted, busybox provides every command, nothing else is there. The
    guest's cgroups are its own: mount cgroup2 with `mount -t cgroup2 none /sys/fs/cgroup`.

    share_host_root=True: the host's root filesystem (only the / mount itself, not the mounts
    under it) is mounted read-only at /host, over virtiofs (virtiofsd, needs root on the host)
    or 9p where the guest kernel has it. /host/proc, /host/sys, /host/dev and /host/run are the
    guest's own; /host/tmp and /host/root show the host's files with writes kept in the guest's
    memory (an overlay), so host programs, even from a checkout in /tmp, run with
    `chroot /host python3 -c ...` (set CTRKERNEL_HOME to a path under /tmp there).

    The script's stdout and stderr go to the serial console between "CTRKERNEL-BEGIN" and
    "CTRKERNEL-EXIT status=N" marker lines; then the guest powers off. Returns
    GuestResult(output, exit_code, seconds, accelerator, console). Raises VMError (with the
    console attached) if the guest does not finish within `timeout` seconds, and HostLacks if
    QEMU or a kernel is missing. QEMU and its helpers never outlive the call.
    Other options (kernel, machine, accel, cpus, files={path: bytes}) go to `VM`.
    """
    started = time.monotonic()
    with VM(script, memory_mb=memory_mb, share_host_root=share_host_root, **options) as vm:
        vm.wait_ready(timeout)
        status = vm.wait(max(1.0, timeout - (time.monotonic() - started)))
        return GuestResult(vm.output, status, round(time.monotonic() - started, 3), vm.accel,
                           vm.console)

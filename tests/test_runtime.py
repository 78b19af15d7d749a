"""The runtime core, with real containers: isolation, hardening, lifecycle, state, ports.

Every container is removed by its test; the session fixture in conftest.py fails the run if a
mount or cgroup is left, and `no_leftovers` below checks processes and state directories.
"""
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import requires_isolation

pytestmark = requires_isolation("full")

from ctrkernel.errors import CommandNotFound, CommandNotInvocable, Conflict  # noqa: E402


def build_busybox_rootfs(root):
    """A minimal busybox root filesystem (a stand-in while ctrkernel.image is not there)."""
    bindir = Path(root) / "bin"
    bindir.mkdir(parents=True)
    shutil.copy2(shutil.which("busybox"), bindir / "busybox")
    names = subprocess.run([str(bindir / "busybox"), "--list"], capture_output=True,
                           text=True).stdout.split()
    for name in names:
        if name != "busybox":
            os.symlink("busybox", bindir / name)
    for d in ("etc", "tmp", "root", "www"):
        (Path(root) / d).mkdir()
    (Path(root) / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                           "nobody:x:65534:65534:nobody:/:/bin/false\n")
    (Path(root) / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n")


class LocalImage:
    """Duck-typed like ctrkernel.image's images: .id, .config, .layer_dirs()."""
    id = "sha256:local-busybox"
    ref = "busybox"
    config = {"config": {"Cmd": ["sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]}}

    def __init__(self, root):
        self.root = Path(root)

    def layer_dirs(self):
        return [self.root]


@pytest.fixture(scope="session")
def image(tmp_path_factory):
    try:
        from ctrkernel.image import get_image
        return get_image("busybox")
    except ImportError:
        root = tmp_path_factory.mktemp("busybox-rootfs")
        build_busybox_rootfs(root / "rootfs")
        return LocalImage(root / "rootfs")


@pytest.fixture(scope="module", autouse=True)
def no_leftovers():
    from ctrkernel.runtime import state
    yield
    from ctrkernel.runtime import list_containers
    left = list_containers(all=True)
    for c in left:
        c.remove(force=True)
    assert not left, f"containers left behind: {left}"
    assert not list(state.root().iterdir())


@pytest.fixture
def rt():
    import ctrkernel.runtime as runtime
    return runtime


def fresh(rt, image, command, **options):
    c = rt.create(image, command, **options)
    c.start()
    return c


def test_hostname_pid1_and_host_processes_invisible(rt, image):
    c = fresh(rt, image, ["sh", "-c", "hostname; echo $$; ls /proc | grep -c '^[0-9]'"],
              hostname="box")
    assert c.wait()["StatusCode"] == 0
    hostname, pid, visible = c.logs().decode().split()
    assert (hostname, pid) == ("box", "1")
    assert int(visible) <= 3  # sh, ls, grep: nothing from the host
    assert c.isolation["rootfs"] == "overlayfs" and c.isolation["pivot_root"]
    assert set(c.isolation["namespaces"]) >= {"mnt", "pid", "uts", "ipc", "net"}
    c.remove()


def test_the_python_chain_isolates_the_same_way(rt, image, monkeypatch):
    """The chain spawn.py builds in Python (hosts without a C compiler) gives the same result."""
    import ctrkernel.runtime.container as container
    monkeypatch.setattr(container, "NATIVE_CHAIN", False)
    c = fresh(rt, image, ["sh", "-c", "hostname; echo $$; grep -E 'CapBnd|NoNewPrivs' /proc/1/status;"
                          " ls /proc | grep -c '^[0-9]'; exit 7"], hostname="py")
    assert c.wait()["StatusCode"] == 7
    hostname, pid, _, bounding, _, nnp, visible = c.logs().decode().split()
    from ctrkernel.runtime.security import DEFAULT_MASK
    assert (hostname, pid, int(bounding, 16), nnp) == ("py", "1", DEFAULT_MASK, "1")
    assert int(visible) <= 3
    c.remove()
    c = rt.create(image, ["no-such-command"])
    with pytest.raises(CommandNotFound):
        c.start()
    c.remove()


def test_writes_land_in_the_writable_layer_and_diff_reports_them(rt, image):
    layer = Path(image.layer_dirs()[-1])
    c = fresh(rt, image, ["sh", "-c", "echo hi > /tmp/new; echo x >> /etc/passwd; rm /bin/vi;"
                          " mount | grep -c ' / '"])
    assert c.wait()["StatusCode"] == 0
    assert not (layer / "tmp/new").exists() and (layer / "bin/vi").exists()
    assert b"echo x" not in (layer / "etc/passwd").read_bytes()
    assert (c.upper_dir / "tmp/new").read_text() == "hi\n"
    changes = {d["Path"]: "CAD"[d["Kind"]] for d in c.diff()}
    assert changes["/tmp/new"] == "A" and changes["/etc/passwd"] == "C"
    assert changes["/bin/vi"] == "D" and changes["/tmp"] == "C"
    # The container's mounts are in its own namespace only.
    with open("/proc/mounts") as f:
        assert c.id not in f.read()
    c.remove()


def test_capabilities_bounded_and_no_new_privs(rt, image):
    c = fresh(rt, image, ["sh", "-c", "grep -E 'CapBnd|CapEff|CapAmb|NoNewPrivs' /proc/1/status"])
    c.wait()
    fields = dict(line.split(":\t") for line in c.logs().decode().splitlines())
    from ctrkernel.runtime.security import DEFAULT_MASK, names
    assert int(fields["CapBnd"], 16) == DEFAULT_MASK == int(fields["CapEff"], 16)
    assert "SYS_ADMIN" not in names(int(fields["CapBnd"], 16))
    assert int(fields["CapAmb"], 16) == 0 and fields["NoNewPrivs"] == "1"
    c.remove()


def test_exit_codes_missing_and_not_executable_commands(rt, image):
    c = fresh(rt, image, ["sh", "-c", "exit 42"])
    assert c.wait()["StatusCode"] == 42
    c.remove()
    c = rt.create(image, ["no-such-command"])
    with pytest.raises(CommandNotFound, match="no-such-command"):
        c.start()
    assert c.wait()["StatusCode"] == 127 and c.status == "exited"
    c.remove()
    c = rt.create(image, ["/etc/passwd"])
    with pytest.raises(CommandNotInvocable):
        c.start()
    assert c.wait()["StatusCode"] == 126
    c.remove()


def test_kill_and_stop_pass_signals_through(rt, image):
    c = fresh(rt, image, ["sleep", "60"])
    assert c.status == "running" and c.pid
    with pytest.raises(Conflict):
        c.remove()
    c.kill()
    assert c.wait() == {"StatusCode": 137, "Error": None, "OOMKilled": False}
    c.remove()
    # PID 1 with a TERM handler exits on stop; one without is killed after the timeout.
    c = fresh(rt, image, ["sh", "-c", "trap 'exit 143' TERM; while :; do sleep 0.1; done"])
    time.sleep(0.2)  # let the shell install its trap (not a timing assertion)
    c.stop(timeout=20)
    assert c.wait()["StatusCode"] == 143
    c.remove()
    c = fresh(rt, image, ["sleep", "60"])
    c.stop(timeout=0.5)
    assert c.wait()["StatusCode"] == 137
    c.remove()


def test_logs_keep_stdout_and_stderr_apart_and_follow(rt, image):
    c = fresh(rt, image, ["sh", "-c", "echo out; echo err >&2; sleep 0.3; echo late"])
    chunks = b"".join(c.logs(stdout=True, stderr=False, follow=True))
    assert chunks == b"out\nlate\n"
    assert c.logs(stdout=False, stderr=True) == b"err\n"
    c.remove()


def test_exec_and_top(rt, image):
    c = fresh(rt, image, ["sleep", "60"], hostname="inside")
    result = c.exec_run(["sh", "-c", "hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo $$"])
    assert result.exit_code == 0
    hostname, *cmd, own_pid = result.output.decode().split()
    assert hostname == "inside" and cmd == ["sleep", "60"] and own_pid != "1"
    assert c.exec_run(["sh", "-c", "exit 5"]).exit_code == 5
    assert c.exec_run(["nope"]).exit_code == 127
    commands = [row[-1] for row in c.top()["Processes"]]
    assert commands == ["sleep 60"]
    assert int(c.top()["Processes"][0][1]) == c.pid
    c.remove(force=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_published_port_answers_on_localhost(rt, image):
    port = free_port()
    c = fresh(rt, image, ["sh", "-c", "mkdir -p /www; echo hello > /www/index.html; exec httpd -f -p 80 -h /www"],
              ports={"80/tcp": port})
    body = b""
    for _ in range(100):  # until httpd listens (bounded)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
                body = b"".join(iter(lambda: s.recv(65536), b""))
            if body:
                break
        except OSError:
            pass
        time.sleep(0.05)
    assert body.startswith(b"HTTP/1.") and body.endswith(b"hello\n")
    # Nothing listens on the container's port on the host: only the published one.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", 80), timeout=1).close()
    c.remove(force=True)


def test_run_returns_output_and_second_process_sees_state(rt, image):
    assert rt.run(image, ["echo", "hi"], remove=True) == b"hi\n"
    c = rt.run(image, ["sleep", "60"], detach=True, name="seen-elsewhere")
    listing = subprocess.run([sys.executable, "-m", "ctrkernel", "ps"], capture_output=True,
                             text=True, check=True).stdout
    assert "seen-elsewhere" in listing and c.short_id in listing
    assert rt.get("seen-elsewhere").pid == c.pid
    c.remove(force=True)


CONTROLLER = """
from pathlib import Path
from ctrkernel.runtime import run
class LocalImage:
    id, ref = "sha256:local-busybox", "busybox"
    config = {{"config": {{"Cmd": ["sh"]}}}}
    def __init__(self, root):
        self.root = Path(root)
    def layer_dirs(self):
        return [self.root]
image = {image}
print("started", flush=True)
run(image, ["sleep", "600"], name="orphan")
"""


def image_expr(image):
    if isinstance(image, LocalImage):
        return f"LocalImage({str(image.root)!r})"
    return "'busybox'"


def test_prune_after_the_controller_is_killed(rt, image):
    code = CONTROLLER.format(image=image_expr(image))
    controller = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert controller.stdout.readline() == b"started\n"
    for _ in range(200):  # until the container runs (bounded)
        running = [c for c in rt.list_containers() if c.name == "orphan"]
        if running and running[0].pid:
            break
        time.sleep(0.05)
    orphan = running[0]
    init_pid = orphan.pid
    controller.kill()
    controller.wait()
    assert orphan.status == "running"  # the container outlived its controller
    assert orphan.id in rt.prune()["ContainersDeleted"]
    assert not os.path.exists(f"/proc/{init_pid}") or _is_zombie(init_pid)
    assert all(c.name != "orphan" for c in rt.list_containers(all=True))


def _is_zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in "ZX"
    except FileNotFoundError:
        return True


def test_cli_exit_conventions(image):
    if isinstance(image, LocalImage):
        pytest.skip("the CLI names images: needs ctrkernel.image")
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "ctrkernel", *args], capture_output=True,
                              text=True)
    done = cli("run", "--rm", "--hostname", "h", "busybox", "sh", "-c", "hostname; echo e >&2; exit 3")
    assert (done.returncode, done.stdout, done.stderr) == (3, "h\n", "e\n")
    done = cli("run", "--rm", "busybox", "no-such-command")
    assert done.returncode == 127 and "no-such-command" in done.stderr
    assert cli("ps", "-a", "-q").stdout == ""


INTERRUPTED = CONTROLLER.replace('run(image, ["sleep", "600"], name="orphan")', '''
import signal, threading
threading.Timer(1.0, lambda: signal.raise_signal(signal.SIGINT)).start()
try:
    run(image, ["sleep", "600"], name="interrupted")
except KeyboardInterrupt:
    print("interrupted", flush=True)
''')


def test_keyboard_interrupt_stops_and_removes_the_foreground_container(rt, image):
    done = subprocess.run([sys.executable, "-c", INTERRUPTED.format(image=image_expr(image))],
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["started", "interrupted"], done.stderr
    assert all(c.name != "interrupted" for c in rt.list_containers(all=True))


# As an unprivileged user (uid 1000): with user namespaces (rootless), and without (Binder).
UNPRIVILEGED = r'''
import json, os, shutil, subprocess
from pathlib import Path
from ctrkernel.runtime import create

class LocalImage:
    id, ref = "sha256:local-busybox", "busybox"
    config = {"config": {"Cmd": ["sh"], "Env": ["PATH=/bin"]}}
    def __init__(self, root):
        self.root = Path(root)
    def layer_dirs(self):
        return [self.root]

try:
    from ctrkernel.image import get_image
    image = get_image("busybox")
except ImportError:
    root = Path(os.environ["CTRKERNEL_HOME"]) / "rootfs"
    (root / "bin").mkdir(parents=True)
    shutil.copy2(shutil.which("busybox"), root / "bin/busybox")
    for name in subprocess.run([str(root / "bin/busybox"), "--list"], capture_output=True,
                               text=True).stdout.split():
        if name != "busybox":
            os.symlink("busybox", root / "bin" / name)
    (root / "tmp").mkdir()
    image = LocalImage(root)
layer = Path(image.layer_dirs()[-1])
c = create(image, ["sh", "-c", "hostname; echo $$; id -u; echo hi > /tmp/f; cat /tmp/f"],
           hostname="rl")
c.start()
result = {"code": c.wait()["StatusCode"], "logs": c.logs().decode(), "isolation": c.isolation,
          "layer_untouched": not (layer / "tmp/f").exists()}
c.remove()
c = create(image, ["sleep", "60"])
c.start()
code, output = c.exec_run(["sh", "-c", "echo inside; exit 3"])
result["exec"] = [code, output.decode()]
c.kill()
result["killed"] = c.wait()["StatusCode"]
c.remove()
import psutil
result["left"] = [p.pid for p in psutil.process_iter(["cmdline", "uids"])
                  if p.info["cmdline"] == ["sleep", "60"] and p.info["uids"].real == os.getuid()]
print(json.dumps(result))
'''


def run_unprivileged(home, userns):
    from conftest import binder_sim
    done = binder_sim([sys.executable, "-c", UNPRIVILEGED], userns=userns,
                      env={"CTRKERNEL_HOME": str(home)}, cwd="/")
    assert done.returncode == 0, done.stderr
    import json
    result = json.loads(done.stdout.splitlines()[-1])
    assert not (home / "containers").exists() or not list((home / "containers").iterdir())
    return result


def test_rootless_container_for_real(unprivileged_home):
    result = run_unprivileged(unprivileged_home, userns=True)
    assert result["isolation"]["level"] == "rootless"
    assert "user" in result["isolation"]["namespaces"]
    hostname, pid, uid, written = result["logs"].split()
    assert (hostname, pid, uid, written) == ("rl", "1", "0", "hi")
    assert result["code"] == 0 and result["layer_untouched"]
    assert result["exec"] == [3, "inside\n"] and result["killed"] == 137
    assert result["left"] == []


def test_no_namespaces_runs_under_proot_and_says_so(unprivileged_home):
    if not shutil.which("proot"):
        pytest.skip("proot is not installed")
    result = run_unprivileged(unprivileged_home, userns=False)
    iso = result["isolation"]
    assert iso["level"] == "none" and iso["namespaces"] == [] and iso["rootfs"] == "proot-copy"
    assert any("no namespaces" in note for note in iso["notes"])
    hostname, pid, uid, written = result["logs"].split()
    assert hostname != "rl" and pid != "1" and written == "hi"  # nothing isolated: honest
    assert result["code"] == 0 and result["layer_untouched"]
    assert result["exec"] == [3, "inside\n"] and result["killed"] == 137
    assert result["left"] == []


def test_cli_verbs_on_a_running_container(rt, image):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "ctrkernel", *args], capture_output=True,
                              text=True, timeout=60)
    c = rt.create(image, ["sh", "-c", "echo out; echo err >&2; touch /tmp/made; exec sleep 60"],
                  name="cli-target")
    c.start()
    assert cli("ps", "-q").stdout.split() == [c.short_id]
    for _ in range(100):  # until the shell has run (bounded)
        if (c.upper_dir / "tmp/made").exists():
            break
        time.sleep(0.05)
    logs = cli("logs", "cli-target")
    assert (logs.stdout, logs.stderr) == ("out\n", "err\n")
    done = cli("exec", "cli-target", "sh", "-c", "hostname; exit 4")
    assert (done.returncode, done.stdout) == (4, c.short_id + "\n")
    assert cli("exec", "cli-target", "no-such-command").returncode == 127
    assert "sleep 60" in cli("top", "cli-target").stdout
    assert "A /tmp/made" in cli("diff", "cli-target").stdout.splitlines()
    assert cli("kill", "-s", "KILL", "cli-target").returncode == 0
    assert cli("wait", "cli-target").stdout == "137\n"
    assert "Exited (137)" in cli("ps", "-a").stdout
    assert cli("rm", "cli-target").returncode == 0
    assert cli("rm", "cli-target").returncode == 1  # no such container, as Docker


@pytest.mark.parametrize("kind", ["fuse-overlayfs", "copy"])
def test_fallback_root_filesystems_keep_the_image_intact(rt, image, kind, monkeypatch):
    """Where the kernel refuses overlayfs: fuse-overlayfs, else a copy (and each says so)."""
    if kind == "fuse-overlayfs" and not shutil.which("fuse-overlayfs"):
        pytest.skip("fuse-overlayfs is not installed")
    import ctrkernel.runtime.container as container
    monkeypatch.setattr(container.rootfs, "choose_kind", lambda report, rootless: kind)
    layer = Path(image.layer_dirs()[-1])
    c = fresh(rt, image, ["sh", "-c", "echo hi > /tmp/fallback; rm /bin/vi; cat /tmp/fallback"])
    assert c.wait()["StatusCode"] == 0 and c.logs() == b"hi\n"
    assert c.isolation["rootfs"] == kind
    assert not (layer / "tmp/fallback").exists() and (layer / "bin/vi").exists()
    if kind == "copy":
        assert any("copy" in note for note in c.isolation["notes"])
    # A copy has no upper directory: its diff compares the copy with the image instead.
    changes = {d["Path"]: "CAD"[d["Kind"]] for d in c.diff()}
    assert changes["/tmp/fallback"] == "A" and changes["/bin/vi"] == "D"
    c.remove()


def test_network_none_is_loopback_only_and_host_shares_the_hosts(rt, image):
    def interfaces(text):
        return sorted(line.split(":")[0].strip() for line in text.splitlines()[2:])
    with open("/proc/net/dev") as f:
        host = interfaces(f.read())
    for network, expected in (("none", ["lo"]), ("host", host)):
        c = fresh(rt, image, ["cat", "/proc/net/dev"], network=network)
        c.wait()
        assert interfaces(c.logs().decode()) == expected
        assert ("net" in c.isolation["namespaces"]) == (network == "none")
        c.remove()


def test_published_port_from_a_fresh_script_with_low_fds(image):
    # A short script's descriptors are 3, 4, 5...: the shim's own fd slots. Starting a container
    # with a published port from there once hung (a listener overwritten by a pipe).
    port = free_port()
    script = f"""
import time, urllib.request
from ctrkernel.runtime import run
c = run("busybox", ["sh", "-c", "mkdir -p /w; echo low-fds > /w/i; exec httpd -f -p 80 -h /w"],
        detach=True, ports={{"80/tcp": {port}}})
try:
    for _ in range(100):
        try:
            print(urllib.request.urlopen("http://127.0.0.1:{port}/i", timeout=2).read().decode())
            break
        except OSError:
            time.sleep(0.05)
finally:
    c.remove(force=True)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "low-fds"

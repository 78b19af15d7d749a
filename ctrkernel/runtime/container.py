"""Containers: create, start, wait, logs, stop, kill, remove, exec, top, diff.

A `Container` is a handle on a state directory (see state.py), so any number of processes can
hold handles on the same container; nothing lives only in memory. The object layer follows
docker-py's `Container` model (attrs, id, short_id, name, status, reload()).
"""
import os
import select
import shutil
import signal as signals
import time
from collections import namedtuple

import psutil

from ctrkernel.errors import (Conflict, ContainerNotFound, CtrkernelError, HostLacks,
                              InvalidArgument)
from ctrkernel.runtime import diff as diffs
from ctrkernel.runtime import ports as portlib
from ctrkernel.runtime import rootfs, shim, spawn, state
from ctrkernel.runtime.execute import exec_in

ExecResult = namedtuple("ExecResult", "exit_code output")
# The C shim builds the process chain when it could be compiled; spawn.launch is the same
# chain in Python, used without a compiler (and by the tests, which switch this off).
NATIVE_CHAIN = True
LIVE = ("running", "paused")  # states in which the container's processes exist
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_NAME_WORDS = (("brave", "calm", "eager", "fond", "keen", "lucid", "merry", "noble", "quiet",
                "swift", "tidy", "witty"),
               ("curie", "dijkstra", "hopper", "knuth", "lovelace", "noether", "ritchie",
                "shannon", "thompson", "torvalds", "turing", "wirth"))


# ---------------------------------------------------------------------------- images

def _resolve_image(image):
    """An image reference (via ctrkernel.image) or an object with .config and .layer_dirs()."""
    if hasattr(image, "layer_dirs"):
        return image
    try:
        from ctrkernel.image import get_image
    except ImportError:
        raise CtrkernelError("the image store (ctrkernel.image) is not installed") from None
    return get_image(image)


def _env_list_to_dict(items):
    env = {}
    for item in items or []:
        key, _, value = item.partition("=")
        env[key] = value
    return env


def _cgroups():
    """The cgroup manager, or None where the cgroup module is not available."""
    try:
        from ctrkernel.runtime.cgroups import cgroup_manager
    except ImportError:
        return None
    return cgroup_manager()


# ---------------------------------------------------------------------------- create

def create(image, command=None, name=None, env=None, environment=None, workdir=None,
           working_dir=None, user=None, hostname=None, network="none", network_mode=None,
           ports=None, resources=None, entrypoint=None, auto_remove=False, **unknown):
    """Create a container (not started). Arguments follow docker-py's `containers.create`."""
    from ctrkernel.host import doctor
    if unknown:
        raise InvalidArgument(f"unsupported option(s): {', '.join(sorted(unknown))}")
    _reap_orphans()
    img = _resolve_image(image)
    cfg = (img.config or {}).get("config", {}) or {}
    env = dict(_env_list_to_dict(cfg.get("Env")), **_as_env_dict(environment or env))
    env.setdefault("PATH", DEFAULT_PATH)
    if isinstance(command, str):
        command = ["/bin/sh", "-c", command]
    entry = list(entrypoint if entrypoint is not None else (cfg.get("Entrypoint") or []))
    if isinstance(entrypoint, str):
        entry = [entrypoint]
    argv = entry + list(command if command else ([] if entrypoint is not None and not command
                                                 else cfg.get("Cmd") or []))
    if not argv:
        raise InvalidArgument("no command specified (and the image has no Cmd or Entrypoint)")
    network = network_mode or network or "none"
    if network == "default" or network == "bridge":
        network = "none"  # no bridge here: loopback only, ports are relayed by the shim
    if network not in ("none", "host"):
        raise InvalidArgument(f"network {network!r}: only 'none' and 'host' exist here")
    pairs = portlib.normalize(ports)
    ports_discarded = bool(pairs) and network == "host"
    if ports_discarded:
        pairs = []  # as Docker: published ports are discarded in host network mode

    container_id = state.new_id()
    names = {_config(i).get("Name") for i in state.all_ids()}
    if name is None:
        name = _random_name(names)
    elif name in names:
        raise Conflict(f'the container name "{name}" is already in use')
    elif not name.replace("_", "").replace("-", "").replace(".", "").isalnum():
        raise InvalidArgument(f"invalid container name {name!r}")

    report = doctor()
    level = report.isolation
    if level == "none":
        report.require("proot", "running a container without namespaces")
    rootless = level == "rootless"
    namespaces = []
    if level != "none":
        namespaces = ["mnt", "pid", "uts", "ipc"] + (["net"] if network != "host" else [])
        namespaces += ["user"] if rootless else []
        namespaces += ["cgroup"] if report.ok("cgroupns") else []
    if level == "none" and any(inside != outside for inside, outside in pairs):
        raise HostLacks("publishing a port on another host port", "netns (no network "
                        "namespace: the container's ports are the host's own)",
                        "Publish the port on the same number (-p 8080:8080).")
    kind = "proot-copy" if level == "none" else rootfs.choose_kind(report, rootless)
    shim_path = shim.path()
    if pairs and shim_path is None:
        report.require("cc", "publishing ports")

    directory = state.container_dir(container_id)
    directory.mkdir(parents=True)
    layers = [str(p) for p in img.layer_dirs()]
    for sub in ("upper", "work", "rootfs"):
        (directory / sub).mkdir()
    for log in ("stdout.log", "stderr.log"):
        (directory / log).touch(0o640)
    try:
        if kind in ("copy", "proot-copy"):
            rootfs.copy_layers(layers, directory / "rootfs")
        cgroup, notes = None, []
        mgr = _cgroups()
        if mgr is not None:
            from ctrkernel.runtime.cgroups import Resources
            cgroup = mgr.create(container_id, resources or Resources())
            notes += list(getattr(cgroup, "notes", []))
            if not mgr.enforces and not any(mgr.why_not in n for n in notes):
                notes.append(f"cgroup limits not enforced: {mgr.why_not}")
        elif resources is not None:
            raise CtrkernelError("resource limits need ctrkernel.runtime.cgroups, not installed")
        else:
            notes.append("no cgroup: the cgroup module is not installed")
        if kind == "copy":
            notes.append("root filesystem is a copy of the image layers (no overlayfs here)")
        if level == "none" and hostname:
            notes.append(f"hostname {hostname!r} not set: without a UTS namespace the "
                         "container has the host's")
        if level == "none":
            notes += ["no namespaces: host processes, network, hostname and IPC are shared",
                      "the root directory is faked by proot (ptrace), not pivot_root",
                      "capabilities are the user's own; no_new_privs is set"]
        if rootless:
            notes.append("rootless: uid 0 inside is your own uid outside; other users are not "
                         "mapped")
        if pairs:
            notes.append("published ports listen on 127.0.0.1 only")
        if ports_discarded:
            # Docker's own words (the CLI prints notes as "WARNING: ..."): the container's
            # ports already are the host's, so there is nothing to publish.
            notes.append("Published ports are discarded when using host network mode")
        if shim_path is None:
            notes.append("no C compiler: a Python process waits for this container (~10 MiB)")
        isolation = {
            "level": level, "namespaces": namespaces, "rootfs": kind,
            "pivot_root": level != "none",
            "cgroup": getattr(mgr, "driver", "none") if mgr else "none",
            "cgroup_enforced": bool(mgr and mgr.enforces),
            "capabilities": "docker-default" if level != "none" else "unchanged",
            "no_new_privs": True, "supervisor": "c-shim" if shim_path else "python-waiter",
            "notes": notes,
        }
        config = {
            "Id": container_id, "Name": name, "Created": time.time(),
            "Image": image if isinstance(image, str) else getattr(img, "ref", str(img)),
            "ImageID": getattr(img, "id", None), "Layers": layers,
            "Cmd": argv, "Env": [f"{k}={v}" for k, v in env.items()],
            "WorkingDir": working_dir or workdir or cfg.get("WorkingDir") or "/",
            "User": user if user is not None else (cfg.get("User") or "0"),
            "Hostname": hostname or container_id[:12], "Network": network,
            "Ports": [[inside, outside] for inside, outside in pairs],
            "AutoRemove": bool(auto_remove),
            "Resources": resources.to_dict() if resources is not None else None,
            "Isolation": isolation, "Shim": str(shim_path) if shim_path else None,
        }
        state.write_json(directory, "config.json", config)
    except BaseException:
        _destroy_cgroup(container_id)
        state.remove_dir(directory)
        raise
    return Container(container_id)


def _as_env_dict(env):
    if not env:
        return {}
    if isinstance(env, dict):
        return {str(k): str(v) for k, v in env.items()}
    return _env_list_to_dict(env)


def _random_name(taken):
    import secrets
    for _ in range(100):
        name = f"{secrets.choice(_NAME_WORDS[0])}_{secrets.choice(_NAME_WORDS[1])}"
        if name not in taken:
            return name
    return f"container_{secrets.token_hex(4)}"


def _config(container_id):
    return state.read_json(state.container_dir(container_id), "config.json") or {}


def _destroy_cgroup(container_id):
    mgr = _cgroups()
    if mgr is None:
        return
    try:
        mgr.open(container_id).destroy()
    except CtrkernelError:
        pass


# ---------------------------------------------------------------------------- the handle

class Container:
    def __init__(self, container_id):
        self.id = container_id
        self.dir = state.container_dir(container_id)
        self.reload()

    def reload(self):
        attrs = state.read_json(self.dir, "config.json")
        if attrs is None:
            raise ContainerNotFound(self.id)
        self.attrs = attrs
        self._run = state.read_json(self.dir, "run.json") or {}
        self._exit = state.read_json(self.dir, "status.json")

    # -- what it is --------------------------------------------------------------------
    short_id = property(lambda self: self.id[:12])
    name = property(lambda self: self.attrs["Name"])
    image = property(lambda self: self.attrs["Image"])
    command = property(lambda self: self.attrs["Cmd"])
    isolation = property(lambda self: self.attrs["Isolation"])
    upper_dir = property(lambda self: self.dir / "upper")

    @property
    def pid(self):
        """PID 1 of the container, as the host sees it (None unless running)."""
        return self._run.get("init", {}).get("pid") if self.status in LIVE else None

    @property
    def cgroup(self):
        mgr = _cgroups()
        if mgr is None:
            return None
        try:
            return mgr.open(self.id)
        except CtrkernelError:
            return None

    @property
    def status(self):
        self._exit = self._exit or state.read_json(self.dir, "status.json")
        if self._exit is not None:
            return "exited"
        if not self._run:
            return "created"
        if self._run.get("starting"):  # another process is starting it right now, or crashed
            return "created" if state.alive(self._run.get("controller")) else "dead"
        if state.alive(self._run.get("shim")) or state.alive(self._run.get("init")):
            return "paused" if self._run.get("Paused") else "running"
        self._exit = state.read_json(self.dir, "status.json")  # it may just have finished
        return "exited" if self._exit else "dead"

    @property
    def state(self):
        """Docker's `State` object (what `docker inspect` shows), for front ends to translate."""
        status = self.status
        exit_info = self._exit or {}
        return {"Status": status, "Running": status in LIVE, "Paused": status == "paused",
                "Dead": status == "dead",
                "Pid": self.pid or 0, "ExitCode": exit_info.get("ExitCode", 0),
                "OOMKilled": bool(exit_info.get("OOMKilled", False)),
                "Error": exit_info.get("Error", ""),
                "StartedAt": self._run.get("StartedAt"), "FinishedAt": exit_info.get("FinishedAt")}

    @property
    def exit_code(self):
        return self._exit["ExitCode"] if self.status == "exited" else None

    def __repr__(self):
        return f"<Container {self.short_id} {self.name} {self.status}>"

    def _plan(self):
        a = self.attrs
        env = _env_list_to_dict(a["Env"])
        level = a["Isolation"]["level"]
        plan = {
            "mode": "proot" if level == "none" else "namespaces",
            "namespaces": a["Isolation"]["namespaces"], "userns": level == "rootless",
            "rootfs_kind": a["Isolation"]["rootfs"], "layers": a["Layers"],
            "rootfs": str(self.dir / "rootfs"), "upper": str(self.dir / "upper"),
            "work": str(self.dir / "work"), "hostname": a["Hostname"], "env": env,
            "argv": a["Cmd"], "workdir": a["WorkingDir"], "user": a["User"],
            "stdout_path": str(self.dir / "stdout.log"),
            "stderr_path": str(self.dir / "stderr.log"),
            "status_path": str(self.dir / "status.json"), "shim": a["Shim"],
            "port_targets": [inside for inside, _ in a["Ports"]],
        }
        if level == "none":
            plan["proot"] = shutil.which("proot")
        return plan

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, _attached=False):
        """Start the container's command. Raises CommandNotFound (exit 127) and friends."""
        if self.status != "created":
            raise Conflict(f"container {self.name} has already been started ({self.status})")
        listeners = portlib.listen([tuple(p) for p in self.attrs["Ports"]])
        cgroup = self.cgroup
        owner = state.identity(os.getpid()) if _attached else None
        # Written before the chain starts, so a crash in between leaves a record to prune.
        starting = {"starting": True, "owner": owner,
                    "controller": state.identity(os.getpid())}
        state.write_json(self.dir, "run.json", starting)

        def record_pids(pids):
            # The chain's pids, recorded the moment they are known (still "starting": the
            # command has not been exec'd yet). A controller killed from here on (Ctrl-C,
            # kill -9) leaves a record that `prune` uses to kill the shim and init.
            state.write_json(self.dir, "run.json",
                             dict(starting, shim=state.identity(pids["shim"]),
                                  init=state.identity(pids["init"])))

        try:
            plan = self._plan()
            if NATIVE_CHAIN and plan["shim"] and plan["mode"] == "namespaces":
                pids = spawn.launch_native(plan, cgroup, listeners, str(self.dir / "plan"),
                                           on_pids=record_pids)
            else:
                pids = spawn.launch(plan, cgroup, listeners, on_pids=record_pids)
        except CtrkernelError as e:
            if not state.read_json(self.dir, "status.json"):
                # The chain died before the shim could record anything.
                state.write_json(self.dir, "status.json",
                                 {"ExitCode": e.exit_status, "Signal": 0,
                                  "FinishedAt": time.time(), "Error": str(e)})
            else:
                self._wait_status(timeout=5)
            self._append_stderr(str(e))
            self.reload()
            raise
        finally:
            for s in listeners:
                s.close()
        record = {"shim": state.identity(pids["shim"]), "init": state.identity(pids["init"]),
                  "owner": owner, "StartedAt": time.time()}
        if not record["init"]["start"] and not state.read_json(self.dir, "status.json"):
            self._wait_status(timeout=5)  # finished already; the shim writes its status
        state.write_json(self.dir, "run.json", record)
        self.reload()
        return self

    def _append_stderr(self, message):
        with open(self.dir / "stderr.log", "a") as f:
            f.write(message.rstrip("\n") + "\n")

    def _wait_status(self, timeout=None):
        """Poll the shim's pidfd until it exits (or timeout); True if it has."""
        ident = self._run.get("shim") or (state.read_json(self.dir, "run.json") or {}).get("shim")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if state.read_json(self.dir, "status.json") is not None:
                return True
            if ident and state.alive(ident):
                try:
                    fd = os.pidfd_open(ident["pid"])
                except (ProcessLookupError, OSError):
                    fd = None
                if fd is not None:
                    try:
                        if state.alive(ident):  # not a reused pid: the pidfd is our shim's
                            left = 0.5 if deadline is None else max(0, min(0.5, deadline - time.monotonic()))
                            select.select([fd], [], [], left)
                    finally:
                        os.close(fd)
            elif self.status in ("dead", "exited"):
                return self.status == "exited"
            else:
                time.sleep(0.01)
            if deadline is not None and time.monotonic() >= deadline:
                return state.read_json(self.dir, "status.json") is not None

    def wait(self, timeout=None, condition="not-running"):
        """Block until the container stops; {"StatusCode": n, "Error": None, "OOMKilled": b}."""
        if self.status == "created" and condition == "not-running":
            return self._wait_result()
        if not self._wait_status(timeout):
            raise TimeoutError(f"container {self.name} still running after {timeout}s")
        self.reload()
        return self._wait_result()

    def _wait_result(self):
        status = self._exit or {}
        code = status.get("ExitCode", 0 if self.status == "created" else -1)
        oom = bool(status.get("OOMKilled", False))
        if not oom and self.status == "exited":
            cg = self.cgroup
            try:
                oom = bool(cg.oom_killed()) if cg is not None else False
            except (CtrkernelError, OSError, NotImplementedError):
                oom = False
            if oom:
                state.write_json(self.dir, "status.json", dict(status, OOMKilled=True))
        return {"StatusCode": code, "Error": status.get("Error"), "OOMKilled": oom}

    def kill(self, signal=None):
        """Send a signal (name or number; default SIGKILL) to the container's PID 1."""
        number = _signal_number(signal or "SIGKILL")
        if self.status not in LIVE:
            raise Conflict(f"container {self.name} is not running")
        ident = self._run.get("init")
        try:
            fd = os.pidfd_open(ident["pid"])
        except (ProcessLookupError, OSError):
            return
        try:
            if state.alive(ident):  # checked after opening: the pidfd pins this very process
                if not self.attrs["Isolation"]["namespaces"]:
                    os.killpg(ident["pid"], number)  # no PID namespace: the whole group
                else:
                    signals.pidfd_send_signal(fd, number)
        except ProcessLookupError:
            pass
        finally:
            os.close(fd)
        if number == signals.SIGKILL and self._run.get("Paused"):
            self._thaw()  # a frozen process cannot die; other signals wait for unpause

    def stop(self, timeout=10):
        """SIGTERM, then SIGKILL after `timeout` seconds (PID 1 ignores signals it has no
        handler for, as in Docker). A paused container is thawed after the SIGTERM so that it
        can act on it."""
        if self.status not in LIVE:
            return
        self.kill("SIGTERM")
        if self._run.get("Paused"):
            self._thaw()
        if not self._wait_status(timeout):
            self.kill("SIGKILL")
            self._wait_status(10)
        self.reload()

    def remove(self, force=False, v=False):
        """Delete the container, its writable layer, logs and cgroup."""
        status = self.status
        if status in LIVE:
            if not force:
                what = "paused: unpause and stop" if status == "paused" else "running: stop"
                raise Conflict(f"container {self.name} is {what} it first, or force")
            self.kill("SIGKILL")
            self._wait_status(10)
        elif status == "dead" or (status == "created" and self._run):
            _kill_leftovers(self._run)
        _destroy_cgroup(self.id)
        _remove_proot_scratch(self._run)
        state.remove_dir(self.dir)

    # -- pause and limits ----------------------------------------------------------------
    def _own_cgroup(self, what):
        cg = self.cgroup
        if cg is None:
            raise HostLacks(what, "a cgroup for this container (the cgroup module is missing)",
                            "reinstall ctrkernel")
        return cg

    def _set_run(self, **fields):
        record = state.read_json(self.dir, "run.json") or {}
        record.update(fields)
        state.write_json(self.dir, "run.json", record)
        self.reload()

    def pause(self):
        """Freeze every process of the container (`docker pause`): with the cgroup freezer,
        which the processes cannot notice, or SIGSTOP where no cgroup of ours exists (see
        the cgroup driver's notes: a process can see it was stopped)."""
        status = self.status
        if status == "paused":
            raise Conflict(f"container {self.name} is already paused")
        if status != "running":
            raise Conflict(f"container {self.name} is not running")
        self._own_cgroup("pausing a container").freeze()
        self._set_run(Paused=True)

    def unpause(self):
        if self.status != "paused":
            raise Conflict(f"container {self.name} is not paused")
        self._thaw()

    def _thaw(self):
        self._own_cgroup("unpausing a container").thaw()
        self._set_run(Paused=False)

    def update(self, resources=None, **docker_kwargs):
        """Change the limits of a container (`docker update`), running or not: a LimitUpdate
        (only some fields) or a Resources, or docker-py's names (mem_limit="128m",
        memswap_limit, nano_cpus, cpu_quota, cpu_period, pids_limit). Fields given replace the
        old ones; the rest stay. Returns {"Warnings": []}."""
        from ctrkernel.runtime.cgroups import LimitUpdate, Resources
        if resources is None:
            # Each value checked alone here; together only once merged with the current limits
            # (memswap_limit alone is fine for a container that already has a memory limit).
            resources = LimitUpdate.from_docker(**docker_kwargs)
        elif docker_kwargs:
            raise TypeError("give a Resources or keyword limits, not both")
        if self.status in ("exited", "dead"):
            raise Conflict(f"container {self.name} is not running: its cgroup is gone")
        old = Resources.from_dict(self.attrs.get("Resources"))
        # Validates the whole result before the cgroup is touched: an impossible combination
        # (swap without memory, a CPU period over --cpus) fails here and changes nothing.
        merged = old.merged(resources)
        cg = self._own_cgroup("changing limits")
        cg.update(resources)
        self.attrs["Resources"] = merged.to_dict()
        state.write_json(self.dir, "config.json", self.attrs)
        return {"Warnings": list(getattr(cg, "notes", []))}

    def stats(self, stream=False, one_shot=False, interval=1.0):
        """Resource use shaped as Docker's stats API (see ctrkernel.metrics.stats)."""
        from ctrkernel.metrics import stats
        return stats(self, stream=stream, one_shot=one_shot, interval=interval)

    # -- looking inside ----------------------------------------------------------------
    def logs(self, stdout=True, stderr=True, stream=False, follow=False, tail="all"):
        """The command's output, bytes (stdout then stderr when both are asked for); with
        stream or follow, a generator of chunks; follow keeps reading while it runs."""
        files = [self.dir / n for n, want in (("stdout.log", stdout), ("stderr.log", stderr))
                 if want]
        if not (stream or follow):
            data = b"".join(_read(p) for p in files)
            return _tail(data, tail)
        return self._follow(files, follow)

    def _follow(self, files, follow):
        handles = [open(p, "rb") for p in files]
        try:
            while True:
                running = self.status in LIVE
                got = False
                for h in handles:
                    chunk = h.read(65536)
                    if chunk:
                        got = True
                        yield chunk
                if not got:
                    if not (follow and running):
                        return
                    time.sleep(0.05)
        finally:
            for h in handles:
                h.close()

    def exec_run(self, cmd, stdout=True, stderr=True, environment=None, workdir=None,
                 user=None, demux=False):
        """Run cmd in the running container; ExecResult(exit_code, output) like docker-py."""
        status = self.status
        if status == "paused":
            raise Conflict(f"container {self.name} is paused, unpause the container before exec")
        if status != "running":
            raise Conflict(f"container {self.name} is not running")
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        env = dict(_env_list_to_dict(self.attrs["Env"]), **_as_env_dict(environment))
        iso = self.attrs["Isolation"]
        proot = None
        if iso["level"] == "none":
            proot = {"proot": shutil.which("proot"), "rootfs": str(self.dir / "rootfs")}
        code, out, err = exec_in(self._run["init"]["pid"], iso["namespaces"], argv, env,
                                 workdir or self.attrs["WorkingDir"],
                                 self.attrs["User"] if user is None else user, self.cgroup,
                                 proot)
        if demux:
            return ExecResult(code, (out if stdout else None, err if stderr else None))
        return ExecResult(code, (out if stdout else b"") + (err if stderr else b""))

    def processes(self):
        """psutil.Process objects of everything running in the container."""
        if self.status not in LIVE:
            return []
        init = self._run["init"]["pid"]
        if "pid" not in self.attrs["Isolation"]["namespaces"]:
            try:
                root = psutil.Process(init)
                return [root] + root.children(recursive=True)
            except psutil.Error:
                return []
        try:
            target = os.readlink(f"/proc/{init}/ns/pid")
        except OSError:
            return []
        found = []
        for p in psutil.process_iter():
            try:
                if os.readlink(f"/proc/{p.pid}/ns/pid") == target:
                    found.append(p)
            except OSError:
                continue
        return found

    def top(self):
        """{"Titles": [...], "Processes": [[...], ...]} as `docker top` (host PIDs)."""
        rows = []
        for p in self.processes():
            try:
                with p.oneshot():
                    cpu = p.cpu_times()
                    rows.append([str(p.uids().real), str(p.pid), str(p.ppid()),
                                 time.strftime("%H:%M", time.localtime(p.create_time())),
                                 f"{int(cpu.user + cpu.system) // 60:02d}:"
                                 f"{int(cpu.user + cpu.system) % 60:02d}",
                                 " ".join(p.cmdline()) or p.name()])
            except psutil.Error:
                continue
        return {"Titles": ["UID", "PID", "PPID", "STIME", "TIME", "CMD"], "Processes": rows}

    def diff(self):
        """[{"Path": ..., "Kind": 0 changed | 1 added | 2 deleted}] from the writable layer,
        or, for a root that is a copy of the image, from comparing the copy with the image."""
        kind = self.attrs["Isolation"]["rootfs"]
        if kind in ("overlayfs", "fuse-overlayfs"):
            found = diffs.changes(self.upper_dir, self.attrs["Layers"])
        elif kind in ("copy", "proot-copy"):
            found = diffs.copy_changes(self.dir / "rootfs", self.attrs["Layers"])
        else:
            raise HostLacks("diff", f"a writable layer or a copied root (this container's "
                            f"root is a {kind})", "Overlay needs root or a kernel allowing it "
                            "in a user namespace, or fuse-overlayfs.")
        return [{"Path": path, "Kind": diffs.KIND[k]} for k, path in found]


def _read(path):
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def _tail(data, tail):
    if tail in ("all", None):
        return data
    lines = data.splitlines(keepends=True)
    return b"".join(lines[-int(tail):]) if int(tail) else b""


def _signal_number(sig):
    if isinstance(sig, int):
        return sig
    text = str(sig).upper()
    if text.isdigit():
        return int(text)
    if not text.startswith("SIG"):
        text = "SIG" + text
    try:
        return int(getattr(signals.Signals, text))
    except AttributeError:
        raise InvalidArgument(f"invalid signal: {sig}") from None


def _kill_leftovers(run):
    for key in ("init", "shim"):
        ident = (run or {}).get(key)
        if state.alive(ident):
            try:
                if key == "init" and os.getpgid(ident["pid"]) == ident["pid"]:
                    os.killpg(ident["pid"], signals.SIGKILL)  # a no-namespace container's group
                else:
                    os.kill(ident["pid"], signals.SIGKILL)
            except ProcessLookupError:
                pass


def _remove_proot_scratch(run):
    """proot unpacks its loader to <tmp>/prooted-<its pid>-XXXXXX and deletes it on exit; a
    killed proot (stop, kill, rm -f of a no-namespace container, whose init it is) cannot.
    Remove what the dead init left, only ours and only once that pid is gone."""
    import glob
    import tempfile
    pid = ((run or {}).get("init") or {}).get("pid")
    if not pid:
        return
    try:
        os.kill(pid, 0)
        return                          # alive: the pid is someone else's now, or not dead yet
    except ProcessLookupError:
        pass
    except PermissionError:
        return
    places = {os.environ.get("PROOT_TMP_DIR"), os.environ.get("TMPDIR"), tempfile.gettempdir(),
              "/tmp"}
    for place in filter(None, places):
        for path in glob.glob(os.path.join(place, f"prooted-{pid}-*")):
            try:
                if os.lstat(path).st_uid != os.geteuid():
                    continue
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.unlink(path)
            except OSError:
                pass


# ---------------------------------------------------------------------------- collection

def get(container_id_or_name):
    """A container by full id, unique id prefix, or name."""
    ids = state.all_ids()
    key = str(container_id_or_name)
    if key in ids:
        return Container(key)
    by_name = [i for i in ids if _config(i).get("Name") == key]
    if by_name:
        return Container(by_name[0])
    by_prefix = [i for i in ids if i.startswith(key)] if key else []
    if len(by_prefix) == 1:
        return Container(by_prefix[0])
    if len(by_prefix) > 1:
        raise InvalidArgument(f"{key!r} is ambiguous: it matches {len(by_prefix)} containers")
    raise ContainerNotFound(key)


def list_containers(all=False):
    """Running containers (all=True: every state), newest first."""
    found = []
    for i in state.all_ids():
        try:
            c = Container(i)
        except ContainerNotFound:
            continue  # removed meanwhile by another process
        if all or c.status in LIVE:
            found.append(c)
    return sorted(found, key=lambda c: c.attrs.get("Created", 0), reverse=True)


def _orphaned(c):
    """A container whose attached controller died (kill -9, a crashed kernel), or whose start
    never completed: nobody will ever wait for it, stop it or remove it."""
    run = c._run
    if not run:
        return False
    owner = run.get("owner") or (run.get("controller") if run.get("starting") else None)
    return bool(owner) and not state.alive(owner)


def _reap_orphans():
    removed = []
    for i in state.all_ids():
        try:
            c = Container(i)
        except ContainerNotFound:
            continue
        if _orphaned(c) or (c.attrs.get("AutoRemove") and c.status in ("exited", "dead")
                            and not state.alive((c._run or {}).get("owner"))):
            _kill_leftovers(c._run)
            c._wait_status(5)
            c.remove(force=True)
            removed.append(i)
    return removed


def prune():
    """Remove stopped containers, orphans of dead controllers, and stale cgroups/dirs.
    Returns {"ContainersDeleted": [...], "CgroupsDeleted": [...]} (Docker's shape)."""
    deleted = _reap_orphans()
    for i in state.all_ids():
        try:
            c = Container(i)
        except ContainerNotFound:
            continue
        if c.status in ("exited", "dead", "created") and not (
                c.status == "created" and c._run and state.alive(c._run.get("controller"))):
            c.remove(force=True)
            deleted.append(i)
    # Directories without a config (a crash inside create) are leftovers too.
    for entry in os.scandir(state.root()):
        if entry.is_dir() and not os.path.exists(os.path.join(entry.path, "config.json")):
            if time.time() - entry.stat().st_mtime > 60:
                state.remove_dir(entry.path)
    cgroups_deleted = []
    mgr = _cgroups()
    if mgr is not None:
        try:
            cgroups_deleted = mgr.remove_stale(state.all_ids())
        except (CtrkernelError, NotImplementedError, OSError):
            pass
    return {"ContainersDeleted": deleted, "CgroupsDeleted": cgroups_deleted}


def run(image, command=None, detach=False, remove=False, stdout=True, stderr=False, **options):
    """docker-py's `containers.run`: detach -> the running Container; else wait and return
    the logs (bytes), raising ContainerError on a non-zero exit. A KeyboardInterrupt while
    waiting stops and removes the container."""
    from ctrkernel.errors import ContainerError
    c = create(image, command, auto_remove=remove and detach, **options)
    try:
        c.start(_attached=not detach)
    except CtrkernelError:
        if remove or not detach:
            c.remove(force=True) if remove else None
        raise
    if detach:
        return c
    try:
        result = c.wait()
    except KeyboardInterrupt:
        c.stop(timeout=1)
        c.remove(force=True)
        raise
    out = c.logs(stdout=stdout, stderr=stderr)
    err = c.logs(stdout=False, stderr=True)
    _release(c)
    if remove:
        c.remove(force=True)
    if result["StatusCode"] != 0:
        raise ContainerError(c, result["StatusCode"], c.command, c.image, err.decode(errors="replace"))
    return out


def _release(c):
    """The attached controller is done with it: it no longer counts as an orphan."""
    run_record = state.read_json(c.dir, "run.json")
    if run_record and run_record.get("owner"):
        run_record["owner"] = None
        state.write_json(c.dir, "run.json", run_record)

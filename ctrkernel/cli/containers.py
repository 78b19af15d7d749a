"""Container verbs: run, create, start, ps, logs, exec, top, diff, stop, kill, rm, prune, wait.

Flags and exit statuses follow `docker`: 125 when ctrkernel fails, 126 when the command cannot
be invoked, 127 when it is not found, otherwise the container's own status.
"""
import functools
import os
import sys
import time

from ctrkernel.cli.registry import arg, verb
from ctrkernel.errors import CtrkernelError

try:  # the cgroup flags (--memory, --cpus, --pids-limit...) where that module is installed
    from ctrkernel.cli.resource_flags import RESOURCE_ARGS, resources_from_args
except ImportError:
    RESOURCE_ARGS, resources_from_args = [], None


def _with_create_args(fn):
    """The flags shared by `run` and `create` (docker's names)."""
    for flags, options in reversed(CREATE_ARGS + list(RESOURCE_ARGS)):
        fn = arg(*flags, **options)(fn)
    return fn


CREATE_ARGS = [
    (("--name",), {"help": "assign a name to the container"}),
    (("-e", "--env"), {"action": "append", "default": [], "help": "set an environment variable (KEY=VALUE)"}),
    (("-w", "--workdir"), {"help": "working directory inside the container"}),
    (("-u", "--user"), {"help": "user (name|uid[:group|gid])"}),
    (("--hostname",), {"help": "container host name"}),
    (("--network", "--net"), {"default": "none", "help": "none (loopback only, default) or host"}),
    (("-p", "--publish"), {"action": "append", "default": [], "help": "publish a port on 127.0.0.1 (HOSTPORT:PORT)"}),
    (("--entrypoint",), {"help": "override the image's entrypoint"}),
    (("image",), {"help": "image reference (e.g. busybox)"}),
    (("command",), {"nargs": "...", "help": "command and arguments"}),
]


def _create(args, auto_remove=False):
    from ctrkernel.runtime import create
    env = {}
    for item in args.env:
        key, eq, value = item.partition("=")
        env[key] = value if eq else os.environ.get(key, "")
    resources = resources_from_args(args) if resources_from_args else None
    container = create(args.image, args.command or None, name=args.name, env=env,
                       workdir=args.workdir, user=args.user, hostname=args.hostname,
                       network=args.network, ports=list(args.publish), resources=resources,
                       entrypoint=_entrypoint(args.entrypoint), auto_remove=auto_remove)
    # Never pretend: whatever this host could not isolate or enforce is said at once, on
    # stderr as Docker's own warnings are, not only in `inspect` afterwards.
    for note in container.isolation.get("notes", []):
        print(f"WARNING: {note}", file=sys.stderr)
    return container


def _entrypoint(flag):
    """--entrypoint as create() takes it: unset keeps the image's, "" clears it (as Docker)."""
    if flag is None:
        return None
    return [flag] if flag else []


def _engine_failure_is_125(fn):
    """`docker run`/`create` exit 125 whenever the engine fails, a missing image or a name in
    use included (other verbs exit 1 for those); 126 and 127 stay: they are about the
    container's command, not ctrkernel."""
    @functools.wraps(fn)
    def wrapped(args):
        try:
            return fn(args)
        except CtrkernelError as e:
            if e.exit_status not in (126, 127):
                e.exit_status = 125
            raise
    return wrapped


@verb("run")
@_engine_failure_is_125
@arg("-d", "--detach", action="store_true", help="run in the background, print the id")
@arg("--rm", action="store_true", help="remove the container when it exits")
@_with_create_args
def run(args):
    """Create and start a container (foreground: stream its output and exit with its status)."""
    c = _create(args, auto_remove=args.rm and args.detach)
    try:
        c.start(_attached=not args.detach)
    except BaseException:        # Ctrl-C while starting too: a --rm container leaves nothing
        if args.rm:
            c.remove(force=True)
        raise
    if args.detach:
        print(c.id)
        return 0
    from ctrkernel.runtime.container import _release
    try:
        _stream(c)
        code = c.wait()["StatusCode"]
    except KeyboardInterrupt:
        c.stop(timeout=1)
        c.remove(force=True)
        return 130
    except BrokenPipeError:
        # Our reader went away (`run ... | head -1`): nobody sees the output any more, so stop
        # the container rather than leave it running unattended; main() exits 141.
        c.stop(timeout=1)
        _release(c)
        if args.rm:
            c.remove(force=True)
        raise
    _release(c)
    if args.rm:
        c.remove(force=True)
    return code


def _stream(c, follow=True):
    """Copy the container's stdout and stderr logs to ours while it runs."""
    files = [(open(c.dir / "stdout.log", "rb"), sys.stdout.buffer),
             (open(c.dir / "stderr.log", "rb"), sys.stderr.buffer)]
    try:
        while True:
            running = c.status in ("running", "paused")
            got = False
            for src, dst in files:
                chunk = src.read(65536)
                if chunk:
                    got = True
                    dst.write(chunk)
                    dst.flush()
            if not got:
                if not (follow and running):
                    return
                time.sleep(0.05)
    finally:
        for src, _ in files:
            src.close()


@verb("create")
@_engine_failure_is_125
@_with_create_args
def create(args):
    """Create a container without starting it; print its id."""
    print(_create(args).id)
    return 0


@verb("start")
@arg("-a", "--attach", action="store_true", help="stream output and exit with its status")
@arg("containers", nargs="+", help="container names or ids")
def start(args):
    """Start one or more created containers."""
    from ctrkernel.runtime import get
    for ref in args.containers:
        c = get(ref)
        c.start(_attached=args.attach)
        if args.attach:
            _stream(c)
            return c.wait()["StatusCode"]
        print(ref)
    return 0


def _ago(seconds):
    seconds = max(0, int(seconds))
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} seconds ago"


@verb("ps")
@arg("-a", "--all", action="store_true", help="show all containers (default: running)")
@arg("-q", "--quiet", action="store_true", help="only ids")
@arg("--no-trunc", action="store_true", help="do not truncate ids and commands")
def ps(args):
    """List containers (from the state directory: every process sees the same list)."""
    from ctrkernel.runtime import list_containers
    rows = []
    for c in list_containers(all=args.all):
        if args.quiet:
            print(c.id if args.no_trunc else c.short_id)
            continue
        status = c.status
        if status in ("running", "paused"):
            text = "Up " + _ago(time.time() - c._run.get("StartedAt", time.time()))[:-4]
            text += " (Paused)" if status == "paused" else ""
        elif status == "exited":
            text = f"Exited ({c.exit_code}) " + _ago(time.time() - c._exit.get("FinishedAt", time.time()))
        else:
            text = status.capitalize()
        command = " ".join(c.command)
        if not args.no_trunc and len(command) > 22:
            command = command[:19] + "..."
        ports = ", ".join(f"127.0.0.1:{o}->{i}/tcp" for i, o in c.attrs["Ports"])
        rows.append([c.id if args.no_trunc else c.short_id, c.image, f'"{command}"',
                     _ago(time.time() - c.attrs["Created"]), text, ports,
                     c.attrs["Isolation"]["level"], c.name])
    if not args.quiet:
        _table(["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "ISOLATION",
                "NAMES"], rows)
    return 0


def _table(titles, rows):
    widths = [max([len(t)] + [len(str(r[i])) for r in rows]) for i, t in enumerate(titles)]
    for line in [titles] + rows:
        print("   ".join(str(v).ljust(w) for v, w in zip(line, widths)).rstrip())


@verb("logs")
@arg("-f", "--follow", action="store_true", help="keep streaming while it runs")
@arg("-n", "--tail", default="all", help="lines from the end (default all)")
@arg("container")
def logs(args):
    """Print a container's output: its stdout to stdout, its stderr to stderr."""
    from ctrkernel.runtime import get
    c = get(args.container)
    if args.follow:
        _stream(c, follow=True)
        return 0
    sys.stdout.buffer.write(c.logs(stdout=True, stderr=False, tail=args.tail))
    sys.stdout.flush()
    sys.stderr.buffer.write(c.logs(stdout=False, stderr=True, tail=args.tail))
    sys.stderr.flush()
    return 0


@verb("exec")
@arg("-e", "--env", action="append", default=[], help="set an environment variable")
@arg("-w", "--workdir", help="working directory inside the container")
@arg("-u", "--user", help="user (name|uid[:group|gid])")
@arg("container")
@arg("command", nargs="...")
def exec_(args):
    """Run a command in a running container (joining its namespaces); exit with its status."""
    from ctrkernel.errors import InvalidArgument
    from ctrkernel.runtime import get
    if not args.command:
        raise InvalidArgument("exec needs a command")
    env = dict(item.partition("=")[::2] for item in args.env)
    result = get(args.container).exec_run(args.command, environment=env, workdir=args.workdir,
                                          user=args.user, demux=True)
    out, err = result.output
    sys.stdout.buffer.write(out or b"")
    sys.stdout.flush()
    sys.stderr.buffer.write(err or b"")
    sys.stderr.flush()
    return result.exit_code


@verb("top")
@arg("container")
def top(args):
    """The processes running in a container (host PIDs)."""
    from ctrkernel.runtime import get
    listing = get(args.container).top()
    _table(listing["Titles"], listing["Processes"])
    return 0


@verb("diff")
@arg("container")
def diff(args):
    """Files added (A), changed (C) and deleted (D) in a container's writable layer."""
    from ctrkernel.runtime import get
    for change in get(args.container).diff():
        print("CAD"[change["Kind"]], change["Path"])
    return 0


@verb("stop")
@arg("-t", "--time", type=float, default=10, help="seconds to wait before SIGKILL (default 10)")
@arg("containers", nargs="+")
def stop(args):
    """Stop containers: SIGTERM, then SIGKILL after a timeout."""
    from ctrkernel.runtime import get
    for ref in args.containers:
        get(ref).stop(timeout=args.time)
        print(ref)
    return 0


@verb("kill")
@arg("-s", "--signal", default="KILL", help="signal to send (default KILL)")
@arg("containers", nargs="+")
def kill(args):
    """Send a signal to containers' main process."""
    from ctrkernel.runtime import get
    for ref in args.containers:
        get(ref).kill(args.signal)
        print(ref)
    return 0


@verb("rm")
@arg("-f", "--force", action="store_true", help="kill a running container first")
@arg("containers", nargs="+")
def rm(args):
    """Remove containers (their writable layer, logs and cgroup)."""
    from ctrkernel.runtime import get
    for ref in args.containers:
        get(ref).remove(force=args.force)
        print(ref)
    return 0


@verb("wait")
@arg("containers", nargs="+")
def wait(args):
    """Block until containers stop; print their exit codes."""
    from ctrkernel.runtime import get
    for ref in args.containers:
        print(get(ref).wait()["StatusCode"])
    return 0


@verb("prune")
@arg("-f", "--force", action="store_true", help="do not prompt (there is no prompt anyway)")
def prune(args):
    """Remove stopped containers and what crashed controllers left (processes, cgroups, state)."""
    from ctrkernel.runtime import prune as do_prune
    report = do_prune()
    for container_id in report["ContainersDeleted"]:
        print(container_id)
    print(f"Total: {len(report['ContainersDeleted'])} container(s), "
          f"{len(report['CgroupsDeleted'])} stale cgroup(s) removed")
    return 0

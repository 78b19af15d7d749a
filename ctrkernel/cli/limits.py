"""`pause`, `unpause` and `update`: freezing containers and changing their limits while they run.

As the docker CLI does, each verb goes through every container named, prints the ones it
handled, reports the others on stderr, and exits 1 if any failed.
"""
import sys

from ctrkernel.cli.registry import arg, verb
from ctrkernel.cli.resource_flags import RESOURCE_ARGS, RESOURCE_DESTS, resources_from_args
from ctrkernel.errors import CtrkernelError


def _each(refs, action):
    from ctrkernel.runtime import get
    failed = False
    for ref in refs:
        try:
            action(get(ref))
        except CtrkernelError as e:
            print(f"ctrkernel: {e}", file=sys.stderr)
            failed = True
            continue
        print(ref)
    return 1 if failed else 0


@verb("pause")
@arg("containers", nargs="+")
def pause(args):
    """Freeze all processes of containers (the cgroup freezer)."""
    return _each(args.containers, lambda c: c.pause())


@verb("unpause")
@arg("containers", nargs="+")
def unpause(args):
    """Thaw the processes of paused containers."""
    return _each(args.containers, lambda c: c.unpause())


def _update(args):
    if all(getattr(args, name) is None for name in RESOURCE_DESTS):
        print("ctrkernel: you must provide one or more flags when using this command",
              file=sys.stderr)
        return 1
    # Parsed once, before any container is touched: a malformed or too large value changes
    # nothing. Only each flag is checked here: whether they fit together depends on each
    # container's current limits (--memory-swap alone needs a container run with -m), which
    # Container.update checks.
    from ctrkernel.runtime.cgroups import LimitUpdate
    try:
        resources = resources_from_args(args, kind=LimitUpdate)
    except CtrkernelError as e:
        print(f"ctrkernel: {e}", file=sys.stderr)
        return 1

    def change(container):
        for warning in container.update(resources)["Warnings"]:
            print(f"WARNING: {warning}", file=sys.stderr)
    return _each(args.containers, change)


update = _update
for _flags, _options in reversed(RESOURCE_ARGS):
    update = arg(*_flags, **_options)(update)
update.__doc__ = "Change the resource limits of containers (memory, CPUs, process count)."
update = verb("update")(arg("containers", nargs="+")(update))

"""Docker's resource flags, shared by `run`, `create` and `update`.

    for flags, options in RESOURCE_ARGS: parser.add_argument(*flags, **options)
    resources = resources_from_args(args)      # Resources, or raises InvalidArgument

Values stay strings until `resources_from_args`, so a malformed one ("12zb") gets ctrkernel's
own message and exit status 125, as `docker run` does, not argparse's usage error. As in
Docker, 0 means "no limit" for --memory, --memory-swap, --cpus and --pids-limit.
"""
from ctrkernel.runtime.cgroups.resources import Resources

RESOURCE_ARGS = [
    (("--memory", "-m"), dict(dest="memory", metavar="BYTES", default=None,
                              help="memory limit (e.g. 64m, 1g; minimum 6m; 0 for none)")),
    (("--memory-swap",), dict(dest="memory_swap", metavar="BYTES", default=None,
                              help="memory plus swap limit; -1 for unlimited swap "
                                   "(default or 0: equal to --memory, i.e. no swap)")),
    (("--cpus",), dict(dest="cpus", metavar="DECIMAL", default=None,
                       help="number of CPUs (e.g. 0.5; 0 for no limit)")),
    (("--cpu-quota",), dict(dest="cpu_quota", metavar="MICROSECONDS", default=None,
                            help="CPU CFS quota per period, in microseconds")),
    (("--cpu-period",), dict(dest="cpu_period", metavar="MICROSECONDS", default=None,
                             help="CPU CFS period, in microseconds (default 100000)")),
    (("--pids-limit",), dict(dest="pids_limit", metavar="N", default=None,
                             help="process limit (0 or -1 for unlimited)")),
]

RESOURCE_DESTS = ("memory", "memory_swap", "cpus", "cpu_quota", "cpu_period", "pids_limit")


def add_resource_args(parser):
    for flags, options in RESOURCE_ARGS:
        parser.add_argument(*flags, **options)


def resources_from_args(args, kind=Resources) -> Resources:
    """Resources from parsed flags (unset flags stay unset); `kind=LimitUpdate` for `update`."""
    get = lambda name: getattr(args, name, None)  # noqa: E731
    return kind.from_docker(mem_limit=get("memory"), memswap_limit=get("memory_swap"),
                            cpus=get("cpus"), cpu_quota=get("cpu_quota"),
                            cpu_period=get("cpu_period"), pids_limit=get("pids_limit"))


def any_resource_flag(args) -> bool:
    return any(getattr(args, name, None) is not None for name in RESOURCE_DESTS)

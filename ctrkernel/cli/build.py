"""`ctrkernel build` and `ctrkernel commit`, with Docker's flags."""
import os
import sys
import warnings

from ctrkernel.cli.registry import arg, verb


def _build_args(pairs):
    """--build-arg NAME=value, or NAME alone to take it from the environment (Docker's rule)."""
    found = {}
    for pair in pairs or []:
        name, eq, value = pair.partition("=")
        if eq:
            found[name] = value
        elif name in os.environ:
            found[name] = os.environ[name]
    return found


@verb("build")
@arg("path", metavar="PATH", help="the build context (a directory)")
@arg("-t", "--tag", action="append", default=[], help="name and optionally a tag (name:tag)")
@arg("-f", "--file", default=None, help="name of the Dockerfile (default: PATH/Dockerfile)")
@arg("--build-arg", action="append", default=[], metavar="NAME=VALUE",
     help="set a build-time variable declared with ARG")
@arg("--no-cache", action="store_true", help="do not use the cache when building the image")
@arg("-q", "--quiet", action="store_true", help="print only the image ID on success")
@arg("--label", action="append", default=[], metavar="KEY=VALUE",
     help="set metadata for the image (repeatable; as a last LABEL instruction)")
@arg("--iidfile", default=None, metavar="FILE", help="write the image ID to the file")
@arg("--rm", nargs="?", const="true", default="true", metavar="true|false",
     help="remove intermediate containers after a successful build (always done: a RUN "
          "step's container is removed whatever happens, so this is accepted and has no effect)")
@arg("--force-rm", action="store_true",
     help="always remove intermediate containers (what every build here does already)")
def build(args):
    """Build an image from a Dockerfile.

    Each instruction is a step: metadata steps change the image config, COPY/ADD add the build
    context's files as a layer, RUN runs in a container and commits what it wrote. Unchanged
    steps come from the cache ("---> Using cache").
    """
    from ctrkernel.cli.images import _boolean
    from ctrkernel.errors import BuildError
    from ctrkernel.image.build import Builder
    from ctrkernel.image import refs

    _boolean(args.rm.lstrip("="))   # refuse `--rm=maybe` as docker does; the value changes nothing

    dockerfile = args.file or "Dockerfile"
    if args.file and not os.path.isabs(args.file) and os.path.exists(args.file):
        dockerfile = os.path.abspath(args.file)  # docker resolves -f against the current dir
    if args.iidfile and os.path.lexists(args.iidfile):
        os.unlink(args.iidfile)    # as docker: a failed build leaves no stale id behind
    tags = args.tag or [None]
    builder = Builder(args.path, tag=tags[0], dockerfile=dockerfile,
                      buildargs=_build_args(args.build_arg), nocache=args.no_cache,
                      labels=_labels(args.label))
    try:
        for line in builder:
            if not args.quiet:
                print(line, flush=True)
    except BuildError as e:
        if args.quiet:  # docker -q prints the log only when the build fails
            print("\n".join(e.build_log), file=sys.stderr)
        raise
    for extra in tags[1:]:
        builder.store.tag("build@" + builder.image.manifest_digest, extra)
        if not args.quiet:
            print(f"Successfully tagged {refs.normalize(extra)}")
    if args.iidfile:
        with open(args.iidfile, "w") as f:   # docker writes the id with no newline
            f.write(builder.image.id)
    if args.quiet:
        print(builder.image.id)
    return 0


def _labels(pairs):
    """--label KEY=VALUE, or KEY alone for an empty value (docker's rule)."""
    return dict((name, value) for name, _, value in (p.partition("=") for p in pairs or []))


@verb("commit")
@arg("container", metavar="CONTAINER")
@arg("repository", metavar="REPOSITORY[:TAG]", nargs="?", default=None)
@arg("-a", "--author", default=None, help='author (e.g., "Ada Lovelace <ada@example.org>")')
@arg("-m", "--message", default=None, help="commit message")
@arg("-c", "--change", action="append", default=[], help="apply a Dockerfile instruction "
     "to the image config (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, VOLUME, WORKDIR)")
@arg("-p", "--pause", nargs="?", const="true", default="true", metavar="true|false",
     help="pause the container during the commit (default true; --pause=false to not)")
def commit(args):
    """Create a new image from a container's changes (its writable layer).

    A running container is paused (frozen) while its layer is read, as Docker does, so that
    the image holds one moment of its files rather than a mix of before and after."""
    from ctrkernel.cli.images import _boolean
    from ctrkernel.errors import CtrkernelWarning
    from ctrkernel.image.commit import commit as do_commit

    repository, tag = None, None
    if args.repository:
        repository, _, tag = args.repository.rpartition(":")
        if not repository or "/" in tag:  # "host:5000/name" has no tag
            repository, tag = args.repository, None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CtrkernelWarning)
        image = do_commit(args.container, repository=repository, tag=tag, message=args.message,
                          author=args.author, changes=args.change,
                          pause=_boolean(args.pause.lstrip("=")))
    for w in caught:
        if issubclass(w.category, CtrkernelWarning):
            print(f"WARNING: {w.message}", file=sys.stderr)
    print(image.id)
    return 0

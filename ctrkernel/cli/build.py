"""`ctrkernel build` and `ctrkernel commit`, with Docker's flags."""
import os
import sys

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
def build(args):
    """Build an image from a Dockerfile.

    Each instruction is a step: metadata steps change the image config, COPY/ADD add the build
    context's files as a layer, RUN runs in a container and commits what it wrote. Unchanged
    steps come from the cache ("---> Using cache").
    """
    from ctrkernel.errors import BuildError
    from ctrkernel.image.build import Builder
    from ctrkernel.image import refs

    dockerfile = args.file or "Dockerfile"
    if args.file and not os.path.isabs(args.file) and os.path.exists(args.file):
        dockerfile = os.path.abspath(args.file)  # docker resolves -f against the current dir
    tags = args.tag or [None]
    builder = Builder(args.path, tag=tags[0], dockerfile=dockerfile,
                      buildargs=_build_args(args.build_arg), nocache=args.no_cache)
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
    if args.quiet:
        print(builder.image.id)
    return 0


@verb("commit")
@arg("container", metavar="CONTAINER")
@arg("repository", metavar="REPOSITORY[:TAG]", nargs="?", default=None)
@arg("-a", "--author", default=None, help='author (e.g., "Ada Lovelace <ada@example.org>")')
@arg("-m", "--message", default=None, help="commit message")
@arg("-c", "--change", action="append", default=[], help="apply a Dockerfile instruction "
     "to the image config (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, VOLUME, WORKDIR)")
@arg("-p", "--pause", action="store_true", default=True, help="accepted for compatibility")
def commit(args):
    """Create a new image from a container's changes (its writable layer)."""
    from ctrkernel.image.commit import commit as do_commit

    repository, tag = None, None
    if args.repository:
        repository, _, tag = args.repository.rpartition(":")
        if not repository or "/" in tag:  # "host:5000/name" has no tag
            repository, tag = args.repository, None
    image = do_commit(args.container, repository=repository, tag=tag, message=args.message,
                      author=args.author, changes=args.change)
    print(image.id)
    return 0

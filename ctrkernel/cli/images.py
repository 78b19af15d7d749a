"""Image verbs: images, history, rmi, tag, image inspect (and `image ls|rm|history|tag`), and
`system df`.

Output and exit statuses follow `docker`: tables with Docker's columns, sizes in powers of 1000,
and on an error a message on stderr and exit status 1.
"""
import json
import sys

from ctrkernel.cli.containers import _table  # one table printer for every verb
from ctrkernel.cli.formatting import render
from ctrkernel.cli.registry import arg, verb
from ctrkernel.errors import CtrkernelError
from ctrkernel.image import delete


def _fail(message, daemon=True):
    """Docker's way to report an error of the engine ("Error response from daemon: ...") or of
    the client ("Error: ..."); the verb then exits 1."""
    prefix = "Error response from daemon: " if daemon else "Error: "
    print(prefix + str(message), file=sys.stderr)
    return 1


def _print_formatted(table, template, titles):
    """Print rows through a --format template: the exit code, or None when there is no
    template (the caller prints its default table)."""
    try:
        lines = render(table, template, headers=titles)
    except CtrkernelError as e:
        return _fail(e, daemon=False)
    if lines is None:
        return None
    for line in lines:
        print(line)
    return 0


def _image_id(img, no_trunc):
    return img.id if no_trunc else img.short_id


def _repo_tag(tag):
    """'busybox:latest' -> ('busybox', 'latest'); None (untagged) -> ('<none>', '<none>')."""
    if tag is None:
        return "<none>", "<none>"
    name, _, version = tag.rpartition(":")
    return name, version


def _rows(images, repository=None):
    """(image, tag or None) for each tag of each image, as `docker images` lists them; with a
    repository, only its tags (only the given tag when one is given)."""
    from ctrkernel.image import refs
    name = version = None
    if repository:
        name, version = refs.split(repository)
        if ":" not in repository.rpartition("/")[2]:
            version = None      # `docker images busybox`: every tag of busybox
    for img in images:
        for tag in img.tags or [None]:
            if name and (tag is None or _repo_tag(tag)[0] != name
                         or (version and _repo_tag(tag)[1] != version)):
                continue
            yield img, tag


@verb("images")
@arg("repository", metavar="REPOSITORY[:TAG]", nargs="?", default=None,
     help="only images of this repository (and tag)")
@arg("-a", "--all", action="store_true",
     help="show all images (default hides intermediate build steps)")
@arg("-q", "--quiet", action="store_true", help="only show image IDs")
@arg("--no-trunc", action="store_true", help="do not truncate output")
@arg("-f", "--filter", action="append", default=[], metavar="FILTER",
     help="name=value: dangling=true|false, label=KEY[=VALUE], reference=PATTERN, "
          "before=IMAGE, since=IMAGE, until=TIME|DURATION (repeatable)")
@arg("--digests", action="store_true", help="show digests (the manifest digest of each image)")
@arg("--format", default=None,
     help="table (default), json (one JSON object per line), or a template like "
          "'table {{.Repository}}\\t{{.Tag}}\\t{{.ID}}' ({{json .}} for a whole row)")
def images(args):
    """List images: one row per tag; untagged images as <none>."""
    from ctrkernel.image import images as all_images
    from ctrkernel.image import filters

    try:
        found = all_images(all=args.all, filters=filters.parse_cli(args.filter))
    except CtrkernelError as e:
        return _fail(e)
    rows = list(_rows(found, args.repository))
    if args.quiet:
        seen = []
        for img, _ in rows:   # docker -q prints each image once
            ident = _image_id(img, args.no_trunc)
            if ident not in seen:
                seen.append(ident)
                print(ident)
        return 0
    table = [_image_row(img, tag, args.no_trunc) for img, tag in rows]
    done = _print_formatted(table, args.format, IMAGE_TITLES)
    if done is not None:
        return done
    fields = ["Repository", "Tag"] + (["Digest"] if args.digests else []) + \
        ["ID", "CreatedSince", "Size"]
    _table([IMAGE_TITLES[f] for f in fields], [[r[f] for f in fields] for r in table])
    return 0


# Docker's column titles for the fields a template can name.
IMAGE_TITLES = {"Repository": "REPOSITORY", "Tag": "TAG", "Digest": "DIGEST", "ID": "IMAGE ID",
                "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "Size": "SIZE",
                "Containers": "CONTAINERS", "SharedSize": "SHARED SIZE",
                "UniqueSize": "UNIQUE SIZE", "VirtualSize": "VIRTUAL SIZE"}
HISTORY_TITLES = {"ID": "IMAGE", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT",
                  "CreatedBy": "CREATED BY", "Size": "SIZE", "Comment": "COMMENT"}


def _image_row(img, tag, no_trunc):
    """One row of `images` with Docker's field names (what --format templates name).
    Digest: the manifest digest, which is what names this image's content as Docker's repo
    digests do (name@sha256:...)."""
    from ctrkernel.image.display import ago, human_size
    repo, version = _repo_tag(tag)
    return {"Containers": "N/A", "CreatedAt": img.created, "CreatedSince": ago(img.created),
            "Digest": img.manifest_digest or "<none>", "ID": _image_id(img, no_trunc),
            "Repository": repo, "SharedSize": "N/A", "Size": human_size(img.size), "Tag": version,
            "UniqueSize": "N/A", "VirtualSize": human_size(img.size)}


def _boolean(text):
    """Docker's boolean flag values (-H=false)."""
    value = str(text).strip().lower()
    if value in ("1", "t", "true", "yes"):
        return True
    if value in ("0", "f", "false", "no"):
        return False
    raise CtrkernelError(f"invalid boolean value {text!r} (true or false)")


def _ellipsis(text, width):
    return text if len(text) <= width else text[:width - 1] + "…"


@verb("history")
@arg("image", metavar="IMAGE")
@arg("-H", "--human", nargs="?", const="true", default="true", metavar="true|false",
     help="print sizes and dates in human readable format (default true; -H=false for raw)")
@arg("--no-trunc", action="store_true", help="do not truncate output")
@arg("-q", "--quiet", action="store_true", help="only show image IDs")
@arg("--format", default=None,
     help="table (default), json, or a template like 'table {{.ID}}\\t{{.CreatedBy}}' "
          "(fields ID, CreatedSince, CreatedAt, CreatedBy, Size, Comment)")
def history(args):
    """Show the history of an image: one row per step, newest first."""
    from ctrkernel.image import get_image
    from ctrkernel.image.display import ago, human_size, step_ids

    human = _boolean(args.human.lstrip("="))
    try:
        img = get_image(args.image)
    except CtrkernelError as e:
        return _fail(e)
    rows = img.history()
    ids = [i if i == "<missing>" or args.no_trunc else i[7:19] for i in step_ids(img)]
    if args.quiet:
        print("\n".join(ids))
        return 0
    table = []
    for ident, r in zip(ids, rows):
        created_by = r["created_by"] if args.no_trunc else _ellipsis(r["created_by"], 45)
        table.append({"ID": ident, "CreatedSince": ago(r["created"]) if human else r["created"],
                      "CreatedAt": r["created"], "CreatedBy": created_by,
                      "Size": human_size(r["size"]) if human else str(r["size"]),
                      "Comment": r["comment"]})
    done = _print_formatted(table, args.format, HISTORY_TITLES)
    if done is not None:
        return done
    fields = ["ID", "CreatedSince", "CreatedBy", "Size", "Comment"]
    _table([HISTORY_TITLES[f] for f in fields], [[r[f] for f in fields] for r in table])
    return 0


@verb("rmi")
@arg("images", metavar="IMAGE", nargs="+")
@arg("-f", "--force", action="store_true", help="force removal of the image")
@arg("--no-prune", action="store_true", help="do not delete untagged parents (the "
     "intermediate images of the build that made it)")
def rmi(args):
    """Remove one or more images (untag; delete the image and its unshared layers when its
    last tag goes). Refuses an image a container uses unless forced."""
    status = 0
    for reference in args.images:
        try:
            for entry in delete.remove(reference, args.force, noprune=args.no_prune):
                for key, value in entry.items():
                    print(f"{key}: {value}")
        except CtrkernelError as e:
            status = _fail(e)
    return status


@verb("tag")
@arg("source", metavar="SOURCE_IMAGE[:TAG]")
@arg("target", metavar="TARGET_IMAGE[:TAG]")
def tag(args):
    """Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE."""
    from ctrkernel.image import refs, tag_image
    from ctrkernel.errors import InvalidArgument

    try:
        refs.normalize(args.target)
    except InvalidArgument:
        return _fail(f'Error parsing reference: "{args.target}" is not a valid repository/tag: '
                     "invalid reference format", daemon=False)
    try:
        tag_image(args.source, args.target)
    except CtrkernelError as e:
        return _fail(e)
    return 0


@verb("inspect", group="image")
@arg("images", metavar="IMAGE", nargs="+")
def image_inspect(args):
    """Display detailed information on one or more images (a JSON array)."""
    from ctrkernel.image import get_image

    found, status = [], 0
    for reference in args.images:
        try:
            found.append(get_image(reference).inspect())
        except CtrkernelError as e:
            status = _fail(e, daemon=False)
    print(json.dumps(found, indent=4))
    return status


@verb("prune", group="image")
@arg("-a", "--all", action="store_true", help="remove all images no container was made from")
@arg("-f", "--force", action="store_true", help="do not prompt for confirmation")
def image_prune(args):
    """Remove unused images: dangling ones (untagged), or with -a every image no container
    was made from."""
    from ctrkernel.image.display import human_size
    if not args.force:
        what = "all images without at least one container associated to them" if args.all \
            else "all dangling images"
        if not sys.stdin.isatty():
            return _fail(f"this will remove {what}: give -f to confirm", daemon=False)
        answer = input(f"WARNING! This will remove {what}.\nAre you sure you want to "
                       "continue? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            return 0
    report = delete.prune(all=args.all)
    if report["ImagesDeleted"]:
        print("Deleted Images:")
        for entry in report["ImagesDeleted"]:
            for key, value in entry.items():
                print(f"{key.lower()}: {value}")
        print()
    print(f"Total reclaimed space: {human_size(report['SpaceReclaimed'])}")
    return 0


@verb("fsck", group="image")
@arg("--format", default=None, choices=["table", "json"], help="json: the problems as a JSON list")
def image_fsck(args):
    """Check every blob the store's images reach against its digest (what "run fsck" in a
    corrupt-blob error refers to), and the extracted-layer cache (trees of layers no image
    has, or whose blob is gone; partial extractions); exit 1 naming each problem."""
    from ctrkernel.image import default_store
    problems = default_store().fsck()
    if args.format == "json":
        print(json.dumps(problems))
    elif problems:
        _table(["DIGEST", "WHAT", "PROBLEM"],
               [[p["digest"][:19], p["what"], p["problem"]] for p in problems])
    else:
        print("the image store is sound: every blob matches its digest, every extracted "
              "layer belongs to an image")
    return 1 if problems else 0


def _alias(fn, name, group):
    """Register fn again under another name (`image ls` for `images`), with the same flags."""
    def alias(args):
        return fn(args)
    alias.__doc__ = fn.__doc__
    alias.verb_args = list(reversed(fn.verb_args))   # verb() reverses them once more
    return verb(name, group)(alias)


for _fn, _name in ((images, "ls"), (rmi, "rm"), (history, "history"), (tag, "tag")):
    _alias(_fn, _name, "image")


# ---- system df --------------------------------------------------------------------------------

def _percent(part, whole):
    return f"{part * 100 // whole}%" if whole else "0%"


def _container_rows():
    """(container, bytes of its writable layer), newest first."""
    from ctrkernel.runtime import list_containers
    from ctrkernel.image.usage import tree_bytes
    rows = []
    for c in list_containers(all=True):
        rootfs = c.attrs.get("Isolation", {}).get("rootfs")
        where = c.upper_dir if rootfs in ("overlayfs", "fuse-overlayfs") else c.dir / "rootfs"
        rows.append((c, tree_bytes(where)))
    return rows


@verb("df", group="system")
@arg("-v", "--verbose", action="store_true", help="show detailed information on space usage")
def system_df(args):
    """Show disk usage: images (layers shared between images counted once) and containers."""
    from ctrkernel.image.display import ago, human_size
    from ctrkernel.image.usage import image_usage, summary

    usage = image_usage()
    counts = {r.image.id: r.containers for r in usage}
    images = summary(images=[r.image for r in usage], containers=counts)
    containers = _container_rows()
    live = [size for c, size in containers if c.status in ("running", "paused")]
    c_size = sum(size for _, size in containers)
    _table(["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"], [
        ["Images", images["total"], images["active"], human_size(images["size"]),
         f"{human_size(images['reclaimable'])} ({_percent(images['reclaimable'], images['size'])})"],
        ["Containers", len(containers), len(live), human_size(c_size),
         f"{human_size(c_size - sum(live))} ({_percent(c_size - sum(live), c_size)})"]])
    if not args.verbose:
        return 0
    print("\nImages space usage:\n")
    _table(["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE", "SHARED SIZE", "UNIQUE SIZE",
            "CONTAINERS"],
           [[*_repo_tag(tag), r.image.short_id, ago(r.image.created), human_size(r.size),
             human_size(r.shared), human_size(r.unique), r.containers]
            for r in usage for tag in r.image.tags or [None]])
    print("\nContainers space usage:\n")
    _table(["CONTAINER ID", "IMAGE", "COMMAND", "SIZE", "STATUS", "NAMES"],
           [[c.short_id, c.image, f'"{_ellipsis(" ".join(c.command), 20)}"', human_size(size),
             c.status, c.name] for c, size in containers])
    return 0

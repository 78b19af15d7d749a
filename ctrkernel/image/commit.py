"""Commit a container's writable layer as a new image, as `docker commit` does.

    from ctrkernel.image.commit import commit
    img = commit(container, repository="mytool", tag="v1", message="added curl",
                 author="Ada", changes=['CMD ["tool"]', "ENV MODE=prod"])

The new image is the container's image plus one layer: what the container wrote. With an
overlay root that is exactly the overlay's upper directory (deletions are whiteouts there
already); with a copied root (no overlay on this host) it is the difference between the image's
layers and the copy, computed file by file. `changes` takes Dockerfile lines that only touch the
config (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, VOLUME, WORKDIR), like `docker commit -c`.
"""
import contextlib
import copy
import json
import shutil
import tempfile
import warnings
from datetime import datetime, timezone
from pathlib import Path

from ctrkernel.errors import BuildError, Conflict, CtrkernelWarning, HostLacks, InvalidArgument
from ctrkernel.image import default_store, get_image
from ctrkernel.image import dockerfile as df
from ctrkernel.image.extract import union_view
from ctrkernel.image.image import create_image
from ctrkernel.image.layers import layer_from_diff, layer_from_upper
from ctrkernel.runtime.diff import MOUNT_POINTS as DIFF_MOUNT_POINTS

CHANGEABLE = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "ONBUILD", "USER", "VOLUME",
              "WORKDIR", "STOPSIGNAL")
# The runtime makes these in an empty writable layer to mount /proc, /sys and /dev on: they
# are not the command's changes (the same list `docker diff` leaves out).
MOUNT_POINTS = tuple(m.strip("/") for m in DIFF_MOUNT_POINTS)


def container_layer(container, store=None):
    """Store what the container wrote as a layer (a layers.Layer), or None if it wrote nothing."""
    store = store or default_store()
    if container.isolation["rootfs"] in ("overlayfs", "fuse-overlayfs"):
        upper = Path(container.upper_dir)
        skip = [m for m in MOUNT_POINTS if (upper / m).is_dir() and not (upper / m).is_symlink()
                and not any((upper / m).iterdir())]
        if not [e for e in upper.iterdir() if e.name not in skip]:
            return None
        return layer_from_upper(store, upper, skip=skip)
    # A copied root (no overlay on this host): compare it with the union of the image's layers.
    work = Path(tempfile.mkdtemp(prefix="commit-", dir=store.tmp))
    try:
        union = union_view(container.attrs["Layers"], work / "union")
        rootfs = Path(container.dir) / "rootfs"
        skip = [m for m in MOUNT_POINTS if not (union / m).exists()]
        return layer_from_diff(store, union, rootfs, skip=skip)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def commit(container, repository=None, tag=None, message=None, author=None, changes=None,
           store=None, created=None, pause=True):
    """Return the new Image (tagged repository:tag when a repository is given).

    pause: freeze a running container while its layer is read (Docker's default), so that the
    image holds one moment of its files rather than a mix of before and after. Where the host
    cannot freeze it, a CtrkernelWarning says so and the commit goes on."""
    from ctrkernel.runtime import Container, get

    if not isinstance(container, Container):
        container = get(container)
    store = store or default_store()
    base = get_image(container.attrs.get("ImageID") or container.image, store=store)
    config = copy.deepcopy(base.config.get("config", {}))
    try:
        _apply_changes(config, changes or [])
    except BuildError as e:
        raise InvalidArgument(f"--change: {e.reason}") from None
    with _paused(container, pause):
        layer = container_layer(container, store)
    when = (created or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    entry = {"created_by": " ".join(container.command or []), "comment": message,
             "author": author}
    tags = [f"{repository}:{tag or 'latest'}"] if repository else []
    return create_image(store, parent=base, steps=[(layer, entry)], config=config, tags=tags,
                        created=when, author=author)


@contextlib.contextmanager
def _paused(container, wanted):
    paused = False
    if wanted and container.status == "running":
        try:
            container.pause()
            paused = True
        except HostLacks as e:
            warnings.warn(f"committing without pausing the container: {e}", CtrkernelWarning,
                          stacklevel=4)
        except Conflict:
            pass                  # it stopped meanwhile: nothing is writing any more
    try:
        yield
    finally:
        if paused:
            with contextlib.suppress(Conflict):   # killed while frozen: nothing to thaw
                container.unpause()


def _apply_changes(config, changes):
    """Apply `docker commit --change` lines to the config section of an image config."""
    if isinstance(changes, str):
        changes = [changes]
    env = {k: v for k, _, v in (e.partition("=") for e in config.get("Env") or [])}
    for text in changes:
        lines = df.parse("FROM scratch\n" + text + "\n")
        for ins in lines[1:]:
            if ins.keyword not in CHANGEABLE:
                raise BuildError(f"{ins.keyword} cannot be changed by commit")
            if ins.keyword == "ENV":
                for k, v in df.key_values(ins, env):
                    env[k] = v
                    config["Env"] = [e for e in config.get("Env") or []
                                     if e.partition("=")[0] != k] + [f"{k}={v}"]
            elif ins.keyword == "LABEL":
                config.setdefault("Labels", {}).update(dict(df.key_values(ins, env)))
            elif ins.keyword in ("CMD", "ENTRYPOINT"):
                argv = ins.exec_form()  # [] is a real value: `ENTRYPOINT []` clears it
                if argv is None:
                    argv = ["/bin/sh", "-c", ins.value]
                config["Cmd" if ins.keyword == "CMD" else "Entrypoint"] = argv
            elif ins.keyword == "EXPOSE":
                ports = [p if "/" in p else p + "/tcp" for p in df.words(ins.value, env)]
                config.setdefault("ExposedPorts", {}).update({p: {} for p in ports})
            elif ins.keyword == "VOLUME":
                vols = ins.exec_form()
                if vols is None:
                    vols = df.words(ins.value, env)
                config.setdefault("Volumes", {}).update({v: {} for v in vols})
            elif ins.keyword == "USER":
                config["User"] = df.substitute(ins.value, env)
            elif ins.keyword == "WORKDIR":
                config["WorkingDir"] = df.substitute(ins.value, env)
            elif ins.keyword == "STOPSIGNAL":
                config["StopSignal"] = ins.value
    return json.loads(json.dumps(config))

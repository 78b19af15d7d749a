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
import copy
import json
from datetime import datetime, timezone

from ctrkernel.errors import BuildError, InvalidArgument
from ctrkernel.image import _buildstore as store_api
from ctrkernel.image import dockerfile as df

CHANGEABLE = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "ONBUILD", "USER", "VOLUME",
              "WORKDIR", "STOPSIGNAL")


def container_layer(container, store=None):
    """Store what the container wrote as a layer; its descriptor, or None if it wrote nothing."""
    store = store or store_api.default_store()
    return store_api.layer_from_container(store, container)


def commit(container, repository=None, tag=None, message=None, author=None, changes=None,
           store=None, created=None):
    """Return the new Image (tagged repository:tag when a repository is given)."""
    from ctrkernel.runtime import Container, get

    if not isinstance(container, Container):
        container = get(container)
    store = store or store_api.default_store()
    base = store_api.load_base(store, container.attrs.get("ImageID") or container.image)
    config = copy.deepcopy(base.config)
    try:
        _apply_changes(config.setdefault("config", {}), changes or [])
    except BuildError as e:
        raise InvalidArgument(f"--change: {e.reason}") from None
    layer = container_layer(container, store)
    layers = list(base.layers)
    if layer is not None:
        layers.append(layer)
        config.setdefault("rootfs", {"type": "layers", "diff_ids": []})["diff_ids"].append(
            layer["diff_id"])
    when = (created or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    entry = {"created": when, "created_by": " ".join(container.command or [])}
    if author:
        entry["author"] = author
        config["author"] = author
    if message:
        entry["comment"] = message
    if layer is None:
        entry["empty_layer"] = True
    config.setdefault("history", []).append(entry)
    config["created"] = when
    ref = f"{repository}:{tag or 'latest'}" if repository else None
    return store_api.save_image(store, config, layers, tag=ref)


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
                argv = ins.exec_form() or ["/bin/sh", "-c", ins.value]
                config["Cmd" if ins.keyword == "CMD" else "Entrypoint"] = argv
            elif ins.keyword == "EXPOSE":
                ports = [p if "/" in p else p + "/tcp" for p in df.words(ins.value, env)]
                config.setdefault("ExposedPorts", {}).update({p: {} for p in ports})
            elif ins.keyword == "VOLUME":
                vols = ins.exec_form() or df.words(ins.value, env)
                config.setdefault("Volumes", {}).update({v: {} for v in vols})
            elif ins.keyword == "USER":
                config["User"] = df.substitute(ins.value, env)
            elif ins.keyword == "WORKDIR":
                config["WorkingDir"] = df.substitute(ins.value, env)
            elif ins.keyword == "STOPSIGNAL":
                config["StopSignal"] = ins.value
    return json.loads(json.dumps(config))

"""Images: an OCI image layout under $CTRKERNEL_HOME/images, and the builtin base images.

    from ctrkernel.image import get_image
    img = get_image("busybox")      # made on first use from the host's busybox, no network
    img.id, img.config, img.layer_dirs()

The layout (oci-layout, index.json, blobs/sha256/...) and the layer operations live in
`_buildstore` for now; this module names images and makes the builtin ones.
"""
import os
import shutil
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from ctrkernel import paths
from ctrkernel.errors import HostLacks, ImageNotFound
from ctrkernel.image import _buildstore as store_ops

BUILTIN = ("busybox",)


class Store:
    """The OCI image layout all images of this CTRKERNEL_HOME live in."""

    def __init__(self, root=None):
        self.root = Path(root) if root else paths.subdir("images")

    def __repr__(self):
        return f"<Store {self.root}>"


def default_store():
    return Store()


def _busybox_binary():
    for candidate in (shutil.which("busybox"), "/bin/busybox", "/usr/bin/busybox"):
        if candidate and os.path.exists(candidate):
            return candidate
    raise HostLacks("the builtin busybox image", "busybox (no busybox binary on this host)",
                    "apt-get install busybox-static")


def _busybox_tree(root):
    """The files of the busybox base: the static binary, an applet link each, a minimal /etc."""
    binary = _busybox_binary()
    bindir = root / "bin"
    bindir.mkdir(parents=True)
    shutil.copy2(binary, bindir / "busybox")
    os.chmod(bindir / "busybox", 0o755)
    applets = subprocess.run([binary, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for name in sorted(set(applets) - {"busybox"}):
        os.symlink("busybox", bindir / name)
    for d in ("etc", "root", "home", "var", "proc", "sys", "dev", "usr/bin", "usr/sbin", "sbin"):
        (root / d).mkdir(parents=True, exist_ok=True)
    tmp = root / "tmp"
    tmp.mkdir()
    os.chmod(tmp, 0o1777)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                     "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    (root / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (root / "etc/hostname").write_text("busybox\n")


def _make_busybox(store):
    work = Path(tempfile.mkdtemp(prefix="busybox-", dir=store_ops.tmp_dir()))
    try:
        _busybox_tree(work / "root")
        layer = store_ops.layer_from_tree(store, work / "root")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    version = subprocess.run([_busybox_binary()], capture_output=True,
                             text=True).stdout.splitlines()[:1]
    # A fixed creation time keeps the image id the same on every machine with this busybox.
    created = datetime.fromtimestamp(0, timezone.utc).isoformat().replace("+00:00", "Z")
    config = {
        "architecture": store_ops.ARCH, "os": "linux", "created": created,
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "Cmd": ["sh"], "Labels": {"org.ctrkernel.builtin": "busybox"}},
        "rootfs": {"type": "layers", "diff_ids": [layer["diff_id"]]},
        "history": [{"created": created,
                     "created_by": f"ctrkernel: the host's {version[0] if version else 'busybox'}",
                     "comment": "builtin image, made from the host's static busybox"}],
    }
    return store_ops.save_image(store, config, [layer], tag="busybox:latest")


def _find(store, ref):
    """The stored image named ref (name[:tag], or an id or its prefix), else None."""
    import json

    root = store_ops._root(store)
    try:
        index = json.loads((root / "index.json").read_text())
    except FileNotFoundError:
        return None
    wanted = store_ops.full_tag(ref)
    bare = ref.split(":", 1)[1] if ref.startswith("sha256:") else ref
    for entry in index["manifests"]:
        name = entry.get("annotations", {}).get(store_ops.REF_NAME)
        manifest = store_ops._read_json_blob(store, entry["digest"])
        config_digest = manifest["config"]["digest"]
        if name == wanted or (len(bare) >= 6 and config_digest.split(":")[1].startswith(bare)):
            config = store_ops._read_json_blob(store, config_digest)
            layers = [dict(l, diff_id=d) for l, d in
                      zip(manifest["layers"], config["rootfs"]["diff_ids"])]
            return store_ops.BuiltImage(store, config, layers, tags=[name] if name else [])
    return None


def get_image(ref, store=None):
    """The image named ref; builtin images (busybox) are made on first use. ImageNotFound else."""
    store = store or default_store()
    found = _find(store, ref)
    if found is not None:
        return found
    name, _, tag = ref.partition(":")
    if name in BUILTIN and tag in ("", "latest"):
        return _make_busybox(store)
    raise ImageNotFound(ref, "builtin images: " + ", ".join(BUILTIN) + "; nothing is downloaded")

"""Helpers for chapter 04 (images and layers), so that notebook cells stay short.

- `make_tree(dir, {"path": "content" | None})`: write (or, with None, delete) files by hand;
- `tree_listing(dir)`, `tar_listing(blob)`: what a directory or a layer tar holds;
- `layer_rows(image)`: one row per layer (its step, size, files), as `docker history` sees it;
- `sharing(images)`: how many bytes images share, against a world without sharing;
- `layer_explorer(images)`: a plotly sunburst image -> layers -> largest paths, shared layers
  marked;
- `vm_disk_sizes(dir)`: a real VM disk image built here (ctrkernel.vm.disk) and its sizes, with
  the kernel, initramfs and modules measured from the kernel package the course boots.
"""
import glob
import gzip
import os
import stat
import tarfile
from collections import Counter
from pathlib import Path


# ------------------------------------------------------------------ directories by hand

def make_tree(root, files):
    """Create files under root: {"etc/motd": "hi\\n"}; a value None deletes the path."""
    root = Path(root)
    for rel, content in files.items():
        path = root / rel
        if content is None:
            if path.is_dir() and not path.is_symlink():
                import shutil
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return root


def tree_listing(root):
    """Sorted relative paths under root, directories marked with a trailing /."""
    root = Path(root)
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        out.append(rel + "/" if p.is_dir() and not p.is_symlink() else rel)
    return out


def tar_listing(blob):
    """[(name, kind, size)] of a (possibly gzip-compressed) layer tar, in stored order."""
    opener = gzip.open if _is_gzip(blob) else open
    kinds = {tarfile.REGTYPE: "file", tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink",
             tarfile.LNKTYPE: "hardlink", tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block",
             tarfile.FIFOTYPE: "fifo"}
    with opener(blob, "rb") as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
        rows = []
        for member in tar:
            kind = kinds.get(member.type, "other")
            if os.path.basename(member.name).startswith(".wh."):
                kind = "opaque" if member.name.endswith(".wh..wh..opq") else "whiteout"
            rows.append((member.name, kind, member.size))
        return rows


def _is_gzip(path):
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def tree_bytes(root):
    """Bytes of regular files under root (each inode once), without following links."""
    from ctrkernel.image.usage import tree_bytes as count
    return count(root)


def largest_paths(root, top=5, depth=2):
    """The `top` largest paths of a layer tree, summed to `depth` components (e.g. usr/lib)."""
    sizes = Counter()
    root = str(root)
    for dirpath, _, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        parts = [] if rel_dir == "." else rel_dir.split(os.sep)
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            size = st.st_size if stat.S_ISREG(st.st_mode) else 0
            key = "/".join((parts + [name])[:depth])
            sizes[key] += size
    return sizes.most_common(top)


# ------------------------------------------------------------------ images and their layers

def _history_steps(config):
    """The history entries that made a layer, in layer order (empty_layer ones skipped)."""
    return [h for h in config.get("history", []) if not h.get("empty_layer")]


def layer_rows(image):
    """One dict per layer, lowest first: diff_id, created_by, bytes, files."""
    diff_ids = image.config.get("rootfs", {}).get("diff_ids", [])
    steps = _history_steps(image.config)
    rows = []
    for i, (diff_id, directory) in enumerate(zip(diff_ids, image.layer_dirs())):
        step = steps[i].get("created_by", "") if i < len(steps) else ""
        files = sum(len(f) for _, _, f in os.walk(directory))
        rows.append({"layer": i + 1, "diff_id": diff_id, "created_by": step,
                     "bytes": tree_bytes(directory), "files": files, "dir": str(directory)})
    return rows


def _name(image):
    tags = list(getattr(image, "tags", []) or [])
    return tags[0] if tags else image.id.split(":")[-1][:12]


def sharing(images):
    """{"images": n, "layers": n, "unique_layers": n, "bytes_stored": b, "bytes_if_copied": b}.

    `bytes_if_copied` is what the same images would take if each kept its own full copy of
    every layer (as a VM disk image does); `bytes_stored` counts each layer once.
    """
    per_layer, total = {}, 0
    for image in images:
        for row in layer_rows(image):
            per_layer[row["diff_id"]] = row["bytes"]
            total += row["bytes"]
    return {"images": len(images), "layers": sum(len(layer_rows(i)) for i in images),
            "unique_layers": len(per_layer), "bytes_stored": sum(per_layer.values()),
            "bytes_if_copied": total}


def layer_explorer(images, top=4, title="Images, their layers and their largest paths"):
    """A plotly sunburst: image -> layer -> largest paths; a layer used by 2+ images is marked.

    Sizes are bytes of the extracted layer trees. A shared layer appears under each image that
    uses it (that is how each image sees it) but is stored once: its label says "shared".
    """
    import plotly.graph_objects as go

    rows = {_name(img): layer_rows(img) for img in images}
    uses = Counter(r["diff_id"] for layers in rows.values() for r in layers)
    ids, labels, parents, values, colors, hover = [], [], [], [], [], []

    def node(id_, label, parent, value, color, text):
        ids.append(id_), labels.append(label), parents.append(parent)
        values.append(value), colors.append(color), hover.append(text)
        return len(ids) - 1

    for name, layers in rows.items():
        # With branchvalues="total" a parent must be at least the sum of its children, so the
        # values are summed bottom-up (a tiny layer still gets a visible sliver of 1 byte).
        image_node = node(name, name, "", 0, "#dddddd", f"{name}: {len(layers)} layers")
        for r in layers:
            layer_id = f"{name}/L{r['layer']}"
            shared = uses[r["diff_id"]] > 1
            short = r["diff_id"].split(":")[-1][:12]
            paths = [(p, max(size, 1)) for p, size in largest_paths(r["dir"], top=top)]
            value = max(r["bytes"], sum(v for _, v in paths), 1)
            node(layer_id, f"L{r['layer']} {short}" + (" (shared)" if shared else ""), name,
                 value, "#4c9be8" if shared else "#f2a541",
                 f"{(r['created_by'] or '')[:80]}<br>{r['bytes']:,} bytes, {r['files']} files, "
                 f"used by {uses[r['diff_id']]} image(s)")
            values[image_node] += value
            for path, size in paths:
                node(f"{layer_id}/{path}", path, layer_id, size,
                     "#9cc3f0" if shared else "#a8d08d", f"{path}: {size:,} bytes")
    fig = go.Figure(go.Sunburst(ids=ids, labels=labels, parents=parents, values=values,
                                branchvalues="total", marker={"colors": colors},
                                hovertext=hover, hoverinfo="text"))
    fig.update_layout(title=title + " (blue: shared layers)", margin={"t": 50, "l": 0, "r": 0,
                                                                       "b": 0}, height=520)
    return fig


# ------------------------------------------------------------------ a VM's disk, for contrast

def vm_disk_sizes(directory=None, qcow2=True):
    """Bytes of what booting a VM of this host's kernel needs, measured here.

    Builds a real VM disk image (ctrkernel.vm.disk: ext4 with busybox, the kernel's modules,
    /boot/vmlinuz and initrd) in `directory` (a temporary one, removed, when None) and returns
    {"disk": DiskImage.to_dict() or None, "why": None or why no disk could be built,
     "version", "kernel", "initramfs", "modules"}: the last four are the kernel's own files,
    measured from the host whether or not a disk was built, so a host without mke2fs or
    qemu-img still gets (labelled) numbers. A container image needs none of this: it uses the
    host's running kernel.
    """
    from ctrkernel.errors import CtrkernelError
    from ctrkernel.vm import disk, initramfs, qemu
    try:
        kernel = str(qemu.find_kernel())
    except CtrkernelError:
        kernels = sorted(glob.glob("/boot/vmlinuz-*"))
        kernel = kernels[-1] if kernels else None
    if kernel is None:
        return {"disk": None, "why": "no /boot/vmlinuz-* on this host", "version": None,
                "kernel": 0, "initramfs": 0, "modules": 0}
    version = initramfs.kernel_release(kernel)
    initrd = f"/boot/initrd.img-{version}"
    modules = f"/lib/modules/{version}"
    result = {"disk": None, "why": None, "version": version, "kernel": _size(kernel),
              "initramfs": _size(initrd) if os.access(initrd, os.R_OK) else 0,
              "modules": tree_bytes(modules) if os.path.isdir(modules) else 0}
    temporary = directory is None
    if temporary:
        import tempfile
        directory = tempfile.mkdtemp(prefix="ctrkernel-vmdisk-")
    try:
        result["disk"] = disk.build(directory, kernel=kernel, qcow2=qcow2).to_dict()
    except CtrkernelError as e:
        result["why"] = str(e)
    finally:
        if temporary:
            import shutil
            shutil.rmtree(directory, ignore_errors=True)
            if result["disk"]:
                result["disk"]["path"] = result["disk"]["qcow2_path"] = None  # removed
    return result


def _size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def human(n):
    """Bytes as Docker prints them (1.23MB: powers of 1000, as `docker images` does)."""
    from ctrkernel.image.display import human_size
    return human_size(n)


# ------------------------------------------------------------------ layers by hand

def layer_from_change(before, after):
    """Store the change from directory `before` to `after` as a layer, as a build step would:
    added and changed files are copied, deleted ones become `.wh.` whiteouts.

    Returns a dict: the layer's digest, size (gzip bytes), diff_id, tar_size, entries, and the
    path of its gzip blob.
    """
    from ctrkernel.image import default_store
    from ctrkernel.image.layers import LayerWriter, layer_from_diff

    store = default_store()
    layer = layer_from_diff(store, before, after)
    if layer is None:  # nothing changed: an empty layer, as a step that changed nothing
        with LayerWriter(store) as w:
            pass
        layer = w.layer
    return {"digest": layer.digest, "diff_id": layer.diff_id, "size": layer.size,
            "tar_size": layer.tar_size, "entries": layer.entries,
            "blob": str(store.blob_path(layer.digest))}


def union_view(layers, target):
    """Apply layers lowest first into target (whiteouts delete): what a container sees."""
    from ctrkernel.image import default_store
    from ctrkernel.image.extract import union_view as merge
    from ctrkernel.image.store import MT_LAYER_GZIP

    store = default_store()
    dirs = [store.layer_dir({"mediaType": MT_LAYER_GZIP, "digest": layer["digest"],
                             "size": layer["size"]}, layer["diff_id"]) for layer in layers]
    return merge(dirs, target)


def image_from_layers(layers, cmd=None, tag=None, env=None):
    """An image made of the given layers (from layer_from_change), with a minimal config."""
    from ctrkernel.image import create_image, default_store
    from ctrkernel.image.layers import Layer

    epoch = "1970-01-01T00:00:00Z"
    steps = [(Layer(l["digest"], l["diff_id"], l["size"], l["tar_size"], l["entries"]),
              {"created_by": f"layer by hand {i + 1}"}) for i, l in enumerate(layers)]
    return create_image(default_store(), parent=None, steps=steps, created=epoch,
                        tags=[tag] if tag else [],
                        config={"Env": env or ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
                                "Cmd": cmd or ["sh"]})


def load(ref):
    """An image by tag or id, with its layers (the builtin ones are made on first use)."""
    from ctrkernel.image import get_image
    return get_image(ref)


def history(image):
    """`docker history` for an image, as rows for show_table: newest first; IMAGE is <missing>
    below the top, as for a pulled image. Sizes are the layers' uncompressed tar bytes."""
    from ctrkernel.image.display import ago, human_size

    return [{"IMAGE": row["id"] if row["id"] == "<missing>" else image.short_id,
             "CREATED": ago(row["created"]), "CREATED BY": row["created_by"],
             "SIZE": human_size(row["size"]), "COMMENT": row["comment"]}
            for row in image.history()]


def show_table(rows, width=60):
    """Print dict rows as a plain table (what the command line prints)."""
    if not rows:
        print("(empty)")
        return
    cols = list(rows[0])
    cells = [[str(r[c])[:width] for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print("   ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip())
    for row in cells:
        print("   ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


# ------------------------------------------------------------------ the deck's web example

def web_context(directory, html, title="ctrkernel"):
    """A build context for the deck's three-layer web image: base OS files, a web server
    (busybox httpd), and HTML files. Returns the directory."""
    import shutil

    d = Path(directory)
    make_tree(d / "base", {
        "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/var/www:/bin/false\n",
        "etc/group": "root:x:0:\nwww:x:33:\n",
        "etc/os-release": f'NAME="{title} base"\nID=ctrkernel\n',
        "tmp/.keep": "", "var/www/.keep": ""})
    (d / "server").mkdir(parents=True, exist_ok=True)
    shutil.copy(shutil.which("busybox") or "/bin/busybox", d / "server" / "busybox")
    make_tree(d / "html", html)
    (d / "Dockerfile").write_text(
        "# the deck's web service: OS base files + a web server + HTML files\n"
        "FROM scratch\n"
        "COPY base/ /\n"
        "COPY server/busybox /bin/busybox\n"
        "COPY html/ /var/www/\n"
        "ENV PATH=/bin\n"
        "EXPOSE 80\n"
        'CMD ["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/var/www"]\n')
    return d


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(image, port=None, publish=True):
    """Start the web image with its port published on 127.0.0.1:port; returns (container,
    url). The server listens on the same number inside, so this also works where the container
    has no network namespace of its own (then inside and outside are the same port). With
    publish=False the container shares the host's network namespace instead (`--network host`).
    """
    from ctrkernel.runtime import create

    from ctrkernel.host import doctor

    port = port or free_port()
    command = ["/bin/busybox", "httpd", "-f", "-p", str(port), "-h", "/var/www"]
    if doctor().isolation == "none":
        publish = False  # no network namespace: the container's ports are the host's own
    if publish:
        container = create(image, command, ports={f"{port}/tcp": port})
    else:
        container = create(image, command, network="host")
    container.start()
    return container, f"http://127.0.0.1:{port}/"


def fetch(url, attempts=50):
    """GET url with requests, retrying while the server starts."""
    import time

    import requests

    for _ in range(attempts):
        try:
            return requests.get(url, timeout=2)
        except requests.ConnectionError:
            time.sleep(0.1)
    return requests.get(url, timeout=2)


def run_or_explain(image, command, **options):
    """Run command in a container of image and return its output; where this host cannot run
    containers, return the reason instead (the notebook shows it, it does not fail)."""
    from ctrkernel.errors import CtrkernelError
    from ctrkernel.runtime import create

    try:
        container = create(image, command, **options)
    except CtrkernelError as e:
        return f"(cannot run a container here: {e})"
    try:
        container.start()
        container.wait()
        out = container.logs(stdout=True, stderr=True)
        return out.decode(errors="replace") if isinstance(out, bytes) else out
    except CtrkernelError as e:
        return f"(the container could not run: {e})"
    finally:
        container.remove(force=True)


APPLETS = ("sh", "ls", "cat", "echo", "grep", "rm", "mkdir", "id", "mount", "touch", "head",
           "wc", "du", "sort", "httpd", "find", "test", "[")


def busybox_tree(root):
    """A minimal root filesystem: the host's static busybox and links for a few applets."""
    import shutil

    root = Path(root)
    (root / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy(shutil.which("busybox") or "/bin/busybox", root / "bin" / "busybox")
    for applet in APPLETS:
        link = root / "bin" / applet
        if not link.is_symlink():
            link.symlink_to("busybox")
    for d in ("etc", "tmp", "proc", "sys", "dev"):
        (root / d).mkdir(exist_ok=True)
    return root


def write_in_container(image, command):
    """Run a command that writes, then show where the writes went: the container's own
    writable layer (the overlay's upper directory), never the image's layers."""
    from ctrkernel.errors import CtrkernelError
    from ctrkernel.runtime import create

    try:
        container = create(image, command)
    except CtrkernelError as e:
        return {"ran": False, "why": str(e)}
    try:
        container.start()
        container.wait()
        kind = container.isolation["rootfs"]
        result = {"ran": True, "rootfs": kind,
                  "output": container.logs(stdout=True, stderr=True).decode(errors="replace")}
        if kind in ("overlayfs", "fuse-overlayfs"):
            result["writable layer"] = [p for p in tree_listing(container.upper_dir)
                                        if p.rstrip("/") not in ("proc", "sys", "dev")]
            result["docker diff"] = [("CAD"[d["Kind"]], d["Path"]) for d in container.diff()]
        else:
            result["writable layer"] = (f"none: this host gives the container a {kind} root, a "
                                        "private copy of the layers that takes the writes")
        return result
    finally:
        container.remove(force=True)


def base_image():
    """A base image with a shell: the builtin `busybox` where the image store provides it,
    otherwise one made here from the host's busybox (same files, built from scratch)."""
    import shutil
    import tempfile

    try:
        from ctrkernel.image import get_image
        get_image("busybox")
        return "busybox"
    except Exception:  # the builtin images are not available in this installation
        pass
    from ctrkernel.image.build import build

    context = Path(tempfile.mkdtemp(prefix="ctrkernel-base-"))
    try:
        busybox_tree(context / "root")
        (context / "Dockerfile").write_text(
            "FROM scratch\nCOPY root/ /\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n"
            "ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin\nCMD [\"sh\"]\n")
        build(context, tag="base:1")
    finally:
        shutil.rmtree(context, ignore_errors=True)
    return "base:1"


def store_blobs():
    """How many blobs (layers, configs, manifests) the image store holds."""
    from ctrkernel.image import default_store
    return len(list(default_store().blobs.iterdir()))


def cache_report(log):
    """[(step, came from the cache)] from a build log (FROM, which only loads, is left out)."""
    rows = []
    for i, line in enumerate(log):
        if line.startswith("Step ") and " : FROM " not in line:
            step = line.split(" : ", 1)[1]
            rows.append((step, i + 1 < len(log) and log[i + 1] == " ---> Using cache"))
    return rows

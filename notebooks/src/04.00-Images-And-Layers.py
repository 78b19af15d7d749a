# %% [markdown]
# # 04 · Images and layers
#
# > **Q4 · 컨테이너의 장점은?** — *What are the advantages of containers?*
#
# The deck answers part of Q4 with images: *"small images made of layers"*, *"an image is a
# stack of read-only layers, parent and child, each recording only changes; common layers are
# shared between images, saving disk."* A VM, by contrast, carries a whole disk image that is
# *"huge and hard to reuse"*.
#
# This chapter makes each of those words something you can hold:
#
# | section | you will |
# |---|---|
# | **04.00** (this one) | make two layers **by hand** from a directory change, including a deletion (a *whiteout*); stack them; look at the stack **from inside a container** |
# | 04.01 | build the deck's web image as three layers and **serve it** on a port; share layers between two images and count the disk saved; read the **history**; explore layers at a glance |
# | 04.02 | build from a **Dockerfile** and watch the **cache**; commit a container; compare an image's size with what a VM needs |
#
# **Objectives**
# - say what an image is, in files: layer tars plus a JSON config;
# - make a layer from a change to a directory and read what is in it, deletions included;
# - explain how a container sees one filesystem made of several read-only layers, and where its
#   own writes go.

# %% [markdown]
# ## What this machine allows
#
# Layers, images and builds are only files: they need **no privilege at all**. Running a
# container from an image needs what chapter 02 showed (namespaces), or at least `proot` to fake
# the root directory where nothing can be isolated (a Binder session).

# %%
import ctrkernel
from ctrkernel.lessons import images as L

report = ctrkernel.doctor()
print("isolation:", report.isolation)
print("overlayfs for container roots:", report.ok("overlayfs"), "| proot fallback:", report.ok("proot"))
print("layers and images: always (they are files) | containers:",
      "yes" if report.isolation != "none" or report.ok("proot") else "no (shown as explanations)")

# %% [markdown]
# ## 1 · A layer is a tar of what changed
#
# Start with a directory: the files of a tiny "version 1" of a system.

# %%
import tempfile
from pathlib import Path

work = Path(tempfile.mkdtemp(prefix="ch04-"))
empty, v1 = work / "empty", work / "v1"
empty.mkdir()
L.make_tree(v1, {
    "etc/motd": "Welcome to version 1\n",
    "etc/app.conf": "debug=false\n",
    "var/log/old.log": "x" * 5000 + "\n",
})
L.tree_listing(v1)

# %% [markdown]
# The first layer is the difference between *nothing* and version 1: every file is new. A layer
# is stored as a gzip-compressed tar, named by the SHA-256 of its bytes (its *digest*); the
# digest of the uncompressed tar is its `diff_id`. Same files, same digest: the tar is written
# with sorted entries and normalised times and owners, so that it can be recognised and shared.

# %%
layer1 = L.layer_from_change(empty, v1)
print("digest :", layer1["digest"])
print("diff_id:", layer1["diff_id"])
print("stored :", layer1["size"], "bytes (gzip)")
L.tar_listing(layer1["blob"])

# %% [markdown]
# Now change the system: edit a file, add one, and **delete** one. The second layer records only
# that. A deletion cannot be "a file that is not there" (a tar can only add things), so the OCI
# image spec records it as a *whiteout*: an empty file named `.wh.<name>` beside where the
# deleted file was.

# %%
import shutil

v2 = work / "v2"
shutil.copytree(v1, v2)
L.make_tree(v2, {
    "etc/app.conf": "debug=true\n",          # changed
    "etc/new-feature": "on\n",               # added
    "var/log/old.log": None,                 # deleted
})
layer2 = L.layer_from_change(v1, v2)
L.tar_listing(layer2["blob"])

# %%
# NBVAL_CHECK_OUTPUT
# The second layer holds only the change: two small files and one whiteout, not the 5 kB log.
kinds = [(name, kind) for name, kind, size in L.tar_listing(layer2["blob"]) if kind != "dir"]
print(kinds)
print("layer 2 is smaller than layer 1:", layer2["size"] < layer1["size"])

# %% [markdown]
# ### Stacking layers: the union view
#
# A container sees the layers applied lowest first: later files replace earlier ones, and a
# whiteout removes what is below it. Applying both layers gives back version 2 exactly.

# %%
union = L.union_view([layer1, layer2], work / "union")
L.tree_listing(union)

# %% [markdown]
# ### Check your work
#
# **Exercise 1.** Predict: is the union of the two layers *exactly* the `v2` directory, contents
# included? Then run the check.

# %%
# NBVAL_CHECK_OUTPUT
# Check your work (exercise 1): same paths and same bytes in every file.
same_paths = L.tree_listing(union) == L.tree_listing(v2)
same_bytes = all((union / p).read_bytes() == (v2 / p).read_bytes()
                 for p in L.tree_listing(v2) if not p.endswith("/"))
print("same paths:", same_paths, "| same contents:", same_bytes)

# %% [markdown]
# ## 2 · The union seen from inside a container
#
# An image is those layers plus a small JSON **config** (command, environment, working
# directory...), stored the same way, by digest. Let us put a shell under our two layers, so
# there is something to run: a third layer, *below* them, with the static `busybox`.

# %%
layer0 = L.layer_from_change(empty, L.busybox_tree(work / "busybox"))
image = L.image_from_layers([layer0, layer1, layer2], tag="by-hand:1")
print(image, "made of", len(image.layers), "layers")
print({k: image.config[k] for k in ("architecture", "os", "rootfs")})

# %% [markdown]
# Inside the container, `/` is one filesystem. With root (or a user namespace that allows it)
# it is an **overlay** mount: the layers are its read-only `lowerdir`s, and a fresh, empty
# `upperdir` takes the container's writes. Where nothing can be isolated, the runtime gives the
# container a private copy of the layers instead, through `proot` (and says so).

# %%
print(L.run_or_explain(image, ["sh", "-c",
      "echo '--- the root mount, one option a line:'; "
      "grep ' / ' /proc/mounts | tr ',:' '\\n\\n' | cut -c1-110; "
      "echo '--- /etc:'; ls /etc; echo '--- app.conf:'; cat /etc/app.conf; "
      "echo '--- /var/log:'; ls /var/log"]))

# %% [markdown]
# The deleted log is gone and `app.conf` says `debug=true`: the container sees version 2, the
# union. On an overlay root, the mount lists the three layer trees as `lowerdir`s (the top
layer first) and the container's own `upperdir`. Under `proot` (a Binder session) the mount
table is the host's: `proot` only *translates paths* for the container's processes, so there is
no mount to see, yet the files are the union all the same. Now let the container **write**: change a file, create one, delete one. The writes go to
# the container's own writable layer; the image's layers are never touched, which is why many
# containers can share one image.

# %%
result = L.write_in_container(image, ["sh", "-c",
    "echo changed > /etc/motd; echo hi > /tmp/mine; rm /etc/new-feature; echo done"])
result

# %% [markdown]
# ### Check your work
#
# **Exercise 2.** The container above overwrote `/etc/motd`. Did that change the image? Check
# the file in the image's layer tree (what every new container starts from).

# %%
# NBVAL_CHECK_OUTPUT
# Check your work (exercise 2): the image's layer still holds version 1's motd.
layer_tree = image.layer_dirs()[1]
print((layer_tree / "etc" / "motd").read_text().strip())
print(L.run_or_explain(image, ["cat", "/etc/motd"]).strip().splitlines()[-1])

# %% [markdown]
# ## Key points
#
# - An image is **files**: layer tars and a JSON config, each named by the SHA-256 of its bytes.
# - A layer records only a **change**: added and changed files, and deletions as `.wh.`
#   whiteouts. Applied in order, the layers give one filesystem: the *union*.
# - A container sees the union through an overlay mount (or a private copy where overlay is not
#   allowed); its writes go to its **own** writable layer, so the image stays read-only and
#   shareable.
#
# ## Exercises
#
# 3. Make a third layer that deletes the whole `/etc` directory, and look at its tar: how many
#    whiteouts does it need? (Use `L.layer_from_change(v2, v3)` and `L.tar_listing`.)
# 4. Make the same first layer twice, from two copies of `v1` made at different times. Are the
#    digests equal? Why does that matter for sharing?

# %%
# Check your work (exercise 4): two copies of v1, made at different times, give one digest.
import os

copy = work / "v1-copy"
shutil.copytree(v1, copy)
os.utime(copy / "etc" / "motd", (0, 0))
print("same digest:", L.layer_from_change(empty, copy)["digest"] == layer1["digest"])

# %% [markdown]
# <details><summary>Solutions</summary>
#
# 3. One: `.wh.etc`. A whiteout hides a whole directory tree below it, whatever it contains.
# 4. Yes. File times and owner names are normalised when the tar is written, so the digest
#    depends only on names, modes and contents. Two images built from the same files therefore
#    name the same layer, and a store keeps it once. If times leaked into layers, nothing would
#    ever be shared or cached.
#
# </details>

# %%
shutil.rmtree(work, ignore_errors=True)

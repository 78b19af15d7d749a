"""What a container changed: read from its overlay upper directory (`docker diff`).

overlayfs records a deletion as a whiteout (a character device 0/0) and a directory whose
lower contents are hidden as "opaque" (an xattr, trusted.overlay.opaque for root or
user.overlay.opaque in a user namespace). fuse-overlayfs, where it may not make device nodes,
writes `.wh.NAME` files and `.wh..wh..opq` instead, as image layers do. Everything else in the upper directory was added
(absent from every lower layer) or changed (present in one).

Where the root is a plain copy of the layers (no overlay anywhere: `copy`, `proot-copy`),
`copy_changes` compares the copy with the image's union instead, by metadata.
"""
import os
import stat

KIND = {"C": 0, "A": 1, "D": 2}  # Docker's numeric kinds
MOUNT_POINTS = ("/proc", "/sys", "/dev")


def is_opaque(path):
    """Whether overlayfs marked this upper directory opaque (its lower contents hidden)."""
    for name in ("trusted.overlay.opaque", "user.overlay.opaque", "user.fuseoverlayfs.opaque"):
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            pass
    return False


def changes(upper, lowers):
    """[(kind letter, path)] sorted by path."""
    found, opaque = [], []

    def in_lower(rel):
        # Below an opaque directory nothing of the lower layers shows through.
        if any(o == "." or rel.startswith(o + "/") for o in opaque):
            return False
        return any(os.path.lexists(os.path.join(low, rel)) for low in lowers)

    for dirpath, dirnames, filenames in os.walk(upper):
        rel_dir = os.path.relpath(dirpath, upper)
        if ".wh..wh..opq" in filenames:  # fuse-overlayfs's opaque mark without xattrs
            opaque.append(rel_dir)
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            path = "/" + rel
            st = os.lstat(full)
            if stat.S_ISDIR(st.st_mode) and is_opaque(full):
                opaque.append(rel)
            if path in MOUNT_POINTS and stat.S_ISDIR(st.st_mode) and not os.listdir(full):
                continue  # a mount point we made, not a change the command made
            if name == ".wh..wh..opq":
                continue
            if name.startswith(".wh."):  # fuse-overlayfs's whiteout where mknod is refused
                found.append(("D", "/" + os.path.normpath(os.path.join(rel_dir, name[4:]))))
                continue
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                found.append(("D", path))
            elif in_lower(rel):
                found.append(("C", path))
            else:
                found.append(("A", path))
    return sorted(found, key=lambda kv: kv[1])


# ------------------------------------------------------------------ a copied root

def union_index(lowers):
    """{relative path: that entry in the topmost layer showing it}: the image's union as a
    container starts from it (whiteouts and opaque directories in both forms, as
    image.extract.union_view applies them), found without copying anything."""
    index = {}
    dirs = set()          # the directories in index: only they have entries below them

    def drop(rel, itself=True):
        if rel in dirs:   # the scan only when there is something below: not once per file
            prefix = rel + "/"
            for key in [k for k in index if k.startswith(prefix)]:
                del index[key]
                dirs.discard(key)
        if itself:
            index.pop(rel, None)
            dirs.discard(rel)

    for layer in lowers:
        for dirpath, dirnames, filenames in os.walk(layer):
            rel_dir = os.path.relpath(dirpath, layer)
            if ".wh..wh..opq" in filenames or (rel_dir != "." and is_opaque(dirpath)):
                if rel_dir == ".":
                    index.clear()
                    dirs.clear()
                else:
                    drop(rel_dir, itself=False)
            for name in sorted(dirnames + filenames):
                if name == ".wh..wh..opq":
                    continue
                rel = os.path.normpath(os.path.join(rel_dir, name))
                if name.startswith(".wh."):
                    drop(os.path.normpath(os.path.join(rel_dir, name[4:])))
                    continue
                full = os.path.join(dirpath, name)
                st = os.lstat(full)
                if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                    drop(rel)
                    continue
                if stat.S_ISDIR(st.st_mode):
                    dirs.add(rel)
                else:
                    drop(rel, itself=False)  # a file over a directory hides all it held
                    dirs.discard(rel)
                index[rel] = full
    return index


def copy_changes(root, lowers):
    """[(kind letter, path)] for a root filesystem that is a copy of the image's layers (no
    overlay, so no upper directory records what changed): the copy compared with the image's
    union, by the metadata the copy preserved, as Docker's own diff does where it has no
    overlay (type, mode, owner, size, modification time, link target, device number).

    As overlayfs's upper directory would show them: a deletion is reported once, at the top
    of what was deleted, and each directory holding a change is itself changed. One
    difference remains: overlay reports what was touched (a chmod to the same mode copies the
    file up), this what differs; and a rewrite keeping size and modification time (touch -d)
    is not seen, as in Docker's diff without overlay."""
    index = union_index(lowers)
    as_root = os.geteuid() == 0
    if not as_root:
        # Unprivileged, the copy could hold neither device nodes nor fifos, nor the owners of
        # the image's files (union_view skipped both): not changes made by the command.
        index = {rel: full for rel, full in index.items()
                 if stat.S_IFMT(os.lstat(full).st_mode) in (stat.S_IFDIR, stat.S_IFREG,
                                                            stat.S_IFLNK)}
    found, dirs = {}, {"."}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            st = os.lstat(full)
            if stat.S_ISDIR(st.st_mode):
                dirs.add(rel)
            old = index.get(rel)
            if old is None:
                if "/" + rel in MOUNT_POINTS and stat.S_ISDIR(st.st_mode) and not os.listdir(full):
                    continue  # a mount point we made, not a change the command made
                found[rel] = "A"
            elif _differs(os.lstat(old), st, old, full, as_root):
                found[rel] = "C"
    dirs.add("")  # os.path.dirname's name for the root
    for rel in index:
        if os.path.dirname(rel) in dirs and not os.path.lexists(os.path.join(root, rel)):
            found[rel] = "D"
    for rel in list(found):
        parent = os.path.dirname(rel)
        while parent and parent not in found:
            found[parent] = "C"
            parent = os.path.dirname(parent)
    return sorted(((kind, "/" + rel) for rel, kind in found.items()), key=lambda kv: kv[1])


def _differs(old, new, old_path, new_path, as_root):
    if stat.S_IFMT(old.st_mode) != stat.S_IFMT(new.st_mode):
        return True
    if stat.S_IMODE(old.st_mode) != stat.S_IMODE(new.st_mode) and not stat.S_ISLNK(new.st_mode):
        return True
    if as_root and (old.st_uid, old.st_gid) != (new.st_uid, new.st_gid):
        return True
    if stat.S_ISLNK(new.st_mode):
        # The copy makes links anew (their own times are not kept): compare what they name.
        return os.readlink(old_path) != os.readlink(new_path)
    if stat.S_ISCHR(new.st_mode) or stat.S_ISBLK(new.st_mode):
        return old.st_rdev != new.st_rdev
    if stat.S_ISREG(new.st_mode) and old.st_size != new.st_size:
        return True
    return old.st_mtime_ns != new.st_mtime_ns

"""What a container changed: read from its overlay upper directory (`docker diff`).

overlayfs records a deletion as a whiteout (a character device 0/0) and a directory whose
lower contents are hidden as "opaque" (an xattr, trusted.overlay.opaque for root or
user.overlay.opaque in a user namespace). fuse-overlayfs, where it may not make device nodes,
writes `.wh.NAME` files and `.wh..wh..opq` instead, as image layers do. Everything else in the upper directory was added
(absent from every lower layer) or changed (present in one).
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

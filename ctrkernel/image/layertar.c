/* The two inner loops of layers, in C: writing a tree as a tar stream (ct_pack_*) and
 * unpacking an untrusted tar stream into a fresh directory (ct_unpack).
 *
 * Why C: for a layer of 10,000 small files, Python spends ~10 us per entry parsing or building
 * the header and ~15 us around the system calls, where GNU tar spends ~20 us in all. The
 * Python versions (extract.py with tarstream.py, layers.py) stay the reference and the
 * fallback where no C compiler is installed (Binder); tests/test_layer_native.py holds the two
 * to the same bytes out and the same refusals in.
 *
 * Loaded with ctypes (see native.py): a ctypes call releases the GIL, so while these loops
 * run, a Python thread on the other end of a pipe compresses and hashes (pack) or decompresses
 * and hashes (unpack): the same split as `tar | gzip`.
 *
 * Safety of ct_unpack, the same rules as extract.py:
 * - names: no absolute path, no '..' component;
 * - nothing is written through a symlink: every parent is reached one component at a time
 *   with O_NOFOLLOW|O_DIRECTORY from the root's descriptor, and final components are created
 *   with O_EXCL / *at() calls that never follow links;
 * - a symlink may not climb above the root by '..'; a hard link must name a file this layer
 *   unpacked; device nodes only as root.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#define BLOCK 512
#define BUFSZ (1 << 20)
#define META_MAX (1 << 20)
#define SIZE_MAX_TAR ((int64_t)1 << 62)
#define ID_MAX ((int64_t)1 << 32)
#define TIME_MAX ((int64_t)1 << 40)

/* What went wrong, for native.py to raise as the matching Python exception. */
enum { CT_OK = 0, CT_LAYER = 1, CT_OS = 2, CT_CHANGED = 3, CT_CALLBACK = 4 };

struct ct_err {
    int kind;
    int errnum;                 /* CT_OS: errno */
    char where[4096];           /* the entry (CT_LAYER) or path (CT_OS, CT_CHANGED) */
    char msg[1024];
};

static int fail(struct ct_err *e, int kind, const char *where, const char *fmt, ...)
{
    va_list ap;
    e->kind = kind;
    snprintf(e->where, sizeof e->where, "%s", where ? where : "");
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return -1;
}

static int os_fail(struct ct_err *e, const char *path)
{
    e->errnum = errno;
    return fail(e, CT_OS, path, "%s", strerror(errno));
}

/* ---- small growable things ------------------------------------------------------------ */

struct strbuf { char *s; size_t len, cap; };

static int sb_set(struct strbuf *b, const char *s, size_t n)
{
    if (n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < n + 1)
            cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p)
            return -1;
        b->s = p, b->cap = cap;
    }
    memcpy(b->s, s, n);
    b->s[n] = 0;
    b->len = n;
    return 0;
}

static int sb_cat(struct strbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p)
            return -1;
        b->s = p, b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
    return 0;
}

/* A set of strings (paths this layer unpacked), open addressing. */
struct strset { char **slot; size_t cap, used; };

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;             /* FNV-1a */
    while (*s)
        h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
    return h;
}

static int set_has(struct strset *set, const char *s)
{
    if (!set->cap)
        return 0;
    for (size_t i = hash_str(s) & (set->cap - 1);; i = (i + 1) & (set->cap - 1)) {
        if (!set->slot[i])
            return 0;
        if (!strcmp(set->slot[i], s))
            return 1;
    }
}

static int set_add(struct strset *set, const char *s)
{
    if ((set->used + 1) * 2 > set->cap) {
        size_t cap = set->cap ? set->cap * 2 : 1024;
        char **slot = calloc(cap, sizeof *slot);
        if (!slot)
            return -1;
        for (size_t j = 0; j < set->cap; j++) {
            if (!set->slot[j])
                continue;
            size_t i = hash_str(set->slot[j]) & (cap - 1);
            while (slot[i])
                i = (i + 1) & (cap - 1);
            slot[i] = set->slot[j];
        }
        free(set->slot);
        set->slot = slot, set->cap = cap;
    }
    size_t i = hash_str(s) & (set->cap - 1);
    for (; set->slot[i]; i = (i + 1) & (set->cap - 1))
        if (!strcmp(set->slot[i], s))
            return 0;
    if (!(set->slot[i] = strdup(s)))
        return -1;
    set->used++;
    return 0;
}

static void set_free(struct strset *set)
{
    for (size_t i = 0; i < set->cap; i++)
        free(set->slot[i]);
    free(set->slot);
}

/* ======================================================================================= */
/* Unpacking                                                                               */
/* ======================================================================================= */

struct reader { int fd; unsigned char *buf; size_t pos, len; int eof; };

/* Make n bytes (n <= BUFSZ) available at buf+pos; 0 if the stream ends first. */
static int need(struct reader *r, size_t n, struct ct_err *e)
{
    if (r->len - r->pos >= n)
        return 1;
    memmove(r->buf, r->buf + r->pos, r->len - r->pos);
    r->len -= r->pos, r->pos = 0;
    while (r->len < n && !r->eof) {
        ssize_t got = read(r->fd, r->buf + r->len, BUFSZ - r->len);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            os_fail(e, "<layer stream>");
            return -1;
        }
        if (got == 0)
            r->eof = 1;
        r->len += got;
    }
    return r->len >= n;
}

/* Up to `want` bytes of the stream, without copying: *p points into the buffer. */
static ssize_t take(struct reader *r, size_t want, const unsigned char **p, struct ct_err *e)
{
    if (r->pos == r->len) {
        int ok = need(r, 1, e);
        if (ok <= 0)
            return ok;
    }
    size_t n = r->len - r->pos;
    if (n > want)
        n = want;
    *p = r->buf + r->pos;
    r->pos += n;
    return n;
}

struct entry {
    char type;
    struct strbuf name, link;
    int64_t mode, uid, gid, size, devmajor, devminor;
    int64_t mtime_sec;
    long mtime_nsec;
    char size_text[48];         /* a size from a PAX record, as written there */
};

struct deferred { char *rel; int64_t mode, uid, gid, sec; long nsec; int depth; size_t seq; };

struct unpacker {
    int rootfd;
    int overlay;                /* 1: overlay whiteouts (0/0 devices, xattrs); 0: OCI files */
    int am_root;
    int umask_known;
    unsigned umask_bits;
    int64_t own_uid, own_gid;   /* skip fchown when an entry's owner is this (-1: never) */
    struct reader in;
    struct strset added;
    struct deferred *deferred;
    size_t ndeferred, capdeferred;
    char **implicit;            /* parents created because an entry needed them */
    size_t nimplicit, capimplicit;
    /* the directory of the last entry, opened: most entries share their neighbour's */
    struct strbuf cached;
    int cached_fd;
    struct strbuf current;      /* the last entry's name, for "truncated" messages */
    const char *layer_name;
    struct strbuf scratch, scratch2;
};

static void forget_cache(struct unpacker *u)
{
    if (u->cached_fd >= 0 && u->cached_fd != u->rootfd)
        close(u->cached_fd);
    u->cached_fd = -1;
}

static int remember_implicit(struct unpacker *u, const char *rel, size_t n)
{
    if (u->nimplicit == u->capimplicit) {
        size_t cap = u->capimplicit ? u->capimplicit * 2 : 64;
        char **p = realloc(u->implicit, cap * sizeof *p);
        if (!p)
            return -1;
        u->implicit = p, u->capimplicit = cap;
    }
    if (!(u->implicit[u->nimplicit] = strndup(rel, n)))
        return -1;
    u->nimplicit++;
    return 0;
}

/* Open directory `rel` (n bytes of it) under the root, one component at a time, never
 * following a symlink. create: make missing components (0755, remembered as implicit) and
 * report a symlink or non-directory in the way as a LayerError against `entry`. Without
 * create, return -2 quietly when the path is not (or no longer) a real directory. */
static int open_dir(struct unpacker *u, const char *rel, size_t n, int create,
                    const char *entry, struct ct_err *e)
{
    int fd = dup(u->rootfd);
    if (fd < 0)
        return os_fail(e, rel);
    size_t start = 0;
    while (start < n) {
        size_t end = start;
        while (end < n && rel[end] != '/')
            end++;
        char part[256];
        size_t plen = end - start;
        if (plen >= sizeof part) {
            close(fd);
            if (!create)
                return -2;
            return fail(e, CT_LAYER, entry, "path component longer than 255 bytes");
        }
        memcpy(part, rel + start, plen);
        part[plen] = 0;
        int next = openat(fd, part, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (next < 0 && errno == ENOENT && create) {
            if (mkdirat(fd, part, 0755) < 0 && errno != EEXIST) {
                int saved = errno;
                close(fd);
                errno = saved;
                return os_fail(e, rel);
            }
            if (remember_implicit(u, rel, end) < 0) {
                close(fd);
                return fail(e, CT_OS, rel, "out of memory");
            }
            next = openat(fd, part, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        }
        if (next < 0) {
            int saved = errno;
            struct stat st;
            int is_link = fstatat(fd, part, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode);
            close(fd);
            if (!create)
                return -2;
            if (is_link || saved == ELOOP)
                return fail(e, CT_LAYER, entry, "parent '%.*s' is a symlink (writing through "
                            "it could escape the root)", (int)end, rel);
            if (saved == ENOTDIR)
                return fail(e, CT_LAYER, entry, "parent '%.*s' is not a directory", (int)end, rel);
            errno = saved;
            return os_fail(e, rel);
        }
        close(fd);
        fd = next;
        start = end + 1;
    }
    return fd;
}

/* The directory holding `rel`, through the one-entry cache. */
static int parent_fd(struct unpacker *u, const char *rel, const char **base, const char *entry,
                     struct ct_err *e)
{
    const char *slash = strrchr(rel, '/');
    size_t plen = slash ? (size_t)(slash - rel) : 0;
    *base = slash ? slash + 1 : rel;
    if (!plen)
        return u->rootfd;
    if (u->cached_fd >= 0 && u->cached.len == plen && !memcmp(u->cached.s, rel, plen))
        return u->cached_fd;
    int fd = open_dir(u, rel, plen, 1, entry, e);
    if (fd < 0)
        return -1;
    forget_cache(u);
    if (sb_set(&u->cached, rel, plen) < 0) {
        close(fd);
        return fail(e, CT_OS, rel, "out of memory");
    }
    u->cached_fd = fd;
    return fd;
}

static int rmtree_at(int dfd, const char *name)
{
    int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == EACCES && fchmodat(dfd, name, 0700, 0) == 0)
        fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -1;
    fchmod(fd, 0700);          /* a read-only directory from the layer: its entries must go */
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return -1;
    }
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (unlinkat(fd, de->d_name, 0) == 0)
            continue;
        if ((errno == EISDIR || errno == EPERM) && rmtree_at(fd, de->d_name) == 0)
            continue;
        rc = -1;
        break;
    }
    closedir(d);
    if (rc == 0)
        rc = unlinkat(dfd, name, AT_REMOVEDIR);
    return rc;
}

/* Remove whatever is at pfd/base (a directory with its content). */
static int remove_existing(struct unpacker *u, int pfd, const char *base, const char *rel,
                           struct ct_err *e)
{
    struct stat st;
    if (fstatat(pfd, base, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return errno == ENOENT ? 0 : os_fail(e, rel);
    if (S_ISDIR(st.st_mode)) {
        /* the cached directory may be this one or below it; pfd stays valid (it is above) */
        if (u->cached_fd >= 0 && u->cached_fd != pfd)
            forget_cache(u);
        if (rmtree_at(pfd, base) < 0)
            return os_fail(e, rel);
        return 0;
    }
    if (unlinkat(pfd, base, 0) < 0)
        return os_fail(e, rel);
    return 0;
}

/* An empty `.wh.` file: the OCI form of a whiteout, kept where the overlay form fails. */
static int plain_marker(struct unpacker *u, int pfd, const char *base, const char *rel,
                        struct ct_err *e)
{
    if (remove_existing(u, pfd, base, rel, e) < 0)
        return -1;
    int fd = openat(pfd, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return os_fail(e, rel);
    close(fd);
    return 0;
}

static int whiteout(struct unpacker *u, int pfd, const char *base, const char *rel,
                    const char *entry, struct ct_err *e)
{
    if (!strcmp(base, ".wh..wh..opq")) {
        if (!u->overlay)
            return plain_marker(u, pfd, base, rel, e);
        static const char *root_names[] = {"trusted.overlay.opaque", NULL};
        static const char *user_names[] = {"user.overlay.opaque", "user.fuseoverlayfs.opaque",
                                           NULL};
        for (const char **name = u->am_root ? root_names : user_names; *name; name++)
            if (fsetxattr(pfd, *name, "y", 1, 0) < 0)
                return plain_marker(u, pfd, base, rel, e);     /* no xattrs here */
        return 0;
    }
    const char *gone = base + 4;
    if (!*gone || !strcmp(gone, ".") || !strcmp(gone, ".."))
        return fail(e, CT_LAYER, entry, "malformed whiteout");
    if (!u->overlay)
        return plain_marker(u, pfd, base, rel, e);
    if (remove_existing(u, pfd, gone, rel, e) < 0)
        return -1;
    if (mknodat(pfd, gone, S_IFCHR | 0000, 0) < 0) {
        if (errno != EPERM && errno != EACCES)
            return os_fail(e, rel);
        return plain_marker(u, pfd, base, rel, e);             /* kernel < 5.8, unprivileged */
    }
    return 0;
}

/* name -> clean relative path in out: refuses absolute paths and '..'; drops '.' and ''. */
static int clean_name(const char *name, struct strbuf *out, struct ct_err *e)
{
    if (name[0] == '/')
        return fail(e, CT_LAYER, name, "absolute path");
    out->len = 0;
    if (sb_set(out, "", 0) < 0)
        return fail(e, CT_OS, name, "out of memory");
    const char *p = name;
    while (*p) {
        const char *q = strchr(p, '/');
        size_t n = q ? (size_t)(q - p) : strlen(p);
        if (n == 2 && p[0] == '.' && p[1] == '.')
            return fail(e, CT_LAYER, name, "path contains '..'");
        if (n && !(n == 1 && p[0] == '.')) {
            if (out->len && sb_cat(out, "/", 1) < 0)
                return fail(e, CT_OS, name, "out of memory");
            if (sb_cat(out, p, n) < 0)
                return fail(e, CT_OS, name, "out of memory");
        }
        p += n;
        if (*p == '/')
            p++;
    }
    return 0;
}

static int check_symlink(const char *rel, const struct entry *m, struct ct_err *e)
{
    const char *t = m->link.s;
    if (!*t)
        return fail(e, CT_LAYER, m->name.s, "empty symlink target");
    if (*t == '/')
        return 0;               /* resolved inside the container's root; never followed here */
    long depth = 0;             /* directories above the link inside the root */
    for (const char *c = rel; *c; c++)
        depth += *c == '/';
    while (*t) {
        const char *q = strchr(t, '/');
        size_t n = q ? (size_t)(q - t) : strlen(t);
        if (n == 2 && t[0] == '.' && t[1] == '.') {
            if (--depth < 0)
                return fail(e, CT_LAYER, m->name.s, "symlink to '%s' points outside the root",
                            m->link.s);
        } else if (n && !(n == 1 && t[0] == '.')) {
            depth++;
        }
        t += n;
        if (*t == '/')
            t++;
    }
    return 0;
}

/* The next `size` bytes of the stream: written to fd, or passed over when fd < 0. */
static int copy_data(struct unpacker *u, int fd, int64_t size, const char *rel,
                     struct ct_err *e)
{
    while (size > 0) {
        const unsigned char *p;
        ssize_t n = take(&u->in, size > BUFSZ ? BUFSZ : (size_t)size, &p, e);
        if (n < 0)
            return -1;
        if (n == 0)
            return fail(e, CT_LAYER, u->current.s, "truncated tar: the stream ends inside "
                        "the data");
        size -= n;
        while (fd >= 0 && n > 0) {
            ssize_t w = write(fd, p, n);
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                return os_fail(e, rel);
            }
            p += w, n -= w;
        }
    }
    return 0;
}

static int skip_data(struct unpacker *u, int64_t size, struct ct_err *e)
{
    return copy_data(u, -1, size, NULL, e);
}

static int write_file(struct unpacker *u, int pfd, const char *base, const char *rel,
                      const struct entry *m, struct ct_err *e)
{
    unsigned mode = m->mode & 07777;
    /* open() gives the final mode when the umask leaves it whole: no fchmod then */
    int direct = u->umask_known && !(mode & (07000 | u->umask_bits));
    unsigned create = direct ? mode : 0600;
    int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
    int fd = openat(pfd, base, flags, create);
    if (fd < 0 && errno == EEXIST) {
        /* replacing an earlier entry: O_EXCL never follows a symlink there */
        if (remove_existing(u, pfd, base, rel, e) < 0)
            return -1;
        fd = openat(pfd, base, flags, create);
    }
    if (fd < 0)
        return os_fail(e, rel);
    int rc = copy_data(u, fd, m->size, rel, e);
    if (rc == 0 && u->am_root && (m->uid != u->own_uid || m->gid != u->own_gid)
        && fchown(fd, m->uid, m->gid) < 0)
        rc = os_fail(e, rel);
    if (rc == 0 && !direct && fchmod(fd, mode) < 0)
        rc = os_fail(e, rel);
    struct timespec ts[2] = {{m->mtime_sec, m->mtime_nsec}, {m->mtime_sec, m->mtime_nsec}};
    if (rc == 0 && futimens(fd, ts) < 0)
        rc = os_fail(e, rel);
    close(fd);
    return rc;
}

static int defer_dir(struct unpacker *u, const char *rel, const struct entry *m)
{
    if (u->ndeferred == u->capdeferred) {
        size_t cap = u->capdeferred ? u->capdeferred * 2 : 64;
        struct deferred *p = realloc(u->deferred, cap * sizeof *p);
        if (!p)
            return -1;
        u->deferred = p, u->capdeferred = cap;
    }
    struct deferred *d = &u->deferred[u->ndeferred];
    if (!(d->rel = strdup(rel)))
        return -1;
    d->mode = m->mode, d->uid = m->uid, d->gid = m->gid;
    d->sec = m->mtime_sec, d->nsec = m->mtime_nsec;
    d->depth = 0;
    for (const char *c = rel; *c; c++)
        d->depth += *c == '/';
    d->seq = u->ndeferred++;
    return 0;
}

/* One entry (not a PAX/GNU meta header); its data, if any, is next in the stream. */
static int unpack_entry(struct unpacker *u, struct entry *m, struct ct_err *e)
{
    struct strbuf *relb = &u->scratch;
    if (clean_name(m->name.s, relb, e) < 0)
        return -1;
    const char *rel = relb->s;
    char kind = m->type;
    int64_t data = (kind >= '1' && kind <= '6') ? 0 : m->size;
    if (!*rel) {                          /* "./": the root directory's own metadata */
        if (kind == '5' && defer_dir(u, "", m) < 0)
            return fail(e, CT_OS, m->name.s, "out of memory");
        return skip_data(u, data, e);
    }
    const char *base;
    int pfd = parent_fd(u, rel, &base, m->name.s, e);
    if (pfd < 0)
        return -1;
    if (!strncmp(base, ".wh.", 4)) {
        if (whiteout(u, pfd, base, rel, m->name.s, e) < 0)
            return -1;
        return skip_data(u, data, e);
    }
    if (kind == '0') {
        if (set_add(&u->added, rel) < 0)
            return fail(e, CT_OS, rel, "out of memory");
        return write_file(u, pfd, base, rel, m, e);
    }
    if (kind == '5') {
        struct stat st;
        int exists = fstatat(pfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0;
        if (!exists || !S_ISDIR(st.st_mode)) {
            if (exists && unlinkat(pfd, base, 0) < 0)
                return os_fail(e, rel);
            if (mkdirat(pfd, base, 0700) < 0)
                return os_fail(e, rel);
        }
        if (set_add(&u->added, rel) < 0 || defer_dir(u, rel, m) < 0)
            return fail(e, CT_OS, rel, "out of memory");
        return skip_data(u, data, e);
    }
    int tfd = -1;
    const char *tbase = NULL;
    struct strbuf *target = &u->scratch2;
    if (kind == '1') {
        if (clean_name(m->link.s, target, e) < 0)
            return -1;
        if (!set_has(&u->added, target->s))
            return fail(e, CT_LAYER, m->name.s, "hard link to '%s', which this layer did not "
                        "unpack (possibly outside the root)", m->link.s);
        const char *slash = strrchr(target->s, '/');
        tbase = slash ? slash + 1 : target->s;
        tfd = open_dir(u, target->s, slash ? (size_t)(slash - target->s) : 0, 1, m->name.s, e);
        if (tfd < 0)
            return -1;
        struct stat st;
        if (fstatat(tfd, tbase, &st, AT_SYMLINK_NOFOLLOW) < 0) {
            int rc = os_fail(e, target->s);
            close(tfd);
            return rc;
        }
        if (S_ISDIR(st.st_mode)) {
            close(tfd);
            return fail(e, CT_LAYER, m->name.s, "hard link to a directory");
        }
    } else if (kind == '2') {
        if (check_symlink(rel, m, e) < 0)
            return -1;
    } else if (kind == '3' || kind == '4') {
        if (!u->am_root)
            return fail(e, CT_LAYER, m->name.s, "device node, and we are not root");
    } else if (kind != '6') {
        if ((unsigned char)kind >= 32 && (unsigned char)kind < 127)
            return fail(e, CT_LAYER, m->name.s, "unsupported entry type b'%c'", kind);
        return fail(e, CT_LAYER, m->name.s, "unsupported entry type b'\\x%02x'",
                    (unsigned char)kind);
    }
    /* the parent descriptor may have been the cache, which remove_existing can drop: ask
     * again (a cheap hit, or a fresh walk) */
    int rc = remove_existing(u, pfd, base, rel, e);
    if (rc == 0)
        pfd = parent_fd(u, rel, &base, m->name.s, e), rc = pfd < 0 ? -1 : 0;
    if (rc == 0 && set_add(&u->added, rel) < 0)
        rc = fail(e, CT_OS, rel, "out of memory");
    if (rc == 0 && kind == '1') {
        if (linkat(tfd, tbase, pfd, base, 0) < 0)
            rc = os_fail(e, rel);
    } else if (rc == 0 && kind == '2') {
        if (symlinkat(m->link.s, pfd, base) < 0)
            rc = os_fail(e, rel);
        else if (u->am_root && fchownat(pfd, base, m->uid, m->gid, AT_SYMLINK_NOFOLLOW) < 0)
            rc = os_fail(e, rel);
    } else if (rc == 0) {
        if (kind == '6')
            rc = mkfifoat(pfd, base, 0600);
        else
            rc = mknodat(pfd, base, (kind == '3' ? S_IFCHR : S_IFBLK) | 0600,
                         makedev(m->devmajor, m->devminor));
        /* the node was just made here by us, so the *at() calls below act on it */
        if (rc == 0 && u->am_root)
            rc = fchownat(pfd, base, m->uid, m->gid, AT_SYMLINK_NOFOLLOW);
        if (rc == 0)
            rc = fchmodat(pfd, base, m->mode & 07777, 0);
        struct timespec ts[2] = {{m->mtime_sec, m->mtime_nsec}, {m->mtime_sec, m->mtime_nsec}};
        if (rc == 0)
            rc = utimensat(pfd, base, ts, AT_SYMLINK_NOFOLLOW);
        if (rc < 0)
            rc = os_fail(e, rel);
    }
    if (tfd >= 0)
        close(tfd);
    if (rc < 0)
        return -1;
    return skip_data(u, data, e);
}

static int by_depth_desc(const void *a, const void *b)
{
    const struct deferred *x = a, *y = b;
    if (x->depth != y->depth)
        return y->depth - x->depth;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Directory metadata last, deepest first: a read-only directory is closed only after its
 * children are in. Implicit parents get 0755 first; an explicit entry for one wins. */
static int finish(struct unpacker *u, struct ct_err *e)
{
    forget_cache(u);
    for (size_t i = 0; i < u->nimplicit; i++) {
        int fd = open_dir(u, u->implicit[i], strlen(u->implicit[i]), 0, NULL, e);
        if (fd == -2)
            continue;                                     /* later replaced by a non-dir */
        if (fd < 0)
            return -1;
        int rc = fchmod(fd, 0755);
        close(fd);
        if (rc < 0)
            return os_fail(e, u->implicit[i]);
    }
    qsort(u->deferred, u->ndeferred, sizeof *u->deferred, by_depth_desc);
    for (size_t i = 0; i < u->ndeferred; i++) {
        struct deferred *d = &u->deferred[i];
        int fd = open_dir(u, d->rel, strlen(d->rel), 0, NULL, e);
        if (fd == -2)
            continue;
        if (fd < 0)
            return -1;
        struct timespec ts[2] = {{d->sec, d->nsec}, {d->sec, d->nsec}};
        int rc = 0;
        if (u->am_root && fchown(fd, d->uid, d->gid) < 0)
            rc = -1;
        if (rc == 0 && fchmod(fd, d->mode & 07777) < 0)
            rc = -1;
        if (rc == 0 && futimens(fd, ts) < 0)
            rc = -1;
        if (rc < 0)
            rc = os_fail(e, *d->rel ? d->rel : ".");
        close(fd);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* ---- parsing headers ------------------------------------------------------------------ */

static void field_repr(char *out, size_t cap, const unsigned char *f, size_t n)
{
    size_t o = 0;
    o += snprintf(out + o, cap - o, "b'");
    for (size_t i = 0; i < n && o + 5 < cap; i++) {
        unsigned char c = f[i];
        if (c >= 32 && c < 127 && c != '\\' && c != '\'')
            out[o++] = c;
        else
            o += snprintf(out + o, cap - o, "\\x%02x", c);
    }
    snprintf(out + o, cap - o, "'");
}

static void int128_text(char *out, size_t cap, __int128 v)
{
    char tmp[48];
    size_t n = 0;
    int neg = v < 0;
    unsigned __int128 u = neg ? -(unsigned __int128)v : (unsigned __int128)v;
    do
        tmp[n++] = '0' + (int)(u % 10);
    while ((u /= 10) && n < sizeof tmp);
    size_t o = 0;
    if (neg && o + 1 < cap)
        out[o++] = '-';
    while (n && o + 1 < cap)
        out[o++] = tmp[--n];
    out[o] = 0;
}

/* A numeric header field: octal text up to the first NUL, or GNU base-256. -1: malformed. */
static int number(const unsigned char *f, size_t n, __int128 *out)
{
    if (f[0] == 0x80 || f[0] == 0xff) {
        __int128 v = 0;
        for (size_t i = 1; i < n; i++)
            v = (v << 8) | f[i];
        if (f[0] == 0xff)
            v -= (__int128)1 << (8 * n - 8);
        *out = v;
        return 0;
    }
    size_t end = 0;
    while (end < n && f[end])
        end++;
    size_t a = 0, b = end;
    while (a < b && f[a] == ' ')
        a++;
    while (b > a && f[b - 1] == ' ')
        b--;
    __int128 v = 0;
    for (size_t i = a; i < b; i++) {
        if (f[i] < '0' || f[i] > '7')
            return -1;
        v = v * 8 + (f[i] - '0');
    }
    *out = v;
    return 0;
}


static int pax_records(const unsigned char *data, size_t len, struct strbuf *out,
                       const char *entry, struct ct_err *e)
{
    size_t pos = 0;
    out->len = 0;
    if (sb_set(out, "", 0) < 0)
        return fail(e, CT_OS, entry, "out of memory");
    while (pos < len && data[pos]) {
        size_t space = pos;
        while (space < len && space < pos + 24 && data[space] != ' ')
            space++;
        size_t length = 0;
        int ok = space > pos && space < len && data[space] == ' ';
        for (size_t i = pos; ok && i < space; i++) {
            if (data[i] < '0' || data[i] > '9' || length > META_MAX)
                ok = 0;
            else
                length = length * 10 + (data[i] - '0');
        }
        ok = ok && length > space - pos + 2 && pos + length <= len
             && data[pos + length - 1] == '\n';
        const unsigned char *rec = data + space + 1;
        size_t rlen = ok ? pos + length - 1 - (space + 1) : 0;
        const unsigned char *eq = ok ? memchr(rec, '=', rlen) : NULL;
        if (!eq)
            return fail(e, CT_LAYER, entry, "malformed PAX extended header at byte %zu", pos);
        if (sb_cat(out, (const char *)rec, rlen) < 0 || sb_cat(out, "", 1) < 0)
            return fail(e, CT_OS, entry, "out of memory");
        /* a NUL inside a record would end the key or value early: refuse it outright */
        if (memchr(rec, 0, rlen))
            return fail(e, CT_LAYER, entry, "malformed PAX extended header at byte %zu", pos);
        pos += length;
    }
    return 0;
}

static int pax_int(const char *v, const char *key, const char *entry, int64_t *out,
                   struct ct_err *e)
{
    size_t n = strlen(v);
    if (!n || n > 40 || strspn(v, "0123456789") != n)
        return fail(e, CT_LAYER, entry, "invalid PAX %s value '%s'", key, v);
    int64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        int d = v[i] - '0';
        x = x > (INT64_MAX - d) / 10 ? INT64_MAX : x * 10 + d;   /* saturates: refused later */
    }
    *out = x;
    return 0;
}

static int pax_time(const char *v, const char *entry, int64_t *sec, long *nsec,
                    struct ct_err *e)
{
    size_t n = strlen(v);
    const char *p = v;
    int neg = *p == '-';
    p += neg;
    size_t digits = strspn(p, "0123456789");
    const char *frac = p + digits;
    size_t fdigits = 0;
    if (*frac == '.')
        fdigits = strspn(frac + 1, "0123456789");
    if (n > 40 || !digits || (*frac && (*frac != '.' || frac[1 + fdigits])))
        return fail(e, CT_LAYER, entry, "invalid PAX mtime value '%s'", v);
    int64_t s = 0;
    for (size_t i = 0; i < digits; i++)
        s = s > (INT64_MAX - (p[i] - '0')) / 10 ? INT64_MAX : s * 10 + (p[i] - '0');
    long ns = 0;
    for (size_t i = 0; i < 9; i++)
        ns = ns * 10 + (i < fdigits ? frac[1 + i] - '0' : 0);
    if (neg) {                    /* as a float rounded down: -1.5 is -2 s + 0.5 s */
        s = -s;
        if (ns)
            s -= 1, ns = 1000000000L - ns;
    }
    *sec = s, *nsec = ns;
    return 0;
}

/* Apply extended records (globals first, then this entry's own, which win). */
static int apply_pax(struct entry *m, const struct strbuf *recs, struct ct_err *e)
{
    for (size_t pos = 0; recs->s && pos < recs->len;) {
        const char *key = recs->s + pos;
        size_t rlen = strlen(key);
        pos += rlen + 1;
        const char *eq = strchr(key, '=');
        const char *v = eq + 1;
        size_t klen = eq - key;
        if (!*v)
            continue;           /* an empty value cancels a global one: keep the header's */
#define KEY(k) (klen == sizeof(k) - 1 && !memcmp(key, k, klen))
        if (KEY("path")) {
            if (sb_set(&m->name, v, strlen(v)) < 0)
                return fail(e, CT_OS, v, "out of memory");
        } else if (KEY("linkpath")) {
            if (sb_set(&m->link, v, strlen(v)) < 0)
                return fail(e, CT_OS, v, "out of memory");
        } else if (KEY("size")) {
            if (pax_int(v, "size", m->name.s, &m->size, e) < 0)
                return -1;
            snprintf(m->size_text, sizeof m->size_text, "%s", v);   /* for "absurd size" */
        } else if (KEY("uid")) {
            if (pax_int(v, "uid", m->name.s, &m->uid, e) < 0)
                return -1;
        } else if (KEY("gid")) {
            if (pax_int(v, "gid", m->name.s, &m->gid, e) < 0)
                return -1;
        } else if (KEY("mtime")) {
            if (pax_time(v, m->name.s, &m->mtime_sec, &m->mtime_nsec, e) < 0)
                return -1;
            if (!(m->mtime_sec > -TIME_MAX && m->mtime_sec < TIME_MAX))
                return fail(e, CT_LAYER, m->name.s, "absurd modification time %s in tar header",
                            v);
        } else if (klen > 11 && !memcmp(key, "GNU.sparse.", 11)) {
            /* the data blocks would be a sparse map, not the file: refuse, not mis-write */
            return fail(e, CT_LAYER, m->name.s, "GNU sparse file (not supported in layers)");
        }
#undef KEY
    }
    return 0;
}

/* Records that apply: the globals, minus keys this entry's own records set. */
static int merged_pax(const struct strbuf *globals, const struct strbuf *local,
                      struct strbuf *out)
{
    out->len = 0;
    if (sb_set(out, "", 0) < 0)
        return -1;
    for (size_t pos = 0; globals->s && pos < globals->len;) {
        const char *g = globals->s + pos;
        size_t glen = strlen(g);
        pos += glen + 1;
        size_t klen = strchr(g, '=') - g;
        int overridden = 0;
        for (size_t lp = 0; local->s && lp < local->len && !overridden;) {
            const char *l = local->s + lp;
            lp += strlen(l) + 1;
            overridden = !strncmp(l, g, klen + 1);
        }
        if (!overridden && (sb_cat(out, g, glen) < 0 || sb_cat(out, "", 1) < 0))
            return -1;
    }
    if (local->s && sb_cat(out, local->s, local->len) < 0)
        return -1;
    return 0;
}

/* A later global record for the same key replaces the earlier one. */
static int add_globals(struct strbuf *globals, const struct strbuf *recs, struct strbuf *tmp)
{
    if (merged_pax(globals, recs, tmp) < 0)
        return -1;
    return sb_set(globals, tmp->s, tmp->len);
}

static int name_text(struct strbuf *dst, const unsigned char *src, size_t n)
{
    size_t len = strnlen((const char *)src, n);
    return sb_set(dst, (const char *)src, len);
}

struct parse_state {
    struct strbuf pax, globals, long_name, long_link, merged, tmp;
    int have_pax, have_long_name, have_long_link;
};

/* Parse the header in `b` into m. Returns 0, or -1 with e filled. */
static int parse_header(struct unpacker *u, const unsigned char *b, struct entry *m,
                        struct parse_state *ps, struct ct_err *e)
{
    char where[4096];
    if (name_text(&m->name, b, 100) < 0)
        return fail(e, CT_OS, "", "out of memory");
    if (!memcmp(b + 257, "ustar\0", 6) && b[345]) {   /* POSIX: long paths split in two */
        struct strbuf *t = &ps->tmp;
        if (name_text(t, b + 345, 155) < 0 || sb_cat(t, "/", 1) < 0
            || sb_cat(t, m->name.s, m->name.len) < 0 || sb_set(&m->name, t->s, t->len) < 0)
            return fail(e, CT_OS, "", "out of memory");
    }
    snprintf(where, sizeof where, "%s", ps->have_long_name ? ps->long_name.s : m->name.s);
    /* the checksum first, so that garbage reads as "not a tar header" */
    __int128 stored;
    if (number(b + 148, 8, &stored) < 0)
        stored = -1;
    long usum = 0, ssum = 0;
    for (int i = 0; i < BLOCK; i++) {
        unsigned char c = (i >= 148 && i < 156) ? ' ' : b[i];
        usum += c;
        ssum += (i >= 148 && i < 156) ? ' ' : (signed char)c;
    }
    if (usum != stored && ssum != stored)
        return fail(e, CT_LAYER, where, "bad tar header checksum (corrupt or not a tar stream; "
                    "previous entry '%s')", u->current.s ? u->current.s : "");
    static const struct { int off, len; const char *what; } nums[] = {
        {100, 8, "mode"}, {108, 8, "uid"}, {116, 8, "gid"}, {124, 12, "size"},
        {136, 12, "mtime"}};
    __int128 v[5];
    for (int i = 0; i < 5; i++) {
        if (number(b + nums[i].off, nums[i].len, &v[i]) < 0) {
            char repr[128];
            field_repr(repr, sizeof repr, b + nums[i].off, nums[i].len);
            return fail(e, CT_LAYER, where, "invalid %s field in tar header: %s", nums[i].what,
                        repr);
        }
    }
#define CLAMP(x) ((x) > INT64_MAX ? INT64_MAX : (x) < INT64_MIN ? INT64_MIN : (int64_t)(x))
    m->mode = CLAMP(v[0]), m->uid = CLAMP(v[1]), m->gid = CLAMP(v[2]);
    m->size = CLAMP(v[3]), m->mtime_sec = CLAMP(v[4]), m->mtime_nsec = 0;
    m->size_text[0] = 0;
    char kind = b[156];
    if (kind == '0' || kind == '\0' || kind == '7')
        kind = (kind == '\0' && m->name.len && m->name.s[m->name.len - 1] == '/') ? '5' : '0';
    m->type = kind;
    if (b[157] ? name_text(&m->link, b + 157, 100) < 0 : sb_set(&m->link, "", 0) < 0)
        return fail(e, CT_OS, "", "out of memory");
    m->devmajor = m->devminor = 0;
    if (kind == '3' || kind == '4') {
        __int128 ma, mi;
        char repr[128];
        if (number(b + 329, 8, &ma) < 0) {
            field_repr(repr, sizeof repr, b + 329, 8);
            return fail(e, CT_LAYER, where, "invalid devmajor field in tar header: %s", repr);
        }
        if (number(b + 337, 8, &mi) < 0) {
            field_repr(repr, sizeof repr, b + 337, 8);
            return fail(e, CT_LAYER, where, "invalid devminor field in tar header: %s", repr);
        }
        m->devmajor = CLAMP(ma), m->devminor = CLAMP(mi);
    }
    int meta = kind == 'x' || kind == 'g' || kind == 'L' || kind == 'K';
    if (!meta) {
        if (ps->have_long_name && sb_set(&m->name, ps->long_name.s, ps->long_name.len) < 0)
            return fail(e, CT_OS, "", "out of memory");
        if (ps->have_long_link && sb_set(&m->link, ps->long_link.s, ps->long_link.len) < 0)
            return fail(e, CT_OS, "", "out of memory");
        if (ps->have_pax || ps->globals.len) {
            if (merged_pax(&ps->globals, ps->have_pax ? &ps->pax : &(struct strbuf){0},
                           &ps->merged) < 0)
                return fail(e, CT_OS, "", "out of memory");
            if (apply_pax(m, &ps->merged, e) < 0)
                return -1;
        }
    }
    if (kind == '5')              /* as tarfile: "./" and "/" mean the root itself */
        while (m->name.len && m->name.s[m->name.len - 1] == '/')
            m->name.s[--m->name.len] = 0;
    if (m->size < 0 || m->size > SIZE_MAX_TAR || v[3] > INT64_MAX) {
        char digits[48];
        if (m->size_text[0])
            snprintf(digits, sizeof digits, "%s", m->size_text);
        else
            int128_text(digits, sizeof digits,
                        (m->size == INT64_MAX || m->size == INT64_MIN) ? v[3] : m->size);
        return fail(e, CT_LAYER, m->name.s, "absurd size %s in tar header", digits);
    }
    /* out-of-range values would otherwise fail deep inside chown/utime/makedev */
    if (!(m->uid >= 0 && m->uid < ID_MAX && m->gid >= 0 && m->gid < ID_MAX && m->devmajor >= 0
          && m->devmajor < ID_MAX && m->devminor >= 0 && m->devminor < ID_MAX))
        return fail(e, CT_LAYER, m->name.s, "owner or device number out of range in tar header "
                    "(%lld:%lld, %lld,%lld)", (long long)m->uid, (long long)m->gid,
                    (long long)m->devmajor, (long long)m->devminor);
    if (!(m->mtime_sec > -TIME_MAX && m->mtime_sec < TIME_MAX)) {
        char digits[48];
        int128_text(digits, sizeof digits, (m->mtime_sec == INT64_MAX || m->mtime_sec == INT64_MIN)
                                           ? v[4] : m->mtime_sec);
        return fail(e, CT_LAYER, m->name.s, "absurd modification time %s in tar header", digits);
    }
#undef CLAMP
    return 0;
}

static int read_payload(struct unpacker *u, int64_t size, const char *entry, struct strbuf *out,
                        struct ct_err *e)
{
    if (size > META_MAX)
        return fail(e, CT_LAYER, entry, "extended header of %lld bytes (limit %d)",
                    (long long)size, META_MAX);
    size_t padded = (size + BLOCK - 1) / BLOCK * BLOCK;
    int ok = need(&u->in, padded, e);
    if (ok < 0)
        return -1;
    if (!ok)
        return fail(e, CT_LAYER, u->current.s, "truncated tar: the stream ends inside the data");
    if (sb_set(out, (const char *)u->in.buf + u->in.pos, size) < 0)
        return fail(e, CT_OS, entry, "out of memory");
    u->in.pos += padded;
    return 0;
}

static int unpack_stream(struct unpacker *u, struct ct_err *e)
{
    struct entry m = {0};
    struct parse_state ps = {0};
    int seen_any = 0, rc = -1;
    static const unsigned char zero[BLOCK];
    for (;;) {
        int ok = need(&u->in, BLOCK, e);
        if (ok < 0)
            goto out;
        if (!ok) {
            if (u->in.len - u->in.pos) {
                fail(e, CT_LAYER, u->current.s, "truncated tar: partial header at the end");
                goto out;
            }
            if (!seen_any) {
                fail(e, CT_LAYER, u->layer_name, "not a tar stream: it is empty");
                goto out;
            }
            if (ps.have_pax || ps.have_long_name || ps.have_long_link) {
                fail(e, CT_LAYER, u->current.s, "truncated tar: extended header without the "
                     "entry it describes");
                goto out;
            }
            break;                                   /* EOF without end blocks: tolerated */
        }
        const unsigned char *b = u->in.buf + u->in.pos;
        if (!memcmp(b, zero, BLOCK))
            break;                                   /* end of archive */
        u->in.pos += BLOCK;
        seen_any = 1;
        unsigned char head[BLOCK];
        memcpy(head, b, BLOCK);                      /* the buffer moves as data is read */
        if (parse_header(u, head, &m, &ps, e) < 0)
            goto out;
        char kind = m.type;
        if (kind == 'x' || kind == 'g' || kind == 'L' || kind == 'K') {
            struct strbuf *payload = &ps.tmp;
            if (read_payload(u, m.size, m.name.s, payload, e) < 0)
                goto out;
            if (kind == 'x') {
                if (pax_records((unsigned char *)payload->s, payload->len, &ps.pax, m.name.s,
                                e) < 0)
                    goto out;
                ps.have_pax = 1;
            } else if (kind == 'g') {
                struct strbuf recs = {0};
                int r = pax_records((unsigned char *)payload->s, payload->len, &recs, m.name.s,
                                    e);
                if (r == 0 && add_globals(&ps.globals, &recs, &ps.merged) < 0)
                    r = fail(e, CT_OS, m.name.s, "out of memory");
                free(recs.s);
                if (r < 0)
                    goto out;
            } else {
                struct strbuf *dst = kind == 'L' ? &ps.long_name : &ps.long_link;
                if (sb_set(dst, payload->s, strnlen(payload->s, payload->len)) < 0) {
                    fail(e, CT_OS, m.name.s, "out of memory");
                    goto out;
                }
                *(kind == 'L' ? &ps.have_long_name : &ps.have_long_link) = 1;
            }
            continue;
        }
        ps.have_pax = ps.have_long_name = ps.have_long_link = 0;
        if (sb_set(&u->current, m.name.s, m.name.len) < 0) {
            fail(e, CT_OS, m.name.s, "out of memory");
            goto out;
        }
        if (unpack_entry(u, &m, e) < 0)
            goto out;
        /* the padding after the data, to the next block */
        int64_t data = (kind >= '1' && kind <= '6') ? 0 : m.size;
        if (skip_data(u, (BLOCK - data % BLOCK) % BLOCK, e) < 0)
            goto out;
    }
    /* the rest of the stream (after the end blocks) is read too: the other end hashes it */
    for (;;) {
        u->in.pos = u->in.len = 0;
        if (u->in.eof)
            break;
        if (need(&u->in, BUFSZ, e) < 0)
            goto out;
    }
    rc = finish(u, e);
out:
    free(m.name.s), free(m.link.s);
    free(ps.pax.s), free(ps.globals.s), free(ps.long_name.s), free(ps.long_link.s);
    free(ps.merged.s), free(ps.tmp.s);
    return rc;
}

/* Unpack the tar stream read from in_fd into the directory `root` (fresh: made by the caller).
 * overlay: 1 for overlayfs whiteouts, 0 for OCI `.wh.` files. own_uid/own_gid: the owner new
 * files get anyway (fchown skipped for entries that match; -1 to always chown as root).
 * Returns 0, or -1 with *e describing the error. */
int ct_unpack(int in_fd, const char *root, int overlay, int am_root, int umask_known,
              unsigned umask_bits, long long own_uid, long long own_gid, const char *layer_name,
              struct ct_err *e)
{
    memset(e, 0, sizeof *e);
    struct unpacker u = {0};
    u.rootfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (u.rootfd < 0)
        return os_fail(e, root);
    u.overlay = overlay, u.am_root = am_root;
    u.umask_known = umask_known, u.umask_bits = umask_bits;
    u.own_uid = own_uid, u.own_gid = own_gid;
    u.cached_fd = -1;
    u.layer_name = layer_name;
    u.in.fd = in_fd;
    u.in.buf = malloc(BUFSZ);
    int rc;
    if (!u.in.buf || sb_set(&u.current, layer_name, strlen(layer_name)) < 0)
        rc = fail(e, CT_OS, root, "out of memory");
    else
        rc = unpack_stream(&u, e);
    forget_cache(&u);
    close(u.rootfd);
    free(u.in.buf);
    set_free(&u.added);
    for (size_t i = 0; i < u.ndeferred; i++)
        free(u.deferred[i].rel);
    free(u.deferred);
    for (size_t i = 0; i < u.nimplicit; i++)
        free(u.implicit[i]);
    free(u.implicit);
    free(u.cached.s), free(u.current.s), free(u.scratch.s), free(u.scratch2.s);
    return rc;
}

/* ======================================================================================= */
/* Packing                                                                                 */
/* ======================================================================================= */

/* Called for an entry a plain ustar header cannot hold (a long or non-ASCII name, a number
 * too large): Python writes tarfile's PAX header for it, so both paths give the same bytes.
 * Returns 0, or -1 when Python raised (it keeps the exception). */
typedef int (*pax_header_fn)(const char *name, int type, long long mode, long long uid,
                             long long gid, long long size, long long mtime,
                             const char *linkname, long long devmajor, long long devminor);

struct inode { dev_t dev; ino_t ino; char *arcname; };

struct ct_pack {
    int out_fd;
    int owner_set;
    long long owner_uid, owner_gid;
    int mtime_set;
    long long mtime;
    long long euid, egid;
    pax_header_fn pax_header;
    unsigned char *buf;
    size_t len;
    long long written, entries;
    struct inode *inodes;       /* files with several links: the first arcname of each */
    size_t ninodes, capinodes;
    struct strbuf link, arc;
};

static int flush_out(struct ct_pack *p, struct ct_err *e)
{
    const unsigned char *s = p->buf;
    size_t n = p->len;
    while (n) {
        ssize_t w = write(p->out_fd, s, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return os_fail(e, "<layer stream>");
        }
        s += w, n -= w;
    }
    p->len = 0;
    return 0;
}

static int out_bytes(struct ct_pack *p, const void *data, size_t n, struct ct_err *e)
{
    const unsigned char *s = data;
    while (n) {
        if (p->len == BUFSZ && flush_out(p, e) < 0)
            return -1;
        size_t k = BUFSZ - p->len < n ? BUFSZ - p->len : n;
        memcpy(p->buf + p->len, s, k);
        p->len += k, s += k, n -= k;
        p->written += k;
    }
    return 0;
}

static int ascii(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s >= 128)
            return 0;
    return 1;
}

/* The 512-byte ustar header, byte for byte what layers.ustar_header (and tarfile) writes;
 * 0 if one is not enough (the caller asks Python for the PAX form). */
static int ustar(unsigned char *h, const char *name, char type, long long mode, long long uid,
                 long long gid, long long size, long long mtime, const char *link,
                 long long major, long long minor)
{
    size_t nlen = strlen(name), llen = strlen(link);
    int dir = type == '5' && !(nlen && name[nlen - 1] == '/');
    const long long max7 = 1LL << 21, max11 = 1LL << 33;
    if (nlen + dir > 100 || llen > 100 || !ascii(name) || !ascii(link)
        || !(uid >= 0 && uid < max7 && gid >= 0 && gid < max7 && size >= 0 && size < max11
             && mtime >= 0 && mtime < max11))
        return 0;
    memset(h, 0, BLOCK);
    memcpy(h, name, nlen);
    if (dir)
        h[nlen] = '/';
    char tmp[16];
    snprintf(tmp, sizeof tmp, "%07llo", mode & 07777), memcpy(h + 100, tmp, 8);
    snprintf(tmp, sizeof tmp, "%07llo", uid), memcpy(h + 108, tmp, 8);
    snprintf(tmp, sizeof tmp, "%07llo", gid), memcpy(h + 116, tmp, 8);
    snprintf(tmp, sizeof tmp, "%011llo", size), memcpy(h + 124, tmp, 12);
    snprintf(tmp, sizeof tmp, "%011llo", mtime), memcpy(h + 136, tmp, 12);
    h[156] = type;
    memcpy(h + 157, link, llen);
    memcpy(h + 257, "ustar\0" "00", 8);
    if (type == '3' || type == '4') {
        snprintf(tmp, sizeof tmp, "%07llo", major), memcpy(h + 329, tmp, 8);
        snprintf(tmp, sizeof tmp, "%07llo", minor), memcpy(h + 337, tmp, 8);
    }
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < BLOCK; i++)
        sum += h[i];
    snprintf(tmp, sizeof tmp, "%06o", sum);
    memcpy(h + 148, tmp, 7);                 /* six digits, NUL; the space stays */
    return 1;
}

static int header(struct ct_pack *p, const char *name, char type, long long mode, long long uid,
                  long long gid, long long size, long long mtime, const char *link,
                  long long major, long long minor, struct ct_err *e)
{
    if (p->owner_set)
        uid = p->owner_uid, gid = p->owner_gid;
    if (p->mtime_set)
        mtime = p->mtime;
    unsigned char h[BLOCK];
    p->entries++;
    if (ustar(h, name, type, mode, uid, gid, size, mtime, link, major, minor))
        return out_bytes(p, h, BLOCK, e);
    if (flush_out(p, e) < 0)                 /* Python writes to the same stream, after us */
        return -1;
    if (p->pax_header(name, type, mode, uid, gid, size, mtime, link, major, minor) < 0)
        return fail(e, CT_CALLBACK, name, "PAX header");
    return 0;
}

static int pad(struct ct_pack *p, long long size, struct ct_err *e)
{
    static const unsigned char zero[BLOCK];
    return size % BLOCK ? out_bytes(p, zero, BLOCK - size % BLOCK, e) : 0;
}

/* Unprivileged, our own files stand for root's (see layers._as_root). */
static long long as_root(long long owner, long long mine)
{
    return mine != 0 && owner == mine ? 0 : owner;
}

/* Files with several links: (dev, ino) -> the first arcname, open addressing. */
static size_t inode_slot(const struct ct_pack *p, dev_t dev, ino_t ino)
{
    uint64_t h = ((uint64_t)dev * 0x9E3779B97F4A7C15ULL) ^ ((uint64_t)ino * 0xC2B2AE3D27D4EB4FULL);
    size_t i = h & (p->capinodes - 1);
    while (p->inodes[i].arcname && !(p->inodes[i].dev == dev && p->inodes[i].ino == ino))
        i = (i + 1) & (p->capinodes - 1);
    return i;
}

static const char *inode_find(const struct ct_pack *p, const struct stat *st)
{
    return p->capinodes ? p->inodes[inode_slot(p, st->st_dev, st->st_ino)].arcname : NULL;
}

static int inode_add(struct ct_pack *p, const struct stat *st, const char *arc)
{
    if ((p->ninodes + 1) * 2 > p->capinodes) {
        struct ct_pack grown = *p;
        grown.capinodes = p->capinodes ? p->capinodes * 2 : 256;
        if (!(grown.inodes = calloc(grown.capinodes, sizeof *grown.inodes)))
            return -1;
        for (size_t j = 0; j < p->capinodes; j++)
            if (p->inodes[j].arcname)
                grown.inodes[inode_slot(&grown, p->inodes[j].dev, p->inodes[j].ino)] =
                    p->inodes[j];
        free(p->inodes);
        p->inodes = grown.inodes, p->capinodes = grown.capinodes;
    }
    struct inode *in = &p->inodes[inode_slot(p, st->st_dev, st->st_ino)];
    if (!(in->arcname = strdup(arc)))
        return -1;
    in->dev = st->st_dev, in->ino = st->st_ino;
    p->ninodes++;
    return 0;
}

static int add_file(struct ct_pack *p, int dfd, const char *name, const char *path,
                    const char *arc, const struct stat *st, long long mtime, struct ct_err *e)
{
    long long uid = as_root(st->st_uid, p->euid), gid = as_root(st->st_gid, p->egid);
    long long mode = st->st_mode & 07777;
    if (st->st_nlink > 1) {
        const char *first = inode_find(p, st);
        if (first)
            return header(p, arc, '1', mode, uid, gid, 0, mtime, first, 0, 0, e);
        if (inode_add(p, st, arc) < 0)
            return fail(e, CT_OS, path, "out of memory");
    }
    long long size = st->st_size;
    if (header(p, arc, '0', mode, uid, gid, size, mtime, "", 0, 0, e) < 0)
        return -1;
    /* O_NONBLOCK: a FIFO swapped in since the stat must not hang us (no effect on files) */
    int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return os_fail(e, path);
    long long done = 0;
    while (done < size) {
        if (p->len == BUFSZ && flush_out(p, e) < 0) {
            close(fd);
            return -1;
        }
        size_t room = BUFSZ - p->len;
        if ((long long)room > size - done)
            room = size - done;
        ssize_t got = read(fd, p->buf + p->len, room);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            int rc = os_fail(e, path);
            close(fd);
            return rc;
        }
        if (got == 0)
            break;
        p->len += got, p->written += got, done += got;
    }
    close(fd);
    if (done != size)                /* the file shrank while we read it: the header would lie */
        return fail(e, CT_CHANGED, path, "changed size while it was being archived");
    return pad(p, size, e);
}

/* One filesystem object at dfd/name as `arc` (not recursing). */
static int add_at(struct ct_pack *p, int dfd, const char *name, const char *path, const char *arc,
                  const struct stat *st, struct ct_err *e)
{
    long long mtime = st->st_mtim.tv_sec;
    if (mtime < 0 && st->st_mtim.tv_nsec)
        mtime += 1;                  /* Python's int(st_mtime) truncates toward zero */
    long long uid = as_root(st->st_uid, p->euid), gid = as_root(st->st_gid, p->egid);
    long long mode = st->st_mode & 07777;
    switch (st->st_mode & S_IFMT) {
    case S_IFDIR:
        return header(p, arc, '5', mode, uid, gid, 0, mtime, "", 0, 0, e);
    case S_IFLNK: {
        for (size_t cap = 256;; cap *= 2) {          /* st_size is not always the length */
            char *target = malloc(cap);
            if (!target)
                return fail(e, CT_OS, path, "out of memory");
            ssize_t n = readlinkat(dfd, name, target, cap);
            int rc = n < 0 ? os_fail(e, path) : (size_t)n < cap ? sb_set(&p->link, target, n) : 1;
            free(target);
            if (rc < 0)
                return n < 0 ? -1 : fail(e, CT_OS, path, "out of memory");
            if (rc == 0)
                break;
        }
        return header(p, arc, '2', 0777, uid, gid, 0, mtime, p->link.s, 0, 0, e);
    }
    case S_IFREG:
        return add_file(p, dfd, name, path, arc, st, mtime, e);
    case S_IFCHR:
        return header(p, arc, '3', mode, uid, gid, 0, mtime, "", major(st->st_rdev),
                      minor(st->st_rdev), e);
    case S_IFBLK:
        return header(p, arc, '4', mode, uid, gid, 0, mtime, "", major(st->st_rdev),
                      minor(st->st_rdev), e);
    case S_IFIFO:
        return header(p, arc, '6', mode, uid, gid, 0, mtime, "", 0, 0, e);
    }
    return 0;                        /* sockets cannot be stored in tar; GNU tar skips them too */
}

static int is_opaque(int fd)
{
    static const char *names[] = {"trusted.overlay.opaque", "user.overlay.opaque",
                                  "user.fuseoverlayfs.opaque"};
    for (int i = 0; i < 3; i++) {
        char v[2];
        if (fgetxattr(fd, names[i], v, sizeof v) == 1 && v[0] == 'y')
            return 1;
    }
    return 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int in_skip(const char *arc, const char *skip, size_t skiplen)
{
    for (size_t pos = 0; pos < skiplen;) {
        if (!strcmp(skip + pos, arc))
            return 1;
        pos += strlen(skip + pos) + 1;
    }
    return 0;
}

/* A synthetic empty file entry: a whiteout or an opaque marker (owner 0, mode 0600). */
static int marker(struct ct_pack *p, const char *dir_arc, const char *base, struct ct_err *e)
{
    struct strbuf name = {0};
    int rc;
    if ((*dir_arc && (sb_set(&name, dir_arc, strlen(dir_arc)) < 0 || sb_cat(&name, "/", 1) < 0))
        || (!*dir_arc && sb_set(&name, "", 0) < 0) || sb_cat(&name, base, strlen(base)) < 0)
        rc = fail(e, CT_OS, base, "out of memory");
    else
        rc = header(p, name.s, '0', 0600, 0, 0, 0, 0, "", 0, 0, e);
    free(name.s);
    return rc;
}

/* Everything below the directory `dfd` (`path` for messages), sorted by name, as `arc/...`.
 * upper: the directory is an overlayfs upper dir (0/0 devices are deletions, opaque xattrs
 * mark opaque directories). */
static int walk(struct ct_pack *p, int dfd, const char *path, const char *arc, int upper,
                const char *skip, size_t skiplen, struct ct_err *e)
{
    int fd = dup(dfd);
    if (fd < 0)
        return os_fail(e, path);
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return os_fail(e, path);
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    int rc = 0;
    errno = 0;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            char **nn = realloc(names, cap * sizeof *nn);
            if (!nn) {
                rc = fail(e, CT_OS, path, "out of memory");
                break;
            }
            names = nn;
        }
        if (!(names[n] = strdup(de->d_name))) {
            rc = fail(e, CT_OS, path, "out of memory");
            break;
        }
        n++;
    }
    closedir(d);
    if (rc == 0)
        qsort(names, n, sizeof *names, cmp_names);
    struct strbuf child = {0}, cpath = {0};
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const char *name = names[i];
        size_t alen = strlen(arc), nlen = strlen(name);
        if ((alen ? sb_set(&child, arc, alen) < 0 || sb_cat(&child, "/", 1) < 0
                  : sb_set(&child, "", 0) < 0) || sb_cat(&child, name, nlen) < 0
            || sb_set(&cpath, path, strlen(path)) < 0 || sb_cat(&cpath, "/", 1) < 0
            || sb_cat(&cpath, name, nlen) < 0) {
            rc = fail(e, CT_OS, path, "out of memory");
            break;
        }
        if (upper && in_skip(child.s, skip, skiplen))
            continue;
        struct stat st;
        if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
            rc = os_fail(e, cpath.s);
            break;
        }
        if (upper && S_ISCHR(st.st_mode) && st.st_rdev == 0) {
            char wh[300];
            snprintf(wh, sizeof wh, ".wh.%s", name);
            rc = marker(p, arc, wh, e);
            continue;
        }
        if ((rc = add_at(p, dfd, name, cpath.s, child.s, &st, e)) < 0)
            break;
        if (S_ISDIR(st.st_mode)) {
            int sub = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub < 0) {
                rc = os_fail(e, cpath.s);
                break;
            }
            if (upper && is_opaque(sub))
                rc = marker(p, child.s, ".wh..wh..opq", e);
            if (rc == 0)
                rc = walk(p, sub, cpath.s, child.s, upper, skip, skiplen, e);
            close(sub);
        }
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    free(child.s), free(cpath.s);
    return rc;
}

struct ct_pack *ct_pack_new(int out_fd, int owner_set, long long owner_uid, long long owner_gid,
                            int mtime_set, long long mtime, long long euid, long long egid,
                            pax_header_fn pax_header)
{
    struct ct_pack *p = calloc(1, sizeof *p);
    if (!p || !(p->buf = malloc(BUFSZ))) {
        free(p);
        return NULL;
    }
    p->out_fd = out_fd;
    p->owner_set = owner_set, p->owner_uid = owner_uid, p->owner_gid = owner_gid;
    p->mtime_set = mtime_set, p->mtime = mtime;
    p->euid = euid, p->egid = egid;
    p->pax_header = pax_header;
    return p;
}

/* One object at `path` as `arc` (already a clean relative name); its bytes are in the stream
 * when this returns. */
int ct_pack_path(struct ct_pack *p, const char *path, const char *arc, struct ct_err *e)
{
    memset(e, 0, sizeof *e);
    struct stat st;
    int rc;
    if (fstatat(AT_FDCWD, path, &st, AT_SYMLINK_NOFOLLOW) < 0)
        rc = os_fail(e, path);
    else
        rc = add_at(p, AT_FDCWD, path, path, arc, &st, e);
    return rc < 0 ? -1 : flush_out(p, e);
}

/* Everything below the directory `path`, as `arc/...` (arc "" for the top). skip: NUL-separated
 * arcnames left out (with what is below them), upper mode only. */
int ct_pack_tree(struct ct_pack *p, const char *path, const char *arc, int upper,
                 const char *skip, size_t skiplen, struct ct_err *e)
{
    memset(e, 0, sizeof *e);
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return os_fail(e, path);
    int rc = walk(p, fd, path, arc, upper, skip, skiplen, e);
    close(fd);
    return rc < 0 ? -1 : flush_out(p, e);
}

long long ct_pack_written(struct ct_pack *p) { return p->written; }
long long ct_pack_entries(struct ct_pack *p) { return p->entries; }

void ct_pack_free(struct ct_pack *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->capinodes; i++)
        free(p->inodes[i].arcname);
    free(p->inodes);
    free(p->buf);
    free(p->link.s), free(p->arc.s);
    free(p);
}

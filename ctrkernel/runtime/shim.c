/* ctrkernel's per-container shim: the only process ctrkernel keeps per container.
 *
 *   shim run PLAN_FILE                              start a container, then wait for it
 *   shim CHILD_PID STATUS_PATH [LISTEN_FD:PORT ...]  only wait (exec'd by a Python parent)
 *
 * `run` builds the whole process chain (see run_container below and spawn.py, which does the
 * same in Python where no C compiler exists). In both modes the shim is the parent of the
 * container's PID 1 (CHILD_PID), the only process that can collect its exit status. It
 *  - waits for CHILD_PID (signalfd on SIGCHLD), and writes {"ExitCode", "Signal", "FinishedAt"}
 *    to STATUS_PATH atomically (a temporary file renamed over it), so any process can read it;
 *  - relays published ports: each LISTEN_FD is a socket listening on the host's 127.0.0.1,
 *    created before this process entered the container's network namespace; every accepted
 *    connection is relayed to 127.0.0.1:PORT as seen from *inside* that namespace, where the
 *    shim now lives. No host-wide network change (no iptables, no veth) is needed.
 * It is written in C, not Python, so that an idle container costs well under 1 MiB.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

#define MAX_LISTEN 32
#define MAX_CONN 64 /* relayed connection pairs at once */

struct listener { int fd; int port; };
struct pair { int a, b; }; /* a: accepted from the host side, b: connected inside */

static struct listener listeners[MAX_LISTEN];
static int n_listeners;
static struct pair pairs[MAX_CONN];
static int n_pairs;

static void write_status(const char *path, int status)
{
    char tmp[4096], buf[256];
    struct timespec now;
    int code = 0, sig = 0;
    if (WIFEXITED(status))
        code = WEXITSTATUS(status);
    else if (WIFSIGNALED(status)) {
        sig = WTERMSIG(status);
        code = 128 + sig; /* the shell's (and Docker's) convention */
    }
    clock_gettime(CLOCK_REALTIME, &now);
    int len = snprintf(buf, sizeof buf, "{\"ExitCode\": %d, \"Signal\": %d, \"FinishedAt\": %lld.%09ld}\n",
                       code, sig, (long long)now.tv_sec, now.tv_nsec);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    /* No fsync: the rename is atomic against crashes of processes, which is what readers
     * need; surviving a power cut is not worth milliseconds on every exit. */
    if (write(fd, buf, len) == len) {
        close(fd);
        rename(tmp, path); /* atomic: readers see no file or a whole one */
    } else
        close(fd);
}

static void drop_pair(int i)
{
    close(pairs[i].a);
    close(pairs[i].b);
    pairs[i] = pairs[--n_pairs];
}

static void accept_one(struct listener *l)
{
    int a = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
    if (a < 0)
        return;
    if (n_pairs == MAX_CONN) {
        close(a);
        return;
    }
    int b = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(l->port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    /* Loopback connects complete (or are refused) at once, so a blocking connect is enough. */
    if (b < 0 || connect(b, (struct sockaddr *)&to, sizeof to) < 0) {
        close(a);
        if (b >= 0)
            close(b);
        return;
    }
    pairs[n_pairs].a = a;
    pairs[n_pairs].b = b;
    n_pairs++;
}

/* Copy what is readable from one side to the other; 0 when the pair is finished. */
static int relay(int from, int to)
{
    char buf[65536];
    ssize_t n = read(from, buf, sizeof buf);
    if (n <= 0)
        return 0;
    for (ssize_t off = 0; off < n;) {
        ssize_t w = write(to, buf + off, n - off);
        if (w <= 0)
            return 0;
        off += w;
    }
    return 1;
}

static void add_listener(const char *spec)
{
    int fd, port;
    if (n_listeners < MAX_LISTEN && sscanf(spec, "%d:%d", &fd, &port) == 2) {
        listeners[n_listeners].fd = fd;
        listeners[n_listeners].port = port;
        n_listeners++;
    }
}

static int wait_loop(pid_t child, const char *status_path);
static int run_container(const char *plan_path);

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "run") == 0)
        return run_container(argv[2]);
    if (argc < 3) {
        fprintf(stderr, "usage: %s run PLAN | CHILD_PID STATUS_PATH [LISTEN_FD:PORT ...]\n", argv[0]);
        return 2;
    }
    for (int i = 3; i < argc; i++)
        add_listener(argv[i]);
    return wait_loop((pid_t)atoi(argv[1]), argv[2]);
}

static int wait_loop(pid_t child, const char *status_path)
{
    /* The shim outlives terminals and notebook kernels; stray job-control signals must not
     * kill it, or the container's exit status would be lost. */
    signal(SIGHUP, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC);
    if (chdir("/") < 0) { /* keep no directory busy */ }

    for (;;) {
        int status;
        pid_t got = waitpid(child, &status, WNOHANG); /* also catches an exit before signalfd */
        if (got == child) {
            write_status(status_path, status);
            return 0;
        }
        if (got < 0 && errno == ECHILD)
            return 1; /* not our child: nothing to wait for */

        struct pollfd fds[1 + MAX_LISTEN + 2 * MAX_CONN];
        int n = 0;
        fds[n++] = (struct pollfd){.fd = sfd, .events = POLLIN};
        for (int i = 0; i < n_listeners; i++)
            fds[n++] = (struct pollfd){.fd = listeners[i].fd, .events = POLLIN};
        for (int i = 0; i < n_pairs; i++) {
            fds[n++] = (struct pollfd){.fd = pairs[i].a, .events = POLLIN};
            fds[n++] = (struct pollfd){.fd = pairs[i].b, .events = POLLIN};
        }
        if (poll(fds, n, -1) < 0)
            continue;
        if (fds[0].revents) {
            struct signalfd_siginfo info;
            if (read(sfd, &info, sizeof info) < 0) { /* drained; waitpid above does the work */ }
        }
        for (int i = 0; i < n_listeners; i++)
            if (fds[1 + i].revents & POLLIN)
                accept_one(&listeners[i]);
        /* Walk pairs backwards so that dropping one (swap with the last) skips nothing. */
        int base = 1 + n_listeners, polled = (n - base) / 2;
        for (int i = polled - 1; i >= 0; i--) {
            short ra = fds[base + 2 * i].revents, rb = fds[base + 2 * i + 1].revents;
            int alive = 1;
            if (ra)
                alive = relay(pairs[i].a, pairs[i].b);
            if (alive && rb)
                alive = relay(pairs[i].b, pairs[i].a);
            if (!alive)
                drop_pair(i);
        }
    }
}

/* ------------------------------------------------------------------ starting a container
 * The plan is a file of NUL-terminated "key=value" records written by container.py; repeated
 * keys make lists (arg, env, group, port, rlimit). File descriptors from the caller:
 * 3 = info (A writes "A_PID B_PID\n"), 4 = errors ("CODE message"; close-on-exec in B, so end
 * of file means the command runs), 5 = go (the caller has put B in its cgroup).
 */
#include <sched.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/ioctl.h>
#include <net/if.h>
#include <grp.h>
#include <linux/capability.h>

#define INFO_FD 3
#define ERR_FD 4
#define GO_FD 5
#define MAX_ITEMS 4096

static char *plan_keys[MAX_ITEMS], *plan_vals[MAX_ITEMS];
static int n_plan;

static const char *get(const char *key)
{
    for (int i = 0; i < n_plan; i++)
        if (strcmp(plan_keys[i], key) == 0)
            return plan_vals[i];
    return NULL;
}

static int get_all(const char *key, char **out, int max)
{
    int n = 0;
    for (int i = 0; i < n_plan && n < max - 1; i++)
        if (strcmp(plan_keys[i], key) == 0)
            out[n++] = plan_vals[i];
    out[n] = NULL;
    return n;
}

static int has_ns(const char *name)
{
    char *ns[16];
    int n = get_all("ns", ns, 16);
    for (int i = 0; i < n; i++)
        if (strcmp(ns[i], name) == 0)
            return 1;
    return 0;
}

static void fail(int code, const char *step, const char *what)
{
    char buf[1024];
    int len = snprintf(buf, sizeof buf, "%d %s%s%s: %s", code, step, what ? " " : "", what ? what : "",
                       strerror(errno));
    if (write(ERR_FD, buf, len) < 0) { /* nobody listens any more */ }
    _exit(code);
}

static void write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, text, strlen(text)) < 0)
        fail(125, "writing", path);
    close(fd);
}

static void do_mount(const char *src, const char *dst, const char *type, unsigned long flags,
                     const char *data)
{
    if (mount(src, dst, type, flags, data) < 0)
        fail(125, "mount", dst);
}

static void path_join(char *out, size_t size, const char *a, const char *b)
{
    snprintf(out, size, "%s/%s", a, b);
}

static void mount_root(const char *root)
{
    const char *kind = get("rootfs_kind");
    char opts[8192];
    if (strcmp(kind, "overlayfs") == 0 || strcmp(kind, "fuse-overlayfs") == 0)
        snprintf(opts, sizeof opts, "lowerdir=%s,upperdir=%s,workdir=%s", get("lower"),
                 get("upper"), get("work"));
    if (strcmp(kind, "overlayfs") == 0) {
        if (get("userns")[0] == '1') {
            /* In a user namespace overlay keeps whiteout/opaque marks in user.* xattrs. */
            char with[8300];
            snprintf(with, sizeof with, "%s,userxattr", opts);
            if (mount("overlay", root, "overlay", 0, with) == 0)
                return;
        }
        do_mount("overlay", root, "overlay", 0, opts);
    } else if (strcmp(kind, "fuse-overlayfs") == 0) {
        pid_t pid = fork();
        if (pid == 0) {
            execl(get("fuse"), "fuse-overlayfs", "-o", opts, root, (char *)NULL);
            _exit(127);
        }
        int status;
        if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status))
            fail(125, "fuse-overlayfs", root);
    } else {
        /* pivot_root needs the new root to be a mount point: bind the copy onto itself. */
        do_mount(root, root, NULL, MS_BIND | MS_REC, NULL);
    }
}

/* Like Docker/runc: the fresh /proc is our PID namespace's, but /proc/sys, sysrq-trigger and
 * friends still reach host-wide kernel settings, so they become read-only, and files that leak
 * host memory or keys are masked. In a user namespace the kernel may refuse some of these
 * remounts (locked mounts); the namespace's root cannot write host settings anyway (they are
 * owned by the real root), so a refusal there is skipped instead of failing the start. */
static void harden_mount(const char *src, const char *dst, const char *type, unsigned long flags,
                         const char *data, int userns)
{
    if (mount(src, dst, type, flags, data) < 0 && !userns)
        fail(125, "mount", dst);
}

static void harden_proc(const char *proc, int userns)
{
    static const char *readonly[] = {"sys", "sysrq-trigger", "irq", "bus", NULL};
    static const char *masked_files[] = {"kcore", "keys", "timer_list", "sched_debug", NULL};
    static const char *masked_dirs[] = {"acpi", "scsi", NULL};
    const unsigned long locked = MS_NOSUID | MS_NODEV | MS_NOEXEC;
    char p[4096];
    struct stat st;
    for (int i = 0; readonly[i]; i++) {
        path_join(p, sizeof p, proc, readonly[i]);
        if (lstat(p, &st) < 0)
            continue;
        if (mount(p, p, NULL, MS_BIND | MS_REC, NULL) < 0) {
            if (!userns)
                fail(125, "mount", p);
            continue;
        }
        harden_mount(NULL, p, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | locked, NULL, userns);
    }
    for (int i = 0; masked_files[i]; i++) {
        path_join(p, sizeof p, proc, masked_files[i]);
        if (lstat(p, &st) == 0 && !S_ISDIR(st.st_mode))
            harden_mount("/dev/null", p, NULL, MS_BIND, NULL, userns);
    }
    for (int i = 0; masked_dirs[i]; i++) {
        path_join(p, sizeof p, proc, masked_dirs[i]);
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
            harden_mount("tmpfs", p, "tmpfs", MS_RDONLY | locked, "size=0", userns);
    }
}

static void mount_system(const char *root, int userns)
{
    static const char *devices[] = {"null", "zero", "full", "random", "urandom", "tty", NULL};
    char proc[4096], sys[4096], dev[4096], p[4096];
    path_join(proc, sizeof proc, root, "proc");
    path_join(sys, sizeof sys, root, "sys");
    path_join(dev, sizeof dev, root, "dev");
    mkdir(proc, 0755);
    mkdir(sys, 0755);
    mkdir(dev, 0755);
    do_mount("proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    harden_proc(proc, userns);
    if (mount("sysfs", sys, "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) {
        /* Without our own network namespace the kernel refuses a new sysfs: bind, read-only. */
        do_mount("/sys", sys, NULL, MS_BIND | MS_REC, NULL);
        do_mount(NULL, sys, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    }
    do_mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k");
    for (int i = 0; devices[i]; i++) {
        char host[64];
        path_join(p, sizeof p, dev, devices[i]);
        close(open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0666));
        snprintf(host, sizeof host, "/dev/%s", devices[i]);
        /* mknod is refused in a user namespace; binding the host's nodes works everywhere. */
        do_mount(host, p, NULL, MS_BIND, NULL);
    }
    path_join(p, sizeof p, dev, "pts");
    mkdir(p, 0755);
    do_mount("devpts", p, "devpts", MS_NOSUID | MS_NOEXEC,
             userns ? "newinstance,ptmxmode=0666,mode=0620" : "newinstance,ptmxmode=0666,mode=0620,gid=5");
    path_join(p, sizeof p, dev, "ptmx");
    if (symlink("pts/ptmx", p) < 0) { /* exists */ }
    path_join(p, sizeof p, dev, "shm");
    mkdir(p, 01777);
    do_mount("shm", p, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k");
    static const char *links[][2] = {{"fd", "/proc/self/fd"}, {"stdin", "/proc/self/fd/0"},
                                     {"stdout", "/proc/self/fd/1"}, {"stderr", "/proc/self/fd/2"}};
    for (int i = 0; i < 4; i++) {
        path_join(p, sizeof p, dev, links[i][0]);
        if (symlink(links[i][1], p) < 0) { /* exists */ }
    }
}

static void mkdir_p(const char *path)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *s = buf + 1; *s; s++)
        if (*s == '/') {
            *s = 0;
            mkdir(buf, 0755);
            *s = '/';
        }
    mkdir(buf, 0755);
}

static void become(void)
{
    unsigned long long mask = strtoull(get("capmask"), NULL, 16);
    int last = atoi(get("lastcap"));
    for (int cap = 0; cap <= last; cap++)
        if (!(mask >> cap & 1))
            prctl(PR_CAPBSET_DROP, cap, 0, 0, 0);
    char *groups_s[64];
    gid_t groups[64];
    int ng = get_all("group", groups_s, 64);
    for (int i = 0; i < ng; i++)
        groups[i] = (gid_t)atoi(groups_s[i]);
    /* A rootless user namespace must deny setgroups (to write its gid_map unprivileged). */
    if (setgroups(ng, groups) < 0 && ng)
        fail(125, "setgroups", NULL);
    uid_t uid = (uid_t)atoi(get("uid"));
    gid_t gid = (gid_t)atoi(get("gid"));
    if (setresgid(gid, gid, gid) < 0)
        fail(125, "setgid", get("gid"));
    if (setresuid(uid, uid, uid) < 0)   /* for uid != 0 this empties permitted and effective */
        fail(125, "setuid", get("uid"));
    if (uid == 0) {
        struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
        struct __user_cap_data_struct d[2] = {
            {(__u32)mask, (__u32)mask, 0}, {(__u32)(mask >> 32), (__u32)(mask >> 32), 0}};
        if (syscall(SYS_capset, &h, d) < 0)
            fail(125, "capset", NULL);
    }
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        fail(125, "no_new_privs", NULL);
}

static void process_b(void)
{
    const char *root = get("rootfs");
    int userns = get("userns")[0] == '1';
    close(INFO_FD);
    fcntl(ERR_FD, F_SETFD, FD_CLOEXEC);
    int out = open(get("stdout"), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    int err = open(get("stderr"), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (out < 0 || err < 0)
        fail(125, "opening the logs", NULL);
    if (unshare(CLONE_NEWNS) < 0)
        fail(125, "unshare", "mnt");
    /* Nothing we mount may propagate back to the host's mount table. */
    do_mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);
    mount_root(root);
    mount_system(root, userns);
    char go;
    if (read(GO_FD, &go, 1) != 1)
        _exit(125); /* the caller is gone: do not start anything */
    close(GO_FD);
    char *limits[16];
    int nl = get_all("rlimit", limits, 16);
    for (int i = 0; i < nl; i++) {
        int res;
        unsigned long long soft, hard;
        if (sscanf(limits[i], "%d %llu %llu", &res, &soft, &hard) == 3) {
            struct rlimit r = {soft, hard};
            if (setrlimit(res, &r) < 0)
                fail(125, "setrlimit", limits[i]);
        }
    }
    if (chdir(root) < 0)
        fail(125, "chdir", root);
    /* pivot_root(".", ".") stacks the old root on top of the new one; unmounting "." then
     * detaches the old root, with no put_old directory left in the container's files. */
    if (syscall(SYS_pivot_root, ".", ".") < 0)
        fail(125, "pivot_root", root);
    if (umount2(".", MNT_DETACH) < 0)
        fail(125, "umount", "the old root");
    if (chdir("/") < 0)
        fail(125, "chdir", "/");
    /* After the caller put us in our cgroup, so that it becomes the namespace's root "/". */
    if (has_ns("cgroup") && unshare(CLONE_NEWCGROUP) < 0)
        fail(125, "unshare", "cgroup");
    mkdir_p(get("workdir")); /* as Docker does for a WORKDIR that does not exist */
    if (chdir(get("workdir")) < 0)
        fail(125, "chdir", get("workdir"));
    become();
    int null = open("/dev/null", O_RDONLY);
    if (null < 0 || dup2(null, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0)
        fail(125, "redirecting output", NULL);
    syscall(SYS_close_range, 3, ERR_FD - 1, 0);
    syscall(SYS_close_range, ERR_FD + 1, ~0U, 0);
    static char *args[MAX_ITEMS], *env[MAX_ITEMS];
    get_all("arg", args, MAX_ITEMS);
    get_all("env", env, MAX_ITEMS);
    environ = env; /* execvp searches the container's own PATH */
    execvp(args[0], args);
    char buf[1024];
    int code = (errno == ENOENT || errno == ENOTDIR) ? 127 : 126;
    int len = code == 127
        ? snprintf(buf, sizeof buf, "127 exec: \"%s\": executable file not found%s", args[0],
                   strchr(args[0], '/') ? "" : " in $PATH")
        : snprintf(buf, sizeof buf, "126 exec: \"%s\": %s", args[0], strerror(errno));
    if (write(ERR_FD, buf, len) < 0 || write(2, buf + 4, len - 4) < 0) { /* nothing to do */ }
    _exit(code);
}

static void loopback_up(void)
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq req;
    memset(&req, 0, sizeof req);
    strcpy(req.ifr_name, "lo");
    if (s < 0 || ioctl(s, SIOCGIFFLAGS, &req) < 0)
        fail(125, "loopback", NULL);
    req.ifr_flags |= IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &req) < 0)
        fail(125, "loopback", NULL);
    close(s);
}

static int run_container(const char *plan_path)
{
    static char plan[1 << 20];
    int fd = open(plan_path, O_RDONLY | O_CLOEXEC);
    ssize_t size = fd < 0 ? -1 : read(fd, plan, sizeof plan - 1);
    if (size <= 0)
        fail(125, "reading the plan", plan_path);
    close(fd);
    for (char *p = plan; p < plan + size && n_plan < MAX_ITEMS; p += strlen(p) + 1) {
        char *eq = strchr(p, '=');
        if (!eq)
            continue;
        *eq = 0;
        plan_keys[n_plan] = p;
        plan_vals[n_plan++] = eq + 1;
        p = eq + 1;
    }
    /* We were spawned by the caller, in a new session: fork A and leave, so that the
     * container is never a child of the caller (a notebook kernel, say). */
    pid_t a = fork();
    if (a < 0)
        fail(125, "fork", NULL);
    if (a > 0)
        _exit(0);
    if (get("userns")[0] == '1') {
        char map[64];
        uid_t uid = geteuid();
        gid_t gid = getegid();
        if (unshare(CLONE_NEWUSER) < 0)
            fail(125, "unshare", "user");
        write_file("/proc/self/setgroups", "deny");
        snprintf(map, sizeof map, "0 %d 1", uid);
        write_file("/proc/self/uid_map", map);
        snprintf(map, sizeof map, "0 %d 1", gid);
        write_file("/proc/self/gid_map", map);
    }
    int flags = 0;
    if (has_ns("uts")) flags |= CLONE_NEWUTS;
    if (has_ns("ipc")) flags |= CLONE_NEWIPC;
    if (has_ns("pid")) flags |= CLONE_NEWPID;
    if (has_ns("net")) flags |= CLONE_NEWNET;
    if (flags && unshare(flags) < 0)
        fail(125, "unshare", "namespaces");
    if (has_ns("net"))
        loopback_up();
    if (has_ns("uts") && sethostname(get("hostname"), strlen(get("hostname"))) < 0)
        fail(125, "sethostname", get("hostname"));
    pid_t b = fork();
    if (b < 0)
        fail(125, "fork", NULL);
    if (b == 0)
        process_b();
    char info[64];
    int len = snprintf(info, sizeof info, "%d %d\n", getpid(), b);
    if (write(INFO_FD, info, len) < 0) { /* the caller will find out from the state */ }
    close(INFO_FD);
    close(ERR_FD);
    close(GO_FD);
    char *ports[MAX_LISTEN + 1];
    int np = get_all("port", ports, MAX_LISTEN + 1);
    for (int i = 0; i < np; i++)
        add_listener(ports[i]);
    const char *status = get("status");
    static char status_path[4096];
    snprintf(status_path, sizeof status_path, "%s", status);
    return wait_loop(b, status_path);
}

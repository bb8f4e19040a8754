// The container's first process, before it becomes the container's program:
// runs as a constructor of the agent binary re-executed with _PODVM_CINIT
// set, before the Go runtime starts, so a container costs one exec and a
// few dozen system calls instead of a second Go runtime (see cinit.go).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <unistd.h>

// The config is a sequence of records: a tag byte, a 32-bit little-endian
// length and that many bytes; a record's fields are NUL-separated. Tags
// must match cinit.go.
enum {
	T_ROOT = 'r', T_JOIN = 'n', T_MOUNT = 'm', T_DEVICE = 'd', T_MASK = 'M',
	T_READONLY = 'R', T_HOSTNAME = 'h', T_DOMAIN = 'D', T_SYSCTL = 's',
	T_RLIMIT = 'l', T_CAPS = 'c', T_USER = 'u', T_CWD = 'w', T_ENV = 'e',
	T_ARG = 'a', T_NONEWPRIVS = 'N', T_ROFS = 'o', T_PROPAGATION = 'p',
	T_UMASK = 'U', T_TERMINAL = 't', T_KEYRING = 'k', T_LOOPBACK = 'L',
	T_SETUPDEV = 'v', T_FILES = 'f', T_NEWCGROUP = 'C', T_SECCOMP = 'S', T_END = 'Z',
};

// The descriptors that come with the config, in this order when present.
enum { F_STDIN, F_STDOUT, F_STDERR, F_CONSOLE, F_MAX };

#define MAX_CONFIG (4 << 20)
#define MAX_FIELDS 8

static int sync_fd = -1;


// fail reports msg to the agent and ends this process: the agent turns it
// into the create's error.
static void fail(const char *fmt, ...)
{
	char buf[1024];
	int n;
	va_list ap;

	buf[0] = 'E';
	va_start(ap, fmt);
	n = vsnprintf(buf + 1, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if (n > (int)sizeof(buf) - 2)
		n = sizeof(buf) - 2;
	if (sync_fd >= 0 && write(sync_fd, buf, n + 1) < 0) {
		// Nobody to tell.
	}
	_exit(1);
}

struct record {
	char tag;
	uint32_t len;
	char *data;
};

struct config {
	struct record *r;
	int n;
	int files[F_MAX];
	char *root;
	char **argv, **envp;
	int argc, envc;
	int rootfd;
};

// fields splits a record into its NUL-separated fields.
static int fields(struct record *r, char **out, int max)
{
	int n = 0;
	uint32_t i = 0;

	while (i < r->len && n < max) {
		out[n++] = r->data + i;
		i += strnlen(r->data + i, r->len - i) + 1;
	}
	if (n < max)
		memset(out + n, 0, (max - n) * sizeof(*out));
	return n;
}

static unsigned long long num(const char *s, const char *what)
{
	char *end;
	unsigned long long v;

	if (!s || !*s)
		fail("cinit: missing %s", what);
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end)
		fail("cinit: bad %s %s", what, s);
	return v;
}

static struct record *find(struct config *c, char tag)
{
	for (int k = 0; k < c->n; k++)
		if (c->r[k].tag == tag)
			return &c->r[k];
	return NULL;
}

static void read_full(int fd, void *buf, size_t n)
{
	char *p = buf;

	while (n > 0) {
		ssize_t k = read(fd, p, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			fail("cinit: short config");
		p += k;
		n -= k;
	}
}

// read_header reads the config's length and the descriptors sent with it.
static uint32_t read_header(int fd, int *got, int *nfds)
{
	uint32_t total;
	struct iovec iov = {.iov_base = &total, .iov_len = 4};
	union {
		char buf[CMSG_SPACE(F_MAX * sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
	struct cmsghdr *cm;
	ssize_t n;

	do
		n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n <= 0)
		fail("cinit: no config");
	*nfds = 0;
	for (cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		*nfds = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		if (*nfds > F_MAX)
			fail("cinit: too many descriptors");
		memcpy(got, CMSG_DATA(cm), *nfds * sizeof(int));
	}
	if (msg.msg_flags & MSG_CTRUNC)
		fail("cinit: descriptors cut off");
	if (n < 4)
		read_full(fd, (char *)&total + n, 4 - n);
	return total;
}

static void read_config(int fd, struct config *c)
{
	uint32_t total;
	char *buf;
	uint32_t i = 0;
	int cap = 64, got[F_MAX], nfds, used = 0;
	struct record *fr;

	total = read_header(fd, got, &nfds);
	if (total > MAX_CONFIG)
		fail("cinit: config of %u bytes", total);
	buf = malloc(total + 1);
	c->r = calloc(cap, sizeof(*c->r));
	if (!buf || !c->r)
		fail("cinit: out of memory");
	read_full(fd, buf, total);
	buf[total] = 0;
	while (i + 5 <= total) {
		struct record *r;
		if (c->n == cap) {
			cap *= 2;
			c->r = realloc(c->r, cap * sizeof(*c->r));
			if (!c->r)
				fail("cinit: out of memory");
		}
		r = &c->r[c->n++];
		r->tag = buf[i];
		memcpy(&r->len, buf + i + 1, 4);
		i += 5;
		if (r->len > total - i)
			fail("cinit: record overruns config");
		r->data = buf + i;
		i += r->len;
		// Each record's data ends in a NUL the encoder wrote.
		if (r->len == 0 || r->data[r->len - 1] != 0)
			fail("cinit: unterminated record %c", r->tag);
		if (r->tag == T_END)
			break;
	}
	c->argv = calloc(c->n + 1, sizeof(char *));
	c->envp = calloc(c->n + 2, sizeof(char *));
	if (!c->argv || !c->envp)
		fail("cinit: out of memory");
	for (int k = 0; k < c->n; k++) {
		struct record *r = &c->r[k];
		if (r->tag == T_ROOT)
			c->root = r->data;
		else if (r->tag == T_ARG)
			c->argv[c->argc++] = r->data;
		else if (r->tag == T_ENV)
			c->envp[c->envc++] = r->data;
	}
	for (int k = 0; k < F_MAX; k++)
		c->files[k] = -1;
	if ((fr = find(c, T_FILES)) != NULL) {
		// One character per descriptor: '1' when it was sent.
		for (int k = 0; k < F_MAX && k < (int)fr->len - 1; k++) {
			if (fr->data[k] != '1')
				continue;
			if (used == nfds)
				fail("cinit: descriptor missing");
			c->files[k] = got[used++];
		}
	}
	if (used != nfds)
		fail("cinit: %d descriptors, %d expected", nfds, used);
	if (!c->root || c->root[0] != '/')
		fail("cinit: no rootfs");
	if (c->argc == 0)
		fail("cinit: no args");
}


// join_namespaces joins those given by path. A PID namespace applies to
// children only: the process forks, the child goes on as the container's
// init and the parent, once the agent has taken the child's PID, exits
// (the child becomes the agent's, PID 1's).
static void join_namespaces(struct config *c)
{
	int pid_joined = 0;

	for (int k = 0; k < c->n; k++) {
		char *f[2];
		int fd;
		if (c->r[k].tag != T_JOIN)
			continue;
		fields(&c->r[k], f, 2);
		fd = open(f[1] ? f[1] : "", O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			fail("open %s namespace %s: %s", f[0], f[1], strerror(errno));
		if (setns(fd, 0) < 0)
			fail("join %s namespace %s: %s", f[0], f[1], strerror(errno));
		close(fd);
		if (!strcmp(f[0], "NEWPID"))
			pid_joined = 1;
	}
	if (pid_joined) {
		char msg[5] = {'P'}, ack;
		int32_t pid = fork();
		if (pid < 0)
			fail("fork into the PID namespace: %s", strerror(errno));
		if (pid == 0)
			return;
		memcpy(msg + 1, &pid, 4);
		if (write(sync_fd, msg, 5) != 5 || read(sync_fd, &ack, 1) != 1 || ack != 'A')
			kill(pid, SIGKILL);
		_exit(0);
	}
}

// resolve opens path inside the rootfs, symlinks resolved as if the
// rootfs were /, creating what is missing: directories on the way, and
// the last component as a directory or (file) an empty file. Each prefix
// is resolved from the rootfs again, so a symlink met on the way is
// followed inside it, as runc's MkdirAllInRoot does.
static int resolve(struct config *c, const char *path, int create, int file)
{
	char buf[PATH_MAX];
	char *p;
	int fd;
	struct open_how how = {
		.flags = O_PATH | O_CLOEXEC,
		.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
	};

	if (strlen(path) >= sizeof(buf))
		fail("path %s too long", path);
	strcpy(buf, path);
	fd = syscall(SYS_openat2, c->rootfd, buf, &how, sizeof(how));
	if (fd >= 0 || !create || errno != ENOENT)
		return fd;
	for (p = buf; *p; ) {
		char *end, saved;
		int parent, last;
		while (*p == '/')
			p++;
		if (!*p)
			break;
		end = p + strcspn(p, "/");
		last = !end[strspn(end, "/")];
		saved = *end;
		*end = 0;
		fd = syscall(SYS_openat2, c->rootfd, buf, &how, sizeof(how));
		if (fd < 0 && errno == ENOENT) {
			// Make it in its parent, resolved inside the root.
			char *slash = strrchr(buf, '/');
			const char *name = slash ? slash + 1 : buf;
			if (slash && slash != buf) {
				*slash = 0;
				parent = syscall(SYS_openat2, c->rootfd, buf, &how, sizeof(how));
				*slash = '/';
			} else {
				parent = dup(c->rootfd);
			}
			if (parent < 0)
				return -1;
			if (last && file) {
				int f = openat(parent, name, O_CREAT | O_RDONLY | O_CLOEXEC | O_NOFOLLOW, 0755);
				if (f >= 0)
					close(f);
			} else if (mkdirat(parent, name, 0755) < 0 && errno != EEXIST) {
				close(parent);
				return -1;
			}
			close(parent);
			fd = syscall(SYS_openat2, c->rootfd, buf, &how, sizeof(how));
		}
		*end = saved;
		if (fd < 0)
			return -1;
		if (last)
			return fd;
		close(fd);
		p = end;
	}
	return syscall(SYS_openat2, c->rootfd, buf, &how, sizeof(how));
}

static void procfd(char *buf, size_t n, int fd)
{
	snprintf(buf, n, "/proc/self/fd/%d", fd);
}

#define BIND_FLAGS (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME | MS_RELATIME | MS_STRICTATIME)

// vfs_flags turns statvfs flags into the mount flags a remount keeps.
static unsigned long vfs_flags(unsigned long f)
{
	unsigned long m = 0;

	if (f & ST_RDONLY)
		m |= MS_RDONLY;
	if (f & ST_NOSUID)
		m |= MS_NOSUID;
	if (f & ST_NODEV)
		m |= MS_NODEV;
	if (f & ST_NOEXEC)
		m |= MS_NOEXEC;
	if (f & ST_NOATIME)
		m |= MS_NOATIME;
	if (f & ST_NODIRATIME)
		m |= MS_NODIRATIME;
	if (f & ST_RELATIME)
		m |= MS_RELATIME;
	return m;
}

static void do_mount(struct config *c, struct record *r)
{
	char *f[7];
	char target[64];
	unsigned long flags, prop, cleared;
	int fd, is_file = 0, rw_first;
	struct stat st;
	const char *src, *dst, *type, *data;

	fields(r, f, 7);
	src = f[0] ? f[0] : "";
	dst = f[1] ? f[1] : "";
	type = f[2] ? f[2] : "";
	flags = num(f[3], "mount flags");
	prop = num(f[4], "propagation flags");
	data = f[5] && *f[5] ? f[5] : NULL;
	cleared = num(f[6], "cleared mount flags");
	if (dst[0] != '/')
		fail("mount destination %s is not absolute", dst);
	if (flags & MS_BIND && stat(src, &st) == 0 && !S_ISDIR(st.st_mode))
		is_file = 1;
	fd = resolve(c, dst, 1, is_file);
	if (fd < 0)
		fail("mount %s: create %s in the rootfs: %s", src, dst, strerror(errno));
	procfd(target, sizeof(target), fd);
	if (flags & MS_BIND) {
		if (mount(src, target, NULL, flags & (MS_BIND | MS_REC), NULL) < 0)
			fail("bind mount %s on %s: %s", src, dst, strerror(errno));
		if ((flags | cleared) & BIND_FLAGS) {
			struct statvfs sv;
			// The bind is at target now: reopen to reach it, not what it covers.
			close(fd);
			fd = resolve(c, dst, 0, 0);
			procfd(target, sizeof(target), fd);
			if (fd < 0 || statvfs(target, &sv) < 0)
				fail("statvfs %s: %s", dst, strerror(errno));
			// A bind keeps its source's flags: the spec's are added and
			// the ones it clears ("rw", "suid"...) taken off, as in runc.
			flags = (flags | vfs_flags(sv.f_flag)) & ~cleared;
			if (mount(NULL, target, NULL, (flags & (BIND_FLAGS | MS_REC)) | MS_BIND | MS_REMOUNT, NULL) < 0)
				fail("remount %s with its flags: %s", dst, strerror(errno));
		}
	} else {
		// runc mounts tmpfs and /dev writable and makes them read-only last,
		// after what goes inside them.
		rw_first = (flags & MS_RDONLY) && (!strcmp(type, "tmpfs") || !strcmp(dst, "/dev"));
		if (!strcmp(type, "cgroup") || !strcmp(type, "cgroup2"))
			type = "cgroup2";
		if (mount(src, target, type, rw_first ? flags & ~MS_RDONLY : flags, data) < 0)
			fail("mount %s (%s) on %s: %s", src, type, dst, strerror(errno));
	}
	close(fd);
	if (prop) {
		fd = resolve(c, dst, 0, 0);
		procfd(target, sizeof(target), fd);
		for (unsigned long bit = MS_UNBINDABLE; bit <= MS_SHARED; bit <<= 1) {
			if (!(prop & bit))
				continue;
			if (fd < 0 || mount(NULL, target, NULL, bit | (prop & MS_REC), NULL) < 0)
				fail("set propagation of %s: %s", dst, strerror(errno));
		}
		close(fd);
	}
}

// remount_readonly makes the tmpfs and /dev mounts that asked for it
// read-only, after everything inside them exists (runc's finalizeRootfs).
static void remount_readonly(struct config *c)
{
	for (int k = 0; k < c->n; k++) {
		char *f[6];
		unsigned long flags;
		if (c->r[k].tag != T_MOUNT)
			continue;
		fields(&c->r[k], f, 6);
		flags = num(f[3], "mount flags");
		if (!(flags & MS_RDONLY) || (flags & MS_BIND))
			continue;
		if (strcmp(f[2], "tmpfs") && strcmp(f[1], "/dev"))
			continue;
		if (mount(NULL, f[1], NULL, flags | MS_REMOUNT, f[5] && *f[5] ? f[5] : NULL) < 0)
			fail("remount %s read-only: %s", f[1], strerror(errno));
	}
}

static void make_devices(struct config *c)
{
	for (int k = 0; k < c->n; k++) {
		char *f[7];
		char rel[PATH_MAX], target[64];
		char *name, *dir;
		mode_t mode;
		int dirfd;
		if (c->r[k].tag != T_DEVICE)
			continue;
		fields(&c->r[k], f, 7);
		if (!f[0] || f[0][0] != '/' || strlen(f[0]) >= sizeof(rel))
			fail("bad device path");
		strcpy(rel, f[0]);
		name = strrchr(rel, '/');
		*name++ = 0;
		dir = rel[0] ? rel : "/";
		dirfd = resolve(c, dir, 1, 0);
		if (dirfd < 0)
			fail("create %s in the rootfs: %s", dir, strerror(errno));
		switch (f[1][0]) {
		case 'c':
			mode = S_IFCHR;
			break;
		case 'b':
			mode = S_IFBLK;
			break;
		case 'p':
			mode = S_IFIFO;
			break;
		default:
			fail("device %s of unknown type %s", f[0], f[1]);
		}
		mode |= num(f[4], "device mode") & 07777;
		// The directory fd is O_PATH: work through its /proc name.
		procfd(target, sizeof(target), dirfd);
		{
			char path[PATH_MAX + 64];
			snprintf(path, sizeof(path), "%s/%s", target, name);
			if (mknod(path, mode, makedev(num(f[2], "major"), num(f[3], "minor"))) < 0) {
				if (errno != EEXIST)
					fail("mknod %s: %s", f[0], strerror(errno));
				// The image has a file there: cover it with the real device.
				if (mount(f[0], path, NULL, MS_BIND, NULL) < 0)
					fail("bind device %s: %s", f[0], strerror(errno));
			} else if (lchown(path, num(f[5], "device uid"), num(f[6], "device gid")) < 0) {
				fail("chown %s: %s", f[0], strerror(errno));
			}
		}
		close(dirfd);
	}
}

static void dev_links(struct config *c)
{
	static const char *links[][2] = {
		{"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"},
		{"/proc/self/fd/1", "stdout"}, {"/proc/self/fd/2", "stderr"},
	};
	char target[64];
	int dev = resolve(c, "/dev", 1, 0);

	if (dev < 0)
		fail("create /dev: %s", strerror(errno));
	procfd(target, sizeof(target), dev);
	for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++) {
		char path[128];
		snprintf(path, sizeof(path), "%s/%s", target, links[i][1]);
		if (symlink(links[i][0], path) < 0 && errno != EEXIST)
			fail("symlink /dev/%s: %s", links[i][1], strerror(errno));
	}
	if (access("/proc/kcore", F_OK) == 0) {
		char path[128];
		snprintf(path, sizeof(path), "%s/core", target);
		if (symlink("/proc/kcore", path) < 0 && errno != EEXIST)
			fail("symlink /dev/core: %s", strerror(errno));
	}
	if (find(c, T_SETUPDEV)) {
		char path[128];
		snprintf(path, sizeof(path), "%s/ptmx", target);
		if (unlink(path) < 0 && errno != ENOENT)
			fail("remove /dev/ptmx: %s", strerror(errno));
		if (symlink("pts/ptmx", path) < 0)
			fail("symlink /dev/ptmx: %s", strerror(errno));
	}
	close(dev);
}

static void pivot(struct config *c)
{
	int oldroot = open("/", O_DIRECTORY | O_RDONLY | O_CLOEXEC);

	if (oldroot < 0 || fchdir(c->rootfd) < 0)
		fail("enter rootfs: %s", strerror(errno));
	if (syscall(SYS_pivot_root, ".", ".") < 0)
		fail("pivot_root: %s", strerror(errno));
	// The old root is stacked under the new one: detach it without
	// sending the unmount back to the guest's mounts.
	if (fchdir(oldroot) < 0 || mount(NULL, ".", NULL, MS_SLAVE | MS_REC, NULL) < 0 ||
	    umount2(".", MNT_DETACH) < 0 || chdir("/") < 0)
		fail("detach the old root: %s", strerror(errno));
	close(oldroot);
}

static void paths(struct config *c)
{
	for (int k = 0; k < c->n; k++) {
		const char *p = c->r[k].data;
		struct stat st;
		if (c->r[k].tag == T_READONLY) {
			if (mount(p, p, NULL, MS_BIND | MS_REC, NULL) < 0) {
				if (errno == ENOENT)
					continue;
				fail("bind %s: %s", p, strerror(errno));
			}
			if (mount(NULL, p, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC, NULL) < 0)
				fail("make %s read-only: %s", p, strerror(errno));
		} else if (c->r[k].tag == T_MASK) {
			if (stat(p, &st) < 0)
				continue;
			if (S_ISDIR(st.st_mode)) {
				if (mount("tmpfs", p, "tmpfs", MS_RDONLY, NULL) < 0)
					fail("mask %s: %s", p, strerror(errno));
			} else if (mount("/dev/null", p, NULL, MS_BIND, NULL) < 0) {
				fail("mask %s: %s", p, strerror(errno));
			}
		}
	}
}

// sysctls writes the container's sysctls through sysdir, the guest's
// /proc/sys opened before the pivot (a rootfs need not mount /proc): a
// namespaced sysctl takes the writer's namespace, which is the container's.
static void sysctls(struct config *c, int sysdir)
{
	for (int k = 0; k < c->n; k++) {
		char *f[2];
		char path[PATH_MAX];
		int fd;
		if (c->r[k].tag != T_SYSCTL)
			continue;
		fields(&c->r[k], f, 2);
		if (!f[1] || !*f[0] || f[0][0] == '.' || f[0][0] == '/' || strstr(f[0], "..") ||
		    snprintf(path, sizeof(path), "%s", f[0]) >= (int)sizeof(path))
			fail("bad sysctl %s", f[0]);
		for (char *s = path; *s; s++)
			if (*s == '.')
				*s = '/';
		fd = openat(sysdir, path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0 || write(fd, f[1], strlen(f[1])) < 0)
			fail("sysctl %s: %s", f[0], strerror(errno));
		close(fd);
	}
}

static void loopback_up(void)
{
	struct ifreq ifr = {0};
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	strcpy(ifr.ifr_name, "lo");
	if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
		fail("loopback: %s", strerror(errno));
	ifr.ifr_flags |= IFF_UP;
	if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
		fail("bring up loopback: %s", strerror(errno));
	close(s);
}

static void send_fd(int sock, int fd)
{
	char name[] = "console";
	struct iovec iov = {.iov_base = name, .iov_len = sizeof(name) - 1};
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);

	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	if (sendmsg(sock, &msg, 0) < 0)
		fail("send the console: %s", strerror(errno));
}

// console makes a pty in the container's own devpts, hands its master to
// the agent and makes the slave the process's terminal and /dev/console.
static void console(struct config *c, struct record *r)
{
	char *f[3];
	char slave[64];
	unsigned int n, unlock = 0;
	int master, fd;
	struct winsize ws = {0};

	fields(r, f, 2);
	master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (master < 0 || ioctl(master, TIOCSPTLCK, &unlock) < 0 || ioctl(master, TIOCGPTN, &n) < 0)
		fail("open a pty: %s", strerror(errno));
	snprintf(slave, sizeof(slave), "/dev/pts/%u", n);
	fd = open(slave, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		fail("open %s: %s", slave, strerror(errno));
	ws.ws_col = num(f[0], "console width");
	ws.ws_row = num(f[1], "console height");
	if (ws.ws_col && ws.ws_row)
		ioctl(master, TIOCSWINSZ, &ws);
	{
		int cf = open("/dev/console", O_CREAT | O_RDONLY | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (cf >= 0)
			close(cf);
		if (mount(slave, "/dev/console", NULL, MS_BIND, NULL) < 0)
			fail("bind /dev/console: %s", strerror(errno));
	}
	if (c->files[F_CONSOLE] < 0)
		fail("cinit: terminal without a console socket");
	send_fd(c->files[F_CONSOLE], master);
	close(master);
	close(c->files[F_CONSOLE]);
	if (ioctl(fd, TIOCSCTTY, 0) < 0)
		fail("set the controlling terminal: %s", strerror(errno));
	for (int i = 0; i < 3; i++)
		if (dup2(fd, i) < 0)
			fail("dup the terminal: %s", strerror(errno));
	if (fd > 2)
		close(fd);
}

static int capset_full(uint64_t eff, uint64_t perm, uint64_t inh)
{
	struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct d[2] = {
		{.effective = eff, .permitted = perm, .inheritable = inh},
		{.effective = eff >> 32, .permitted = perm >> 32, .inheritable = inh >> 32},
	};
	return syscall(SYS_capset, &h, d);
}

static void credentials(struct config *c)
{
	struct record *u = find(c, T_USER), *cr = find(c, T_CAPS);
	char *f[5];
	uid_t uid = 0;
	gid_t gid = 0, groups[64];
	int ngroups = 0;

	if (u) {
		char *g;
		fields(u, f, 3);
		uid = num(f[0], "uid");
		gid = num(f[1], "gid");
		for (g = f[2]; g && *g; ) {
			char *comma = strchr(g, ',');
			if (comma)
				*comma = 0;
			if (ngroups == (int)(sizeof(groups) / sizeof(groups[0])))
				fail("more than %d additional groups", ngroups);
			groups[ngroups++] = num(g, "group");
			g = comma ? comma + 1 : NULL;
		}
	}
	if (cr) {
		uint64_t bounding;
		fields(cr, f, 5);
		bounding = num(f[0], "bounding set");
		for (int cap = 0; cap <= 63; cap++) {
			if (bounding & (1ULL << cap))
				continue;
			if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
				fail("drop capability %d: %s", cap, strerror(errno));
		}
	}
	if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
		fail("keep capabilities: %s", strerror(errno));
	if (setgroups(ngroups, groups) < 0)
		fail("setgroups: %s", strerror(errno));
	if (setresgid(gid, gid, gid) < 0)
		fail("setgid %u: %s", gid, strerror(errno));
	if (setresuid(uid, uid, uid) < 0)
		fail("setuid %u: %s", uid, strerror(errno));
	if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0)
		fail("keep capabilities: %s", strerror(errno));
	if (cr) {
		uint64_t amb;
		if (capset_full(num(f[1], "effective"), num(f[3], "permitted"), num(f[2], "inheritable")) < 0)
			fail("capset: %s", strerror(errno));
		amb = num(f[4], "ambient");
		for (int cap = 0; cap <= 63; cap++)
			if (amb & (1ULL << cap) && prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0) < 0)
				fail("raise ambient capability %d: %s", cap, strerror(errno));
	}
}

static int unhex(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	return -1;
}

// seccomp loads the filter the agent compiled (hex of a classic BPF
// program, as libseccomp exports it) with its load flags.
static void seccomp(struct record *r)
{
	char *f[2];
	size_t n;
	unsigned char *prog;
	struct sock_fprog fprog;
	unsigned long flags;
	const char *hex;

	fields(r, f, 2);
	flags = num(f[0], "seccomp flags");
	hex = f[1] ? f[1] : "";
	n = strlen(hex);
	if (n == 0 || n % (2 * sizeof(struct sock_filter)) != 0)
		fail("seccomp program of %zu hex digits", n);
	prog = malloc(n / 2);
	if (!prog)
		fail("cinit: out of memory");
	for (size_t i = 0; i < n / 2; i++) {
		int hi = unhex(hex[2 * i]), lo = unhex(hex[2 * i + 1]);
		if (hi < 0 || lo < 0)
			fail("seccomp program is not hex");
		prog[i] = hi << 4 | lo;
	}
	fprog.len = n / 2 / sizeof(struct sock_filter);
	fprog.filter = (struct sock_filter *)prog;
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &fprog) < 0)
		fail("load the seccomp filter: %s", strerror(errno));
}

// home finds uid's home directory in the container's /etc/passwd, as runc
// sets HOME when the process has none.
static const char *home(uid_t uid)
{
	static char line[1024];
	FILE *f = fopen("/etc/passwd", "re");
	const char *h = "/";

	if (!f)
		return h;
	while (fgets(line, sizeof(line), f)) {
		char *fld[7] = {0};
		char *s = line;
		int n = 0;
		while (n < 7 && (fld[n++] = strsep(&s, ":")) != NULL)
			;
		if (fld[2] && fld[5] && *fld[2] && strtoul(fld[2], NULL, 10) == uid) {
			h = fld[5];
			break;
		}
	}
	fclose(f);
	return h;
}

// lookup finds the program the way runc's exec.LookPath does, with the
// process's own PATH.
static char *lookup(struct config *c, char *buf, size_t n)
{
	const char *name = c->argv[0], *path = NULL;

	if (strchr(name, '/')) {
		if (access(name, X_OK) == 0)
			return (char *)name;
		fail("exec: \"%s\": %s", name, strerror(errno));
	}
	for (int k = 0; k < c->envc; k++)
		if (!strncmp(c->envp[k], "PATH=", 5))
			path = c->envp[k] + 5;
	if (!path)
		path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
	while (path) {
		const char *colon = strchr(path, ':');
		size_t len = colon ? (size_t)(colon - path) : strlen(path);
		struct stat st;
		snprintf(buf, n, "%.*s/%s", (int)len, len ? path : ".", name);
		if (stat(buf, &st) == 0 && S_ISREG(st.st_mode) && access(buf, X_OK) == 0)
			return buf;
		path = colon ? colon + 1 : NULL;
	}
	fail("exec: \"%s\": executable file not found in $PATH", name);
	return NULL;
}

static void run(int fd)
{
	struct config c = {0};
	struct record *r;
	char exe[PATH_MAX], *prog;
	char go;
	int has_home = 0, sysdir;
	uid_t uid = 0;

	sync_fd = fd;
	// The agent learns that exec succeeded from this end closing.
	if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
		fail("cinit: %s", strerror(errno));
	// Nothing in the container may read this process's memory until it
	// is the container's program (runc's CVE-2019-5736).
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	read_config(fd, &c);
	for (int k = F_STDIN; k <= F_STDERR; k++) {
		if (c.files[k] < 0)
			continue;
		if (dup2(c.files[k], k) < 0)
			fail("cinit: stdio: %s", strerror(errno));
		close(c.files[k]);
	}
	if (find(&c, T_KEYRING)) {
		char name[300];
		snprintf(name, sizeof(name), "_ses.%s", find(&c, T_KEYRING)->data);
		// Best effort, as in runc: keyrings only add to file credentials.
		if (syscall(SYS_keyctl, 1 /* KEYCTL_JOIN_SESSION_KEYRING */, name) < 0 && errno != ENOSYS)
			fail("join a session keyring: %s", strerror(errno));
	}
	join_namespaces(&c);
	if (setsid() < 0)
		fail("setsid: %s", strerror(errno));
	// After the agent moved this process into the container's cgroup,
	// which becomes the namespace's root.
	if (find(&c, T_NEWCGROUP) && unshare(CLONE_NEWCGROUP) < 0)
		fail("new cgroup namespace: %s", strerror(errno));
	if (find(&c, T_LOOPBACK))
		loopback_up();
	r = find(&c, T_PROPAGATION);
	if (mount(NULL, "/", NULL, r ? num(r->data, "root propagation") : MS_SLAVE | MS_REC, NULL) < 0)
		fail("set the root's propagation: %s", strerror(errno));
	if (mount(c.root, c.root, NULL, MS_BIND | MS_REC, NULL) < 0)
		fail("bind the rootfs %s: %s", c.root, strerror(errno));
	c.rootfd = open(c.root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (c.rootfd < 0)
		fail("open the rootfs %s: %s", c.root, strerror(errno));
	for (int k = 0; k < c.n; k++)
		if (c.r[k].tag == T_MOUNT)
			do_mount(&c, &c.r[k]);
	if (find(&c, T_SETUPDEV)) {
		make_devices(&c);
		dev_links(&c);
	}
	if ((r = find(&c, T_CWD)) != NULL) {
		int cwd = resolve(&c, r->data, 1, 0);
		if (cwd < 0)
			fail("create the working directory %s: %s", r->data, strerror(errno));
		close(cwd);
	}
	sysdir = -1;
	if (find(&c, T_SYSCTL) && (sysdir = open("/proc/sys", O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
		fail("open /proc/sys: %s", strerror(errno));
	pivot(&c);
	if ((r = find(&c, T_TERMINAL)) != NULL)
		console(&c, r);
	remount_readonly(&c);
	if (find(&c, T_ROFS) && mount(NULL, "/", NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL) < 0)
		fail("make the rootfs read-only: %s", strerror(errno));
	r = find(&c, T_UMASK);
	umask(r ? num(r->data, "umask") : 022);
	if ((r = find(&c, T_HOSTNAME)) != NULL && sethostname(r->data, strlen(r->data)) < 0)
		fail("sethostname: %s", strerror(errno));
	if ((r = find(&c, T_DOMAIN)) != NULL && setdomainname(r->data, strlen(r->data)) < 0)
		fail("setdomainname: %s", strerror(errno));
	if (sysdir >= 0) {
		sysctls(&c, sysdir);
		close(sysdir);
	}
	paths(&c);
	for (int k = 0; k < c.n; k++) {
		char *f[3];
		struct rlimit rl;
		if (c.r[k].tag != T_RLIMIT)
			continue;
		fields(&c.r[k], f, 3);
		rl.rlim_cur = num(f[1], "rlimit");
		rl.rlim_max = num(f[2], "rlimit");
		if (setrlimit(num(f[0], "rlimit type"), &rl) < 0)
			fail("setrlimit %s: %s", f[0], strerror(errno));
	}
	if (find(&c, T_NONEWPRIVS) && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		fail("no_new_privs: %s", strerror(errno));
	if ((r = find(&c, T_USER)) != NULL)
		uid = num(r->data, "uid");
	for (int k = 0; k < c.envc; k++)
		if (!strncmp(c.envp[k], "HOME=", 5))
			has_home = 1;
	if (!has_home) {
		static char h[1100];
		snprintf(h, sizeof(h), "HOME=%s", home(uid));
		c.envp[c.envc++] = h;
	}
	// Without no_new_privs loading a filter takes CAP_SYS_ADMIN: before
	// the capabilities go (runc's order).
	if ((r = find(&c, T_SECCOMP)) != NULL && !find(&c, T_NONEWPRIVS))
		seccomp(r);
	credentials(&c);
	if ((r = find(&c, T_CWD)) != NULL && chdir(r->data) < 0)
		fail("chdir %s: %s", r->data, strerror(errno));
	prog = lookup(&c, exe, sizeof(exe));
	// Created: wait for start.
	if (write(fd, "R", 1) != 1)
		_exit(1);
	if (read(fd, &go, 1) != 1 || go != 'G')
		_exit(1);
	// With no_new_privs, as late as can be: only execve runs under it.
	if ((r = find(&c, T_SECCOMP)) != NULL && find(&c, T_NONEWPRIVS))
		seccomp(r);
	execve(prog, c.argv, c.envp);
	fail("exec %s: %s", prog, strerror(errno));
}

__attribute__((constructor)) static void cinit(void)
{
	const char *s = getenv("_PODVM_CINIT");
	char *end;
	long fd;

	if (!s)
		return;
	fd = strtol(s, &end, 10);
	if (*end || fd < 3 || fd > 1024)
		_exit(1);
	unsetenv("_PODVM_CINIT");
	run(fd);
	_exit(1);
}

// The container's filesystem: mounts resolved inside the rootfs, devices,
// the pivot, masked and read-only paths, sysctls.
#include "cinit.h"

// cinit_resolve opens path inside the rootfs, symlinks resolved as if the
// rootfs were /, creating what is missing: directories on the way, and
// the last component as a directory or (file) an empty file. Each prefix
// is resolved from the rootfs again, so a symlink met on the way is
// followed inside it, as runc's MkdirAllInRoot does.
int cinit_resolve(struct config *c, const char *path, int create, int file)
{
	char buf[PATH_MAX];
	char *p;
	int fd;
	struct open_how how = {
		.flags = O_PATH | O_CLOEXEC,
		.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
	};

	if (strlen(path) >= sizeof(buf))
		cinit_fail("path %s too long", path);
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

void cinit_procfd(char *buf, size_t n, int fd)
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

void cinit_do_mount(struct config *c, struct record *r)
{
	char *f[7];
	char target[64];
	unsigned long flags, prop, cleared;
	int fd, is_file = 0, rw_first;
	struct stat st;
	const char *src, *dst, *type, *data;

	cinit_fields(r, f, 7);
	src = f[0] ? f[0] : "";
	dst = f[1] ? f[1] : "";
	type = f[2] ? f[2] : "";
	flags = cinit_num(f[3], "mount flags");
	prop = cinit_num(f[4], "propagation flags");
	data = f[5] && *f[5] ? f[5] : NULL;
	cleared = cinit_num(f[6], "cleared mount flags");
	if (dst[0] != '/')
		cinit_fail("mount destination %s is not absolute", dst);
	if (flags & MS_BIND && stat(src, &st) == 0 && !S_ISDIR(st.st_mode))
		is_file = 1;
	fd = cinit_resolve(c, dst, 1, is_file);
	if (fd < 0)
		cinit_fail("mount %s: create %s in the rootfs: %s", src, dst, strerror(errno));
	cinit_procfd(target, sizeof(target), fd);
	if (flags & MS_BIND) {
		if (mount(src, target, NULL, flags & (MS_BIND | MS_REC), NULL) < 0)
			cinit_fail("bind mount %s on %s: %s", src, dst, strerror(errno));
		if ((flags | cleared) & BIND_FLAGS) {
			struct statvfs sv;
			// The bind is at target now: reopen to reach it, not what it covers.
			close(fd);
			fd = cinit_resolve(c, dst, 0, 0);
			cinit_procfd(target, sizeof(target), fd);
			if (fd < 0 || statvfs(target, &sv) < 0)
				cinit_fail("statvfs %s: %s", dst, strerror(errno));
			// A bind keeps its source's flags: the spec's are added and
			// the ones it clears ("rw", "suid"...) taken off, as in runc.
			flags = (flags | vfs_flags(sv.f_flag)) & ~cleared;
			if (mount(NULL, target, NULL, (flags & (BIND_FLAGS | MS_REC)) | MS_BIND | MS_REMOUNT, NULL) < 0)
				cinit_fail("remount %s with its flags: %s", dst, strerror(errno));
		}
	} else {
		// runc mounts tmpfs and /dev writable and makes them read-only last,
		// after what goes inside them.
		rw_first = (flags & MS_RDONLY) && (!strcmp(type, "tmpfs") || !strcmp(dst, "/dev"));
		if (!strcmp(type, "cgroup") || !strcmp(type, "cgroup2"))
			type = "cgroup2";
		if (mount(src, target, type, rw_first ? flags & ~MS_RDONLY : flags, data) < 0)
			cinit_fail("mount %s (%s) on %s: %s", src, type, dst, strerror(errno));
	}
	close(fd);
	if (prop) {
		fd = cinit_resolve(c, dst, 0, 0);
		cinit_procfd(target, sizeof(target), fd);
		for (unsigned long bit = MS_UNBINDABLE; bit <= MS_SHARED; bit <<= 1) {
			if (!(prop & bit))
				continue;
			if (fd < 0 || mount(NULL, target, NULL, bit | (prop & MS_REC), NULL) < 0)
				cinit_fail("set propagation of %s: %s", dst, strerror(errno));
		}
		close(fd);
	}
}

// cinit_remount_readonly makes the tmpfs and /dev mounts that asked for it
// read-only, after everything inside them exists (runc's finalizeRootfs).
void cinit_remount_readonly(struct config *c)
{
	for (int k = 0; k < c->n; k++) {
		char *f[6];
		unsigned long flags;
		if (c->r[k].tag != T_MOUNT)
			continue;
		cinit_fields(&c->r[k], f, 6);
		flags = cinit_num(f[3], "mount flags");
		if (!(flags & MS_RDONLY) || (flags & MS_BIND))
			continue;
		if (strcmp(f[2], "tmpfs") && strcmp(f[1], "/dev"))
			continue;
		if (mount(NULL, f[1], NULL, flags | MS_REMOUNT, f[5] && *f[5] ? f[5] : NULL) < 0)
			cinit_fail("remount %s read-only: %s", f[1], strerror(errno));
	}
}

void cinit_make_devices(struct config *c)
{
	for (int k = 0; k < c->n; k++) {
		char *f[7];
		char rel[PATH_MAX], target[64];
		char *name, *dir;
		mode_t mode;
		int dirfd;
		if (c->r[k].tag != T_DEVICE)
			continue;
		cinit_fields(&c->r[k], f, 7);
		if (!f[0] || f[0][0] != '/' || strlen(f[0]) >= sizeof(rel))
			cinit_fail("bad device path");
		strcpy(rel, f[0]);
		name = strrchr(rel, '/');
		*name++ = 0;
		dir = rel[0] ? rel : "/";
		dirfd = cinit_resolve(c, dir, 1, 0);
		if (dirfd < 0)
			cinit_fail("create %s in the rootfs: %s", dir, strerror(errno));
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
			cinit_fail("device %s of unknown type %s", f[0], f[1]);
		}
		mode |= cinit_num(f[4], "device mode") & 07777;
		// The directory fd is O_PATH: work through its /proc name.
		cinit_procfd(target, sizeof(target), dirfd);
		{
			char path[PATH_MAX + 64];
			snprintf(path, sizeof(path), "%s/%s", target, name);
			if (mknod(path, mode, makedev(cinit_num(f[2], "major"), cinit_num(f[3], "minor"))) < 0) {
				if (errno != EEXIST)
					cinit_fail("mknod %s: %s", f[0], strerror(errno));
				// The image has a file there: cover it with the real device.
				if (mount(f[0], path, NULL, MS_BIND, NULL) < 0)
					cinit_fail("bind device %s: %s", f[0], strerror(errno));
			} else if (lchown(path, cinit_num(f[5], "device uid"), cinit_num(f[6], "device gid")) < 0) {
				cinit_fail("chown %s: %s", f[0], strerror(errno));
			}
		}
		close(dirfd);
	}
}

void cinit_dev_links(struct config *c)
{
	static const char *links[][2] = {
		{"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"},
		{"/proc/self/fd/1", "stdout"}, {"/proc/self/fd/2", "stderr"},
	};
	char target[64];
	int dev = cinit_resolve(c, "/dev", 1, 0);

	if (dev < 0)
		cinit_fail("create /dev: %s", strerror(errno));
	cinit_procfd(target, sizeof(target), dev);
	for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++) {
		char path[128];
		snprintf(path, sizeof(path), "%s/%s", target, links[i][1]);
		if (symlink(links[i][0], path) < 0 && errno != EEXIST)
			cinit_fail("symlink /dev/%s: %s", links[i][1], strerror(errno));
	}
	if (access("/proc/kcore", F_OK) == 0) {
		char path[128];
		snprintf(path, sizeof(path), "%s/core", target);
		if (symlink("/proc/kcore", path) < 0 && errno != EEXIST)
			cinit_fail("symlink /dev/core: %s", strerror(errno));
	}
	if (cinit_find(c, T_SETUPDEV)) {
		char path[128];
		snprintf(path, sizeof(path), "%s/ptmx", target);
		if (unlink(path) < 0 && errno != ENOENT)
			cinit_fail("remove /dev/ptmx: %s", strerror(errno));
		if (symlink("pts/ptmx", path) < 0)
			cinit_fail("symlink /dev/ptmx: %s", strerror(errno));
	}
	close(dev);
}

void cinit_pivot(struct config *c)
{
	int oldroot = open("/", O_DIRECTORY | O_RDONLY | O_CLOEXEC);

	if (oldroot < 0 || fchdir(c->rootfd) < 0)
		cinit_fail("enter rootfs: %s", strerror(errno));
	if (syscall(SYS_pivot_root, ".", ".") < 0)
		cinit_fail("pivot_root: %s", strerror(errno));
	// The old root is stacked under the new one: detach it without
	// sending the unmount back to the guest's mounts.
	if (fchdir(oldroot) < 0 || mount(NULL, ".", NULL, MS_SLAVE | MS_REC, NULL) < 0 ||
	    umount2(".", MNT_DETACH) < 0 || chdir("/") < 0)
		cinit_fail("detach the old root: %s", strerror(errno));
	close(oldroot);
}

void cinit_paths(struct config *c)
{
	for (int k = 0; k < c->n; k++) {
		const char *p = c->r[k].data;
		struct stat st;
		if (c->r[k].tag == T_READONLY) {
			if (mount(p, p, NULL, MS_BIND | MS_REC, NULL) < 0) {
				if (errno == ENOENT)
					continue;
				cinit_fail("bind %s: %s", p, strerror(errno));
			}
			if (mount(NULL, p, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_REC, NULL) < 0)
				cinit_fail("make %s read-only: %s", p, strerror(errno));
		} else if (c->r[k].tag == T_MASK) {
			if (stat(p, &st) < 0)
				continue;
			if (S_ISDIR(st.st_mode)) {
				if (mount("tmpfs", p, "tmpfs", MS_RDONLY, NULL) < 0)
					cinit_fail("mask %s: %s", p, strerror(errno));
			} else if (mount("/dev/null", p, NULL, MS_BIND, NULL) < 0) {
				cinit_fail("mask %s: %s", p, strerror(errno));
			}
		}
	}
}

// cinit_sysctls writes the container's sysctls through sysdir, the guest's
// /proc/sys opened before the pivot (a rootfs need not mount /proc): a
// namespaced sysctl takes the writer's namespace, which is the container's.
void cinit_sysctls(struct config *c, int sysdir)
{
	for (int k = 0; k < c->n; k++) {
		char *f[2];
		char path[PATH_MAX];
		int fd;
		if (c->r[k].tag != T_SYSCTL)
			continue;
		cinit_fields(&c->r[k], f, 2);
		if (!f[1] || !*f[0] || f[0][0] == '.' || f[0][0] == '/' || strstr(f[0], "..") ||
		    snprintf(path, sizeof(path), "%s", f[0]) >= (int)sizeof(path))
			cinit_fail("bad sysctl %s", f[0]);
		for (char *s = path; *s; s++)
			if (*s == '.')
				*s = '/';
		fd = openat(sysdir, path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0 || write(fd, f[1], strlen(f[1])) < 0)
			cinit_fail("sysctl %s: %s", f[0], strerror(errno));
		close(fd);
	}
}


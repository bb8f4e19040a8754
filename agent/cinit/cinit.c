// The container's first process, before it becomes the container's program:
// runs as a constructor of the agent binary re-executed with _PODVM_CINIT
// set, before the Go runtime starts, so a container costs one exec and a
// few dozen system calls instead of a second Go runtime (see cinit.go).
// This file reads the config and runs the steps; rootfs.c makes the
// container's filesystem, process.c its credentials and program.
#include "cinit.h"

static int sync_fd = -1;


// cinit_fail reports msg to the agent and ends this process: the agent turns it
// into the create's error.
void cinit_fail(const char *fmt, ...)
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

// cinit_fields splits a record into its NUL-separated fields.
int cinit_fields(struct record *r, char **out, int max)
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

unsigned long long cinit_num(const char *s, const char *what)
{
	char *end;
	unsigned long long v;

	if (!s || !*s)
		cinit_fail("cinit: missing %s", what);
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end)
		cinit_fail("cinit: bad %s %s", what, s);
	return v;
}

struct record *cinit_find(struct config *c, char tag)
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
			cinit_fail("cinit: short config");
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
		cinit_fail("cinit: no config");
	*nfds = 0;
	for (cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		*nfds = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		if (*nfds > F_MAX)
			cinit_fail("cinit: too many descriptors");
		memcpy(got, CMSG_DATA(cm), *nfds * sizeof(int));
	}
	if (msg.msg_flags & MSG_CTRUNC)
		cinit_fail("cinit: descriptors cut off");
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
		cinit_fail("cinit: config of %u bytes", total);
	buf = malloc(total + 1);
	c->r = calloc(cap, sizeof(*c->r));
	if (!buf || !c->r)
		cinit_fail("cinit: out of memory");
	read_full(fd, buf, total);
	buf[total] = 0;
	while (i + 5 <= total) {
		struct record *r;
		if (c->n == cap) {
			cap *= 2;
			c->r = realloc(c->r, cap * sizeof(*c->r));
			if (!c->r)
				cinit_fail("cinit: out of memory");
		}
		r = &c->r[c->n++];
		r->tag = buf[i];
		memcpy(&r->len, buf + i + 1, 4);
		i += 5;
		if (r->len > total - i)
			cinit_fail("cinit: record overruns config");
		r->data = buf + i;
		i += r->len;
		// Each record's data ends in a NUL the encoder wrote.
		if (r->len == 0 || r->data[r->len - 1] != 0)
			cinit_fail("cinit: unterminated record %c", r->tag);
		if (r->tag == T_END)
			break;
	}
	c->argv = calloc(c->n + 1, sizeof(char *));
	c->envp = calloc(c->n + 2, sizeof(char *));
	if (!c->argv || !c->envp)
		cinit_fail("cinit: out of memory");
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
	if ((fr = cinit_find(c, T_FILES)) != NULL) {
		// One character per descriptor: '1' when it was sent.
		for (int k = 0; k < F_MAX && k < (int)fr->len - 1; k++) {
			if (fr->data[k] != '1')
				continue;
			if (used == nfds)
				cinit_fail("cinit: descriptor missing");
			c->files[k] = got[used++];
		}
	}
	if (used != nfds)
		cinit_fail("cinit: %d descriptors, %d expected", nfds, used);
	// A process exec'd into a running container finds its root in the
	// container's mount namespace.
	if (!cinit_find(c, T_EXEC) && (!c->root || c->root[0] != '/'))
		cinit_fail("cinit: no rootfs");
	if (c->argc == 0)
		cinit_fail("cinit: no args");
}


// join_namespaces joins those given by path, all opened before any is
// joined: a path under /proc names a process in the agent's PID namespace,
// which the container's mount namespace may not show. A PID namespace
// applies to children only: the process forks, the child goes on as the
// container's process and the parent, once the agent has taken the
// child's PID, exits (the child becomes the agent's, PID 1's).
static void join_namespaces(struct config *c)
{
	int pid_joined = 0, n = 0, fds[MAX_JOINS];
	char *names[MAX_JOINS], *paths[MAX_JOINS];

	for (int k = 0; k < c->n; k++) {
		char *f[2];
		if (c->r[k].tag != T_JOIN)
			continue;
		if (n == MAX_JOINS)
			cinit_fail("cinit: more than %d namespaces to join", MAX_JOINS);
		cinit_fields(&c->r[k], f, 2);
		names[n] = f[0];
		paths[n] = f[1] ? f[1] : "";
		fds[n] = open(paths[n], O_RDONLY | O_CLOEXEC);
		if (fds[n] < 0)
			cinit_fail("open %s namespace %s: %s", names[n], paths[n], strerror(errno));
		n++;
	}
	for (int k = 0; k < n; k++) {
		if (setns(fds[k], 0) < 0)
			cinit_fail("join %s namespace %s: %s", names[k], paths[k], strerror(errno));
		close(fds[k]);
		if (!strcmp(names[k], "NEWPID"))
			pid_joined = 1;
	}
	if (pid_joined) {
		char msg[5] = {'P'}, ack;
		int hold[2];
		int32_t pid;
		// The child waits until its parent has named it to the agent and
		// gone, so that nothing it says comes first.
		if (pipe2(hold, O_CLOEXEC) < 0)
			cinit_fail("pipe: %s", strerror(errno));
		pid = fork();
		if (pid < 0)
			cinit_fail("fork into the PID namespace: %s", strerror(errno));
		if (pid == 0) {
			close(hold[1]);
			while (read(hold[0], &ack, 1) < 0 && errno == EINTR)
				;
			close(hold[0]);
			return;
		}
		close(hold[0]);
		memcpy(msg + 1, &pid, 4);
		if (write(sync_fd, msg, 5) != 5 || read(sync_fd, &ack, 1) != 1 || ack != 'A')
			kill(pid, SIGKILL);
		_exit(0);
	}
}

static void loopback_up(void)
{
	struct ifreq ifr = {0};
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	strcpy(ifr.ifr_name, "lo");
	if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
		cinit_fail("loopback: %s", strerror(errno));
	ifr.ifr_flags |= IFF_UP;
	if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
		cinit_fail("bring up loopback: %s", strerror(errno));
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
		cinit_fail("send the console: %s", strerror(errno));
}

// console makes a pty in the container's own devpts, hands its master to
// the agent and makes the slave the process's terminal and, for a
// container's init (bind set), /dev/console.
static void console(struct config *c, struct record *r, int bind)
{
	char *f[3];
	char slave[64];
	unsigned int n, unlock = 0;
	int master, fd;
	struct winsize ws = {0};

	cinit_fields(r, f, 2);
	master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (master < 0 || ioctl(master, TIOCSPTLCK, &unlock) < 0 || ioctl(master, TIOCGPTN, &n) < 0)
		cinit_fail("open a pty: %s", strerror(errno));
	snprintf(slave, sizeof(slave), "/dev/pts/%u", n);
	fd = open(slave, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		cinit_fail("open %s: %s", slave, strerror(errno));
	ws.ws_col = cinit_num(f[0], "console width");
	ws.ws_row = cinit_num(f[1], "console height");
	if (ws.ws_col && ws.ws_row)
		ioctl(master, TIOCSWINSZ, &ws);
	if (bind) {
		int cf = open("/dev/console", O_CREAT | O_RDONLY | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (cf >= 0)
			close(cf);
		if (mount(slave, "/dev/console", NULL, MS_BIND, NULL) < 0)
			cinit_fail("bind /dev/console: %s", strerror(errno));
	}
	if (c->files[F_CONSOLE] < 0)
		cinit_fail("cinit: terminal without a console socket");
	send_fd(c->files[F_CONSOLE], master);
	close(master);
	close(c->files[F_CONSOLE]);
	if (ioctl(fd, TIOCSCTTY, 0) < 0)
		cinit_fail("set the controlling terminal: %s", strerror(errno));
	for (int i = 0; i < 3; i++)
		if (dup2(fd, i) < 0)
			cinit_fail("dup the terminal: %s", strerror(errno));
	if (fd > 2)
		close(fd);
}

// make_container builds the container around its init: mounts, devices,
// the pivot into the rootfs, its terminal, host and domain names, sysctls.
static void make_container(struct config *c)
{
	struct record *r;
	int sysdir = -1;

	// After the agent moved this process into the container's cgroup,
	// which becomes the namespace's root.
	if (cinit_find(c, T_NEWCGROUP) && unshare(CLONE_NEWCGROUP) < 0)
		cinit_fail("new cgroup namespace: %s", strerror(errno));
	if (cinit_find(c, T_LOOPBACK))
		loopback_up();
	r = cinit_find(c, T_PROPAGATION);
	if (mount(NULL, "/", NULL, r ? cinit_num(r->data, "root propagation") : MS_SLAVE | MS_REC, NULL) < 0)
		cinit_fail("set the root's propagation: %s", strerror(errno));
	if (mount(c->root, c->root, NULL, MS_BIND | MS_REC, NULL) < 0)
		cinit_fail("bind the rootfs %s: %s", c->root, strerror(errno));
	c->rootfd = open(c->root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (c->rootfd < 0)
		cinit_fail("open the rootfs %s: %s", c->root, strerror(errno));
	for (int k = 0; k < c->n; k++)
		if (c->r[k].tag == T_MOUNT)
			cinit_do_mount(c, &c->r[k]);
	if (cinit_find(c, T_SETUPDEV)) {
		cinit_make_devices(c);
		cinit_dev_links(c);
	}
	if ((r = cinit_find(c, T_CWD)) != NULL) {
		int cwd = cinit_resolve(c, r->data, 1, 0);
		if (cwd < 0)
			cinit_fail("create the working directory %s: %s", r->data, strerror(errno));
		close(cwd);
	}
	if (cinit_find(c, T_SYSCTL) && (sysdir = open("/proc/sys", O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
		cinit_fail("open /proc/sys: %s", strerror(errno));
	cinit_pivot(c);
	if ((r = cinit_find(c, T_TERMINAL)) != NULL)
		console(c, r, 1);
	cinit_remount_readonly(c);
	if (cinit_find(c, T_ROFS) && mount(NULL, "/", NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL) < 0)
		cinit_fail("make the rootfs read-only: %s", strerror(errno));
	if ((r = cinit_find(c, T_HOSTNAME)) != NULL && sethostname(r->data, strlen(r->data)) < 0)
		cinit_fail("sethostname: %s", strerror(errno));
	if ((r = cinit_find(c, T_DOMAIN)) != NULL && setdomainname(r->data, strlen(r->data)) < 0)
		cinit_fail("setdomainname: %s", strerror(errno));
	if (sysdir >= 0) {
		cinit_sysctls(c, sysdir);
		close(sysdir);
	}
	cinit_paths(c);
}

// run sets up the container's init (or, in join mode, a process exec'd
// into a running container: its namespaces joined by path, nothing
// mounted), waits for start and execs the program.
static void run(int fd)
{
	struct config c = {0};
	struct record *r;
	char exe[PATH_MAX], *prog;
	char go;
	int has_home = 0;
	uid_t uid = 0;

	sync_fd = fd;
	// The agent learns that exec succeeded from this end closing.
	if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
		cinit_fail("cinit: %s", strerror(errno));
	// Nothing in the container may read this process's memory until it
	// is the container's program (runc's CVE-2019-5736).
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	read_config(fd, &c);
	for (int k = F_STDIN; k <= F_STDERR; k++) {
		if (c.files[k] < 0)
			continue;
		if (dup2(c.files[k], k) < 0)
			cinit_fail("cinit: stdio: %s", strerror(errno));
		close(c.files[k]);
	}
	if (cinit_find(&c, T_KEYRING)) {
		char name[300];
		snprintf(name, sizeof(name), "_ses.%s", cinit_find(&c, T_KEYRING)->data);
		// Best effort, as in runc: keyrings only add to file credentials.
		if (syscall(SYS_keyctl, 1 /* KEYCTL_JOIN_SESSION_KEYRING */, name) < 0 && errno != ENOSYS)
			cinit_fail("join a session keyring: %s", strerror(errno));
	}
	join_namespaces(&c);
	if (setsid() < 0)
		cinit_fail("setsid: %s", strerror(errno));
	if (!cinit_find(&c, T_EXEC))
		make_container(&c);
	else if ((r = cinit_find(&c, T_TERMINAL)) != NULL)
		console(&c, r, 0);
	r = cinit_find(&c, T_UMASK);
	umask(r ? cinit_num(r->data, "umask") : 022);
	for (int k = 0; k < c.n; k++) {
		char *f[3];
		struct rlimit rl;
		if (c.r[k].tag != T_RLIMIT)
			continue;
		cinit_fields(&c.r[k], f, 3);
		rl.rlim_cur = cinit_num(f[1], "rlimit");
		rl.rlim_max = cinit_num(f[2], "rlimit");
		if (setrlimit(cinit_num(f[0], "rlimit type"), &rl) < 0)
			cinit_fail("setrlimit %s: %s", f[0], strerror(errno));
	}
	if (cinit_find(&c, T_NONEWPRIVS) && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		cinit_fail("no_new_privs: %s", strerror(errno));
	if ((r = cinit_find(&c, T_USER)) != NULL)
		uid = cinit_num(r->data, "uid");
	for (int k = 0; k < c.envc; k++)
		if (!strncmp(c.envp[k], "HOME=", 5))
			has_home = 1;
	if (!has_home) {
		static char h[1100];
		snprintf(h, sizeof(h), "HOME=%s", cinit_home(uid));
		c.envp[c.envc++] = h;
	}
	// Without no_new_privs loading a filter takes CAP_SYS_ADMIN: before
	// the capabilities go (runc's order).
	if ((r = cinit_find(&c, T_SECCOMP)) != NULL && !cinit_find(&c, T_NONEWPRIVS))
		cinit_seccomp(r);
	cinit_credentials(&c);
	if ((r = cinit_find(&c, T_CWD)) != NULL && chdir(r->data) < 0)
		cinit_fail("chdir %s: %s", r->data, strerror(errno));
	prog = cinit_lookup(&c, exe, sizeof(exe));
	// Created: wait for start.
	if (write(fd, "R", 1) != 1)
		_exit(1);
	if (read(fd, &go, 1) != 1 || go != 'G')
		_exit(1);
	// With no_new_privs, as late as can be: only execve runs under it.
	if ((r = cinit_find(&c, T_SECCOMP)) != NULL && cinit_find(&c, T_NONEWPRIVS))
		cinit_seccomp(r);
	execve(prog, c.argv, c.envp);
	cinit_fail("exec %s: %s", prog, strerror(errno));
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


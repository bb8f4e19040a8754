// The container's process: capabilities, user, seccomp, HOME and the
// program to exec.
#include "cinit.h"

static int capset_full(uint64_t eff, uint64_t perm, uint64_t inh)
{
	struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct d[2] = {
		{.effective = eff, .permitted = perm, .inheritable = inh},
		{.effective = eff >> 32, .permitted = perm >> 32, .inheritable = inh >> 32},
	};
	return syscall(SYS_capset, &h, d);
}

void cinit_credentials(struct config *c)
{
	struct record *u = cinit_find(c, T_USER), *cr = cinit_find(c, T_CAPS);
	char *f[5];
	uid_t uid = 0;
	gid_t gid = 0, groups[64];
	int ngroups = 0;

	if (u) {
		char *g;
		cinit_fields(u, f, 3);
		uid = cinit_num(f[0], "uid");
		gid = cinit_num(f[1], "gid");
		for (g = f[2]; g && *g; ) {
			char *comma = strchr(g, ',');
			if (comma)
				*comma = 0;
			if (ngroups == (int)(sizeof(groups) / sizeof(groups[0])))
				cinit_fail("more than %d additional groups", ngroups);
			groups[ngroups++] = cinit_num(g, "group");
			g = comma ? comma + 1 : NULL;
		}
	}
	if (cr) {
		uint64_t bounding;
		cinit_fields(cr, f, 5);
		bounding = cinit_num(f[0], "bounding set");
		for (int cap = 0; cap <= 63; cap++) {
			if (bounding & (1ULL << cap))
				continue;
			if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
				cinit_fail("drop capability %d: %s", cap, strerror(errno));
		}
	}
	if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
		cinit_fail("keep capabilities: %s", strerror(errno));
	if (setgroups(ngroups, groups) < 0)
		cinit_fail("setgroups: %s", strerror(errno));
	if (setresgid(gid, gid, gid) < 0)
		cinit_fail("setgid %u: %s", gid, strerror(errno));
	if (setresuid(uid, uid, uid) < 0)
		cinit_fail("setuid %u: %s", uid, strerror(errno));
	if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0)
		cinit_fail("keep capabilities: %s", strerror(errno));
	if (cr) {
		uint64_t amb;
		if (capset_full(cinit_num(f[1], "effective"), cinit_num(f[3], "permitted"), cinit_num(f[2], "inheritable")) < 0)
			cinit_fail("capset: %s", strerror(errno));
		amb = cinit_num(f[4], "ambient");
		for (int cap = 0; cap <= 63; cap++)
			if (amb & (1ULL << cap) && prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0) < 0)
				cinit_fail("raise ambient capability %d: %s", cap, strerror(errno));
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

// cinit_seccomp loads the filter the agent compiled (hex of a classic BPF
// program, as libseccomp exports it) with its load flags.
void cinit_seccomp(struct record *r)
{
	char *f[2];
	size_t n;
	unsigned char *prog;
	struct sock_fprog fprog;
	unsigned long flags;
	const char *hex;

	cinit_fields(r, f, 2);
	flags = cinit_num(f[0], "seccomp flags");
	hex = f[1] ? f[1] : "";
	n = strlen(hex);
	if (n == 0 || n % (2 * sizeof(struct sock_filter)) != 0)
		cinit_fail("seccomp program of %zu hex digits", n);
	prog = malloc(n / 2);
	if (!prog)
		cinit_fail("cinit: out of memory");
	for (size_t i = 0; i < n / 2; i++) {
		int hi = unhex(hex[2 * i]), lo = unhex(hex[2 * i + 1]);
		if (hi < 0 || lo < 0)
			cinit_fail("seccomp program is not hex");
		prog[i] = hi << 4 | lo;
	}
	fprog.len = n / 2 / sizeof(struct sock_filter);
	fprog.filter = (struct sock_filter *)prog;
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &fprog) < 0)
		cinit_fail("load the seccomp filter: %s", strerror(errno));
}

// cinit_home finds uid's home directory in the container's /etc/passwd, as runc
// sets HOME when the process has none.
const char *cinit_home(uid_t uid)
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

// go_error is strerror as Go words it (runc's errors come from Go): lower
// case.
static const char *go_error(int err)
{
	static char msg[128];

	snprintf(msg, sizeof(msg), "%s", strerror(err));
	msg[0] = tolower((unsigned char)msg[0]);
	return msg;
}

// cinit_lookup finds the program the way runc's exec.LookPath does, with the
// process's own PATH.
char *cinit_lookup(struct config *c, char *buf, size_t n)
{
	const char *name = c->argv[0], *path = NULL;

	if (strchr(name, '/')) {
		if (access(name, X_OK) == 0)
			return (char *)name;
		if (errno == ENOENT || errno == ENOTDIR)
			cinit_fail("exec: \"%s\": stat %s: %s", name, name, go_error(errno));
		cinit_fail("exec: \"%s\": %s", name, go_error(errno));
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
	cinit_fail("exec: \"%s\": executable file not found in $PATH", name);
	return NULL;
}


// Declarations shared by cinit's C files (see cinit.c).
#ifndef PODVM_CINIT_H
#define PODVM_CINIT_H

#define _GNU_SOURCE
#include <ctype.h>
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
// must match records.go.
enum {
	T_ROOT = 'r', T_JOIN = 'n', T_MOUNT = 'm', T_DEVICE = 'd', T_MASK = 'M',
	T_READONLY = 'R', T_HOSTNAME = 'h', T_DOMAIN = 'D', T_SYSCTL = 's',
	T_RLIMIT = 'l', T_CAPS = 'c', T_USER = 'u', T_CWD = 'w', T_ENV = 'e',
	T_ARG = 'a', T_NONEWPRIVS = 'N', T_ROFS = 'o', T_PROPAGATION = 'p',
	T_UMASK = 'U', T_TERMINAL = 't', T_KEYRING = 'k', T_LOOPBACK = 'L',
	T_SETUPDEV = 'v', T_FILES = 'f', T_NEWCGROUP = 'C', T_SECCOMP = 'S', T_EXEC = 'x',
	T_END = 'Z',
};

// The descriptors that come with the config, in this order when present.
enum { F_STDIN, F_STDOUT, F_STDERR, F_CONSOLE, F_MAX };

#define MAX_CONFIG (4 << 20)
#define MAX_FIELDS 8
// More than a container has kinds of namespaces (see join_namespaces).
#define MAX_JOINS 16

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


// cinit.c
void cinit_fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
int cinit_fields(struct record *r, char **out, int max);
unsigned long long cinit_num(const char *s, const char *what);
struct record *cinit_find(struct config *c, char tag);

// rootfs.c
int cinit_resolve(struct config *c, const char *path, int create, int file);
void cinit_procfd(char *buf, size_t n, int fd);
void cinit_do_mount(struct config *c, struct record *r);
void cinit_remount_readonly(struct config *c);
void cinit_make_devices(struct config *c);
void cinit_dev_links(struct config *c);
void cinit_pivot(struct config *c);
void cinit_paths(struct config *c);
void cinit_sysctls(struct config *c, int sysdir);

// process.c
void cinit_credentials(struct config *c);
void cinit_seccomp(struct record *r);
const char *cinit_home(uid_t uid);
char *cinit_lookup(struct config *c, char *buf, size_t n);

#endif

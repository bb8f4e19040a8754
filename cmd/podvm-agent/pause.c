// The pod's infra process, the agent's binary run as /pause (see
// sandbox/infra.go), does what Kubernetes' pause does from a constructor,
// before the Go runtime starts: a Go runtime and the agent's package
// initialisers cost ~100 ms of the guest's CPU under TCG and megabytes of
// its memory, for a process that only waits and reaps.
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

// pause_name is agent.PauseName (TestPauseName).
static const char pause_name[] = "pause";

const char *podvm_pause_name(void)
{
	return pause_name;
}

static void pause_down(int sig)
{
	(void)sig;
	_exit(0);
}

static void pause_reap(int sig)
{
	int saved = errno;

	(void)sig;
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
	errno = saved;
}

// glibc calls constructors with main's arguments.
__attribute__((constructor)) static void pause_infra(int argc, char **argv, char **envp)
{
	struct sigaction down = {.sa_handler = pause_down};
	struct sigaction reap = {.sa_handler = pause_reap, .sa_flags = SA_NOCLDSTOP | SA_RESTART};
	const char *name;

	(void)envp;
	// The agent's own re-executions (cinit, runc init) are never pause.
	if (argc < 1 || argv == NULL || argv[0] == NULL || getenv("_PODVM_CINIT") != NULL)
		return;
	name = strrchr(argv[0], '/');
	name = name ? name + 1 : argv[0];
	if (strcmp(name, pause_name) != 0)
		return;
	// PID 1 of a namespace gets only the signals it has handlers for.
	if (sigaction(SIGINT, &down, NULL) != 0 || sigaction(SIGTERM, &down, NULL) != 0 ||
	    sigaction(SIGCHLD, &reap, NULL) != 0)
		_exit(1);
	for (;;)
		pause();
}

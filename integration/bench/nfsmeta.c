/*
 * nfsmeta: the metadata run (create, stat, remove N files) through libnfs from this
 * machine, one request at a time: a client whose own cost is small next to the server's,
 * unlike the emulated guest's kernel client. nfs.sh builds it with libnfs-dev.
 *
 *   nfsmeta URL N     URL as for fio's nfs engine: nfs://HOST/EXPORT?version=3&nfsport=..
 *
 * Prints "BENCH create|stat|remove SECONDS N files", like vm-workload.sh. With SERVER_PID
 * set (a server on this machine), also "SERVER-CPU create|stat|remove MICROSECONDS per
 * file": the server's user + system time over the phase, from /proc/PID/stat.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <nfsc/libnfs.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* server_cpu_us is the user + system time of process SERVER_PID so far, in µs; -1
 * without SERVER_PID. */
static double server_cpu_us(void)
{
	const char *pid = getenv("SERVER_PID");
	char path[64], buf[4096];
	if (pid == NULL)
		return -1;
	snprintf(path, sizeof path, "/proc/%s/stat", pid);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return -1;
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = 0;
	/* Fields 14 and 15 (utime, stime), counted after the command's closing parenthesis. */
	char *p = strrchr(buf, ')');
	unsigned long long utime, stime;
	if (p == NULL || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
		return -1;
	return (utime + stime) * 1e6 / sysconf(_SC_CLK_TCK);
}

/* report prints a phase's result line, and its server CPU line with SERVER_PID. */
static void report(const char *phase, double t0, double c0, int n)
{
	double t1 = now(), c1 = server_cpu_us();
	printf("BENCH %s %.3f %d files\n", phase, t1 - t0, n);
	if (c0 >= 0 && c1 >= 0)
		printf("SERVER-CPU %s %.1f us per file\n", phase, (c1 - c0) / n);
}

static void die(struct nfs_context *nfs, const char *what, const char *path)
{
	fprintf(stderr, "nfsmeta: %s %s: %s\n", what, path, nfs_get_error(nfs));
	exit(1);
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: nfsmeta URL N\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0); /* each result out at once */
	int n = atoi(argv[2]);
	struct nfs_context *nfs = nfs_init_context();
	struct nfs_url *url = nfs ? nfs_parse_url_dir(nfs, argv[1]) : NULL;
	if (url == NULL) {
		fprintf(stderr, "nfsmeta: bad URL %s: %s\n", argv[1], nfs ? nfs_get_error(nfs) : "");
		return 1;
	}
	if (nfs_mount(nfs, url->server, url->path) != 0)
		die(nfs, "mount", url->path);
	char dir[64], path[128];
	snprintf(dir, sizeof dir, "/nfsmeta-%d", (int)getpid());
	if (nfs_mkdir(nfs, dir) != 0)
		die(nfs, "mkdir", dir);

	double t0 = now(), c0 = server_cpu_us();
	for (int i = 1; i <= n; i++) {
		struct nfsfh *fh;
		snprintf(path, sizeof path, "%s/f%d", dir, i);
		if (nfs_creat(nfs, path, 0644, &fh) != 0)
			die(nfs, "create", path);
		nfs_close(nfs, fh);
	}
	report("create", t0, c0, n);

	t0 = now(), c0 = server_cpu_us();
	for (int i = 1; i <= n; i++) {
		struct nfs_stat_64 st;
		snprintf(path, sizeof path, "%s/f%d", dir, i);
		if (nfs_stat64(nfs, path, &st) != 0)
			die(nfs, "stat", path);
	}
	report("stat", t0, c0, n);

	t0 = now(), c0 = server_cpu_us();
	for (int i = 1; i <= n; i++) {
		snprintf(path, sizeof path, "%s/f%d", dir, i);
		if (nfs_unlink(nfs, path) != 0)
			die(nfs, "remove", path);
	}
	report("remove", t0, c0, n);

	if (nfs_rmdir(nfs, dir) != 0)
		die(nfs, "rmdir", dir);
	nfs_umount(nfs);
	nfs_destroy_url(url);
	nfs_destroy_context(nfs);
	return 0;
}

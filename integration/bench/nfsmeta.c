/*
 * nfsmeta: the metadata run (create, stat, remove N files) through libnfs from this
 * machine, one request at a time: a client whose own cost is small next to the server's,
 * unlike the emulated guest's kernel client. nfs.sh builds it with libnfs-dev.
 *
 *   nfsmeta URL N     URL as for fio's nfs engine: nfs://HOST/EXPORT?version=3&nfsport=..
 *
 * Prints "BENCH create|stat|remove SECONDS N files", like vm-workload.sh.
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

	double t0 = now();
	for (int i = 1; i <= n; i++) {
		struct nfsfh *fh;
		snprintf(path, sizeof path, "%s/f%d", dir, i);
		if (nfs_creat(nfs, path, 0644, &fh) != 0)
			die(nfs, "create", path);
		nfs_close(nfs, fh);
	}
	double t1 = now();
	printf("BENCH create %.3f %d files\n", t1 - t0, n);

	t0 = now();
	for (int i = 1; i <= n; i++) {
		struct nfs_stat_64 st;
		snprintf(path, sizeof path, "%s/f%d", dir, i);
		if (nfs_stat64(nfs, path, &st) != 0)
			die(nfs, "stat", path);
	}
	t1 = now();
	printf("BENCH stat %.3f %d files\n", t1 - t0, n);

	t0 = now();
	for (int i = 1; i <= n; i++) {
		snprintf(path, sizeof path, "%s/f%d", dir, i);
		if (nfs_unlink(nfs, path) != 0)
			die(nfs, "remove", path);
	}
	t1 = now();
	printf("BENCH remove %.3f %d files\n", t1 - t0, n);

	if (nfs_rmdir(nfs, dir) != 0)
		die(nfs, "rmdir", dir);
	nfs_umount(nfs);
	nfs_destroy_url(url);
	nfs_destroy_context(nfs);
	return 0;
}

/* The real-kernel side of benchmarks/bench.py: times, on the running
 * kernel, the operations the emulator benchmark replays on an anonymous
 * region: fault-in (a write to every page), smaps_rollup, fork, the
 * child's exit, munmap, and reading /proc/self/pagemap over the region.
 * The THP knobs are set by bench.py around each run.
 *
 *     bench_real SIZE_BYTES
 * prints one "name seconds" line per operation.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static char buf[1 << 20];

static double read_file(const char *path)
{
	double t = now();
	int fd = open(path, O_RDONLY);
	if (fd < 0) {
		perror(path);
		exit(1);
	}
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	close(fd);
	return now() - t;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s SIZE_BYTES\n", argv[0]);
		return 2;
	}
	size_t size = strtoull(argv[1], NULL, 0);
	size_t align = 2UL << 20;
	char *raw = mmap(NULL, size + align, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (raw == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	char *p = (char *)(((unsigned long)raw + align - 1) & ~(align - 1));
	double t = now();
	for (size_t off = 0; off < size; off += 4096)
		p[off] = 1;
	printf("fault %.9f\n", now() - t);
	printf("smaps_rollup %.9f\n", read_file("/proc/self/smaps_rollup"));

	/* pagemap of the region, in 1 MiB reads */
	int fd = open("/proc/self/pagemap", O_RDONLY);
	size_t first = (unsigned long)p / 4096 * 8, bytes = size / 4096 * 8;
	t = now();
	for (size_t off = 0; off < bytes; off += sizeof(buf)) {
		size_t n = bytes - off < sizeof(buf) ? bytes - off : sizeof(buf);
		if (pread(fd, buf, n, first + off) != (ssize_t)n) {
			perror("pagemap");
			return 1;
		}
	}
	printf("pagemap %.9f %zu\n", now() - t, bytes);
	close(fd);

	int go[2];
	if (pipe(go))
		return 1;
	t = now();
	pid_t child = fork();
	if (child == 0) {
		char c;
		close(go[1]);
		read(go[0], &c, 1);
		_exit(0);
	}
	printf("fork %.9f\n", now() - t);
	close(go[0]);
	usleep(20000);
	t = now();
	close(go[1]);
	waitpid(child, NULL, 0);
	printf("exit %.9f\n", now() - t);
	t = now();
	munmap(raw, size + align);
	printf("munmap %.9f\n", now() - t);
	return 0;
}

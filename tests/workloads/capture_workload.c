/* A fork tree with every kind of memory the capture importer must get
 * right, for tests/test_capture_real.py.  Built static so that no shared
 * library ties its pages to processes outside the test.
 *
 *   capture_workload SHMEM_FILE DISK_FILE
 *
 * Prints "ready PID..." once every process has set up its memory, then
 * every process waits until standard input is closed and exits.
 *
 * Parent P: 8M of PMD THPs (MADV_HUGEPAGE), 1M of mTHPs (64K when the
 * hugepages-64kB knob allows it), 512K of small pages, 1M shared anon
 * (half written), a tmpfs file mapped shared and private (some private
 * pages written: anon CoW copies in a file VMA), a disk file mapped
 * private, the zero page and the huge zero page, 64K pinned through
 * io_uring fixed buffers (when io_uring is available).
 * C1 = fork(P): forks G1, then writes pages 0 and 7 of THP 0 (PMD split),
 *      the first half of the first mTHP, 4 small pages and page 0 of the
 *      shared anon range, and unmaps the last 1M of THP 3.
 * C2 = fork(P): writes 16 pages of THP 1, MADV_DONTNEED on 64K of the
 *      small pages.
 * P  then writes page 100 of THP 2.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#define PG 4096UL
#define MB (1UL << 20)
#define PMD (2 * MB)

static int ready_pipe[2];

static char *map_aligned(size_t size, size_t align, int advice)
{
	char *p = mmap(NULL, size + align, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	char *a = (char *)(((uintptr_t)p + align - 1) & ~(align - 1));
	if (a > p)
		munmap(p, a - p);
	munmap(a + size, (p + size + align) - (a + size));
	if (advice >= 0)
		madvise(a, size, advice);
	return a;
}

static void touch(char *p, size_t len, int write)
{
	volatile char sink = 0;
	for (size_t i = 0; i < len; i += PG) {
		if (write)
			p[i] = (char)(i / PG + 1);
		else
			sink += p[i];
	}
	(void)sink;
}

static char *map_file(const char *path, size_t size, int flags)
{
	int fd = open(path, O_RDWR);
	if (fd < 0) {
		perror(path);
		exit(1);
	}
	char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, flags, fd, 0);
	if (p == MAP_FAILED) {
		perror("mmap file");
		exit(1);
	}
	close(fd);
	return p;
}

static void fill_file(const char *path, size_t size)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	char buf[4096];
	if (fd < 0) {
		perror(path);
		exit(1);
	}
	for (size_t i = 0; i < size; i += sizeof buf) {
		memset(buf, (int)(i / PG) | 1, sizeof buf);
		if (write(fd, buf, sizeof buf) != (ssize_t)sizeof buf) {
			perror("write");
			exit(1);
		}
	}
	fsync(fd);
	close(fd);
}

static void pin(char *p, size_t len)
{
	struct {
		uint32_t sq_entries, cq_entries, flags, sq_thread_cpu, sq_thread_idle,
			features, wq_fd, resv[3];
		uint8_t offsets[80];
	} params;
	memset(&params, 0, sizeof params);
	long fd = syscall(425 /* io_uring_setup */, 4, &params);
	if (fd < 0)
		return;
	struct iovec iov = { p, len };
	syscall(427 /* io_uring_register */, (int)fd, 0 /* REGISTER_BUFFERS */, &iov, 1);
}

static void signal_ready_and_wait(void)
{
	char c = 'r', buf[16];
	if (write(ready_pipe[1], &c, 1) != 1)
		exit(1);
	while (read(0, buf, sizeof buf) > 0)
		;
	exit(0);
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: %s SHMEM_FILE DISK_FILE\n", argv[0]);
		return 2;
	}
	if (pipe(ready_pipe))
		return 1;
	char *thp = map_aligned(8 * MB, PMD, MADV_HUGEPAGE);
	char *mthp = map_aligned(1 * MB, PMD, MADV_HUGEPAGE);
	char *small = map_aligned(512 * 1024, PMD, MADV_NOHUGEPAGE);
	char *zero = map_aligned(64 * 1024, PMD, MADV_NOHUGEPAGE);
	char *hzero = map_aligned(4 * MB, PMD, MADV_HUGEPAGE);
	char *pinned = map_aligned(64 * 1024, PMD, MADV_NOHUGEPAGE);
	char *shared = mmap(NULL, 1 * MB, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	fill_file(argv[1], 1 * MB);
	fill_file(argv[2], 1 * MB);
	char *shm_shared = map_file(argv[1], 1 * MB, MAP_SHARED);
	char *shm_private = map_file(argv[1], 1 * MB, MAP_PRIVATE);
	char *disk_private = map_file(argv[2], 1 * MB, MAP_PRIVATE);

	touch(thp, 8 * MB, 1);
	touch(mthp, 1 * MB, 1);
	touch(small, 512 * 1024, 1);
	touch(zero, 64 * 1024, 0);
	touch(hzero, 4 * MB, 0);
	touch(pinned, 64 * 1024, 1);
	touch(shared, 512 * 1024, 1);
	touch(shm_shared, 1 * MB, 0);
	touch(shm_private, 1 * MB, 0);
	touch(shm_private, 16 * PG, 1);
	touch(disk_private, 1 * MB, 0);
	pin(pinned, 64 * 1024);

	pid_t c1 = fork();
	if (c1 == 0) {
		pid_t g1 = fork();
		if (g1 == 0)
			signal_ready_and_wait();
		printf("%d ", g1);
		fflush(stdout);
		thp[0] = 'a';
		thp[7 * PG] = 'b';
		touch(mthp, 32 * 1024, 1);
		touch(small, 4 * PG, 1);
		shared[0] = 'c';
		munmap(thp + 7 * MB, 1 * MB);
		signal_ready_and_wait();
	}
	pid_t c2 = fork();
	if (c2 == 0) {
		touch(thp + PMD, 16 * PG, 1);
		madvise(small + 128 * 1024, 64 * 1024, MADV_DONTNEED);
		signal_ready_and_wait();
	}
	thp[2 * PMD + 100 * PG] = 'd';
	for (int n = 0; n < 3; n++) {
		char c;
		if (read(ready_pipe[0], &c, 1) != 1)
			return 1;
	}
	printf("ready %d %d %d\n", getpid(), c1, c2);
	fflush(stdout);
	signal_ready_and_wait();
	return 0;
}

#!/usr/bin/env python3
"""Re-creates the real-kernel captures in this directory (run as root; needs gcc).

    python3 tests/data/real/capture.py [OUT_DIR]

What it does:

1. Sets /sys/kernel/mm/transparent_hugepage/hugepages-64kB/enabled to
   "madvise" (restored in a finally block, also on error).
2. Compiles and starts a small C helper (source below) that sets an odd
   comm, umask 027, supplementary groups 5 and 100 and two rlimits, maps a
   set of regions (each in its own 2M-aligned slot of a PROT_NONE
   reservation, so no two VMAs merge), touches them, forks, and lets the
   child and then the parent write a page each:

   region  size  what                                      after fork
   thp     2M    anon, MADV_HUGEPAGE, written (PMD THP)     parent writes page 7
                                                           (PMD split, one copy)
   mthp    256K  anon, MADV_HUGEPAGE -> 64K mTHP, written   child writes page 0
   small   64K   anon, MADV_NOHUGEPAGE, written             -
   zero    64K   anon, read only (zero page)                -
   lazy    64K   anon, written, then MADV_FREE              -
   locked  32K   anon, mlock()ed, written                   (lock not inherited)
   shared  64K   MAP_SHARED anon, written                   -
   file    16K   MAP_PRIVATE file named "cap file\\nname",   -
                 pages 0-2 read, page 3 written (CoW)
   wipe    16K   anon, written, MADV_WIPEONFORK             (empty in child)
   nofork  16K   anon, written, MADV_DONTFORK+DONTDUMP      (absent in child)

3. Reads, for the helper parent ("parent") and child ("child"): maps, smaps,
   smaps_rollup, numa_maps, status, statm, stat, limits, cmdline, comm,
   cgroup; and for every page of every region present in the process:
   pagemap bits 63/56, /proc/kpagecount and /proc/kpageflags, as runs of
   identical pages (pages.json; no PFNs are recorded).
4. Reads the system files: meminfo, vmstat, stat, cpuinfo, loadavg, uptime,
   version, node0 meminfo, memcg v1 root memory.stat, and status/stat of
   kthreadd (pid 2, a kernel thread without mm).

Sanitising: in the cgroup files the path of the memory hierarchy (the
cgroup of the process that ran the capture) is replaced by "/mmemu".
"""
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

PAGE = 4096
HERE = os.path.dirname(os.path.abspath(__file__))
MTHP_KNOB = '/sys/kernel/mm/transparent_hugepage/hugepages-64kB/enabled'
FILE_NAME = 'cap file\nname'

HELPER_C = r'''
#define _GNU_SOURCE
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define PAGE 4096UL
#define KB 1024UL
#define MB (1024UL * 1024UL)

enum kind { ANON, SHARED, FILEMAP };
struct region { const char *name; unsigned long size; enum kind kind; int advice[3]; };

static struct region regions[] = {
	{ "thp", 2 * MB, ANON, { MADV_HUGEPAGE } },
	{ "mthp", 256 * KB, ANON, { MADV_HUGEPAGE } },
	{ "small", 64 * KB, ANON, { MADV_NOHUGEPAGE } },
	{ "zero", 64 * KB, ANON, { MADV_NOHUGEPAGE } },
	{ "lazy", 64 * KB, ANON, { MADV_NOHUGEPAGE } },
	{ "locked", 32 * KB, ANON, { MADV_NOHUGEPAGE } },
	{ "shared", 64 * KB, SHARED, { 0 } },
	{ "file", 16 * KB, FILEMAP, { 0 } },
	{ "wipe", 16 * KB, ANON, { MADV_NOHUGEPAGE, MADV_WIPEONFORK } },
	{ "nofork", 16 * KB, ANON, { MADV_NOHUGEPAGE, MADV_DONTFORK, MADV_DONTDUMP } },
};
#define NR (sizeof(regions) / sizeof(regions[0]))
static char *addr[NR];

static void die(const char *what) { perror(what); exit(1); }
static void wr(char *p) { *(volatile char *)p = 0x5a; }
static void rd(char *p) { (void)*(volatile char *)p; }

int main(int argc, char **argv)
{
	unsigned long slot = 4 * MB, i, p;
	gid_t groups[] = { 5, 100 };
	struct rlimit nofile = { 1000, 4096 }, as = { 1UL << 40, RLIM_INFINITY };
	char *base, *start, *drain, c;
	int fd, pfd[2];
	pid_t child;

	if (argc != 2)
		return 2;
	prctl(PR_SET_NAME, "mm emu\\cap", 0, 0, 0);
	umask(027);
	if (setgroups(2, groups) || setrlimit(RLIMIT_NOFILE, &nofile) || setrlimit(RLIMIT_AS, &as))
		die("setup");
	drain = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	base = mmap(NULL, slot * (NR + 1), PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (drain == MAP_FAILED || base == MAP_FAILED)
		die("mmap");
	start = (char *)(((unsigned long)base + 2 * MB - 1) & ~(2 * MB - 1));
	fd = open(argv[1], O_RDWR);
	if (fd < 0)
		die("open");
	for (i = 0; i < NR; i++) {
		struct region *r = &regions[i];
		int prot = PROT_READ | PROT_WRITE, k;
		char *a = start + i * slot, *m;

		if (r->kind == ANON)
			m = mmap(a, r->size, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
		else if (r->kind == SHARED)
			m = mmap(a, r->size, prot, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
		else
			m = mmap(a, r->size, prot, MAP_PRIVATE | MAP_FIXED, fd, 0);
		if (m == MAP_FAILED)
			die(r->name);
		for (k = 0; k < 3 && r->advice[k]; k++)
			if (madvise(a, r->size, r->advice[k]))
				die("madvise");
		addr[i] = a;
	}
	close(fd);
	for (i = 0; i < NR; i++) {
		struct region *r = &regions[i];

		if (!strcmp(r->name, "locked") && mlock(addr[i], r->size))
			die("mlock");
		for (p = 0; p < r->size / PAGE; p++) {
			char *a = addr[i] + p * PAGE;

			if (!strcmp(r->name, "zero") || (!strcmp(r->name, "file") && p != 3))
				rd(a);
			else
				wr(a);
		}
		if (!strcmp(r->name, "lazy") && madvise(addr[i], r->size, MADV_FREE))
			die("madvise free");
	}
	/* MADV_COLD on a never-touched page runs lru_add_drain() */
	madvise(drain, PAGE, MADV_COLD);

	if (pipe(pfd))
		die("pipe");
	fflush(stdout);
	child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {
		prctl(PR_SET_NAME, "cap\nchild", 0, 0, 0);
		wr(addr[1]);
		madvise(drain, PAGE, MADV_COLD);
		if (write(pfd[1], "x", 1) != 1)
			die("write");
		for (;;)
			pause();
	}
	if (read(pfd[0], &c, 1) != 1)
		die("read");
	wr(addr[0] + 7 * PAGE);
	madvise(drain, PAGE, MADV_COLD);
	printf("{\"parent\": %d, \"child\": %d, \"regions\": {", getpid(), child);
	for (i = 0; i < NR; i++)
		printf("%s\"%s\": [%lu, %lu]", i ? ", " : "", regions[i].name,
		       (unsigned long)addr[i], regions[i].size);
	printf("}}\n");
	fflush(stdout);
	for (;;)
		pause();
}
'''

PID_FILES = ['maps', 'smaps', 'smaps_rollup', 'numa_maps', 'status', 'statm',
             'stat', 'limits', 'cmdline', 'comm', 'cgroup']
SYSTEM_FILES = {
    'meminfo': '/proc/meminfo',
    'vmstat': '/proc/vmstat',
    'stat': '/proc/stat',
    'cpuinfo': '/proc/cpuinfo',
    'loadavg': '/proc/loadavg',
    'uptime': '/proc/uptime',
    'version': '/proc/version',
    'node0_meminfo': '/sys/devices/system/node/node0/meminfo',
    'memcg_v1_memory.stat': '/sys/fs/cgroup/memory/memory.stat',
    'kthread_status': '/proc/2/status',
    'kthread_stat': '/proc/2/stat',
}


def read_bytes(path):
    with open(path, 'rb') as f:
        return f.read()


def sanitize_cgroup(text):
    return re.sub(rb'^(\d+:memory:)[^\n]*$', rb'\1/mmemu', text, flags=re.M)


def page_runs(pid, addr, size):
    """The pages of [addr, addr + size) as runs of identical records
    [count, present, exclusive (pagemap bit 56), kpagecount, kpageflags]
    (kpagecount and kpageflags null for a page that is not present)."""
    n = size // PAGE
    runs = []
    with open(f'/proc/{pid}/pagemap', 'rb') as pm, \
            open('/proc/kpagecount', 'rb') as kc, open('/proc/kpageflags', 'rb') as kf:
        pm.seek(addr // PAGE * 8)
        for e in struct.unpack(f'<{n}Q', pm.read(8 * n)):
            rec = [bool(e >> 63 & 1), bool(e >> 56 & 1), None, None]
            if rec[0]:
                pfn = e & ((1 << 55) - 1)
                kc.seek(pfn * 8)
                kf.seek(pfn * 8)
                rec[2] = struct.unpack('<Q', kc.read(8))[0]
                rec[3] = '%#x' % struct.unpack('<Q', kf.read(8))[0]
            if runs and runs[-1][1:] == rec:
                runs[-1][0] += 1
            else:
                runs.append([1] + rec)
    return runs


def dump_pages(pages):
    """JSON with one run per line."""
    procs = []
    for role, regions in pages['processes'].items():
        regs = ',\n'.join(f'   {json.dumps(name)}: [\n' + ',\n'.join(f'    {json.dumps(r)}' for r in runs)
                          + '\n   ]' for name, runs in regions.items())
        procs.append(f'  {json.dumps(role)}: {{\n{regs}\n  }}')
    return ('{\n "regions": ' + json.dumps(pages['regions']) + ',\n "processes": {\n'
            + ',\n'.join(procs) + '\n }\n}\n')


def capture(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix='mmemu-cap-')
    file_path = os.path.join(tmp, FILE_NAME)
    with open(file_path, 'wb') as f:
        f.write(b'\x11' * (16 << 10))
    with open(os.path.join(tmp, 'helper.c'), 'w') as f:
        f.write(HELPER_C)
    helper = os.path.join(tmp, 'helper')
    subprocess.run(['gcc', '-O1', '-Wall', '-o', helper, os.path.join(tmp, 'helper.c')], check=True)
    old_knob = re.search(r'\[(\w+)\]', read_bytes(MTHP_KNOB).decode()).group(1)
    proc = None
    pids = []
    try:
        with open(MTHP_KNOB, 'w') as f:
            f.write('madvise')
        proc = subprocess.Popen([helper, file_path], stdout=subprocess.PIPE)
        info = json.loads(proc.stdout.readline())
        pids = [info['child'], info['parent']]
        time.sleep(0.2)
        pages = {'regions': info['regions'], 'processes': {}}
        for role in ('parent', 'child'):
            pid = info[role]
            for name in PID_FILES:
                data = read_bytes(f'/proc/{pid}/{name}')
                if name == 'cgroup':
                    data = sanitize_cgroup(data)
                with open(os.path.join(out_dir, f'{role}.{name}'), 'wb') as f:
                    f.write(data)
            maps = read_bytes(f'/proc/{pid}/maps').decode()
            starts = {int(line.split('-')[0], 16) for line in maps.splitlines()}
            pages['processes'][role] = {
                name: page_runs(pid, addr, size)
                for name, (addr, size) in info['regions'].items() if addr in starts}
        with open(os.path.join(out_dir, 'pages.json'), 'w') as f:
            f.write(dump_pages(pages))
        for name, path in SYSTEM_FILES.items():
            with open(os.path.join(out_dir, name), 'wb') as f:
                f.write(read_bytes(path))
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if proc is not None:
            if not pids:
                proc.kill()
            proc.wait()
        with open(MTHP_KNOB, 'w') as f:
            f.write(old_knob)
        shutil.rmtree(tmp)


if __name__ == '__main__':
    capture(sys.argv[1] if len(sys.argv) > 1 else HERE)

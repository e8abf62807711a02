"""Shared fixtures: a small fake tree (no mm core), a real FUSE mount of it,
and running commands as the unprivileged user ``nobody``."""
import errno
import os
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = TESTS_DIR.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from procfs import tree as T  # noqa: E402

NOBODY = 65534
APP_UID = 1000
PAGE_SIZE = 4096
# x86-64 user address space: TASK_SIZE_MAX = 2^47 - 4096; pagemap has one
# u64 per virtual page up to it (pagemap_read(): end_vaddr = mm->task_size).
TASK_SIZE = (1 << 47) - PAGE_SIZE
VSYSCALL_PAGEMAP_OFFSET = 0xffffffffff600000 // PAGE_SIZE * 8
PM_PRESENT = 1 << 63
PFN_MASK = (1 << 55) - 1

CONFIGS = ('page_mapcount', 'no_page_mapcount')
SMAPS = {
    'page_mapcount': b'7f0000000000-7f0000010000 rw-p 00000000 00:00 0 \nRss:                  64 kB\nPss:                  40 kB\n',
    'no_page_mapcount': b'7f0000000000-7f0000010000 rw-p 00000000 00:00 0 \nRss:                  64 kB\nPss:                  32 kB\n',
}
MEMINFO = b'MemTotal:        1048576 kB\nMemFree:          900000 kB\n'


def pagemap_entry(vpn, ctx):
    """Fake pagemap: virtual pages 16..47 present with PFN 0x1000+vpn; the PFN
    is zeroed for readers without CAP_SYS_ADMIN (pagemap_read(): show_pfn)."""
    if 16 <= vpn < 48:
        return PM_PRESENT | ((0x1000 + vpn) if ctx.capable else 0)
    return 0


def make_pagemap(size_limit, uid):
    def read(offset, size, ctx):
        first = offset // 8
        return b''.join(struct.pack('<Q', pagemap_entry(v, ctx)) for v in range(first, first + size // 8))

    def extents():
        # the populated range plus the last entry, so an export ends at size_limit
        return [(16 * 8, 32 * 8), (size_limit - 8, 8)]
    return T.BinaryFile(read, size_limit, mode=0o400, uid=uid, gid=uid, extents=extents)


def make_kpagecount(config):
    """One u64 per PFN: a made-up count that differs between the configs."""
    def read(offset, size, ctx):
        first = offset // 8
        div = 3 if config == 'page_mapcount' else 5
        return b''.join(struct.pack('<Q', pfn % div) for pfn in range(first, first + size // 8))
    return T.BinaryFile(read, 8192 * 8, mode=0o400, write_errno=errno.EIO)


def make_config_tree(config):
    pid_dir = T.Dir({
        'smaps': T.TextFile(lambda: SMAPS[config], uid=APP_UID, gid=APP_UID),
        'status': T.TextFile(lambda: b'Name:\tapp\nUid:\t1000\t1000\t1000\t1000\n', uid=APP_UID, gid=APP_UID),
        'pagemap': make_pagemap(64 * 1024, APP_UID),
        'exe': T.Symlink('/usr/bin/sleep', uid=APP_UID, gid=APP_UID),
    }, uid=APP_UID, gid=APP_UID)
    return T.Dir({
        'proc': T.Dir(lambda: {
            'meminfo': T.TextFile(lambda: MEMINFO, write_errno=errno.EIO),
            'kpagecount': make_kpagecount(config),
            '100': pid_dir,
            'self': T.Symlink('100'),
        }),
        'sys': T.Dir({'fs': T.Dir({'cgroup': T.Dir({
            'memory.current': T.TextFile(lambda: b'65536\n', mode=0o444)})})}),
    })


class Counter:
    """A render callable that changes at every call: shows that a handle is a
    snapshot taken at open."""

    def __init__(self):
        self.n = 0

    def __call__(self):
        self.n += 1
        return ('generation %d\n' % self.n).encode() * 100


def make_fake_tree(extra=True):
    """Two config subtrees laid out like the real one, plus (``extra``)
    ``extra/`` with nodes for the FUSE corner cases."""
    entries = {c: make_config_tree(c) for c in CONFIGS}
    if not extra:
        return T.Dir(entries)
    entries['extra'] = T.Dir({
        'counter': T.TextFile(Counter()),
        'empty': T.TextFile(lambda: b''),
        'secret': T.TextFile(lambda: b'root only\n', mode=0o400),
        'bigmap': make_pagemap(TASK_SIZE // PAGE_SIZE * 8, NOBODY),
        'unaligned': T.BinaryFile(lambda off, size, ctx: bytes((off + i) % 251 for i in range(size)),
                                  1000, mode=0o444, align8=False),
        'broken': T.TextFile(lambda: 1 / 0),
        'nobody': T.Dir({'pagemap': make_pagemap(64 * 1024, NOBODY)}, uid=NOBODY, gid=NOBODY),
    })
    return T.Dir(entries)


def install_fake_build(calls=None):
    """Puts a fake ``procfs.build`` into sys.modules (the real one needs the mm
    core). ``calls`` collects (function, args) tuples."""
    calls = [] if calls is None else calls
    mod = types.ModuleType('procfs.build')

    def build_tree(scenario_path, config_paths, stop_at, with_init=True):
        calls.append(('build_tree', scenario_path, list(config_paths), stop_at))
        return make_fake_tree(extra=False), 'fake summary: %d configs' % len(config_paths)

    def diff_report(scenario_path, config_paths, stop_at):
        calls.append(('diff_report', scenario_path, list(config_paths), stop_at))
        return 'fake diff report'

    def tools_report(scenario_path, config_paths, stop_at):
        calls.append(('tools_report', scenario_path, list(config_paths), stop_at))
        return 'fake tools report\n'
    mod.build_tree, mod.diff_report, mod.tools_report = build_tree, diff_report, tools_report
    sys.modules['procfs.build'] = mod
    return calls


# A child process that mounts the fake tree in the foreground and prints
# READY once the root can be listed.
SERVE_FAKE = r'''
import sys
sys.path[:0] = [%r, %r]
import conftest
from procfs import fuse
fuse.mount(conftest.make_fake_tree(), sys.argv[1], foreground=True,
           ready_callback=lambda: print("READY", flush=True))
''' % (str(TESTS_DIR), str(PROJECT_ROOT))


def public_tempdir(prefix):
    """A directory under /tmp that ``nobody`` can traverse (pytest's tmp_path
    is 0700 under /tmp/pytest-of-root)."""
    d = tempfile.mkdtemp(prefix=prefix, dir='/tmp')
    os.chmod(d, 0o755)
    return d


def start_fake_mount(mountpoint, script=None, timeout=30):
    """Runs ``script`` (default SERVE_FAKE) with ``mountpoint`` as argument;
    returns the Popen once it printed READY."""
    proc = subprocess.Popen([sys.executable, '-c', script or SERVE_FAKE, mountpoint],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    line = b''
    while not line.startswith(b'READY'):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
            proc.kill()
            raise AssertionError('fake mount did not become ready: %r' % proc.stderr.read())
        line = proc.stdout.readline()
        if not line:
            proc.wait()
            raise AssertionError('fake mount exited: %r' % proc.stderr.read())
    return proc


def stop_fake_mount(proc, mountpoint):
    """SIGTERM, as a service manager would; libfuse unmounts on the way out."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if os.path.ismount(mountpoint):
        subprocess.run(['fusermount3', '-u', '-z', mountpoint], check=False)
    return proc.returncode


@pytest.fixture(scope='module')
def fake_mount():
    """The fake tree mounted through real FUSE; yields the mount point."""
    mp = public_tempdir('mmemu-mnt-')
    proc = start_fake_mount(mp)
    try:
        yield mp
    finally:
        stop_fake_mount(proc, mp)
        os.rmdir(mp)


def as_nobody(argv, **kw):
    """Runs argv as uid/gid 65534 without supplementary groups."""
    return subprocess.run(['setpriv', '--reuid=%d' % NOBODY, '--regid=%d' % NOBODY,
                           '--clear-groups', *argv], capture_output=True, **kw)

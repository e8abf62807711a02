"""Access through the mount as the kernel grants it (issue 10), each held
against what the real /proc of this machine does for the same reader.

- scenario processes have an owner (`uid`, `gid`); maps, smaps,
  smaps_rollup, numa_maps and pagemap open through proc_mem_open() /
  mm_access(), so a reader that may not ptrace-read the process gets
  EACCES (__ptrace_may_access(): fsuid and fsgid equal to the task's ids,
  or CAP_SYS_PTRACE); /proc/PID/exe needs the same (proc_fd_access_allowed);
- an unprivileged reader's own pagemap has the PFNs zeroed (pagemap_read()
  without CAP_SYS_ADMIN);
- lseek(): SEEK_END, SEEK_DATA and SEEK_HOLE are EINVAL on pagemap, the
  kpage* files and the seq files (mem_lseek(), seq_lseek()); cmdline seeks
  like a generic file;
- SIGTERM ends the daemon promptly with a file still open;
- 32 concurrent readers get whole, identical reads.
"""
import json
import os
import re
import signal
import struct
import subprocess
import sys
import threading
import time

import pytest

from conftest import PROJECT_ROOT, as_nobody, public_tempdir, start_fake_mount, stop_fake_mount

CONFIG = str(PROJECT_ROOT / 'configs' / 'kernels' / 'page_mapcount.yaml')
NOBODY = 65534

SCENARIO = '''\
format: 1
name: owners
processes:
  - pid: 100
  - pid: 200
    uid: 65534
    gid: 65534
  - pid: 300
    uid: 65534
    gid: 0
steps:
  - mmap: {pid: 100, name: a, size: 64K}
  - write: {pid: 100, vma: a}
  - mmap: {pid: 200, name: b, size: 64K}
  - write: {pid: 200, vma: b}
  - fork: {pid: 200, child: 201}
  - mmap: {pid: 300, name: c, size: 16K}
  - write: {pid: 300, vma: c}
'''

# What a reader can do with the files of /proc/PID and the kpage* files:
# open and read, then lseek with SEEK_END, SEEK_DATA, SEEK_HOLE, SEEK_SET
PROBE = r'''
import json, os, sys
proc, pid = sys.argv[1], sys.argv[2]
out = {}
SEEKS = (('END', os.SEEK_END), ('DATA', os.SEEK_DATA), ('HOLE', os.SEEK_HOLE), ('SET', os.SEEK_SET))
def probe(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        return 'open ' + os.strerror(e.errno)
    try:
        os.read(fd, 64)
        r = 'read ok'
        for name, w in SEEKS:
            try:
                os.lseek(fd, 8, w)
                r += ' %s=ok' % name
            except OSError as e:
                r += ' %s=%s' % (name, os.strerror(e.errno))
        return r
    except OSError as e:
        return 'read ' + os.strerror(e.errno)
    finally:
        os.close(fd)
for f in ('maps', 'smaps', 'smaps_rollup', 'numa_maps', 'pagemap', 'status', 'stat', 'statm',
          'cmdline', 'comm', 'limits', 'cgroup'):
    out[f] = probe('%s/%s/%s' % (proc, pid, f))
try:
    os.readlink('%s/%s/exe' % (proc, pid))
    out['exe'] = 'ok'
except OSError as e:
    out['exe'] = os.strerror(e.errno)
for f in ('kpagecount', 'kpageflags'):
    out[f] = probe('%s/%s' % (proc, f))
print(json.dumps(out, sort_keys=True))
'''

SERVE = r'''
import sys
sys.path.insert(0, %r)
from procfs import build, fuse
root, _ = build.build_tree(sys.argv[2], [%r], None, with_init=False)
fuse.mount(root, sys.argv[1], foreground=True, ready_callback=lambda: print('READY', flush=True))
'''


def _system_python():
    for cand in ('/usr/bin/python3', '/usr/local/bin/python3'):
        if os.access(cand, os.X_OK):
            return cand
    raise AssertionError('no system python3 for running the probe as nobody')


@pytest.fixture(scope='module')
def mount():
    """The owners scenario mounted through FUSE: (proc dir, probe script)."""
    base = public_tempdir('mmemu-access-')
    mp = os.path.join(base, 'mnt')
    os.mkdir(mp)
    os.chmod(mp, 0o755)
    scen = os.path.join(base, 'owners.yaml')
    probe = os.path.join(base, 'probe.py')
    with open(scen, 'w') as f:
        f.write(SCENARIO)
    with open(probe, 'w') as f:
        f.write(PROBE)
    os.chmod(probe, 0o644)
    script = SERVE % (str(PROJECT_ROOT), CONFIG)
    proc = subprocess.Popen([sys.executable, '-c', script, mp, scen],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = proc.stdout.readline()
    assert line.startswith(b'READY'), proc.stderr.read()
    try:
        yield os.path.join(mp, 'page_mapcount', 'proc'), probe
    finally:
        stop_fake_mount(proc, mp)
        os.rmdir(mp)
        os.unlink(scen)
        os.unlink(probe)
        os.rmdir(base)


def run_probe(probe, proc_dir, pid, nobody):
    argv = [_system_python(), probe, proc_dir, str(pid)]
    res = as_nobody(argv, text=True) if nobody else subprocess.run(argv, capture_output=True,
                                                                    text=True)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.fixture(scope='module')
def real(mount):
    """The probe's results on this machine's /proc: {(reader, owner): dict}
    for a root-owned and a nobody-owned process."""
    _, probe = mount
    root_task = subprocess.Popen(['sleep', '60'])
    nobody_task = subprocess.Popen(['setpriv', '--reuid=%d' % NOBODY, '--regid=%d' % NOBODY,
                                    '--clear-groups', 'sleep', '60'])
    try:
        time.sleep(0.2)
        return {(reader, owner): run_probe(probe, '/proc', task.pid, reader == 'nobody')
                for reader in ('root', 'nobody')
                for owner, task in (('root', root_task), ('nobody', nobody_task))}
    finally:
        for t in (root_task, nobody_task):
            t.kill()
            t.wait()


@pytest.mark.parametrize('reader', ['root', 'nobody'])
@pytest.mark.parametrize('owner,pid', [('root', 100), ('nobody', 200), ('nobody', 201)])
def test_access_and_lseek_as_on_the_real_proc(mount, real, reader, owner, pid):
    proc_dir, probe = mount
    assert run_probe(probe, proc_dir, pid, reader == 'nobody') == real[(reader, owner)]


def test_same_uid_other_gid_is_refused(mount, real):
    """__ptrace_may_access() also wants the gids equal: pid 300 has uid
    65534 and gid 0, so nobody (gid 65534) may read none of its mm files
    (pagemap passes the mode check as its owner, then mm_access() fails)."""
    proc_dir, probe = mount
    got = run_probe(probe, proc_dir, 300, True)
    assert got == real[('nobody', 'root')]
    assert got['pagemap'] == 'open Permission denied'


def _range_start(proc_dir, pid, name):
    with open(os.path.join(proc_dir, str(pid), 'maps')) as f:
        for line in f:
            if line.rstrip().endswith('[anon:%s]' % name):
                return int(line.split('-')[0], 16)
    raise AssertionError('no range %s in pid %d' % (name, pid))


def test_own_pagemap_has_the_pfns_zeroed(mount):
    """pagemap_read(): PM_PFRAME only for an opener with CAP_SYS_ADMIN
    (real, as nobody on its own process: present 1, PFN 0)."""
    proc_dir, _ = mount
    start = _range_start(proc_dir, 200, 'b')
    path = os.path.join(proc_dir, '200', 'pagemap')
    res = as_nobody(['dd', 'if=' + path, 'bs=8', 'skip=%d' % (start >> 12), 'count=1',
                     'status=none'])
    assert res.returncode == 0, res.stderr
    entry, = struct.unpack('<Q', res.stdout)
    assert entry >> 63 == 1 and entry & ((1 << 55) - 1) == 0
    with open(path, 'rb') as f:
        f.seek((start >> 12) * 8)
        root_entry, = struct.unpack('<Q', f.read(8))
    assert root_entry >> 63 == 1 and root_entry & ((1 << 55) - 1) != 0


def test_sigterm_ends_the_daemon_with_a_file_open():
    base = public_tempdir('mmemu-term-')
    mp = os.path.join(base, 'mnt')
    os.mkdir(mp)
    scen = os.path.join(base, 'owners.yaml')
    with open(scen, 'w') as f:
        f.write(SCENARIO)
    try:
        res = subprocess.run([sys.executable, '-m', 'procfs', 'mount', scen, mp, '--no-init',
                              '--config', CONFIG], capture_output=True, text=True, timeout=60,
                             cwd=str(PROJECT_ROOT))
        assert res.returncode == 0, res.stderr
        daemon = int(re.search(r'daemon pid (\d+)', res.stdout).group(1))
        fd = os.open(os.path.join(mp, 'page_mapcount', 'proc', '100', 'smaps'), os.O_RDONLY)
        os.read(fd, 100)
        t = time.monotonic()
        os.kill(daemon, signal.SIGTERM)
        while time.monotonic() - t < 10:
            try:
                os.kill(daemon, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        took = time.monotonic() - t
        try:
            os.close(fd)
        except OSError:
            pass                    # ENOTCONN: the daemon is gone
        assert took < 10, 'the daemon did not exit within 10 s of SIGTERM'
        assert not os.path.ismount(mp)
    finally:
        if os.path.ismount(mp):
            subprocess.run(['fusermount3', '-u', '-z', mp])
        os.rmdir(mp)
        os.unlink(scen)
        os.rmdir(base)


def test_32_concurrent_readers_get_whole_identical_reads(mount):
    proc_dir, _ = mount
    files = [os.path.join(proc_dir, str(pid), f) for pid in (100, 200, 201, 300)
             for f in ('smaps', 'smaps_rollup', 'maps', 'numa_maps', 'status')]
    want = {}
    for f in files:
        with open(f, 'rb') as fh:
            want[f] = fh.read()
    start_b = _range_start(proc_dir, 200, 'b')
    pm = os.path.join(proc_dir, '200', 'pagemap')
    with open(pm, 'rb') as fh:
        fh.seek((start_b >> 12) * 8)
        want_pm = fh.read(16 * 8)
    errors = []
    barrier = threading.Barrier(32)

    def reader(i):
        try:
            barrier.wait()
            for n in range(25):
                f = files[(i + n) % len(files)]
                with open(f, 'rb', buffering=0) as fh:
                    data, chunk = b'', fh.read(1 + (i * 37 + n) % 4096)
                    while chunk:
                        data += chunk
                        chunk = fh.read(1 + (i * 37 + n) % 4096)
                if data != want[f]:
                    errors.append('%s: %d bytes, want %d' % (f, len(data), len(want[f])))
                fd = os.open(pm, os.O_RDONLY)
                try:
                    got = os.pread(fd, 16 * 8, (start_b >> 12) * 8)
                finally:
                    os.close(fd)
                if got != want_pm:
                    errors.append('pagemap differs')
        except Exception as e:          # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors[:5]

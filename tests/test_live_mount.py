"""A live mount through FUSE and the control socket, watched by real tools
(free and vmstat from procps, in a mount namespace with the config's proc
bound on /proc)."""
import os
import subprocess

import pytest

import e2e_helpers as E
from procfs import control

KB = 1024


def mmemu(*argv):
    return subprocess.run([E.mmemu_path()] + [str(a) for a in argv], capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope='module')
def live():
    with E.Mount(E.SHOWCASE, live=True) as m:
        yield m


def read_all(path):
    """Reads by 64 KiB (kpage* take multiples of 8 bytes only)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        out = []
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return b''.join(out)
            out.append(chunk)
    finally:
        os.close(fd)


def free_kb(root):
    """free -k: (total, used, free, shared, buff/cache, available) of Mem:."""
    r = E.inproc(root, E.require_command('free'), '-k')
    assert r.returncode == 0, r.stderr
    return [int(x) for x in next(l.split() for l in r.stdout.splitlines()
                                 if l.startswith('Mem:'))[1:]]


def test_tools_see_the_machine_move(live):
    root = live.root('page_mapcount')
    meminfo = os.path.join(live.proc('page_mapcount'), 'meminfo')
    before = free_kb(root)
    fd = os.open(meminfo, os.O_RDONLY)
    try:
        opened = os.pread(fd, 1 << 16, 0)
        r = mmemu('step', live.mountpoint, '--to', 'started')
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[0].startswith('step 1 (line 25): mmap pid=100 name=heap')
        assert len(r.stdout.splitlines()) == 5
        # the open file keeps the bytes it was opened with
        assert os.pread(fd, 1 << 16, 0) == opened
    finally:
        os.close(fd)
    with open(meminfo, 'rb') as f:
        assert f.read() != opened
    after = free_kb(root)
    # steps 1-4 wrote a 1 MiB private heap (anon folios) and a 256 KiB
    # shared-anon range (shmem page cache, counted in Shmem and Cached):
    # 1280 kB fewer free frames, 256 kB more shared and buff/cache
    assert before[2] - after[2] == 1280
    assert (after[3] - before[3], after[4] - before[4]) == (256, 256)
    # procps 4 shows used = MemTotal - MemAvailable; shmem is on the anon
    # LRU, not in MemAvailable (si_mem_available())
    assert after[1] - before[1] == 1280
    assert before[5] - after[5] == 1280


def test_vmstat_rates_and_new_processes(live):
    r = mmemu('step', live.mountpoint, '--to', 'forked')
    assert r.returncode == 0, r.stderr
    assert sorted(n for n in os.listdir(live.proc('no_page_mapcount')) if n.isdigit()) == \
        ['1', '100', '101', '102']
    # vmstat 1 2: the second line's rates come from two reads of /proc/stat
    # one second apart; the clock runs while the machine is served, so the
    # CPU columns add up to 100
    r = E.inproc(live.root('page_mapcount'), E.require_command('vmstat'), '1', '2')
    assert r.returncode == 0, r.stderr
    last = r.stdout.splitlines()[-1].split()
    us, sy, idle, wa, st = (int(x) for x in (last[12], last[13], last[14], last[15], last[16]))
    assert 99 <= us + sy + idle + wa + st <= 101, r.stdout


def test_do_and_status(live):
    r = mmemu('do', live.mountpoint, 'fork: {pid: 100, child: 101}')
    assert r.returncode == 1 and r.stdout == ''
    assert r.stderr.strip() == 'mmemu: error: <do>:1: step 18 (fork): child: pid 101 is in use'
    r = mmemu('do', live.mountpoint, 'fork: {pid: 102, child: 150, comm: extra}')
    assert r.returncode == 0, r.stderr
    assert r.stdout == 'do 1 (step 18): fork pid=102 child=150 comm=extra\n'
    with open(os.path.join(live.proc('page_mapcount'), '150', 'comm')) as f:
        assert f.read() == 'extra\n'
    r = mmemu('status', live.mountpoint)
    assert r.returncode == 0, r.stderr
    assert 'labels passed: started, forked' in r.stdout.splitlines()
    assert 'pids: 1 (init), 100 (app), 101 (worker1), 102 (worker2), 150 (extra)' in r.stdout


def test_the_control_socket_is_outside_the_read_only_tree(live):
    path = control.socket_path(live.mountpoint)
    assert os.path.exists(path) and not path.startswith(live.mountpoint)
    assert oct(os.stat(os.path.dirname(path)).st_mode & 0o777) == '0o700'
    with pytest.raises(OSError):
        open(os.path.join(live.mountpoint, 'page_mapcount', 'control'), 'w')


def test_commands_on_a_mount_that_is_not_live(tmp_path):
    r = mmemu('step', tmp_path)
    assert r.returncode == 1
    assert r.stderr.startswith('mmemu: error: %s is not a live mount' % tmp_path)
    r = mmemu('step', tmp_path, '2', '--all')
    assert r.returncode == 1 and 'one of N, --to LABEL and --all' in r.stderr


def test_debugfs_files_are_root_only_and_follow_the_steps(live):
    from conftest import as_nobody
    path = os.path.join(live.root('page_mapcount'), 'sys', 'kernel', 'debug', 'mmemu', 'folios')
    r = as_nobody(['cat', path], text=True)
    assert r.returncode == 1 and 'Permission denied' in r.stderr
    with open(path) as f:
        before = f.read()
    r = mmemu('do', live.mountpoint, 'exit: {pid: 101}')
    assert r.returncode == 0, r.stderr
    with open(path) as f:
        after = f.read()
    assert before.splitlines()[0].split() == after.splitlines()[0].split()
    assert ',101:' in before and ',101:' not in after


def rollup_kb(path):
    with open(path) as f:
        return {l.split(':')[0]: int(l.split()[1]) for l in f if l.endswith(' kB\n')}


def test_a_cached_text_file_follows_the_steps(live):
    """/proc/PID files are rendered once per served tree (TextFile cache);
    a step swaps the tree, so the next open shows the new state: a 64K
    write into a new VMA faults one 64K mTHP (smaps_account() adds the
    folio's 64 kB to Rss and Anonymous)."""
    path = os.path.join(live.proc('page_mapcount'), '100', 'smaps_rollup')
    before = rollup_kb(path)
    assert rollup_kb(path) == before
    for step in ('mmap: {pid: 100, name: cached, size: 64K, align: 64K}',
                 'write: {pid: 100, vma: cached}'):
        r = mmemu('do', live.mountpoint, step)
        assert r.returncode == 0, r.stderr
    after = rollup_kb(path)
    assert after['Rss'] - before['Rss'] == 64
    assert after['Anonymous'] - before['Anonymous'] == 64


def test_explain_and_map_through_the_mount(live, tmp_path):
    with open(os.path.join(live.proc('no_page_mapcount'), '102', 'maps')) as f:
        heap = next(l for l in f if l.rstrip().endswith('[anon:heap]'))
    start = int(heap.split('-')[0], 16)
    r = mmemu('explain', live.mountpoint, 102, hex(start))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith('no_page_mapcount: pid 102, %#x: page 0 of heap' % start)
    assert 'step 7 (fork pid=100 child=102 comm=worker2): pid 102 (mm 4) mapped it untracked' \
        in r.stdout
    out = tmp_path / 'map.html'
    r = mmemu('map', live.mountpoint, 102, '--html', out)
    assert r.returncode == 0, r.stderr
    assert out.read_text().startswith('<!DOCTYPE html>') and 'class="folio' in out.read_text()
    r = mmemu('explain', live.mountpoint, 102, hex(start), '--stop-at', 'forked')
    assert r.returncode == 1 and 'apply to a scenario, not to the live mount' in r.stderr


def test_a_live_mount_stepped_to_a_label_serves_the_exported_tree(tmp_path):
    """The contract through the real mount: every file read from the live
    mount after `mmemu step --to partial` equals the file `mmemu export
    --stop-at partial` wrote (the clock files aside; pagemap over its VMAs,
    as it spans the whole address space)."""
    out = tmp_path / 'export'
    r = mmemu('export', E.SHOWCASE, out, '--stop-at', 'partial')
    assert r.returncode == 0, r.stderr
    with E.Mount(E.SHOWCASE, live=True) as m:
        r = mmemu('step', m.mountpoint, '--to', 'partial')
        assert r.returncode == 0, r.stderr
        compared = 0
        for dirpath, dirnames, filenames in os.walk(out):
            rel = os.path.relpath(dirpath, out)
            live_dir = os.path.join(m.mountpoint, rel)
            assert sorted(os.listdir(live_dir)) == sorted(dirnames + filenames), rel
            for name in filenames:
                exported = os.path.join(dirpath, name)
                served = os.path.join(live_dir, name)
                if os.path.islink(exported):
                    assert os.readlink(served) == os.readlink(exported)
                    continue
                if rel.endswith('/proc') and name in ('uptime', 'stat'):
                    continue
                if name == 'pagemap':
                    with open(os.path.join(dirpath, 'maps')) as f:
                        spans = [[int(x, 16) for x in l.split()[0].split('-')] for l in f]
                    with open(exported, 'rb') as a, open(served, 'rb') as b:
                        for lo, hi in spans:
                            off, n = (lo >> 12) * 8, ((hi - lo) >> 12) * 8
                            assert os.pread(b.fileno(), n, off) == os.pread(a.fileno(), n, off)
                else:
                    with open(exported, 'rb') as a:
                        assert read_all(served) == a.read(), os.path.join(rel, name)
                compared += 1
        assert compared > 100

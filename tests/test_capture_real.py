"""Acceptance test of capture and import on the real kernel of this machine
(CONFIG_PAGE_MAPCOUNT=y): a fork tree with PMD THPs, mTHPs, CoW, a PMD
split, a partial munmap, shared anon, tmpfs and disk files, zero pages and
a pinned range (tests/workloads/capture_workload.c) is started in its own
memory cgroup, captured with `mmemu capture --cgroup`, imported, and the
emulated page_mapcount kernel must render what the real /proc showed:
smaps Rss, Pss, Private_*, Shared_*, AnonHugePages per VMA, smaps_rollup,
kpagecount and pagemap bit 56 of every present page, numa_maps mapmax and
the memcg's rss.

The expected values are the real kernel's, read from /proc in the same
run.  [vdso] is left out of the per-VMA comparison of Pss and of the
rollup: every process on the machine maps its pages, so its counts move
between two reads whenever a process starts or exits anywhere.
"""
import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from mmcore.capture import load_capture
from mmcore.config import PAGE_MAPCOUNT
from mmcore.imported import build_kernel
from procfs import capture as rec
from procfs import pid as pidfiles
from procfs.capture_check import check_import

HERE = Path(__file__).resolve().parent
WORKLOAD = HERE / 'workloads' / 'capture_workload.c'
KNOB_64K = '/sys/kernel/mm/transparent_hugepage/hugepages-64kB/enabled'
SKIP_NAMES = ('[vdso]', '[vvar]', '[vvar_vclock]')


def _why_not():
    if os.geteuid() != 0:
        return 'needs root: PFNs in pagemap and /proc/kpage* are for CAP_SYS_ADMIN'
    if not os.path.exists('/proc/kpagecount'):
        return 'no /proc/kpagecount on this kernel'
    try:
        buf = bytearray(b'x' * 4096)
        addr = id(buf)
        with open('/proc/self/pagemap', 'rb') as f:
            f.seek((addr >> 12) * 8)
            e = int.from_bytes(f.read(8), 'little')
        if not e >> 63 or not e & ((1 << 55) - 1):
            return '/proc/self/pagemap shows no PFNs here (not a real kernel /proc?)'
    except OSError as e:
        return 'cannot read /proc/self/pagemap: %s' % e
    if shutil.which('cc') is None:
        return 'no C compiler (cc) for the workload'
    if rec.memcg_root() is None:
        return 'no memory cgroup hierarchy'
    return None


pytestmark = pytest.mark.skipif(_why_not() is not None, reason=str(_why_not()))


def _build(tmp):
    exe = tmp / 'capture_workload'
    r = subprocess.run(['cc', '-O1', '-static', '-o', str(exe), str(WORKLOAD)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip('cannot build the static workload: %s' % r.stderr.strip()[:200])
    return exe


def _read(path):
    with open(path) as f:
        return f.read()


def _numa_mapmax(text):
    out = {}
    for line in text.splitlines():
        addr = int(line.split()[0], 16)
        m = re.search(r'mapmax=(\d+)', line)
        out[addr] = int(m.group(1)) if m else None
    return out


def _rollup(text):
    return {k: int(v) for k, v in re.findall(r'^(\w+):\s+(\d+) kB$', text, re.M)}


@pytest.fixture(scope='module')
def captured():
    tmp = Path(tempfile.mkdtemp(prefix='mmemu-capture-'))
    exe = _build(tmp)
    root = rec.memcg_root()
    cg = '/mmemu-accept-%d' % os.getpid()
    cgdir = os.path.join(root, cg.strip('/'))
    os.mkdir(cgdir)
    shm = '/dev/shm/mmemu-accept-%d' % os.getpid()
    disk = str(tmp / 'disk-file')
    proc = None
    lock = open('/tmp/thp-knobs.lock', 'w')
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        saved = _read(KNOB_64K) if os.path.exists(KNOB_64K) else None
        try:
            if saved is not None:
                with open(KNOB_64K, 'w') as f:
                    f.write('madvise')
            proc = subprocess.Popen(['sh', '-c', 'echo $$ > %s/cgroup.procs && exec %s %s %s'
                                     % (cgdir, exe, shm, disk)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            line = proc.stdout.readline()
        finally:
            if saved is not None:
                with open(KNOB_64K, 'w') as f:
                    f.write(rec._choice(saved))
            fcntl.flock(lock, fcntl.LOCK_UN)
        assert 'ready' in line, 'workload did not start: %r' % line
        pids = [int(x) for x in re.findall(r'\d+', line)]
        out = str(tmp / 'cap.npz')
        r = subprocess.run([sys.executable, '-m', 'procfs', 'capture', '--cgroup', cg, out],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        real = {}
        for p in pids:
            real[p] = {'rollup': _read('/proc/%d/smaps_rollup' % p),
                       'numa': _read('/proc/%d/numa_maps' % p)}
        real['memcg'] = rec.cgroup_memory_stat(cg)
        yield {'path': out, 'pids': pids, 'real': real, 'cgroup': cg}
    finally:
        lock.close()
        if proc is not None:
            proc.stdin.close()
            proc.wait(timeout=30)
        for p in (shm,):
            if os.path.exists(p):
                os.unlink(p)
        try:
            os.rmdir(cgdir)
        except OSError:
            pass
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope='module')
def imported(captured):
    cap = load_capture(captured['path'])
    return cap, build_kernel(PAGE_MAPCOUNT, cap, with_init=False)


def test_capture_holds_the_workload(captured, imported):
    cap, k = imported
    pids = {p['pid'] for p in cap.meta['processes']}
    assert set(captured['pids']) == pids
    orders = set(cap.a['folio_order'].tolist())
    assert 9 in orders, 'no PMD THP captured'
    from mmcore.capture import PB_PMD
    assert (cap.a['run_bits'] & PB_PMD).any(), 'PAGEMAP_SCAN found no PMD leaf'


def test_smaps_pagemap_kpagecount_per_vma(imported):
    """Every VMA's smaps values, and bit 56 and kpagecount of every present
    page, as the real kernel showed them (fs/proc/task_mmu.c
    smaps_account(), pagemap_pmd_range(); fs/proc/page.c kpagecount)."""
    cap, k = imported
    res = check_import(k, cap, skip_names=SKIP_NAMES)
    assert res.vmas >= 10 and res.pages > 4000
    assert res.ok(), res.summary() + '\n' + '\n'.join(map(str, res.smaps_diffs[:20] + res.examples))


def test_no_stand_ins_for_a_closed_fork_tree(imported):
    """The workload is static: apart from [vdso], no page of it is mapped
    by a process outside the capture."""
    cap, k = imported
    vdso = {n for n in SKIP_NAMES}
    assert k.capture.kpagecount_below == 0
    st_pages = sum(len(v.pfn) for s in k.capture.standins for v in s.mm.vmas)
    vdso_pages = sum(v.nr_pages for p in k.processes.values() for v in p.mm.vmas
                     if getattr(v, 'shown_name', '') in vdso and (v.pfn >= 0).any())
    assert st_pages <= vdso_pages * len(k.capture.standins)


def test_rollup_numa_maps_and_memcg(captured, imported):
    cap, k = imported
    vdso_starts = {}
    for pid in captured['pids']:
        proc = k.processes[pid]
        emu = _rollup(pidfiles.smaps_rollup(k, proc).decode())
        real = _rollup(captured['real'][pid]['rollup'])
        for key in ('Rss', 'Shared_Clean', 'Shared_Dirty', 'Private_Clean', 'Private_Dirty',
                    'Anonymous', 'AnonHugePages'):
            assert emu[key] == real[key], (pid, key, real[key], emu[key])
        skip = {v.start for v in proc.mm.vmas if getattr(v, 'shown_name', '') in SKIP_NAMES}
        vdso_starts[pid] = skip
        emu_m = _numa_mapmax(pidfiles.numa_maps(k, proc).decode())
        real_m = _numa_mapmax(captured['real'][pid]['numa'])
        for addr, mm in real_m.items():
            if addr in skip:
                continue
            assert emu_m.get(addr) == mm, (pid, hex(addr), mm, emu_m.get(addr))
    from mmcore import query
    cg = captured['cgroup']
    emu_rss = query.memcg_stats(k, cg)['anon_mapped'] * 4096
    assert emu_rss == captured['real']['memcg']['rss']
    assert captured['real']['memcg']['rss'] > 8 << 20


def test_tools_and_diff_accept_the_capture(captured):
    for cmd in ('tools', 'diff'):
        r = subprocess.run([sys.executable, '-m', 'procfs', cmd, captured['path']],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert 'MM-ID slots' in r.stdout
    assert str(captured['pids'][0]) in r.stdout

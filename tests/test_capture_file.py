"""The capture file and command line: bad input gets one clear line and
exit 1, a capture without root is refused, and a capture of a small
hand-made machine imports to the values its kernel rules give."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import PROJECT_ROOT, as_nobody, public_tempdir
from mmcore.capture import (FORMAT, FORMAT_VERSION, KPF_ANON, KPF_COMPOUND_HEAD,
                            KPF_COMPOUND_TAIL, KPF_LRU, KPF_MMAP, KPF_OWNER_2, KPF_SWAPBACKED,
                            KPF_THP, KPF_UPTODATE, PB_EXCLUSIVE, SMAPS_KEYS, load_capture,
                            CaptureFormatError)
from mmcore.config import NO_PAGE_MAPCOUNT, PAGE_MAPCOUNT
from mmcore.imported import build_kernel
from mmcore import query
from procfs import pid as pidfiles

ANON = (1 << KPF_ANON) | (1 << KPF_SWAPBACKED) | (1 << KPF_LRU) | (1 << KPF_UPTODATE) | \
    (1 << KPF_MMAP)


def mmemu(*args, **kw):
    return subprocess.run([sys.executable, '-m', 'procfs', *args], capture_output=True,
                          text=True, cwd=PROJECT_ROOT, **kw)


def write_capture(path, processes, vmas, runs, folios, pages):
    """vmas: (proc, start, end, smaps dict); runs: (vma, vpn, pfn, len, bits);
    folios: (head, order); pages: per page (flags, count)."""
    meta = {'format': FORMAT, 'version': FORMAT_VERSION, 'release': '6.18-test',
            'processes': processes, 'skipped': [], 'names': [''],
            'smaps_keys': list(SMAPS_KEYS), 'memcgs': {}, 'thp': {}}
    z = lambda n, t: np.zeros(n, dtype=t)
    nv = len(vmas)
    np.savez_compressed(
        path, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
        vma_proc=np.array([v[0] for v in vmas], np.int32),
        vma_start=np.array([v[1] for v in vmas], np.uint64),
        vma_end=np.array([v[2] for v in vmas], np.uint64),
        vma_pgoff=z(nv, np.uint64), vma_major=z(nv, np.uint32), vma_minor=z(nv, np.uint32),
        vma_inode=z(nv, np.uint64), vma_name=z(nv, np.int32),
        vma_flags=np.full(nv, 0x73, np.uint64), vma_perms=np.full(nv, 3, np.uint8),
        vma_unread=z(nv, np.uint8),
        vma_smaps=np.array([[v[3].get(k, 0) for k in SMAPS_KEYS] for v in vmas], np.int64),
        run_vma=np.array([r[0] for r in runs], np.int32),
        run_vpn=np.array([r[1] for r in runs], np.uint64),
        run_pfn=np.array([r[2] for r in runs], np.uint64),
        run_len=np.array([r[3] for r in runs], np.uint32),
        run_bits=np.array([r[4] for r in runs], np.uint8),
        folio_head=np.array([f[0] for f in folios], np.uint64),
        folio_order=np.array([f[1] for f in folios], np.int8),
        page_flags=np.array([p[0] for p in pages], np.uint64),
        page_count=np.array([p[1] for p in pages], np.uint32),
        page_cgroup=z(len(pages), np.uint64))


def forked_mthp(path, outside=0):
    """Two processes (a fork) map the same 64K anon folio (order 4): P all
    16 pages, C the first 8; plus a small page of P's own.  `outside`: one
    more mapping of page 15 by a process not captured."""
    head = 0x12340
    flags = [ANON | (1 << KPF_COMPOUND_HEAD) | (1 << KPF_THP)] + \
        [ANON | (1 << KPF_COMPOUND_TAIL) | (1 << KPF_THP)] * 15
    counts = [2] * 8 + [1] * 7 + [1 + outside]
    pages = list(zip(flags, counts)) + [(ANON | (1 << KPF_OWNER_2), 1)]
    base = 0x7f0000000000 >> 12
    write_capture(path, [{'pid': 100, 'comm': 'p'}, {'pid': 101, 'comm': 'c', 'ppid': 100}],
                  [(0, base << 12, (base + 17) << 12, {}), (1, base << 12, (base + 16) << 12, {})],
                  [(0, base, head, 16, 0), (0, base + 16, 0x50000, 1, PB_EXCLUSIVE),
                   (1, base, head, 8, 0)],
                  [(head, 4), (0x50000, 0)], pages)


def test_forked_mthp_imports_to_the_kernel_rules(tmp_path):
    p = str(tmp_path / 'c.npz')
    forked_mthp(p)
    cap = load_capture(p)
    pm = build_kernel(PAGE_MAPCOUNT, cap, with_init=False)
    no = build_kernel(NO_PAGE_MAPCOUNT, cap, with_init=False)
    # semantics.md 7.3: PAGE_MAPCOUNT kpagecount per page, NO_PAGE_MAPCOUNT the
    # folio average ((24 + 8) >> 4 = 2 for every page)
    vma = pm.processes[100].mm.vmas[0]
    pf = vma.pfn[:16]
    assert list(query.kpagecount(pm, pf)) == [2] * 8 + [1] * 8
    vma = no.processes[100].mm.vmas[0]
    assert list(query.kpagecount(no, vma.pfn[:16])) == [2] * 16
    # smaps of P: PAGE: 8 private pages + the small page; NO: the folio is
    # maybe shared (two MMs), only the small page is private
    for k, private in ((pm, 9 * 4), (no, 1 * 4)):
        text = pidfiles.smaps_rollup(k, k.processes[100]).decode()
        priv = sum(int(line.split()[1]) for line in text.splitlines()
                   if line.startswith('Private_'))
        assert priv == private, (k.config.name, text)
    assert not pm.capture.standins


def test_outside_mapper_becomes_a_stand_in(tmp_path):
    p = str(tmp_path / 'c.npz')
    forked_mthp(p, outside=1)
    k = build_kernel(PAGE_MAPCOUNT, load_capture(p), with_init=False)
    assert len(k.capture.standins) == 1 and k.capture.standin_pages == 1
    vma = k.processes[100].mm.vmas[0]
    assert int(query.kpagecount(k, vma.pfn[15:16])[0]) == 2
    assert -1 not in k.processes
    r = mmemu('tools', p)
    assert r.returncode == 0 and 'stand-in' in r.stdout


def test_single_mapper_range(tmp_path):
    """A PTE-mapped 64K anon folio mapped by one MM whose first page is not
    AnonExclusive: the NO_PAGE_MAPCOUNT USS is a range (mmcore/mmid.py rule 4)."""
    p = str(tmp_path / 'c.npz')
    head = 0x12340
    flags = [ANON | (1 << KPF_COMPOUND_HEAD) | (1 << KPF_THP)] + \
        [ANON | (1 << KPF_COMPOUND_TAIL) | (1 << KPF_THP)] * 15
    base = 0x7f0000000000 >> 12
    write_capture(p, [{'pid': 100, 'comm': 'p'}], [(0, base << 12, (base + 16) << 12, {})],
                  [(0, base, head, 16, PB_EXCLUSIVE)], [(head, 4)], [(f, 1) for f in flags])
    r = mmemu('tools', p, '--config', 'configs/kernels/no_page_mapcount.yaml')
    assert r.returncode == 0, r.stderr
    assert '0..64' in r.stdout


@pytest.mark.parametrize('damage, message', [
    (lambda d: d.update(meta=np.frombuffer(b'{"format": "x"}', np.uint8)), 'not an mmemu capture'),
    (lambda d: d.pop('run_pfn'), 'array run_pfn is missing'),
    (lambda d: d.update(run_vpn=d['run_vpn'] + np.uint64(1 << 30)), 'outside its VMA'),
    (lambda d: d.update(folio_order=np.full(len(d['folio_order']), 12, np.int8)), 'orders must be'),
])
def test_bad_capture_is_one_line(tmp_path, damage, message):
    p = str(tmp_path / 'c.npz')
    forked_mthp(p)
    with np.load(p) as z:
        d = {k: z[k] for k in z.files}
    damage(d)
    bad = str(tmp_path / 'bad.npz')
    np.savez_compressed(bad, **d)
    with pytest.raises(CaptureFormatError, match=message):
        load_capture(bad)
    r = mmemu('diff', bad)
    assert r.returncode == 1 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_capture_needs_root():
    d = public_tempdir('mmemu-cap-')
    try:
        r = as_nobody([sys.executable, '-m', 'procfs', 'capture', '--pid', str(os.getpid()),
                       os.path.join(d, 'x.npz')], cwd=PROJECT_ROOT, text=True)
    finally:
        os.rmdir(d) if not os.listdir(d) else None
    assert r.returncode == 1
    assert r.stderr.strip() == ('mmemu: error: capture needs root: PFNs in /proc/PID/pagemap and '
                                '/proc/kpagecount, kpageflags, kpagecgroup are for CAP_SYS_ADMIN only')


def test_capture_of_a_missing_pid():
    r = mmemu('capture', '--pid', '999999999', '/tmp/never.npz')
    if os.geteuid() != 0:
        pytest.skip('the root check comes first')
    assert r.returncode == 1 and r.stderr.strip() == 'mmemu: error: pid 999999999: no such process'


def test_check_and_export_take_a_capture(tmp_path):
    p = str(tmp_path / 'c.npz')
    forked_mthp(p)
    r = mmemu('check', p)
    assert r.returncode == 0 and r.stdout.strip() == 'ok: capture of Linux 6.18-test, 2 processes, 2 folios'
    out = tmp_path / 'tree'
    r = mmemu('export', p, str(out), '--config', 'configs/kernels/page_mapcount.yaml')
    assert r.returncode == 0, r.stderr
    text = (out / 'page_mapcount' / 'proc' / '101' / 'smaps_rollup').read_text()
    # C maps 8 pages each mapped twice (by P too): Rss 32, Pss 16, all shared
    assert 'Rss:                  32 kB' in text and 'Pss:                  16 kB' in text
    assert 'Private_Clean:         0 kB' in text and 'Private_Dirty:         0 kB' in text


def test_explain_and_map_take_a_capture(tmp_path):
    p = str(tmp_path / 'c.npz')
    forked_mthp(p)
    r = mmemu('explain', p, '101', hex(0x7f0000000000), '--config',
              'configs/kernels/page_mapcount.yaml')
    assert r.returncode == 0, r.stderr
    # page 0 of the 64K folio: mapped by P and C (semantics.md 7: precise count 2)
    assert 'kpagecount = 2' in r.stdout
    r = mmemu('map', p, '100', '--config', 'configs/kernels/page_mapcount.yaml')
    assert r.returncode == 0, r.stderr
    assert 'pid 100' in r.stdout


HOLD_PROBE = r'''
import json, re
from procfs.capture import hold_own_file_mappings
def text_vmas():
    out = {}
    for block in re.split(r'\n(?=[0-9a-f]+-[0-9a-f]+ )', open('/proc/self/smaps').read()):
        head = block.split('\n', 1)[0].split()
        if len(head) >= 6 and head[1] == 'r-xp' and head[5].endswith('.so.6') and 'libc' in head[5]:
            out[head[0]] = (int(re.search(r'^Size:\s+(\d+)', block, re.M).group(1)),
                            int(re.search(r'^Rss:\s+(\d+)', block, re.M).group(1)))
    return out
before = text_vmas()
n = hold_own_file_mappings()
print(json.dumps({'populated': n, 'before': before, 'after': text_vmas()}))
'''


@pytest.mark.skipif(not os.path.exists('/proc/self/smaps'), reason='needs a real /proc/self/smaps')
def test_recorder_maps_its_own_libraries_whole():
    """procfs.capture.hold_own_file_mappings: MADV_POPULATE_READ
    (mm/madvise.c madvise_populate) maps every page of the recorder's own
    file VMAs, so that it is one steady mapper while it reads the others:
    libc's text is then resident in full (smaps Rss == Size)."""
    r = subprocess.run([sys.executable, '-c', HOLD_PROBE], capture_output=True, text=True,
                       cwd=PROJECT_ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got['populated'] > 0 and got['after'] and set(got['after']) == set(got['before'])
    assert all(rss == size for size, rss in got['after'].values()), got


def test_skipped_processes_are_named_with_their_reason(tmp_path):
    """procfs.capture.capture records why a pid was skipped; tools says it
    per reason, not as if every skipped process had exited."""
    from procfs.report import capture_notes
    p = str(tmp_path / 'c.npz')
    forked_mthp(p)
    k = build_kernel(PAGE_MAPCOUNT, load_capture(p), with_init=False)
    k.capture.meta['skipped'] = [{'pid': 1, 'reason': 'not readable: Permission denied'},
                                 {'pid': 7, 'reason': 'exited during the capture'},
                                 {'pid': 8, 'reason': 'exited during the capture'}]
    assert capture_notes(k)[0].endswith(': 2 processes, 2 skipped (exited during the capture), '
                                        '1 skipped (not readable: Permission denied)')

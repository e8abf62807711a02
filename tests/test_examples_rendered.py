"""The worked examples of semantics.md section 13, checked on the rendered
files as a user reads them.

Each example is written as a scenario with snapshot labels, replayed and
exported (procfs.build.build_tree + procfs.export.export) with both 64-bit
kernel configs, and the assertions read only the exported bytes:

- /proc/PID/maps to find the range (`[anon:NAME]` or the file's path);
- /proc/PID/smaps (summed over the range's VMAs) and smaps_rollup;
- /proc/PID/pagemap per virtual page: bit 63 present, 61 file/shared,
  56 exclusive, bits 0-54 the PFN;
- /proc/kpagecount and /proc/kpageflags at those PFNs;
- /proc/PID/numa_maps mapmax;
- /proc/meminfo, /proc/vmstat and memory.stat as deltas against an earlier
  snapshot of the same scenario (the replay is deterministic, so a PFN or
  an address seen in one snapshot is the same frame in another);
- reuse versus copy by PFN identity across two snapshots.

Expected values are the tables of section 13 (the example and its [real]
or [derived] tag are cited); where a table is silent the value is derived
from sections 7-8, as said in the comment.  Processes: P = 100,
C / C1 / Q = 101, C2 = 102.  tests/test_examples.py checks the same
examples on the mm core.
"""
import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from procfs.build import build_tree
from procfs.export import export

KERNELS = Path(__file__).resolve().parents[1] / 'configs' / 'kernels'
CONFIGS_64 = ('page_mapcount', 'no_page_mapcount')
CONFIGS_32 = ('page_mapcount-32bit', 'no_page_mapcount-32bit')

P, C, C1, Q, C2 = 100, 101, 101, 101, 102
PAGE = 4096
PFN_MASK = (1 << 55) - 1
PM_EXCLUSIVE, PM_FILE, PM_PRESENT = 56, 61, 63
KPF_MMAP, KPF_HEAD, KPF_THP = 11, 15, 22
BUDDY_TYPE_PLUS_1 = 0xfffffffff0000001      # semantics.md 12.4

MTHP_64K = {'enabled': 'never', 'sizes': {'64K': 'always'}}
THP_PMD = {'enabled': 'always'}
FILE_64K = [{'name': 'data', 'size': '64K', 'folio_size': '64K'}]
MEMORY = '256M'             # small enough for kpageflags to export quickly


@pytest.fixture(params=CONFIGS_64)
def cfg(request):
    return request.param


def pick(cfg, page, no):
    """The PAGE column or the NO column of an example's table."""
    return no if cfg.startswith('no_') else page


# --- scenarios --------------------------------------------------------------------------

def scenario(steps, thp=MTHP_64K, pids=(P,), files=None):
    doc = {'format': 1, 'name': 'example', 'kernel': {'memory': MEMORY, 'thp': thp},
           'processes': [{'pid': p} for p in pids], 'steps': steps}
    if files:
        doc['files'] = files
    return yaml.safe_dump(doc, sort_keys=False)


from scenario_steps import mmap, range_op, write, read, munmap, pin, fork, exit_, snap  # noqa: E402,F401


# --- the exported tree, read as a user would --------------------------------------------

def _kb(line):
    return int(line.split()[1])


class Rendered:
    """One config's exported subtree (DIR/CONFIG)."""

    def __init__(self, root):
        self.root = Path(root)

    def text(self, rel):
        return (self.root / rel).read_text()

    def has_pid(self, pid):
        return (self.root / 'proc' / str(pid)).is_dir()

    # maps / smaps
    def vmas(self, pid, label):
        """(start, end) of every VMA of /proc/PID/maps whose name is `label`
        (`[anon:NAME]`, `[anon_shmem:NAME]` or a file path)."""
        out = []
        for line in self.text('proc/%d/maps' % pid).splitlines():
            f = line.split(None, 5)
            if len(f) == 6 and f[5] == label:
                lo, hi = f[0].split('-')
                out.append((int(lo, 16), int(hi, 16)))
        return out

    def smaps_blocks(self, pid):
        """[(start, end, name, {field: kB})] of /proc/PID/smaps."""
        blocks = []
        for line in self.text('proc/%d/smaps' % pid).splitlines():
            m = re.match(r'^([0-9a-f]+)-([0-9a-f]+) ', line)
            if m:
                f = line.split(None, 5)
                blocks.append((int(m[1], 16), int(m[2], 16), f[5] if len(f) == 6 else '', {}))
            elif line.endswith(' kB'):
                blocks[-1][3][line.split(':')[0]] = _kb(line)
        return blocks

    def smaps(self, pid, label):
        """The smaps fields of the range summed over its VMAs."""
        total = {}
        found = False
        for _, _, name, fields in self.smaps_blocks(pid):
            if name == label:
                found = True
                for key, val in fields.items():
                    total[key] = total.get(key, 0) + val
        assert found, 'pid %d: no %s in smaps' % (pid, label)
        return total

    def smaps_of(self, pid, start):
        for lo, _, _, fields in self.smaps_blocks(pid):
            if lo == start:
                return fields
        raise AssertionError('pid %d: no smaps block at %x' % (pid, start))

    def rollup(self, pid):
        lines = self.text('proc/%d/smaps_rollup' % pid).splitlines()
        assert lines[0].endswith('[rollup]'), lines[0]
        return {ln.split(':')[0]: _kb(ln) for ln in lines[1:]}

    def numa_maps(self, pid, start):
        """The numa_maps line of the VMA starting at `start`, as tokens."""
        for line in self.text('proc/%d/numa_maps' % pid).splitlines():
            f = line.split()
            if int(f[0], 16) == start:
                return f
        raise AssertionError('pid %d: no numa_maps line at %x' % (pid, start))

    def mapmax(self, pid, start):
        """mapmax= of a numa_maps line, None when it is not printed."""
        for tok in self.numa_maps(pid, start)[2:]:
            if tok.startswith('mapmax='):
                return int(tok[7:])
        return None

    # binary files
    def _u64s(self, rel, first, n):
        with open(self.root / rel, 'rb') as f:
            data = os.pread(f.fileno(), 8 * n, 8 * first)
        data += bytes(8 * n - len(data))           # a hole past the end reads as 0
        return np.frombuffer(data, '<u8').astype(np.uint64)

    def pagemap(self, pid, start, nr_pages):
        return PagemapRange(self._u64s('proc/%d/pagemap' % pid, start // PAGE, nr_pages))

    def kpagecount(self, pfns):
        return [int(self._u64s('proc/kpagecount', int(p), 1)[0]) for p in pfns]

    def kpageflags(self, pfns):
        return [int(self._u64s('proc/kpageflags', int(p), 1)[0]) for p in pfns]

    # counters
    def _kv(self, rel, sep=None):
        out = {}
        for line in self.text(rel).splitlines():
            f = line.replace(':', ' ').split() if sep == ':' else line.split()
            out[f[0]] = int(f[1])
        return out

    def meminfo(self):
        return self._kv('proc/meminfo', ':')

    def vmstat(self):
        return self._kv('proc/vmstat')

    def memcg_v2(self):
        return self._kv('sys/fs/cgroup/unified/memory.stat')

    def memcg_v1(self):
        return self._kv('sys/fs/cgroup/memory/memory.stat')


class PagemapRange:
    """pagemap entries of consecutive virtual pages."""

    def __init__(self, entries):
        self.entries = entries

    def bit(self, n):
        return ((self.entries >> np.uint64(n)) & np.uint64(1)).astype(bool)

    @property
    def present(self):
        return self.bit(PM_PRESENT)

    @property
    def pfn(self):
        return (self.entries & np.uint64(PFN_MASK)).astype(np.int64)

    @property
    def b56(self):
        return bits(self.bit(PM_EXCLUSIVE))

    @property
    def b61(self):
        return bits(self.bit(PM_FILE))


def bits(a):
    return ''.join('1' if x else '0' for x in a)


def range_of(view, pid, label):
    """(start, nr_pages) from the first VMA named `label` to the end of the
    last one in /proc/PID/maps."""
    vmas = view.vmas(pid, label)
    assert vmas, 'pid %d has no %s in maps' % (pid, label)
    start = min(lo for lo, _ in vmas)
    return start, (max(hi for _, hi in vmas) - start) // PAGE


def pages(view, pid, label):
    start, n = range_of(view, pid, label)
    pm = view.pagemap(pid, start, n)
    assert pm.present.all(), 'pid %d %s: pages not present: %s' % (pid, label, bits(pm.present))
    return pm


def sub(d, *keys):
    return {k: d[k] for k in keys}


def delta(after, before, *keys):
    return {k: after[k] - before[k] for k in keys}


@pytest.fixture(scope='module')
def render():
    """render(steps, label, configs=CONFIGS_64, **scenario_kw) -> {config:
    Rendered}: the scenario replayed up to snapshot `label` and exported
    with the configs; cached per (scenario, label, configs)."""
    workdir = tempfile.mkdtemp(prefix='mmemu-examples-')
    cache = {}

    def get(steps, label, configs=CONFIGS_64, **kw):
        text = scenario(steps, **kw)
        key = hashlib.sha1(('%s\0%s\0%s' % (text, label, configs)).encode()).hexdigest()[:16]
        if key not in cache:
            path = os.path.join(workdir, key + '.yaml')
            with open(path, 'w') as f:
                f.write(text)
            root, _ = build_tree(path, [str(KERNELS / (c + '.yaml')) for c in configs],
                                 stop_at=label, with_init=True)
            out = os.path.join(workdir, key)
            export(root, out)
            cache[key] = {c: Rendered(os.path.join(out, c)) for c in configs}
        return cache[key]

    yield get
    shutil.rmtree(workdir, ignore_errors=True)


ANON_BUF = '[anon:buf]'
SMAPS_KEYS = ('Rss', 'Pss', 'Shared_Dirty', 'Private_Dirty')


def smaps_want(rss, pss, sd, pd):
    return {'Rss': rss, 'Pss': pss, 'Shared_Dirty': sd, 'Private_Dirty': pd}


def check_smaps(view, pid, want, label=ANON_BUF, rollup=True):
    """The range's smaps (and, when the range is the process's only
    mapping, smaps_rollup: one accumulator over the same pages, 8.5)."""
    assert sub(view.smaps(pid, label), *want) == want, 'smaps of %d' % pid
    if rollup:
        assert sub(view.rollup(pid), *want) == want, 'smaps_rollup of %d' % pid


def folio_pfns(view, pfn, nr):
    """The nr PFNs of the naturally aligned folio holding `pfn`, after
    checking kpageflags shows its head and tails."""
    head = pfn & ~(nr - 1)
    flags = view.kpageflags(range(head, head + nr))
    assert flags[0] >> KPF_HEAD & 1 and flags[0] >> KPF_THP & 1, hex(flags[0])
    return list(range(head, head + nr))


# --- S1 - S4: 64K mTHP, fork, CoW ---------------------------------------------------------

S1_S4 = [mmap(P, 'buf', '64K', align='64K'), snap('before'), write(P, 'buf'), snap('s1'),
         fork(P, C), snap('s2'), write(C, 'buf', 0, '4K'), snap('s3'),
         exit_(C), snap('s4-exited'), write(P, 'buf', '20K', '4K'), snap('s4')]


def test_s1_single_process(render, cfg):
    v = render(S1_S4, 's1')[cfg]
    pm = pages(v, P, ANON_BUF)
    pfns = folio_pfns(v, int(pm.pfn[0]), 16)
    assert list(pm.pfn) == pfns                                  # one 16-page folio
    assert v.kpagecount(pfns) == [1] * 16                        # S1 [real] / (16+8)>>4
    assert pm.b56 == '1' * 16 and pm.b61 == '0' * 16             # S1 [real] / S = 0
    check_smaps(v, P, smaps_want(64, 64, 0, 64))                 # S1 [real], NO same
    start, _ = range_of(v, P, ANON_BUF)
    assert v.numa_maps(P, start)[1:6] == \
        ['default', 'anon=16', 'dirty=16', 'active=0', 'N0=16']  # S1 [real], no mapmax
    assert v.mapmax(P, start) is None
    before = render(S1_S4, 'before')[cfg]
    assert delta(v.meminfo(), before.meminfo(), 'AnonPages') == {'AnonPages': 64}  # S1


def test_s2_fork(render, cfg):
    v = render(S1_S4, 's2')[cfg]
    pp, pc = pages(v, P, ANON_BUF), pages(v, C, ANON_BUF)
    assert (pp.pfn == pc.pfn).all()                              # shared, nothing copied
    assert v.kpagecount(pp.pfn) == [2] * 16                      # S2 [real] / (32+8)>>4
    assert pp.b56 == pc.b56 == '0' * 16                          # S2 [real] / S = 1
    for pid, referenced in ((P, 64), (C, 0)):                    # S2 [real], NO same
        check_smaps(v, pid, dict(smaps_want(64, 32, 64, 0), Referenced=referenced))
        assert v.mapmax(pid, range_of(v, pid, ANON_BUF)[0]) == 2  # S2 [real] / average 2
    s1 = render(S1_S4, 's1')[cfg]
    assert delta(v.meminfo(), s1.meminfo(), 'AnonPages') == {'AnonPages': 0}   # S2


def test_s3_child_writes_page_0(render, cfg):
    v = render(S1_S4, 's3')[cfg]
    s2 = render(S1_S4, 's2')[cfg]
    pp, pc = pages(v, P, ANON_BUF), pages(v, C, ANON_BUF)
    old = pages(s2, P, ANON_BUF).pfn
    assert (pp.pfn == old).all()
    assert pc.pfn[0] != old[0] and (pc.pfn[1:] == old[1:]).all()     # CoW copy of page 0
    # S3 [real] / (31+8)>>4 = 2
    assert v.kpagecount(old) == pick(cfg, [1] + [2] * 15, [2] * 16)
    assert v.kpagecount([pc.pfn[0]]) == [1]                           # S3 [real]
    assert v.kpageflags([pc.pfn[0]])[0] >> KPF_HEAD & 1 == 0          # a small folio
    assert pp.b56 == pick(cfg, '1' + '0' * 15, '0' * 16)               # S3 [real] / derived
    assert pc.b56 == '1' + '0' * 15                                   # S3 [real], NO same
    check_smaps(v, P, pick(cfg, smaps_want(64, 34, 60, 4), smaps_want(64, 32, 64, 0)))
    check_smaps(v, C, smaps_want(64, 34, 60, 4))                      # S3 [real], NO same
    for pid in (P, C):
        assert v.mapmax(pid, range_of(v, pid, ANON_BUF)[0]) == 2     # S3 [real]
    # total PSS: 68 = truth (PAGE), 66 (NO under-estimate)
    assert v.rollup(P)['Pss'] + v.rollup(C)['Pss'] == pick(cfg, 68, 66)
    assert delta(v.meminfo(), s2.meminfo(), 'AnonPages') == {'AnonPages': 4}   # S3


def test_s4_child_exits_parent_write_reuses(render, cfg):
    v = render(S1_S4, 's4-exited')[cfg]
    assert not v.has_pid(C)
    pm = pages(v, P, ANON_BUF)
    s1 = pages(render(S1_S4, 's1')[cfg], P, ANON_BUF)
    assert (pm.pfn == s1.pfn).all()
    assert v.kpagecount(pm.pfn) == [1] * 16                      # S4 [real], NO same
    assert pm.b56 == '1' * 16                                    # S4 [real], NO same
    check_smaps(v, P, {'Rss': 64, 'Pss': 64, 'Private_Dirty': 64})   # S4 [real]
    # C's exit frees its CoW page (derived: 7.4, a small folio's last unmap)
    s3 = render(S1_S4, 's3')[cfg]
    assert delta(v.meminfo(), s3.meminfo(), 'AnonPages') == {'AnonPages': -4}

    w = render(S1_S4, 's4')[cfg]
    pw = pages(w, P, ANON_BUF)
    assert (pw.pfn == pm.pfn).all()                              # S4 [real]: reuse, same PFN
    assert pw.b56 == '1' * 16
    # a reuse allocates nothing (6.3)
    assert delta(w.meminfo(), v.meminfo(), 'AnonPages') == {'AnonPages': 0}


# --- S5 - S7: three MMs ---------------------------------------------------------------------

S5 = [mmap(P, 'buf', '64K', align='64K'), write(P, 'buf'), fork(P, C1), fork(P, C2),
      snap('s5')]


def test_s5_three_mms(render, cfg):
    v = render(S5, 's5')[cfg]
    pfn = pages(v, P, ANON_BUF).pfn
    assert v.kpagecount(pfn) == [3] * 16                         # S5 [real] / (48+8)>>4
    for pid in (P, C1, C2):
        pm = pages(v, pid, ANON_BUF)
        assert (pm.pfn == pfn).all()
        assert pm.b56 == '0' * 16                                # S5
        # S5 [derived]: 16 x 5592405 -> 89478480 -> 21 kB
        check_smaps(v, pid, {'Rss': 64, 'Pss': 21, 'Shared_Dirty': 64})
        assert v.mapmax(pid, range_of(v, pid, ANON_BUF)[0]) == 3


@pytest.mark.parametrize('exits', [(C1, C2), (C2, C1)], ids=['C1-first', 'C2-first'])
def test_s5b_children_exit_owner_exclusive(render, cfg, exits):
    """S5b [derived]: the last exit finds c_0 == LM and clears S; P is
    exclusive again and its writes reuse the folio."""
    steps = S5 + [exit_(exits[0]), exit_(exits[1]), snap('s5b'), write(P, 'buf'), snap('w')]
    v = render(steps, 's5b')[cfg]
    pm = pages(v, P, ANON_BUF)
    assert v.kpagecount(pm.pfn) == [1] * 16 and pm.b56 == '1' * 16
    check_smaps(v, P, {'Pss': 64, 'Private_Dirty': 64, 'Shared_Dirty': 0})
    w = render(steps, 'w')[cfg]
    assert (pages(w, P, ANON_BUF).pfn == pm.pfn).all()                 # reuse
    assert delta(w.meminfo(), v.meminfo(), 'AnonPages') == {'AnonPages': 0}


S6 = S5 + [munmap(P, 'buf'), exit_(C1), snap('s6'),
           write(C2, 'buf', '12K', '4K'), snap('s6-w3'),
           write(C2, 'buf', '16K', '4K'), snap('s6-w4')]


def test_s6_survivor_untracked(render, cfg):
    """S6: only C2 maps the folio, untracked, S still set."""
    v = render(S6, 's6')[cfg]
    assert not v.has_pid(C1) and not v.vmas(P, ANON_BUF)
    pm = pages(v, C2, ANON_BUF)
    old = pm.pfn
    assert v.kpagecount(old) == [1] * 16                         # S6 [real], NO same
    assert pm.b56 == pick(cfg, '1' * 16, '0' * 16)               # S6 [real] / derived
    check_smaps(v, C2, pick(cfg, smaps_want(64, 64, 0, 64), smaps_want(64, 64, 64, 0)))

    w3 = render(S6, 's6-w3')[cfg]
    p3 = pages(w3, C2, ANON_BUF)
    assert p3.pfn[3] != old[3]                                   # S6 [real]: copy
    assert (np.delete(p3.pfn, 3) == np.delete(old, 3)).all()

    w4 = render(S6, 's6-w4')[cfg]
    p4 = pages(w4, C2, ANON_BUF)
    assert p4.pfn[4] != old[4] and p4.pfn[3] == p3.pfn[3]        # S6 [real]: copy
    assert list(np.flatnonzero(p4.pfn != old)) == [3, 4]
    # old folio: LM 14; PAGE pages 3 and 4 -> 0, NO (14+8)>>4 = 1 (S6)
    assert w4.kpagecount(old) == pick(cfg, [1, 1, 1, 0, 0] + [1] * 11, [1] * 16)
    # the two copies are small folios mapped once: kpc 1, exclusive (derived: 8.1, 8.3)
    assert w4.kpagecount(p4.pfn[3:5]) == [1, 1]
    assert p4.b56 == pick(cfg, '1' * 16, '000' + '11' + '0' * 11)
    check_smaps(w4, C2, pick(cfg, smaps_want(64, 64, 0, 64), smaps_want(64, 64, 56, 8)))
    # AnonPages: PAGE +0 net (two pages left the old folio, two new pages),
    # NO +8 (old folio still fully counted)  (S6)
    assert delta(w4.meminfo(), v.meminfo(), 'AnonPages') == {'AnonPages': pick(cfg, 0, 8)}


S7 = S5 + [munmap(P, 'buf'), exit_(C1), snap('s7-base'),
           munmap(C2, 'buf', 0, '28K'), munmap(C2, 'buf', '32K', '32K'), snap('s7'),
           write(C2, 'buf', '28K', '4K'), snap('s7-written')]


def test_s7_single_mapping_exception(render, cfg):
    base = render(S7, 's7-base')[cfg]
    start, _ = range_of(base, C2, ANON_BUF)
    old = pages(base, C2, ANON_BUF).pfn
    v = render(S7, 's7')[cfg]
    assert v.vmas(C2, ANON_BUF) == [(start + 7 * PAGE, start + 8 * PAGE)]
    pm = v.pagemap(C2, start, 16)
    assert bits(pm.present) == '0' * 7 + '1' + '0' * 8 and pm.pfn[7] == old[7]
    kpc = v.kpagecount(old)
    assert kpc[7] == 1                                           # S7 [real] / clamped to 1
    assert kpc[:7] + kpc[8:] == pick(cfg, [0] * 15, [1] * 15)    # S7
    assert pm.b56[7] == '1'                                      # S7 [real] / LM <= 1
    check_smaps(v, C2, {'Rss': 4, 'Pss': 4, 'Private_Dirty': 4})  # S7 [real], NO same
    # S7: 4 kB from this folio (PAGE), 64 kB until it is split (NO)
    assert delta(v.meminfo(), base.meminfo(), 'AnonPages') == {'AnonPages': pick(cfg, -60, 0)}

    w = render(S7, 's7-written')[cfg]
    pw = w.pagemap(C2, start + 7 * PAGE, 1)
    assert pw.present.all() and pw.pfn[0] != old[7]             # S7 [real]: copy
    assert pw.b56 == '1' and w.kpagecount(pw.pfn) == [1]
    # the old folio's last unmap takes it out of AnonPages in both configs,
    # the copy adds 4 kB (derived: 7.4)
    assert delta(w.meminfo(), v.meminfo(), 'AnonPages') == {'AnonPages': pick(cfg, 0, -60)}
    # the old folio is freed: no PFN is mapped any more; a free page reads 0,
    # except, with NO, the first page of a free buddy block, which reads its
    # page type + 1 sign-extended (12.4, the kernel formula kept literally)
    assert not any(f >> KPF_MMAP & 1 for f in w.kpageflags(old))
    assert set(w.kpagecount(old)) <= pick(cfg, {0}, {0, BUDDY_TYPE_PLUS_1})


# --- S8 - S12: PMD THP ----------------------------------------------------------------------

def s8_s10(page):
    return [mmap(P, 'buf', '2M', align='2M'), snap('before'), write(P, 'buf'), snap('s8'),
            fork(P, C), snap('s9'), write(P, 'buf', page * PAGE, PAGE), snap('s10')]


def test_s8_pmd_thp(render, cfg):
    steps = s8_s10(0)
    v = render(steps, 's8', thp=THP_PMD)[cfg]
    pm = pages(v, P, ANON_BUF)
    assert list(pm.pfn) == folio_pfns(v, int(pm.pfn[0]), 512)
    assert v.kpagecount(pm.pfn) == [1] * 512                     # S8 [real] / E = 1
    assert pm.b56 == '1' * 512                                   # S8 [real]
    check_smaps(v, P, {'Rss': 2048, 'Pss': 2048, 'Private_Dirty': 2048,
                       'AnonHugePages': 2048})                    # S8 [real], NO same
    # numa_maps: one PMD leaf mapped once: no mapmax (derived: 8.6)
    assert v.mapmax(P, range_of(v, P, ANON_BUF)[0]) is None
    before = render(steps, 'before', thp=THP_PMD)[cfg]
    assert delta(v.meminfo(), before.meminfo(), 'AnonPages', 'AnonHugePages') == \
        {'AnonPages': 2048, 'AnonHugePages': 2048}               # S8


def test_s9_pmd_fork(render, cfg):
    v = render(s8_s10(0), 's9', thp=THP_PMD)[cfg]
    pp, pc = pages(v, P, ANON_BUF), pages(v, C, ANON_BUF)
    assert (pp.pfn == pc.pfn).all()
    assert v.kpagecount(pp.pfn) == [2] * 512                     # S9 [real] / E = 2
    for pid, pm, referenced in ((P, pp, 2048), (C, pc, 0)):
        assert pm.b56 == '0' * 512                               # S9 [real]
        check_smaps(v, pid, {'Rss': 2048, 'Pss': 1024, 'Shared_Dirty': 2048,
                             'AnonHugePages': 2048, 'Referenced': referenced})  # S9 [real]
        assert v.mapmax(pid, range_of(v, pid, ANON_BUF)[0]) == 2   # S9 [real]


@pytest.mark.parametrize('page', [0, 7])
def test_s10_parent_writes_pmd_split(render, cfg, page):
    steps = s8_s10(page)
    s9 = render(steps, 's9', thp=THP_PMD)[cfg]
    v = render(steps, 's10', thp=THP_PMD)[cfg]
    old = pages(s9, P, ANON_BUF).pfn
    pp, pc = pages(v, P, ANON_BUF), pages(v, C, ANON_BUF)
    assert (pc.pfn == old).all()
    assert pp.pfn[page] != old[page]                             # page k copied
    assert (np.delete(pp.pfn, page) == np.delete(old, page)).all()
    assert delta(v.vmstat(), s9.vmstat(), 'thp_split_pmd') == {'thp_split_pmd': 1}  # [real]
    # S10: AnonHugePages unchanged (C's PMD), AnonPages +4 (the new page)
    assert delta(v.meminfo(), s9.meminfo(), 'AnonPages', 'AnonHugePages') == \
        {'AnonPages': 4, 'AnonHugePages': 0}
    kpc = v.kpagecount(old)
    assert kpc[page] == pick(cfg, 1, 2)                          # S10 [real] / avg 1 + E
    assert kpc[:page] + kpc[page + 1:] == [2] * 511
    assert pp.b56 == '0' * page + '1' + '0' * (511 - page)       # S10 [real], NO same
    # C's PMD leaf: the first-page quirk (8.3) [real]; NO per folio
    assert pc.b56 == pick(cfg, ('1' if page == 0 else '0') * 512, '0' * 512)
    keys = ('Rss', 'Pss', 'Shared_Dirty', 'Private_Dirty', 'AnonHugePages')
    check_smaps(v, P, {'Rss': 2048, 'Pss': 1026, 'Shared_Dirty': 2044, 'Private_Dirty': 4,
                       'AnonHugePages': 0})                       # S10 [real], NO same
    assert sub(v.smaps(C, ANON_BUF), *keys) == pick(
        cfg, {'Rss': 2048, 'Pss': 1026, 'Shared_Dirty': 2044, 'Private_Dirty': 4,
              'AnonHugePages': 2048},                              # S10 [real]
        {'Rss': 2048, 'Pss': 1024, 'Shared_Dirty': 2048, 'Private_Dirty': 0,
         'AnonHugePages': 2048})
    assert v.mapmax(C, range_of(v, C, ANON_BUF)[0]) == \
        pick(cfg, None if page == 0 else 2, 2)                   # S10 [real]
    assert v.mapmax(P, range_of(v, P, ANON_BUF)[0]) == 2         # S10 [real]
    assert v.rollup(P)['Pss'] + v.rollup(C)['Pss'] == pick(cfg, 2052, 2050)   # total PSS


def test_s11_munmap_upper_half(render, cfg):
    steps = [mmap(P, 'buf', '64K', align='64K'), write(P, 'buf'), snap('s1'),
             munmap(P, 'buf', '32K', '32K'), snap('s11')]
    s1 = render(steps, 's1')[cfg]
    v = render(steps, 's11')[cfg]
    old = pages(s1, P, ANON_BUF).pfn
    pm = pages(v, P, ANON_BUF)
    assert len(pm.pfn) == 8 and (pm.pfn == old[:8]).all()
    assert v.kpagecount(old) == pick(cfg, [1] * 8 + [0] * 8, [1] * 16)   # S11 / (8+8)>>4
    assert all(f >> KPF_MMAP & 1 for f in v.kpageflags(old[8:]))  # S11: MMAP still set
    assert pm.b56 == '1' * 8                                      # S11
    check_smaps(v, P, {'Rss': 32, 'Pss': 32, 'Private_Dirty': 32})   # S11
    # S11: AnonPages / memcg anon, rss: +32 kB (PAGE), +64 until the split (NO)
    assert delta(v.meminfo(), s1.meminfo(), 'AnonPages') == {'AnonPages': pick(cfg, -32, 0)}
    assert delta(v.memcg_v2(), s1.memcg_v2(), 'anon') == {'anon': pick(cfg, -32, 0) << 10}
    assert delta(v.memcg_v1(), s1.memcg_v1(), 'rss') == {'rss': pick(cfg, -32, 0) << 10}


S12 = [mmap(P, 'buf', '2M', align='2M'), snap('before'), write(P, 'buf'), fork(P, C),
       snap('s9'), munmap(P, 'buf', '1M', '1M'), snap('p-unmapped'),
       munmap(C, 'buf', '1M', '1M'), snap('both-unmapped'), exit_(C), snap('c-exited')]


def test_s12_both_unmap_upper_half(render, cfg):
    s9 = render(S12, 's9', thp=THP_PMD)[cfg]
    old = pages(s9, P, ANON_BUF).pfn
    pu = render(S12, 'p-unmapped', thp=THP_PMD)[cfg]
    v = render(S12, 'both-unmapped', thp=THP_PMD)[cfg]
    # S12: deferred split queued at C's munmap [real] / not detected (512 !< 512)
    assert delta(v.vmstat(), pu.vmstat(), 'thp_deferred_split_page') == \
        {'thp_deferred_split_page': pick(cfg, 1, 0)}
    # S12: AnonHugePages -2048 when C's PMD is split; AnonPages -1024 / unchanged
    assert delta(v.meminfo(), pu.meminfo(), 'AnonHugePages', 'AnonPages') == \
        {'AnonHugePages': -2048, 'AnonPages': pick(cfg, -1024, 0)}
    assert v.kpagecount(old) == pick(cfg, [2] * 256 + [0] * 256, [1] * 512)   # [real]
    for pid in (P, C):
        pm = pages(v, pid, ANON_BUF)
        assert (pm.pfn == old[:256]).all() and pm.b56 == '0' * 256
        check_smaps(v, pid, {'Rss': 1024, 'Pss': pick(cfg, 512, 1024),
                             'Shared_Dirty': 1024})               # S12 [real] / derived
    assert v.mapmax(P, range_of(v, P, ANON_BUF)[0]) == pick(cfg, 2, None)   # [real] / avg 1
    assert v.rollup(P)['Pss'] + v.rollup(C)['Pss'] == pick(cfg, 1024, 2048)  # total PSS

    e = render(S12, 'c-exited', thp=THP_PMD)[cfg]
    # S12 continued: PAGE no new event [real]; NO queued now (256 < 512)
    assert delta(e.vmstat(), v.vmstat(), 'thp_deferred_split_page') == \
        {'thp_deferred_split_page': pick(cfg, 0, 1)}
    assert e.kpagecount(old) == pick(cfg, [1] * 256 + [0] * 256, [1] * 512)   # [real]
    assert pages(e, P, ANON_BUF).b56 == '1' * 256                 # [real]
    check_smaps(e, P, {'Rss': 1024, 'Pss': 1024, 'Private_Dirty': 1024})     # [real]
    # AnonPages: 1024 from this folio (PAGE), 2048 until split (NO)
    before = render(S12, 'before', thp=THP_PMD)[cfg]
    assert delta(e.meminfo(), before.meminfo(), 'AnonPages', 'AnonHugePages') == \
        {'AnonPages': pick(cfg, 1024, 2048), 'AnonHugePages': 0}


# --- S13 - S15: shared and file folios -----------------------------------------------------

def test_s13_shared_folio_child_maps_one_page(render, cfg):
    """S13 on a 64K tmpfs file folio mapped MAP_SHARED: the emulator gives
    MAP_SHARED|MAP_ANONYMOUS objects only PMD-sized large folios (per-size
    shmem knobs stay never), and a tmpfs file is the same shmem code."""
    steps = [mmap(P, 'buf', '64K', kind='shared-file', file='data', align='64K'),
             snap('before'), write(P, 'buf'), fork(P, C), munmap(C, 'buf', '4K', '60K'),
             read(C, 'buf', 0, '4K'), snap('s13')]
    v = render(steps, 's13', files=FILE_64K)[cfg]
    pp, pc = pages(v, P, '/data'), pages(v, C, '/data')
    assert len(pc.pfn) == 1 and pc.pfn[0] == pp.pfn[0]
    assert list(pp.pfn) == folio_pfns(v, int(pp.pfn[0]), 16)
    assert v.kpagecount(pp.pfn) == pick(cfg, [2] + [1] * 15, [1] * 16)   # [real] / (17+8)>>4
    assert pp.b56 == pick(cfg, '0' + '1' * 15, '0' * 16)         # S13 [real] / S = 1
    assert pc.b56 == '0'                                         # S13 [real]
    assert pp.b61 == '1' * 16 and pc.b61 == '1'                  # S13 [real]
    check_smaps(v, P, pick(cfg, smaps_want(64, 62, 4, 60), smaps_want(64, 64, 64, 0)),
                label='/data')                                   # S13 [real] / derived
    check_smaps(v, C, {'Rss': 4, 'Pss': pick(cfg, 2, 4), 'Shared_Dirty': 4},
                label='/data')                                   # S13 [real] / derived
    for pid in (P, C):
        assert v.mapmax(pid, range_of(v, pid, '/data')[0]) == pick(cfg, 2, None)   # S13
    assert v.rollup(P)['Pss_Shmem'] == pick(cfg, 62, 64)         # S13
    assert v.rollup(P)['Pss'] + v.rollup(C)['Pss'] == pick(cfg, 64, 68)   # total PSS
    before = render(steps, 'before', files=FILE_64K)[cfg]
    assert delta(v.meminfo(), before.meminfo(), 'Mapped', 'Shmem') == \
        {'Mapped': 64, 'Shmem': 64}                              # S13


def test_s14_file_folio_mapped_twice_by_one_process(render, cfg):
    """S14 [derived]: the two VMAs map the same file range; both have the
    same expected values, so each /data VMA is checked on its own."""
    steps = [mmap(P, 'a', '64K', kind='shared-file', file='data', prot='r', align='64K'),
             mmap(P, 'b', '64K', kind='shared-file', file='data', prot='r', align='64K'),
             snap('before'), read(P, 'a'), read(P, 'b'), snap('s14')]
    v = render(steps, 's14', files=FILE_64K)[cfg]
    vmas = v.vmas(P, '/data')
    assert len(vmas) == 2
    pms = [v.pagemap(P, lo, (hi - lo) // PAGE) for lo, hi in vmas]
    assert all(pm.present.all() for pm in pms) and (pms[0].pfn == pms[1].pfn).all()
    assert list(pms[0].pfn) == folio_pfns(v, int(pms[0].pfn[0]), 16)
    assert v.kpagecount(pms[0].pfn) == [2] * 16                  # S14
    for (lo, _), pm in zip(vmas, pms):
        assert pm.b56 == pick(cfg, '0' * 16, '1' * 16)           # S14: precise 2 / one MM
        sm = v.smaps_of(P, lo)
        assert sub(sm, 'Rss', 'Pss') == {'Rss': 64, 'Pss': 32}
        # S14: Shared_Clean 64 (PAGE), Private_Clean 64 (NO)
        assert sub(sm, 'Shared_Clean', 'Private_Clean', 'Shared_Dirty', 'Private_Dirty') == \
            pick(cfg, {'Shared_Clean': 64, 'Private_Clean': 0, 'Shared_Dirty': 0,
                       'Private_Dirty': 0},
                 {'Shared_Clean': 0, 'Private_Clean': 64, 'Shared_Dirty': 0,
                  'Private_Dirty': 0})
        line = v.numa_maps(P, lo)
        assert 'mapped=16' in line and v.mapmax(P, lo) == 2      # S14, same (average 2)
    # rollup: one accumulator over both VMAs (8.5)
    assert sub(v.rollup(P), 'Rss', 'Pss') == {'Rss': 128, 'Pss': 64}
    before = render(steps, 'before', files=FILE_64K)[cfg]
    assert delta(v.meminfo(), before.meminfo(), 'Mapped') == {'Mapped': 64}   # S14


S15 = [mmap(P, 'a', '4K', kind='shared-file', file='data'),
       mmap(Q, 'b', '4K', kind='shared-file', file='data', file_offset='4K'),
       snap('before'), read(P, 'a'), read(Q, 'b'), snap('s15'), munmap(Q, 'b'),
       snap('q-unmapped')]


def test_s15_two_processes_different_pages(render, cfg):
    kw = dict(pids=(P, Q), files=FILE_64K)
    v = render(S15, 's15', **kw)[cfg]
    pp, pq = pages(v, P, '/data'), pages(v, Q, '/data')
    pfns = folio_pfns(v, int(pp.pfn[0]), 16)
    assert pfns[0] == pp.pfn[0] and pfns[1] == pq.pfn[0]
    # S15 [derived]: PAGE 1, 1, then 0; NO (2+8)>>4 = 0 -> at least 1
    assert v.kpagecount(pfns) == pick(cfg, [1, 1] + [0] * 14, [1] * 16)
    assert pp.b56 == pq.b56 == pick(cfg, '1', '0')               # S15
    sm = v.smaps(P, '/data')                                     # S15: Private / Shared_Clean
    assert sub(sm, 'Rss', 'Pss', 'Private_Clean', 'Shared_Clean') == pick(
        cfg, {'Rss': 4, 'Pss': 4, 'Private_Clean': 4, 'Shared_Clean': 0},
        {'Rss': 4, 'Pss': 4, 'Private_Clean': 0, 'Shared_Clean': 4})
    before = render(S15, 'before', **kw)[cfg]
    assert delta(v.meminfo(), before.meminfo(), 'Mapped') == {'Mapped': pick(cfg, 8, 64)}

    u = render(S15, 'q-unmapped', **kw)[cfg]
    pu = pages(u, P, '/data')
    assert pu.b56 == '1'                                         # S15 continued: S cleared
    assert sub(u.smaps(P, '/data'), 'Private_Clean', 'Shared_Clean') == \
        {'Private_Clean': 4, 'Shared_Clean': 0}
    assert delta(u.meminfo(), before.meminfo(), 'Mapped') == {'Mapped': pick(cfg, 4, 64)}


# --- S16 - S19 -----------------------------------------------------------------------------

@pytest.mark.skip(reason='S16 needs hugetlbfs, which the emulator does not model')
def test_s16_hugetlb():
    pass


def test_s17_huge_zero_page(render, cfg):
    steps = [mmap(P, 'buf', '2M', align='2M'), snap('before'), read(P, 'buf'), snap('s17')]
    v = render(steps, 's17', thp=THP_PMD)[cfg]
    start, n = range_of(v, P, ANON_BUF)
    pm = v.pagemap(P, start, n)
    assert pm.present.all() and pm.b61 == '1' * 512              # S17 [real]
    assert pm.b56 == pick(cfg, '0' * 512, '1' * 512)             # S17 [real] / [derived]
    hz = int(pm.pfn[0])
    assert list(pm.pfn) == list(range(hz, hz + 512))
    assert v.kpagecount(pm.pfn) == [0] * 512                     # S17 [real]
    flags = v.kpageflags(pm.pfn)
    assert flags[0] == 0x1408000 and set(flags[1:]) == {0x1410000}   # S17 [real]
    check_smaps(v, P, {'Rss': 0, 'AnonHugePages': 0})            # S17 [real]
    assert v.numa_maps(P, start) == ['%x' % start, 'default']    # S17 [real]
    before = render(steps, 'before', thp=THP_PMD)[cfg]
    # the huge zero page is not anon-mapped (derived: 8.8, nothing rmapped)
    assert delta(v.meminfo(), before.meminfo(), 'AnonPages', 'AnonHugePages') == \
        {'AnonPages': 0, 'AnonHugePages': 0}


def test_s18_pinned_page_and_fork(render, cfg):
    steps = [mmap(P, 'buf', '64K', align='64K'), write(P, 'buf'), snap('s1'),
             pin(P, 'buf', '12K', '4K'), fork(P, C), snap('s18')]
    s1 = render(steps, 's1')[cfg]
    v = render(steps, 's18')[cfg]
    old = pages(s1, P, ANON_BUF).pfn
    pp, pc = pages(v, P, ANON_BUF), pages(v, C, ANON_BUF)
    assert (pp.pfn == old).all()
    assert not set(pc.pfn) & set(old) and len(set(pc.pfn)) == 16   # S18: 16 copies for C
    assert all(f >> KPF_HEAD & 1 == 0 for f in v.kpageflags(pc.pfn))   # small folios
    assert v.kpagecount(old) == [1] * 16 and v.kpagecount(pc.pfn) == [1] * 16   # S18
    assert pp.b56 == pc.b56 == '1' * 16                          # S18
    for pid in (P, C):
        check_smaps(v, pid, {'Rss': 64, 'Pss': 64, 'Private_Dirty': 64})   # S18
    assert delta(v.meminfo(), s1.meminfo(), 'AnonPages') == {'AnonPages': 64}   # S18


# S19 [derived] with the 32-bit configs: an order-14 folio cannot be made
# (orders 0..9), so, as in test_examples.py, a 2M page-cache folio (N = 512)
# is mapped by one MM through 65 VMAs that are not 2M aligned (PTE-mapped):
# 64 mappings fill the 32-bit per-MM count (32768), the 65th overflows it
# (semantics.md 4.2, section 11) and S stays set.
S19_VMAS = 65
S19_BASE = 0x10000000
S19_FILE = [{'name': 'big', 'size': '2M', 'folio_size': '2M'}]


def _s19_steps():
    steps = []
    for i in range(S19_VMAS):
        steps.append(mmap(P, 'm%d' % i, '2M', kind='shared-file', file='big', prot='r',
                          addr=S19_BASE + i * (4 << 20) + (64 << 10)))
        steps.append(read(P, 'm%d' % i))
    steps.append(snap('overflowed'))
    for i in range(S19_VMAS - 1):
        steps.append(munmap(P, 'm%d' % i))
    steps.append(snap('one-left'))
    return steps


@pytest.mark.parametrize('config', CONFIGS_32)
def test_s19_per_mm_mapcount_overflow_32bit(render, config):
    steps = _s19_steps()
    v = render(steps, 'overflowed', configs=CONFIGS_32, files=S19_FILE)[config]
    vmas = v.vmas(P, '/big')
    assert len(vmas) == S19_VMAS
    last = vmas[-1]                 # m64: the highest address (maps is sorted)
    pm = v.pagemap(P, last[0], 512)
    assert pm.present.all()
    # every page really is mapped 65 times: kpc 65 (precise, or the average)
    assert v.kpagecount(pm.pfn) == [65] * 512
    assert pm.b56 == '0' * 512                                   # precise 65 / S set
    sm = v.smaps_of(P, last[0])
    assert sm['Private_Clean'] == 0 and sm['Shared_Clean'] == 2048

    u = render(steps, 'one-left', configs=CONFIGS_32, files=S19_FILE)[config]
    assert u.vmas(P, '/big') == [last]
    pu = u.pagemap(P, last[0], 512)
    assert (pu.pfn == pm.pfn).all()
    assert u.kpagecount(pu.pfn) == [1] * 512
    # only P maps the folio, once per page: PAGE exclusive; NO keeps
    # reporting it shared (S may remain set, S19)
    assert pu.b56 == pick(config, '1' * 512, '0' * 512)
    sm = u.smaps_of(P, last[0])
    assert (sm['Private_Clean'], sm['Shared_Clean']) == pick(config, (2048, 0), (0, 2048))

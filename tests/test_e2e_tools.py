"""Real, unmodified monitoring tools pointed at a live ``mmemu mount``:
psutil (PROCFS_PATH), smem -S, pmap -X/-XX and free -k (in inproc.sh's
namespace), and the reference pagemap + kpagecount reader.

The values they must print are the ones the kernel rules give for the
scenario's final state, worked out below by hand for each config
(semantics.md sections cited), or, for CONFIG_PAGE_MAPCOUNT of a
conformance scenario, read from the real kernel's recording.  The tools
come from scripts/setup-clients.sh; a missing one fails the test.
"""
import contextlib
import json
import os
import subprocess
import sys
from collections import namedtuple

import pytest
import yaml

import e2e_helpers as E

# One smaps block (kB): Rss, Pss, Private_Clean + Private_Dirty.
VmaUse = namedtuple('VmaUse', 'rss pss private')
# uss_kpagecount.py (kB): present pages with kpagecount == 1, with
# PM_MMAP_EXCLUSIVE, sum of 1/kpagecount, present pages.
KpcUse = namedtuple('KpcUse', 'uss_kpagecount uss_exclusive pss_kpagecount present')
# Per pid: {maps name: [VmaUse in address order]} and the KpcUse.
Expect = namedtuple('Expect', 'vmas kpc')


def totals(e):
    """(rss, pss, uss) of a process: smaps sums over its VMAs.  Every
    per-page PSS share below is a whole number of kB, so the rollup's
    single truncation gives the same Pss as the per-VMA sum (8.4)."""
    blocks = [v for vs in e.vmas.values() for v in vs]
    return (sum(v.rss for v in blocks), sum(v.pss for v in blocks), sum(v.private for v in blocks))


# --- configs/scenarios/showcase.yaml, at its end -----------------------------------
#
# heap: 1M of 64K mTHPs (64K: always) = folios F0..F15, F_k = pages 16k..16k+15,
# written by app (100).  cache: 256K shared-anon; shmem_enabled is never
# (the scenario format's default), so 64 order-0 shmem pages, written by
# 100.  fork 101, fork 102 (S5): both map all of heap (PTEs copied); shared
# VMAs are not copied (12.5), so 101 and 102 have no cache PTEs until 101
# reads cache[0..64K) (fault-around).  Slots of F0..F15: 100 in slot 0, 101
# in slot 1, 102 untracked, S = 1 (4.5).
#   101 munmaps heap pages 8..23.  102 writes page 34 (F2) and 100 writes
#   page 50 (F3): S = 1, so both are CoW copies into new order-0 pages (6.3).
#   100 munmaps pages 128..255 (F8..F15), 101 exits, 102 munmaps pages
#   136..143 (upper half of F8).  S stays 1 on F8..F15: 102 never held a
#   slot (S6), and on F0..F7, which 100 and 102 both map.
# End: 100 maps heap pages 0..127 (its page 50 is its copy) and the 64
# cache pages; 102 maps heap pages 0..135 and 144..255 (its page 34 is its
# copy), as two VMAs.  F2's page 34 is mapped by 100 only, F3's page 50 by
# 102 only, F8..F15 by 102 only; every other page of F0..F7 by both.
#
# CONFIG_PAGE_MAPCOUNT, per page (8.4: private iff its precise mapcount is
# 1; Pss share 4 kB / mapcount; 8.1 kpagecount = precise count; 8.3 b56 =
# precise count is 1):
#   100 heap: 126 pages shared by 2 (252) + pages 34, 50 private (8):
#       Rss 512, Pss 260, private 8.  cache: 64 pages mapped once: 256/256/256.
#   102 heap VMA 0..135: 126 shared (252) + 34, 50, 128..135 private (40):
#       Rss 544, Pss 292, private 40.  VMA 144..255: 112 private: 448/448/448.
# CONFIG_NO_PAGE_MAPCOUNT (8.4: private iff !folio_maybe_mapped_shared();
# Pss share 4 kB / folio_average_page_mapcount (7.3); 8.1 kpagecount =
# the average; 8.3 b56 = !maybe_shared):
#   averages: F0..F7 have 32, 31 (F2, F3) PTE mappings -> (M + 8) >> 4 = 2;
#   F9..F15 16 -> 1; F8 8 -> 1.  Order-0 pages: their mapcount, 1.
#   100 heap: 127 folio pages at 2 kB (254) + its copy (4): Pss 258,
#       private 4 (the copy; F0..F7 are shared).  cache as above.
#   102 VMA 0..135: 127 F0..F7 pages (254) + copy (4) + F8's 8 pages at
#       4 kB (32): Pss 290, private 4.  VMA 144..255: Pss 448, private 0
#       (S = 1: the USS under-estimate of S6).
#   kpagecount == 1: 100 copy + cache = 65 pages; 102 copy + F8..F15
#       pages = 121 pages.  b56: 100 65 pages, 102 only its copy.
SHOWCASE = {
    'page_mapcount': {
        100: Expect({'[anon:heap]': [VmaUse(512, 260, 8)],
                     '[anon_shmem:cache]': [VmaUse(256, 256, 256)]},
                    KpcUse(264, 264, 516, 768)),
        102: Expect({'[anon:heap]': [VmaUse(544, 292, 40), VmaUse(448, 448, 448)],
                     '[anon_shmem:cache]': [VmaUse(0, 0, 0)]},
                    KpcUse(488, 488, 740, 992)),
    },
    'no_page_mapcount': {
        100: Expect({'[anon:heap]': [VmaUse(512, 258, 4)],
                     '[anon_shmem:cache]': [VmaUse(256, 256, 256)]},
                    KpcUse(260, 260, 514, 768)),
        102: Expect({'[anon:heap]': [VmaUse(544, 290, 4), VmaUse(448, 448, 0)],
                     '[anon_shmem:cache]': [VmaUse(0, 0, 0)]},
                    KpcUse(484, 4, 738, 992)),
    },
}
# Frames the showcase holds at its end: F0..F15 (F8 is partially mapped but
# not freed), the two CoW copies and the 64 cache pages.
SHOWCASE_FRAMES = 16 * 16 + 2 + 64

# --- thp-pmd-fork-cow (shared set), at parent-wrote ------------------------------------
#
# A PMD THP (512 pages) written by 100, fork: 100 in slot 0, 101 in slot 1,
# S = 1.  101 writes page 2, 100 writes page 4: each write splits the
# writer's PMD and copies one page (S = 1, 6.3).  End: the folio has 1022
# PTE mappings (E = 0); page 2 of the folio is mapped by 100 only, page 4 by
# 101 only.  CONFIG_NO_PAGE_MAPCOUNT (symmetric for both pids): average
# (1022 + 256) >> 9 = 2 (7.3), so 511 folio pages at 2 kB + the copy at 4 kB
# = Pss 1026; private only the copy (S = 1); kpagecount 2 on the folio and
# 1 on the copy; b56 only on the copy.
THP_PMD_FORK_COW_NPM = {
    pid: Expect({'[anon:buf]': [VmaUse(2048, 1026, 4)]}, KpcUse(4, 4, 1026, 2048))
    for pid in (100, 101)
}
THP_PMD_FORK_COW_FRAMES = 512 + 2

# --- exit-while-shared (project set), at survivor-wrote -----------------------------
#
# m64: one 64K folio; small: 4 order-0 pages; P (100) forks C1 (101) and C2
# (102).  Slots: P, C1; C2 untracked, S = 1.  C1 and P exit: C2 is the only
# mapper but S stays 1 (S6).  C2 writes m64 page 2: copy (6.3, S = 1); it
# writes small page 2: order-0 page mapped once, reused (6.2).
# CONFIG_NO_PAGE_MAPCOUNT: m64 folio LM 15 -> average (15 + 8) >> 4 = 1:
# Pss 15 * 4 + 4 (copy) = 64, private only the copy (S = 1); small: 16/16/16.
# kpagecount 1 everywhere, b56 on the copy and the small pages only.
EXIT_WHILE_SHARED_NPM = {
    102: Expect({'[anon:m64]': [VmaUse(64, 64, 4)], '[anon:small]': [VmaUse(16, 16, 16)]},
                KpcUse(80, 20, 80, 80)),
}
EXIT_WHILE_SHARED_FRAMES = 16 + 4 + 1

MEMORY_1G_KB = 1 << 20        # kernel.memory, 1G (the format's default too)


def recorded_expectation(set_name, scenario):
    """CONFIG_PAGE_MAPCOUNT expectation from the real kernel's recording of
    the scenario's last snapshot: per-VMA smaps, and the per-page
    kpagecount / PM_MMAP_EXCLUSIVE / present arrays."""
    scen_dir, exp_dir = E.CONFORMANCE_SETS[set_name]
    scen_path = scen_dir / (scenario + '.yaml')
    with open(scen_path) as f:
        steps = yaml.safe_load(f)['steps']
    kinds = {s['mmap']['name']: s['mmap'].get('kind', 'anon') for s in steps if 'mmap' in s}
    label = E.scenario_labels(scen_path)[-1]
    obs = E.load_json(exp_dir / scenario / (label + '.json'))
    out = {}
    for pid, p in obs['processes'].items():
        vmas, kpc = {}, [0, 0, 0.0, 0]
        for name, r in sorted(p['ranges'].items()):
            maps_name = {'anon': '[anon:%s]', 'shared-anon': '[anon_shmem:%s]'}[kinds[name]] % name
            vmas[maps_name] = [VmaUse(v['smaps']['Rss'], v['smaps']['Pss'],
                                      v['smaps']['Private_Clean'] + v['smaps']['Private_Dirty'])
                               for v in sorted(r['vmas'], key=lambda v: v['start'])]
            pg = r['pages']
            for i, present in enumerate(pg['present']):
                if present != '1':
                    continue
                n = pg['kpagecount'][i]
                kpc[0] += n == 1
                kpc[1] += pg['exclusive'][i] == '1'
                kpc[2] += 1.0 / n if n else 0.0
                kpc[3] += 1
        out[int(pid)] = Expect(vmas, KpcUse(*(x * E.PAGE_KB for x in kpc)))
    return out


# scenario key -> (scenario path, {config: {pid: Expect}} factory, scenario frames)
SCENARIOS = {
    'showcase': (E.SHOWCASE, lambda: SHOWCASE, SHOWCASE_FRAMES),
    'thp-pmd-fork-cow': (
        E.CONFORMANCE_SETS['shared'][0] / 'thp-pmd-fork-cow.yaml',
        lambda: {'page_mapcount': recorded_expectation('shared', 'thp-pmd-fork-cow'),
                 'no_page_mapcount': THP_PMD_FORK_COW_NPM},
        THP_PMD_FORK_COW_FRAMES),
    'exit-while-shared': (
        E.CONFORMANCE_SETS['project'][0] / 'exit-while-shared.yaml',
        lambda: {'page_mapcount': recorded_expectation('project', 'exit-while-shared'),
                 'no_page_mapcount': EXIT_WHILE_SHARED_NPM},
        EXIT_WHILE_SHARED_FRAMES),
}
CASES = [(s, c) for s in SCENARIOS for c in E.CONFIGS]
CASE_IDS = ['%s-%s' % c for c in CASES]


@pytest.fixture(scope='module')
def mounts():
    """One live mount per scenario (with pid 1 and self, as the tools expect)."""
    with contextlib.ExitStack() as stack:
        yield {key: stack.enter_context(E.Mount(path)) for key, (path, _, _) in SCENARIOS.items()}


@pytest.fixture(params=CASES, ids=CASE_IDS)
def case(request, mounts):
    """(mount ROOT of the config, {pid: Expect}, scenario frames)."""
    key, config = request.param
    _, expect, frames = SCENARIOS[key]
    return mounts[key].root(config), expect()[config], frames


def test_expectations_are_consistent():
    """The hand-derived tables and the recordings obey the relations that
    hold when every mapping is a PTE (no PMD leaf at these ends): Rss is the
    present pages; smaps and kpagecount use the same per-page count, precise
    or average (8.1, 8.4), so Pss is the sum of 1/kpagecount; and Private_*
    is decided like PM_MMAP_EXCLUSIVE (8.3, 8.4)."""
    for key, (_, expect, _) in SCENARIOS.items():
        for config, pids in expect().items():
            for pid, e in pids.items():
                rss, pss, uss = totals(e)
                where = '%s %s pid %d' % (key, config, pid)
                assert rss == e.kpc.present, where
                assert pss == e.kpc.pss_kpagecount, where
                assert uss == e.kpc.uss_exclusive, where
                if config == 'page_mapcount':
                    assert uss == e.kpc.uss_kpagecount, where


# --- psutil -----------------------------------------------------------------------------

PSUTIL_PROBE = r'''
import json, sys
import psutil
psutil.PROCFS_PATH = sys.argv[1]
out = {"virtual_memory": psutil.virtual_memory()._asdict(), "pids": {}}
for pid in sys.argv[2:]:
    p = psutil.Process(int(pid))
    out["pids"][pid] = {"full": p.memory_full_info()._asdict(),
                        "maps": [m._asdict() for m in p.memory_maps(grouped=False)]}
print(json.dumps(out))
'''


def run_psutil(root, pids):
    r = subprocess.run([E.clients_python(), '-c', PSUTIL_PROBE, os.path.join(root, 'proc')]
                       + [str(p) for p in pids], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, 'psutil probe failed: %s' % r.stderr.strip()
    return json.loads(r.stdout)


def vma_table(rows, name_key, rss_key, pss_key, private, unit):
    """{maps name: [VmaUse]} from tool rows in address order ([vsyscall] left out)."""
    out = {}
    for row in rows:
        name = row[name_key]
        if name == '[vsyscall]':
            continue
        out.setdefault(name, []).append(VmaUse(row[rss_key] // unit, row[pss_key] // unit, private(row) // unit))
    return out


def test_psutil(case):
    """psutil with PROCFS_PATH: memory_full_info() (uss = Σ rollup Private_*,
    pss = rollup Pss, rss = statm[1]) and memory_maps(grouped=False)."""
    root, expect, _ = case
    got = run_psutil(root, sorted(expect))
    for pid, e in expect.items():
        rss, pss, uss = totals(e)
        full = got['pids'][str(pid)]['full']
        assert (full['rss'] // 1024, full['pss'] // 1024, full['uss'] // 1024) == (rss, pss, uss), \
            'pid %d (rss, pss, uss) kB' % pid
        maps = vma_table(got['pids'][str(pid)]['maps'], 'path', 'rss', 'pss',
                         lambda m: m['private_clean'] + m['private_dirty'], 1024)
        assert maps == e.vmas, 'pid %d memory_maps' % pid


# --- smem -----------------------------------------------------------------------------

def test_smem(case):
    """smem -S ROOT (ROOT, not ROOT/proc): Σ smaps Private_*, Pss, Rss."""
    root, expect, _ = case
    smem = E.require_command('smem')
    r = subprocess.run([smem, '-S', root, '-c', 'pid uss pss rss', '-H'],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    rows = {int(f[0]): tuple(int(x) for x in f[1:]) for f in (line.split() for line in r.stdout.splitlines()) if f}
    for pid, e in expect.items():
        rss, pss, uss = totals(e)
        assert rows.get(pid) == (uss, pss, rss), 'pid %d (uss, pss, rss): %s' % (pid, r.stdout)


# --- pmap -------------------------------------------------------------------------------

def pmap_rows(root, pid, flag):
    """pmap -X/-XX inside inproc.sh: ([{column: value}] per mapping, {column: total})."""
    E.require_command('pmap')
    r = E.inproc(root, 'pmap', flag, pid)
    assert r.returncode == 0, 'pmap %s %d: exit %d: %s' % (flag, pid, r.returncode, r.stderr)
    lines = r.stdout.splitlines()
    head_i = next(i for i, line in enumerate(lines) if line.split()[:2] == ['Address', 'Perm'])
    header = lines[head_i].split()
    numeric = header[5:header.index('THPeligible') + 1]
    rows, totals_row = [], None
    for line in lines[head_i + 1:]:
        f = line.split()
        if not f or set(f[0]) == {'='}:
            continue
        if f[-1] == 'KB':          # the totals line, under the Size.. columns
            totals_row = dict(zip(numeric, (int(x) for x in f[:len(numeric)])))
            continue
        row = dict(zip(numeric, (int(x) for x in f[5:5 + len(numeric)])))
        row['Mapping'] = f[-1]
        rows.append(row)
    assert totals_row is not None, r.stdout
    return rows, totals_row


def test_pmap(case):
    """pmap -X (Rss, Pss per mapping and total) and -XX (Private_*)."""
    root, expect, _ = case
    for pid, e in expect.items():
        rss, pss, uss = totals(e)
        x_rows, x_total = pmap_rows(root, pid, '-X')
        xx_rows, _ = pmap_rows(root, pid, '-XX')
        assert [r['Mapping'] for r in x_rows] == [r['Mapping'] for r in xx_rows]
        for x, xx in zip(x_rows, xx_rows):
            x['Private'] = xx['Private_Clean'] + xx['Private_Dirty']
        got = vma_table(x_rows, 'Mapping', 'Rss', 'Pss', lambda row: row['Private'], 1)
        assert got == e.vmas, 'pid %d pmap -X/-XX' % pid
        assert (x_total['Rss'], x_total['Pss']) == (rss, pss), 'pid %d pmap -X total' % pid


# --- pagemap + kpagecount --------------------------------------------------------------

def test_uss_kpagecount(case):
    """The reference reader of pagemap and kpagecount (pagemap.rst)."""
    root, expect, _ = case
    script = E.require_file(E.CLIENTS_DIR / 'lib' / 'uss_kpagecount.py')
    r = subprocess.run([sys.executable, script, os.path.join(root, 'proc')] + [str(p) for p in sorted(expect)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    for pid, e in expect.items():
        g = got[str(pid)]
        assert 'error' not in g, g
        assert KpcUse(g['uss_kpagecount_kB'], g['uss_exclusive_kB'], g['pss_kpagecount_kB'],
                      g['present_kB']) == e.kpc, 'pid %d' % pid


# --- free memory ----------------------------------------------------------------------

KPF_BUDDY = 1 << 10
KPF_RESERVED = 1 << 32


def test_free_memory(case):
    """MemTotal is kernel.memory; MemFree is the free frames: every PFN that
    kpageflags marks BUDDY (8.2), and MemTotal less the reserved frames,
    pid 1's pages and the frames the scenario holds.  free -k and psutil
    show the same."""
    root, _, frames = case
    proc = os.path.join(root, 'proc')
    meminfo = E.read_meminfo(proc)
    assert meminfo['MemTotal'] == MEMORY_1G_KB
    flags = E.read_u64_array(os.path.join(proc, 'kpageflags'))
    assert len(flags) * E.PAGE_KB == MEMORY_1G_KB
    assert meminfo['MemFree'] == int(((flags & KPF_BUDDY) != 0).sum()) * E.PAGE_KB
    reserved = int(((flags & KPF_RESERVED) != 0).sum())
    with open(os.path.join(proc, '1', 'statm')) as f:
        init_pages = int(f.read().split()[1])
    assert MEMORY_1G_KB - meminfo['MemFree'] == (reserved + init_pages + frames) * E.PAGE_KB

    E.require_command('free')
    r = E.inproc(root, 'free', '-k')
    assert r.returncode == 0, r.stderr
    mem = next(line.split() for line in r.stdout.splitlines() if line.startswith('Mem:'))
    assert (int(mem[1]), int(mem[3])) == (MEMORY_1G_KB, meminfo['MemFree']), r.stdout

    vm = run_psutil(root, [])['virtual_memory']
    assert (vm['total'] // 1024, vm['free'] // 1024) == (MEMORY_1G_KB, meminfo['MemFree'])

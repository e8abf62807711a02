"""The worked examples S1-S19 of semantics.md section 13, replayed as
scenarios on the emulated kernel with both mapcount configs.

Each test asserts the values of the example's table: kpagecount per PFN
("kpc"), pagemap bit 56 per page ("b56"), the folio state (LM, E, slots,
S), refcounts, smaps sums (computed from query.vma_pages by the rule of
semantics.md 8.4, helpers_core.smaps_kb), numa_maps mapmax, AnonPages /
Mapped (query.node_stats) and reuse versus copy (PFN identity).  Values
marked [real] in semantics.md were observed on the real 6.18 kernel
(PAGE_MAPCOUNT); NO_PAGE_MAPCOUNT values are [derived] there.

Processes: P = 100, C / C1 / Q = 101, C2 = 102.  A 64K mTHP range is 64K
aligned with hugepages-64kB=always; a 2M THP range is 2M aligned with
enabled=always.
"""
import numpy as np
import pytest
import yaml

from mmcore.mapcount import folio_maybe_mapped_shared
from mmcore.memory import FL_PARTIALLY_MAPPED
from mmcore.scenario import parse_scenario_text
from mmcore import query

from helpers_core import (CONFIGS, CONFIGS_32, FolioState, config_id, folio_state, mm_id,
                          range_pages, range_vmas, replay, private_kb, shared_kb, smaps_kb,
                          snapshots)

P, C, C1, Q, C2 = 100, 101, 101, 101, 102
MTHP_64K = {'enabled': 'never', 'sizes': {'64K': 'always'}}
THP_PMD = {'enabled': 'always'}


@pytest.fixture(params=CONFIGS, ids=config_id)
def cfg(request):
    return request.param


def pick(cfg, page, none):
    """The PAGE column or the NO column of an example's table."""
    return page if cfg.page_mapcount else none


# --- scenario text ----------------------------------------------------------------------

def scenario(steps, thp=MTHP_64K, pids=(P,), files=None):
    doc = {'format': 1, 'name': 'example', 'kernel': {'thp': thp},
           'processes': [{'pid': p} for p in pids], 'steps': steps}
    if files:
        doc['files'] = files
    return yaml.safe_dump(doc, sort_keys=False)


def run(cfg, steps, label=None, **kw):
    return replay(scenario(steps, **kw), cfg, label)


from scenario_steps import mmap, range_op, write, read, munmap, pin, fork, exit_, snap  # noqa: E402,F401


# --- read-outs --------------------------------------------------------------------------

def pages(k, pid, name='buf'):
    return range_pages(k, pid, name)


def kpc_of_folio(k, head):
    nr = 1 << int(k.mem.order[head])
    return list(query.kpagecount(k, head + np.arange(nr)).astype(int))


def expect_state(k, head, lm, slot0, slot1, shared, e=0):
    """Asserts the folio state; slots given as (pid, count) or None."""
    ids = tuple(None if s is None else (mm_id(k, s[0]), s[1]) for s in (slot0, slot1))
    want = FolioState(lm, e, ids, bool(shared))
    got = folio_state(k.mem, head)
    assert got == want, 'folio %d: got %s, expected %s' % (head, got, want)


def anon_kb(k):
    return query.node_stats(k)['anon_mapped'] * 4


def file_mapped_kb(k):
    return query.node_stats(k)['file_mapped'] * 4


def smaps(k, pid, name='buf'):
    return smaps_kb(k, pid, name)


def sm_subset(sm, *keys):
    return {key: sm[key] for key in keys}


def mapmax(k, pid, name='buf'):
    return max(1, int(pages(k, pid, name).numa_mapcount.max()))


def bits(a):
    return ''.join('1' if x else '0' for x in a)


def is_shared(k, head):
    return bool(folio_maybe_mapped_shared(k.mem, [head])[0])


# --- S1 - S4: 64K mTHP, fork, CoW --------------------------------------------------------------

S1 = [mmap(P, 'buf', '64K', align='64K'), write(P, 'buf'), snap('s1')]
S2 = S1 + [fork(P, C), snap('s2')]
S3 = S2 + [write(C, 'buf', 0, '4K'), snap('s3')]
S4 = S3 + [exit_(C), snap('s4-exited'), write(P, 'buf', '20K', '4K'), snap('s4')]


def test_s1_single_process(cfg):
    k = run(cfg, S1)
    pg = pages(k, P)
    h = int(pg.head[0])
    assert (pg.head == h).all() and (pg.folio_pages == 16).all()
    expect_state(k, h, 16, (P, 16), None, 0)
    assert k.mem.refcount[h] == 16
    assert kpc_of_folio(k, h) == [1] * 16
    assert bits(pg.exclusive) == '1' * 16
    assert sm_subset(smaps(k, P), 'Rss', 'Pss', 'Shared_Dirty', 'Private_Dirty') == \
        {'Rss': 64, 'Pss': 64, 'Shared_Dirty': 0, 'Private_Dirty': 64}
    assert mapmax(k, P) == 1
    assert anon_kb(k) == 64


def test_s2_fork(cfg):
    k = run(cfg, S2)
    pp, pc = pages(k, P), pages(k, C)
    h = int(pp.head[0])
    assert (pc.pfn == pp.pfn).all()
    expect_state(k, h, 32, (P, 16), (C, 16), 1)
    assert k.mem.refcount[h] == 32
    assert not k.mem.anon_exclusive[pp.pfn].any()
    assert kpc_of_folio(k, h) == [2] * 16
    assert bits(pp.exclusive) == bits(pc.exclusive) == '0' * 16
    want = {'Rss': 64, 'Pss': 32, 'Shared_Dirty': 64, 'Private_Dirty': 0}
    sp, sc = smaps(k, P), smaps(k, C)
    assert sm_subset(sp, *want) == want and sm_subset(sc, *want) == want
    assert sp['Referenced'] == 64 and sc['Referenced'] == 0
    assert mapmax(k, P) == mapmax(k, C) == 2
    assert anon_kb(k) == 64


def test_s3_child_writes_page_0(cfg):
    k = run(cfg, S3)
    pp, pc = pages(k, P), pages(k, C)
    h = int(pp.head[0])
    assert pc.pfn[0] != pp.pfn[0] and pc.folio_pages[0] == 1          # CoW copy
    assert (pc.pfn[1:] == pp.pfn[1:]).all()
    expect_state(k, h, 31, (P, 16), (C, 15), 1)
    assert k.mem.refcount[h] == 31
    assert kpc_of_folio(k, h) == pick(cfg, [1] + [2] * 15, [2] * 16)
    assert pc.kpagecount[0] == 1
    assert bits(pp.exclusive) == pick(cfg, '1' + '0' * 15, '0' * 16)
    assert bits(pc.exclusive) == '1' + '0' * 15
    keys = ('Rss', 'Pss', 'Shared_Dirty', 'Private_Dirty')
    assert sm_subset(smaps(k, P), *keys) == pick(
        cfg, {'Rss': 64, 'Pss': 34, 'Shared_Dirty': 60, 'Private_Dirty': 4},
        {'Rss': 64, 'Pss': 32, 'Shared_Dirty': 64, 'Private_Dirty': 0})
    assert sm_subset(smaps(k, C), *keys) == \
        {'Rss': 64, 'Pss': 34, 'Shared_Dirty': 60, 'Private_Dirty': 4}
    assert mapmax(k, P) == mapmax(k, C) == 2
    assert anon_kb(k) == 68


def test_s4_child_exits_parent_write_reuses(cfg):
    k = run(cfg, S4, 's4-exited')
    pp = pages(k, P)
    h = int(pp.head[0])
    before = pp.pfn.copy()
    expect_state(k, h, 16, (P, 16), None, 0)
    assert kpc_of_folio(k, h) == [1] * 16
    assert bits(pp.exclusive) == '1' * 16
    assert sm_subset(smaps(k, P), 'Rss', 'Pss', 'Private_Dirty') == \
        {'Rss': 64, 'Pss': 64, 'Private_Dirty': 64}
    k = run(cfg, S4)
    pp = pages(k, P)
    assert (pp.pfn == before).all()                                       # reuse
    assert pp.folio_pages[5] == 16 and k.mem.anon_exclusive[pp.pfn[5]]


# --- S5 - S7: three MMs ------------------------------------------------------------------------

S5 = S1 + [fork(P, C1), fork(P, C2), snap('s5')]
S6 = S5 + [munmap(P, 'buf'), exit_(C1), snap('s6'),
           write(C2, 'buf', '12K', '4K'), snap('s6-w3'),
           write(C2, 'buf', '16K', '4K'), snap('s6-w4')]
S7 = S5 + [munmap(P, 'buf'), exit_(C1), munmap(C2, 'buf', 0, '28K'), snap('s7-first'),
           munmap(C2, 'buf', '32K', '32K'), snap('s7'), write(C2, 'buf', '28K', '4K'),
           snap('s7-written')]


def test_s5_three_mms(cfg):
    k = run(cfg, S5, pids=(P,))
    h = int(pages(k, P).head[0])
    expect_state(k, h, 48, (P, 16), (C1, 16), 1)
    assert kpc_of_folio(k, h) == [3] * 16
    for pid in (P, C1, C2):
        assert bits(pages(k, pid).exclusive) == '0' * 16
        # 16 x 5592405 -> 89478480 -> 21 kB
        assert sm_subset(smaps(k, pid), 'Rss', 'Pss', 'Shared_Dirty') == \
            {'Rss': 64, 'Pss': 21, 'Shared_Dirty': 64}
        assert mapmax(k, pid) == 3


@pytest.mark.parametrize('exits', [(C1, C2), (C2, C1)], ids=['C1-first', 'C2-first'])
def test_s5b_children_exit_owner_exclusive(cfg, exits):
    """S5b: the last exit finds c_0 == LM and clears S; P's writes reuse."""
    steps = S5 + [exit_(exits[0]), exit_(exits[1]), snap('s5b'), write(P, 'buf'), snap('w')]
    k = run(cfg, steps, 's5b')
    pp = pages(k, P)
    h = int(pp.head[0])
    before = pp.pfn.copy()
    expect_state(k, h, 16, (P, 16), None, 0)
    assert kpc_of_folio(k, h) == [1] * 16 and bits(pp.exclusive) == '1' * 16
    assert sm_subset(smaps(k, P), 'Pss', 'Private_Dirty') == {'Pss': 64, 'Private_Dirty': 64}
    k = run(cfg, steps)
    assert (pages(k, P).pfn == before).all()


def test_s6_survivor_untracked(cfg):
    """S6: C2 never had a slot; only it maps the folio, yet S stays set:
    NO shows it shared, both configs copy on write."""
    k = run(cfg, S6, 's6')
    pg = pages(k, C2)
    h = int(pg.head[0])
    before = pg.pfn.copy()
    expect_state(k, h, 16, None, None, 1)
    assert is_shared(k, h)
    assert kpc_of_folio(k, h) == [1] * 16
    assert bits(pg.exclusive) == pick(cfg, '1' * 16, '0' * 16)
    assert sm_subset(smaps(k, C2), 'Rss', 'Pss', 'Shared_Dirty', 'Private_Dirty') == pick(
        cfg, {'Rss': 64, 'Pss': 64, 'Shared_Dirty': 0, 'Private_Dirty': 64},
        {'Rss': 64, 'Pss': 64, 'Shared_Dirty': 64, 'Private_Dirty': 0})
    assert anon_kb(k) == 64

    k = run(cfg, S6, 's6-w3')
    pg = pages(k, C2)
    assert pg.pfn[3] != before[3] and pg.folio_pages[3] == 1                 # copy [real]
    assert k.mem.flags[h] & FL_PARTIALLY_MAPPED                             # 15 < 16
    k = run(cfg, S6, 's6-w4')
    pg = pages(k, C2)
    assert pg.pfn[4] != before[4] and pg.folio_pages[4] == 1                 # copy [real]
    changed = np.flatnonzero(pg.pfn != before)
    assert list(changed) == [3, 4]
    expect_state(k, h, 14, None, None, 1)
    assert kpc_of_folio(k, h) == pick(cfg, [1, 1, 1, 0, 0] + [1] * 11, [1] * 16)
    assert sm_subset(smaps(k, C2), 'Pss', 'Shared_Dirty', 'Private_Dirty') == pick(
        cfg, {'Pss': 64, 'Shared_Dirty': 0, 'Private_Dirty': 64},
        {'Pss': 64, 'Shared_Dirty': 56, 'Private_Dirty': 8})
    assert anon_kb(k) == pick(cfg, 64, 72)


def test_s7_single_mapping_exception(cfg):
    k = run(cfg, S7, 's7-first')
    h = int(pages(k, C2).head[7])
    assert k.mem.flags[h] & FL_PARTIALLY_MAPPED          # PAGE: page unmapped; NO: 9 < 16
    assert k.events['mthp/64kB/split_deferred'] == 1
    k = run(cfg, S7, 's7')
    pg = range_pages(k, C2, 'buf', 16)
    assert bits(pg.present) == '0' * 7 + '1' + '0' * 8
    expect_state(k, h, 1, None, None, 1)
    assert not is_shared(k, h)
    kpc = kpc_of_folio(k, h)
    assert kpc[7] == 1
    assert kpc[:7] + kpc[8:] == pick(cfg, [0] * 15, [1] * 15)
    assert pg.exclusive[7]
    assert sm_subset(smaps(k, C2), 'Rss', 'Pss', 'Private_Dirty') == \
        {'Rss': 4, 'Pss': 4, 'Private_Dirty': 4}
    assert anon_kb(k) == pick(cfg, 4, 64)
    old = pg.pfn[7]
    k = run(cfg, S7)
    pg = pages(k, C2)
    assert pg.pfn[7] != old and pg.folio_pages[7] == 1                      # copy [real]
    assert k.events['mthp/64kB/split_deferred'] == 1


# --- S8 - S12: PMD THP --------------------------------------------------------------------------

S8 = [mmap(P, 'buf', '2M', align='2M'), write(P, 'buf'), snap('s8')]
S9 = S8 + [fork(P, C), snap('s9')]


def test_s8_pmd_thp(cfg):
    k = run(cfg, S8, thp=THP_PMD)
    pg = pages(k, P)
    h = int(pg.head[0])
    assert pg.pmd.all() and (pg.folio_pages == 512).all()
    expect_state(k, h, 1, (P, 1), None, 0, e=1)
    assert k.mem.refcount[h] == 1
    assert kpc_of_folio(k, h) == [1] * 512
    assert bits(pg.exclusive) == '1' * 512
    assert sm_subset(smaps(k, P), 'Rss', 'Pss', 'Private_Dirty', 'AnonHugePages') == \
        {'Rss': 2048, 'Pss': 2048, 'Private_Dirty': 2048, 'AnonHugePages': 2048}
    st = query.node_stats(k)
    assert st['anon_mapped'] * 4 == 2048 and st['anon_thps'] * 4 == 2048


def test_s9_pmd_fork(cfg):
    k = run(cfg, S9, thp=THP_PMD)
    h = int(pages(k, P).head[0])
    expect_state(k, h, 2, (P, 1), (C, 1), 1, e=2)
    assert k.mem.refcount[h] == 2
    assert kpc_of_folio(k, h) == [2] * 512
    want = {'Rss': 2048, 'Pss': 1024, 'Shared_Dirty': 2048, 'AnonHugePages': 2048}
    for pid in (P, C):
        assert bits(pages(k, pid).exclusive) == '0' * 512
        assert sm_subset(smaps(k, pid), *want) == want
        assert mapmax(k, pid) == 2
    assert smaps(k, P)['Referenced'] == 2048 and smaps(k, C)['Referenced'] == 0


@pytest.mark.parametrize('page', [0, 7])
def test_s10_parent_writes_pmd_split(cfg, page):
    k = run(cfg, S9 + [write(P, 'buf', page * 4096, 4096), snap('s10')], thp=THP_PMD)
    pp, pc = pages(k, P), pages(k, C)
    h = int(pc.head[0])
    assert k.events['thp_split_pmd'] == 1
    assert pp.pfn[page] != pc.pfn[page] and pp.folio_pages[page] == 1
    assert not pp.pmd.any() and pc.pmd.all()
    expect_state(k, h, 512, (P, 511), (C, 1), 1, e=1)
    assert k.mem.refcount[h] == 512
    st = query.node_stats(k)
    assert st['anon_thps'] * 4 == 2048 and st['anon_mapped'] * 4 == 2052
    kpc = kpc_of_folio(k, h)
    assert kpc[page] == pick(cfg, 1, 2)
    assert kpc[:page] + kpc[page + 1:] == [2] * 511
    assert bits(pp.exclusive) == '0' * page + '1' + '0' * (511 - page)
    # first-page quirk of the PMD leaf (semantics 8.3, 12.1) [real]
    assert bits(pc.exclusive) == pick(cfg, ('1' if page == 0 else '0') * 512, '0' * 512)
    keys = ('Rss', 'Pss', 'Shared_Dirty', 'Private_Dirty', 'AnonHugePages')
    assert sm_subset(smaps(k, P), *keys) == \
        {'Rss': 2048, 'Pss': 1026, 'Shared_Dirty': 2044, 'Private_Dirty': 4, 'AnonHugePages': 0}
    assert sm_subset(smaps(k, C), *keys) == pick(
        cfg, {'Rss': 2048, 'Pss': 1026, 'Shared_Dirty': 2044, 'Private_Dirty': 4,
              'AnonHugePages': 2048},
        {'Rss': 2048, 'Pss': 1024, 'Shared_Dirty': 2048, 'Private_Dirty': 0,
         'AnonHugePages': 2048})
    assert mapmax(k, C) == pick(cfg, 1 if page == 0 else 2, 2)
    assert mapmax(k, P) == 2


def test_s11_munmap_upper_half(cfg):
    k = run(cfg, S1 + [munmap(P, 'buf', '32K', '32K'), snap('s11')])
    pg = pages(k, P)
    h = int(pg.head[0])
    expect_state(k, h, 8, (P, 8), None, 0)
    assert k.mem.flags[h] & FL_PARTIALLY_MAPPED
    assert k.events['mthp/64kB/split_deferred'] == 1
    assert k.events['thp_deferred_split_page'] == 0
    assert kpc_of_folio(k, h) == pick(cfg, [1] * 8 + [0] * 8, [1] * 16)
    flags = query.kpageflags(k, h + np.arange(8, 16))
    assert all(int(f) >> query.KPF['MMAP'] & 1 for f in flags)
    assert bits(pg.exclusive) == '1' * 8
    assert sm_subset(smaps(k, P), 'Rss', 'Pss', 'Private_Dirty') == \
        {'Rss': 32, 'Pss': 32, 'Private_Dirty': 32}
    assert anon_kb(k) == pick(cfg, 32, 64)
    assert query.memcg_stats(k, '/')['anon_mapped'] * 4 == pick(cfg, 32, 64)


S12 = S9 + [munmap(P, 'buf', '1M', '1M'), snap('p-unmapped'),
            munmap(C, 'buf', '1M', '1M'), snap('both-unmapped'),
            exit_(C), snap('c-exited')]


def test_s12_both_unmap_upper_half(cfg):
    k = run(cfg, S12, 'p-unmapped', thp=THP_PMD)
    h = int(pages(k, P).head[0])
    expect_state(k, h, 257, (P, 256), (C, 1), 1, e=1)
    assert k.events['thp_deferred_split_page'] == 0          # C's PMD still maps it all
    assert not k.mem.flags[h] & FL_PARTIALLY_MAPPED

    k = run(cfg, S12, 'both-unmapped', thp=THP_PMD)
    expect_state(k, h, 512, (P, 256), (C, 256), 1)
    assert k.events['thp_deferred_split_page'] == pick(cfg, 1, 0)      # [real] / not detected
    assert bool(k.mem.flags[h] & FL_PARTIALLY_MAPPED) == cfg.page_mapcount
    st = query.node_stats(k)
    assert st['anon_thps'] == 0
    assert st['anon_mapped'] * 4 == pick(cfg, 1024, 2048)
    assert kpc_of_folio(k, h) == pick(cfg, [2] * 256 + [0] * 256, [1] * 512)
    for pid in (P, C):
        assert bits(pages(k, pid).exclusive) == '0' * 256
        assert sm_subset(smaps(k, pid), 'Rss', 'Pss', 'Shared_Dirty') == pick(
            cfg, {'Rss': 1024, 'Pss': 512, 'Shared_Dirty': 1024},
            {'Rss': 1024, 'Pss': 1024, 'Shared_Dirty': 1024})
    assert mapmax(k, P) == pick(cfg, 2, 1)

    k = run(cfg, S12, 'c-exited', thp=THP_PMD)
    expect_state(k, h, 256, (P, 256), None, 0)
    assert k.events['thp_deferred_split_page'] == 1          # PAGE: no new event; NO: now
    assert k.mem.flags[h] & FL_PARTIALLY_MAPPED
    assert kpc_of_folio(k, h) == pick(cfg, [1] * 256 + [0] * 256, [1] * 512)
    assert bits(pages(k, P).exclusive) == '1' * 256
    assert sm_subset(smaps(k, P), 'Rss', 'Pss', 'Private_Dirty') == \
        {'Rss': 1024, 'Pss': 1024, 'Private_Dirty': 1024}
    assert anon_kb(k) == pick(cfg, 1024, 2048)


# --- S13 - S15: shared and file folios ------------------------------------------------------------

FILE_64K = [{'name': 'data', 'size': '64K', 'folio_size': '64K'}]


def test_s13_shared_folio_child_maps_one_page(cfg):
    """S13 with a 64K tmpfs file folio mapped MAP_SHARED (the emulator's
    shared-anon objects only get PMD-sized large folios; tmpfs files are
    the same shmem code in the kernel)."""
    steps = [mmap(P, 'buf', '64K', kind='shared-file', file='data', align='64K'),
             write(P, 'buf'), fork(P, C), munmap(C, 'buf', '4K', '60K'), read(C, 'buf', 0, '4K'),
             snap('s13')]
    k = run(cfg, steps, files=FILE_64K)
    pp, pc = pages(k, P), pages(k, C)
    h = int(pp.head[0])
    assert (pp.folio_pages == 16).all() and pc.pfn[0] == pp.pfn[0]
    expect_state(k, h, 17, (P, 16), (C, 1), 1)
    assert k.mem.refcount[h] == 33
    assert kpc_of_folio(k, h) == pick(cfg, [2] + [1] * 15, [1] * 16)
    assert bits(pp.exclusive) == pick(cfg, '0' + '1' * 15, '0' * 16)
    assert bits(pc.exclusive) == '0'
    assert bits(pp.file_or_shared) == '1' * 16 and bits(pc.file_or_shared) == '1'
    keys = ('Rss', 'Pss', 'Shared_Dirty', 'Private_Dirty')
    assert sm_subset(smaps(k, P), *keys) == pick(
        cfg, {'Rss': 64, 'Pss': 62, 'Shared_Dirty': 4, 'Private_Dirty': 60},
        {'Rss': 64, 'Pss': 64, 'Shared_Dirty': 64, 'Private_Dirty': 0})
    assert sm_subset(smaps(k, C), 'Rss', 'Pss', 'Shared_Dirty') == pick(
        cfg, {'Rss': 4, 'Pss': 2, 'Shared_Dirty': 4}, {'Rss': 4, 'Pss': 4, 'Shared_Dirty': 4})
    assert mapmax(k, P) == pick(cfg, 2, 1)
    st = query.node_stats(k)
    assert st['file_mapped'] * 4 == 64 and st['shmem'] * 4 == 64


def test_s14_file_folio_mapped_twice_by_one_process(cfg):
    steps = [mmap(P, 'a', '64K', kind='shared-file', file='data', prot='r', align='64K'),
             mmap(P, 'b', '64K', kind='shared-file', file='data', prot='r', align='64K'),
             read(P, 'a'), read(P, 'b'), snap('s14')]
    k = run(cfg, steps, files=FILE_64K)
    pa, pb = pages(k, P, 'a'), pages(k, P, 'b')
    h = int(pa.head[0])
    assert (pa.pfn == pb.pfn).all() and (pa.folio_pages == 16).all()
    expect_state(k, h, 32, (P, 32), None, 0)
    assert k.mem.refcount[h] == 48
    assert kpc_of_folio(k, h) == [2] * 16
    for name, pg in (('a', pa), ('b', pb)):
        assert bits(pg.exclusive) == pick(cfg, '0' * 16, '1' * 16)
        sm = smaps(k, P, name)
        assert sm['Rss'] == 64 and sm['Pss'] == 32
        assert (shared_kb(sm), private_kb(sm)) == pick(cfg, (64, 0), (0, 64))
        assert mapmax(k, P, name) == 2
    assert file_mapped_kb(k) == 64


def test_s15_two_processes_different_pages(cfg):
    steps = [mmap(P, 'a', '4K', kind='shared-file', file='data'),
             mmap(Q, 'b', '4K', kind='shared-file', file='data', file_offset='4K'),
             read(P, 'a'), read(Q, 'b'), snap('s15'), munmap(Q, 'b'), snap('q-unmapped')]
    k = run(cfg, steps, 's15', pids=(P, Q), files=FILE_64K)
    pa, pb = pages(k, P, 'a'), pages(k, Q, 'b')
    h = int(pa.head[0])
    assert pb.head[0] == h and pb.pfn[0] == h + 1
    expect_state(k, h, 2, (P, 1), (Q, 1), 1)
    assert kpc_of_folio(k, h) == pick(cfg, [1, 1] + [0] * 14, [1] * 16)
    assert pa.exclusive[0] == pb.exclusive[0] == pick(cfg, True, False)
    sm = smaps(k, P, 'a')
    assert sm['Rss'] == 4 and sm['Pss'] == 4
    assert (private_kb(sm), shared_kb(sm)) == pick(cfg, (4, 0), (0, 4))
    assert file_mapped_kb(k) == pick(cfg, 8, 64)

    k = run(cfg, steps, 'q-unmapped', pids=(P, Q), files=FILE_64K)
    expect_state(k, h, 1, (P, 1), None, 0)
    assert pages(k, P, 'a').exclusive[0]
    assert private_kb(smaps(k, P, 'a')) == 4
    assert file_mapped_kb(k) == pick(cfg, 4, 64)


# --- S16 - S19 --------------------------------------------------------------------------------

@pytest.mark.skip(reason='S16 needs hugetlbfs, which the emulator does not model')
def test_s16_hugetlb():
    pass


def test_s17_huge_zero_page(cfg):
    k = run(cfg, [mmap(P, 'buf', '2M', align='2M'), read(P, 'buf'), snap('s17')], thp=THP_PMD)
    pg = pages(k, P)
    hz = k.mem.huge_zero_pfn
    assert hz >= 0 and (pg.pfn == hz + np.arange(512)).all()
    assert pg.present.all() and pg.file_or_shared.all()
    assert bits(pg.exclusive) == pick(cfg, '0' * 512, '1' * 512)       # [real] / [derived]
    assert (pg.kpagecount == 0).all()
    flags = query.kpageflags(k, hz + np.arange(512))
    assert int(flags[0]) == 0x1408000 and (flags[1:] == 0x1410000).all()      # [real]
    sm = smaps(k, P)
    assert sm['Rss'] == 0 and sm['AnonHugePages'] == 0
    assert int(pg.numa_mapcount.max()) == 0 and not pg.normal.any()
    assert anon_kb(k) == 0


def test_s18_pinned_page_and_fork(cfg):
    steps = S1 + [{'pin': {'pid': P, 'vma': 'buf', 'offset': '12K', 'length': '4K'}},
                  fork(P, C), snap('s18')]
    k = run(cfg, steps)
    pp, pc = pages(k, P), pages(k, C)
    h = int(pp.head[0])
    expect_state(k, h, 16, (P, 16), None, 0)
    assert k.mem.refcount[h] == 17
    assert (pc.folio_pages == 1).all() and len(set(pc.pfn) & set(pp.pfn)) == 0
    assert kpc_of_folio(k, h) == [1] * 16 and (pc.kpagecount == 1).all()
    assert bits(pp.exclusive) == bits(pc.exclusive) == '1' * 16
    assert all((query.vma_pages(k, v).writable).all() for v in range_vmas(k, P, 'buf'))
    want = {'Rss': 64, 'Pss': 64, 'Private_Dirty': 64}
    assert sm_subset(smaps(k, P), *want) == want
    assert sm_subset(smaps(k, C), *want) == want
    assert anon_kb(k) == 128


# S19: an order-14 file folio cannot be made (orders 0..9), so the largest
# case is used: a 2M page-cache folio (N = 512) mapped by one MM through 65
# VMAs that are not 2M aligned (PTE-mapped, 512 each).  64 mappings fill
# the 32-bit per-MM count exactly (32768 = stored 32767); the 65th
# overflows it (semantics.md 4.2 step 2, section 11).
S19_VMAS = 65
S19_BASE = 0x10000000           # low enough for a 32-bit TASK_SIZE


def _s19_steps():
    steps = []
    for i in range(S19_VMAS):
        steps.append(mmap(P, 'm%d' % i, '2M', kind='shared-file', file='big', prot='r',
                          addr=S19_BASE + i * (4 << 20) + (64 << 10)))
        steps.append(read(P, 'm%d' % i))
        if i == S19_VMAS - 2:
            steps.append(snap('full'))
    steps.append(snap('overflowed'))
    for i in range(S19_VMAS - 1):
        steps.append(munmap(P, 'm%d' % i))
    steps.append(snap('one-left'))
    return steps


S19_FILE = [{'name': 'big', 'size': '2M', 'folio_size': '2M'}]


@pytest.mark.parametrize('config', CONFIGS_32 + CONFIGS, ids=config_id)
def test_s19_per_mm_mapcount_overflow(config):
    sc = parse_scenario_text(scenario(_s19_steps(), files=S19_FILE))
    seen = []
    for label, k in snapshots(sc, config):
        seen.append(label)
        if label == 'full':
            h = int(pages(k, P, 'm0').head[0])
            assert k.mem.order[h] == 9 and not pages(k, P, 'm0').pmd.any()
            expect_state(k, h, 64 * 512, (P, 64 * 512), None, 0)
        elif label == 'overflowed':
            s = folio_state(k.mem, h)
            assert s.lm == 65 * 512
            if config.bits == 32:
                # slot 0 was freed at the overflowing batch; the later batches
                # of the 65th mapping found it free and took it again, counting
                # only themselves (4.2 step 4): S stays set
                assert s.shared and s.slots[1] is None
                assert s.slots[0] is None or \
                    (s.slots[0][0] == mm_id(k, P) and s.slots[0][1] < 512)
                assert is_shared(k, h)
            else:
                expect_state(k, h, 65 * 512, (P, 65 * 512), None, 0)
            # every page really is mapped 65 times: kpc 65 (precise or
            # average); b56 0 (precise count 65, or S set), except NO on
            # 64-bit where one MM certainly owns the folio (as in S14)
            assert kpc_of_folio(k, h) == [65] * 512
            exclusive = config.bits == 64 and not config.page_mapcount
            assert bits(pages(k, P, 'm64').exclusive) == ('1' if exclusive else '0') * 512
        elif label == 'one-left':
            pg = pages(k, P, 'm64')
            assert kpc_of_folio(k, h) == [1] * 512
            sm = smaps(k, P, 'm64')
            if config.bits == 32:
                expect_state(k, h, 512, None, None, 1)
                # only P maps the folio, once per page; NO keeps reporting
                # it shared
                assert bits(pg.exclusive) == pick(config, '1' * 512, '0' * 512)
                assert private_kb(sm) == pick(config, 2048, 0)
            else:
                expect_state(k, h, 512, (P, 512), None, 0)
                assert bits(pg.exclusive) == '1' * 512
                assert private_kb(sm) == 2048
    assert seen == ['full', 'overflowed', 'one-left']

"""The third kernel: 6.18 with the 2026 RFC "mm/rmap: support arbitrary
folio mappings" (20260412-mapcount-v1-0-05e8dfab52e0@kernel.org) applied,
configs/kernels/total_mapped_pages*.yaml.

Every expected value comes from a patch of the series, cited as "RFC
NN/13": the cover letter (00/13), the commit message and code of 13/13
(_total_mapped_pages, folio_average_page_mapcount(),
__folio_certainly_partially_mapped(), nr_pmdmapped), 02/13 (mapmax),
03/13 (kpagecount), 04/13 (PM_MMAP_EXCLUSIVE), 06/13 (smaps_account()).
"""
from pathlib import Path

import numpy as np
import pytest
import yaml

from mmcore.config import (ConfigError, NO_PAGE_MAPCOUNT, PAGE_MAPCOUNT, TOTAL_MAPPED_PAGES,
                           load_kernel_config)
from mmcore.mapcount import (TotalMappedPages, TotalMapcountOverflow,
                             folio_total_mapped_pages_average, policy_for)
from mmcore.memory import FL_ANON, FL_PARTIALLY_MAPPED
from mmcore import query
from procfs.formats.smaps import SmapsPages, smaps_account

from helpers_core import BareRmap, mm_id, range_pages, replay, smaps_kb
from scenario_steps import fork, mmap, munmap, snap, write

KERNELS = Path(__file__).resolve().parents[1] / 'configs' / 'kernels'
A, B, C = 5, 7, 9
P, CH = 100, 101
THP_PMD = {'enabled': 'always'}
THREE = (PAGE_MAPCOUNT, NO_PAGE_MAPCOUNT, TOTAL_MAPPED_PAGES)


def rfc(bits=64):
    return BareRmap(load_kernel_config(str(KERNELS / ('total_mapped_pages%s.yaml'
                                                      % ('' if bits == 64 else '-32bit')))))


def avg(b, h):
    return int(folio_total_mapped_pages_average(b.mem, [h])[0])


# --- the config files -------------------------------------------------------------------

def test_config_files():
    c64 = load_kernel_config(str(KERNELS / 'total_mapped_pages.yaml'))
    c32 = load_kernel_config(str(KERNELS / 'total_mapped_pages-32bit.yaml'))
    assert (c64.rmap, c64.bits, c64.page_mapcount) == ('total_mapped_pages', 64, False)
    assert (c32.rmap, c32.bits) == ('total_mapped_pages', 32)
    assert isinstance(policy_for(c64), TotalMappedPages)


def test_config_naming_a_removed_kconfig_is_an_error(tmp_path):
    # RFC 07/13 deletes CONFIG_NO_PAGE_MAPCOUNT and CONFIG_PAGE_MAPCOUNT
    f = tmp_path / 'k.yaml'
    f.write_text('name: x\nrmap: total_mapped_pages\nCONFIG_NO_PAGE_MAPCOUNT: y\n')
    with pytest.raises(ConfigError, match='k.yaml: CONFIG_NO_PAGE_MAPCOUNT does not exist'):
        load_kernel_config(str(f))
    f.write_text('name: x\nrmap: pmd_mapcount\n')
    with pytest.raises(ConfigError, match="k.yaml: rmap must be one of"):
        load_kernel_config(str(f))


def test_served_by_default():
    from procfs.cli import default_configs
    names = [Path(p).stem for p in default_configs()]
    assert names == ['no_page_mapcount', 'page_mapcount', 'total_mapped_pages']


# --- the cover letter's and 13/13's examples ---------------------------------------------

def test_pmd_folio_two_pmds_one_pte():
    """13/13: "a PMD-sized large folio with 512 pages that is mapped through
    2 PMDs and a single PTE has mapcount == 3 and 1025 total mapped pages"."""
    b = rfc()
    h, p = b.folio(9)
    b.rmap.add_pmd(A, [h])
    b.rmap.add_pmd(B, [h])
    b.rmap.add_ptes(A, p[5:6])
    assert int(b.mem.large_mapcount[h]) == 3
    assert int(b.mem.total_mapped_pages[h]) == 1025
    assert int(b.mem.entire_mapcount[h]) == 0           # the field is gone
    # folio_average_page_mapcount(): (1025 + 256) >> 9 = 2
    assert avg(b, h) == 2
    assert list(b.policy.kpagecount(b.mem, p[[0, 5, 511]])) == [2, 2, 2]


def test_two_pmd_mappings_contribute_1024():
    """folio_total_mapped_pages() doc (13/13): "a single folio mapped through
    two PMD-sized mappings will contribute 1024 pages to the total"."""
    b = rfc()
    h, _ = b.folio(9)
    b.rmap.add_pmd(A, [h])
    b.rmap.add_pmd(A, [h])
    assert int(b.mem.total_mapped_pages[h]) == 1024
    b.rmap.remove_pmd(A, [h])
    b.rmap.remove_pmd(A, [h])
    assert int(b.mem.total_mapped_pages[h]) == 0 and int(b.mem.large_mapcount[h]) == 0


@pytest.mark.parametrize('total,want', [(0, 0), (1, 1), (7, 1), (8, 1), (23, 1), (24, 2),
                                        (40, 3)])
def test_average_rounds_half_up_at_least_one(total, want):
    """13/13 folio_average_page_mapcount(): !total -> total; else
    max((total + 2^(order-1)) >> order, 1); here order 4: +8, >> 4."""
    b = rfc()
    h, p = b.folio(4)
    for i in range(total):           # one PTE per mapping, pages in turn
        b.rmap.add_ptes(A + (i // 16), p[i % 16:i % 16 + 1])
    assert int(b.mem.total_mapped_pages[h]) == total
    assert avg(b, h) == want


def test_small_folio_average_is_its_mapcount():
    """13/13: !order -> total, and the total of a small folio is
    folio_mapcount()."""
    b = rfc()
    h, p = b.folio(0)
    b.rmap.add_ptes(A, p)
    b.rmap.add_ptes(B, p)
    assert avg(b, h) == 2


@pytest.mark.parametrize('config', THREE, ids=lambda c: c.name)
def test_certainly_partially_mapped(config):
    """13/13 __folio_certainly_partially_mapped(): total && total < nr_pages,
    on PTE and PMD removal of an anon folio.  A PMD folio whose PMD goes
    while 100 of its pages stay PTE-mapped by another MM is queued; one
    PTE-mapped by two MMs over 600 page mappings is not (600 >= 512)."""
    b = BareRmap(config)
    h, p = b.folio(9)
    b.mem.flags[h] |= FL_ANON
    b.rmap.add_pmd(A, [h])
    b.rmap.add_ptes(B, p[:100])
    b.rmap.remove_pmd(A, [h])
    assert b.mem.flags[h] & FL_PARTIALLY_MAPPED
    h2, p2 = b.folio(9)
    b.mem.flags[h2] |= FL_ANON
    b.rmap.add_ptes(A, p2[:300])
    b.rmap.add_ptes(B, p2[200:])
    b.rmap.remove_ptes(A, p2[:1])
    # 599 page mappings >= 512: "certainly partially mapped" cannot tell
    # (page 0 is unmapped now, which only PAGE_MAPCOUNT sees)
    assert bool(b.mem.flags[h2] & FL_PARTIALLY_MAPPED) == config.page_mapcount


def test_pmd_statistics_only_for_pmd_sized_folios():
    """13/13: nr_pmdmapped (NR_ANON_THPS, NR_*_PMDMAPPED) only when
    folio_large_nr_pages() == HPAGE_PMD_NR, from the first PMD to the last."""
    b = rfc()
    h, p = b.folio(9)
    b.rmap.add_ptes(A, p[:3])
    assert not b.policy.pmd_mapped(b.mem, [h])[0]
    b.rmap.add_pmd(B, [h])
    b.rmap.add_pmd(C, [h])
    assert b.policy.pmd_mapped(b.mem, [h])[0]
    b.rmap.remove_pmd(B, [h])
    assert b.policy.pmd_mapped(b.mem, [h])[0]
    b.rmap.remove_pmd(C, [h])
    assert not b.policy.pmd_mapped(b.mem, [h])[0]
    big, _ = b.folio(10)
    b.rmap.add_pmd(A, [big], n=[2])
    assert int(b.mem.large_mapcount[big]) == 2 and int(b.mem.total_mapped_pages[big]) == 1024
    assert not b.policy.pmd_mapped(b.mem, [big])[0]


def test_32bit_total_overflow_is_refused_before_any_change():
    """Cover letter TODO "Mapcount overflows": reject a mapping that would
    make the 32-bit total turn negative; nothing of the batch changes."""
    b = rfc(32)
    h, p = b.folio(9)
    b.rmap.add_pmd(A, [h])
    b.mem.total_mapped_pages[h] = (1 << 31) - 1 - 511      # as if mapped ~4M times
    before = (int(b.mem.large_mapcount[h]), int(b.mem.mm_id_mapcount[h, 0]))
    with pytest.raises(TotalMapcountOverflow, match='ENOMEM: folio %d' % h):
        b.rmap.add_pmd(A, [h])
    assert (int(b.mem.large_mapcount[h]), int(b.mem.mm_id_mapcount[h, 0])) == before
    b.rmap.add_ptes(A, p[:511])                             # exactly LONG_MAX: allowed
    assert int(b.mem.total_mapped_pages[h]) == (1 << 31) - 1


# --- what /proc shows ------------------------------------------------------------------

def doc(steps, thp=THP_PMD):
    return yaml.safe_dump({'format': 1, 'name': 't', 'kernel': {'thp': thp},
                           'processes': [{'pid': P}], 'steps': steps}, sort_keys=False)


PMD_FORK = [mmap(P, 'buf', '2M', align='2M'), write(P, 'buf'), fork(P, CH)]


@pytest.mark.parametrize('page', [0, 7])
def test_pmd_bit56_is_folio_level(page):
    """04/13: pagemap_pmd_range_thp() sets PM_MMAP_EXCLUSIVE from
    !folio_maybe_mapped_shared(folio) for every entry of the PMD.  After a
    fork and the parent's write at `page` (PMD split, that page copied), the
    child's PMD maps a folio the parent still maps 511 pages of: bit 56 is
    clear on all 512 entries.  CONFIG_PAGE_MAPCOUNT computes it from the
    PMD's first page (set on all 512 when page 0 was copied, semantics.md
    12.1 [real]); 6.18 NO_PAGE_MAPCOUNT was already folio-level on that path
    (__folio_page_mapped_exclusively()), so it agrees with the RFC."""
    text = doc(PMD_FORK + [write(P, 'buf', page * 4096, 4096)])
    got = {}
    for cfg in THREE:
        k = replay(text, cfg)
        got[cfg.name] = range_pages(k, CH, 'buf').exclusive
    assert got['total_mapped_pages'].tolist() == [False] * 512
    assert got['no_page_mapcount'].tolist() == [False] * 512
    assert got['page_mapcount'].tolist() == [page == 0] * 512


def test_pmd_fork_kpagecount_mapmax():
    """03/13 and 02/13: the average of the total, (1024 + 256) >> 9 = 2,
    for every PFN and for mapmax of the PMD."""
    k = replay(doc(PMD_FORK), TOTAL_MAPPED_PAGES)
    rp = range_pages(k, CH, 'buf')
    h = int(rp.head[0])
    assert int(k.mem.total_mapped_pages[h]) == 1024 and int(k.mem.large_mapcount[h]) == 2
    assert set(query.kpagecount(k, h + np.arange(512)).tolist()) == {2}
    assert set(rp.numa_mapcount.tolist()) == {2}


def test_free_page_kpagecount_is_zero():
    """13/13: folio_total_mapped_pages() of a small folio is
    folio_mapcount(), which reads a page type (a free buddy page) as 0;
    6.18 NO_PAGE_MAPCOUNT read _mapcount raw (semantics.md 12.4)."""
    k = replay(doc([mmap(P, 'buf', '4K')]), TOTAL_MAPPED_PAGES)
    free = np.flatnonzero(k.mem.free)[:4096]
    assert set(query.kpagecount(k, free).tolist()) == {0}


def test_smaps_pss_of_a_pmd_is_one_division():
    """06/13 smaps_account(): pss = folio_size << PSS_SHIFT, divided once by
    the average mapcount: (2M << 12) // 3 = 2863311530, where 6.18 summed
    512 pages of (4K << 12) // 3 = 5592405 each (2863311360)."""
    pages = SmapsPages(mapcount=np.full(512, 3), private=False, pmd=True)
    assert smaps_account(pages).pss == 512 * ((4096 << 12) // 3) == 2863311360
    assert smaps_account(pages, pss_per_entry=True).pss == (2 << 20 << 12) // 3 == 2863311530
    assert smaps_account(SmapsPages(mapcount=np.full(512, 1), pmd=True),
                         pss_per_entry=True).pss == 2 << 20 << 12


def test_three_pmds_smaps():
    """06/13: Pss of a PMD mapped by three MMs is (2M << 12) / 3 in kB:
    682; Shared, not Private (folio_maybe_mapped_shared())."""
    from procfs.pid import vma_counters
    for cfg, pss in ((TOTAL_MAPPED_PAGES, (2 << 20 << 12) // 3),
                     (NO_PAGE_MAPCOUNT, 512 * ((4096 << 12) // 3))):
        k = replay(doc(PMD_FORK + [fork(P, 102)]), cfg)
        c = vma_counters(k, k.processes[CH].mm.vmas[0])
        assert c.pss == pss
        sm = smaps_kb(k, CH, 'buf')
        assert sm['Rss'] == 2048 and sm['Pss'] == pss >> 12 >> 10 == 682
        assert sm['Shared_Dirty'] == 2048 and sm['Private_Dirty'] == 0


def test_mm_id_of_child():
    k = replay(doc(PMD_FORK), TOTAL_MAPPED_PAGES)
    h = int(range_pages(k, P, 'buf').head[0])
    assert sorted(k.mem.mm_id[h].tolist()) == sorted([mm_id(k, P), mm_id(k, CH)])


# --- folios larger than a PMD --------------------------------------------------------------

def big_file_doc(folio_size, vma_size, file_offset=0, fork_read=False):
    steps = [mmap(P, 'a', vma_size, kind='shared-file', file='f', align='2M',
                  file_offset=file_offset),
             {'read': {'pid': P, 'vma': 'a', 'offset': 0, 'length': 4096}}]
    if fork_read:
        steps += [fork(P, CH), {'read': {'pid': CH, 'vma': 'a', 'offset': 0, 'length': 4096}}]
    return yaml.safe_dump({'format': 1, 'name': 't', 'kernel': {'memory': '256M', 'thp': THP_PMD},
                           'files': [{'name': 'f', 'size': '8M', 'folio_size': folio_size}],
                           'processes': [{'pid': P}], 'steps': steps}, sort_keys=False)


@pytest.mark.parametrize('config', [PAGE_MAPCOUNT, NO_PAGE_MAPCOUNT] + [
    load_kernel_config(str(KERNELS / n)) for n in ('page_mapcount-32bit.yaml',
                                                   'no_page_mapcount-32bit.yaml')],
    ids=lambda c: c.name)
@pytest.mark.parametrize('folio_size', ['4M', '8M'])
def test_6_18_refuses_folios_larger_than_a_pmd(config, folio_size):
    """6.18: MAX_PAGECACHE_ORDER is the PMD order; no page-cache or shmem
    folio is larger."""
    from mmcore.errors import StepError
    with pytest.raises(StepError, match='folio_size %dK is larger than kernel config %s'
                       % (int(folio_size[0]) << 10, config.name)):
        replay(big_file_doc(folio_size, '4M'), config)


def test_order_11_folio_three_pmds_and_ptes():
    """13/13: a folio spanning several PMDs: an 8M (order-11) tmpfs folio
    under a 7M shared mapping is mapped by 3 PMDs and 256 PTEs: mapcount
    3 + 256 = 259, total 3 * 512 + 256 = 1792, average
    max((1792 + 1024) >> 11, 1) = 1; after a fork and the child's read
    (fork leaves page-cache PMDs to refault) both do so: 518, 3584,
    (3584 + 1024) >> 11 = 2.  Not PMD-sized: no ShmemPmdMapped in
    meminfo (13/13 nr_pmdmapped)."""
    k = replay(big_file_doc('8M', '7M'), TOTAL_MAPPED_PAGES)
    rp = range_pages(k, P, 'a')
    h = int(rp.head[0])
    assert int(k.mem.order[h]) == 11
    assert rp.pmd.tolist() == [True] * 1536 + [False] * 256
    assert (int(k.mem.large_mapcount[h]), int(k.mem.total_mapped_pages[h])) == (259, 1792)
    assert set(query.kpagecount(k, h + np.arange(2048)).tolist()) == {1}
    assert query.node_stats(k)['shmem_pmdmapped'] == 0
    assert int(k.mem.refcount[h]) == 2048 + 259
    k = replay(big_file_doc('8M', '7M', fork_read=True), TOTAL_MAPPED_PAGES)
    h = int(range_pages(k, CH, 'a').head[0])
    assert (int(k.mem.large_mapcount[h]), int(k.mem.total_mapped_pages[h])) == (518, 3584)
    assert set(query.kpagecount(k, h + np.arange(2048)).tolist()) == {2}
    assert not range_pages(k, CH, 'a').exclusive.any()
    sm = smaps_kb(k, CH, 'a')
    assert (sm['Rss'], sm['Pss'], sm['Shared_Clean']) == (7168, 3584, 7168)


def test_order_10_folio_misaligned_is_ptes_only():
    """A mapping 1M into a 4M folio cannot place a PMD (do_set_pmd needs
    the folio part PMD-aligned in the VMA): 768 PTEs, total == mapcount."""
    k = replay(big_file_doc('4M', '3M', file_offset='1M'), TOTAL_MAPPED_PAGES)
    rp = range_pages(k, P, 'a')
    h = int(rp.head[0])
    assert int(k.mem.order[h]) == 10 and not rp.pmd.any() and rp.present.all()
    assert (int(k.mem.large_mapcount[h]), int(k.mem.total_mapped_pages[h])) == (768, 768)
    # (768 + 512) >> 10 = 1
    assert set(query.kpagecount(k, h + np.arange(1024)).tolist()) == {1}


@pytest.mark.parametrize('config', THREE, ids=lambda c: c.name)
def test_partial_mapping_example_a(config):
    """RFC 01/13, example (A): "Allocate a THP and fork a child process.
    Then, unmap up to half of the THP in the parent *and* the child. Once
    the child quits, we detect the partial mapping" - the mapcount (here
    the total, 256 + 256) stays >= 512 until then.  CONFIG_PAGE_MAPCOUNT
    sees it at the child's munmap (pages 256-511 lose their last mapping)."""
    from mmcore.scenario import parse_scenario_text
    from mmcore.kernel import Kernel
    steps = PMD_FORK + [munmap(P, 'buf', '1M', '1M'), munmap(CH, 'buf', '1M', '1M'),
                        snap('both'), {'exit': {'pid': CH}}]
    sc = parse_scenario_text(doc(steps))
    k = Kernel(config, sc)
    k.run(sc.steps, 'both')
    h = int(range_pages(k, P, 'buf').head[0])
    flagged = bool(k.mem.flags[h] & FL_PARTIALLY_MAPPED)
    assert flagged == config.page_mapcount
    if config is TOTAL_MAPPED_PAGES:
        assert int(k.mem.total_mapped_pages[h]) == 512
    k.run(sc.steps[len(sc.steps_until('both')):])
    assert k.mem.flags[h] & FL_PARTIALLY_MAPPED
    assert k.events['thp_deferred_split_page'] == 1


# --- the served subtree on every conformance scenario ----------------------------------------

CONFORMANCE = sorted((Path(__file__).resolve().parent / 'conformance' / 'scenarios').glob('*.yaml')) + \
    sorted((Path(__file__).resolve().parent / 'data' / 'conformance-public' / 'scenarios')
           .glob('*.yaml'))


def _rollup(root, config, pid):
    from procfs.tree import resolve
    text = resolve(root, '%s/proc/%d/smaps_rollup' % (config, pid)).render().decode()
    return {line.split(':')[0]: int(line.split()[1]) for line in text.splitlines()[1:]}


@pytest.mark.parametrize('scenario', CONFORMANCE, ids=lambda p: p.stem)
def test_subtree_promises_on_conformance(scenario):
    """The served total_mapped_pages subtree at every snapshot of every
    conformance scenario, against page_mapcount: smaps_rollup Rss is the
    same (cover letter: only per-page answers change), USS (Private_*) is
    never higher (06/13: private only if !folio_maybe_mapped_shared()),
    and Pss_Anon + Pss_File + Pss_Shmem still add up to Pss."""
    from mmcore.scenario import load_scenario
    from procfs.build import build_tree
    labels = load_scenario(str(scenario)).labels
    configs = [str(KERNELS / 'page_mapcount.yaml'), str(KERNELS / 'total_mapped_pages.yaml')]
    for label in labels:
        root, _ = build_tree(str(scenario), configs, stop_at=label, with_init=False)
        pids = sorted(int(n) for n in root.lookup('page_mapcount').lookup('proc').children()
                      if n.isdigit())
        for pid in pids:
            page, rfc_ = _rollup(root, 'page_mapcount', pid), _rollup(root, 'total_mapped_pages', pid)
            where = '%s/%s pid %d' % (scenario.stem, label, pid)
            assert rfc_['Rss'] == page['Rss'], where
            uss = lambda r: r['Private_Clean'] + r['Private_Dirty']
            assert uss(rfc_) <= uss(page), where
            assert abs(rfc_['Pss_Anon'] + rfc_['Pss_File'] + rfc_['Pss_Shmem'] - rfc_['Pss']) <= 2, where


def test_diff_and_tools_have_three_columns():
    """`mmemu diff` / `mmemu tools` over the default configs: one column per
    kernel; worker2's USS of the showcase under the RFC is the
    NO_PAGE_MAPCOUNT value (06/13: private iff !folio_maybe_mapped_shared())."""
    from procfs.build import diff_report, tools_report
    from procfs.cli import DEFAULT_SCENARIO, default_configs
    names = ['no_page_mapcount', 'page_mapcount', 'total_mapped_pages']
    d = diff_report(str(DEFAULT_SCENARIO), default_configs())
    assert d.splitlines()[0].endswith(': ' + ', '.join(names))
    block = d.split('pid 102 (worker2) range heap')[1].split('\n\n')[0]
    header = block.splitlines()[1].split()
    assert header == names
    uss = [l for l in block.splitlines() if l.strip().startswith('USS')][0].split()
    assert uss[-4:-1] == ['4', '488', '4']
    t = tools_report(str(DEFAULT_SCENARIO), default_configs())
    assert all(n in t.splitlines()[4] for n in names + ['true'])

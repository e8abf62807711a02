"""Behaviours checked with small C programs on this machine's real 6.18
kernel (CONFIG_PAGE_MAPCOUNT=y, CONFIG_PT_RECLAIM=y, tmpfs for the file
cases) during a review of the core; each test states what the real kernel
did and the kernel function responsible.  Both mapcount configs must show
the same (none of these depends on per-page mapcounts, semantics.md 12.9).
"""
import numpy as np
import pytest

from mmcore.config import NO_PAGE_MAPCOUNT, PAGE_MAPCOUNT
from mmcore.errors import StepError
from mmcore.kernel import Kernel
from mmcore.memory import FL_ACTIVE, FL_DIRTY, FL_SWAPBACKED
from mmcore.mm import PTE_PMD, PTE_YOUNG
from mmcore.scenario import parse_scenario_text
from mmcore import query
from procfs import pid as pidfiles

CONFIGS = [PAGE_MAPCOUNT, NO_PAGE_MAPCOUNT]


def replay(config, body, header=''):
    sc = parse_scenario_text('format: 1\nname: t\n%s\nprocesses: [{pid: 100}]\nsteps:\n%s'
                             % (header, body))
    k = Kernel(config, sc)
    k.run(sc.steps)
    return k


def vma_of(k, name, pid=100):
    return k.range_vmas(k.processes[pid], name)


def present(k, name, pid=100):
    return ''.join('1' if x >= 0 else '0' for v in vma_of(k, name, pid) for x in v.pfn)


def folio_pages(k, name, index=0, pid=100):
    v = vma_of(k, name, pid)[0]
    return 1 << int(k.mem.order[k.mem.head[v.pfn[index]]])


@pytest.mark.parametrize('config', CONFIGS, ids=lambda c: c.name)
def test_dontneed_frees_the_empty_page_table(config):
    """MADV_DONTNEED passes zap_details.reclaim_pt: a page table left empty
    is freed (CONFIG_PT_RECLAIM), so the next write gets a PMD THP again
    (real: Rss 2048 kB, AnonHugePages 2048 kB after the rewrite)."""
    k = replay(config, '''
  - mmap: {pid: 100, name: b, size: 2M, align: 2M}
  - madvise: {pid: 100, vma: b, advice: nohugepage}
  - write: {pid: 100, vma: b}
  - madvise: {pid: 100, vma: b, advice: dontneed}
  - madvise: {pid: 100, vma: b, advice: hugepage}
  - write: {pid: 100, vma: b, offset: 0, length: 4K}
''', 'kernel: {thp: {enabled: madvise}}')
    v = vma_of(k, 'b')[0]
    assert (v.bits & PTE_PMD).all()
    assert query.node_stats(k)['anon_thps'] == 512


@pytest.mark.parametrize('config', CONFIGS, ids=lambda c: c.name)
def test_shmem_thp_needs_an_aligned_block_inside_the_vma(config):
    """shmem_suitable_orders() / shmem_allowable_huge_orders(): with
    shmem_enabled=always a misaligned VMA, a VMA covering half a block and
    a VM_NOHUGEPAGE VMA all get 4K folios (real: Shmem 12 kB,
    ShmemHugePages 0)."""
    k = replay(config, '''
  - mmap: {pid: 100, name: a, size: 4M, kind: shared-anon, addr: 0x7e0000010000}
  - write: {pid: 100, vma: a, offset: 0, length: 4K}
  - mmap: {pid: 100, name: b, size: 4M, kind: shared-anon, align: 2M}
  - munmap: {pid: 100, vma: b, offset: 3M, length: 1M}
  - write: {pid: 100, vma: b, offset: 2M, length: 4K}
  - mmap: {pid: 100, name: c, size: 2M, kind: shared-anon, align: 2M}
  - madvise: {pid: 100, vma: c, advice: nohugepage}
  - write: {pid: 100, vma: c, offset: 0, length: 4K}
''', 'kernel: {thp: {enabled: never, shmem_enabled: always}}')
    assert folio_pages(k, 'a') == 1
    assert folio_pages(k, 'b', 512) == 1
    assert folio_pages(k, 'c') == 1
    s = query.node_stats(k)
    assert (s['shmem'], s['shmem_thps']) == (3, 0)


@pytest.mark.parametrize('config', CONFIGS, ids=lambda c: c.name)
def test_fault_around_window_is_shifted_not_cut(config):
    """do_fault_around(): the window starts at the 64K-aligned address
    clamped to the VMA start and runs for 16 pages (real: a read of page 0
    of a VMA starting 16K past a 64K boundary maps 16 PTEs)."""
    k = replay(config, '''
  - mmap: {pid: 100, name: w, size: 256K, kind: shared-file, file: data, align: 2M}
  - write: {pid: 100, vma: w}
  - mmap: {pid: 100, name: v, size: 128K, kind: shared-file, file: data, addr: 0x7e0000014000}
  - read: {pid: 100, vma: v, offset: 0, length: 4K}
''', 'files: [{name: data, size: 256K}]')
    assert present(k, 'v') == '1' * 16 + '0' * 16


@pytest.mark.parametrize('config', CONFIGS, ids=lambda c: c.name)
def test_write_into_a_partly_mapped_large_folio_maps_one_page(config):
    """finish_fault() maps a large folio whole only when none of its PTEs
    is populated; otherwise the faulting page alone (real: after a read of
    the 256K folio and MADV_DONTNEED of 64K-128K, a write at 80K maps only
    page 20)."""
    k = replay(config, '''
  - mmap: {pid: 100, name: a, size: 256K, kind: shared-file, file: data, align: 256K}
  - read: {pid: 100, vma: a, offset: 0, length: 4K}
  - madvise: {pid: 100, vma: a, offset: 64K, length: 64K, advice: dontneed}
  - write: {pid: 100, vma: a, offset: 80K, length: 4K}
''', 'files: [{name: data, size: 256K, folio_size: 256K}]')
    assert present(k, 'a') == '1' * 16 + '0000' + '1' + '0' * 11 + '1' * 32


@pytest.mark.parametrize('config', CONFIGS, ids=lambda c: c.name)
def test_cold_goes_on_over_the_pages_of_a_split_folio(config):
    """madvise_cold_or_pageout_pte_range() splits a large folio the range
    covers in part and then handles its pages (nr = 0): they lose their
    young bits (real: Referenced 1020 kB of Rss 2044 kB after MADV_COLD of
    the first 1M)."""
    k = replay(config, '''
  - mmap: {pid: 100, name: b, size: 2M, align: 2M}
  - madvise: {pid: 100, vma: b, advice: hugepage}
  - write: {pid: 100, vma: b}
  - madvise: {pid: 100, vma: b, offset: 2044K, length: 4K, advice: dontneed}
  - madvise: {pid: 100, vma: b, offset: 0, length: 1M, advice: cold}
''', 'kernel: {thp: {enabled: madvise}}')
    c = pidfiles.vma_counters(k, vma_of(k, 'b')[0])
    assert (c.resident >> 10, c.referenced >> 10) == (2044, 1020)


@pytest.mark.parametrize('config', CONFIGS, ids=lambda c: c.name)
def test_fork_leaves_page_cache_pmds_to_refault(config):
    """copy_huge_pmd() skips a PMD of a non-anonymous VMA ("can be
    re-filled on fault"): the child of a private file mapping holds only
    its private copy (real: child Rss 4 kB, ShmemPmdMapped 0, RssShmem 0)."""
    k = replay(config, '''
  - mmap: {pid: 100, name: f, size: 4M, kind: file, file: data, align: 2M}
  - read: {pid: 100, vma: f, offset: 0, length: 4K}
  - write: {pid: 100, vma: f, offset: 2052K, length: 4K}
  - fork: {pid: 100, child: 101}
''', 'files: [{name: data, size: 4M, folio_size: 2M}]')
    s = query.mm_stats(k, k.processes[101])
    assert (s['anon'], s['shmem'], s['file']) == (1, 0, 0)


@pytest.mark.parametrize('config', CONFIGS, ids=lambda c: c.name)
def test_keeponfork_is_accepted_on_shared_memory(config):
    """Only MADV_WIPEONFORK insists on private anonymous memory;
    MADV_KEEPONFORK returns 0 anywhere (real)."""
    k = replay(config, '''
  - mmap: {pid: 100, name: s, size: 64K, kind: shared-anon}
  - madvise: {pid: 100, vma: s, advice: keeponfork}
''')
    assert vma_of(k, 's')
    with pytest.raises(StepError, match='WIPEONFORK'):
        replay(config, '''
  - mmap: {pid: 100, name: s, size: 64K, kind: shared-anon}
  - madvise: {pid: 100, vma: s, advice: wipeonfork}
''')


@pytest.mark.parametrize('config', CONFIGS, ids=lambda c: c.name)
def test_rewritten_lazyfree_page_survives_pageout_dirty_and_active(config):
    """try_to_unmap_one() finds the PTE dirty again after MADV_FREE: the
    folio is marked dirty and swap-backed and shrink_folio_list()
    activates it (real kpageflags of page 0: DIRTY, ACTIVE, SWAPBACKED);
    the untouched lazily freed pages are discarded."""
    k = replay(config, '''
  - mmap: {pid: 100, name: a, size: 64K}
  - write: {pid: 100, vma: a}
  - madvise: {pid: 100, vma: a, advice: free}
  - write: {pid: 100, vma: a, offset: 0, length: 4K}
  - madvise: {pid: 100, vma: a, advice: pageout}
''', 'kernel: {thp: {enabled: never}}')
    assert present(k, 'a') == '1' + '0' * 15
    f = k.mem.flags[k.mem.head[vma_of(k, 'a')[0].pfn[0]]]
    assert f & FL_DIRTY and f & FL_ACTIVE and f & FL_SWAPBACKED


@pytest.mark.parametrize('config', CONFIGS, ids=lambda c: c.name)
def test_lazyfree_thp_is_reclaimed_without_a_deferred_split(config):
    """Reclaim unmaps a lazily freed PMD THP in one go (real:
    thp_deferred_split_page +0)."""
    k = replay(config, '''
  - mmap: {pid: 100, name: b, size: 2M, align: 2M}
  - madvise: {pid: 100, vma: b, advice: hugepage}
  - write: {pid: 100, vma: b}
  - madvise: {pid: 100, vma: b, advice: free}
  - madvise: {pid: 100, vma: b, advice: pageout}
''', 'kernel: {thp: {enabled: madvise}}')
    assert present(k, 'b') == '0' * 512
    assert k.events['thp_deferred_split_page'] == 0


@pytest.mark.parametrize('config', CONFIGS, ids=lambda c: c.name)
def test_a_read_through_a_pmd_marks_all_its_pages_referenced(config):
    """The accessed bit of a PMD leaf covers its 512 pages: a 4K read by the
    child after fork makes smaps Referenced 2048 kB."""
    k = replay(config, '''
  - mmap: {pid: 100, name: b, size: 2M, align: 2M}
  - madvise: {pid: 100, vma: b, advice: hugepage}
  - write: {pid: 100, vma: b}
  - fork: {pid: 100, child: 101}
  - read: {pid: 101, vma: b, offset: 0, length: 4K}
''', 'kernel: {thp: {enabled: madvise}}')
    v = vma_of(k, 'b', 101)[0]
    assert (v.bits & PTE_YOUNG).all()


@pytest.mark.parametrize('config', CONFIGS, ids=lambda c: c.name)
def test_mprotect_stops_at_a_hole_madvise_goes_on(config):
    """do_mprotect_pkey() changes the VMAs up to the first hole and then
    fails with ENOMEM; madvise_walk_vmas() applies the advice to every
    mapped part and reports ENOMEM at the end (mm/mprotect.c,
    mm/madvise.c)."""
    from mmcore.mm import VM_HUGEPAGE, VM_WRITE
    k = replay(config, """
  - mmap: {pid: 100, name: a, size: 64K}
  - munmap: {pid: 100, vma: a, offset: 16K, length: 16K}
  - mprotect: {pid: 100, vma: a, prot: r, expect: fault}
  - madvise: {pid: 100, vma: a, advice: hugepage, expect: fault}
""")
    assert [reason.split(':')[0] for _, reason in k.faults] == ['ENOMEM', 'ENOMEM']
    vmas = vma_of(k, 'a')
    assert [(v.start - v.range_start, bool(v.flags & VM_WRITE)) for v in vmas] == \
        [(0, False), (32 << 10, True)]
    assert all(v.flags & VM_HUGEPAGE for v in vmas)


# --- fidelity round 2 (issue 10); each backed by a recording in tests/conformance ---

@pytest.mark.parametrize('config', CONFIGS, ids=lambda c: c.name)
def test_collapse_of_pages_shared_with_a_child(config):
    """Linux 6.18 dropped the writable requirement (SCAN_PAGE_RO) from
    __collapse_huge_page_isolate() and hpage_collapse_scan_pmd(); the
    folio_maybe_mapped_shared() limit (max_ptes_shared) only applies when
    cc->is_khugepaged.  So MADV_COLLAPSE of 512 small pages all shared
    with a forked child (every PTE write-protected) collapses: the caller
    gets a new PMD THP of copies and the child's pages are now mapped once
    (recording collapse-shared-small/collapsed: parent AnonHugePages 2048,
    kpc 1 fsz 512; child kpc 1 fsz 1, b56 1)."""
    k = replay(config, '''
  - mmap: {pid: 100, name: s, size: 2M, align: 2M}
  - write: {pid: 100, vma: s}
  - fork: {pid: 100, child: 101}
  - madvise: {pid: 100, vma: s, advice: collapse}
''', 'kernel: {thp: {enabled: never}}')
    v, c = vma_of(k, 's')[0], vma_of(k, 's', 101)[0]
    assert (v.bits & PTE_PMD).all() and folio_pages(k, 's') == 512
    assert k.events['thp_collapse_alloc'] == 1
    assert folio_pages(k, 's', 0, 101) == 1
    assert not np.isin(c.pfn, v.pfn).any()
    assert (query.kpagecount(k, c.pfn) == 1).all()


@pytest.mark.parametrize('config', CONFIGS, ids=lambda c: c.name)
def test_fork_copies_the_huge_zero_pmd(config):
    """do_huge_pmd_anonymous_page() calls vmf_anon_prepare() before it maps
    the huge zero page, so the VMA has an anon_vma and vma_needs_copy()
    lets copy_huge_pmd() copy the huge-zero PMD into the child.  A 4K
    zero-page read (do_anonymous_page) prepares none, so that VMA is not
    copied (recording huge-zero-fork/forked: child hz present, kpc 0,
    flags THZ/TtZ; child z empty)."""
    k = replay(config, '''
  - mmap: {pid: 100, name: hz, size: 2M, align: 2M}
  - mmap: {pid: 100, name: z, size: 64K, align: 64K}
  - read: {pid: 100, vma: hz}
  - read: {pid: 100, vma: z}
  - fork: {pid: 100, child: 101}
''', 'kernel: {thp: {enabled: always}}')
    c = vma_of(k, 'hz', 101)[0]
    assert (c.pfn == k.mem.huge_zero_pfn + np.arange(512)).all()
    assert (c.bits & PTE_PMD).all()
    assert present(k, 'z', 101) == '0' * 16


@pytest.mark.parametrize('config', CONFIGS, ids=lambda c: c.name)
def test_pin_of_mapped_pages_marks_nothing_accessed(config):
    """pin_user_pages_fast(): gup_fast() takes present writable entries
    without folio_mark_accessed(); gup_fast_fallback() hands the pages from
    the first one it cannot take to the slow path, where follow_page_pte()
    (FOLL_TOUCH) marks each PTE-mapped page accessed once and
    follow_huge_pmd() only makes the PMD young.  So a PMD THP, a 64K mTHP
    and small pages pinned after being written stay inactive, and so do the
    small pages of a range whose first page the pin faults in: each got one
    mark (recording pin-not-accessed/pinned and /forked: numa_maps active=0
    everywhere, also for the child's copies made at fork)."""
    k = replay(config, '''
  - mmap: {pid: 100, name: pmd, size: 2M, align: 2M}
  - mmap: {pid: 100, name: m64, size: 64K, align: 64K}
  - mmap: {pid: 100, name: slow, size: 64K, align: 64K}
  - write: {pid: 100, vma: pmd}
  - write: {pid: 100, vma: m64}
  - thp: {sizes: {64K: never}}
  - write: {pid: 100, vma: slow, offset: 4K, length: 60K}
  - pin: {pid: 100, vma: pmd}
  - pin: {pid: 100, vma: m64}
  - pin: {pid: 100, vma: slow}
  - fork: {pid: 100, child: 101}
''', 'kernel: {thp: {enabled: always, sizes: {64K: always}}}')
    for pid in (100, 101):
        for name in ('pmd', 'm64', 'slow'):
            heads = np.unique(k.mem.head[vma_of(k, name, pid)[0].pfn])
            assert not (k.mem.flags[heads] & FL_ACTIVE).any(), (pid, name)


@pytest.mark.parametrize('config', CONFIGS, ids=lambda c: c.name)
def test_page_holding_eof_maps_and_past_it_sigbus(config):
    """__do_fault() / shmem_fault() refuse only an index at or past
    DIV_ROUND_UP(i_size, PAGE_SIZE): the page holding the end of a
    10000-byte file maps (recording file-eof-partial-page: page 2 present
    through shared and private mappings, a private write copies it); the
    page wholly past EOF gets SIGBUS."""
    hdr = 'files: [{name: f, size: 10000}]'
    k = replay(config, '''
  - mmap: {pid: 100, name: f, size: 16K, kind: shared-file, file: f, align: 64K}
  - read: {pid: 100, vma: f, offset: 8K, length: 4K}
''', hdr)
    assert present(k, 'f') == '0010'
    with pytest.raises(StepError, match='SIGBUS'):
        replay(config, '''
  - mmap: {pid: 100, name: f, size: 16K, kind: shared-file, file: f, align: 64K}
  - read: {pid: 100, vma: f, offset: 12K, length: 4K}
''', hdr)


@pytest.mark.parametrize('config', CONFIGS, ids=lambda c: c.name)
def test_private_writable_mmap_larger_than_ram_is_enomem(config):
    """__vm_enough_memory() in OVERCOMMIT_GUESS mode (overcommit_memory 0)
    refuses one accountable request larger than RAM + swap (real, 24 GB RAM,
    no swap: a 30G private anonymous mmap fails with ENOMEM, 20G succeeds);
    a read-only mapping is not accountable."""
    hdr = 'kernel: {memory: 64M}'
    with pytest.raises(StepError, match='ENOMEM'):
        replay(config, '  - mmap: {pid: 100, name: a, size: 128M}\n', hdr)
    k = replay(config, '  - mmap: {pid: 100, name: a, size: 60M}\n'
                       '  - mmap: {pid: 100, name: r, size: 128M, prot: r}\n', hdr)
    assert len(vma_of(k, 'r')) == 1


@pytest.mark.parametrize('config', CONFIGS, ids=lambda c: c.name)
def test_mremap_fixed_onto_itself_is_einval(config):
    """check_mremap_params(): with MREMAP_FIXED the old and new ranges must
    not overlap (-EINVAL before anything changes); a second move of a range
    to the address it was just moved to is such an overlap (found by the
    fuzz test of tests/test_hardening.py)."""
    body = '''
  - mmap: {pid: 100, name: a, size: 2M, align: 2M}
  - write: {pid: 100, vma: a}
  - mremap: {pid: 100, vma: a, move_to: 0x40000000}
  - mremap: {pid: 100, vma: a, move_to: 0x40100000%s}
'''
    with pytest.raises(StepError, match='EINVAL'):
        replay(config, body % '', 'kernel: {thp: {enabled: always}}')
    k = replay(config, body % ', expect: fault', 'kernel: {thp: {enabled: always}}')
    v = vma_of(k, 'a')[0]
    assert v.start == 0x40000000 and (v.bits & PTE_PMD).all()

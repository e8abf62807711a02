"""Tearing mappings down: zap (munmap, MADV_DONTNEED, exit), munmap with
VMA splitting, and process exit (mm/memory.c zap_pte_range,
zap_huge_pmd; mm/vma.c do_vmi_munmap; kernel/exit.c)."""
import numpy as np

from .memory import FL_ANON, FL_DIRTY, FL_SWAPBACKED, HPAGE_PMD_NR, PAGE_SHIFT, sorted_unique
from .mm import PTE_DIRTY, PTE_PMD, PTE_YOUNG
from . import pmd as pmdops
from .gup import unpin_pfns
from .swap import folio_mark_accessed


def rss_kind(mem, heads):
    """mm_counter(): MM_ANONPAGES, MM_SHMEMPAGES or MM_FILEPAGES."""
    f = mem.flags[heads]
    return np.where(f & FL_ANON, 0, np.where(f & FL_SWAPBACKED, 1, 2))


RSS_NAMES = ('anon', 'shmem', 'file')


def add_rss_by_flags(mm, f, sign):
    """add_mm_counter() of each page, by the folio flags `f` of the pages."""
    anon = int(np.count_nonzero(f & FL_ANON))
    shmem = int(np.count_nonzero((f & (FL_ANON | FL_SWAPBACKED)) == FL_SWAPBACKED))
    for name, n in (('anon', anon), ('shmem', shmem), ('file', len(f) - anon - shmem)):
        if n:
            mm.add_rss(name, sign * n)


def zap_range(k, mm, vma, lo, hi):
    """zap_page_range_single() over VMA pages [lo, hi): a PMD leaf the
    range covers in part is split first, the others are zapped whole
    (zap_huge_pmd), then the present PTEs (zap_pte_range)."""
    mem = k.mem
    leaves = vma.pmd_leaves(lo, hi)[0]
    for b in leaves[(leaves < lo) | (leaves + HPAGE_PMD_NR > hi)]:
        pmdops.split_pmd(k, mm, vma, int(b))
    zap_huge_pmds(k, mm, vma, lo, hi)
    idx, pfns, bits = vma.present_ptes(lo, hi)
    if len(idx) == 0:
        return
    real = pfns != mem.zero_pfn
    pfns, rbits = pfns[real], bits[real]
    if len(pfns):
        heads, flags = mem.folio_fields(pfns, 'head', 'flags')
        filep = (flags & FL_ANON) == 0
        if filep.any():
            dirty = filep & ((rbits & PTE_DIRTY) != 0)
            mem.flags[sorted_unique(heads[dirty])] |= FL_DIRTY
            young = filep & ((rbits & PTE_YOUNG) != 0)
            folio_mark_accessed(mem, sorted_unique(heads[young]))
        k.rmap.remove_ptes(mm.mm_id, pfns)
        add_rss_by_flags(mm, flags, -1)
        mem.folio_put(heads, 1)
    vma.clear_ptes(lo, hi)


def zap_huge_pmds(k, mm, vma, lo, hi):
    """zap_huge_pmd() for every PMD leaf inside pages [lo, hi)."""
    mem = k.mem
    idx, pfn0, bits = vma.pmd_leaves(lo, hi)
    if len(idx) == 0:
        return
    vma.clear_pmd_leaves(idx)
    heads = mem.head[pfn0]
    keep = heads != mem.huge_zero_pfn
    heads, bits = heads[keep], bits[keep]
    if len(heads) == 0:
        return
    filep = (mem.flags[heads] & FL_ANON) == 0
    mem.flags[heads[filep & ((bits & PTE_DIRTY) != 0)]] |= FL_DIRTY
    folio_mark_accessed(mem, heads[filep & ((bits & PTE_YOUNG) != 0)])
    k.rmap.remove_pmd(mm.mm_id, heads)
    kinds = rss_kind(mem, heads)
    for j, name in enumerate(RSS_NAMES):
        n = int(np.count_nonzero(kinds == j))
        if n:
            mm.add_rss(name, -n * HPAGE_PMD_NR)
    mem.folio_put(heads, 1)


def split_vma_at(k, mm, addr):
    """__split_vma() at addr if a VMA straddles it; a PMD leaf across the
    boundary is split first (vma_adjust_trans_huge)."""
    vma = mm.find_vma(addr)
    if vma is None or vma.start == addr:
        return
    i = vma.page_index(addr)
    if vma.entry(i)[1] & PTE_PMD and pmdops.pmd_start(vma, i) != i:
        pmdops.split_pmd(k, mm, vma, pmdops.pmd_start(vma, i))
    hi = vma.split(addr)
    mm.insert_vma(hi)


def free_pgtables(mm):
    """Page tables of 2M blocks no VMA touches any more are freed."""
    mm.pt.free_tables_outside([v.vpn0 for v in mm.vmas],
                              [v.end >> PAGE_SHIFT for v in mm.vmas])


def do_munmap(k, proc, start, end):
    mm = proc.mm
    split_vma_at(k, mm, start)
    split_vma_at(k, mm, end)
    for v in mm.vmas_in(start, end):
        zap_range(k, mm, v, 0, v.nr_pages)
        mm.remove_vma(v)
    free_pgtables(mm)
    k.drop_unused_objects()


def do_exit(k, proc):
    """exit_mmap() and the release of everything the process held."""
    for pfns in proc.pins.values():
        unpin_pfns(k, np.array(pfns, dtype=np.int64))
    proc.pins = {}
    mm = proc.mm
    for v in list(mm.vmas):
        zap_range(k, mm, v, 0, v.nr_pages)
        mm.remove_vma(v)
    mm.pt.clear_all()
    del k.processes[proc.pid]
    for p in k.processes.values():
        if p.ppid == proc.pid:
            p.ppid = 1
    k.release_mm(proc)
    k.drop_unused_objects()

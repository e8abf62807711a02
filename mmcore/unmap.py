"""Tearing mappings down: zap (munmap, MADV_DONTNEED, exit), munmap with
VMA splitting, and process exit (mm/memory.c zap_pte_range,
zap_huge_pmd; mm/vma.c do_vmi_munmap; kernel/exit.c)."""
import numpy as np

from .memory import FL_ACTIVE, FL_ANON, FL_DIRTY, FL_LRU, FL_REFERENCED, FL_SWAPBACKED, \
    HPAGE_PMD_NR, PAGE_SHIFT, sorted_unique
from .mm import PTE_DIRTY, PTE_PMD, PTE_YOUNG
from . import pmd as pmdops


def rss_kind(mem, heads):
    """mm_counter(): MM_ANONPAGES, MM_SHMEMPAGES or MM_FILEPAGES."""
    f = mem.flags[heads]
    return np.where(f & FL_ANON, 0, np.where(f & FL_SWAPBACKED, 1, 2))


RSS_NAMES = ('anon', 'shmem', 'file')


def add_rss_by_kind(mm, mem, heads, sign):
    kinds = rss_kind(mem, heads)
    for j, name in enumerate(RSS_NAMES):
        n = int(np.count_nonzero(kinds == j))
        if n:
            mm.add_rss(name, sign * n)


def folio_mark_accessed(mem, heads):
    """folio_mark_accessed(): referenced first, active on the second time."""
    f = mem.flags[heads]
    ref = (f & FL_REFERENCED) != 0
    act = heads[ref & ((f & FL_ACTIVE) == 0) & ((f & FL_LRU) != 0)]
    mem.flags[act] = (mem.flags[act] & ~np.uint32(FL_REFERENCED)) | FL_ACTIVE
    mem.flags[heads[~ref]] |= FL_REFERENCED


def zap_range(k, mm, vma, lo, hi):
    """zap_page_range_single() over VMA pages [lo, hi)."""
    mem = k.mem
    for b in pmdops.pmd_leaves_in(vma, lo, hi):
        if b < lo or b + HPAGE_PMD_NR > hi:
            pmdops.split_pmd(k, mm, vma, b)
    for b in pmdops.pmd_leaves_in(vma, lo, hi):
        zap_huge_pmd(k, mm, vma, b)
    idx = np.arange(lo, hi)
    idx = idx[vma.pfn[lo:hi] >= 0]
    if len(idx) == 0:
        return
    pfns = vma.pfn[idx]
    real = pfns != mem.zero_pfn
    pfns, ridx = pfns[real], idx[real]
    if len(pfns):
        heads = mem.head[pfns]
        filep = (mem.flags[heads] & FL_ANON) == 0
        dirty = filep & ((vma.bits[ridx] & PTE_DIRTY) != 0)
        mem.flags[sorted_unique(heads[dirty])] |= FL_DIRTY
        young = filep & ((vma.bits[ridx] & PTE_YOUNG) != 0)
        folio_mark_accessed(mem, sorted_unique(heads[young]))
        k.rmap.remove_ptes(mm.mm_id, pfns)
        add_rss_by_kind(mm, mem, heads, -1)
        mem.folio_put(heads, 1)
    vma.pfn[idx] = -1
    vma.bits[idx] = 0


def zap_huge_pmd(k, mm, vma, b):
    mem = k.mem
    sl = slice(b, b + HPAGE_PMD_NR)
    head = int(mem.head[vma.pfn[b]])
    bits = int(vma.bits[b])
    vma.pfn[sl] = -1
    vma.bits[sl] = 0
    if head == mem.huge_zero_pfn:
        return
    if not mem.flags[head] & FL_ANON:
        if bits & PTE_DIRTY:
            mem.flags[head] |= FL_DIRTY
        if bits & PTE_YOUNG:
            folio_mark_accessed(mem, np.array([head]))
    k.rmap.remove_pmd(mm.mm_id, np.array([head]))
    add_rss_by_kind(mm, mem, np.full(HPAGE_PMD_NR, head), -1)
    mem.folio_put(np.array([head]), 1)


def split_vma_at(k, mm, addr):
    """__split_vma() at addr if a VMA straddles it; a PMD leaf across the
    boundary is split first (vma_adjust_trans_huge)."""
    vma = mm.find_vma(addr)
    if vma is None or vma.start == addr:
        return
    i = vma.page_index(addr)
    if vma.bits[i] & PTE_PMD and pmdops.pmd_start(vma, i) != i:
        pmdops.split_pmd(k, mm, vma, pmdops.pmd_start(vma, i))
    hi = vma.split(addr)
    mm.insert_vma(hi)


def free_pgtables(mm):
    """Page tables of 2M blocks no VMA touches any more are freed."""
    live = set()
    for v in mm.vmas:
        live.update(range(v.start >> 21, ((v.end - 1) >> 21) + 1))
    mm.pte_tables &= live


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
    from .fault import unpin_pfns
    for pfns in proc.pins.values():
        unpin_pfns(k, np.array(pfns, dtype=np.int64))
    proc.pins = {}
    mm = proc.mm
    for v in list(mm.vmas):
        zap_range(k, mm, v, 0, v.nr_pages)
        mm.remove_vma(v)
    mm.pte_tables.clear()
    del k.processes[proc.pid]
    for p in k.processes.values():
        if p.ppid == proc.pid:
            p.ppid = 1
    k.release_mm(proc)
    k.drop_unused_objects()

"""PMD-level mappings: finding PMD leaves, mapping and splitting them
(mm/huge_memory.c: do_set_pmd, __split_huge_pmd_locked)."""
import numpy as np

from .memory import FL_ANON, FL_DIRTY, FL_REFERENCED, HPAGE_PMD_NR, PAGE_SHIFT
from .mm import PTE_DIRTY, PTE_PMD, PTE_PRESENT, PTE_WRITE, PTE_YOUNG


def pmd_start(vma, i):
    """VMA page index of the first page of the PMD block holding page i."""
    return i - (((vma.start >> PAGE_SHIFT) + i) % HPAGE_PMD_NR)


def pmd_leaves_in(vma, lo, hi):
    """First VMA page index of every PMD leaf that intersects [lo, hi)."""
    return [int(b) for b in vma.pmd_leaves(lo, hi)[0]]


def map_file_pmd(k, proc, vma, first, head, write, pfn0=None):
    """do_set_pmd(): a PMD-sized page-cache folio mapped by one PMD (or the
    PMD-sized part from pfn0 of a larger folio)."""
    bits = PTE_PRESENT | PTE_YOUNG | PTE_PMD
    if write or (vma.is_shared and vma.flags & 2):
        bits |= PTE_WRITE
    if write:
        bits |= PTE_DIRTY
    vma.set_pmd_leaves(np.array([first]), head if pfn0 is None else pfn0, bits)
    k.rmap.add_pmd(proc.mm.mm_id, np.array([head]))
    k.mem.folio_get(np.array([head]), 1)
    proc.mm.add_rss('shmem', HPAGE_PMD_NR)
    k.count_event('thp_file_mapped')


def split_pmd(k, mm, vma, b):
    """__split_huge_pmd_locked() of the PMD leaf at VMA index b.  An anon
    THP stays whole and is mapped by 512 PTEs that keep the PMD's write,
    dirty and young bits (the folio becomes dirty if the PMD was); a file
    or shmem PMD is simply unmapped (refaulted later by PTEs); the huge
    zero page is replaced by 512 entries of the small zero page."""
    mem = k.mem
    pfn0, bits = vma.entry(b)
    head = int(mem.head[pfn0])
    k.count_event('thp_split_pmd')
    blk = np.arange(b, b + HPAGE_PMD_NR)
    if head == mem.huge_zero_pfn:
        vma.clear_pmd_leaves([b])
        vma.set_ptes(blk, mem.zero_pfn, PTE_PRESENT | (bits & PTE_YOUNG))
        return
    if bits & PTE_DIRTY:
        mem.flags[head] |= FL_DIRTY
    if mem.flags[head] & FL_ANON:
        pfns = pfn0 + np.arange(HPAGE_PMD_NR)
        vma.pt.leaves_to_tables(vma.pmd_key([b]))
        if mem.anon_exclusive[head]:
            # folio_add_anon_rmap_ptes(..., RMAP_EXCLUSIVE): every subpage
            mem.anon_exclusive[pfns] = True
        k.rmap.add_ptes(mm.mm_id, pfns)
        k.rmap.remove_pmd(mm.mm_id, np.array([head]))
        mem.refcount[head] += HPAGE_PMD_NR - 1
        return
    if bits & PTE_YOUNG:
        mem.flags[head] |= FL_REFERENCED
    vma.clear_pmd_leaves([b])
    vma.pt.alloc_tables(vma.pmd_key([b]))
    k.rmap.remove_pmd(mm.mm_id, np.array([head]))
    mem.folio_put(np.array([head]), 1)
    mm.add_rss('shmem', -HPAGE_PMD_NR)

"""fork(): dup_mm() and copy_page_range() (kernel/fork.c, mm/memory.c,
mm/huge_memory.c copy_huge_pmd; semantics.md 4.4, 6.5, 12.5)."""
import numpy as np

from .errors import Fault
from .memory import FL_ANON, GUP_PIN_COUNTING_BIAS, HPAGE_PMD_NR
from .mm import (MM, VMA, PTE_DIRTY, PTE_PMD, PTE_PRESENT, PTE_WRITE, PTE_YOUNG,
                 VM_DONTCOPY, VM_WIPEONFORK)
from . import pmd as pmdops
from .unmap import add_rss_by_kind


def folio_maybe_dma_pinned(mem, heads):
    """Large: _pincount > 0; small: refcount >= GUP_PIN_COUNTING_BIAS."""
    small = mem.order[heads] == 0
    return np.where(small, mem.refcount[heads] >= GUP_PIN_COUNTING_BIAS, mem.pincount[heads] > 0)


def vma_needs_copy(vma):
    """vma_needs_copy(): shared mappings and private file mappings without
    anonymous pages are refaulted by the child instead of copied."""
    if vma.flags & VM_WIPEONFORK:
        return False
    return vma.anon_vma and not vma.is_shared


def do_fork(k, parent, child_pid, comm):
    from .kernel import Process
    try:
        mm_id = k.mm_ids.alloc()
    except MemoryError as e:
        raise Fault('ENOMEM: %s' % e)
    child_mm = MM(mm_id, parent.mm.bits)
    child_mm.has_pinned = False
    child = Process(child_pid, comm or parent.comm, parent.pid, parent.cgroup, child_mm, k.ticks,
                    parent.uid, parent.gid)
    for v in parent.mm.vmas:
        if v.flags & VM_DONTCOPY:
            continue
        c = VMA(v.start, v.end, v.flags, v.kind, v.name, v.obj, v.pgoff)
        c.range_start = v.range_start
        if not v.flags & VM_WIPEONFORK:
            c.anon_vma = v.anon_vma
        child_mm.insert_vma(c)
        if vma_needs_copy(v):
            copy_page_range(k, parent, child, v, c)
    child_mm.hiwater_rss = child_mm.rss_pages()
    k.processes[child_pid] = child
    k.count_event('fork')


def copy_page_range(k, parent, child, src, dst):
    mem = k.mem
    pmm, cmm = parent.mm, child.mm
    for b in pmdops.pmd_leaves_in(src, 0, src.nr_pages):
        copy_huge_pmd(k, parent, child, src, dst, b)
    idx = np.flatnonzero((src.pfn >= 0) & ((src.bits & PTE_PMD) == 0))
    if len(idx) == 0:
        return
    cmm.pte_tables.update(pmm.pte_tables & {(src.start + (int(i) << 12)) >> 21 for i in idx})
    pfns = src.pfn[idx]
    zero = pfns == mem.zero_pfn
    # zero-page entries are copied as they are (old, read-only)
    dst.pfn[idx[zero]] = pfns[zero]
    dst.bits[idx[zero]] = src.bits[idx[zero]] & ~np.uint8(PTE_YOUNG)
    idx, pfns = idx[~zero], pfns[~zero]
    if len(idx) == 0:
        return
    heads = mem.head[pfns]
    anon = (mem.flags[heads] & FL_ANON) != 0
    # copy_present_page(): AnonExclusive pages of possibly pinned folios
    # are copied for the child at once (semantics.md 6.5)
    must_copy = anon & pmm.has_pinned & folio_maybe_dma_pinned(mem, heads) & mem.anon_exclusive[pfns]
    shared_idx, shared_pfns = idx[~must_copy], pfns[~must_copy]
    if len(shared_idx):
        sh_heads = mem.head[shared_pfns]
        k.rmap.add_ptes(cmm.mm_id, shared_pfns)
        mem.folio_get(sh_heads, 1)
        sh_anon = (mem.flags[sh_heads] & FL_ANON) != 0
        mem.anon_exclusive[shared_pfns[sh_anon]] = False
        bits = src.bits[shared_idx]
        if src.is_cow:
            bits = bits & ~np.uint8(PTE_WRITE)
            src.bits[shared_idx] = bits
        dst.pfn[shared_idx] = shared_pfns
        dst.bits[shared_idx] = bits & ~np.uint8(PTE_YOUNG)
        add_rss_by_kind(cmm, mem, sh_heads, +1)
    copy_idx = idx[must_copy]
    if len(copy_idx):
        from .fault import new_anon_folios
        new_anon_folios(k, child, dst, copy_idx, 0)


def copy_huge_pmd(k, parent, child, src, dst, b):
    mem = k.mem
    sl = slice(b, b + HPAGE_PMD_NR)
    head = int(mem.head[src.pfn[b]])
    if head == mem.huge_zero_pfn:
        dst.pfn[sl] = src.pfn[sl]
        dst.bits[sl] = src.bits[sl] & ~np.uint8(PTE_YOUNG)
        return
    if not mem.flags[head] & FL_ANON:
        return                  # "Skip if can be re-fill on fault": the child refaults it
    if parent.mm.has_pinned and mem.pincount[head] > 0 and mem.anon_exclusive[head]:
        # folio_try_dup_anon_rmap_pmd() refuses: split, then copy by PTEs
        pmdops.split_pmd(k, parent.mm, src, b)
        return
    k.rmap.add_pmd(child.mm.mm_id, np.array([head]))
    mem.folio_get(np.array([head]), 1)
    mem.anon_exclusive[head:head + HPAGE_PMD_NR] = False
    bits = src.bits[sl] & ~np.uint8(PTE_WRITE)
    src.bits[sl] = bits
    dst.pfn[sl] = src.pfn[sl]
    dst.bits[sl] = bits & ~np.uint8(PTE_YOUNG)
    child.mm.add_rss('anon', HPAGE_PMD_NR)

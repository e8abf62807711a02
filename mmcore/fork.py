"""fork(): dup_mm() and copy_page_range() (kernel/fork.c, mm/memory.c,
mm/huge_memory.c copy_huge_pmd; semantics.md 4.4, 6.5, 12.5)."""
import numpy as np

from .errors import Fault
from .memory import FL_ANON, GUP_PIN_COUNTING_BIAS, HPAGE_PMD_NR
from .mm import (MM, VMA, PTE_DIRTY, PTE_PMD, PTE_PRESENT, PTE_WRITE, PTE_YOUNG,
                 VM_DONTCOPY, VM_WIPEONFORK)
from . import pmd as pmdops
from .process import Process
from .unmap import add_rss_by_flags


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
    """copy_page_range(): PMD leaves once each (copy_huge_pmd), then the
    present PTEs of the PTE tables (copy_pte_range)."""
    mem = k.mem
    pmm, cmm = parent.mm, child.mm
    copy_huge_pmds(k, parent, child, src, dst)
    idx, pfns, sbits = src.present_ptes()
    if len(idx) == 0:
        return
    zero = pfns == mem.zero_pfn
    # zero-page entries are copied as they are (old, read-only)
    dst.set_ptes(idx[zero], pfns[zero], sbits[zero] & ~np.uint8(PTE_YOUNG))
    idx, pfns, sbits = idx[~zero], pfns[~zero], sbits[~zero]
    if len(idx) == 0:
        return
    heads, flags = mem.folio_fields(pfns, 'head', 'flags')
    anon = (flags & FL_ANON) != 0
    # copy_present_page(): AnonExclusive pages of possibly pinned folios
    # are copied for the child at once (semantics.md 6.5)
    must_copy = anon & pmm.has_pinned & folio_maybe_dma_pinned(mem, heads) & mem.anon_exclusive[pfns]
    shared_idx, shared_pfns = idx[~must_copy], pfns[~must_copy]
    if len(shared_idx):
        sh_heads = heads[~must_copy]
        k.rmap.add_ptes(cmm.mm_id, shared_pfns)
        mem.folio_get(sh_heads, 1)
        sh_anon = anon[~must_copy]
        mem.anon_exclusive[shared_pfns[sh_anon]] = False
        bits = sbits[~must_copy]
        if src.is_cow:
            bits = bits & ~np.uint8(PTE_WRITE)
            src.set_ptes(shared_idx, shared_pfns, bits)
        dst.set_ptes(shared_idx, shared_pfns, bits & ~np.uint8(PTE_YOUNG))
        add_rss_by_flags(cmm, flags[~must_copy], +1)
    copy_idx = idx[must_copy]
    if len(copy_idx):
        from .fault import new_anon_folios
        new_anon_folios(k, child, dst, copy_idx, 0)


def copy_huge_pmds(k, parent, child, src, dst):
    """copy_huge_pmd() for every PMD leaf of src: the huge zero page is
    copied as it is; a file or shmem PMD is left for the child to refault
    ("Skip if can be re-fill on fault"); an anon THP is shared read-only,
    unless it may be pinned (folio_try_dup_anon_rmap_pmd() refuses: split,
    then copied by PTEs)."""
    mem = k.mem
    idx, pfn0, bits = src.pmd_leaves()
    if len(idx) == 0:
        return
    heads = mem.head[pfn0]
    hz = heads == mem.huge_zero_pfn
    dst.set_pmd_leaves(idx[hz], pfn0[hz], bits[hz] & ~np.uint8(PTE_YOUNG))
    anon = ~hz & ((mem.flags[heads] & FL_ANON) != 0)
    if parent.mm.has_pinned:
        pinned = anon & (mem.pincount[heads] > 0) & mem.anon_exclusive[heads]
        for b in idx[pinned]:
            pmdops.split_pmd(k, parent.mm, src, int(b))
        anon &= ~pinned
    idx, pfn0, bits, heads = idx[anon], pfn0[anon], bits[anon], heads[anon]
    if len(idx) == 0:
        return
    k.rmap.add_pmd(child.mm.mm_id, heads)
    mem.folio_get(heads, 1)
    mem.clear_anon_exclusive_pmd(heads)
    bits = bits & ~np.uint8(PTE_WRITE)
    src.set_pmd_bits(idx, bits)
    dst.set_pmd_leaves(idx, pfn0, bits & ~np.uint8(PTE_YOUNG))
    child.mm.add_rss('anon', HPAGE_PMD_NR * len(idx))

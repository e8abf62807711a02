"""Long-term pins (mm/gup.c): pin_user_pages(FOLL_WRITE | FOLL_LONGTERM)
and unpin_user_pages(), as io_uring fixed-buffer registration uses them."""
import numpy as np

from .errors import Fault
from .fault import access
from .memory import FL_REFERENCED, GUP_PIN_COUNTING_BIAS, PAGE_SHIFT, sorted_unique
from .mm import PTE_PMD, PTE_PRESENT, PTE_WRITE, VM_WRITE
from .swap import folio_mark_accessed


def pin_range(k, proc, name, start, end):
    """pin_user_pages(FOLL_WRITE | FOLL_LONGTERM), as io_uring fixed-buffer
    registration does: write-fault every page that is not mapped writable,
    then take one pin per page (GUP_PIN_COUNTING_BIAS references on a small
    folio; one reference and one _pincount on a large one)."""
    mm = proc.mm
    vmas = mm.vmas_in(start, end)
    for v in vmas:
        if not v.flags & VM_WRITE:
            raise Fault('EFAULT: pinning for write a mapping without PROT_WRITE')
    slow_from = gup_fast_end(k, proc, start, end)
    access(k, proc, start, end, write=True)
    mem = k.mem
    base = k.range_vmas(proc, name)[0].range_start
    for v in mm.vmas_in(start, end):
        lo, hi = v.page_index(max(start, v.start)), v.page_index(min(end, v.end))
        pfns, pbits = v.ptes(lo, hi)
        heads = mem.head[pfns]
        in_slow = v.start + (np.arange(lo, hi) << PAGE_SHIFT) >= slow_from
        # gup_fast_pte_range() / gup_fast_pmd_leaf(): folio_set_referenced()
        mem.flags[sorted_unique(heads[~in_slow])] |= FL_REFERENCED
        # the slow path, follow_page_pte() with FOLL_TOUCH: folio_mark_accessed()
        # per PTE-mapped page; follow_huge_pmd() only makes the PMD young
        slow = np.flatnonzero(in_slow)
        for j in slow[(pbits[slow] & PTE_PMD) == 0]:
            folio_mark_accessed(mem, heads[j:j + 1])
        small = mem.order[heads] == 0
        np.add.at(mem.refcount, heads[small], GUP_PIN_COUNTING_BIAS)
        np.add.at(mem.refcount, heads[~small], 1)
        np.add.at(mem.pincount, heads[~small], 1)
        for j, pfn in zip(range(lo, hi), pfns):
            key = (name, ((v.start - base) >> PAGE_SHIFT) + j)
            proc.pins.setdefault(key, []).append(int(pfn))
    mm.has_pinned = True


def gup_fast_end(k, proc, start, end):
    """The address where gup_fast() stops on [start, end) for FOLL_WRITE:
    the first page not mapped by a present, writable entry of a normal page
    (gup_fast_pte_range / gup_fast_pmd_leaf).  gup_fast_fallback() hands
    the rest, from there on, to the slow path.  gup_fast() only sets
    PG_referenced, it never activates a folio (no folio_mark_accessed())."""
    mem = k.mem
    addr = start
    while addr < end:
        v = proc.mm.find_vma(addr)
        if v is None:
            return addr
        lo, hi = v.page_index(addr), v.page_index(min(end, v.end))
        pfn, bits = v.ptes(lo, hi)
        ok = ((bits & (PTE_PRESENT | PTE_WRITE)) == (PTE_PRESENT | PTE_WRITE)) & (pfn >= 0)
        ok &= (pfn != mem.zero_pfn)
        bad = np.flatnonzero(~ok)
        if len(bad):
            return v.start + ((lo + int(bad[0])) << PAGE_SHIFT)
        addr = min(end, v.end)
    return end


def unpin_range(k, proc, name, start, end):
    """unpin_user_pages() of the pages pinned for this range."""
    base = k.range_vmas(proc, name)[0].range_start
    keys = [(name, p) for p in range((start - base) >> PAGE_SHIFT, (end - base) >> PAGE_SHIFT)]
    pinned = [key for key in keys if proc.pins.get(key)]
    if not pinned:
        raise Fault('EINVAL: nothing of this range is pinned')
    pfns = np.array([proc.pins[key].pop() for key in pinned], dtype=np.int64)
    for key in pinned:
        if not proc.pins[key]:
            del proc.pins[key]
    unpin_pfns(k, pfns)


def unpin_pfns(k, pfns):
    mem = k.mem
    heads = mem.head[pfns]
    small = mem.order[heads] == 0
    np.subtract.at(mem.pincount, heads[~small], 1)
    refs = np.where(small, GUP_PIN_COUNTING_BIAS, 1)
    mem.folio_put(heads, refs)

"""madvise() (mm/madvise.c, mm/khugepaged.c madvise_collapse)."""
import numpy as np

from .errors import Fault
from .mapcount import folio_maybe_mapped_shared
from .memory import (FL_ACTIVE, FL_ANON, FL_DIRTY, FL_LRU, FL_PAGECACHE, FL_PARTIALLY_MAPPED,
                     FL_REFERENCED, FL_SWAPBACKED, HPAGE_PMD_NR, HPAGE_PMD_ORDER, PAGE_SHIFT, PAGE_SIZE)
from .mm import (PTE_DIRTY, PTE_PMD, PTE_PRESENT, PTE_WRITE, PTE_YOUNG, VM_DONTCOPY,
                 VM_HUGEPAGE, VM_NOHUGEPAGE, VM_WIPEONFORK)
from . import pmd as pmdops
from .split import rmap_walk, split_folio, try_to_unmap
from .unmap import zap_range, split_vma_at
from .vmaops import vmas_for_range

FLAG_ADVICE = {
    'hugepage': (VM_HUGEPAGE, VM_NOHUGEPAGE),
    'nohugepage': (VM_NOHUGEPAGE, VM_HUGEPAGE),
    'dontfork': (VM_DONTCOPY, 0),
    'dofork': (0, VM_DONTCOPY),
    'wipeonfork': (VM_WIPEONFORK, 0),
    'keeponfork': (0, VM_WIPEONFORK),
}


def do_madvise(k, proc, start, end, advice):
    if advice in FLAG_ADVICE:
        return madvise_update_vma(k, proc, start, end, advice)
    vmas = proc.mm.vmas_in(start, end)
    covered = sum(min(v.end, end) - max(v.start, start) for v in vmas)
    for v in vmas:
        lo = v.page_index(max(start, v.start))
        hi = v.page_index(min(end, v.end))
        if advice == 'dontneed':
            zap_range(k, proc.mm, v, lo, hi)
            reclaim_empty_pte_tables(proc.mm, v.start + (lo << PAGE_SHIFT),
                                     v.start + (hi << PAGE_SHIFT))
        elif advice == 'free':
            if not v.is_anon:
                raise Fault('EINVAL: MADV_FREE works on private anonymous memory only')
            madvise_free(k, proc, v, lo, hi)
        elif advice in ('cold', 'pageout'):
            madvise_cold_or_pageout(k, proc, v, lo, hi, advice == 'pageout')
        elif advice == 'collapse':
            madvise_collapse(k, proc, v, lo, hi)
    if covered != end - start:
        raise Fault('ENOMEM: part of the range is not mapped')


def reclaim_empty_pte_tables(mm, start, end):
    """CONFIG_PT_RECLAIM (on in the conformance kernel): MADV_DONTNEED
    (zap_details.reclaim_pt) frees a page table left with no entry, so the
    next fault there may map a PMD again."""
    mm.pt.free_empty_tables(start >> PAGE_SHIFT, end >> PAGE_SHIFT)


def madvise_update_vma(k, proc, start, end, advice):
    """madvise_update_vma(): set/clear a VMA flag, splitting and merging."""
    set_, clear = FLAG_ADVICE[advice]
    vmas, hole = vmas_for_range(k, proc, start, end, stop_at_hole=False)
    for v in vmas:
        if advice == 'wipeonfork' and not v.is_anon:
            proc.mm.merge_vmas()
            raise Fault('EINVAL: MADV_WIPEONFORK needs private anonymous memory')
        v.flags = (v.flags | set_) & ~clear
    proc.mm.merge_vmas()
    if hole:
        raise Fault('ENOMEM: part of 0x%x-0x%x is not mapped' % (start, end))


def _folio_runs(k, vma, lo, hi):
    """Present PTE-mapped normal pages of [lo, hi) grouped by folio:
    [(head, VMA indices)] in address order."""
    mem = k.mem
    idx, pfns, _ = vma.present_ptes(lo, hi)
    idx, pfns = idx[pfns != mem.zero_pfn], pfns[pfns != mem.zero_pfn]
    if len(idx) == 0:
        return []
    heads = mem.head[pfns]
    cut = np.flatnonzero(np.diff(heads)) + 1
    return [(int(h[0]), i) for h, i in zip(np.split(heads, cut), np.split(idx, cut))]


def _exclusive_pmd_leaves(k, vma, lo, hi):
    """(first index, head) of the PMD leaves meeting [lo, hi) that the
    advice acts on as a whole: the huge zero page and folios that may be
    mapped shared are left alone; a folio the range covers only in part is
    split and left to the PTE walk (madvise_*_huge_pmd)."""
    out = []
    leaves, pfn0, _ = vma.pmd_leaves(lo, hi)
    for b, pfn in zip(leaves.tolist(), pfn0.tolist()):
        head = int(k.mem.head[pfn])
        if head == k.mem.huge_zero_pfn or folio_maybe_mapped_shared(k.mem, [head])[0]:
            continue
        if lo <= b and b + HPAGE_PMD_NR <= hi:
            out.append((b, head))
        else:
            split_folio(k, head)
    return out


def madvise_free(k, proc, vma, lo, hi):
    """madvise_free_pte_range() / madvise_free_huge_pmd()."""
    mem = k.mem
    for b, head in _exclusive_pmd_leaves(k, vma, lo, hi):
        if mem.flags[head] & FL_DIRTY:
            if mem.large_mapcount[head] != 1:
                continue
            mem.flags[head] &= ~np.uint32(FL_DIRTY)
        vma.and_bits([b], ~(PTE_YOUNG | PTE_DIRTY))
        folio_mark_lazyfree(mem, head)
    for head, idx in _folio_runs(k, vma, lo, hi):
        nr = 1 << int(mem.order[head])
        if nr > 1 and len(idx) < nr:
            if folio_maybe_mapped_shared(mem, [head])[0] or not split_folio(k, head):
                continue
            head = None
        now = mem.head[vma.ptes_at(idx)[0]]
        heads = [head] if head is not None else list(now)
        for h in heads:
            sel = idx if head is not None else idx[now == h]
            if mem.flags[h] & FL_DIRTY:
                mapcount = mem.large_mapcount[h] if mem.order[h] else mem.page_mapcount[h]
                if mapcount != (1 << int(mem.order[h])):
                    continue
                mem.flags[h] &= ~np.uint32(FL_DIRTY)
            vma.and_bits(sel, ~(PTE_YOUNG | PTE_DIRTY))
            folio_mark_lazyfree(mem, h)


def folio_mark_lazyfree(mem, head):
    """lru_lazyfree: a clean swap-backed anon folio loses PG_swapbacked and
    moves to the inactive file list."""
    f = mem.flags[head]
    if f & FL_ANON and f & FL_SWAPBACKED:
        mem.flags[head] = f & ~np.uint32(FL_SWAPBACKED | FL_ACTIVE | FL_REFERENCED)


def madvise_cold_or_pageout(k, proc, vma, lo, hi, pageout):
    """madvise_cold_or_pageout_pte_range(): exclusive folios lose their
    young bits (cold only) and referenced flag and are deactivated (cold)
    or reclaimed (pageout)."""
    mem = k.mem
    to_reclaim = []
    for b, head in _exclusive_pmd_leaves(k, vma, lo, hi):
        if not pageout:
            vma.and_bits([b], ~PTE_YOUNG)
        deactivate_or_collect(mem, head, pageout, to_reclaim)
    for head, idx in _folio_runs(k, vma, lo, hi):
        nr = 1 << int(mem.order[head])
        batches = [(head, idx)]
        if nr > 1 and len(idx) < nr:
            if folio_maybe_mapped_shared(mem, [head])[0] or not split_folio(k, head):
                continue
            # the walk goes on over the pages of the split folio (nr = 0)
            now = vma.ptes_at(idx)[0]
            batches = [(int(mem.head[p]), np.array([i])) for i, p in zip(idx, now) if p >= 0]
        for h, sel in batches:
            nr = 1 << int(mem.order[h])
            mapcount = mem.large_mapcount[h] if nr > 1 else mem.page_mapcount[h]
            if not mem.flags[h] & FL_LRU or mapcount != nr:
                continue
            if not pageout:
                vma.and_bits(sel, ~PTE_YOUNG)
            deactivate_or_collect(mem, h, pageout, to_reclaim)
    if to_reclaim:
        reclaim_pages(k, to_reclaim)


def deactivate_or_collect(mem, head, pageout, to_reclaim):
    mem.flags[head] &= ~np.uint32(FL_REFERENCED)
    if pageout:
        to_reclaim.append(head)
    else:
        mem.flags[head] &= ~np.uint32(FL_ACTIVE)


def reclaim_pages(k, heads):
    """shrink_folio_list() on a machine without swap: a lazily freed clean
    anon folio is unmapped and freed; a swap-backed anon folio finds no
    swap slot, so a large one is split and each folio activated; a shmem
    folio is unmapped, fails writeout and is activated."""
    mem = k.mem
    for head in heads:
        f = mem.flags[head]
        if f & FL_ANON and not f & FL_SWAPBACKED:
            dirty = f & FL_DIRTY or any((v.ptes_at(idx)[1] & PTE_DIRTY).any()
                                        for _, v, idx in rmap_walk(k, [head]))
            if dirty:
                # try_to_unmap_one(): a dirty PTE dirties the folio, makes it
                # swap-backed again and keeps it; shrink_folio_list activates it
                mem.flags[head] |= FL_SWAPBACKED | FL_DIRTY | FL_ACTIVE
                continue
            try_to_unmap(k, [head])
            k.count_event('pglazyfreed', 1 << int(mem.order[head]))
            continue
        if f & FL_ANON:
            nr = 1 << int(mem.order[head])
            if nr > 1:
                # a partially mapped folio is split right away; any other
                # finds no swap slot (add_to_swap()) and falls back to
                # small pages: the swpout_fallback events
                fallback = not f & FL_PARTIALLY_MAPPED
                order = int(mem.order[head])
                if not split_folio(k, head):
                    mem.flags[head] |= FL_ACTIVE
                    continue
                if fallback:
                    if nr >= HPAGE_PMD_NR:
                        k.count_event('thp_swpout_fallback')
                    k.count_event('mthp/%dkB/swpout_fallback' % (4 << order))
                for h in range(head, head + nr):
                    if mem.head[h] == h:
                        mem.flags[h] |= FL_ACTIVE
                continue
            mem.flags[head] |= FL_ACTIVE
            continue
        try_to_unmap(k, [head])
        if mem.head[head] == head:
            mem.flags[head] |= FL_ACTIVE


def madvise_collapse(k, proc, vma, lo, hi):
    """madvise_collapse(): every PMD-aligned 2M block inside the range and
    the VMA is collapsed into a new PMD-mapped THP (khugepaged's limits
    on empty, swapped and shared PTEs do not apply).  Since 6.18 neither
    __collapse_huge_page_isolate() nor hpage_collapse_scan_pmd() needs a
    writable PTE (SCAN_PAGE_RO is gone), so pages write-protected by fork
    and shared with a child are collapsed too: the caller gets copies in a
    new THP, the child keeps its pages.  A block without a page table fails
    with EINVAL, as do blocks that cannot be collapsed; the others are
    collapsed all the same."""
    mem = k.mem
    if vma.flags & VM_NOHUGEPAGE:
        raise Fault('EINVAL: MADV_COLLAPSE on a VM_NOHUGEPAGE mapping')
    if not vma.is_anon:
        return collapse_file_range(k, proc, vma, lo, hi)
    base = vma.start >> PAGE_SHIFT
    first = -(-(base + lo) // HPAGE_PMD_NR) * HPAGE_PMD_NR - base
    failed = None
    for b in range(first, hi - HPAGE_PMD_NR + 1, HPAGE_PMD_NR):
        pfns, bbits = vma.ptes(b, b + HPAGE_PMD_NR)
        if bbits[0] & PTE_PMD and pfns[0] != mem.huge_zero_pfn + 0 and \
                mem.head[pfns[0]] != mem.huge_zero_pfn:
            continue
        present = (pfns >= 0) & (pfns != mem.zero_pfn) & ((bbits & PTE_PMD) == 0)
        if not present.any() and not proc.mm.pt.has_table(vma.pmd_key([b]))[0]:
            # find_pmd_or_thp_or_none(): SCAN_PMD_NULL, no page table to collapse
            failed = 'EINVAL: MADV_COLLAPSE found no page table in a 2M block'
            continue
        heads = mem.head[pfns[present]]
        uh = np.unique(heads)
        extra = mem.refcount[uh] - np.where(mem.order[uh] > 0, mem.large_mapcount[uh],
                                           mem.page_mapcount[uh])
        if (extra > 0).any() or not (mem.flags[uh] & FL_ANON).all():
            failed = 'EAGAIN: a page of the block is pinned or not anonymous'
            continue
        zap_range(k, proc.mm, vma, b, b + HPAGE_PMD_NR)
        proc.mm.pt.free_tables(vma.pmd_key([b]))
        from .fault import new_anon_folios
        new_anon_folios(k, proc, vma, np.array([b]), HPAGE_PMD_ORDER)
        k.events['thp_fault_alloc'] -= 1
        k.events['mthp/2048kB/anon_fault_alloc'] -= 1
        k.count_event('thp_collapse_alloc')
    if failed:
        raise Fault(failed)


def collapse_file_range(k, proc, vma, lo, hi):
    """madvise_collapse() on a shmem or tmpfs mapping: collapse_file()
    replaces the page-cache folios of each aligned 2M block by one new
    PMD-sized folio (holes are filled), after unmapping the old ones from
    every process; collapse_pte_mapped_thp() then maps it by a PMD in the
    calling process."""
    mem = k.mem
    obj = vma.obj
    base = vma.start >> PAGE_SHIFT
    if (base - vma.pgoff) % HPAGE_PMD_NR:
        raise Fault('EINVAL: MADV_COLLAPSE: the mapping is not 2M-aligned in the file')
    first = -(-(base + lo) // HPAGE_PMD_NR) * HPAGE_PMD_NR - base
    failed = None
    for b in range(first, hi - HPAGE_PMD_NR + 1, HPAGE_PMD_NR):
        index = vma.pgoff + b
        if index + HPAGE_PMD_NR > obj.nr_pages:
            failed = 'EINVAL: MADV_COLLAPSE: the 2M block reaches past the end of the file'
            continue
        pages = obj.pages[index:index + HPAGE_PMD_NR]
        cached = pages[pages >= 0]
        heads = np.unique(mem.head[cached]) if len(cached) else np.zeros(0, dtype=np.int64)
        if len(heads) == 1 and mem.order[heads[0]] == HPAGE_PMD_ORDER:
            head = int(heads[0])
        else:
            extra = mem.refcount[heads] - mem.folio_nr_pages(heads) - \
                np.where(mem.order[heads] > 0, mem.large_mapcount[heads], mem.page_mapcount[heads])
            if (extra > 0).any():
                failed = 'EAGAIN: a page of the 2M block is pinned'
                continue
            try_to_unmap(k, heads)
            mem.flags[heads] &= ~np.uint32(FL_PAGECACHE)
            mem.folio_put(heads, mem.folio_nr_pages(heads))
            obj.pages[index:index + HPAGE_PMD_NR] = -1
            from .pagecache import filemap_get_folio
            filemap_get_folio(k, obj, index, HPAGE_PMD_ORDER, k.memcg_of(proc))
            head = int(mem.head[obj.pages[index]])
            mem.flags[head] |= FL_DIRTY        # collapse_file(): the new folio is dirtied
            k.count_event('thp_collapse_alloc')
        pfns, bbits = vma.ptes(b, b + HPAGE_PMD_NR)
        if bbits[0] & PTE_PMD:
            continue
        # collapse_pte_mapped_thp(): only entries that are empty or map the
        # matching subpage of the new folio may be replaced by the PMD
        present = pfns >= 0
        if (pfns[present] != (head + np.arange(HPAGE_PMD_NR))[present]).any():
            failed = 'EINVAL: MADV_COLLAPSE: the page table maps other pages (private copies)'
            continue
        zap_range(k, proc.mm, vma, b, b + HPAGE_PMD_NR)
        proc.mm.pt.free_tables(vma.pmd_key([b]))
        pmdops.map_file_pmd(k, proc, vma, b, head, False)
    if failed:
        raise Fault(failed)

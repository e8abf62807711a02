"""Reverse-map walks and folio splitting (mm/rmap.c rmap_walk,
mm/huge_memory.c split_folio).

The rmap walk visits processes in pid order and their VMAs in address
order, which stands in for the anon_vma/i_mmap interval-tree order
(semantics.md 12.8, open question 4).
"""
import numpy as np

from .memory import (FL_ACTIVE, FL_ANON, FL_DEFERRED, FL_DIRTY, FL_LRU, FL_PAGECACHE,
                     FL_PARTIALLY_MAPPED, FL_REFERENCED, FL_SWAPBACKED, FL_UPTODATE,
                     HPAGE_PMD_NR, HPAGE_PMD_ORDER, PAGE_SHIFT, sorted_unique)
from .mm import PTE_DIRTY, PTE_PMD
from . import pmd as pmdops

INHERITED = FL_ANON | FL_SWAPBACKED | FL_DIRTY | FL_LRU | FL_ACTIVE | FL_REFERENCED | \
    FL_UPTODATE | FL_PAGECACHE


def rmap_walk(k, heads):
    """[(proc, vma, vma page indices)] of every entry mapping a page of one
    of the folios `heads`."""
    heads = sorted_unique(heads)
    out = []
    for pid in sorted(k.processes):
        p = k.processes[pid]
        for v in p.mm.vmas:
            idx, pfns, _ = v.present_ptes()
            lidx, lpfn, _ = v.pmd_leaves()
            lhit = _member(k.mem.head[lpfn], heads)
            if lhit.any():
                idx = np.concatenate([idx, (lidx[lhit][:, None] + np.arange(HPAGE_PMD_NR)).ravel()])
                pfns = np.concatenate([pfns, (lpfn[lhit][:, None] + np.arange(HPAGE_PMD_NR)).ravel()])
                order = np.argsort(idx, kind='stable')
                idx, pfns = idx[order], pfns[order]
            hit = _member(k.mem.head[pfns], heads)
            if hit.any():
                out.append((p, v, idx[hit]))
    k.cost['rmap_walks'] += 1
    k.cost['rmap_walk_vmas'] += len(out)
    return out


def _member(values, sorted_keys):
    """np.isin() for a small sorted key set, by binary search."""
    if len(sorted_keys) == 0 or len(values) == 0:
        return np.zeros(len(values), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_keys, values), len(sorted_keys) - 1)
    return sorted_keys[pos] == values


def can_split_folio(k, head, mappings):
    """can_split_folio(): no references beyond the mappings and the page
    cache (no pins, no GUP)."""
    mem = k.mem
    nr = 1 << int(mem.order[head])
    extra = nr if mem.flags[head] & FL_PAGECACHE else 0
    return mem.refcount[head] == mem.large_mapcount[head] + extra


def unmap_folio(k, head, mappings):
    """unmap_folio() before a split: try_to_migrate() (anon) or
    try_to_unmap() (page cache) with TTU_SPLIT_HUGE_PMD take the mappings
    down in rmap walk order, a PMD leaf at once (split_huge_pmd_locked(),
    frozen: a THP_SPLIT_PMD event) and PTEs one page at a time, so the
    rmap sees the folio partially mapped on the way and queues it
    (deferred_split_folio(): the split_deferred events).  The mapcounts it
    leaves are replaced by the split."""
    rmap = k.rmap
    for p, v, idx in mappings:
        mm_id = p.mm.mm_id
        pfns = v.ptes_at(idx)[0]
        leaves = set(pmdops.pmd_leaves_in(v, int(idx.min()), int(idx.max()) + 1))
        i = 0
        while i < len(idx):
            if int(idx[i]) in leaves:
                rmap.remove_pmd(mm_id, np.array([head]))
                k.count_event('thp_split_pmd')
                i += HPAGE_PMD_NR
                continue
            rmap.remove_ptes(mm_id, pfns[i:i + 1])
            i += 1


def split_folio(k, head):
    """split_folio(): splits a large folio into order-0 folios.  Every
    mapping is taken down and re-made on the small folios (a PMD mapping
    becomes 512 PTEs with the same bits), so the MM-ID slots are rebuilt
    and the shared bit forgotten; pages of an anon folio that nobody maps
    any more are freed.  Returns False when the folio cannot be split."""
    mem = k.mem
    head = int(head)
    order = int(mem.order[head])
    if order == 0:
        return True
    if head == mem.huge_zero_pfn:
        return False
    mappings = rmap_walk(k, [head])
    if not can_split_folio(k, head, mappings):
        return False
    nr = 1 << order
    pfns = head + np.arange(nr)
    if any((v.ptes_at(idx)[1] & PTE_DIRTY).any() for _, v, idx in mappings):
        mem.flags[head] |= FL_DIRTY       # try_to_migrate_one(): a dirty PTE dirties the folio
    unmap_folio(k, head, mappings)
    for p, v, idx in mappings:
        leaves = v.pmd_leaves(int(idx.min()), int(idx.max()) + 1)[0]
        v.pt.leaves_to_tables(v.pmd_key(leaves))
    counts = np.zeros(nr, dtype=np.int64)
    for p, v, idx in mappings:
        np.add.at(counts, v.ptes_at(idx)[0] - head, 1)
    flags = mem.flags[head] & np.uint32(INHERITED)
    in_cache = bool(flags & FL_PAGECACHE)
    mapping, index, memcg = mem.mapping[head], mem.index[head], mem.memcg[head]
    mem.split_slots(head, nr)
    mem.order[pfns] = 0
    mem.head[pfns] = pfns
    mem.flags[pfns] = flags
    mem.memcg[pfns] = memcg
    mem.mapping[pfns] = mapping
    mem.index[pfns] = index + np.arange(nr)
    mem.page_mapcount[pfns] = counts
    mem.refcount[pfns] = counts + (1 if in_cache else 0)
    for arr in (mem.large_mapcount, mem.entire_mapcount, mem.nr_pages_mapped,
                mem.total_mapped_pages, mem.pincount):
        arr[pfns] = 0
    mem.mm_id[pfns] = 0
    mem.mm_id_mapcount[pfns] = 0
    mem.maybe_shared[pfns] = False
    dead = pfns[mem.refcount[pfns] == 0]
    mem.free_folios(dead)
    if order == HPAGE_PMD_ORDER:
        k.count_event('thp_split_page')
    k.count_event('mthp/%dkB/split' % (4 << order))
    return True


def try_to_unmap(k, heads):
    """try_to_unmap(): removes every mapping of the folios (reclaim)."""
    from .unmap import zap_range
    for p, v, idx in rmap_walk(k, heads):
        cuts = np.flatnonzero(np.diff(idx) != 1) + 1
        for run in np.split(idx, cuts):
            zap_range(k, p.mm, v, int(run[0]), int(run[-1]) + 1)

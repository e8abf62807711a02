"""Reverse-map accounting of folios: mapcounts and MM owner tracking.

Emulates mm/rmap.c (__folio_add_rmap, __folio_remove_rmap,
folio_add_new_anon_rmap) and the MM-ID slot helpers of
include/linux/rmap.h (folio_set_large_mapcount, folio_add_large_mapcount,
folio_sub_large_mapcount; semantics.md section 4).  Every call works on a
batch of folios at once; within one call each folio appears once, so the
slot algorithm runs as array operations over the batch.

Callers handle refcounts, page tables and per-mm RSS counters; this module
handles mapcounts, slots, the shared bit and deferred-split detection.
"""
from collections import Counter

import numpy as np

from .memory import (FL_ANON, FL_PARTIALLY_MAPPED, FL_PAGECACHE, FL_SWAPBACKED, HPAGE_PMD_NR,
                     HPAGE_PMD_ORDER, sorted_groups)


def group_by_folio(mem, pfns):
    """(pfns, sorted unique heads, per-head count) for a batch of pages."""
    pfns = np.asarray(pfns, dtype=np.int64)
    heads, counts = sorted_groups(mem.head[pfns])
    return pfns, heads, counts


class Rmap:
    def __init__(self, mem, config, policy, events=None, cost=None):
        self.mem = mem
        self.config = config
        self.policy = policy
        self.events = events if events is not None else Counter()
        # what the rmap code touches (cost.py): one sum per batch
        self.cost = cost if cost is not None else Counter()
        self.history = None       # a history.SlotHistory, when the kernel keeps one

    def _record(self, op, mm_id, heads, before_ids=None, before_shared=None, untracked=None):
        """Logs to the slot history the folios of `heads` (candidates the
        caller picked) whose slots or shared bit changed, or whose MM got
        no slot."""
        if len(heads) == 0:
            return
        m = self.mem
        ids = m.mm_id[heads]
        shared = m.maybe_shared[heads]
        if op == 'new':
            changed = np.ones(len(heads), dtype=bool)
            untracked = np.zeros(len(heads), dtype=bool)
        else:
            if untracked is None:
                untracked = np.zeros(len(heads), dtype=bool)
            changed = (ids != before_ids).any(axis=1) | untracked
            if before_shared is not None:
                changed |= shared != before_shared
        h = heads[changed]
        self.history.record(op, mm_id, h, ids[changed], m.mm_id_mapcount[h], shared[changed],
                            untracked[changed])

    # --- MM owner tracking (config independent) -------------------------------
    def _slots_set(self, mm_id, heads, n):
        """folio_set_large_mapcount(): a brand-new folio, slot 0 := (mm, n)."""
        m = self.mem
        m.large_mapcount[heads] = n
        m.mm_id[heads, 0] = mm_id
        m.mm_id_mapcount[heads, 0] = n
        m.mm_id[heads, 1] = 0
        m.mm_id_mapcount[heads, 1] = 0
        m.maybe_shared[heads] = False
        self.cost['large_mapcount'] += len(heads)
        self.cost['mm_id_slots'] += 2 * len(heads)
        if self.history is not None:
            self._record('new', mm_id, heads)

    def _slots_add(self, mm_id, heads, n):
        """folio_add_large_mapcount(): semantics.md 4.2.  One bit-spinlock
        acquisition per folio of the batch (folio_lock_large_mapcount)."""
        m = self.mem
        m.large_mapcount[heads] += n
        ids = m.mm_id[heads]
        cnt = m.mm_id_mapcount[heads]
        limit = self.config.mm_id_mapcount_max
        in0 = ids[:, 0] == mm_id
        in1 = ~in0 & (ids[:, 1] == mm_id)
        rest = ~in0 & ~in1
        changed = rest.copy()         # for the slot history: slots taken, lost or refused
        writes = 0
        for slot, mine in ((0, in0), (1, in1)):
            h = heads[mine]
            c = cnt[mine, slot] + n[mine]
            over = c > limit          # 32-bit: the signed 16-bit count overflowed
            m.mm_id_mapcount[h, slot] = np.where(over, 0, c)
            ho = h[over]
            m.mm_id[ho, slot] = 0
            m.maybe_shared[ho] = True
            if len(ho):
                changed[np.flatnonzero(mine)[over]] = True
            writes += len(h) + len(ho)
        take0 = rest & (ids[:, 0] == 0)
        h = heads[take0]
        m.mm_id[h, 0] = mm_id
        m.mm_id_mapcount[h, 0] = n[take0]
        m.maybe_shared[h[m.large_mapcount[h] != n[take0]]] = True
        writes += 2 * len(h)
        take1 = rest & ~take0 & (ids[:, 1] == 0)
        h = heads[take1]
        m.mm_id[h, 1] = mm_id
        m.mm_id_mapcount[h, 1] = n[take1]
        m.maybe_shared[h] = True
        self._count_batch(len(heads), writes + 2 * len(h))
        if self.history is not None and changed.any():
            self._record('add', mm_id, heads[changed], ids[changed],
                         untracked=(rest & ~take0 & ~take1)[changed])

    def _count_batch(self, nr_folios, slot_writes):
        """One folio_{add,sub}_return_large_mapcount() per folio of a batch:
        the bit spinlock, the large mapcount, the slot fields written."""
        cost = self.cost
        cost['mapcount_lock'] += nr_folios
        cost['large_mapcount'] += nr_folios
        cost['mm_id_slots'] += slot_writes

    def _slots_sub(self, mm_id, heads, n):
        """folio_sub_large_mapcount(): semantics.md 4.3.  The shared bit is
        re-evaluated only when a slot is freed or the MM is untracked."""
        m = self.mem
        m.large_mapcount[heads] -= n
        ids = m.mm_id[heads]
        in0 = ids[:, 0] == mm_id
        in1 = ~in0 & (ids[:, 1] == mm_id)
        check = ~in0 & ~in1
        writes = 0
        for slot, mine in ((0, in0), (1, in1)):
            h = heads[mine]
            c = m.mm_id_mapcount[h, slot] - n[mine]
            gone = c <= 0
            m.mm_id_mapcount[h, slot] = np.where(gone, 0, c)
            hg = h[gone]
            m.mm_id[hg, slot] = 0
            check[np.flatnonzero(mine)[gone]] = True
            writes += len(h) + len(hg)
        self._count_batch(len(heads), writes)
        h = heads[check]
        lm = m.large_mapcount[h]
        owned = (m.mm_id_mapcount[h, 0] == lm) | (m.mm_id_mapcount[h, 1] == lm)
        shared0 = m.maybe_shared[h]
        m.maybe_shared[h[owned]] = False
        if self.history is not None:
            self._record('sub', mm_id, h, ids[check], shared0)

    # --- mappings ------------------------------------------------------------------
    def add_new_anon(self, mm_id, heads, pmd):
        """folio_add_new_anon_rmap(): a freshly allocated anon folio mapped
        entirely by one MM, through a PMD (`pmd`) or through PTEs of all its
        pages.  Its pages are AnonExclusive."""
        m = self.mem
        heads = np.asarray(heads, dtype=np.int64)
        if len(heads) == 0:
            return
        m.flags[heads] |= FL_ANON | FL_SWAPBACKED
        nr = m.folio_nr_pages(heads)
        large = nr > 1
        small = heads[~large]
        m.page_mapcount[small] = 1
        m.anon_exclusive[small] = True
        self.cost['small_mapcount'] += len(small)
        lg = heads[large]
        if len(lg) == 0:
            return
        order = int(m.order[lg[0]])
        pfns = (lg[:, None] + np.arange(1 << order)).ravel()
        m.anon_exclusive[pfns] = True
        one = np.ones(len(lg), dtype=np.int64)
        if pmd:
            self.policy.check_add(m, lg, one * HPAGE_PMD_NR)
            self._slots_set(mm_id, lg, one)
            self.policy.pmds_added(m, lg, one, self.cost)
        else:
            self.policy.check_add(m, lg, nr[large])
            self._slots_set(mm_id, lg, nr[large])
            self.policy.ptes_added(m, pfns, lg, nr[large], self.cost)

    def add_ptes(self, mm_id, pfns):
        """folio_add_{anon,file}_rmap_ptes / folio_dup_*_rmap_ptes: one PTE
        for each page of `pfns` (unique) is added by the MM `mm_id`."""
        if len(pfns) == 0:
            return
        m = self.mem
        small, lp, lh, counts = self._split_batch(pfns)
        self.policy.check_add(m, lh, counts)
        m.page_mapcount[small] += 1
        self.cost['small_mapcount'] += len(small)
        if len(lh):
            self._slots_add(mm_id, lh, counts)
            self.policy.ptes_added(m, lp, lh, counts, self.cost)

    def remove_ptes(self, mm_id, pfns):
        """folio_remove_rmap_ptes(): PTEs of `pfns` (unique) zapped by the MM."""
        if len(pfns) == 0:
            return
        m = self.mem
        small, lp, lh, counts = self._split_batch(pfns)
        m.page_mapcount[small] -= 1
        self.cost['small_mapcount'] += len(small)
        if len(lh):
            self._slots_sub(mm_id, lh, counts)
            partial = self.policy.ptes_removed(m, lp, lh, counts, self.cost)
            self._deferred_split(lh[partial])

    def _split_batch(self, pfns):
        """A PTE batch split into its pages of small folios, and its pages,
        sorted unique heads and per-head page counts of large folios."""
        m = self.mem
        pfns = np.asarray(pfns, dtype=np.int64)
        slots = m.slot_index(pfns)
        page_large = m._f_order[slots] > 0
        if page_large.all():
            heads, counts = sorted_groups(m._f_head[slots])
            return pfns[:0], pfns, heads, counts
        small = pfns[~page_large]
        if not page_large.any():
            return small, pfns[:0], pfns[:0], pfns[:0]
        heads, counts = sorted_groups(m._f_head[slots[page_large]])
        return small, pfns[page_large], heads, counts

    def add_pmd(self, mm_id, heads, n=None):
        """folio_add_*_rmap_pmd(s) / folio_dup_*_rmap_pmd: `n` PMDs of the
        MM per folio (unique heads), one each by default; more than one
        only for a folio larger than a PMD (RFC 13/13: nr_mappings =
        nr_pages >> PMD_ORDER)."""
        heads = np.asarray(heads, dtype=np.int64)
        if len(heads) == 0:
            return
        n = np.ones(len(heads), dtype=np.int64) if n is None else np.asarray(n, dtype=np.int64)
        self.policy.check_add(self.mem, heads, n * HPAGE_PMD_NR)
        self._slots_add(mm_id, heads, n)
        self.policy.pmds_added(self.mem, heads, n, self.cost)

    def remove_pmd(self, mm_id, heads, n=None):
        heads = np.asarray(heads, dtype=np.int64)
        if len(heads) == 0:
            return
        n = np.ones(len(heads), dtype=np.int64) if n is None else np.asarray(n, dtype=np.int64)
        self._slots_sub(mm_id, heads, n)
        partial = self.policy.pmds_removed(self.mem, heads, n, self.cost)
        self._deferred_split(heads[partial])

    def _deferred_split(self, heads):
        """deferred_split_folio(folio, partially_mapped=true) for anon
        folios of order >= 2 that are not flagged yet (semantics.md 7.5)."""
        m = self.mem
        if len(heads) == 0:
            return
        ok = ((m.flags[heads] & FL_ANON) != 0) & (m.order[heads] >= 2) & \
             ((m.flags[heads] & FL_PARTIALLY_MAPPED) == 0)
        heads = heads[ok]
        if len(heads) == 0:
            return
        m.flags[heads] |= FL_PARTIALLY_MAPPED
        for o in m.order[heads]:
            if o == HPAGE_PMD_ORDER:
                self.events['thp_deferred_split_page'] += 1
            self.events['mthp/%dkB/split_deferred' % (4 << int(o))] += 1

    # --- accounting read-out ------------------------------------------------------
    def mapped_pages(self, heads):
        """Per folio, the pages counted in NR_ANON_MAPPED / NR_FILE_MAPPED."""
        m = self.mem
        heads = np.asarray(heads, dtype=np.int64)
        out = np.zeros(len(heads), dtype=np.int64)
        small = m.order[heads] == 0
        out[small] = (m.page_mapcount[heads[small]] > 0).astype(np.int64)
        out[~small] = self.policy.mapped_pages(m, heads[~small])
        return out


def folio_kind(mem, heads):
    """'anon', 'shmem' (swap-backed page cache) or 'file' per folio."""
    f = mem.flags[heads]
    return np.where(f & FL_ANON, 'anon',
                    np.where((f & FL_SWAPBACKED) & (f & FL_PAGECACHE), 'shmem', 'file'))

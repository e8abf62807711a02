"""Per-page mapcounts: the one place where CONFIG_PAGE_MAPCOUNT,
CONFIG_NO_PAGE_MAPCOUNT and the 2026 RFC "mm/rmap: support arbitrary folio
mappings" (message-id 20260412-mapcount-v1-0-05e8dfab52e0@kernel.org, its
patches cited below as "RFC NN/13") differ.

Both 6.18 configs keep the folio-level state (large mapcount, entire
mapcount, MM-ID slots, shared bit, semantics.md 3 and 4).  PAGE_MAPCOUNT
also keeps page->_mapcount of every page of a large folio and
_nr_pages_mapped; NO_PAGE_MAPCOUNT keeps neither and answers per-page
questions with the folio average and folio_maybe_mapped_shared()
(semantics.md 7 and 8).  The RFC kernel (TotalMappedPages) answers like
NO_PAGE_MAPCOUNT but keeps _total_mapped_pages instead of the entire
mapcount and maps folios larger than a PMD.

A policy object has two halves: the write side, called by rmap.py while
mappings are added and removed, and the read side, called by query.py for
what /proc shows.  Every input array holds PFNs of pages of large folios
unless a method says otherwise.

The write side also counts what the kernel's code touches, into the
`cost` Counter it is handed (cost.py names the keys): one array sum per
batch, never a Python loop over pages.
"""
import numpy as np

from .errors import Fault
from .memory import HPAGE_PMD_NR, HPAGE_PMD_ORDER, sorted_groups

# PFN-indexed helpers shared by the configs ------------------------------------


def _by_folio_size(mem, pfns, small, large):
    """small(pfns) where every folio of `pfns` (any page of each) is small,
    large(slots, order) where every one is large, else each on its part:
    one slot lookup, and no gather for the common case of one size."""
    pfns = np.asarray(pfns, dtype=np.int64)
    shape = pfns.shape
    pfns = pfns.ravel()
    slots = mem.slot_index(pfns)
    order = mem._f_order[slots]
    is_large = order != 0
    if not is_large.any():
        return small(pfns).reshape(shape)
    if is_large.all():
        return _per_run(large, slots, order).reshape(shape)
    out = small(pfns)
    idx = np.flatnonzero(is_large)
    out[idx] = _per_run(large, slots[idx], order[idx])
    return out.reshape(shape)


def _per_run(fn, slots, order):
    """fn(slots, order) computed once per run of pages of one folio (the
    pages of a VMA come in address order) and repeated over the run."""
    n = len(slots)
    if n >= 64:
        edge = np.empty(n, dtype=bool)
        edge[0] = True
        np.not_equal(slots[1:], slots[:-1], out=edge[1:])
        starts = np.flatnonzero(edge)
        if len(starts) * 4 <= n:
            vals = fn(slots[starts], order[starts].astype(np.int64))
            return np.repeat(vals, np.diff(np.append(starts, n)))
    return fn(slots, order.astype(np.int64))


def folio_maybe_mapped_shared(mem, pfns):
    """folio_maybe_mapped_shared() (include/linux/mm.h, semantics.md 5.1)
    of the folios of `pfns` (any page of each folio): small folios:
    mapcount > 1 (a small folio's only page is its head); large: false if
    the large mapcount is <= 1, else the shared bit."""
    return _by_folio_size(
        mem, pfns, lambda p: mem.page_mapcount[p] > 1,
        lambda sl, order: (mem._f_large_mapcount[sl] > 1) & mem._f_maybe_shared[sl])


def folio_average_page_mapcount(mem, pfns):
    """folio_average_page_mapcount() (fs/proc/internal.h, semantics.md 7.3)
    of the folios of `pfns` (any page of each folio): small folios: the
    mapcount; large: PTE mappings divided by the number of pages, rounded
    half up, plus the entire mapcount, at least 1 when anything is mapped."""
    def large(sl, order):
        lm = mem._f_large_mapcount[sl]
        e = mem._f_entire_mapcount[sl]
        a = ((lm - e + (np.left_shift(1, order) >> 1)) >> order) + e
        return np.where(lm <= 0, 0, np.where(lm <= e, e, np.maximum(a, 1)))
    return _by_folio_size(mem, pfns, lambda p: mem.page_mapcount[p].astype(np.int64), large)


class EntireMapcount:
    """What both 6.18 configs share: folio->_entire_mapcount counts the PMD
    mappings of a folio (semantics.md 3.1); a folio is PMD-mapped for the
    THP statistics while it is >= 1."""

    # kpagecount of a free page shows its raw page type (NO_PAGE_MAPCOUNT
    # only, semantics.md 12.4); else 0 (page_mapcount_is_type())
    kpagecount_raw_page_type = False
    # smaps_account() divides the PSS page by page, also for a PMD (6.18)
    smaps_pss_per_entry = False
    # 6.18 maps no folio larger than a PMD (MAX_PAGECACHE_ORDER, shmem orders)
    max_folio_order = 9

    def check_add(self, mem, heads, pages):
        """6.18 has no counter that a mapping could overflow first."""

    def pmds_added(self, mem, heads, n, cost):
        """__folio_add_rmap(RMAP_LEVEL_PMD): one atomic_inc of
        _entire_mapcount per PMD."""
        mem.entire_mapcount[heads] += n
        cost['entire_mapcount'] += len(heads)

    def pmds_removed(self, mem, heads, n, cost):
        mem.entire_mapcount[heads] -= n
        cost['entire_mapcount'] += len(heads)
        return self._pmd_partial(mem, heads)

    def pmd_mapped(self, mem, heads):
        """Counted in NR_ANON_THPS / NR_SHMEM_PMDMAPPED / NR_FILE_PMDMAPPED."""
        return mem.entire_mapcount[heads] > 0

    def average(self, mem, pfns):
        return folio_average_page_mapcount(mem, pfns)


class PageMapcount(EntireMapcount):
    """CONFIG_PAGE_MAPCOUNT=y."""

    name = 'per-page'
    keeps_page_mapcount = True

    # write side -------------------------------------------------------------
    def ptes_added(self, mem, pfns, heads, counts, cost):
        """__folio_add_rmap(RMAP_LEVEL_PTE): page->_mapcount and
        _nr_pages_mapped.  pfns are unique."""
        mem.page_mapcount[pfns] += 1
        first = pfns[mem.page_mapcount[pfns] == 1]
        cost['page_mapcount'] += len(pfns)
        if len(first):
            uh, n = sorted_groups(mem.head[first])
            mem.nr_pages_mapped[uh] += n
            cost['nr_pages_mapped'] += len(uh)

    def ptes_removed(self, mem, pfns, heads, counts, cost):
        """__folio_remove_rmap(RMAP_LEVEL_PTE).  Returns, per folio of
        `heads` (unique), whether it is now partially mapped: some page
        became unmapped (while no PMD maps the folio) and some page is
        still PTE-mapped."""
        mem.page_mapcount[pfns] -= 1
        last = pfns[mem.page_mapcount[pfns] == 0]
        nr_last = np.zeros(len(heads), dtype=np.int64)
        if len(last):
            uh, n = sorted_groups(mem.head[last])
            mem.nr_pages_mapped[uh] -= n
            nr_last[np.searchsorted(heads, uh)] = n
        cost['page_mapcount'] += len(pfns)
        cost['nr_pages_mapped'] += int(np.count_nonzero(nr_last))
        no_pmd = mem.entire_mapcount[heads] == 0
        return (nr_last > 0) & no_pmd & (mem.nr_pages_mapped[heads] > 0)

    def pmds_added(self, mem, heads, n, cost):
        """The first PMD also adds ENTIRELY_MAPPED to _nr_pages_mapped."""
        first = mem.entire_mapcount[heads] == 0
        super().pmds_added(mem, heads, n, cost)
        cost['nr_pages_mapped'] += int(np.count_nonzero(first))

    def pmds_removed(self, mem, heads, n, cost):
        partial = super().pmds_removed(mem, heads, n, cost)
        cost['nr_pages_mapped'] += int(np.count_nonzero(mem.entire_mapcount[heads] == 0))
        return partial

    def _pmd_partial(self, mem, heads):
        """__folio_remove_rmap(RMAP_LEVEL_PMD) after the entire mapcount was
        decremented: the last PMD went and some, not all, pages are still
        PTE-mapped."""
        nr = mem.folio_nr_pages(heads)
        ptemapped = mem.nr_pages_mapped[heads]
        return (mem.entire_mapcount[heads] == 0) & (ptemapped > 0) & (ptemapped < nr)

    def mapped_pages(self, mem, heads):
        """Pages of each large folio counted in NR_ANON_MAPPED/NR_FILE_MAPPED
        (the running sum of __folio_mod_stat's nr): all of them while a
        PMD maps it, else the pages with a PTE mapping."""
        nr = mem.folio_nr_pages(heads)
        return np.where(mem.entire_mapcount[heads] > 0, nr, mem.nr_pages_mapped[heads])

    # read side --------------------------------------------------------------
    def precise(self, mem, pfns):
        """folio_precise_page_mapcount(): page->_mapcount + 1 + E."""
        return mem.page_mapcount[pfns] + mem.folio_fields(pfns, 'entire_mapcount')[0]

    def kpagecount(self, mem, pfns):
        return self.precise(mem, pfns)

    def smaps_mapcount(self, mem, pfns):
        """smaps_account(): m per page and whether the page is private
        (m < 2)."""
        m = self.precise(mem, pfns)
        return m, m < 2

    def pagemap_exclusive(self, mem, pfns):
        """PM_MMAP_EXCLUSIVE for PTE entries: precise mapcount == 1.  For a
        PMD leaf the caller passes the PMD's first page for every entry
        (the quirk of semantics.md 8.3/12.1)."""
        return self.precise(mem, pfns) == 1

    def numa_mapcount(self, mem, pfns):
        return self.precise(mem, pfns)

    def mapcount_terms(self, mem, pfn):
        """Why kpagecount/smaps' m of one page of a large folio is what it
        is: (kernel function, {input: value})."""
        return ('folio_precise_page_mapcount',
                {'page_mapcount': int(mem.page_mapcount[pfn]),
                 'entire_mapcount': int(mem.entire_mapcount[mem.head[pfn]])})

    def exclusive_terms(self, mem, pfn):
        """Why pagemap bit 56 / smaps private is what it is for a page of
        a large folio: (rule, {input: value})."""
        return ('precise_mapcount_is_1', {'precise_mapcount': int(self.precise(mem, pfn))})

    def debug_columns(self, mem, heads):
        """The mapcount fields this config keeps in a large folio, by their
        struct folio names (sys/kernel/debug/mmemu/folios)."""
        return [('entire_mapcount', mem.entire_mapcount[heads]),
                ('nr_pages_mapped', mem.nr_pages_mapped[heads])]


class NoPageMapcount(EntireMapcount):
    """CONFIG_NO_PAGE_MAPCOUNT=y."""

    name = 'none'
    keeps_page_mapcount = False
    kpagecount_raw_page_type = True

    def ptes_added(self, mem, pfns, heads, counts, cost):
        """Nothing per page is kept: page->_mapcount and _nr_pages_mapped
        of large folios stay unmaintained (semantics.md 7.1)."""

    def ptes_removed(self, mem, pfns, heads, counts, cost):
        """Partially mapped: 0 < LM < N and no PMD mapping (semantics 7.5)."""
        lm = mem.large_mapcount[heads]
        return (lm > 0) & (lm < mem.folio_nr_pages(heads)) & (mem.entire_mapcount[heads] == 0)

    def _pmd_partial(self, mem, heads):
        lm = mem.large_mapcount[heads]
        return (mem.entire_mapcount[heads] == 0) & (lm > 0) & (lm < mem.folio_nr_pages(heads))

    def mapped_pages(self, mem, heads):
        """The whole folio counts from its first mapping to its last."""
        return np.where(mem.large_mapcount[heads] > 0, mem.folio_nr_pages(heads), 0)

    def kpagecount(self, mem, pfns):
        return self.average(mem, pfns)

    def smaps_mapcount(self, mem, pfns):
        return (self.average(mem, pfns), ~folio_maybe_mapped_shared(mem, pfns))

    def pagemap_exclusive(self, mem, pfns):
        return ~folio_maybe_mapped_shared(mem, pfns)

    def numa_mapcount(self, mem, pfns):
        return self.average(mem, pfns)

    def mapcount_terms(self, mem, pfn):
        head = mem.head[pfn]
        return ('folio_average_page_mapcount',
                {'large_mapcount': int(mem.large_mapcount[head]),
                 'entire_mapcount': int(mem.entire_mapcount[head]),
                 'order': int(mem.order[head])})

    def exclusive_terms(self, mem, pfn):
        head = mem.head[pfn]
        return ('not_folio_maybe_mapped_shared',
                {'large_mapcount': int(mem.large_mapcount[head]),
                 'maybe_shared': int(mem.maybe_shared[head])})

    def debug_columns(self, mem, heads):
        """No _nr_pages_mapped with NO_PAGE_MAPCOUNT (semantics.md 7.1)."""
        return [('entire_mapcount', mem.entire_mapcount[heads])]


# The RFC -----------------------------------------------------------------------------------

LONG_MAX_32 = (1 << 31) - 1


class TotalMapcountOverflow(Fault):
    """A mapping would overflow the 32-bit _total_mapped_pages."""


def folio_total_mapped_pages_average(mem, pfns):
    """folio_average_page_mapcount() of RFC 13/13 (fs/proc/internal.h) of
    the folios of `pfns` (any page of each folio): total =
    folio_total_mapped_pages() (small folios: folio_mapcount()); 0 or a
    small folio: total; else (total + 2^(order-1)) >> order, at least 1."""
    def large(sl, order):
        total = mem._f_total_mapped_pages[sl]
        return np.where(total == 0, 0, np.maximum((total + np.left_shift(1, order - 1)) >> order, 1))
    return _by_folio_size(mem, pfns, lambda p: mem.page_mapcount[p].astype(np.int64), large)


class TotalMappedPages(NoPageMapcount):
    """6.18 with the RFC applied (rmap: total_mapped_pages).

    Write side (RFC 13/13, include/linux/rmap.h and mm/rmap.c):
    - _entire_mapcount is gone; folio->_total_mapped_pages is added to and
      subtracted from, under the large-mapcount lock and in the same
      folio_{add,sub}_return_large_mapcount() call as the mapcount, by the
      number of pages each mapping covers: a PTE adds 1, a PMD adds
      HPAGE_PMD_NR ("a PMD-sized large folio with 512 pages that is mapped
      through 2 PMDs and a single PTE has mapcount == 3 and 1025 total
      mapped pages").  A PMD still adds 1 to the large mapcount.
    - page->_mapcount and _nr_pages_mapped of large folios are not kept
      (RFC 01/13 removes _nr_pages_mapped, 07/13 CONFIG_PAGE_MAPCOUNT).
    - NR_ANON_MAPPED / NR_FILE_MAPPED: the whole folio from the first
      mapping to the last (__folio_add_rmap: mapcount == nr_mappings),
      as NO_PAGE_MAPCOUNT (cover letter, functional change 1).
    - NR_ANON_THPS / NR_*_PMDMAPPED: only for folios of exactly
      HPAGE_PMD_NR pages, from the first PMD (total - mapcount goes from 0
      to nr_pages - nr_mappings) to the last (total - mapcount back to 0).
      A folio larger than a PMD mapped by PMDs is not counted there.
    - "certainly partially mapped" (__folio_certainly_partially_mapped):
      total && total < folio_large_nr_pages, checked on every PTE and PMD
      removal of an anon folio.  For folios up to PMD size this equals
      6.18's NO_PAGE_MAPCOUNT test (0 < LM < N and no PMD): with a PMD the
      total is >= N, without one total == LM.

    Read side:
    - kpagecount (RFC 03/13), numa_maps mapmax (02/13), smaps PSS (06/13):
      folio_average_page_mapcount() computed from the total, see
      folio_total_mapped_pages_average().  For PMD-sized folios this gives
      the same numbers as 6.18's E + round((LM - E) / N).
    - pagemap bit 56 (04/13) and smaps USS (06/13):
      !folio_maybe_mapped_shared(folio), for PTE and PMD entries alike.
      6.18's NO_PAGE_MAPCOUNT already answered that way on the PMD path
      (__folio_page_mapped_exclusively() was folio-level there), so the
      only change is against CONFIG_PAGE_MAPCOUNT's first-page quirk.
    - smaps_account() (06/13) divides the PSS of a whole PMD entry once,
      (folio_size << PSS_SHIFT) / mapcount, not page by page: the sums
      can differ from 6.18 in the fixed-point remainder.
    - a free page's kpagecount: folio_total_mapped_pages() of a small
      folio is folio_mapcount(), which "will report 0 for pages which
      cannot be mapped into userspace" (include/linux/mm.h: a page type,
      such as a free buddy page's, reads as 0).

    Open in the RFC (cover letter "Mapcount overflows", 13/13 commit
    message): on 32-bit, _total_mapped_pages is an atomic_long_t of 32
    bits and may overflow.  The RFC suggests "reject new folio mappings if
    there is the possibility for mapcount + total mapped pages overflows
    early ... stop once it would turn negative".  We do that: a mapping
    that would take the total above LONG_MAX is refused with ENOMEM
    (TotalMapcountOverflow, a Fault) by check_add(), which rmap.py calls
    before it changes any mapcount of the batch; the step fails as a
    system call would.  (Reaching it needs 2^31 mapped pages of one folio,
    8 TiB of mappings; on 64-bit the limit is out of reach.)

    Folios larger than a PMD (13/13: "mapping folios that span multiple
    PMDs"): max_folio_order is 11 here; the callers map them with PMDs
    where a whole aligned PMD lies in the VMA and PTEs elsewhere.
    """

    name = 'total'
    kpagecount_raw_page_type = False
    smaps_pss_per_entry = True
    max_folio_order = 11

    def __init__(self, bits=64):
        self.total_max = LONG_MAX_32 if bits == 32 else (1 << 63) - 1

    def check_add(self, mem, heads, pages):
        """Refuses a batch that would take a total above total_max."""
        new = mem.total_mapped_pages[heads] + pages
        if len(new) and int(new.max()) > self.total_max:
            h = int(heads[int(np.argmax(new))])
            raise TotalMapcountOverflow(
                'ENOMEM: folio %d: _total_mapped_pages would exceed %d (32-bit atomic_long_t; '
                'the RFC rejects such mappings)' % (h, self.total_max))

    def _add_total(self, mem, heads, pages, cost):
        mem.total_mapped_pages[heads] += pages
        cost['total_mapped_pages'] += len(heads)

    def ptes_added(self, mem, pfns, heads, counts, cost):
        self._add_total(mem, heads, counts, cost)

    def ptes_removed(self, mem, pfns, heads, counts, cost):
        mem.total_mapped_pages[heads] -= counts
        cost['total_mapped_pages'] += len(heads)
        return self._partial(mem, heads)

    def pmds_added(self, mem, heads, n, cost):
        self._add_total(mem, heads, n * HPAGE_PMD_NR, cost)

    def pmds_removed(self, mem, heads, n, cost):
        mem.total_mapped_pages[heads] -= n * HPAGE_PMD_NR
        cost['total_mapped_pages'] += len(heads)
        return self._partial(mem, heads)

    def _partial(self, mem, heads):
        """__folio_certainly_partially_mapped() (RFC 13/13)."""
        t = mem.total_mapped_pages[heads]
        return (t > 0) & (t < mem.folio_nr_pages(heads))

    def pmd_mapped(self, mem, heads):
        """RFC 13/13 __folio_add_rmap/__folio_remove_rmap: nr_pmdmapped only
        for folio_large_nr_pages() == HPAGE_PMD_NR, while total - mapcount
        > 0 (each PMD adds HPAGE_PMD_NR - 1 to that difference, a PTE 0)."""
        return (mem.order[heads] == HPAGE_PMD_ORDER) & \
            (mem.total_mapped_pages[heads] - mem.large_mapcount[heads] > 0)

    def average(self, mem, pfns):
        return folio_total_mapped_pages_average(mem, pfns)

    def mapcount_terms(self, mem, pfn):
        head = mem.head[pfn]
        return ('folio_total_mapped_pages_average',
                {'total_mapped_pages': int(mem.total_mapped_pages[head]),
                 'order': int(mem.order[head])})

    def debug_columns(self, mem, heads):
        """_entire_mapcount is gone; _total_mapped_pages counts the pages
        every mapping covers (RFC 13/13)."""
        return [('total_mapped_pages', mem.total_mapped_pages[heads])]


def policy_for(config):
    if getattr(config, 'rmap', 'entire_mapcount') == 'total_mapped_pages':
        return TotalMappedPages(getattr(config, 'bits', 64))
    return PageMapcount() if config.page_mapcount else NoPageMapcount()

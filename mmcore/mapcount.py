"""Per-page mapcounts: the one place where CONFIG_PAGE_MAPCOUNT and
CONFIG_NO_PAGE_MAPCOUNT differ.

Both configs keep the folio-level state (large mapcount, entire mapcount,
MM-ID slots, shared bit, semantics.md 3 and 4).  PAGE_MAPCOUNT also keeps
page->_mapcount of every page of a large folio and _nr_pages_mapped;
NO_PAGE_MAPCOUNT keeps neither and answers per-page questions with the
folio average and folio_maybe_mapped_shared() (semantics.md 7 and 8).

A policy object has two halves: the write side, called by rmap.py while
mappings are added and removed, and the read side, called by query.py for
what /proc shows.  Every input array holds PFNs of pages of large folios
unless a method says otherwise.
"""
import numpy as np

# PFN-indexed helpers shared by both configs ----------------------------------


def folio_maybe_mapped_shared(mem, heads):
    """folio_maybe_mapped_shared() (include/linux/mm.h, semantics.md 5.1):
    small folios: mapcount > 1; large: false if the large mapcount is <= 1,
    else the shared bit."""
    heads = np.asarray(heads, dtype=np.int64)
    small = mem.order[heads] == 0
    out = np.empty(len(heads), dtype=bool)
    out[small] = mem.page_mapcount[heads[small]] > 1
    lg = heads[~small]
    out[~small] = (mem.large_mapcount[lg] > 1) & mem.maybe_shared[lg]
    return out


def folio_average_page_mapcount(mem, heads):
    """folio_average_page_mapcount() (fs/proc/internal.h, semantics.md 7.3):
    small folios: the mapcount; large: PTE mappings divided by the number
    of pages, rounded half up, plus the entire mapcount, at least 1 when
    anything is mapped."""
    heads = np.asarray(heads, dtype=np.int64)
    order = mem.order[heads].astype(np.int64)
    lm = mem.large_mapcount[heads]
    e = mem.entire_mapcount[heads]
    nr = np.left_shift(1, order)
    pte = lm - e
    avg = ((pte + nr // 2) >> order) + e
    avg = np.where(lm <= 0, 0, np.where(lm <= e, e, np.maximum(avg, 1)))
    small = order == 0
    avg[small] = mem.page_mapcount[heads[small]]
    return avg


class PageMapcount:
    """CONFIG_PAGE_MAPCOUNT=y."""

    name = 'per-page'
    keeps_page_mapcount = True

    # write side -------------------------------------------------------------
    def ptes_added(self, mem, pfns, heads, counts):
        """__folio_add_rmap(RMAP_LEVEL_PTE): page->_mapcount and
        _nr_pages_mapped.  pfns are unique."""
        mem.page_mapcount[pfns] += 1
        first = mem.page_mapcount[pfns] == 1
        np.add.at(mem.nr_pages_mapped, mem.head[pfns[first]], 1)

    def ptes_removed(self, mem, pfns, heads):
        """__folio_remove_rmap(RMAP_LEVEL_PTE).  Returns, per folio of
        `heads` (unique), whether it is now partially mapped: some page
        became unmapped (while no PMD maps the folio) and some page is
        still PTE-mapped."""
        mem.page_mapcount[pfns] -= 1
        last = pfns[mem.page_mapcount[pfns] == 0]
        np.subtract.at(mem.nr_pages_mapped, mem.head[last], 1)
        nr_last = np.zeros(len(heads), dtype=np.int64)
        pos = np.searchsorted(heads, mem.head[last])
        np.add.at(nr_last, pos, 1)
        no_pmd = mem.entire_mapcount[heads] == 0
        return (nr_last > 0) & no_pmd & (mem.nr_pages_mapped[heads] > 0)

    def pmd_removed(self, mem, heads):
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
        return mem.page_mapcount[pfns] + mem.entire_mapcount[mem.head[pfns]]

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


class NoPageMapcount:
    """CONFIG_NO_PAGE_MAPCOUNT=y."""

    name = 'none'
    keeps_page_mapcount = False

    def ptes_added(self, mem, pfns, heads, counts):
        """Nothing per page is kept: page->_mapcount and _nr_pages_mapped
        of large folios stay unmaintained (semantics.md 7.1)."""

    def ptes_removed(self, mem, pfns, heads):
        """Partially mapped: 0 < LM < N and no PMD mapping (semantics 7.5)."""
        lm = mem.large_mapcount[heads]
        return (lm > 0) & (lm < mem.folio_nr_pages(heads)) & (mem.entire_mapcount[heads] == 0)

    def pmd_removed(self, mem, heads):
        lm = mem.large_mapcount[heads]
        return (mem.entire_mapcount[heads] == 0) & (lm > 0) & (lm < mem.folio_nr_pages(heads))

    def mapped_pages(self, mem, heads):
        """The whole folio counts from its first mapping to its last."""
        return np.where(mem.large_mapcount[heads] > 0, mem.folio_nr_pages(heads), 0)

    def kpagecount(self, mem, pfns):
        return folio_average_page_mapcount(mem, mem.head[pfns])

    def smaps_mapcount(self, mem, pfns):
        heads = mem.head[pfns]
        return (folio_average_page_mapcount(mem, heads),
                ~folio_maybe_mapped_shared(mem, heads))

    def pagemap_exclusive(self, mem, pfns):
        return ~folio_maybe_mapped_shared(mem, mem.head[pfns])

    def numa_mapcount(self, mem, pfns):
        return folio_average_page_mapcount(mem, mem.head[pfns])

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


def policy_for(config):
    return PageMapcount() if config.page_mapcount else NoPageMapcount()

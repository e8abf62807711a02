"""A precise model of who maps which page frame, built from page tables only.

`PreciseMap(k)` walks every VMA of every process of an emulated kernel and
counts, per PFN, the page-table entries that map it: PTE entries per page,
PMD leaves per folio (one PMD leaf is one mapping of the whole folio), and
per folio the MMs whose entries map it.  It reads no mapcount, slot, flag
of the rmap or statistic of the mm core, so the tests can hold those
against it.  Folio boundaries (head, order) and folio kinds (anon, shmem,
page cache) are taken from the memory map, as the kernel's page walkers do.

Also here: the references and _pincount a pin adds (mm/gup.c), the
average page mapcount of semantics.md 7.3 computed from the model's counts,
and `ContentModel`, which follows what every page should contain.
"""
from collections import Counter

import numpy as np

from mmcore.memory import (FL_ANON, FL_PAGECACHE, FL_RESERVED, FL_SWAPBACKED, FL_ZERO,
                           GUP_PIN_COUNTING_BIAS, HPAGE_PMD_NR, HPAGE_PMD_ORDER)
from mmcore.mm import PTE_PMD, VM_WIPEONFORK

PAGE_SHIFT = 12
MM_KEY = 1 << 32            # above every MM ID (MM_ID_BITS <= 31)


class PreciseMap:
    """Mappings of every PFN, counted from the page tables of kernel `k`.

    pte[pfn]        PTE entries mapping the page (PMD leaves not included)
    pmd[pfn]        at a folio's head: PMD leaves mapping the folio
    entries[pfn]    at a folio's head: all entries mapping the folio (a PMD
                    leaf counts 1, as in the folio's large mapcount)
    mapped[pfn]     at a folio's head: its pages with at least one entry
    nr_mms[pfn]     at a folio's head: MMs with an entry mapping the folio
    sole_mm[pfn]    at a folio's head: that MM when nr_mms is 1
    rss[pid]        Counter of present normal pages by mm_counter() kind
                    ('anon', 'shmem', 'file')
    zero_pfns       PFNs of the zero pages found mapped
    errors          page-table shapes no kernel can produce
    """

    def __init__(self, k):
        mem = self.mem = k.mem
        n = mem.nr_frames
        self.pte = np.zeros(n, dtype=np.int64)
        self.pmd = np.zeros(n, dtype=np.int64)
        self.rss = {}
        self.zero_pfns = set()
        self.errors = []
        pair_heads, pair_mms = [], []
        for pid in sorted(k.processes):
            proc = k.processes[pid]
            self.rss[pid] = Counter(anon=0, shmem=0, file=0)
            for vma in proc.mm.vmas:
                heads = self._walk(pid, vma)
                pair_heads.append(heads)
                pair_mms.append(np.full(len(heads), proc.mm.mm_id, dtype=np.int64))
        heads = np.concatenate(pair_heads) if pair_heads else np.zeros(0, np.int64)
        mms = np.concatenate(pair_mms) if pair_mms else np.zeros(0, np.int64)
        # (head, MM) pairs as one key each, with the MM's number of entries
        self._keys, self._counts = np.unique(heads * MM_KEY + mms, return_counts=True)
        pair_heads = self._keys // MM_KEY
        self.nr_mms = np.bincount(pair_heads, minlength=n).astype(np.int64)
        self.sole_mm = np.zeros(n, dtype=np.int64)
        self.sole_mm[pair_heads] = self._keys % MM_KEY
        mapped_pfns = np.flatnonzero(self.pte)
        by_head = mem.head[mapped_pfns]
        self.entries = np.bincount(by_head, weights=self.pte[mapped_pfns],
                                   minlength=n).astype(np.int64) + self.pmd
        self.mapped = np.bincount(by_head, minlength=n).astype(np.int64)
        pmd_heads = np.flatnonzero(self.pmd)
        self.mapped[pmd_heads] = HPAGE_PMD_NR

    def _walk(self, pid, vma):
        """Counts the entries of one VMA; returns the folio head of every
        entry that maps a normal page (a PMD leaf once)."""
        mem = self.mem
        where = 'pid %d %r %#x-%#x' % (pid, vma.name, vma.start, vma.end)
        idx = np.flatnonzero(vma.pfn >= 0)
        pfn = vma.pfn[idx]
        bad = (pfn >= mem.nr_frames) | mem.free[np.minimum(pfn, mem.nr_frames - 1)]
        if bad.any():
            self.errors.append('%s maps free or missing frames %s'
                               % (where, pfn[bad][:8].tolist()))
            idx, pfn = idx[~bad], pfn[~bad]
        heads = mem.head[pfn]
        zero = (mem.flags[heads] & FL_ZERO) != 0
        self.zero_pfns.update(np.unique(pfn[zero]).tolist())
        pmd = (vma.bits[idx] & PTE_PMD) != 0
        self._check_pmd_leaves(where, vma, idx[pmd])
        pte_pfn = pfn[~zero & ~pmd]
        np.add.at(self.pte, pte_pfn, 1)
        first = pmd & (((vma.start >> PAGE_SHIFT) + idx) % HPAGE_PMD_NR == 0)
        leaf_heads = heads[~zero & first]
        np.add.at(self.pmd, leaf_heads, 1)
        f = mem.flags[heads[~zero]]
        anon = (f & FL_ANON) != 0
        shmem = ~anon & ((f & FL_SWAPBACKED) != 0)
        self.rss[pid].update(anon=int(anon.sum()), shmem=int(shmem.sum()),
                             file=int((~anon & ~shmem).sum()))
        return np.concatenate([mem.head[pte_pfn], leaf_heads])

    def _check_pmd_leaves(self, where, vma, idx):
        """A PMD leaf: 512 entries over one naturally aligned 2M block inside
        the VMA, mapping in order the 512 pages of one PMD-order folio, all
        with the same bits."""
        mem = self.mem
        base = vma.start >> PAGE_SHIFT
        for b in np.unique(idx - (base + idx) % HPAGE_PMD_NR).tolist():
            if b < 0 or b + HPAGE_PMD_NR > vma.nr_pages:
                self.errors.append('%s: PMD leaf at page %d crosses the VMA' % (where, b))
                continue
            sl = slice(b, b + HPAGE_PMD_NR)
            head = int(vma.pfn[b])
            ok = bool((vma.bits[sl] & PTE_PMD).all()) and head >= 0 and \
                mem.head[head] == head and mem.order[head] == HPAGE_PMD_ORDER and \
                bool((vma.pfn[sl] == head + np.arange(HPAGE_PMD_NR)).all()) and \
                bool((vma.bits[sl] == vma.bits[b]).all())
            if not ok:
                self.errors.append('%s: malformed PMD leaf at page %d' % (where, b))

    # --- derived counts -----------------------------------------------------------
    def precise(self, pfns):
        """Entries mapping each page: its PTEs plus the PMD leaves of its
        folio (what folio_precise_page_mapcount() stands for, 7.2)."""
        pfns = np.asarray(pfns, dtype=np.int64)
        return self.pte[pfns] + self.pmd[self.mem.head[pfns]]

    def mm_entries(self, head, mm_id):
        """Entries of one MM mapping the folio."""
        key = int(head) * MM_KEY + int(mm_id)
        i = int(np.searchsorted(self._keys, key))
        return int(self._counts[i]) if i < len(self._keys) and self._keys[i] == key else 0

    def only_mapped_by(self, heads, mm_id):
        """Per folio: mapped by `mm_id` and by no other MM."""
        heads = np.asarray(heads, dtype=np.int64)
        return (self.nr_mms[heads] == 1) & (self.sole_mm[heads] == mm_id)

    def average_page_mapcount(self, heads):
        """folio_average_page_mapcount() (semantics.md 7.3) from the model's
        counts: small folios their mapcount; large ones the PTE mappings
        divided by the number of pages, rounded half up, plus the PMD
        mappings, at least 1 when anything is mapped."""
        heads = np.asarray(heads, dtype=np.int64)
        order = self.mem.order[heads].astype(np.int64)
        m = self.entries[heads]
        e = self.pmd[heads]
        avg = np.maximum((((m - e) + (np.left_shift(1, order) >> 1)) >> order) + e, 1)
        avg = np.where(m <= 0, 0, np.where(m <= e, e, avg))
        return np.where(order == 0, self.pte[heads], avg)

    def total_mapped_pages(self, heads):
        """The RFC's _total_mapped_pages from the model: every PTE maps one
        page, every PMD leaf HPAGE_PMD_NR (RFC 13/13)."""
        heads = np.asarray(heads, dtype=np.int64)
        e = self.pmd[heads]
        return self.entries[heads] - e + e * 512

    def average_page_mapcount_total(self, heads):
        """folio_average_page_mapcount() of RFC 13/13 from the model:
        small folios their mapcount; large ones 0 if the total is 0, else
        max((total + 2^(order-1)) >> order, 1)."""
        heads = np.asarray(heads, dtype=np.int64)
        order = self.mem.order[heads].astype(np.int64)
        total = self.total_mapped_pages(heads)
        avg = np.maximum((total + (np.left_shift(1, order) >> 1)) >> order, 1)
        return np.where(order == 0, self.pte[heads], np.where(total == 0, 0, avg))


def pin_references(mem, pfns):
    """(refcount, _pincount) per folio head held by pins of `pfns`: a
    FOLL_PIN adds GUP_PIN_COUNTING_BIAS references to a small folio, one
    reference and one _pincount to a large one (try_grab_folio())."""
    n = mem.nr_frames
    pfns = np.asarray(pfns, dtype=np.int64)
    heads = mem.head[pfns]
    large = mem.order[heads] > 0
    refs = np.bincount(heads, weights=np.where(large, 1, GUP_PIN_COUNTING_BIAS),
                       minlength=n).astype(np.int64)
    pincount = np.bincount(heads[large], minlength=n).astype(np.int64)
    return refs, pincount


def folio_heads(mem):
    """Heads of the allocated folios that the rmap tracks (not reserved
    frames, not the zero pages)."""
    pfn = np.flatnonzero(~mem.free)
    heads = pfn[mem.head[pfn] == pfn]
    return heads[(mem.flags[heads] & (FL_RESERVED | FL_ZERO)) == 0]


def page_cache_references(mem, heads):
    """One reference per page while a folio is in a page cache."""
    in_cache = (mem.flags[heads] & FL_PAGECACHE) != 0
    return np.where(in_cache, mem.folio_nr_pages(heads), 0)


# --- what the pages hold -----------------------------------------------------------------

FILE_TOKEN = 1 << 40        # initial content of page i of file object j: (j + 1) * 2^40 + i


class ContentModel:
    """What every mapped page should contain, as opaque tokens, derived
    from the steps alone.

    Every written page gets a new token.  Private mappings keep one array
    per (pid, range name) over the range's pages (index = page offset from
    the range's start): 0 means "what backs it" (zeros for anonymous
    memory, the file's current content for a private file mapping), a
    positive token a private copy, and -token a page given to MADV_FREE,
    which may still hold the token or may have been discarded and read as
    zeros.  Shared mappings and page caches keep one array per object.

    check() then holds the page tables against it: pages mapped in several
    places hold one content, the zero page only zeros, a page-cache page
    sits at its file index and is not mapped where the process wrote a
    private copy.  `lost` is set when a step failed in a way whose partial
    effect is unknown; contents are not checked after that.
    """

    def __init__(self):
        self.private = {}       # pid -> {range name: np.int64 array}
        self.shared = {}        # object id -> np.int64 array
        self.next_token = 1
        self.lost = False

    # --- state ----------------------------------------------------------------------
    def object_content(self, obj):
        c = self.shared.get(obj.id)
        if c is None:
            c = np.zeros(obj.nr_pages, dtype=np.int64) if obj.shmem_anon else \
                FILE_TOKEN * (obj.id + 1) + np.arange(obj.nr_pages, dtype=np.int64)
            self.shared[obj.id] = c
        return c

    def private_content(self, pid, name, size):
        ranges = self.private.setdefault(pid, {})
        a = ranges.get(name)
        if a is None or len(a) < size:
            grown = np.zeros(max(size, 0), dtype=np.int64)
            if a is not None:
                grown[:len(a)] = a
            ranges[name] = a = grown
        return a

    def tokens(self, n):
        t = np.arange(self.next_token, self.next_token + n, dtype=np.int64)
        self.next_token += n
        return t

    @staticmethod
    def offsets(vma, lo, hi):
        """Range page offsets of VMA pages [lo, hi)."""
        return ((vma.start - vma.range_start) >> PAGE_SHIFT) + np.arange(lo, hi)

    @staticmethod
    def spans(proc, start, end):
        """(vma, lo, hi) of every VMA part inside [start, end), by address."""
        for v in proc.mm.vmas_in(start, end):
            lo, hi = v.page_index(max(start, v.start)), v.page_index(min(end, v.end))
            if lo < hi:
                yield v, lo, hi

    # --- steps ------------------------------------------------------------------------
    def write(self, proc, start, end):
        """Each page of [start, end) gets a new token."""
        for v, lo, hi in self.spans(proc, start, end):
            t = self.tokens(hi - lo)
            if v.is_shared:
                self.object_content(v.obj)[v.pgoff + lo:v.pgoff + hi] = t
            else:
                off = self.offsets(v, lo, hi)
                self.private_content(proc.pid, v.name, int(off[-1]) + 1)[off] = t

    def unshare(self, proc, start, end):
        """A write fault that writes nothing (FOLL_WRITE of a pin): a private
        file page becomes a private copy of the file's current content."""
        for v, lo, hi in self.spans(proc, start, end):
            if v.is_shared or v.obj is None:
                continue
            off = self.offsets(v, lo, hi)
            priv = self.private_content(proc.pid, v.name, int(off[-1]) + 1)
            backing = self.object_content(v.obj)[v.pgoff + lo:v.pgoff + hi]
            priv[off] = np.where(priv[off] == 0, backing, priv[off])

    def dontneed(self, proc, start, end):
        """Private pages fall back to what backs them."""
        for v, lo, hi in self.spans(proc, start, end):
            if not v.is_shared:
                off = self.offsets(v, lo, hi)
                self.private_content(proc.pid, v.name, int(off[-1]) + 1)[off] = 0

    def free(self, proc, start, end):
        """MADV_FREE, VMA by VMA until the first one that is not private
        anonymous memory (EINVAL there)."""
        for v, lo, hi in self.spans(proc, start, end):
            if not v.is_anon:
                return
            off = self.offsets(v, lo, hi)
            priv = self.private_content(proc.pid, v.name, int(off[-1]) + 1)
            priv[off] = -np.abs(priv[off])

    def fork(self, parent, child):
        """The child's private pages start as the parent's; VM_WIPEONFORK
        ranges start empty."""
        parent_ranges = self.private.get(parent.pid, {})
        self.private[child.pid] = {n: a.copy() for n, a in parent_ranges.items()}
        self.forget_unmapped(child)
        for v in child.mm.vmas:
            if v.flags & VM_WIPEONFORK:
                self.dontneed(child, v.start, v.end)

    def exit(self, pid):
        self.private.pop(pid, None)

    def forget_unmapped(self, proc):
        """Private content of pages no VMA covers any more is gone."""
        ranges = self.private.setdefault(proc.pid, {})
        for name, a in ranges.items():
            covered = np.zeros(len(a), dtype=bool)
            for v in proc.mm.vmas:
                if v.name == name:
                    off = self.offsets(v, 0, v.nr_pages)
                    covered[off[off < len(a)]] = True
            a[~covered] = 0

    # --- the check -------------------------------------------------------------------
    def check(self, k):
        """Problems of kernel `k`'s page tables against the contents."""
        if self.lost:
            return []
        mem = k.mem
        bad = []
        pfns, contents = [], []
        for pid in sorted(k.processes):
            proc = k.processes[pid]
            for v in proc.mm.vmas:
                idx = np.flatnonzero(v.pfn >= 0)
                if len(idx) == 0:
                    continue
                where = 'pid %d %r' % (pid, v.name)
                pfn = v.pfn[idx]
                f = mem.flags[mem.head[pfn]]
                zero = (f & FL_ZERO) != 0
                anon = ~zero & ((f & FL_ANON) != 0)
                cache = ~zero & ~anon
                if v.is_shared:
                    want = self.object_content(v.obj)[v.pgoff + idx]
                    priv = np.zeros(len(idx), dtype=np.int64)
                else:
                    off = self.offsets(v, 0, v.nr_pages)[idx]
                    priv = self.private_content(pid, v.name, int(off.max()) + 1)[off]
                    backing = self.object_content(v.obj)[v.pgoff + idx] if v.obj is not None \
                        else np.zeros(len(idx), dtype=np.int64)
                    want = np.where(priv == 0, backing, priv)
                wrong = zero & (want > 0)
                if wrong.any():
                    bad.append('%s maps the zero page at pages %s, which hold written data'
                               % (where, idx[wrong][:6].tolist()))
                if v.obj is None:
                    wrong = cache
                else:
                    wrong = cache & ((pfn != v.obj.pages[v.pgoff + idx]) | (priv != 0))
                if v.is_shared:
                    wrong |= anon
                if wrong.any():
                    bad.append('%s maps at pages %s PFNs %s that are not its content (private '
                               'copy %s)' % (where, idx[wrong][:6].tolist(),
                                             pfn[wrong][:6].tolist(), priv[wrong][:6].tolist()))
                pfns.append(pfn[anon])
                contents.append(np.abs(want[anon]))
        if pfns:
            pfn, c = np.concatenate(pfns), np.concatenate(contents)
            order = np.lexsort((c, pfn))
            pfn, c = pfn[order], c[order]
            clash = (pfn[1:] == pfn[:-1]) & (c[1:] != c[:-1])
            if clash.any():
                bad.append('anonymous PFNs %s are mapped where different data was written'
                           % np.unique(pfn[1:][clash])[:6].tolist())
        return bad

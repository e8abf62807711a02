"""What /proc can see of the mm state: one read-only interface for the
renderers.  Every per-page answer that depends on the mapcount config is
delegated to the kernel's mapcount policy (mapcount.py); nothing here
branches on the config.

Per VMA, `vma_pages()` returns arrays over the VMA's pages; system-wide,
`kpagecount()`, `kpageflags()` and `kpagecgroup()` answer per PFN, and
`node_stats()`, `memcg_stats()` and `mm_stats()` give the counters behind
meminfo, vmstat, memory.stat and status.
"""
from dataclasses import dataclass

import numpy as np

from .memory import (FL_ACTIVE, FL_ANON, FL_DEFERRED, FL_DIRTY, FL_KSM, FL_LRU, FL_MLOCKED,
                     FL_PAGECACHE, FL_PARTIALLY_MAPPED, FL_REFERENCED, FL_RESERVED, FL_SWAPBACKED, FL_UNEVICTABLE, FL_UPTODATE,
                     FL_ZERO, HPAGE_PMD_NR, HPAGE_PMD_ORDER, PAGE_SHIFT, sorted_unique)
from .mm import PTE_DIRTY, PTE_PMD, PTE_PRESENT, PTE_SOFT_DIRTY, PTE_WRITE, PTE_YOUNG, VM_WRITE, \
    VM_GROWSDOWN
from . import pmd as pmdops

# include/uapi/linux/kernel-page-flags.h and the kernel-hacking bits
KPF = {'LOCKED': 0, 'ERROR': 1, 'REFERENCED': 2, 'UPTODATE': 3, 'DIRTY': 4, 'LRU': 5,
       'ACTIVE': 6, 'SLAB': 7, 'WRITEBACK': 8, 'RECLAIM': 9, 'BUDDY': 10, 'MMAP': 11,
       'ANON': 12, 'SWAPCACHE': 13, 'SWAPBACKED': 14, 'COMPOUND_HEAD': 15,
       'COMPOUND_TAIL': 16, 'HUGE': 17, 'UNEVICTABLE': 18, 'HWPOISON': 19, 'NOPAGE': 20,
       'KSM': 21, 'THP': 22, 'OFFLINE': 23, 'ZERO_PAGE': 24, 'IDLE': 25, 'PGTABLE': 26,
       'RESERVED': 32, 'MLOCKED': 33, 'OWNER_2': 34}

MAX_PAGE_ORDER = 10
# page_type of a free buddy block's first page (PGTY_buddy << 24)
PAGE_TYPE_BUDDY = -0x10000000


@dataclass
class PageView:
    """Arrays over the pages of one VMA (index = page within the VMA), or
    over its present entries only (`idx`: page of each element, `nr`: pages
    it stands for, 512 for a PMD leaf kept whole)."""
    present: np.ndarray
    pfn: np.ndarray            # -1 where not present
    pmd: np.ndarray            # mapped through a PMD leaf
    writable: np.ndarray
    pte_dirty: np.ndarray
    young: np.ndarray
    soft_dirty: np.ndarray
    zero: np.ndarray           # shared zero page or huge zero page
    normal: np.ndarray         # present and vm_normal_page() != NULL
    anon: np.ndarray
    swapbacked: np.ndarray
    ksm: np.ndarray
    folio_dirty: np.ndarray
    folio_referenced: np.ndarray
    active: np.ndarray
    unevictable: np.ndarray
    refcount_one: np.ndarray
    head: np.ndarray           # head PFN of the folio, -1 where none
    folio_pages: np.ndarray
    mapcount: np.ndarray       # smaps' m (precise or average, per config)
    private: np.ndarray        # smaps' exclusive decision (per config)
    pm_exclusive: np.ndarray   # pagemap bit 56
    pm_file: np.ndarray        # pagemap bit 61
    numa_mapcount: np.ndarray  # numa_maps gather_stats() count
    idx: np.ndarray = None
    nr: np.ndarray = None


def _present_entries(k, vma, lo, hi, whole_leaves):
    """(idx, pfn, bits, nr) of the present entries of pages [lo, hi) in
    address order.  A PMD leaf is one element (nr 512) when whole_leaves
    and every answer is the same for all its pages and sums over them
    (refcount 1, or a per-folio mapcount and per-page PSS in this config);
    else its pages one by one."""
    mem = k.mem
    pidx, ppfn, pbits = vma.present_ptes(lo, hi)
    lidx, lpfn, lbits = vma.pmd_leaves(lo, hi)
    one = np.ones(len(pidx), dtype=np.int64)
    if len(lidx) == 0:
        return pidx, ppfn, pbits, one
    whole = np.zeros(len(lidx), dtype=bool)
    if whole_leaves:
        heads = mem.head[lpfn]
        whole = (lidx >= lo) & (lidx + HPAGE_PMD_NR <= hi) & \
            ((mem.refcount[heads] == 1) | (heads == mem.huge_zero_pfn) |
             (not k.policy.keeps_page_mapcount and not k.policy.smaps_pss_per_entry))
    sl = np.arange(HPAGE_PMD_NR)
    eidx = (lidx[~whole][:, None] + sl).ravel()
    epfn = (lpfn[~whole][:, None] + sl).ravel()
    ebits = np.repeat(lbits[~whole], HPAGE_PMD_NR)
    inside = (eidx >= lo) & (eidx < hi)
    idx = np.concatenate([pidx, eidx[inside], lidx[whole]])
    pfn = np.concatenate([ppfn, epfn[inside], lpfn[whole]])
    bits = np.concatenate([pbits, ebits[inside], lbits[whole]])
    nr = np.concatenate([one, np.ones(int(inside.sum()), dtype=np.int64),
                         np.full(int(whole.sum()), HPAGE_PMD_NR, dtype=np.int64)])
    order = np.argsort(idx, kind='stable')
    return idx[order], pfn[order], bits[order], nr[order]


def vma_pages(k, vma, lo=0, hi=None, present_only=False, whole_leaves=False, smaps_only=False):
    """The PageView of VMA pages [lo, hi) (index 0 is page lo); with
    present_only, of the present entries only (see _present_entries), at a
    cost proportional to them.  smaps_only leaves out what only pagemap
    and numa_maps read (pm_exclusive, pm_file, numa_mapcount: None)."""
    mem = k.mem
    pol = k.policy
    hi = vma.nr_pages if hi is None else hi
    if present_only or whole_leaves:
        idx, pfn, bits, nr = _present_entries(k, vma, lo, hi, whole_leaves)
    else:
        pfn, bits = vma.ptes(lo, hi)
        idx, nr = None, None
    n = len(pfn)
    present = pfn >= 0
    pmd = (bits & PTE_PMD) != 0
    head = np.full(n, -1, dtype=np.int64)
    hflags = np.zeros(n, dtype=np.uint32)
    folio_pages = np.zeros(n, dtype=np.int64)
    refcount = np.zeros(n, dtype=np.int64)
    head[present], hflags[present], order, refcount[present] = mem.folio_fields(
        pfn[present], 'head', 'flags', 'order', 'refcount')
    folio_pages[present] = np.left_shift(1, order.astype(np.int64))
    zero = present & ((hflags & FL_ZERO) != 0)
    normal = present & ~zero
    refcount_one = normal & (refcount == 1)
    mapcount = np.zeros(n, dtype=np.int64)
    private = np.zeros(n, dtype=bool)
    if normal.any():
        mapcount[normal], private[normal] = pol.smaps_mapcount(mem, pfn[normal])
    # pagemap and numa_maps look at the PMD's first page for every entry of
    # a PMD leaf (semantics.md 12.1); the huge zero page counts as a page
    # there (pmd_page), the small zero page does not (vm_normal_page)
    pm_exclusive = pm_file = numa_mapcount = None
    if not smaps_only:
        first = pfn.copy()
        slot = (vma.vpn0 + (lo + np.arange(n) if idx is None else idx)) & (HPAGE_PMD_NR - 1)
        first[pmd] -= slot[pmd]
        pm_page = present & (normal | pmd)
        pm_exclusive = np.zeros(n, dtype=bool)
        pm_exclusive[pm_page] = pol.pagemap_exclusive(mem, first[pm_page])
        pm_file = pm_page & ((hflags & FL_ANON) == 0)
        numa_mapcount = np.zeros(n, dtype=np.int64)
        if normal.any():
            numa_mapcount[normal] = pol.numa_mapcount(mem, first[normal])
    return PageView(
        present=present, pfn=pfn, pmd=pmd & present,
        writable=(bits & PTE_WRITE) != 0, pte_dirty=(bits & PTE_DIRTY) != 0,
        young=(bits & PTE_YOUNG) != 0, soft_dirty=(bits & PTE_SOFT_DIRTY) != 0,
        zero=zero, normal=normal,
        anon=normal & ((hflags & FL_ANON) != 0),
        swapbacked=normal & ((hflags & FL_SWAPBACKED) != 0),
        ksm=normal & ((hflags & FL_KSM) != 0),
        folio_dirty=normal & ((hflags & FL_DIRTY) != 0),
        folio_referenced=normal & ((hflags & FL_REFERENCED) != 0),
        active=normal & ((hflags & FL_ACTIVE) != 0),
        unevictable=normal & ((hflags & FL_UNEVICTABLE) != 0),
        refcount_one=refcount_one, head=head, folio_pages=folio_pages,
        mapcount=mapcount, private=private, pm_exclusive=pm_exclusive, pm_file=pm_file,
        numa_mapcount=numa_mapcount, idx=idx, nr=nr)


@dataclass
class PagemapEntries:
    """What pagemap shows of some pages of a VMA, at the cost of the
    entries: PTE tables as whole 512-entry rows, PMD leaves once each.
    ``tidx``: first page index (in the VMA) of each table, which may lie
    before the range asked for, and the rows may reach past it; per entry
    present, pfn, PM_MMAP_EXCLUSIVE, PM_FILE, soft-dirty (rows of 512).
    ``lidx``: first page index of each leaf, its first PFN and the three
    bits decided once for the leaf."""
    tidx: np.ndarray
    present: np.ndarray
    pfn: np.ndarray
    excl: np.ndarray
    file: np.ndarray
    soft_dirty: np.ndarray
    lidx: np.ndarray
    lpfn: np.ndarray
    lexcl: np.ndarray
    lfile: np.ndarray
    lsoft_dirty: np.ndarray


def vma_pagemap(k, vma, lo, hi):
    """The PagemapEntries of the page-table entries meeting VMA pages
    [lo, hi) (pagemap_pmd_range()).

    A present PTE (pte_to_pagemap_entry()) gets PM_FILE and
    PM_MMAP_EXCLUSIVE only when vm_normal_page() finds a page (not the
    shared zero page).  A PMD leaf (pagemap_pmd_range_thp()) is decided
    once from pmd_page(), its first page, for all its 512 entries
    (semantics.md 12.1); the huge zero page counts as a page there.  The
    per-page answers are those of vma_pages()."""
    mem = k.mem
    pol = k.policy
    tidx, pfn, bits = vma.pte_tables(lo, hi)
    present = pfn >= 0
    if present.all():
        # the common case of full tables: no compaction
        f, = mem.folio_fields(pfn, 'flags')
        normal = (f & FL_ZERO) == 0
        if normal.all():
            excl = np.asarray(pol.pagemap_exclusive(mem, pfn), dtype=bool)
            file = (f & FL_ANON) == 0
            return _pagemap_leaves(k, vma, lo, hi, PagemapEntries(
                tidx, present, pfn, excl, file, (bits & PTE_SOFT_DIRTY) != 0,
                None, None, None, None, None))
    excl = np.zeros(pfn.shape, dtype=bool)
    file = np.zeros(pfn.shape, dtype=bool)
    if present.any():
        ppfn = pfn[present]
        f, = mem.folio_fields(ppfn, 'flags')
        normal = (f & FL_ZERO) == 0
        if not normal.all():
            ppfn, f = ppfn[normal], f[normal]
            sel = present.copy()
            sel[present] = normal
        else:
            sel = present
        excl[sel] = pol.pagemap_exclusive(mem, ppfn)
        file[sel] = (f & FL_ANON) == 0
    return _pagemap_leaves(k, vma, lo, hi, PagemapEntries(
        tidx, present, pfn, excl, file, (bits & PTE_SOFT_DIRTY) != 0,
        None, None, None, None, None))


def _pagemap_leaves(k, vma, lo, hi, pm):
    """Fills the PMD-leaf part of `pm` (pagemap_pmd_range_thp())."""
    mem = k.mem
    lidx, lpfn, lbits = vma.pmd_leaves(lo, hi)
    pm.lidx, pm.lpfn = lidx, lpfn
    pm.lexcl = np.zeros(len(lpfn), dtype=bool)
    if len(lpfn):
        pm.lexcl[:] = k.policy.pagemap_exclusive(mem, lpfn)
    pm.lfile = (mem.folio_fields(lpfn, 'flags')[0] & FL_ANON) == 0
    pm.lsoft_dirty = (lbits & PTE_SOFT_DIRTY) != 0
    return pm


# --- per PFN -----------------------------------------------------------------------------

def _buddy_heads(mem, pfns):
    """First pages of free buddy blocks: with the free memory fully
    coalesced, a block of order o is free and its parent block of order
    o + 1 is not (or o is MAX_PAGE_ORDER)."""
    n = mem.nr_frames
    size = -(-n // (1 << MAX_PAGE_ORDER)) << MAX_PAGE_ORDER
    free = np.zeros(size, dtype=bool)
    free[:n] = mem.free
    heads = np.zeros(size, dtype=bool)
    parent_free = None
    for order in range(MAX_PAGE_ORDER, -1, -1):
        blocks = free.reshape(-1, 1 << order).all(axis=1)
        start = blocks if parent_free is None else blocks & ~np.repeat(parent_free, 2)
        heads[np.flatnonzero(start) << order] = True
        parent_free = blocks
    return heads[pfns]


def kpagecount(k, pfns):
    """/proc/kpagecount (fs/proc/page.c, semantics.md 8.1)."""
    mem = k.mem
    pfns = np.asarray(pfns, dtype=np.int64)
    out = np.zeros(len(pfns), dtype=np.uint64)
    used = ~mem.free[pfns]
    heads = mem.head[pfns]
    folio = used & ((mem.flags[np.where(used, heads, 0)] & (FL_ZERO | FL_RESERVED)) == 0)
    if folio.any():
        out[folio] = k.policy.kpagecount(mem, pfns[folio]).astype(np.uint64)
    if k.policy.kpagecount_raw_page_type and (~used).any():
        # folio_average_page_mapcount() reads a small folio's _mapcount raw:
        # a free block's first page carries the buddy page type there
        # (semantics.md 12.4, derived and unconfirmed)
        free = pfns[~used]
        bh = _buddy_heads(mem, free)
        vals = np.zeros(len(free), dtype=np.uint64)
        vals[bh] = np.uint64((PAGE_TYPE_BUDDY + 1) & ((1 << 64) - 1))
        out[~used] = vals
    return out


def kpageflags(k, pfns):
    """/proc/kpageflags (stable_page_flags(), semantics.md 8.2)."""
    mem = k.mem
    pfns = np.asarray(pfns, dtype=np.int64)
    out = np.zeros(len(pfns), dtype=np.uint64)
    bit = lambda name: np.uint64(1 << KPF[name])
    free = mem.free[pfns]
    out[free] |= bit('BUDDY')
    used = pfns[~free]
    if len(used) == 0:
        return out
    heads = mem.head[used]
    f = mem.flags[heads]
    order = mem.order[heads]
    v = np.zeros(len(used), dtype=np.uint64)
    reserved = (f & FL_RESERVED) != 0
    zero = (f & FL_ZERO) != 0
    large = order > 0
    v[reserved] |= bit('RESERVED')
    v[zero] |= bit('ZERO_PAGE')
    v[large & (used == heads)] |= bit('COMPOUND_HEAD')
    v[large & (used != heads)] |= bit('COMPOUND_TAIL')
    rmappable = large & ((f & (FL_ANON | FL_PAGECACHE)) != 0)
    v[rmappable | (large & zero)] |= bit('THP')
    mapped = np.where(order > 0, mem.large_mapcount[heads] > 0, mem.page_mapcount[heads] > 0)
    v[mapped & ~zero] |= bit('MMAP')
    for flag, name in ((FL_ANON, 'ANON'), (FL_SWAPBACKED, 'SWAPBACKED'), (FL_DIRTY, 'DIRTY'),
                       (FL_LRU, 'LRU'), (FL_ACTIVE, 'ACTIVE'), (FL_REFERENCED, 'REFERENCED'),
                       (FL_KSM, 'KSM'), (FL_UNEVICTABLE, 'UNEVICTABLE'),
                       (FL_MLOCKED, 'MLOCKED')):
        v[(f & flag) != 0] |= bit(name)
    v[((f & FL_UPTODATE) != 0) & ~zero] |= bit('UPTODATE')
    anon = (f & FL_ANON) != 0
    v[anon & mem.anon_exclusive[heads]] |= bit('OWNER_2')
    out[~free] = v
    return out


def kpagecgroup(k, pfns):
    """/proc/kpagecgroup: inode of the memcg a page is charged to."""
    mem = k.mem
    pfns = np.asarray(pfns, dtype=np.int64)
    out = np.zeros(len(pfns), dtype=np.uint64)
    used = ~mem.free[pfns]
    heads = mem.head[pfns[used]]
    charged = (mem.flags[heads] & (FL_RESERVED | FL_ZERO)) == 0
    vals = np.zeros(len(heads), dtype=np.uint64)
    vals[charged] = memcg_ino(mem.memcg[heads[charged]])
    out[used] = vals
    return out


def memcg_ino(index):
    return np.asarray(index, dtype=np.uint64) + np.uint64(1)


# --- counters ---------------------------------------------------------------------------

def _folio_table(k):
    """Heads of allocated, non-reserved folios with per-folio facts."""
    mem = k.mem
    heads = mem.allocated_folio_heads()
    heads = heads[(mem.flags[heads] & (FL_RESERVED | FL_ZERO)) == 0]
    return heads


def folio_counters(k, heads):
    """Counters of a set of folios, in pages (the node/memcg stat items)."""
    mem = k.mem
    f = mem.flags[heads]
    nr = mem.folio_nr_pages(heads)
    anon = (f & FL_ANON) != 0
    cache = (f & FL_PAGECACHE) != 0
    swapbacked = (f & FL_SWAPBACKED) != 0
    shmem = cache & swapbacked
    active = (f & FL_ACTIVE) != 0
    lru = (f & FL_LRU) != 0
    mapped = k.rmap.mapped_pages(heads)
    pmdmapped = k.policy.pmd_mapped(mem, heads)
    # folio_test_pmd_mappable(): NR_SHMEM_THPS / NR_FILE_THPS at page-cache insertion
    pmd_order = mem.order[heads] >= HPAGE_PMD_ORDER
    s = lambda m: int(nr[m].sum())
    anon_lru = lru & swapbacked             # anon and shmem live on the anon LRU
    file_lru = lru & ~swapbacked            # page cache and lazily freed anon
    return {
        'anon_mapped': int(mapped[anon].sum()),
        'file_mapped': int(mapped[~anon].sum()),
        'anon_thps': s(anon & pmdmapped),
        'shmem_pmdmapped': s(shmem & pmdmapped),
        'file_pmdmapped': s(cache & ~swapbacked & pmdmapped),
        'file_pages': s(cache),
        'shmem': s(shmem),
        'shmem_thps': s(shmem & pmd_order),
        'file_thps': s(cache & ~swapbacked & pmd_order),
        'anon': s(anon),
        'active_anon': s(anon_lru & active),
        'inactive_anon': s(anon_lru & ~active),
        'active_file': s(file_lru & active),
        'inactive_file': s(file_lru & ~active),
        'unevictable': s((f & FL_UNEVICTABLE) != 0),
        'dirty': s(cache & ~swapbacked & ((f & FL_DIRTY) != 0)),
        'charged': s(np.ones(len(heads), dtype=bool)),
    }


def node_stats(k):
    """Node counters in pages, plus free frames."""
    out = folio_counters(k, _folio_table(k))
    out['free'] = k.mem.nr_free_frames()
    out['total'] = k.mem.nr_frames
    return out


def memcg_stats(k, cgroup, hierarchical=False):
    """Counters of the folios charged to a memcg (and its descendants)."""
    mem = k.mem
    heads = _folio_table(k)
    idx = [i for i, c in enumerate(k.cgroups)
           if c == cgroup or (hierarchical and (cgroup == '/' or c.startswith(cgroup + '/')))]
    heads = heads[np.isin(mem.memcg[heads], idx)]
    return folio_counters(k, heads)


def mm_stats(k, proc):
    mm = proc.mm
    stack = sum(v.nr_pages for v in mm.vmas if v.flags & VM_GROWSDOWN)
    # is_data_mapping(): private, writable, not a stack
    data = sum(v.nr_pages for v in mm.vmas
               if not v.is_shared and v.flags & VM_WRITE and not v.flags & VM_GROWSDOWN)
    pinned = set()
    for pfns in proc.pins.values():
        pinned.update(int(h) for h in k.mem.head[np.array(pfns, dtype=np.int64)])
    return {'anon': mm.rss['anon'], 'file': mm.rss['file'], 'shmem': mm.rss['shmem'],
            'swap': mm.rss['swap'], 'hiwater_rss': mm.hiwater_rss,
            'total_vm': mm.total_vm_pages(), 'hiwater_vm': mm.hiwater_vm,
            'locked_vm': 0, 'data_vm': data, 'stack_vm': stack,
            # io_uring charges every pinned folio whole to pinned_vm
            'pinned_vm': int(sum(k.mem.folio_nr_pages(np.array(sorted(pinned), dtype=np.int64))))
            if pinned else 0,
            'pgtables': page_table_pages(mm)}


def page_table_pages(mm):
    """mm_pgtables_bytes() in pages: the PTE tables, one deposited table per
    anonymous PMD leaf (huge zero page included), and the PMD and PUD
    tables over every 1G and 512G region with a mapping."""
    pt = mm.pt
    deposited = sum(len(v.pmd_leaves()[0]) for v in mm.vmas if v.is_anon)
    keys = pt.keys          # every block with a PTE table or a PMD leaf
    pmd_regions = len(sorted_unique(keys >> 9))
    pud_regions = len(sorted_unique(keys >> 18))
    return len(pt.table_keys()) + deposited + pmd_regions + pud_regions


def true_page_mapcounts(k):
    """The precise model: for every PFN, how many page-table entries of all
    processes map it (a PMD counts once, for every page of it).  Used for
    the `tools` report and by the tests; independent of the config."""
    counts = np.zeros(k.mem.nr_frames, dtype=np.int64)
    for p in k.processes.values():
        for v in p.mm.vmas:
            np.add.at(counts, v.present_ptes()[1], 1)
            lpfn = v.pmd_leaves()[1]
            np.add.at(counts, (lpfn[:, None] + np.arange(HPAGE_PMD_NR)).ravel(), 1)
    return counts


def folio_state_at(k, pfn):
    """The state of the folio holding `pfn` that no /proc file shows as
    such (semantics.md 3): order, refcount, large and entire mapcount
    (total mapped pages of the 2026 RFC's kernel instead), the two MM-ID slots as (pid, per-MM mapcount) or None for a free slot,
    FOLIO_MM_IDS_SHARED_BIT and PG_partially_mapped (on the deferred split
    queue).  None when the frame is free; slots are None for small folios."""
    mem = k.mem
    if not 0 <= pfn < mem.nr_frames or mem.free[pfn]:
        return None
    head = int(mem.head[pfn])
    order = int(mem.order[head])
    pid_of = {p.mm.mm_id: pid for pid, p in k.processes.items()}
    slots = None
    if order > 0:
        slots = tuple((pid_of.get(int(mem.mm_id[head, i]), -1), int(mem.mm_id_mapcount[head, i]))
                      if mem.mm_id[head, i] else None for i in (0, 1))
    return {'head': head, 'order': order, 'nr_pages': 1 << order,
            'refcount': int(mem.refcount[head]),
            'large_mapcount': int(mem.large_mapcount[head]) if order else
            int(mem.page_mapcount[head]),
            'entire_mapcount': int(mem.entire_mapcount[head]),
            'total_mapped_pages': int(mem.total_mapped_pages[head]),
            'slots': slots, 'maybe_shared': bool(mem.maybe_shared[head]) if order else None,
            'partially_mapped': bool(mem.flags[head] & FL_PARTIALLY_MAPPED)}


# --- internal state (sys/kernel/debug/mmemu) -----------------------------------------

# folio flag bits by their kernel names (enum pageflags and folio state)
FOLIO_FLAG_NAMES = [(FL_ANON, 'anon'), (FL_SWAPBACKED, 'swapbacked'), (FL_PAGECACHE, 'pagecache'),
                    (FL_UPTODATE, 'uptodate'), (FL_DIRTY, 'dirty'), (FL_LRU, 'lru'),
                    (FL_ACTIVE, 'active'), (FL_REFERENCED, 'referenced'),
                    (FL_UNEVICTABLE, 'unevictable'), (FL_MLOCKED, 'mlocked'), (FL_KSM, 'ksm'),
                    (FL_ZERO, 'zero'), (FL_RESERVED, 'reserved'),
                    (FL_PARTIALLY_MAPPED, 'partially_mapped'), (FL_DEFERRED, 'deferred_list')]


def folio_flag_names(flags):
    return [name for bit, name in FOLIO_FLAG_NAMES if int(flags) & bit]


def folio_mappers(k, heads):
    """For each folio of `heads` (sorted), {pid: pages of it the pid maps}
    from the page tables (a PMD maps every page of its folio)."""
    heads = np.asarray(heads, dtype=np.int64)
    out = [dict() for _ in range(len(heads))]
    for pid, p in sorted(k.processes.items()):
        h = np.concatenate([k.mem.head[v.mapped_pfns()] for v in p.mm.vmas] or
                           [np.zeros(0, dtype=np.int64)])
        if len(h) == 0:
            continue
        uh, cnt = np.unique(h, return_counts=True)
        pos = np.searchsorted(heads, uh)
        ok = (pos < len(heads)) & (heads[np.minimum(pos, len(heads) - 1)] == uh)
        for i, c in zip(pos[ok], cnt[ok]):
            out[i][pid] = int(c)
    return out


def folio_state(k):
    """Every allocated folio (reserved frames aside, the zero pages
    included) with what the kernel keeps in its struct folio: dict of
    per-folio arrays, `config_columns` [(name, values)] from the mapcount
    policy (large folios; 0 for small ones) and `mappers`."""
    from .rmap import folio_kind
    mem = k.mem
    heads = mem.allocated_folio_heads()
    f = mem.flags[heads]
    heads = heads[((f & FL_RESERVED) == 0) | ((f & FL_ZERO) != 0)]
    f = mem.flags[heads]
    order = mem.order[heads].astype(np.int64)
    kind = folio_kind(mem, heads).astype(object)
    kind[(f & FL_ZERO) != 0] = 'zero'
    large = order > 0
    lg = heads[large]
    cols = {}
    for name, vals in k.policy.debug_columns(mem, lg):
        full = np.zeros(len(heads), dtype=np.int64)
        full[large] = vals
        cols[name] = full
    mapcount = np.where(large, mem.large_mapcount[heads], mem.page_mapcount[heads])
    return {
        'pfn': heads, 'order': order, 'kind': kind, 'flags': f, 'large': large,
        'refcount': mem.refcount[heads], 'pincount': mem.pincount[heads],
        'mapcount': np.where((f & FL_ZERO) != 0, 0, mapcount),
        'large_mapcount': mem.large_mapcount[heads],
        'mm_id': mem.mm_id[heads], 'mm_id_mapcount': mem.mm_id_mapcount[heads],
        'maybe_shared': mem.maybe_shared[heads],
        'partially_mapped': (f & FL_PARTIALLY_MAPPED) != 0,
        'deferred_list': (f & FL_DEFERRED) != 0,
        'config_columns': list(cols.items()),
        'mappers': folio_mappers(k, heads),
    }


def mm_id_usage(k):
    """Per process: (pid, mm_id, large folios with the MM in slot 0, in
    slot 1, large folios it maps while in neither slot)."""
    st = folio_state(k)
    lg = st['large'] & (st['kind'] != 'zero')
    ids = st['mm_id'][lg]
    mappers = [m for m, is_lg in zip(st['mappers'], lg) if is_lg]
    rows = []
    for pid, p in sorted(k.processes.items()):
        mid = p.mm.mm_id
        in0 = ids[:, 0] == mid
        in1 = ids[:, 1] == mid
        untracked = sum(1 for i, m in enumerate(mappers) if pid in m and not in0[i] and not in1[i])
        rows.append((pid, mid, int(in0.sum()), int(in1.sum()), untracked))
    return rows


def mthp_stats(k, size_kb):
    """The counters of hugepages-<size>kB/stats: events the core counted
    where the kernel calls count_mthp_stat(), and the two state counters
    the kernel keeps with mod_mthp_stat(): nr_anon (anon folios of that
    size, from folio_add_new_anon_rmap() to their free or split) and
    nr_anon_partially_mapped (those flagged partially mapped)."""
    prefix = 'mthp/%dkB/' % size_kb
    out = {name[len(prefix):]: n for name, n in k.events.items() if name.startswith(prefix)}
    mem = k.mem
    heads = mem.allocated_folio_heads()
    order = (size_kb // 4).bit_length() - 1
    f = mem.flags[heads]
    anon = heads[(mem.order[heads] == order) & ((f & FL_ANON) != 0) & ((f & FL_ZERO) == 0)]
    out['nr_anon'] = len(anon)
    out['nr_anon_partially_mapped'] = int(((mem.flags[anon] & FL_PARTIALLY_MAPPED) != 0).sum())
    return out


@dataclass
class PageFacts:
    """Everything /proc shows about one virtual page, and why (`mmemu
    explain`)."""
    pid: int
    addr: int
    vma: object
    index: int                 # page index in the VMA
    pfn: int                   # -1: not present
    head: int
    order: int
    kind: str
    flags: list
    refcount: int
    slots: tuple               # ((mm_id, mapcount, pid), (mm_id, mapcount, pid))
    maybe_shared: bool
    large_mapcount: int
    config_columns: list       # [(name, value)] the config keeps
    mappers: dict              # pid -> pages of the folio it maps
    page_mappers: int          # page-table entries mapping this very page
    kpagecount: int
    mapcount: int              # smaps' m
    private: bool              # smaps Private_* (vs Shared_*)
    pm_exclusive: bool         # pagemap bit 56
    numa_mapcount: int         # numa_maps' count (mapmax)
    pmd: bool
    zero: bool
    mapcount_terms: tuple
    exclusive_terms: tuple
    history: list              # history.SlotEvent of the folio


def page_facts(k, pid, addr):
    """The facts about the page at `addr` of process `pid`; None when no
    VMA covers it.  Raises KeyError for an unknown pid."""
    proc = k.processes[pid]
    vma = next((v for v in proc.mm.vmas if v.start <= addr < v.end), None)
    if vma is None:
        return None
    i = (addr - vma.start) >> PAGE_SHIFT
    pv = vma_pages(k, vma)
    pfn = int(pv.pfn[i])
    mem = k.mem
    facts = dict(pid=pid, addr=addr, vma=vma, index=i, pfn=pfn, pmd=bool(pv.pmd[i]),
                 zero=bool(pv.zero[i]), mapcount=int(pv.mapcount[i]), private=bool(pv.private[i]),
                 pm_exclusive=bool(pv.pm_exclusive[i]), numa_mapcount=int(pv.numa_mapcount[i]))
    if pfn < 0:
        return PageFacts(head=-1, order=0, kind='', flags=[], refcount=0, slots=(), maybe_shared=False,
                         large_mapcount=0, config_columns=[], mappers={}, page_mappers=0,
                         kpagecount=0, mapcount_terms=(), exclusive_terms=(), history=[], **facts)
    from .rmap import folio_kind
    head = int(mem.head[pfn])
    order = int(mem.order[head])
    owners = {p.mm.mm_id: q for q, p in k.processes.items()}
    large = order > 0
    slots = tuple((int(mem.mm_id[head, s]), int(mem.mm_id_mapcount[head, s]),
                   owners.get(int(mem.mm_id[head, s]), -1)) for s in (0, 1)) if large else ()
    if large:
        mterms = k.policy.mapcount_terms(mem, pfn)
        eterms = k.policy.exclusive_terms(mem, pfn)
        cols = [(n, int(v[0])) for n, v in k.policy.debug_columns(mem, np.array([head]))]
    else:
        mterms = ('page_mapcount', {'page_mapcount': int(mem.page_mapcount[head])})
        eterms = ('page_mapcount_is_1', {'page_mapcount': int(mem.page_mapcount[head])})
        cols = []
    kind = 'zero' if mem.flags[head] & FL_ZERO else str(folio_kind(mem, np.array([head]))[0])
    return PageFacts(head=head, order=order, kind=kind, flags=folio_flag_names(mem.flags[head]),
                     refcount=int(mem.refcount[head]), slots=slots,
                     maybe_shared=bool(mem.maybe_shared[head]) if large else False,
                     large_mapcount=int(mem.large_mapcount[head]) if large else 0,
                     config_columns=cols, mappers=folio_mappers(k, [head])[0],
                     page_mappers=int(true_page_mapcounts(k)[pfn]),
                     kpagecount=int(kpagecount(k, [pfn])[0]), mapcount_terms=mterms,
                     exclusive_terms=eterms,
                     history=k.slot_history.events(head) if large else [], **facts)

"""Building kernel state directly, without replaying a history: the few
primitives an importer (mmcore.imported) needs.  They keep every
invariant the fault and fork paths keep: page-table entries, rmap
accounting (mapcounts, MM-ID slots through mm/rmap.c's primitives), folio
references and the per-mm RSS counters.

- ``alloc_folios(k, order, count)``: allocate folios of one order;
- ``set_folios(k, heads, ...)``: their flags, memcg and page-cache place;
- ``map_ptes(k, proc, vma, idx, pfns, bits)``: PTEs of pages of folios;
- ``map_pmds(k, proc, vma, idx, heads, bits)``: PMD leaves of whole
  PMD-order folios;
- ``map_zero(k, proc, vma, idx, pmd)``: the shared zero page per PTE, or
  the huge zero page per PMD (no rmap, no RSS: vm_normal_page() is NULL);
- ``map_entries(k, proc, vpns, pfns, bits, pmd, zero)``: all of them for
  a whole MM at once (PTEs, PMD leaves, zero pages);
- ``add_vma(proc, vma)``, ``add_vmas(proc, vmas)``, ``or_bits(vma, starts,
  spans, bit)``: VMAs into the mm, and accessed/dirty bits on entries
  already installed.
"""
import numpy as np

from .memory import HPAGE_PMD_NR, PAGE_SHIFT, FL_ANON, FL_PAGECACHE, FL_SWAPBACKED
from .mm import PTE_PMD, PTE_PRESENT


def alloc_folios(k, order, count):
    """Heads of `count` new folios of `order` (ascending PFNs)."""
    return k.mem.alloc(order, count)


def set_folios(k, heads, flags, memcg, mapping=None, index=None):
    """Folio flags (FL_*), memcg index and, for page-cache folios, the
    object id and file index of the head.  A page-cache folio holds one
    reference per page for the cache (filemap_add_folio)."""
    mem = k.mem
    heads = np.asarray(heads, dtype=np.int64)
    mem.flags[heads] = flags
    mem.memcg[heads] = memcg
    if mapping is not None:
        mem.mapping[heads] = mapping
        mem.index[heads] = index
    cache = (np.asarray(flags) & FL_PAGECACHE) != 0
    cache = np.broadcast_to(cache, heads.shape)
    mem.refcount[heads[cache]] += mem.folio_nr_pages(heads[cache])


def _rss_kind(mem, heads):
    f = mem.flags[heads]
    return np.where(f & FL_ANON, 0, np.where(f & FL_SWAPBACKED, 2, 1))


def _account(k, proc, heads, pages):
    """Folio references (one per mapping) and MM_{ANON,FILE,SHMEM}PAGES."""
    mem = k.mem
    uniq, inv = np.unique(heads, return_inverse=True)
    refs = np.bincount(inv)
    mem.folio_get(uniq, refs)
    kinds = _rss_kind(mem, heads)
    for code, name in ((0, 'anon'), (1, 'file'), (2, 'shmem')):
        n = int(pages[kinds == code].sum())
        if n:
            proc.mm.add_rss(name, n)


# The page-table representation is the one thing here that follows the
# core's layout: per-VMA arrays over its pages (vma.pfn, vma.bits), or the
# mm's sparse tables (vma.set_ptes / set_pmd_leaves / or_bits).

def _write_ptes(vma, idx, pfns, bits):
    if hasattr(vma, 'set_ptes'):
        vma.set_ptes(idx, pfns, bits)
    else:
        vma.pfn[idx] = pfns
        vma.bits[idx] = bits


def _write_leaves(vma, idx, heads, bits):
    bits = np.broadcast_to(bits, idx.shape)
    if hasattr(vma, 'set_pmd_leaves'):
        vma.set_pmd_leaves(idx, heads, bits)
        return
    pfn, pbits = _leaf_views(vma, idx)
    rows = (idx - idx[0] % HPAGE_PMD_NR) // HPAGE_PMD_NR
    pfn[rows] = heads[:, None] + np.arange(HPAGE_PMD_NR)
    pbits[rows] = bits[:, None]


def _leaf_views(vma, idx):
    """vma.pfn and vma.bits as rows of 512 pages, one per PMD-aligned block
    (every leaf of a VMA starts at the same page offset modulo 512)."""
    off = int(idx[0]) % HPAGE_PMD_NR
    n = (vma.nr_pages - off) // HPAGE_PMD_NR * HPAGE_PMD_NR
    return (vma.pfn[off:off + n].reshape(-1, HPAGE_PMD_NR),
            vma.bits[off:off + n].reshape(-1, HPAGE_PMD_NR))


def _note_tables(proc, blocks):
    """The 2M blocks that now have a PTE table (sparse tables know it)."""
    if isinstance(proc.mm.pte_tables, set) and not hasattr(proc.mm, 'pt'):
        proc.mm.pte_tables.update(int(b) for b in blocks)


def map_ptes(k, proc, vma, idx, pfns, bits):
    """PTEs at page indices `idx` of `vma` mapping `pfns` (pages of
    allocated folios) with entry bits `bits`: folio_add_{anon,file}_rmap_ptes()
    for the MM."""
    map_ptes_many(k, proc, [(vma, idx, pfns, bits)])


def _by_rank(pfns, add):
    """add(unique pfns) for `pfns`, a repeated one in a further call (an
    rmap call takes every page or folio once)."""
    srt = np.sort(pfns)
    first = np.ones(len(srt), dtype=bool)
    first[1:] = srt[1:] != srt[:-1]
    starts = np.flatnonzero(first)
    rank = np.arange(len(srt)) - np.repeat(starts, np.diff(np.append(starts, len(srt))))
    for r in range(int(rank.max()) + 1):
        add(srt[rank == r])


def _rmap_add_ptes(k, proc, pfns):
    """folio_add_*_rmap_ptes() of the MM for `pfns`; a page the MM maps
    more than once is added in a further call."""
    _by_rank(pfns, lambda p: k.rmap.add_ptes(proc.mm.mm_id, p))
    _account(k, proc, k.mem.head[pfns], np.ones(len(pfns), dtype=np.int64))


def map_entries(k, proc, vpns, pfns, bits, pmd, zero):
    """Every present entry of one MM at once, at virtual page numbers
    `vpns` (of VMAs already added): PTEs, and where `pmd` PMD leaves (vpn
    the first page of the block, pfn the folio's head); `zero` entries map
    the zero page or the huge zero page (no rmap, no RSS).  The rmap sees
    the MM's PMD mappings, then its PTEs, as map_pmds() and map_ptes_many()
    over its VMAs in turn would do."""
    vpns = np.asarray(vpns, dtype=np.int64)
    if len(vpns) == 0:
        return
    pt = proc.mm.pt
    pfns = np.asarray(pfns, dtype=np.int64)
    bits = np.asarray(bits, dtype=np.uint8)
    pte = ~pmd
    pt.set_at(vpns[pte], pfns[pte], bits[pte] | PTE_PRESENT)
    pt.set_leaves(vpns[pmd] >> 9, pfns[pmd], bits[pmd] | PTE_PRESENT | PTE_PMD)
    leaves = pfns[pmd & ~zero]
    if len(leaves):
        _by_rank(leaves, lambda h: k.rmap.add_pmd(proc.mm.mm_id, h))
        _account(k, proc, leaves, np.full(len(leaves), HPAGE_PMD_NR, dtype=np.int64))
    small = pfns[pte & ~zero]
    if len(small):
        _rmap_add_ptes(k, proc, small)


def map_ptes_many(k, proc, items):
    """map_ptes() over several VMAs of one MM at once: [(vma, idx, pfns,
    bits)].  A page the MM maps more than once (a file mapped twice) is
    added in a further rmap call, as each call takes every page once."""
    items = [(v, np.asarray(i, dtype=np.int64), np.asarray(p, dtype=np.int64), b)
             for v, i, p, b in items if len(i)]
    if not items:
        return
    blocks = []
    for vma, idx, pfns, bits in items:
        _write_ptes(vma, idx, pfns, np.asarray(bits, dtype=np.uint8) | PTE_PRESENT)
        blocks.append((vma.start + (idx << PAGE_SHIFT)) >> 21)
    _note_tables(proc, np.unique(np.concatenate(blocks)))
    _rmap_add_ptes(k, proc, np.concatenate([it[2] for it in items]))


def map_pmds(k, proc, vma, idx, heads, bits):
    """PMD leaves at page indices `idx` (each the first page of a PMD-aligned
    block of the VMA) mapping the PMD-order folios `heads`:
    folio_add_{anon,file}_rmap_pmd()."""
    idx = np.asarray(idx, dtype=np.int64)
    heads = np.asarray(heads, dtype=np.int64)
    if len(idx) == 0:
        return
    _write_leaves(vma, idx, heads, np.asarray(bits, dtype=np.uint8) | PTE_PRESENT | PTE_PMD)
    k.rmap.add_pmd(proc.mm.mm_id, heads)
    _account(k, proc, heads, np.full(len(heads), HPAGE_PMD_NR, dtype=np.int64))


def map_zero(k, proc, vma, idx, pmd, bits=0):
    """The shared zero page at PTE indices `idx`, or (pmd) the huge zero
    page at PMD leaves starting at `idx`."""
    idx = np.asarray(idx, dtype=np.int64)
    if len(idx) == 0:
        return
    if pmd:
        hz = k.mem.get_huge_zero_pfn()
        _write_leaves(vma, idx, np.full(len(idx), hz, dtype=np.int64),
                      np.full(len(idx), bits | PTE_PRESENT | PTE_PMD, dtype=np.uint8))
    else:
        _write_ptes(vma, idx, np.full(len(idx), k.mem.zero_pfn, dtype=np.int64),
                    np.full(len(idx), bits | PTE_PRESENT, dtype=np.uint8))
        _note_tables(proc, np.unique((vma.start + (idx << PAGE_SHIFT)) >> 21))


def add_vma(proc, vma):
    """Inserts a VMA (sorted by address) into the process's mm."""
    proc.mm.insert_vma(vma)


def add_vmas(proc, vmas):
    """add_vma() of many VMAs at once (one sort)."""
    proc.mm.insert_vmas(vmas)


def or_bits(vma, starts, spans, bit):
    """Sets `bit` in the entries starting at page indices `starts`, each
    `spans` pages long (1 for a PTE, 512 for a PMD leaf)."""
    starts = np.asarray(starts, dtype=np.int64)
    spans = np.asarray(spans, dtype=np.int64)
    if len(starts) == 0:
        return
    if hasattr(vma, 'or_bits'):
        vma.or_bits(starts, bit)        # a PMD leaf is one entry
        return
    single = spans == 1
    vma.bits[starts[single]] |= bit
    leaves = starts[~single]
    if len(leaves):
        _, pbits = _leaf_views(vma, leaves)
        pbits[(leaves - leaves[0] % HPAGE_PMD_NR) // HPAGE_PMD_NR] |= bit

"""What each step costs the kernel's code, per config: counts of the
fields and entries the emulated rmap, fault and page-table code write.

The counters are kept as the code runs (Kernel.cost, a Counter): rmap.py
and the policies of mapcount.py add one array sum per batch, fault.py and
split.py one number per CoW batch or rmap walk.  A batch is what the
emulator hands the rmap in one call; it follows the kernel's batching
(one folio's PTEs of a fork, a zap or a fault-around at a time, one page
per CoW fault), so per-batch counts such as the bit-spinlock are those of
__folio_add_rmap() / __folio_remove_rmap().  Page-table entries written are
measured here instead, as the difference of every process's page tables
before and after the step (a PMD leaf is one entry; the accessed and dirty
bits the MMU sets are not kernel writes and are ignored).
"""
from collections import Counter

import numpy as np

from .mm import PTE_DIRTY, PTE_PMD, PTE_YOUNG
from .memory import HPAGE_PMD_NR, PAGE_SHIFT

# (key, what it counts), in report order
COUNTERS = (
    ('page_mapcount', 'page->_mapcount updates of large-folio pages'),
    ('small_mapcount', '_mapcount updates of small folios'),
    ('large_mapcount', 'folio _large_mapcount updates'),
    ('entire_mapcount', 'folio _entire_mapcount updates'),
    ('total_mapped_pages', 'folio _total_mapped_pages updates'),
    ('nr_pages_mapped', 'folio _nr_pages_mapped updates'),
    ('mm_id_slots', 'MM-ID slot writes (_mm_id, _mm_id_mapcount)'),
    ('mapcount_lock', 'large-mapcount bit-spinlock acquisitions'),
    ('cow_folios_copied', 'new folios holding CoW copies (order 0)'),
    ('cow_pages_copied', 'pages copied on CoW'),
    ('cow_pages_reused', 'pages reused on a write fault'),
    ('rmap_walks', 'rmap walks'),
    ('rmap_walk_vmas', 'VMAs visited by rmap walks'),
    ('pte_writes', 'page-table entries written (PTEs and PMD leaves)'),
)
COUNTER_KEYS = tuple(k for k, _ in COUNTERS)
# the per-page and folio-level mapcount work the seed's claims are about
MAPCOUNT_WORK = ('page_mapcount', 'small_mapcount', 'large_mapcount', 'entire_mapcount',
                 'total_mapped_pages', 'nr_pages_mapped')

_IGNORED_BITS = np.uint8(PTE_YOUNG | PTE_DIRTY)


def page_table_entries(k):
    """{pid: (sorted virtual page numbers, entry values)} of every
    non-empty entry; a PMD leaf appears once, at its first page."""
    out = {}
    for pid, p in k.processes.items():
        keys, vals = [], []
        for v in p.mm.vmas:
            idx, pfn, bits = v.present_ptes()
            lidx, lpfn, lbits = v.pmd_leaves()
            keys.append(v.vpn0 + np.concatenate([idx, lidx]))
            vals.append((np.concatenate([pfn, lpfn]) << 8) |
                        (np.concatenate([bits, lbits]) & ~_IGNORED_BITS).astype(np.int64))
        if keys:
            kk, vv = np.concatenate(keys), np.concatenate(vals)
            order = np.argsort(kk, kind='stable')
            out[pid] = (kk[order], vv[order])
    return out


def entries_written(before, after):
    """Entries that are new, gone or changed between two page_table_entries()."""
    n = 0
    empty = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    for pid in set(before) | set(after):
        kb, vb = before.get(pid, empty)
        ka, va = after.get(pid, empty)
        common, ib, ia = np.intersect1d(kb, ka, assume_unique=True, return_indices=True)
        n += (len(kb) - len(common)) + (len(ka) - len(common))
        n += int(np.count_nonzero(vb[ib] != va[ia]))
    return n


def replay_costs(k, steps):
    """Replays `steps` on the Kernel `k`; returns [(step, Counter)] with
    what each step cost."""
    rows = []
    for step in steps:
        before = Counter(k.cost)
        tables = page_table_entries(k)
        k.apply(step)
        d = Counter({key: k.cost[key] - before[key] for key in COUNTER_KEYS
                     if k.cost[key] != before[key]})
        written = entries_written(tables, page_table_entries(k))
        if written:
            d['pte_writes'] = written
        rows.append((step, d))
    return rows

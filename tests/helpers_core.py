"""Helpers for the mm-core tests: replaying scenario text, per-range page
views, smaps sums computed from the rule of semantics.md 8.4, folio-state
read-outs and the folio invariants of semantics.md 3.4.

Nothing here decides an expected value; the tests take those from
semantics.md or from real-kernel recordings.
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmcore.config import PAGE_MAPCOUNT, NO_PAGE_MAPCOUNT, load_kernel_config
from mmcore.kernel import Kernel
from mmcore.mapcount import policy_for
from mmcore.memory import PhysMem, FL_ZERO, FL_RESERVED
from mmcore.mm import PTE_PMD
from mmcore.rmap import Rmap
from mmcore.scenario import Snapshot, parse_scenario_text
from mmcore import query

PAGE = 4096
PSS_ONE = PAGE << 12            # a page's PSS share when it is mapped once
CONFIGS = (PAGE_MAPCOUNT, NO_PAGE_MAPCOUNT)
KERNEL_CONFIGS = Path(__file__).resolve().parents[1] / 'configs' / 'kernels'
CONFIGS_32 = tuple(load_kernel_config(str(KERNEL_CONFIGS / (n + '-32bit.yaml')))
                   for n in ('page_mapcount', 'no_page_mapcount'))
ALL_CONFIGS = CONFIGS + CONFIGS_32


def config_id(config):
    return config.name


# --- bare physical memory + rmap ----------------------------------------------------

class BareRmap:
    """A PhysMem and an Rmap without any process: folios are allocated
    with mem.alloc() and mapped by MM IDs chosen by the test."""

    def __init__(self, config, memory=64 << 20):
        self.config = config
        self.mem = PhysMem(memory)
        self.policy = policy_for(config)
        self.rmap = Rmap(self.mem, config, self.policy)

    def folio(self, order):
        """A new folio of `order`: (head, its PFNs)."""
        head = int(self.mem.alloc(order, 1)[0])
        return head, head + np.arange(1 << order)


# --- folio state ---------------------------------------------------------------------

@dataclass(frozen=True)
class FolioState:
    """LM, E, the two slots as (mm_id, count) or None, and S."""
    lm: int
    e: int
    slots: tuple
    shared: bool

    def __str__(self):
        s = ' | '.join('-' if sl is None else '%d:%d' % sl for sl in self.slots)
        return '[%s] %d LM=%d E=%d' % (s, self.shared, self.lm, self.e)


def folio_state(mem, head):
    slots = []
    for k in (0, 1):
        i, c = int(mem.mm_id[head, k]), int(mem.mm_id_mapcount[head, k])
        slots.append(None if i == 0 else (i, c))
    return FolioState(int(mem.large_mapcount[head]), int(mem.entire_mapcount[head]),
                      tuple(slots), bool(mem.maybe_shared[head]))


def state(lm, slot0, slot1, shared, e=0):
    """The expected FolioState written like the table of semantics.md 4.5."""
    return FolioState(lm, e, (slot0, slot1), bool(shared))


def folio_invariants(mem, head, page_mapcount):
    """Violations of semantics.md 3.4 for one large folio (empty list if
    none).  Refcounts are left to callers that model them."""
    bad = []
    s = folio_state(mem, head)
    nr = 1 << int(mem.order[head])
    pfns = head + np.arange(nr)
    for k in (0, 1):
        i, c = int(mem.mm_id[head, k]), int(mem.mm_id_mapcount[head, k])
        if i != 0 and c < 1:
            bad.append('slot %d occupied by %d with count %d' % (k, i, c))
        if i == 0 and c != 0:
            bad.append('free slot %d has count %d' % (k, c))
    counted = sum(sl[1] for sl in s.slots if sl)
    if counted > s.lm:
        bad.append('c0 + c1 = %d > LM %d' % (counted, s.lm))
    if s.lm < 0 or s.e < 0:
        bad.append('negative LM/E: %s' % s)
    if s.lm == 0 and (s.shared or any(s.slots)):
        bad.append('unmapped folio with slots or S: %s' % s)
    if not s.shared and s.lm >= 1:
        owners = [sl for sl in s.slots if sl]
        if len(owners) != 1 or owners[0][1] != s.lm:
            bad.append('S clear but no single slot owns all LM: %s' % s)
    if page_mapcount:
        pm = mem.page_mapcount[pfns]
        if s.lm != s.e + int(pm.sum()):
            bad.append('LM %d != E %d + sum pm %d' % (s.lm, s.e, int(pm.sum())))
        if int(mem.nr_pages_mapped[head]) != int(np.count_nonzero(pm)):
            bad.append('NPM %d != pages with pm >= 1 (%d)'
                       % (int(mem.nr_pages_mapped[head]), int(np.count_nonzero(pm))))
    return bad


# --- scenarios ----------------------------------------------------------------------

def replay(text, config, label=None):
    """Kernel after replaying scenario text up to snapshot `label` (all
    steps if None)."""
    sc = parse_scenario_text(text)
    k = Kernel(config, sc)
    k.run(sc.steps, label)
    return k


def snapshots(scenario, config):
    """Replays once, yielding (label, kernel) at every snapshot."""
    k = Kernel(config, scenario)
    for step in scenario.steps:
        k.apply(step)
        if isinstance(step, Snapshot):
            yield step.label, k


def mm_id(k, pid):
    return k.processes[pid].mm.mm_id


@dataclass
class RangePages:
    """Per page of a named range (index = offset / 4K from the range's
    start): the query.vma_pages fields plus kpagecount."""
    present: np.ndarray
    pfn: np.ndarray
    head: np.ndarray
    normal: np.ndarray
    pmd: np.ndarray
    exclusive: np.ndarray
    file_or_shared: np.ndarray
    kpagecount: np.ndarray
    folio_pages: np.ndarray
    numa_mapcount: np.ndarray

    def __len__(self):
        return len(self.present)


def range_vmas(k, pid, name):
    return [v for v in k.processes[pid].mm.vmas if v.name == name]


def range_pages(k, pid, name, nr_pages=None):
    vmas = range_vmas(k, pid, name)
    assert vmas, 'pid %d has no range %r' % (pid, name)
    base = vmas[0].range_start
    n = nr_pages if nr_pages is not None else max((v.end - base) // PAGE for v in vmas)
    out = RangePages(present=np.zeros(n, bool), pfn=np.full(n, -1, np.int64),
                     head=np.full(n, -1, np.int64), normal=np.zeros(n, bool),
                     pmd=np.zeros(n, bool), exclusive=np.zeros(n, bool),
                     file_or_shared=np.zeros(n, bool), kpagecount=np.zeros(n, np.int64),
                     folio_pages=np.zeros(n, np.int64), numa_mapcount=np.zeros(n, np.int64))
    for v in vmas:
        pv = query.vma_pages(k, v)
        off = (v.start - base) // PAGE
        lo, hi = max(0, off), min(n, off + v.nr_pages)
        if lo >= hi:
            continue
        src = slice(lo - off, hi - off)
        dst = slice(lo, hi)
        out.present[dst] = pv.present[src]
        out.pfn[dst] = pv.pfn[src]
        out.head[dst] = pv.head[src]
        out.normal[dst] = pv.normal[src]
        out.pmd[dst] = pv.pmd[src]
        out.exclusive[dst] = pv.pm_exclusive[src]
        out.file_or_shared[dst] = pv.pm_file[src]
        out.folio_pages[dst] = pv.folio_pages[src]
        out.numa_mapcount[dst] = pv.numa_mapcount[src]
    pres = out.present
    if pres.any():
        out.kpagecount[pres] = query.kpagecount(k, out.pfn[pres]).astype(np.int64)
    return out


def smaps_of_vma(k, vma):
    """The smaps counters of one VMA in kB, accumulated by the rule of
    semantics.md 8.4 (smaps_account) from query.vma_pages: per normal
    present page, the whole 4K at pss 4096 << 12 and private if the folio's
    refcount is 1; otherwise pss = (4096 << 12) / m for m >= 2, and the
    config's exclusive decision."""
    pv = query.vma_pages(k, vma)
    n = pv.normal
    m = pv.mapcount[n]
    one = pv.refcount_one[n]
    pss = np.where(one | (m < 2), PSS_ONE, PSS_ONE // np.maximum(m, 1))
    private = one | pv.private[n]
    dirty = pv.pte_dirty[n] | pv.folio_dirty[n]
    young = pv.young[n] | pv.folio_referenced[n]
    kb = lambda mask: int(np.count_nonzero(mask)) * 4
    return {
        'Rss': kb(np.ones(len(m), bool)),
        'Pss': int(pss.sum()) >> 12 >> 10,
        'Shared_Clean': kb(~private & ~dirty),
        'Shared_Dirty': kb(~private & dirty),
        'Private_Clean': kb(private & ~dirty),
        'Private_Dirty': kb(private & dirty),
        'Referenced': kb(young),
        'Anonymous': kb(pv.anon[n]),
        'AnonHugePages': kb(pv.pmd[n] & pv.anon[n]),
    }


def smaps_kb(k, pid, name):
    """smaps counters of a named range: the sum over its VMAs (each VMA's
    Pss rounded on its own, as the kernel prints it per VMA)."""
    total = {}
    for v in range_vmas(k, pid, name):
        for key, val in smaps_of_vma(k, v).items():
            total[key] = total.get(key, 0) + val
    return total


def private_kb(sm):
    return sm['Private_Clean'] + sm['Private_Dirty']


def shared_kb(sm):
    return sm['Shared_Clean'] + sm['Shared_Dirty']


# --- page tables ---------------------------------------------------------------------

def folio_mappers(k):
    """head PFN -> {pid: number of PTE/PMD entries of that process mapping
    the folio} found by scanning every page table (a PMD leaf counts once).
    Zero pages are left out."""
    mem = k.mem
    out = {}
    for pid, p in k.processes.items():
        for v in p.mm.vmas:
            idx = np.flatnonzero(v.pfn >= 0)
            if len(idx) == 0:
                continue
            heads = mem.head[v.pfn[idx]]
            keep = (mem.flags[heads] & (FL_ZERO | FL_RESERVED)) == 0
            idx, heads = idx[keep], heads[keep]
            pmd = (v.bits[idx] & PTE_PMD) != 0
            # a PMD leaf: count its first entry only
            first = ~pmd | (((v.start >> 12) + idx) % 512 == 0)
            for h, c in zip(*np.unique(heads[first], return_counts=True)):
                d = out.setdefault(int(h), {})
                d[pid] = d.get(pid, 0) + int(c)
    return out


def true_entire_mapcounts(k):
    """head PFN -> number of PMD leaves mapping it, over all processes."""
    mem = k.mem
    out = {}
    for p in k.processes.values():
        for v in p.mm.vmas:
            idx = np.flatnonzero((v.pfn >= 0) & ((v.bits & PTE_PMD) != 0))
            idx = idx[((v.start >> 12) + idx) % 512 == 0]
            for h in mem.head[v.pfn[idx]]:
                out[int(h)] = out.get(int(h), 0) + 1
    return out


def true_mapped_pages(k):
    """head -> number of (page, page-table entry) pairs mapping pages of
    the folio, a PMD counting each of its pages: the RFC's
    _total_mapped_pages read from the page tables."""
    out = {}
    for p in k.processes.values():
        for v in p.mm.vmas:
            pf = v.pfn[v.pfn >= 0]
            if len(pf) == 0:
                continue
            heads, counts = np.unique(k.mem.head[pf], return_counts=True)
            for h, c in zip(heads.tolist(), counts.tolist()):
                out[h] = out.get(h, 0) + c
    return out

"""Stateful property test of the mm core.

Hypothesis drives random system-call sequences (mmap, read, write, munmap,
madvise, mprotect, mremap, fork, exit, pin, unpin, THP knob changes) over
2-4 processes and a few kinds of ranges, replayed side by side on six
kernels: CONFIG_PAGE_MAPCOUNT, CONFIG_NO_PAGE_MAPCOUNT and the 2026 RFC
(total_mapped_pages), each 64- and 32-bit.  After every step each kernel is held against a precise model
built from its page tables alone (tests/model_precise.py), and the
kernels against each other:

- the folio invariants of semantics.md 3.4 and the slot algorithm's
  consequences (4.2, 4.3);
- the promise of folio_maybe_mapped_shared() (5.2), of pagemap bit 56
  (8.3) and of smaps' Private (8.4): never "exclusive" when another MM maps
  the folio;
- kpagecount (8.1), the mapped statistics (7.4) and deferred-split
  detection (7.5) of each config;
- identical decisions and layouts in every config (12.9), USS under
  NO_PAGE_MAPCOUNT never above USS under PAGE_MAPCOUNT except for the
  documented double mapping inside one MM (8.4);
- a content model (model_precise.ContentModel): a page mapped in several
  places holds one content, written data is never replaced by the zero
  page or a page-cache page.

On a failure Hypothesis prints the rule calls and a note with the same
steps as a scenario file that `mmemu` can replay.
"""
from collections import Counter
import contextlib
import dataclasses
import os
import re

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, note, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from mmcore.config import KernelConfig
from mmcore.errors import StepError
from mmcore.kernel import Kernel
from mmcore.mapcount import folio_maybe_mapped_shared
from mmcore.memory import (FL_ANON, FL_PARTIALLY_MAPPED, FL_SWAPBACKED, HPAGE_PMD_NR, PAGE_SIZE,
                           FolioField)
from mmcore.mm import PTE_PMD, PTE_YOUNG, VM_READ, VM_WRITE
from mmcore import query
from mmcore.scenario import (Exit, Fork, Madvise, Mmap, Mprotect, Mremap, Munmap, NamedRange,
                             Pin, Read, Thp, ThpSettings, Unpin, Write, parse_scenario_text)
from mmcore.units import KiB, MiB, size_name

from model_precise import (ContentModel, PreciseMap, folio_heads, page_cache_references,
                           pin_references)

CONFIGS = (
    KernelConfig('page_mapcount', page_mapcount=True, bits=64),
    KernelConfig('no_page_mapcount', page_mapcount=False, bits=64),
    KernelConfig('page_mapcount-32bit', page_mapcount=True, bits=32),
    KernelConfig('no_page_mapcount-32bit', page_mapcount=False, bits=32),
    KernelConfig('total_mapped_pages', page_mapcount=False, bits=64, rmap='total_mapped_pages'),
    KernelConfig('total_mapped_pages-32bit', page_mapcount=False, bits=32,
                 rmap='total_mapped_pages'),
)
# (PAGE_MAPCOUNT, other) kernel indices of the same width: the two word
# sizes place mappings at different addresses (mm.LAYOUT), so only kernels
# of one width can be compared page table for page table
WIDTH_PAIRS = ((0, 1), (2, 3), (0, 4), (2, 5))


def is_rfc(k):
    return k.config.rmap == 'total_mapped_pages'


def average(k, pm, heads):
    """The folio average the config computes, from the model."""
    return pm.average_page_mapcount_total(heads) if is_rfc(k) else pm.average_page_mapcount(heads)

FIRST_PID = 100
MAX_PROCS = 4
MAX_RANGES = 5
# mremap targets: below the mmap area of both word sizes (mm.LAYOUT)
MOVE_AREA = 0x10000000

FILES = [{'name': 'f64', 'size': '256K', 'folio_size': '64K'},
         {'name': 'f2m', 'size': '2M', 'folio_size': '2M'}]

# name prefix -> mmap arguments
RANGES = {
    'a64': dict(kind='anon', size=64 * KiB, align=64 * KiB),
    'a128': dict(kind='anon', size=128 * KiB, align=64 * KiB),
    'a2m': dict(kind='anon', size=2 * MiB + 128 * KiB, align=2 * MiB),
    'sm': dict(kind='anon', size=12 * KiB, align=PAGE_SIZE),
    'sha': dict(kind='shared-anon', size=128 * KiB, align=64 * KiB),
    'sh2m': dict(kind='shared-anon', size=2 * MiB, align=2 * MiB),
    'pf': dict(kind='file', file='f64', size=256 * KiB, align=64 * KiB),
    'sf': dict(kind='shared-file', file='f64', size=256 * KiB, align=64 * KiB),
    'pf2m': dict(kind='file', file='f2m', size=2 * MiB, align=2 * MiB),
    'sf2m': dict(kind='shared-file', file='f2m', size=2 * MiB, align=2 * MiB),
}

# how often each kind of range is picked: mostly private anonymous memory,
# where CoW, mTHP and PMD mappings meet; 2M file ranges fault page by page
# and are slow to replay
RANGE_WEIGHTS = {'a64': 2, 'a128': 3, 'a2m': 3, 'sm': 1, 'sha': 1, 'sh2m': 1, 'pf': 1, 'sf': 1,
                 'pf2m': 1, 'sf2m': 1}
TEMPLATES = [t for t, w in RANGE_WEIGHTS.items() for _ in range(w)]
PROTS = ['rw', 'rw', 'rw', 'r']

THP_PRESETS = {
    'mthp': dict(enabled='madvise', sizes={'16K': 'always', '64K': 'always', '2M': 'madvise'},
                 shmem_enabled='advise'),
    'mthp-nozero': dict(enabled='madvise', sizes={'16K': 'always', '64K': 'always',
                                                 '2M': 'madvise'},
                        shmem_enabled='advise', use_zero_page=False),
    'always': dict(enabled='always', sizes={'64K': 'always', '2M': 'inherit'},
                   shmem_enabled='always'),
    'off': dict(enabled='never', sizes={}, shmem_enabled='never'),
}

ADVICES = ('dontneed', 'free', 'cold', 'hugepage', 'pageout', 'nohugepage', 'collapse',
           'dontfork', 'wipeonfork')

FAULT_AT = re.compile(r'(?:SIGSEGV|SIGBUS) at (0x[0-9a-f]+)')

SIZE_KEYS = ('size', 'offset', 'length', 'align', 'new_size', 'file_offset')


# --- reproducers ----------------------------------------------------------------------

def _thp_doc(preset):
    return {k: v for k, v in THP_PRESETS[preset].items()}


def _step_doc(step):
    """The step as the scenario format writes it (scenario-format.md)."""
    if isinstance(step, Thp):
        # every size: a thp step changes only the sizes it names
        s = step.settings
        sizes = {size_name(k): v for k, v in sorted(s.sizes.items())}
        return {'thp': {'enabled': s.enabled, 'sizes': sizes,
                        'shmem_enabled': s.shmem_enabled, 'use_zero_page': s.use_zero_page}}
    args = {}
    for f in dataclasses.fields(step):
        v = getattr(step, f.name)
        if f.name in ('index', 'line', 'expect_fault') or v is None:
            continue
        if f.name == 'file_offset' and step.kind not in ('file', 'shared-file'):
            continue
        args[f.name] = size_name(v) if f.name in SIZE_KEYS and v else v
    return {step.op: args}


def scenario_doc(preset, steps=()):
    return {'format': 1, 'name': 'property-repro',
            'kernel': {'memory': '64M', 'thp': _thp_doc(preset)},
            'files': FILES,
            'processes': [{'pid': FIRST_PID}],
            'steps': [_step_doc(s) for s in steps]}


def scenario_yaml(preset, steps=()):
    return yaml.safe_dump(scenario_doc(preset, steps), sort_keys=False,
                          default_flow_style=None, width=120)


# --- state fingerprints -----------------------------------------------------------------

MEM_ARRAYS = ('free', 'head', 'order', 'refcount', 'large_mapcount', 'entire_mapcount',
              'nr_pages_mapped', 'total_mapped_pages', 'mm_id', 'mm_id_mapcount', 'maybe_shared', 'pincount',
              'flags', 'memcg', 'mapping', 'index', 'page_mapcount', 'anon_exclusive')


def fingerprint(k):
    """Copies of everything a step can change, except the clock.  Per-folio
    fields are copied as stored (per folio slot, with the frames' slots),
    which is cheap; same_state() compares them per PFN when they differ."""
    mem = k.mem
    arrays = [mem.slot.copy()] + [getattr(mem, '_f_' + name, None) if
                                  isinstance(getattr(mem, name), FolioField) else getattr(mem, name)
                                  for name in MEM_ARRAYS]
    arrays = [a.copy() for a in arrays]
    folio = [isinstance(getattr(mem, name), FolioField) for name in MEM_ARRAYS]
    procs = []
    for pid in sorted(k.processes):
        p = k.processes[pid]
        procs.append((pid, p.mm.mm_id, sorted(p.mm.rss.items()), sorted(p.mm.pte_tables),
                      sorted((key, tuple(v)) for key, v in p.pins.items()),
                      [(v.start, v.end, v.flags, v.kind, v.name, v.pgoff, v.anon_vma,
                        v.range_start) + tuple(a.tobytes() for a in v.ptes())
                       for v in p.mm.vmas]))
    return (arrays, folio), procs, [obj.pages.tobytes() for obj in k.objects]


def _per_pfn(arrays, folio):
    slot = arrays[0]
    return [a[slot] if f else a for a, f in zip(arrays[1:], folio)]


def same_state(a, b):
    (raw_a, folio), (raw_b, _) = a[0], b[0]
    if not all(np.array_equal(x, y) for x, y in zip(raw_a, raw_b)):
        # slots may be handed out differently for the same folios
        if not all(np.array_equal(x, y) for x, y in zip(_per_pfn(raw_a, folio),
                                                         _per_pfn(raw_b, folio))):
            return False
    return a[1:] == b[1:]


def layout(k):
    """Processes, VMAs and page tables: what every config must agree on."""
    out = []
    for pid in sorted(k.processes):
        p = k.processes[pid]
        vmas = [(v.start, v.end, v.flags, v.kind, v.name, v.pgoff, v.pfn.tobytes(),
                 v.bits.tobytes()) for v in p.mm.vmas]
        out.append((pid, p.ppid, p.mm.mm_id, dict(p.mm.rss), p.mm.hiwater_rss, vmas))
    return out


# --- checks of one kernel against the precise model ---------------------------------

def folio_pfns(mem, heads):
    """Every PFN of the folios `heads`."""
    nr = mem.folio_nr_pages(heads)
    start = np.repeat(heads, nr)
    return start + np.arange(int(nr.sum())) - np.repeat(np.cumsum(nr) - nr, nr)


class Problems(list):
    def check(self, ok, what, *args):
        """Records `what % args` where the boolean array (or bool) `ok` is
        false; array arguments are reduced to their failing entries."""
        ok = np.asarray(ok)
        if ok.all():
            return
        if ok.ndim:
            bad = ~ok
            args = tuple(a[bad][:6].tolist()
                         if isinstance(a, np.ndarray) and a.ndim and len(a) == len(ok) else a
                         for a in args)
        self.append(what % args)


def check_folios(k, pm, pins, bad):
    """Semantics.md 3.4 per folio, the slots' relation to the real mappers
    (4.2/4.3), references, pins, and the promise of
    folio_maybe_mapped_shared() (5.2)."""
    mem = k.mem
    heads = folio_heads(mem)
    order = mem.order[heads]
    large, small = heads[order > 0], heads[order == 0]
    ent = pm.entries[heads]

    # references: one per mapping, one per page in a page cache, the pins
    pin_refs, pin_counts = pin_references(mem, pins)
    want = ent + page_cache_references(mem, heads) + pin_refs[heads]
    bad.check(want > 0, 'folios %s are allocated but nothing references them', heads)
    bad.check(mem.refcount[heads] == want, 'folios %s: refcount %s, expected %s (mappings '
              '%s + page cache + pins)', heads, mem.refcount[heads], want, ent)
    bad.check(mem.pincount[large] == pin_counts[large], 'folios %s: _pincount %s, pins %s',
              large, mem.pincount[large], pin_counts[large])

    # small folios: _mapcount counts the PTEs; no large-folio state
    bad.check(mem.page_mapcount[small] == pm.pte[small], 'small folios %s: mapcount %s, '
              'PTEs %s', small, mem.page_mapcount[small], pm.pte[small])
    bad.check((mem.large_mapcount[small] == 0) & (mem.mm_id[small] == 0).all(axis=1),
              'small folios %s carry large-folio state', small)

    # 3.4: LM counts every entry, E the PMD leaves
    lm, e = mem.large_mapcount[large], mem.entire_mapcount[large]
    bad.check(lm == pm.entries[large], 'folios %s: LM %s, entries mapping them %s',
              large, lm, pm.entries[large])
    if is_rfc(k):
        # RFC 13/13: no entire mapcount, the total counts mapped pages
        total = mem.total_mapped_pages[large]
        bad.check((e == 0) & (total == pm.total_mapped_pages(large)), 'folios %s: E %s, '
                  'total %s, mapped pages by the model %s', large, e, total,
                  pm.total_mapped_pages(large))
    else:
        bad.check(e == pm.pmd[large], 'folios %s: E %s, PMD leaves %s', large, e, pm.pmd[large])
    lpfns = folio_pfns(mem, large)
    if k.config.page_mapcount:
        bad.check(mem.page_mapcount[lpfns] == pm.pte[lpfns], 'PAGE_MAPCOUNT: pages %s: '
                  'page mapcount %s, PTEs %s', lpfns, mem.page_mapcount[lpfns], pm.pte[lpfns])
        npm = np.bincount(mem.head[lpfns], weights=pm.pte[lpfns] > 0,
                          minlength=mem.nr_frames)[large].astype(np.int64)
        bad.check(mem.nr_pages_mapped[large] == npm, 'PAGE_MAPCOUNT: folios %s: '
                  '_nr_pages_mapped %s, PTE-mapped pages %s', large,
                  mem.nr_pages_mapped[large], npm)
    else:
        bad.check(mem.page_mapcount[lpfns] == 0, 'NO_PAGE_MAPCOUNT: pages %s of large '
                  'folios have a page mapcount %s', lpfns, mem.page_mapcount[lpfns])

    # 3.4: the slots
    ids, cnt, shared = mem.mm_id[large], mem.mm_id_mapcount[large], mem.maybe_shared[large]
    occupied = ids != 0
    bad.check((~occupied | (cnt >= 1)).all(axis=1), 'folios %s: occupied slot with count '
              '< 1: slots %s, counts %s', large, ids, cnt)
    bad.check((occupied | (cnt == 0)).all(axis=1), 'folios %s: free slot with a count: '
              'slots %s, counts %s', large, ids, cnt)
    bad.check(cnt.sum(axis=1) <= lm, 'folios %s: c0 + c1 %s > LM %s', large,
              cnt.sum(axis=1), lm)
    bad.check((lm != 0) | (~shared & ~occupied.any(axis=1)), 'unmapped folios %s keep S '
              'or a slot', large)
    single = (occupied.sum(axis=1) == 1) & (cnt.max(axis=1) == lm)
    bad.check(shared | (lm == 0) | single, 'folios %s: S clear but no single slot holds '
              'LM %s (slots %s, counts %s)', large, lm, ids, cnt)
    bad.check(~occupied.all(axis=1) | (ids[:, 0] != ids[:, 1]), 'folios %s: one MM in both '
              'slots %s', large, ids)
    # 4.2/4.3: a slot counts mappings its MM made while it held the slot,
    # less those it removed, and is freed at <= 0: never more than the MM
    # really has
    for j in np.flatnonzero(occupied.any(axis=1)):
        h = int(large[j])
        for s in (0, 1):
            if ids[j, s]:
                real = pm.mm_entries(h, ids[j, s])
                if cnt[j, s] > real:
                    bad.append('folio %d: slot %d says MM %d maps %d, it maps %d'
                               % (h, s, ids[j, s], cnt[j, s], real))

    # 5.2: not maybe-shared => at most one MM maps the folio
    excl = ~folio_maybe_mapped_shared(mem, heads)
    bad.check(~excl | (pm.nr_mms[heads] <= 1), 'folios %s: folio_maybe_mapped_shared() '
              'false, yet %s MMs map them', heads, pm.nr_mms[heads])

    # PG_anon_exclusive: the page is mapped by one entry at most (6.x:
    # an exclusive anon page belongs to one MM, which maps it once)
    aex = np.flatnonzero(mem.anon_exclusive & ~mem.free)
    aex = aex[(mem.flags[mem.head[aex]] & FL_ANON) != 0]
    bad.check(pm.precise(aex) <= 1, 'AnonExclusive pages %s are mapped %s times',
              aex, pm.precise(aex))

    # 7.5: deferred-split detection
    anon2 = large[((mem.flags[large] & FL_ANON) != 0) & (mem.order[large] >= 2)]
    flagged = (mem.flags[anon2] & FL_PARTIALLY_MAPPED) != 0
    n2 = mem.folio_nr_pages(anon2)
    if k.config.page_mapcount:
        partial = (pm.pmd[anon2] == 0) & (pm.mapped[anon2] > 0) & (pm.mapped[anon2] < n2)
        bad.check(~partial | flagged, 'PAGE_MAPCOUNT: partially mapped anon folios %s '
                  '(%s of %s pages mapped) are not queued for deferred split',
                  anon2, pm.mapped[anon2], n2)
    elif is_rfc(k):
        # RFC 13/13 __folio_certainly_partially_mapped(): total && total < N
        t2 = pm.total_mapped_pages(anon2)
        partial = (t2 > 0) & (t2 < n2)
        bad.check(~partial | flagged, 'RFC: anon folios %s with 0 < total %s < N are not '
                  'queued for deferred split', anon2, t2)
    else:
        lm2 = pm.entries[anon2]
        partial = (pm.pmd[anon2] == 0) & (lm2 > 0) & (lm2 < n2)
        bad.check(~partial | flagged, 'NO_PAGE_MAPCOUNT: anon folios %s with 0 < LM %s < N '
                  'are not queued for deferred split', anon2, lm2)
    return heads


def check_counters(k, pm, heads, bad):
    """kpagecount (8.1), the mapped statistics (7.4), RSS and MM IDs."""
    mem = k.mem
    anon = (mem.flags[heads] & FL_ANON) != 0
    nr = mem.folio_nr_pages(heads)
    mapped_pages = np.minimum(pm.mapped[heads], nr)
    folio_mapped = pm.entries[heads] > 0
    stats = query.node_stats(k)
    for key, sel in (('anon_mapped', anon), ('file_mapped', ~anon)):
        if k.config.page_mapcount:
            want = int(mapped_pages[sel].sum())
        else:
            want = int(nr[sel & folio_mapped].sum())
        bad.check(stats[key] == want, '%s: node %s %d pages, mapped pages by the model %d',
                  k.config.name, key, stats[key], want)
    # nr_pmdmapped (7.4): whole folios while a PMD maps them, in both configs
    pmd_mapped = pm.pmd[heads] > 0
    shmem = ~anon & ((mem.flags[heads] & FL_SWAPBACKED) != 0)
    for key, sel in (('anon_thps', anon), ('shmem_pmdmapped', shmem),
                     ('file_pmdmapped', ~anon & ~shmem)):
        want = int(nr[sel & pmd_mapped].sum())
        bad.check(stats[key] == want, 'node %s %d pages, PMD-mapped pages by the model %d',
                  key, stats[key], want)

    pfns = folio_pfns(mem, heads)
    got = query.kpagecount(k, pfns).astype(np.int64)
    if k.config.page_mapcount:
        want = pm.precise(pfns)
    else:
        want = average(k, pm, mem.head[pfns])
    bad.check(got == want, '%s: kpagecount of PFNs %s is %s, expected %s', k.config.name,
              pfns, got, want)
    zero = np.array(sorted(pm.zero_pfns), dtype=np.int64)
    if len(zero):
        kz = query.kpagecount(k, zero).astype(np.int64)
        bad.check(kz == 0, 'kpagecount of zero pages %s is %s', zero, kz)

    for pid, p in k.processes.items():
        bad.check(p.mm.hiwater_rss >= p.mm.rss_pages(), 'pid %d: VmHWM %d below VmRSS %d',
                  pid, p.mm.hiwater_rss, p.mm.rss_pages())
        for kind in ('anon', 'shmem', 'file'):
            bad.check(p.mm.rss[kind] == pm.rss[pid][kind], 'pid %d: RSS %s counter %d, '
                      'present pages %d', pid, kind, p.mm.rss[kind], pm.rss[pid][kind])
    ids = [p.mm.mm_id for p in k.processes.values()]
    bad.check(len(set(ids)) == len(ids) and set(ids) == k.mm_ids.used,
              'MM IDs %s of the live processes, allocator holds %s', ids, k.mm_ids.used)


def check_views(k, pm, bad):
    """What smaps and pagemap say per page (8.3, 8.4) against the model.
    Returns {(pid, vma index): smaps-private mask over present normal
    pages} for the cross-config USS check."""
    mem = k.mem
    private_by_vma = {}
    for pid in sorted(k.processes):
        p = k.processes[pid]
        mm_id = p.mm.mm_id
        for vi, v in enumerate(p.mm.vmas):
            pv = query.vma_pages(k, v)
            where = '%s pid %d %r' % (k.config.name, pid, v.name)
            n = pv.normal
            pfn = pv.pfn[n]
            heads = mem.head[pfn]
            prec = pm.precise(pfn)
            smaps_private = pv.private[n] | pv.refcount_one[n]
            private_by_vma[(pid, vi)] = (pfn, smaps_private)
            # 8.4: a page counted private is mapped by this process only
            if k.config.page_mapcount:
                bad.check(pv.mapcount[n] == prec, '%s: smaps mapcount of PFNs %s is %s, '
                          'precise %s', where, pfn, pv.mapcount[n], prec)
                bad.check(~smaps_private | (prec == 1), '%s: PFNs %s private in smaps but '
                          'mapped %s times', where, pfn, prec)
            else:
                avg = average(k, pm, heads)
                bad.check(pv.mapcount[n] == avg, '%s: smaps mapcount of PFNs %s is %s, '
                          'average %s', where, pfn, pv.mapcount[n], avg)
                bad.check(~smaps_private | pm.only_mapped_by(heads, mm_id), '%s: PFNs %s '
                          'private in smaps but their folios are mapped by %s MMs', where,
                          pfn, pm.nr_mms[heads])
            # the first page of each PMD leaf, per entry
            pte = n & ~pv.pmd
            leaf = pv.present & pv.pmd
            first = pv.pfn.copy()
            base = (v.start >> 12)
            for b in np.flatnonzero(leaf & ((base + np.arange(v.nr_pages)) % HPAGE_PMD_NR == 0)):
                first[b:b + HPAGE_PMD_NR] = pv.pfn[b]
            # 8.6: numa_maps counts a PMD leaf with its first page (12.1)
            if k.config.page_mapcount:
                want = pm.precise(first[n])
            else:
                want = average(k, pm, mem.head[first[n]])
            bad.check(pv.numa_mapcount[n] == want, '%s: numa_maps mapcount of PFNs %s is %s, '
                      'expected %s', where, pfn, pv.numa_mapcount[n], want)
            # 8.3: pagemap bit 56
            ex = pv.pm_exclusive
            bad.check(~(pv.present & ~n & ~pv.pmd) | ~ex, '%s: zero-page entries %s have '
                      'pagemap bit 56', where, np.flatnonzero(pv.present & ~n & ~pv.pmd))
            if k.config.page_mapcount:
                bad.check(ex[pte] == (pm.precise(pv.pfn[pte]) == 1), '%s: PTEs of PFNs %s: '
                          'bit 56 %s, precise count %s', where, pv.pfn[pte], ex[pte],
                          pm.precise(pv.pfn[pte]))
                bad.check(ex[leaf] == (pm.precise(first[leaf]) == 1), '%s: PMD entries of '
                          'PFNs %s: bit 56 %s, precise count of the first page %s', where,
                          pv.pfn[leaf], ex[leaf], pm.precise(first[leaf]))
            else:
                sel = n & ex
                bad.check(pm.only_mapped_by(mem.head[pv.pfn[sel]], mm_id), '%s: PFNs %s have '
                          'bit 56 but their folios are mapped by %s MMs', where,
                          pv.pfn[sel], pm.nr_mms[mem.head[pv.pfn[sel]]])
    return private_by_vma


def check_kernel(k, pins):
    """Problems of one kernel against its precise model; also its private
    masks for the cross-config checks."""
    pm = PreciseMap(k)
    bad = Problems(pm.errors)
    heads = check_folios(k, pm, pins, bad)
    check_counters(k, pm, heads, bad)
    private = check_views(k, pm, bad)
    return bad, pm, private


# --- the state machine -----------------------------------------------------------------

class MMCore(RuleBasedStateMachine):
    """Four kernels replaying the same random steps."""

    @initialize(preset=st.sampled_from(sorted(THP_PRESETS)), data=st.data(),
                templates=st.lists(st.sampled_from(TEMPLATES), min_size=1, max_size=3))
    def boot(self, preset, data, templates):
        self.preset = preset
        self.scenario = parse_scenario_text(scenario_yaml(preset), '<property>')
        self.kernels = [Kernel(c, self.scenario) for c in CONFIGS]
        self.steps = []
        self.book = {FIRST_PID: {}}     # pid -> {range name: NamedRange}, as the loader
        self.errors = [None] * len(CONFIGS)     # of the last step, per kernel
        self.pin_calls = {FIRST_PID: Counter()}   # pid -> Counter((vma, offset, length))
        # per kernel: pid -> {(range name, page): [pinned PFN, ...]}
        self.pins = [{FIRST_PID: {}} for _ in CONFIGS]
        self.next_pid = FIRST_PID + 1
        self.failed = False
        # one content model per width, followed on its PAGE_MAPCOUNT kernel
        self.contents = {i: ContentModel() for i in dict.fromkeys(a for a, _ in WIDTH_PAIRS)}
        # pid -> {range name: pages a span may reach}: the book's size, but
        # never past the range's mapping after a refused mremap
        self.limit = {FIRST_PID: {}}
        self.serial = 0
        self.moves = 0
        for template in templates:
            pid, name = self.do_mmap(data, FIRST_PID, template)
            self.apply(lambda **c: Write(pid=pid, vma=name, offset=0,
                                         length=self.book[pid][name].size, **c))

    # --- replay ----------------------------------------------------------------------
    def apply(self, make, unchanged_on_error=None):
        """Builds the step (`make(index=..., line=...)`), replays it on every
        kernel and returns the kernels' error (None if it was performed).
        `unchanged_on_error(kernel)` says, before the step, whether a
        refusal must leave that kernel's state untouched."""
        step = make(index=len(self.steps) + 1, line=len(self.steps) + 1)
        self.steps.append(step)
        with self.reproducer():
            self.errors = self._replay(step, unchanged_on_error)
            self.follow_content(step)
        return self.errors[0]

    @contextlib.contextmanager
    def reproducer(self):
        """On any failure, notes the steps so far as a scenario file."""
        try:
            yield
        except BaseException:
            self.failed = True
            note('reproducer (scenario file):\n' + scenario_yaml(self.preset, self.steps))
            raise

    def _replay(self, step, unchanged_on_error):
        errors = []
        for k in self.kernels:
            guard = unchanged_on_error is not None and unchanged_on_error(k)
            before = fingerprint(k) if guard else None
            try:
                k.apply(step)
                errors.append(None)
            except StepError as e:
                errors.append(e.reason)
                if guard:
                    assert same_state(fingerprint(k), before), \
                        '%s: refused step %d (%s) changed the state' % (k.config.name,
                                                                       step.index, e.reason)
        # the same outcome in both mapcount configs of a width; the widths
        # place ranges differently (mm.LAYOUT), so a span reaching past its
        # range may meet other ranges in one width and not in the other
        assert all(errors[a] == errors[b] for a, b in WIDTH_PAIRS), \
            'configs disagree on step %d: %s' % (step.index,
                                                 dict(zip((c.name for c in CONFIGS), errors)))
        return errors

    def follow_content(self, step):
        """Tells each width's content model what the step did there;
        private content of pages left unmapped is forgotten."""
        for i, c in self.contents.items():
            k = self.kernels[i]
            self.content_effect(k, c, step, self.errors[i])
            for proc in k.processes.values():
                c.forget_unmapped(proc)

    def content_model(self, i):
        """The content model of kernel i's width."""
        return self.contents[[a for a, b in WIDTH_PAIRS if i in (a, b)][0]]

    @staticmethod
    def content_effect(k, c, step, err):
        if isinstance(step, Exit):
            c.exit(step.pid)
        elif isinstance(step, Fork) and err is None:
            c.fork(k.processes[step.pid], k.processes[step.child])
        elif isinstance(step, (Write, Pin, Madvise)):
            proc = k.processes[step.pid]
            vmas = k.range_vmas(proc, step.vma)
            if not vmas:
                return                          # refused: the range is gone
            start = vmas[0].range_start + step.offset
            end = start + step.length
            if isinstance(step, Madvise):
                ok = err is None or err.startswith(('ENOMEM', 'EINVAL'))
                if step.advice == 'dontneed' and ok:
                    c.dontneed(proc, start, end)
                elif step.advice == 'free' and ok:
                    c.free(proc, start, end)
                return
            # faults run in address order up to the faulting page
            m = FAULT_AT.match(err or '')
            if err is None:
                stop = end
            elif m:
                stop = int(m.group(1), 16)
            elif isinstance(step, Pin) and err.startswith('EFAULT'):
                stop = start                    # refused before any fault
            else:
                c.lost = True                   # e.g. out of memory half-way
                return
            if isinstance(step, Write):
                c.write(proc, start, stop)
            else:
                c.unshare(proc, start, stop)

    def live(self):
        return sorted(self.book)

    def draw_range(self, data):
        pid = data.draw(st.sampled_from([p for p in self.live() if self.book[p]]), 'pid')
        name = data.draw(st.sampled_from(sorted(self.book[pid])), 'range')
        return pid, name, self.book[pid][name]

    def draw_span(self, data, pid, name):
        n = self.limit[pid][name] // PAGE_SIZE
        # whole ranges and 64K-aligned pieces often, any page sometimes
        aligned = st.integers(0, (n - 1) // 16).map(lambda i: i * 16)
        first = data.draw(st.one_of(st.just(0), aligned, st.integers(0, n - 1)), 'first page')
        count = data.draw(st.one_of(st.just(n - first), st.integers(1, n - first)), 'pages')
        return first * PAGE_SIZE, count * PAGE_SIZE

    @staticmethod
    def first_page_unmapped(pid, name, offset, need=0):
        """For refusals the kernel makes before touching anything: the first
        page of the span is not mapped (or lacks the `need` permission)."""
        def check(k):
            p = k.processes[pid]
            vmas = k.range_vmas(p, name)
            if not vmas:
                return True
            v = p.mm.find_vma(vmas[0].range_start + offset)
            return v is None or (v.flags & need) != need
        return check

    def has_ranges(self):
        return any(self.book.values())

    # --- operations ---------------------------------------------------------------------
    # Each takes the Hypothesis `data` and replays one or two steps.  One
    # rule draws the operation from OPERATIONS, so that writes and forks,
    # which make folios shared, dominate and no operation is left out.

    def can_mmap(self):
        return any(len(r) < MAX_RANGES for r in self.book.values())

    def do_mmap(self, data, pid=None, template=None):
        if pid is None:
            pid = data.draw(st.sampled_from([p for p in self.live()
                                             if len(self.book[p]) < MAX_RANGES]), 'pid')
        if template is None:
            template = data.draw(st.sampled_from(TEMPLATES), 'template')
        prot = data.draw(st.sampled_from(PROTS), 'prot')
        self.serial += 1
        name = '%s-%d' % (template, self.serial)
        args = RANGES[template]
        self.apply(lambda **c: Mmap(pid=pid, name=name, prot=prot, **args, **c))
        self.book[pid][name] = NamedRange(name, args['size'], args['kind'], args.get('file'))
        self.limit[pid][name] = args['size']
        if data.draw(st.booleans(), 'MADV_HUGEPAGE'):
            self.apply(lambda **c: Madvise(pid=pid, vma=name, offset=0, length=args['size'],
                                           advice='hugepage', **c))
        return pid, name

    def do_access(self, data, write):
        pid, name, r = self.draw_range(data)
        offset, length = self.draw_span(data, pid, name)
        cls, need = (Write, VM_WRITE) if write else (Read, VM_READ)
        self.apply(lambda **c: cls(pid=pid, vma=name, offset=offset, length=length, **c),
                   self.first_page_unmapped(pid, name, offset, need))

    def do_write(self, data):
        self.do_access(data, True)

    def do_read(self, data):
        self.do_access(data, False)

    def do_munmap(self, data):
        pid, name, r = self.draw_range(data)
        offset, length = self.draw_span(data, pid, name)
        self.apply(lambda **c: Munmap(pid=pid, vma=name, offset=offset, length=length, **c))
        r.unmap(offset, length)

    def do_madvise(self, data):
        pid, name, r = self.draw_range(data)
        offset, length = self.draw_span(data, pid, name)
        advice = data.draw(st.sampled_from(ADVICES), 'advice')
        self.apply(lambda **c: Madvise(pid=pid, vma=name, offset=offset, length=length,
                                       advice=advice, **c))
        if advice == 'dontfork':
            r.set_dontfork(offset, length, True)

    def do_mprotect(self, data):
        pid, name, r = self.draw_range(data)
        offset, length = self.draw_span(data, pid, name)
        prot = data.draw(st.sampled_from(['r', 'rw', 'none']), 'prot')
        # mprotect() fails with ENOMEM before any change when its start is
        # not mapped (do_mprotect_pkey)
        self.apply(lambda **c: Mprotect(pid=pid, vma=name, offset=offset, length=length,
                                        prot=prot, **c),
                   self.first_page_unmapped(pid, name, offset))

    def do_mremap(self, data):
        pid, name, r = self.draw_range(data)
        how = data.draw(st.sampled_from(['shrink', 'grow', 'move', 'move-grow']), 'how')
        new_size = {'shrink': max(PAGE_SIZE, r.size // 2 // PAGE_SIZE * PAGE_SIZE),
                    'grow': r.size + 64 * KiB, 'move': r.size,
                    'move-grow': r.size + 2 * MiB}[how]
        move_to = None
        if how.startswith('move'):
            self.moves += 1
            misalign = data.draw(st.sampled_from([0, 64 * KiB, 2 * MiB]), 'misalign')
            move_to = MOVE_AREA + self.moves * 16 * MiB + misalign
        # mremap() of a range that is not one VMA fails with EFAULT before
        # anything moves (vma_to_resize)
        err = self.apply(lambda **c: Mremap(pid=pid, vma=name, new_size=new_size,
                                            move_to=move_to, **c),
                         lambda k: len(k.range_vmas(k.processes[pid], name)) != 1)
        self.limit[pid][name] = new_size if err is None else \
            min(new_size, self.limit[pid][name])
        r.resize(new_size)

    def can_fork(self):
        return len(self.book) < MAX_PROCS

    def do_fork(self, data):
        parent = data.draw(st.sampled_from(self.live()), 'parent')
        child = self.next_pid
        self.next_pid += 1
        if self.apply(lambda **c: Fork(pid=parent, child=child, **c)) is None:
            self.book[child] = {n: c for n, c in ((n, r.fork_copy())
                                                  for n, r in self.book[parent].items())
                                if c is not None}
            self.limit[child] = {n: self.limit[parent][n] for n in self.book[child]}
            self.pin_calls[child] = Counter()
            for pins in self.pins:
                pins[child] = {}

    def can_exit(self):
        return len(self.book) > 1

    def do_exit(self, data):
        pid = data.draw(st.sampled_from(self.live()), 'pid')
        assert self.apply(lambda **c: Exit(pid=pid, **c)) is None
        del self.book[pid]
        del self.limit[pid]
        del self.pin_calls[pid]
        for pins in self.pins:
            del pins[pid]

    def do_pin(self, data):
        pid, name, r = self.draw_range(data)
        offset, length = self.draw_span(data, pid, name)
        length = min(length, 32 * PAGE_SIZE)
        self.apply(lambda **c: Pin(pid=pid, vma=name, offset=offset, length=length, **c),
                   self.first_page_unmapped(pid, name, offset, VM_WRITE))
        self.pin_calls[pid][(name, offset, length)] += 1
        # the pinned pages are those mapped after the write faults (mm/gup.c)
        for k, pins, err in zip(self.kernels, self.pins, self.errors):
            if err is not None:
                continue
            p = k.processes[pid]
            base = k.range_vmas(p, name)[0].range_start
            for addr in range(base + offset, base + offset + length, PAGE_SIZE):
                v = p.mm.find_vma(addr)
                pfn = int(v.pfn[v.page_index(addr)])
                assert pfn >= 0, 'pinned page %#x of pid %d is not mapped' % (addr, pid)
                pins[pid].setdefault((name, (addr - base) // PAGE_SIZE), []).append(pfn)

    def unpinnable(self, pid):
        """Outstanding pins of pid that the loader accepts an unpin for: the
        range, shrunk by mremap since, still reaches that far."""
        return sorted(key for key, n in self.pin_calls[pid].items()
                      if n > 0 and key[1] + key[2] <= self.book[pid][key[0]].size)

    def can_unpin(self):
        return any(self.unpinnable(p) for p in self.live())

    def do_unpin(self, data):
        pid = data.draw(st.sampled_from([p for p in self.live() if self.unpinnable(p)]), 'pid')
        name, offset, length = data.draw(st.sampled_from(self.unpinnable(pid)), 'pin')
        self.pin_calls[pid][(name, offset, length)] -= 1
        self.apply(lambda **c: Unpin(pid=pid, vma=name, offset=offset, length=length, **c),
                   lambda k: True)
        for pins, err in zip(self.pins, self.errors):
            if err is not None:
                continue
            for page in range(offset // PAGE_SIZE, (offset + length) // PAGE_SIZE):
                stack = pins[pid].get((name, page))
                if stack:
                    stack.pop()

    def do_thp(self, data):
        preset = data.draw(st.sampled_from(sorted(THP_PRESETS)), 'preset')
        settings_ = ThpSettings(**THP_PRESETS[preset])
        assert self.apply(lambda **c: Thp(settings=settings_, **c)) is None

    # operation -> weight; the first ones are what shrinking goes to
    OPERATIONS = {'write': 6, 'fork': 3, 'read': 2, 'munmap': 2, 'madvise': 3, 'mprotect': 2,
                  'exit': 2, 'mmap': 2, 'pin': 1, 'unpin': 1, 'mremap': 1, 'thp': 1}
    NEED_RANGES = {'write', 'read', 'munmap', 'madvise', 'mprotect', 'pin', 'mremap'}

    def possible(self, op):
        if op in self.NEED_RANGES:
            return self.has_ranges()
        check = getattr(self, 'can_' + op, None)
        return check is None or check()

    @rule(data=st.data())
    def syscall(self, data):
        ops = [op for op, w in self.OPERATIONS.items() if self.possible(op) for _ in range(w)]
        op = data.draw(st.sampled_from(ops), 'operation')
        getattr(self, 'do_' + op)(data)

    def teardown(self):
        """Every sequence is a valid scenario: the loader accepts the
        reproducer and reads back the same steps (the fork's comm aside,
        which it resolves to the parent's)."""
        if not getattr(self, 'steps', None) or self.failed:
            return
        sc = parse_scenario_text(scenario_yaml(self.preset, self.steps), '<reproducer>')
        doc = lambda s: {op: {k: v for k, v in args.items() if k != 'comm'}
                         for op, args in _step_doc(s).items()}
        assert [doc(s) for s in sc.steps] == [doc(s) for s in self.steps]
        assert sc.thp == self.scenario.thp

    # --- checks -------------------------------------------------------------------------
    @invariant()
    def consistent(self):
        with self.reproducer():
            self.check_all()

    def check_all(self):
        results = []
        for k, pins in zip(self.kernels, self.pins):
            pinned = [pfn for stacks in pins.values() for s in stacks.values() for pfn in s]
            results.append(check_kernel(k, pinned))
        problems = ['%s: %s' % (k.config.name, p)
                    for i, (k, (bad, _, _)) in enumerate(zip(self.kernels, results))
                    for p in bad + self.content_model(i).check(k)]
        assert not problems, '\n'.join(problems[:20])
        self.check_across(results)

    def check_across(self, results):
        """12.9: both mapcount configs of one width take the same decisions;
        8.4: USS."""
        for ipage, inone in WIDTH_PAIRS:
            ref, k = self.kernels[ipage], self.kernels[inone]
            assert layout(k) == layout(ref), '%s: processes or page tables differ from %s' % (
                k.config.name, ref.config.name)
            skip = {'page_mapcount', 'nr_pages_mapped', 'flags'}
            if is_rfc(k):
                skip |= {'entire_mapcount', 'total_mapped_pages'}
            for name in MEM_ARRAYS:
                if name in skip:
                    continue
                a, b = getattr(ref.mem, name), getattr(k.mem, name)
                assert np.array_equal(a, b), '%s: mem.%s differs from %s at PFNs %s' % (
                    k.config.name, name, ref.config.name,
                    np.flatnonzero((a != b).reshape(len(a), -1).any(axis=1))[:8].tolist())
            fa = ref.mem.flags & ~np.uint32(FL_PARTIALLY_MAPPED)
            fb = k.mem.flags & ~np.uint32(FL_PARTIALLY_MAPPED)
            assert np.array_equal(fa, fb), '%s: folio flags differ at PFNs %s' % (
                k.config.name, np.flatnonzero(fa != fb)[:8].tolist())
            ref_stats, stats = query.node_stats(ref), query.node_stats(k)
            for key, v in ref_stats.items():
                if key not in ('anon_mapped', 'file_mapped'):
                    assert stats[key] == v, '%s: node %s %d, %s says %d' % (
                        k.config.name, key, stats[key], ref.config.name, v)
        for ipage, inone in WIDTH_PAIRS:
            (_, pm, priv_page), (_, _, priv_none) = results[ipage], results[inone]
            k = self.kernels[inone]
            uss = Counter()
            for (pid, vi), (pfn, private_page) in priv_page.items():
                _, private_none = priv_none[(pid, vi)]
                mm_id = k.processes[pid].mm.mm_id
                gained = private_none & ~private_page
                # 8.4: the only pages NO_PAGE_MAPCOUNT counts private and
                # PAGE_MAPCOUNT shared are those of folios mapped more than
                # once by this one process
                ok = pm.only_mapped_by(k.mem.head[pfn[gained]], mm_id) & \
                    (pm.precise(pfn[gained]) >= 2)
                assert ok.all(), '%s: pid %d: PFNs %s private without, shared with per-page ' \
                    'mapcounts' % (k.config.name, pid, pfn[gained][~ok][:8].tolist())
                uss[pid] += int(private_none.sum()) - int(gained.sum()) - \
                    int(private_page.sum())
            for pid, excess in uss.items():
                assert excess <= 0, 'pid %d: USS without per-page mapcounts exceeds USS with ' \
                    'them by %d pages' % (pid, excess)


# CI profile: 30 sequences; MMEMU_PROPERTY_EXAMPLES asks for more (benchmarks/model_check.py
# runs long sequences)
MMCore.TestCase.settings = settings(max_examples=int(os.environ.get('MMEMU_PROPERTY_EXAMPLES', 30)),
                                    stateful_step_count=25, deadline=None,
                                    derandomize=True, database=None, print_blob=False,
                                    suppress_health_check=[HealthCheck.too_slow,
                                                           HealthCheck.filter_too_much,
                                                           HealthCheck.data_too_large])
TestMMCore = MMCore.TestCase


# --- regressions: mm core bugs the machine above found, as small scenarios -----------

PMD_READ_REPRO = '''
format: 1
name: pmd-leaf-accessed-bit
kernel: {memory: 64M, thp: {enabled: madvise}}
processes: [{pid: 100}]
steps:
- mmap: {pid: 100, name: a, size: 2M, align: 2M}
- madvise: {pid: 100, vma: a, advice: hugepage}
- write: {pid: 100, vma: a}
- fork: {pid: 100, child: 101}
- read: {pid: 101, vma: a, offset: 0, length: 4K}
'''


@pytest.mark.parametrize('config', CONFIGS, ids=lambda c: c.name)
def test_pmd_leaf_accessed_bit(config):
    """A PMD leaf has one accessed and one dirty bit: an access to any page
    of it marks the whole 2M (the MMU sets them in the PMD entry;
    touch_pmd() / huge_pmd_set_accessed() on a fault)."""
    sc = parse_scenario_text(PMD_READ_REPRO)
    k = Kernel(config, sc)
    k.run(sc.steps)
    v = k.range_vmas(k.processes[101], 'a')[0]
    assert (v.bits & PTE_PMD).all()
    assert (v.bits & PTE_YOUNG).all()
    assert PreciseMap(k).errors == []


PMD_SPLIT_EXCLUSIVE_REPRO = '''
format: 1
name: pmd-split-anon-exclusive
kernel: {memory: 64M, thp: {enabled: madvise}}
processes: [{pid: 100}]
steps:
- mmap: {pid: 100, name: a, size: 2M, align: 2M}
- madvise: {pid: 100, vma: a, advice: hugepage}
- write: {pid: 100, vma: a}
- fork: {pid: 100, child: 101}
- exit: {pid: 101}
- write: {pid: 100, vma: a, offset: 0, length: 4K}
- pin: {pid: 100, vma: a, offset: 0, length: 4K}
- snapshot: reused
- mprotect: {pid: 100, vma: a, offset: 4K, length: 4K, prot: r}
- mprotect: {pid: 100, vma: a, offset: 4K, length: 4K, prot: rw}
- write: {pid: 100, vma: a, offset: 4K, length: 4K}
'''


@pytest.mark.parametrize('config', CONFIGS, ids=lambda c: c.name)
def test_pmd_split_keeps_anon_exclusive(config):
    """__split_huge_pmd_locked() (not freezing) sets PageAnonExclusive on
    every subpage when the PMD's page was exclusive, so the process still
    owns all 512 pages: mprotect(PROT_WRITE) makes them writable again and
    the write reuses the page (semantics.md 6.1), pinned or not."""
    sc = parse_scenario_text(PMD_SPLIT_EXCLUSIVE_REPRO)
    k = Kernel(config, sc)
    k.run(sc.steps, 'reused')
    head = int(k.range_vmas(k.processes[100], 'a')[0].pfn[0])
    k.run(sc.steps[len(sc.steps_until('reused')):])
    v = k.range_vmas(k.processes[100], 'a')[0]
    assert int(v.pfn[1]) == head + 1


PRIVATE_FILE_COLLAPSE_REPRO = '''
format: 1
name: private-file-collapse
kernel: {memory: 64M, thp: {enabled: madvise, shmem_enabled: advise}}
files: [{name: f2m, size: 2M, folio_size: 2M}]
processes: [{pid: 100}]
steps:
- mmap: {pid: 100, name: p, size: 2M, kind: file, file: f2m, align: 2M}
- read: {pid: 100, vma: p}
- write: {pid: 100, vma: p, offset: 0, length: 4K}
- snapshot: written
- madvise: {pid: 100, vma: p, advice: collapse}
'''


@pytest.mark.parametrize('config', CONFIGS, ids=lambda c: c.name)
def test_collapse_keeps_private_copies(config):
    """MADV_COLLAPSE never discards data: collapse_pte_mapped_thp() gives
    up on a page table whose entries are not the subpages of the new
    page-cache folio (a MAP_PRIVATE copy is not), so the private page
    stays mapped."""
    sc = parse_scenario_text(PRIVATE_FILE_COLLAPSE_REPRO)
    k = Kernel(config, sc)
    k.run(sc.steps, 'written')
    v = k.range_vmas(k.processes[100], 'p')[0]
    copy = int(v.pfn[0])
    assert k.mem.flags[k.mem.head[copy]] & FL_ANON
    for step in sc.steps[len(sc.steps_until('written')):]:
        try:
            k.apply(step)
        except StepError:
            pass                    # collapse may fail; it must not lose data
    v = k.range_vmas(k.processes[100], 'p')[0]
    assert int(v.pfn[0]) == copy

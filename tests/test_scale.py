"""Scale: the sparse page tables against a dense model, the fast pagemap
and smaps paths against the per-page view, untouched reservations that
cost nothing, and sizes beyond the emulated architecture refused by the
loader with a file:line: message."""
import glob
import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as hst

from mmcore import query
from mmcore.config import load_kernel_config
from mmcore.kernel import Kernel
from mmcore.pagetable import PageTable, PTE_PMD
from mmcore.scenario import ScenarioError, parse_scenario_text
from procfs import pid as pidfiles
from procfs.pid import PM_PRESENT
from procfs.formats.smaps import SmapsPages, smaps_account

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, 'configs', 'kernels', '*.yaml')))
NBLK = 6                      # the model covers 6 PMD blocks


# --- PageTable against a dense model ---------------------------------------------

_ops = hst.lists(hst.tuples(
    hst.sampled_from(['pte', 'clear', 'leaf', 'unleaf', 'split', 'or', 'and', 'free_empty',
                      'free']),
    hst.integers(0, NBLK * 512 - 1), hst.integers(1, 700), hst.integers(0, 255)),
    max_size=40)


@settings(max_examples=60, deadline=None)
@given(_ops)
def test_page_table_matches_dense_model(ops):
    """Every write through PageTable reads back as the same writes to a
    dense array of PFNs and bits would; a PMD leaf reads as 512 pages
    with consecutive PFNs and PTE_PMD; tables exist exactly where the
    model says (allocated on the first present entry, freed on request)."""
    pt = PageTable()
    pfn = np.full(NBLK * 512, -1, dtype=np.int64)
    bits = np.zeros(NBLK * 512, dtype=np.uint8)
    kind = [None] * NBLK                     # None, 'leaf', 'table'
    for op, v, n, b in ops:
        blk = v >> 9
        if op in ('pte', 'clear'):
            lo, hi = v, min(v + n, NBLK * 512)
            if any(kind[x] == 'leaf' for x in range(lo >> 9, ((hi - 1) >> 9) + 1)):
                continue
            val = np.arange(lo, hi) + 1000 if op == 'pte' else -1
            bb = (b & ~PTE_PMD) if op == 'pte' else 0
            pt.set_at(np.arange(lo, hi), val, bb)
            pfn[lo:hi], bits[lo:hi] = val, bb
            if op == 'pte':
                for x in range(lo >> 9, ((hi - 1) >> 9) + 1):
                    kind[x] = 'table'
        elif op == 'leaf' and kind[blk] is None:
            pt.set_leaves([blk], 4096 * (blk + 1), b | PTE_PMD)
            pfn[blk * 512:(blk + 1) * 512] = 4096 * (blk + 1) + np.arange(512)
            bits[blk * 512:(blk + 1) * 512] = b | PTE_PMD
            kind[blk] = 'leaf'
        elif op == 'unleaf' and kind[blk] == 'leaf':
            pt.clear_leaves([blk])
            pfn[blk * 512:(blk + 1) * 512], bits[blk * 512:(blk + 1) * 512] = -1, 0
            kind[blk] = None
        elif op == 'split' and kind[blk] == 'leaf':
            pt.leaves_to_tables([blk])
            bits[blk * 512:(blk + 1) * 512] &= ~np.uint8(PTE_PMD)
            kind[blk] = 'table'
        elif op in ('or', 'and'):
            idx = np.arange(v, min(v + n, NBLK * 512))
            idx = idx[pfn[idx] >= 0]
            if op == 'or':
                pt.or_bits_at(idx, b & ~PTE_PMD)
                # a PMD leaf is one entry: the whole leaf changes
                touched = np.unique(np.concatenate(
                    [idx] + [np.arange(x << 9, (x + 1) << 9) for x in np.unique(idx >> 9)
                             if kind[x] == 'leaf']))
                bits[touched] |= np.uint8(b & ~PTE_PMD)
            else:
                pt.and_bits_at(idx, b | PTE_PMD)
                touched = np.unique(np.concatenate(
                    [idx] + [np.arange(x << 9, (x + 1) << 9) for x in np.unique(idx >> 9)
                             if kind[x] == 'leaf']))
                bits[touched] &= np.uint8(b | PTE_PMD)
        elif op == 'free_empty':
            pt.free_empty_tables(0, NBLK * 512)
            for x in range(NBLK):
                if kind[x] == 'table' and not (pfn[x * 512:(x + 1) * 512] >= 0).any():
                    kind[x] = None
        elif op == 'free' and kind[blk] == 'table':
            pt.free_tables([blk])
            pfn[blk * 512:(blk + 1) * 512], bits[blk * 512:(blk + 1) * 512] = -1, 0
            kind[blk] = None
        got_pfn, got_bits = pt.get(0, NBLK * 512)
        assert (got_pfn == pfn).all() and (got_bits == bits).all()
        sel = np.arange(0, NBLK * 512, 7)
        gp, gb = pt.get_at(sel)
        assert (gp == pfn[sel]).all() and (gb == bits[sel]).all()
        assert sorted(pt.table_keys().tolist()) == [x for x in range(NBLK) if kind[x] == 'table']
        assert sorted(pt.leaf_keys().tolist()) == [x for x in range(NBLK) if kind[x] == 'leaf']
        vp, pp, bp = pt.present_ptes(0, NBLK * 512)
        in_tables = np.array([kind[x] == 'table' for x in range(NBLK)]).repeat(512) & (pfn >= 0)
        assert (vp == np.flatnonzero(in_tables)).all() and (pp == pfn[in_tables]).all()


# --- the fast paths against the per-page view -------------------------------------

STATES = {
    'pmd-fork-cow': """
  thp: {enabled: always}
processes:
  - pid: 100
steps:
  - mmap: {pid: 100, name: a, size: 8M, align: 2M}
  - write: {pid: 100, vma: a}
  - mmap: {pid: 100, name: z, size: 4M, align: 2M}
  - read: {pid: 100, vma: z}
  - fork: {pid: 100, child: 101}
  - write: {pid: 101, vma: a, offset: 2M, length: 4K}
  - munmap: {pid: 100, vma: a, offset: 5M, length: 1M}
  - mprotect: {pid: 101, vma: a, offset: 0, length: 2M, prot: r}
""",
    'mthp-shmem': """
  thp: {enabled: never, sizes: {64K: always}, shmem_enabled: always}
processes:
  - pid: 100
steps:
  - mmap: {pid: 100, name: a, size: 1M, align: 64K}
  - write: {pid: 100, vma: a}
  - mmap: {pid: 100, name: s, size: 4M, kind: shared-anon, align: 2M}
  - write: {pid: 100, vma: s}
  - fork: {pid: 100, child: 101}
  - munmap: {pid: 101, vma: a, offset: 32K, length: 64K}
  - write: {pid: 101, vma: a, offset: 256K, length: 4K}
  - read: {pid: 101, vma: s}
""",
}


def _kernels():
    for name, body in STATES.items():
        sc = parse_scenario_text('format: 1\nname: %s\nkernel:\n  memory: 256M\n%s'
                                 % (name, body))
        for path in CONFIGS:
            k = Kernel(load_kernel_config(path), sc)
            k.run(sc.steps)
            yield '%s/%s' % (name, os.path.basename(path)), k


@pytest.mark.parametrize('label,k', list(_kernels()))
def test_fast_paths_agree_with_page_view(label, k):
    """pagemap from vma_pagemap() and smaps from whole-leaf entries give
    what the per-page PageView gives (semantics.md 8.3, 8.4, 12.1)."""
    for proc in k.processes.values():
        for v in proc.mm.vmas:
            pv = query.vma_pages(k, v)
            # make_pme() of every page from the per-page view
            want = np.where(pv.present, np.uint64(PM_PRESENT) | pv.pfn.astype(np.uint64), 0)
            want = want.astype(np.uint64)
            for bit, arr in ((56, pv.pm_exclusive), (61, pv.pm_file),
                             (55, pv.soft_dirty & pv.present)):
                want |= arr.astype(np.uint64) << np.uint64(bit)
            for lo, hi in ((0, v.nr_pages), (3, max(4, v.nr_pages - 5))):
                got = pidfiles.pagemap_entries(k, proc, v.vpn0 + lo, hi - lo, True)
                assert (got == want[lo:hi]).all(), (label, v.name, lo, hi)
            n = pv.normal
            pages = SmapsPages(
                mapcount=pv.mapcount[n], private=pv.private[n],
                refcount_one=pv.refcount_one[n], dirty=(pv.pte_dirty | pv.folio_dirty)[n],
                young=(pv.young | pv.folio_referenced)[n], anon=pv.anon[n],
                swapbacked=pv.swapbacked[n], ksm=pv.ksm[n], locked=np.bool_(False),
                pmd=pv.pmd[n])
            want = smaps_account(pages, pss_per_entry=k.policy.smaps_pss_per_entry)
            assert pidfiles.vma_counters(k, v) == want, (label, v.name)


# --- untouched reservations ----------------------------------------------------------

def test_untouched_reservations_cost_nothing():
    """mmap of 112T in three VMAs allocates no page table and no page-cache
    block; smaps and pagemap look only at populated blocks."""
    sc = parse_scenario_text('format: 1\nname: big\nprocesses:\n  - pid: 100\nsteps:\n'
                             '  - mmap: {pid: 100, name: r, size: 64T, prot: none}\n'
                             '  - mmap: {pid: 100, name: s, size: 32T, kind: shared-anon, align: 2M}\n'
                             '  - mmap: {pid: 100, name: t, size: 16T, kind: shared-anon, align: 2M}\n'
                             '  - write: {pid: 100, vma: s, offset: 16T, length: 64K}\n'
                             '  - write: {pid: 100, vma: t, offset: 1T, length: 8K}\n')
    k = Kernel(load_kernel_config(os.path.join(ROOT, 'configs', 'kernels',
                                               'page_mapcount.yaml')), sc)
    k.run(sc.steps)
    p = k.processes[100]
    assert len(p.mm.pt.keys) == 2 and len(p.mm.pt.table_keys()) == 2
    assert sum(len(o.pages.blocks) for o in k.objects) == 2
    assert b'Rss:                  72 kB' in pidfiles.smaps_rollup(k, p)
    s = [v for v in p.mm.vmas if v.name == 's'][0]
    assert s.populated_runs() == [((16 << 40) >> 12, 512)]


# --- sizes beyond the architecture -------------------------------------------------

def _scenario(body, kernel=''):
    return 'format: 1\nname: lim\n%sprocesses:\n  - pid: 100\nsteps:\n%s' % (kernel, body)


@pytest.mark.parametrize('kernel,body,line,msg', [
    # TASK_SIZE_MAX on x86-64 with 4-level page tables: 2^47 - 4K
    ('', '  - mmap: {pid: 100, name: a, size: 1125899906842624}\n', 6,
     '1024T is larger than the user address space'),
    ('', '  - mmap: {pid: 100, name: a, size: 64T}\n  - mmap: {pid: 100, name: b, size: 64T}\n',
     7, 'the process would map 128T'),
    # the 32-bit profiles: TASK_SIZE 3G (the 3G/1G split)
    ('kernel: {bits: 32}\n', '  - mmap: {pid: 100, name: a, size: 4G}\n', 7,
     'larger than the user address space of a 32-bit task (3G)'),
    ('kernel: {memory: 1G}\n', '  - mmap: {pid: 100, name: a, size: 4G}\n'
     '  - write: {pid: 100, vma: a, offset: 0, length: 2G}\n', 8,
     'populating 2G needs more frames than the machine has'),
    ('kernel: {memory: 1T}\n', '', 3, 'kernel: memory: 1T is more than the emulator holds'),
])
def test_sizes_beyond_the_architecture_refused(kernel, body, line, msg):
    with pytest.raises(ScenarioError) as e:
        parse_scenario_text(_scenario(body, kernel), path='s.yaml')
    text = str(e.value)
    assert text.startswith('s.yaml:%d: ' % line) and msg in text and '\n' not in text


# --- progress ------------------------------------------------------------------------

class _Stream:
    def __init__(self, tty):
        self.tty, self.text = tty, ''

    def isatty(self):
        return self.tty

    def write(self, s):
        self.text += s

    def flush(self):
        pass


def test_progress_only_on_a_terminal_after_a_second(monkeypatch):
    from procfs import progress
    clock = [100.0]
    monkeypatch.setattr(progress.time, 'monotonic', lambda: clock[0])
    for tty in (False, True):
        out = _Stream(tty)
        with progress.Progress('replaying s.yaml', 40, out) as bar:
            bar.update(1, 'step 1 (mmap, line 8)')
            assert out.text == ''              # under a second: nothing yet
            clock[0] += 1.5
            bar.update(10, 'step 10 (write, line 17)')
        if tty:
            assert '10/40 step 10 (write, line 17)' in out.text and '[#######.' in out.text
            assert out.text.endswith('\r\x1b[K')   # erased at the end
        else:
            assert out.text == ''


def test_trimmed_slots_replay_on_alike():
    """PhysMem.trim_slots() gives back spare slot capacity; a kernel
    trimmed in the middle of a replay (after CoW copies freed folios and
    left free slots below the top) goes on to the same state as one that
    was not, and allocates and frees folios as before."""
    from test_property import fingerprint, same_state
    from mmcore.config import PAGE_MAPCOUNT
    text = '''format: 1
name: trim
kernel: {memory: 256M, thp: {enabled: always}}
processes: [{pid: 100}]
steps:
  - mmap: {pid: 100, name: a, size: 8M, align: 2M}
  - write: {pid: 100, vma: a}
  - fork: {pid: 100, child: 101}
  - write: {pid: 101, vma: a, offset: 1M, length: 3M}
  - exit: {pid: 101}
  - snapshot: half
  - mmap: {pid: 100, name: b, size: 6M}
  - write: {pid: 100, vma: b}
  - madvise: {pid: 100, vma: a, advice: dontneed, offset: 2M, length: 2M}
  - fork: {pid: 100, child: 102}
  - write: {pid: 102, vma: b, length: 1M}
'''
    sc = parse_scenario_text(text)
    plain, trimmed = Kernel(PAGE_MAPCOUNT, sc), Kernel(PAGE_MAPCOUNT, sc)
    plain.run(sc.steps, 'half')
    trimmed.run(sc.steps, 'half')
    cap = len(trimmed.mem._f_head)
    assert trimmed.mem.trim_slots() > 0
    assert len(trimmed.mem._f_head) == int(trimmed.mem.slot.max()) + 1 < cap
    assert same_state(fingerprint(trimmed), fingerprint(plain))
    rest = sc.steps[sc.steps.index(next(s for s in sc.steps if getattr(s, 'label', None) == 'half')) + 1:]
    for k in (plain, trimmed):
        k.run(rest)
    assert same_state(fingerprint(trimmed), fingerprint(plain))

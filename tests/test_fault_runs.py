"""File and shmem faults taken a run at a time (fault.file_access_range)
must leave exactly the state that taking file_fault() page by page, in
address order, leaves: the kernel faults one page at a time
(handle_mm_fault per page: do_read_fault / do_cow_fault / do_shared_fault
/ do_wp_page), and the runs are only a faster way to get there.  Each case
also checks what the kernel's rules give for it."""
import numpy as np
import pytest

from mmcore import fault
from mmcore.config import NO_PAGE_MAPCOUNT, PAGE_MAPCOUNT
from mmcore.kernel import Kernel
from mmcore.memory import FL_ANON, FL_DIRTY, FL_PAGECACHE
from mmcore.mm import PTE_DIRTY, PTE_WRITE
from mmcore.scenario import parse_scenario_text

from test_property import fingerprint, same_state

CONFIGS = [PAGE_MAPCOUNT, NO_PAGE_MAPCOUNT]
FILES = 'files: [{name: data, size: 258K}, {name: big, size: 256K, folio_size: 64K}]'


def replay(config, body, header=FILES):
    sc = parse_scenario_text('format: 1\nname: t\nkernel: {memory: 64M}\n%s\n'
                             'processes: [{pid: 100}]\nsteps:\n%s' % (header, body))
    k = Kernel(config, sc)
    k.run(sc.steps)
    return k


def page_by_page(k, proc, vma, lo, hi, write):
    for i in range(lo, hi):
        fault.file_fault(k, proc, vma, i, write)


def both_ways(config, body, monkeypatch):
    """The kernel after the steps, and whether the page-by-page replay of
    the same steps ends in the same state."""
    k = replay(config, body)
    with monkeypatch.context() as m:
        m.setattr(fault, 'file_access_range', page_by_page)
        ref = replay(config, body)
    return k, same_state(fingerprint(k), fingerprint(ref))


def vma(k, name):
    return k.range_vmas(k.processes[100], name)[0]


CASES = {
    # do_shared_fault() per page of a shared mapping of order-0 page cache:
    # a new clean folio per page, mapped writable and dirty
    'shared-write-uncached': '''
  - mmap: {pid: 100, name: s, size: 256K, kind: shared-file, file: data}
  - write: {pid: 100, vma: s, offset: 8K, length: 200K}
''',
    # part cached already (a read), part not: lookups and new folios interleave
    'shared-write-part-cached': '''
  - mmap: {pid: 100, name: s, size: 256K, kind: shared-file, file: data}
  - read: {pid: 100, vma: s, offset: 100K, length: 4K}
  - madvise: {pid: 100, vma: s, advice: dontneed}
  - write: {pid: 100, vma: s}
''',
    # shared anonymous memory with shmem_enabled never: shmem order-0 folios
    'shared-anon-write': '''
  - mmap: {pid: 100, name: z, size: 2M, kind: shared-anon, align: 2M}
  - write: {pid: 100, vma: z, offset: 4K, length: 1M}
''',
    # do_cow_fault() of pages whose file pages are cached: private copies only
    'private-write-cached': '''
  - mmap: {pid: 100, name: w, size: 256K, kind: shared-file, file: data}
  - write: {pid: 100, vma: w}
  - mmap: {pid: 100, name: p, size: 256K, kind: file, file: data}
  - write: {pid: 100, vma: p, offset: 12K, length: 180K}
''',
    # do_cow_fault() where some file pages must be read in first
    'private-write-part-cached': '''
  - mmap: {pid: 100, name: w, size: 64K, kind: shared-file, file: data}
  - write: {pid: 100, vma: w}
  - mmap: {pid: 100, name: p, size: 256K, kind: file, file: data}
  - write: {pid: 100, vma: p}
''',
    # do_wp_page() of read-only PTEs mapped by fault-around, then copies
    'private-write-after-read': '''
  - mmap: {pid: 100, name: p, size: 256K, kind: file, file: big}
  - read: {pid: 100, vma: p}
  - write: {pid: 100, vma: p, offset: 60K, length: 100K}
''',
    # a write reaching the partial last page (258K file: page 64 holds its end)
    'shared-write-to-eof': '''
  - mmap: {pid: 100, name: s, size: 264K, kind: shared-file, file: data}
  - write: {pid: 100, vma: s, offset: 0, length: 264K, expect: fault}
''',
}


@pytest.mark.parametrize('config', CONFIGS, ids=lambda c: c.name)
@pytest.mark.parametrize('case', sorted(CASES))
def test_runs_leave_the_state_of_page_by_page_faults(config, case, monkeypatch):
    k, same = both_ways(config, CASES[case], monkeypatch)
    assert same


@pytest.mark.parametrize('config', CONFIGS, ids=lambda c: c.name)
def test_shared_write_maps_one_dirty_cache_page_per_page(config):
    """do_shared_fault() + finish_fault() on order-0 page cache: every
    written page maps its own page-cache folio writable and dirty
    (folio_mark_dirty via fault_dirty_shared_page), and the folio holds one
    reference for the cache and one for the PTE."""
    k = replay(config, CASES['shared-write-uncached'])
    v = vma(k, 's')
    pfn, bits = v.ptes()
    written = np.arange(2, 52)
    assert (pfn >= 0).sum() == len(written) and (pfn[written] >= 0).all()
    assert ((bits[written] & (PTE_WRITE | PTE_DIRTY)) == (PTE_WRITE | PTE_DIRTY)).all()
    heads = k.mem.head[pfn[written]]
    assert (heads == pfn[written]).all()
    assert (k.mem.refcount[heads] == 2).all()
    assert ((k.mem.flags[heads] & (FL_PAGECACHE | FL_DIRTY)) == (FL_PAGECACHE | FL_DIRTY)).all()
    assert (v.obj.pages[written] == pfn[written]).all()


@pytest.mark.parametrize('config', CONFIGS, ids=lambda c: c.name)
def test_private_write_of_cached_pages_copies_without_mapping_the_cache(config):
    """do_cow_fault(): the page-cache page is only read; the PTE maps a new
    anonymous copy, so the cache folio keeps its cache reference plus the
    shared mapping's, and the copies count as RssAnon."""
    k = replay(config, CASES['private-write-cached'])
    p = vma(k, 'p')
    pfn = p.ptes()[0]
    written = np.arange(3, 48)
    assert (pfn >= 0).sum() == len(written)
    assert (k.mem.flags[pfn[written]] & FL_ANON != 0).all()
    cache = vma(k, 'w').obj.pages[written]
    assert (k.mem.refcount[cache] == 2).all()
    assert k.processes[100].mm.rss['anon'] == len(written)


@pytest.mark.parametrize('config', CONFIGS, ids=lambda c: c.name)
def test_write_to_the_partial_last_page_maps_it(config):
    """A 258K file has 65 pages; the last one holds the end of the file and
    is mapped like any other (filemap_fault / shmem_fault: only an index at
    or past DIV_ROUND_UP(i_size, PAGE_SIZE) gets SIGBUS).  The 264K
    mapping's last page lies wholly past EOF: the write stops there."""
    k = replay(config, CASES['shared-write-to-eof'].replace(
        "offset: 0, length: 264K, ", ""))
    assert 'SIGBUS' in k.faults[0][1]
    pfn = vma(k, 's').ptes()[0]
    assert (pfn[:65] >= 0).all() and pfn[65] < 0

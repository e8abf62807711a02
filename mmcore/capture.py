"""Captures of a real machine (``mmemu capture``): the file format and its
loader.  ``mmcore.imported`` turns a loaded capture into kernel state.

A capture is a compressed numpy ``.npz`` archive:

meta          JSON (uint8 bytes): format, version, release, proc_version,
              thp knobs, processes [{pid, ppid, comm, uid, cgroup, status}],
              skipped [{pid, reason}], names (VMA names), smaps_keys,
              memcgs {inode: path}, cgroup, cgroup_memory_stat, memtotal_kb
vma_*         one row per VMA: proc (index into processes), start, end,
              pgoff (pages), major, minor, inode, name (index into names),
              flags (vm_flags bits from VmFlags), perms (r=1 w=2 x=4 s=8),
              unread (1: hugetlb or gate VMA, pages not read), smaps
              (kB values of smaps_keys, as the real kernel printed them)
run_*         present pages as runs: vma, vpn (first virtual page), pfn
              (first PFN), len, bits (PB_* below)
folio_*       every folio a captured page belongs to: head (PFN), order
              (-1: not an emulated folio, e.g. hugetlb)
page_*        per page of those folios, in folio order: flags
              (kpageflags), count (kpagecount), cgroup (kpagecgroup inode)
"""
import json
import zipfile
from dataclasses import dataclass

import numpy as np

FORMAT = 'mmemu-capture'
FORMAT_VERSION = 1

# pagemap bits kept per run
PB_SOFT_DIRTY = 1      # PM_SOFT_DIRTY (bit 55)
PB_EXCLUSIVE = 2       # PM_MMAP_EXCLUSIVE (bit 56)
PB_UFFD_WP = 4         # PM_UFFD_WP (bit 57)
PB_FILE = 8            # PM_FILE (bit 61)
PB_PMD = 16            # PAGEMAP_SCAN PAGE_IS_HUGE: part of a PMD leaf

# include/uapi/linux/kernel-page-flags.h
KPF_REFERENCED = 2
KPF_UPTODATE = 3
KPF_DIRTY = 4
KPF_LRU = 5
KPF_ACTIVE = 6
KPF_SLAB = 7
KPF_BUDDY = 10
KPF_MMAP = 11
KPF_ANON = 12
KPF_SWAPCACHE = 13
KPF_SWAPBACKED = 14
KPF_COMPOUND_HEAD = 15
KPF_COMPOUND_TAIL = 16
KPF_HUGE = 17
KPF_UNEVICTABLE = 18
KPF_NOPAGE = 20
KPF_KSM = 21
KPF_THP = 22
KPF_ZERO_PAGE = 24
KPF_PGTABLE = 26
KPF_RESERVED = 32
KPF_MLOCKED = 33
KPF_OWNER_2 = 34       # PG_anon_exclusive of an anon page

SMAPS_KEYS = ('Rss', 'Pss', 'Pss_Dirty', 'Shared_Clean', 'Shared_Dirty', 'Private_Clean',
              'Private_Dirty', 'Referenced', 'Anonymous', 'KSM', 'LazyFree', 'AnonHugePages',
              'ShmemPmdMapped', 'FilePmdMapped', 'Shared_Hugetlb', 'Private_Hugetlb', 'Swap',
              'SwapPss', 'Locked')

ARRAYS = {
    'vma_proc': np.int32, 'vma_start': np.uint64, 'vma_end': np.uint64, 'vma_pgoff': np.uint64,
    'vma_major': np.uint32, 'vma_minor': np.uint32, 'vma_inode': np.uint64,
    'vma_name': np.int32, 'vma_flags': np.uint64, 'vma_perms': np.uint8,
    'vma_unread': np.uint8, 'vma_smaps': np.int64,
    'run_vma': np.int32, 'run_vpn': np.uint64, 'run_pfn': np.uint64, 'run_len': np.uint32,
    'run_bits': np.uint8,
    'folio_head': np.uint64, 'folio_order': np.int8,
    'page_flags': np.uint64, 'page_count': np.uint32, 'page_cgroup': np.uint64,
}


class CaptureFormatError(Exception):
    """A file that is not a valid capture; str() names the file."""


@dataclass
class Capture:
    path: str
    meta: dict
    a: dict              # name -> numpy array

    @property
    def processes(self):
        return self.meta['processes']

    @property
    def name(self):
        return 'capture of %s' % self.meta.get('release', '?')

    @property
    def steps(self):
        """A capture is a state, not a history: no steps, no snapshots."""
        return []

    labels = steps


def is_capture(path):
    """A capture is a zip (npz) archive holding meta.npy."""
    try:
        with open(path, 'rb') as f:
            if f.read(4) != b'PK\x03\x04':
                return False
        with zipfile.ZipFile(path) as z:
            return 'meta.npy' in z.namelist()
    except (OSError, zipfile.BadZipFile):
        return False


def load_capture(path):
    """Reads and checks a capture file."""
    try:
        with np.load(path, allow_pickle=False) as z:
            a = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise CaptureFormatError('%s: not a readable capture: %s' % (path, e)) from None
    if 'meta' not in a:
        raise CaptureFormatError('%s: not a capture (no meta record)' % path)
    try:
        meta = json.loads(a.pop('meta').tobytes().decode())
    except (ValueError, UnicodeDecodeError) as e:
        raise CaptureFormatError('%s: meta record is not JSON: %s' % (path, e)) from None
    if not isinstance(meta, dict) or meta.get('format') != FORMAT:
        raise CaptureFormatError('%s: not an mmemu capture' % path)
    if meta.get('version') != FORMAT_VERSION:
        raise CaptureFormatError('%s: capture format version %r, this mmemu reads %d'
                                 % (path, meta.get('version'), FORMAT_VERSION))
    for key, dtype in ARRAYS.items():
        if key not in a:
            raise CaptureFormatError('%s: array %s is missing' % (path, key))
        if a[key].dtype != dtype:
            raise CaptureFormatError('%s: array %s has dtype %s, expected %s'
                                     % (path, key, a[key].dtype, np.dtype(dtype)))
    _check(path, meta, a)
    return Capture(path, meta, a)


def _check(path, meta, a):
    nv = len(a['vma_start'])
    for key in ARRAYS:
        if key.startswith('vma_') and len(a[key]) != nv:
            raise CaptureFormatError('%s: %s has %d rows, vma_start %d' % (path, key, len(a[key]), nv))
    nr = len(a['run_vpn'])
    for key in ('run_vma', 'run_pfn', 'run_len', 'run_bits'):
        if len(a[key]) != nr:
            raise CaptureFormatError('%s: %s has %d rows, run_vpn %d' % (path, key, len(a[key]), nr))
    if a['vma_smaps'].ndim != 2 or a['vma_smaps'].shape[1] != len(meta.get('smaps_keys', [])):
        raise CaptureFormatError('%s: vma_smaps does not match smaps_keys' % path)
    procs = meta.get('processes')
    if not isinstance(procs, list) or not all(isinstance(p, dict) and 'pid' in p for p in procs):
        raise CaptureFormatError('%s: meta.processes must be a list of processes' % path)
    if nv and (a['vma_proc'].min() < 0 or a['vma_proc'].max() >= len(procs)):
        raise CaptureFormatError('%s: vma_proc refers to a process that is not there' % path)
    if nv and (a['vma_end'] <= a['vma_start']).any():
        raise CaptureFormatError('%s: a VMA ends before it starts' % path)
    if nv and (a['vma_name'].min() < 0 or a['vma_name'].max() >= len(meta.get('names', []))):
        raise CaptureFormatError('%s: vma_name refers to a name that is not there' % path)
    if nr:
        if a['run_vma'].min() < 0 or a['run_vma'].max() >= nv:
            raise CaptureFormatError('%s: run_vma refers to a VMA that is not there' % path)
        v = a['run_vma']
        lo = a['run_vpn'] << np.uint64(12)
        hi = (a['run_vpn'] + a['run_len'].astype(np.uint64)) << np.uint64(12)
        if (lo < a['vma_start'][v]).any() or (hi > a['vma_end'][v]).any():
            raise CaptureFormatError('%s: a run of pages lies outside its VMA' % path)
    nf = len(a['folio_head'])
    if len(a['folio_order']) != nf:
        raise CaptureFormatError('%s: folio_order has %d rows, folio_head %d'
                                 % (path, len(a['folio_order']), nf))
    if nf and (a['folio_order'].max() > 9 or a['folio_order'].min() < -1):
        raise CaptureFormatError('%s: folio orders must be -1..9' % path)
    npg = int(np.where(a['folio_order'] >= 0, 1 << np.maximum(a['folio_order'], 0).astype(np.int64),
                       1).sum())
    for key in ('page_flags', 'page_count', 'page_cgroup'):
        if len(a[key]) != npg:
            raise CaptureFormatError('%s: %s has %d pages, the folios hold %d'
                                     % (path, key, len(a[key]), npg))
    if nf > 1 and (np.diff(a['folio_head'].astype(np.int64)) <= 0).any():
        raise CaptureFormatError('%s: folio_head must be sorted and unique' % path)

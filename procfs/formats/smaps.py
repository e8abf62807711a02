"""/proc/PID/smaps and smaps_rollup: accounting and text (semantics.md 8.4,
8.5, 9.2, 9.3).

``smaps_account()`` is a vectorised form of the kernel's per-entry walk
(``smaps_pte_entry()`` / ``smaps_pmd_entry()`` -> ``smaps_account()`` ->
``smaps_page_accumulate()`` in fs/proc/task_mmu.c): the caller describes
every present (or migration) entry that maps a normal page, one element per
4 KiB page, and decides the config-dependent per-page mapcount and
exclusivity itself (PAGE_MAPCOUNT: precise count, exclusive iff < 2;
NO_PAGE_MAPCOUNT: folio average, exclusive iff !folio_maybe_mapped_shared).
Zero pages and huge zero pages are not passed at all (vm_normal_page()
returns NULL for them).

Counters follow ``struct mem_size_stats``: byte counts, and the PSS sums in
bytes << PSS_SHIFT fixed point.  Printing divides once, at the end:
bytes >> 10 and (pss >> PSS_SHIFT) >> 10.
"""
import functools
from dataclasses import dataclass, fields

import numpy as np

from ._seq import FormatInputError, check_uint, dec_width
from .maps import maps_line as _maps_line, vmflags_string

PAGE_SIZE = 4096
PSS_SHIFT = 12
HPAGE_PMD_NR = 512


@dataclass
class SmapsCounters:
    """``struct mem_size_stats``; byte counters, PSS-type ones << PSS_SHIFT."""
    resident: int = 0
    shared_clean: int = 0
    shared_dirty: int = 0
    private_clean: int = 0
    private_dirty: int = 0
    referenced: int = 0
    anonymous: int = 0
    ksm: int = 0
    lazyfree: int = 0
    anonymous_thp: int = 0
    shmem_thp: int = 0
    file_thp: int = 0
    swap: int = 0
    shared_hugetlb: int = 0
    private_hugetlb: int = 0
    pss: int = 0
    pss_anon: int = 0
    pss_file: int = 0
    pss_shmem: int = 0
    pss_dirty: int = 0
    pss_locked: int = 0
    swap_pss: int = 0

    def __add__(self, other):
        """Sum of two accumulators (smaps_rollup accumulates over all VMAs)."""
        if not isinstance(other, SmapsCounters):
            return NotImplemented
        return SmapsCounters(**{f.name: getattr(self, f.name) + getattr(other, f.name)
                                for f in fields(self)})

    def scaled(self, n):
        """Every counter times n (n identical entries accounted as one)."""
        return SmapsCounters(**{f.name: getattr(self, f.name) * n for f in fields(self)})


_PAGE_ARRAYS = ('private', 'refcount_one', 'dirty', 'young', 'anon', 'swapbacked',
                'ksm', 'locked', 'pmd', 'present')


@dataclass(frozen=True)
class SmapsPages:
    """One element per 4 KiB page mapped by a present (or migration) PTE or
    PMD entry with a normal page.  Every field except ``mapcount`` may be a
    scalar bool that applies to all pages.

    mapcount      the m of semantics 8.4 step 6 (precise or folio average)
    private       the exclusive decision of step 6 (per page or per folio)
    refcount_one  folio_ref_count(folio) == 1 (step 5: whole entry private)
    dirty         PTE/PMD dirty or folio dirty
    young         PTE/PMD young, folio young (idle tracking) or referenced
    anon          folio_test_anon
    swapbacked    folio_test_swapbacked (anon: not lazy-freed; else shmem)
    ksm           folio_test_ksm
    locked        the VMA has VM_LOCKED
    pmd           mapped through a PMD leaf (AnonHugePages & co.)
    present       False for migration entries (step 5: counted shared)
    """
    mapcount: object
    private: object = True
    refcount_one: object = False
    dirty: object = False
    young: object = False
    anon: object = True
    swapbacked: object = True
    ksm: object = False
    locked: object = False
    pmd: object = False
    present: object = True

    def arrays(self):
        """The inputs as numpy arrays of one common length (checked)."""
        mapcount = np.asarray(self.mapcount)
        if mapcount.ndim != 1 or not (mapcount.size == 0 or np.issubdtype(mapcount.dtype, np.integer)):
            raise FormatInputError('SmapsPages.mapcount must be a 1-d integer array')
        mapcount = mapcount.astype(np.int64, copy=False)
        if mapcount.size and mapcount.min() < 0:
            raise FormatInputError('SmapsPages.mapcount must not be negative')
        out = {'mapcount': mapcount}
        for name in _PAGE_ARRAYS:
            value = np.asarray(getattr(self, name))
            if value.dtype != np.bool_:
                raise FormatInputError(f'SmapsPages.{name} must be bool or a bool array')
            if value.ndim == 0:
                value = np.broadcast_to(value, mapcount.shape)
            elif value.shape != mapcount.shape:
                raise FormatInputError(f'SmapsPages.{name} has {value.size} elements, '
                                       f'mapcount has {mapcount.size}')
            out[name] = value
        return out


_SHARE_TABLE = 1024          # counts below this are looked up, not divided


@functools.lru_cache(maxsize=4)
def _share_table(full):
    c = np.arange(_SHARE_TABLE, dtype=np.int64)
    return np.where(c >= 2, full // np.maximum(c, 1), full)


def _pss_share(count, full):
    """PAGE_SIZE << PSS_SHIFT, divided by the count when it is >= 2."""
    if count.size and 0 <= count.min() and count.max() < _SHARE_TABLE:
        return _share_table(full)[count]
    return np.where(count >= 2, full // np.maximum(count, 1), full)


def smaps_account(pages, swap_counts=(), shmem_swap=0, shared_hugetlb=0,
                  private_hugetlb=0, pmd_nr=HPAGE_PMD_NR, pss_per_entry=False):
    """Accumulate ``pages`` (a SmapsPages) into a new SmapsCounters.

    ``swap_counts``: the swap count (swp_swapcount) of every real swap PTE:
    Swap += 4 KiB each, SwapPss += 4 KiB << 12 divided by the count if >= 2.
    ``shmem_swap``: bytes of swapped-out shmem added to Swap only.
    ``shared_hugetlb`` / ``private_hugetlb``: bytes, as decided by the caller
    (hugetlb entries contribute nothing else).
    ``pmd_nr``: pages per PMD leaf; the pmd pages must be whole leaves.
    ``pss_per_entry``: a PMD leaf's PSS is one division of its whole size,
    (pmd_nr * PAGE_SIZE << PSS_SHIFT) / m, as smaps_account() does after
    RFC 06/13 of "mm/rmap: support arbitrary folio mappings"; otherwise
    (6.18) each of its pages is divided on its own.
    """
    a = pages.arrays() if isinstance(pages, SmapsPages) else None
    if a is None:
        raise FormatInputError(f'pages must be a SmapsPages, got {type(pages).__name__}')
    full = PAGE_SIZE << PSS_SHIFT
    m = a['mapcount']
    present = a['present']
    whole = a['refcount_one'] | ~present
    pss = np.where(whole, full, _pss_share(m, full))
    private = np.where(whole, present, a['private'])
    dirty, anon, swapbacked, pmd = a['dirty'], a['anon'], a['swapbacked'], a['pmd']
    n_pmd = int(np.count_nonzero(pmd))
    if n_pmd % pmd_nr:
        raise FormatInputError(f'{n_pmd} pages are marked pmd, not a multiple of {pmd_nr}')
    if pss_per_entry and n_pmd:
        pss = pss.copy()
        leaves = np.flatnonzero(pmd).reshape(-1, pmd_nr)
        firsts = leaves[:, 0]
        whole_size = full * pmd_nr
        leaf_pss = np.where(whole[firsts] | (m[firsts] < 2), whole_size,
                            whole_size // np.maximum(m[firsts], 1))
        pss[leaves] = 0
        pss[firsts] = leaf_pss

    def nbytes(mask):
        return int(np.count_nonzero(mask)) * PAGE_SIZE

    def pss_of(mask):
        return int(pss[mask].sum())

    shmem = ~anon & swapbacked
    swap_counts = np.asarray(swap_counts, dtype=np.int64).reshape(-1)
    if swap_counts.size and swap_counts.min() < 0:
        raise FormatInputError('swap_counts must not be negative')
    return SmapsCounters(
        resident=m.size * PAGE_SIZE,
        shared_clean=nbytes(~dirty & ~private),
        shared_dirty=nbytes(dirty & ~private),
        private_clean=nbytes(~dirty & private),
        private_dirty=nbytes(dirty & private),
        referenced=nbytes(a['young']),
        anonymous=nbytes(anon),
        ksm=nbytes(a['ksm']),
        lazyfree=nbytes(anon & ~swapbacked & ~dirty),
        anonymous_thp=nbytes(pmd & anon),
        shmem_thp=nbytes(pmd & shmem),
        file_thp=nbytes(pmd & ~anon & ~swapbacked),
        swap=swap_counts.size * PAGE_SIZE + check_uint('shmem_swap', shmem_swap),
        shared_hugetlb=check_uint('shared_hugetlb', shared_hugetlb),
        private_hugetlb=check_uint('private_hugetlb', private_hugetlb),
        pss=int(pss.sum()),
        pss_anon=pss_of(anon),
        pss_file=pss_of(~anon & ~swapbacked),
        pss_shmem=pss_of(shmem),
        pss_dirty=pss_of(dirty),
        pss_locked=pss_of(a['locked']),
        swap_pss=int(_pss_share(swap_counts, full).sum()),
    )


def _kb(counters, name):
    return check_uint(f'counters.{name}', getattr(counters, name)) >> 10


def _pss_kb(counters, name):
    return check_uint(f'counters.{name}', getattr(counters, name)) >> PSS_SHIFT >> 10


def _show_smap(c, rollup):
    """The shared body of smaps and smaps_rollup (``__show_smap()``)."""
    if not isinstance(c, SmapsCounters):
        raise FormatInputError(f'counters must be a SmapsCounters, got {type(c).__name__}')
    rows = [('Rss:            ', _kb(c, 'resident')),
            ('Pss:            ', _pss_kb(c, 'pss')),
            ('Pss_Dirty:      ', _pss_kb(c, 'pss_dirty'))]
    if rollup:
        rows += [('Pss_Anon:       ', _pss_kb(c, 'pss_anon')),
                 ('Pss_File:       ', _pss_kb(c, 'pss_file')),
                 ('Pss_Shmem:      ', _pss_kb(c, 'pss_shmem'))]
    rows += [('Shared_Clean:   ', _kb(c, 'shared_clean')),
             ('Shared_Dirty:   ', _kb(c, 'shared_dirty')),
             ('Private_Clean:  ', _kb(c, 'private_clean')),
             ('Private_Dirty:  ', _kb(c, 'private_dirty')),
             ('Referenced:     ', _kb(c, 'referenced')),
             ('Anonymous:      ', _kb(c, 'anonymous')),
             ('KSM:            ', _kb(c, 'ksm')),
             ('LazyFree:       ', _kb(c, 'lazyfree')),
             ('AnonHugePages:  ', _kb(c, 'anonymous_thp')),
             ('ShmemPmdMapped: ', _kb(c, 'shmem_thp')),
             ('FilePmdMapped:  ', _kb(c, 'file_thp')),
             ('Shared_Hugetlb: ', _kb(c, 'shared_hugetlb')),
             ('Private_Hugetlb: ', _kb(c, 'private_hugetlb')),
             ('Swap:           ', _kb(c, 'swap')),
             ('SwapPss:        ', _pss_kb(c, 'swap_pss')),
             ('Locked:         ', _pss_kb(c, 'pss_locked'))]
    # the 17-character Private_Hugetlb label leaves a width of 7
    return ''.join(f'{label}{dec_width(v, 24 - len(label))} kB\n' for label, v in rows)


def smaps_block(maps_line, counters, size_kb, thp_eligible, vmflags,
                kernel_page_size_kb=4, mmu_page_size_kb=4, protection_key=None, bits=64):
    """One VMA's block of /proc/PID/smaps (``show_smap()``).

    ``maps_line`` is the VMA's maps line (from maps.maps_line), ``counters``
    its SmapsCounters, ``size_kb`` (vm_end - vm_start) >> 10, ``thp_eligible``
    a bool, ``vmflags`` a collection of VmFlags mnemonics (printed in kernel
    bit order).  ``protection_key``: an int adds the ProtectionKey line (only
    kernels with protection keys enabled print it; this machine does not).
    """
    if not isinstance(maps_line, str) or not maps_line or maps_line.count('\n') > 1 \
            or ('\n' in maps_line and not maps_line.endswith('\n')):
        raise FormatInputError(f'maps_line must be one maps line, got {maps_line!r}')
    out = [maps_line if maps_line.endswith('\n') else maps_line + '\n',
           f'Size:           {dec_width(check_uint("size_kb", size_kb), 8)} kB\n',
           f'KernelPageSize: {dec_width(check_uint("kernel_page_size_kb", kernel_page_size_kb), 8)} kB\n',
           f'MMUPageSize:    {dec_width(check_uint("mmu_page_size_kb", mmu_page_size_kb), 8)} kB\n',
           _show_smap(counters, rollup=False),
           f'THPeligible:    {dec_width(int(bool(thp_eligible)), 8)}\n']
    if protection_key is not None:
        out.append(f'ProtectionKey:  {dec_width(check_uint("protection_key", protection_key), 8)}\n')
    out.append(f'VmFlags: {vmflags_string(vmflags, bits)}\n')
    return ''.join(out)


def smaps_rollup_text(start, end, counters, bits=64):
    """/proc/PID/smaps_rollup (``show_smaps_rollup()``): a ``---p`` header
    from the first VMA's start to the last VMA's end named ``[rollup]``, then
    the 22 counter lines with Pss_Anon/Pss_File/Pss_Shmem.  ``counters`` is
    the sum over all VMAs (rounded once, here)."""
    return _maps_line(start, end, '---p', 0, 0, 0, 0, '[rollup]', bits) + _show_smap(counters, rollup=True)

"""/proc/PID/numa_maps (semantics.md 8.6, 9.4).

``numa_maps_gather()`` is a vectorised ``gather_stats()`` (mm/mempolicy.c
via fs/proc/task_mmu.c); ``numa_maps_line()`` is ``show_numa_map()``.
"""
from dataclasses import dataclass, field

import numpy as np

from ._seq import FormatInputError, check_text, check_uint, hex_width, mangle_path


@dataclass
class NumaMapsCounts:
    """``struct numa_maps`` of one VMA: page counts (huge pages for hugetlb)."""
    pages: int = 0
    anon: int = 0
    active: int = 0
    writeback: int = 0
    mapcount_max: int = 0
    dirty: int = 0
    swapcache: int = 0
    node: dict = field(default_factory=dict)


def numa_maps_gather(mapcount, nr=1, dirty=False, anon=False, active=False,
                     swapcache=False, writeback=False, node=0):
    """Sum ``gather_stats(page, md, pte_dirty, nr)`` over entries.

    One element per PTE entry (nr 1) or PMD leaf (nr 512, counted with the
    mapcount of its first page: semantics 8.6); zero pages and the huge zero
    page are not passed.  ``mapcount`` is the precise count (PAGE_MAPCOUNT)
    or the folio average (NO_PAGE_MAPCOUNT); ``active`` is folio active or
    unevictable; ``node`` the NUMA node of the page.  Scalars apply to all.
    """
    mapcount = np.asarray(mapcount)
    if mapcount.ndim != 1:
        raise FormatInputError('mapcount must be a 1-d integer array')
    n = mapcount.size
    mapcount = mapcount.astype(np.int64, copy=False)

    def arr(name, value, dtype):
        value = np.asarray(value)
        if value.ndim == 0:
            value = np.broadcast_to(value, (n,))
        if value.shape != (n,):
            raise FormatInputError(f'{name} has {value.size} elements, mapcount has {n}')
        if dtype is bool and value.dtype != np.bool_:
            raise FormatInputError(f'{name} must be bool or a bool array')
        return value.astype(dtype, copy=False)

    nr = arr('nr', nr, np.int64)
    if n and (nr.min() < 1 or mapcount.min() < 0):
        raise FormatInputError('nr must be >= 1 and mapcount >= 0')
    dirty, anon, active = (arr(k, v, bool) for k, v in
                           (('dirty', dirty), ('anon', anon), ('active', active)))
    swapcache, writeback = arr('swapcache', swapcache, bool), arr('writeback', writeback, bool)
    node = arr('node', node, np.int64)
    nodes = {}
    if n:
        ids, inverse = np.unique(node, return_inverse=True)
        sums = np.bincount(inverse, weights=nr, minlength=ids.size)
        nodes = {int(i): int(s) for i, s in zip(ids, sums)}
    return NumaMapsCounts(
        pages=int(nr.sum()),
        anon=int(nr[anon].sum()),
        active=int(nr[active].sum()),
        writeback=int(nr[writeback].sum()),
        mapcount_max=int(mapcount.max()) if n else 0,
        dirty=int(nr[dirty].sum()),
        swapcache=int(nr[swapcache].sum()),
        node=nodes,
    )


def numa_maps_line(start, policy, counts, *, file=None, heap=False, stack=False,
                   hugetlb=False, kernel_page_size_kb=4):
    """One /proc/PID/numa_maps line, newline included.

    ``policy`` is the mempolicy text (``default``, ``bind:0-1``...); exactly
    one of ``file`` (the path, escaped for newline, tab, space and ``=``),
    ``heap`` or ``stack`` may name the VMA.  Nothing but the newline follows
    the name when no page was counted.  ``mapped=`` is printed only when
    pages differs from both anon and dirty, ``mapmax=`` when above 1,
    ``active=`` when below pages (never for hugetlb), node counts ascending.
    """
    start = check_uint('start', start)
    policy = check_text('policy', policy)
    if not policy:
        raise FormatInputError('policy must not be empty')
    if sum((file is not None, bool(heap), bool(stack))) > 1:
        raise FormatInputError('only one of file, heap, stack may be given')
    if not isinstance(counts, NumaMapsCounts):
        raise FormatInputError(f'counts must be a NumaMapsCounts, got {type(counts).__name__}')
    out = [f'{hex_width(start, 8)} {policy}']
    if file is not None:
        out.append(' file=' + mangle_path(check_text('file', file, allow_newline=True), '\n\t= '))
    elif heap:
        out.append(' heap')
    elif stack:
        out.append(' stack')
    if hugetlb:
        out.append(' huge')
    c = {k: check_uint(f'counts.{k}', getattr(counts, k))
         for k in ('pages', 'anon', 'active', 'writeback', 'mapcount_max', 'dirty', 'swapcache')}
    if c['pages']:
        if c['anon']:
            out.append(f' anon={c["anon"]}')
        if c['dirty']:
            out.append(f' dirty={c["dirty"]}')
        if c['pages'] != c['anon'] and c['pages'] != c['dirty']:
            out.append(f' mapped={c["pages"]}')
        if c['mapcount_max'] > 1:
            out.append(f' mapmax={c["mapcount_max"]}')
        if c['swapcache']:
            out.append(f' swapcache={c["swapcache"]}')
        if c['active'] < c['pages'] and not hugetlb:
            out.append(f' active={c["active"]}')
        if c['writeback']:
            out.append(f' writeback={c["writeback"]}')
        for nid in sorted(counts.node):
            count = check_uint(f'counts.node[{nid}]', counts.node[nid])
            if count:
                out.append(f' N{check_uint("node id", nid)}={count}')
        out.append(f' kernelpagesize_kB={check_uint("kernel_page_size_kb", kernel_page_size_kb)}')
    return ''.join(out) + '\n'

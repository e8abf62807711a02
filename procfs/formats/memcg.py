"""cgroup memory controller files (semantics.md 8.9, 9.7, 9.8).

v1 ``memory.stat`` (``memcg1_stat_format()``, mm/memcontrol-v1.c): the key
list is the one the conformance machine's 6.18 prints (read from its
/sys/fs/cgroup/memory/memory.stat): local values, the two hierarchical
limits, then ``total_*`` (hierarchical) values.  All in bytes except the
event counters (pgpgin, pgpgout, pgfault, pgmajfault).

v2 ``memory.stat`` (``memcg_stat_format()``, mm/memcontrol.c): the memory
controller is bound to v1 on the conformance machine, so the 6.18 list
could not be read there.  MEMCG_V2_STAT_KEYS is our best reconstruction
for 6.18 with this machine's config (SWAP, ZSWAP, THP, NUMA_BALANCING,
HUGETLB, MEMCG_V1 compiled in): the memory_stats[] state items with the
combined ``slab`` after slab_unreclaimable, ``hugetlb`` only with the
memory_hugetlb_accounting mount option, then pgscan/pgsteal sums, then the
memcg_vm_event_stat[] events without pgpgin/pgpgout.  Doubtful: whether
6.18 already has entries added around that release (e.g. zswap_incomp,
zswpwb_proactive, per-type pgsteal/pgscan moved into memory_stats[]); they
are not included.
"""
from collections.abc import Iterable, Mapping

from ._seq import FormatInputError, check_uint, keyed_values

PAGE_SIZE = 4096


def unlimited_bytes(bits=64):
    """An unset limit: PAGE_COUNTER_MAX (LONG_MAX / PAGE_SIZE) pages in bytes."""
    if bits not in (32, 64):
        raise FormatInputError(f'bits must be 32 or 64, got {bits!r}')
    return ((1 << (bits - 1)) - 1) // PAGE_SIZE * PAGE_SIZE


UNLIMITED_BYTES = unlimited_bytes(64)   # 9223372036854771712

MEMCG_V1_LOCAL_KEYS = [
    'cache', 'rss', 'rss_huge', 'shmem', 'mapped_file', 'dirty', 'writeback',
    'workingset_refault_anon', 'workingset_refault_file', 'swap', 'swapcached',
    'pgpgin', 'pgpgout', 'pgfault', 'pgmajfault',
    'inactive_anon', 'active_anon', 'inactive_file', 'active_file', 'unevictable',
]
MEMCG_V1_LIMIT_KEYS = ['hierarchical_memory_limit', 'hierarchical_memsw_limit']
MEMCG_V1_STAT_KEYS = (MEMCG_V1_LOCAL_KEYS + MEMCG_V1_LIMIT_KEYS
                      + ['total_' + k for k in MEMCG_V1_LOCAL_KEYS])

MEMCG_V2_STAT_KEYS = [
    'anon', 'file', 'kernel', 'kernel_stack', 'pagetables', 'sec_pagetables', 'percpu',
    'sock', 'vmalloc', 'shmem', 'zswap', 'zswapped', 'file_mapped', 'file_dirty',
    'file_writeback', 'swapcached', 'anon_thp', 'file_thp', 'shmem_thp', 'inactive_anon',
    'active_anon', 'inactive_file', 'active_file', 'unevictable', 'slab_reclaimable',
    'slab_unreclaimable', 'slab', 'hugetlb', 'workingset_refault_anon',
    'workingset_refault_file', 'workingset_activate_anon', 'workingset_activate_file',
    'workingset_restore_anon', 'workingset_restore_file', 'workingset_nodereclaim',
    'pgdemote_kswapd', 'pgdemote_direct', 'pgdemote_khugepaged', 'pgdemote_proactive',
    'pgpromote_success', 'pgscan', 'pgsteal', 'pswpin', 'pswpout', 'pgscan_kswapd',
    'pgscan_direct', 'pgscan_khugepaged', 'pgscan_proactive', 'pgsteal_kswapd',
    'pgsteal_direct', 'pgsteal_khugepaged', 'pgsteal_proactive', 'pgfault', 'pgmajfault',
    'pgrefill', 'pgactivate', 'pgdeactivate', 'pglazyfree', 'pglazyfreed', 'swpin_zero',
    'swpout_zero', 'zswpin', 'zswpout', 'zswpwb', 'thp_fault_alloc', 'thp_collapse_alloc',
    'thp_swpout', 'thp_swpout_fallback', 'numa_pages_migrated', 'numa_pte_updates',
    'numa_hint_faults',
]


def _as_dict(name, values):
    if not isinstance(values, Mapping):
        raise FormatInputError(f'{name} values must be a mapping, got {type(values).__name__}')
    return dict(values)


def memcg_v1_stat_text(values, memsw=True, bits=64):
    """cgroup v1 memory.stat.  ``values`` maps MEMCG_V1_STAT_KEYS to numbers;
    missing keys are 0, except the hierarchical limits, which default to
    "unlimited" (``unlimited_bytes(bits)``).  ``memsw``: whether memory+swap
    accounting is on (prints hierarchical_memsw_limit)."""
    values = _as_dict('memcg v1 memory.stat', values)
    for key in MEMCG_V1_LIMIT_KEYS:
        values.setdefault(key, unlimited_bytes(bits))
    keys = MEMCG_V1_STAT_KEYS if memsw else [k for k in MEMCG_V1_STAT_KEYS
                                              if k != 'hierarchical_memsw_limit']
    if not memsw and 'hierarchical_memsw_limit' in values:
        del values['hierarchical_memsw_limit']
    values = keyed_values('memcg v1 memory.stat', keys, values)
    return ''.join(f'{k} {values[k]}\n' for k in keys)


def memcg_v2_stat_text(values, hugetlb_accounting=False):
    """cgroup v2 memory.stat (see the module docstring for the key list and
    its doubts).  ``slab`` defaults to slab_reclaimable + slab_unreclaimable,
    ``pgscan``/``pgsteal`` to the sums of their per-reclaimer events; the
    ``hugetlb`` line only with ``hugetlb_accounting``."""
    values = _as_dict('memcg v2 memory.stat', values)
    if not hugetlb_accounting and 'hugetlb' in values:
        raise FormatInputError('hugetlb given but hugetlb_accounting is off')
    values.setdefault('slab', values.get('slab_reclaimable', 0) + values.get('slab_unreclaimable', 0))
    for total in ('pgscan', 'pgsteal'):
        values.setdefault(total, sum(values.get(f'{total}_{who}', 0)
                                     for who in ('kswapd', 'direct', 'khugepaged', 'proactive')))
    keys = [k for k in MEMCG_V2_STAT_KEYS if hugetlb_accounting or k != 'hugetlb']
    values = keyed_values('memcg v2 memory.stat', keys, values)
    return ''.join(f'{k} {values[k]}\n' for k in keys)


def memory_current_text(usage_bytes):
    """v2 memory.current (and v1 memory.usage_in_bytes): bytes, newline."""
    return f'{check_uint("usage_bytes", usage_bytes)}\n'


memory_usage_in_bytes_text = memory_current_text


def cgroup_procs_text(pids, v1=True):
    """cgroup.procs: one pid per line; v1 sorts and deduplicates its pid
    list (``pidlist_array_load()``), v2 lists in iteration order."""
    if isinstance(pids, (str, bytes)) or not isinstance(pids, Iterable):
        raise FormatInputError(f'pids must be an iterable of integers, got {pids!r}')
    pids = [check_uint('pid', p) for p in pids]
    if v1:
        pids = sorted(set(pids))
    return ''.join(f'{p}\n' for p in pids)

"""System-wide files: /proc/{meminfo,vmstat,stat,loadavg,uptime,cpuinfo,
version,kpage*}, the THP knobs, node meminfo and the memcg files, from one
emulated kernel."""
import numpy as np

from mmcore import query
from mmcore.kernel import HZ, BTIME
from mmcore.memory import HPAGE_PMD_NR, PAGE_SIZE
from .formats.memcg import (cgroup_procs_text, memcg_v1_stat_text, memcg_v2_stat_text,
                            memory_current_text)
from .formats.system import (CpuTimes, cpuinfo_text, loadavg_text, meminfo_text,
                             node_meminfo_text, stat_text, uptime_text, version_text,
                             vmstat_text, VMSTAT_KEYS)

NR_CPUS = 2
KB = PAGE_SIZE >> 10
THP_SIZES_KB = [16, 32, 64, 128, 256, 512, 1024, 2048]
# hugepages-<size>kB/stats/ of the anon and shmem sizes (mm/huge_memory.c:
# anon_stats_attrs, file_stats_attrs, any_stats_attrs), as the conformance
# machine's 6.18.44 serves them; anon_fault_declined is not in mainline 6.18
# (the emulated kernel never declines a fault: it stays 0)
MTHP_STATS = ['anon_fault_alloc', 'anon_fault_declined', 'anon_fault_fallback',
              'anon_fault_fallback_charge', 'zswpout', 'swpin', 'swpin_fallback',
              'swpin_fallback_charge', 'swpout', 'swpout_fallback', 'shmem_alloc',
              'shmem_fallback', 'shmem_fallback_charge', 'split', 'split_failed',
              'split_deferred', 'nr_anon', 'nr_anon_partially_mapped']
# order 1 is a file/shmem order only (THP_ORDERS_ALL_FILE_DEFAULT): its
# directory has file_stats_attrs and any_stats_attrs, no anon ones
FILE_ONLY_SIZES_KB = [8]
MTHP_FILE_STATS = ['zswpout', 'swpin', 'swpin_fallback', 'swpin_fallback_charge', 'swpout',
                   'swpout_fallback', 'shmem_alloc', 'shmem_fallback', 'shmem_fallback_charge',
                   'split', 'split_failed']


def _kb(pages):
    return int(pages) * KB


def mem_available(stats):
    """si_mem_available() with no reserves and no reclaimable slab: free
    pages plus the file LRU (page cache, lazily freed anon)."""
    pagecache = stats['active_file'] + stats['inactive_file']
    return stats['free'] + pagecache


def meminfo_values(k):
    s = query.node_stats(k)
    v = {
        'MemTotal': _kb(s['total']), 'MemFree': _kb(s['free']),
        'MemAvailable': _kb(mem_available(s)), 'Cached': _kb(s['file_pages']),
        'Active': _kb(s['active_anon'] + s['active_file']),
        'Inactive': _kb(s['inactive_anon'] + s['inactive_file']),
        'Active(anon)': _kb(s['active_anon']), 'Inactive(anon)': _kb(s['inactive_anon']),
        'Active(file)': _kb(s['active_file']), 'Inactive(file)': _kb(s['inactive_file']),
        'Unevictable': _kb(s['unevictable']), 'Dirty': _kb(s['dirty']),
        'AnonPages': _kb(s['anon_mapped']), 'Mapped': _kb(s['file_mapped']),
        'Shmem': _kb(s['shmem']), 'PageTables': _kb(page_table_pages(k)),
        'CommitLimit': _kb(s['total'] // 2),
        'Committed_AS': _kb(sum(p.mm.total_vm_pages() for p in k.processes.values())),
        'VmallocTotal': 34359738367,
        'AnonHugePages': _kb(s['anon_thps']), 'ShmemHugePages': _kb(s['shmem_thps']),
        'ShmemPmdMapped': _kb(s['shmem_pmdmapped']), 'FileHugePages': _kb(s['file_thps']),
        'FilePmdMapped': _kb(s['file_pmdmapped']), 'Hugepagesize': 2048,
        'DirectMap4k': _kb(s['total']),
    }
    return v, s


def page_table_pages(k):
    return sum(query.page_table_pages(p.mm) for p in k.processes.values())


def meminfo(k):
    return meminfo_text(meminfo_values(k)[0]).encode()


def node_meminfo(k):
    v, s = meminfo_values(k)
    keep = {'MemTotal', 'MemFree', 'Active', 'Inactive', 'Active(anon)', 'Inactive(anon)',
            'Active(file)', 'Inactive(file)', 'Unevictable', 'Dirty', 'Mapped', 'AnonPages',
            'Shmem', 'PageTables', 'AnonHugePages', 'ShmemHugePages', 'ShmemPmdMapped',
            'FileHugePages', 'FilePmdMapped'}
    nv = {key: val for key, val in v.items() if key in keep}
    nv['MemUsed'] = v['MemTotal'] - v['MemFree']
    nv['FilePages'] = v['Cached']
    return node_meminfo_text(0, nv).encode()


def vmstat(k):
    s = query.node_stats(k)
    e = k.events
    v = {
        'nr_free_pages': s['free'], 'nr_zone_inactive_anon': s['inactive_anon'],
        'nr_zone_active_anon': s['active_anon'], 'nr_zone_inactive_file': s['inactive_file'],
        'nr_zone_active_file': s['active_file'], 'nr_inactive_anon': s['inactive_anon'],
        'nr_active_anon': s['active_anon'], 'nr_inactive_file': s['inactive_file'],
        'nr_active_file': s['active_file'], 'nr_unevictable': s['unevictable'],
        'nr_anon_pages': s['anon_mapped'], 'nr_mapped': s['file_mapped'],
        'nr_file_pages': s['file_pages'], 'nr_dirty': s['dirty'], 'nr_shmem': s['shmem'],
        'nr_shmem_hugepages': s['shmem_thps'] // HPAGE_PMD_NR,
        'nr_shmem_pmdmapped': s['shmem_pmdmapped'] // HPAGE_PMD_NR,
        'nr_file_hugepages': s['file_thps'] // HPAGE_PMD_NR,
        'nr_file_pmdmapped': s['file_pmdmapped'] // HPAGE_PMD_NR,
        'nr_anon_transparent_hugepages': s['anon_thps'] // HPAGE_PMD_NR,
        'nr_page_table_pages': page_table_pages(k),
        'pglazyfreed': e['pglazyfreed'],
    }
    for name in VMSTAT_KEYS:
        if name.startswith('thp_'):
            v[name] = e[name]
    return vmstat_text(v).encode()


def stat(k):
    up = k.uptime_ticks
    cpu = CpuTimes(user=up // 10, system=up // 20, idle=up * NR_CPUS - up // 10 - up // 20)
    per = [CpuTimes(user=cpu.user // NR_CPUS, system=cpu.system // NR_CPUS,
                    idle=cpu.idle // NR_CPUS) for _ in range(NR_CPUS)]
    return stat_text([cpu] + per, ctxt=up * 7, btime=BTIME,
                     processes=len(k.processes) + k.events['fork'],
                     procs_running=1, procs_blocked=0).encode()


def loadavg(k):
    last = max(k.processes)
    return loadavg_text(0.0, 0.0, 0.0, 1, len(k.processes), last).encode()


def uptime(k):
    secs = k.uptime_ticks / HZ
    return uptime_text(secs, secs * NR_CPUS * 0.9).encode()


def cpuinfo(k):
    return cpuinfo_text(NR_CPUS).encode()


def version(k):
    return version_text(release=k.config.release).encode()


def kpage_size(k):
    return k.mem.nr_frames * 8


def kpage_read(fn):
    """A BinaryFile reader over one of the kpage* arrays."""
    def read(k, offset, size):
        first = offset // 8
        n = size // 8
        end = min(first + n, k.mem.nr_frames)
        if end <= first:
            return b''
        return fn(k, np.arange(first, end, dtype=np.int64)).astype('<u8').tobytes()
    return read


# --- /sys ------------------------------------------------------------------------------------

def _choice(options, current):
    return ' '.join('[%s]' % o if o == current else o for o in options) + '\n'


def thp_enabled(k):
    return _choice(['always', 'madvise', 'never'], k.thp.enabled).encode()


def thp_shmem_enabled(k):
    return _choice(['always', 'within_size', 'advise', 'never', 'deny', 'force'],
                   k.thp.shmem_enabled).encode()


def thp_size_enabled(k, size_kb):
    mode = k.thp.sizes.get(size_kb << 10, 'never')
    return _choice(['always', 'inherit', 'madvise', 'never'], mode).encode()


def thp_size_shmem_enabled(k, size_kb):
    """thpsize_shmem_enabled_show(): shmem_init() leaves the PMD size
    inheriting the global shmem_enabled and every other size never (no
    scenario sets a per-size shmem knob)."""
    mode = 'inherit' if size_kb << 10 == HPAGE_PMD_NR * PAGE_SIZE else 'never'
    return _choice(['always', 'inherit', 'within_size', 'advise', 'never'], mode).encode()


def mthp_stat(k, size_kb, name):
    """One hugepages-<size>kB/stats file: "%lu\\n" (sum_mthp_stat())."""
    return ('%d\n' % query.mthp_stats(k, size_kb).get(name, 0)).encode()


def thp_use_zero_page(k):
    return b'1\n' if k.thp.use_zero_page else b'0\n'


def memcg_v1_stat(k, cgroup):
    local = query.memcg_stats(k, cgroup)
    total = query.memcg_stats(k, cgroup, hierarchical=True)
    v = {}
    for prefix, s in (('', local), ('total_', total)):
        v.update({
            prefix + 'cache': s['file_pages'] * PAGE_SIZE,
            prefix + 'rss': s['anon_mapped'] * PAGE_SIZE,
            prefix + 'rss_huge': s['anon_thps'] * PAGE_SIZE,
            prefix + 'shmem': s['shmem'] * PAGE_SIZE,
            prefix + 'mapped_file': s['file_mapped'] * PAGE_SIZE,
            prefix + 'dirty': s['dirty'] * PAGE_SIZE,
            prefix + 'inactive_anon': s['inactive_anon'] * PAGE_SIZE,
            prefix + 'active_anon': s['active_anon'] * PAGE_SIZE,
            prefix + 'inactive_file': s['inactive_file'] * PAGE_SIZE,
            prefix + 'active_file': s['active_file'] * PAGE_SIZE,
            prefix + 'unevictable': s['unevictable'] * PAGE_SIZE,
        })
    return memcg_v1_stat_text(v).encode()


def memcg_v2_stat(k, cgroup):
    s = query.memcg_stats(k, cgroup, hierarchical=True)
    v = {
        'anon': s['anon_mapped'] * PAGE_SIZE, 'file': s['file_pages'] * PAGE_SIZE,
        'shmem': s['shmem'] * PAGE_SIZE, 'file_mapped': s['file_mapped'] * PAGE_SIZE,
        'file_dirty': s['dirty'] * PAGE_SIZE, 'anon_thp': s['anon_thps'] * PAGE_SIZE,
        'shmem_thp': s['shmem_thps'] * PAGE_SIZE, 'file_thp': s['file_thps'] * PAGE_SIZE,
        'inactive_anon': s['inactive_anon'] * PAGE_SIZE, 'active_anon': s['active_anon'] * PAGE_SIZE,
        'inactive_file': s['inactive_file'] * PAGE_SIZE, 'active_file': s['active_file'] * PAGE_SIZE,
        'unevictable': s['unevictable'] * PAGE_SIZE,
    }
    return memcg_v2_stat_text(v).encode()


def memcg_usage(k, cgroup):
    return memory_current_text(query.memcg_stats(k, cgroup, hierarchical=True)['charged']
                               * PAGE_SIZE).encode()


def cgroup_procs(k, cgroup, v1):
    return cgroup_procs_text(sorted(p.pid for p in k.processes.values()
                                    if p.cgroup == cgroup), v1=v1).encode()

"""System-wide /proc files: meminfo, node meminfo, stat, vmstat, loadavg,
uptime, cpuinfo, version (semantics.md 8.8, 9.6).

Line sets and orders are those of the conformance machine's Linux 6.18
(x86-64, THP, ZSWAP, NUMA, no HIGHMEM/CMA), read from its real files
(tests/data/real).  Inputs are dicts of values; missing keys print 0,
unknown keys are an error.
"""
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

from ._seq import FormatInputError, check_text, check_uint, dec_width, keyed_values

# /proc/meminfo (meminfo_proc_show(), hugetlb_report_meminfo(),
# arch_report_meminfo()); 'kB' lines: label padded to 16, %8lu kB;
# 'count' lines (HugePages_*): label padded to 19, %5lu, no unit.
MEMINFO_KEYS = [
    ('MemTotal', 'kB'), ('MemFree', 'kB'), ('MemAvailable', 'kB'), ('Buffers', 'kB'),
    ('Cached', 'kB'), ('SwapCached', 'kB'), ('Active', 'kB'), ('Inactive', 'kB'),
    ('Active(anon)', 'kB'), ('Inactive(anon)', 'kB'), ('Active(file)', 'kB'),
    ('Inactive(file)', 'kB'), ('Unevictable', 'kB'), ('Mlocked', 'kB'),
    ('SwapTotal', 'kB'), ('SwapFree', 'kB'), ('Zswap', 'kB'), ('Zswapped', 'kB'),
    ('Dirty', 'kB'), ('Writeback', 'kB'), ('AnonPages', 'kB'), ('Mapped', 'kB'),
    ('Shmem', 'kB'), ('KReclaimable', 'kB'), ('Slab', 'kB'), ('SReclaimable', 'kB'),
    ('SUnreclaim', 'kB'), ('KernelStack', 'kB'), ('PageTables', 'kB'),
    ('SecPageTables', 'kB'), ('NFS_Unstable', 'kB'), ('Bounce', 'kB'),
    ('WritebackTmp', 'kB'), ('CommitLimit', 'kB'), ('Committed_AS', 'kB'),
    ('VmallocTotal', 'kB'), ('VmallocUsed', 'kB'), ('VmallocChunk', 'kB'),
    ('Percpu', 'kB'), ('AnonHugePages', 'kB'), ('ShmemHugePages', 'kB'),
    ('ShmemPmdMapped', 'kB'), ('FileHugePages', 'kB'), ('FilePmdMapped', 'kB'),
    ('Balloon', 'kB'), ('HugePages_Total', 'count'), ('HugePages_Free', 'count'),
    ('HugePages_Rsvd', 'count'), ('HugePages_Surp', 'count'), ('Hugepagesize', 'kB'),
    ('Hugetlb', 'kB'), ('DirectMap4k', 'kB'), ('DirectMap2M', 'kB'), ('DirectMap1G', 'kB'),
]

# /sys/devices/system/node/nodeN/meminfo (node_read_meminfo()); labels
# after "Node N " padded to 16 (%8lu kB), HugePages_* padded to 17 (%5u).
NODE_MEMINFO_KEYS = [
    ('MemTotal', 'kB'), ('MemFree', 'kB'), ('MemUsed', 'kB'), ('SwapCached', 'kB'),
    ('Active', 'kB'), ('Inactive', 'kB'), ('Active(anon)', 'kB'), ('Inactive(anon)', 'kB'),
    ('Active(file)', 'kB'), ('Inactive(file)', 'kB'), ('Unevictable', 'kB'),
    ('Mlocked', 'kB'), ('Dirty', 'kB'), ('Writeback', 'kB'), ('FilePages', 'kB'),
    ('Mapped', 'kB'), ('AnonPages', 'kB'), ('Shmem', 'kB'), ('KernelStack', 'kB'),
    ('PageTables', 'kB'), ('SecPageTables', 'kB'), ('NFS_Unstable', 'kB'), ('Bounce', 'kB'),
    ('WritebackTmp', 'kB'), ('KReclaimable', 'kB'), ('Slab', 'kB'), ('SReclaimable', 'kB'),
    ('SUnreclaim', 'kB'), ('AnonHugePages', 'kB'), ('ShmemHugePages', 'kB'),
    ('ShmemPmdMapped', 'kB'), ('FileHugePages', 'kB'), ('FilePmdMapped', 'kB'),
    ('HugePages_Total', 'count'), ('HugePages_Free', 'count'), ('HugePages_Surp', 'count'),
]

# /proc/vmstat (vmstat_text[] of this machine's config), in print order.
VMSTAT_KEYS = [
    'nr_free_pages', 'nr_free_pages_blocks', 'nr_zone_inactive_anon', 'nr_zone_active_anon',
    'nr_zone_inactive_file', 'nr_zone_active_file', 'nr_zone_unevictable',
    'nr_zone_write_pending', 'nr_mlock', 'nr_zspages', 'nr_free_cma', 'numa_hit', 'numa_miss',
    'numa_foreign', 'numa_interleave', 'numa_local', 'numa_other', 'nr_inactive_anon',
    'nr_active_anon', 'nr_inactive_file', 'nr_active_file', 'nr_unevictable',
    'nr_slab_reclaimable', 'nr_slab_unreclaimable', 'nr_isolated_anon', 'nr_isolated_file',
    'workingset_nodes', 'workingset_refault_anon', 'workingset_refault_file',
    'workingset_activate_anon', 'workingset_activate_file', 'workingset_restore_anon',
    'workingset_restore_file', 'workingset_nodereclaim', 'nr_anon_pages', 'nr_mapped',
    'nr_file_pages', 'nr_dirty', 'nr_writeback', 'nr_shmem', 'nr_shmem_hugepages',
    'nr_shmem_pmdmapped', 'nr_file_hugepages', 'nr_file_pmdmapped',
    'nr_anon_transparent_hugepages', 'nr_vmscan_write', 'nr_vmscan_immediate_reclaim',
    'nr_dirtied', 'nr_written', 'nr_throttled_written', 'nr_kernel_misc_reclaimable',
    'nr_foll_pin_acquired', 'nr_foll_pin_released', 'nr_kernel_stack', 'nr_page_table_pages',
    'nr_sec_page_table_pages', 'nr_iommu_pages', 'nr_swapcached', 'pgpromote_success',
    'pgpromote_candidate', 'pgpromote_candidate_nrl', 'pgdemote_kswapd', 'pgdemote_direct',
    'pgdemote_khugepaged', 'pgdemote_proactive', 'nr_hugetlb', 'nr_balloon_pages',
    'nr_kernel_file_pages', 'nr_dirty_threshold', 'nr_dirty_background_threshold',
    'nr_memmap_pages', 'nr_memmap_boot_pages', 'pgpgin', 'pgpgout', 'pswpin', 'pswpout',
    'pgalloc_dma', 'pgalloc_dma32', 'pgalloc_normal', 'pgalloc_movable', 'pgalloc_device',
    'allocstall_dma', 'allocstall_dma32', 'allocstall_normal', 'allocstall_movable',
    'allocstall_device', 'pgskip_dma', 'pgskip_dma32', 'pgskip_normal', 'pgskip_movable',
    'pgskip_device', 'pgfree', 'pgactivate', 'pgdeactivate', 'pglazyfree', 'pgfault',
    'pgmajfault', 'pglazyfreed', 'pgrefill', 'pgreuse', 'pgsteal_kswapd', 'pgsteal_direct',
    'pgsteal_khugepaged', 'pgsteal_proactive', 'pgscan_kswapd', 'pgscan_direct',
    'pgscan_khugepaged', 'pgscan_proactive', 'pgscan_direct_throttle', 'pgscan_anon',
    'pgscan_file', 'pgsteal_anon', 'pgsteal_file', 'zone_reclaim_success',
    'zone_reclaim_failed', 'pginodesteal', 'slabs_scanned', 'kswapd_inodesteal',
    'kswapd_low_wmark_hit_quickly', 'kswapd_high_wmark_hit_quickly', 'pageoutrun', 'pgrotated',
    'drop_pagecache', 'drop_slab', 'oom_kill', 'numa_pte_updates', 'numa_huge_pte_updates',
    'numa_hint_faults', 'numa_hint_faults_local', 'numa_pages_migrated', 'pgmigrate_success',
    'pgmigrate_fail', 'thp_migration_success', 'thp_migration_fail', 'thp_migration_split',
    'compact_migrate_scanned', 'compact_free_scanned', 'compact_isolated', 'compact_stall',
    'compact_fail', 'compact_success', 'compact_daemon_wake', 'compact_daemon_migrate_scanned',
    'compact_daemon_free_scanned', 'htlb_buddy_alloc_success', 'htlb_buddy_alloc_fail',
    'unevictable_pgs_culled', 'unevictable_pgs_scanned', 'unevictable_pgs_rescued',
    'unevictable_pgs_mlocked', 'unevictable_pgs_munlocked', 'unevictable_pgs_cleared',
    'unevictable_pgs_stranded', 'thp_fault_alloc', 'thp_fault_fallback',
    'thp_fault_fallback_charge', 'thp_collapse_alloc', 'thp_collapse_alloc_failed',
    'thp_file_alloc', 'thp_file_fallback', 'thp_file_fallback_charge', 'thp_file_mapped',
    'thp_split_page', 'thp_split_page_failed', 'thp_deferred_split_page',
    'thp_underused_split_page', 'thp_split_pmd', 'thp_scan_exceed_none_pte',
    'thp_scan_exceed_swap_pte', 'thp_scan_exceed_share_pte', 'thp_split_pud',
    'thp_zero_page_alloc', 'thp_zero_page_alloc_failed', 'thp_swpout', 'thp_swpout_fallback',
    'balloon_inflate', 'balloon_deflate', 'balloon_migrate', 'swap_ra', 'swap_ra_hit',
    'swpin_zero', 'swpout_zero', 'ksm_swpin_copy', 'cow_ksm', 'zswpin', 'zswpout', 'zswpwb',
    'direct_map_level2_splits', 'direct_map_level3_splits', 'direct_map_level2_collapses',
    'direct_map_level3_collapses', 'nr_unstable',
]


def _meminfo_lines(prefix, keys, values, count_width):
    values = keyed_values('meminfo', [k for k, _ in keys], values)
    out = []
    for key, kind in keys:
        label = key + ':'
        if kind == 'kB':
            out.append(f'{prefix}{label:<16}{dec_width(values[key], 8)} kB\n')
        else:
            out.append(f'{prefix}{label:<{count_width}}{dec_width(values[key], 5)}\n')
    return ''.join(out)


def meminfo_text(values):
    """/proc/meminfo from a dict of kB values (HugePages_* are page counts)."""
    return _meminfo_lines('', MEMINFO_KEYS, values, 19)


def node_meminfo_text(nid, values):
    """/sys/devices/system/node/node<nid>/meminfo from a dict of kB values."""
    return _meminfo_lines(f'Node {check_uint("nid", nid)} ', NODE_MEMINFO_KEYS, values, 17)


def vmstat_text(values):
    """/proc/vmstat: ``name value`` in VMSTAT_KEYS order."""
    values = keyed_values('vmstat', VMSTAT_KEYS, values)
    return ''.join(f'{k} {values[k]}\n' for k in VMSTAT_KEYS)


@dataclass
class CpuTimes:
    """One ``cpu`` line of /proc/stat, in USER_HZ ticks."""
    user: int = 0
    nice: int = 0
    system: int = 0
    idle: int = 0
    iowait: int = 0
    irq: int = 0
    softirq: int = 0
    steal: int = 0
    guest: int = 0
    guest_nice: int = 0

    def values(self):
        return [check_uint(f'cpu {f.name}', getattr(self, f.name)) for f in fields(self)]


NR_SOFTIRQS = 10


def stat_text(cpus, intr=(), ctxt=0, btime=0, processes=0, procs_running=1, procs_blocked=0,
              softirq=(0,) * NR_SOFTIRQS, cpu_total=None, intr_total=None):
    """/proc/stat (``show_stat()``).

    ``cpus``: a CpuTimes per online CPU; the ``cpu`` line is their sum unless
    ``cpu_total`` is given (the kernel converts the summed nanoseconds, which
    can differ by a tick).  ``intr``: per-IRQ counts; ``intr_total`` defaults
    to their sum (the kernel adds arch interrupts).  ``softirq``: the
    NR_SOFTIRQS per-type counts; the total is their sum.
    """
    if isinstance(cpus, CpuTimes) or not isinstance(cpus, Sequence) or not cpus:
        raise FormatInputError('cpus must be a non-empty sequence of CpuTimes')
    for c in cpus:
        if not isinstance(c, CpuTimes):
            raise FormatInputError(f'cpus must hold CpuTimes, got {type(c).__name__}')
    per_cpu = [c.values() for c in cpus]
    if cpu_total is None:
        total = [sum(col) for col in zip(*per_cpu)]
    elif isinstance(cpu_total, CpuTimes):
        total = cpu_total.values()
    else:
        raise FormatInputError('cpu_total must be a CpuTimes or None')
    intr = [check_uint('intr', v) for v in intr]
    softirq = [check_uint('softirq', v) for v in softirq]
    if len(softirq) != NR_SOFTIRQS:
        raise FormatInputError(f'softirq needs {NR_SOFTIRQS} counts, got {len(softirq)}')
    intr_sum = sum(intr) if intr_total is None else check_uint('intr_total', intr_total)
    out = ['cpu  ' + ' '.join(map(str, total)) + '\n']
    out += [f'cpu{i} ' + ' '.join(map(str, v)) + '\n' for i, v in enumerate(per_cpu)]
    out.append(f'intr {intr_sum}' + ''.join(f' {v}' for v in intr) + '\n')
    out.append(f'ctxt {check_uint("ctxt", ctxt)}\n'
               f'btime {check_uint("btime", btime)}\n'
               f'processes {check_uint("processes", processes)}\n'
               f'procs_running {check_uint("procs_running", procs_running)}\n'
               f'procs_blocked {check_uint("procs_blocked", procs_blocked)}\n')
    out.append(f'softirq {sum(softirq)}' + ''.join(f' {v}' for v in softirq) + '\n')
    return ''.join(out)


FSHIFT = 11
FIXED_1 = 1 << FSHIFT


def _check_seconds(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != value:
        raise FormatInputError(f'{name} must be a non-negative number, got {value!r}')
    return value


def loadavg_text(load1, load5, load15, nr_running, nr_threads, last_pid):
    """/proc/loadavg (``loadavg_proc_show()``).  The averages are converted
    to the kernel's FSHIFT fixed point and printed like LOAD_INT/LOAD_FRAC
    after adding FIXED_1/200 (rounding to hundredths)."""
    parts = []
    for name, load in (('load1', load1), ('load5', load5), ('load15', load15)):
        fixed = int(_check_seconds(name, load) * FIXED_1) + FIXED_1 // 200
        parts.append(f'{fixed >> FSHIFT}.{((fixed & (FIXED_1 - 1)) * 100) >> FSHIFT:02d}')
    return (' '.join(parts) + f' {check_uint("nr_running", nr_running)}/'
            f'{check_uint("nr_threads", nr_threads)} {check_uint("last_pid", last_pid)}\n')


def uptime_text(uptime, idle):
    """/proc/uptime: seconds since boot and summed idle seconds of all CPUs,
    truncated to hundredths (``uptime_proc_show()``)."""
    def hundredths(name, seconds):
        ns = round(_check_seconds(name, seconds) * 1_000_000_000)
        return f'{ns // 1_000_000_000}.{ns % 1_000_000_000 // 10_000_000:02d}'
    return f'{hundredths("uptime", uptime)} {hundredths("idle", idle)}\n'


@dataclass
class CpuModel:
    """The per-CPU constant part of an x86 /proc/cpuinfo block; defaults are
    the conformance machine's (a 2-vCPU Xeon guest)."""
    vendor_id: str = 'GenuineIntel'
    cpu_family: int = 6
    model: int = 207
    model_name: str = 'Intel(R) Xeon(R) Processor'
    stepping: int = 2
    microcode: int = 0x1
    cpu_mhz: str = '2299.998'
    cache_size_kb: int = 266240
    physical_id: int = 0
    cpuid_level: int = 28
    flags: tuple = tuple(
        'fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx '
        'fxsr sse sse2 ss ht syscall nx pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology '
        'nonstop_tsc cpuid tsc_known_freq pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic '
        'movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand hypervisor lahf_lm abm '
        '3dnowprefetch cpuid_fault fsgsbase tsc_adjust bmi1 hle avx2 smep bmi2 erms invpcid rtm '
        'avx512f avx512dq rdseed adx smap avx512ifma clflushopt clwb avx512cd sha_ni avx512bw '
        'avx512vl xsaveopt xsavec xgetbv1 xsaves avx_vnni avx512_bf16 arat avx512vbmi umip '
        'avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni avx512_bitalg avx512_vpopcntdq rdpid '
        'cldemote movdiri movdir64b fsrm serialize tsxldtrk avx512_fp16 arch_capabilities'.split())
    bugs: tuple = tuple('spectre_v1 spectre_v2 spec_store_bypass swapgs retbleed bhi '
                        'spectre_v2_user its'.split())
    bogomips: str = '4599.99'
    clflush_size: int = 64
    cache_alignment: int = 64
    phys_bits: int = 48
    virt_bits: int = 57
    power_management: tuple = field(default_factory=tuple)


def cpuinfo_text(nr_cpus, model=None):
    """/proc/cpuinfo: one x86 ``show_cpuinfo()`` block per CPU (all cores of
    one package, one thread per core: core id = apicid = CPU number)."""
    nr_cpus = check_uint('nr_cpus', nr_cpus, 8192)
    if nr_cpus == 0:
        raise FormatInputError('nr_cpus must be at least 1')
    m = CpuModel() if model is None else model
    if not isinstance(m, CpuModel):
        raise FormatInputError(f'model must be a CpuModel, got {type(m).__name__}')
    for name in ('vendor_id', 'model_name', 'cpu_mhz', 'bogomips'):
        check_text(name, getattr(m, name))
    blocks = []
    for cpu in range(nr_cpus):
        blocks.append(
            f'processor\t: {cpu}\n'
            f'vendor_id\t: {m.vendor_id}\n'
            f'cpu family\t: {m.cpu_family}\n'
            f'model\t\t: {m.model}\n'
            f'model name\t: {m.model_name}\n'
            f'stepping\t: {m.stepping}\n'
            + (f'microcode\t: {m.microcode:#x}\n' if m.microcode else '')
            + f'cpu MHz\t\t: {m.cpu_mhz}\n'
            f'cache size\t: {m.cache_size_kb} KB\n'
            f'physical id\t: {m.physical_id}\n'
            f'siblings\t: {nr_cpus}\n'
            f'core id\t\t: {cpu}\n'
            f'cpu cores\t: {nr_cpus}\n'
            f'apicid\t\t: {cpu}\n'
            f'initial apicid\t: {cpu}\n'
            'fpu\t\t: yes\n'
            'fpu_exception\t: yes\n'
            f'cpuid level\t: {m.cpuid_level}\n'
            'wp\t\t: yes\n'
            'flags\t\t:' + ''.join(f' {f}' for f in m.flags) + '\n'
            'bugs\t\t:' + ''.join(f' {b}' for b in m.bugs) + '\n'
            f'bogomips\t: {m.bogomips}\n'
            f'clflush size\t: {m.clflush_size}\n'
            f'cache_alignment\t: {m.cache_alignment}\n'
            f'address sizes\t: {m.phys_bits} bits physical, {m.virt_bits} bits virtual\n'
            'power management:' + ''.join(f' {p}' for p in m.power_management) + '\n\n')
    return ''.join(blocks)


def version_text(release='6.18.44-mmemu', build='builder@sandboxing',
                 compiler='gcc (GCC) 15.3.0, GNU ld (GNU Binutils) 2.46',
                 version='#1 SMP PREEMPT_DYNAMIC @0'):
    """/proc/version (``linux_proc_banner``)."""
    for name, value in (('release', release), ('build', build), ('compiler', compiler),
                        ('version', version)):
        check_text(name, value)
    return f'Linux version {release} ({build}) ({compiler}) {version}\n'

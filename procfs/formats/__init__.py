"""Pure text renderers for the emulated /proc and cgroup files.

Every function takes plain values (ints, strs, small dataclasses, numpy
arrays where stated) and returns the exact text the Linux 6.18 kernel of the
conformance machine prints; nothing here depends on the mm core.

    maps       maps_line, vmflags_string                      (semantics 9.1, 9.2)
    smaps      SmapsPages, smaps_account, SmapsCounters,
               smaps_block, smaps_rollup_text                 (8.4, 8.5, 9.2, 9.3)
    numa_maps  numa_maps_gather, NumaMapsCounts, numa_maps_line (8.6, 9.4)
    pid_files  ProcStatus/StatusVm, proc_status_text, ProcStat, proc_stat_line,
               statm_text, cmdline_bytes, comm_text, limits_text,
               cgroup_text, cgroup_text_hybrid                (8.7, 9.5)
    system     meminfo_text, node_meminfo_text, vmstat_text, stat_text,
               loadavg_text, uptime_text, cpuinfo_text, version_text (8.8, 9.6)
    memcg      memcg_v1_stat_text, memcg_v2_stat_text, memory_current_text,
               memory_usage_in_bytes_text, cgroup_procs_text  (8.9, 9.7, 9.8)

Bad input raises FormatInputError (a ValueError) naming the offending value.
"""
from ._seq import FormatInputError

__all__ = ['FormatInputError']

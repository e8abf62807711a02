"""The files of /proc/PID, rendered from one process of an emulated kernel
(fs/proc/task_mmu.c, fs/proc/array.c, fs/proc/base.c).

Each function takes the Kernel and the Process and returns the file's
bytes; the config only matters through mmcore.query.
"""
import numpy as np

from mmcore import query
from mmcore.fault import anon_orders_allowed
from mmcore.memory import HPAGE_PMD_NR, HPAGE_PMD_ORDER, PAGE_SHIFT, PAGE_SIZE
from mmcore.mm import (VM_ACCOUNT, VM_DONTCOPY, VM_EXEC, VM_GROWSDOWN, VM_HUGEPAGE, VM_LOCKED, VM_MAYEXEC,
                       VM_MAYREAD, VM_MAYSHARE, VM_MAYWRITE, VM_NOHUGEPAGE, VM_READ, VM_SHARED,
                       VM_WIPEONFORK, VM_WRITE)
from .formats.maps import maps_line
from .formats.numa_maps import numa_maps_gather, numa_maps_line
from .formats.pid_files import (ProcStat, ProcStatus, StatusVm, cgroup_text_hybrid,
                                cmdline_bytes, comm_text, limits_text, proc_stat_line,
                                proc_status_text, statm_text)
from .formats.smaps import SmapsCounters, SmapsPages, smaps_account, smaps_block, \
    smaps_rollup_text

# the x86-64 gate VMA, shown in maps and smaps of every process
VSYSCALL_START = 0xffffffffff600000
VSYSCALL_END = VSYSCALL_START + PAGE_SIZE

VM_MNEMONICS = [(VM_READ, 'rd'), (VM_WRITE, 'wr'), (VM_EXEC, 'ex'), (VM_SHARED, 'sh'),
                (VM_MAYREAD, 'mr'), (VM_MAYWRITE, 'mw'), (VM_MAYEXEC, 'me'), (VM_MAYSHARE, 'ms'),
                (VM_GROWSDOWN, 'gd'),
                (VM_LOCKED, 'lo'), (VM_DONTCOPY, 'dc'), (VM_ACCOUNT, 'ac'),
                (VM_WIPEONFORK, 'wf'), (VM_HUGEPAGE, 'hg'), (VM_NOHUGEPAGE, 'nh')]

PM_PFN_MASK = (1 << 55) - 1
PM_SOFT_DIRTY = 1 << 55
PM_MMAP_EXCLUSIVE = 1 << 56
PM_FILE = 1 << 61
PM_PRESENT = 1 << 63


def vma_perms(vma):
    f = vma.flags
    return ('r' if f & VM_READ else '-') + ('w' if f & VM_WRITE else '-') + \
        ('x' if f & VM_EXEC else '-') + ('s' if f & VM_MAYSHARE else 'p')


def vma_name(vma):
    """The name show_map_vma() prints (CONFIG_ANON_VMA_NAME names); a
    VMA imported from a capture keeps the name the real kernel printed."""
    shown = getattr(vma, 'shown_name', None)
    if shown is not None:
        return shown or None
    if vma.name.startswith('['):
        return vma.name                   # [heap], [stack] of init
    if vma.kind == 'anon':
        return '[anon:%s]' % vma.name
    if vma.kind == 'shared-anon':
        return '[anon_shmem:%s]' % vma.name
    return vma.obj.path


def vma_maps_line(k, vma):
    obj = vma.obj
    major, minor = obj.dev if obj else (0, 0)
    return maps_line(vma.start, vma.end, vma_perms(vma), (vma.pgoff << PAGE_SHIFT) if obj else 0,
                     major, minor, obj.inode if obj else 0, vma_name(vma), bits=k.config.bits)


def gate_maps_line(k):
    return maps_line(VSYSCALL_START, VSYSCALL_END, '--xp', 0, 0, 0, 0, '[vsyscall]',
                     bits=k.config.bits)


def maps(k, proc):
    lines = [vma_maps_line(k, v) for v in proc.mm.vmas]
    if k.config.bits == 64:
        lines.append(gate_maps_line(k))
    return ''.join(lines).encode()


def vma_counters(k, vma, pv=None):
    """smaps_account() over the present normal pages of a VMA.  A PMD leaf
    whose pages all count the same is accounted once, as one page, and
    scaled by its 512 pages (every counter is a sum over pages).  `pv`: the
    VMA's query.vma_pages(whole_leaves=True), where already read."""
    if pv is None:
        pv = query.vma_pages(k, vma, whole_leaves=True, smaps_only=True)
    total = SmapsCounters()
    for nr in (1, HPAGE_PMD_NR):
        sel = pv.normal & (pv.nr == nr)
        if nr > 1 and not sel.any():
            continue
        pages = SmapsPages(
            mapcount=pv.mapcount[sel], private=pv.private[sel], refcount_one=pv.refcount_one[sel],
            dirty=(pv.pte_dirty | pv.folio_dirty)[sel],
            young=(pv.young | pv.folio_referenced)[sel],
            anon=pv.anon[sel], swapbacked=pv.swapbacked[sel], ksm=pv.ksm[sel],
            locked=np.bool_(bool(vma.flags & VM_LOCKED)), pmd=pv.pmd[sel])
        c = smaps_account(pages, pmd_nr=HPAGE_PMD_NR // nr,
                          pss_per_entry=k.policy.smaps_pss_per_entry)
        total = total + (c if nr == 1 else c.scaled(nr))
    return total


def thp_vma_suitable_order(vma, order):
    """thp_vma_suitable_order() at the last possible block of the VMA, as
    __thp_vma_allowable_orders() checks outside page faults: the aligned
    block must lie inside the VMA (and, for a file, agree with pgoff)."""
    size = PAGE_SIZE << order
    if vma.obj is not None and ((vma.start >> PAGE_SHIFT) - vma.pgoff) % (1 << order):
        return False
    haddr = (vma.end - size) & ~(size - 1)
    return haddr >= vma.start


def thp_eligible(k, vma):
    """thp_vma_allowable_orders(vma, TVA_SMAPS, THP_ORDERS_ALL) != 0."""
    if vma.kind == 'anon':
        orders = anon_orders_allowed(k, vma)
    elif vma.flags & VM_NOHUGEPAGE:
        orders = []
    elif vma.kind == 'shared-anon':
        mode = k.thp.shmem_enabled
        allowed = mode in ('always', 'within_size', 'force') or \
            (mode == 'advise' and vma.flags & VM_HUGEPAGE)
        orders = [HPAGE_PMD_ORDER] if allowed else []
    else:
        orders = []
    return 1 if any(thp_vma_suitable_order(vma, o) for o in orders) else 0


def vmflags(vma):
    return {name for bit, name in VM_MNEMONICS if vma.flags & bit}


def smaps(k, proc):
    out = []
    for v in proc.mm.vmas:
        out.append(smaps_block(vma_maps_line(k, v), vma_counters(k, v),
                               (v.end - v.start) >> 10, thp_eligible(k, v), vmflags(v)))
    if k.config.bits == 64:
        out.append(smaps_block(gate_maps_line(k), SmapsCounters(), 4, 0, {'ex', 'mr', 'me'}))
    return ''.join(out).encode()


def smaps_rollup(k, proc):
    vmas = proc.mm.vmas
    total = SmapsCounters()
    for v in vmas:
        total = total + vma_counters(k, v)
    start = vmas[0].start if vmas else 0
    end = vmas[-1].end if vmas else 0
    return smaps_rollup_text(start, end, total, bits=k.config.bits).encode()


def numa_maps(k, proc):
    """show_numa_map(): PTE entries count one page each, a PMD leaf 512
    pages once with its first page's mapcount."""
    out = []
    for v in proc.mm.vmas:
        pv = query.vma_pages(k, v, whole_leaves=True)
        sel = pv.normal & (~pv.pmd | ((v.vpn0 + pv.idx) % HPAGE_PMD_NR == 0))
        nr = np.where(pv.pmd[sel], HPAGE_PMD_NR, 1)
        counts = numa_maps_gather(pv.numa_mapcount[sel], nr=nr,
                                  dirty=(pv.pte_dirty | pv.folio_dirty)[sel], anon=pv.anon[sel],
                                  active=(pv.active | pv.unevictable)[sel])
        file = None
        if v.kind == 'shared-anon':
            file = '/dev/zero (deleted)'
        elif v.obj is not None:
            file = v.obj.path
        out.append(numa_maps_line(v.start, 'default', counts, file=file,
                                  heap=v.name == '[heap]', stack=v.name == '[stack]'))
    return ''.join(out).encode()


# make_pme() flags by code present | exclusive << 1 | file << 2 | soft_dirty << 3
_PM_FLAGS = np.array([(PM_PRESENT if c & 1 else 0) | (PM_MMAP_EXCLUSIVE if c & 2 else 0) |
                      (PM_FILE if c & 4 else 0) | (PM_SOFT_DIRTY if c & 8 else 0)
                      for c in range(16)], dtype=np.uint64)
_PMD_SLOTS = np.arange(HPAGE_PMD_NR, dtype=np.uint64)


def _pm_flags(present, excl, file, soft_dirty, out=None):
    """The flag bits of make_pme() per entry; soft-dirty only on present ones."""
    code = present.view(np.uint8) | (excl.view(np.uint8) << 1)
    code |= file.view(np.uint8) << 2
    code |= (soft_dirty & present).view(np.uint8) << 3
    return np.take(_PM_FLAGS, code, out=out)


def _pagemap_tables(grid, flat, base, v, i0, i1, pm, capable):
    """The entries of the PTE tables of `pm` (pte_to_pagemap_entry()) for
    VMA pages [i0, i1) into grid (blocks from PMD index base >> 9)."""
    rows = ((v.vpn0 + pm.tidx) >> HPAGE_PMD_ORDER) - (base >> HPAGE_PMD_ORDER)
    inside = (pm.tidx >= i0) & (pm.tidx + HPAGE_PMD_NR <= i1)
    direct = inside.all() and rows[-1] - rows[0] + 1 == len(rows)
    # consecutive whole tables are converted in place
    e = _pm_flags(pm.present, pm.excl, pm.file, pm.soft_dirty,
                  out=grid[rows[0]:rows[-1] + 1] if direct else None)
    if capable:
        np.bitwise_or(e, pm.pfn.view(np.uint64), out=e, where=pm.present)
    if direct:
        return
    grid[rows[inside]] = e[inside]
    # the edge tables only for the VMA's pages asked for
    for t in np.flatnonzero(~inside).tolist():
        s0 = max(i0 - int(pm.tidx[t]), 0)
        s1 = min(i1 - int(pm.tidx[t]), HPAGE_PMD_NR)
        dst = v.vpn0 + int(pm.tidx[t]) - base
        flat[dst + s0:dst + s1] = e[t, s0:s1]


def pagemap_entries(k, proc, first_vpn, count, capable):
    """The u64 pagemap entries of virtual pages [first_vpn, first_vpn+count)
    (pagemap_read() walking pagemap_pmd_range()).  Without CAP_SYS_ADMIN
    the PFN bits read as zero (pm->show_pfn false).

    Work is proportional to the entries asked for: they are laid out in
    whole 2M blocks; a PMD leaf fills its block with one broadcast (its
    flags, frame pmd_pfn() + idx as pagemap_pmd_range_thp() counts), a PTE
    table is converted row-wise, the rest stays 0 (pagemap_pte_hole())."""
    if count <= 0:
        return np.zeros(0, dtype=np.uint64)
    kbase = first_vpn >> HPAGE_PMD_ORDER
    base = kbase << HPAGE_PMD_ORDER
    pad = first_vpn - base
    nblk = (pad + count + HPAGE_PMD_NR - 1) >> HPAGE_PMD_ORDER
    grid = np.zeros((nblk, HPAGE_PMD_NR), dtype=np.uint64)
    flat = grid.reshape(-1)
    lo_addr = first_vpn << PAGE_SHIFT
    hi_addr = (first_vpn + count) << PAGE_SHIFT
    for v in proc.mm.vmas_in(lo_addr, hi_addr):
        i0 = v.page_index(max(v.start, lo_addr))
        i1 = v.page_index(min(v.end, hi_addr))
        pm = query.vma_pagemap(k, v, i0, i1)
        if len(pm.tidx):
            _pagemap_tables(grid, flat, base, v, i0, i1, pm, capable)
        if len(pm.lidx):
            rows = ((v.vpn0 + pm.lidx) >> HPAGE_PMD_ORDER) - kbase
            e = _pm_flags(np.ones(len(rows), dtype=bool), pm.lexcl, pm.lfile, pm.lsoft_dirty)
            if capable:
                grid[rows] = (e | pm.lpfn.view(np.uint64))[:, None] + _PMD_SLOTS
            else:
                grid[rows] = e[:, None]
    return flat[pad:pad + count]


def pagemap_size(proc):
    """pagemap_read() answers up to TASK_SIZE."""
    return (proc.mm.task_size >> PAGE_SHIFT) * 8


def status_vm(k, proc):
    s = query.mm_stats(k, proc)
    rss = s['anon'] + s['file'] + s['shmem']
    kb = PAGE_SIZE >> 10
    return StatusVm(vm_peak=max(s['hiwater_vm'], s['total_vm']) * kb, vm_size=s['total_vm'] * kb,
                    vm_lck=0, vm_pin=s['pinned_vm'] * kb, vm_hwm=max(s['hiwater_rss'], rss) * kb,
                    vm_rss=rss * kb, rss_anon=s['anon'] * kb, rss_file=s['file'] * kb,
                    rss_shmem=s['shmem'] * kb, vm_data=s['data_vm'] * kb,
                    vm_stk=s['stack_vm'] * kb, vm_exe=0, vm_lib=0, vm_pte=s['pgtables'] * kb,
                    vm_swap=s['swap'] * kb)


def status(k, proc):
    st = ProcStatus(name=proc.comm, pid=proc.pid, tgid=proc.pid, ppid=proc.ppid,
                    pgid=proc.pid, sid=1 if proc.pid != 1 else 1,
                    uid=(proc.uid,) * 4, gid=(proc.gid,) * 4, vm=status_vm(k, proc))
    return proc_status_text(st).encode()


def statm(k, proc):
    s = query.mm_stats(k, proc)
    rss = s['anon'] + s['file'] + s['shmem']
    return statm_text(s['total_vm'], rss, s['file'] + s['shmem'], 0, 0,
                      s['data_vm'] + s['stack_vm'], 0).encode()


def stat(k, proc):
    s = query.mm_stats(k, proc)
    rss = s['anon'] + s['file'] + s['shmem']
    st = ProcStat(pid=proc.pid, comm=proc.comm, state='S', ppid=proc.ppid, pgrp=proc.pid,
                  session=1, minflt=proc.minflt, starttime=proc.start_ticks,
                  vsize=s['total_vm'] << PAGE_SHIFT, rss=rss)
    return proc_stat_line(st).encode()


def exe_path(proc):
    return '/usr/bin/%s' % proc.comm.replace('/', '_')


def cmdline(k, proc):
    return cmdline_bytes([exe_path(proc)])


def comm(k, proc):
    return comm_text(proc.comm).encode()


def limits(k, proc):
    return limits_text().encode()


def cgroup(k, proc):
    return cgroup_text_hybrid(memory_path=proc.cgroup, other_path=proc.cgroup).encode()

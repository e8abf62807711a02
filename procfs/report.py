"""Side-by-side reports over several kernel configs: `mmemu diff` (what the
config changes in what /proc shows) and `mmemu tools` (what each family of
monitoring tools computes from it, next to the true values)."""
import numpy as np

from mmcore import query
from mmcore.memory import FL_ANON, FL_ZERO, PAGE_SIZE
from . import pid as pidfiles
from .formats.smaps import SmapsCounters
from .system import meminfo_values

KB = PAGE_SIZE >> 10
SMAPS_FIELDS = [('Rss', 'resident'), ('Pss', 'pss'), ('Pss_Dirty', 'pss_dirty'),
                ('Shared_Clean', 'shared_clean'), ('Shared_Dirty', 'shared_dirty'),
                ('Private_Clean', 'private_clean'), ('Private_Dirty', 'private_dirty'),
                ('Anonymous', 'anonymous'), ('AnonHugePages', 'anonymous_thp'),
                ('LazyFree', 'lazyfree')]
PSS_FIELDS = {'pss', 'pss_dirty'}


def _kb(counters, attr):
    v = getattr(counters, attr)
    return (v >> 12 >> 10) if attr in PSS_FIELDS else v >> 10


def range_facts(k, proc, name):
    """Per named range of a process: smaps counters and page-level counts."""
    vmas = [v for v in proc.mm.vmas if v.name == name]
    c = SmapsCounters()
    excl = kpc1 = 0
    kpc_values = []
    for v in vmas:
        c = c + pidfiles.vma_counters(k, v)
        pv = query.vma_pages(k, v, present_only=True)
        excl += int(np.count_nonzero(pv.pm_exclusive & pv.normal))
        if pv.normal.any():
            kpc = query.kpagecount(k, pv.pfn[pv.normal])
            kpc1 += int(np.count_nonzero(kpc == 1))
            kpc_values.append(kpc)
    kpc_all = np.concatenate(kpc_values) if kpc_values else np.zeros(0, dtype=np.uint64)
    rows = [(label, _kb(c, attr)) for label, attr in SMAPS_FIELDS]
    rows.append(('USS (Private_*)', (c.private_clean + c.private_dirty) >> 10))
    rows.append(('pages with PM_MMAP_EXCLUSIVE', excl))
    rows.append(('pages with kpagecount == 1', kpc1))
    rows.append(('sum of kpagecount', int(kpc_all.sum())))
    return rows


def system_facts(k):
    mi, _ = meminfo_values(k)
    rows = [('meminfo ' + key, mi[key]) for key in ('AnonPages', 'Mapped', 'Shmem', 'AnonHugePages')]
    for cg in k.cgroups:
        s = query.memcg_stats(k, cg, hierarchical=True)
        rows.append(('memcg %s anon (v1 rss)' % cg, s['anon_mapped'] * KB))
        rows.append(('memcg %s file_mapped (v1 mapped_file)' % cg, s['file_mapped'] * KB))
    return rows


def _table(title, header, rows, only_diff):
    widths = [max(len(header[0]), *(len(r[0]) for r in rows))] if rows else [len(header[0])]
    cols = len(header) - 1
    for i in range(cols):
        widths.append(max([len(header[i + 1])] + [len(str(r[i + 1])) for r in rows]))
    out = [title]
    fmt = '  %-' + str(widths[0]) + 's' + ''.join('  %' + str(w) + 's' for w in widths[1:])
    out.append(fmt % tuple(header) + '')
    shown = 0
    for r in rows:
        differs = len(set(r[1:])) > 1
        if only_diff and not differs:
            continue
        out.append((fmt % tuple(str(x) for x in r)) + ('   <-' if differs else ''))
        shown += 1
    if shown == 0:
        out.append('  (no difference)')
    return '\n'.join(out)


def diff_report(scenario, kernels, only_diff=True):
    """Text: per process and range, the values that differ between configs."""
    names = [cfg.name for cfg, _ in kernels]
    k0 = kernels[0][1]
    out = ['scenario %s: %s' % (scenario.name, ', '.join(names)),
           'values in kB unless they count pages; "<-" marks a difference', '']
    for pid in sorted(p for p in k0.processes if p != 1):
        proc0 = k0.processes[pid]
        ranges = []
        for v in proc0.mm.vmas:
            if v.name not in ranges:
                ranges.append(v.name)
        for name in ranges:
            per = [dict(range_facts(k, k.processes[pid], name)) for _, k in kernels]
            labels = [label for label, _ in range_facts(k0, proc0, name)]
            rows = [(label,) + tuple(p[label] for p in per) for label in labels]
            out.append(_table('pid %d (%s) range %s' % (pid, proc0.comm, name), ['', *names],
                              rows, only_diff))
            out.append('')
    per = [dict(system_facts(k)) for _, k in kernels]
    labels = [label for label, _ in system_facts(k0)]
    rows = [(label,) + tuple(p[label] for p in per) for label in labels]
    out.append(_table('system', ['', *names], rows, only_diff))
    return '\n'.join(out) + '\n'


# --- tools ------------------------------------------------------------------------------------

def true_values(k):
    """The precise model: per process true USS (pages no other process
    maps), true PSS (each page shared evenly by its mappings), RSS; and
    system-wide the anon pages that are mapped."""
    mem = k.mem
    per_proc = {}
    for pid, p in k.processes.items():
        pf = [v.mapped_pfns() for v in p.mm.vmas]
        pf = np.concatenate(pf) if pf else np.zeros(0, dtype=np.int64)
        pf = pf[(mem.flags[mem.head[pf]] & FL_ZERO) == 0] if len(pf) else pf
        per_proc[pid] = pf
    all_pf = np.concatenate(list(per_proc.values())) if per_proc else np.zeros(0, dtype=np.int64)
    maps = np.bincount(all_pf, minlength=mem.nr_frames) if len(all_pf) else np.zeros(mem.nr_frames, int)
    owners = np.zeros(mem.nr_frames, dtype=np.int64)
    for pf in per_proc.values():
        owners[np.unique(pf)] += 1
    out = {}
    for pid, pf in per_proc.items():
        out[pid] = {
            'uss': int(np.count_nonzero(owners[pf] == 1)) * KB,
            'pss': int((PAGE_SIZE / maps[pf]).sum()) >> 10 if len(pf) else 0,
            'rss': len(pf) * KB,
        }
    mapped = np.flatnonzero(maps)
    anon = mapped[(mem.flags[mem.head[mapped]] & FL_ANON) != 0]
    return out, {'anon_pages': len(anon) * KB, 'file_mapped': (len(mapped) - len(anon)) * KB}


def tool_facts(k, proc):
    total = SmapsCounters()
    excl = kpc1 = 0
    for v in proc.mm.vmas:
        total = total + pidfiles.vma_counters(k, v)
        pv = query.vma_pages(k, v, present_only=True)
        excl += int(np.count_nonzero(pv.pm_exclusive & pv.present))
        if pv.present.any():
            kpc1 += int(np.count_nonzero(query.kpagecount(k, pv.pfn[pv.present]) == 1))
    s = query.mm_stats(k, proc)
    return {
        'uss_smaps': (total.private_clean + total.private_dirty) >> 10,
        'uss_kpagecount': kpc1 * KB,
        'uss_pagemap': excl * KB,
        'pss': total.pss >> 12 >> 10,
        'rss': (s['anon'] + s['file'] + s['shmem']) * KB,
    }


TOOL_ROWS = [
    ('uss_smaps', 'USS  Σ Private_* of smaps_rollup (psutil, smem, smemstat, ps_mem)', 'uss'),
    ('uss_kpagecount', 'USS  pages with kpagecount == 1 (kpagecount readers)', 'uss'),
    ('uss_pagemap', 'USS  pages with PM_MMAP_EXCLUSIVE (pagemap readers)', 'uss'),
    ('pss', 'PSS  smaps_rollup Pss (psutil, smem, pmap -X, process-exporter)', 'pss'),
    ('rss', 'RSS  statm/status/stat (ps, top, psutil)', 'rss'),
]


def tools_report(scenario, kernels):
    names = [cfg.name for cfg, _ in kernels]
    k0 = kernels[0][1]
    truth, sys_truth = true_values(k0)
    header = ['', *names, 'true']
    out = ['scenario %s: what monitoring tools report under each config (kB)' % scenario.name,
           '"true" is the precise model (who maps which page); "<-" marks a config that differs from it',
           '']
    for pid in sorted(p for p in k0.processes if p != 1):
        facts = [tool_facts(k, k.processes[pid]) for _, k in kernels]
        rows = []
        for key, label, tkey in TOOL_ROWS:
            vals = [f[key] for f in facts]
            rows.append((label, *vals, truth[pid][tkey]))
        out.append(_tools_table('pid %d (%s)' % (pid, k0.processes[pid].comm), header, rows))
        out.append('')
    rows = []
    for label, key, tkey in (('meminfo AnonPages (free, node-exporter, smem -w)', 'AnonPages', 'anon_pages'),
                             ('meminfo Mapped', 'Mapped', 'file_mapped')):
        vals = []
        for _, k in kernels:
            mi, _ = meminfo_values(k)
            vals.append(mi[key])
        rows.append((label, *vals, sys_truth[tkey]))
    for cg in k0.cgroups:
        vals = [query.memcg_stats(k, cg, hierarchical=True)['anon_mapped'] * KB for _, k in kernels]
        truth_cg = _true_memcg_anon(k0, cg)
        rows.append(('memcg %s anon / v1 rss' % cg, *vals, truth_cg))
    out.append(_tools_table('system', header, rows))
    return '\n'.join(out) + '\n'


def _true_memcg_anon(k, cg):
    mem = k.mem
    idx = [i for i, c in enumerate(k.cgroups) if c == cg or cg == '/' or c.startswith(cg + '/')]
    pf = [v.mapped_pfns() for p in k.processes.values() for v in p.mm.vmas]
    if not pf:
        return 0
    pf = np.unique(np.concatenate(pf))
    heads = mem.head[pf]
    sel = ((mem.flags[heads] & FL_ANON) != 0) & np.isin(mem.memcg[heads], idx)
    return int(np.count_nonzero(sel)) * KB


def _tools_table(title, header, rows):
    w0 = max(len(r[0]) for r in rows)
    widths = [max(len(header[i]), *(len(str(r[i])) for r in rows)) for i in range(1, len(header))]
    fmt = '  %-' + str(w0) + 's' + ''.join('  %' + str(w) + 's' for w in widths)
    out = [title, fmt % tuple(header)]
    for r in rows:
        true = r[-1]
        line = fmt % tuple(str(x) for x in r)
        if any(v != true for v in r[1:-1]):
            line += '   <- ' + ', '.join('%s %+d' % (header[i + 1], r[i + 1] - true)
                                        for i in range(len(r) - 2) if r[i + 1] != true)
        out.append(line)
    return '\n'.join(out)

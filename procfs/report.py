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
    """Per named range of a process (every VMA when `name` is None): smaps
    counters and page-level counts."""
    vmas = [v for v in proc.mm.vmas if name is None or v.name == name]
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
    captured = getattr(k0, 'capture', None) is not None
    if captured:
        out[1:1] = capture_notes(k0)
    for pid in _shown_pids(k0):
        proc0 = k0.processes[pid]
        ranges = []
        for v in proc0.mm.vmas:
            if v.name not in ranges:
                ranges.append(v.name)
        for name in [None] if captured else ranges:
            per = [dict(range_facts(k, k.processes[pid], name)) for _, k in kernels]
            labels = [label for label, _ in range_facts(k0, proc0, name)]
            rows = [(label,) + tuple(p[label] for p in per) for label in labels]
            if captured:
                rows += uss_range_rows(kernels, pid)
            title = 'pid %d (%s)' % (pid, proc0.comm) if name is None else \
                'pid %d (%s) range %s' % (pid, proc0.comm, name)
            out.append(_table(title, ['', *names], rows, only_diff))
            out.append('')
    per = [dict(system_facts(k)) for _, k in kernels]
    labels = [label for label, _ in system_facts(k0)]
    rows = [(label,) + tuple(p[label] for p in per) for label in labels]
    out.append(_table('system', ['', *names], rows, only_diff))
    return '\n'.join(out) + '\n'


# --- tools ------------------------------------------------------------------------------------

def _mapped_pfns(proc, mem):
    """PFN of every page the process maps, in address order, zero pages
    left out (they belong to nobody)."""
    pf = [v.mapped_pfns() for v in proc.mm.vmas]
    pf = np.concatenate(pf) if pf else np.zeros(0, dtype=np.int64)
    return pf[(mem.flags[mem.head[pf]] & FL_ZERO) == 0] if len(pf) else pf


def true_values(k):
    """The precise model: per process true USS (pages no other process
    maps), true PSS (each page shared evenly by its mappings), RSS; and
    system-wide the anon pages that are mapped, and per frame whether a
    process (not a stand-in) maps it.  The stand-in mappers of a capture
    map pages too (processes outside the capture)."""
    mem = k.mem
    standins = {st.pid: st for st in k.capture.standins} if getattr(k, 'capture', None) else {}
    maps = np.zeros(mem.nr_frames, dtype=np.int64)
    owners = np.zeros(mem.nr_frames, dtype=np.int64)
    by_procs = np.zeros(mem.nr_frames, dtype=bool)
    seen = np.zeros(mem.nr_frames, dtype=bool)
    for pid, p in list(k.processes.items()) + list(standins.items()):
        pf = _mapped_pfns(p, mem)
        if not len(pf):
            continue
        maps += np.bincount(pf, minlength=mem.nr_frames)
        seen[pf] = True
        owners += seen
        seen[pf] = False
        if pid not in standins:
            by_procs[pf] = True
    out = {}
    for pid, p in k.processes.items():
        pf = _mapped_pfns(p, mem)          # again: one process's pages at a time in memory
        out[pid] = {
            'uss': int(np.count_nonzero(owners[pf] == 1)) * KB,
            'pss': int((PAGE_SIZE / maps[pf]).sum()) >> 10 if len(pf) else 0,
            'rss': len(pf) * KB,
        }
    mapped = np.flatnonzero(maps)
    anon = mapped[(mem.flags[mem.head[mapped]] & FL_ANON) != 0]
    return out, {'anon_pages': len(anon) * KB, 'file_mapped': (len(mapped) - len(anon)) * KB,
                 'mapped_by_processes': by_procs}


def tool_facts(k, proc):
    """What each family of tools computes for one process: smaps_rollup
    sums, and the pagemap/kpagecount walk over its present pages.  A PMD
    leaf whose pages all answer alike (query.vma_pages whole_leaves) is
    looked at once and counted for its 512 pages."""
    total = SmapsCounters()
    excl = kpc1 = 0
    for v in proc.mm.vmas:
        pv = query.vma_pages(k, v, whole_leaves=True)
        total = total + pidfiles.vma_counters(k, v, pv)
        present = pv.present
        excl += int(pv.nr[pv.pm_exclusive & present].sum())
        if present.any():
            one = query.kpagecount(k, pv.pfn[present]) == 1
            kpc1 += int(pv.nr[present][one].sum())
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
    captured = getattr(k0, 'capture', None) is not None
    if captured:
        out[1:1] = capture_notes(k0)
    for pid in _shown_pids(k0):
        facts = [tool_facts(k, k.processes[pid]) for _, k in kernels]
        rows = []
        for key, label, tkey in TOOL_ROWS:
            vals = [f[key] for f in facts]
            rows.append((label, *vals, truth[pid][tkey]))
        out.append(_tools_table('pid %d (%s)' % (pid, k0.processes[pid].comm), header, rows))
        if captured:
            extra = uss_range_rows(kernels, pid, facts)
            if extra:
                out.append(_range_lines(extra, names))
            out.append(real_kernel_line(k0, pid))
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
        truth_cg = _true_memcg_anon(k0, cg, sys_truth['mapped_by_processes'])
        rows.append(('memcg %s anon / v1 rss' % cg, *vals, truth_cg))
    out.append(_tools_table('system', header, rows))
    return '\n'.join(out) + '\n'


def _true_memcg_anon(k, cg, mapped):
    """Anon pages mapped by the processes, charged to cgroup `cg` or below."""
    mem = k.mem
    idx = [i for i, c in enumerate(k.cgroups) if c == cg or cg == '/' or c.startswith(cg + '/')]
    pf = np.flatnonzero(mapped)
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


def _shown_pids(k):
    """The scenario's processes (not the emulated init), or a capture's."""
    if getattr(k, 'capture', None) is not None:
        return sorted(p['pid'] for p in k.capture.meta['processes'] if p['pid'] in k.processes)
    return sorted(p for p in k.processes if p != 1)


# --- captures ---------------------------------------------------------------------------------

def capture_notes(k):
    """Lines saying what a capture's import assumed (stand-ins, MM-ID
    slots, pages left out)."""
    c = k.capture
    m = c.meta
    cls = c.mmid_classes
    n = lambda key: len(cls.get(key, ()))
    reasons = {}
    for sk in m.get('skipped', []):
        reasons[sk.get('reason', 'unknown')] = reasons.get(sk.get('reason', 'unknown'), 0) + 1
    lines = ['captured on Linux %s at %s: %d processes%s' % (
        m.get('release', '?'), m.get('time', '?'), len(m['processes']),
        ''.join(', %d skipped (%s)' % (n, why) for why, n in sorted(reasons.items())))]
    if c.standin_pages:
        lines.append('stand-in mappers: %d pages are also mapped by processes outside the capture '
                     '(their kpagecount says so); %d stand-in MMs hold those %d mappings, so that '
                     'kpagecount, PSS and "shared" stay true; they are no /proc/PID'
                     % (c.standin_pages, len(c.standins), c.standin_mappings))
    lines.append('MM-ID slots (mmcore/mmid.py): of %d large folios mapped, %d are mapped by 2+ MMs '
                 '(shared bit set in every history; %d by 3+, whose slot owners are unknown and not '
                 'shown by /proc), %d are determined exclusive, %d depend on the history: '
                 'USS ranges below' % (sum(n(x) for x in ('shared', 'single', 'ambiguous')),
                                       n('shared'), n('three_or_more'), n('single'), n('ambiguous')))
    left = []
    if c.not_normal:
        left.append('%d present entries without a normal page (VM_PFNMAP/VM_IO and such)' % c.not_normal)
    if c.dropped:
        left.append('%d entries whose folio changed during the capture' % c.dropped)
    if c.kpagecount_below:
        left.append('%d pages mapped more often than their kpagecount said (changed while read)'
                    % c.kpagecount_below)
    if left:
        lines.append('left out: ' + '; '.join(left))
    lines.append('')
    return lines


def capture_summary(k, names):
    c = k.capture
    lines = ['capture %s: %d processes, Linux %s' % (c.path, len(c.meta['processes']),
                                                   c.meta.get('release', '?')),
             'configs: %s' % ', '.join(names)]
    lines += [x for x in capture_notes(k)[1:] if x]
    return '\n'.join(lines)


def uss_range_rows(kernels, pid, facts=None):
    """USS (Σ Private_*, and pages with bit 56) of one process under each
    config as 'best..worst' over the MM-ID slot histories a capture allows
    (mmcore.mmid), or the plain value where it is determined.  `facts`:
    tool_facts() of the process per kernel, where already computed."""
    from mmcore.mmid import forced_shared
    pair = lambda f: (f['uss_smaps'], f['uss_pagemap'])
    best, worst = [], []
    for i, (_, k) in enumerate(kernels):
        amb = k.capture.mmid_classes.get('ambiguous', np.zeros(0, dtype=np.int64))
        proc = k.processes[pid]
        b = pair(facts[i] if facts is not None else tool_facts(k, proc))
        if len(amb):
            with forced_shared(k.mem, amb):
                w = pair(tool_facts(k, proc))
        else:
            w = b
        best.append(b)
        worst.append(w)
    rows = []
    for i, label in enumerate(('USS Σ Private_* over slot histories',
                               'USS PM_MMAP_EXCLUSIVE over slot histories')):
        vals = []
        for b, w in zip(best, worst):
            vals.append(str(b[i]) if b[i] == w[i] else '%d..%d' % (w[i], b[i]))
        rows.append((label, *vals))
    return rows


def _range_lines(rows, names):
    w0 = max(len(r[0]) for r in rows)
    out = []
    for r in rows:
        out.append('  %-*s  %s' % (w0, r[0], '  '.join('%s: %s' % (n, v) for n, v in zip(names, r[1:]))))
    return '\n'.join(out)


def real_kernel_line(k, pid):
    """What the captured machine's own kernel printed for the process
    (the sum of its smaps), for comparison with its config's column."""
    c = k.capture
    keys = c.meta['smaps_keys']
    pi = next(i for i, p in enumerate(c.meta['processes']) if p['pid'] == pid)
    rows = c.arrays['vma_smaps'][c.arrays['vma_proc'] == pi]
    tot = rows.sum(axis=0) if len(rows) else np.zeros(len(keys), dtype=np.int64)
    v = lambda key: int(tot[keys.index(key)]) if key in keys else 0
    return ('  the captured kernel (%s) showed: USS Σ Private_* %d, PSS %d (Σ per VMA), '
            'RSS %d' % (c.meta.get('release', '?'), v('Private_Clean') + v('Private_Dirty'),
                        v('Pss'), v('Rss')))

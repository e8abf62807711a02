"""Fidelity check of an imported capture: what the emulated
``page_mapcount`` kernel renders for the captured processes next to what
the real kernel showed at capture time (smaps per VMA, pagemap bit 56 and
kpagecount per page).  Used by the real-kernel acceptance test and for
checking a capture of a whole machine."""
from dataclasses import dataclass, field

import numpy as np

from mmcore import query
from mmcore.capture import PB_EXCLUSIVE
from mmcore.imported import _expand
from . import pid as pidfiles
from .capture import parse_smaps

SMAPS_COMPARED = ('Rss', 'Pss', 'Shared_Clean', 'Shared_Dirty', 'Private_Clean',
                  'Private_Dirty', 'Anonymous', 'AnonHugePages', 'ShmemPmdMapped',
                  'FilePmdMapped')
PM_PRESENT = np.uint64(1 << 63)
PM_EXCLUSIVE = np.uint64(1 << 56)


@dataclass
class CheckResult:
    vmas: int = 0
    fields: int = 0
    pages: int = 0
    smaps_diffs: list = field(default_factory=list)    # (pid, start, name, key, real, emulated)
    kpagecount_diffs: int = 0
    bit56_diffs: int = 0
    missing_pages: int = 0          # captured present, emulated absent (not normal pages)
    examples: list = field(default_factory=list)
    per_pid: dict = field(default_factory=dict)     # pid -> differing values and pages

    def ok(self):
        return not self.smaps_diffs and not self.kpagecount_diffs and not self.bit56_diffs

    def summary(self):
        return ('%d VMAs, %d smaps values: %d differ; %d present pages: kpagecount differs on %d, '
                'bit 56 on %d; %d not imported (no normal page)'
                % (self.vmas, self.fields, len(self.smaps_diffs), self.pages,
                   self.kpagecount_diffs, self.bit56_diffs, self.missing_pages))


def check_import(k, cap, skip_names=()):
    """Compares kernel `k` (built from `cap`) with the capture's own record
    of the real kernel.  VMAs named in `skip_names` are left out (e.g.
    [vdso], whose pages every process on the machine maps and whose counts
    move between the reads of a capture)."""
    a = cap.a
    names = cap.meta['names']
    keys = cap.meta['smaps_keys']
    res = CheckResult()
    real_count = a['page_count']
    fhead = a['folio_head'].astype(np.int64)
    forder = a['folio_order'].astype(np.int64)
    fnr = np.where(forder >= 0, np.left_shift(1, np.maximum(forder, 0)), 1)
    fpage0 = np.cumsum(fnr) - fnr
    for pi, pm in enumerate(cap.meta['processes']):
        proc = k.processes.get(pm['pid'])
        if proc is None:
            continue
        emu = {v[0]: v for v in parse_smaps(pidfiles.smaps(k, proc).decode())}
        for vi in np.flatnonzero(a['vma_proc'] == pi):
            name = names[a['vma_name'][vi]]
            start = int(a['vma_start'][vi])
            if a['vma_unread'][vi] or name in skip_names or start not in emu:
                continue
            res.vmas += 1
            ev = emu[start][9]
            for key in SMAPS_COMPARED:
                real = int(a['vma_smaps'][vi][keys.index(key)])
                got = ev.get(key, 0)
                res.fields += 1
                if real != got:
                    res.smaps_diffs.append((pm['pid'], start, name, key, real, got))
                    res.per_pid[pm['pid']] = res.per_pid.get(pm['pid'], 0) + 1
            sel = np.flatnonzero(a['run_vma'] == vi)
            if len(sel) == 0:
                continue
            vpn = _expand(a['run_vpn'][sel], a['run_len'][sel])
            rpfn = _expand(a['run_pfn'][sel], a['run_len'][sel])
            rb56 = np.repeat((a['run_bits'][sel] & PB_EXCLUSIVE) != 0, a['run_len'][sel])
            ent = _pagemap(k, proc, vpn)
            present = (ent & PM_PRESENT) != 0
            res.missing_pages += int(np.count_nonzero(~present))
            res.pages += int(np.count_nonzero(present))
            eb56 = (ent & PM_EXCLUSIVE) != 0
            bad56 = present & (eb56 != rb56)
            res.bit56_diffs += int(np.count_nonzero(bad56))
            fi = np.searchsorted(fhead, rpfn, side='right') - 1
            pos = fpage0[np.maximum(fi, 0)] + (rpfn - fhead[np.maximum(fi, 0)])
            ekpc = np.zeros(len(vpn), dtype=np.int64)
            epfn = (ent & np.uint64((1 << 55) - 1)).astype(np.int64)
            ekpc[present] = query.kpagecount(k, epfn[present]).astype(np.int64)
            badk = present & (ekpc != real_count[pos].astype(np.int64))
            res.kpagecount_diffs += int(np.count_nonzero(badk))
            nbad = int(np.count_nonzero(badk | bad56))
            if nbad:
                res.per_pid[pm['pid']] = res.per_pid.get(pm['pid'], 0) + nbad
            for i in np.flatnonzero(badk | bad56)[:3]:
                if len(res.examples) < 20:
                    res.examples.append((pm['pid'], name, hex(int(vpn[i]) << 12),
                                         'kpc real %d emu %d' % (real_count[pos[i]], ekpc[i]),
                                         'b56 real %d emu %d' % (rb56[i], eb56[i])))
    return res


def _pagemap(k, proc, vpn):
    """Emulated pagemap entries of the given virtual pages."""
    out = np.zeros(len(vpn), dtype=np.uint64)
    if len(vpn) == 0:
        return out
    lo, hi = int(vpn.min()), int(vpn.max()) + 1
    ent = pidfiles.pagemap_entries(k, proc, lo, hi - lo, True)
    return ent[vpn - lo]


def main(argv=None):
    """python -m procfs.capture_check CAPTURE: the import of a capture
    under page_mapcount against the capture's own record."""
    import sys
    from mmcore.capture import load_capture
    from mmcore.config import PAGE_MAPCOUNT
    from mmcore.imported import build_kernel
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print('usage: python -m procfs.capture_check CAPTURE', file=sys.stderr)
        return 2
    cap = load_capture(args[0])
    k = build_kernel(PAGE_MAPCOUNT, cap, with_init=False)
    res = check_import(k, cap)
    print('all: ' + res.summary())
    for p in cap.meta['processes']:
        n = res.per_pid.get(p['pid'], 0)
        print('  pid %d (%s)%s: %s' % (p['pid'], p.get('comm', '?'),
                                      ' [changed while read]' if p.get('changing') else '',
                                      'as captured' if n == 0 else '%d values or pages differ' % n))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())

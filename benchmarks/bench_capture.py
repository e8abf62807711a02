"""Import and mount cost of a big capture.

    python benchmarks/bench_capture.py [--preset thp16|desktop32] [--procs N] [--shared 8G]
        [--private 512M] [--small 4M] [--small-vmas 1] [--mthp 0] [--files 0]
        [--tools] [--mount] [--keep FILE]

Writes a synthetic capture of a machine where `--procs` processes of one
fork tree share `--shared` of PMD-mapped anonymous THPs and each has
`--private` THPs of its own, small pages, mTHPs and mappings of files in
the page cache (synth(); the layout a capture of such a machine has: runs
of PMD leaves and PTEs, per-page kpage* values), then times the import
under every default config in a child process and prints its peak memory;
with --tools the time and peak memory of `mmemu tools`, with --mount the
time until `mmemu mount` returns and the daemon's resident memory.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mmcore.capture import (FORMAT, FORMAT_VERSION, KPF_ACTIVE, KPF_ANON, KPF_COMPOUND_HEAD,  # noqa: E402
                            KPF_COMPOUND_TAIL, KPF_LRU, KPF_MMAP, KPF_OWNER_2, KPF_SWAPBACKED,
                            KPF_REFERENCED, KPF_THP, KPF_UPTODATE, PB_EXCLUSIVE, PB_FILE, PB_PMD,
                            SMAPS_KEYS)
from mmcore.units import size_bytes  # noqa: E402

ANON = (1 << KPF_ANON) | (1 << KPF_SWAPBACKED) | (1 << KPF_LRU) | (1 << KPF_ACTIVE) | \
    (1 << KPF_UPTODATE) | (1 << KPF_MMAP)
FILE = (1 << KPF_LRU) | (1 << KPF_ACTIVE) | (1 << KPF_UPTODATE) | (1 << KPF_MMAP) | \
    (1 << KPF_REFERENCED)


class _Machine:
    """The arrays of a synthetic capture, built folio by folio and VMA by VMA."""

    def __init__(self, procs):
        self.procs = procs
        self.next_pfn = 1 << 20
        self.folios = []          # (heads, order, page flags, page counts), per batch
        self.vmas = []            # (proc, start, end, pgoff, inode, name, flags, perms, smaps)
        self.runs = []            # (vma, vpn, pfn, len, bits)
        self.names = ['']

    def folios_of(self, count, order, flags, mapcount, tail_flags=None):
        """`count` folios of `order` at consecutive PFNs; returns the heads."""
        nr = 1 << order
        self.next_pfn = -(-self.next_pfn // nr) * nr
        heads = self.next_pfn + np.arange(count, dtype=np.int64) * nr
        self.next_pfn += count * nr
        pf = np.full((count, nr), tail_flags if tail_flags is not None else flags, np.uint64)
        pf[:, 0] = flags
        pc = np.broadcast_to(np.asarray(mapcount, np.uint32).reshape(-1, 1) if np.ndim(mapcount)
                             else np.uint32(mapcount), (count, nr))
        self.folios.append((heads, order, pf.ravel(), np.array(pc, np.uint32).ravel()))
        return heads

    def vma(self, proc, start, size, pfn, bits, smaps, flags=0x200073 | (1 << 29), perms=3,
            inode=0, name='', pgoff=0):
        vi = len(self.vmas)
        if name and name not in self.names:
            self.names.append(name)
        self.vmas.append((proc, start, start + size, pgoff, inode, self.names.index(name) if name
                          else 0, flags, perms, [smaps.get(k, 0) for k in SMAPS_KEYS]))
        self.runs.append((vi, start >> 12, int(pfn), size >> 12, bits))

    def save(self, path, meta):
        order = np.argsort(np.concatenate([f[0] for f in self.folios]), kind='stable')
        heads = np.concatenate([f[0] for f in self.folios])
        orders = np.concatenate([np.full(len(f[0]), f[1], np.int8) for f in self.folios])
        pflags = np.concatenate([f[2] for f in self.folios])
        pcount = np.concatenate([f[3] for f in self.folios])
        # page arrays follow the folios' order (they are allocated in PFN order)
        assert (order == np.arange(len(order))).all()
        v = list(zip(*self.vmas))
        r = list(zip(*self.runs))
        meta['names'] = self.names
        np.savez_compressed(
            path, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
            vma_proc=np.array(v[0], np.int32), vma_start=np.array(v[1], np.uint64),
            vma_end=np.array(v[2], np.uint64), vma_pgoff=np.array(v[3], np.uint64),
            vma_major=np.full(len(v[0]), 8, np.uint32), vma_minor=np.ones(len(v[0]), np.uint32),
            vma_inode=np.array(v[4], np.uint64), vma_name=np.array(v[5], np.int32),
            vma_flags=np.array(v[6], np.uint64), vma_perms=np.array(v[7], np.uint8),
            vma_unread=np.zeros(len(v[0]), np.uint8), vma_smaps=np.array(v[8], np.int64),
            run_vma=np.array(r[0], np.int32), run_vpn=np.array(r[1], np.uint64),
            run_pfn=np.array(r[2], np.uint64), run_len=np.array(r[3], np.uint32),
            run_bits=np.array(r[4], np.uint8), folio_head=heads.astype(np.uint64),
            folio_order=orders, page_flags=pflags, page_count=pcount,
            page_cgroup=np.full(len(pflags), 35, np.uint64))
        return len(pflags) * 4096, sum(x[3] for x in self.runs) * 4096


def synth(path, procs, shared, private, small=4 << 20, small_vmas=1, mthp=0, files=0,
          file_size=2 << 20):
    """A fork tree of `procs` processes: `shared` of PMD-mapped anonymous
    THPs all of them map, and per process `private` THPs of its own,
    `small` of order-0 anonymous pages in `small_vmas` VMAs (half of them
    dirty in smaps, so that the import fits PTE dirty bits per VMA),
    `mthp` of PTE-mapped 64K anonymous folios; and `files` files of
    `file_size` in the page cache (order-0 and 16K folios), each mapped by
    every process and once more outside the capture (a stand-in).
    Returns (bytes in use, bytes mapped in all)."""
    m = _Machine(procs)
    tail = ANON | (1 << KPF_COMPOUND_TAIL) | (1 << KPF_THP)
    head = ANON | (1 << KPF_COMPOUND_HEAD) | (1 << KPF_THP)
    own = np.uint64(1 << KPF_OWNER_2)
    sh = m.folios_of(shared >> 21, 9, head, procs, tail)
    file_heads = []
    for f in range(files):
        order = 2 if f % 2 else 0
        fl = FILE | ((1 << KPF_COMPOUND_HEAD) if order else 0)
        file_heads.append((m.folios_of(file_size >> (12 + order), order, fl, procs + 1,
                                       FILE | (1 << KPF_COMPOUND_TAIL)), order))
    per_proc = []
    for p in range(procs):
        per_proc.append((m.folios_of(private >> 21, 9, head | own, 1, tail),
                         m.folios_of(mthp >> 16, 4, head | own, 1, tail | own),
                         m.folios_of(small >> 12, 0, ANON | own, 1)))
    for p in range(procs):
        pr, mt, sm_pfns = per_proc[p]
        anon = lambda kb, shared_kb=0, pss=None, thp=0, dirty=None: {
            'Rss': kb, 'Pss': kb if pss is None else pss, 'Shared_Dirty': shared_kb,
            'Private_Dirty': (kb - shared_kb) if dirty is None else dirty, 'Referenced': kb,
            'Anonymous': kb, 'AnonHugePages': thp}
        if shared:
            kb = shared >> 10
            m.vma(p, 0x7e0000000000, shared, sh[0], PB_PMD, anon(kb, kb, kb // procs, kb))
        if private:
            kb = private >> 10
            m.vma(p, 0x7e8000000000, private, pr[0], PB_EXCLUSIVE | PB_PMD, anon(kb, thp=kb))
        if mthp:
            m.vma(p, 0x7ee000000000, mthp, mt[0], PB_EXCLUSIVE, anon(mthp >> 10))
        if small:
            per = len(sm_pfns) // small_vmas
            for i in range(small_vmas):
                n = per if i < small_vmas - 1 else len(sm_pfns) - per * i
                kb = n * 4
                m.vma(p, 0x7ef000000000 + i * (64 << 20), n << 12, sm_pfns[i * per],
                      PB_EXCLUSIVE, anon(kb, dirty=kb // 2), flags=0x200073)
        for f, (fh, order) in enumerate(file_heads):
            kb = file_size >> 10
            m.vma(p, 0x7f0000000000 + f * (16 << 20), file_size, fh[0], PB_FILE,
                  {'Rss': kb, 'Pss': kb // (procs + 1), 'Shared_Clean': kb, 'Referenced': kb},
                  flags=0x75, perms=5, inode=1000 + f, name='/usr/lib/libsynth-%d.so' % f)
    meta = {'format': FORMAT, 'version': FORMAT_VERSION, 'release': 'synthetic',
            'time': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
            'thp': {'enabled': 'madvise', 'sizes': {}, 'shmem_enabled': 'never',
                    'use_zero_page': True},
            'processes': [{'pid': 1000 + p, 'ppid': 1000 if p else 1, 'comm': 'worker',
                           'uid': 0, 'cgroup': '/bench'} for p in range(procs)],
            'skipped': [], 'smaps_keys': list(SMAPS_KEYS), 'memcgs': {'35': '/bench'}}
    return m.save(path, meta)


def _child(args):
    """(seconds, peak RSS in bytes, stdout) of a child process run to its end."""
    t = time.monotonic()
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.communicate()
    dt = time.monotonic() - t
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)     # the largest child so far
    if p.returncode != 0:
        raise SystemExit('%s failed: %s' % (' '.join(args[2:4]), err.strip()[-500:]))
    return dt, ru.ru_maxrss << 10, out


PRESETS = {
    # the layout of the original benchmark: 16 GiB in use, few VMAs
    'thp16': dict(procs=16, shared='8G', private='512M', small='4M', small_vmas=1, mthp='0',
                  files=0),
    # 31 GiB in use, 20k VMAs: THPs shared and private, small pages in many
    # VMAs, 64K mTHPs and page cache mapped by every process
    'desktop32': dict(procs=128, shared='8G', private='128M', small='32M', small_vmas=32,
                      mthp='16M', files=64),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--preset', choices=sorted(PRESETS), default='thp16')
    ap.add_argument('--procs', type=int)
    ap.add_argument('--shared')
    ap.add_argument('--private')
    ap.add_argument('--small', help='size of the order-0 anonymous pages per process (4M)')
    ap.add_argument('--small-vmas', type=int, help='VMAs those are spread over')
    ap.add_argument('--mthp', help='size of the PTE-mapped 64K anonymous folios per process (4M)')
    ap.add_argument('--files', type=int, help='files in the page cache, mapped by all')
    ap.add_argument('--mount', action='store_true')
    ap.add_argument('--tools', action='store_true', help='time `mmemu tools` too')
    ap.add_argument('--keep', help='write the capture here and keep it')
    args = ap.parse_args()
    p = dict(PRESETS[args.preset])
    for key in p:
        if getattr(args, key) is not None:
            p[key] = getattr(args, key)
    for key, unit in (('shared', 2 << 20), ('private', 2 << 20), ('small', 4 << 10), ('mthp', 64 << 10)):
        if size_bytes(p[key]) % unit:
            ap.error('--%s %s is not a multiple of %d kB' % (key, p[key], unit >> 10))
    tmp = Path(tempfile.mkdtemp(prefix='mmemu-bench-capture-'))
    path = args.keep or str(tmp / 'big.npz')
    if not path.endswith('.npz'):
        path += '.npz'      # what np.savez_compressed() writes
    t = time.monotonic()
    in_use, mapped = synth(path, p['procs'], size_bytes(p['shared']), size_bytes(p['private']),
                           size_bytes(p['small']), p['small_vmas'], size_bytes(p['mthp']),
                           p['files'])
    print('synthetic capture (%s): %d processes, %.1f GiB in use, %.1f GiB mapped in all, '
          'file %d kB (%.1f s to write)' % (args.preset, p['procs'], in_use / 2**30,
                                            mapped / 2**30, os.path.getsize(path) >> 10,
                                            time.monotonic() - t))
    code = ('import sys, time; sys.path.insert(0, %r); from procfs.build import build_tree; '
            'from procfs.cli import default_configs; t = time.monotonic(); '
            'root, s = build_tree(%r, default_configs()); print(time.monotonic() - t)'
            % (str(ROOT), path))
    _, peak, out = _child([sys.executable, '-c', code])
    dt = float(out.split()[-1])
    print('import under 3 configs: %.1f s; peak RSS of the importer %.2f GiB '
          '(%.1f%% of the memory in use)' % (dt, peak / 2**30, 100 * peak / in_use))
    if args.tools:
        dt, peak, out = _child([sys.executable, '-m', 'procfs', 'tools', path])
        print('tools: %.1f s (import included), peak RSS %.2f GiB, %d lines'
              % (dt, peak / 2**30, out.count('\n')))
    if args.mount:
        mnt = tmp / 'mnt'
        mnt.mkdir()
        t = time.monotonic()
        r = subprocess.run([sys.executable, '-m', 'procfs', 'mount', path, str(mnt)],
                           capture_output=True, text=True)
        dt = time.monotonic() - t
        if r.returncode != 0:
            print('mount failed: %s' % r.stderr.strip())
            return 1
        pid = int(r.stdout.split('daemon pid ')[1].split(')')[0])
        rss = [line for line in open('/proc/%d/status' % pid) if line.startswith('VmRSS')][0]
        t = time.monotonic()
        with open(mnt / 'page_mapcount' / 'proc' / '1000' / 'smaps_rollup') as f:
            f.read()
        rt = time.monotonic() - t
        print('mount: %.1f s until mounted; daemon %s; smaps_rollup of pid 1000: %.2f s'
              % (dt, rss.strip(), rt))
        subprocess.run([sys.executable, '-m', 'procfs', 'umount', str(mnt)], capture_output=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())

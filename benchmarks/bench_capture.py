"""Import and mount cost of a big capture.

    python benchmarks/bench_capture.py [--procs 16] [--shared 8G] [--private 512M] [--mount]

Writes a synthetic capture of a machine where `--procs` processes of one
fork tree share `--shared` of PMD-mapped anonymous THPs and each has
`--private` THPs of its own plus 4 MiB of small pages (the layout a
capture of such a machine has: runs of PMD leaves, per-page kpage*
values), then times the import under every default config, prints the
peak memory of the importing process, and with --mount the time until
`mmemu mount` returns and the daemon's resident memory.
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
                            KPF_THP, KPF_UPTODATE, PB_EXCLUSIVE, PB_PMD, SMAPS_KEYS)
from mmcore.units import size_bytes  # noqa: E402

ANON = (1 << KPF_ANON) | (1 << KPF_SWAPBACKED) | (1 << KPF_LRU) | (1 << KPF_ACTIVE) | \
    (1 << KPF_UPTODATE) | (1 << KPF_MMAP)


def synth(path, procs, shared, private, small=4 << 20):
    nsh = shared >> 21
    npr = private >> 21
    nsm = small >> 12
    # real PFNs: shared THPs, then every process's THPs, then small pages
    sh_heads = np.arange(nsh, dtype=np.int64) * 512 + (1 << 20)
    pr_heads = sh_heads[-1] + 512 + np.arange(procs * npr, dtype=np.int64) * 512 if nsh else \
        (1 << 20) + np.arange(procs * npr, dtype=np.int64) * 512
    sm_base = int(pr_heads[-1] + 512 if len(pr_heads) else sh_heads[-1] + 512)
    sm_pfns = sm_base + np.arange(procs * nsm, dtype=np.int64)
    heads = np.concatenate([sh_heads, pr_heads, sm_pfns])
    orders = np.concatenate([np.full(len(sh_heads) + len(pr_heads), 9), np.zeros(len(sm_pfns))])
    nthp = len(sh_heads) + len(pr_heads)
    tail = ANON | (1 << KPF_COMPOUND_TAIL) | (1 << KPF_THP)
    head = ANON | (1 << KPF_COMPOUND_HEAD) | (1 << KPF_THP)
    pflags = np.full(nthp * 512 + len(sm_pfns), tail, dtype=np.uint64)
    pflags[np.arange(nthp) * 512] = head
    pr_first = np.arange(len(sh_heads), nthp) * 512
    pflags[pr_first] |= np.uint64(1 << KPF_OWNER_2)
    pflags[nthp * 512:] = ANON | (1 << KPF_OWNER_2)
    pcount = np.ones(len(pflags), dtype=np.uint32)
    pcount[:len(sh_heads) * 512] = procs
    pcgroup = np.full(len(pflags), 35, dtype=np.uint64)
    vma_rows, runs = [], []
    for p in range(procs):
        base = 0x7f0000000000 - (p + 1) * 0  # same layout in every process (fork)
        layout = [(0x7e0000000000, shared, sh_heads, 0, True),
                  (0x7e8000000000, private, pr_heads[p * npr:(p + 1) * npr], PB_EXCLUSIVE, True),
                  (0x7ef000000000, small, sm_pfns[p * nsm:(p + 1) * nsm], PB_EXCLUSIVE, False)]
        del base
        for start, size, pf, bits, thp in layout:
            if size == 0:
                continue
            vi = len(vma_rows)
            kb = size >> 10
            shared_kb = kb if bits == 0 else 0
            sm = {'Rss': kb, 'Pss': kb // (procs if bits == 0 else 1), 'Shared_Dirty': shared_kb,
                  'Private_Dirty': kb - shared_kb, 'Referenced': kb, 'Anonymous': kb,
                  'AnonHugePages': kb if thp else 0}
            vma_rows.append((p, start, start + size, 0, 0, 0, 0, 0, 0x200073 | (1 << 29), 3, 0,
                             [sm.get(k, 0) for k in SMAPS_KEYS]))
            if thp:
                runs.append((vi, start >> 12, int(pf[0]), size >> 12, bits | PB_PMD))
            else:
                runs.append((vi, start >> 12, int(pf[0]), size >> 12, bits))
    cols = list(zip(*vma_rows))
    rc = list(zip(*runs))
    meta = {'format': FORMAT, 'version': FORMAT_VERSION, 'release': 'synthetic',
            'time': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
            'thp': {'enabled': 'madvise', 'sizes': {}, 'shmem_enabled': 'never',
                    'use_zero_page': True},
            'processes': [{'pid': 1000 + p, 'ppid': 1000 if p else 1, 'comm': 'worker',
                           'uid': 0, 'cgroup': '/bench'} for p in range(procs)],
            'skipped': [], 'names': [''], 'smaps_keys': list(SMAPS_KEYS),
            'memcgs': {'35': '/bench'}}
    np.savez_compressed(
        path, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
        vma_proc=np.array(cols[0], np.int32), vma_start=np.array(cols[1], np.uint64),
        vma_end=np.array(cols[2], np.uint64), vma_pgoff=np.array(cols[3], np.uint64),
        vma_major=np.array(cols[4], np.uint32), vma_minor=np.array(cols[5], np.uint32),
        vma_inode=np.array(cols[6], np.uint64), vma_name=np.array(cols[7], np.int32),
        vma_flags=np.array(cols[8], np.uint64), vma_perms=np.array(cols[9], np.uint8),
        vma_unread=np.array(cols[10], np.uint8), vma_smaps=np.array(cols[11], np.int64),
        run_vma=np.array(rc[0], np.int32), run_vpn=np.array(rc[1], np.uint64),
        run_pfn=np.array(rc[2], np.uint64), run_len=np.array(rc[3], np.uint32),
        run_bits=np.array(rc[4], np.uint8), folio_head=heads.astype(np.uint64),
        folio_order=orders.astype(np.int8), page_flags=pflags, page_count=pcount,
        page_cgroup=pcgroup)
    in_use = (nthp * 512 + len(sm_pfns)) * 4096
    mapped = sum(int(r[3]) for r in runs) * 4096
    return in_use, mapped


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--procs', type=int, default=16)
    ap.add_argument('--shared', default='8G')
    ap.add_argument('--private', default='512M')
    ap.add_argument('--mount', action='store_true')
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix='mmemu-bench-capture-'))
    path = str(tmp / 'big.npz')
    t = time.monotonic()
    in_use, mapped = synth(path, args.procs, size_bytes(args.shared), size_bytes(args.private))
    print('synthetic capture: %d processes, %.1f GiB in use, %.1f GiB mapped in all, file %d kB '
          '(%.1f s to write)' % (args.procs, in_use / 2**30, mapped / 2**30,
                                 os.path.getsize(path) >> 10, time.monotonic() - t))
    from procfs.build import build_tree
    from procfs.cli import default_configs
    configs = default_configs()
    t = time.monotonic()
    root, summary = build_tree(path, configs)
    dt = time.monotonic() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10
    print('import under %d configs: %.1f s; peak RSS of the importer %.2f GiB '
          '(%.1f%% of the memory in use)' % (len(configs), dt, peak / 2**30, 100 * peak / in_use))
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

#!/usr/bin/env python3
"""Times the mm core on large ranges: a 1 GiB range of 64K mTHPs (262,144
pages) is faulted, forked, partially CoW'd by the child and unmapped, and
a 1 GiB range of PMD THPs likewise.  Prints seconds per operation and the
peak resident memory of this process.

    python benchmarks/bench_core.py [--size 1G] [--config configs/kernels/page_mapcount.yaml]
"""
import argparse
import os
import resource
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

from mmcore.config import load_kernel_config          # noqa: E402
from mmcore.kernel import Kernel                      # noqa: E402
from mmcore.scenario import parse_scenario_text, parse_size  # noqa: E402

WORKLOADS = {
    '64K mTHP': ("sizes: {64K: always}", "align: 64K", ''),
    '2M THP': ("enabled: always", "align: 2M", ''),
    '4K pages': ("enabled: never", "align: 4K", ''),
}


def scenario_text(size, knobs, align):
    mem = max(4 * size, 1 << 30)
    return """format: 1
name: bench
kernel:
  memory: %d
  thp: {%s}
processes:
  - pid: 100
steps:
  - mmap: {pid: 100, name: buf, size: %d, %s}
  - write: {pid: 100, vma: buf}
  - fork: {pid: 100, child: 101}
  - write: {pid: 101, vma: buf, offset: 0, length: %d}
  - write: {pid: 100, vma: buf, offset: %d, length: %d}
  - munmap: {pid: 101, vma: buf, offset: %d, length: %d}
  - exit: {pid: 101}
  - munmap: {pid: 100, vma: buf}
""" % (mem, knobs, size, align, size // 8, size // 2, size // 16, size // 4, size // 2)


NAMES = ['mmap', 'fault (write all)', 'fork', 'child CoW 1/8', 'parent writes 1/16',
         'child munmap 1/2', 'child exit', 'parent munmap']


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--size', default='1G')
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument('--config', action='append',
                    default=None, help='kernel config file(s)')
    a = ap.parse_args()
    size = parse_size(a.size, '--size')
    configs = a.config or [os.path.join(here, '..', 'configs', 'kernels', n)
                           for n in ('page_mapcount.yaml', 'no_page_mapcount.yaml')]
    for path in configs:
        cfg = load_kernel_config(path)
        for wl, (knobs, align, _) in WORKLOADS.items():
            sc = parse_scenario_text(scenario_text(size, knobs, align))
            t0 = time.perf_counter()
            k = Kernel(cfg, sc)
            init = time.perf_counter() - t0
            times = []
            for st in sc.steps:
                t = time.perf_counter()
                k.apply(st)
                times.append(time.perf_counter() - t)
            total = init + sum(times)
            print('%-18s %-10s %s: init %.3fs, %s; total %.2fs' % (
                cfg.name, wl, a.size, init,
                ', '.join('%s %.3fs' % (n, t) for n, t in zip(NAMES, times)), total))
    print('peak RSS of the benchmark process: %d MiB'
          % (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024))


if __name__ == '__main__':
    main()

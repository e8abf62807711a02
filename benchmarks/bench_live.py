#!/usr/bin/env python3
"""What the live machinery costs: the replay of bench_core's 1 GiB
workloads with and without the MM-ID slot history (kept by every kernel
for `mmemu explain`), its size, and the copy of the kernels a live batch
of steps makes.  Medians of several runs.

    python benchmarks/bench_live.py [--size 1G] [--runs 3]
"""
import argparse
import copy
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

from bench_core import WORKLOADS, scenario_text    # noqa: E402
from mmcore.config import load_kernel_config       # noqa: E402
from mmcore.kernel import Kernel                   # noqa: E402
from mmcore.scenario import parse_scenario_text, parse_size  # noqa: E402

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'configs', 'kernels',
                      'no_page_mapcount.yaml')


def replay(cfg, sc, history):
    k = Kernel(cfg, sc)
    if not history:
        k.rmap.history = None
    t = time.perf_counter()
    k.run(sc.steps)
    return time.perf_counter() - t, k


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--size', default='1G')
    ap.add_argument('--runs', type=int, default=3)
    a = ap.parse_args()
    size = parse_size(a.size, '--size')
    cfg = load_kernel_config(CONFIG)
    print('%-10s %12s %12s %8s %14s %12s' % ('workload', 'no history', 'history', 'ratio',
                                              'history items', 'copy (s)'))
    for name, (knobs, align, _) in WORKLOADS.items():
        sc = parse_scenario_text(scenario_text(size, knobs, align))
        off = statistics.median(replay(cfg, sc, False)[0] for _ in range(a.runs))
        runs = [replay(cfg, sc, True) for _ in range(a.runs)]
        on = statistics.median(t for t, _ in runs)
        k = runs[-1][1]
        items = sum(len(b[3]) for b in k.slot_history._batches)
        k2 = Kernel(cfg, sc)
        k2.run(sc.steps[:2])              # the range faulted: the largest state to copy
        t = []
        for _ in range(a.runs):
            t0 = time.perf_counter()
            copy.deepcopy(k2, {id(sc): sc, id(cfg): cfg})
            t.append(time.perf_counter() - t0)
        print('%-10s %12.3f %12.3f %8.2f %14d %12.3f' % (name, off, on, on / off, items,
                                                        statistics.median(t)))


if __name__ == '__main__':
    main()

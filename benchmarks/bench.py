#!/usr/bin/env python3
"""mmemu's cost against the work: the emulator's operations timed in-process
around Kernel.apply() for every config in configs/kernels, how they grow
from 256M to 4G, emulator memory per frame and per mapped page, a 64G
machine with 16 processes sharing 32G by fork, and reads through a FUSE
mount.  With --real (Linux, root) the same operations are timed on the
running kernel by a small C program (benchmarks/bench_real.c, built with
gcc) under flock /tmp/thp-knobs.lock, every THP knob it touches restored,
and the ratios emulator/real are printed.  Figures are medians of --runs.

    .venv/bin/python benchmarks/bench.py [--real] [--runs 3] [--quick] [--only fuse]
"""
import argparse
import contextlib
import fcntl
import glob
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from mmcore.config import load_kernel_config          # noqa: E402
from mmcore.kernel import Kernel                      # noqa: E402
from mmcore.scenario import parse_scenario_text       # noqa: E402
from procfs import pid as pidfiles                    # noqa: E402

GiB = 1 << 30
MiB = 1 << 20
THP = '/sys/kernel/mm/transparent_hugepage'
OPS = ('fault', 'fork', 'exit', 'munmap', 'smaps_rollup')
# emulator THP knobs per mode, and the same on the real kernel
MODES = {
    '4K': ('enabled: never', {'enabled': 'never'}),
    '64K': ('enabled: never, sizes: {64K: always}', {'enabled': 'never', '64': 'always'}),
    'PMD': ('enabled: always', {'enabled': 'always', '2048': 'inherit'}),
}


def size_name(n):
    return '%dG' % (n // GiB) if n % GiB == 0 else '%dM' % (n // MiB)


def configs():
    return sorted(glob.glob(os.path.join(ROOT, 'configs', 'kernels', '*.yaml')))


def ops_scenario(size, mode):
    return parse_scenario_text("""format: 1
name: bench
kernel:
  memory: %d
  thp: {%s}
processes:
  - pid: 100
steps:
  - mmap: {pid: 100, name: buf, size: %d, align: 2M}
  - write: {pid: 100, vma: buf}
  - fork: {pid: 100, child: 101}
  - exit: {pid: 101}
  - munmap: {pid: 100, vma: buf}
""" % (max(2 * size, GiB), MODES[mode][0], size))


def emu_run(cfg, size, mode):
    """{op: seconds} of one replay."""
    sc = ops_scenario(size, mode)
    k = Kernel(cfg, sc)
    out = {}
    for st, name in zip(sc.steps, (None, 'fault', 'fork', 'exit', 'munmap')):
        if name == 'fork':
            t = time.perf_counter()
            pidfiles.smaps_rollup(k, k.processes[100])
            out['smaps_rollup'] = time.perf_counter() - t
        t = time.perf_counter()
        k.apply(st)
        if name:
            out[name] = time.perf_counter() - t
    return out


def median_runs(fn, runs):
    res = [fn() for _ in range(runs)]
    return {op: statistics.median(r[op] for r in res) for op in res[0]}


# --- the real kernel -----------------------------------------------------------------

def thp_knobs():
    paths = [os.path.join(THP, 'enabled')] + sorted(glob.glob(os.path.join(THP, 'hugepages-*kB',
                                                                           'enabled')))
    out = {}
    for p in paths:
        text = open(p).read()
        out[p] = text[text.index('[') + 1:text.index(']')]
    return out


def set_knob(path, value):
    with open(path, 'w') as f:
        f.write(value)


@contextlib.contextmanager
def real_kernel():
    """The THP knob lock held, every knob restored at the end."""
    with open('/tmp/thp-knobs.lock', 'a') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        saved = thp_knobs()
        try:
            yield
        finally:
            for p, v in saved.items():
                set_knob(p, v)
            fcntl.flock(lock, fcntl.LOCK_UN)


def set_mode(mode):
    knobs = MODES[mode][1]
    for p in glob.glob(os.path.join(THP, 'hugepages-*kB', 'enabled')):
        kb = os.path.basename(os.path.dirname(p))[len('hugepages-'):-len('kB')]
        set_knob(p, knobs.get(kb, 'never'))
    set_knob(os.path.join(THP, 'enabled'), knobs['enabled'])


def build_real():
    exe = os.path.join(tempfile.mkdtemp(prefix='mmemu-bench-'), 'bench_real')
    subprocess.run(['gcc', '-O2', '-o', exe, os.path.join(HERE, 'bench_real.c')], check=True)
    return exe


def real_run(exe, size):
    out = {}
    for line in subprocess.run([exe, str(size)], check=True, capture_output=True,
                               text=True).stdout.splitlines():
        f = line.split()
        out[f[0]] = float(f[1])
        if f[0] == 'pagemap':
            out['pagemap_bytes'] = int(f[2])
    return out


# --- sections ------------------------------------------------------------------------------

def ms(t):
    return '%9.2f' % (t * 1e3)


def section_ops(args, real):
    size = GiB
    print('## Operations on a 1G anonymous region (ms, median of %d)' % args.runs)
    print()
    head = '| config | pages | ' + ' | '.join(OPS) + ' |'
    print(head)
    print('|' + '---|' * (len(OPS) + 2))
    for path in configs():
        cfg = load_kernel_config(path)
        for mode in MODES:
            r = median_runs(lambda: emu_run(cfg, size, mode), args.runs)
            cells = []
            for op in OPS:
                c = ms(r[op]).strip()
                if real:
                    c += ' (%.2f)' % (r[op] / real[mode][op])
                cells.append(c)
            print('| %s | %s | %s |' % (cfg.name, mode, ' | '.join(cells)))
    if real:
        print()
        print('In parentheses: emulated / real.  The real kernel (ms):')
        print()
        print(head.replace('config | ', ''))
        print('|' + '---|' * (len(OPS) + 1))
        for mode in MODES:
            print('| %s | %s |' % (mode, ' | '.join(ms(real[mode][op]).strip() for op in OPS)))
    print()


def section_growth(args):
    cfg = load_kernel_config(os.path.join(ROOT, 'configs', 'kernels', 'page_mapcount.yaml'))
    sizes = [256 * MiB, GiB, 4 * GiB] if not args.quick else [256 * MiB, GiB]
    print('## Growth with the region size, %s (ms, median of %d)' % (cfg.name, args.runs))
    print()
    print('| pages | size | ' + ' | '.join(OPS) + ' |')
    print('|' + '---|' * (len(OPS) + 2))
    for mode in MODES:
        for size in sizes:
            r = median_runs(lambda: emu_run(cfg, size, mode), args.runs)
            print('| %s | %s | %s |' % (mode, size_name(size),
                                        ' | '.join(ms(r[op]).strip() for op in OPS)))
    print()


def arrays_nbytes(obj):
    import numpy as np
    return sum(v.nbytes for v in vars(obj).values() if isinstance(v, np.ndarray))


def section_memory():
    cfg = load_kernel_config(os.path.join(ROOT, 'configs', 'kernels', 'page_mapcount.yaml'))
    print('## Emulator memory')
    print()
    sc = parse_scenario_text('format: 1\nname: m\nkernel: {memory: 64G}\nprocesses:\n  - pid: 100\n'
                             'steps: []\n')
    k = Kernel(cfg, sc)
    per_frame, slots = k.mem.nbytes()
    print('- physical memory of an idle 64G machine: %.1f bytes per emulated frame '
          '(+ %d KiB of folio slots)' % (per_frame / k.mem.nr_frames, slots >> 10))
    for mode in MODES:
        sc = ops_scenario(GiB, mode)
        k = Kernel(cfg, sc)
        k.apply(sc.steps[0])
        k.apply(sc.steps[1])
        pt = k.processes[100].mm.pt.nbytes()
        print('- 1G faulted with %s pages: page tables %.2f, folio slots %.2f bytes per mapped '
              'page' % (mode, pt / (GiB >> 12), k.mem.nbytes()[1] / (GiB >> 12)))
    sc = parse_scenario_text('format: 1\nname: big\nprocesses:\n  - pid: 100\nsteps:\n'
                             '  - mmap: {pid: 100, name: r, size: 64T, prot: none}\n'
                             '  - mmap: {pid: 100, name: s, size: 32T, kind: shared-anon}\n'
                             '  - mmap: {pid: 100, name: t, size: 16T, kind: shared-anon}\n')
    t = time.perf_counter()
    k = Kernel(cfg, sc)
    k.run(sc.steps)
    pidfiles.smaps_rollup(k, k.processes[100])
    pidfiles.smaps(k, k.processes[100])
    print('- untouched 64T + 32T + 16T mappings: mmap, smaps and smaps_rollup in %.1f ms, '
          '%d bytes of page tables' % ((time.perf_counter() - t) * 1e3,
                                       k.processes[100].mm.pt.nbytes()))
    print()


def many_scenario():
    steps = ['  - mmap: {pid: 100, name: buf, size: 32G, align: 2M}',
             '  - write: {pid: 100, vma: buf}']
    for i in range(15):
        steps.append('  - fork: {pid: 100, child: %d}' % (101 + i))
    for i in range(16):
        steps.append('  - write: {pid: %d, vma: buf, offset: %dG, length: 1G}' % (100 + i, 2 * i))
    return ('format: 1\nname: many\nkernel:\n  memory: 64G\n  thp: {enabled: always}\n'
            'processes:\n  - pid: 100\nsteps:\n' + '\n'.join(steps) + '\n')


@contextlib.contextmanager
def mounted(scenario_text, name):
    d = tempfile.mkdtemp(prefix='mmemu-bench-')
    path = os.path.join(d, name + '.yaml')
    with open(path, 'w') as f:
        f.write(scenario_text)
    mnt = os.path.join(d, 'mnt')
    os.mkdir(mnt)
    mmemu = os.path.join(os.path.dirname(sys.executable), 'mmemu')
    t = time.perf_counter()
    r = subprocess.run([mmemu, 'mount', '--no-init', path, mnt], capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit('mmemu mount failed: %s' % (r.stderr or r.stdout).strip())
    daemon = int(r.stdout.split('daemon pid ')[1].split(')')[0])
    try:
        yield mnt, elapsed, daemon
    finally:
        subprocess.run([mmemu, 'umount', mnt], capture_output=True)


def vm_hwm(pid):
    for line in open('/proc/%d/status' % pid):
        if line.startswith('VmHWM:'):
            return int(line.split()[1]) * 1024
    return 0


def read_all(path, chunk=1 << 20):
    t = time.perf_counter()
    n = 0
    with open(path, 'rb', buffering=0) as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            n += len(b)
    return time.perf_counter() - t, n


def section_many():
    print('## 64G machine, 16 processes sharing 32G of PMD THPs by fork, each CoWing 1G')
    print()
    with mounted(many_scenario(), 'many') as (mnt, elapsed, daemon):
        served = sorted(os.listdir(mnt))
        t, _ = read_all(os.path.join(mnt, served[0], 'proc', '100', 'smaps_rollup'))
        print('- replay and mount of %s: %.1f s, peak RSS of the mount %.2f GiB; '
              'smaps_rollup of pid 100: %.0f ms'
              % (', '.join(served), elapsed, vm_hwm(daemon) / GiB, t * 1e3))
    print()


def fuse_scenario():
    return """format: 1
name: fuse
kernel:
  memory: 4G
  thp: {enabled: never, sizes: {64K: always}}
processes:
  - pid: 100
  - pid: 200
steps:
  - mmap: {pid: 100, name: buf, size: 1G, align: 2M}
  - write: {pid: 100, vma: buf}
  - thp: {enabled: always}
  - mmap: {pid: 200, name: buf, size: 1G, align: 2M}
  - write: {pid: 200, vma: buf}
"""


def pagemap_range(mnt, config, pid):
    maps = open(os.path.join(mnt, config, 'proc', str(pid), 'maps')).read().split()[0]
    start, end = (int(x, 16) for x in maps.split('-'))
    return start // 4096 * 8, (end - start) // 4096 * 8


def section_fuse(args, real):
    print('## Through the FUSE mount (median of %d)' % args.runs)
    print()
    with mounted(fuse_scenario(), 'fuse') as (mnt, _, _):
        config = 'page_mapcount' if os.path.isdir(os.path.join(mnt, 'page_mapcount')) \
            else sorted(os.listdir(mnt))[0]
        for pid, mode in ((200, 'PMD'), (100, '64K')):
            off, length = pagemap_range(mnt, config, pid)
            path = os.path.join(mnt, config, 'proc', str(pid), 'pagemap')
            times = []
            for _ in range(args.runs):
                fd = os.open(path, os.O_RDONLY)
                t = time.perf_counter()
                pos = 0
                while pos < length:
                    pos += len(os.pread(fd, min(1 << 20, length - pos), off + pos))
                times.append(time.perf_counter() - t)
                os.close(fd)
            rate = length / statistics.median(times)
            line = '- pagemap of a 1G %s range (%s): %.0f MB/s' % (mode, config, rate / 1e6)
            if real:
                rr = real[mode]['pagemap_bytes'] / real[mode]['pagemap']
                line += ' (real kernel %.0f MB/s)' % (rr / 1e6)
            print(line)
        for pid, mode in ((200, 'PMD'), (100, '64K')):
            path = os.path.join(mnt, config, 'proc', str(pid), 'smaps_rollup')
            t = statistics.median(read_all(path)[0] for _ in range(args.runs))
            line = '- smaps_rollup of a process with 1G of %s pages: %.2f ms' % (mode, t * 1e3)
            if real:
                line += ' (real kernel %.2f ms, ratio %.1f)' % (
                    real[mode]['smaps_rollup'] * 1e3, t / real[mode]['smaps_rollup'])
            print(line)
    print()


SECTIONS = ('ops', 'growth', 'memory', 'fuse', 'many')


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--real', action='store_true', help='time the running kernel too (root)')
    ap.add_argument('--runs', type=int, default=3)
    ap.add_argument('--quick', action='store_true', help='skip 4G growth and the 64G case')
    ap.add_argument('--only', choices=SECTIONS, action='append',
                    help='run only this section (repeatable); default: all')
    args = ap.parse_args()
    only = set(args.only or SECTIONS)
    real = None
    print('# mmemu benchmark (%s, %s)' % (os.uname().release, time.strftime('%Y-%m-%d %H:%M UTC',
                                                                          time.gmtime())))
    print()
    if args.real:
        exe = build_real()
        real = {}
        with real_kernel():
            for mode in MODES:
                set_mode(mode)
                res = [real_run(exe, GiB) for _ in range(args.runs)]
                real[mode] = {op: statistics.median(r[op] for r in res) for op in res[0]}
    if 'ops' in only:
        section_ops(args, real)
    if 'growth' in only:
        section_growth(args)
    if 'memory' in only:
        section_memory()
    if 'fuse' in only:
        section_fuse(args, real)
    if 'many' in only and not args.quick:
        section_many()
    print('peak RSS of the benchmark process: %d MiB'
          % (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024))


if __name__ == '__main__':
    main()

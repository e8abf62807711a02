#!/usr/bin/env python3
"""Long model-checking runs of the mm core against the precise model.

    .venv/bin/python benchmarks/model_check.py [--ops N] [--seconds S]
        [--check-every K] [--sequence L] [--seed SEED] [--width 64|32|both]
        [--jobs J] [--report-every R]

drives the operations of the hypothesis state machine of
tests/test_property.py (mmap, read, write, munmap, madvise, mprotect,
mremap, fork, exit, pin, unpin, THP knob changes) from a plain random
generator instead of Hypothesis, on the same four kernels side by side
(CONFIG_PAGE_MAPCOUNT and CONFIG_NO_PAGE_MAPCOUNT, 64- and 32-bit), and
checks every invariant of that test (tests/model_precise.py: the 3.4 folio
invariants the kernel's VM_WARNs guard, refcount against mappings + page
cache + pins, slots against the real mappers, no false "exclusive" from
folio_maybe_mapped_shared / pagemap bit 56 / smaps Private, kpagecount,
RSS counters, content, and across configs equal decisions and Rss and USS
never over-estimated without per-page mapcounts) every K operations and at
the end of each sequence of L operations, vectorised over all frames.

Runs until N operations or S seconds, whichever comes first (in J worker
processes with seeds SEED..SEED+J-1, the operations split between them, a
line from each every R seconds), and prints the operations done (per config: every operation runs on each of the four
kernels), the invariant checks made and the rate.  On a violation it prints
the steps of the sequence as a scenario file and exits 1.
"""
import argparse
import importlib.util
import multiprocessing
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / 'tests')]


class _Strategy:
    """The few Hypothesis strategies the machine draws from, as samplers."""

    def __init__(self, sample):
        self.sample = sample

    def map(self, f):
        return _Strategy(lambda rng: f(self.sample(rng)))


class _Strategies:
    @staticmethod
    def sampled_from(seq):
        seq = list(seq)
        return _Strategy(lambda rng: rng.choice(seq))

    @staticmethod
    def integers(lo, hi):
        return _Strategy(lambda rng: rng.randint(lo, hi))

    @staticmethod
    def just(v):
        return _Strategy(lambda rng: v)

    @staticmethod
    def booleans():
        return _Strategy(lambda rng: rng.random() < 0.5)

    @staticmethod
    def one_of(*strategies):
        return _Strategy(lambda rng: rng.choice(strategies).sample(rng))


class _Data:
    """Stands for Hypothesis' `data` object: draw(strategy, label)."""

    def __init__(self, rng):
        self.rng = rng

    def draw(self, strategy, label=None):
        return strategy.sample(self.rng)


def load_machine(width='both'):
    """A private copy of tests/test_property.py whose operations draw from
    _Strategies (the test module itself stays untouched); `width` 64 or 32
    keeps only the kernels of that word size (half the work)."""
    spec = importlib.util.spec_from_file_location('_model_check_property',
                                                  ROOT / 'tests' / 'test_property.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.st = _Strategies
    if width != 'both':
        bits = int(width)
        mod.CONFIGS = tuple(c for c in mod.CONFIGS if c.bits == bits)
        # the PAGE_MAPCOUNT kernel against each of the others
        mod.WIDTH_PAIRS = tuple((0, i) for i in range(1, len(mod.CONFIGS)))
    notes = []
    mod.note = notes.append
    return mod, notes


class Run:
    def __init__(self, seed, check_every, sequence, width='both'):
        self.mod, self.notes = load_machine(width)
        self.rng = random.Random(seed)
        self.data = _Data(self.rng)
        self.check_every = check_every
        self.sequence = sequence
        self.ops = 0
        self.checks = 0
        self.sequences = 0

    def new_machine(self):
        m = self.mod.MMCore()
        templates = [self.rng.choice(self.mod.TEMPLATES) for _ in range(self.rng.randint(1, 3))]
        m.boot(self.rng.choice(sorted(self.mod.THP_PRESETS)), self.data, templates)
        self.sequences += 1
        return m

    def check(self, m):
        m.consistent()
        self.checks += 1

    def run(self, max_ops, deadline, report_every=None, tag=''):
        next_report = time.monotonic() + report_every if report_every else float('inf')
        start = time.monotonic()
        while self.ops < max_ops and time.monotonic() < deadline:
            m = self.new_machine()
            for i in range(1, self.sequence + 1):
                m.syscall(self.data)
                self.ops += 1
                if i % self.check_every == 0 or i == self.sequence or self.ops >= max_ops:
                    self.check(m)
                now = time.monotonic()
                if now >= next_report:
                    print('%s%d operations, %d invariant checks, %.0f s' %
                          (tag, self.ops, self.checks, now - start), flush=True)
                    next_report = now + report_every
                if self.ops >= max_ops or now >= deadline:
                    if i % self.check_every:
                        self.check(m)
                    break


def _job(args):
    """One worker process: (ops, checks, sequences, violation or None)."""
    seed, ops, deadline, check_every, sequence, width, report_every = args
    r = Run(seed, check_every, sequence, width)
    try:
        r.run(ops, deadline, report_every, '[seed %d] ' % seed)
    except AssertionError as e:
        return r.ops, r.checks, r.sequences, (seed, str(e)[:4000], r.notes[-1:])
    return r.ops, r.checks, r.sequences, None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--ops', type=int, default=10 ** 6, help='operations (default 10^6)')
    ap.add_argument('--seconds', type=float, default=float('inf'), help='time limit')
    ap.add_argument('--check-every', type=int, default=50, metavar='K')
    ap.add_argument('--sequence', type=int, default=200, metavar='L',
                    help='operations per sequence before a fresh machine')
    ap.add_argument('--seed', type=int, default=1)
    ap.add_argument('--width', choices=('both', '64', '32'), default='both',
                    help='the kernels of the 64-bit word size, the 32-bit one or both (default)')
    ap.add_argument('--jobs', type=int, default=1, metavar='J',
                    help='worker processes, each with its own seed (default 1)')
    ap.add_argument('--report-every', type=float, default=None, metavar='R',
                    help='print progress every R seconds')
    args = ap.parse_args(argv)
    if args.ops < 1 or args.jobs < 1 or args.check_every < 1 or args.sequence < 1:
        ap.error('--ops, --jobs, --check-every and --sequence must be at least 1')
    start = time.monotonic()
    deadline = start + args.seconds
    shares = [args.ops // args.jobs + (j < args.ops % args.jobs) for j in range(args.jobs)]
    work = [(args.seed + j, n, deadline, args.check_every, args.sequence, args.width,
             args.report_every) for j, n in enumerate(shares) if n]
    if len(work) == 1:
        results = [_job(work[0])]
    else:
        with multiprocessing.get_context('fork').Pool(len(work)) as pool:
            results = pool.map(_job, work)
    took = time.monotonic() - start
    ops = sum(r[0] for r in results)
    configs = load_machine(args.width)[0].CONFIGS
    for r in results:
        if r[3] is not None:
            seed, what, notes = r[3]
            print('INVARIANT VIOLATED (seed %d) after %d operations: %s' % (seed, r[0], what))
            for n in notes:
                print(n)
            return 1
    print('%d operations on each of %d kernel configs (%s), %d sequences, %d invariant checks, '
          '%d job%s, %.1f s, %.0f operations/s' % (
              ops, len(configs), ', '.join(c.name for c in configs), sum(r[2] for r in results),
              sum(r[1] for r in results), len(work), 's' if len(work) > 1 else '', took,
              ops / took if took else 0))
    return 0


if __name__ == '__main__':
    sys.exit(main())

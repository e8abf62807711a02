"""The long model-checking entry (benchmarks/model_check.py) in a short CI
profile: a few hundred random operations on the four kernels, invariants
checked every 10 operations.  MMEMU_MODEL_OPS sets the number of
operations (e.g. 1000000 for the full run; the script itself prints the
rate)."""
import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / 'benchmarks'))
import model_check  # noqa: E402

OPS = int(os.environ.get('MMEMU_MODEL_OPS', '150'))


def test_random_operations_keep_every_invariant():
    r = model_check.Run(seed=3, check_every=10, sequence=50)
    r.run(OPS, float('inf'))
    assert r.ops == OPS
    assert r.checks >= OPS // 10


def test_the_checks_catch_a_broken_refcount():
    """The checks can fail: one reference too many on a mapped folio is
    reported (refcount against mappings + page cache + pins)."""
    r = model_check.Run(seed=5, check_every=1000, sequence=1000, width='64')
    m = r.new_machine()
    r.check(m)
    k = m.kernels[0]
    mapped = np.flatnonzero((k.mem.refcount > 0) & (k.mem.head == np.arange(k.mem.nr_frames)))
    k.mem.refcount[mapped[-1]] += 1
    with pytest.raises(AssertionError, match='refcount'):
        r.check(m)


def test_main_prints_the_counts(capsys):
    assert model_check.main(['--ops', '20', '--check-every', '5', '--width', '64']) == 0
    out = capsys.readouterr().out
    # --width 64: the three configs of that word size
    assert out.startswith('20 operations on each of 3 kernel configs (page_mapcount, '
                          'no_page_mapcount, total_mapped_pages)') and 'invariant checks' in out


def test_jobs_split_the_operations(capsys):
    assert model_check.main(['--ops', '21', '--check-every', '5', '--width', '32',
                             '--jobs', '2']) == 0
    out = capsys.readouterr().out
    assert out.startswith('21 operations on each of 3 kernel configs (page_mapcount-32bit, ')
    assert ', 2 jobs, ' in out

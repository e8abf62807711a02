"""Known recording artifacts: differences between a real-kernel recording
and the emulator that come from the recording machine, not from a kernel
rule.

tests/test_e2e_conformance.py accepts exactly these rows of compare.py's
output (same snapshot, process, range, field, expected and actual value)
and fails on any other difference, and on a row listed here that no longer
differs, so that the list cannot outlive its cause.
"""
from collections import namedtuple

# snapshot: "<scenario>/<label>"; pid: scenario pid; range: range name, or
# None for a process-level field (rollup); field, expected, actual: as
# compare.py prints them.
Artifact = namedtuple('Artifact', 'snapshot pid range field expected actual reason')

DAMON_YOUNG = (
    'The recording machine runs a DAMON physical-address monitor (kdamond). '
    'It samples a page by clearing its accessed bits and marking the folio '
    'young; smaps_account() then adds the page to Referenced for every '
    'process that maps the folio (folio_test_young()), however old its own '
    'PTE is.  The forked child\'s PTEs are old (copy_present_pte() clears '
    'the young bit), so by the kernel rules only the pages the child touched '
    'since are Referenced.  The recorder lists this field as unstable at the '
    'other snapshots of these scenarios; at this one every run happened to '
    'agree, so it is not in the "unstable" list.')


def _referenced(snapshot, pid, ranges, real_kb, emulated_kb):
    """Referenced of the named ranges (range sum and their single VMA) and
    of the rollup: values per range, then the rollup's."""
    rows = []
    for name, (real, emu) in zip(ranges, zip(real_kb, emulated_kb)):
        rows.append(Artifact(snapshot, pid, name, 'smaps/Referenced', real, emu, DAMON_YOUNG))
        rows.append(Artifact(snapshot, pid, name, 'vmas/0/smaps/Referenced', real, emu, DAMON_YOUNG))
    rows.append(Artifact(snapshot, pid, None, 'rollup/Referenced', sum(real_kb), sum(emulated_kb),
                         DAMON_YOUNG))
    return rows


ARTIFACTS = tuple(
    # child 101 of a forked PMD THP after the parent's write: the child's
    # PMD was split by its own write to page 2; only its copy is young
    _referenced('thp-pmd-fork-cow/parent-wrote', 101, ['buf'], [2048], [4])
    # child 101 of thp-pmd-munmap-fork after the parent unmapped the head
    # page: the child wrote nothing, so none of its PTEs is young
    + _referenced('thp-pmd-munmap-fork/parent-unmapped-head', 101, ['post', 'pre'], [1536, 1024], [0, 0])
)

"""Known recording artifacts: differences between a real-kernel recording
and the emulator that come from the recording machine, not from a kernel
rule.

tests/test_e2e_conformance.py accepts exactly these rows of compare.py's
output (same snapshot, process, range, field, expected and actual value)
and fails on any other difference, and on a row listed here that no longer
differs, so that the list cannot outlive its cause.
"""
import json
from collections import namedtuple
from pathlib import Path

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


PKEYS = (
    'The round-2 recordings (tests/conformance, issue 10) were made on a CPU '
    'with protection keys: show_smap_vma_flags() prints "ProtectionKey:" in '
    'every VMA of smaps when arch_pkeys_enabled() (X86_FEATURE_OSPKE).  The '
    'emulated machine is the one of the earlier recordings, which had none, '
    'so the emulator prints no such line.  It is a CPU feature of the '
    'recording machine, not an mm rule.')

def _referenced2(snapshot, pid, name, range_kb, rollup_kb=None):
    """Referenced of one range (sum and its single VMA), and of the rollup
    when the runs agreed on it: (real, emulated) kB pairs."""
    rows = [Artifact(snapshot, pid, name, f, range_kb[0], range_kb[1], DAMON_YOUNG)
            for f in ('smaps/Referenced', 'vmas/0/smaps/Referenced')]
    if rollup_kb:
        rows.append(Artifact(snapshot, pid, None, 'rollup/Referenced', rollup_kb[0], rollup_kb[1],
                             DAMON_YOUNG))
    return rows


def _protection_keys(scenarios):
    """One row per VMA of every snapshot of the named recordings whose
    smaps has a ProtectionKey line."""
    base = Path(__file__).resolve().parent / 'conformance' / 'expected'
    rows = []
    for name in scenarios:
        for f in sorted((base / name).glob('*.json')):
            obs = json.loads(f.read_text())
            for pid, p in obs['processes'].items():
                for rname, r in p['ranges'].items():
                    for i, v in enumerate(r['vmas']):
                        if 'ProtectionKey' in v['smaps']:
                            rows.append(Artifact('%s/%s' % (name, f.stem), int(pid), rname,
                                                 'vmas/%d/smaps/ProtectionKey' % i,
                                                 v['smaps']['ProtectionKey'], '<missing>', PKEYS))
    return rows


ROUND2 = (
    'collapse-shared-small', 'huge-zero-fork', 'pin-not-accessed', 'file-eof-partial-page',
    'cow-mprotect-sharer-alive', 'cow-mprotect-sharer-exited', 'cow-dontfork-part-pmd',
    'cow-dontfork-part-mthp', 'cow-mremap-pte-thp-fork', 'four-procs-survivor-parent',
    'four-procs-survivor-first-child', 'four-procs-survivor-second-child',
    'four-procs-survivor-last-child', 'fork-chain-three-deep', 'fork-chain-writes-between',
    'mthp-sizes-odd-ranges', 'mthp-sizes-fork-partial', 'zero-page-fork-cow',
    'huge-zero-fork-parent-write', 'huge-zero-split-fork',
)


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
    # (thp-pmd-fork-cow/parent-wrote was listed here: the shared recording
    # now marks its Referenced fields unstable itself, so compare.py skips them)
    # child 101 of thp-pmd-munmap-fork after the parent unmapped the head
    # page: the child wrote nothing, so none of its PTEs is young
    _referenced('thp-pmd-munmap-fork/parent-unmapped-head', 101, ['post', 'pre'], [1536, 1024], [0, 0])
    # round 2: a PMD THP in a forked child that did not touch it (or wrote
    # one 4K page of it) counted whole: the folio was sampled young; at the
    # other snapshots of these scenarios the runs disagreed (unstable)
    + _referenced2('cow-mprotect-sharer-alive/child-wrote', 101, 'pmd', (2048, 4))
    + _referenced2('cow-mprotect-sharer-alive/parent-wrote', 101, 'pmd', (2048, 0))
    + _referenced2('cow-mremap-pte-thp-fork/child-wrote', 101, 'pmd', (2048, 4), (2048, 4))
    + _referenced2('cow-mremap-pte-thp-fork/parent-wrote', 101, 'pmd', (2048, 4), (2048, 4))
    + _referenced2('fork-chain-three-deep/chain', 103, 'pmd', (2048, 0))
    + _referenced2('fork-chain-three-deep/leaves-wrote', 101, 'pmd', (2048, 0))
    + _referenced2('fork-chain-three-deep/leaves-wrote', 102, 'pmd', (2048, 4))
    + _referenced2('fork-chain-three-deep/leaves-wrote', 103, 'pmd', (2048, 4))
    + _referenced2('fork-chain-three-deep/middle-wrote', 102, 'pmd', (2048, 4))
    + _referenced2('fork-chain-three-deep/middle-wrote', 103, 'pmd', (2048, 4))
    + _referenced2('fork-chain-three-deep/top-exited', 102, 'pmd', (2048, 4))
    + _referenced2('fork-chain-three-deep/top-exited', 103, 'pmd', (2048, 4))
    + _referenced2('four-procs-survivor-second-child/one-left', 102, 'pmd', (2048, 0))
    + _protection_keys(ROUND2)
)

"""Testing a USS/PSS report against every emulated kernel config.

Expected values: semantics.md 13 S3.  With per-page mapcounts the parent's
page 0 is mapped once and counts as private (PSS 34 kB, USS 4 kB); without
them the folio is "maybe mapped shared" and all 16 pages count as shared
at the average mapcount 2 (PSS 32 kB, USS 0).  The child's CoW copy is
private under every config (PSS 34, USS 4)."""
import pytest

from scenarios import C, P, fork_then_cow, keeps_page_mapcount
from uss_report import format_report, uss_pss_report


@pytest.mark.mmemu(fork_then_cow())
@pytest.mark.mmemu_each_config
def test_uss_pss_report(mmemu_proc, mmemu_config):
    assert mmemu_proc.mode in ('fuse', 'export'), mmemu_proc.mode_reason
    report = uss_pss_report(str(mmemu_proc.proc))
    if keeps_page_mapcount(mmemu_config):
        assert report[P] == ('parent', 4, 34)
    else:
        assert report[P] == ('parent', 0, 32)
    assert report[C] == ('child', 4, 34)
    text = format_report(report)
    assert text.splitlines()[0].split() == ['PID', 'COMM', 'USS', 'kB', 'PSS', 'kB']


@pytest.mark.mmemu(fork_then_cow())
def test_report_matches_the_emulators_own_reading(mmemu_proc):
    """The report and mmemu's parser read the same file the same way."""
    report = uss_pss_report(str(mmemu_proc.proc))
    for pid in (P, C):
        rollup = mmemu_proc.smaps_rollup(pid)
        assert report[pid][1:] == (rollup['Private_Clean'] + rollup['Private_Dirty'],
                                   rollup['Pss'])

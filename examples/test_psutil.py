"""psutil pointed at an emulated /proc (psutil.PROCFS_PATH), under every
config.  Expected values: semantics.md 13 S3 (see test_uss_report.py);
psutil's uss is Private_Clean + Private_Dirty of smaps, in bytes."""
import psutil
import pytest

from scenarios import C, P, fork_then_cow, keeps_page_mapcount


@pytest.fixture
def procfs(mmemu_proc):
    saved = psutil.PROCFS_PATH
    psutil.PROCFS_PATH = str(mmemu_proc.proc)
    yield mmemu_proc
    psutil.PROCFS_PATH = saved


@pytest.mark.mmemu(fork_then_cow())
@pytest.mark.mmemu_each_config
def test_memory_full_info(procfs, mmemu_config):
    parent, child = psutil.Process(P), psutil.Process(C)
    assert parent.name() == 'parent' and child.name() == 'child'
    assert child.ppid() == P
    pm, cm = parent.memory_full_info(), child.memory_full_info()
    if keeps_page_mapcount(mmemu_config):
        assert (pm.uss, pm.pss) == (4 << 10, 34 << 10)
    else:
        assert (pm.uss, pm.pss) == (0, 32 << 10)
    assert (cm.uss, cm.pss) == (4 << 10, 34 << 10)
    # both map all 16 pages of the range: 64 kB resident each (S3)
    assert pm.rss >= 64 << 10 and cm.rss >= 64 << 10


@pytest.mark.mmemu(fork_then_cow(), init=True)
def test_process_list(procfs):
    assert {1, P, C} <= set(psutil.pids())
    assert psutil.Process(C).parent().pid == P

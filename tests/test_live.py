"""The live machine (procfs.live): stepping a replay while it is served.

The contract: the tree reached by live stepping to a snapshot is the tree
a static replay stopped at that snapshot serves, file by file, apart from
the clock (uptime and /proc/stat run with the time served)."""
import glob
import os

import pytest

from procfs import tree as T
from procfs.build import replay_all, tree_of
from procfs.cli import PROJECT_ROOT, default_configs
from procfs.live import LiveError, LiveMachine

SCENARIOS = sorted(glob.glob(str(PROJECT_ROOT / 'configs' / 'scenarios' / '*.yaml')) +
                   glob.glob(str(PROJECT_ROOT / 'tests' / 'conformance' / 'scenarios' / '*.yaml')) +
                   glob.glob(str(PROJECT_ROOT.parent / 'shared' / 'conformance' / 'scenarios'
                                 / '*.yaml')))
CLOCK_FILES = ('proc/uptime', 'proc/stat')
SHOWCASE = str(PROJECT_ROOT / 'configs' / 'scenarios' / 'showcase.yaml')


def node_content(node):
    if isinstance(node, T.TextFile):
        return node.render()
    if isinstance(node, T.BinaryFile):
        ext = node.extents()
        return node.size_limit, ext, [node.pread(off, n) for off, n in ext]
    if isinstance(node, T.Symlink):
        return node.target
    return None


def tree_differences(a, b, skip=CLOCK_FILES):
    """Paths whose node kind, owner, mode or content differ."""
    wa, wb = dict(T.walk(a)), dict(T.walk(b))
    out = sorted(set(wa) ^ set(wb))
    for path in sorted(set(wa) & set(wb)):
        x, y = wa[path], wb[path]
        if (type(x), x.mode, x.uid, x.gid) != (type(y), y.mode, y.uid, y.gid):
            out.append(path)
        elif not path.split('/', 1)[-1] in skip and node_content(x) != node_content(y):
            out.append(path)
    return out


class FakeTime:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.mark.parametrize('scenario', SCENARIOS, ids=lambda p: '/'.join(p.split('/')[-3:]))
def test_live_stepping_reaches_the_static_tree_at_every_label(scenario):
    configs = default_configs()
    m = LiveMachine(scenario, configs)
    assert m.sc.labels
    for label in m.sc.labels:
        lines, err = m.step(to=label)
        assert err is None and lines
        _, static = replay_all(scenario, configs, label)
        assert tree_differences(m.root, tree_of(static)) == [], label


def test_the_comparison_sees_a_step():
    m = LiveMachine(SHOWCASE, default_configs())
    before = m.root
    m.step(to='started')
    diff = tree_differences(before, m.root)
    assert 'page_mapcount/proc/meminfo' in diff and 'page_mapcount/proc/100/smaps' in diff


def read(root, path):
    return T.resolve(root, path).render()


def test_a_refused_step_changes_nothing_and_says_why():
    m = LiveMachine(SHOWCASE, default_configs(), stop_at='started')
    root, gen = m.root, m.generation
    lines, err = m.do('fork: {pid: 100, child: 100}')
    assert lines == [] and str(err) == '<do>:1: step 18 (fork): child: pid 100 is in use'
    lines, err = m.do('exit: {pid: 4242}')
    assert str(err).startswith('<do>:1: step 18 (exit): unknown pid 4242')
    lines, err = m.do('munmap: {pid: 100, vma: nosuch}')
    assert str(err).startswith("<do>:1: step 18 (munmap): unknown vma 'nosuch' in pid 100")
    lines, err = m.do('fork: [100]')
    assert str(err).startswith('<do>:1: step 18 (fork):')
    assert m.root is root and m.generation == gen
    lines, err = m.do('pin: {pid: 100, vma: heap, offset: 0, length: 4K}')
    assert err is None and lines == ['do 1 (step 18): pin pid=100 vma=heap offset=0x0 length=0x1000']
    assert tree_differences(root, m.root) != []


def test_a_step_the_kernel_refuses_halfway_changes_nothing():
    """madvise() over a range with a hole works on every mapped part and
    then fails with ENOMEM (madvise_walk_vmas()); a scenario step without
    `expect: fault` is refused, so no part of it may stay."""
    m = LiveMachine(SHOWCASE, default_configs(), stop_at='partial')
    root = m.root
    lines, err = m.do('madvise: {pid: 101, vma: heap, advice: dontneed}')
    assert lines == [] and str(err).startswith('<do>:1: step 18 (madvise): ENOMEM')
    assert m.root is root
    again = LiveMachine(SHOWCASE, default_configs(), stop_at='partial')
    assert tree_differences(tree_of(m.kernels), tree_of(again.kernels)) == []
    lines, err = m.do('madvise: {pid: 101, vma: heap, advice: dontneed, expect: fault}')
    assert err is None and tree_differences(root, m.root) != []


def test_a_batch_stops_at_the_refused_step_and_keeps_the_steps_before_it():
    m = LiveMachine(SHOWCASE, default_configs(), stop_at='started')
    # the scenario's next step forks 101: taking the pid first makes that
    # step invalid at that point, exactly as in a scenario file
    m.do('fork: {pid: 100, child: 101}')
    lines, err = m.step(3)
    assert lines == [] and 'step 6 (fork): child: pid 101 is in use' in str(err)
    assert str(err).startswith(SHOWCASE + ':30:')
    assert m.next == 5


def test_each_generation_keeps_its_own_state():
    """What an open file reads stays the state it was opened in: the
    nodes of an old tree render the old kernel (FUSE keeps the node of an
    open handle)."""
    m = LiveMachine(SHOWCASE, default_configs(), stop_at='started')
    old = m.root
    pagemap = T.resolve(old, 'page_mapcount/proc/100/pagemap')
    off, n = pagemap.extents()[0]
    before = (read(old, 'page_mapcount/proc/meminfo'), pagemap.pread(off, n))
    m.step(to='survivor')
    assert (read(old, 'page_mapcount/proc/meminfo'), pagemap.pread(off, n)) == before
    assert read(m.root, 'page_mapcount/proc/meminfo') != before[0]


def test_the_clock_runs_while_served():
    clock = FakeTime()
    m = LiveMachine(SHOWCASE, default_configs(), time_fn=clock)
    up0 = float(read(m.root, 'page_mapcount/proc/uptime').split()[0])
    clock.now += 2.5
    up1 = float(read(m.root, 'page_mapcount/proc/uptime').split()[0])
    assert up1 - up0 == pytest.approx(2.5)
    cpu = lambda: sum(map(int, read(m.root, 'page_mapcount/proc/stat').split(b'\n')[0].split()[1:]))
    c0 = cpu()
    clock.now += 1
    assert cpu() > c0


def test_step_requests_that_cannot_be_done():
    m = LiveMachine(SHOWCASE, default_configs(), stop_at='forked')
    with pytest.raises(LiveError, match=r"no snapshot 'started' ahead .*already passed"):
        m.step(to='started')
    with pytest.raises(LiveError, match=r"no snapshot 'nope' ahead .*labels ahead: partial, survivor"):
        m.step(to='nope')
    lines, err = m.step(all=True)
    assert err is None and lines[-1].startswith('step 17 ')
    with pytest.raises(LiveError, match='no steps left'):
        m.step()
    assert m.handle({'cmd': 'step', 'n': 'x'}) == ([], "step count must be an integer, got 'x'")
    assert m.handle({'cmd': 'fly'}) == ([], "unknown request 'fly'")


def test_status_names_the_position():
    m = LiveMachine(SHOWCASE, default_configs(), stop_at='started')
    lines = m.status()
    assert 'applied: 5 of 17 scenario steps, 0 extra' in lines
    assert 'labels passed: started' in lines
    assert any(l.startswith('next: step 6 (line 30): fork pid=100 child=101') for l in lines)

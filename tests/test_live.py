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
                   glob.glob(str(PROJECT_ROOT / 'tests' / 'conformance' / 'scenarios' / '*.yaml')))
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


@pytest.mark.parametrize('scenario', SCENARIOS, ids=os.path.basename)
def test_live_stepping_reaches_the_static_tree_at_every_label(scenario):
    configs = default_configs()
    m = LiveMachine(scenario, configs)
    assert m.sc.labels
    for label in m.sc.labels:
        lines, err = m.step(to=label)
        assert err is None and lines
        _, static = replay_all(scenario, configs, label)
        assert tree_differences(m.root, tree_of(static)) == [], label

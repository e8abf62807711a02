"""mmemu as a library: build or load a scenario, replay it under kernel
configs, read what /proc and the memory cgroup files show, export or mount
the tree, and check the scenario's `expect` steps.

    import mmemu
    s = mmemu.Scenario('cow', thp={'enabled': 'never', 'sizes': {'64K': 'always'}})
    s.process(100).mmap(100, 'buf', '64K', align='64K').write(100, 'buf').fork(100, 101)
    r = mmemu.replay(s)                       # every 64-bit config
    r['no_page_mapcount'].smaps_rollup(100)['Pss']
    with mmemu.mounted(s) as m:               # FUSE, always unmounted
        m.root('page_mapcount').proc          # a directory to give a tool

The pytest plugin (mmemu.pytest_plugin) is registered through the
`pytest11` entry point.
"""
from mmcore.config import ConfigError, KernelConfig
from mmcore.errors import StepError
from mmcore.scenario import ScenarioError
from procfs.view import Pagemap, ProcView
from .kernels import KERNELS_DIR, config_names, default_config_names, kernel_config
from .run import Mount, Replay, export, fuse_available, load, mounted, replay, verify
from .scenario import Scenario

__all__ = ['Scenario', 'ScenarioError', 'StepError', 'ConfigError', 'KernelConfig',
           'Replay', 'Mount', 'ProcView', 'Pagemap', 'replay', 'export', 'mounted', 'verify',
           'load', 'fuse_available', 'config_names', 'default_config_names', 'kernel_config',
           'KERNELS_DIR']
__version__ = '0.1.0'

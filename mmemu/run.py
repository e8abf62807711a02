"""Replaying a scenario, reading what it shows, exporting and mounting it."""
from contextlib import contextmanager
import os
from pathlib import Path
import shutil
import signal
import tempfile
import time

from mmcore import scenario as _loader
from mmcore.errors import StepError
from mmcore.kernel import Kernel
from procfs import expect as _expect
from procfs.build import kernel_tree
from procfs.export import export as _export_tree
from procfs.tree import Dir
from procfs.view import DirSource, ProcView, TreeSource
from .kernels import default_config_names, kernel_config
from .scenario import Scenario

__all__ = ['Replay', 'Mount', 'replay', 'export', 'mounted', 'verify', 'fuse_available',
           'load']


def load(scenario):
    """The loader's Scenario from a mmemu.Scenario, a file path, or YAML text."""
    if isinstance(scenario, Scenario):
        return scenario.parsed
    if isinstance(scenario, _loader.Scenario):
        return scenario
    return Scenario.from_yaml(scenario).parsed


def _configs(configs):
    if configs is None:
        configs = default_config_names()
    elif isinstance(configs, (str, os.PathLike)):
        configs = [configs]
    cfgs = [kernel_config(c) for c in configs]
    names = [c.name for c in cfgs]
    if len(set(names)) != len(names):
        from mmcore.config import ConfigError
        raise ConfigError('two kernel configs have the same name: %s' % ', '.join(names))
    return cfgs


class Replay:
    """A scenario replayed on one emulated kernel per config.

    `replay[name]` (or `view(name)`) is a ProcView of that config's
    files, rendered from the kernel's state on each read; `tree()` is the
    whole served tree (one subtree per config)."""

    def __init__(self, scenario, kernels, init):
        self.scenario = scenario
        self.kernels = kernels          # {config name: mmcore Kernel}
        self.init = init

    @property
    def configs(self):
        return list(self.kernels)

    def view(self, config=None):
        """The ProcView of `config` (default: the first config)."""
        name = config if config is not None else self.configs[0]
        if name not in self.kernels:
            raise KeyError('config %r was not replayed (configs: %s)'
                           % (name, ', '.join(self.kernels)))
        return ProcView(TreeSource(kernel_tree(self.kernels[name], self.init)), name)

    __getitem__ = view

    def tree(self):
        return Dir({name: kernel_tree(k, self.init) for name, k in self.kernels.items()})

    def read_bytes(self, config, rel):
        """The bytes of one rendered text file, e.g. ('page_mapcount', 'proc/meminfo')."""
        return self.view(config).read_bytes(rel)

    def export(self, directory):
        """Writes the tree into `directory` as plain files (sparse binary
        files); returns the directory as a Path."""
        _export_tree(self.tree(), str(directory))
        return Path(directory)


def replay(scenario, configs=None, stop_at=None, init=True):
    """Replays `scenario` (a mmemu.Scenario, a file path or YAML text) on
    each config (names, paths or KernelConfigs; default: every 64-bit
    config), up to and including the snapshot `stop_at`.  `init=False`
    leaves out pid 1, as the real-kernel recordings do."""
    sc = load(scenario)
    if stop_at is not None and stop_at not in sc.labels:
        raise _loader.ScenarioError('%s: no snapshot %r (labels: %s)'
                                    % (sc.path, stop_at, ', '.join(sc.labels) or 'none'))
    kernels = {}
    for cfg in _configs(configs):
        k = Kernel(cfg, sc, with_init=init)
        try:
            k.run(sc.steps, stop_at)
        except StepError as e:
            raise StepError(None, '%s: %s (kernel config %s)' % (sc.path, e, cfg.name)) from None
        kernels[cfg.name] = k
    return Replay(sc, kernels, init)


def export(scenario, directory, configs=None, stop_at=None, init=True):
    """replay() and write the tree to `directory`; returns it as a Path."""
    return replay(scenario, configs, stop_at, init).export(directory)


def verify(scenario, configs=None):
    """The results (procfs.expect.Result: path, line, config, what,
    passed, detail) of every expect step of `scenario`."""
    sc = load(scenario)
    return _expect.verify(sc, _configs(configs))


def fuse_available():
    """(True, '') when a FUSE mount can be attempted here, else (False,
    why): /dev/fuse, fusermount3 and libfuse with mfusepy are needed."""
    from procfs import fuse
    if not os.path.exists(fuse.DEV_FUSE):
        return False, '%s is missing' % fuse.DEV_FUSE
    if fuse.fusermount() is None:
        return False, 'fusermount3 is missing'
    try:
        fuse._load_mfusepy()
    except fuse.MountError as e:
        return False, str(e)
    return True, ''


class Mount:
    """A mounted tree: `path` holds one directory per config."""

    def __init__(self, path, configs, daemon_pid):
        self.path = Path(path)
        self.configs = list(configs)
        self.daemon_pid = daemon_pid

    def root(self, config=None):
        """The ProcView of one config's subtree (default: the first)."""
        name = config if config is not None else self.configs[0]
        if name not in self.configs:
            raise KeyError('config %r is not mounted (configs: %s)'
                           % (name, ', '.join(self.configs)))
        return ProcView(DirSource(self.path / name), name, self.path / name)

    def __repr__(self):
        return 'Mount(%s, %s)' % (self.path, ', '.join(self.configs))


def _reap(pid, timeout=5.0):
    """Waits for the daemon to exit after its unmount; ends it if it does not."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            return
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return
        time.sleep(0.02)


def _unmount(mountpoint):
    from procfs import fuse
    try:
        fuse.unmount(mountpoint)
    except fuse.MountError:
        import subprocess
        subprocess.run([fuse.fusermount(), '-u', '-z', mountpoint], capture_output=True)


@contextmanager
def mounted(scenario, configs=None, stop_at=None, init=True, mountpoint=None):
    """Replays `scenario` and mounts the tree read-only with FUSE, at
    `mountpoint` or in a new temporary directory; yields a Mount.  The
    tree is unmounted (and a temporary mount point removed) when the block
    ends, also on an exception or KeyboardInterrupt.

        with mmemu.mounted('configs/scenarios/showcase.yaml') as m:
            print(m.root('no_page_mapcount').smaps_rollup(102)['Pss'])
    """
    from procfs import fuse
    r = replay(scenario, configs, stop_at, init)
    tmp = None
    if mountpoint is None:
        tmp = mountpoint = tempfile.mkdtemp(prefix='mmemu-mount-')
    mountpoint = os.path.abspath(mountpoint)
    pid = None
    try:
        pid = fuse.mount(r.tree(), mountpoint, foreground=False)
        yield Mount(mountpoint, r.configs, pid)
    finally:
        try:
            if pid is not None or os.path.ismount(mountpoint):
                _unmount(mountpoint)
        finally:
            if pid is not None:
                _reap(pid)
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)

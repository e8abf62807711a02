"""pytest plugin (entry point `pytest11`): emulated /proc trees as fixtures.

    import pytest

    @pytest.mark.mmemu('showcase')                  # or a path, or a mmemu.Scenario
    @pytest.mark.mmemu_each_config                   # once per kernel config
    def test_my_tool(mmemu_proc):
        out = my_tool(procfs=mmemu_proc.proc)        # a directory laid out like /proc
        assert out[102].pss_kb == mmemu_proc.smaps_rollup(102)['Pss']

Fixtures:
- ``mmemu_proc``: a ProcView of one config's tree served on disk, with
  ``.path`` (holds proc/ and sys/), ``.proc``, ``.config`` and ``.mode``:
  'fuse' when mounted with FUSE, 'export' when written to a temporary
  directory (``.mode_reason`` says why).  The scenario comes from the
  ``mmemu`` marker or from indirect parametrization with a scenario or a
  dict(scenario=..., config=..., stop_at=..., init=...).
- ``mmemu_config``: the config name (default: the first default config;
  parametrized by ``mmemu_each_config``).

Markers:
- ``mmemu(scenario, stop_at=None, init=True)``
- ``mmemu_each_config(bits=None)``: parametrizes ``mmemu_config`` over every
  config in configs/kernels/ (only those of `bits` when given).

``--mmemu-mode auto|fuse|export`` (or MMEMU_PYTEST_MODE) chooses how trees
are served; auto mounts where FUSE works and exports otherwise.  Each
distinct (scenario, config, stop_at, init) is served once per session.
"""
from contextlib import ExitStack
import os
from pathlib import Path
import shutil
import tempfile

import pytest

from procfs.view import ProcView

MODES = ('auto', 'fuse', 'export')


def pytest_addoption(parser):
    group = parser.getgroup('mmemu', 'emulated /proc trees (mmemu)')
    group.addoption('--mmemu-mode', choices=MODES, default=None,
                    help='how mmemu_proc serves a tree: auto (FUSE where it works, else '
                         'an export), fuse or export; default: $MMEMU_PYTEST_MODE or auto')


def pytest_configure(config):
    config.addinivalue_line('markers', 'mmemu(scenario, stop_at=None, init=True): the '
                            'scenario (path, bundled name or mmemu.Scenario) mmemu_proc serves')
    config.addinivalue_line('markers', 'mmemu_each_config(bits=None): run the test once per '
                            'kernel config in configs/kernels (fixture mmemu_config)')


def pytest_generate_tests(metafunc):
    marker = metafunc.definition.get_closest_marker('mmemu_each_config')
    if marker is None or 'mmemu_config' not in metafunc.fixturenames:
        return
    from mmemu.kernels import KERNELS_DIR, kernel_config
    bits = marker.kwargs.get('bits', marker.args[0] if marker.args else None)
    cfgs = [kernel_config(p) for p in sorted(KERNELS_DIR.glob('*.yaml'))]
    names = sorted(c.name for c in cfgs if bits is None or c.bits == bits)
    metafunc.parametrize('mmemu_config', names, ids=names)


def _bundled(name):
    from mmemu.kernels import KERNELS_DIR
    return KERNELS_DIR.parent / 'scenarios' / (name + '.yaml')


def resolve_scenario(scenario, base=None):
    """A mmemu.Scenario from a Scenario, a path (relative to `base`, the
    test's directory, or to the working directory) or a bundled
    scenario's name ('showcase')."""
    from mmemu import Scenario
    if isinstance(scenario, Scenario):
        return scenario
    if isinstance(scenario, (str, os.PathLike)):
        text = os.fspath(scenario)
        if '\n' in text:
            return Scenario.from_yaml(text)
        for cand in ([Path(base) / text] if base else []) + [Path(text), _bundled(text)]:
            if cand.is_file():
                return Scenario.from_yaml(cand)
        raise pytest.UsageError('mmemu: scenario %r not found' % text)
    raise pytest.UsageError('mmemu: a scenario is a path, a name or a mmemu.Scenario, not %r'
                            % (scenario,))


class _Served:
    """The trees served in this session, one per (scenario, config,
    stop_at, init); unmounted or removed at the end."""

    def __init__(self, mode):
        self.mode = mode
        self.stack = ExitStack()
        self.served = {}
        self.tmp = tempfile.mkdtemp(prefix='mmemu-pytest-')
        self.fuse_reason = None

    def get(self, scenario, config, stop_at, init):
        from mmemu import mounted, replay
        from mmemu.run import fuse_available
        from procfs.fuse import MountError
        from procfs.view import DirSource
        key = (scenario.to_yaml(), config, stop_at, init)
        if key in self.served:
            return self.served[key]
        mode, reason = 'export', 'export asked for (--mmemu-mode export)'
        if self.mode in ('auto', 'fuse'):
            ok, why = fuse_available()
            if ok:
                try:
                    m = self.stack.enter_context(mounted(scenario, [config], stop_at, init))
                    path, mode, reason = m.path / config, 'fuse', ''
                except MountError as e:
                    why = str(e)
            if mode != 'fuse':
                if self.mode == 'fuse':
                    pytest.fail('mmemu: --mmemu-mode fuse, but FUSE cannot be used: %s' % why)
                reason = 'FUSE not usable here: %s' % why
        if mode == 'export':
            out = Path(self.tmp) / str(len(self.served))
            replay(scenario, [config], stop_at, init).export(out)
            path = out / config
        view = ServedProc(DirSource(path), config, path, mode, reason)
        self.served[key] = view
        return view

    def close(self):
        try:
            self.stack.close()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


class ServedProc(ProcView):
    """A ProcView of a tree on disk; `mode` is 'fuse' or 'export'."""

    def __init__(self, source, config, path, mode, mode_reason=''):
        super().__init__(source, config, path)
        self.mode = mode
        self.mode_reason = mode_reason

    def __repr__(self):
        return 'ServedProc(%s, %s at %s)' % (self.config, self.mode, self.path)


@pytest.fixture(scope='session')
def _mmemu_served(request):
    mode = request.config.getoption('mmemu_mode') or os.environ.get('MMEMU_PYTEST_MODE') \
        or 'auto'
    if mode not in MODES:
        raise pytest.UsageError('MMEMU_PYTEST_MODE must be one of %s, not %r'
                                % (', '.join(MODES), mode))
    served = _Served(mode)
    yield served
    served.close()


@pytest.fixture
def mmemu_config():
    """The kernel config name mmemu_proc serves (parametrized by the
    mmemu_each_config marker)."""
    from mmemu.kernels import default_config_names
    return default_config_names()[0]


@pytest.fixture
def mmemu_proc(request, mmemu_config, _mmemu_served):
    """One config's emulated tree on disk (see the module docstring)."""
    spec = dict(getattr(request, 'param', None) or {}) \
        if isinstance(getattr(request, 'param', None), dict) else {}
    if hasattr(request, 'param') and not isinstance(request.param, dict):
        spec = {'scenario': request.param}
    marker = request.node.get_closest_marker('mmemu')
    if marker is not None:
        mk = dict(marker.kwargs)
        if marker.args:
            mk.setdefault('scenario', marker.args[0])
        for k, v in mk.items():
            spec.setdefault(k, v)
    if 'scenario' not in spec:
        raise pytest.UsageError('mmemu_proc needs a scenario: @pytest.mark.mmemu(SCENARIO) '
                                'or indirect parametrization')
    unknown = set(spec) - {'scenario', 'config', 'stop_at', 'init'}
    if unknown:
        raise pytest.UsageError('mmemu_proc: unknown argument(s) %s' % ', '.join(sorted(unknown)))
    base = Path(str(request.node.fspath)).parent
    scenario = resolve_scenario(spec['scenario'], base)
    return _mmemu_served.get(scenario, spec.get('config', mmemu_config),
                             spec.get('stop_at'), spec.get('init', True))

"""Shared pieces of the end-to-end tests: a real ``mmemu mount`` of a
scenario, the real client tools (installed by scripts/setup-clients.sh) and
the shared conformance tools (run_emulator.sh, compare.py).

Nothing here installs anything: a missing tool is a test failure whose
message names the setup command.
"""
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import namedtuple
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = TESTS_DIR.parent
SHARED_DIR = PROJECT_ROOT.parent / 'shared'
CONFORMANCE_DIR = SHARED_DIR / 'conformance'
CONFORMANCE_TOOLS = CONFORMANCE_DIR / 'tools'
CLIENTS_DIR = SHARED_DIR / 'clients'
INPROC = CLIENTS_DIR / 'lib' / 'inproc.sh'
CLIENTS_VENV = PROJECT_ROOT / '.venv-clients'
SHOWCASE = PROJECT_ROOT / 'configs' / 'scenarios' / 'showcase.yaml'

CONFIGS = ('page_mapcount', 'no_page_mapcount')
PAGE_KB = 4
# e2e tests run on 2 CI cores; the mounts and collectors are CPU bound
WORKERS = 2

SETUP = 'bash scripts/setup.sh'
SETUP_CLIENTS = 'bash scripts/setup-clients.sh'

# name -> (scenarios dir, expected dir): the shared recordings and the
# project's own (tests/conformance/NOTES.md), both from Linux 6.18 with
# CONFIG_PAGE_MAPCOUNT
CONFORMANCE_SETS = {
    'shared': (CONFORMANCE_DIR / 'scenarios', CONFORMANCE_DIR / 'expected'),
    'project': (TESTS_DIR / 'conformance' / 'scenarios', TESTS_DIR / 'conformance' / 'expected'),
}


def require_root():
    """FUSE mounts with allow_other, unshare and bind mounts need root."""
    if os.geteuid() != 0:
        pytest.fail('the end-to-end tests mount FUSE and run tools in mount namespaces: run them as root')


def mmemu_path():
    """The ``mmemu`` entry point of the venv running the tests (or .venv)."""
    for cand in (Path(sys.executable).parent / 'mmemu', PROJECT_ROOT / '.venv' / 'bin' / 'mmemu'):
        if os.access(cand, os.X_OK):
            return str(cand)
    pytest.fail('mmemu is not installed: run `%s`' % SETUP)


def require_command(name):
    """Absolute path of a client tool, or a failure naming the setup command."""
    path = shutil.which(name)
    if path is None:
        pytest.fail('%s not found: install the client tools with `%s` (as root; CI runs it)'
                    % (name, SETUP_CLIENTS))
    return path


def clients_python():
    """The python of .venv-clients (psutil, ps_mem and pagemap as the battery pins them)."""
    py = CLIENTS_VENV / 'bin' / 'python'
    if not os.access(py, os.X_OK):
        pytest.fail('%s missing: install the client tools with `%s` (as root; CI runs it)'
                    % (py, SETUP_CLIENTS))
    r = subprocess.run([str(py), '-c', 'import psutil'], capture_output=True, text=True)
    if r.returncode:
        pytest.fail('psutil missing in %s: run `%s`' % (CLIENTS_VENV, SETUP_CLIENTS))
    return str(py)


def require_file(path):
    if not Path(path).exists():
        pytest.fail('%s not found: the shared folder must sit beside the project (%s)'
                    % (path, SHARED_DIR))
    return str(path)


class Mount:
    """``mmemu mount SCENARIO MNT`` for the duration of a ``with`` block.

    The daemon returns once the tree is served; leaving the block runs
    ``mmemu umount`` (and a lazy fusermount3 -u if that left it mounted)."""

    def __init__(self, scenario, stop_at=None, no_init=False, live=False):
        self.scenario = str(scenario)
        self.stop_at = stop_at
        self.no_init = no_init
        self.live = live
        self.mountpoint = None

    def __enter__(self):
        require_root()
        self.mountpoint = tempfile.mkdtemp(prefix='mmemu-e2e-', dir='/tmp')
        os.chmod(self.mountpoint, 0o755)
        argv = [mmemu_path(), 'mount', self.scenario, self.mountpoint]
        if self.stop_at:
            argv += ['--stop-at', self.stop_at]
        if self.no_init:
            argv.append('--no-init')
        if self.live:
            argv.append('--live')
        r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if r.returncode != 0 or not os.path.ismount(self.mountpoint):
            self._cleanup()
            raise AssertionError('%s failed (exit %d): %s' % (' '.join(argv), r.returncode,
                                                              (r.stderr or r.stdout).strip()))
        return self

    def __exit__(self, *exc):
        self._cleanup()

    def _cleanup(self):
        mp = self.mountpoint
        if mp is None:
            return
        subprocess.run([mmemu_path(), 'umount', mp], capture_output=True, timeout=60)
        if os.path.ismount(mp):
            subprocess.run(['fusermount3', '-u', '-z', mp], capture_output=True, timeout=60)
        try:
            os.rmdir(mp)
        except OSError:
            pass
        self.mountpoint = None

    def root(self, config):
        """MNT/<config>: the ROOT the client tools take (ROOT/proc, ROOT/sys)."""
        return os.path.join(self.mountpoint, config)

    def proc(self, config):
        return os.path.join(self.mountpoint, config, 'proc')


def inproc(root, *argv, pidns=True, timeout=60):
    """``inproc.sh [--no-pidns] ROOT CMD...``: CMD with ROOT/proc bind-mounted on /proc."""
    cmd = [require_file(INPROC)] + ([] if pidns else ['--no-pidns']) + [str(root)] + [str(a) for a in argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def read_u64_array(path):
    """A /proc binary array (kpagecount, kpageflags) read to EOF: the files
    have st_size 0, so they are read in chunks until a short read."""
    import numpy as np
    chunks = []
    with open(path, 'rb', buffering=0) as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            chunks.append(b)
    return np.frombuffer(b''.join(chunks), dtype='<u8')


def read_meminfo(proc):
    out = {}
    with open(os.path.join(proc, 'meminfo')) as f:
        for line in f:
            key, rest = line.split(':', 1)
            out[key] = int(rest.split()[0])
    return out


def load_json(path):
    with open(path) as f:
        return json.load(f)


def run_parallel(fn, items, workers=WORKERS):
    """[fn(item)] computed by ``workers`` threads (each item runs subprocesses)."""
    with ThreadPoolExecutor(workers) as ex:
        return list(ex.map(fn, items))


# --- conformance ----------------------------------------------------------------

def _scenario_module():
    """The shared tools' scenario parser: the labels run_emulator.sh uses."""
    spec = importlib.util.spec_from_file_location('conformance_scenario',
                                                  require_file(CONFORMANCE_TOOLS / 'scenario.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_SCENARIO_MOD = None


def scenario_labels(path):
    """Snapshot labels of a scenario file, in order."""
    global _SCENARIO_MOD
    if _SCENARIO_MOD is None:
        _SCENARIO_MOD = _scenario_module()
    return list(_SCENARIO_MOD.Scenario(str(path)).labels)


def conformance_scenarios():
    """[(set name, scenario name, scenario path)] of every conformance set."""
    out = []
    for set_name, (scen_dir, _) in CONFORMANCE_SETS.items():
        for p in sorted(Path(scen_dir).glob('*.yaml')):
            out.append((set_name, p.stem, p))
    return out


def conformance_snapshots():
    """[(set name, scenario name, label)] of every recorded snapshot."""
    out = []
    for set_name, (_, exp_dir) in CONFORMANCE_SETS.items():
        for d in sorted(Path(exp_dir).iterdir()):
            if d.is_dir():
                out.extend((set_name, d.name, f.stem) for f in sorted(d.glob('*.json')))
    return out


def collect_scenario(scenario, out_dir, config):
    """run_emulator.sh for every label of ``scenario`` in order, into
    OUT_DIR/<scenario name>/<label>.json (in order, so that same_frame gets
    the previous label's observation).  Returns {label: error text} for the
    labels that failed."""
    name = Path(scenario).stem
    os.makedirs(os.path.join(out_dir, name), exist_ok=True)
    # one config per mount: the collector reads only MMEMU_CONFIG's subtree
    kernel = PROJECT_ROOT / 'configs' / 'kernels' / (config + '.yaml')
    env = dict(os.environ, MMEMU_MOUNT='%s mount --no-init --config %s' % (mmemu_path(), kernel),
               MMEMU_CONFIG=config, PYTHON=sys.executable)
    errors = {}
    for label in scenario_labels(scenario):
        out = os.path.join(out_dir, name, label + '.json')
        try:
            r = subprocess.run([require_file(CONFORMANCE_TOOLS / 'run_emulator.sh'), str(scenario), label, out],
                               env=env, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            errors[label] = 'run_emulator.sh did not finish in 300 s'
            continue
        if r.returncode != 0 or not os.path.exists(out):
            errors[label] = 'run_emulator.sh exit %d: %s' % (r.returncode, r.stderr.strip()[-2000:])
    return errors


# One difference line of compare.py: process, range, pages, field, expected, actual.
Diff = namedtuple('Diff', 'proc range pages field expected actual')
CompareResult = namedtuple('CompareResult', 'snapshots passed failed returncode output')

_DIFF_LINE = re.compile(r'^  (?P<where>\S.*?)\s+(?P<field>\S+)\s+expected (?P<exp>.*?)\s+actual (?P<act>.*)$')
_WHERE = re.compile(r'^(?P<proc>pid \S+|memcg \S+|-)(?:  vma (?P<range>\S+))?(?:  page (?P<pages>\S+))?$')
_HEADER = re.compile(r'^FAIL (?P<title>\S+): (?:(?P<n>\d+) difference\(s\)|(?P<missing>no actual observation .*))$')
_SUMMARY = re.compile(r'^(\d+) passed, (\d+) failed$')


def parse_compare(text):
    """compare.py output -> ({title: [Diff] or a str for a missing
    observation}, passed, failed).  Raises ValueError on a line it does not
    understand, so a format change cannot pass silently."""
    snaps, summary, current = {}, None, None
    for line in text.splitlines():
        if line.startswith('ok   '):
            snaps[line[5:].strip()] = []
            current = None
            continue
        m = _HEADER.match(line)
        if m:
            if m.group('missing'):
                snaps[m.group('title')] = m.group('missing')
                current = None
            else:
                current = snaps[m.group('title')] = []
            continue
        m = _SUMMARY.match(line)
        if m:
            summary = int(m.group(1)), int(m.group(2))
            continue
        m = _DIFF_LINE.match(line)
        w = _WHERE.match(m.group('where')) if m else None
        if w is None or current is None:
            raise ValueError('compare.py: unexpected output line %r' % line)
        current.append(Diff(w.group('proc'), w.group('range'), w.group('pages'), m.group('field'),
                            m.group('exp'), m.group('act')))
    if summary is None:
        raise ValueError('compare.py: no "N passed, M failed" line in:\n' + text[-2000:])
    return snaps, summary[0], summary[1]


def run_compare(expected_dir, actual_dir):
    """``compare.py --dirs EXPECTED ACTUAL`` with every difference printed."""
    r = subprocess.run([sys.executable, require_file(CONFORMANCE_TOOLS / 'compare.py'), '--dirs',
                        str(expected_dir), str(actual_dir), '--limit', '1000000'],
                       capture_output=True, text=True, timeout=600)
    if r.stderr.strip():
        raise AssertionError('compare.py failed (exit %d): %s' % (r.returncode, r.stderr.strip()))
    snaps, passed, failed = parse_compare(r.stdout)
    return CompareResult(snaps, passed, failed, r.returncode, r.stdout)

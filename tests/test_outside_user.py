"""The package as an outside user gets it: a wheel of this tree installed
in a fresh venv (no editable install, no repository on sys.path), then
`pytest examples/` from a copy of examples/ elsewhere, served by FUSE where
it works and by an export, and the installed `mmemu` command verifying a
bundled scenario from the package data."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run(cmd, cwd, env=None, timeout=600):
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=timeout)
    assert res.returncode == 0, '%s\n%s%s' % (' '.join(map(str, cmd)), res.stdout, res.stderr)
    return res.stdout


@pytest.fixture(scope='module')
def outside(tmp_path_factory):
    """(venv python, work dir) with the wheel, pytest and psutil installed."""
    base = tmp_path_factory.mktemp('outside')
    wheels = base / 'wheels'
    # `python -m build` with this venv's setuptools and wheel (the test
    # extra), so that nothing is fetched for the build itself
    run([sys.executable, '-m', 'build', '--wheel', '--no-isolation', '--outdir', wheels, REPO],
        cwd=base)
    wheel, = wheels.glob('mmemu-*.whl')
    run([sys.executable, '-m', 'venv', base / 'venv'], cwd=base)
    py = base / 'venv' / 'bin' / 'python'
    run([py, '-m', 'pip', 'install', '-q', wheel, 'pytest', 'psutil'], cwd=base)
    work = base / 'work'
    work.mkdir()
    shutil.copytree(REPO / 'examples', work / 'examples',
                    ignore=shutil.ignore_patterns('__pycache__'))
    env = {k: v for k, v in os.environ.items()
           if k not in ('PYTHONPATH', 'MMEMU_PYTEST_MODE', 'VIRTUAL_ENV')}
    return py, work, env


def test_installed_package_is_not_the_repository(outside):
    py, work, env = outside
    out = run([py, '-c', 'import mmemu, mmcore, procfs.formats, procfs.cli as c; '
               'print(mmemu.__file__); print(c.KERNELS_DIR); print(mmemu.config_names())'],
              cwd=work, env=env)
    lines = out.splitlines()
    assert str(REPO) not in lines[0] and 'site-packages' in lines[0]
    assert lines[1].endswith('site-packages/mmemu/configs/kernels')
    assert "'page_mapcount'" in lines[2] and "'no_page_mapcount'" in lines[2]


@pytest.mark.parametrize('mode', ['auto', 'export'])
def test_examples_pass_in_a_fresh_venv(outside, mode):
    py, work, env = outside
    out = run([py, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', 'examples/'], cwd=work,
              env=dict(env, MMEMU_PYTEST_MODE=mode))
    last = out.strip().splitlines()[-1]
    assert ' passed' in last and 'failed' not in last and 'error' not in last, out


def test_installed_cli_verifies_a_bundled_example(outside):
    py, work, env = outside
    mmemu_cli = py.parent / 'mmemu'
    site = run([py, '-c', 'import mmemu, os; print(os.path.dirname(mmemu.__file__))'],
               cwd=work, env=env).strip()
    example = Path(site) / 'configs' / 'scenarios' / 'examples' / 's03-mthp-child-writes.yaml'
    out = run([mmemu_cli, 'check', '--verify', example], cwd=work, env=env)
    m = re.search(r': (\d+) of (\d+) expectations passed on (.*)$', out.strip().splitlines()[-1])
    assert m and m[1] == m[2] and int(m[1]) > 0, out
    assert 'page_mapcount' in m[3].split(', ') and 'no_page_mapcount' in m[3].split(', ')
    assert 'FAILED' not in out

"""The pytest plugin (entry point pytest11 'mmemu'), run as a user runs it:
pytest in a directory of its own on test files that only use the fixtures
and markers.  Values: semantics.md 13 S1 (a 64K mTHP written by one
process: Rss 64, Pss 64, Private_Dirty 64 under every config) and the
bundled showcase scenario's pids."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import mmemu
from mmemu import pytest_plugin

S1 = '''\
format: 1
name: s1
kernel:
  memory: 64M
  thp: {enabled: never, sizes: {64K: always}}
processes: [{pid: 100, comm: app}]
steps:
  - mmap: {pid: 100, name: buf, size: 64K, align: 64K}
  - write: {pid: 100, vma: buf}
  - snapshot: written
'''


def run_pytest(tmp_path, test_text, *args, env=None):
    (tmp_path / 's1.yaml').write_text(S1)
    (tmp_path / 'test_user.py').write_text(textwrap.dedent(test_text))
    e = dict(os.environ)
    e.pop('MMEMU_PYTEST_MODE', None)
    e.update(env or {})
    res = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
                          '-rA', 'test_user.py', *args], cwd=tmp_path, env=e,
                         capture_output=True, text=True, timeout=300)
    return res.returncode, res.stdout + res.stderr


def test_each_config_marker_runs_once_per_profile(tmp_path):
    status, out = run_pytest(tmp_path, '''
        import pytest

        @pytest.mark.mmemu('s1.yaml')
        @pytest.mark.mmemu_each_config
        def test_rollup(mmemu_proc, mmemu_config):
            assert mmemu_proc.config == mmemu_config
            r = mmemu_proc.smaps_rollup(100)
            assert (r['Rss'], r['Pss'], r['Private_Dirty']) == (64, 64, 64)
            print('MODE', mmemu_config, mmemu_proc.mode)
    ''', '-s')
    assert status == 0, out
    for name in mmemu.config_names():
        assert 'PASSED test_user.py::test_rollup[%s]' % name in out, out
    assert '%d passed' % len(mmemu.config_names()) in out


def test_each_config_with_bits(tmp_path):
    status, out = run_pytest(tmp_path, '''
        import pytest

        @pytest.mark.mmemu('s1.yaml')
        @pytest.mark.mmemu_each_config(bits=32)
        def test_32(mmemu_proc):
            assert mmemu_proc.read_text('proc/100/comm') == 'app\\n'
    ''')
    assert status == 0, out
    names = [n for n in mmemu.config_names() if mmemu.kernel_config(n).bits == 32]
    assert '%d passed' % len(names) in out and all('test_32[%s]' % n in out for n in names)


def test_mode_is_fuse_where_it_works_and_export_when_asked(tmp_path):
    test = '''
        import pytest

        @pytest.mark.mmemu('s1.yaml')
        def test_mode(mmemu_proc):
            import os
            print('MODE=%s' % mmemu_proc.mode)
            assert os.path.isfile(mmemu_proc.proc / '100' / 'smaps')
            assert mmemu_proc.path.name == mmemu_proc.config
    '''
    status, out = run_pytest(tmp_path, test, '-s', env={'MMEMU_PYTEST_MODE': 'export'})
    assert status == 0 and 'MODE=export' in out, out
    status, out = run_pytest(tmp_path, test, '-s', '--mmemu-mode', 'export')
    assert status == 0 and 'MODE=export' in out, out
    if mmemu.fuse_available()[0]:
        status, out = run_pytest(tmp_path, test, '-s')
        assert status == 0 and 'MODE=fuse' in out, out


def test_indirect_parametrization_with_scenario_and_config(tmp_path):
    status, out = run_pytest(tmp_path, '''
        import pytest
        import mmemu

        built = mmemu.Scenario('b', memory='64M').process(100).mmap(100, 'x', '8K')
        built.write(100, 'x')

        @pytest.mark.parametrize('mmemu_proc', [
            {'scenario': 's1.yaml', 'config': 'page_mapcount', 'stop_at': 'written'},
            {'scenario': built, 'config': 'no_page_mapcount-32bit', 'init': False},
            'showcase',
        ], indirect=True, ids=['file', 'builder', 'bundled'])
        def test_any(mmemu_proc):
            print('CFG', mmemu_proc.config, mmemu_proc.pids())
            assert 100 in mmemu_proc.pids() or 102 in mmemu_proc.pids()
    ''', '-s', '--mmemu-mode', 'export')
    assert status == 0, out
    assert "CFG no_page_mapcount-32bit [100]" in out          # init=False: only the scenario
    assert "CFG page_mapcount [1, 100]" in out


def test_missing_scenario_is_a_usage_error(tmp_path):
    status, out = run_pytest(tmp_path, '''
        def test_x(mmemu_proc):
            pass
    ''')
    assert status != 0 and 'mmemu_proc needs a scenario' in out


def test_fuse_mode_without_fuse_fails_and_auto_falls_back(monkeypatch):
    monkeypatch.setattr(mmemu.run, 'fuse_available', lambda: (False, '/dev/fuse is missing'))
    sc = mmemu.Scenario.from_yaml(S1)
    served = pytest_plugin._Served('auto')
    try:
        view = served.get(sc, 'page_mapcount', None, True)
        assert view.mode == 'export' and 'FUSE not usable here: /dev/fuse is missing' \
            in view.mode_reason
        assert view.smaps_rollup(100)['Pss'] == 64                       # S1
        assert served.get(sc, 'page_mapcount', None, True) is view       # served once
    finally:
        served.close()
    assert not Path(served.tmp).exists()
    strict = pytest_plugin._Served('fuse')
    try:
        with pytest.raises(pytest.fail.Exception, match='FUSE cannot be used'):
            strict.get(sc, 'page_mapcount', None, True)
    finally:
        strict.close()

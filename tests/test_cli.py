"""The mmemu command line (procfs.cli) with a fake procfs.build."""
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import MEMINFO, PROJECT_ROOT, SMAPS, install_fake_build, public_tempdir
from procfs import cli, fuse

SCENARIO = '''\
format: 1
name: tiny
processes:
  - pid: 100
steps:
  - mmap: {pid: 100, name: buf, size: 64K}
  - write: {pid: 100, vma: buf}
  - snapshot: first
  - fork: {pid: 100, child: 101}
  - snapshot: second
'''


@pytest.fixture
def fake_build(monkeypatch):
    calls = []
    saved = sys.modules.get('procfs.build')
    install_fake_build(calls)
    yield calls
    if saved is None:
        sys.modules.pop('procfs.build', None)
    else:
        sys.modules['procfs.build'] = saved


@pytest.fixture
def scenario(tmp_path):
    path = tmp_path / 'tiny.yaml'
    path.write_text(SCENARIO)
    return path


def run(capsys, *argv):
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line_error(status, err, *words):
    assert status == 1
    assert 'Traceback' not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('mmemu: error: '), err
    for w in words:
        assert w in lines[0], err


def test_default_configs_are_the_64bit_ones(tmp_path):
    (tmp_path / 'a.yaml').write_text('name: a\nCONFIG_64BIT: y\nCONFIG_PAGE_MAPCOUNT: y\n')
    (tmp_path / 'b.yaml').write_text('name: b\nCONFIG_PAGE_MAPCOUNT: n\n')          # 64-bit by default
    (tmp_path / 'c.yaml').write_text('# 32-bit\nname: c\nCONFIG_64BIT: n\n')
    (tmp_path / 'd.yaml').write_text('name: d\nCONFIG_64BIT: "n"   # quoted\n')
    (tmp_path / 'notes.txt').write_text('CONFIG_64BIT: y\n')
    assert [Path(p).name for p in cli.default_configs(tmp_path)] == ['a.yaml', 'b.yaml']


def test_default_configs_of_the_project():
    chosen = {Path(p).name for p in cli.default_configs()}
    for path in (PROJECT_ROOT / 'configs' / 'kernels').glob('*.yaml'):
        declares_32bit = re.search(r'^CONFIG_64BIT:\s*n\s*$', path.read_text(), re.M) is not None
        assert (path.name in chosen) == (not declares_32bit), path.name
    assert chosen


def test_check_ok(capsys, scenario):
    status, out, err = run(capsys, 'check', scenario)
    assert (status, err) == (0, '')
    assert out == 'ok: tiny, 5 steps, labels: first, second\n'


def test_check_reports_file_and_line(capsys, tmp_path):
    bad = tmp_path / 'bad.yaml'
    bad.write_text(SCENARIO.replace('  - write: {pid: 100, vma: buf}', '  - write: {pid: 100, vma: buf, colour: red}'))
    status, out, err = run(capsys, 'check', bad)
    assert_one_line_error(status, err, '%s:7' % bad, 'colour')


def test_check_missing_file(capsys, tmp_path):
    status, out, err = run(capsys, 'check', tmp_path / 'nope.yaml')
    assert_one_line_error(status, err, 'nope.yaml', 'not found')


def test_export_writes_the_tree(capsys, fake_build, scenario, tmp_path):
    target = tmp_path / 'out'
    status, out, err = run(capsys, 'export', scenario, target, '--config', 'x.yaml', '--stop-at', 'first')
    assert_one_line_error(status, err, 'x.yaml')                     # configs are checked
    cfg = tmp_path / 'k.yaml'
    cfg.write_text('name: k\n')
    status, out, err = run(capsys, 'export', scenario, target, '--config', cfg, '--stop-at', 'first')
    assert (status, err) == (0, ''), err
    assert fake_build == [('build_tree', str(scenario), [str(cfg)], 'first')]
    assert 'fake summary: 1 configs' in out and 'exported' in out
    assert (target / 'page_mapcount/proc/meminfo').read_bytes() == MEMINFO
    assert (target / 'no_page_mapcount/proc/100/smaps').read_bytes() == SMAPS['no_page_mapcount']
    assert os.readlink(target / 'page_mapcount/proc/self') == '100'


def test_export_refuses_a_non_empty_directory(capsys, fake_build, scenario, tmp_path):
    (tmp_path / 'out').mkdir()
    (tmp_path / 'out' / 'keep').write_text('x')
    status, out, err = run(capsys, 'export', scenario, tmp_path / 'out')
    assert_one_line_error(status, err, 'not an empty directory')
    assert fake_build == []


def test_diff_and_tools_call_the_builder_with_default_configs(capsys, fake_build, scenario):
    status, out, err = run(capsys, 'diff', scenario, '--stop-at', 'second')
    assert (status, out) == (0, 'fake diff report\n')
    status, out, err = run(capsys, 'tools', scenario)
    assert (status, out) == (0, 'fake tools report\n')
    defaults = cli.default_configs()
    assert fake_build == [('diff_report', str(scenario), defaults, 'second'),
                          ('tools_report', str(scenario), defaults, None)]


def test_missing_builder_is_a_clear_error(capsys, monkeypatch, scenario):
    monkeypatch.setitem(sys.modules, 'procfs.build', None)      # import raises ModuleNotFoundError
    status, out, err = run(capsys, 'diff', scenario)
    assert_one_line_error(status, err, 'procfs.build')


def test_unexpected_exception_is_one_line_without_traceback(capsys, monkeypatch, fake_build, scenario):
    def boom(*a):
        raise KeyError('x')
    monkeypatch.setattr(sys.modules['procfs.build'], 'diff_report', boom)
    assert cli.main(['diff', str(scenario)]) == 1
    err = capsys.readouterr().err
    assert err.startswith('mmemu: internal error: KeyError') and 'Traceback' not in err
    assert len(err.strip().splitlines()) == 1


# mount errors: one line, exit 1, and the builder is not even run
def test_mount_missing_scenario(capsys, fake_build, tmp_path):
    status, out, err = run(capsys, 'mount', tmp_path / 'nope.yaml', tmp_path)
    assert_one_line_error(status, err, 'nope.yaml', 'not found')
    assert fake_build == []


def test_mount_point_not_a_directory(capsys, fake_build, scenario, tmp_path):
    status, out, err = run(capsys, 'mount', scenario, scenario)
    assert_one_line_error(status, err, 'not a directory')
    status, out, err = run(capsys, 'mount', scenario, tmp_path / 'absent')
    assert_one_line_error(status, err, 'does not exist')
    assert fake_build == []


def test_mount_point_not_empty(capsys, fake_build, scenario, tmp_path):
    status, out, err = run(capsys, 'mount', scenario, tmp_path)      # holds tiny.yaml
    assert_one_line_error(status, err, 'not empty', 'tiny.yaml')


def test_mount_point_already_mounted(capsys, fake_build, scenario, fake_mount):
    status, out, err = run(capsys, 'mount', scenario, fake_mount)
    assert_one_line_error(status, err, 'already a mount point')


def test_mount_without_dev_fuse(capsys, monkeypatch, fake_build, scenario, tmp_path):
    (tmp_path / 'mp').mkdir()
    monkeypatch.setattr(fuse, 'DEV_FUSE', str(tmp_path / 'no-such-device'))
    status, out, err = run(capsys, 'mount', scenario, tmp_path / 'mp')
    assert_one_line_error(status, err, 'no-such-device is missing')


def test_mount_without_fusermount(capsys, monkeypatch, fake_build, scenario, tmp_path):
    (tmp_path / 'mp').mkdir()
    monkeypatch.setenv('PATH', str(tmp_path / 'empty-bin'))
    status, out, err = run(capsys, 'mount', scenario, tmp_path / 'mp')
    assert_one_line_error(status, err, 'fusermount3 is missing')


def test_umount_of_a_plain_directory(capsys, tmp_path):
    status, out, err = run(capsys, 'umount', tmp_path)
    assert_one_line_error(status, err, 'is not mounted')


# The real thing: `mmemu mount` daemonizes and returns once the tree is
# served; `mmemu umount` ends it. Run as a separate process (the command
# forks) with the fake builder installed there.
MMEMU_WITH_FAKE_BUILD = r'''
import sys
sys.path[:0] = [%r, %r]
import conftest
conftest.install_fake_build()
from procfs.cli import main
sys.exit(main(sys.argv[1:]))
''' % (str(Path(__file__).resolve().parent), str(PROJECT_ROOT))


def mmemu(*argv, timeout=60):
    return subprocess.run([sys.executable, '-c', MMEMU_WITH_FAKE_BUILD, *map(str, argv)],
                          capture_output=True, text=True, timeout=timeout)


def test_mount_daemon_serves_until_umount(scenario):
    mp = public_tempdir('mmemu-cli-')
    try:
        res = mmemu('mount', scenario, mp)
        assert res.returncode == 0, res.stderr
        assert os.path.ismount(mp)
        assert 'fake summary' in res.stdout
        assert '%s/page_mapcount' % mp in res.stdout and 'mmemu umount %s' % mp in res.stdout
        daemon = int(re.search(r'daemon pid (\d+)', res.stdout).group(1))
        os.kill(daemon, 0)
        assert (Path(mp) / 'page_mapcount/proc/meminfo').read_bytes() == MEMINFO
        cat = subprocess.run(['cat', '%s/no_page_mapcount/proc/100/smaps' % mp], capture_output=True)
        assert cat.stdout == SMAPS['no_page_mapcount']

        again = mmemu('mount', scenario, mp)
        assert again.returncode == 1 and 'already a mount point' in again.stderr

        res = mmemu('umount', mp)
        assert res.returncode == 0, res.stderr
        assert not os.path.ismount(mp)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.kill(daemon, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            raise AssertionError('the mount daemon %d did not exit after umount' % daemon)
    finally:
        if os.path.ismount(mp):
            subprocess.run(['fusermount3', '-u', '-z', mp])
        os.rmdir(mp)


def test_python_dash_m_procfs_runs_the_cli(scenario):
    res = subprocess.run([sys.executable, '-m', 'procfs', 'check', str(scenario)],
                         capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith('ok: tiny, 5 steps')


def test_mount_foreground_until_sigterm(scenario):
    mp = public_tempdir('mmemu-fg-')
    proc = subprocess.Popen([sys.executable, '-c', MMEMU_WITH_FAKE_BUILD, 'mount', str(scenario), mp,
                             '--foreground'], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        while not any(line.startswith('mounted at') for line in lines):
            line = proc.stdout.readline()
            assert line, 'mmemu mount --foreground exited: %s' % proc.stderr.read()
            lines.append(line)
        assert 'daemon pid %d' % proc.pid in lines[-1]
        assert os.path.ismount(mp)
        proc.terminate()
        assert proc.wait(timeout=20) == 0
        assert not os.path.ismount(mp)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if os.path.ismount(mp):
            subprocess.run(['fusermount3', '-u', '-z', mp])
        os.rmdir(mp)


def test_stale_mount_is_reported_and_umount_clears_it(capsys, fake_build, scenario):
    from conftest import start_fake_mount
    mp = public_tempdir('mmemu-stale-')
    proc = start_fake_mount(mp)
    try:
        proc.kill()                      # SIGKILL: no chance to unmount
        proc.wait()
        status, out, err = run(capsys, 'mount', scenario, mp)
        assert_one_line_error(status, err, 'stale FUSE mount', 'mmemu umount')
        status, out, err = run(capsys, 'umount', mp)
        assert status == 0, err
        assert not os.path.ismount(mp) and os.listdir(mp) == []
    finally:
        if proc.poll() is None:
            proc.kill()
        if os.path.ismount(mp):
            subprocess.run(['fusermount3', '-u', '-z', mp])
        os.rmdir(mp)


def test_user_errors_stay_user_errors_under_python_m(tmp_path):
    """Run as `python -m procfs.cli`, CliError lives in __main__: still a
    one-line user error, not an 'internal error'."""
    r = subprocess.run([sys.executable, '-m', 'procfs.cli', 'tools', str(tmp_path / 'nope.yaml')],
                       capture_output=True, text=True, timeout=60, cwd=str(PROJECT_ROOT))
    assert_one_line_error(r.returncode, r.stderr, 'nope.yaml', 'not found')

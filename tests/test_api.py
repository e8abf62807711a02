"""The Python API (import mmemu): builder, YAML round trip, replay, reading
rendered files, export, mounted().

Expected values are semantics.md section 13 S3 (a 64K mTHP, fork, the
child writes page 0): smaps P Pss 34 / 32, Private_Dirty 4 / 0 ([real] /
NO column), C Pss 34, kpagecount of the old folio 1, 2*15 / 2."""
import os
import signal
from pathlib import Path

import pytest

import mmemu
from mmcore.scenario import load_scenario

REPO = Path(__file__).resolve().parents[1]
P, C = 100, 101
MTHP_64K = {'enabled': 'never', 'sizes': {'64K': 'always'}}

S3_YAML = '''\
format: 1
name: s3
kernel:
  memory: 64M
  thp: {enabled: never, sizes: {64K: always}}
processes: [{pid: 100, comm: parent}]
steps:
  - mmap: {pid: 100, name: buf, size: 64K, align: 64K}
  - write: {pid: 100, vma: buf}
  - snapshot: s1
  - fork: {pid: 100, child: 101, comm: child}
  - write: {pid: 101, vma: buf, offset: 0, length: 4K}
  - snapshot: s3
'''


def s3():
    s = mmemu.Scenario('s3', memory='64M', thp=MTHP_64K)
    s.process(P, comm='parent')
    s.mmap(P, 'buf', '64K', align='64K').write(P, 'buf').snapshot('s1')
    s.fork(P, C, comm='child').write(C, 'buf', offset=0, length='4K').snapshot('s3')
    return s


def fields(sc):
    """The loader's view of a scenario, without where it came from."""
    out = []
    for st in sc.steps:
        d = dict(vars(st))
        d.pop('line')
        out.append((type(st).__name__, d))
    return (sc.name, sc.memory, sc.thp, sc.processes, out, sc.labels)


# --- builder -----------------------------------------------------------------------------------

def test_builder_gives_what_the_same_yaml_file_gives(tmp_path):
    path = tmp_path / 's3.yaml'
    path.write_text(S3_YAML)
    assert fields(s3().parsed) == fields(load_scenario(str(path)))


def test_to_yaml_from_yaml_round_trip(tmp_path):
    s = s3().expect('smaps', {'pid': P, 'vma': 'buf'}, configs=['page_mapcount'], Pss=34)
    s.expect('meminfo', {'since': 's1'}, {'Active(anon)': 4})
    text = s.to_yaml()
    back = mmemu.Scenario.from_yaml(text)
    assert back.to_yaml() == text
    assert fields(back.parsed) == fields(s.parsed)
    path = tmp_path / 'saved.yaml'
    s.save(path)
    assert fields(mmemu.Scenario.from_yaml(path).parsed) == fields(s.parsed)
    assert fields(mmemu.Scenario.from_yaml(str(path)).parsed) == fields(s.parsed)


@pytest.mark.parametrize('make,words', [
    (lambda s: s.write(P, 'bf'), "step 7 (write): unknown vma 'bf' in pid 100 (known: buf)"),
    (lambda s: s.fork(P, C), 'step 7 (fork): child: pid 101 is in use'),
    (lambda s: s.munmap(P, 'buf', offset=100), 'is not a multiple of the page size'),
    (lambda s: s.snapshot('s1'), "label 's1' already used at step 3"),
    (lambda s: s.madvise(P, 'buf', 'hugepages'), "advice: bad value 'hugepages'"),
    (lambda s: s.expect('smaps', {'pid': P, 'vma': 'buf'}, Psss=3), "unknown field 'Psss'"),
    (lambda s: s.expect('smaps', {'pid': P, 'vma': 'buf'}, Pss={'page_mapcont': 3}),
     "unknown config 'page_mapcont'"),
])
def test_builder_rejects_a_bad_step_at_once_and_keeps_its_state(make, words):
    s = s3()
    before = s.to_yaml()
    with pytest.raises(mmemu.ScenarioError) as e:
        make(s)
    assert words in str(e.value)
    assert not str(e.value).startswith('<')          # no line of a text the user never wrote
    assert s.to_yaml() == before


def test_from_yaml_of_a_bad_file_names_file_and_line(tmp_path):
    path = tmp_path / 'bad.yaml'
    path.write_text(S3_YAML.replace('vma: buf, offset: 0', 'vma: bf, offset: 0'))
    with pytest.raises(mmemu.ScenarioError) as e:
        mmemu.Scenario.from_yaml(path)
    assert str(e.value).startswith('%s:12: step 5 (write): unknown vma' % path)


# --- replay and reading -----------------------------------------------------------------------

def test_replay_reads_values_per_config():
    r = mmemu.replay(s3())
    assert r.configs == mmemu.default_config_names()
    page, no = r['page_mapcount'], r['no_page_mapcount']
    assert (page.smaps_rollup(P)['Pss'], no.smaps_rollup(P)['Pss']) == (34, 32)     # S3
    assert (page.smaps_rollup(P)['Private_Dirty'], no.smaps_rollup(P)['Private_Dirty']) == (4, 0)
    assert page.smaps_rollup(C)['Pss'] == no.smaps_rollup(C)['Pss'] == 34
    vma = [m for m in page.maps(P) if m[3] == '[anon:buf]'][0]
    pm = page.pagemap(P, vma[0], 16)
    assert list(pm.present) == [1] * 16 and list(pm.exclusive) == [1] + [0] * 15   # S3 [real]
    assert page.kpagecount(pm.pfn) == [1] + [2] * 15 and no.kpagecount(pm.pfn) == [2] * 16
    assert r.read_bytes('page_mapcount', 'proc/%d/comm' % C) == b'child\n'
    assert {P, C, 1} <= set(page.pids())


def test_replay_stop_at_init_and_configs():
    r = mmemu.replay(s3(), configs=['page_mapcount'], stop_at='s1', init=False)
    assert r.configs == ['page_mapcount']
    v = r.view()
    assert v.pids() == [P]
    assert v.smaps_rollup(P)['Pss'] == 64                     # S1 [real]
    with pytest.raises(mmemu.ScenarioError):
        mmemu.replay(s3(), stop_at='nope')
    with pytest.raises(mmemu.ConfigError):
        mmemu.replay(s3(), configs=['no-such-config'])
    r = mmemu.replay(str(REPO / 'configs' / 'kernels' / '..' / 'scenarios' / 'showcase.yaml'),
                     configs=[REPO / 'configs' / 'kernels' / 'page_mapcount-32bit.yaml'])
    assert r.configs == ['page_mapcount-32bit']


def test_replay_of_a_refused_step_names_step_and_config():
    s = s3().mmap(P, 'ro', '4K', prot='r').write(P, 'ro')
    with pytest.raises(mmemu.StepError) as e:
        mmemu.replay(s, configs=['page_mapcount'])
    assert 'step 8 (write' in str(e.value) and 'kernel config page_mapcount' in str(e.value)


def test_verify_api():
    s = s3().expect('smaps_rollup', {'pid': P}, Pss={'page_mapcount': 34,
                                                     'no_page_mapcount': 30})
    results = mmemu.verify(s, configs=['page_mapcount', 'no_page_mapcount'])
    assert [(r.config, r.passed) for r in results] == [('page_mapcount', True),
                                                       ('no_page_mapcount', False)]
    assert results[1].detail == 'expected 30, got 32'


def test_export_writes_files_a_view_reads(tmp_path):
    out = mmemu.export(s3(), tmp_path / 'tree', configs=['no_page_mapcount'])
    v = mmemu.ProcView(mmemu.run.DirSource(out / 'no_page_mapcount'), 'no_page_mapcount')
    assert v.smaps_rollup(P)['Pss'] == 32                     # S3 NO column
    assert (out / 'no_page_mapcount' / 'proc' / 'meminfo').is_file()


# --- mounted() -------------------------------------------------------------------------------

def _fuse_or_skip():
    ok, why = mmemu.fuse_available()
    if not ok:
        pytest.skip('FUSE not usable: %s' % why)


def _mounts():
    with open('/proc/self/mountinfo') as f:
        return f.read()


def test_mounted_serves_and_unmounts():
    _fuse_or_skip()
    with mmemu.mounted(s3(), configs=['page_mapcount', 'no_page_mapcount']) as m:
        assert os.path.ismount(m.path)
        assert m.root('no_page_mapcount').smaps_rollup(P)['Pss'] == 32          # S3
        assert (m.root('page_mapcount').proc / str(C) / 'smaps_rollup').is_file()
        path = m.path
    assert str(path) not in _mounts() and not path.exists()


@pytest.mark.parametrize('exc', [RuntimeError, KeyboardInterrupt])
def test_mounted_unmounts_on_exception_and_ctrl_c(exc):
    _fuse_or_skip()
    seen = {}
    with pytest.raises(exc):
        with mmemu.mounted(s3(), configs=['page_mapcount']) as m:
            seen['path'], seen['pid'] = m.path, m.daemon_pid
            assert os.path.ismount(m.path)
            raise exc('interrupted')
    assert str(seen['path']) not in _mounts()
    with pytest.raises(ProcessLookupError):
        os.kill(seen['pid'], 0)                           # the daemon is gone (reaped)


def test_mounted_unmounts_on_sigint_during_the_block():
    _fuse_or_skip()
    # Ctrl-C as an interactive Python gets it, also where SIGINT was
    # ignored at start (a background job of a non-interactive shell)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    seen = {}
    try:
        _sigint_during_the_block(seen)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert str(seen['path']) not in _mounts()


def _sigint_during_the_block(seen):
    with pytest.raises(KeyboardInterrupt):
        with mmemu.mounted(s3(), configs=['page_mapcount']) as m:
            seen['path'] = m.path
            os.kill(os.getpid(), signal.SIGINT)           # Ctrl-C
            signal.pause()


def test_mounted_at_a_given_mountpoint_keeps_the_directory(tmp_path):
    _fuse_or_skip()
    mp = tmp_path / 'mnt'
    mp.mkdir()
    with mmemu.mounted(s3(), configs=['page_mapcount'], mountpoint=mp) as m:
        assert m.path == mp and os.path.ismount(mp)
    assert mp.is_dir() and not os.path.ismount(mp)

"""Tests of mmcore.scenario: loading, defaults, resolution and validation of
scenario files (shared/docs/scenario-format.md, format 1)."""
import json
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as hst

from mmcore.scenario import (
    PAGE_SIZE, THP_SIZES, Exit, FileSpec, Fork, Madvise, Mmap, Mprotect, Mremap,
    Munmap, NamedRange, Pin, ProcessSpec, Read, ScenarioError, Snapshot, Thp, ThpSettings, Unpin,
    Write, load_scenario, parse_scenario_text, parse_size)

K, M, G = 1 << 10, 1 << 20, 1 << 30

REPO = Path(__file__).resolve().parents[1]
CONFORMANCE = REPO / '..' / 'shared' / 'conformance'
CONFORMANCE_SCENARIOS = sorted((CONFORMANCE / 'scenarios').glob('*.yaml'))
DATA = Path(__file__).resolve().parent / 'data' / 'scenarios'


def line_of(text, needle):
    """1-based number of the one line of `text` containing `needle`."""
    hits = [i for i, ln in enumerate(text.splitlines(), 1) if needle in ln]
    assert len(hits) == 1, (needle, hits)
    return hits[0]


def line_is(text, exact):
    """1-based number of the one line of `text` equal to `exact`."""
    hits = [i for i, ln in enumerate(text.splitlines(), 1) if ln == exact]
    assert len(hits) == 1, (exact, hits)
    return hits[0]


# --- the real-kernel conformance scenarios --------------------------------------

def test_conformance_scenarios_present():
    assert len(CONFORMANCE_SCENARIOS) >= 13


@pytest.mark.parametrize('path', CONFORMANCE_SCENARIOS, ids=lambda p: p.stem)
def test_conformance_scenario_loads(path):
    sc = load_scenario(path)
    assert sc.name == path.stem
    assert sc.labels
    # the recorder wrote one observation per snapshot label
    recorded = {p.stem for p in (CONFORMANCE / 'expected' / sc.name).glob('*.json')}
    assert set(sc.labels) == recorded
    assert [s.index for s in sc.steps] == list(range(1, len(sc.steps) + 1))


@pytest.mark.parametrize('path', CONFORMANCE_SCENARIOS, ids=lambda p: p.stem)
def test_conformance_ranges_match_recording(path):
    """The named ranges alive at each snapshot, with their sizes, are those
    the real kernel run recorded."""
    sc = load_scenario(path)
    for label in sc.labels:
        obs = json.loads((CONFORMANCE / 'expected' / sc.name / (label + '.json')).read_text())
        want = {int(pid): {n: r['size'] for n, r in p['ranges'].items()}
                for pid, p in obs['processes'].items()}
        got = {pid: {n: r.size for n, r in ranges.items()}
               for pid, ranges in sc.ranges_at(label).items()}
        assert got == want, label


def test_conformance_mthp_64k_fork_cow_steps():
    sc = load_scenario(CONFORMANCE / 'scenarios' / 'mthp-64k-fork-cow.yaml')
    assert sc.thp.enabled == 'never'
    assert sc.thp.sizes[64 * K] == 'always'
    assert sc.thp.sizes[2 * M] == 'inherit'
    assert sc.thp.sizes[16 * K] == 'never'
    assert sc.processes == [ProcessSpec(100, 'proc100', '/')]
    mmap, write, snap, fork = sc.steps[:4]
    assert mmap == Mmap(100, 'buf', 256 * K, 'anon', None, 0, 'rw', 64 * K, None,
                        index=1, line=mmap.line)
    assert write == Write(100, 'buf', 0, 256 * K, index=2, line=write.line)
    assert snap.label == 'faulted'
    assert fork == Fork(100, 101, 'proc100', index=4, line=fork.line)
    last = sc.steps[-2]
    assert last == Write(100, 'buf', 68 * K, 4 * K, index=8, line=last.line)


def test_conformance_readonly_expect_fault():
    sc = load_scenario(CONFORMANCE / 'scenarios' / 'readonly-mapping.yaml')
    writes = [s for s in sc.steps if isinstance(s, Write)]
    assert [w.expect_fault for w in writes] == [True]
    assert all(not s.expect_fault for s in sc.steps if not isinstance(s, Write))


# --- a scenario with every key --------------------------------------------------

@pytest.fixture(scope='module')
def every():
    path = DATA / 'every-key.yaml'
    return path.read_text(), load_scenario(path)


def test_every_key_top_level(every):
    text, sc = every
    assert sc.name == 'every-key'
    assert sc.description == 'every key of format 1'
    assert sc.memory == 512 * M
    assert sc.kernel_hints == {'mapcount': 'none', 'bits': 32}
    assert sc.thp.enabled == 'always'
    assert sc.thp.shmem_enabled == 'force'
    assert sc.thp.use_zero_page is False
    assert sc.thp.sizes == {16 * K: 'never', 32 * K: 'never', 64 * K: 'always',
                            128 * K: 'never', 256 * K: 'never', 512 * K: 'never',
                            1 * M: 'never', 2 * M: 'madvise'}
    assert sc.files == {'data': FileSpec('data', 8 * M, 64 * K, '/data'),
                        'lib': FileSpec('lib', 10000, PAGE_SIZE, '/usr/lib/libx.so')}
    # '/' first, a parent before its child
    assert sc.cgroups == ['/', '/workload', '/workload/batch', '/other']
    assert sc.processes == [ProcessSpec(100, 'app', '/workload/batch'),
                            ProcessSpec(200, 'proc200', '/')]
    assert sc.labels == ['before-fork', 'after']


def test_every_key_steps(every):
    text, sc = every
    st = sc.steps
    ln = [s.line for s in st]
    assert ln[0] == line_of(text, 'name: heap')
    assert ln[15] == line_is(text, '  - write:')
    assert st[0] == Mmap(100, 'heap', 4 * M, 'anon', None, 0, 'rw', 2 * M, None,
                         index=1, line=ln[0])
    assert st[1] == Mmap(100, 'file-map', 1 * M, 'shared-file', 'data', 64 * K, 'r',
                         PAGE_SIZE, None, index=2, line=ln[1])
    assert st[2] == Mmap(100, 'fixed', 64 * K, 'shared-anon', None, 0, 'rw', PAGE_SIZE,
                         0x10000000, index=3, line=ln[2])
    assert st[3] == Mmap(200, 'Lib_v1.2', 8 * K, 'file', 'lib', 0, 'none', PAGE_SIZE,
                         None, index=4, line=ln[3])
    # default length: the rest of the range from offset
    assert st[4] == Write(100, 'heap', 1 * M, 3 * M, index=5, line=ln[4])
    assert st[5] == Read(100, 'file-map', 0, 1 * M, index=6, line=ln[5])
    assert st[6] == Pin(100, 'heap', 0, 64 * K, index=7, line=ln[6])
    assert st[7] == Madvise(100, 'heap', 2 * M, 1 * M, 'dontfork', index=8, line=ln[7])
    assert st[8] == Madvise(100, 'heap', 0, 4 * M, 'keeponfork', index=9, line=ln[8])
    assert st[9] == Mprotect(100, 'heap', 4 * K, 4 * K, 'r', index=10, line=ln[9])
    assert st[10] == Snapshot('before-fork', index=11, line=ln[10])
    # fork: comm defaults to the parent's; a long comm is cut to
    # TASK_COMM_LEN - 1 = 15 bytes as __set_task_comm() does
    assert st[11] == Fork(100, 101, 'app', index=12, line=ln[11])
    assert st[12] == Fork(100, 102, 'a-very-long-com', index=13, line=ln[12])
    assert isinstance(st[13], Thp)
    assert st[14] == Munmap(101, 'heap', 0, 1 * M, index=15, line=ln[14])
    # the child's range keeps its original size although pages are unmapped
    assert st[15] == Write(101, 'heap', 0, 4 * M, index=16, line=ln[15], expect_fault=True)
    assert st[16] == Unpin(100, 'heap', 0, 64 * K, index=17, line=ln[16])
    assert st[17] == Mremap(100, 'heap', 6 * M, None, index=18, line=ln[17])
    # mremap without new_size keeps the size
    assert st[18] == Mremap(100, 'fixed', 64 * K, 0x20000000, index=19, line=ln[18])
    # after mremap the range's size is new_size
    assert st[19] == Madvise(100, 'heap', 0, 6 * M, 'cold', index=20, line=ln[19])
    assert st[20] == Exit(102, index=21, line=ln[20])
    assert st[21] == Snapshot('after', index=22, line=ln[21])


def test_every_key_thp_step_merges(every):
    text, sc = every
    thp = sc.steps[13].settings
    # enabled and 16K changed; every other knob as in kernel.thp
    assert thp.enabled == 'never'
    assert thp.sizes[16 * K] == 'always'
    assert thp.sizes[64 * K] == 'always'
    assert thp.sizes[2 * M] == 'madvise'
    assert thp.sizes[32 * K] == 'never'
    assert thp.shmem_enabled == 'force'
    assert thp.use_zero_page is False
    assert sc.thp.enabled == 'always'       # the initial settings are untouched


def test_every_key_ranges(every):
    text, sc = every
    before = sc.ranges_at('before-fork')
    assert set(before) == {100, 200}
    assert sorted(before[100]) == ['file-map', 'fixed', 'heap']
    end = sc.ranges_at('after')
    assert sorted(end) == [100, 101, 200]
    assert end[100]['heap'].size == 6 * M
    assert end[100]['heap'].mapped_extents() == [(0, 6 * M)]
    # the child got heap without the dontfork part, then unmapped its first 1M
    assert end[101]['heap'].mapped_extents() == [(1 * M, 1 * M), (3 * M, 1 * M)]
    assert end[101]['heap'].first_mapped() == 1 * M
    assert end[101]['file-map'].file == 'data'
    assert end[101]['file-map'].file_offset == 64 * K
    assert {pid: {n: r.mapped_extents() for n, r in rs.items()}
            for pid, rs in sc.ranges_at().items()} == \
        {pid: {n: r.mapped_extents() for n, r in rs.items()} for pid, rs in end.items()}


# --- defaults ----------------------------------------------------------------------

MINIMAL = """\
format: 1
name: minimal
processes:
  - pid: 100
steps:
  - mmap: {pid: 100, name: buf, size: 64K}
  - write: {pid: 100, vma: buf, offset: 16K}
  - fork: {pid: 100, child: 101}
  - read: {pid: 101, vma: buf, length: 8K}
  - snapshot: done
"""


def test_defaults():
    sc = parse_scenario_text(MINIMAL)
    assert sc.path == '<string>'
    assert sc.description == ''
    assert sc.memory == 1 * G
    assert sc.kernel_hints == {}
    assert sc.files == {}
    assert sc.cgroups == ['/']
    assert sc.processes == [ProcessSpec(100, 'proc100', '/')]
    # kernel.thp defaults: madvise, sizes never except the PMD size inherit
    assert sc.thp == ThpSettings('madvise', {}, 'never', True)
    assert sc.thp.sizes == {s: ('inherit' if s == 2 * M else 'never') for s in THP_SIZES}
    mmap, write, fork, read, snap = sc.steps
    assert (mmap.kind, mmap.file, mmap.file_offset, mmap.prot, mmap.align, mmap.addr) == \
        ('anon', None, 0, 'rw', PAGE_SIZE, None)
    assert (write.offset, write.length) == (16 * K, 48 * K)
    assert fork.comm == 'proc100'
    assert (read.offset, read.length) == (0, 8 * K)
    assert not any(s.expect_fault for s in sc.steps)
    assert [s.index for s in sc.steps] == [1, 2, 3, 4, 5]
    assert [s.line for s in sc.steps] == [line_of(MINIMAL, op) for op in
                                          ('- mmap', '- write', '- fork', '- read',
                                           '- snapshot')]


def test_file_defaults():
    sc = parse_scenario_text(MINIMAL.replace('processes:', 'files:\n  - {name: f, size: 1M}\n'
                                             'processes:'))
    assert sc.files == {'f': FileSpec('f', 1 * M, PAGE_SIZE, '/f')}


def test_mmap_past_eof_is_accepted():
    """mmap beyond the end of the file succeeds; only an access there gets
    SIGBUS (filemap_fault), which is a replay matter."""
    text = MINIMAL.replace('processes:', 'files:\n  - {name: f, size: 8K}\nprocesses:') \
                  .replace('size: 64K}', 'size: 64K, kind: file, file: f, file_offset: 16K}')
    sc = parse_scenario_text(text)
    assert sc.steps[0].file == 'f' and sc.steps[0].file_offset == 16 * K


def test_empty_steps_and_thp_noop():
    sc = parse_scenario_text('format: 1\nname: x\nprocesses: [{pid: 2}]\nsteps:\n')
    assert sc.steps == [] and sc.labels == []
    sc = parse_scenario_text('format: 1\nname: x\nprocesses: [{pid: 2}]\n'
                             'steps:\n  - thp:\n  - thp: {}\n')
    assert [s.settings for s in sc.steps] == [ThpSettings(), ThpSettings()]


def test_unpin_matches_pin_and_pin_counts():
    text = MINIMAL.replace('  - snapshot: done\n',
                           '  - pin: {pid: 100, vma: buf, offset: 4K, length: 4K}\n'
                           '  - pin: {pid: 100, vma: buf, offset: 4K, length: 4K}\n'
                           '  - unpin: {pid: 100, vma: buf, offset: 4K, length: 4K}\n'
                           '  - unpin: {pid: 100, vma: buf, offset: 4K, length: 4K}\n')
    sc = parse_scenario_text(text)
    assert [type(s) for s in sc.steps[-4:]] == [Pin, Pin, Unpin, Unpin]


def test_pid_reused_after_exit():
    text = MINIMAL.replace('  - snapshot: done\n',
                           '  - exit: {pid: 101}\n'
                           '  - fork: {pid: 100, child: 101, comm: again}\n'
                           '  - munmap: {pid: 101, vma: buf}\n')
    sc = parse_scenario_text(text)
    assert sc.steps[-2] == Fork(100, 101, 'again', index=6, line=sc.steps[-2].line)


def test_mremap_grow_allows_longer_range():
    text = MINIMAL.replace('  - snapshot: done\n',
                           '  - mremap: {pid: 100, vma: buf, new_size: 128K}\n'
                           '  - write: {pid: 100, vma: buf, offset: 64K, length: 64K}\n'
                           '  - write: {pid: 100, vma: buf}\n')
    sc = parse_scenario_text(text)
    assert (sc.steps[-1].offset, sc.steps[-1].length) == (0, 128 * K)


def test_partial_dontfork_name_follows_fork():
    text = MINIMAL.replace('  - fork:', '  - madvise: {pid: 100, vma: buf, length: 32K, '
                           'advice: dontfork}\n  - fork:')
    sc = parse_scenario_text(text)
    child = sc.ranges_at('done')[101]['buf']
    assert child.mapped_extents() == [(32 * K, 32 * K)]
    # the child's range keeps its name and size: default length is 64K
    assert sc.steps[-2] == Read(101, 'buf', 0, 8 * K, index=5, line=sc.steps[-2].line)


def test_dofork_undoes_dontfork():
    text = MINIMAL.replace('  - fork:', '  - madvise: {pid: 100, vma: buf, advice: dontfork}\n'
                           '  - madvise: {pid: 100, vma: buf, advice: dofork}\n  - fork:')
    sc = parse_scenario_text(text)
    assert sc.ranges_at('done')[101]['buf'].mapped_extents() == [(0, 64 * K)]


# --- snapshots ----------------------------------------------------------------------

def test_snapshot_bare_and_dict_forms():
    text = MINIMAL.replace('  - snapshot: done\n', '  - snapshot: one\n'
                           '  - write: {pid: 100, vma: buf}\n'
                           '  - snapshot: {label: two}\n'
                           '  - snapshot:\n      label: three\n')
    sc = parse_scenario_text(text)
    assert sc.labels == ['one', 'two', 'three']
    assert [s.label for s in sc.steps if isinstance(s, Snapshot)] == sc.labels
    assert sc.steps_until('one') == sc.steps[:5]
    assert sc.steps_until('two') == sc.steps[:7]
    assert sc.steps_until('three') == sc.steps
    assert sc.steps[-1].line == line_is(text, '  - snapshot:')


def test_steps_until_unknown_label():
    sc = parse_scenario_text(MINIMAL, 'min.yaml')
    with pytest.raises(ScenarioError, match=r"min\.yaml: no snapshot 'nope'"):
        sc.steps_until('nope')
    with pytest.raises(ScenarioError, match='nope'):
        sc.ranges_at('nope')


# --- sizes and THP settings ----------------------------------------------------------

@pytest.mark.parametrize('value,nbytes', [
    (4096, 4096), ('4096', 4096), ('4K', 4 * K), ('64K', 64 * K), ('2M', 2 * M),
    ('1G', 1 * G), ('4KB', 4 * K), ('4kb', 4 * K), ('4k', 4 * K), ('2MiB', 2 * M),
    (' 8 K ', 8 * K), ('1T', 1 << 40), (0, 0)])
def test_parse_size(value, nbytes):
    assert parse_size(value, 'x') == nbytes


@pytest.mark.parametrize('value', [True, False, None, 1.5, '1.5M', '4X', '-4K', 'K', '', [4]])
def test_parse_size_rejects(value):
    with pytest.raises(ScenarioError, match='^here: not a size'):
        parse_size(value, 'here')


def test_thp_settings_updated():
    base = ThpSettings()
    t = base.updated({'sizes': {'64K': 'always'}})
    t = t.updated({'enabled': 'always', 'sizes': {128 * K: 'madvise', '2M': 'never'}})
    t = t.updated({'use_zero_page': False, 'shmem_enabled': 'within_size'})
    assert t.enabled == 'always'
    assert t.sizes[64 * K] == 'always' and t.sizes[128 * K] == 'madvise'
    assert t.sizes[2 * M] == 'never' and t.sizes[16 * K] == 'never'
    assert (t.shmem_enabled, t.use_zero_page) == ('within_size', False)
    assert base == ThpSettings() and hash(base) == hash(ThpSettings())
    assert t.updated({}) == t


@pytest.mark.parametrize('partial', [
    {'enabled': 'inherit'}, {'sizes': {'8K': 'always'}}, {'sizes': {'64K': 'on'}},
    {'shmem_enabled': 'sometimes'}, {'use_zero_page': 'yes'}, {'defrag': 'always'}])
def test_thp_settings_updated_rejects(partial):
    with pytest.raises(ValueError):
        ThpSettings().updated(partial)


def test_use_zero_page_accepts_knob_digits():
    sc = parse_scenario_text(MINIMAL.replace('processes:', 'kernel:\n  thp: '
                                             '{use_zero_page: 0}\nprocesses:'))
    assert sc.thp.use_zero_page is False


def test_thp_sizes_keys_in_bytes():
    sc = parse_scenario_text(MINIMAL.replace('processes:', 'kernel:\n  thp:\n    sizes: '
                                             '{65536: always, 128KB: madvise}\nprocesses:'))
    assert sc.thp.sizes[64 * K] == 'always' and sc.thp.sizes[128 * K] == 'madvise'


# --- errors: file, line, offending key or value --------------------------------------

BASE = """\
format: 1
name: base
processes:
  - pid: 100
steps:
  - mmap: {pid: 100, name: buf, size: 64K}
  - write: {pid: 100, vma: buf}
  - snapshot: done
"""


def with_steps(*lines):
    return BASE.replace('  - snapshot: done\n', ''.join('  - %s\n' % s for s in lines))


def with_top(*lines, before='processes:'):
    return BASE.replace(before, ''.join(s + '\n' for s in lines) + before)


# (id, scenario text, text of the offending line, substrings of the message)
ERRORS = [
    # unknown keys at every level
    ('top-key', with_top('colour: red'), 'colour', ["unknown key 'colour'"]),
    ('kernel-key', with_top('kernel:', '  memroy: 1G'), 'memroy', ["'memroy'", 'kernel']),
    ('thp-key', with_top('kernel:', '  thp:', '    enabeld: never'), 'enabeld',
     ["'enabeld'", 'kernel.thp']),
    ('file-key', with_top('files:', '  - {name: f, size: 4K, mode: rw}'), 'mode',
     ["'mode'", 'files[0]']),
    ('process-key', BASE.replace('  - pid: 100\n', '  - pid: 100\n    euid: 0\n'), 'euid',
     ["'euid'", 'processes[0]']),
    ('process-uid-negative', BASE.replace('  - pid: 100\n', '  - pid: 100\n    uid: -1\n'), 'uid',
     ['uid', 'out of range']),
    ('process-gid-str', BASE.replace('  - pid: 100\n', '  - pid: 100\n    gid: staff\n'), 'gid',
     ['gid', 'expected an integer']),
    ('step-arg', with_steps('mmap:\n      pid: 100\n      name: b2\n      sise: 4K'),
     'sise', ["'sise'", 'step 3 (mmap)']),
    ('step-op', with_steps('fault: {pid: 100, vma: buf}'), 'fault:',
     ["unknown operation 'fault'", 'step 3']),
    ('thp-step-key', with_steps('thp: {enabled: never, defrag: always}'), 'defrag',
     ["'defrag'", 'step 3 (thp)']),
    ('snapshot-dict-key', with_steps('snapshot: {label: x, when: now}'), 'when',
     ["'when'", 'step 3 (snapshot)']),
    ('thp-step-pid', with_steps('thp: {pid: 100}'), 'thp: {pid', ["'pid'"]),
    ('missing-key', with_steps('mmap: {pid: 100, name: b2}'), 'b2',
     ["missing required key 'size'"]),
    ('madvise-no-advice', with_steps('madvise: {pid: 100, vma: buf}'), 'madvise:',
     ["missing required key 'advice'"]),
    # wrong types
    ('size-bool', with_steps('mmap: {pid: 100, name: b2, size: true}'), 'b2',
     ['size', 'a boolean (true)']),
    ('pid-str-process', BASE.replace('pid: 100\n', 'pid: "100"\n'), 'pid: "100"',
     ['pid', "'100'", 'integer']),
    ('pid-str-step', with_steps('exit: {pid: abc}'), 'abc', ['pid', "'abc'", 'integer']),
    ('name-int', BASE.replace('name: base', 'name: 42'), 'name: 42', ['name', '42']),
    ('steps-mapping', BASE.replace('steps:\n', 'steps: {mmap: 1}\n').split('  - mmap')[0],
     'steps:', ['steps', 'expected a list']),
    ('kernel-list', with_top('kernel: [1G]'), 'kernel:', ['kernel', 'expected a mapping']),
    ('description-list', with_top('description: [a]'), 'description', ['description']),
    ('vma-int', with_steps('read: {pid: 100, vma: 7}'), 'vma: 7', ['vma', '7']),
    # bad sizes
    ('size-not-page', with_steps('mmap: {pid: 100, name: b2, size: 5000}'), 'b2',
     ['size', '5000', 'page size']),
    ('size-zero', with_steps('mmap: {pid: 100, name: b2, size: 0}'), 'b2',
     ['size', 'positive']),
    ('size-negative', with_steps('mmap: {pid: 100, name: b2, size: -4096}'), 'b2',
     ['size', '-4096']),
    ('size-unparsable', with_steps('mmap: {pid: 100, name: b2, size: 4X}'), 'b2',
     ['size', "'4X'"]),
    ('size-float', with_steps('mmap: {pid: 100, name: b2, size: 1.5M}'), 'b2',
     ['size', "'1.5M'"]),
    ('offset-not-page', with_steps('read: {pid: 100, vma: buf, offset: 100}'), 'offset',
     ['offset', '100']),
    ('length-zero', with_steps('read: {pid: 100, vma: buf, length: 0}'), 'length',
     ['length', 'positive']),
    ('new-size-not-page', with_steps('mremap: {pid: 100, vma: buf, new_size: 6K}'),
     'new_size', ['new_size', '6144']),
    ('file-offset-not-page',
     with_top('files:', '  - {name: f, size: 1M}').replace(
         'size: 64K}', 'size: 64K, kind: file, file: f, file_offset: 1K}'),
     'file_offset', ['file_offset', '1024']),
    ('file-size-bad', with_top('files:', '  - {name: f, size: big}'), 'big',
     ['files[0]', "'big'"]),
    ('folio-size-bad', with_top('files:', '  - {name: f, size: 1M, folio_size: 16M}'),
     'folio_size', ['folio_size', '16M']),
    ('folio-size-not-pow2', with_top('files:', '  - {name: f, size: 1M, folio_size: 12K}'),
     'folio_size', ['folio_size', '12K']),
    # names and labels
    ('name-bad', BASE.replace('name: base', 'name: Bad_Name'), 'Bad_Name',
     ["'Bad_Name'", '[a-z0-9-]+']),
    ('label-bad', with_steps('snapshot: After'), 'After', ["'After'", '[a-z0-9-]+']),
    ('label-int', with_steps('snapshot: 2024'), '2024', ['2024', 'label']),
    ('label-dup', with_steps('snapshot: done', 'snapshot: {label: done}'),
     '{label: done}', ["'done'", 'already used at step 3']),
    ('vma-name-bad', with_steps('mmap: {pid: 100, name: "a b", size: 4K}'), 'a b',
     ["'a b'"]),
    # pids
    ('pid-unknown', with_steps('write: {pid: 999, vma: buf}'), '999', ['unknown pid 999']),
    ('pid-exited', with_steps('exit: {pid: 100}', 'read: {pid: 100, vma: buf, length: 4K}'),
     'length: 4K', ['unknown pid 100', 'it exited at step 3']),
    ('pid-not-yet-forked', with_steps('write: {pid: 101, vma: buf}',
                                      'fork: {pid: 100, child: 101}'),
     'pid: 101, vma', ['unknown pid 101']),
    ('pid-dup', BASE.replace('  - pid: 100\n', '  - pid: 100\n  - pid: 100\n'), 5,
     ['pid 100 given twice']),
    ('pid-one', BASE.replace('pid: 100\n', 'pid: 1\n'), '- pid: 1', ['pid', '1']),
    ('no-processes', BASE.replace('  - pid: 100\n', ''), 'processes:',
     ['at least one process']),
    ('child-in-use', with_steps('fork: {pid: 100, child: 100}'), 'child: 100',
     ['child', 'pid 100 is in use']),
    ('child-one', with_steps('fork: {pid: 100, child: 1}'), 'child: 1', ['child', '1']),
    # vma names
    ('vma-unknown', with_steps('write: {pid: 100, vma: nope}'), 'nope',
     ["unknown vma 'nope' in pid 100"]),
    ('vma-dup', with_steps('mmap: {pid: 100, name: buf, size: 4K}'), 'size: 4K',
     ["name 'buf' is already used in pid 100"]),
    ('vma-dup-after-munmap', with_steps('munmap: {pid: 100, vma: buf}',
                                        'mmap: {pid: 100, name: buf, size: 4K}'),
     'size: 4K', ["'buf' is already used"]),
    ('vma-dontfork-whole', with_steps('madvise: {pid: 100, vma: buf, advice: dontfork}',
                                      'fork: {pid: 100, child: 101}',
                                      'read: {pid: 101, vma: buf}'),
     'pid: 101, vma', ["unknown vma 'buf' in pid 101"]),
    ('vma-munmapped-not-inherited', with_steps('munmap: {pid: 100, vma: buf}',
                                               'fork: {pid: 100, child: 101}',
                                               'read: {pid: 101, vma: buf}'),
     'pid: 101, vma', ["unknown vma 'buf' in pid 101"]),
    # ranges
    ('offset-past', with_steps('read: {pid: 100, vma: buf, offset: 64K}'), 'offset: 64K',
     ['offset 64K is past the end', "'buf'"]),
    ('length-past', with_steps('read: {pid: 100, vma: buf, offset: 32K, length: 36K}'),
     'length: 36K', ['length 36K', 'past the end', "'buf'"]),
    ('length-past-after-mremap', with_steps('mremap: {pid: 100, vma: buf, new_size: 16K}',
                                            'write: {pid: 100, vma: buf, length: 32K}'),
     'length: 32K', ['length 32K', 'size 16K']),
    ('unpin-without-pin', with_steps('pin: {pid: 100, vma: buf, length: 8K}',
                                     'unpin: {pid: 100, vma: buf}'),
     'unpin', ['holds no pin', "'buf'"]),
    # files and kinds
    ('file-kind-no-file', with_steps('mmap: {pid: 100, name: b2, size: 4K, kind: file}'),
     'b2', ['kind file needs a file']),
    ('file-unknown', with_steps('mmap: {pid: 100, name: b2, size: 4K, kind: shared-file, '
                                'file: nope}'), 'b2', ["unknown file 'nope'"]),
    ('file-with-anon', with_top('files:', '  - {name: f, size: 1M}').replace(
        'size: 64K}', 'size: 64K, file: f}'), 'file: f}', ["file applies to kind file"]),
    ('kind-bad', with_steps('mmap: {pid: 100, name: b2, size: 4K, kind: private}'), 'b2',
     ['kind', "'private'"]),
    ('prot-bad', with_steps('mprotect: {pid: 100, vma: buf, prot: rwx}'), 'rwx',
     ['prot', "'rwx'"]),
    ('advice-bad', with_steps('madvise: {pid: 100, vma: buf, advice: willneed}'),
     'willneed', ['advice', "'willneed'"]),
    ('file-dup', with_top('files:', '  - {name: f, size: 1M}', '  - {name: f, size: 2M}'),
     'size: 2M', ["'f' defined twice"]),
    # cgroups
    ('cgroup-unknown', BASE.replace('  - pid: 100\n', '  - pid: 100\n    cgroup: /nope\n'),
     '/nope', ["unknown cgroup '/nope'"]),
    ('cgroup-relative', with_top('cgroups:', '  - workload'), '- workload',
     ["'workload'", 'not a cgroup path']),
    ('cgroup-trailing-slash', with_top('cgroups:', '  - /a/'), '- /a/',
     ["'/a/'", 'not a cgroup path']),
    ('cgroup-dotdot', with_top('cgroups:', '  - /a/../b'), '- /a/',
     ["'/a/../b'", 'not a cgroup path']),
    ('cgroup-dup', with_top('cgroups:', '  - /a', '  - /b', '  - /a'), 6,
     ["'/a' listed twice"]),
    # align and addr
    ('align-not-pow2', with_steps('mmap: {pid: 100, name: b2, size: 4K, align: 12K}'),
     'b2', ['align', "'12K'", 'power of two']),
    ('align-small', with_steps('mmap: {pid: 100, name: b2, size: 4K, align: 2K}'),
     'b2', ['align', "'2K'"]),
    ('addr-unaligned', with_steps('mmap: {pid: 100, name: b2, size: 4K, addr: 0x10000010}'),
     'b2', ['addr', '0x10000010', 'page-aligned']),
    ('addr-vs-align', with_steps('mmap: {pid: 100, name: b2, size: 4K, align: 2M, '
                                 'addr: 0x10001000}'), 'b2', ['0x10001000', 'align 2M']),
    ('addr-high', with_steps('mmap: {pid: 100, name: b2, size: 8K, addr: 0x7ffffffff000}'),
     'b2', ['addr', '0x7ffffffff000', 'beyond the user address space']),
    ('move-to-unaligned', with_steps('mremap: {pid: 100, vma: buf, move_to: 12345}'),
     'move_to', ['move_to', '0x3039']),
    # kernel
    ('memory-small', with_top('kernel:', '  memory: 8M'), 'memory', ['memory', '8M']),
    ('memory-not-2m', with_top('kernel:', '  memory: 17M'), 'memory', ['memory', '17M']),
    ('page-size', with_top('kernel:', '  page_size: 64K'), 'page_size',
     ['page_size', "'64K'"]),
    ('mapcount-bad', with_top('kernel:', '  mapcount: per-folio'), 'per-folio',
     ['mapcount', "'per-folio'"]),
    ('bits-bad', with_top('kernel:', '  bits: 48'), 'bits', ['bits', '48']),
    ('thp-enabled-bad', with_top('kernel:', '  thp: {enabled: inherit}'), 'inherit',
     ['enabled', "'inherit'"]),
    ('thp-size-unsupported', with_top('kernel:', '  thp:', '    sizes: {8K: always}'),
     '8K', ['unsupported size', "'8K'"]),
    ('thp-size-value', with_top('kernel:', '  thp:', '    sizes:', '      64K: sometimes'),
     'sometimes', ['64K', "'sometimes'"]),
    ('thp-size-twice', with_top('kernel:', '  thp:', '    sizes: {64K: always, 65536: never}'),
     'sizes', ['64K given twice']),
    ('thp-zero-page-str', with_top('kernel:', '  thp: {use_zero_page: "false"}'),
     'use_zero_page', ['use_zero_page', "'false'"]),
    ('shmem-bad', with_steps('thp: {shmem_enabled: sometimes}'), 'sometimes',
     ['shmem_enabled', "'sometimes'"]),
    # step shape
    ('step-two-keys', with_steps('mmap: {pid: 100, name: b2, size: 4K}\n'
                                 '    write: {pid: 100, vma: buf}'), 'b2',
     ['step 3', 'exactly one key', "'mmap', 'write'"]),
    ('step-scalar', with_steps('exit'), '- exit', ['step 3', 'exactly one key', "'exit'"]),
    ('step-indent', with_steps('read:\n    pid: 100\n    vma: buf'), 'read:',
     ['exactly one key', "indent the arguments under 'read'"]),
    ('step-args-list', with_steps('exit: [100]'), 'exit: [100]',
     ['step 3 (exit)', 'expected a mapping']),
    # YAML and top level
    ('yaml-syntax', BASE.replace('name: base', 'name: base: two'), 'base: two',
     ['YAML syntax error', 'mapping values are not allowed']),
    ('yaml-duplicate-key', BASE.replace('name: base', 'name: base\nname: again'),
     'again', ['duplicate key', "'name'"]),
    ('yaml-unclosed', with_steps('mmap: {pid: 100, name: b2, size: 4K'), None,
     ['YAML syntax error']),
    ('yaml-control-char', with_steps('exit: {pid: 100}\x07'), 'exit',
     ['YAML error', 'unacceptable character']),
    ('top-list', '- format: 1\n- name: x\n', '- format', ['top level must be a mapping',
                                                          'a list']),
    ('top-scalar', 'hello\n', 'hello', ['top level must be a mapping']),
    ('format-missing', BASE.replace('format: 1\n', ''), 1,
     ["missing required key 'format'"]),
    ('format-2', BASE.replace('format: 1', 'format: 2'), 'format', ['format', '2']),
    ('format-str', BASE.replace('format: 1', 'format: "1"'), 'format', ['format', "'1'"]),
    ('name-missing', BASE.replace('name: base\n', ''), 1, ["missing required key 'name'"]),
    ('expect-bad', with_steps('write: {pid: 100, vma: buf, expect: crash}'), 'crash',
     ['expect', "'crash'"]),
]

# sizes and shapes that used to end in an internal error (issue 10)
ERRORS += [
    ('deep-nesting', with_top('description: ' + '[' * 5000 + ']' * 5000), 'description',
     ['nested more than 64 deep']),
    ('deep-block-nesting', with_top('cgroups:\n' + ''.join('  ' * i + '-\n' for i in range(1, 200))),
     None, ['nested more than 64 deep']),
    ('size-1PiB-bytes', with_steps('mmap: {pid: 100, name: b2, size: 1125899906842624}'), 'b2',
     ['1024T is larger than the user address space', 'ENOMEM']),
    ('size-2^64', with_steps('mmap: {pid: 100, name: b2, size: 18446744073709551616}'), 'b2',
     ['larger than the user address space']),
    ('size-huge-suffixed', with_steps('mmap: {pid: 100, name: b2, size: 99999999999999999999M}'),
     'b2', ['larger than the user address space']),
    ('size-too-many-digits', with_steps('mmap: {pid: 100, name: b2, size: %s}' % ('9' * 5000)),
     'b2', ['too long to read']),
    ('size-too-many-digits-str', with_steps("mmap: {pid: 100, name: b2, size: '%sK'}" % ('9' * 5000)),
     'b2', ['too many digits']),
    # a 1T reservation costs nothing (issue 7); the 128T address space is the limit
    ('size-2x64T-mapping', with_steps('mmap: {pid: 100, name: b2, size: 64T}\n'
                                      '  - mmap: {pid: 100, name: b3, size: 64T}'), 'b3',
     ['the process would map', 'more than its 64-bit user address space']),
    ('mremap-256T', with_steps('mremap: {pid: 100, vma: buf, new_size: 256T}'), 'new_size',
     ['larger than the user address space']),
    ('memory-1T', with_top('kernel: {memory: 1T}'), 'memory', ['1T is more than the emulator holds']),
    ('file-1P', with_top('files: [{name: f, size: 1125899906842624}]'), 'files',
     ['more than the emulator holds']),
    ('size-65K', with_steps('mmap: {pid: 100, name: b2, size: 65K}'), 'b2',
     ['66560 is not a multiple of the page size', 'round it up to 68K']),
    ('offset-minus-zero', with_steps('write: {pid: 100, vma: buf, offset: -0}'), 'offset',
     ['negative zero']),
    ('align-huge', with_steps('mmap: {pid: 100, name: b2, size: 4K, align: 1P}'), 'align',
     ['not a size']),
    ('align-2^60', with_steps('mmap: {pid: 100, name: b2, size: 4K, align: %d}' % (1 << 60)),
     'align', ['power of two from 4K to 64T']),
    ('size-float', with_steps('mmap: {pid: 100, name: b2, size: 4.5}'), 'b2',
     ['K, M, G or T']),
    # YAML aliases doubling 60 times: 2^60 leaves if anything walked them
    ('alias-bomb', with_steps('snapshot: [&a0 [1, 1], %s]' % ', '.join(
        '&a%d [*a%d, *a%d]' % (i, i - 1, i - 1) for i in range(1, 60))), 'snapshot',
     ['label [[1, 1], [[1, 1], [1, 1]], [[[...]']),
]


@pytest.mark.parametrize('case', ERRORS, ids=lambda e: e[0])
def test_error(case, tmp_path):
    ident, text, needle, parts = case
    path = tmp_path / (ident + '.yaml')
    path.write_text(text)
    with pytest.raises(ScenarioError) as ei:
        load_scenario(path)
    msg = str(ei.value)
    if needle is None:
        assert msg.startswith('%s:' % path), msg
    else:
        want = needle if isinstance(needle, int) else line_of(text, needle)
        assert msg.startswith('%s:%d: ' % (path, want)), msg
        assert ei.value.line == want
    assert ei.value.path == str(path)
    for p in parts:
        assert p in msg, (p, msg)
    assert '\n' not in msg.strip() or 'YAML' in msg


def test_empty_file(tmp_path):
    path = tmp_path / 'empty.yaml'
    path.write_text('')
    with pytest.raises(ScenarioError, match=r'^%s:1: empty scenario' % path):
        load_scenario(path)
    path.write_text('# only a comment\n\n')
    with pytest.raises(ScenarioError, match=r'^%s:1: empty scenario' % path):
        load_scenario(path)


def test_unreadable_and_binary_file(tmp_path):
    with pytest.raises(ScenarioError, match='missing.yaml: cannot read'):
        load_scenario(tmp_path / 'missing.yaml')
    path = tmp_path / 'bin.yaml'
    path.write_bytes(b'format: 1\nname: \xff\xfe\n')
    with pytest.raises(ScenarioError, match=r'bin\.yaml:2: not UTF-8'):
        load_scenario(path)


def test_parse_scenario_text_names_path():
    with pytest.raises(ScenarioError, match=r'^<string>:1: '):
        parse_scenario_text('colour: red\n')
    with pytest.raises(ScenarioError, match=r'^my\.yaml:1: '):
        parse_scenario_text('colour: red\n', 'my.yaml')


# --- the range bookkeeping against a page-list model ------------------------------------

_range_ops = hst.lists(hst.tuples(
    hst.sampled_from(['unmap', 'dontfork', 'dofork', 'resize', 'fork']),
    hst.integers(0, 40), hst.integers(1, 40)), max_size=20)


@settings(max_examples=200, deadline=None)
@given(hst.integers(1, 40), _range_ops)
def test_named_range_model(pages, ops):
    """Per page: mapped / dontfork; fork keeps mapped pages that are not
    dontfork (dup_mmap skips VM_DONTCOPY); mremap growth takes the flags of
    the range's VMA."""
    r = NamedRange('r', pages * PAGE_SIZE)
    mapped, dontfork = [True] * pages, [False] * pages
    for op, a, b in ops:
        n = len(mapped)
        if op == 'resize':
            grow = [dontfork[0]] * (b - n) if b > n else []
            mapped = mapped[:b] + [True] * max(0, b - n)
            dontfork = dontfork[:b] + grow
            r.resize(b * PAGE_SIZE)
            continue
        if op == 'fork':
            child = r.fork_copy()
            kept = [m and not d for m, d in zip(mapped, dontfork)]
            if not any(kept):
                assert child is None
                continue
            r, mapped, dontfork = child, kept, [False] * n
            continue
        lo, hi = min(a, n - 1), min(a + b, n)
        if op == 'unmap':
            mapped[lo:hi] = [False] * (hi - lo)
            r.unmap(lo * PAGE_SIZE, (hi - lo) * PAGE_SIZE)
        else:
            dontfork[lo:hi] = [op == 'dontfork'] * (hi - lo)
            r.set_dontfork(lo * PAGE_SIZE, (hi - lo) * PAGE_SIZE, op == 'dontfork')
    assert r.size == len(mapped) * PAGE_SIZE
    extents, i = [], 0
    while i < len(mapped):
        if mapped[i]:
            j = i
            while j < len(mapped) and mapped[j]:
                j += 1
            extents.append((i * PAGE_SIZE, (j - i) * PAGE_SIZE))
            i = j
        else:
            i += 1
    assert r.mapped_extents() == extents
    assert r.first_mapped() == (extents[0][0] if extents else None)

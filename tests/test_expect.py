"""`expect` steps: the loader's and validate()'s errors (FILE:LINE: what is
wrong), the replay ignoring them, and `mmemu check --verify`.

Expected values in the passing scenarios are semantics.md section 13
(S1-S3, tables cited inline); the bundled suites configs/scenarios/examples
and configs/scenarios/docs are verified whole."""
from pathlib import Path

import pytest

from mmcore.config import load_kernel_config
from mmcore.kernel import Kernel
from mmcore.scenario import Expect, ScenarioError, parse_scenario_text
from procfs import cli, expect, expect_check
from procfs.build import kernel_tree
from procfs.view import ProcView, TreeSource

REPO = Path(__file__).resolve().parents[1]
KERNELS = REPO / 'configs' / 'kernels'
EXAMPLES = sorted((REPO / 'configs' / 'scenarios' / 'examples').glob('*.yaml'))
DOCS = sorted((REPO / 'configs' / 'scenarios' / 'docs').glob('*.yaml'))
CONFIG_NAMES = [load_kernel_config(str(p)).name for p in sorted(KERNELS.glob('*.yaml'))]
# the two 6.18 kernels the S3 values are stated for (semantics.md 13)
TWO = ['--config', str(KERNELS / 'page_mapcount.yaml'), str(KERNELS / 'no_page_mapcount.yaml')]

HEAD = '''\
format: 1
name: t
kernel:
  memory: 64M
  thp: {enabled: never, sizes: {64K: always}}
cgroups: [/work]
processes: [{pid: 100}]
steps:
  - mmap: {pid: 100, name: buf, size: 64K, align: 64K}
  - write: {pid: 100, vma: buf}
  - snapshot: s1
  - fork: {pid: 100, child: 101}
'''
HEAD_LINES = HEAD.count('\n')


def load(step_text):
    """Parses HEAD + one more step (its first line is line HEAD_LINES + 1)
    and validates its expect steps against the real profiles."""
    sc = parse_scenario_text(HEAD + step_text, 'x.yaml')
    expect_check.validate(sc, CONFIG_NAMES)
    return sc


def error_of(step_text):
    with pytest.raises(ScenarioError) as e:
        load(step_text)
    return str(e.value)


# --- what the loader accepts ---------------------------------------------------------------

def test_expect_step_is_parsed_with_its_target_fields_and_lines():
    sc = load('''\
  - expect:
      smaps: {pid: 100, vma: buf}
      configs: [page_mapcount, no_page_mapcount]
      note: S2
      Rss: 64
      Pss: {page_mapcount: 32, no_page_mapcount: 32}
''')
    st = sc.steps[-1]
    assert isinstance(st, Expect) and st.index == 5 and st.line == HEAD_LINES + 1
    assert st.subject == 'smaps' and st.target == {'pid': 100, 'vma': 'buf'}
    assert st.configs == ('page_mapcount', 'no_page_mapcount') and st.note == 'S2'
    assert [(n, ln) for n, _, ln in st.fields] == [('Rss', HEAD_LINES + 5),
                                                   ('Pss', HEAD_LINES + 6)]


def test_pages_target_resolves_offset_and_length_like_other_steps():
    st = load('  - expect: {pages: {pid: 101, vma: buf, offset: 8K}, bit56: 0}\n').steps[-1]
    assert st.target == {'pid': 101, 'vma': 'buf', 'offset': 8192, 'length': 57344}


# --- the loader's errors ------------------------------------------------------------------

BAD = [
    ('  - expect: {Rss: 64}\n', 1, 'needs exactly one subject'),
    ('  - expect: {smaps: {pid: 100, vma: buf}, meminfo: {}, Rss: 1}\n', 1,
     "got 'smaps', 'meminfo'"),
    ('  - expect: {smaps: {pid: 100, vma: buf}}\n', 1, 'states no value'),
    ('  - expect: {smaps: {pid: 100}, Rss: 1}\n', 1, "missing required key 'vma'"),
    ('  - expect: {smaps: {pid: 100, vma: buf, offset: 0}, Rss: 1}\n', 1, "unknown key 'offset'"),
    ('  - expect: {smaps_rollup: {pid: 7}, Rss: 1}\n', 1, 'unknown pid 7'),
    ('  - exit: {pid: 101}\n  - expect: {smaps_rollup: {pid: 101}, Rss: 1}\n', 2,
     'unknown pid 101 (it exited at step 5)'),
    ('  - expect: {smaps: {pid: 100, vma: bf}, Rss: 1}\n', 1, "unknown vma 'bf'"),
    ('  - munmap: {pid: 100, vma: buf}\n  - expect: {smaps: {pid: 100, vma: buf}, Rss: 1}\n', 2,
     "nothing mapped of vma 'buf'"),
    ('  - expect: {pages: {pid: 100, vma: buf, offset: 64K}, bit56: 1}\n', 1,
     'offset 64K is past the end'),
    ('  - expect: {pages: {pid: 100, vma: buf, offset: 6000}, bit56: 1}\n', 1,
     'not a multiple of the page size'),
    ('  - expect: {folio: {pid: 100, vma: buf, offset: 1M}, nr_pages: 16}\n', 1,
     'offset 1M is past the end'),
    ('  - expect: {meminfo: {since: later}, AnonPages: 4}\n  - snapshot: later\n', 1,
     "since: 'later' is not an earlier snapshot (labels so far: s1)"),
    ('  - expect: {folio: {pid: 100, vma: buf, at: nope}, nr_pages: 16}\n', 1,
     "at: 'nope' is not an earlier snapshot"),
    ('  - expect: {memcg: {cgroup: /nope}, anon: 0}\n', 1, "unknown cgroup '/nope'"),
    ('  - expect: {memcg: {version: 3}, anon: 0}\n', 1, 'version: must be 1 or 2, got 3'),
    ('  - expect: {meminfo: {}, configs: 7, AnonPages: 4}\n', 1, 'configs: expected a config name'),
    ('  - expect: {meminfo: {}, AnonPages: {}}\n', 1, 'AnonPages: an empty mapping of configs'),
    ('  - expect:\n      meminfo: {}\n      AnonPages: {page_mapcount: {a: 1}}\n', 3,
     'page_mapcount: expected a value or a list, got a mapping'),
    ('  - expect: meminfo\n', 1, 'expected a mapping'),
]


@pytest.mark.parametrize('text,line,words', BAD, ids=[w for _, _, w in BAD])
def test_loader_rejects_bad_expect_steps_with_file_and_line(text, line, words):
    msg = error_of(text)
    assert msg.startswith('x.yaml:%d: ' % (HEAD_LINES + line)), msg
    assert words in msg, msg
    assert '\n' not in msg


# --- validate(): names, values, configs -----------------------------------------------------

INVALID = [
    ('  - expect: {smaps: {pid: 100, vma: buf}, Psss: 1}\n', "unknown field 'Psss'"),
    ('  - expect: {smaps: {pid: 100, vma: buf}, rss: 1}\n', "did you mean 'Rss'?"),
    ('  - expect: {meminfo: {}, AnonPage: 1}\n', "unknown field 'AnonPage'"),
    ('  - expect: {memcg: {}, anon_pages: 1}\n', "unknown field 'anon_pages'"),
    ('  - expect: {meminfo: {}, configs: [page_mapcont], AnonPages: 1}\n',
     "configs: unknown config 'page_mapcont'"),
    ('  - expect: {meminfo: {}, AnonPages: {no_page_mapcont: 1}}\n',
     "AnonPages: unknown config 'no_page_mapcont'"),
    ('  - expect: {meminfo: {}, configs: [page_mapcount], AnonPages: {no_page_mapcount: 1}}\n',
     "config 'no_page_mapcount' is not among the step's configs"),
    ('  - expect: {meminfo: {}, AnonPages: [1, 2]}\n', 'a list is only for per-page fields'),
    ('  - expect: {meminfo: {}, AnonPages: 64 kB}\n', "expected a number, got '64 kB'"),
    ('  - expect: {pages: {pid: 100, vma: buf}, bit56: 10x1}\n', 'is not a string of 0 and 1'),
    ('  - expect: {pages: {pid: 100, vma: buf}, kpagecount: [1, 2x15]}\n',
     "list item '2x15' is neither a number nor V*N"),
    ('  - expect: {pages: {pid: 100, vma: buf}, same_pfn: 1}\n', 'same_pfn needs since: LABEL'),
    ('  - expect: {folio: {pid: 100, vma: buf}, slots: 100/16}\n',
     "expected two slots like '100:16 | -'"),
    ('  - expect: {folio: {pid: 100, vma: buf}, maybe_shared: 1}\n', 'expected true or false'),
]


@pytest.mark.parametrize('text,words', INVALID, ids=[w for _, w in INVALID])
def test_validate_rejects_bad_fields_and_configs_with_file_and_line(text, words):
    msg = error_of(text)
    assert msg.startswith('x.yaml:%d: ' % (HEAD_LINES + 1)), msg
    assert words in msg, msg


def test_config_names_come_from_the_profiles_not_a_fixed_list(tmp_path, capsys):
    """A profile added beside the others (as the third kernel was) is a
    valid per-config key once its file is there."""
    extra = tmp_path / 'lab_kernel.yaml'
    extra.write_text('name: lab_kernel\nCONFIG_PAGE_MAPCOUNT: n\n'
                     'CONFIG_NO_PAGE_MAPCOUNT: y\n')
    path = tmp_path / 's.yaml'
    path.write_text(HEAD + '  - expect: {meminfo: {}, AnonPages: {lab_kernel: 128}}\n')
    assert cli.main(['check', str(path)]) == 1
    assert "unknown config 'lab_kernel'" in capsys.readouterr().err
    assert cli.main(['check', str(path), '--config', str(extra)]) == 0
    assert 'ok: t' in capsys.readouterr().out


def test_check_reports_a_bad_expect_step_as_one_line(tmp_path, capsys):
    path = tmp_path / 's.yaml'
    path.write_text(HEAD + '  - expect: {smaps: {pid: 100, vma: buf}, Pss_Anonn: 1}\n')
    assert cli.main(['check', str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("mmemu: error: %s:%d: step 5 (expect smaps): unknown field "
                             "'Pss_Anonn' (expected one of: Size, " % (path, HEAD_LINES + 1)), err


# --- the replay ignores expect steps --------------------------------------------------------

def test_replay_ignores_expect_steps():
    """The same files, uptime and counters with and without expect steps."""
    with_expects = HEAD + ''.join(
        '  - expect: {smaps_rollup: {pid: 100}, Rss: %d}\n' % n for n in range(3)) + \
        '  - write: {pid: 101, vma: buf, length: 4K}\n'
    without = HEAD + '  - write: {pid: 101, vma: buf, length: 4K}\n'
    cfg = load_kernel_config(str(KERNELS / 'page_mapcount.yaml'))
    views = []
    for text in (with_expects, without):
        sc = parse_scenario_text(text, 'x.yaml')
        k = Kernel(cfg, sc)
        k.run(sc.steps)
        views.append(ProcView(TreeSource(kernel_tree(k))))
    for rel in ('proc/meminfo', 'proc/vmstat', 'proc/uptime', 'proc/100/smaps',
                'proc/101/smaps', 'proc/101/stat', 'proc/stat'):
        assert views[0].read_bytes(rel) == views[1].read_bytes(rel), rel


# --- check --verify --------------------------------------------------------------------------

S3 = HEAD + '''\
  - write: {pid: 101, vma: buf, offset: 0, length: 4K}
  - expect:
      smaps: {pid: 100, vma: buf}
      configs: [page_mapcount, no_page_mapcount]
      Pss: {page_mapcount: 34, no_page_mapcount: 32}
      Private_Dirty: {page_mapcount: 4, no_page_mapcount: 0}
  - expect:
      pages: {pid: 100, vma: buf, since: s1}
      configs: [page_mapcount, no_page_mapcount]
      bit56: {page_mapcount: '1000 0000 0000 0000', no_page_mapcount: 0}
      same_pfn: 1
  - expect:
      folio: {pid: 100, vma: buf}
      configs: [page_mapcount, no_page_mapcount]
      slots: '100:16 | 101:15'
      kpagecount: {page_mapcount: [1, 2*15], no_page_mapcount: 2}
  - expect: {meminfo: {since: s1}, AnonPages: 4}
'''
# S3: smaps P Pss 34 PD 4 [real] / Pss 32 PD 0; b56 in P page 0: 1 [real] /
# all 0; old folio [P:16 | C:15]; kpc page 0: 1, 1-15: 2 [real] / 2;
# AnonPages +4 (the copy).  Written after the HEAD's fork.


def test_verify_passes_s3_and_reports_every_value(tmp_path, capsys):
    path = tmp_path / 's3.yaml'
    path.write_text(S3)
    assert cli.main(['check', '--verify', str(path)] + TWO) == 0
    out = capsys.readouterr().out.splitlines()
    passed = [ln for ln in out if ' passed [' in ln]
    assert len(passed) == 2 * 7
    first = HEAD_LINES + 2
    assert any(ln.startswith('%s:%d: passed [page_mapcount] smaps pid 100 buf: Pss = 34'
                             % (path, first + 3)) for ln in passed), out
    assert out[-1] == '%s: 14 of 14 expectations passed on page_mapcount, no_page_mapcount' \
        % path


def test_verify_fails_with_file_line_and_both_values(tmp_path, capsys):
    text = S3.replace('Pss: {page_mapcount: 34, no_page_mapcount: 32}',
                      'Pss: {page_mapcount: 34, no_page_mapcount: 34}')
    text = text.replace("slots: '100:16 | 101:15'", "slots: '100:16 | -'")
    path = tmp_path / 'bad.yaml'
    path.write_text(text)
    assert cli.main(['check', '--verify', str(path)] + TWO) == 1
    out = capsys.readouterr().out.splitlines()
    failed = [ln for ln in out if 'FAILED' in ln]
    pss_line = [i for i, ln in enumerate(text.splitlines(), 1) if 'Pss: {' in ln][0]
    slots_line = [i for i, ln in enumerate(text.splitlines(), 1) if 'slots:' in ln][0]
    assert '%s:%d: FAILED [no_page_mapcount] smaps pid 100 buf: Pss: expected 34, got 32' \
        % (path, pss_line) in failed
    assert sum(ln.startswith('%s:%d: FAILED' % (path, slots_line)) for ln in failed) == 2
    assert any('expected 100:16 | -, got 100:16 | 101:15' in ln for ln in failed)
    assert len(failed) == 3
    assert out[-1].startswith('%s: 11 of 14 expectations passed' % path)


def test_verify_of_several_files_goes_on_after_an_invalid_one(tmp_path, capsys):
    good, bad = tmp_path / 'good.yaml', tmp_path / 'bad.yaml'
    good.write_text(S3)
    bad.write_text(HEAD + '  - expect: {meminfo: {}, AnonPagez: 1}\n')
    assert cli.main(['check', '--verify', str(bad), str(good)] + TWO) == 1
    out, err = capsys.readouterr()
    assert err.count('\n') == 1 and "bad.yaml:%d:" % (HEAD_LINES + 1) in err
    assert 'good.yaml: 14 of 14 expectations passed' in out


def test_verify_a_refused_step_is_an_error_naming_config(tmp_path, capsys):
    path = tmp_path / 'ro.yaml'
    path.write_text(HEAD + '  - mmap: {pid: 100, name: ro, size: 4K, prot: r}\n'
                    '  - write: {pid: 100, vma: ro}\n'
                    '  - expect: {meminfo: {}, AnonPages: 0}\n')
    assert cli.main(['check', '--verify', str(path)]) == 1
    err = capsys.readouterr().err
    assert 'step 6 (write' in err and 'kernel config' in err and 'Traceback' not in err


def test_hints_choose_the_32bit_configs(tmp_path, capsys):
    path = tmp_path / 'b32.yaml'
    path.write_text(S3.replace('  memory: 64M\n', '  memory: 64M\n  bits: 32\n')
                    .replace('[page_mapcount, no_page_mapcount]',
                             '[page_mapcount-32bit, no_page_mapcount-32bit]')
                    .replace('{page_mapcount:', '{page_mapcount-32bit:')
                    .replace('no_page_mapcount:', 'no_page_mapcount-32bit:'))
    assert cli.main(['check', '--verify', str(path)]) == 0
    assert 'passed on no_page_mapcount-32bit, page_mapcount-32bit' in capsys.readouterr().out


@pytest.mark.parametrize('suite', ['examples', 'docs'])
def test_bundled_suites_verify_green(suite, capsys):
    files = EXAMPLES if suite == 'examples' else DOCS
    assert len(files) >= (19 if suite == 'examples' else 10)
    status = cli.main(['check', '--verify'] + [str(p) for p in files])
    out = capsys.readouterr().out
    assert status == 0, '\n'.join(ln for ln in out.splitlines() if 'FAILED' in ln)
    assert ' 0 failed' in out.splitlines()[-1]

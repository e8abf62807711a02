"""No crash on any input (issue 10): the command line's argument forms, the
replay error format, and a fuzz run over mutations of every bundled and
conformance scenario.

The fuzz test replays each mutant in process (load_scenario, then both
64-bit configs through procfs.build.replay_all, as `mmemu diff` does) and
asserts that it either replays or ends in ScenarioError / StepError whose
message is one line starting with "FILE:LINE: " (or "FILE: " for what has
no line: an unreadable file), that nothing else is raised (no traceback),
and that no mutant takes longer than a time limit (20 s of CPU time, so
that a loaded machine does not fail it).  MMEMU_FUZZ_CASES sets
the number of mutants (default 300, the CI profile); MMEMU_FUZZ_SEED the
seed.
"""
import os
import random
import re
import signal
import sys
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT
from mmcore.errors import StepError
from mmcore.scenario import ScenarioError, load_scenario
from procfs import cli

CASES = int(os.environ.get('MMEMU_FUZZ_CASES', '300'))
SEED = int(os.environ.get('MMEMU_FUZZ_SEED', '20261202'))
CASE_SECONDS = 20          # CPU time per mutant (a loaded CI machine stretches wall time)
CASE_WALL_SECONDS = 300

CONFIGS = [str(PROJECT_ROOT / 'configs' / 'kernels' / n)
           for n in ('page_mapcount.yaml', 'no_page_mapcount.yaml')]
SEEDS = sorted(
    list((PROJECT_ROOT / 'configs' / 'scenarios').glob('*.yaml'))
    + list((PROJECT_ROOT / 'tests' / 'conformance' / 'scenarios').glob('*.yaml'))
    + list((PROJECT_ROOT / 'tests' / 'data' / 'conformance-public' / 'scenarios').glob('*.yaml')))

SCENARIO = '''\
format: 1
name: tiny
processes:
  - pid: 100
steps:
  - mmap: {pid: 100, name: buf, size: 64K}
  - write: {pid: 100, vma: buf}
  - snapshot: first
  - munmap: {pid: 100, vma: buf}
  - write: {pid: 100, vma: buf, offset: 4K, length: 4K}
'''


# --- command line ----------------------------------------------------------------------

def parse(*argv):
    p = cli.make_parser()
    return cli._untangle_positionals(p, p.parse_args([str(a) for a in argv]))


def test_config_list_does_not_swallow_the_scenario(tmp_path):
    """`--config A B SCENARIO`: nargs='+' is greedy; the positionals a
    command needs are taken back from the end of the list."""
    a = parse('diff', '--config', 'A', 'B', 'S.yaml')
    assert (a.config, a.scenario) == (['A', 'B'], 'S.yaml')
    a = parse('tools', '--config', 'A', 'S.yaml')
    assert (a.config, a.scenario) == (['A'], 'S.yaml')
    a = parse('export', '--config', 'A', 'B', 'S.yaml', 'OUT')
    assert (a.config, a.scenario, a.directory) == (['A', 'B'], 'S.yaml', 'OUT')
    a = parse('export', 'S.yaml', '--config', 'A', 'OUT')
    assert (a.config, a.scenario, a.directory) == (['A'], 'S.yaml', 'OUT')


def test_documented_config_forms_still_work():
    a = parse('diff', 'S.yaml', '--config', 'A', '--config', 'B')
    assert (a.config, a.scenario) == (['A', 'B'], 'S.yaml')
    a = parse('diff', 'S.yaml', '--config', 'A', 'B', '--stop-at', 'x')
    assert (a.config, a.scenario, a.stop_at) == (['A', 'B'], 'S.yaml', 'x')
    a = parse('diff', 'S.yaml')
    assert (a.config, a.scenario) == (None, 'S.yaml')
    a = parse('mount', '--config', 'A', 'B')
    assert (a.config, a.scenario, a.mountpoint) == (['A', 'B'], None, None)


def test_mount_takes_back_a_scenario_and_a_mount_point(tmp_path):
    scen = tmp_path / 's.yaml'
    scen.write_text(SCENARIO)
    cfg = tmp_path / 'k.yaml'
    cfg.write_text('name: k\nCONFIG_PAGE_MAPCOUNT: y\n')
    mp = tmp_path / 'mp'
    mp.mkdir()
    a = parse('mount', '--config', cfg, cfg, scen, mp)
    assert (a.config, a.scenario, a.mountpoint) == ([str(cfg)] * 2, str(scen), str(mp))


def test_missing_scenario_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as ei:
        parse('diff', '--config', 'A')
    assert ei.value.code == 2
    assert 'required: SCENARIO' in capsys.readouterr().err


def test_replay_error_reads_file_colon_line(capsys, tmp_path):
    """A step the kernel refuses is reported as FILE:LINE: step N (op): ..."""
    path = tmp_path / 'tiny.yaml'
    path.write_text(SCENARIO)
    status = cli.main(['diff', str(path), '--config', CONFIGS[0]])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1, err
    assert err[0].startswith('mmemu: error: %s:10: step 5 (write): ' % path), err
    assert 'kernel config page_mapcount' in err[0]


# --- fuzz ---------------------------------------------------------------------------------

NUMBER = re.compile(r'(?<![\w.])(\d+)([KMGT]?)(?![\w.])')
KEY = re.compile(r'\b([a-z_]+):')
WEIRD_NUMBERS = ['-1', '-4K', '0', '-0', '1.5', '4.0K', '1e400', 'nan', '"12"', 'abc', 'true',
                 '18446744073709551616', '1125899906842624', '99999999999999999999M', '1T',
                 '9' * 400, '0x7fffffffffff', '65K', '[]', '{}', 'null', '1P', '4k', '2 M']


def mutate(text, rng):
    """One to three random edits of a scenario's text."""
    for _ in range(rng.randint(1, 3)):
        lines = text.split('\n')
        op = rng.randrange(11)
        i = rng.randrange(len(lines))
        if op == 0 and len(lines) > 1:
            del lines[i]
        elif op == 1:
            lines.insert(i, lines[rng.randrange(len(lines))])
        elif op == 2:
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif op in (3, 4, 5):
            nums = list(NUMBER.finditer(lines[i]))
            if nums:
                m = rng.choice(nums)
                new = rng.choice(WEIRD_NUMBERS + [str(-int(m.group(1))), m.group(1) * 3])
                lines[i] = lines[i][:m.start()] + new + lines[i][m.end():]
        elif op == 6:
            keys = list(KEY.finditer(lines[i]))
            if keys:
                m = rng.choice(keys)
                new = rng.choice(['pid', 'vma', 'size', 'offset', 'length', 'name', 'kind',
                                  'advice', 'sizes', m.group(1)[::-1], m.group(1) + 'x'])
                lines[i] = lines[i][:m.start(1)] + new + lines[i][m.end(1):]
        elif op == 7:
            raw = bytearray(lines[i].encode())
            for _ in range(rng.randint(1, 4)):
                raw.insert(rng.randint(0, len(raw)), rng.randrange(256))
            lines[i] = raw.decode('utf-8', errors='surrogateescape')
        elif op == 8:
            text = '\n'.join(lines)
            return text[:rng.randrange(len(text) + 1)]
        elif op == 9:
            depth = rng.choice([10, 70, 1000, 5000])
            if rng.random() < 0.5:
                lines.insert(i, 'description: ' + '[' * depth + ']' * depth)
            else:       # aliases doubling at each level
                bomb = '[&b0 [1, 1], %s]' % ', '.join('&b%d [*b%d, *b%d]' % (j, j - 1, j - 1)
                                                     for j in range(1, 50))
                lines[i] = re.sub(r':\s*[^{},\s]+', ': ' + bomb, lines[i], count=1)
        else:
            lines[i] = ' ' * rng.randint(1, 5) + lines[i]
        text = '\n'.join(lines)
    return text


class CaseTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise CaseTimeout()


def replay_mutant(path):
    """'ok', or the error line; raises anything unexpected."""
    from procfs.build import replay_all
    try:
        load_scenario(path)
        replay_all(str(path), CONFIGS, with_init=False)
    except (ScenarioError, StepError) as e:
        return str(e)
    return 'ok'


def test_fuzz_mutants_never_crash(tmp_path):
    rng = random.Random(SEED)
    texts = [p.read_text() for p in SEEDS]
    counts = {'ok': 0, 'rejected': 0}
    old = signal.signal(signal.SIGALRM, _alarm)
    old_prof = signal.signal(signal.SIGPROF, _alarm)
    try:
        for n in range(CASES):
            text = mutate(rng.choice(texts), rng)
            path = tmp_path / ('m%d.yaml' % n)
            path.write_bytes(text.encode('utf-8', errors='surrogateescape'))
            signal.alarm(CASE_WALL_SECONDS)
            signal.setitimer(signal.ITIMER_PROF, CASE_SECONDS)
            try:
                result = replay_mutant(path)
            except CaseTimeout:
                pytest.fail('mutant %d took more than %d s of CPU time:\n%s'
                            % (n, CASE_SECONDS, text[:3000]))
            except Exception as e:     # a traceback for the user: the bug this test hunts
                pytest.fail('mutant %d: %s: %s\n%s' % (n, type(e).__name__, e, text[:3000]))
            finally:
                signal.setitimer(signal.ITIMER_PROF, 0)
                signal.alarm(0)
            if result == 'ok':
                counts['ok'] += 1
                continue
            counts['rejected'] += 1
            assert '\n' not in result.strip(), (n, result)
            assert re.match(r'%s(:\d+)?: \S' % re.escape(str(path)), result), (n, result)
    finally:
        signal.signal(signal.SIGALRM, old)
        signal.signal(signal.SIGPROF, old_prof)
    print('fuzz: %d mutants, %d replayed, %d rejected with FILE:LINE' %
          (CASES, counts['ok'], counts['rejected']))
    assert counts['rejected'] > CASES // 4      # the mutations do break scenarios


def test_fuzz_cli_exit_status(tmp_path):
    """Through the real command line: a mutant the loader rejects exits 1
    with one line, never 0."""
    rng = random.Random(SEED + 1)
    texts = [p.read_text() for p in SEEDS[:8]]
    done = 0
    for n in range(200):
        text = mutate(rng.choice(texts), rng)
        path = tmp_path / ('c%d.yaml' % n)
        path.write_bytes(text.encode('utf-8', errors='surrogateescape'))
        try:
            load_scenario(path)
            continue
        except ScenarioError:
            pass
        import subprocess
        r = subprocess.run([sys.executable, '-m', 'procfs', 'check', str(path)],
                           capture_output=True, text=True, timeout=60, cwd=str(PROJECT_ROOT))
        assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith('mmemu: error: %s' % path), r.stderr
        done += 1
        if done == 10:
            break
    assert done == 10

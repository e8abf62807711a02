"""The emulator's /proc, read through a real FUSE mount by the same collector
that read the real kernel, compared with the real-kernel recordings.

For every scenario of ../shared/conformance and tests/conformance, each
label is collected in order with ``run_emulator.sh`` (one ``mmemu mount
--no-init`` per label) for both configs.  The CONFIG_PAGE_MAPCOUNT
collection must match the recording (``compare.py --dirs``) except for the
rows of tests/conformance_artifacts.py.  There is no recording of a
CONFIG_NO_PAGE_MAPCOUNT kernel; its collection is checked against the
CONFIG_PAGE_MAPCOUNT one with the relations that semantics.md section 8
gives between the two configs.
"""
import json
import os
from collections import defaultdict

import pytest

from conformance_artifacts import ARTIFACTS, Artifact
import e2e_helpers as E

SNAPSHOTS = E.conformance_snapshots()
SNAPSHOT_IDS = ['%s:%s/%s' % s for s in SNAPSHOTS]


@pytest.fixture(scope='module')
def collections(tmp_path_factory):
    """{config: actual dir} with every label of every scenario collected,
    plus {(config, scenario, label): error} for the runs that failed."""
    E.require_root()
    base = tmp_path_factory.mktemp('conformance-actual')
    dirs = {c: str(base / c) for c in E.CONFIGS}
    jobs = [(c, path) for _, _, path in E.conformance_scenarios() for c in E.CONFIGS]
    # longest scenarios first: the two workers finish together
    jobs.sort(key=lambda j: -len(E.scenario_labels(j[1])))
    results = E.run_parallel(lambda j: (j, E.collect_scenario(j[1], dirs[j[0]], j[0])), jobs)
    errors = {}
    for (config, path), errs in results:
        for label, text in errs.items():
            errors[(config, path.stem, label)] = text
    return dirs, errors


@pytest.fixture(scope='module')
def comparison(collections):
    """{snapshot title: [Diff] or a "no actual observation" text}, over both sets."""
    dirs, _ = collections
    snaps = {}
    for _, exp_dir in E.CONFORMANCE_SETS.values():
        res = E.run_compare(exp_dir, dirs['page_mapcount'])
        assert res.passed + res.failed == len(res.snapshots), res.output[-3000:]
        assert res.failed == sum(1 for d in res.snapshots.values() if d), res.output[-3000:]
        assert res.returncode == (1 if res.failed else 0), res.output[-3000:]
        snaps.update(res.snapshots)
    return snaps


def _run_errors(collections, config, scenario):
    _, errors = collections
    return '\n'.join('%s %s/%s: %s' % (c, s, l, t) for (c, s, l), t in sorted(errors.items())
                     if c == config and s == scenario)


def _artifact_key(a):
    return (a.snapshot, 'pid %d' % a.pid, a.range, None, a.field, str(a.expected), str(a.actual))


def _diff_key(title, d):
    return (title, d.proc, d.range, d.pages, d.field, d.expected, d.actual)


def _fmt(d):
    where = d.proc + ('  vma %s' % d.range if d.range else '') + ('  page %s' % d.pages if d.pages else '')
    return '%s  %s: expected %s, emulator %s' % (where, d.field, d.expected, d.actual)


# --- the sets themselves ------------------------------------------------------------

def test_every_scenario_label_is_recorded():
    """Each scenario's labels are exactly its expected/<scenario>/*.json, and
    scenario names are unique over the sets (artifacts name a snapshot by
    scenario/label)."""
    seen = {}
    for set_name, name, path in E.conformance_scenarios():
        assert name not in seen, 'scenario %s is in both %s and %s' % (name, seen[name], set_name)
        seen[name] = set_name
        exp = E.CONFORMANCE_SETS[set_name][1] / name
        recorded = sorted(p.stem for p in exp.glob('*.json'))
        assert recorded == sorted(E.scenario_labels(path)), '%s: %s' % (set_name, name)
    assert sorted(seen) == sorted({s for _, s, _ in SNAPSHOTS})


def test_compare_output_is_parsed(tmp_path):
    """compare.py's own output on two small observations: every difference
    row comes back with its process, range, pages and values, also a value
    with spaces (VmFlags) and a missing observation."""
    def obs(referenced, vmflags, kpc):
        vma = {'start': 0, 'end': 8192, 'perms': 'rw-p', 'smaps': {'Referenced': referenced},
               'vmflags': vmflags}
        return {'format': 1, 'kind': 'observation', 'processes': {'101': {
            'ranges': {'buf': {'size': 8192, 'vmas': [vma], 'smaps': {'Referenced': referenced},
                               'pages': {'present': '11', 'kpagecount': kpc}}},
            'rollup': {'Referenced': referenced}}}}
    for d, o in (('exp', obs(8, 'rd wr mr mw me ac', [2, 2])), ('act', obs(4, 'rd wr', [1, 1]))):
        (tmp_path / d / 'scen').mkdir(parents=True)
        (tmp_path / d / 'scen' / 'one.json').write_text(json.dumps(o))
    (tmp_path / 'exp' / 'scen' / 'two.json').write_text(json.dumps(obs(8, 'rd', [1, 1])))
    res = E.run_compare(tmp_path / 'exp', tmp_path / 'act')
    assert (res.passed, res.failed, res.returncode) == (0, 2, 1)
    assert res.snapshots['scen/two'].startswith('no actual observation')
    assert set(res.snapshots['scen/one']) == {
        E.Diff('pid 101', 'buf', None, 'smaps/Referenced', '8', '4'),
        E.Diff('pid 101', 'buf', None, 'vmas/0/smaps/Referenced', '8', '4'),
        E.Diff('pid 101', 'buf', None, 'vmas/0/vmflags', 'rd wr mr mw me ac', 'rd wr'),
        E.Diff('pid 101', 'buf', '0-1', 'kpagecount', '2', '1'),
        E.Diff('pid 101', None, None, 'rollup/Referenced', '8', '4'),
    }
    with pytest.raises(ValueError):
        E.parse_compare('FAIL a/b: 1 difference(s)\n  something else\n0 passed, 1 failed\n')


def test_artifacts_are_well_formed():
    titles = {'%s/%s' % (s, l) for _, s, l in SNAPSHOTS}
    keys = [_artifact_key(a) for a in ARTIFACTS]
    assert len(keys) == len(set(keys)), 'an artifact is listed twice'
    for a in ARTIFACTS:
        assert isinstance(a, Artifact)
        assert a.snapshot in titles, 'artifact for an unknown snapshot: %r' % (a,)
        assert len(a.reason) > 40, 'artifact without a reason: %r' % (a,)


# --- CONFIG_PAGE_MAPCOUNT against the real kernel ----------------------------------

@pytest.mark.parametrize('snapshot', SNAPSHOTS, ids=SNAPSHOT_IDS)
def test_page_mapcount_matches_real_kernel(snapshot, collections, comparison):
    set_name, scenario, label = snapshot
    title = '%s/%s' % (scenario, label)
    result = comparison.get(title)
    assert result is not None, 'compare.py did not report %s' % title
    assert not isinstance(result, str), '%s: %s\n%s' % (
        title, result, _run_errors(collections, 'page_mapcount', scenario))
    allowed = {_artifact_key(a): a for a in ARTIFACTS if a.snapshot == title}
    found = {_diff_key(title, d): d for d in result}
    unexpected = [_fmt(d) for k, d in found.items() if k not in allowed]
    stale = ['pid %d %s %s: expected %s, emulator %s' % (a.pid, a.range or '-', a.field, a.expected, a.actual)
             for k, a in allowed.items() if k not in found]
    assert not unexpected, '%s differs from the real kernel:\n  %s' % (title, '\n  '.join(unexpected))
    assert not stale, ('%s: listed in tests/conformance_artifacts.py but no longer differs '
                       '(remove it):\n  %s' % (title, '\n  '.join(stale)))


# --- CONFIG_NO_PAGE_MAPCOUNT against CONFIG_PAGE_MAPCOUNT ----------------------------

def _uss(smaps):
    return smaps['Private_Clean'] + smaps['Private_Dirty']


def _mappers_by_folio(obs):
    """{folio id: {scenario pid}} over every range of the observation."""
    out = defaultdict(set)
    for pid, p in obs['processes'].items():
        for r in p['ranges'].values():
            for f in r['pages']['folio']:
                if f is not None:
                    out[f].add(pid)
    return out


@pytest.mark.parametrize('snapshot', SNAPSHOTS, ids=SNAPSHOT_IDS)
def test_no_page_mapcount_relations(snapshot, collections):
    set_name, scenario, label = snapshot
    dirs, _ = collections
    paths = {c: os.path.join(dirs[c], scenario, label + '.json') for c in E.CONFIGS}
    for c, p in paths.items():
        assert os.path.exists(p), 'no %s observation of %s/%s\n%s' % (
            c, scenario, label, _run_errors(collections, c, scenario))
    pm, npm = (E.load_json(paths[c]) for c in E.CONFIGS)
    where = '%s/%s' % (scenario, label)
    assert sorted(npm['processes']) == sorted(pm['processes']), where
    pm_mappers = _mappers_by_folio(pm)
    npm_kpc_by_folio = defaultdict(set)
    for pid, pp in pm['processes'].items():
        np_ = npm['processes'][pid]
        w = '%s pid %s' % (where, pid)
        # 8.4/8.7: Rss counts present entries, whatever the config
        assert np_['rollup']['Rss'] == pp['rollup']['Rss'], w + ' rollup Rss'
        # 8.4: Private_* can only shrink without per-page mapcounts (USS is
        # never over-estimated)
        assert _uss(np_['rollup']) <= _uss(pp['rollup']), w + ' rollup USS'
        assert sorted(np_['ranges']) == sorted(pp['ranges']), w
        for name, pr in pp['ranges'].items():
            nr = np_['ranges'][name]
            wr = '%s range %s' % (w, name)
            assert nr['smaps']['Rss'] == pr['smaps']['Rss'], wr + ' Rss'
            assert _uss(nr['smaps']) <= _uss(pr['smaps']), wr + ' USS'
            assert len(nr['vmas']) == len(pr['vmas']), wr + ' VMAs'
            for i, (nv, pv) in enumerate(zip(nr['vmas'], pr['vmas'])):
                assert (nv['start'], nv['end']) == (pv['start'], pv['end']), '%s vma %d' % (wr, i)
                assert nv['smaps']['Rss'] == pv['smaps']['Rss'], '%s vma %d Rss' % (wr, i)
                assert _uss(nv['smaps']) <= _uss(pv['smaps']), '%s vma %d USS' % (wr, i)
            npg, ppg = nr['pages'], pr['pages']
            # 8.3: bit 63 does not depend on mapcounts
            assert npg['present'] == ppg['present'], wr + ' present'
            for i, c in enumerate(npg['exclusive']):
                if c != '1':
                    continue
                # 8.3: bit 56 is !folio_maybe_mapped_shared(), which never
                # says "exclusive" for a folio another MM maps (5.2).  The
                # huge zero folio is never rmapped (LM = 0), so every mapper
                # sees bit 56 (12.2): zero pages are left out.
                if 'Z' in (npg['kpageflags'][i] or ''):
                    continue
                others = pm_mappers[ppg['folio'][i]] - {pid}
                assert not others, ('%s page %d: PM_MMAP_EXCLUSIVE under no_page_mapcount, but '
                                    'its folio is also mapped by pid %s' % (wr, i, sorted(others)))
            for f, n in zip(npg['folio'], npg['kpagecount']):
                if f is not None:
                    npm_kpc_by_folio[f].add(n)
    # 8.1: kpagecount is folio_average_page_mapcount(), one value per folio
    mixed = {f: sorted(v) for f, v in npm_kpc_by_folio.items() if len(v) > 1}
    assert not mixed, '%s: folios whose pages differ in kpagecount: %s' % (where, mixed)

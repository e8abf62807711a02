"""The mm core against real-kernel recordings, page by page.

Every scenario of tests/data/conformance-public (a copy of
shared/conformance: scenarios/<name>.yaml, expected/<name>/<label>.json)
and of tests/conformance (the project's own recordings) is replayed once
with CONFIG_PAGE_MAPCOUNT (the recording kernel's config).  At every
snapshot each page of each named range is compared with what the real
kernel showed (shared/conformance/README.md, "JSON schema"):

- pagemap: present (bit 63), exclusive (bit 56), file_or_shared (bit 61);
- kpagecount;
- folios: folio_pages, folio_index, and the sharing pattern: equal frame
  ids <=> equal PFNs, equal folio ids <=> equal heads, over the snapshot;
- kpageflags letters (A M T H t Z K D L S);
- history: same_frame against the previous snapshot (reuse versus copy);

and, per range or cgroup, the counters that follow from that state: smaps
sums (semantics.md 8.4, helpers_core.smaps_kb), numa_maps mapmax and the
memcg v1 rss / rss_huge / shmem / mapped_file / cache.

The NO_PAGE_MAPCOUNT replay and the replay on the 2026 RFC kernel
(total_mapped_pages) of the same scenarios have no recording; each is held
to what semantics.md says must hold whatever the per-page numbers are
(sections 0, 7, 8, 12.9), which the RFC's cover letter promises for every
kernel once it is applied ("The kernel now always behaves like
CONFIG_PAGE_NO_MAPCOUNT currently does"), and the folio state of every
replay to the invariants of section 3.4 checked against the page tables.

A difference is reported as scenario/label/pid/range/field with the pages.
"""
import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from mmcore.config import PAGE_MAPCOUNT, NO_PAGE_MAPCOUNT, TOTAL_MAPPED_PAGES
from mmcore.mapcount import folio_maybe_mapped_shared
from mmcore.memory import FL_RESERVED, FL_ZERO
from mmcore.scenario import load_scenario
from mmcore import query

from helpers_core import (PAGE, folio_invariants, folio_mappers, private_kb, range_pages,
                          range_vmas, smaps_kb, snapshots, true_entire_mapcounts,
                          true_mapped_pages)

TESTS = Path(__file__).resolve().parent
SOURCES = {
    'public': TESTS / 'data' / 'conformance-public',
    'project': TESTS / 'conformance',
}
SCENARIOS = [(src, p.stem) for src, d in SOURCES.items()
             for p in sorted((d / 'scenarios').glob('*.yaml'))]
SCENARIO_IDS = ['%s/%s' % s for s in SCENARIOS]

# shared/conformance/README.md, "kpageflags letters", in this order
FLAG_LETTERS = (('ANON', 'A'), ('MMAP', 'M'), ('THP', 'T'), ('COMPOUND_HEAD', 'H'),
                ('COMPOUND_TAIL', 't'), ('ZERO_PAGE', 'Z'), ('KSM', 'K'), ('DIRTY', 'D'),
                ('LRU', 'L'), ('SWAPBACKED', 'S'))
PAGE_FIELDS = ('present', 'exclusive', 'file_or_shared')
MAX_REPORT = 40

# (source, scenario) -> {group: reason}: known differences of the core,
# marked xfail so the suite stays green; listed in the report to the lead.
KNOWN = {}


def letters(flags):
    return ''.join(l for name, l in FLAG_LETTERS if int(flags) >> query.KPF[name] & 1)


def bitstring(a):
    return ''.join('1' if x else '0' for x in a)


def runs(idx):
    """'3-7,9' for a sorted list of page indices."""
    out = []
    for i in idx:
        if out and out[-1][1] == i - 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return ','.join(str(a) if a == b else '%d-%d' % (a, b) for a, b in out)


# --- one replay per scenario and config -----------------------------------------------

@lru_cache(maxsize=None)
def scenario_of(src, name):
    return load_scenario(str(SOURCES[src] / 'scenarios' / (name + '.yaml')))


def expected_of(src, name, label):
    f = SOURCES[src] / 'expected' / name / (label + '.json')
    if not f.exists():
        return None
    with open(f) as fh:
        return json.load(fh)


def observe(k, ranges):
    """{(pid, name): per-page arrays} of the ranges `ranges` ({(pid, name):
    number of pages}); ranges the kernel does not have are left out."""
    out = {}
    for (pid, name), n in ranges.items():
        if pid not in k.processes or not range_vmas(k, pid, name):
            continue
        rp = range_pages(k, pid, name, n)
        pres = rp.present
        fl = np.zeros(n, dtype=np.uint64)
        if pres.any():
            fl[pres] = query.kpageflags(k, rp.pfn[pres])
        out[(pid, name)] = {
            'present': rp.present, 'exclusive': rp.exclusive,
            'file_or_shared': rp.file_or_shared, 'kpagecount': rp.kpagecount,
            'folio_pages': rp.folio_pages, 'pfn': rp.pfn, 'head': rp.head,
            'normal': rp.normal, 'numa': rp.numa_mapcount,
            'letters': [letters(f) if p else None for f, p in zip(fl, pres)],
        }
    return out


def scenario_ranges(k, exp=None):
    """The ranges to look at: those of the recording, else every named
    range of every scenario process."""
    if exp is not None:
        return {(int(pid), name): r['size'] // PAGE
                for pid, pobs in exp['processes'].items() for name, r in pobs['ranges'].items()}
    out = {}
    for pid, p in k.processes.items():
        if pid == 1:
            continue
        for v in p.mm.vmas:
            end = (v.end - v.range_start) // PAGE
            out[(pid, v.name)] = max(out.get((pid, v.name), 0), end)
    return out


@lru_cache(maxsize=None)
def page_mapcount_run(src, name):
    """[(label, expected JSON or None, observation, facts)] of the
    PAGE_MAPCOUNT replay; facts: range names per pid, smaps per range,
    memcg counters per recorded cgroup."""
    sc = scenario_of(src, name)
    out = []
    for label, k in snapshots(sc, PAGE_MAPCOUNT):
        exp = expected_of(src, name, label)
        ranges = scenario_ranges(k, exp)
        obs = observe(k, ranges)
        facts = {
            'have': {pid: sorted({v.name for v in p.mm.vmas})
                     for pid, p in k.processes.items() if pid != 1},
            'smaps': {key: smaps_kb(k, *key) for key in obs},
            'memcg': {cg: query.memcg_stats(k, cg, hierarchical=True)
                      for cg in (exp or {}).get('memcg', {})},
        }
        out.append((label, exp, obs, facts))
    return out


@lru_cache(maxsize=None)
def both_configs_run(src, name):
    """Per snapshot, the facts the config-comparison tests need, for the
    three kernels: [(label, {config name: facts})]."""
    sc = scenario_of(src, name)
    per_config = {}
    for config in (PAGE_MAPCOUNT, NO_PAGE_MAPCOUNT, TOTAL_MAPPED_PAGES):
        rows = []
        for label, k in snapshots(sc, config):
            ranges = scenario_ranges(k)
            obs = observe(k, ranges)
            sm = {key: smaps_kb(k, *key) for key in obs}
            rows.append((label, {
                'obs': obs, 'smaps': sm,
                'invariants': state_problems(k),
                'mappers': folio_mappers(k),
                'mm_pid': {p.mm.mm_id: pid for pid, p in k.processes.items()},
                'folio_kpc': folio_kpagecounts(k, obs),
            }))
        per_config[config.name] = rows
    labels = [lbl for lbl, _ in per_config[PAGE_MAPCOUNT.name]]
    return [(lbl, {c: dict(per_config[c])[lbl] for c in per_config}) for lbl in labels]


def folio_kpagecounts(k, obs):
    """head -> kpagecount of every PFN of the folio (mapped or not)."""
    out = {}
    for o in obs.values():
        for h in np.unique(o['head'][o['present']]):
            h = int(h)
            if h in out:
                continue
            nr = 1 << int(k.mem.order[h])
            out[h] = query.kpagecount(k, h + np.arange(nr)).astype(np.int64)
    return out


def state_problems(k):
    """Violations of semantics.md 3.4 and 5.2 by the folio state, checked
    against a scan of every page table."""
    mem = k.mem
    bad = []
    mappers = folio_mappers(k)
    pmds = true_entire_mapcounts(k)
    true_pages = true_mapped_pages(k)
    pid_of = {p.mm.mm_id: pid for pid, p in k.processes.items()}
    heads = mem.allocated_folio_heads()
    heads = heads[(mem.flags[heads] & (FL_RESERVED | FL_ZERO)) == 0]
    for h in heads:
        h = int(h)
        by_pid = mappers.get(h, {})
        true_lm = sum(by_pid.values())
        if mem.order[h] == 0:
            if int(mem.page_mapcount[h]) != true_lm:
                bad.append('small folio %d: mapcount %d, page tables %d'
                           % (h, mem.page_mapcount[h], true_lm))
            continue
        lm, e = int(mem.large_mapcount[h]), int(mem.entire_mapcount[h])
        if k.config.rmap == TOTAL_MAPPED_PAGES.rmap:
            # RFC 13/13: no entire mapcount; the total counts every mapped
            # page of every PTE and PMD mapping
            e, total = pmds.get(h, 0), int(mem.total_mapped_pages[h])
            if total != true_pages.get(h, 0) or int(mem.entire_mapcount[h]):
                bad.append('folio %d: total %d (E %d), page tables map %d pages'
                           % (h, total, mem.entire_mapcount[h], true_pages.get(h, 0)))
        if lm != true_lm or e != pmds.get(h, 0):
            bad.append('folio %d: LM %d E %d, page tables %d and %d PMDs'
                       % (h, lm, e, true_lm, pmds.get(h, 0)))
        if int(mem.refcount[h]) < lm:
            bad.append('folio %d: refcount %d < LM %d' % (h, mem.refcount[h], lm))
        bad += ['folio %d: %s' % (h, b) for b in folio_invariants(mem, h, k.config.page_mapcount)]
        for slot in (0, 1):
            i, c = int(mem.mm_id[h, slot]), int(mem.mm_id_mapcount[h, slot])
            if i and c > by_pid.get(pid_of.get(i), 0):
                bad.append('folio %d: slot %d counts %d for MM %d which maps it %d times'
                           % (h, slot, c, i, by_pid.get(pid_of.get(i), 0)))
        if not folio_maybe_mapped_shared(mem, [h])[0] and len(by_pid) > 1:
            bad.append('folio %d: not maybe-shared but mapped by pids %s' % (h, sorted(by_pid)))
    if k.config.page_mapcount:
        # kpagecount is the precise per-page count (semantics.md 8.1)
        truth = query.true_page_mapcounts(k)
        used = np.flatnonzero(~mem.free)
        used = used[(mem.flags[mem.head[used]] & (FL_RESERVED | FL_ZERO)) == 0]
        kpc = query.kpagecount(k, used).astype(np.int64)
        diff = used[kpc != truth[used]]
        if len(diff):
            bad.append('kpagecount differs from the page tables at PFNs %s' % list(diff[:8]))
    return bad


# --- comparison with the recordings ------------------------------------------------------

def compare_group(src, name, group):
    """Difference lines of one group over every snapshot."""
    lines = []
    prev_pfns = {}
    for label, exp, obs, facts in page_mapcount_run(src, name):
        have = facts['have']
        if exp is None:
            prev_pfns = {key: o['pfn'] for key, o in obs.items()}
            continue
        where = '%s/%s' % (name, label)
        if group == 'ranges':
            exp_pids = sorted(int(p) for p in exp['processes'])
            if exp_pids != sorted(have):
                lines.append('%s: processes %s, expected %s' % (where, sorted(have), exp_pids))
            for pid, pobs in exp['processes'].items():
                want = sorted(pobs['ranges'])
                got = have.get(int(pid), [])
                if want != got:
                    lines.append('%s pid %s: ranges %s, expected %s' % (where, pid, got, want))
        elif group == 'folios':
            lines += compare_identity(where, exp, obs)
        elif group == 'memcg':
            lines += compare_memcg(where, exp, facts['memcg'])
        for pid, pobs in exp['processes'].items():
            for rname, r in pobs['ranges'].items():
                o = obs.get((int(pid), rname))
                if o is None:
                    if group == 'ranges':
                        lines.append('%s pid %s range %s: missing' % (where, pid, rname))
                    continue
                pg = r['pages']
                at = '%s pid %s range %s' % (where, pid, rname)
                if group == 'pagemap':
                    for f in PAGE_FIELDS:
                        lines += diff_pages(at, f, list(pg[f]), list(bitstring(o[f])))
                elif group == 'kpagecount':
                    got = [int(c) if p else None for c, p in zip(o['kpagecount'], o['present'])]
                    lines += diff_pages(at, 'kpagecount', pg['kpagecount'], got)
                elif group == 'folios':
                    got = [int(c) if p else None for c, p in zip(o['folio_pages'], o['present'])]
                    lines += diff_pages(at, 'folio_pages', pg['folio_pages'], got)
                    got = [int(f - h) if p else None
                           for f, h, p in zip(o['pfn'], o['head'], o['present'])]
                    lines += diff_pages(at, 'folio_index', pg['folio_index'], got)
                elif group == 'smaps':
                    lines += compare_smaps(at, 'processes/%s/ranges/%s/smaps/' % (pid, rname),
                                           exp.get('unstable', []), r['smaps'],
                                           facts['smaps'][(int(pid), rname)])
                elif group == 'numa':
                    got = max(1, int(o['numa'][o['normal']].max())) if o['normal'].any() else 0
                    if got != r['numa_maps']['mapmax']:
                        lines.append('%s numa_maps mapmax: expected %d got %d'
                                     % (at, r['numa_maps']['mapmax'], got))
                elif group == 'kpageflags':
                    lines += diff_pages(at, 'kpageflags', pg['kpageflags'], o['letters'])
                elif group == 'history':
                    prev = prev_pfns.get((int(pid), rname))
                    got = []
                    for i, x in enumerate(o['pfn']):
                        before = prev[i] if prev is not None and i < len(prev) else -1
                        got.append(None if x < 0 or before < 0 else int(before == x))
                    lines += diff_pages(at, 'same_frame', pg['same_frame'], got)
        prev_pfns = {key: o['pfn'] for key, o in obs.items()}
    return lines


def diff_pages(at, field, exp, got):
    bad = [i for i in range(max(len(exp), len(got)))
           if (exp[i] if i < len(exp) else 'absent') != (got[i] if i < len(got) else 'absent')]
    if not bad:
        return []
    shown = bad[:3]
    return ['%s %s: pages %s expected %s got %s' % (
        at, field, runs(bad), [exp[i] if i < len(exp) else 'absent' for i in shown],
        [got[i] if i < len(got) else 'absent' for i in shown])]


def compare_identity(where, exp, obs):
    """Equal frame ids <=> equal PFNs; equal folio ids <=> equal heads."""
    lines = []
    for key, exp_key, what in (('pfn', 'frame', 'frame'), ('head', 'folio', 'folio')):
        to_ours, to_theirs = {}, {}
        for pid, pobs in exp['processes'].items():
            for rname, r in pobs['ranges'].items():
                o = obs.get((int(pid), rname))
                if o is None:
                    continue
                for i, eid in enumerate(r['pages'][exp_key]):
                    if eid is None or i >= len(o[key]) or not o['present'][i]:
                        continue
                    ours = int(o[key][i])
                    was_ours = to_ours.setdefault(eid, ours)
                    was_theirs = to_theirs.setdefault(ours, eid)
                    if was_ours != ours or was_theirs != eid:
                        lines.append('%s pid %s range %s page %d: %s sharing differs: '
                                     'expected id %s (earlier our PFN %d), our PFN %d '
                                     '(earlier expected id %s)'
                                     % (where, pid, rname, i, what, eid, was_ours, ours,
                                        was_theirs))
    return lines[:MAX_REPORT]


# smaps fields that follow from the page state alone.  Referenced is left
# out: on the recording machine a DAMON monitor marks sampled folios young,
# which forked children then report (shared/conformance/README.md,
# "Unstable paths"); the emulator has no such sampler.
SMAPS_FIELDS = ('Rss', 'Pss', 'Shared_Clean', 'Shared_Dirty', 'Private_Clean',
                'Private_Dirty', 'Anonymous', 'AnonHugePages')
# memcg v1 memory.stat names -> query.memcg_stats counters (pages)
MEMCG_FIELDS = {'rss': 'anon_mapped', 'rss_huge': 'anon_thps', 'shmem': 'shmem',
                'mapped_file': 'file_mapped', 'cache': 'file_pages'}


def compare_smaps(at, path, unstable, exp, got):
    lines = []
    for f in SMAPS_FIELDS:
        if any((path + f).startswith(u) for u in unstable):
            continue
        if exp.get(f) != got[f]:
            lines.append('%s smaps %s: expected %s got %d' % (at, f, exp.get(f), got[f]))
    return lines


def compare_memcg(where, exp, got):
    lines = []
    for cg, fields in exp.get('memcg', {}).items():
        for f, v in fields.items():
            ours = got[cg][MEMCG_FIELDS[f]] * PAGE
            if v != ours:
                lines.append('%s memcg %s %s: expected %d got %d' % (where, cg, f, v, ours))
    return lines


GROUPS = ('ranges', 'pagemap', 'kpagecount', 'folios', 'kpageflags', 'history', 'smaps',
          'numa', 'memcg')


def _params(groups):
    out = []
    for (src, name), sid in zip(SCENARIOS, SCENARIO_IDS):
        for g in groups:
            reason = KNOWN.get((src, name), {}).get(g)
            marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
            out.append(pytest.param(src, name, g, id='%s-%s' % (sid, g), marks=marks))
    return out


def test_sources_present():
    assert len([s for s in SCENARIOS if s[0] == 'public']) >= 13
    assert len([s for s in SCENARIOS if s[0] == 'project']) >= 21
    for src, name in SCENARIOS:
        labels = scenario_of(src, name).labels
        assert any(expected_of(src, name, lbl) for lbl in labels), (src, name)


@pytest.mark.parametrize('src,name,group', _params(GROUPS))
def test_page_mapcount_matches_real_kernel(src, name, group):
    lines = compare_group(src, name, group)
    assert not lines, '%d differences:\n%s' % (len(lines), '\n'.join(lines[:MAX_REPORT]))


# --- NO_PAGE_MAPCOUNT and both-config properties --------------------------------------------

CHECKS = ('invariants', 'same-mappings', 'kpagecount-per-folio', 'exclusive-implies-alone',
          'uss')


def check_configs(src, name, check):
    lines = []
    for label, cfg in both_configs_run(src, name):
        for other in (NO_PAGE_MAPCOUNT, TOTAL_MAPPED_PAGES):
            lines += check_pair(name, label, cfg, other.name, check)
    return lines


def check_pair(name, label, cfg, none_name, check):
    """The checks of one folio-level kernel (`none_name`: NO_PAGE_MAPCOUNT
    or the RFC) against PAGE_MAPCOUNT at one snapshot."""
    lines = []
    page, none = cfg[PAGE_MAPCOUNT.name], cfg[none_name]
    where = '%s/%s [%s]' % (name, label, none_name)
    if check == 'invariants':
        # semantics.md 3.4, 5.2: in every config (PAGE_MAPCOUNT's once)
        for c in ([PAGE_MAPCOUNT.name] if none_name == NO_PAGE_MAPCOUNT.name else []) + [none_name]:
            lines += ['%s [%s]: %s' % (where, c, b) for b in cfg[c]['invariants']]
    elif check == 'same-mappings':
        # section 12.9: faults, CoW, madvise and split decisions do not
        # depend on the config, so every range maps the same PFNs
        # (hence the same Rss)
        if sorted(page['obs']) != sorted(none['obs']):
            lines.append('%s: ranges %s vs %s'
                         % (where, sorted(page['obs']), sorted(none['obs'])))
        for key in page['obs']:
            if key not in none['obs']:
                continue
            a, b = page['obs'][key], none['obs'][key]
            bad = np.flatnonzero(a['pfn'] != b['pfn'])
            if len(bad):
                lines.append('%s pid %d range %s: PFNs differ at pages %s'
                             % (where, key[0], key[1], runs(bad)))
            rss = page['smaps'][key]['Rss'], none['smaps'][key]['Rss']
            if rss[0] != rss[1]:
                lines.append('%s pid %d range %s: Rss %d vs %d' % ((where,) + key + rss))
    elif check == 'kpagecount-per-folio':
        # section 8.1: one value, the folio average, for every PFN
        for h, kpc in none['folio_kpc'].items():
            if len(np.unique(kpc)) != 1:
                lines.append('%s: folio %d kpagecounts %s'
                             % (where, h, sorted(set(kpc.tolist()))))
    elif check == 'exclusive-implies-alone':
        # section 8.3: bit 56 set only if the whole folio is certainly
        # mapped by this process alone (normal pages; the huge zero
        # page is not rmapped, section 12.2)
        for (pid, rname), o in none['obs'].items():
            for i in np.flatnonzero(o['exclusive'] & o['present']):
                h = int(o['head'][i])
                owners = set(none['mappers'].get(h, {}))
                if owners and owners != {pid}:
                    lines.append('%s pid %d range %s page %d: exclusive, but pids %s '
                                 'map folio %d' % (where, pid, rname, i, sorted(owners), h))
                    break
    elif check == 'uss':
        # section 8.4: NO_PAGE_MAPCOUNT never reports more private memory
        for key, sm in none['smaps'].items():
            if key in page['smaps'] and private_kb(sm) > private_kb(page['smaps'][key]):
                lines.append('%s pid %d range %s: USS %d kB (none) > %d kB (per-page)'
                             % (where, key[0], key[1], private_kb(sm),
                                private_kb(page['smaps'][key])))
    return lines


@pytest.mark.parametrize('src,name,check', _params(CHECKS))
def test_both_configs(src, name, check):
    lines = check_configs(src, name, check)
    assert not lines, '%d problems:\n%s' % (len(lines), '\n'.join(lines[:MAX_REPORT]))

"""`expect` steps: checking and verifying what a scenario states.

The loader (mmcore.scenario) parses an `expect` step's structure and its
references into the scenario (pid, vma, offsets, snapshot labels,
cgroups); ``validate()`` checks the rest against what the renderers print
and the kernel profiles that exist: the field names of each subject, the
shape of every value, the config names.  ``verify()`` replays the scenario
step by step on each config and, at every `expect` step, reads the values
from the files rendered at that point (procfs.view over the tree), plus
the folio state of mmcore.query for the `folio` subject, and compares.

Value forms (README, "Expectations"): a scalar or a per-page list for
every config, or a mapping {config name: value}.  A list item "V*N" stands
for N items V; a 0/1 string ('1000 0000') for a list of bits.
"""
from dataclasses import dataclass

import numpy as np

from mmcore import query
from mmcore.errors import StepError
from mmcore.kernel import Kernel
from mmcore.scenario import Expect, Snapshot
from .build import kernel_tree
from .expect_check import PER_ITEM, RUN_RE, _parse_slots, _per_config
from .view import PAGE_SIZE, ProcView, TreeSource


# --- values -----------------------------------------------------------------------------

def _slots_text(slots):
    if slots is None:
        return 'none (a small folio)'
    return ' | '.join('-' if s is None else '%d:%d' % s for s in slots)


def _expand(value, n, name):
    """An expected per-item value as a list of n items."""
    if isinstance(value, bool):
        return [int(value)] * n
    if isinstance(value, int):
        return [value] * n
    if isinstance(value, str):
        return [int(c) for c in value if c in '01']
    out = []
    for item in value:
        m = RUN_RE.match(item) if isinstance(item, str) else None
        out += [int(m[1])] * int(m[2]) if m else [item]
    return out


def runs(values):
    """[1, 2, 2, 2] -> '1 2*3': a compact form for reports."""
    out, i = [], 0
    values = list(values)
    while i < len(values):
        j = i
        while j < len(values) and values[j] == values[i]:
            j += 1
        out.append('%s*%d' % (values[i], j - i) if j - i > 1 else str(values[i]))
        i = j
    return ' '.join(out) if out else '(none)'


@dataclass
class Result:
    """One stated value checked under one config."""
    path: str
    line: int
    config: str
    what: str
    passed: bool
    detail: str

    def __str__(self):
        sep = ' ' if self.detail.startswith('= ') else ': '
        return '%s:%d: %s [%s] %s%s%s' % (self.path, self.line,
                                          'passed' if self.passed else 'FAILED',
                                          self.config, self.what, sep, self.detail)


class _Replay:
    """One config's kernel during the replay, and what its snapshots showed."""

    def __init__(self, cfg, sc):
        self.cfg = cfg
        self.k = Kernel(cfg, sc, with_init=False)
        self.counters = {}          # label -> {file key: {name: value}}
        self.pagemaps = {}          # label -> {(pid, vma): Pagemap over the range}

    def view(self):
        return ProcView(TreeSource(kernel_tree(self.k, with_init=False)), self.cfg.name)

    def range_base(self, pid, vma):
        p = self.k.processes.get(pid)
        vmas = self.k.range_vmas(p, vma) if p else []
        return (vmas[0].range_start, vmas) if vmas else (None, [])

    def record(self, label, sc, wanted):
        v = self.view()
        c = {'meminfo': v.meminfo(), 'vmstat': v.vmstat()}
        for cg in self.k.cgroups:
            c['memcg', cg, 1] = v.memcg_stat(cg, 1)
            c['memcg', cg, 2] = v.memcg_stat(cg, 2)
        self.counters[label] = c
        pm = {}
        for pid, vma in wanted:
            base, vmas = self.range_base(pid, vma)
            if base is not None:
                n = (max(x.end for x in vmas) - base) // PAGE_SIZE
                pm[pid, vma] = v.pagemap(pid, base, n)
        self.pagemaps[label] = pm


def _referenced_ranges(sc):
    return {(st.target['pid'], st.target['vma']) for st in sc.steps
            if isinstance(st, Expect) and ('since' in st.target or 'at' in st.target)
            and 'vma' in st.target}


def _actual(rp, st, name, cache):
    """The value of field `name` of expect step `st` under the replay `rp`
    (an int, bool, str, a list per item, or None when absent); raises
    LookupError with a message when it cannot be read."""
    t = st.target
    v = cache.setdefault('view', rp.view())
    subj = st.subject
    if subj == 'smaps_rollup':
        return cache.setdefault('rollup', v.smaps_rollup(t['pid'])).get(name)
    if subj == 'smaps':
        if 'smaps' not in cache:
            _, vmas = rp.range_base(t['pid'], t['vma'])
            if not vmas:
                raise LookupError('range %r of pid %d is not mapped' % (t['vma'], t['pid']))
            first = [b for b in v.smaps(t['pid']) if b['start'] == vmas[0].start][0]
            # numbers summed over the range's VMAs, text (VmFlags) of its first VMA
            cache['smaps'] = {k: x for k, x in first['fields'].items() if not isinstance(x, int)}
            cache['smaps'].update(v.smaps_sum(t['pid'], starts={x.start for x in vmas}))
        return cache['smaps'].get(name)
    if subj == 'numa_maps':
        _, vmas = rp.range_base(t['pid'], t['vma'])
        starts = {x.start for x in vmas}
        lines = [tok for s, pol, tok in v.numa_maps(t['pid']) if s in starts]
        if not lines:
            raise LookupError('range %r of pid %d has no numa_maps line' % (t['vma'], t['pid']))
        if name == 'policy':
            return [pol for s, pol, _ in v.numa_maps(t['pid']) if s in starts][0]
        vals = [tok.get(name) for tok in lines]
        if all(x is None for x in vals):
            return None
        if name == 'mapmax':
            return max(x for x in vals if x is not None)
        if all(isinstance(x, int) and not isinstance(x, bool) for x in vals if x is not None):
            return sum(x for x in vals if x is not None)
        return vals[0]
    if subj in ('meminfo', 'vmstat', 'memcg'):
        if subj == 'memcg':
            key = ('memcg', t.get('cgroup', '/'), t.get('version', 2))
            now = cache.setdefault(key, v.memcg_stat(key[1], key[2]))
        else:
            key = subj
            now = cache.setdefault(key, v.meminfo() if subj == 'meminfo' else v.vmstat())
        if name not in now:
            raise LookupError('%s has no %s' % (subj, name))
        if 'since' in t:
            return now[name] - rp.counters[t['since']][key][name]
        return now[name]
    base, vmas = rp.range_base(t['pid'], t['vma'])
    if base is None:
        raise LookupError('range %r of pid %d is not mapped' % (t['vma'], t['pid']))
    if subj == 'pages':
        n = t['length'] // PAGE_SIZE
        pm = cache.setdefault('pagemap', v.pagemap(t['pid'], base + t['offset'], n))
        if name == 'present':
            return list(pm.present)
        if name == 'present_pages':
            return int(pm.present.sum())
        if name in ('bit56', 'bit56_pages', 'bit61'):
            bits = pm.exclusive if name != 'bit61' else pm.file
            return int(bits.sum()) if name == 'bit56_pages' else list(bits)
        if name == 'kpagecount':
            return [v.kpagecount([p])[0] if p >= 0 else None for p in pm.pfn]
        if name == 'same_pfn':
            old = rp.pagemaps[t['since']].get((t['pid'], t['vma']))
            if old is None:
                raise LookupError('range %r of pid %d was not mapped at %s'
                                  % (t['vma'], t['pid'], t['since']))
            first = t['offset'] // PAGE_SIZE
            before = old.pfn[first:first + n]
            before = np.concatenate([before, np.full(n - len(before), -1)])
            return [int(a >= 0 and a == b) for a, b in zip(pm.pfn, before)]
    # folio
    page = t['offset'] // PAGE_SIZE
    if 'at' in t:
        old = rp.pagemaps[t['at']].get((t['pid'], t['vma']))
        pfn = int(old.pfn[page]) if old is not None and page < len(old) else -1
        when = 'at snapshot %s' % t['at']
    else:
        pfn = int(v.pagemap(t['pid'], base + t['offset'], 1).pfn[0])
        when = 'now'
    if pfn < 0:
        raise LookupError('page at offset %d of %r in pid %d is not present %s'
                          % (t['offset'], t['vma'], t['pid'], when))
    state = cache.setdefault('folio', query.folio_state_at(rp.k, pfn))
    if state is None:
        raise LookupError('frame %d (the folio %s) is free now' % (pfn, when))
    if name == 'kpagecount':
        return v.kpagecount(range(state['head'], state['head'] + state['nr_pages']))
    if name == 'slots':
        return state['slots']
    return state[name]


def _compare(st, name, want, got):
    """(passed, detail)."""
    if (st.subject, name) in PER_ITEM:
        exp = _expand(want, len(got), name)
        shown = runs(['-' if g is None else g for g in got])
        if len(exp) != len(got):
            return False, 'expected %d values (%s), the range has %d: %s' % (
                len(exp), runs(exp), len(got), shown)
        ok = all(g is not None and g == e for g, e in zip(got, exp))
        return ok, ('%s' % shown if ok else 'expected %s, got %s' % (runs(exp), shown))
    if name == 'slots':
        ok = got == _parse_slots(want) if got is not None else False
        return ok, (_slots_text(got) if ok else 'expected %s, got %s'
                    % (_slots_text(_parse_slots(want)), _slots_text(got)))
    ok = got == want and isinstance(got, bool) == isinstance(want, bool)
    fmt = lambda x: 'absent' if x is None else str(x)
    return ok, ('= %s' % fmt(got) if ok else 'expected %s, got %s' % (fmt(want), fmt(got)))


def _describe(st):
    t = st.target
    parts = [st.subject]
    if 'pid' in t:
        parts.append('pid %d' % t['pid'])
    if 'vma' in t:
        parts.append(t['vma'])
    if st.subject == 'pages':
        parts.append('pages %d-%d' % (t['offset'] // PAGE_SIZE,
                                      (t['offset'] + t['length']) // PAGE_SIZE - 1))
    if st.subject == 'folio':
        parts.append('page %d' % (t['offset'] // PAGE_SIZE))
    if 'memcg' == st.subject:
        parts.append('%s v%d' % (t.get('cgroup', '/'), t.get('version', 2)))
    for key in ('since', 'at'):
        if key in t:
            parts.append('%s %s' % (key, t[key]))
    return ' '.join(parts)


def evaluate(rp, st, sc):
    """[Result] of one expect step under one replayed config."""
    out = []
    if st.configs is not None and rp.cfg.name not in st.configs:
        return out
    cache = {}
    for name, value, line in st.fields:
        per = _per_config(value)
        if per is not None:
            if rp.cfg.name not in per:
                continue
            value = per[rp.cfg.name]
        what = '%s: %s' % (_describe(st), name)
        try:
            got = _actual(rp, st, name, cache)
        except LookupError as e:
            out.append(Result(sc.path, line, rp.cfg.name, what, False, str(e).strip("'\"")))
            continue
        passed, detail = _compare(st, name, value, got)
        if st.note and not passed:
            detail += ' (%s)' % st.note
        out.append(Result(sc.path, line, rp.cfg.name, what, passed, detail))
    return out


def verify(sc, configs):
    """Replays `sc` on each KernelConfig and checks every expect step;
    returns [Result] in step order, config by config within a step.  A step
    the kernel refuses raises StepError naming the scenario and config."""
    replays = [_Replay(cfg, sc) for cfg in configs]
    wanted = _referenced_ranges(sc)
    results = []
    for st in sc.steps:
        for rp in replays:
            if isinstance(st, Expect):
                results += evaluate(rp, st, sc)
                continue
            try:
                rp.k.apply(st)
            except StepError as e:
                raise StepError(None, '%s: %s (kernel config %s)' % (sc.path, e, rp.cfg.name))
            if isinstance(st, Snapshot):
                rp.record(st.label, sc, wanted)
    return results


def expectation_count(sc):
    return sum(len(st.fields) for st in sc.steps if isinstance(st, Expect))

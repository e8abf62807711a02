"""The MM-ID slot rule of mmcore/mmid.py against the slot algorithm itself
(mmcore/rmap.py, semantics.md 4): random histories of map and unmap by k
MMs, through the real rmap code, end in a shared bit that the rule
predicts where it says "determined", and both ends of an "ambiguous"
range are reached by histories that end in the same mappings."""
import numpy as np
from hypothesis import given, settings, strategies as st

from mmcore.config import KernelConfig
from mmcore.errors import StepError
from mmcore.kernel import Kernel
from mmcore.mapcount import folio_maybe_mapped_shared, policy_for
from mmcore.memory import FL_ANON, PhysMem
from mmcore.mmid import classify
from mmcore.rmap import Rmap
from mmcore.scenario import parse_scenario_text

CONFIG = KernelConfig('no_page_mapcount', page_mapcount=False, bits=64)


def _rmap():
    mem = PhysMem(4 << 20)
    return mem, Rmap(mem, CONFIG, policy_for(CONFIG))


def _run(order, history):
    """Applies [(mm, 'pte', pages) | (mm, 'unpte', pages) | (mm, 'pmd') |
    (mm, 'unpmd')] to a fresh file folio; returns (mem, head)."""
    mem, rmap = _rmap()
    head = int(mem.alloc(order, 1)[0])
    for op in history:
        mm, kind = op[0], op[1]
        if kind == 'pte':
            rmap.add_ptes(mm, head + np.array(sorted(op[2]), dtype=np.int64))
        elif kind == 'unpte':
            rmap.remove_ptes(mm, head + np.array(sorted(op[2]), dtype=np.int64))
        elif kind == 'pmd':
            rmap.add_pmd(mm, [head])
        else:
            rmap.remove_pmd(mm, [head])
    return mem, head


@st.composite
def histories(draw):
    order = draw(st.sampled_from([2, 4, 9]))
    nr = 1 << order
    k = draw(st.integers(1, 5))
    ptes = {mm: set() for mm in range(1, k + 1)}
    pmds = {mm: 0 for mm in range(1, k + 1)}
    history = []
    for _ in range(draw(st.integers(1, 30))):
        mm = draw(st.integers(1, k))
        choice = draw(st.sampled_from(['pte', 'pte', 'unpte', 'unall', 'pmd', 'unpmd']
                                      if order == 9 else ['pte', 'pte', 'unpte', 'unall']))
        if choice == 'unall':
            # an MM that goes away entirely (exit, munmap of the whole range)
            if ptes[mm]:
                history.append((mm, 'unpte', set(ptes[mm])))
                ptes[mm] = set()
            if pmds[mm]:
                history.append((mm, 'unpmd'))
                pmds[mm] = 0
            continue
        if choice == 'pte':
            free = sorted(set(range(min(nr, 24))) - ptes[mm])
            if not free:
                continue
            pages = set(draw(st.lists(st.sampled_from(free), min_size=1, max_size=6, unique=True)))
            ptes[mm] |= pages
            history.append((mm, 'pte', pages))
        elif choice == 'unpte':
            if not ptes[mm]:
                continue
            pages = set(draw(st.lists(st.sampled_from(sorted(ptes[mm])), min_size=1, max_size=6,
                                      unique=True)))
            ptes[mm] -= pages
            history.append((mm, 'unpte', pages))
        elif choice == 'pmd':
            if pmds[mm]:
                continue
            pmds[mm] = 1
            history.append((mm, 'pmd'))
        else:
            if not pmds[mm]:
                continue
            pmds[mm] = 0
            history.append((mm, 'unpmd'))
    return order, history, ptes, pmds


def _final(ptes, pmds):
    """The mappings a capture would see: per MM its pages and PMDs."""
    return {mm: (p, pmds[mm]) for mm, p in ptes.items() if p or pmds[mm]}


def _canonical(final):
    """The importer's history: each MM maps everything at once, in order."""
    h = []
    for mm, (pages, pmd) in sorted(final.items()):
        if pages:
            h.append((mm, 'pte', pages))
        if pmd:
            h.append((mm, 'pmd'))
    return h


def _worst(final):
    """A history ending in the same mappings with the shared bit set: two
    other MMs (100, 101) map first, the survivor maps untracked, they go."""
    (mm, (pages, pmd)), = final.items()
    h = [(100, 'pte', {0}), (101, 'pte', {0})] + _canonical(final)
    return h + [(100, 'unpte', {0}), (101, 'unpte', {0})]


@settings(max_examples=200, deadline=None)
@given(histories())
def test_rule_against_the_slot_algorithm(h):
    order, history, ptes, pmds = h
    mem, head = _run(order, history)
    final = _final(ptes, pmds)
    if not final:
        assert not mem.maybe_shared[head]            # unmapped: S clear (semantics 3.4)
        return
    lm = int(mem.large_mapcount[head])
    assert lm == sum(len(p) + d for p, d in final.values())
    first = len(final) == 1 and 0 in next(iter(final.values()))[0]
    cls = classify(mem, [head], [len(final)], [first])[0]
    shared = bool(folio_maybe_mapped_shared(mem, [head])[0])
    if cls == 'shared':
        assert shared
    elif cls == 'single':
        assert not shared
    else:
        assert len(final) == 1 and lm >= 2
        best, hb = _run(order, _canonical(final))
        assert not folio_maybe_mapped_shared(best, [hb])[0]
        worst, hw = _run(order, _worst(final))
        assert worst.large_mapcount[hw] == lm
        assert folio_maybe_mapped_shared(worst, [hw])[0]


def test_three_mappers_leave_an_untracked_survivor_shared():
    """semantics.md 0.4 / S6: B and C hold the slots, A maps untracked; B and
    C leave; A alone still reads "maybe shared"."""
    final = {3: ({1, 2}, 0)}
    mem, head = _run(4, [(1, 'pte', {0}), (2, 'pte', {0}), (3, 'pte', {1, 2}),
                         (1, 'unpte', {0}), (2, 'unpte', {0})])
    assert folio_maybe_mapped_shared(mem, [head])[0]
    assert classify(mem, [head], [1], [False])[0] == 'ambiguous'
    del final


# --- rule 3 (AnonExclusive first page) through the whole core ---------------------------

SCENARIO_HEAD = """format: 1
name: mmid-rule
kernel: {memory: 64M, thp: {enabled: madvise, sizes: {16K: always, 64K: always, 2M: madvise}}}
processes: [{pid: 100}]
steps:
- mmap: {pid: 100, name: a, size: 256K, align: 64K}
- mmap: {pid: 100, name: h, size: 2M, align: 2M}
- madvise: {pid: 100, vma: h, advice: hugepage}
- write: {pid: 100, vma: a}
- write: {pid: 100, vma: h}
"""


@st.composite
def anon_histories(draw):
    steps = []
    alive = [100]
    nxt = 101
    for _ in range(draw(st.integers(1, 14))):
        op = draw(st.sampled_from(['fork', 'fork', 'fork', 'exit', 'exit', 'write', 'munmap']))
        pid = draw(st.sampled_from(alive))
        vma = draw(st.sampled_from(['a', 'h']))
        size = 256 if vma == 'a' else 2048
        off = draw(st.integers(0, size // 4 - 1)) * 4
        ln = draw(st.sampled_from([4, 16, 64]))
        ln = min(ln, size - off)
        if op == 'fork' and len(alive) < 5:
            steps.append('- fork: {pid: %d, child: %d}' % (pid, nxt))
            alive.append(nxt)
            nxt += 1
        elif op == 'exit' and len(alive) > 1:
            steps.append('- exit: {pid: %d}' % pid)
            alive.remove(pid)
        elif op in ('write', 'munmap'):
            steps.append('- %s: {pid: %d, vma: %s, offset: %dK, length: %dK, expect: any}'
                         % (op, pid, vma, off, ln))
    return steps


def _mappers(k):
    """Per large folio head: {mm_id: first page mapped?}."""
    out = {}
    for p in k.processes.values():
        for v in p.mm.vmas:
            pf = v.pfn[v.pfn >= 0]
            heads = k.mem.head[pf]
            large = k.mem.order[heads] > 0
            for h, f in zip(heads[large], pf[large]):
                d = out.setdefault(int(h), {})
                d[p.mm.mm_id] = d.get(p.mm.mm_id, False) or int(f) == int(h)
    return out


@settings(max_examples=30, deadline=None)
@given(anon_histories())
def test_anon_rules_through_fork_cow_and_exit(steps):
    text = SCENARIO_HEAD + ''.join(s.replace(', expect: any', '') + '\n' for s in steps)
    try:
        sc = parse_scenario_text(text, '<h>')
    except Exception:
        return                                   # a step the loader refuses (range gone)
    k = Kernel(CONFIG, sc)
    try:
        k.run(sc.steps)
    except StepError:
        return
    maps = _mappers(k)
    heads = np.array(sorted(maps), dtype=np.int64)
    if len(heads) == 0:
        return
    heads = heads[(k.mem.flags[heads] & FL_ANON) != 0]
    if len(heads) == 0:
        return
    nr = [len(maps[int(h)]) for h in heads]
    first = [len(maps[int(h)]) == 1 and next(iter(maps[int(h)].values())) for h in heads]
    cls = classify(k.mem, heads, nr, first)
    shared = folio_maybe_mapped_shared(k.mem, heads)
    assert (shared[cls == 'shared']).all()
    assert not (shared[cls == 'single']).any()


def _classes(text):
    sc = parse_scenario_text(SCENARIO_HEAD + text, '<t>')
    k = Kernel(CONFIG, sc)
    k.run(sc.steps)
    maps = _mappers(k)
    out = {}
    for pid, p in k.processes.items():
        heads = sorted({int(h) for v in p.mm.vmas if v.name == 'a'
                        for h in k.mem.head[v.pfn[v.pfn >= 0]]})
        heads = np.array(heads, dtype=np.int64)
        nr = [len(maps[int(h)]) for h in heads]
        first = [len(maps[int(h)]) == 1 and next(iter(maps[int(h)].values())) for h in heads]
        out[pid] = (list(classify(k.mem, heads, nr, first)),
                    list(folio_maybe_mapped_shared(k.mem, heads)))
    return out


def test_third_child_left_alone_is_ambiguous_and_shared():
    """P forks C1 and C2 (untracked, both slots taken), P and C1 exit: C2's
    64K folios stay "maybe shared" (semantics.md S6)."""
    out = _classes('- fork: {pid: 100, child: 101}\n- fork: {pid: 100, child: 102}\n'
                   '- exit: {pid: 100}\n- exit: {pid: 101}\n')
    cls, shared = out[102]
    assert cls and set(cls) == {'ambiguous'} and all(shared)


def test_reuse_after_the_child_left_makes_the_folio_exclusive():
    """P forks C, C exits: P's pages lost AnonExclusive at fork, so the rule
    cannot tell (ambiguous, here S = 0); P writes page 0 of the first folio:
    CoW reuse (wp_can_reuse_anon_folio(), S = 0) marks it AnonExclusive:
    determined exclusive."""
    out = _classes('- fork: {pid: 100, child: 101}\n- exit: {pid: 101}\n'
                   '- write: {pid: 100, vma: a, offset: 0, length: 4K}\n')
    cls, shared = out[100]
    assert cls[0] == 'single' and not shared[0]
    assert set(cls[1:]) == {'ambiguous'} and not any(shared[1:])

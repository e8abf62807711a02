"""The MM-owner-tracking slot algorithm (semantics.md section 4) on a bare
PhysMem + Rmap, with no process around: folios come from mem.alloc() and
the tests pick the MM IDs.

States are written as in the table of semantics.md 4.5: `[slot0 | slot1] S`
with slots `MM:count` or `-`.  The slot algorithm does not depend on the
mapcount config (section 0, item 5), so every test runs on all four
configs; the 32-bit ones differ only by the per-MM mapcount overflow of
state 12 (section 11).
"""
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings, strategies as hst, HealthCheck

from mmcore.mapcount import folio_maybe_mapped_shared, policy_for
from mmcore.memory import PhysMem
from mmcore.rmap import Rmap

from helpers_core import (ALL_CONFIGS, CONFIGS, CONFIGS_32, BareRmap, config_id, folio_invariants,
                          folio_state, state)

A, B, C, D = 5, 7, 9, 11          # MM IDs


@pytest.fixture(params=ALL_CONFIGS, ids=config_id)
def b(request):
    return BareRmap(request.param)


def shared(b, head):
    return bool(folio_maybe_mapped_shared(b.mem, [head])[0])


def check(b, head, expected):
    got = folio_state(b.mem, head)
    assert got == expected, 'got %s, expected %s' % (got, expected)
    assert folio_invariants(b.mem, head, b.config.page_mapcount) == []


def add(b, mm, pfns):
    b.rmap.add_ptes(mm, np.asarray(pfns, dtype=np.int64))


def sub(b, mm, pfns):
    b.rmap.remove_ptes(mm, np.asarray(pfns, dtype=np.int64))


# --- 4.5, one test per row --------------------------------------------------------------

def test_row1_first_mapping_add(b):
    """4.5 row 1 via ADD (4.2 step 4): slot 0 is free and LM == n, so S
    stays clear."""
    h, p = b.folio(4)
    check(b, h, state(0, None, None, 0))
    add(b, A, p[:5])
    check(b, h, state(5, (A, 5), None, 0))


@pytest.mark.parametrize('pmd', [False, True], ids=['ptes', 'pmd'])
def test_row1_first_mapping_set(b, pmd):
    """4.5 row 1 via SET (4.1, folio_add_new_anon_rmap): LM := n with
    n = N for PTEs and 1 for a PMD (E = 1); slot 0 := (MM, n)."""
    order = 9 if pmd else 4
    h, p = b.folio(order)
    b.rmap.add_new_anon(A, [h], pmd)
    n = 1 if pmd else 1 << order
    check(b, h, state(n, (A, n), None, 0, e=1 if pmd else 0))
    assert b.mem.anon_exclusive[p].all()


def test_row2_same_mm_maps_more(b):
    """4.5 row 2 (4.2 step 2): the slot's count grows, S stays clear."""
    h, p = b.folio(4)
    add(b, A, p[:4])
    add(b, A, p[4:10])
    check(b, h, state(10, (A, 10), None, 0))


def test_row3_second_mm_takes_slot1(b):
    """4.5 row 3 (4.2 step 5): slot 1, S set."""
    h, p = b.folio(4)
    add(b, A, p)
    add(b, B, p[:5])
    check(b, h, state(21, (A, 16), (B, 5), 1))


def test_row4_third_mm_untracked(b):
    """4.5 row 4 (4.2 step 6): both slots taken, only LM grows."""
    h, p = b.folio(4)
    add(b, A, p)
    add(b, B, p[:5])
    add(b, C, p[:3])
    check(b, h, state(24, (A, 16), (B, 5), 1))


def test_row5_slot_freed_clears_s(b):
    """4.5 row 5, first case: B unmaps all; a == remaining LM, S cleared."""
    h, p = b.folio(4)
    add(b, A, p)
    add(b, B, p[:5])
    sub(b, B, p[:5])
    check(b, h, state(16, (A, 16), None, 0))
    assert not shared(b, h)


def test_row5_slot_freed_untracked_left(b):
    """4.5 row 5, second case: untracked mappings remain, S stays set."""
    h, p = b.folio(4)
    add(b, A, p)
    add(b, B, p[:5])
    add(b, C, p[:3])
    sub(b, B, p[:5])
    check(b, h, state(19, (A, 16), None, 1))


def test_row6_partial_unmap_no_reevaluation(b):
    """4.5 row 6 (4.3 step 2): the slot keeps a count >= 1, stop there."""
    h, p = b.folio(4)
    add(b, A, p)
    add(b, B, p[:5])
    sub(b, B, p[:2])
    check(b, h, state(19, (A, 16), (B, 3), 1))


def test_row7_untracked_unmap_clears_s(b):
    """4.5 row 7 (4.3 step 4 for an untracked MM): C's unmap finds
    c_0 == LM and clears S."""
    h, p = b.folio(4)
    add(b, A, p)
    add(b, B, p[:5])
    add(b, C, p[:3])
    sub(b, B, p[:5])
    check(b, h, state(19, (A, 16), None, 1))
    sub(b, C, p[:3])
    check(b, h, state(16, (A, 16), None, 0))


def test_row8_slot0_reused_first(b):
    """4.5 row 8 (4.2 step 4): with slot 0 free and slot 1 in use, a new
    MM takes slot 0 and sets S."""
    h, p = b.folio(4)
    add(b, A, p)
    add(b, B, p[:4])
    sub(b, A, p)
    check(b, h, state(4, None, (B, 4), 0))
    add(b, D, p[8:10])
    check(b, h, state(6, (D, 2), (B, 4), 1))


def _false_positive(b):
    """Example B's end state: [- | -] 1 with only C's 8 untracked PTEs
    (pages 0-7) left."""
    h, p = b.folio(4)
    add(b, A, p)
    add(b, B, p)
    add(b, C, p[:8])
    sub(b, A, p)
    check(b, h, state(24, None, (B, 16), 1))
    sub(b, B, p)
    check(b, h, state(8, None, None, 1))
    return h, p


def test_row9_untracked_mm_takes_free_slot(b):
    """4.5 row 9: the untracked MM maps n more and takes slot 0 counting
    only the new n; S stays set since LM != n."""
    h, p = _false_positive(b)
    add(b, C, p[8:12])
    check(b, h, state(12, (C, 4), None, 1))


def test_row10_negative_count_frees_slot(b):
    """4.5 row 10: X unmaps more than it has counted (its old untracked
    mappings): the count goes negative, the slot is freed, S stays while
    anything is mapped."""
    h, p = _false_positive(b)
    add(b, C, p[8:12])
    sub(b, C, p[:8])
    check(b, h, state(4, None, None, 1))
    assert shared(b, h)


def test_row10_negative_count_to_zero(b):
    """4.5 row 10, last case: LM became 0, so S is cleared."""
    h, p = _false_positive(b)
    add(b, C, p[8:12])
    sub(b, C, p[:12])
    check(b, h, state(0, None, None, 0))


@pytest.mark.parametrize('start', ['exclusive', 'two-slots', 'false-positive', 'pmd'])
def test_row11_last_mapping_removed(b, start):
    """4.5 row 11: whatever the state, removing the last mapping leaves
    [- | -] 0 (4.3: free slots count as 0 == LM)."""
    if start == 'false-positive':
        h, p = _false_positive(b)
        sub(b, C, p[:8])
    elif start == 'pmd':
        h, p = b.folio(9)
        b.rmap.add_new_anon(A, [h], True)
        b.rmap.add_pmd(B, [h])
        b.rmap.add_pmd(C, [h])
        for mm in (B, A, C):
            b.rmap.remove_pmd(mm, [h])
    else:
        h, p = b.folio(4)
        add(b, A, p)
        if start == 'two-slots':
            add(b, B, p[:3])
            sub(b, A, p)
            sub(b, B, p[:3])
        else:
            sub(b, A, p)
    check(b, h, state(0, None, None, 0))
    assert not shared(b, h)


def test_row12_mm_id_mapcount_limit():
    """Section 11: the per-MM mapcount is signed 32-bit on 64-bit and
    signed 16-bit on 32-bit (stored value = logical - 1)."""
    for c in CONFIGS:
        assert c.mm_id_mapcount_max == 1 << 31
        assert c.mm_id_bits == 31 and c.mm_id_max == (1 << 31) - 1
    for c in CONFIGS_32:
        assert c.mm_id_mapcount_max == 32768
        assert c.mm_id_bits == 15 and c.mm_id_max == 32767


def _map_512_times(b, mm, p, times):
    for _ in range(times):
        add(b, mm, p)


@pytest.mark.parametrize('config', ALL_CONFIGS, ids=config_id)
def test_row12_32bit_overflow(config):
    """4.5 row 12 (4.2 step 2, section 11): an order-9 folio mapped 64
    times by one MM holds 32768 mappings in slot 0 (stored 32767, still
    valid); one more overflows the 16-bit count on 32-bit: slot 0 freed,
    S set, so the folio is 'maybe shared' although only A maps it.
    64-bit kernels simply count on."""
    b = BareRmap(config)
    h, p = b.folio(9)
    _map_512_times(b, A, p, 64)
    check(b, h, state(32768, (A, 32768), None, 0))
    add(b, A, p[:1])
    if config.bits == 32:
        check(b, h, state(32769, None, None, 1))
        assert shared(b, h)
    else:
        check(b, h, state(32769, (A, 32769), None, 0))
        assert not shared(b, h)
    # A, now untracked on 32-bit, unmaps all but 512 mappings: the check
    # of 4.3 step 4 finds no slot owning LM, S stays (semantics S19)
    sub(b, A, p[:1])
    for _ in range(63):
        sub(b, A, p)
    if config.bits == 32:
        check(b, h, state(512, None, None, 1))
        assert shared(b, h)
    else:
        check(b, h, state(512, (A, 512), None, 0))
    for _ in range(1):
        sub(b, A, p)
    check(b, h, state(0, None, None, 0))


@pytest.mark.parametrize('config', CONFIGS_32, ids=config_id)
def test_row12_32bit_overflow_slot1(config):
    """4.2 step 3: the overflow rule applies to slot 1 the same way."""
    b = BareRmap(config)
    h, p = b.folio(9)
    add(b, A, p[:1])
    _map_512_times(b, B, p, 64)
    check(b, h, state(32769, (A, 1), (B, 32768), 1))
    add(b, B, p[:1])
    check(b, h, state(32770, (A, 1), None, 1))


def test_row13_single_mapping_exception(b):
    """4.5 row 13 (5.1): S = 1 with LM = 1 is reported as not shared."""
    h, p = _false_positive(b)
    sub(b, C, p[1:8])
    check(b, h, state(1, None, None, 1))
    assert not shared(b, h)


# --- 4.6 worked examples ------------------------------------------------------------------

def test_example_a_fork_short_lived_child(b):
    """4.6 example A: fork, child CoW-copies page 0, child exits: the
    parent is certainly exclusive again."""
    P, Cc = A, B
    h, p = b.folio(4)
    b.rmap.add_new_anon(P, [h], False)
    check(b, h, state(16, (P, 16), None, 0))
    add(b, Cc, p)                       # fork: folio_try_dup_anon_rmap_ptes
    check(b, h, state(32, (P, 16), (Cc, 16), 1))
    sub(b, Cc, p[:1])                   # wp_page_copy
    check(b, h, state(31, (P, 16), (Cc, 15), 1))
    sub(b, Cc, p[1:])                   # exit
    check(b, h, state(16, (P, 16), None, 0))
    assert not shared(b, h)


@pytest.mark.parametrize('order_of_exits', ['P-then-C1', 'C1-then-P'])
def test_example_b_three_mms_false_positive(b, order_of_exits):
    """4.6 example B: the survivor C2 never had a slot; after P and C1
    are gone the folio stays 'maybe shared' with LM 16."""
    P, C1, C2 = A, B, C
    h, p = b.folio(4)
    b.rmap.add_new_anon(P, [h], False)
    add(b, C1, p)
    add(b, C2, p)
    check(b, h, state(48, (P, 16), (C1, 16), 1))
    if order_of_exits == 'P-then-C1':
        sub(b, P, p)
        check(b, h, state(32, None, (C1, 16), 1))
        sub(b, C1, p)
    else:
        sub(b, C1, p)
        check(b, h, state(32, (P, 16), None, 1))
        sub(b, P, p)
    check(b, h, state(16, None, None, 1))
    assert shared(b, h)


@pytest.mark.parametrize('first', ['C1', 'C2'])
def test_example_b_variant_owner_survives(b, first):
    """4.6 example B, last variant: C1 and C2 exit while P stays; the last
    SUB finds c_0 == LM and clears S."""
    P, C1, C2 = A, B, C
    h, p = b.folio(4)
    b.rmap.add_new_anon(P, [h], False)
    add(b, C1, p)
    add(b, C2, p)
    for mm in ((C1, C2) if first == 'C1' else (C2, C1)):
        sub(b, mm, p)
    check(b, h, state(16, (P, 16), None, 0))
    assert not shared(b, h)


def test_example_c_single_mapping(b):
    """4.6 example C: continuing B, C2 unmaps 15 of its 16 pages: LM 1,
    S still set, folio_maybe_mapped_shared() false."""
    P, C1, C2 = A, B, C
    h, p = b.folio(4)
    b.rmap.add_new_anon(P, [h], False)
    add(b, C1, p)
    add(b, C2, p)
    sub(b, P, p)
    sub(b, C1, p)
    sub(b, C2, p[1:])
    check(b, h, state(1, None, None, 1))
    assert not shared(b, h)
    assert b.mem.maybe_shared[h]


def test_example_d_pmd_split(b):
    """4.6 example D: PMD THP, fork, parent's write splits its PMD
    (ADD(P, 512) then SUB(P, 1) with E -= 1) and copies one page."""
    P, Cc = A, B
    h, p = b.folio(9)
    b.rmap.add_new_anon(P, [h], True)
    check(b, h, state(1, (P, 1), None, 0, e=1))
    b.rmap.add_pmd(Cc, [h])
    check(b, h, state(2, (P, 1), (Cc, 1), 1, e=2))
    add(b, P, p)
    check(b, h, state(514, (P, 513), (Cc, 1), 1, e=2))
    b.rmap.remove_pmd(P, [h])
    check(b, h, state(513, (P, 512), (Cc, 1), 1, e=1))
    sub(b, P, p[7:8])
    check(b, h, state(512, (P, 511), (Cc, 1), 1, e=1))
    if b.config.page_mapcount:
        pm = b.mem.page_mapcount[p]
        assert pm[7] == 0 and (np.delete(pm, 7) == 1).all()
        assert b.mem.nr_pages_mapped[h] == 511


def test_batch_of_folios_each_counted_once(b):
    """One add/remove call over pages of several folios does one ADD/SUB
    per folio with that folio's number of pages (4.4: batched per folio)."""
    h1, p1 = b.folio(4)
    h2, p2 = b.folio(4)
    add(b, A, np.concatenate([p1[:3], p2]))
    check(b, h1, state(3, (A, 3), None, 0))
    check(b, h2, state(16, (A, 16), None, 0))
    add(b, B, np.concatenate([p1[3:4], p2[:2]]))
    check(b, h1, state(4, (A, 3), (B, 1), 1))
    check(b, h2, state(18, (A, 16), (B, 2), 1))
    sub(b, B, np.concatenate([p2[:2], p1[3:4]]))
    check(b, h1, state(3, (A, 3), None, 0))
    check(b, h2, state(16, (A, 16), None, 0))


# --- the algorithm against a scalar transcription of 4.2/4.3 -------------------------------

class SlotModel:
    """Sections 4.2 and 4.3 written out for one folio, plain integers."""

    def __init__(self, limit):
        self.limit = limit
        self.lm = 0
        self.ids = [0, 0]
        self.c = [0, 0]
        self.s = False

    def add(self, mm, n):
        self.lm += n
        for k in (0, 1):
            if self.ids[k] == mm:
                self.c[k] += n
                if self.c[k] > self.limit:
                    self.ids[k], self.c[k], self.s = 0, 0, True
                return
        if self.ids[0] == 0:
            self.ids[0], self.c[0] = mm, n
            if self.lm != n:
                self.s = True
        elif self.ids[1] == 0:
            self.ids[1], self.c[1], self.s = mm, n, True

    def sub(self, mm, n):
        self.lm -= n
        for k in (0, 1):
            if self.ids[k] == mm:
                self.c[k] -= n
                if self.c[k] >= 1:
                    return
                self.ids[k], self.c[k] = 0, 0
                break
        if self.c[0] == self.lm or self.c[1] == self.lm:
            self.s = False

    def state(self, e):
        slots = tuple((i, c) if i else None for i, c in zip(self.ids, self.c))
        return state(self.lm, slots[0], slots[1], self.s, e=e)


NR_MMS = 4
POOL = 48        # folio 0 and 1: 16 pages each (order 4); pages 0-15 of folio 2 (order 9)

op = hst.tuples(hst.sampled_from(['map', 'unmap', 'map', 'unmap', 'exit', 'pmd']),
                hst.integers(1, NR_MMS),
                hst.lists(hst.integers(0, POOL - 1), min_size=1, max_size=20, unique=True))


@pytest.mark.parametrize('page_mapcount', [True, False], ids=['per-page', 'none'])
@pytest.mark.parametrize('limit', [1 << 31, 24], ids=['no-overflow', 'tiny-counter'])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=hst.lists(op, min_size=1, max_size=40))
def test_slots_follow_sections_4_2_and_4_3(page_mapcount, limit, ops):
    """Random map/unmap sequences of up to four MMs over three folios
    (several PTEs of one page by one MM allowed, as file pages through two
    VMAs; PMD mappings of the order-9 folio; 'exit' unmaps every PTE of
    the MM) give the state the scalar
    transcription of 4.2/4.3 gives, keep the invariants of 3.4 and never
    call a folio exclusive that two MMs map (5.2).  'tiny-counter' stands
    for a per-MM counter that overflows at 24 mappings (the 32-bit rule
    of 4.2 step 2 at a testable scale)."""
    config = SimpleNamespace(page_mapcount=page_mapcount, mm_id_mapcount_max=limit)
    mem = PhysMem(16 << 20)
    rmap = Rmap(mem, config, policy_for(SimpleNamespace(page_mapcount=page_mapcount)))
    heads = [int(mem.alloc(4, 1)[0]), int(mem.alloc(4, 1)[0]), int(mem.alloc(9, 1)[0])]
    pool = np.concatenate([heads[0] + np.arange(16), heads[1] + np.arange(16),
                           heads[2] + np.arange(16)])
    model = {h: SlotModel(limit) for h in heads}
    ptes = np.zeros((NR_MMS + 1, POOL), dtype=np.int64)     # PTEs per MM and page
    pmds = np.zeros(NR_MMS + 1, dtype=np.int64)             # PMDs of folio 2 per MM
    for kind, mm, pages in ops:
        pages = np.array(pages)
        if kind == 'pmd':
            if pmds[mm] and pages[0] % 2:
                rmap.remove_pmd(mm, [heads[2]])
                model[heads[2]].sub(mm, 1)
                pmds[mm] -= 1
            else:
                rmap.add_pmd(mm, [heads[2]])
                model[heads[2]].add(mm, 1)
                pmds[mm] += 1
        elif kind == 'map':
            rmap.add_ptes(mm, pool[pages])
            ptes[mm, pages] += 1
            for f, h in enumerate(heads):
                n = int(np.count_nonzero(pages // 16 == f))
                if n:
                    model[h].add(mm, n)
        else:
            if kind == 'exit':
                pages = np.arange(POOL)
            pages = pages[ptes[mm, pages] > 0]
            if len(pages) == 0:
                continue
            rmap.remove_ptes(mm, pool[pages])
            ptes[mm, pages] -= 1
            for f, h in enumerate(heads):
                n = int(np.count_nonzero(pages // 16 == f))
                if n:
                    model[h].sub(mm, n)
        for f, h in enumerate(heads):
            e = int(pmds.sum()) if f == 2 else 0
            assert folio_state(mem, h) == model[h].state(e), (kind, mm, list(pages))
            assert folio_invariants(mem, h, page_mapcount) == []
            mappers = {m for m in range(1, NR_MMS + 1)
                       if ptes[m, f * 16:(f + 1) * 16].any() or (f == 2 and pmds[m])}
            if len(mappers) > 1:
                assert folio_maybe_mapped_shared(mem, [h])[0]
            if page_mapcount:
                assert (mem.page_mapcount[pool[f * 16:(f + 1) * 16]] ==
                        ptes[:, f * 16:(f + 1) * 16].sum(axis=0)).all()

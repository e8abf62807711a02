"""What the two mapcount configs answer (semantics.md sections 5, 7, 8):
folio_maybe_mapped_shared(), folio_average_page_mapcount(), the per-page
read-outs behind kpagecount / pagemap bit 56 / smaps / numa_maps, the
mapped statistics (7.4) and deferred-split detection (7.5).

States are built on a bare PhysMem + Rmap (helpers_core.BareRmap) with
MM IDs chosen by the test.
"""
import numpy as np
import pytest

from mmcore.config import PAGE_MAPCOUNT, NO_PAGE_MAPCOUNT
from mmcore.mapcount import (NoPageMapcount, PageMapcount, folio_average_page_mapcount,
                             folio_maybe_mapped_shared, policy_for)
from mmcore.memory import FL_PARTIALLY_MAPPED

from helpers_core import ALL_CONFIGS, BareRmap, config_id, folio_state

A, B, C = 5, 7, 9


@pytest.fixture(params=ALL_CONFIGS, ids=config_id)
def b(request):
    return BareRmap(request.param)


def add(b, mm, pfns):
    b.rmap.add_ptes(mm, np.asarray(pfns, dtype=np.int64))


def sub(b, mm, pfns):
    b.rmap.remove_ptes(mm, np.asarray(pfns, dtype=np.int64))


def shared(b, head):
    return bool(folio_maybe_mapped_shared(b.mem, [head])[0])


def test_policy_per_config():
    assert isinstance(policy_for(PAGE_MAPCOUNT), PageMapcount)
    assert isinstance(policy_for(NO_PAGE_MAPCOUNT), NoPageMapcount)


# --- 5.1 folio_maybe_mapped_shared ---------------------------------------------------------

def test_shared_small_folio_uses_raw_mapcount(b):
    """5.1: small folios: mapcount > 1, even when one MM maps the page
    twice (5.2 (c))."""
    h, p = b.folio(0)
    assert not shared(b, h)
    add(b, A, p)
    assert not shared(b, h)
    add(b, A, p)
    assert shared(b, h)
    sub(b, A, p)
    add(b, B, p)
    assert shared(b, h)


def test_shared_large_folio(b):
    """5.1: large folios: false if LM <= 1, else S."""
    h, p = b.folio(4)
    assert not shared(b, h)                 # unmapped
    add(b, A, p)
    assert not shared(b, h)                 # [A:16 | -] 0
    add(b, A, p)
    assert not shared(b, h)                 # twice by one MM: exclusive (5.2 (c))
    add(b, B, p[:1])
    assert shared(b, h)                     # [A:32 | B:1] 1
    sub(b, B, p[:1])
    assert not shared(b, h)


def test_shared_single_mapping_exception(b):
    """5.1: LM <= 1 wins over a set S (4.5 row 13)."""
    h, p = b.folio(4)
    add(b, A, p)
    add(b, B, p)
    add(b, C, p)
    sub(b, A, p)
    sub(b, B, p)
    assert folio_state(b.mem, h).shared and shared(b, h)     # the false positive
    sub(b, C, p[1:])
    assert b.mem.maybe_shared[h] and b.mem.large_mapcount[h] == 1
    assert not shared(b, h)


def test_shared_vectorised_over_mixed_folios(b):
    small, ps = b.folio(0)
    large, pl = b.folio(4)
    add(b, A, ps)
    add(b, B, ps)
    add(b, A, pl)
    got = folio_maybe_mapped_shared(b.mem, [small, large])
    assert list(got) == [True, False]


# --- 7.3 folio_average_page_mapcount ---------------------------------------------------------

def _table(rows):
    """Expected average per M from the (first M, last M, average) rows of
    the lookup tables of semantics.md 7.3 (E = 0)."""
    out = {}
    for lo, hi, avg in rows:
        for m in range(lo, hi + 1):
            out[m] = avg
    return out


TABLE_16 = _table([(0, 0, 0), (1, 23, 1), (24, 39, 2), (40, 55, 3), (56, 71, 4)])
TABLE_512 = _table([(0, 0, 0), (1, 767, 1), (768, 1279, 2), (1280, 1791, 3)])


@pytest.mark.parametrize('order,table', [(4, TABLE_16), (9, TABLE_512)], ids=['N16', 'N512'])
def test_average_lookup_tables(b, order, table):
    """7.3 lookup tables (E = 0): (M + N/2) >> order, at least 1."""
    h, _ = b.folio(order)
    for m, avg in table.items():
        b.mem.large_mapcount[h] = m
        b.mem.entire_mapcount[h] = 0
        assert folio_average_page_mapcount(b.mem, [h])[0] == avg, m


def test_average_with_pmd_mappings(b):
    """7.3: E=1 alone -> 1; E=1 + 512 PTEs of another MM -> 2; E=1 + 511
    PTEs -> 2; E=2 -> 2 (built through the rmap)."""
    h, p = b.folio(9)
    avg = lambda: int(folio_average_page_mapcount(b.mem, [h])[0])
    b.rmap.add_new_anon(A, [h], True)
    assert avg() == 1
    add(b, B, p[:511])
    assert avg() == 2
    add(b, B, p[511:])
    assert avg() == 2
    sub(b, B, p)
    b.rmap.add_pmd(C, [h])
    assert avg() == 2
    b.rmap.remove_pmd(C, [h])
    b.rmap.remove_pmd(A, [h])
    assert avg() == 0


def test_average_small_folio_is_the_mapcount(b):
    """7.3: small folio: _mapcount + 1."""
    h, p = b.folio(0)
    assert folio_average_page_mapcount(b.mem, [h])[0] == 0
    add(b, A, p)
    add(b, B, p)
    assert folio_average_page_mapcount(b.mem, [h])[0] == 2


# --- 8.1/8.3/8.4/8.6: per-page read-outs of the two configs --------------------------------------

def readouts(b, pfns):
    pol = b.policy
    m, private = pol.smaps_mapcount(b.mem, pfns)
    return {'kpc': list(pol.kpagecount(b.mem, pfns)),
            'b56': list(pol.pagemap_exclusive(b.mem, pfns)),
            'm': list(m), 'private': list(private),
            'numa': list(pol.numa_mapcount(b.mem, pfns))}


def test_readouts_half_mapped(b):
    """8.1 example: N=16, P maps pages 0-7 only.  PAGE: 1 for 0-7, 0 for
    8-15; NO: (8+8)>>4 = 1 for all 16."""
    h, p = b.folio(4)
    add(b, A, p[:8])
    r = readouts(b, p)
    if b.config.page_mapcount:
        assert r['kpc'] == [1] * 8 + [0] * 8
    else:
        assert r['kpc'] == [1] * 16
    r = readouts(b, p[:8])
    assert r['b56'] == [True] * 8 and r['private'] == [True] * 8 and r['m'] == [1] * 8


def test_readouts_two_mms_different_pages(b):
    """S15 state: P maps page 0, Q maps page 1, [P:1 | Q:1] 1.  PAGE:
    precise 1 -> kpc 1, b56 1, private; NO: average 1 for all 16 pages
    (clamped), b56 0 and shared because S is set."""
    h, p = b.folio(4)
    add(b, A, p[:1])
    add(b, B, p[1:2])
    r = readouts(b, p)
    if b.config.page_mapcount:
        assert r['kpc'] == [1, 1] + [0] * 14
        assert r['b56'][:2] == [True, True] and r['private'][:2] == [True, True]
    else:
        assert r['kpc'] == [1] * 16
        assert r['b56'] == [False] * 16 and r['private'] == [False] * 16
    assert r['numa'][:2] == [1, 1]


def test_readouts_mapped_twice_by_one_mm(b):
    """S14 state: one MM maps every page twice, [P:32 | -] 0.  PAGE:
    precise 2 -> b56 0, shared; NO: one MM -> b56 1, private.  kpc and
    numa mapmax are 2 in both."""
    h, p = b.folio(4)
    add(b, A, p)
    add(b, A, p)
    r = readouts(b, p)
    assert r['kpc'] == [2] * 16 and r['numa'] == [2] * 16 and r['m'] == [2] * 16
    exclusive = not b.config.page_mapcount
    assert r['b56'] == [exclusive] * 16 and r['private'] == [exclusive] * 16


def test_readouts_pmd_plus_pte(b):
    """A PMD mapping (E=1) by A and one PTE of page 5 by B.  PAGE: prec =
    pm + E -> page 5: 2, others 1.  NO: M = 1 -> (1+256)>>9 = 0, + E -> 1
    for every page; S set -> not exclusive."""
    h, p = b.folio(9)
    b.rmap.add_new_anon(A, [h], True)
    add(b, B, p[5:6])
    r = readouts(b, p)
    if b.config.page_mapcount:
        assert r['kpc'][5] == 2 and r['kpc'][:5] == [1] * 5 and r['kpc'][6:] == [1] * 506
        assert not r['b56'][5] and all(r['b56'][:5])
    else:
        assert r['kpc'] == [1] * 512
        assert not any(r['b56'])


# --- 7.4 mapped statistics -----------------------------------------------------------------------

def mapped(b, head):
    return int(b.rmap.mapped_pages([head])[0])


def test_mapped_small_folio(b):
    """7.4: a small folio counts 1 from its first mapping to its last."""
    h, p = b.folio(0)
    add(b, A, p)
    add(b, B, p)
    assert mapped(b, h) == 1
    sub(b, A, p)
    assert mapped(b, h) == 1
    sub(b, B, p)
    assert mapped(b, h) == 0


@pytest.mark.parametrize('pmd', [False, True], ids=['mthp', 'pmd'])
def test_mapped_new_anon(b, pmd):
    """7.4: SET counts +N in both configs."""
    h, p = b.folio(9 if pmd else 4)
    b.rmap.add_new_anon(A, [h], pmd)
    assert mapped(b, h) == len(p)


def test_mapped_ptes(b):
    """7.4: ADD/SUB of PTEs.  PAGE: pages whose pm went 0 -> 1 (1 -> 0);
    NO: +N when LM was 0, -N when LM becomes 0, nothing in between."""
    h, p = b.folio(4)
    page = b.config.page_mapcount
    add(b, A, p[:3])
    assert mapped(b, h) == (3 if page else 16)
    add(b, B, p[2:6])
    assert mapped(b, h) == (6 if page else 16)
    sub(b, A, p[:3])
    assert mapped(b, h) == (4 if page else 16)
    sub(b, B, p[2:5])
    assert mapped(b, h) == (1 if page else 16)
    sub(b, B, p[5:6])
    assert mapped(b, h) == 0


def test_mapped_pmd_over_ptes(b):
    """7.4: first PMD mapping: PAGE + (N - pages already PTE-mapped), so
    N in total; further PMDs and PTEs under a PMD add nothing; last PMD
    removed: - (N - pages still PTE-mapped).  NO: N while LM > 0."""
    h, p = b.folio(9)
    page = b.config.page_mapcount
    add(b, B, p[:3])
    assert mapped(b, h) == (3 if page else 512)
    b.rmap.add_pmd(A, [h])
    assert mapped(b, h) == 512
    b.rmap.add_pmd(C, [h])
    add(b, B, p[3:10])
    assert mapped(b, h) == 512
    b.rmap.remove_pmd(C, [h])
    assert mapped(b, h) == 512
    b.rmap.remove_pmd(A, [h])
    assert mapped(b, h) == (10 if page else 512)
    sub(b, B, p[:10])
    assert mapped(b, h) == 0


# --- 7.5 deferred split -------------------------------------------------------------------------

def queued(b, head):
    return bool(b.mem.flags[head] & FL_PARTIALLY_MAPPED)


def test_deferred_split_ptes(b):
    """7.5: a partially unmapped anon mTHP is queued in both configs;
    mTHP split_deferred counts it, thp_deferred_split_page does not (not
    PMD-sized).  Queued once."""
    h, p = b.folio(4)
    b.rmap.add_new_anon(A, [h], False)
    sub(b, A, p[8:12])
    assert queued(b, h)
    sub(b, A, p[12:])
    ev = b.rmap.events
    assert ev['mthp/64kB/split_deferred'] == 1 and ev['thp_deferred_split_page'] == 0


def test_deferred_split_not_for_full_unmap(b):
    """7.5: unmapping everything at once is not a partial mapping."""
    h, p = b.folio(4)
    b.rmap.add_new_anon(A, [h], False)
    sub(b, A, p)
    assert not queued(b, h)
    assert sum(b.rmap.events.values()) == 0


def test_deferred_split_only_anon_order_2_up(b):
    """7.5: only anon folios, never order-1 folios."""
    h1, p1 = b.folio(1)
    b.rmap.add_new_anon(A, [h1], False)
    sub(b, A, p1[:1])
    hf, pf = b.folio(4)                 # not anon (a page-cache folio)
    add(b, A, pf)
    sub(b, A, pf[:4])
    assert not queued(b, h1) and not queued(b, hf)
    assert sum(b.rmap.events.values()) == 0


def test_deferred_split_pmd_thp(b):
    """7.5: a PMD THP split into PTEs (ADD 512, SUB PMD) is fully mapped;
    unmapping 256 PTEs queues it: thp_deferred_split_page +1."""
    h, p = b.folio(9)
    b.rmap.add_new_anon(A, [h], True)
    add(b, A, p)
    b.rmap.remove_pmd(A, [h])
    assert not queued(b, h)
    sub(b, A, p[256:])
    assert queued(b, h)
    assert b.rmap.events['thp_deferred_split_page'] == 1
    assert b.rmap.events['mthp/2048kB/split_deferred'] == 1


def test_deferred_split_last_pmd_removed(b):
    """7.5 PMD row: the last PMD goes while some, not all, pages are
    PTE-mapped (by another MM): detected in both configs (NO: 0 < LM =
    10 < 512)."""
    h, p = b.folio(9)
    b.rmap.add_new_anon(A, [h], True)
    add(b, B, p[:10])
    b.rmap.remove_pmd(A, [h])
    assert queued(b, h)


def test_deferred_split_s12_missed_without_page_mapcount(b):
    """7.5 / S12: fork of a PMD THP, parent and child unmap the same
    upper half.  PAGE detects it at the child's unmap; NO does not (LM =
    512 is not < 512) until the child's remaining mappings go."""
    P, Cc = A, B
    h, p = b.folio(9)
    page = b.config.page_mapcount
    b.rmap.add_new_anon(P, [h], True)
    b.rmap.add_pmd(Cc, [h])
    for mm in (P, Cc):
        add(b, mm, p)                   # __split_huge_pmd_locked: ADD(mm, 512), SUB(mm, 1)
        b.rmap.remove_pmd(mm, [h])
        assert not queued(b, h)
        sub(b, mm, p[256:])
    assert folio_state(b.mem, h).lm == 512
    assert queued(b, h) == page
    assert b.rmap.events['thp_deferred_split_page'] == (1 if page else 0)
    sub(b, Cc, p[:256])                 # the child exits
    assert queued(b, h)
    assert b.rmap.events['thp_deferred_split_page'] == 1

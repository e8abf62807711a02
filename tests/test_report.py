"""`mmemu tools` reads each PMD leaf once where its 512 pages answer alike
(procfs.report.tool_facts over query.vma_pages(whole_leaves=True)); its
kpagecount and pagemap USS must be what a tool walking every page gets."""
from pathlib import Path

import numpy as np
import pytest

from helpers_core import ALL_CONFIGS, config_id, replay
from mmcore import query
from mmcore.memory import PAGE_SIZE
from procfs.report import tool_facts, true_values

EXAMPLES = Path(__file__).resolve().parents[1] / 'configs' / 'scenarios' / 'examples'
KB = PAGE_SIZE >> 10


def walk_every_page(k, proc):
    """What a pagemap + kpagecount reader counts, one present page at a time."""
    excl = kpc1 = 0
    for v in proc.mm.vmas:
        pv = query.vma_pages(k, v, present_only=True)
        excl += int(np.count_nonzero(pv.pm_exclusive & pv.present))
        if pv.present.any():
            kpc1 += int(np.count_nonzero(query.kpagecount(k, pv.pfn[pv.present]) == 1))
    return {'uss_pagemap': excl * KB, 'uss_kpagecount': kpc1 * KB}


@pytest.mark.parametrize('config', ALL_CONFIGS, ids=config_id)
@pytest.mark.parametrize('name', ['s08-pmd-thp', 's09-pmd-thp-fork', 's10-pmd-split-page7', 's12-pmd-both-unmap-half',
                                  's13-shared-folio-one-page', 's17-huge-zero-page', 's18-pinned-fork'])
def test_whole_leaves_count_as_every_page(name, config):
    k = replay((EXAMPLES / (name + '.yaml')).read_text(), config)
    for pid, proc in k.processes.items():
        f = tool_facts(k, proc)
        assert {key: f[key] for key in ('uss_pagemap', 'uss_kpagecount')} == walk_every_page(k, proc), pid


@pytest.mark.parametrize('config', ALL_CONFIGS[:2], ids=config_id)
def test_pmd_split_in_the_writer(config):
    """S10 with k = 7 (semantics.md section 13; the expectations of
    s10-pmd-split-page7.yaml, recorded [real] for page_mapcount): the
    child's PMD leaf maps the old folio, whose page 7 only the child maps
    (kpagecount 1 under PAGE_MAPCOUNT, folio average 2 without); bit 56 of
    a PMD leaf follows its first page (semantics.md 8.3), so 0; the parent
    has one exclusive page, its copy of page 7."""
    k = replay((EXAMPLES / 's10-pmd-split-page7.yaml').read_text(), config)
    child, parent = tool_facts(k, k.processes[101]), tool_facts(k, k.processes[100])
    assert child['uss_kpagecount'] == (4 if config.name == 'page_mapcount' else 0)
    assert child['uss_pagemap'] == 0
    assert parent['uss_kpagecount'] == parent['uss_pagemap'] == 4
    truth, system = true_values(k)
    # who maps which page: the child alone maps page 7 of the old folio, the
    # parent alone its copy; the other 511 pages are mapped twice
    assert truth[101]['uss'] == truth[100]['uss'] == 4
    assert truth[100]['pss'] == truth[101]['pss'] == 4 + 511 * 2
    assert system['anon_pages'] == 2052
    assert int(np.count_nonzero(system['mapped_by_processes'])) == 513


def _average_one(mem, pfn):
    """folio_average_page_mapcount() (fs/proc/internal.h, semantics.md 7.3)
    of one page, scalar: small folio: _mapcount + 1; large: 0 if nothing
    maps it, E if only PMDs do, else ((LM - E) + nr/2) >> order, + E, at least 1."""
    head = int(mem.head[pfn])
    order = int(mem.order[head])
    if order == 0:
        return int(mem.page_mapcount[head])
    lm, e = int(mem.large_mapcount[head]), int(mem.entire_mapcount[head])
    if lm <= 0:
        return 0
    if lm <= e:
        return e
    return max(((lm - e + (1 << order) // 2) >> order) + e, 1)


@pytest.mark.parametrize('name', ['s02-mthp-fork', 's10-pmd-split-page7', 's13-shared-folio-one-page',
                                  's12-pmd-both-unmap-half'])
def test_folio_average_of_mixed_pages_any_shape(name):
    """The vectorised folio average (one slot lookup, one value per run of
    pages of a folio) equals the scalar rule page by page, for small and
    large folios mixed, in any order and array shape."""
    from mmcore.config import NO_PAGE_MAPCOUNT
    from mmcore.mapcount import folio_average_page_mapcount, folio_maybe_mapped_shared
    k = replay((EXAMPLES / (name + '.yaml')).read_text(), NO_PAGE_MAPCOUNT)
    mem = k.mem
    pfns = np.concatenate([v.mapped_pfns() for p in k.processes.values() for v in p.mm.vmas])
    pfns = np.concatenate([pfns, pfns[::-1], pfns[:8]])
    want = np.array([_average_one(mem, int(p)) for p in pfns])
    assert (folio_average_page_mapcount(mem, pfns) == want).all()
    assert (folio_average_page_mapcount(mem, pfns.reshape(2, -1)) == want.reshape(2, -1)).all()
    shared = np.array([int(mem.page_mapcount[p]) > 1 if int(mem.order[mem.head[p]]) == 0 else
                       int(mem.large_mapcount[mem.head[p]]) > 1 and bool(mem.maybe_shared[mem.head[p]])
                       for p in pfns])
    assert (folio_maybe_mapped_shared(mem, pfns) == shared).all()

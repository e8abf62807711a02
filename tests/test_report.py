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

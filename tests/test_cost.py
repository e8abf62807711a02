"""`mmemu cost` and the counters behind it (mmcore/cost.py).

Expected counts follow the kernel functions named in each test, per
config: 6.18 __folio_add_rmap() / __folio_remove_rmap() /
folio_try_dup_anon_rmap_ptes() with CONFIG_PAGE_MAPCOUNT (one atomic per
page on page->_mapcount, _nr_pages_mapped only when a page's first mapping
comes or its last goes), without it, and with the RFC's 13/13 (one
_total_mapped_pages update next to the large mapcount, under the same
lock).  Every folio-level helper that changes the large mapcount takes the
bit spinlock once (folio_lock_large_mapcount()), except
folio_set_large_mapcount() for a new folio.
"""
import json
import xml.etree.ElementTree as ET

import pytest
import yaml

from mmcore.config import NO_PAGE_MAPCOUNT, PAGE_MAPCOUNT, TOTAL_MAPPED_PAGES
from mmcore.cost import replay_costs
from mmcore.kernel import Kernel
from mmcore.scenario import parse_scenario_text
from procfs import cli, cost_report

from scenario_steps import fork, mmap, munmap, write

P, C = 100, 101
MTHP_64K = {'enabled': 'never', 'sizes': {'64K': 'always'}}
THREE = (PAGE_MAPCOUNT, NO_PAGE_MAPCOUNT, TOTAL_MAPPED_PAGES)


def text(steps, thp=MTHP_64K):
    return yaml.safe_dump({'format': 1, 'name': 'cost', 'kernel': {'thp': thp},
                           'processes': [{'pid': P}], 'steps': steps}, sort_keys=False)


def costs(config, steps, thp=MTHP_64K):
    sc = parse_scenario_text(text(steps, thp))
    k = Kernel(config, sc)
    return [dict(c) for _, c in replay_costs(k, sc.steps)]


MTHP = [mmap(P, 'buf', '64K', align='64K'), write(P, 'buf'), fork(P, C), munmap(C, 'buf')]


@pytest.mark.parametrize('config', THREE, ids=lambda c: c.name)
def test_new_mthp_fork_munmap(config):
    page, rfc = config.page_mapcount, config is TOTAL_MAPPED_PAGES
    _, fault, dup, zap = costs(config, MTHP)
    # folio_add_new_anon_rmap(): folio_set_large_mapcount() (no lock, slot
    # 0 := (mm, 16)); PAGE_MAPCOUNT also sets 16 page mapcounts and
    # _nr_pages_mapped; the RFC sets the total; 16 PTEs
    assert fault == {k: v for k, v in {
        'page_mapcount': 16 if page else 0, 'nr_pages_mapped': 1 if page else 0,
        'total_mapped_pages': 1 if rfc else 0, 'large_mapcount': 1, 'mm_id_slots': 2,
        'pte_writes': 16}.items() if v}
    # fork: folio_try_dup_anon_rmap_ptes() of 16 PTEs, one batch: the child
    # takes slot 1 (id and count); 16 child PTEs and 16 parent PTEs
    # write-protected
    assert dup == {k: v for k, v in {
        'page_mapcount': 16 if page else 0, 'total_mapped_pages': 1 if rfc else 0,
        'large_mapcount': 1, 'mapcount_lock': 1, 'mm_id_slots': 2, 'pte_writes': 32}.items()
        if v}
    # the child's munmap: one folio_remove_rmap_ptes() batch; no page loses
    # its last mapping (the parent maps all 16), so _nr_pages_mapped stays;
    # slot 1 drops to 0 and is freed (count and id)
    assert zap == {k: v for k, v in {
        'page_mapcount': 16 if page else 0, 'total_mapped_pages': 1 if rfc else 0,
        'large_mapcount': 1, 'mapcount_lock': 1, 'mm_id_slots': 2, 'pte_writes': 16}.items()
        if v}


@pytest.mark.parametrize('config', THREE, ids=lambda c: c.name)
def test_cow_copy_and_reuse(config):
    """wp_page_copy() copies one page per write fault; after the child is
    gone the parent's writes reuse (__wp_can_reuse_large_anon_folio())."""
    steps = MTHP[:3] + [write(C, 'buf', 0, 8192), {'exit': {'pid': C}},
                        write(P, 'buf')]
    c = costs(config, steps)
    child_write, parent_write = c[3], c[5]
    assert child_write['cow_pages_copied'] == 2 and child_write['cow_folios_copied'] == 2
    assert child_write.get('cow_pages_reused', 0) == 0
    assert parent_write['cow_pages_reused'] == 16
    assert parent_write.get('cow_pages_copied', 0) == 0
    # each copy removes one PTE of the old folio: one lock each
    assert child_write['mapcount_lock'] == 2


def test_pmd_counts_once_per_entry():
    """A PMD leaf is one page-table entry; the RFC adds HPAGE_PMD_NR to the
    total in one update."""
    steps = [mmap(P, 'buf', '2M', align='2M'), write(P, 'buf'), fork(P, C)]
    for config in THREE:
        _, fault, dup = costs(config, steps, thp={'enabled': 'always'})
        assert fault['pte_writes'] == 1 and dup['pte_writes'] == 2
        assert dup.get('page_mapcount', 0) == 0
        assert dup.get('entire_mapcount', 0) == (0 if config is TOTAL_MAPPED_PAGES else 1)
        assert dup.get('total_mapped_pages', 0) == (1 if config is TOTAL_MAPPED_PAGES else 0)


def test_cli_table_json_svg(tmp_path, capsys):
    f = tmp_path / 's.yaml'
    f.write_text(text(MTHP))
    assert cli.main(['cost', str(f)]) == 0
    out = capsys.readouterr().out
    assert 'configs: no_page_mapcount, page_mapcount, total_mapped_pages' in out
    assert 'step 3 fork (line' in out
    assert cli.main(['cost', str(f), '--json']) == 0
    d = json.loads(capsys.readouterr().out)
    assert d['configs'] == ['no_page_mapcount', 'page_mapcount', 'total_mapped_pages']
    fork_step = [s for s in d['steps'] if s['op'] == 'fork'][0]
    assert fork_step['cost']['page_mapcount']['page_mapcount'] == 16
    assert 'page_mapcount' not in fork_step['cost']['no_page_mapcount']
    assert d['total']['total_mapped_pages']['total_mapped_pages'] == 3
    svg = tmp_path / 'c.svg'
    assert cli.main(['cost', str(f), '--svg', str(svg)]) == 0
    root = ET.parse(svg).getroot()
    fills = {r.get('fill') for r in root.iter('{http://www.w3.org/2000/svg}rect')}
    assert set(cost_report.COLOURS[:3]) <= fills


def test_cli_errors(tmp_path, capsys):
    assert cli.main(['cost', str(tmp_path / 'missing.yaml')]) == 1
    assert 'missing.yaml not found' in capsys.readouterr().err
    f = tmp_path / 's.yaml'
    f.write_text(text(MTHP))
    assert cli.main(['cost', str(f), '--svg', str(tmp_path / 'no' / 'c.svg')]) == 1
    err = capsys.readouterr().err
    assert err.startswith('mmemu: error: ') and 'c.svg' in err and len(err.splitlines()) == 1

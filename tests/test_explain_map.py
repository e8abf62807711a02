"""mmemu explain and mmemu map on the showcase: worker2's pages that are
"maybe mapped shared" under CONFIG_NO_PAGE_MAPCOUNT although only it maps
them.  Expected values follow the MM-ID rules of include/linux/rmap.h
(folio_add_large_mapcount(), folio_sub_large_mapcount()) and
folio_maybe_mapped_shared() (semantics.md 4 and 5.1)."""
import pytest

from procfs.build import replay_all
from procfs.cli import KERNELS_DIR, PROJECT_ROOT, main
from procfs.explain import explain
from procfs.live import describe
from procfs.mapview import layout, render

SHOWCASE = str(PROJECT_ROOT / 'configs' / 'scenarios' / 'showcase.yaml')
CONFIGS = [str(KERNELS_DIR / 'page_mapcount.yaml'), str(KERNELS_DIR / 'no_page_mapcount.yaml')]


@pytest.fixture(scope='module')
def survivor():
    sc, kernels = replay_all(SHOWCASE, CONFIGS, 'survivor')
    return sc, kernels


def heap_vmas(kernels, pid):
    return [v for v in kernels[0][1].processes[pid].mm.vmas if v.name == 'heap']


def test_slot_history_of_a_folio(survivor):
    """The heap folio at 576K: app (100) faulted it (slot 0, step 2),
    worker1's fork took slot 1 and set the shared bit (step 6), worker2's
    found both slots taken (untracked, step 7); app's munmap (step 14) and
    worker1's exit (step 15) freed both slots, and the bit stayed set: the
    remaining slot never held all large_mapcount mappings."""
    _, kernels = survivor
    for cfg, k in kernels:
        v = next(v for v in k.processes[102].mm.vmas if v.name == 'heap' and v.range_start +
                 (576 << 10) >= v.start and v.range_start + (576 << 10) < v.end)
        head = int(k.mem.head[v.pfn[((v.range_start + (576 << 10)) - v.start) >> 12]])
        ev = k.slot_history.events(head)
        assert [(e.step, e.op, e.pid, e.untracked, e.shared) for e in ev] == [
            (2, 'new', 100, False, False), (6, 'add', 101, False, True),
            (7, 'add', 102, True, True), (14, 'sub', 100, False, True),
            (15, 'sub', 101, False, True)], cfg.name
        assert ev[-1].ids == (0, 0)


def test_explain_says_why_worker2_looks_shared(survivor):
    sc, kernels = survivor
    base = heap_vmas(kernels, 102)[0].range_start
    lines = explain(kernels, 102, base + (576 << 10), {s.index: describe(s) for s in sc.steps})
    text = '\n'.join(lines)
    page, nopage = text.split('\nno_page_mapcount:') if text.startswith('page') else \
        reversed(text.split('\npage_mapcount:'))
    # NO_PAGE_MAPCOUNT: the shared bit decides; (16 + 8) >> 4 = 1
    assert 'kpagecount = 1: folio_average_page_mapcount()' in nopage
    assert 'pagemap bit 56 (PM_MMAP_EXCLUSIVE) = 0: !folio_maybe_mapped_shared(): ' \
        'large_mapcount 16 > 1 and the shared bit is set' in nopage
    assert 'smaps: Shared (smaps_account(): m = 1)' in nopage
    assert 'because pid 102 took no slot (untracked) while pid 100 and pid 101 held both ' \
        'slots at step 7; a false "shared"' in nopage
    assert 'slots: mm0 = free; mm1 = free; maybe_shared = 1; large_mapcount 16' in nopage
    # PAGE_MAPCOUNT: page->_mapcount + 1 = 1, so exclusive
    assert 'pagemap bit 56 (PM_MMAP_EXCLUSIVE) = 1: folio_precise_page_mapcount() == 1' in page
    assert 'smaps: Private' in page and 'nr_pages_mapped 16' in page
    assert 'step 7 (fork pid=100 child=102 comm=worker2): pid 102 (mm 4) mapped it untracked' in page


def test_explain_cli(capsys):
    assert main(['explain', SHOWCASE, '102', '0x1000']) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == 'no_page_mapcount: no VMA covers this address'
    assert main(['explain', SHOWCASE, '999', '0x1000']) == 1
    assert 'no process 999 (pids: 1, 100, 102)' in capsys.readouterr().err
    assert main(['explain', SHOWCASE, '102', 'heap']) == 1
    assert "address 'heap' is not a number" in capsys.readouterr().err


def test_map_colours_the_false_shared_folios(survivor):
    """worker2's second heap VMA (after the munmap of 544K+32K) holds the
    7 folios only it maps: exclusive with per-page mapcounts, falsely
    shared without."""
    _, kernels = survivor
    data = layout(kernels, 102)
    comm, vmas = data[102]
    assert comm == 'worker2'
    label, per_cfg = vmas[-1]
    assert label.startswith('heap ')
    assert [b.cls for b in per_cfg['page_mapcount']] == ['exclusive'] * 7
    assert [b.cls for b in per_cfg['no_page_mapcount']] == ['false-shared'] * 7
    assert {b.order for b in per_cfg['no_page_mapcount']} == {4}
    text = render(kernels, 102)
    assert '    no_page_mapcount ' + '[FFFFF]' * 7 in text
    assert '    page_mapcount    ' + '[EEEEE]' * 7 in text
    assert '\x1b[' not in text and '\x1b[1;31m[FFFFF]' in render(kernels, 102, color=True)


def test_svg_and_html_are_self_contained(survivor, tmp_path, capsys):
    _, kernels = survivor
    svg = render(kernels, None, 'svg')
    assert svg.startswith('<svg xmlns="http://www.w3.org/2000/svg"')
    # + the folio at 512K, of which worker2 kept 32K (step 16)
    assert svg.count('class="folio false-shared"') == 7
    assert svg.count('class="folio false-shared partial"') == 1
    html = render(kernels, None, 'html')
    assert html.startswith('<!DOCTYPE html>') and '<script' not in html
    assert 'http://' not in html.replace('http://www.w3.org/2000/svg', '')
    out = tmp_path / 'm.svg'
    assert main(['map', SHOWCASE, '--svg', str(out), '--config'] + CONFIGS[::-1]) == 0
    assert out.read_text() == render(replay_all(SHOWCASE, [str(KERNELS_DIR / 'no_page_mapcount.yaml'),
                                                           str(KERNELS_DIR / 'page_mapcount.yaml')])[1],
                                     None, 'svg')
    assert main(['map', SHOWCASE, '--svg', 'a', '--html', 'b']) == 1
    assert main(['map', SHOWCASE, '4242']) == 1
    assert capsys.readouterr().err.strip().endswith('mmemu: error: no process 4242 (pids: 1, 100, 102)')

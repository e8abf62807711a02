"""The kernel's internal state made visible: sys/kernel/debug/mmemu/
{folios,mm_ids} (an mmemu extension), the per-size mTHP statistics of
sysfs and the THP counters of /proc/vmstat."""
import glob
import json
import os
from urllib.parse import unquote

import pytest

from procfs import tree as T
from procfs.build import replay_all, tree_of
from procfs.cli import KERNELS_DIR, PROJECT_ROOT

SETS = [(PROJECT_ROOT.parent / 'shared' / 'conformance' / 'scenarios',
         PROJECT_ROOT.parent / 'shared' / 'conformance' / 'expected'),
        (PROJECT_ROOT / 'tests' / 'conformance' / 'scenarios',
         PROJECT_ROOT / 'tests' / 'conformance' / 'expected')]
PAGE = str(KERNELS_DIR / 'page_mapcount.yaml')
NOPAGE = str(KERNELS_DIR / 'no_page_mapcount.yaml')
SHOWCASE = str(PROJECT_ROOT / 'configs' / 'scenarios' / 'showcase.yaml')
THP = 'sys/kernel/mm/transparent_hugepage'


def recordings():
    out = []
    for scen_dir, exp_dir in SETS:
        for path in sorted(glob.glob(str(exp_dir / '*' / '*.json'))):
            scen = os.path.basename(os.path.dirname(path))
            out.append(pytest.param(str(scen_dir / (scen + '.yaml')), path,
                                    id='%s/%s' % (scen, os.path.basename(path)[:-5])))
    return out


def text(root, path):
    return T.resolve(root, path).render().decode()


def thp_counters(root):
    """What realrun.py's thp_counters() reads on the real machine: the
    thp_* lines of /proc/vmstat and every hugepages-*/stats file."""
    out = {}
    for line in text(root, 'proc/vmstat').splitlines():
        k, v = line.split()
        if k.startswith('thp_'):
            out[k] = int(v)
    thp = T.resolve(root, THP)
    for d, node in thp.children().items():
        if d.startswith('hugepages-'):
            for name in node.lookup('stats').children():
                out['%s/%s' % (d[10:], name)] = int(text(node, 'stats/' + name))
    return out


@pytest.mark.parametrize('scenario,recording', recordings())
def test_thp_counters_match_the_real_kernel(scenario, recording):
    """The recording holds the counters' change from the start of the
    scenario to the snapshot on Linux 6.18 (CONFIG_PAGE_MAPCOUNT);
    counters the recording machine's background activity moved are listed
    as unstable there."""
    with open(recording) as f:
        rec = json.load(f)
    unstable = {unquote(u.split('/', 1)[1]) for u in rec.get('unstable', [])
                if u.startswith('events/')}
    if 'events' in rec.get('unstable', []):
        pytest.skip('the recording marks every counter unstable')
    _, kernels = replay_all(scenario, [PAGE], rec['label'], with_init=False)
    root = tree_of(kernels, False).lookup('page_mapcount')
    got = {k: v for k, v in thp_counters(root).items() if v}
    want = rec.get('events', {})
    keys = (set(got) | set(want)) - unstable
    assert {k: got.get(k, 0) for k in keys} == {k: want.get(k, 0) for k in keys}


def table(root, path):
    lines = text(root, path).splitlines()
    header = lines[0].split()
    return header, [dict(zip(header, line.split())) for line in lines[1:]]


@pytest.fixture(scope='module')
def forked():
    """showcase at `forked`: app (100) wrote its 1 MiB heap as 16 folios of
    64K, then forked worker1 (101) and worker2 (102)."""
    _, kernels = replay_all(SHOWCASE, [PAGE, NOPAGE], 'forked')
    return tree_of(kernels)


def test_folios_show_both_slots_and_the_untracked_third_mm(forked):
    for cfg in ('page_mapcount', 'no_page_mapcount'):
        root = forked.lookup(cfg)
        _, rows = table(root, 'sys/kernel/debug/mmemu/folios')
        ids = {int(r['pid']): r['mm_id'] for r in table(root, 'sys/kernel/debug/mmemu/mm_ids')[1]}
        heap = [r for r in rows if r['order'] == '4']
        assert len(heap) == 16
        for r in heap:
            # folio_add_new_anon_rmap() put app in slot 0; fork's
            # folio_dup_anon_rmap_ptes() gave worker1 the free slot 1 and
            # set the shared bit; worker2 found no free slot (untracked);
            # every PTE of the three MMs counts in _large_mapcount
            assert (r['kind'], r['mapcount'], r['large_mapcount']) == ('anon', '48', '48')
            assert (r['mm0_id'], r['mm0_mapcount'], r['mm1_id'], r['mm1_mapcount']) == \
                (ids[100], '16', ids[101], '16')
            assert (r['maybe_shared'], r['entire_mapcount']) == ('1', '0')
            assert r['mappers'] == '100:16,101:16,102:16'
            assert r['refcount'] == '48' and 'anon' in r['flags'].split('|')


def test_the_config_decides_the_mapcount_columns(forked):
    page, _ = table(forked.lookup('page_mapcount'), 'sys/kernel/debug/mmemu/folios')
    nopage, rows = table(forked.lookup('no_page_mapcount'), 'sys/kernel/debug/mmemu/folios')
    assert page[:10] == ['pfn', 'order', 'kind', 'flags', 'refcount', 'pincount', 'mapcount',
                         'large_mapcount', 'entire_mapcount', 'nr_pages_mapped']
    assert 'nr_pages_mapped' not in nopage and page == nopage[:9] + ['nr_pages_mapped'] + nopage[9:]
    assert page[-1] == 'mappers'
    # a small folio keeps no large mapcount or slots
    small = next(r for r in rows if r['order'] == '0' and r['kind'] == 'anon')
    assert (small['large_mapcount'], small['mm0_id'], small['maybe_shared']) == ('-', '-', '-')
    zero = [r for r in rows if r['kind'] == 'zero']
    assert len(zero) == 1 and zero[0]['mappers'] == '-'


def test_mm_ids_count_slots_and_untracked_folios(forked):
    header, rows = table(forked.lookup('no_page_mapcount'), 'sys/kernel/debug/mmemu/mm_ids')
    assert header == ['pid', 'mm_id', 'slot0_folios', 'slot1_folios', 'untracked_folios']
    got = {r['pid']: (r['slot0_folios'], r['slot1_folios'], r['untracked_folios']) for r in rows}
    assert got == {'1': ('0', '0', '0'), '100': ('16', '0', '0'), '101': ('0', '16', '0'),
                   '102': ('0', '0', '16')}


def test_debugfs_is_root_only(forked):
    root = forked.lookup('page_mapcount')
    assert T.resolve(root, 'sys/kernel/debug').mode == 0o700
    assert T.resolve(root, 'sys/kernel/debug/mmemu').mode == 0o500
    for name in ('folios', 'mm_ids'):
        node = T.resolve(root, 'sys/kernel/debug/mmemu/' + name)
        assert (node.mode, node.uid, node.gid) == (0o400, 0, 0)


REAL_STATS = '/sys/kernel/mm/transparent_hugepage/hugepages-64kB/stats'


def test_mthp_stats_are_the_files_of_the_real_kernel(forked):
    root = forked.lookup('page_mapcount')
    names = sorted(T.resolve(root, THP + '/hugepages-64kB/stats').children())
    # the 6.18 list (mm/huge_memory.c anon_stats_attrs, file_stats_attrs,
    # any_stats_attrs) and anon_fault_declined of the recording machine
    assert names == sorted(['anon_fault_alloc', 'anon_fault_declined', 'anon_fault_fallback',
                            'anon_fault_fallback_charge', 'zswpout', 'swpin', 'swpin_fallback',
                            'swpin_fallback_charge', 'swpout', 'swpout_fallback', 'shmem_alloc',
                            'shmem_fallback', 'shmem_fallback_charge', 'split', 'split_failed',
                            'split_deferred', 'nr_anon', 'nr_anon_partially_mapped'])
    if os.path.isdir(REAL_STATS):
        assert names == sorted(os.listdir(REAL_STATS))
        with open(os.path.join(REAL_STATS, 'split')) as f:
            real = f.read()
        assert real.endswith('\n') and real[:-1].isdigit()
    assert text(root, THP + '/hugepages-64kB/stats/anon_fault_alloc') == '16\n'
    assert text(root, THP + '/hugepages-64kB/stats/nr_anon') == '16\n'
    assert text(root, THP + '/hugepages-2048kB/stats/nr_anon') == '0\n'


def test_the_rfc_kernel_shows_its_total_mapped_pages():
    """RFC 13/13: _entire_mapcount is gone, _total_mapped_pages adds the
    pages each mapping covers: 16 PTEs in each of 3 MMs make 48."""
    cfg = str(KERNELS_DIR / 'total_mapped_pages.yaml')
    _, kernels = replay_all(SHOWCASE, [cfg], 'forked')
    header, rows = table(tree_of(kernels).lookup('total_mapped_pages'),
                         'sys/kernel/debug/mmemu/folios')
    assert header[7:10] == ['large_mapcount', 'total_mapped_pages', 'mm0_id']
    heap = [r for r in rows if r['order'] == '4']
    assert len(heap) == 16 and {r['total_mapped_pages'] for r in heap} == {'48'}


REAL_THP = '/sys/kernel/mm/transparent_hugepage'


def test_every_mthp_size_directory_holds_what_6_18_serves(forked):
    """hugepages_init() makes a directory per order of THP_ORDERS_ALL:
    order 1 (8kB) is a file/shmem order only, so hugepages-8kB has
    shmem_enabled and the file and any stats but no `enabled` and no anon
    stats; every size has shmem_enabled, PMD inheriting the global knob and
    the others never (shmem_init(): huge_shmem_orders_inherit =
    BIT(HPAGE_PMD_ORDER))."""
    root = forked.lookup('page_mapcount')
    thp = T.resolve(root, THP)
    sizes = sorted(n for n in thp.children() if n.startswith('hugepages-'))
    assert sizes == sorted('hugepages-%dkB' % kb for kb in
                           (8, 16, 32, 64, 128, 256, 512, 1024, 2048))
    small = T.resolve(root, THP + '/hugepages-8kB')
    assert sorted(small.children()) == ['shmem_enabled', 'stats']
    stats = sorted(T.resolve(root, THP + '/hugepages-8kB/stats').children())
    assert not [s for s in stats if s.startswith(('anon_', 'nr_anon')) or s == 'split_deferred']
    assert text(root, THP + '/hugepages-2048kB/shmem_enabled') == \
        'always [inherit] within_size advise never\n'
    assert text(root, THP + '/hugepages-64kB/shmem_enabled') == \
        'always inherit within_size advise [never]\n'
    if not os.path.isdir(REAL_THP):
        return
    real_sizes = sorted(n for n in os.listdir(REAL_THP) if n.startswith('hugepages-'))
    assert sizes == real_sizes
    for d in real_sizes:
        assert sorted(T.resolve(root, THP + '/' + d).children()) == \
            sorted(os.listdir(os.path.join(REAL_THP, d))), d
        assert sorted(T.resolve(root, THP + '/' + d + '/stats').children()) == \
            sorted(os.listdir(os.path.join(REAL_THP, d, 'stats'))), d
        with open(os.path.join(REAL_THP, d, 'shmem_enabled')) as f:
            options = f.read().replace('[', '').replace(']', '')
        assert text(root, THP + '/' + d + '/shmem_enabled').replace('[', '').replace(']', '') \
            == options, d

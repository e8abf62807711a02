"""procfs.tree (lookup, node rules) and procfs.export (plain-file copy)."""
import errno
import os
import stat
import struct

import pytest

from conftest import (APP_UID, MEMINFO, PFN_MASK, PM_PRESENT, SMAPS, make_fake_tree,
                      make_pagemap)
from procfs import tree as T
from procfs.export import export


def test_resolve_finds_nodes_and_root():
    root = make_fake_tree()
    assert T.resolve(root, '/') is root
    assert T.resolve(root, '') is root
    node = T.resolve(root, '/page_mapcount/proc/100/smaps')
    assert isinstance(node, T.TextFile) and node.render() == SMAPS['page_mapcount']
    assert T.resolve(root, 'page_mapcount/proc/meminfo').render() == MEMINFO
    assert T.resolve(root, '/page_mapcount//proc/./self').target == '100'


def test_resolve_unknown_name_is_enoent():
    root = make_fake_tree()
    for path in ('/nope', '/page_mapcount/proc/999', '/page_mapcount/proc/100/..'):
        with pytest.raises(FileNotFoundError) as ei:
            T.resolve(root, path)
        assert ei.value.errno == errno.ENOENT


def test_resolve_through_a_file_is_enotdir():
    root = make_fake_tree()
    with pytest.raises(NotADirectoryError) as ei:
        T.resolve(root, '/page_mapcount/proc/meminfo/x')
    assert ei.value.errno == errno.ENOTDIR


def test_dir_callable_entries_are_evaluated_once_unless_uncached():
    calls = []

    def entries():
        calls.append(1)
        return {'f': T.TextFile(lambda: b'x')}
    cached = T.Dir(entries)
    assert cached.lookup('f') is cached.lookup('f')
    assert len(calls) == 1
    live = T.Dir(entries, cache=False)
    live.children()
    live.children()
    assert len(calls) == 3


@pytest.mark.parametrize('name', ['', '.', '..', 'a/b', 'nul\0'])
def test_dir_rejects_bad_entry_names(name):
    with pytest.raises(ValueError, match='bad directory entry name'):
        T.Dir({name: T.TextFile(lambda: b'')}).children()


def test_dir_rejects_non_nodes_and_non_dicts():
    with pytest.raises(TypeError, match='not a tree node'):
        T.Dir({'x': 'text'}).children()
    with pytest.raises(TypeError, match='must be a dict'):
        T.Dir(lambda: ['x']).children()


def test_node_attributes_and_defaults():
    d = T.Dir({'sub': T.Dir({}), 'f': T.TextFile(lambda: b'')}, uid=7, gid=8)
    assert d.st_mode == stat.S_IFDIR | 0o555 and (d.uid, d.gid) == (7, 8)
    assert d.nlink() == 3                      # ".", the entry in the parent, sub/..
    assert T.TextFile(lambda: b'').st_mode == stat.S_IFREG | 0o444
    assert T.BinaryFile(lambda o, s, c: b'', 8).st_mode == stat.S_IFREG | 0o400
    assert T.Symlink('1').st_mode == stat.S_IFLNK | 0o777
    with pytest.raises(ValueError):
        T.TextFile(lambda: b'', mode=0o100444)


def test_textfile_render_accepts_str_and_rejects_other_types():
    assert T.TextFile(lambda: 'Name:\tä\n').render() == 'Name:\tä\n'.encode()
    with pytest.raises(TypeError):
        T.TextFile(lambda: 42).render()


# pagemap_read()/kpagecount_read(): EINVAL unless offset and count are
# multiples of 8 (PM_ENTRY_BYTES / KPMSIZE).
@pytest.mark.parametrize('offset,size', [(1, 8), (8, 7), (4, 4), (12, 16)])
def test_binary_unaligned_read_is_einval(offset, size):
    pm = make_pagemap(4096, 0)
    with pytest.raises(OSError) as ei:
        pm.pread(offset, size)
    assert ei.value.errno == errno.EINVAL


def test_binary_eof_at_and_beyond_size_limit():
    pm = make_pagemap(4096, 0)
    assert pm.pread(4096, 8) == b''
    assert pm.pread(1 << 55, 8) == b''
    assert pm.pread(4096 - 8, 64) == pm.pread(4096 - 8, 8)
    assert len(pm.pread(4096 - 8, 64)) == 8


def test_binary_reads_are_never_short_inside_the_range():
    short = T.BinaryFile(lambda off, size, ctx: b'\x01' * 8, 4096)
    data = short.pread(0, 64)
    assert data == b'\x01' * 8 + bytes(56)
    long_ = T.BinaryFile(lambda off, size, ctx: b'\x02' * (size + 16), 4096)
    assert long_.pread(8, 16) == b'\x02' * 16


def test_binary_read_context_reaches_the_callable():
    pm = make_pagemap(4096, 0)
    vpn = 20
    root_entry, = struct.unpack('<Q', pm.pread(vpn * 8, 8, T.ReadContext(uid=0)))
    user_entry, = struct.unpack('<Q', pm.pread(vpn * 8, 8, T.ReadContext(uid=1000)))
    assert root_entry == PM_PRESENT | (0x1000 + vpn)
    assert user_entry == PM_PRESENT and user_entry & PFN_MASK == 0


def test_binary_extents_are_clipped_sorted_and_merged():
    f = T.BinaryFile(lambda o, s, c: bytes(s), 100,
                     extents=lambda: [(80, 40), (0, 8), (4, 8), (50, 0), (-8, 12)])
    assert f.extents() == [(0, 12), (80, 20)]
    assert T.BinaryFile(lambda o, s, c: bytes(s), 64).extents() == [(0, 64)]


def test_walk_lists_parents_before_children():
    paths = [p for p, _ in T.walk(make_fake_tree())]
    assert paths.index('page_mapcount') < paths.index('page_mapcount/proc') \
        < paths.index('page_mapcount/proc/100/smaps')
    assert len(paths) == len(set(paths))


def _export_small(tmp_path):
    root = T.Dir({c: T.resolve(make_fake_tree(), c) for c in ('page_mapcount', 'no_page_mapcount')})
    out = tmp_path / 'out'
    n = export(root, str(out))
    return root, out, n


def test_export_writes_the_same_bytes(tmp_path):
    root, out, n = _export_small(tmp_path)
    assert n == sum(1 for _ in T.walk(root))
    for path, node in T.walk(root):
        p = out / path
        if isinstance(node, T.Symlink):
            assert os.readlink(p) == node.target
        elif isinstance(node, T.TextFile):
            assert p.read_bytes() == node.render()
        elif isinstance(node, T.BinaryFile):
            assert p.read_bytes() == node.pread(0, node.size_limit), path
        else:
            assert p.is_dir()


def test_export_copies_modes_and_owners(tmp_path):
    _, out, _ = _export_small(tmp_path)
    st = os.stat(out / 'page_mapcount/proc/100')
    assert stat.S_IMODE(st.st_mode) == 0o555
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == (APP_UID, APP_UID)
    assert stat.S_IMODE(os.stat(out / 'page_mapcount/proc/kpagecount').st_mode) == 0o400
    assert stat.S_IMODE(os.stat(out / 'page_mapcount/proc/meminfo').st_mode) == 0o444


def test_export_binary_files_are_sparse(tmp_path):
    # 2^38 bytes of pagemap with 32 populated entries: only their block is written
    big = make_pagemap((1 << 47) // 4096 * 8, 0)
    export(T.Dir({'pagemap': big}), str(tmp_path / 'o'))
    st = os.stat(tmp_path / 'o' / 'pagemap')
    assert st.st_size == big.size_limit
    assert st.st_blocks * 512 <= 64 * 1024
    with open(tmp_path / 'o' / 'pagemap', 'rb') as f:
        f.seek(16 * 8)
        assert f.read(32 * 8) == big.pread(16 * 8, 32 * 8)


def test_export_sparse_file_ends_at_the_last_extent(tmp_path):
    f = T.BinaryFile(lambda o, s, c: b'\xff' * s, 1 << 20, extents=lambda: [(4096, 100)])
    export(T.Dir({'f': f}), str(tmp_path / 'o'))
    data = (tmp_path / 'o' / 'f').read_bytes()
    assert len(data) == 4096 + 104          # the extent rounded up to whole u64 entries
    assert data[:4096] == bytes(4096) and data[4096:] == b'\xff' * 104


def test_export_names_the_node_that_fails(tmp_path):
    from procfs.export import ExportError
    root = T.Dir({'proc': T.Dir({'bad': T.TextFile(lambda: 1 / 0)})})
    with pytest.raises(ExportError, match=r'proc/bad: rendering failed: ZeroDivisionError'):
        export(root, str(tmp_path / 'o'))


def test_text_file_cache_renders_once():
    """TextFile(cache=True) keeps its first render (the served state never
    changes under a tree); without it every open renders again."""
    calls = []

    def render():
        calls.append(1)
        return 'n=%d\n' % len(calls)
    cached, fresh = T.TextFile(render, cache=True), T.TextFile(render)
    assert cached.render() == b'n=1\n' and cached.render() == b'n=1\n'
    assert fresh.render() == b'n=2\n' and fresh.render() == b'n=3\n'
    big = T.TextFile(lambda: b'x' * (T.TextFile.CACHE_MAX + 1), cache=True)
    assert len(big.render()) == T.TextFile.CACHE_MAX + 1 and big._cached is None

"""procfs.fuse through a real FUSE mount of the fake tree (conftest.py)."""
import errno
import json
import os
import stat
import struct
import subprocess
import sys
import textwrap

import pytest

from conftest import (APP_UID, MEMINFO, PFN_MASK, PM_PRESENT, PROJECT_ROOT, SMAPS,
                      VSYSCALL_PAGEMAP_OFFSET, as_nobody, make_fake_tree, public_tempdir,
                      start_fake_mount, stop_fake_mount)
from procfs import tree as T
from procfs.export import export

CFG = 'page_mapcount'


def p(mp, *parts):
    return os.path.join(mp, *parts)


def read_all(path, chunk=65536):
    fd = os.open(path, os.O_RDONLY)
    try:
        out = b''
        while True:
            b = os.read(fd, chunk)
            if not b:
                return out
            out += b
    finally:
        os.close(fd)


def test_cat_and_grep_text_files(fake_mount):
    out = subprocess.run(['cat', p(fake_mount, CFG, 'proc', 'meminfo')], capture_output=True, check=True)
    assert out.stdout == MEMINFO
    out = subprocess.run(['grep', '-h', '^Pss:', p(fake_mount, 'page_mapcount', 'proc', '100', 'smaps'),
                          p(fake_mount, 'no_page_mapcount', 'proc', '100', 'smaps')],
                         capture_output=True, check=True, text=True)
    assert out.stdout.split('\n')[:2] == ['Pss:                  40 kB', 'Pss:                  32 kB']


def test_files_report_size_zero_like_procfs(fake_mount):
    st = os.stat(p(fake_mount, CFG, 'proc', 'meminfo'))
    assert st.st_size == 0 and stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o444
    assert os.stat(p(fake_mount, CFG, 'proc', 'kpagecount')).st_size == 0


def test_one_byte_reads_return_the_whole_text(fake_mount):
    path = p(fake_mount, CFG, 'proc', '100', 'smaps')
    assert read_all(path, chunk=1) == SMAPS[CFG]


def test_reads_past_end_are_empty(fake_mount):
    fd = os.open(p(fake_mount, CFG, 'proc', 'meminfo'), os.O_RDONLY)
    try:
        assert os.pread(fd, 100, len(MEMINFO)) == b''
        assert os.pread(fd, 100, 1 << 40) == b''
        assert os.pread(fd, 5, len(MEMINFO) - 3) == MEMINFO[-3:]
    finally:
        os.close(fd)
    assert read_all(p(fake_mount, 'extra', 'empty')) == b''


def test_each_open_is_one_snapshot(fake_mount):
    path = p(fake_mount, 'extra', 'counter')
    a = os.open(path, os.O_RDONLY)
    b = os.open(path, os.O_RDONLY)
    try:
        first = os.pread(a, 20, 0)
        other = os.pread(b, 20, 0)
        assert first != other                    # rendered at each open
        again = os.pread(a, 4096, 0)
        assert again.startswith(first) and again.count(first[:12]) > 1
        assert os.pread(a, 20, 0) == first       # same handle, same snapshot
    finally:
        os.close(a)
        os.close(b)


def test_render_failure_is_eio(fake_mount):
    with pytest.raises(OSError) as ei:
        os.open(p(fake_mount, 'extra', 'broken'), os.O_RDONLY)
    assert ei.value.errno == errno.EIO


def test_symlinks_and_directory_listing(fake_mount):
    assert os.readlink(p(fake_mount, CFG, 'proc', 'self')) == '100'
    assert os.readlink(p(fake_mount, CFG, 'proc', '100', 'exe')) == '/usr/bin/sleep'
    assert sorted(os.listdir(p(fake_mount, CFG, 'proc'))) == ['100', 'kpagecount', 'meminfo', 'self']
    assert read_all(p(fake_mount, CFG, 'proc', 'self', 'smaps')) == SMAPS[CFG]
    kinds = {e.name: (e.is_dir(follow_symlinks=False), e.is_symlink())
             for e in os.scandir(p(fake_mount, CFG, 'proc'))}
    assert kinds == {'100': (True, False), 'self': (False, True),
                     'meminfo': (False, False), 'kpagecount': (False, False)}
    with pytest.raises(FileNotFoundError):
        os.stat(p(fake_mount, CFG, 'proc', '999'))


def test_directory_owner_is_the_node_owner(fake_mount):
    st = os.stat(p(fake_mount, CFG, 'proc', '100'))
    assert (st.st_uid, st.st_gid) == (APP_UID, APP_UID)
    assert stat.S_IMODE(st.st_mode) == 0o555
    st = os.stat(p(fake_mount, CFG, 'proc'))
    assert (st.st_uid, st.st_gid) == (0, 0)


def test_binary_reads_are_served_by_range(fake_mount):
    path = p(fake_mount, CFG, 'proc', '100', 'pagemap')
    fd = os.open(path, os.O_RDONLY)
    try:
        vpn = 20
        entry, = struct.unpack('<Q', os.pread(fd, 8, vpn * 8))
        assert entry == PM_PRESENT | (0x1000 + vpn)
        whole = os.pread(fd, 1 << 20, 0)        # larger than one FUSE request
        assert len(whole) == 64 * 1024          # never short inside size_limit
        assert whole[16 * 8:17 * 8] == struct.pack('<Q', PM_PRESENT | 0x1010)
    finally:
        os.close(fd)


# pagemap_read()/kpagecount_read(): offset and count must be multiples of 8.
@pytest.mark.parametrize('offset,size', [(1, 8), (8, 1), (8, 12), (3, 5)])
def test_unaligned_binary_read_is_einval(fake_mount, offset, size):
    fd = os.open(p(fake_mount, CFG, 'proc', 'kpagecount'), os.O_RDONLY)
    try:
        with pytest.raises(OSError) as ei:
            os.pread(fd, size, offset)
        assert ei.value.errno == errno.EINVAL
    finally:
        os.close(fd)


def test_binary_without_align8_accepts_any_range(fake_mount):
    fd = os.open(p(fake_mount, 'extra', 'unaligned'), os.O_RDONLY)
    try:
        assert os.pread(fd, 3, 5) == bytes([5, 6, 7])
        assert os.pread(fd, 10, 998) == bytes([998 % 251, 999 % 251])
    finally:
        os.close(fd)


def test_pagemap_seek_to_vsyscall_reads_eof(fake_mount):
    # the PyPI pagemap tool seeks to [vsyscall] (0xffffffffff600000): the seek
    # must succeed and the read return EOF (clients/README.md pitfall 8)
    for name in (p(fake_mount, CFG, 'proc', '100', 'pagemap'), p(fake_mount, 'extra', 'bigmap')):
        with open(name, 'rb', buffering=0) as f:
            assert f.seek(VSYSCALL_PAGEMAP_OFFSET) == VSYSCALL_PAGEMAP_OFFSET
            assert f.read(8) == b''
            assert f.seek(1 << 55) == 1 << 55
            assert f.read(4096) == b''


def test_pagemap_end_of_user_address_space(fake_mount):
    fd = os.open(p(fake_mount, 'extra', 'bigmap'), os.O_RDONLY)
    try:
        last = ((1 << 47) - 4096) // 4096 * 8 - 8
        assert os.pread(fd, 8, last) == bytes(8)
        assert os.pread(fd, 16, last) == bytes(8)
        assert os.pread(fd, 8, last + 8) == b''
    finally:
        os.close(fd)


def test_pfns_are_hidden_from_unprivileged_readers(fake_mount):
    # pagemap_read(): PFNs only for openers with CAP_SYS_ADMIN
    path = p(fake_mount, 'extra', 'nobody', 'pagemap')
    res = as_nobody(['dd', 'if=' + path, 'bs=8', 'skip=20', 'count=1', 'status=none'])
    assert res.returncode == 0, res.stderr
    assert struct.unpack('<Q', res.stdout) == (PM_PRESENT,)
    with open(path, 'rb') as f:
        f.seek(20 * 8)
        entry, = struct.unpack('<Q', f.read(8))
    assert entry & PFN_MASK == 0x1000 + 20


def test_root_only_file_is_unreadable_as_nobody(fake_mount):
    for parts in (('extra', 'secret'), (CFG, 'proc', 'kpagecount'), (CFG, 'proc', '100', 'pagemap')):
        res = as_nobody(['cat', p(fake_mount, *parts)], text=True)
        assert res.returncode == 1
        assert 'Permission denied' in res.stderr
    res = as_nobody(['cat', p(fake_mount, CFG, 'proc', 'meminfo')])
    assert res.returncode == 0 and res.stdout == MEMINFO


def test_diff_r_shows_what_a_config_changes(fake_mount):
    a, b = p(fake_mount, 'page_mapcount'), p(fake_mount, 'no_page_mapcount')
    res = subprocess.run(['diff', '-rq', '--no-dereference', a, b], capture_output=True, text=True)
    assert res.returncode == 1, res.stderr
    assert sorted(res.stdout.splitlines()) == [
        'Files %s/proc/100/smaps and %s/proc/100/smaps differ' % (a, b),
        'Files %s/proc/kpagecount and %s/proc/kpagecount differ' % (a, b)]
    res = subprocess.run(['diff', '-r', p(a, 'proc', '100'), p(b, 'proc', '100')],
                         capture_output=True, text=True)
    assert '< Pss:                  40 kB' in res.stdout and '> Pss:                  32 kB' in res.stdout


def test_mount_and_export_hold_the_same_bytes(fake_mount, tmp_path):
    root = T.Dir({CFG: T.resolve(make_fake_tree(), CFG)})
    export(root, str(tmp_path / 'export'))
    res = subprocess.run(['diff', '-r', '--no-dereference', p(fake_mount, CFG), str(tmp_path / 'export' / CFG)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


# What the real /proc answers to changes, captured on this Linux 6.18 machine
# by running PROBE on /proc: as root with the pid of a `sleep` child (a
# process root may ptrace), as nobody (setpriv) with pid 1 (owned by root).
# PROBE changes nothing on a real /proc (chmod/chown to the current mode and
# owner; utime only touches timestamps). The mount gives the same answers, except:
#   - as root, chmod and chown of proc_create() entries such as /proc/meminfo
#     succeed on the real kernel and change the entry; the emulated tree is
#     immutable and answers EPERM, what procfs gives for /proc/PID/* files
#     (proc_setattr()) and directories;
#   - as nobody, operations that make a new name give EACCES (link: EPERM)
#     instead of ENOENT, and unlink in a pid directory EACCES instead of EPERM:
#     under FUSE a failed lookup leaves a negative dentry, and with
#     default_permissions the VFS refuses write access to the 0555 parent
#     (may_create()/may_delete()) before the daemon is asked.
PROBE = textwrap.dedent(r'''
    import errno, json, os, sys
    root, pid = sys.argv[1], sys.argv[2]
    P = lambda *a: os.path.join(root, *a)

    def ret(f):
        try:
            r = f()
            if isinstance(r, int):
                os.close(r)
            return 'ok'
        except OSError as e:
            return errno.errorcode[e.errno]

    def write_after_open(path):
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, b'1\n')
        finally:
            os.close(fd)

    ops = {
        'open_wronly_0444': lambda: os.open(P('meminfo'), os.O_WRONLY),
        'open_rdwr_0444': lambda: os.open(P('meminfo'), os.O_RDWR),
        'open_trunc_0444': lambda: os.open(P('meminfo'), os.O_WRONLY | os.O_TRUNC),
        'open_rdonly_0400': lambda: os.open(P('kpagecount'), os.O_RDONLY),
        'write_proc_entry': lambda: write_after_open(P('meminfo')),
        'write_pid_file': lambda: write_after_open(P(pid, 'smaps')),
        'write_binary_pid_file': lambda: write_after_open(P(pid, 'pagemap')),
        'write_binary_proc_entry': lambda: write_after_open(P('kpagecount')),
        'create_new': lambda: os.open(P('newfile'), os.O_WRONLY | os.O_CREAT, 0o644),
        'create_excl_existing': lambda: os.open(P('meminfo'), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644),
        'create_in_piddir': lambda: os.open(P(pid, 'newfile'), os.O_WRONLY | os.O_CREAT, 0o644),
        'mkdir': lambda: os.mkdir(P('newdir')),
        'mkdir_existing': lambda: os.mkdir(P('sys')),
        'rmdir': lambda: os.rmdir(P('sys')),
        'unlink': lambda: os.unlink(P('meminfo')),
        'unlink_missing': lambda: os.unlink(P('nonexistent')),
        'unlink_in_piddir': lambda: os.unlink(P(pid, 'smaps')),
        'chmod_dir': lambda: os.chmod(P('sys'), 0o755),
        'chmod_pid_file': lambda: os.chmod(P(pid, 'smaps'), 0o644),
        'chmod_proc_entry': lambda: os.chmod(P('meminfo'), 0o444),
        'chown_dir': lambda: os.chown(P('sys'), 0, 0),
        'chown_proc_entry': lambda: os.chown(P('meminfo'), 0, 0),
        'truncate': lambda: os.truncate(P('meminfo'), 0),
        'rename': lambda: os.rename(P('meminfo'), P('meminfo2')),
        'rename_onto': lambda: os.rename(P('meminfo'), P('version')),
        'symlink': lambda: os.symlink('x', P('newlink')),
        'link': lambda: os.link(P('meminfo'), P('newhard')),
        'mkfifo': lambda: os.mkfifo(P('newfifo')),
        'setxattr_user': lambda: os.setxattr(P('meminfo'), 'user.x', b'1'),
        'setxattr_trusted': lambda: os.setxattr(P('meminfo'), 'trusted.x', b'1'),
        'getxattr': lambda: os.getxattr(P('meminfo'), 'user.x'),
        'listxattr': lambda: os.listxattr(P('meminfo')),
        'removexattr': lambda: os.removexattr(P('meminfo'), 'user.x'),
        'utime_explicit': lambda: os.utime(P('meminfo'), (0, 0)),
        'utime_now': lambda: os.utime(P('meminfo')),
    }
    print(json.dumps({k: ret(f) for k, f in ops.items()}))
''')

REAL_PROC_AS_ROOT = {
    'open_wronly_0444': 'ok', 'open_rdwr_0444': 'ok', 'open_trunc_0444': 'ok',
    'open_rdonly_0400': 'ok',
    'write_proc_entry': 'EIO', 'write_pid_file': 'EINVAL',
    'write_binary_pid_file': 'EINVAL', 'write_binary_proc_entry': 'EIO',
    'create_new': 'ENOENT', 'create_excl_existing': 'EEXIST', 'create_in_piddir': 'ENOENT',
    'mkdir': 'ENOENT', 'mkdir_existing': 'EEXIST', 'rmdir': 'EPERM',
    'unlink': 'EPERM', 'unlink_missing': 'ENOENT', 'unlink_in_piddir': 'EPERM',
    'chmod_dir': 'EPERM', 'chmod_pid_file': 'EPERM', 'chmod_proc_entry': 'ok',
    'chown_dir': 'EPERM', 'chown_proc_entry': 'ok',
    'truncate': 'ok', 'rename': 'ENOENT', 'rename_onto': 'EPERM',
    'symlink': 'ENOENT', 'link': 'ENOENT', 'mkfifo': 'ENOENT',
    'setxattr_user': 'EOPNOTSUPP', 'setxattr_trusted': 'EOPNOTSUPP', 'getxattr': 'EOPNOTSUPP',
    'listxattr': 'ok', 'removexattr': 'EOPNOTSUPP', 'utime_explicit': 'ok', 'utime_now': 'ok',
}
REAL_PROC_AS_NOBODY = {   # pid: /proc/1, owned by root
    'open_wronly_0444': 'EACCES', 'open_rdwr_0444': 'EACCES', 'open_trunc_0444': 'EACCES',
    'open_rdonly_0400': 'EACCES',
    'write_proc_entry': 'EACCES', 'write_pid_file': 'EACCES',
    'write_binary_pid_file': 'EACCES', 'write_binary_proc_entry': 'EACCES',
    'create_new': 'ENOENT', 'create_excl_existing': 'EEXIST', 'create_in_piddir': 'ENOENT',
    'mkdir': 'ENOENT', 'mkdir_existing': 'EEXIST', 'rmdir': 'EACCES',
    'unlink': 'EACCES', 'unlink_missing': 'ENOENT', 'unlink_in_piddir': 'EPERM',
    'chmod_dir': 'EPERM', 'chmod_pid_file': 'EPERM', 'chmod_proc_entry': 'EPERM',
    'chown_dir': 'EPERM', 'chown_proc_entry': 'EPERM',
    'truncate': 'EACCES', 'rename': 'ENOENT', 'rename_onto': 'EACCES',
    'symlink': 'ENOENT', 'link': 'ENOENT', 'mkfifo': 'ENOENT',
    'setxattr_user': 'EACCES', 'setxattr_trusted': 'EPERM', 'getxattr': 'EOPNOTSUPP',
    'listxattr': 'ok', 'removexattr': 'EACCES', 'utime_explicit': 'EPERM', 'utime_now': 'EACCES',
}
EMULATED_AS_ROOT = dict(REAL_PROC_AS_ROOT, chmod_proc_entry='EPERM', chown_proc_entry='EPERM')
EMULATED_AS_NOBODY = dict(REAL_PROC_AS_NOBODY, create_new='EACCES', create_in_piddir='EACCES',
                          mkdir='EACCES', unlink_in_piddir='EACCES', rename='EACCES',
                          symlink='EACCES', link='EPERM', mkfifo='EACCES')


def _errno_names(table):
    # errno.errorcode names EOPNOTSUPP and ENOTSUP alike (same number)
    return {k: errno.errorcode.get(getattr(errno, v, -1), v) for k, v in table.items()}


@pytest.fixture(scope='module')
def probe_tree_mount():
    """A /proc-like root (meminfo, version, kpagecount, sys/, pid dir 1)."""
    mp = public_tempdir('mmemu-probe-')
    script = os.path.join(mp + '-probe.py')
    with open(script, 'w') as f:
        f.write(PROBE)
    os.chmod(script, 0o644)
    proc = start_probe_mount(mp)
    try:
        yield mp, script
    finally:
        stop_fake_mount(proc, mp)
        os.rmdir(mp)
        os.unlink(script)


SERVE_PROBE = r'''
import errno, sys
from procfs import fuse, tree as T
zeros = lambda off, size, ctx: bytes(size)
pid1 = T.Dir({'smaps': T.TextFile(lambda: b'x\n'),
              'pagemap': T.BinaryFile(zeros, 1 << 20, mode=0o400)})
root = T.Dir({'meminfo': T.TextFile(lambda: b'MemTotal: 1 kB\n', write_errno=errno.EIO),
              'version': T.TextFile(lambda: b'Linux\n', write_errno=errno.EIO),
              'kpagecount': T.BinaryFile(zeros, 1 << 20, mode=0o400, write_errno=errno.EIO),
              'sys': T.Dir({}), '1': pid1})
fuse.mount(root, sys.argv[1], foreground=True, ready_callback=lambda: print('READY', flush=True))
'''


def start_probe_mount(mp):
    return start_fake_mount(mp, 'import sys; sys.path.insert(0, %r)\n' % str(PROJECT_ROOT) + SERVE_PROBE)


def _system_python():
    # the test interpreter may live under /root (0700): nobody needs its own
    for cand in ('/usr/bin/python3', '/usr/local/bin/python3'):
        if os.access(cand, os.X_OK):
            return cand
    raise AssertionError('no system python3 for running the probe as nobody')


def test_changes_fail_as_on_real_proc_as_root(probe_tree_mount):
    mp, script = probe_tree_mount
    out = subprocess.run([sys.executable, script, mp, '1'], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == _errno_names(EMULATED_AS_ROOT)


def test_changes_fail_as_on_real_proc_as_nobody(probe_tree_mount):
    mp, script = probe_tree_mount
    res = as_nobody([_system_python(), script, mp, '1'], text=True)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == _errno_names(EMULATED_AS_NOBODY)


def test_clean_unmount_on_sigterm():
    mp = public_tempdir('mmemu-term-')
    try:
        proc = start_fake_mount(mp)
        assert os.path.ismount(mp)
        assert os.listdir(mp)
        status = stop_fake_mount(proc, mp)
        assert status == 0
        assert not os.path.ismount(mp)
        assert os.listdir(mp) == []
    finally:
        if os.path.ismount(mp):
            subprocess.run(['fusermount3', '-u', '-z', mp])
        os.rmdir(mp)


def test_clean_exit_on_fusermount_u():
    mp = public_tempdir('mmemu-fum-')
    try:
        proc = start_fake_mount(mp)
        subprocess.run(['fusermount3', '-u', mp], check=True)
        assert proc.wait(timeout=20) == 0
        assert not os.path.ismount(mp)
    finally:
        if os.path.ismount(mp):
            subprocess.run(['fusermount3', '-u', '-z', mp])
        os.rmdir(mp)

"""The file tree served under the mount point, independent of the mm core.

A tree is built from four node types, mirroring how fs/proc builds its
entries:

- ``Dir``: a directory whose entries come from a dict or a callable
  (like ``proc_pident_readdir()`` listing a pid directory on demand).
- ``TextFile``: a seq_file-style text file, rendered whole when it is
  opened; every read of that open file is served from that one snapshot
  (``single_open()`` + ``seq_read()``).
- ``BinaryFile``: a file read by offset, like ``pagemap_read()`` and
  ``kpagecount_read()``: u64 entries, 8-byte aligned reads, EOF past the
  end of the address space / dumpable PFN range.
- ``Symlink``: ``/proc/self``, ``/proc/PID/exe`` and the like.

Nothing here knows about FUSE; ``procfs.fuse`` and ``procfs.export`` serve
the same tree.
"""
from dataclasses import dataclass
import errno
import os
import stat

PM_ENTRY_BYTES = 8   # fs/proc/task_mmu.c, also KPMSIZE in fs/proc/page.c


@dataclass(frozen=True)
class ReadContext:
    """Who opened the file: the credentials a procfs read handler sees via
    file->f_cred (e.g. pagemap_read() decides PFN visibility from the
    opener's CAP_SYS_ADMIN). uid 0 stands for a capable opener."""
    uid: int = 0
    gid: int = 0
    pid: int = 0

    @property
    def capable(self):
        return self.uid == 0

    def may_ptrace(self, owner):
        """__ptrace_may_access() with PTRACE_MODE_READ_FSCREDS for a task
        whose real, effective and saved ids are `owner` (uid, gid): the
        caller's fsuid and fsgid equal them, or it is capable
        (CAP_SYS_PTRACE).  Emulated processes are dumpable."""
        return self.capable or (self.uid, self.gid) == tuple(owner)


ROOT_CONTEXT = ReadContext()


class Node:
    """Common attributes: permission bits and owner, as getattr reports them.
    ``ptrace_owner``: (uid, gid) of the task whose mm the file shows; set,
    opening it (reading the link) needs ReadContext.may_ptrace() of that
    task, as proc_mem_open() / mm_access() and proc_fd_access_allowed()
    require (EACCES otherwise).  ``seq_lseek``: lseek() accepts only
    SEEK_SET and SEEK_CUR (seq_lseek(), mem_lseek()); others give EINVAL."""
    file_type = 0

    def __init__(self, mode, uid=0, gid=0, ptrace_owner=None, seq_lseek=True):
        if not isinstance(mode, int) or mode & ~0o7777:
            raise ValueError('mode must be permission bits (0..0o7777), not %r' % (mode,))
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.ptrace_owner = ptrace_owner
        self.seq_lseek = seq_lseek

    @property
    def st_mode(self):
        return self.file_type | self.mode


class Dir(Node):
    """A directory. ``entries`` is a dict name -> Node, or a callable returning
    one. The callable runs at the first lookup or listing; its result is kept
    (the served state is one snapshot) unless ``cache=False``."""
    file_type = stat.S_IFDIR

    def __init__(self, entries=None, mode=0o555, uid=0, gid=0, cache=True):
        super().__init__(mode, uid, gid)
        self._entries = {} if entries is None else entries
        self._cache = cache
        self._children = None

    def children(self):
        if self._children is not None:
            return self._children
        entries = self._entries() if callable(self._entries) else self._entries
        if not isinstance(entries, dict):
            raise TypeError('directory entries must be a dict, not %s' % type(entries).__name__)
        for name, node in entries.items():
            if not isinstance(name, str) or not name or name in ('.', '..') or '/' in name or '\0' in name:
                raise ValueError('bad directory entry name %r' % (name,))
            if not isinstance(node, Node):
                raise TypeError('entry %r is a %s, not a tree node' % (name, type(node).__name__))
        if self._cache:
            self._children = entries
        return entries

    def lookup(self, name):
        node = self.children().get(name)
        if node is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)
        return node

    def nlink(self):
        """2 + number of subdirectories, as for any Unix directory."""
        return 2 + sum(1 for n in self.children().values() if isinstance(n, Dir))


class TextFile(Node):
    """A text file rendered whole at open (single_open()/seq_read()).

    ``render()`` returns bytes (str is encoded as UTF-8). ``write_errno`` is
    what a write(2) through a write-opened handle fails with: EINVAL for
    files without a write op (do_dentry_open() clears FMODE_CAN_WRITE; all
    of /proc/PID/*), EIO for proc_create() entries without proc_write such
    as /proc/meminfo (proc_reg_write() -> pde_write()).

    ``cache``: the text depends only on state that never changes while this
    tree is served (a replayed kernel; a live mount swaps in a new tree
    after each batch of steps), so the first render is kept, up to
    CACHE_MAX bytes, and later opens get the same bytes.  Files showing
    the clock (uptime, /proc/stat) are not cached."""
    file_type = stat.S_IFREG
    CACHE_MAX = 16 << 20

    def __init__(self, render, mode=0o444, uid=0, gid=0, write_errno=errno.EINVAL, cache=False):
        super().__init__(mode, uid, gid)
        if not callable(render):
            raise TypeError('render must be callable')
        self._render = render
        self.write_errno = write_errno
        self.cache = cache
        self._cached = None

    def render(self):
        if self._cached is not None:
            return self._cached
        data = self._render()
        if isinstance(data, str):
            data = data.encode()
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError('render() returned %s, not bytes' % type(data).__name__)
        data = bytes(data)
        if self.cache and len(data) <= self.CACHE_MAX:
            self._cached = data
        return data


class BinaryFile(Node):
    """A file of u64 entries served by offset (pagemap, kpagecount, kpageflags).

    ``read(offset, size, ctx)`` returns the bytes of [offset, offset+size);
    it is only called for ranges inside [0, size_limit). ``ctx`` is the
    opener's ReadContext (pagemap_read() hides PFNs from readers without
    CAP_SYS_ADMIN; the callable decides). ``extents()``, if given, returns
    (offset, length) pairs covering every byte that may be non-zero, so an
    export can write a sparse file.
    """
    file_type = stat.S_IFREG

    def __init__(self, read, size_limit, mode=0o400, uid=0, gid=0, align8=True,
                 extents=None, write_errno=errno.EINVAL):
        super().__init__(mode, uid, gid)
        if not callable(read):
            raise TypeError('read must be callable')
        if not isinstance(size_limit, int) or size_limit < 0:
            raise ValueError('size_limit must be a non-negative int, not %r' % (size_limit,))
        self._read = read
        self.size_limit = size_limit
        self.align8 = align8
        self._extents = extents
        self.write_errno = write_errno

    def pread(self, offset, size, ctx=ROOT_CONTEXT):
        """What read(2) at ``offset`` returns, like pagemap_read():

        - offset or size not a multiple of 8 (when align8): EINVAL;
        - at or past size_limit: EOF (b'');
        - otherwise exactly min(size, size_limit - offset) bytes, never short.
        """
        if offset < 0 or size < 0:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        if self.align8 and (offset % PM_ENTRY_BYTES or size % PM_ENTRY_BYTES):
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        if offset >= self.size_limit or size == 0:
            return b''
        size = min(size, self.size_limit - offset)
        data = self._read(offset, size, ctx)
        if type(data) is not bytes:
            data = bytes(data)
        if len(data) < size:
            return data + bytes(size - len(data))
        return data if len(data) == size else data[:size]

    def extents(self):
        """Populated (offset, length) pairs clipped to [0, size_limit), sorted
        and merged; the whole file when no extents() callable was given."""
        if self._extents is None:
            raw = [(0, self.size_limit)]
        else:
            raw = self._extents()
        out = []
        for off, length in sorted(raw):
            end = min(off + length, self.size_limit)
            off = max(off, 0)
            if end <= off:
                continue
            if out and off <= out[-1][1]:
                out[-1][1] = max(out[-1][1], end)
            else:
                out.append([off, end])
        return [(s, e - s) for s, e in out]


class Symlink(Node):
    """A symbolic link (procfs shows lrwxrwxrwx)."""
    file_type = stat.S_IFLNK

    def __init__(self, target, uid=0, gid=0):
        super().__init__(0o777, uid, gid)
        if not isinstance(target, str) or not target:
            raise ValueError('symlink target must be a non-empty string')
        self.target = target


def split_path(path):
    """'/proc/100/smaps' -> ['proc', '100', 'smaps']; '' and '/' -> []."""
    return [p for p in path.split('/') if p and p != '.']


def resolve(root, path):
    """The node at ``path`` (absolute or relative to ``root``). Symlinks are
    not followed: the kernel resolves them before asking the filesystem.
    Raises FileNotFoundError (ENOENT) for an unknown name and
    NotADirectoryError (ENOTDIR) when a non-final component is not a Dir."""
    node = root
    for name in split_path(path):
        if name == '..':
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        if not isinstance(node, Dir):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
        node = node.lookup(name)
    return node


def walk(root, prefix=''):
    """Yields (relative path, node) for every node below ``root``, parents
    before children, names sorted."""
    for name, node in sorted(root.children().items()):
        path = prefix + name
        yield path, node
        if isinstance(node, Dir):
            yield from walk(node, path + '/')

"""Writes a ``procfs.tree`` tree into a directory as plain files.

The result is what the FUSE mount shows, frozen: text files hold the bytes
one open would render, binary files (pagemap, kpagecount) are sparse files
holding the entries at the same offsets (only non-zero blocks of the
node's extents are written; the rest are holes that read as zeros), and
symlinks are symlinks. A sparse file ends at the end of its last extent, so
a read past it gets EOF as procfs gives past the address space. Modes are
copied; owners too when running as root (the owner of /proc/PID is what
smem and top report).
"""
import os

from procfs.tree import ROOT_CONTEXT, BinaryFile, Dir, Symlink, TextFile
from procfs.progress import Progress

CHUNK = 1 << 20
BLOCK = 4096


class ExportError(Exception):
    """A node that cannot be written; the message names its path."""


def _write_sparse(node, path, ctx):
    zero_block = bytes(BLOCK)
    end = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for off, length in node.extents():
            stop = off + length
            # whole 8-byte entries around the extent when reads must be aligned
            pos = off - off % 8 if node.align8 else off
            if node.align8 and stop % 8:
                stop += 8 - stop % 8
            stop = min(stop, node.size_limit)
            while pos < stop:
                size = min(CHUNK - pos % CHUNK, stop - pos)
                if node.align8 and size % 8:
                    size += 8 - size % 8
                data = node.pread(pos, size, ctx)
                if not data:
                    break
                view = memoryview(data)
                for b in range(0, len(data), BLOCK):
                    block = view[b:b + BLOCK]
                    if block != zero_block[:len(block)]:
                        os.pwrite(fd, block, pos + b)
                pos += len(data)
            end = max(end, pos)
        os.ftruncate(fd, end)
    finally:
        os.close(fd)


def _set_owner(path, node, as_root):
    if as_root:
        os.lchown(path, node.uid, node.gid)


def _count_entries(dnode):
    return sum(1 + (_count_entries(n) if isinstance(n, Dir) else 0)
               for n in dnode.children().values())


def export(root, directory, ctx=ROOT_CONTEXT):
    """Writes the tree below ``root`` into ``directory`` (created if missing).
    ``ctx`` is the reader the files are rendered for (root by default:
    PFNs visible). Returns the number of entries written."""
    as_root = os.geteuid() == 0
    os.makedirs(directory, exist_ok=True)
    count = 0
    dirs = []
    bar = Progress('exporting', _count_entries(root))

    def visit(dirpath, dnode):
        nonlocal count
        for name, node in sorted(dnode.children().items()):
            path = os.path.join(dirpath, name)
            bar.update(count, os.path.relpath(path, directory))
            count += 1
            if isinstance(node, Dir):
                os.mkdir(path, 0o700)
                visit(path, node)
                dirs.append((path, node))
            elif isinstance(node, Symlink):
                os.symlink(node.target, path)
                _set_owner(path, node, as_root)
            elif isinstance(node, TextFile):
                try:
                    data = node.render()
                except Exception as e:
                    raise ExportError('%s: rendering failed: %s: %s' % (path, type(e).__name__, e)) from e
                with open(path, 'wb') as f:
                    f.write(data)
                os.chmod(path, node.mode)
                _set_owner(path, node, as_root)
            elif isinstance(node, BinaryFile):
                try:
                    _write_sparse(node, path, ctx)
                except OSError:
                    raise
                except Exception as e:
                    raise ExportError('%s: reading failed: %s: %s' % (path, type(e).__name__, e)) from e
                os.chmod(path, node.mode)
                _set_owner(path, node, as_root)
            else:
                raise TypeError('%s: unknown node type %s' % (path, type(node).__name__))

    with bar:
        visit(directory, root)
    # directory modes last, children before parents: a 0555 directory is
    # filled by then. ``directory`` itself keeps its mode.
    for path, node in dirs:
        os.chmod(path, node.mode)
        _set_owner(path, node, as_root)
    return count

"""Reading a served tree back as values, the way a monitoring tool does.

``ProcView`` reads one config's subtree (``CONFIG/proc/...``,
``CONFIG/sys/...``) through a *source*: the in-memory tree
(``TreeSource``, no mount needed) or a directory on disk (``DirSource``:
an export, a FUSE mount, or a real machine's ``/``).  Every value comes from
the bytes of a rendered file: text files are parsed as their kernel
formats print them (fs/proc/meminfo.c, task_mmu.c show_smap(),
show_numa_map(), mm/memcontrol.c memory_stat_format()), pagemap and
kpagecount/kpageflags are read as u64 entries at their offsets
(Documentation/admin-guide/mm/pagemap.rst).
"""
import errno
import os
from pathlib import Path

import numpy as np

from .tree import BinaryFile, Dir, TextFile, resolve

PAGE_SIZE = 4096
PM_PFN_MASK = (1 << 55) - 1
PM_MMAP_EXCLUSIVE = 56
PM_FILE = 61
PM_PRESENT = 63


class TreeSource:
    """Reads the nodes of a ``procfs.tree`` tree (rendered at each read)."""

    def __init__(self, root):
        self.root = root

    def read(self, rel):
        node = resolve(self.root, rel)
        if isinstance(node, Dir):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), rel)
        if isinstance(node, TextFile):
            return node.render()
        if isinstance(node, BinaryFile):
            raise ValueError('%s is read by offset (pread)' % rel)
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), rel)

    def pread(self, rel, offset, size):
        node = resolve(self.root, rel)
        if not isinstance(node, BinaryFile):
            raise ValueError('%s is not a binary file' % rel)
        return node.pread(offset, size)

    def listdir(self, rel):
        node = resolve(self.root, rel)
        if not isinstance(node, Dir):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), rel)
        return sorted(node.children())


class DirSource:
    """Reads files below a directory: an export, a mount, or ``/``."""

    def __init__(self, path):
        self.path = Path(path)

    def read(self, rel):
        return (self.path / rel).read_bytes()

    def pread(self, rel, offset, size):
        with open(self.path / rel, 'rb') as f:
            data = os.pread(f.fileno(), size, offset)
        return data + bytes(size - len(data))     # a hole past an export's end reads as 0

    def listdir(self, rel):
        return sorted(os.listdir(self.path / rel))


def _number(text):
    """'64 kB' -> 64, '1' -> 1; anything else stays a string."""
    parts = text.split()
    if len(parts) in (1, 2) and parts[0].lstrip('-').isdigit() and parts[1:] in ([], ['kB']):
        return int(parts[0])
    return text.strip()


def parse_colon_lines(text):
    """'Key:   value [kB]' lines (meminfo, smaps bodies, status) -> dict."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(':')
        if sep:
            out[key.strip()] = _number(value)
    return out


def parse_space_lines(text):
    """'key value' lines (vmstat, memory.stat) -> {key: int}."""
    out = {}
    for line in text.splitlines():
        f = line.split()
        if len(f) == 2:
            out[f[0]] = int(f[1])
    return out


def parse_maps_line(line):
    """(start, end, perms, name) of one maps/smaps header line."""
    f = line.split(None, 5)
    lo, hi = f[0].split('-')
    return int(lo, 16), int(hi, 16), f[1], f[5].rstrip('\n') if len(f) == 6 else ''


def parse_smaps(text):
    """[{'start', 'end', 'perms', 'name', 'fields': {...}}] of /proc/PID/smaps."""
    blocks = []
    for line in text.splitlines():
        head = line.split(None, 1)[0] if line else ''
        if '-' in head and not head.endswith(':') and all(
                c in '0123456789abcdef' for c in head.replace('-', '')):
            start, end, perms, name = parse_maps_line(line)
            blocks.append({'start': start, 'end': end, 'perms': perms, 'name': name,
                           'fields': {}})
        elif blocks:
            key, _, value = line.partition(':')
            blocks[-1]['fields'][key.strip()] = _number(value)
    return blocks


def parse_numa_maps_line(line):
    """(start, policy, {token: int or True}) of one numa_maps line; a
    token without '=' (heap, stack, huge) is True, file=... is a string."""
    f = line.split()
    tokens = {}
    for tok in f[2:]:
        key, sep, value = tok.partition('=')
        tokens[key] = (int(value) if value.isdigit() else value) if sep else True
    return int(f[0], 16), f[1], tokens


class ProcView:
    """One config's /proc and /sys, read as values.

    ``source`` is a TreeSource or DirSource whose root holds ``proc/`` and
    ``sys/``; ``path`` is that root on disk when there is one (a mount or
    an export), for handing to a tool."""

    def __init__(self, source, config=None, path=None):
        self.source = source
        self.config = config
        self.path = Path(path) if path is not None else None

    @property
    def proc(self):
        """The directory to give a tool as its /proc (None for a tree)."""
        return self.path / 'proc' if self.path is not None else None

    def __repr__(self):
        return 'ProcView(%s%s)' % (self.config or '', ' at %s' % self.path if self.path else '')

    # --- raw -------------------------------------------------------------------------
    def read_bytes(self, rel):
        """The bytes of a text file (one open's rendering), e.g. 'proc/meminfo'."""
        return self.source.read(rel)

    def read_text(self, rel):
        return self.read_bytes(rel).decode()

    def read_u64(self, rel, first, count):
        """`count` u64 entries of a binary file from entry `first`."""
        data = self.source.pread(rel, 8 * first, 8 * count)
        return np.frombuffer(data, '<u8').astype(np.uint64)

    def pids(self):
        return sorted(int(n) for n in self.source.listdir('proc') if n.isdigit())

    # --- system-wide --------------------------------------------------------------------
    def meminfo(self):
        """/proc/meminfo as {key: kB} (HugePages_* are counts)."""
        return parse_colon_lines(self.read_text('proc/meminfo'))

    def vmstat(self):
        return parse_space_lines(self.read_text('proc/vmstat'))

    def memcg_stat(self, cgroup='/', version=2):
        """memory.stat of a cgroup (bytes; v1 also has total_*)."""
        base = 'sys/fs/cgroup/%s' % ('unified' if version == 2 else 'memory')
        rel = base + ('' if cgroup == '/' else cgroup) + '/memory.stat'
        return parse_space_lines(self.read_text(rel))

    def kpagecount(self, pfns):
        """/proc/kpagecount at each PFN."""
        return [int(self.read_u64('proc/kpagecount', int(p), 1)[0]) for p in pfns]

    def kpageflags(self, pfns):
        return [int(self.read_u64('proc/kpageflags', int(p), 1)[0]) for p in pfns]

    # --- per process ----------------------------------------------------------------------
    def maps(self, pid):
        """[(start, end, perms, name)] of /proc/PID/maps."""
        return [parse_maps_line(ln) for ln in self.read_text('proc/%d/maps' % pid).splitlines()]

    def smaps(self, pid):
        """The blocks of /proc/PID/smaps (see parse_smaps)."""
        return parse_smaps(self.read_text('proc/%d/smaps' % pid))

    def smaps_rollup(self, pid):
        """/proc/PID/smaps_rollup fields as {name: kB}."""
        lines = self.read_text('proc/%d/smaps_rollup' % pid).splitlines()
        return parse_colon_lines('\n'.join(lines[1:]))

    def smaps_sum(self, pid, name=None, starts=None):
        """The numeric smaps fields summed over the VMAs named `name` (as
        maps prints it: '[anon:buf]', '/data') or starting at `starts`."""
        total, found = {}, False
        for b in self.smaps(pid):
            if (name is not None and b['name'] == name) or (starts is not None and b['start'] in starts):
                found = True
                for key, v in b['fields'].items():
                    if isinstance(v, int):
                        total[key] = total.get(key, 0) + v
        if not found:
            raise LookupError('pid %d has no VMA %s in smaps'
                              % (pid, name if name is not None else 'at %s' % sorted(starts)))
        return total

    def numa_maps(self, pid):
        """[(start, policy, tokens)] of /proc/PID/numa_maps."""
        return [parse_numa_maps_line(ln)
                for ln in self.read_text('proc/%d/numa_maps' % pid).splitlines()]

    def pagemap(self, pid, start, nr_pages):
        """Pagemap entries of `nr_pages` virtual pages from address `start`."""
        return Pagemap(self.read_u64('proc/%d/pagemap' % pid, start // PAGE_SIZE, nr_pages))


class Pagemap:
    """Pagemap entries of consecutive virtual pages (pagemap.rst bits)."""

    def __init__(self, entries):
        self.entries = np.asarray(entries, dtype=np.uint64)

    def __len__(self):
        return len(self.entries)

    def bit(self, n):
        """Bit n of every entry, as an int array of 0/1."""
        return ((self.entries >> np.uint64(n)) & np.uint64(1)).astype(np.int64)

    @property
    def present(self):
        return self.bit(PM_PRESENT)

    @property
    def exclusive(self):
        """Bit 56, PM_MMAP_EXCLUSIVE."""
        return self.bit(PM_MMAP_EXCLUSIVE)

    @property
    def file(self):
        """Bit 61, PM_FILE (file-page or shared-anon)."""
        return self.bit(PM_FILE)

    @property
    def pfn(self):
        """Bits 0-54; -1 where the page is not present."""
        pfn = (self.entries & np.uint64(PM_PFN_MASK)).astype(np.int64)
        return np.where(self.present == 1, pfn, -1)

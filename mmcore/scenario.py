"""Scenario loader and validator (scenario format version 1).

A scenario (docs/scenario-format.md) is read from YAML, checked completely
and turned into typed, fully resolved steps before anything runs: every
default is filled in, every size is in bytes, every `length` is resolved
against the size of its range at that point of the replay.  Anything wrong
raises ScenarioError("FILE:LINE: what is wrong").

Resolving and checking range arguments needs a small bookkeeping model of the
named ranges of every process (NamedRange): which pages of a range are still
mapped, which are MADV_DONTFORK, how big it is after mremap.  It knows no
memory semantics; the mm core replays the steps for that.
"""
from collections import Counter
from dataclasses import dataclass, field
import re
import reprlib
from typing import ClassVar

import yaml

from .units import (PAGE_SIZE, PMD_SIZE, KiB, MiB, GiB, is_power_of_2,
                    size_bytes, size_name)

FORMAT_VERSION = 1

NAME_RE = re.compile(r'[a-z0-9-]+')            # scenario name, snapshot labels
RANGE_NAME_RE = re.compile(r'[A-Za-z0-9_.-]+')  # mmap names, file names
CGROUP_COMPONENT_RE = re.compile(r'[^\s/]+')

# hugepages-<size>kB/enabled exists for the anonymous mTHP orders 2..PMD_ORDER
# (THP_ORDERS_ALL_ANON excludes orders 0 and 1).
THP_SIZES = tuple(16 * KiB << i for i in range(8))    # 16K .. 2M
THP_ENABLED = ('always', 'madvise', 'never')
THP_SIZE_ENABLED = ('always', 'inherit', 'madvise', 'never')
SHMEM_ENABLED = ('always', 'within_size', 'advise', 'never', 'deny', 'force')

KINDS = ('anon', 'shared-anon', 'file', 'shared-file')
FILE_KINDS = ('file', 'shared-file')
PROTS = ('rw', 'r', 'none')
ADVICES = ('hugepage', 'nohugepage', 'dontneed', 'free', 'cold', 'pageout',
           'collapse', 'dontfork', 'dofork', 'wipeonfork', 'keeponfork')
MAPCOUNT_MODES = ('per-page', 'none')
BITS = (32, 64)

DEFAULT_MEMORY = GiB
MIN_MEMORY = 16 * MiB
PID_MAX_LIMIT = 4 * 1024 * 1024         # PID_MAX_LIMIT on 64-bit
TASK_COMM_LEN = 16
ID_MAX = (1 << 32) - 2                  # uid_t/gid_t; (uid_t)-1 is no id
TASK_SIZE_MAX = (1 << 47) - PAGE_SIZE   # x86_64, 4-level page tables
# user address space per word size: x86-64 4-level TASK_SIZE_MAX, the
# 3G/1G split of the 32-bit profiles
TASK_SIZE = {64: TASK_SIZE_MAX, 32: 3 * GiB}
# the largest machine the emulator models: per-frame state of every frame
# is kept for each kernel config served side by side
MAX_MEMORY = 256 * GiB
# a file's folio_size: up to order 11 (8M), for kernels that map folios
# larger than a PMD (the 2026 RFC); the 6.18 kernels refuse more than
# MAX_PAGECACHE_ORDER = HPAGE_PMD_ORDER when they load the scenario
MAX_PAGECACHE_FOLIO = 4 * PMD_SIZE
# file sizes the loader accepts (a clear error instead of a host MemoryError)
MAX_FILE_SIZE = 64 * GiB
MAX_LFS_FILESIZE = (1 << 63) - 1
MAX_NESTING = 64                        # YAML collections inside each other
SIZE_SUFFIXES = 'K, M, G or T'


class ScenarioError(Exception):
    """An invalid scenario; str() is "FILE:LINE: what is wrong"."""

    def __init__(self, message, path=None, line=None):
        super().__init__(message)
        self.path = path
        self.line = line


def _error(path, line, reason):
    where = '%s:%d' % (path, line) if line else str(path)
    return ScenarioError('%s: %s' % (where, reason), path, line)


def parse_size(value, where):
    """Bytes of a size written as an int or "4K"/"64K"/"2M"/"1G" (also "4KB",
    "4KiB"); `where` prefixes the error message."""
    try:
        return size_bytes(value)
    except ValueError as e:
        raise ScenarioError('%s: %s' % (where, e)) from None


# --- THP knobs ---------------------------------------------------------------

def _full_sizes(sizes):
    """Every supported size: missing = never, except the PMD size = inherit."""
    out = {s: 'never' for s in THP_SIZES}
    out[PMD_SIZE] = 'inherit'
    out.update(sizes)
    return out


@dataclass(frozen=True)
class ThpSettings:
    """The knobs of /sys/kernel/mm/transparent_hugepage.

    enabled:       the top-level `enabled` (governs the PMD size and every
                   size set to `inherit`)
    sizes:         folio size in bytes -> hugepages-<size>kB/enabled, for
                   every size in THP_SIZES
    shmem_enabled: the top-level `shmem_enabled`
    use_zero_page: read faults on anonymous memory map the (huge) zero page
    """
    enabled: str = 'madvise'
    sizes: dict = field(default_factory=dict)
    shmem_enabled: str = 'never'
    use_zero_page: bool = True

    def __post_init__(self):
        if self.enabled not in THP_ENABLED:
            raise ValueError('thp enabled: bad value %r (expected one of %s)'
                             % (self.enabled, ', '.join(THP_ENABLED)))
        if self.shmem_enabled not in SHMEM_ENABLED:
            raise ValueError('thp shmem_enabled: bad value %r (expected one of %s)'
                             % (self.shmem_enabled, ', '.join(SHMEM_ENABLED)))
        if not isinstance(self.use_zero_page, bool):
            raise ValueError('thp use_zero_page: expected true or false, got %r'
                             % (self.use_zero_page,))
        sizes = {}
        for k, v in self.sizes.items():
            size = size_bytes(k)
            if size not in THP_SIZES:
                raise ValueError('thp sizes: unsupported size %r (supported: %s)'
                                 % (k, ', '.join(size_name(s) for s in THP_SIZES)))
            if v not in THP_SIZE_ENABLED:
                raise ValueError('thp sizes: bad value %r for %s (expected one of %s)'
                                 % (v, size_name(size), ', '.join(THP_SIZE_ENABLED)))
            sizes[size] = v
        object.__setattr__(self, 'sizes', _full_sizes(sizes))

    def __hash__(self):
        return hash((self.enabled, tuple(sorted(self.sizes.items())),
                     self.shmem_enabled, self.use_zero_page))

    def updated(self, partial):
        """These settings with the knobs of a `thp` step applied: keys of
        `partial` are enabled, sizes, shmem_enabled, use_zero_page; `sizes`
        changes only the sizes it names."""
        unknown = set(partial) - {'enabled', 'sizes', 'shmem_enabled', 'use_zero_page'}
        if unknown:
            raise ValueError('thp: unknown knob(s) %s' % ', '.join(sorted(map(str, unknown))))
        sizes = dict(self.sizes)
        for k, v in (partial.get('sizes') or {}).items():
            sizes[size_bytes(k)] = v
        return ThpSettings(enabled=partial.get('enabled', self.enabled),
                           sizes=sizes,
                           shmem_enabled=partial.get('shmem_enabled', self.shmem_enabled),
                           use_zero_page=partial.get('use_zero_page', self.use_zero_page))


# --- the scenario's objects --------------------------------------------------

@dataclass(frozen=True)
class FileSpec:
    """A file that file mappings refer to (`files` entry)."""
    name: str
    size: int
    folio_size: int
    path: str


@dataclass(frozen=True)
class ProcessSpec:
    """A process alive at the start (`processes` entry)."""
    pid: int
    comm: str
    cgroup: str
    uid: int = 0                    # real, effective, saved and fs uid
    gid: int = 0


@dataclass(frozen=True, kw_only=True)
class Step:
    """One step: `index` is its 1-based number, `line` its line in the file,
    `expect_fault` whether the kernel is expected to refuse it."""
    op: ClassVar[str] = ''
    index: int = 0
    line: int = 0
    expect_fault: bool = False

    def __str__(self):
        return 'step %d (%s, line %d)' % (self.index, self.op, self.line)


@dataclass(frozen=True)
class Mmap(Step):
    op: ClassVar[str] = 'mmap'
    pid: int
    name: str
    size: int
    kind: str = 'anon'
    file: str | None = None          # a key of Scenario.files for file kinds
    file_offset: int = 0
    prot: str = 'rw'
    align: int = PAGE_SIZE
    addr: int | None = None          # MAP_FIXED address


@dataclass(frozen=True)
class RangeStep(Step):
    """A step on [offset, offset + length) of the named range `vma`;
    offsets are relative to the start of the range as mmap created it."""
    pid: int
    vma: str
    offset: int
    length: int


@dataclass(frozen=True)
class Read(RangeStep):
    op: ClassVar[str] = 'read'


@dataclass(frozen=True)
class Write(RangeStep):
    op: ClassVar[str] = 'write'


@dataclass(frozen=True)
class Munmap(RangeStep):
    op: ClassVar[str] = 'munmap'


@dataclass(frozen=True)
class Pin(RangeStep):
    op: ClassVar[str] = 'pin'


@dataclass(frozen=True)
class Unpin(RangeStep):
    op: ClassVar[str] = 'unpin'


@dataclass(frozen=True)
class Mprotect(RangeStep):
    op: ClassVar[str] = 'mprotect'
    prot: str


@dataclass(frozen=True)
class Madvise(RangeStep):
    op: ClassVar[str] = 'madvise'
    advice: str


@dataclass(frozen=True)
class Fork(Step):
    op: ClassVar[str] = 'fork'
    pid: int
    child: int
    comm: str | None = None          # resolved by the loader: parent's comm


@dataclass(frozen=True)
class Exit(Step):
    op: ClassVar[str] = 'exit'
    pid: int


@dataclass(frozen=True)
class Mremap(Step):
    op: ClassVar[str] = 'mremap'
    pid: int
    vma: str
    new_size: int
    move_to: int | None = None


@dataclass(frozen=True)
class Thp(Step):
    """The complete THP settings in force from this step on."""
    op: ClassVar[str] = 'thp'
    settings: ThpSettings


@dataclass(frozen=True)
class Snapshot(Step):
    op: ClassVar[str] = 'snapshot'
    label: str


@dataclass(frozen=True, eq=False)
class Expect(Step):
    """Values stated at this point of the replay, for the verifier
    (procfs.expect); the kernel ignores the step.

    subject: one of EXPECT_SUBJECTS
    target:  the subject's resolved arguments (pid, vma, offset, length,
             since, at, cgroup, version), absent ones left out
    fields:  ((name, value, line), ...): the stated values as written, a
             scalar or list for every config, or a mapping config -> value
    configs: the config names the step speaks about (None: every config)
    """
    op: ClassVar[str] = 'expect'
    subject: str
    target: dict
    fields: tuple
    configs: tuple | None = None
    note: str = ''


# --- named-range bookkeeping ------------------------------------------------

def _ext_set(ext, lo, hi, on):
    """Page extents [(lo, hi)], sorted and disjoint, with [lo, hi) added
    (on) or removed."""
    out = []
    for a, b in ext:
        if b <= lo or a >= hi:
            out.append((a, b))
            continue
        if a < lo:
            out.append((a, lo))
        if b > hi:
            out.append((hi, b))
    if on and hi > lo:
        out.append((lo, hi))
        out.sort()
        merged = []
        for a, b in out:
            if merged and a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        out = merged
    return out


def _ext_minus(ext, other):
    for a, b in other:
        ext = _ext_set(ext, a, b, False)
    return ext


class NamedRange:
    """The pages of one range created by mmap, tracked by its name: which
    are still mapped and which are MADV_DONTFORK, as sorted page extents
    (cost proportional to the runs, not to the size)."""

    __slots__ = ('name', 'kind', 'file', 'file_offset', 'size', 'mapped', 'dontfork')

    def __init__(self, name, size, kind='anon', file=None, file_offset=0):
        self.name, self.kind, self.file, self.file_offset = name, kind, file, file_offset
        self.size = size
        self.mapped = [(0, size // PAGE_SIZE)] if size >= PAGE_SIZE else []
        self.dontfork = []

    def __repr__(self):
        return 'NamedRange(%r, size=%d, mapped=%r)' % (self.name, self.size,
                                                       self.mapped_extents())

    @staticmethod
    def _pages(offset, length):
        return offset // PAGE_SIZE, (offset + length) // PAGE_SIZE

    def unmap(self, offset, length):
        self.mapped = _ext_set(self.mapped, *self._pages(offset, length), False)

    def set_dontfork(self, offset, length, on):
        self.dontfork = _ext_set(self.dontfork, *self._pages(offset, length), on)

    def resize(self, new_size):
        """mremap: a grown range gets new mapped pages carrying the flags of
        its VMA (vma_expand() keeps vm_flags; mremap only ever resizes a
        range lying within one VMA)."""
        old_pages, new_pages = self.size // PAGE_SIZE, new_size // PAGE_SIZE
        end = max(old_pages, new_pages)
        self.mapped = _ext_set(self.mapped, new_pages, end, False)
        first_dontfork = bool(self.dontfork) and self.dontfork[0][0] == 0
        self.dontfork = _ext_set(self.dontfork, new_pages, end, False)
        if new_pages > old_pages:
            self.mapped = _ext_set(self.mapped, old_pages, new_pages, True)
            if first_dontfork:
                self.dontfork = _ext_set(self.dontfork, old_pages, new_pages, True)
        self.size = new_size

    def fork_copy(self):
        """The child's view after fork (dup_mmap() skips VM_DONTCOPY VMAs),
        or None when nothing of the range is copied."""
        mapped = _ext_minus(self.mapped, self.dontfork)
        if not mapped:
            return None
        child = NamedRange(self.name, self.size, self.kind, self.file, self.file_offset)
        child.mapped = mapped
        return child

    def first_mapped(self):
        """Offset of the first mapped page, None if nothing is mapped."""
        if not self.mapped:
            return None
        return self.mapped[0][0] * PAGE_SIZE

    def mapped_extents(self):
        """[(offset, length)] of the runs of mapped pages."""
        return [(a * PAGE_SIZE, (b - a) * PAGE_SIZE) for a, b in self.mapped]


class _Proc:
    __slots__ = ('comm', 'cgroup', 'ranges', 'pins')

    def __init__(self, comm, cgroup, ranges=None):
        self.comm, self.cgroup = comm, cgroup
        self.ranges = ranges or {}
        self.pins = Counter()       # (vma, offset, length) -> outstanding pins


class _Book:
    """Processes and their named ranges along the replay."""

    def __init__(self, processes):
        self.procs = {p.pid: _Proc(p.comm, p.cgroup) for p in processes}
        self.exited = {}            # pid -> index of its exit step

    def apply(self, st):
        if isinstance(st, (Thp, Snapshot, Expect)):
            return
        proc = self.procs[st.pid]
        if isinstance(st, Mmap):
            proc.ranges[st.name] = NamedRange(st.name, st.size, st.kind, st.file,
                                              st.file_offset)
        elif isinstance(st, Fork):
            ranges = {}
            for name, r in proc.ranges.items():
                c = r.fork_copy()
                if c is not None:
                    ranges[name] = c
            self.procs[st.child] = _Proc(st.comm, proc.cgroup, ranges)
            self.exited.pop(st.child, None)
        elif isinstance(st, Exit):
            del self.procs[st.pid]
            self.exited[st.pid] = st.index
        elif isinstance(st, Munmap):
            proc.ranges[st.vma].unmap(st.offset, st.length)
        elif isinstance(st, Madvise):
            if st.advice in ('dontfork', 'dofork'):
                proc.ranges[st.vma].set_dontfork(st.offset, st.length, st.advice == 'dontfork')
        elif isinstance(st, Mremap):
            proc.ranges[st.vma].resize(st.new_size)
        elif isinstance(st, Pin):
            proc.pins[(st.vma, st.offset, st.length)] += 1
        elif isinstance(st, Unpin):
            proc.pins[(st.vma, st.offset, st.length)] -= 1


# --- the scenario --------------------------------------------------------------

@dataclass
class Scenario:
    path: str
    name: str
    description: str
    memory: int                        # kernel.memory, bytes
    thp: ThpSettings                   # initial THP knobs
    files: dict                        # name -> FileSpec
    cgroups: list                      # '/' first, parents before children
    processes: list                    # ProcessSpec
    steps: list                        # Step subclasses, in order
    labels: list                       # snapshot labels, in order
    kernel_hints: dict = field(default_factory=dict)   # kernel.mapcount / kernel.bits

    def _snapshot_index(self, label):
        for i, st in enumerate(self.steps):
            if isinstance(st, Snapshot) and st.label == label:
                return i
        raise _error(self.path, None, 'no snapshot %r (labels: %s)'
                     % (label, ', '.join(self.labels) or 'none'))

    def steps_until(self, label):
        """The steps up to and including snapshot `label`."""
        return self.steps[:self._snapshot_index(label) + 1]

    def ranges_at(self, label=None):
        """{pid: {name: NamedRange}} of the live processes at snapshot
        `label` (at the end when None)."""
        steps = self.steps if label is None else self.steps_until(label)
        book = _Book(self.processes)
        for st in steps:
            book.apply(st)
        return {pid: p.ranges for pid, p in book.procs.items()}


# --- YAML with line numbers ------------------------------------------------------

class _LineMap(dict):
    line = 0
    key_lines = {}


class _LineList(list):
    line = 0
    item_lines = []


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that records line numbers, refuses nesting deeper than
    MAX_NESTING (the composer recurses per level) and reports integers it
    cannot read at their line."""

    def compose_node(self, parent, index):
        depth = getattr(self, '_depth', 0)
        if depth >= MAX_NESTING:
            raise yaml.composer.ComposerError(
                None, None, 'collections nested more than %d deep' % MAX_NESTING,
                self.peek_event().start_mark)
        self._depth = depth + 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth = depth


def _construct_map(loader, node):
    own = {id(k) for k, _ in node.value}
    loader.flatten_mapping(node)          # merge keys (<<)
    m = _LineMap()
    m.line = node.start_mark.line + 1
    m.key_lines = {}
    seen_own = set()
    for knode, vnode in node.value:
        key = loader.construct_object(knode, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, 'a mapping key must be a scalar', knode.start_mark) from None
        if id(knode) in own:
            if key in seen_own:
                raise yaml.constructor.ConstructorError(
                    None, None, 'duplicate key %r' % (key,), knode.start_mark)
            seen_own.add(key)
        m[key] = loader.construct_object(vnode, deep=True)
        m.key_lines[key] = knode.start_mark.line + 1
    return m


def _construct_seq(loader, node):
    s = _LineList(loader.construct_object(c, deep=True) for c in node.value)
    s.line = node.start_mark.line + 1
    s.item_lines = [c.start_mark.line + 1 for c in node.value]
    return s


def _construct_int(loader, node):
    text = loader.construct_scalar(node)
    try:
        v = yaml.constructor.SafeConstructor.construct_yaml_int(loader, node)
    except ValueError:
        raise yaml.constructor.ConstructorError(
            None, None, 'the integer %s... is too long to read' % text[:20],
            node.start_mark) from None
    if v == 0 and text.lstrip().startswith('-'):
        raise yaml.constructor.ConstructorError(
            None, None, 'negative zero (%s): write 0' % text, node.start_mark)
    return v


_YamlLoader.add_constructor('tag:yaml.org,2002:int', _construct_int)
_YamlLoader.add_constructor('tag:yaml.org,2002:map', _construct_map)
_YamlLoader.add_constructor('tag:yaml.org,2002:seq', _construct_seq)


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 60, 60
_REPR.repr__LineList = _REPR.repr_list          # reprlib dispatches on the type's name
_REPR.repr__LineMap = _REPR.repr_dict


def _short(v):
    """repr() of a value from the file, bounded in depth and length (YAML
    aliases can make a small file hold an exponentially large list)."""
    return _REPR.repr(v)


def _type_name(v):
    if v is None:
        return 'nothing'
    if isinstance(v, bool):
        return 'a boolean (%s)' % ('true' if v else 'false')
    if isinstance(v, dict):
        return 'a mapping'
    if isinstance(v, list):
        return 'a list'
    if isinstance(v, int):
        return 'an integer (%d)' % v
    if isinstance(v, str):
        return 'a string (%s)' % _short(v)
    return '%s (%s)' % (type(v).__name__, _short(v))


# --- the parser ------------------------------------------------------------------

TOP_KEYS = ('format', 'name', 'description', 'kernel', 'files', 'cgroups',
            'processes', 'steps')
KERNEL_KEYS = ('memory', 'page_size', 'thp', 'mapcount', 'bits')
THP_KEYS = ('enabled', 'sizes', 'shmem_enabled', 'use_zero_page')
FILE_KEYS = ('name', 'size', 'folio_size', 'path')
PROCESS_KEYS = ('pid', 'comm', 'cgroup', 'uid', 'gid')
RANGE_KEYS = ('vma', 'offset', 'length')
# operation -> (required keys, optional keys); `pid` and `expect` are added
# to every operation except thp and snapshot
STEP_KEYS = {
    'mmap': (('name', 'size'), ('kind', 'file', 'file_offset', 'prot', 'align', 'addr')),
    'read': (('vma',), ('offset', 'length')),
    'write': (('vma',), ('offset', 'length')),
    'fork': (('child',), ('comm',)),
    'exit': ((), ()),
    'munmap': (('vma',), ('offset', 'length')),
    'mprotect': (('vma', 'prot'), ('offset', 'length')),
    'mremap': (('vma',), ('new_size', 'move_to')),
    'madvise': (('vma', 'advice'), ('offset', 'length')),
    'pin': (('vma',), ('offset', 'length')),
    'unpin': (('vma',), ('offset', 'length')),
    'thp': ((), THP_KEYS),
    'snapshot': ((), ()),
    'expect': ((), ()),
}
# expect: subject -> (required, optional) arguments of the subject mapping
EXPECT_SUBJECTS = {
    'smaps': (('pid', 'vma'), ()),
    'smaps_rollup': (('pid',), ()),
    'numa_maps': (('pid', 'vma'), ()),
    'meminfo': ((), ('since',)),
    'vmstat': ((), ('since',)),
    'memcg': ((), ('cgroup', 'version', 'since')),
    'pages': (('pid', 'vma'), ('offset', 'length', 'since')),
    'folio': (('pid', 'vma'), ('offset', 'at')),
}
EXPECT_KEYS = ('configs', 'note')
RANGE_STEPS = {'read': Read, 'write': Write, 'munmap': Munmap, 'pin': Pin,
               'unpin': Unpin, 'mprotect': Mprotect, 'madvise': Madvise}


def size_limit_error(what, value, bits=64, memory=None, total=None):
    """Why `value` bytes do not fit the emulated architecture, or None.
    what: 'memory' (kernel.memory), 'mapping' (an mmap or mremap size or
    alignment; `total` is the process's mapped size with it), 'populate'
    (bytes a write or pin must back with new frames)."""
    task = TASK_SIZE[bits]
    whole = -(-task // MiB) * MiB
    space = size_name(whole) + (' less %s' % size_name(whole - task) if whole != task else '')
    if what == 'memory' and value > MAX_MEMORY:
        return 'kernel: memory: %s is more than the emulator holds (at most %s)' % (
            size_name(value), size_name(MAX_MEMORY))
    if what == 'mapping':
        if value > task:
            return '%s is larger than the user address space of a %d-bit task (%s)' % (
                size_name(value), bits, space)
        if total is not None and total > task:
            return 'the process would map %s, more than its %d-bit user address space (%s)' % (
                size_name(total), bits, space)
    if what == 'populate' and memory is not None and value > memory:
        return 'populating %s needs more frames than the machine has (kernel.memory %s)' % (
            size_name(value), size_name(memory))
    return None


class _Parser:
    def __init__(self, path):
        self.path = path
        self.memory, self.bits = None, 64     # kernel.memory and kernel.bits, once read

    def fail(self, line, reason):
        raise _error(self.path, line, reason)

    # --- YAML -------------------------------------------------------------
    def load_yaml(self, text):
        try:
            return yaml.load(text, Loader=_YamlLoader)
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            what = ' '.join(p for p in (e.problem, '(%s)' % e.context if e.context else None) if p)
            kind = 'YAML' if isinstance(e, (yaml.constructor.ConstructorError,
                                            yaml.composer.ComposerError)) else 'YAML syntax error'
            self.fail(mark.line + 1 if mark else None, '%s: %s' % (kind, what))
        except yaml.reader.ReaderError as e:
            line = text.count('\n', 0, e.position) + 1 if isinstance(text, str) else None
            self.fail(line, 'YAML error: %s' % str(e).splitlines()[0])
        except yaml.YAMLError as e:
            self.fail(None, 'YAML error: %s' % e)

    # --- generic checks -----------------------------------------------------
    @staticmethod
    def key_line(m, key):
        return getattr(m, 'key_lines', {}).get(key) or getattr(m, 'line', None)

    def mapping(self, value, line, where, none_ok=True):
        if value is None and none_ok:
            m = _LineMap()
            m.line, m.key_lines = line, {}
            return m
        if not isinstance(value, dict):
            self.fail(getattr(value, 'line', line),
                      '%s: expected a mapping, got %s' % (where, _type_name(value)))
        return value

    def seq(self, value, line, where):
        if value is None:
            s = _LineList()
            s.line, s.item_lines = line, []
            return s
        if not isinstance(value, list):
            self.fail(getattr(value, 'line', line),
                      '%s: expected a list, got %s' % (where, _type_name(value)))
        return value

    def keys(self, m, allowed, where, required=()):
        for k in m:
            if k not in allowed:
                self.fail(self.key_line(m, k), '%s: unknown key %r (expected one of: %s)'
                          % (where, k, ', '.join(allowed)))
        for k in required:
            if k not in m:
                self.fail(getattr(m, 'line', None), '%s: missing required key %r' % (where, k))

    def int_(self, m, key, where, lo=None, hi=None):
        v = m[key]
        line = self.key_line(m, key)
        if isinstance(v, bool) or not isinstance(v, int):
            self.fail(line, '%s: %s: expected an integer, got %s' % (where, key, _type_name(v)))
        if lo is not None and v < lo or hi is not None and v > hi:
            self.fail(line, '%s: %s: %d is out of range [%s, %s]' % (where, key, v, lo, hi))
        return v

    def str_(self, m, key, where, pattern=None):
        v = m[key]
        line = self.key_line(m, key)
        if not isinstance(v, str):
            self.fail(line, '%s: %s: expected a string, got %s' % (where, key, _type_name(v)))
        if pattern is not None and not pattern.fullmatch(v):
            self.fail(line, '%s: %s: %r does not match %s' % (where, key, v, pattern.pattern))
        return v

    def choice(self, m, key, choices, where):
        v = m[key]
        if not isinstance(v, str) or v not in choices:
            self.fail(self.key_line(m, key), '%s: %s: bad value %s (expected one of: %s)'
                      % (where, key, _short(v), ', '.join(map(str, choices))))
        return v

    def size(self, m, key, where):
        v = m[key]
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            self.fail(self.key_line(m, key), '%s: %s: expected a size (bytes, or a number '
                      'with %s), got %s' % (where, key, SIZE_SUFFIXES, _type_name(v)))
        try:
            return size_bytes(v)
        except ValueError as e:
            self.fail(self.key_line(m, key), '%s: %s: %s' % (where, key, e))

    def page_multiple(self, m, key, where, positive=False):
        v = self.size(m, key, where)
        line = self.key_line(m, key)
        if positive and v <= 0:
            self.fail(line, '%s: %s: must be positive, got %d' % (where, key, v))
        if v < 0:
            self.fail(line, '%s: %s: must not be negative, got %d' % (where, key, v))
        if v % PAGE_SIZE:
            up = -(-v // PAGE_SIZE) * PAGE_SIZE
            self.fail(line, '%s: %s: %d is not a multiple of the page size (4K); the '
                      'kernel would round it up to %s (write that)' % (where, key, v,
                                                                   size_name(up)))
        return v

    def mapping_size(self, m, key, where):
        """A page-multiple mapping size that fits in the user address space
        (larger, mmap and mremap fail with ENOMEM whatever else)."""
        v = self.page_multiple(m, key, where, positive=True)
        if v > TASK_SIZE_MAX:
            self.fail(self.key_line(m, key), '%s: %s: %s is larger than the user address '
                      'space (128T on x86_64): mmap(2) fails with ENOMEM'
                      % (where, key, size_name(v)))
        return v

    def address(self, m, key, where, size):
        v = self.size(m, key, where)
        if v < 0 or v % PAGE_SIZE:
            self.fail(self.key_line(m, key), '%s: %s: %#x is not a page-aligned address'
                      % (where, key, v))
        if v + size > TASK_SIZE_MAX:
            self.fail(self.key_line(m, key), '%s: %s: %#x + %s is beyond the user address '
                      'space (%#x)' % (where, key, v, size_name(size), TASK_SIZE_MAX))
        return v

    # --- top level ------------------------------------------------------------
    def parse(self, text):
        doc = self.load_yaml(text)
        if doc is None:
            self.fail(1, 'empty scenario: expected a mapping with format, name, '
                      'processes and steps')
        if not isinstance(doc, dict):
            self.fail(getattr(doc, 'line', 1),
                      'the top level must be a mapping, got %s' % _type_name(doc))
        self.keys(doc, TOP_KEYS, 'top level', required=('format', 'name'))
        fmt = doc['format']
        if isinstance(fmt, bool) or fmt != FORMAT_VERSION:
            self.fail(self.key_line(doc, 'format'), 'format: %s is not supported (this '
                      'loader reads format %d)' % (_short(fmt), FORMAT_VERSION))
        name = self.str_(doc, 'name', 'top level', NAME_RE)
        description = ''
        if doc.get('description') is not None:
            description = self.str_(doc, 'description', 'top level')
        memory, thp, hints = self.parse_kernel(doc)
        self.memory, self.bits = memory, hints.get('bits', 64)
        files = self.parse_files(doc)
        cgroups = self.parse_cgroups(doc)
        processes = self.parse_processes(doc, cgroups)
        self.files = files
        self.cgroups = cgroups
        steps = self.parse_steps(doc, processes, thp)
        return Scenario(path=self.path, name=name, description=description,
                        memory=memory, thp=thp, files=files, cgroups=cgroups,
                        processes=processes, steps=steps,
                        labels=[s.label for s in steps if isinstance(s, Snapshot)],
                        kernel_hints=hints)

    def parse_kernel(self, doc):
        k = self.mapping(doc.get('kernel'), self.key_line(doc, 'kernel'), 'kernel')
        self.keys(k, KERNEL_KEYS, 'kernel')
        memory = DEFAULT_MEMORY
        if 'memory' in k:
            memory = self.size(k, 'memory', 'kernel')
            if memory < MIN_MEMORY or memory % PMD_SIZE:
                self.fail(self.key_line(k, 'memory'), 'kernel: memory: %s must be at least '
                          '%s and a multiple of 2M' % (k['memory'], size_name(MIN_MEMORY)))
            why = size_limit_error('memory', memory)
            if why:
                self.fail(self.key_line(k, 'memory'), why)
        if 'page_size' in k and self.size(k, 'page_size', 'kernel') != PAGE_SIZE:
            self.fail(self.key_line(k, 'page_size'), 'kernel: page_size: %r is not '
                      'supported (fixed at 4K in format 1)' % (k['page_size'],))
        thp = ThpSettings()
        if 'thp' in k:
            thp = self.thp_settings(thp, k['thp'], self.key_line(k, 'thp'), 'kernel.thp')
        hints = {}
        if 'mapcount' in k:
            hints['mapcount'] = self.choice(k, 'mapcount', MAPCOUNT_MODES, 'kernel')
        if 'bits' in k:
            hints['bits'] = self.int_(k, 'bits', 'kernel')
            if hints['bits'] not in BITS:
                self.fail(self.key_line(k, 'bits'), 'kernel: bits: must be 32 or 64, got %d'
                          % hints['bits'])
        return memory, thp, hints

    def thp_settings(self, base, value, line, where):
        t = self.mapping(value, line, where)
        self.keys(t, THP_KEYS, where)
        partial = {}
        if 'enabled' in t:
            partial['enabled'] = self.choice(t, 'enabled', THP_ENABLED, where)
        if 'shmem_enabled' in t:
            partial['shmem_enabled'] = self.choice(t, 'shmem_enabled', SHMEM_ENABLED, where)
        if 'use_zero_page' in t:
            v = t['use_zero_page']
            if isinstance(v, int) and v in (0, 1):     # also the knob's own 0/1
                partial['use_zero_page'] = bool(v)
            else:
                self.fail(self.key_line(t, 'use_zero_page'), '%s: use_zero_page: expected '
                          'true or false, got %s' % (where, _type_name(v)))
        if 'sizes' in t:
            swhere = where + '.sizes'
            s = self.mapping(t['sizes'], self.key_line(t, 'sizes'), swhere)
            sizes = {}
            for key in s:
                line = self.key_line(s, key)
                try:
                    size = size_bytes(key)
                except ValueError as e:
                    self.fail(line, '%s: %s' % (swhere, e))
                if size not in THP_SIZES:
                    self.fail(line, '%s: unsupported size %r (supported: %s)' % (
                        swhere, key, ', '.join(size_name(x) for x in THP_SIZES)))
                if size in sizes:
                    self.fail(line, '%s: %s given twice' % (swhere, size_name(size)))
                sizes[size] = self.choice(s, key, THP_SIZE_ENABLED, swhere)
            partial['sizes'] = sizes
        return base.updated(partial)

    def parse_files(self, doc):
        files, paths = {}, {}
        lst = self.seq(doc.get('files'), self.key_line(doc, 'files'), 'files')
        for i, f in enumerate(lst):
            where = 'files[%d]' % i
            f = self.mapping(f, lst.item_lines[i], where, none_ok=False)
            self.keys(f, FILE_KEYS, where, required=('name', 'size'))
            name = self.str_(f, 'name', where, RANGE_NAME_RE)
            if name in files:
                self.fail(self.key_line(f, 'name'), '%s: file %r defined twice' % (where, name))
            size = self.size(f, 'size', where)
            if size < 0:
                self.fail(self.key_line(f, 'size'), '%s: size: must not be negative' % where)
            if size > MAX_FILE_SIZE:
                self.fail(self.key_line(f, 'size'), '%s: size: %s is more than the emulator '
                          'holds (files up to %s)' % (where, size_name(size),
                                                      size_name(MAX_FILE_SIZE)))
            folio = PAGE_SIZE
            if 'folio_size' in f:
                folio = self.size(f, 'folio_size', where)
                if not is_power_of_2(folio) or not PAGE_SIZE <= folio <= MAX_PAGECACHE_FOLIO:
                    self.fail(self.key_line(f, 'folio_size'), '%s: folio_size: %r must be a '
                              'power of two from 4K to 8M' % (where, f['folio_size']))
            path = '/' + name
            if 'path' in f:
                path = self.str_(f, 'path', where)
                if not path.startswith('/') or '\n' in path or '\0' in path:
                    self.fail(self.key_line(f, 'path'), '%s: path: %r must be an absolute '
                              'path' % (where, path))
            if path in paths:
                self.fail(self.key_line(f, 'path') if 'path' in f else f.line,
                          '%s: path %r is already the path of file %r' % (where, path, paths[path]))
            paths[path] = name
            files[name] = FileSpec(name, size, folio, path)
        return files

    def parse_cgroups(self, doc):
        """'/' first; every listed cgroup preceded by its parents."""
        out = ['/']
        lst = self.seq(doc.get('cgroups'), self.key_line(doc, 'cgroups'), 'cgroups')
        listed = set()
        for i, cg in enumerate(lst):
            line = lst.item_lines[i]
            if not isinstance(cg, str):
                self.fail(line, 'cgroups[%d]: expected a path, got %s' % (i, _type_name(cg)))
            parts = cg.split('/')
            if (not cg.startswith('/') or cg != '/' and
                    not all(CGROUP_COMPONENT_RE.fullmatch(p) and p not in ('.', '..')
                            for p in parts[1:])):
                self.fail(line, 'cgroups[%d]: %r is not a cgroup path (an absolute path like '
                          '/workload, without empty, "." or ".." components)' % (i, cg))
            if cg in listed:
                self.fail(line, 'cgroups[%d]: %r listed twice' % (i, cg))
            listed.add(cg)
            for n in range(2, len(parts) + 1):
                p = '/'.join(parts[:n])
                if p not in out:
                    out.append(p)
        return out

    def parse_processes(self, doc, cgroups):
        out, pids = [], set()
        lst = self.seq(doc.get('processes'), self.key_line(doc, 'processes'), 'processes')
        if not lst:
            self.fail(self.key_line(doc, 'processes') or doc.line,
                      'processes: at least one process is needed')
        for i, p in enumerate(lst):
            where = 'processes[%d]' % i
            p = self.mapping(p, lst.item_lines[i], where, none_ok=False)
            self.keys(p, PROCESS_KEYS, where, required=('pid',))
            pid = self.int_(p, 'pid', where, 2, PID_MAX_LIMIT)
            if pid in pids:
                self.fail(self.key_line(p, 'pid'), '%s: pid %d given twice' % (where, pid))
            pids.add(pid)
            comm = self.comm(p, where) if 'comm' in p else 'proc%d' % pid
            cgroup = '/'
            if 'cgroup' in p:
                cgroup = self.str_(p, 'cgroup', where)
                if cgroup not in cgroups:
                    self.fail(self.key_line(p, 'cgroup'), '%s: unknown cgroup %r (cgroups: %s)'
                              % (where, cgroup, ', '.join(cgroups)))
            uid = self.int_(p, 'uid', where, 0, ID_MAX) if 'uid' in p else 0
            gid = self.int_(p, 'gid', where, 0, ID_MAX) if 'gid' in p else 0
            out.append(ProcessSpec(pid, comm, cgroup, uid, gid))
        return out

    def comm(self, m, where):
        """The comm as the kernel keeps it: __set_task_comm() truncates to
        TASK_COMM_LEN - 1 bytes."""
        comm = self.str_(m, 'comm', where)
        return comm.encode()[:TASK_COMM_LEN - 1].decode(errors='ignore')

    # --- steps ------------------------------------------------------------------
    def parse_steps(self, doc, processes, thp):
        lst = self.seq(doc.get('steps'), self.key_line(doc, 'steps'), 'steps')
        self.book = _Book(processes)
        self.thp = thp
        self.labels = {}
        steps = []
        for i, item in enumerate(lst):
            st = self.parse_step(i + 1, item, lst.item_lines[i])
            self.book.apply(st)
            steps.append(st)
        return steps

    def parse_step(self, index, item, line):
        ops = ', '.join(STEP_KEYS)
        if not isinstance(item, dict) or len(item) != 1:
            hint = ''
            if isinstance(item, dict) and len(item) > 1 and next(iter(item)) in STEP_KEYS \
                    and next(iter(item.values())) is None:
                hint = ' (indent the arguments under %r)' % next(iter(item))
            self.fail(getattr(item, 'line', line), 'step %d: a step must be a mapping with '
                      'exactly one key, the operation (%s); got %s%s'
                      % (index, ops, _type_name(item) if not isinstance(item, dict)
                         else 'keys ' + ', '.join(map(repr, item)), hint))
        op, args = next(iter(item.items()))
        line = item.line
        if op not in STEP_KEYS:
            self.fail(line, 'step %d: unknown operation %r (expected one of: %s)'
                      % (index, op, ops))
        where = 'step %d (%s)' % (index, op)
        if op == 'snapshot':
            return self.parse_snapshot(index, line, args, where)
        if op == 'thp':
            self.thp = self.thp_settings(self.thp, args, line, where)
            return Thp(self.thp, index=index, line=line)
        if op == 'expect':
            return self.parse_expect(index, line, args, where)
        a = self.mapping(args, line, where)
        required, optional = STEP_KEYS[op]
        self.keys(a, ('pid',) + required + optional + ('expect',), where,
                  required=('pid',) + required)
        common = {'index': index, 'line': line, 'expect_fault': False}
        if 'expect' in a:
            if a['expect'] != 'fault':
                self.fail(self.key_line(a, 'expect'), "%s: expect: bad value %s (the only "
                          "expectation is 'fault')" % (where, _short(a['expect'])))
            common['expect_fault'] = True
        pid = self.int_(a, 'pid', where)
        proc = self.book.procs.get(pid)
        if proc is None:
            why = ('it exited at step %d' % self.book.exited[pid] if pid in self.book.exited
                   else 'live processes: %s' % ', '.join(map(str, sorted(self.book.procs))))
            self.fail(self.key_line(a, 'pid'), '%s: unknown pid %d (%s)' % (where, pid, why))
        if op == 'mmap':
            return self.parse_mmap(a, pid, proc, where, common)
        if op == 'fork':
            child = self.int_(a, 'child', where)
            if child <= 1 or child > PID_MAX_LIMIT:
                self.fail(self.key_line(a, 'child'), '%s: child: pid %d is out of range '
                          '[2, %d]' % (where, child, PID_MAX_LIMIT))
            if child in self.book.procs:
                self.fail(self.key_line(a, 'child'), '%s: child: pid %d is in use'
                          % (where, child))
            comm = self.comm(a, where) if 'comm' in a else proc.comm
            return Fork(pid, child, comm, **common)
        if op == 'exit':
            return Exit(pid, **common)
        vma = self.str_(a, 'vma', where)
        r = proc.ranges.get(vma)
        if r is None:
            self.fail(self.key_line(a, 'vma'), '%s: unknown vma %r in pid %d (known: %s)'
                      % (where, vma, pid, ', '.join(sorted(proc.ranges)) or 'none'))
        if op == 'mremap':
            new_size = r.size
            if 'new_size' in a:
                new_size = self.mapping_size(a, 'new_size', where)
                self.check_mapping(proc, a, 'new_size', where, new_size, vma)
            move_to = None
            if 'move_to' in a:
                move_to = self.address(a, 'move_to', where, new_size)
            return Mremap(pid, vma, new_size, move_to, **common)
        offset, length = self.range_args(a, r, where)
        if op in ('write', 'pin'):
            why = size_limit_error('populate', length, self.bits, self.memory)
            if why:
                self.fail(self.key_line(a, 'length') if 'length' in a else line,
                          '%s: %s' % (where, why))
        extra = {}
        if op == 'mprotect':
            extra['prot'] = self.choice(a, 'prot', PROTS, where)
        elif op == 'madvise':
            extra['advice'] = self.choice(a, 'advice', ADVICES, where)
        elif op == 'unpin' and not proc.pins[(vma, offset, length)]:
            self.fail(line, '%s: pid %d holds no pin on %r at offset %s, length %s (unpin '
                      'names the same range as its pin)' % (where, pid, vma, size_name(offset),
                                                            size_name(length)))
        return RANGE_STEPS[op](pid, vma, offset, length, **extra, **common)

    def range_args(self, a, r, where):
        """offset (default 0) and length (default: the rest of the range)."""
        offset = self.page_multiple(a, 'offset', where) if 'offset' in a else 0
        if offset >= r.size:
            self.fail(self.key_line(a, 'offset'), '%s: offset %s is past the end of %r '
                      '(size %s)' % (where, size_name(offset), r.name, size_name(r.size)))
        if 'length' not in a:
            return offset, r.size - offset
        length = self.page_multiple(a, 'length', where, positive=True)
        if offset + length > r.size:
            self.fail(self.key_line(a, 'length'), '%s: offset %s + length %s is past the end '
                      'of %r (size %s)' % (where, size_name(offset), size_name(length),
                                           r.name, size_name(r.size)))
        return offset, length

    def parse_mmap(self, a, pid, proc, where, common):
        name = self.str_(a, 'name', where, RANGE_NAME_RE)
        if name in proc.ranges:
            self.fail(self.key_line(a, 'name'), '%s: name %r is already used in pid %d'
                      % (where, name, pid))
        size = self.mapping_size(a, 'size', where)
        self.check_mapping(proc, a, 'size', where, size, name)
        kind = self.choice(a, 'kind', KINDS, where) if 'kind' in a else 'anon'
        file, file_offset = None, 0
        if kind in FILE_KINDS:
            if 'file' not in a:
                self.fail(common['line'], '%s: kind %s needs a file' % (where, kind))
            file = self.str_(a, 'file', where)
            if file not in self.files:
                self.fail(self.key_line(a, 'file'), '%s: unknown file %r (files: %s)'
                          % (where, file, ', '.join(self.files) or 'none'))
            if 'file_offset' in a:
                file_offset = self.page_multiple(a, 'file_offset', where)
                if file_offset + size > MAX_LFS_FILESIZE:
                    # file_mmap_ok(): mmap(2) fails with EOVERFLOW
                    self.fail(self.key_line(a, 'file_offset'), '%s: file_offset: %s + size %s '
                              'is past the largest file offset (8E): mmap(2) fails with '
                              'EOVERFLOW' % (where, size_name(file_offset), size_name(size)))
        else:
            for key in ('file', 'file_offset'):
                if key in a:
                    self.fail(self.key_line(a, key), '%s: %s applies to kind file or '
                              'shared-file only, not %s' % (where, key, kind))
        prot = self.choice(a, 'prot', PROTS, where) if 'prot' in a else 'rw'
        align = PAGE_SIZE
        if 'align' in a:
            align = self.size(a, 'align', where)
            if not is_power_of_2(align) or align < PAGE_SIZE or align > TASK_SIZE_MAX:
                self.fail(self.key_line(a, 'align'), '%s: align: %r must be a power of two '
                          'from 4K to 64T' % (where, a['align']))
        addr = None
        if 'addr' in a:
            addr = self.address(a, 'addr', where, size)
            if addr % align:
                self.fail(self.key_line(a, 'addr'), '%s: addr %#x is not aligned to align %s'
                          % (where, addr, size_name(align)))
        return Mmap(pid, name, size, kind, file, file_offset, prot, align, addr, **common)

    def check_mapping(self, proc, a, key, where, size, name):
        """An mmap/mremap size of range `name` against the user address
        space, alone and with what the process's other ranges map."""
        total = size + sum(n for other, r in proc.ranges.items() if other != name
                           for _, n in r.mapped_extents())
        why = size_limit_error('mapping', size, self.bits, total=total)
        if why:
            self.fail(self.key_line(a, key), '%s: %s: %s' % (where, key, why))

    def parse_snapshot(self, index, line, args, where):
        label, label_line = args, line
        if isinstance(args, dict):
            self.keys(args, ('label',), where, required=('label',))
            label, label_line = args['label'], self.key_line(args, 'label')
        if not isinstance(label, str) or not NAME_RE.fullmatch(label):
            self.fail(label_line, '%s: label %s must be a string matching [a-z0-9-]+'
                      % (where, _short(label)))
        if label in self.labels:
            self.fail(label_line, '%s: label %r already used at step %d'
                      % (where, label, self.labels[label]))
        self.labels[label] = index
        return Snapshot(label, index=index, line=line)

    def parse_expect(self, index, line, args, where):
        """An `expect` step: exactly one subject key (EXPECT_SUBJECTS) with
        its arguments, optional `configs` and `note`, and at least one
        stated field.  Field names and config names are checked against
        the renderers and the kernel profiles by procfs.expect.validate()."""
        a = self.mapping(args, line, where, none_ok=False)
        subjects = [k for k in a if k in EXPECT_SUBJECTS]
        if len(subjects) != 1:
            self.fail(line, '%s: needs exactly one subject (%s), got %s' % (
                where, ', '.join(EXPECT_SUBJECTS),
                ', '.join(map(repr, subjects)) if subjects else 'none'))
        subject = subjects[0]
        swhere = '%s.%s' % (where, subject)
        t = self.mapping(a[subject], self.key_line(a, subject), swhere)
        required, optional = EXPECT_SUBJECTS[subject]
        self.keys(t, required + optional, swhere, required=required)
        target = {}
        proc = None
        if 'pid' in t:
            pid = target['pid'] = self.int_(t, 'pid', swhere)
            proc = self.book.procs.get(pid)
            if proc is None:
                why = ('it exited at step %d' % self.book.exited[pid] if pid in self.book.exited
                       else 'live processes: %s' % ', '.join(map(str, sorted(self.book.procs))))
                self.fail(self.key_line(t, 'pid'), '%s: unknown pid %d (%s)' % (swhere, pid, why))
        if 'vma' in t:
            vma = target['vma'] = self.str_(t, 'vma', swhere)
            r = proc.ranges.get(vma)
            if r is None or not r.mapped:
                self.fail(self.key_line(t, 'vma'), '%s: %s vma %r in pid %d (known: %s)' % (
                    swhere, 'unknown' if r is None else 'nothing mapped of', vma, target['pid'],
                    ', '.join(sorted(n for n, x in proc.ranges.items() if x.mapped)) or 'none'))
            if subject == 'pages':
                target['offset'], target['length'] = self.range_args(t, r, swhere)
            elif subject == 'folio':
                target['offset'] = self.page_multiple(t, 'offset', swhere) if 'offset' in t else 0
                if target['offset'] >= r.size:
                    self.fail(self.key_line(t, 'offset'), '%s: offset %s is past the end of '
                              '%r (size %s)' % (swhere, size_name(target['offset']), vma,
                                                size_name(r.size)))
        for key in ('since', 'at'):
            if key in t:
                label = self.str_(t, key, swhere)
                if label not in self.labels:
                    self.fail(self.key_line(t, key), '%s: %s: %r is not an earlier snapshot '
                              '(labels so far: %s)' % (swhere, key, label,
                                                       ', '.join(self.labels) or 'none'))
                target[key] = label
        if 'cgroup' in t:
            target['cgroup'] = self.str_(t, 'cgroup', swhere)
            if target['cgroup'] not in self.cgroups:
                self.fail(self.key_line(t, 'cgroup'), '%s: unknown cgroup %r (cgroups: %s)'
                          % (swhere, target['cgroup'], ', '.join(self.cgroups)))
        if 'version' in t:
            target['version'] = self.int_(t, 'version', swhere)
            if target['version'] not in (1, 2):
                self.fail(self.key_line(t, 'version'), '%s: version: must be 1 or 2, got %d'
                          % (swhere, target['version']))
        configs = None
        if 'configs' in a:
            lst = a['configs']
            if isinstance(lst, str):
                lst = [lst]
            if not isinstance(lst, list) or not lst or \
                    not all(isinstance(c, str) and c for c in lst):
                self.fail(self.key_line(a, 'configs'), '%s: configs: expected a config name '
                          'or a list of config names, got %s' % (where, _type_name(a['configs'])))
            configs = tuple(lst)
        note = ''
        if 'note' in a:
            note = self.str_(a, 'note', where)
        fields = []
        for name, value in a.items():
            if name == subject or name in EXPECT_KEYS:
                continue
            fline = self.key_line(a, name)
            if not isinstance(name, str):
                self.fail(fline, '%s: a field name must be a string, got %s'
                          % (where, _type_name(name)))
            if isinstance(value, dict):
                if not value:
                    self.fail(fline, '%s: %s: an empty mapping of configs' % (where, name))
                for c, v in value.items():
                    if not isinstance(c, str):
                        self.fail(fline, '%s: %s: config names are strings, got %s'
                                  % (where, name, _type_name(c)))
                    if isinstance(v, dict):
                        self.fail(self.key_line(value, c), '%s: %s: %s: expected a value or '
                                  'a list, got a mapping' % (where, name, c))
            fields.append((name, value, fline))
        if not fields:
            self.fail(line, '%s: states no value (add fields such as Rss: 64 next to %s)'
                      % (where, subject))
        return Expect(subject, target, tuple(fields), configs, note, index=index, line=line)


def parse_scenario_text(text, path='<string>'):
    """A Scenario from YAML text; `path` names it in error messages."""
    return _Parser(path).parse(text)


def load_scenario(path):
    """A Scenario from a YAML file."""
    try:
        with open(path, 'rb') as f:
            raw = f.read()
    except OSError as e:
        raise _error(path, None, 'cannot read: %s' % (e.strerror or e)) from None
    try:
        text = raw.decode('utf-8')
    except UnicodeDecodeError as e:
        raise _error(path, raw.count(b'\n', 0, e.start) + 1, 'not UTF-8 text') from None
    return parse_scenario_text(text, str(path))


class LiveSteps:
    """Validates the steps of a live replay one at a time: the scenario's
    own steps (re-read from its YAML, so they are checked against the state
    that extra steps may have changed) and extra steps given as text
    (`mmemu do`), each exactly as a step of the file would be checked at
    that point.  `parse_*` leaves the bookkeeping unchanged; `commit()`
    records a step the kernels performed."""

    def __init__(self, scenario, text):
        self.scenario = scenario
        p = _Parser(scenario.path)
        doc = p.load_yaml(text)
        self.items = doc['steps']
        self.parser = p
        p.files = scenario.files
        p.book = _Book(scenario.processes)
        p.thp = scenario.thp
        p.labels = {}
        self.extra = 0

    def _parse(self, path, index, item, line):
        p = self.parser
        saved = p.path, p.thp, dict(p.labels)
        p.path = path
        try:
            return p.parse_step(index, item, line)
        finally:
            p.path, p.thp, p.labels = saved

    def file_step(self, i):
        """Step i (0-based) of the scenario file."""
        return self._parse(self.scenario.path, i + 1, self.items[i], self.items.item_lines[i])

    def extra_step(self, text, path='<do>'):
        """One step written in the scenario format (`fork: {pid: 100,
        child: 105}`, or the same as a one-item list); numbered after the
        file's steps."""
        item = _Parser(path).load_yaml(text)
        if isinstance(item, list) and len(item) == 1:
            item = item[0]
        if item is None:
            raise _error(path, 1, 'empty step')
        index = len(self.items) + self.extra + 1
        st = self._parse(path, index, item, getattr(item, 'line', 1))
        if isinstance(st, Snapshot) and st.label in self.scenario.labels:
            raise _error(path, 1, 'step %d (snapshot): label %r is a snapshot of the scenario'
                         % (index, st.label))
        return st

    def commit(self, st):
        p = self.parser
        if isinstance(st, Thp):
            p.thp = st.settings
        elif isinstance(st, Snapshot):
            p.labels[st.label] = st.index
        p.book.apply(st)
        if st.index > len(self.items):
            self.extra += 1

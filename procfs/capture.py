"""``mmemu capture``: record what a real Linux machine's /proc says about
the memory of some of its processes, for ``mmcore.capture`` to import.

Everything is read through the interfaces the renderers emulate: per
process ``maps``, ``smaps`` (sizes, VmFlags and the counters, kept for
comparison and for what /proc has no per-page form of), ``status``,
``cgroup`` and ``pagemap`` (read by VMA range in large chunks, plus the
``PAGEMAP_SCAN`` ioctl's PAGE_IS_HUGE category to tell PMD leaves from
PTEs); per PFN ``/proc/kpageflags``, ``kpagecount`` and ``kpagecgroup``
for every page of each folio that a captured page belongs to (the folio's
head and order come from KPF_COMPOUND_HEAD/TAIL); the THP knobs and the
kernel version.  No command line, environment or memory contents are read.

The output is one compressed ``.npz`` file: a JSON ``meta`` record and
numpy arrays (format in ``mmcore.capture``).  Present pages are stored as
runs (consecutive virtual pages mapping consecutive PFNs with the same
pagemap bits), which keeps a desktop's worth of processes at a few MB.
"""
import ctypes
import fcntl
import json
import os
import platform
import sys
import time

import numpy as np

from mmcore.capture import (FORMAT, FORMAT_VERSION, KPF_COMPOUND_HEAD, KPF_COMPOUND_TAIL,
                            KPF_HUGE, PB_EXCLUSIVE, PB_FILE, PB_PMD, PB_SOFT_DIRTY, PB_UFFD_WP,
                            SMAPS_KEYS)
from .formats.maps import VM_FLAG_BITS

PAGE_SHIFT = 12
PM_PFN_MASK = (1 << 55) - 1
PM_SOFT_DIRTY = 1 << 55
PM_MMAP_EXCLUSIVE = 1 << 56
PM_UFFD_WP = 1 << 57
PM_FILE = 1 << 61
PM_SWAP = 1 << 62
PM_PRESENT = 1 << 63
CHUNK_PAGES = 1 << 16            # pagemap entries per read (512 KiB)
KPAGE_CHUNK = 1 << 18            # kpage* entries per read (2 MiB)
BLOCK_SHIFT = 9                  # kpage* files are read by aligned 2 MiB blocks
THP_DIR = '/sys/kernel/mm/transparent_hugepage'
CGROUP_ROOTS = ('/sys/fs/cgroup/memory', '/sys/fs/cgroup/unified', '/sys/fs/cgroup')

MADV_POPULATE_READ = 22         # include/uapi/asm-generic/mman-common.h, 5.14+

# PAGEMAP_SCAN (include/uapi/linux/fs.h, 6.7+)
PAGE_IS_PRESENT = 1 << 3
PAGE_IS_HUGE = 1 << 6


class CaptureError(Exception):
    """A user-facing error of the recorder (one line)."""


class Gone(Exception):
    """The process exited (or exec'd away its mm) while being read."""


class _ScanArg(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in (
        'size', 'flags', 'start', 'end', 'walk_end', 'vec', 'vec_len', 'max_pages',
        'category_inverted', 'category_mask', 'category_anyof_mask', 'return_mask')]


class _Region(ctypes.Structure):
    _fields_ = [('start', ctypes.c_uint64), ('end', ctypes.c_uint64),
                ('categories', ctypes.c_uint64)]


PAGEMAP_SCAN = (3 << 30) | (ctypes.sizeof(_ScanArg) << 16) | (ord('f') << 8) | 16


# --- small readers ---------------------------------------------------------------------

def _read_text(path):
    with open(path, 'rb') as f:
        return f.read().decode('utf-8', 'surrogateescape')


def _proc_text(pid, name):
    try:
        return _read_text('/proc/%d/%s' % (pid, name))
    except (FileNotFoundError, ProcessLookupError):
        raise Gone() from None
    except OSError as e:
        if e.errno in (3, 22):        # ESRCH, or EINVAL of a vanishing task
            raise Gone() from None
        raise


def _choice(text):
    """The bracketed word of a sysfs choice file."""
    for w in text.split():
        if w.startswith('['):
            return w.strip('[]')
    return text.strip()


def thp_knobs():
    """The global and per-size THP knobs, as far as this kernel has them."""
    out = {'sizes': {}, 'shmem_sizes': {}}
    try:
        out['enabled'] = _choice(_read_text(THP_DIR + '/enabled'))
        out['shmem_enabled'] = _choice(_read_text(THP_DIR + '/shmem_enabled'))
        out['defrag'] = _choice(_read_text(THP_DIR + '/defrag'))
        out['use_zero_page'] = _read_text(THP_DIR + '/use_zero_page').strip() == '1'
    except OSError:
        return out
    for name in sorted(os.listdir(THP_DIR)):
        if name.startswith('hugepages-') and name.endswith('kB'):
            kb = int(name[len('hugepages-'):-2])
            for key, file in (('sizes', 'enabled'), ('shmem_sizes', 'shmem_enabled')):
                try:
                    out[key][str(kb)] = _choice(_read_text('%s/%s/%s' % (THP_DIR, name, file)))
                except OSError:
                    pass
    return out


def memcg_inodes():
    """{inode: path} of every memory cgroup (kpagecgroup answers inodes)."""
    out = {}
    for root in CGROUP_ROOTS:
        if not os.path.isdir(root) or (root == '/sys/fs/cgroup' and out):
            continue
        if not os.path.exists(os.path.join(root, 'memory.stat')) and \
                not os.path.exists(os.path.join(root, 'cgroup.procs')):
            continue
        for dirpath, dirnames, _ in os.walk(root):
            try:
                ino = os.stat(dirpath).st_ino
            except OSError:
                continue
            rel = '/' + os.path.relpath(dirpath, root) if dirpath != root else '/'
            out.setdefault(ino, rel)
        if root.endswith('memory'):
            break            # cgroup v1 with a memory hierarchy: that is the one
    return out


def memcg_root():
    for root in CGROUP_ROOTS:
        if os.path.exists(os.path.join(root, 'memory.stat')) or \
                os.path.exists(os.path.join(root, 'memory.current')) or root.endswith('memory'):
            if os.path.isdir(root):
                return root
    return None


def process_memcg(cgroup_text):
    """The memory cgroup path of a process from /proc/PID/cgroup (the v1
    memory line, else the v2 line)."""
    v2 = None
    for line in cgroup_text.splitlines():
        parts = line.split(':', 2)
        if len(parts) != 3:
            continue
        if 'memory' in parts[1].split(','):
            return parts[2] or '/'
        if parts[0] == '0' and parts[1] == '':
            v2 = parts[2] or '/'
    return v2 or '/'


def cgroup_pids(path):
    """Pids of a memory cgroup and its descendants."""
    root = memcg_root()
    if root is None:
        raise CaptureError('no memory cgroup hierarchy under /sys/fs/cgroup')
    top = os.path.join(root, path.strip('/'))
    if not os.path.isdir(top):
        raise CaptureError('cgroup %s: no such memory cgroup (%s)' % (path, top))
    pids = set()
    for dirpath, _, _ in os.walk(top):
        try:
            pids.update(int(x) for x in _read_text(os.path.join(dirpath, 'cgroup.procs')).split())
        except OSError:
            pass
    return sorted(pids)


def cgroup_memory_stat(path):
    root = memcg_root()
    if root is None:
        return {}
    try:
        text = _read_text(os.path.join(root, path.strip('/'), 'memory.stat'))
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition(' ')
        if v.strip().isdigit():
            out[k] = int(v)
    return out


# --- maps and smaps ----------------------------------------------------------------------

def parse_smaps(text):
    """[(start, end, perms, pgoff, major, minor, inode, name, flags, {key: kB})]."""
    vmas = []
    cur = None
    for line in text.splitlines():
        head = line.split(None, 5)
        if len(head) >= 5 and '-' in head[0] and ':' in head[3] and not head[0].endswith(':'):
            start, end = (int(x, 16) for x in head[0].split('-'))
            major, minor = (int(x, 16) for x in head[3].split(':'))
            name = head[5] if len(head) > 5 else ''
            cur = [start, end, head[1], int(head[2], 16) >> PAGE_SHIFT, major, minor,
                   int(head[4]), name, 0, {}]
            vmas.append(cur)
        elif cur is not None and line.startswith('VmFlags:'):
            flags = 0
            for m in line.split()[1:]:
                if m in VM_FLAG_BITS:
                    flags |= 1 << VM_FLAG_BITS[m]
            cur[8] = flags
        elif cur is not None and line.endswith(' kB'):
            key, _, rest = line.partition(':')
            try:
                cur[9][key] = int(rest.split()[0])
            except (ValueError, IndexError):
                pass
    return [tuple(v) for v in vmas]


def parse_status(text):
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(':')
        rest = rest.strip()
        if key in ('Name', 'Umask', 'State'):
            out[key] = rest
        elif key in ('PPid', 'Tgid', 'Uid'):
            out[key] = int(rest.split()[0])
        elif rest.endswith(' kB'):
            out[key] = int(rest.split()[0])
    return out


# --- pagemap -----------------------------------------------------------------------------

def _pread_u64(fd, first, count):
    """count u64 entries from entry `first`; a short read gives fewer."""
    data = os.pread(fd, count * 8, first * 8)
    return np.frombuffer(data, dtype='<u8')


def pmd_ranges(fd, start, end):
    """[(start, end)] virtual ranges that PAGEMAP_SCAN reports PAGE_IS_HUGE
    (PMD-mapped THP); None when the ioctl is not available."""
    out = []
    nvec = 256
    vec = (_Region * nvec)()
    addr = start
    while addr < end:
        arg = _ScanArg(size=ctypes.sizeof(_ScanArg), start=addr, end=end,
                       vec=ctypes.addressof(vec), vec_len=nvec,
                       category_mask=PAGE_IS_HUGE | PAGE_IS_PRESENT,
                       return_mask=PAGE_IS_HUGE)
        try:
            n = fcntl.ioctl(fd, PAGEMAP_SCAN, arg)
        except OSError as e:
            if e.errno in (25, 22):          # ENOTTY / EINVAL: no PAGEMAP_SCAN
                return None
            if e.errno == 3:
                raise Gone() from None
            raise
        out.extend((vec[i].start, vec[i].end) for i in range(n))
        if arg.walk_end <= addr or n < nvec:
            break
        addr = arg.walk_end
    return out


def vma_runs(fd, start, end, pmds):
    """Present pages of [start, end) as runs: (vpn, pfn, length, bits)
    arrays, plus the number of swapped-out entries."""
    vpns, pfns, bits = [], [], []
    swapped = 0
    first = start >> PAGE_SHIFT
    last = end >> PAGE_SHIFT
    v = first
    while v < last:
        n = min(CHUNK_PAGES, last - v)
        e = _pread_u64(fd, v, n)
        if len(e) == 0:
            break
        present = (e & np.uint64(PM_PRESENT)) != 0
        swapped += int(np.count_nonzero(~present & ((e & np.uint64(PM_SWAP)) != 0)))
        idx = np.flatnonzero(present)
        ep = e[idx]
        b = np.zeros(len(idx), dtype=np.uint8)
        b[(ep & np.uint64(PM_SOFT_DIRTY)) != 0] |= PB_SOFT_DIRTY
        b[(ep & np.uint64(PM_MMAP_EXCLUSIVE)) != 0] |= PB_EXCLUSIVE
        b[(ep & np.uint64(PM_UFFD_WP)) != 0] |= PB_UFFD_WP
        b[(ep & np.uint64(PM_FILE)) != 0] |= PB_FILE
        vpns.append(idx.astype(np.uint64) + np.uint64(v))
        pfns.append(ep & np.uint64(PM_PFN_MASK))
        bits.append(b)
        v += len(e)
    if not vpns:
        z = np.zeros(0, dtype=np.uint64)
        return z, z, np.zeros(0, dtype=np.uint32), np.zeros(0, dtype=np.uint8), swapped
    vpn = np.concatenate(vpns)
    pfn = np.concatenate(pfns)
    bit = np.concatenate(bits)
    if pmds:
        pm = np.zeros(len(vpn), dtype=bool)
        for a, b_ in pmds:
            lo, hi = np.searchsorted(vpn, [a >> PAGE_SHIFT, b_ >> PAGE_SHIFT])
            pm[lo:hi] = True
        bit[pm] |= PB_PMD
    return runs_of(vpn, pfn, bit) + (swapped,)


def runs_of(vpn, pfn, bits):
    """Runs of consecutive vpn and pfn with equal bits."""
    if len(vpn) == 0:
        z = np.zeros(0, dtype=np.uint64)
        return z, z, np.zeros(0, dtype=np.uint32), np.zeros(0, dtype=np.uint8)
    vi = vpn.astype(np.int64)
    pi = pfn.astype(np.int64)
    brk = np.ones(len(vpn), dtype=bool)
    brk[1:] = (np.diff(vi) != 1) | (np.diff(pi) != 1) | (bits[1:] != bits[:-1])
    starts = np.flatnonzero(brk)
    lengths = np.diff(np.append(starts, len(vpn)))
    return vpn[starts], pfn[starts], lengths.astype(np.uint32), bits[starts]


# --- kpage* ------------------------------------------------------------------------------

def read_kpage_blocks(blocks):
    """kpageflags, kpagecount and kpagecgroup of every PFN of the given
    sorted 2 MiB blocks: three (len(blocks) << 9,) arrays."""
    n = len(blocks) << BLOCK_SHIFT
    out = [np.zeros(n, dtype=np.uint64) for _ in range(3)]
    if n == 0:
        return out
    fds = [os.open('/proc/' + f, os.O_RDONLY) for f in ('kpageflags', 'kpagecount', 'kpagecgroup')]
    try:
        brk = np.flatnonzero(np.diff(blocks) != 1) + 1
        starts = np.concatenate([[0], brk])
        ends = np.concatenate([brk, [len(blocks)]])
        for s, e in zip(starts, ends):
            pfn0 = int(blocks[s]) << BLOCK_SHIFT
            total = int(e - s) << BLOCK_SHIFT
            done = 0
            while done < total:
                cnt = min(KPAGE_CHUNK, total - done)
                for fd, arr in zip(fds, out):
                    vals = _pread_u64(fd, pfn0 + done, cnt)
                    dst = (int(s) << BLOCK_SHIFT) + done
                    arr[dst:dst + len(vals)] = vals
                done += cnt
    finally:
        for fd in fds:
            os.close(fd)
    return out


def folios_of(pfns):
    """The folios holding the given PFNs: (head PFNs, orders, per-page
    kpageflags/kpagecount/kpagecgroup of all their pages, concatenated in
    head order).  A tail page whose head is not in its 2 MiB block (a
    hugetlb gigantic page, or a folio split under our feet) gives order -1."""
    pfns = np.unique(pfns)
    blocks = np.unique(pfns >> np.uint64(BLOCK_SHIFT))
    flags, counts, cgroups = read_kpage_blocks(blocks)
    nb = len(blocks)
    f2 = flags.reshape(nb, 1 << BLOCK_SHIFT)
    is_head = (f2 & np.uint64(1 << KPF_COMPOUND_HEAD)) != 0
    is_tail = (f2 & np.uint64(1 << KPF_COMPOUND_TAIL)) != 0
    col = np.arange(1 << BLOCK_SHIFT)
    starts = np.where(is_head | ~is_tail, col, -1)
    head_col = np.maximum.accumulate(starts, axis=1)
    # folio length: from each start, the run of tails that follows it
    nxt = np.where(~is_tail, col, 1 << BLOCK_SHIFT)
    nxt_start = np.minimum.accumulate(nxt[:, ::-1], axis=1)[:, ::-1]
    following = np.empty_like(nxt_start)
    following[:, :-1] = nxt_start[:, 1:]
    following[:, -1] = 1 << BLOCK_SHIFT
    length = following - col
    bpos = np.searchsorted(blocks, pfns >> np.uint64(BLOCK_SHIFT))
    off = (pfns & np.uint64((1 << BLOCK_SHIFT) - 1)).astype(np.int64)
    hc = head_col[bpos, off]
    ok = hc >= 0
    heads = np.unique((blocks[bpos[ok]].astype(np.int64) << BLOCK_SHIFT) + hc[ok])
    hb = np.searchsorted(blocks, (heads >> BLOCK_SHIFT).astype(np.uint64))
    hcol = heads & ((1 << BLOCK_SHIFT) - 1)
    nr = length[hb, hcol]
    single = ~is_head[hb, hcol]
    nr[single] = 1
    order = np.log2(nr).astype(np.int64)
    bad = (nr & (nr - 1)) != 0
    bad |= (f2[hb, hcol] & np.uint64(1 << KPF_HUGE)) != 0     # hugetlb: not emulated
    order[bad] = -1
    nr[bad] = 1
    page_idx = (np.repeat(hb, nr) << BLOCK_SHIFT) + np.repeat(hcol, nr) + \
        (np.arange(int(nr.sum())) - np.repeat(np.cumsum(nr) - nr, nr))
    return (heads.astype(np.uint64), order.astype(np.int8), flags[page_idx],
            counts[page_idx], cgroups[page_idx])


# --- the capture ----------------------------------------------------------------------------

class Progress:
    """A one-line progress display on a terminal, silent otherwise."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.tty = stream.isatty()
        self.last = 0.0

    def show(self, text, force=False):
        if not self.tty:
            return
        now = time.monotonic()
        if force or now - self.last > 0.1:
            self.last = now
            self.stream.write('\r\033[K' + text)
            self.stream.flush()

    def done(self):
        if self.tty:
            self.stream.write('\r\033[K')
            self.stream.flush()


def all_pids():
    return sorted(int(d) for d in os.listdir('/proc') if d.isdigit())


def check_privileges():
    if os.geteuid() != 0:
        raise CaptureError('capture needs root: PFNs in /proc/PID/pagemap and '
                           '/proc/kpagecount, kpageflags, kpagecgroup are for CAP_SYS_ADMIN only')
    for f in ('kpagecount', 'kpageflags', 'kpagecgroup'):
        if not os.access('/proc/' + f, os.R_OK):
            raise CaptureError('/proc/%s is not readable on this kernel' % f)


def _fault_counts(pid):
    """(minflt, majflt, rss) from /proc/PID/stat: they move when the
    process faults, unmaps or reclaims."""
    f = _proc_text(pid, 'stat').rsplit(')', 1)[1].split()
    return int(f[7]), int(f[9]), int(f[21])


def capture_process(pid, tries=3):
    """One process: (info dict, list of VMA tuples, runs per VMA).  When
    its fault counters moved while it was read, it is read again (up to
    `tries` times) and marked `changing` if it never held still."""
    for attempt in range(tries):
        before = _fault_counts(pid)
        got = _capture_process_once(pid)
        if got is None or _fault_counts(pid) == before:
            return got
    got[0]['changing'] = True
    return got


def _capture_process_once(pid):
    status = parse_status(_proc_text(pid, 'status'))
    comm = _proc_text(pid, 'comm').rstrip('\n')
    cgroup = process_memcg(_proc_text(pid, 'cgroup'))
    vmas = parse_smaps(_proc_text(pid, 'smaps'))
    if not vmas:
        return None
    try:
        fd = os.open('/proc/%d/pagemap' % pid, os.O_RDONLY)
    except (FileNotFoundError, ProcessLookupError):
        raise Gone() from None
    runs = []
    swapped = 0
    no_scan = False
    try:
        for v in vmas:
            start, end, flags = v[0], v[1], v[8]
            if flags & (1 << VM_FLAG_BITS['ht']) or start >= (1 << 47):
                runs.append(None)         # hugetlb (not emulated) and [vsyscall]
                continue
            pmds = pmd_ranges(fd, start, end)
            if pmds is None:
                no_scan = True          # before 6.7: PMD leaves cannot be told from PTEs
                pmds = []
            r = vma_runs(fd, start, end, pmds)
            swapped += r[4]
            runs.append(r[:4])
    except OSError as e:
        if e.errno == 3:
            raise Gone() from None
        raise
    finally:
        os.close(fd)
    info = {'pid': pid, 'ppid': status.get('PPid', 0), 'comm': comm,
            'uid': status.get('Uid', 0), 'cgroup': cgroup, 'swapped_entries': swapped,
            'pmd_leaves_known': not no_scan,
            'status': {k: status[k] for k in ('VmRSS', 'RssAnon', 'RssFile', 'RssShmem',
                                              'VmSwap', 'VmPTE') if k in status}}
    return info, vmas, runs


def hold_own_file_mappings():
    """Maps every page of the recorder's own readable file mappings (libc,
    python, numpy) before anything is read, by MADV_POPULATE_READ.

    The recorder maps the same libraries as the processes it reads: pages
    it faulted in after it read a process's smaps and before it read
    kpagecount raised their mapcount in between, so that process's Pss read
    higher than the kpagecount-true import (a few kB per library on this
    machine).  With them all mapped from the start the recorder is one
    steady mapper, counted by kpagecount and, through it, by a stand-in.
    Returns how many VMAs were populated; errors (pages past the end of a
    file, kernels before 5.14) leave a VMA as it was."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    done = 0
    for line in _read_text('/proc/self/maps').splitlines():
        f = line.split()
        if len(f) < 6 or f[4] == '0' or f[1][0] != 'r':
            continue
        start, end = (int(x, 16) for x in f[0].split('-'))
        if libc.madvise(start, end - start, MADV_POPULATE_READ) == 0:
            done += 1
    return done


def capture(pids, out_path, cgroup=None, progress=None, log=sys.stderr):
    """Records the given processes into out_path; returns a summary dict."""
    check_privileges()
    hold_own_file_mappings()
    progress = progress or Progress()
    t0 = time.monotonic()
    procs, vma_rows, run_parts, names, skipped = [], [], [], [], []
    name_index = {}
    pages = 0
    for i, pid in enumerate(pids):
        progress.show('capture: pid %d (%d/%d), %d MiB of present pages'
                      % (pid, i + 1, len(pids), pages >> 8))
        try:
            got = capture_process(pid)
        except Gone:
            skipped.append({'pid': pid, 'reason': 'exited during the capture'})
            continue
        except PermissionError as e:
            skipped.append({'pid': pid, 'reason': 'not readable: %s' % e.strerror})
            continue
        if got is None:
            continue                      # a kernel thread or a zombie: no mm
        info, vmas, runs = got
        pi = len(procs)
        procs.append(info)
        for v, r in zip(vmas, runs):
            name = v[7]
            if name not in name_index:
                name_index[name] = len(names)
                names.append(name)
            vi = len(vma_rows)
            perms = v[2]
            pbits = (1 if perms[0] == 'r' else 0) | (2 if perms[1] == 'w' else 0) | \
                (4 if perms[2] == 'x' else 0) | (8 if perms[3] == 's' else 0)
            vma_rows.append((pi, v[0], v[1], v[3], v[4], v[5], v[6], name_index[name], v[8],
                             pbits, 0 if r is not None else 1,
                             [v[9].get(k, 0) for k in SMAPS_KEYS]))
            if r is not None and len(r[0]):
                run_parts.append((np.full(len(r[0]), vi, dtype=np.int32),) + tuple(r))
                pages += int(r[2].sum())
    for s in skipped:
        print('capture: pid %d skipped: %s' % (s['pid'], s['reason']), file=log)
    progress.show('capture: reading kpageflags, kpagecount, kpagecgroup for %d MiB' % (pages >> 8),
                  force=True)
    arrays = _vma_arrays(vma_rows)
    if run_parts:
        cols = list(zip(*run_parts))
        arrays.update(run_vma=np.concatenate(cols[0]), run_vpn=np.concatenate(cols[1]),
                      run_pfn=np.concatenate(cols[2]), run_len=np.concatenate(cols[3]),
                      run_bits=np.concatenate(cols[4]))
    else:
        arrays.update(run_vma=np.zeros(0, np.int32), run_vpn=np.zeros(0, np.uint64),
                      run_pfn=np.zeros(0, np.uint64), run_len=np.zeros(0, np.uint32),
                      run_bits=np.zeros(0, np.uint8))
    seen = _expand_pfns(arrays['run_pfn'], arrays['run_len'])
    heads, orders, pflags, pcount, pcg = folios_of(seen)
    arrays.update(folio_head=heads, folio_order=orders, page_flags=pflags,
                  page_count=pcount.astype(np.uint32), page_cgroup=pcg)
    memcgs = memcg_inodes()
    used_inos = set(int(x) for x in np.unique(pcg)) - {0}
    meta = {
        'format': FORMAT, 'version': FORMAT_VERSION,
        'time': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
        'release': platform.release(), 'proc_version': _read_text('/proc/version').strip(),
        'machine': platform.machine(), 'page_size': os.sysconf('SC_PAGE_SIZE'),
        'memtotal_kb': _memtotal_kb(), 'thp': thp_knobs(), 'processes': procs,
        'skipped': skipped, 'names': names, 'smaps_keys': list(SMAPS_KEYS),
        'memcgs': {str(k): v for k, v in memcgs.items() if k in used_inos or
                   v in {p['cgroup'] for p in procs}},
        'cgroup': cgroup, 'cgroup_memory_stat': cgroup_memory_stat(cgroup) if cgroup else None,
        'seconds': round(time.monotonic() - t0, 3),
    }
    arrays['meta'] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    tmp = out_path + '.tmp.npz' if not out_path.endswith('.npz') else out_path[:-4] + '.tmp.npz'
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, out_path)
    progress.done()
    return {'processes': len(procs), 'skipped': len(skipped), 'pages': pages,
            'folios': len(heads), 'bytes': os.path.getsize(out_path),
            'seconds': time.monotonic() - t0}


def _memtotal_kb():
    for line in _read_text('/proc/meminfo').splitlines():
        if line.startswith('MemTotal:'):
            return int(line.split()[1])
    return 0


def _vma_arrays(rows):
    n = len(rows)
    cols = list(zip(*rows)) if rows else [()] * 12
    return {
        'vma_proc': np.array(cols[0], dtype=np.int32), 'vma_start': np.array(cols[1], dtype=np.uint64),
        'vma_end': np.array(cols[2], dtype=np.uint64), 'vma_pgoff': np.array(cols[3], dtype=np.uint64),
        'vma_major': np.array(cols[4], dtype=np.uint32), 'vma_minor': np.array(cols[5], dtype=np.uint32),
        'vma_inode': np.array(cols[6], dtype=np.uint64), 'vma_name': np.array(cols[7], dtype=np.int32),
        'vma_flags': np.array(cols[8], dtype=np.uint64), 'vma_perms': np.array(cols[9], dtype=np.uint8),
        'vma_unread': np.array(cols[10], dtype=np.uint8),
        'vma_smaps': np.array(cols[11], dtype=np.int64).reshape(n, len(SMAPS_KEYS)),
    }


def _expand_pfns(run_pfn, run_len):
    if len(run_pfn) == 0:
        return np.zeros(0, dtype=np.uint64)
    total = int(run_len.sum())
    starts = np.repeat(run_pfn.astype(np.int64), run_len)
    within = np.arange(total) - np.repeat(np.cumsum(run_len.astype(np.int64)) - run_len, run_len)
    return (starts + within).astype(np.uint64)


def main_capture(pids, all_processes, cgroup, out):
    """The CLI entry: chooses the processes and prints a one-line summary."""
    check_privileges()
    if all_processes:
        chosen = [p for p in all_pids() if p != os.getpid()]
    elif cgroup:
        chosen = cgroup_pids(cgroup)
    elif pids:
        chosen = sorted(set(pids))
        for p in chosen:
            if not os.path.isdir('/proc/%d' % p):
                raise CaptureError('pid %d: no such process' % p)
    else:
        raise CaptureError('say which processes: --pid PID ..., --all or --cgroup PATH')
    if cgroup and pids:
        chosen = sorted(set(chosen) | set(pids))
    d = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(d):
        raise CaptureError('%s: directory %s does not exist' % (out, d))
    s = capture(chosen, out, cgroup=cgroup)
    print('captured %d processes (%d skipped), %d MiB in %d folios, into %s (%d kB) in %.1f s'
          % (s['processes'], s['skipped'], s['pages'] >> 8, s['folios'], out, s['bytes'] >> 10,
             s['seconds']))
    return 0

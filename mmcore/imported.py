"""Kernel state from a capture of a real machine (mmcore.capture): the
second input format beside the scenario loader.  The state is built
directly, not replayed: folios at their real orders, each process's page
tables mapping the same folios through PTEs or PMD leaves, anon, file and
shmem folios, the zero page and the huge zero page, all through the
primitives of mmcore.install.

What the import decides, and why:

- PFNs are renumbered: the captured folios are packed, largest order
  first, into an emulated memory just big enough for them (a real PFN can
  be anywhere in tens of GiB); ``CaptureInfo.real_pfn`` maps back.
- Pages that /proc shows as not normal (VM_PFNMAP/VM_IO VMAs, pages
  without a struct page, slab or page-table pages seen through a race)
  are left unmapped: vm_normal_page() is NULL for them, so smaps does not
  count them either.
- Stand-in mappers: a page whose kpagecount is higher than the captured
  processes' mappings explain (libc's page cache mapped by processes
  outside the capture...) gets the missing mappings from stand-in MMs
  (stand-in j maps, through one PTE each, every page with at least j
  missing mappings), so kpagecount, PSS, "shared" and the folios' MM-ID
  state stay as the kernel has them.  Stand-ins are not processes: they
  appear in no /proc/PID.
- PTE dirty and young bits are not shown per page by /proc: pages of
  dirty (referenced) folios count as dirty (young), and further pages are
  marked so that each VMA's Private_Dirty, Shared_Dirty and Referenced
  equal the captured smaps (anonymous pages first, then by address).
- MM-ID slots: every MM's mappings are added in pid order, stand-ins
  last; mmcore.mmid says which other slot states were possible.
"""
from dataclasses import dataclass, field

import numpy as np

from . import install
from .capture import (KPF_ACTIVE, KPF_ANON, KPF_BUDDY, KPF_DIRTY, KPF_HUGE, KPF_KSM, KPF_LRU,
                      KPF_MLOCKED, KPF_NOPAGE, KPF_OWNER_2, KPF_PGTABLE, KPF_REFERENCED,
                      KPF_SLAB, KPF_SWAPBACKED, KPF_UNEVICTABLE, KPF_UPTODATE, KPF_ZERO_PAGE,
                      PB_PMD, PB_SOFT_DIRTY)
from .errors import StepError
from .kernel import BOOT_TICKS, HZ, Kernel, Process
from .memory import (FL_ACTIVE, FL_ANON, FL_DIRTY, FL_KSM, FL_LRU, FL_MLOCKED, FL_PAGECACHE,
                     FL_REFERENCED, FL_SWAPBACKED, FL_UNEVICTABLE, FL_UPTODATE, HPAGE_PMD_NR,
                     HPAGE_PMD_ORDER, PAGE_SHIFT, PAGE_SIZE)
from .mm import (MM, PTE_DIRTY, PTE_SOFT_DIRTY, PTE_WRITE, PTE_YOUNG, VM_IO, VM_MAYREAD,
                 VM_MAYSHARE, VM_PFNMAP, VM_READ, VM_SHARED, VM_WRITE, VMA)
from .mmid import classify
from .scenario import Scenario, ThpSettings, THP_SIZES, SHMEM_ENABLED, THP_ENABLED

KPF_TO_FL = ((KPF_ANON, FL_ANON), (KPF_SWAPBACKED, FL_SWAPBACKED), (KPF_LRU, FL_LRU),
             (KPF_ACTIVE, FL_ACTIVE), (KPF_REFERENCED, FL_REFERENCED), (KPF_DIRTY, FL_DIRTY),
             (KPF_UPTODATE, FL_UPTODATE), (KPF_UNEVICTABLE, FL_UNEVICTABLE),
             (KPF_MLOCKED, FL_MLOCKED), (KPF_KSM, FL_KSM))
NOT_NORMAL = (1 << KPF_NOPAGE) | (1 << KPF_SLAB) | (1 << KPF_BUDDY) | (1 << KPF_PGTABLE) | \
    (1 << KPF_HUGE)
SLACK_FRAMES = 4096            # room for the emulated init process and later faults
STANDIN_BASE = 0x100000000     # where a stand-in's one VMA starts
GATE_START = 1 << 47


@dataclass
class CaptureInfo:
    """What the import did, for the summary and the reports."""
    path: str
    meta: dict
    arrays: dict = None                        # the capture's arrays (mmcore.capture)
    vmas: dict = field(default_factory=dict)   # capture VMA row -> VMA
    real_pfn: np.ndarray = None                # emulated PFN -> real PFN (-1: none)
    standins: list = field(default_factory=list)   # Processes of the stand-in mappers
    standin_pages: int = 0                     # pages with mappings outside the capture
    standin_mappings: int = 0
    kpagecount_below: int = 0                  # pages mapped more often than kpagecount says
    not_normal: int = 0                        # present entries without a normal page
    dropped: int = 0                           # entries whose folio changed during the capture
    mmid_classes: dict = field(default_factory=dict)   # class -> emulated head PFNs
    dirty_unmatched: int = 0                   # VMAs whose dirty split could not be met


class CaptureImportError(Exception):
    pass


def _expand(starts, lengths):
    """starts[i], starts[i] + 1, ... starts[i] + lengths[i] - 1, for every i."""
    lengths = lengths.astype(np.int64)
    total = int(lengths.sum())
    shift = starts.astype(np.int64) - (np.cumsum(lengths) - lengths)
    return np.repeat(shift, lengths) + np.arange(total)


def thp_settings(meta):
    t = meta.get('thp') or {}
    sizes = {}
    for kb, mode in (t.get('sizes') or {}).items():
        size = int(kb) << 10
        if size in THP_SIZES and mode in ('always', 'inherit', 'madvise', 'never'):
            sizes[size] = mode
    enabled = t.get('enabled', 'madvise')
    shmem = t.get('shmem_enabled', 'never')
    return ThpSettings(enabled=enabled if enabled in THP_ENABLED else 'madvise', sizes=sizes,
                       shmem_enabled=shmem if shmem in SHMEM_ENABLED else 'never',
                       use_zero_page=bool(t.get('use_zero_page', True)))


def _cgroup_list(paths):
    out = {'/'}
    for p in paths:
        parts = [x for x in p.split('/') if x]
        for i in range(1, len(parts) + 1):
            out.add('/' + '/'.join(parts[:i]))
    return sorted(out, key=lambda p: (p != '/', p.count('/'), p))


def _folio_flags(kflags):
    f = np.zeros(len(kflags), dtype=np.uint32)
    for kpf, fl in KPF_TO_FL:
        f[(kflags & np.uint64(1 << kpf)) != 0] |= fl
    return f


def _shmem_anon_name(name):
    return name.startswith('/dev/zero') or name.startswith('/SYSV') or \
        name.startswith('[anon_shmem')


class _Entries:
    """Every present entry of the capture: one element per PTE, and one per
    PMD leaf (`span` 512), so that the work grows with the entries the
    kernel has, not with the pages a PMD maps.  A PAGE_IS_HUGE run that
    does not consist of whole aligned leaves is taken page by page."""

    def __init__(self, cap):
        a = cap.a
        vpn0, pfn0, ln, bits, vma = (a['run_vpn'].astype(np.int64), a['run_pfn'].astype(np.int64),
                                     a['run_len'].astype(np.int64), a['run_bits'], a['run_vma'])
        leafy = ((bits & PB_PMD) != 0) & (vpn0 % HPAGE_PMD_NR == 0) & (ln % HPAGE_PMD_NR == 0)
        pte = ~leafy
        nleaf = ln[leafy] // HPAGE_PMD_NR
        parts = [
            (np.repeat(vma[pte], ln[pte]), _expand(vpn0[pte], ln[pte]), _expand(pfn0[pte], ln[pte]),
             np.repeat(bits[pte] & ~np.uint8(PB_PMD), ln[pte]), np.ones(int(ln[pte].sum()), np.int64)),
            (np.repeat(vma[leafy], nleaf), _expand(vpn0[leafy] // HPAGE_PMD_NR, nleaf) * HPAGE_PMD_NR,
             _expand(pfn0[leafy] // HPAGE_PMD_NR, nleaf) * HPAGE_PMD_NR +
             np.repeat(pfn0[leafy] % HPAGE_PMD_NR, nleaf),
             np.repeat(bits[leafy], nleaf), np.full(int(nleaf.sum()), HPAGE_PMD_NR, np.int64)),
        ]
        self.vma, self.vpn, self.rpfn, self.bits, self.span = \
            (np.concatenate(c) for c in zip(*parts))
        order = np.lexsort((self.vpn, self.vma))
        for name in ('vma', 'vpn', 'rpfn', 'bits', 'span'):
            setattr(self, name, getattr(self, name)[order])


@dataclass(frozen=True)
class ImportPlan:
    """Everything the import decides that no kernel config changes,
    computed once per capture (plan_import()) and shared by every config's
    kernel (build_kernel()): the entries to install with their emulated
    PFNs and final entry bits, the folios, files and page-cache places,
    the stand-in mappers and the inputs of the MM-ID classification.  Its
    arrays are read-only."""
    cap: object
    frames: int
    cgroups: list
    huge_zero: bool
    order_counts: tuple          # (order, folios) in allocation order
    emu_head: np.ndarray         # per used folio (ui order): emulated head PFN
    real_pfn: np.ndarray         # emulated PFN -> real PFN
    objects: list                # (name, pages, shmem_anon, inode, dev) per file object
    vma_obj: np.ndarray          # capture VMA row -> object index (-1: none)
    vma_anon: np.ndarray         # capture VMA row -> has anonymous pages (anon_vma)
    flags: np.ndarray            # per used folio: FL_* flags, memcg, object, index
    memcg: np.ndarray
    mapping: np.ndarray
    index: np.ndarray
    anon_exclusive: np.ndarray   # emulated heads whose page is PG_anon_exclusive
    cache: list                  # per object: (file indices, emulated PFNs)
    procs: list                  # (process index, [VMA rows], entry slice) in pid order
    vpn: np.ndarray              # per installed entry, grouped by process
    pfn: np.ndarray
    bits: np.ndarray
    pmd: np.ndarray
    zero: np.ndarray
    standins: list               # per stand-in j: its sorted emulated PFNs
    mmid: tuple                  # (heads, nr_mappers, first page mapped)
    counts: dict                 # CaptureInfo counters


def _frozen(*arrays):
    for x in arrays:
        x.flags.writeable = False


def plan_import(cap):
    """The config-independent part of the import of `cap` (ImportPlan)."""
    from .memory import PhysMem
    a, meta = cap.a, cap.meta
    names = meta['names']
    e = _Entries(cap)
    counts = {}

    # folios and what each entry maps
    fhead = a['folio_head'].astype(np.int64)
    forder = a['folio_order'].astype(np.int64)
    fnr = np.where(forder >= 0, np.left_shift(1, np.maximum(forder, 0)), 1)
    fpage0 = np.cumsum(fnr) - fnr
    fkflags = a['page_flags'][fpage0] if len(fhead) else np.zeros(0, np.uint64)
    fi = np.searchsorted(fhead, e.rpfn, side='right') - 1
    inside = (fi >= 0)
    fi_c = np.maximum(fi, 0)
    inside &= (e.rpfn + e.span <= fhead[fi_c] + fnr[fi_c]) if len(fhead) else False
    inside &= forder[fi_c] >= 0 if len(fhead) else False
    vflags = a['vma_flags']
    special_vma = (vflags[e.vma] & np.uint64(VM_PFNMAP | VM_IO)) != 0
    fk = fkflags[fi_c] if len(fhead) else np.zeros(len(e.vpn), np.uint64)
    zero = inside & ((fk & np.uint64(1 << KPF_ZERO_PAGE)) != 0)
    normal = inside & ~zero & ((fk & np.uint64(NOT_NORMAL)) == 0) & ~special_vma
    leaf = e.span == HPAGE_PMD_NR
    bad_leaf = normal & leaf & ((forder[fi_c] != HPAGE_PMD_ORDER) | (e.rpfn != fhead[fi_c]))
    normal &= ~bad_leaf
    counts['not_normal'] = int(e.span[inside & ~zero & ~normal & ~bad_leaf].sum())
    counts['dropped'] = int(e.span[~inside | bad_leaf].sum())
    keep = normal | zero
    huge_zero = zero & (forder[fi_c] == HPAGE_PMD_ORDER)
    used = np.zeros(len(fhead), dtype=bool)
    used[fi[normal]] = True
    ui = np.flatnonzero(used)

    # the emulated machine, and where the allocator puts each folio: the
    # packing every config's kernel repeats (largest order first, so that
    # it keeps natural alignment), done once on a scratch memory
    frames = 1024 + (HPAGE_PMD_NR if huge_zero.any() else 0) + int(fnr[used].sum()) + SLACK_FRAMES
    frames = -(-frames // HPAGE_PMD_NR) * HPAGE_PMD_NR
    memcg_of_ino = {int(k): v for k, v in (meta.get('memcgs') or {}).items()}
    proc_cgroups = [p.get('cgroup', '/') or '/' for p in meta['processes']]
    cgroups = _cgroup_list(proc_cgroups + list(memcg_of_ino.values()))
    scratch = PhysMem(frames * PAGE_SIZE)
    if huge_zero.any():
        scratch.get_huge_zero_pfn()
    zero_pfn, huge_zero_pfn = scratch.zero_pfn, scratch.huge_zero_pfn
    emu_head_f = np.full(len(fhead), -1, dtype=np.int64)
    order_counts = []
    for order in range(HPAGE_PMD_ORDER, -1, -1):
        sel = np.flatnonzero(used & (forder == order))
        if len(sel):
            emu_head_f[sel] = scratch.alloc(order, len(sel))
            order_counts.append((order, len(sel)))
    nr_frames = scratch.nr_frames
    del scratch
    real_pfn = np.full(nr_frames, -1, dtype=np.int64)
    if len(ui):
        real_pfn[_expand(emu_head_f[ui], fnr[ui])] = _expand(fhead[ui], fnr[ui])
    heads_u = emu_head_f[ui]

    # files and shmem objects, one per (device, inode)
    objects, obj_of = [], {}
    nv = len(a['vma_start'])
    vma_obj = np.full(nv, -1, dtype=np.int64)
    vma_pages = ((a['vma_end'] - a['vma_start']) >> np.uint64(PAGE_SHIFT)).astype(np.int64)
    end_pages = a['vma_pgoff'].astype(np.int64) + vma_pages
    for vi in np.flatnonzero(a['vma_inode'] != 0).tolist():
        key = (int(a['vma_major'][vi]), int(a['vma_minor'][vi]), int(a['vma_inode'][vi]))
        end_page = int(end_pages[vi])
        j = obj_of.get(key)
        if j is None:
            name = names[a['vma_name'][vi]]
            j = obj_of[key] = len(objects)
            objects.append([name, end_page, _shmem_anon_name(name) and bool(a['vma_perms'][vi] & 8),
                            key[2], key[:2]])
        elif end_page > objects[j][1]:
            objects[j][1] = end_page
        vma_obj[vi] = j
    objects = [tuple(o) for o in objects]

    # folio state
    flags = _folio_flags(fkflags[ui])
    anon = (flags & FL_ANON) != 0
    ino = a['page_cgroup'][fpage0[ui]] if len(ui) else np.zeros(0, np.uint64)
    cg_index = {p: i for i, p in enumerate(cgroups)}
    uino, inv = np.unique(ino, return_inverse=True)
    memcg = np.array([cg_index.get(memcg_of_ino.get(int(x), '/'), 0) for x in uino],
                     dtype=np.int32)[inv] if len(ui) else np.zeros(0, np.int32)
    mapping = np.full(len(ui), -1, dtype=np.int32)
    index = np.zeros(len(ui), dtype=np.int64)
    # a non-anon folio mapped through a VMA of a file is in that file's page
    # cache, at the place its first mapped entry (lowest VMA row, address) says
    pos_of = np.full(len(fhead), -1, dtype=np.int64)
    pos_of[ui] = np.arange(len(ui))
    nidx = np.flatnonzero(normal)
    file_e = nidx[vma_obj[e.vma[nidx]] >= 0]
    cache = [(np.zeros(0, np.int64), np.zeros(0, np.int64)) for _ in objects]
    if len(file_e):
        fpos = pos_of[fi[file_e]]
        nonanon = ~anon[fpos]
        file_e, fpos = file_e[nonanon], fpos[nonanon]
        _, first = np.unique(fpos, return_index=True)
        ent, p = file_e[first], fpos[first]
        vi = e.vma[ent]
        page_index = a['vma_pgoff'][vi].astype(np.int64) + e.vpn[ent] - \
            (a['vma_start'][vi].astype(np.int64) >> PAGE_SHIFT)
        hidx = page_index - (e.rpfn[ent] - fhead[ui[p]])
        ok = hidx >= 0
        ent, p, vi, hidx = ent[ok], p[ok], vi[ok], hidx[ok]
        obj = vma_obj[vi]
        mapping[p] = obj
        index[p] = hidx
        obj_pages = np.array([o[1] for o in objects], dtype=np.int64)
        n = np.maximum(np.minimum(hidx + fnr[ui[p]], obj_pages[obj]) - hidx, 0)
        c_obj = np.repeat(obj, n)
        c_idx = _expand(hidx, n)
        c_pfn = _expand(heads_u[p], n)
        # folio by folio (ascending) as the page cache was filled: a later
        # folio at the same index replaces an earlier one
        srt = np.argsort(c_obj, kind='stable')
        bounds = np.searchsorted(c_obj[srt], np.arange(len(objects) + 1))
        for j in np.flatnonzero(np.diff(bounds)).tolist():
            s = srt[bounds[j]:bounds[j + 1]]
            cache[j] = (c_idx[s], c_pfn[s])
    flags[mapping >= 0] |= FL_PAGECACHE
    owner2 = (fkflags[ui] & np.uint64(1 << KPF_OWNER_2)) != 0
    folio_excl = np.zeros(len(fhead), dtype=bool)
    folio_excl[ui] = anon & owner2

    # emulated PFN of every kept entry
    epfn = np.full(len(e.vpn), -1, dtype=np.int64)
    epfn[normal] = emu_head_f[fi[normal]] + (e.rpfn[normal] - fhead[fi[normal]])
    epfn[zero & leaf] = huge_zero_pfn
    epfn[zero & ~leaf] = zero_pfn
    kpc_real = a['page_count'].astype(np.int64)
    page_pos = np.full(len(e.vpn), -1, dtype=np.int64)      # index into page_* arrays
    page_pos[normal] = fpage0[fi[normal]] + (e.rpfn[normal] - fhead[fi[normal]])
    entry_anon = np.zeros(len(e.vpn), dtype=bool)
    entry_anon[normal] = anon[pos_of[fi[normal]]]

    # the VMAs made (not the gate VMA) and the entry bits: soft-dirty, write
    # (an exclusive page of a writable VMA), dirty and young fitted to smaps
    vma_start = a['vma_start'].astype(np.int64)
    made = vma_start < GATE_START
    vwrite = (vflags & np.uint64(VM_WRITE)) != 0
    vshared = (vflags & np.uint64(VM_SHARED)) != 0
    bits = np.where((e.bits & PB_SOFT_DIRTY) != 0, PTE_SOFT_DIRTY, 0).astype(np.uint8)
    excl = vshared[e.vma] | folio_excl[np.maximum(fi, 0)]
    bits[normal & vwrite[e.vma] & excl] |= PTE_WRITE
    bits[zero] = 0
    in_made = normal & made[e.vma]
    bits |= _fit_dirty_young(cap, counts, e, in_made, flags[pos_of[fi_c]] if len(ui) else
                             np.zeros(len(e.vpn), np.uint32), page_pos, kpc_real)
    vma_anon = np.bincount(e.vma[normal & entry_anon], minlength=nv) > 0

    # processes (pid order), their VMAs and entries
    procs_meta = meta['processes']
    vproc = a['vma_proc']
    rows_of = [[] for _ in procs_meta]
    for vi in np.flatnonzero(made).tolist():
        rows_of[vproc[vi]].append(vi)
    inst = keep & made[e.vma]
    eproc = vproc[e.vma].astype(np.int64)
    ie = np.flatnonzero(inst)
    ie = ie[np.argsort(eproc[ie], kind='stable')]
    bounds = np.searchsorted(eproc[ie], np.arange(len(procs_meta) + 1))
    procs = [(pi, rows_of[pi], slice(int(bounds[pi]), int(bounds[pi + 1])))
             for pi in sorted(range(len(procs_meta)), key=lambda i: procs_meta[i]['pid'])]

    # stand-in mappers for mappings outside the capture
    counted = np.zeros(len(kpc_real) + HPAGE_PMD_NR, dtype=np.int64)
    np.add.at(counted, page_pos[normal], 1)
    np.add.at(counted, page_pos[normal] + e.span[normal], -1)
    counted = np.cumsum(counted)[:len(kpc_real)]
    page_used = np.repeat(used, fnr)
    excess = np.where(page_used, kpc_real - counted, 0)
    counts['kpagecount_below'] = int(np.count_nonzero(excess < 0))
    excess = np.maximum(excess, 0)
    page_epfn = np.full(len(kpc_real), -1, dtype=np.int64)
    if len(ui):
        page_epfn[_expand(fpage0[ui], fnr[ui])] = _expand(heads_u, fnr[ui])
    counts['standin_pages'] = int(np.count_nonzero(excess))
    counts['standin_mappings'] = int(excess.sum())
    standins = []
    if counts['standin_pages']:
        has = np.flatnonzero(excess)
        order = has[np.argsort(page_epfn[has])]
        for j in range(1, int(excess.max()) + 1):
            pf = page_epfn[order[excess[order] >= j]]
            _frozen(pf)
            standins.append(pf)

    mmid = _mmid_inputs(vproc, e, normal, epfn, fi, fnr, emu_head_f, ui, excess, fpage0)
    plan = ImportPlan(cap=cap, frames=frames, cgroups=cgroups, huge_zero=bool(huge_zero.any()),
                      order_counts=tuple(order_counts), emu_head=heads_u, real_pfn=real_pfn,
                      objects=objects, vma_obj=vma_obj, vma_anon=vma_anon, flags=flags,
                      memcg=memcg, mapping=mapping, index=index,
                      anon_exclusive=heads_u[anon & owner2], cache=cache, procs=procs,
                      vpn=e.vpn[ie], pfn=epfn[ie], bits=bits[ie], pmd=leaf[ie], zero=zero[ie],
                      standins=standins, mmid=mmid, counts=counts)
    _frozen(plan.emu_head, plan.real_pfn, plan.vma_obj, plan.vma_anon, plan.flags, plan.memcg,
            plan.mapping, plan.index, plan.anon_exclusive, plan.vpn, plan.pfn, plan.bits,
            plan.pmd, plan.zero, *plan.mmid, *(x for c in cache for x in c))
    return plan


def build_kernel(config, cap, with_init=True):
    """A Kernel for `config` holding the captured state; `cap` is a
    capture or its ImportPlan (plan_import()), which several configs
    share."""
    plan = cap if isinstance(cap, ImportPlan) else plan_import(cap)
    cap = plan.cap
    if config.bits != 64:
        raise CaptureImportError('%s: a capture of a 64-bit machine cannot be served under the '
                                 '32-bit kernel config %s' % (cap.path, config.name))
    a, meta = cap.a, cap.meta
    names = meta['names']
    info = CaptureInfo(cap.path, meta, arrays=a)
    for key, value in plan.counts.items():
        setattr(info, key, value)
    sc = Scenario(path=cap.path, name=cap.name, description='', memory=plan.frames * PAGE_SIZE,
                  thp=thp_settings(meta), files={}, cgroups=plan.cgroups, processes=[], steps=[],
                  labels=[])
    k = Kernel(config, sc, with_init=False)
    k.capture = info
    mem = k.mem
    if plan.huge_zero:
        mem.get_huge_zero_pfn()
    heads = [install.alloc_folios(k, order, n) for order, n in plan.order_counts]
    if not np.array_equal(np.sort(np.concatenate(heads)) if heads else np.zeros(0, np.int64),
                          np.sort(plan.emu_head)):
        raise AssertionError('the allocator placed the folios elsewhere than the plan')
    info.real_pfn = plan.real_pfn

    objs = []
    for name, pages, shmem_anon, ino, dev in plan.objects:
        obj = k._new_object(name, name, pages * PAGE_SIZE, PAGE_SIZE, shmem_anon=shmem_anon)
        obj.inode = ino
        obj.dev = dev
        objs.append(obj)
    for obj, (idx, pfn) in zip(objs, plan.cache):
        if len(idx):
            obj.pages[idx] = pfn
    ids = np.array([o.id for o in objs] + [-1], dtype=np.int32)
    install.set_folios(k, plan.emu_head, plan.flags, plan.memcg, ids[plan.mapping], plan.index)
    mem.anon_exclusive[plan.anon_exclusive] = True

    procs_meta = meta['processes']
    for pi, rows, sl in plan.procs:
        pm = procs_meta[pi]
        proc = Process(pm['pid'], pm.get('comm', '?')[:15], pm.get('ppid', 0),
                       pm.get('cgroup', '/') or '/', MM(k.mm_ids.alloc(), 64),
                       BOOT_TICKS - HZ, uid=pm.get('uid', 0))
        k.processes[proc.pid] = proc
        vmas = []
        for vi in rows:
            vo = int(plan.vma_obj[vi])
            vma = _make_vma(a, names, vi, objs[vo] if vo >= 0 else None)
            vma.anon_vma = bool(plan.vma_anon[vi])
            info.vmas[vi] = vma
            vmas.append(vma)
        install.add_vmas(proc, vmas)
        install.map_entries(k, proc, plan.vpn[sl], plan.pfn[sl], plan.bits[sl], plan.pmd[sl],
                            plan.zero[sl])

    for j, pf in enumerate(plan.standins, 1):
        st = Process(-j, 'stand-in', 0, '/', MM(k.mm_ids.alloc(), 64), BOOT_TICKS)
        vma = VMA(STANDIN_BASE, STANDIN_BASE + len(pf) * PAGE_SIZE, VM_READ | VM_MAYREAD |
                  VM_SHARED | VM_MAYSHARE, 'shared-file', '[stand-in]')
        install.add_vma(st, vma)
        install.map_ptes(k, st, vma, np.arange(len(pf)), pf, 0)
        info.standins.append(st)

    info.mmid_classes = _mmid_classes(k, *plan.mmid)
    if with_init and 1 not in k.processes:
        k._start_init()
    return k


def _make_vma(a, names, vi, obj):
    name = names[a['vma_name'][vi]]
    perms = int(a['vma_perms'][vi])
    flags = int(a['vma_flags'][vi])
    if obj is None:
        kind = 'anon'
    elif perms & 8:
        kind = 'shared-anon' if obj.shmem_anon else 'shared-file'
    else:
        kind = 'file'
    vma = VMA(int(a['vma_start'][vi]), int(a['vma_end'][vi]), flags, kind, name, obj,
              int(a['vma_pgoff'][vi]) if obj is not None else 0)
    vma.shown_name = name
    return vma


def _pick(priv, shar, budget, prefer):
    """Greedy choice of whole entries (a PMD leaf is one), preferred ones
    first, then by address: `priv`/`shar` are each entry's private and
    shared pages, `budget` the (private, shared) pages wanted.  Returns the
    chosen mask and the budget left."""
    order = np.argsort(~prefer, kind='stable')
    bp, bs = budget
    chosen = np.zeros(len(priv), dtype=bool)
    big = (priv + shar) > 1
    for u in order[big[order]]:
        if priv[u] <= bp and shar[u] <= bs:
            chosen[u] = True
            bp -= priv[u]
            bs -= shar[u]
    small = order[~big[order]]
    ps = small[priv[small] == 1][:max(bp, 0)]
    ss = small[shar[small] == 1][:max(bs, 0)]
    chosen[ps] = True
    chosen[ss] = True
    return chosen, (bp - len(ps), bs - len(ss))


def _fit_dirty_young(cap, counts, e, normal, fflags, page_pos, kpc_real):
    """PTE dirty and young bits fitted to each VMA's captured smaps, per
    entry (`fflags`: its folio's FL_* flags): where a VMA wants every page
    (or none) beyond its dirty (referenced) folios, that is done for all
    VMAs at once; the rest choose entries greedily."""
    a = cap.a
    keys = cap.meta['smaps_keys']
    out = np.zeros(len(e.vpn), dtype=np.uint8)
    counts['dirty_unmatched'] = 0
    if not all(n in keys for n in ('Private_Dirty', 'Shared_Dirty', 'Referenced')):
        return out
    cpd, csd, cref = (keys.index(n) for n in ('Private_Dirty', 'Shared_Dirty', 'Referenced'))
    sel = np.flatnonzero(normal)
    if len(sel) == 0:
        return out
    vi = e.vma[sel]
    span = e.span[sel]
    # private pages of each entry: kpagecount <= 1 (PAGE_MAPCOUNT's rule), by prefix sums
    csum = np.concatenate([[0], np.cumsum(kpc_real <= 1)])
    pos = page_pos[sel]
    priv = csum[pos + span] - csum[pos]
    shar = span - priv
    f = fflags[sel]
    anon = (f & FL_ANON) != 0
    nv = len(a['vma_start'])
    sm = a['vma_smaps']
    for what, bit, folio_flag in (('dirty', PTE_DIRTY, FL_DIRTY), ('young', PTE_YOUNG, FL_REFERENCED)):
        forced = (f & folio_flag) != 0
        if what == 'dirty':
            p_, s_ = priv, shar
            want_p, want_s = sm[:, cpd] >> 2, sm[:, csd] >> 2
        else:
            p_, s_ = span, np.zeros(len(span), np.int64)
            want_p, want_s = sm[:, cref] >> 2, np.zeros(nv, np.int64)
        bp = want_p - np.bincount(vi[forced], weights=p_[forced], minlength=nv).astype(np.int64)
        bs = want_s - np.bincount(vi[forced], weights=s_[forced], minlength=nv).astype(np.int64)
        fp = np.bincount(vi[~forced], weights=p_[~forced], minlength=nv).astype(np.int64)
        fs = np.bincount(vi[~forced], weights=s_[~forced], minlength=nv).astype(np.int64)
        has = np.bincount(vi, minlength=nv) > 0
        everything = has & (bp == fp) & (bs == fs)
        partial = has & ~everything & ((bp != 0) | (bs != 0))
        if what == 'dirty':
            counts['dirty_unmatched'] += int(np.count_nonzero(
                partial & ((bp < 0) | (bs < 0) | (bp > fp) | (bs > fs))))
        mark = ~forced & everything[vi]
        todo = np.flatnonzero(partial & (bp >= 0) & (bs >= 0))
        los = np.searchsorted(vi, todo)
        his = np.searchsorted(vi, todo + 1)
        for v, lo, hi in zip(todo.tolist(), los.tolist(), his.tolist()):
            idx = lo + np.flatnonzero(~forced[lo:hi])
            chosen, left = _pick(p_[idx], s_[idx], (int(bp[v]), int(bs[v])), anon[idx])
            mark[idx[chosen]] = True
            if left != (0, 0) and what == 'dirty':
                counts['dirty_unmatched'] += 1
        out[sel[mark]] |= bit
    return out


def _mmid_inputs(vma_proc, e, normal, epfn, fi, fnr, emu_head, ui, excess, fpage0):
    """The inputs of mmcore.mmid.classify() over every mapped large folio:
    its emulated head, its number of mappers (its captured MMs plus the
    stand-ins mapping it: the most missing mappings of any of its pages)
    and whether page 0 is mapped."""
    large = normal & (fnr[np.maximum(fi, 0)] > 1)
    if not large.any():
        z = np.zeros(0, dtype=np.int64)
        return z, z.copy(), np.zeros(0, dtype=bool)
    heads = emu_head[fi[large]]
    pairs = np.unique(np.stack([heads, vma_proc[e.vma[large]].astype(np.int64)]), axis=1)
    uh, nr_mappers = np.unique(pairs[0], return_counts=True)
    lg = ui[fnr[ui] > 1]
    if len(lg):
        per_page = excess[_expand(fpage0[lg], fnr[lg])]
        starts = np.cumsum(fnr[lg]) - fnr[lg]
        most = np.maximum.reduceat(per_page, starts)
        pos = np.searchsorted(uh, emu_head[lg])
        hit = (pos < len(uh)) & (uh[np.minimum(pos, len(uh) - 1)] == emu_head[lg])
        np.add.at(nr_mappers, pos[hit], most[hit])
    first = np.zeros(len(uh), dtype=bool)
    page0 = epfn[large] == heads
    first[np.searchsorted(uh, heads[page0])] = True
    return uh, nr_mappers, first


def _mmid_classes(k, uh, nr_mappers, first):
    """mmcore.mmid.classify() of the mapped large folios (_mmid_inputs())."""
    if len(uh) == 0:
        return {}
    cls = classify(k.mem, uh, nr_mappers, first)
    out = {c: uh[cls == c] for c in ('shared', 'single', 'ambiguous')}
    out['three_or_more'] = uh[nr_mappers >= 3]
    return out

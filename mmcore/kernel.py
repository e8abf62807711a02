"""The emulated kernel: machine state and the replay of scenario steps."""
from collections import Counter

import numpy as np

from . import fault, fork, gup, madvise, unmap, vmaops
from .mapcount import policy_for
from .memory import PhysMem, PAGE_SIZE, OutOfMemory, HPAGE_PMD_ORDER
from .mm import MM, MMIdAllocator, VMA, PROT_FLAGS, VM_MAYREAD, VM_MAYWRITE, VM_MAYEXEC, \
    VM_SHARED, VM_MAYSHARE, VM_ACCOUNT, VM_READ, VM_WRITE, VM_GROWSDOWN
from .process import Process
from .pagecache import FileObject, FIRST_INODE, truncate_object
from .rmap import Rmap
from .history import SlotHistory
from .errors import Fault, StepError
from . import scenario as sc

HZ = 100                      # USER_HZ: clock ticks in /proc
STEP_TICKS = 10               # each step advances the clock by 0.1 s
BOOT_TICKS = 1234 * HZ        # uptime when the scenario starts
BTIME = 1795000000            # boot time (seconds since the epoch)


# (name, start, size, bytes touched, extra vm_flags) of init's VMAs
INIT_LAYOUT = {
    64: [('[heap]', 0x55d0c3a5e000, 132 << 10, 32 << 10, 0),
         ('[stack]', 0x7ffd4a2dd000, 132 << 10, 16 << 10, VM_GROWSDOWN)],
    32: [('[heap]', 0x0804c000, 132 << 10, 32 << 10, 0),
         ('[stack]', 0xbffdf000, 132 << 10, 16 << 10, VM_GROWSDOWN)],
}


class Kernel:
    """One emulated machine running one kernel config."""

    def __init__(self, config, scenario, with_init=False):
        self.config = config
        self.scenario = scenario
        self.policy = policy_for(config)
        self.mem = PhysMem(scenario.memory)
        self.events = Counter()
        self.cost = Counter()         # what the kernel's code touched (cost.py)
        self.rmap = Rmap(self.mem, config, self.policy, self.events, self.cost)
        self.slot_history = self.rmap.history = SlotHistory()
        self.mm_ids = MMIdAllocator(config.mm_id_max)
        self.thp = scenario.thp
        self.cgroups = list(scenario.cgroups)
        self.ticks = BOOT_TICKS
        self.objects = []
        self.files = {}
        for f in scenario.files.values():
            self._check_folio_size(f)
            self.files[f.name] = self._new_object(f.name, f.path, f.size, f.folio_size)
        self.processes = {}
        if with_init:
            self._start_init()
        for p in scenario.processes:
            self.processes[p.pid] = Process(p.pid, p.comm, 1, p.cgroup,
                                            MM(self.mm_ids.alloc(), config.bits), BOOT_TICKS - HZ,
                                            p.uid, p.gid)
        self.step_index = 0
        self.stopped_at = None
        self.faults = []          # (step, reason) of steps that faulted with expect: fault
        self.slot_history.set_owners(0, self._mm_owners())
        self.clock = None         # live machines: callable, ticks of wall-clock time served

    def _start_init(self):
        """Pid 1, the init process every machine has: a small heap and
        stack of order-0 anonymous pages (faulted before the scenario's THP
        knobs apply), charged to the root memcg."""
        init = Process(1, 'init', 0, '/', MM(self.mm_ids.alloc(), self.config.bits), 0)
        self.processes[1] = init
        rw = VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC | VM_ACCOUNT
        for name, start, size, used, extra in INIT_LAYOUT[self.config.bits]:
            vma = VMA(start, start + size, rw | extra, 'anon', name)
            init.mm.insert_vma(vma)
            touched = np.arange(vma.nr_pages - (used >> 12), vma.nr_pages) \
                if extra & VM_GROWSDOWN else np.arange(used >> 12)
            fault.new_anon_folios(self, init, vma, touched, 0)

    def _check_folio_size(self, f):
        """6.18 never creates a page-cache folio above MAX_PAGECACHE_ORDER (the
        PMD order); the RFC kernel maps folios up to order 11 (policy
        max_folio_order)."""
        order = (f.folio_size >> 12).bit_length() - 1
        if order > self.policy.max_folio_order:
            raise StepError(None, 'file %s: folio_size %dK is larger than kernel config %s '
                            'maps (order %d > %d; Linux 6.18 caps page-cache folios at '
                            'MAX_PAGECACHE_ORDER, the PMD order)'
                            % (f.name, f.folio_size >> 10, self.config.name, order,
                               self.policy.max_folio_order))

    # --- helpers used by the operations ------------------------------------------
    def _new_object(self, name, path, size, folio_size, shmem_anon=False):
        obj = FileObject(len(self.objects), name, path, size, folio_size, shmem_anon,
                         inode=FIRST_INODE + len(self.objects))
        self.objects.append(obj)
        return obj

    def memcg_of(self, proc):
        return self.cgroups.index(proc.cgroup)

    def count_event(self, name, n=1):
        self.events[name] += n

    def alloc(self, order, count):
        try:
            return self.mem.alloc(order, count)
        except OutOfMemory as e:
            raise Fault(str(e))

    def proc(self, pid):
        return self.processes[pid]

    def range_vmas(self, proc, name):
        return [v for v in proc.mm.vmas if v.name == name]

    def range_span(self, proc, name, offset, length):
        """Absolute [start, end) of offset/length in the named range."""
        vmas = self.range_vmas(proc, name)
        if not vmas:
            raise Fault('range %r of pid %d is not mapped' % (name, proc.pid))
        base = vmas[0].range_start
        return base + offset, base + offset + length

    # --- replay ----------------------------------------------------------------------
    def run(self, steps, stop_at=None, progress=None):
        """Replays steps; stops right after the snapshot `stop_at`.
        progress(done, step) is called before each step."""
        for done, step in enumerate(steps):
            if progress is not None:
                progress(done, step)
            self.apply(step)
            if isinstance(step, sc.Snapshot) and step.label == stop_at:
                self.stopped_at = stop_at
                return
        if stop_at is not None:
            raise StepError(None, 'no snapshot %r' % stop_at)

    def _mm_owners(self):
        return {p.mm.mm_id: pid for pid, p in self.processes.items()}

    def apply(self, step):
        if isinstance(step, sc.Expect):
            return          # read by the verifier (procfs.expect), not by the kernel
        self.step_index = step.index
        self.ticks += STEP_TICKS
        handler = getattr(self, 'do_' + step.op)
        hist = self.slot_history
        hist.step = step.index
        hist.set_owners(step.index, self._mm_owners())
        try:
            handler(step)
        except MemoryError:
            raise StepError(step, 'the emulator ran out of host memory replaying this step '
                            '(a size too large to emulate)') from None
        except Fault as e:
            if not step.expect_fault:
                raise StepError(step, str(e))
            self.faults.append((step, str(e)))
            return
        finally:
            hist.set_owners(step.index, self._mm_owners())
        if step.expect_fault:
            raise StepError(step, 'expected a fault, but the kernel performed the step')

    def do_snapshot(self, step):
        """A snapshot changes no state; run() stops after it when asked."""

    def do_thp(self, step):
        self.thp = step.settings

    def do_mmap(self, st):
        p = self.proc(st.pid)
        flags = PROT_FLAGS[st.prot] | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC
        obj = None
        pgoff = 0
        if st.kind == 'shared-anon':
            obj = self._new_object(st.name, '/dev/zero', st.size, PAGE_SIZE, shmem_anon=True)
            flags |= VM_SHARED | VM_MAYSHARE
        elif st.kind in ('file', 'shared-file'):
            obj = self.files[st.file]
            pgoff = st.file_offset // PAGE_SIZE
            if st.kind == 'shared-file':
                flags |= VM_SHARED | VM_MAYSHARE
        if st.kind in ('anon', 'file') and st.prot == 'rw':
            flags |= VM_ACCOUNT        # accountable_mapping(): private and writable
            if st.size > self.mem.nr_frames * PAGE_SIZE:
                # __vm_enough_memory(), OVERCOMMIT_GUESS: one request larger
                # than RAM + swap fails (no swap here)
                raise Fault('ENOMEM: a private writable mapping of %d kB is larger than the '
                            'RAM of the machine (overcommit heuristic)' % (st.size >> 10))
        if st.addr is not None:
            addr = st.addr
            if addr + st.size > p.mm.task_size:
                raise Fault('ENOMEM: 0x%x is beyond the user address space' % addr)
            unmap.do_munmap(self, p, addr, addr + st.size)
        else:
            try:
                addr = p.mm.get_unmapped_area(st.size, max(st.align, PAGE_SIZE))
            except MemoryError as e:
                raise Fault('ENOMEM: %s' % e)
        vma = VMA(addr, addr + st.size, flags, st.kind, st.name, obj, pgoff)
        p.mm.insert_vma(vma)

    def do_read(self, st):
        p = self.proc(st.pid)
        start, end = self.range_span(p, st.vma, st.offset, st.length)
        fault.access(self, p, start, end, write=False)

    def do_write(self, st):
        p = self.proc(st.pid)
        start, end = self.range_span(p, st.vma, st.offset, st.length)
        fault.access(self, p, start, end, write=True)

    def do_fork(self, st):
        fork.do_fork(self, self.proc(st.pid), st.child, st.comm)

    def do_exit(self, st):
        unmap.do_exit(self, self.proc(st.pid))

    def do_munmap(self, st):
        p = self.proc(st.pid)
        start, end = self.range_span(p, st.vma, st.offset, st.length)
        unmap.do_munmap(self, p, start, end)

    def do_mprotect(self, st):
        p = self.proc(st.pid)
        start, end = self.range_span(p, st.vma, st.offset, st.length)
        vmaops.do_mprotect(self, p, start, end, st.prot)

    def do_mremap(self, st):
        vmaops.do_mremap(self, self.proc(st.pid), st.vma, st.new_size, st.move_to)

    def do_madvise(self, st):
        p = self.proc(st.pid)
        start, end = self.range_span(p, st.vma, st.offset, st.length)
        madvise.do_madvise(self, p, start, end, st.advice)

    def do_pin(self, st):
        p = self.proc(st.pid)
        start, end = self.range_span(p, st.vma, st.offset, st.length)
        gup.pin_range(self, p, st.vma, start, end)

    def do_unpin(self, st):
        p = self.proc(st.pid)
        start, end = self.range_span(p, st.vma, st.offset, st.length)
        gup.unpin_range(self, p, st.vma, start, end)

    # --- process lifetime -----------------------------------------------------------
    def release_mm(self, proc):
        """__mmdrop(): the MM ID goes back to the allocator."""
        self.mm_ids.free(proc.mm.mm_id)

    def drop_unused_objects(self):
        """Frees the shmem object of a shared-anon range once no VMA maps it."""
        used = {id(v.obj) for p in self.processes.values() for v in p.mm.vmas if v.obj}
        for obj in self.objects:
            if obj.shmem_anon and id(obj) not in used and obj.pages.any_cached():
                truncate_object(self, obj)

    @property
    def uptime_ticks(self):
        """Clock ticks since boot: the steps' time, plus the time a live
        machine has been served."""
        return self.ticks + (self.clock() if self.clock is not None else 0)


def replay(config, scenario, stop_at=None):
    """Builds a Kernel for `config` and replays the scenario."""
    k = Kernel(config, scenario)
    k.run(scenario.steps, stop_at)
    return k

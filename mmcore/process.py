"""A task with its address space (struct task_struct, as far as /proc
shows it)."""


class Process:
    def __init__(self, pid, comm, ppid, cgroup, mm, start_ticks, uid=0, gid=0):
        self.pid = pid
        self.comm = comm
        self.ppid = ppid
        self.cgroup = cgroup
        self.mm = mm
        self.start_ticks = start_ticks
        self.uid = uid
        self.gid = gid
        self.pins = {}            # (range name, page offset) -> [pfn, ...]
        self.ranges = {}          # range name -> FileObject of a shared-anon range
        self.minflt = 0

"""Per-process text files: status, stat, statm, cmdline, comm, limits, cgroup
(semantics.md 8.7, 9.5; fs/proc/array.c, fs/proc/base.c, kernel/cgroup).

The layouts are those of Linux 6.18 on x86-64 as read on the conformance
machine (tests/data/real).  Values come from plain dataclasses; the mm core
fills them, these functions only print.
"""
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields

from ._seq import FormatInputError, U64_MAX, check_int, check_text, check_uint, dec_width

TASK_STATES = {
    'R': 'R (running)', 'S': 'S (sleeping)', 'D': 'D (disk sleep)',
    'T': 'T (stopped)', 't': 't (tracing stop)', 'X': 'X (dead)',
    'Z': 'Z (zombie)', 'P': 'P (parked)', 'I': 'I (idle)',
}
CAP_FULL = (1 << 41) - 1   # CAP_LAST_CAP 40
TASK_COMM_LEN = 16
RLIM_INFINITY = U64_MAX


def bitmap_hex(bits, nbits):
    """``%*pb``: 32-bit chunks as zero-padded hex, most significant first,
    separated by commas; the first chunk only as wide as its bits need."""
    nbits = check_uint('nbits', nbits, 1 << 20)
    value = 0
    for b in bits:
        b = check_uint('bit', b)
        if b >= nbits:
            raise FormatInputError(f'bit {b} does not fit a {nbits}-bit mask')
        value |= 1 << b
    chunks = []
    first = nbits % 32 or 32
    shift = max(nbits - first, 0)
    width = (first + 3) // 4
    while shift >= 0 and nbits:
        chunks.append(f'{(value >> shift) & ((1 << 32) - 1):0{width}x}')
        shift -= 32
        width = 8
    return ','.join(chunks)


def bitmap_list(bits):
    """``%*pbl``: ascending ranges ``a-b`` or single numbers, comma separated."""
    ordered = sorted({check_uint('bit', b) for b in bits})
    parts = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f'{ordered[i]}-{ordered[j]}')
        i = j + 1
    return ','.join(parts)


def escape_comm(comm):
    """``proc_task_name(m, p, true)``: ``seq_escape_str(.., ESCAPE_SPACE |
    ESCAPE_SPECIAL, "\\n\\\\")``: only newline and backslash are escaped."""
    return comm.replace('\\', '\\\\').replace('\n', '\\n')


def _check_comm(comm):
    comm = check_text('comm', comm, allow_newline=True)
    if len(comm.encode('utf-8', 'surrogateescape')) >= TASK_COMM_LEN:
        raise FormatInputError(f'comm is longer than {TASK_COMM_LEN - 1} bytes: {comm!r}')
    return comm


@dataclass
class StatusVm:
    """``task_mem()`` and the other mm-dependent status lines (kB unless
    noted).  ``vm_lib`` is exec_vm in kB minus ``vm_exe``."""
    vm_peak: int = 0
    vm_size: int = 0
    vm_lck: int = 0
    vm_pin: int = 0
    vm_hwm: int = 0
    vm_rss: int = 0
    rss_anon: int = 0
    rss_file: int = 0
    rss_shmem: int = 0
    vm_data: int = 0
    vm_stk: int = 0
    vm_exe: int = 0
    vm_lib: int = 0
    vm_pte: int = 0
    vm_swap: int = 0
    hugetlb_pages: int = 0
    core_dumping: int = 0
    thp_enabled: int = 1
    untag_mask: int = U64_MAX


_VM_LABELS = [('VmPeak', 'vm_peak'), ('VmSize', 'vm_size'), ('VmLck', 'vm_lck'),
              ('VmPin', 'vm_pin'), ('VmHWM', 'vm_hwm'), ('VmRSS', 'vm_rss'),
              ('RssAnon', 'rss_anon'), ('RssFile', 'rss_file'), ('RssShmem', 'rss_shmem'),
              ('VmData', 'vm_data'), ('VmStk', 'vm_stk'), ('VmExe', 'vm_exe'),
              ('VmLib', 'vm_lib'), ('VmPTE', 'vm_pte'), ('VmSwap', 'vm_swap'),
              ('HugetlbPages', 'hugetlb_pages')]


@dataclass
class ProcStatus:
    """Inputs of /proc/PID/status (``proc_pid_status()``).

    ``vm`` is None for a task without mm (kernel thread): then no Vm*,
    CoreDumping, THP_enabled or untag_mask line is printed.  The NS* tuples
    list the ids from the reader's pid namespace down to the task's own;
    None means one level equal to tgid / pid / pgid / sid.
    """
    name: str
    pid: int
    tgid: int = None
    ppid: int = 0
    pgid: int = 0
    sid: int = 0
    state: str = 'S'
    umask: int = 0o022
    ngid: int = 0
    tracer_pid: int = 0
    uid: tuple = (0, 0, 0, 0)
    gid: tuple = (0, 0, 0, 0)
    fd_size: int = 64
    groups: tuple = ()
    nstgid: tuple = None
    nspid: tuple = None
    nspgid: tuple = None
    nssid: tuple = None
    kthread: bool = False
    vm: StatusVm = field(default_factory=StatusVm)
    threads: int = 1
    sigq: tuple = (0, 96365)
    sig_pnd: int = 0
    shd_pnd: int = 0
    sig_blk: int = 0
    sig_ign: int = 0
    sig_cgt: int = 0
    cap_inh: int = 0
    cap_prm: int = CAP_FULL
    cap_eff: int = CAP_FULL
    cap_bnd: int = CAP_FULL
    cap_amb: int = 0
    no_new_privs: int = 0
    seccomp: int = 0
    seccomp_filters: int = 0
    speculation_store_bypass: str = 'vulnerable'
    speculation_indirect_branch: str = 'always enabled'
    cpus_allowed: frozenset = frozenset({0, 1})
    nr_cpu_ids: int = 2
    mems_allowed: frozenset = frozenset({0})
    max_numnodes: int = 1024
    voluntary_ctxt_switches: int = 0
    nonvoluntary_ctxt_switches: int = 0


def _ids(name, values):
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise FormatInputError(f'{name} must be a sequence of integers, got {values!r}')
    return [check_uint(name, v) for v in values]


def proc_status_text(st):
    """/proc/PID/status from a ProcStatus (TAB after every label)."""
    if not isinstance(st, ProcStatus):
        raise FormatInputError(f'expected a ProcStatus, got {type(st).__name__}')
    if st.state not in TASK_STATES:
        raise FormatInputError(f'state must be one of {"".join(TASK_STATES)}, got {st.state!r}')
    pid = check_uint('pid', st.pid)
    tgid = pid if st.tgid is None else check_uint('tgid', st.tgid)
    uid, gid = _ids('uid', st.uid), _ids('gid', st.gid)
    if len(uid) != 4 or len(gid) != 4:
        raise FormatInputError('uid and gid need 4 values: real, effective, saved, fs')
    ns = {
        'NStgid': _ids('nstgid', st.nstgid) if st.nstgid is not None else [tgid],
        'NSpid': _ids('nspid', st.nspid) if st.nspid is not None else [pid],
        'NSpgid': _ids('nspgid', st.nspgid) if st.nspgid is not None else [check_uint('pgid', st.pgid)],
        'NSsid': _ids('nssid', st.nssid) if st.nssid is not None else [check_uint('sid', st.sid)],
    }
    sigq = _ids('sigq', st.sigq)
    if len(sigq) != 2:
        raise FormatInputError('sigq needs 2 values: queued and the RLIMIT_SIGPENDING limit')
    out = [f'Name:\t{escape_comm(_check_comm(st.name))}\n']
    if st.umask is not None:
        out.append(f'Umask:\t{check_uint("umask", st.umask, 0o777):04o}\n')
    out += [f'State:\t{TASK_STATES[st.state]}\n',
            f'Tgid:\t{tgid}\n',
            f'Ngid:\t{check_uint("ngid", st.ngid)}\n',
            f'Pid:\t{pid}\n',
            f'PPid:\t{check_uint("ppid", st.ppid)}\n',
            f'TracerPid:\t{check_uint("tracer_pid", st.tracer_pid)}\n',
            'Uid:\t' + '\t'.join(map(str, uid)) + '\n',
            'Gid:\t' + '\t'.join(map(str, gid)) + '\n',
            f'FDSize:\t{check_uint("fd_size", st.fd_size)}\n',
            'Groups:\t' + ' '.join(map(str, _ids('groups', st.groups))) + ' \n']
    out += [f'{label}:' + ''.join(f'\t{v}' for v in values) + '\n' for label, values in ns.items()]
    out.append(f'Kthread:\t{int(bool(st.kthread))}\n')
    if st.vm is not None:
        vm = st.vm
        if not isinstance(vm, StatusVm):
            raise FormatInputError(f'vm must be a StatusVm or None, got {type(vm).__name__}')
        out += [f'{label}:\t{dec_width(check_uint(attr, getattr(vm, attr)), 8)} kB\n'
                for label, attr in _VM_LABELS]
        mask = check_uint('untag_mask', vm.untag_mask)
        out += [f'CoreDumping:\t{int(bool(vm.core_dumping))}\n',
                f'THP_enabled:\t{int(bool(vm.thp_enabled))}\n',
                f'untag_mask:\t{mask:#x}\n' if mask else 'untag_mask:\t0\n']
    out += [f'Threads:\t{check_uint("threads", st.threads)}\n',
            f'SigQ:\t{sigq[0]}/{sigq[1]}\n']
    for label, attr in (('SigPnd', 'sig_pnd'), ('ShdPnd', 'shd_pnd'), ('SigBlk', 'sig_blk'),
                        ('SigIgn', 'sig_ign'), ('SigCgt', 'sig_cgt'), ('CapInh', 'cap_inh'),
                        ('CapPrm', 'cap_prm'), ('CapEff', 'cap_eff'), ('CapBnd', 'cap_bnd'),
                        ('CapAmb', 'cap_amb')):
        out.append(f'{label}:\t{check_uint(attr, getattr(st, attr)):016x}\n')
    out += [f'NoNewPrivs:\t{int(bool(st.no_new_privs))}\n',
            f'Seccomp:\t{check_uint("seccomp", st.seccomp, 2)}\n',
            f'Seccomp_filters:\t{check_uint("seccomp_filters", st.seccomp_filters)}\n',
            f'Speculation_Store_Bypass:\t{check_text("speculation_store_bypass", st.speculation_store_bypass)}\n',
            f'SpeculationIndirectBranch:\t'
            f'{check_text("speculation_indirect_branch", st.speculation_indirect_branch)}\n',
            f'Cpus_allowed:\t{bitmap_hex(st.cpus_allowed, st.nr_cpu_ids)}\n',
            f'Cpus_allowed_list:\t{bitmap_list(st.cpus_allowed)}\n',
            f'Mems_allowed:\t{bitmap_hex(st.mems_allowed, st.max_numnodes)}\n',
            f'Mems_allowed_list:\t{bitmap_list(st.mems_allowed)}\n',
            f'voluntary_ctxt_switches:\t{check_uint("voluntary_ctxt_switches", st.voluntary_ctxt_switches)}\n',
            f'nonvoluntary_ctxt_switches:\t'
            f'{check_uint("nonvoluntary_ctxt_switches", st.nonvoluntary_ctxt_switches)}\n']
    return ''.join(out)


@dataclass
class ProcStat:
    """The 52 fields of /proc/PID/stat (``do_task_stat()``), named as in
    proc(5).  Times are in clock ticks (USER_HZ 100), ``vsize`` in bytes,
    ``rss`` in pages; fields 1-52 in order."""
    pid: int
    comm: str
    state: str = 'S'
    ppid: int = 0
    pgrp: int = 0
    session: int = 0
    tty_nr: int = 0
    tpgid: int = -1
    flags: int = 0x400000          # PF_RANDOMIZE
    minflt: int = 0
    cminflt: int = 0
    majflt: int = 0
    cmajflt: int = 0
    utime: int = 0
    stime: int = 0
    cutime: int = 0
    cstime: int = 0
    priority: int = 20
    nice: int = 0
    num_threads: int = 1
    itrealvalue: int = 0
    starttime: int = 0
    vsize: int = 0
    rss: int = 0
    rsslim: int = U64_MAX
    startcode: int = 0
    endcode: int = 0
    startstack: int = 0
    kstkesp: int = 0
    kstkeip: int = 0
    signal: int = 0
    blocked: int = 0
    sigignore: int = 0
    sigcatch: int = 0
    wchan: int = 0
    nswap: int = 0
    cnswap: int = 0
    exit_signal: int = 17          # SIGCHLD
    processor: int = 0
    rt_priority: int = 0
    policy: int = 0
    delayacct_blkio_ticks: int = 0
    guest_time: int = 0
    cguest_time: int = 0
    start_data: int = 0
    end_data: int = 0
    start_brk: int = 0
    arg_start: int = 0
    arg_end: int = 0
    env_start: int = 0
    env_end: int = 0
    exit_code: int = 0


# fields printed with seq_put_decimal_ll (may be negative)
_STAT_SIGNED = {'ppid', 'pgrp', 'session', 'tty_nr', 'tpgid', 'cutime', 'cstime',
                'priority', 'nice', 'num_threads', 'exit_signal', 'processor',
                'cguest_time', 'exit_code'}


def proc_stat_line(st):
    """/proc/PID/stat: ``pid (comm) S`` and 49 more numbers, newline.  The
    comm is printed unescaped (it may contain ``)``, spaces or newlines)."""
    if not isinstance(st, ProcStat):
        raise FormatInputError(f'expected a ProcStat, got {type(st).__name__}')
    if st.state not in TASK_STATES:
        raise FormatInputError(f'state must be one of {"".join(TASK_STATES)}, got {st.state!r}')
    nums = []
    for f in fields(st)[3:]:
        value = getattr(st, f.name)
        nums.append(check_int(f.name, value) if f.name in _STAT_SIGNED else check_uint(f.name, value))
    return f'{check_uint("pid", st.pid)} ({_check_comm(st.comm)}) {st.state} ' + ' '.join(map(str, nums)) + '\n'


def statm_text(size, resident, shared, text, lib=0, data=0, dt=0):
    """/proc/PID/statm: seven page counts (lib and dt are always 0 since 2.6)."""
    values = [check_uint(n, v) for n, v in (('size', size), ('resident', resident), ('shared', shared),
                                            ('text', text), ('lib', lib), ('data', data), ('dt', dt))]
    return ' '.join(map(str, values)) + '\n'


def cmdline_bytes(argv):
    """/proc/PID/cmdline: every argument followed by a NUL; b'' for a
    kernel thread (empty argv)."""
    if isinstance(argv, (str, bytes)) or not isinstance(argv, Sequence):
        raise FormatInputError(f'argv must be a sequence of str/bytes, got {argv!r}')
    out = []
    for arg in argv:
        if isinstance(arg, str):
            arg = arg.encode('utf-8', 'surrogateescape')
        if not isinstance(arg, bytes) or b'\0' in arg:
            raise FormatInputError(f'argument must be str/bytes without NUL, got {arg!r}')
        out.append(arg + b'\0')
    return b''.join(out)


def comm_text(comm):
    """/proc/PID/comm: the unescaped task name and a newline."""
    return _check_comm(comm) + '\n'


# (resource, label, unit) in RLIMIT order (fs/proc/base.c lnames[])
RLIMITS = [
    ('cpu', 'Max cpu time', 'seconds'),
    ('fsize', 'Max file size', 'bytes'),
    ('data', 'Max data size', 'bytes'),
    ('stack', 'Max stack size', 'bytes'),
    ('core', 'Max core file size', 'bytes'),
    ('rss', 'Max resident set', 'bytes'),
    ('nproc', 'Max processes', 'processes'),
    ('nofile', 'Max open files', 'files'),
    ('memlock', 'Max locked memory', 'bytes'),
    ('as', 'Max address space', 'bytes'),
    ('locks', 'Max file locks', 'locks'),
    ('sigpending', 'Max pending signals', 'signals'),
    ('msgqueue', 'Max msgqueue size', 'bytes'),
    ('nice', 'Max nice priority', None),
    ('rtprio', 'Max realtime priority', None),
    ('rttime', 'Max realtime timeout', 'us'),
]

# INIT_RLIMITS (include/asm-generic/resource.h) with RLIMIT_NPROC and
# RLIMIT_SIGPENDING as this machine sets them for init (max_threads / 2).
DEFAULT_RLIMITS = {
    'cpu': (RLIM_INFINITY, RLIM_INFINITY), 'fsize': (RLIM_INFINITY, RLIM_INFINITY),
    'data': (RLIM_INFINITY, RLIM_INFINITY), 'stack': (8 << 20, RLIM_INFINITY),
    'core': (0, RLIM_INFINITY), 'rss': (RLIM_INFINITY, RLIM_INFINITY),
    'nproc': (96365, 96365), 'nofile': (1024, 4096), 'memlock': (8 << 20, 8 << 20),
    'as': (RLIM_INFINITY, RLIM_INFINITY), 'locks': (RLIM_INFINITY, RLIM_INFINITY),
    'sigpending': (96365, 96365), 'msgqueue': (819200, 819200), 'nice': (0, 0),
    'rtprio': (0, 0), 'rttime': (RLIM_INFINITY, RLIM_INFINITY),
}


def limits_text(limits=None):
    """/proc/PID/limits (``proc_pid_limits()``).  ``limits`` maps resource
    names of RLIMITS to (soft, hard); RLIM_INFINITY or None print
    ``unlimited``; missing resources take DEFAULT_RLIMITS."""
    limits = {} if limits is None else limits
    if not isinstance(limits, Mapping):
        raise FormatInputError('limits must be a mapping of resource name to (soft, hard)')
    unknown = sorted(set(limits) - set(DEFAULT_RLIMITS))
    if unknown:
        raise FormatInputError(f'unknown resource limit(s): {", ".join(map(repr, unknown))}')

    def value(name, v):
        if v is None or v == RLIM_INFINITY:
            return 'unlimited'
        return str(check_uint(name, v))

    out = [f'{"Limit":<25} {"Soft Limit":<20} {"Hard Limit":<20} {"Units":<10}\n']
    for res, label, unit in RLIMITS:
        pair = limits.get(res, DEFAULT_RLIMITS[res])
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise FormatInputError(f'limit {res!r} must be a (soft, hard) pair, got {pair!r}')
        soft, hard = value(f'{res} soft', pair[0]), value(f'{res} hard', pair[1])
        out.append(f'{label:<25} {soft:<20} {hard:<20} ' + (f'{unit:<10}' if unit else '') + '\n')
    return ''.join(out)


# The hierarchies of this machine (cgroup v1 + a v2 mount, "hybrid"):
# (hierarchy id, controller list), in the order /proc/PID/cgroup prints them.
HYBRID_HIERARCHIES = [(9, 'name=systemd'), (8, 'pids'), (7, 'blkio'), (6, 'freezer'),
                      (5, 'devices'), (4, 'memory'), (3, 'cpuset'), (2, 'cpuacct'),
                      (1, 'cpu'), (0, '')]


def cgroup_text(entries):
    """/proc/PID/cgroup (``proc_cgroup_show()``): one ``id:controllers:path``
    line per (id, controllers, path) entry, in the given order."""
    out = []
    for entry in entries:
        if not isinstance(entry, Sequence) or len(entry) != 3:
            raise FormatInputError(f'cgroup entry must be (id, controllers, path), got {entry!r}')
        hid, controllers, path = entry
        path = check_text('cgroup path', path)
        if not path.startswith('/'):
            raise FormatInputError(f'cgroup path must be absolute, got {path!r}')
        out.append(f'{check_uint("hierarchy id", hid)}:{check_text("controllers", controllers)}:{path}\n')
    return ''.join(out)


def cgroup_text_hybrid(memory_path='/', other_path='/'):
    """/proc/PID/cgroup as this machine shows it: the memory hierarchy at
    ``memory_path`` (the emulated memcg), every other one at ``other_path``."""
    return cgroup_text([(hid, ctl, memory_path if ctl == 'memory' else other_path)
                        for hid, ctl in HYBRID_HIERARCHIES])

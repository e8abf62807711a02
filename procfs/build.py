"""Assembles the served tree: one subtree per kernel config, each laid out
like LXCFS (CONFIG/proc/..., CONFIG/sys/...), over the state that the
scenario left in that config's emulated kernel."""
import errno
import os

from mmcore.config import ConfigError, load_kernel_config
from mmcore.errors import StepError
from mmcore.kernel import Kernel
from mmcore.memory import HPAGE_PMD_NR, PAGE_SIZE
from mmcore.scenario import load_scenario
from . import debug, expect_check
from . import pid as pidfiles
from . import system
from .progress import Progress
from .tree import BinaryFile, Dir, Symlink, TextFile, walk

PID_MAX = 4194304
THREADS_MAX = 191675

# (name, renderer, mode) of the text files of /proc/PID
PID_TEXT_FILES = [
    ('maps', pidfiles.maps, 0o444), ('smaps', pidfiles.smaps, 0o444),
    ('smaps_rollup', pidfiles.smaps_rollup, 0o444), ('numa_maps', pidfiles.numa_maps, 0o444),
    ('status', pidfiles.status, 0o444), ('statm', pidfiles.statm, 0o444),
    ('stat', pidfiles.stat, 0o444), ('cmdline', pidfiles.cmdline, 0o444),
    ('comm', pidfiles.comm, 0o644), ('limits', pidfiles.limits, 0o444),
    ('cgroup', pidfiles.cgroup, 0o444),
]


def _text(k, fn, *args, mode=0o444, uid=0, gid=0, write_errno=errno.EINVAL, cache=False):
    return TextFile(lambda: fn(k, *args), mode=mode, uid=uid, gid=gid, write_errno=write_errno,
                    cache=cache)


def _top(k, fn):
    """A proc_create() entry without a write op: writes fail with EIO."""
    return _text(k, fn, write_errno=errno.EIO)


# the files whose open goes through proc_mem_open() (mm_access())
MM_ACCESS_FILES = ('maps', 'smaps', 'smaps_rollup', 'numa_maps', 'pagemap')


def pid_dir(k, proc):
    # rendered once per served tree: they show only the kernel's state,
    # which a served tree never changes (see TextFile)
    entries = {name: _text(k, fn, proc, mode=mode, uid=proc.uid, gid=proc.gid, cache=True)
               for name, fn, mode in PID_TEXT_FILES}

    def read_pagemap(offset, size, ctx):
        return pidfiles.pagemap_entries(k, proc, offset // 8, size // 8,
                                        ctx.capable).astype('<u8', copy=False).tobytes()

    def pagemap_extents():
        return [((v.vpn0 + lo) * 8, n * 8) for v in proc.mm.vmas
                for lo, n in v.populated_runs()]

    entries['pagemap'] = BinaryFile(read_pagemap, pidfiles.pagemap_size(proc), mode=0o400,
                                    uid=proc.uid, gid=proc.gid, extents=pagemap_extents)
    entries['exe'] = Symlink(pidfiles.exe_path(proc), uid=proc.uid, gid=proc.gid)
    owner = (proc.uid, proc.gid)
    for name in MM_ACCESS_FILES + ('exe',):
        entries[name].ptrace_owner = owner
    entries['cmdline'].seq_lseek = False        # proc_pid_cmdline_ops: generic_file_llseek
    return Dir(entries, uid=proc.uid, gid=proc.gid)


def _kpage_file(k, fn):
    reader = system.kpage_read(fn)
    return BinaryFile(lambda off, size, ctx: reader(k, off, size), system.kpage_size(k),
                      mode=0o400, write_errno=errno.EIO)


def proc_dir(k, with_init=True):
    """/proc; `self` points at pid 1 (tools started in a new pid namespace
    run as pid 1 there and look themselves up through it)."""
    from mmcore import query
    e = {
        'meminfo': _top(k, system.meminfo), 'vmstat': _top(k, system.vmstat),
        'stat': _top(k, system.stat), 'loadavg': _top(k, system.loadavg),
        'uptime': _top(k, system.uptime), 'cpuinfo': _top(k, system.cpuinfo),
        'version': _top(k, system.version),
        'kpagecount': _kpage_file(k, query.kpagecount),
        'kpageflags': _kpage_file(k, query.kpageflags),
        'kpagecgroup': _kpage_file(k, query.kpagecgroup),
        'sys': Dir({'kernel': Dir({
            'osrelease': TextFile(lambda: k.config.release + '\n'),
            'ostype': TextFile(lambda: 'Linux\n'),
            'pid_max': TextFile(lambda: '%d\n' % PID_MAX, mode=0o644),
            'threads-max': TextFile(lambda: '%d\n' % THREADS_MAX, mode=0o644),
        })}),
    }
    for pid, proc in sorted(k.processes.items()):
        e[str(pid)] = pid_dir(k, proc)
    if with_init:
        e['self'] = Symlink('1')
    return Dir(e)


def _cgroup_tree(k, files):
    """Nested directories for the scenario's cgroup paths; `files(path)`
    gives each one's files."""
    root = dict(files('/'))
    for path in k.cgroups:
        if path == '/':
            continue
        node = root
        parts = [p for p in path.split('/') if p]
        for depth, name in enumerate(parts):
            sub = '/' + '/'.join(parts[:depth + 1])
            if name not in node:
                node[name] = dict(files(sub))
            node = node[name]

    def to_dir(d):
        return Dir({n: to_dir(v) if isinstance(v, dict) else v for n, v in d.items()})
    return to_dir(root)


def sys_dir(k):
    thp = {
        'enabled': _text(k, system.thp_enabled, mode=0o644),
        'shmem_enabled': _text(k, system.thp_shmem_enabled, mode=0o644),
        'use_zero_page': _text(k, system.thp_use_zero_page, mode=0o644),
        'hpage_pmd_size': TextFile(lambda: '%d\n' % (HPAGE_PMD_NR * PAGE_SIZE)),
    }
    for kb in sorted(system.THP_SIZES_KB + system.FILE_ONLY_SIZES_KB):
        file_only = kb in system.FILE_ONLY_SIZES_KB
        names = system.MTHP_FILE_STATS if file_only else system.MTHP_STATS
        d = {'shmem_enabled': _text(k, system.thp_size_shmem_enabled, kb, mode=0o644),
             'stats': Dir({name: _text(k, system.mthp_stat, kb, name) for name in names})}
        if not file_only:
            d['enabled'] = _text(k, system.thp_size_enabled, kb, mode=0o644)
        thp['hugepages-%dkB' % kb] = Dir(d)

    def v1_files(path):
        return {'memory.stat': _text(k, system.memcg_v1_stat, path),
                'memory.usage_in_bytes': _text(k, system.memcg_usage, path),
                'cgroup.procs': _text(k, system.cgroup_procs, path, True, mode=0o644)}

    def v2_files(path):
        return {'memory.stat': _text(k, system.memcg_v2_stat, path),
                'memory.current': _text(k, system.memcg_usage, path),
                'cgroup.procs': _text(k, system.cgroup_procs, path, False, mode=0o644)}

    # debugfs: mode 0700 at the top, root-only files (an mmemu extension)
    debugfs = Dir({'mmemu': Dir({'folios': _text(k, debug.folios, mode=0o400),
                                 'mm_ids': _text(k, debug.mm_ids, mode=0o400)}, mode=0o500)},
                  mode=0o700)
    return _sysfs_lseek(Dir({
        'kernel': Dir({'mm': Dir({'transparent_hugepage': Dir(thp)}), 'debug': debugfs}),
        'devices': Dir({'system': Dir({'node': Dir({'node0': Dir({
            'meminfo': _text(k, system.node_meminfo)})})})}),
        'fs': Dir({'cgroup': Dir({'memory': _cgroup_tree(k, v1_files),
                                  'unified': _cgroup_tree(k, v2_files)})}),
    }))


def _sysfs_lseek(root):
    """sysfs and cgroupfs files seek as kernfs_fop_llseek() does (any
    whence), not as procfs' seq_lseek()."""
    for _, node in walk(root):
        node.seq_lseek = False
    return root


def kernel_tree(k, with_init=True):
    return Dir({'proc': proc_dir(k, with_init), 'sys': sys_dir(k)})


def _check_unique_names(kernels):
    names = [c.name for c, _ in kernels]
    if len(set(names)) != len(names):
        raise ConfigError('two kernel configs have the same name: %s' % ', '.join(names))


def import_all(capture_path, config_paths, stop_at=None, with_init=True):
    """(capture, [(config, Kernel)]): a capture of a real machine imported
    under every config (mmcore.imported)."""
    from mmcore.capture import load_capture
    from mmcore.imported import build_kernel, plan_import
    if stop_at is not None:
        raise ConfigError('%s: a capture has no snapshots (--stop-at %s)' % (capture_path, stop_at))
    cap = load_capture(capture_path)
    configs = [load_kernel_config(path) for path in config_paths]
    plan = plan_import(cap)          # the config-independent part, once
    out = [(cfg, build_kernel(cfg, plan, with_init)) for cfg in configs]
    _check_unique_names(out)
    return cap, out


def load_kernels(scenario_path, config_paths, with_init=True, stop_at=None):
    """(scenario, [(config, Kernel)]) with every kernel booted, before the
    first step; `stop_at` must be one of the scenario's labels."""
    sc = load_scenario(scenario_path)
    expect_check.validate(sc, None)
    check_label(sc, scenario_path, stop_at)
    out = [(cfg, Kernel(cfg, sc, with_init=with_init))
           for cfg in (load_kernel_config(path) for path in config_paths)]
    _check_unique_names(out)
    return sc, out


def check_label(sc, scenario_path, label):
    if label is not None and label not in sc.labels:
        from mmcore.scenario import ScenarioError
        raise ScenarioError('%s: no snapshot %r (labels: %s)'
                            % (scenario_path, label, ', '.join(sc.labels) or 'none'))


def replay_all(scenario_path, config_paths, stop_at=None, with_init=True):
    """[(config, Kernel)] after replaying the scenario on every config, or
    importing it when the file is a capture.  A replay that takes more
    than a second shows a progress bar on a terminal."""
    from mmcore.capture import is_capture
    if is_capture(scenario_path):
        return import_all(scenario_path, config_paths, stop_at, with_init)
    sc, out = load_kernels(scenario_path, config_paths, with_init, stop_at)
    n = len(sc.steps)
    with Progress('replaying %s' % os.path.basename(scenario_path), n * len(out)) as bar:
        for c, (cfg, k) in enumerate(out):
            def shown(done, step, c=c, name=cfg.name):
                bar.update(c * n + done, '%s: step %d (%s, line %s)'
                           % (name, step.index, step.op, step.line))
            try:
                k.run(sc.steps, stop_at, progress=shown)
            except StepError as e:
                raise StepError(e.step, '%s (kernel config %s)' % (e.reason, cfg.name),
                                path=scenario_path) from None
            k.mem.trim_slots()        # before the next config's replay adds its own
    return sc, out


def tree_of(kernels, with_init=True):
    """The served root: one subtree per config."""
    return Dir({cfg.name: kernel_tree(k, with_init) for cfg, k in kernels})


def build_tree(scenario_path, config_paths, stop_at=None, with_init=True):
    """(root Dir, summary text) for the CLI.  Without `with_init` the tree
    holds only the scenario's processes (no pid 1, no `self`), which is
    what the conformance recordings of a real kernel show."""
    sc, kernels = replay_all(scenario_path, config_paths, stop_at, with_init)
    root = tree_of(kernels, with_init)
    k0 = kernels[0][1]
    if getattr(k0, 'capture', None) is not None:
        from .report import capture_summary
        return root, capture_summary(k0, [cfg.name for cfg, _ in kernels])
    pids = sorted(p for p in k0.processes if p != 1)
    lines = ['scenario %s (%s): %d steps%s' % (sc.name, os.path.basename(scenario_path),
                                              len(sc.steps),
                                              ', stopped after snapshot %s' % stop_at
                                              if stop_at else '')]
    lines.append('configs: %s' % ', '.join(cfg.name for cfg, _ in kernels))
    lines.append('processes: %s' % ', '.join('%d (%s)' % (p, k0.processes[p].comm) for p in pids))
    for step, reason in k0.faults:
        lines.append('step %d faulted as expected: %s' % (step.index, reason))
    return root, '\n'.join(lines)


def diff_report(scenario_path, config_paths, stop_at=None, show_all=False):
    """`mmemu diff`: the values that differ between the configs."""
    from .report import diff_report as render
    sc, kernels = replay_all(scenario_path, config_paths, stop_at)
    return render(sc, kernels, only_diff=not show_all)


def tools_report(scenario_path, config_paths, stop_at=None):
    """`mmemu tools`: what each tool family reports, next to the truth."""
    from .report import tools_report as render
    sc, kernels = replay_all(scenario_path, config_paths, stop_at)
    return render(sc, kernels)


def cost_per_config(scenario_path, config_paths):
    """(scenario, {config name: [(step, Counter)]}): every step's cost
    (mmcore/cost.py) under each config, replayed without pid 1."""
    from mmcore.cost import replay_costs
    sc = load_scenario(scenario_path)
    out = {}
    for path in config_paths:
        cfg = load_kernel_config(path)
        if cfg.name in out:
            raise ConfigError('two kernel configs have the same name: %s' % cfg.name)
        k = Kernel(cfg, sc, with_init=False)
        try:
            out[cfg.name] = replay_costs(k, sc.steps)
        except StepError as e:
            raise StepError(None, '%s: %s (kernel config %s)' % (scenario_path, e, cfg.name))
    return sc, out

"""A small memory report of the kind a monitoring tool prints: USS and PSS
per process, read from PROC/PID/smaps_rollup (Documentation/filesystems/
proc.rst: USS is the Private_* memory, PSS the proportional share)."""
import os


def read_rollup(path):
    fields = {}
    with open(path) as f:
        next(f)                                  # the [rollup] header line
        for line in f:
            key, _, value = line.partition(':')
            fields[key] = int(value.split()[0])
    return fields


def uss_pss_report(proc='/proc'):
    """{pid: (comm, uss_kb, pss_kb)} of every process under `proc`."""
    out = {}
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        try:
            r = read_rollup(os.path.join(proc, name, 'smaps_rollup'))
            with open(os.path.join(proc, name, 'comm')) as f:
                comm = f.read().strip()
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
        uss = r['Private_Clean'] + r['Private_Dirty'] + r.get('Private_Hugetlb', 0)
        out[int(name)] = (comm, uss, r['Pss'])
    return out


def format_report(report):
    lines = ['%7s %-15s %9s %9s' % ('PID', 'COMM', 'USS kB', 'PSS kB')]
    for pid, (comm, uss, pss) in sorted(report.items()):
        lines.append('%7d %-15s %9d %9d' % (pid, comm, uss, pss))
    return '\n'.join(lines) + '\n'

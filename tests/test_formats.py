"""Tests of procfs.formats: the text renderers of the fake /proc.

Three kinds of test:

- Round trips against real kernel text (tests/data/real, captured on the
  conformance machine's Linux 6.18 by tests/data/real/capture.py): every
  file whose full input can be recovered from its text is parsed into the
  renderer's inputs and rendered again; the result must be byte-identical.
- smaps_account() / numa_maps_gather() fed with the real per-page state of
  the capture helper's regions (pages.json: /proc/kpagecount, kpageflags)
  must reproduce the real smaps and numa_maps of those VMAs.
- Unit tests with the values of semantics.md 8.4 (PSS table) and the
  worked scenarios of section 13, for both mapcount configs.
"""
import json
import re
from pathlib import Path

import numpy as np
import pytest

from procfs.formats import FormatInputError
from procfs.formats.maps import VM_FLAG_BITS, header_width, maps_line, vmflags_string
from procfs.formats.memcg import (MEMCG_V1_STAT_KEYS, MEMCG_V2_STAT_KEYS, UNLIMITED_BYTES,
                                  cgroup_procs_text, memcg_v1_stat_text, memcg_v2_stat_text,
                                  memory_current_text, unlimited_bytes)
from procfs.formats.numa_maps import NumaMapsCounts, numa_maps_gather, numa_maps_line
from procfs.formats.pid_files import (RLIMITS, HYBRID_HIERARCHIES, ProcStat, ProcStatus, StatusVm,
                                      bitmap_hex, bitmap_list, cgroup_text, cgroup_text_hybrid,
                                      cmdline_bytes, comm_text, limits_text, proc_stat_line,
                                      proc_status_text, statm_text)
from procfs.formats.smaps import (PSS_SHIFT, SmapsCounters, SmapsPages, smaps_account,
                                  smaps_block, smaps_rollup_text)
from procfs.formats.system import (MEMINFO_KEYS, VMSTAT_KEYS, CpuModel, CpuTimes, cpuinfo_text,
                                   loadavg_text, meminfo_text, node_meminfo_text, stat_text,
                                   uptime_text, version_text, vmstat_text)

REAL = Path(__file__).resolve().parent / 'data' / 'real'
ROLES = ('parent', 'child')
KB = 1024


def real(name):
    return (REAL / name).read_bytes().decode()


# --------------------------------------------------------------------------
# parsers of real kernel text (test side only)
# --------------------------------------------------------------------------
MAPS_RE = re.compile(r'([0-9a-f]+)-([0-9a-f]+) ([r-][w-][x-][sp]) ([0-9a-f]+) '
                     r'([0-9a-f]+):([0-9a-f]+) (\d+) (?: +(.*))?')


def parse_maps_line(line):
    m = MAPS_RE.fullmatch(line)
    assert m, line
    name = m.group(8)
    return dict(start=int(m.group(1), 16), end=int(m.group(2), 16), perms=m.group(3),
                offset=int(m.group(4), 16), major=int(m.group(5), 16), minor=int(m.group(6), 16),
                inode=int(m.group(7)), name=None if name is None else name.replace('\\012', '\n'))


# smaps label -> (SmapsCounters field, is a PSS (<< 12) counter)
SMAPS_FIELDS = {
    'Rss': ('resident', False), 'Pss': ('pss', True), 'Pss_Dirty': ('pss_dirty', True),
    'Pss_Anon': ('pss_anon', True), 'Pss_File': ('pss_file', True),
    'Pss_Shmem': ('pss_shmem', True), 'Shared_Clean': ('shared_clean', False),
    'Shared_Dirty': ('shared_dirty', False), 'Private_Clean': ('private_clean', False),
    'Private_Dirty': ('private_dirty', False), 'Referenced': ('referenced', False),
    'Anonymous': ('anonymous', False), 'KSM': ('ksm', False), 'LazyFree': ('lazyfree', False),
    'AnonHugePages': ('anonymous_thp', False), 'ShmemPmdMapped': ('shmem_thp', False),
    'FilePmdMapped': ('file_thp', False), 'Shared_Hugetlb': ('shared_hugetlb', False),
    'Private_Hugetlb': ('private_hugetlb', False), 'Swap': ('swap', False),
    'SwapPss': ('swap_pss', True), 'Locked': ('pss_locked', True),
}


def counters_from_kb(kb):
    """SmapsCounters whose printed kB values are `kb` (label -> kB)."""
    c = SmapsCounters()
    for label, value in kb.items():
        attr, is_pss = SMAPS_FIELDS[label]
        setattr(c, attr, value << (10 + (PSS_SHIFT if is_pss else 0)))
    return c


def parse_smaps(text):
    """[(header line, {label: value}, vmflags list)] per VMA."""
    blocks = []
    for line in text.splitlines():
        key = line.split(' ', 1)[0]
        if not key.endswith(':'):
            blocks.append((line, {}, None))
        elif key == 'VmFlags:':
            blocks[-1] = blocks[-1][:2] + (line.split()[1:],)
        else:
            blocks[-1][1][key[:-1]] = int(line.split()[1])
    return blocks


def unescape_octal(text):
    return re.sub(r'\\([0-7]{3})', lambda m: chr(int(m.group(1), 8)), text)


def parse_numa_line(line):
    tokens = line.split(' ')
    out = {'start': int(tokens[0], 16), 'policy': tokens[1], 'kw': {}, 'huge': False, 'values': {}}
    for tok in tokens[2:]:
        if tok.startswith('file='):
            out['kw']['file'] = unescape_octal(tok[5:])
        elif tok in ('heap', 'stack'):
            out['kw'][tok] = True
        elif tok == 'huge':
            out['huge'] = True
        else:
            key, value = tok.split('=')
            out['values'][key] = int(value)
    v = out['values']
    nodes = {int(k[1:]): n for k, n in v.items() if re.fullmatch(r'N\d+', k)}
    pages = sum(nodes.values())
    out['counts'] = NumaMapsCounts(
        pages=pages, anon=v.get('anon', 0), dirty=v.get('dirty', 0),
        active=v.get('active', pages), writeback=v.get('writeback', 0),
        swapcache=v.get('swapcache', 0), mapcount_max=v.get('mapmax', 1 if pages else 0),
        node=nodes)
    out['kps'] = v.get('kernelpagesize_kB', 4)
    return out


def parse_status(text):
    lines = dict(line.split(':\t', 1) for line in text.splitlines())
    ints = lambda key: tuple(int(x) for x in lines[key].split())
    name = re.sub(r'\\(.)', lambda m: {'n': '\n', '\\': '\\'}[m.group(1)], lines['Name'])
    vm = None
    if 'VmPeak' in lines:
        vm = StatusVm(**{attr: int(lines[label].split()[0]) for label, attr in
                         [('VmPeak', 'vm_peak'), ('VmSize', 'vm_size'), ('VmLck', 'vm_lck'),
                          ('VmPin', 'vm_pin'), ('VmHWM', 'vm_hwm'), ('VmRSS', 'vm_rss'),
                          ('RssAnon', 'rss_anon'), ('RssFile', 'rss_file'),
                          ('RssShmem', 'rss_shmem'), ('VmData', 'vm_data'), ('VmStk', 'vm_stk'),
                          ('VmExe', 'vm_exe'), ('VmLib', 'vm_lib'), ('VmPTE', 'vm_pte'),
                          ('VmSwap', 'vm_swap'), ('HugetlbPages', 'hugetlb_pages')]},
                     core_dumping=int(lines['CoreDumping']), thp_enabled=int(lines['THP_enabled']),
                     untag_mask=int(lines['untag_mask'], 16))
    hexes = {attr: int(lines[label], 16) for label, attr in
             [('SigPnd', 'sig_pnd'), ('ShdPnd', 'shd_pnd'), ('SigBlk', 'sig_blk'),
              ('SigIgn', 'sig_ign'), ('SigCgt', 'sig_cgt'), ('CapInh', 'cap_inh'),
              ('CapPrm', 'cap_prm'), ('CapEff', 'cap_eff'), ('CapBnd', 'cap_bnd'),
              ('CapAmb', 'cap_amb')]}
    cpus, mems = (set(parse_list(lines[k])) for k in ('Cpus_allowed_list', 'Mems_allowed_list'))
    return ProcStatus(
        name=name, pid=int(lines['Pid']), tgid=int(lines['Tgid']), ppid=int(lines['PPid']),
        state=lines['State'][0], umask=int(lines['Umask'], 8), ngid=int(lines['Ngid']),
        tracer_pid=int(lines['TracerPid']), uid=ints('Uid'), gid=ints('Gid'),
        fd_size=int(lines['FDSize']), groups=ints('Groups'), nstgid=ints('NStgid'),
        nspid=ints('NSpid'), nspgid=ints('NSpgid'), nssid=ints('NSsid'),
        kthread=bool(int(lines['Kthread'])), vm=vm, threads=int(lines['Threads']),
        sigq=tuple(int(x) for x in lines['SigQ'].split('/')),
        no_new_privs=int(lines['NoNewPrivs']), seccomp=int(lines['Seccomp']),
        seccomp_filters=int(lines['Seccomp_filters']),
        speculation_store_bypass=lines['Speculation_Store_Bypass'],
        speculation_indirect_branch=lines['SpeculationIndirectBranch'],
        cpus_allowed=frozenset(cpus), nr_cpu_ids=2, mems_allowed=frozenset(mems),
        max_numnodes=32 * len(lines['Mems_allowed'].split(',')),
        voluntary_ctxt_switches=int(lines['voluntary_ctxt_switches']),
        nonvoluntary_ctxt_switches=int(lines['nonvoluntary_ctxt_switches']), **hexes)


def parse_list(text):
    out = []
    for part in filter(None, text.split(',')):
        a, _, b = part.partition('-')
        out += range(int(a), int(b or a) + 1)
    return out


def parse_stat(text):
    assert text.endswith('\n')
    body = text[:-1]
    pid, rest = body.split(' (', 1)
    comm, rest = rest.rsplit(') ', 1)
    tokens = rest.split(' ')
    names = [f for f in ProcStat.__dataclass_fields__][3:]
    assert len(tokens) == 1 + len(names)
    return ProcStat(int(pid), comm, tokens[0], **{n: int(t) for n, t in zip(names, tokens[1:])})


# --------------------------------------------------------------------------
# per-process files of the capture helper
# --------------------------------------------------------------------------
@pytest.mark.parametrize('role', ROLES)
def test_maps_round_trip(role):
    text = real(f'{role}.maps')
    assert ''.join(maps_line(**parse_maps_line(line)) for line in text.splitlines()) == text


@pytest.mark.parametrize('role', ROLES)
def test_smaps_round_trip(role):
    text = real(f'{role}.smaps')
    out = []
    for header, values, vmflags in parse_smaps(text):
        size, kps, mps, thp = (values.pop(k) for k in
                               ('Size', 'KernelPageSize', 'MMUPageSize', 'THPeligible'))
        line = maps_line(**parse_maps_line(header))
        out.append(smaps_block(line, counters_from_kb(values), size, thp, vmflags,
                               kernel_page_size_kb=kps, mmu_page_size_kb=mps))
    assert ''.join(out) == text


@pytest.mark.parametrize('role', ROLES)
def test_smaps_rollup_round_trip(role):
    text = real(f'{role}.smaps_rollup')
    assert len(text.splitlines()) == 23        # semantics 9.3
    header, values, _ = parse_smaps(text)[0]
    h = parse_maps_line(header)
    assert (h['perms'], h['name']) == ('---p', '[rollup]')
    assert smaps_rollup_text(h['start'], h['end'], counters_from_kb(values)) == text


@pytest.mark.parametrize('role', ROLES)
def test_numa_maps_round_trip(role):
    text = real(f'{role}.numa_maps')
    for line in text.splitlines():
        p = parse_numa_line(line)
        assert numa_maps_line(p['start'], p['policy'], p['counts'], hugetlb=p['huge'],
                              kernel_page_size_kb=p['kps'], **p['kw']) == line + '\n'


@pytest.mark.parametrize('name', [f'{r}.status' for r in ROLES] + ['kthread_status'])
def test_status_round_trip(name):
    text = real(name)
    assert proc_status_text(parse_status(text)) == text


def test_status_kernel_thread_has_no_mm_lines():
    text = real('kthread_status')
    st = parse_status(text)
    assert st.vm is None and st.kthread
    assert 'VmRSS' not in text and 'THP_enabled' not in text


def test_status_escapes_name():
    # proc_task_name(escape=true): only "\n" and "\\" are escaped
    assert real('parent.status').startswith('Name:\tmm emu\\\\cap\n')
    assert real('child.status').startswith('Name:\tcap\\nchild\n')
    assert proc_status_text(ProcStatus(name='a\\b\nc d', pid=5)).startswith('Name:\ta\\\\b\\nc d\n')


@pytest.mark.parametrize('name', [f'{r}.stat' for r in ROLES] + ['kthread_stat'])
def test_stat_round_trip(name):
    text = real(name)
    st = parse_stat(text)
    assert proc_stat_line(st) == text
    assert len(text.split(') ', 1)[1].split()) + 2 == 52


def test_stat_comm_unescaped():
    assert real('child.stat').split(' ', 1)[1].startswith('(cap\nchild) S ')


@pytest.mark.parametrize('role', ROLES)
def test_statm_round_trip(role):
    text = real(f'{role}.statm')
    assert statm_text(*map(int, text.split())) == text


@pytest.mark.parametrize('role', ROLES)
def test_cmdline_comm_round_trip(role):
    raw = (REAL / f'{role}.cmdline').read_bytes()
    argv = raw.split(b'\0')[:-1]
    assert len(argv) == 2 and argv[1].endswith(b'cap file\nname')
    assert cmdline_bytes(argv) == raw
    assert cmdline_bytes([a.decode() for a in argv]) == raw
    comm = real(f'{role}.comm')
    assert comm_text(comm[:-1]) == comm


def test_cmdline_kernel_thread_empty():
    assert cmdline_bytes([]) == b''


@pytest.mark.parametrize('role', ROLES)
def test_limits_round_trip(role):
    text = real(f'{role}.limits')
    labels = {label: res for res, label, _ in RLIMITS}
    lines = text.splitlines()
    assert lines[0].startswith('Limit ')
    limits = {}
    for line in lines[1:]:
        soft, hard = line[26:46].strip(), line[47:67].strip()
        limits[labels[line[:25].rstrip()]] = tuple(None if v == 'unlimited' else int(v)
                                                   for v in (soft, hard))
    assert limits['nofile'] == (1000, 4096) and limits['as'] == (1 << 40, None)
    assert limits_text(limits) == text


@pytest.mark.parametrize('role', ROLES)
def test_cgroup_round_trip(role):
    text = real(f'{role}.cgroup')
    entries = [(int(a), b, c) for a, b, c in (line.split(':', 2) for line in text.splitlines())]
    assert cgroup_text(entries) == text
    assert [(h, c) for h, c, _ in entries] == HYBRID_HIERARCHIES
    assert cgroup_text_hybrid(memory_path='/mmemu') == text


# --------------------------------------------------------------------------
# system files
# --------------------------------------------------------------------------
def parse_kv_kb(text, prefix=''):
    out = {}
    for line in text.splitlines():
        key, value = line[len(prefix):].split(':', 1)
        out[key] = int(value.split()[0])
    return out


def test_meminfo_round_trip():
    text = real('meminfo')
    values = parse_kv_kb(text)
    assert list(values) == [k for k, _ in MEMINFO_KEYS]
    assert meminfo_text(values) == text


def test_node_meminfo_round_trip():
    text = real('node0_meminfo')
    assert node_meminfo_text(0, parse_kv_kb(text, 'Node 0 ')) == text


def test_vmstat_round_trip():
    text = real('vmstat')
    values = {k: int(v) for k, v in (line.split() for line in text.splitlines())}
    assert list(values) == VMSTAT_KEYS
    assert vmstat_text(values) == text


def test_proc_stat_round_trip():
    text = real('stat')
    lines = {line.split(' ', 1)[0]: line.split()[1:] for line in text.splitlines()}
    cpus = [CpuTimes(*map(int, lines[f'cpu{i}'])) for i in range(2)]
    intr = list(map(int, lines['intr']))
    softirq = list(map(int, lines['softirq']))
    assert softirq[0] == sum(softirq[1:])
    out = stat_text(cpus, intr[1:], int(lines['ctxt'][0]), int(lines['btime'][0]),
                    int(lines['processes'][0]), int(lines['procs_running'][0]),
                    int(lines['procs_blocked'][0]), softirq[1:],
                    cpu_total=CpuTimes(*map(int, lines['cpu'])), intr_total=intr[0])
    assert out == text


def test_proc_stat_cpu_line_sums_cpus():
    out = stat_text([CpuTimes(user=3, idle=10), CpuTimes(user=4, system=1, idle=9)],
                    intr=[1, 0, 2], btime=1795864511)
    assert out.splitlines()[:4] == ['cpu  7 0 1 19 0 0 0 0 0 0', 'cpu0 3 0 0 10 0 0 0 0 0 0',
                                    'cpu1 4 0 1 9 0 0 0 0 0 0', 'intr 3 1 0 2']
    assert 'btime 1795864511\n' in out and out.endswith('softirq 0 0 0 0 0 0 0 0 0 0 0\n')


def test_loadavg_uptime_version_round_trip():
    text = real('loadavg')
    l1, l5, l15, run, last = text.split()
    assert loadavg_text(float(l1), float(l5), float(l15), *map(int, run.split('/')),
                        int(last)) == text
    text = real('uptime')
    assert uptime_text(*map(float, text.split())) == text
    text = real('version')
    m = re.fullmatch(r'Linux version (\S+) \(([^)]*)\) \((.*)\) (#.*)\n', text)
    assert version_text(*m.groups()) == text


def test_loadavg_rounds_like_the_kernel():
    # loadavg_proc_show() adds FIXED_1/200 before LOAD_INT/LOAD_FRAC
    assert loadavg_text(0, 0.999, 2.5, 1, 100, 42) == '0.00 1.00 2.50 1/100 42\n'


def test_cpuinfo_round_trip():
    text = real('cpuinfo')
    blocks = text.split('\n\n')[:-1]
    first = dict(line.split(':', 1) for line in blocks[0].splitlines())
    first = {k.rstrip('\t'): v.strip() for k, v in first.items()}
    model = CpuModel(
        vendor_id=first['vendor_id'], cpu_family=int(first['cpu family']),
        model=int(first['model']), model_name=first['model name'],
        stepping=int(first['stepping']), microcode=int(first['microcode'], 16),
        cpu_mhz=first['cpu MHz'], cache_size_kb=int(first['cache size'].split()[0]),
        physical_id=int(first['physical id']), cpuid_level=int(first['cpuid level']),
        flags=tuple(first['flags'].split()), bugs=tuple(first['bugs'].split()),
        bogomips=first['bogomips'], clflush_size=int(first['clflush size']),
        cache_alignment=int(first['cache_alignment']),
        phys_bits=int(first['address sizes'].split()[0]),
        virt_bits=int(first['address sizes'].split()[3]),
        power_management=tuple(first['power management'].split()))
    assert cpuinfo_text(len(blocks), model) == text
    assert cpuinfo_text(len(blocks)) == text     # the defaults are this machine's


def test_memcg_v1_stat_round_trip():
    text = real('memcg_v1_memory.stat')
    values = {k: int(v) for k, v in (line.split() for line in text.splitlines())}
    assert list(values) == MEMCG_V1_STAT_KEYS
    assert memcg_v1_stat_text(values) == text
    assert values['hierarchical_memory_limit'] == UNLIMITED_BYTES == 9223372036854771712


# --------------------------------------------------------------------------
# smaps_account and numa_maps_gather on the real per-page state
# --------------------------------------------------------------------------
KPF = {'referenced': 2, 'dirty': 4, 'active': 6, 'anon': 12, 'swapbacked': 14,
       'unevictable': 18, 'ksm': 21, 'zero_page': 24}
PAGES = json.loads(real('pages.json'))
# semantics 13 S10: after the parent's write the child still maps the THP
# through its PMD; the parent's PMD was split into PTEs.
PMD_MAPPED = {('child', 'thp')}


def region_vmas(role):
    """(region, page records, real smaps block, real numa_maps line) for every
    capture region present in `role`."""
    blocks = {parse_maps_line(h)['start']: (h, v, f) for h, v, f in parse_smaps(real(f'{role}.smaps'))}
    numa = {int(line.split()[0], 16): line for line in real(f'{role}.numa_maps').splitlines()}
    for region, records in PAGES['processes'][role].items():
        start = PAGES['regions'][region][0]
        yield region, records, blocks[start], numa[start]


def page_arrays(runs):
    """Per present normal page (the zero page is skipped, 8.4): kpagecount
    and kpageflags bits.  `runs`: [count, present, exclusive, kpagecount,
    kpageflags] as capture.py writes them."""
    kept = [(n, count, int(flags, 16)) for n, present, _, count, flags in runs
            if present and not int(flags, 16) >> KPF['zero_page'] & 1]
    flags = np.array([f for n, _, f in kept for _ in range(n)], dtype=np.uint64)
    bit = {k: (flags >> np.uint64(b)) & np.uint64(1) == 1 for k, b in KPF.items()}
    return np.array([c for n, c, _ in kept for _ in range(n)], dtype=np.int64), bit


REAL_CASES = [(role, region) for role in ROLES for region in PAGES['processes'][role]]


@pytest.mark.parametrize('role,region', REAL_CASES)
def test_smaps_account_matches_real_kernel(role, region):
    _, records, (header, values, vmflags), _ = next(v for v in region_vmas(role) if v[0] == region)
    mapcount, bit = page_arrays(records)
    # every anon swapbacked page of these regions was written: PTE dirty
    # (fork keeps the dirty bit of private PTEs); others: folio dirty flag
    dirty = bit['dirty'] | (bit['anon'] & bit['swapbacked'])
    pmd = (role, region) in PMD_MAPPED
    pages = SmapsPages(mapcount=mapcount, private=mapcount < 2,   # PAGE_MAPCOUNT, 8.4 step 6
                       dirty=dirty, anon=bit['anon'], swapbacked=bit['swapbacked'],
                       ksm=bit['ksm'], locked='lo' in vmflags, pmd=pmd)
    c = smaps_account(pages)
    for label in ('Rss', 'Pss', 'Pss_Dirty', 'Shared_Clean', 'Shared_Dirty', 'Private_Clean',
                  'Private_Dirty', 'Anonymous', 'KSM', 'LazyFree', 'AnonHugePages', 'Locked'):
        attr, is_pss = SMAPS_FIELDS[label]
        assert getattr(c, attr) >> (10 + (PSS_SHIFT if is_pss else 0)) == values[label], label


@pytest.mark.parametrize('role,region', REAL_CASES)
def test_numa_maps_gather_matches_real_kernel(role, region):
    _, records, (header, _, _), numa_line = next(v for v in region_vmas(role) if v[0] == region)
    mapcount, bit = page_arrays(records)
    dirty = bit['dirty'] | (bit['anon'] & bit['swapbacked'])
    active = bit['active'] | bit['unevictable']
    if (role, region) in PMD_MAPPED:
        # one gather_stats(first page, nr=512) per PMD leaf (8.6)
        counts = numa_maps_gather(mapcount[::512], 512, dirty[::512], bit['anon'][::512],
                                  active[::512])
    else:
        counts = numa_maps_gather(mapcount, 1, dirty, bit['anon'], active)
    name = parse_maps_line(header)['name']
    kw = {'file': name} if name else {}
    assert numa_maps_line(parse_maps_line(header)['start'], 'default', counts, **kw) == numa_line + '\n'


def test_real_capture_shows_the_s10_state():
    # semantics 13 S10 [real]: both sides Pss 1026, SD 2044, PD 4
    for role in ROLES:
        _, _, (_, values, _), _ = next(v for v in region_vmas(role) if v[0] == 'thp')
        assert (values['Pss'], values['Shared_Dirty'], values['Private_Dirty']) == (1026, 2044, 4)
        assert values['AnonHugePages'] == (2048 if role == 'child' else 0)


# --------------------------------------------------------------------------
# smaps_account: semantics 8.4 and section 13
# --------------------------------------------------------------------------
def kb(c, attr):
    is_pss = attr.startswith('pss') or attr == 'swap_pss'
    return getattr(c, attr) >> (10 + (PSS_SHIFT if is_pss else 0))


def account(mapcounts, private=None, **kw):
    m = np.asarray(mapcounts, dtype=np.int64)
    return smaps_account(SmapsPages(mapcount=m, private=m < 2 if private is None else private,
                                    dirty=kw.pop('dirty', True), **kw))


@pytest.mark.parametrize('m,share', [(1, 16777216), (2, 8388608), (3, 5592405), (4, 4194304),
                                     (5, 3355443), (6, 2796202), (7, 2396745), (8, 2097152)])
def test_pss_share_table(m, share):
    # semantics 8.4: per-page PSS contribution (bytes << 12) for mapcount m
    assert account([m]).pss == share


def test_pss_examples_of_8_4():
    assert account([3] * 512).pss == 2863311360 and kb(account([3] * 512), 'pss') == 682
    assert account([3] * 16).pss == 89478480 and kb(account([3] * 16), 'pss') == 21
    assert kb(account([2] * 15 + [1]), 'pss') == 34


def test_s1_s2_s5_anon_mthp():
    c = account([1] * 16)                                     # S1
    assert [kb(c, a) for a in ('resident', 'pss', 'shared_dirty', 'private_dirty')] == [64, 64, 0, 64]
    c = account([2] * 16)                                     # S2, both configs
    assert [kb(c, a) for a in ('resident', 'pss', 'shared_dirty', 'private_dirty')] == [64, 32, 64, 0]
    assert kb(account([3] * 16), 'pss') == 21                 # S5


def test_s3_page_and_no_page_mapcount():
    # S3, parent: PAGE: page 0 precise 1, pages 1-15 precise 2
    c = account([1] + [2] * 15)
    assert [kb(c, a) for a in ('pss', 'shared_dirty', 'private_dirty')] == [34, 60, 4]
    # NO: folio average (31+8)>>4 = 2 for all, maybe-shared -> not private
    c = account([2] * 16, private=False)
    assert [kb(c, a) for a in ('pss', 'shared_dirty', 'private_dirty')] == [32, 64, 0]


def test_s6_no_page_mapcount_false_positive():
    # S6, C2 under NO_PAGE_MAPCOUNT: average 1 but the shared bit stays set
    c = account([1] * 16, private=False)
    assert [kb(c, a) for a in ('pss', 'shared_dirty', 'private_dirty')] == [64, 64, 0]


def test_s7_refcount_one_shortcut():
    # S7: one page left mapped, refcount 1: whole entry private (8.4 step 5)
    # even where the NO_PAGE_MAPCOUNT per-folio decision says "shared"
    c = account([1], private=False, refcount_one=True)
    assert [kb(c, a) for a in ('resident', 'pss', 'private_dirty', 'shared_dirty')] == [4, 4, 4, 0]


def test_s8_s9_s10_pmd_thp():
    c = account([1] * 512, pmd=True)                          # S8
    assert [kb(c, a) for a in ('pss', 'private_dirty', 'anonymous_thp')] == [2048, 2048, 2048]
    c = account([2] * 512, pmd=True)                          # S9
    assert [kb(c, a) for a in ('pss', 'shared_dirty', 'anonymous_thp')] == [1024, 2048, 2048]
    c = account([2] * 7 + [1] + [2] * 504, pmd=True)          # S10 child, PAGE
    assert [kb(c, a) for a in ('pss', 'shared_dirty', 'private_dirty', 'anonymous_thp')] == \
        [1026, 2044, 4, 2048]
    c = account([2] * 512, private=False, pmd=True)           # S10 child, NO
    assert [kb(c, a) for a in ('pss', 'shared_dirty', 'private_dirty')] == [1024, 2048, 0]
    c = account([2] * 511 + [1])                              # S10 parent (PTEs), both
    assert [kb(c, a) for a in ('pss', 'anonymous_thp')] == [1026, 0]


def test_s12_half_unmapped_thp():
    assert kb(account([2] * 256), 'pss') == 512                   # PAGE
    c = account([1] * 256, private=False)                         # NO: average 1
    assert [kb(c, a) for a in ('pss', 'shared_dirty')] == [1024, 1024]


def test_s13_shared_anon_is_shmem():
    # S13, P: page 0 mapped by P and C, pages 1-15 by P only (PAGE)
    c = account([2] + [1] * 15, anon=False, swapbacked=True)
    assert [kb(c, a) for a in ('pss', 'shared_dirty', 'private_dirty', 'pss_shmem', 'anonymous')] == \
        [62, 4, 60, 62, 0]
    assert smaps_rollup_text(0x1000, 0x11000, c).splitlines()[6] == 'Pss_Shmem:            62 kB'
    c = account([1] * 16, private=False, anon=False, swapbacked=True)   # NO
    assert [kb(c, a) for a in ('pss', 'shared_dirty', 'pss_shmem')] == [64, 64, 64]


def test_s14_s15_file_folios_no_page_mapcount():
    # S14 NO: mapped twice by one MM: average 2, private (one MM), clean
    c = account([2] * 16, private=True, anon=False, swapbacked=False, dirty=False)
    assert [kb(c, a) for a in ('pss', 'private_clean', 'shared_clean', 'pss_file')] == [32, 64, 0, 32]
    # S15 NO: average clamped to 1, but maybe shared
    c = account([1], private=False, anon=False, swapbacked=False, dirty=False)
    assert [kb(c, a) for a in ('pss', 'shared_clean', 'private_clean')] == [4, 4, 0]


def test_lazyfree_ksm_referenced_locked():
    c = account([1] * 4 + [2] * 4, swapbacked=np.array([False] * 6 + [True] * 2),
                dirty=np.array([False] * 3 + [True] * 5), young=np.array([True] * 5 + [False] * 3),
                ksm=np.array([False] * 7 + [True]), locked=True)
    # LazyFree: anon, not swapbacked, neither PTE nor folio dirty (8.4 step 1)
    assert kb(c, 'lazyfree') == 12 and kb(c, 'referenced') == 20 and kb(c, 'ksm') == 4
    # Locked is a PSS value: 4 pages at m=1 + 4 at m=2 = 24 kB
    assert kb(c, 'pss_locked') == 24 == kb(c, 'pss')


def test_migration_entries_are_counted_shared():
    # 8.4 step 5: !present -> whole size at pss = size << 12, classified shared
    c = account([3, 3], present=np.array([False, True]))
    assert c.pss == 16777216 + 5592405
    assert (kb(c, 'shared_dirty'), kb(c, 'resident')) == (8, 8)


def test_swap_and_swap_pss():
    c = smaps_account(SmapsPages(mapcount=np.zeros(0, dtype=np.int64)), swap_counts=[1, 2, 3],
                      shmem_swap=8192)
    assert kb(c, 'swap') == 20
    assert c.swap_pss == 16777216 + 8388608 + 5592405
    assert kb(c, 'swap_pss') == 7
    empty = smaps_account(SmapsPages(mapcount=[]))
    assert empty == SmapsCounters()


def test_pmd_file_and_shmem():
    c = account([1] * 512, pmd=True, anon=False, swapbacked=True)
    assert (kb(c, 'shmem_thp'), kb(c, 'file_thp'), kb(c, 'anonymous_thp')) == (2048, 0, 0)
    c = account([1] * 512, pmd=True, anon=False, swapbacked=False)
    assert (kb(c, 'shmem_thp'), kb(c, 'file_thp'), kb(c, 'pss_file')) == (0, 2048, 2048)


def test_counters_add_then_round_once():
    # smaps_rollup sums exact counters and rounds once (clients/README: Σ
    # smaps Pss <= rollup Pss)
    one = account([3])
    total = SmapsCounters()
    for _ in range(3):
        total = total + one
    assert kb(one, 'pss') * 3 == 3 and kb(total, 'pss') == 3
    assert kb(account([3] * 3), 'pss') == 3 and kb(account([3] * 2), 'pss') == 2
    assert kb(account([3] * 2), 'pss') * 2 < kb(account([3] * 2) + account([3] * 2), 'pss')


def test_smaps_account_large_input_is_fast():
    n = 4 << 20                          # 16 GiB of 4K pages
    m = np.full(n, 2, dtype=np.int64)
    c = smaps_account(SmapsPages(mapcount=m, private=False, dirty=True))
    assert kb(c, 'pss') == n * 2 and kb(c, 'shared_dirty') == n * 4


# --------------------------------------------------------------------------
# smaps text rules
# --------------------------------------------------------------------------
def test_smaps_block_layout():
    c = account([1] * 4)
    text = smaps_block(maps_line(0x7f0000000000, 0x7f0000004000, 'rw-p'), c, 16, False,
                       {'ac', 'me', 'mw', 'mr', 'wr', 'rd'}, protection_key=0)
    lines = text.splitlines()
    assert lines[0] == '7f0000000000-7f0000004000 rw-p 00000000 00:00 0 '
    assert lines[1] == 'Size:                 16 kB'
    assert lines[19] == 'Private_Hugetlb:       0 kB'
    assert lines[-3:] == ['THPeligible:           0', 'ProtectionKey:         0',
                          'VmFlags: rd wr mr mw me ac ']
    assert len(lines) == 26      # a real block has 25 lines (no ProtectionKey)


def test_smaps_wide_values_overflow_the_field():
    c = SmapsCounters(private_hugetlb=123456789 << 10, resident=123456789 << 10)
    text = smaps_rollup_text(0, 0, c)
    assert 'Private_Hugetlb: 123456789 kB\n' in text and 'Rss:            123456789 kB\n' in text
    assert text.startswith('00000000-00000000 ---p 00000000 00:00 0' + ' ' * 34 + '[rollup]\n')


# --------------------------------------------------------------------------
# maps text rules
# --------------------------------------------------------------------------
def test_maps_padding_64_and_32_bit():
    line = maps_line(0x55e9b3976000, 0x55e9b3977000, 'r--p', 0, 0xfe, 0, 2148126, '/tmp/exp/e6')
    assert line == '55e9b3976000-55e9b3977000 r--p 00000000 fe:00 2148126' + ' ' * 20 + '/tmp/exp/e6\n'
    assert line.index('/tmp') == header_width(64) + 1 == 73
    line32 = maps_line(0x8048000, 0x8049000, 'r-xp', 0, 8, 1, 42, '/bin/x', bits=32)
    assert line32.index('/bin/x') == header_width(32) + 1 == 49
    assert line32.startswith('08048000-08049000 r-xp 00000000 08:01 42 ')


def test_maps_unnamed_and_escaping():
    assert maps_line(0x1000, 0x2000, 'rw-s') == '00001000-00002000 rw-s 00000000 00:00 0 \n'
    assert maps_line(0, 0x1000, 'r--p', name='/a b\nc').endswith(' /a b\\012c\n')
    long = maps_line(1 << 47, (1 << 47) + 4096, 'r--p', 0x123456789, 0x103, 0xfffff,
                     12345678901234567890, 'x')
    assert long.endswith(' 12345678901234567890  x\n')   # no room left: one space + one


def test_vmflags_kernel_order():
    assert vmflags_string({'hg', 'ac', 'rd', 'wr', 'mr', 'mw', 'me'}) == 'rd wr mr mw me ac hg '
    assert vmflags_string(['sl', 'dp', 'ui', 'mg', 'sd']) == 'sd mg ui dp sl '
    assert vmflags_string(()) == ''
    assert sorted(VM_FLAG_BITS.values()) == sorted(set(VM_FLAG_BITS.values()))
    with pytest.raises(FormatInputError, match='bit 42'):
        vmflags_string({'sl'}, bits=32)


# --------------------------------------------------------------------------
# numa_maps text rules (9.4)
# --------------------------------------------------------------------------
def test_numa_maps_rules():
    counts = NumaMapsCounts(pages=16, anon=16, dirty=16, active=0, mapcount_max=2, node={0: 16})
    assert numa_maps_line(0x7f2a58fa0000, 'default', counts) == \
        '7f2a58fa0000 default anon=16 dirty=16 mapmax=2 active=0 N0=16 kernelpagesize_kB=4\n'
    assert numa_maps_line(0x1000, 'default', NumaMapsCounts()) == '00001000 default\n'
    f = NumaMapsCounts(pages=3, dirty=1, active=3, mapcount_max=1, swapcache=1, writeback=2,
                       node={1: 1, 0: 2})
    assert numa_maps_line(0x1000, 'bind:0-1', f, file='/a b\tc=d\ne') == (
        '00001000 bind:0-1 file=/a\\040b\\011c\\075d\\012e dirty=1 mapped=3 swapcache=1 '
        'writeback=2 N0=2 N1=1 kernelpagesize_kB=4\n')
    h = NumaMapsCounts(pages=1, active=0, mapcount_max=2, dirty=1, node={0: 1})
    assert numa_maps_line(0x2000, 'default', h, hugetlb=True, kernel_page_size_kb=2048) == \
        '00002000 default huge dirty=1 mapmax=2 N0=1 kernelpagesize_kB=2048\n'
    assert numa_maps_line(0x3000, 'default', counts, stack=True).startswith('00003000 default stack anon=')


def test_numa_maps_gather_nodes_and_pmd():
    c = numa_maps_gather([1, 2, 2], nr=np.array([512, 1, 1]), dirty=True, anon=True,
                         active=np.array([False, True, False]), node=np.array([1, 0, 1]))
    assert (c.pages, c.anon, c.dirty, c.active, c.mapcount_max, c.node) == \
        (514, 514, 514, 1, 2, {0: 1, 1: 513})


# --------------------------------------------------------------------------
# pid files: rules not covered by the captures
# --------------------------------------------------------------------------
def test_bitmaps():
    assert bitmap_hex({0, 1}, 2) == '3'
    assert bitmap_hex({0}, 1024) == ','.join(['00000000'] * 31 + ['00000001'])
    assert bitmap_hex({0, 35}, 40) == '08,00000001'
    assert bitmap_hex(set(), 64) == '00000000,00000000'
    assert bitmap_list({0, 1, 2, 5, 7, 8}) == '0-2,5,7-8' and bitmap_list(()) == ''


def test_status_groups_ns_levels_and_defaults():
    text = proc_status_text(ProcStatus(name='w', pid=1, nstgid=(100, 1), nspid=(100, 1),
                                       groups=(), umask=0, vm=StatusVm(untag_mask=0)))
    assert 'Groups:\t \n' in text and 'NStgid:\t100\t1\n' in text and 'Umask:\t0000\n' in text
    assert 'untag_mask:\t0\n' in text
    assert 'VmRSS:\t       0 kB\n' in text and 'Cpus_allowed_list:\t0-1\n' in text
    assert 'CapEff:\t000001ffffffffff\n' in text


def test_stat_line_defaults_and_fields():
    st = ProcStat(pid=100, comm='a) b', state='R', ppid=1, rss=974, vsize=48676864,
                  starttime=390796, tpgid=-1, priority=-51)
    line = proc_stat_line(st)
    assert len(ProcStat.__dataclass_fields__) == 52
    fields_after = line.rsplit(') ', 1)[1].split()
    # psutil indexes [36] processor; process-exporter reads fields 23 and 24
    assert len(fields_after) == 50 and fields_after[36] == '0'
    assert line.split()[22 + 1:24 + 1] == ['48676864', '974']    # "a) b" is two tokens
    assert ' -51 ' in line and line.startswith('100 (a) b) R 1 ')


def test_limits_defaults():
    text = limits_text()
    assert text.splitlines()[4] == 'Max stack size            8388608              unlimited            bytes     '
    assert text.splitlines()[14] == 'Max nice priority         0                    0                    '


# --------------------------------------------------------------------------
# memcg
# --------------------------------------------------------------------------
def test_memcg_v1_defaults_and_memsw():
    text = memcg_v1_stat_text({'rss': 8192, 'total_rss': 8192})
    assert 'rss 8192\n' in text and 'hierarchical_memsw_limit 9223372036854771712\n' in text
    assert len(text.splitlines()) == len(MEMCG_V1_STAT_KEYS) == 42
    assert 'hierarchical_memsw_limit' not in memcg_v1_stat_text({}, memsw=False)
    assert unlimited_bytes(32) == 2147479552


def test_memcg_v2_stat():
    text = memcg_v2_stat_text({'anon': 4096, 'slab_reclaimable': 1, 'slab_unreclaimable': 2,
                               'pgscan_kswapd': 3, 'pgscan_direct': 4})
    lines = text.splitlines()
    assert lines[0] == 'anon 4096' and 'slab 3' in lines and 'pgscan 7' in lines
    assert lines.index('slab 3') == lines.index('slab_unreclaimable 2') + 1
    assert 'hugetlb 0' not in lines
    assert 'hugetlb 0' in memcg_v2_stat_text({}, hugetlb_accounting=True).splitlines()
    assert len(set(MEMCG_V2_STAT_KEYS)) == len(MEMCG_V2_STAT_KEYS)


def test_memory_current_and_procs():
    assert memory_current_text(8192) == '8192\n'
    assert cgroup_procs_text([5, 3, 5]) == '3\n5\n'
    assert cgroup_procs_text([5, 3], v1=False) == '5\n3\n'


# --------------------------------------------------------------------------
# bad input gives FormatInputError naming the problem
# --------------------------------------------------------------------------
@pytest.mark.parametrize('call,match', [
    (lambda: maps_line(0x2000, 0x1000, 'rw-p'), 'below start'),
    (lambda: maps_line(0, 1, 'rwxq'), 'perms'),
    (lambda: maps_line(-1, 1, 'rw-p'), 'start'),
    (lambda: maps_line(1 << 32, 1 << 33, 'rw-p', bits=32), 'start'),
    (lambda: vmflags_string({'zz'}), "'zz'"),
    (lambda: vmflags_string('rd wr'), 'collection'),
    (lambda: smaps_account([1, 2]), 'SmapsPages'),
    (lambda: smaps_account(SmapsPages(mapcount=[1, 2], dirty=[True])), 'dirty has 1'),
    (lambda: smaps_account(SmapsPages(mapcount=[1.5])), 'integer'),
    (lambda: smaps_account(SmapsPages(mapcount=[1], dirty=1)), 'dirty must be bool'),
    (lambda: smaps_account(SmapsPages(mapcount=[1] * 3, pmd=True)), 'multiple of 512'),
    (lambda: smaps_account(SmapsPages(mapcount=[-1])), 'negative'),
    (lambda: smaps_block('a\nb\n', SmapsCounters(), 4, 0, ()), 'one maps line'),
    (lambda: smaps_rollup_text(0, 0, SmapsCounters(pss=-1)), 'counters.pss'),
    (lambda: numa_maps_line(0, 'default', NumaMapsCounts(), file='/x', heap=True), 'only one'),
    (lambda: numa_maps_line(0, '', NumaMapsCounts()), 'policy'),
    (lambda: proc_status_text(ProcStatus(name='x' * 16, pid=1)), 'comm is longer'),
    (lambda: proc_status_text(ProcStatus(name='x', pid=1, state='Q')), 'state'),
    (lambda: proc_status_text(ProcStatus(name='x', pid=1, uid=(0, 0))), 'uid and gid'),
    (lambda: proc_stat_line(ProcStat(pid=1, comm='x', rss=-1)), 'rss'),
    (lambda: proc_stat_line(ProcStat(pid=1, comm='x', nice='0')), 'nice'),
    (lambda: cmdline_bytes('ls'), 'sequence'),
    (lambda: cmdline_bytes(['a\0b']), 'NUL'),
    (lambda: limits_text({'nofiles': (1, 2)}), "'nofiles'"),
    (lambda: limits_text({'nofile': 5}), 'pair'),
    (lambda: cgroup_text([(1, 'cpu', 'rel')]), 'absolute'),
    (lambda: meminfo_text({'MemTotl': 1}), "'MemTotl'"),
    (lambda: meminfo_text({'MemTotal': -5}), 'MemTotal'),
    (lambda: vmstat_text([('pgfault', 1)]), 'mapping'),
    (lambda: stat_text([]), 'non-empty'),
    (lambda: stat_text([CpuTimes()], softirq=[1]), 'softirq needs'),
    (lambda: loadavg_text(-1, 0, 0, 1, 1, 1), 'load1'),
    (lambda: uptime_text('1', 0), 'uptime'),
    (lambda: cpuinfo_text(0), 'nr_cpus'),
    (lambda: memcg_v1_stat_text({'rsss': 1}), "'rsss'"),
    (lambda: memcg_v2_stat_text({'hugetlb': 1}), 'hugetlb_accounting'),
    (lambda: cgroup_procs_text('12'), 'iterable'),
    (lambda: bitmap_hex({5}, 4), 'does not fit'),
])
def test_bad_input(call, match):
    with pytest.raises(FormatInputError, match=match):
        call()


@pytest.mark.parametrize('counts', [[1, 2, 3, 7, 1023], [1, 2, 3, 1023, 1024, 5000, 1 << 20]])
def test_pss_divides_by_every_mapcount(counts):
    """smaps_account(): each page adds (PAGE_SIZE << PSS_SHIFT) / mapcount
    when the mapcount is >= 2, the whole page otherwise (fs/proc/task_mmu.c
    smaps_page_accumulate), small counts and large alike."""
    from procfs.formats.smaps import SmapsPages, smaps_account
    m = np.array(counts, dtype=np.int64)
    n = len(m)
    c = smaps_account(SmapsPages(mapcount=m, private=m < 2, refcount_one=np.zeros(n, bool),
                                 dirty=np.zeros(n, bool), young=np.zeros(n, bool),
                                 anon=np.ones(n, bool), swapbacked=np.ones(n, bool),
                                 ksm=np.zeros(n, bool), locked=np.zeros(n, bool),
                                 pmd=np.zeros(n, bool)))
    full = 4096 << 12
    assert c.pss == sum(full if x < 2 else full // x for x in counts)

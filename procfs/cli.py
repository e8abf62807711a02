"""``mmemu``: replay a scenario and serve what /proc would show.

Subcommands: mount, umount, export, diff, check, tools, cost; for live
mounts (procfs.live) step, do, status; explain and map. The tree comes from
``procfs.build.build_tree()``; errors print one line and exit 1 (set
MMEMU_DEBUG=1 to see the traceback of an unexpected error).
"""
import argparse
import importlib
import os
import re
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _configs_dir():
    """configs/ of the source tree, or the copy an installed wheel holds
    as the package data mmemu/configs/."""
    repo = PROJECT_ROOT / 'configs'
    if (repo / 'kernels').is_dir():
        return repo
    return PROJECT_ROOT / 'mmemu' / 'configs'


CONFIGS_DIR = _configs_dir()
DEFAULT_SCENARIO = CONFIGS_DIR / 'scenarios' / 'showcase.yaml'
DEFAULT_MOUNTPOINT = PROJECT_ROOT / 'mountpoint' if CONFIGS_DIR.parent == PROJECT_ROOT \
    else Path('mountpoint')
KERNELS_DIR = CONFIGS_DIR / 'kernels'

# "a config file is 64-bit unless it contains CONFIG_64BIT: n"
_NOT_64BIT = re.compile(r'''^\s*CONFIG_64BIT\s*:\s*["']?(n|no|N|false)["']?\s*(#.*)?$''', re.M)


class CliError(Exception):
    """A user error: printed as one line, exit status 1."""


def is_64bit_config(path):
    return _NOT_64BIT.search(Path(path).read_text()) is None


def default_configs(kernels_dir=KERNELS_DIR):
    """Every 64-bit kernel config in configs/kernels/, sorted by name."""
    paths = sorted(Path(kernels_dir).glob('*.yaml'))
    return [str(p) for p in paths if is_64bit_config(p)]


def _scenario_path(arg):
    path = Path(arg) if arg else DEFAULT_SCENARIO
    if not path.is_file():
        raise CliError('scenario %s not found' % path if not path.exists() else
                       'scenario %s is not a file' % path)
    return str(path)


def _config_paths(args):
    paths = args.config or default_configs()
    if not paths:
        raise CliError('no kernel config given and none found in %s' % KERNELS_DIR)
    for p in paths:
        if not Path(p).is_file():
            raise CliError('kernel config %s not found' % p)
    return [str(p) for p in paths]


def _build_module():
    try:
        return importlib.import_module('procfs.build')
    except ModuleNotFoundError as e:
        if e.name in ('procfs.build', 'procfs'):
            raise CliError('procfs.build is missing: this checkout has no tree builder') from None
        raise


def _build(args):
    return _build_module().build_tree(_scenario_path(args.scenario), _config_paths(args),
                                      args.stop_at, with_init=not getattr(args, 'no_init', False))


def _print_summary(summary):
    if summary:
        print(summary.rstrip('\n'))


def _where_to_look(root, mountpoint, pid, live=False):
    mp = str(mountpoint)
    names = sorted(root.children())
    lines = ['mounted at %s (daemon pid %d):' % (mp, pid)]
    lines += ['  %s/%s' % (mp, n) for n in names]
    if len(names) >= 2:
        # pagemap spans the whole user address space (256 GiB of entries):
        # diff would read it all, so the hint leaves the binary files out
        lines.append("compare: diff -r --no-dereference -x pagemap -x 'kpage*' %s/%s %s/%s"
                     % (mp, names[0], mp, names[1]))
    if live:
        from procfs.control import socket_path
        lines.append('live: mmemu step %s [N | --to LABEL | --all], mmemu do %s STEP, '
                     'mmemu status %s (control socket %s)' % (mp, mp, mp, socket_path(mp)))
    lines.append('unmount: mmemu umount %s' % mp)
    print('\n'.join(lines), flush=True)


def cmd_mount(args):
    from procfs import fuse
    if args.mountpoint:
        mountpoint = Path(args.mountpoint)
    else:
        mountpoint = DEFAULT_MOUNTPOINT
        try:
            mountpoint.mkdir(exist_ok=True)
        except OSError:
            pass            # e.g. a stale mount: check_mountpoint() says what is wrong
    scenario = _scenario_path(args.scenario)
    fuse.check_mountpoint(str(mountpoint.absolute()))
    mp = mountpoint.absolute()
    attach = None
    if args.live:
        from procfs import live
        machine = live.LiveMachine(scenario, _config_paths(args), args.stop_at,
                                   with_init=not args.no_init)
        root = machine.root
        _print_summary('\n'.join(machine.status()))
        attach = live.attach(machine, mp)
    else:
        root, summary = _build(argparse.Namespace(scenario=scenario, config=args.config,
                                                  stop_at=args.stop_at, no_init=args.no_init))
        _print_summary(summary)
    log_path = os.path.abspath(args.log) if args.log else None    # the daemon runs in /
    if args.foreground:
        fuse.mount(root, str(mp), foreground=True, debug=args.debug, log_path=log_path,
                   ready_callback=lambda: _where_to_look(root, mp, os.getpid(), args.live),
                   attach=attach)
    else:
        pid = fuse.mount(root, str(mp), foreground=False, debug=args.debug, log_path=log_path,
                         attach=attach)
        _where_to_look(root, mp, pid, args.live)
    return 0


def _live_request(mountpoint, req):
    """Sends a request to the live mount; prints its lines; an error is
    the command's error."""
    from procfs import control
    reply = control.request(Path(mountpoint or DEFAULT_MOUNTPOINT).absolute(), req)
    for line in reply.get('lines') or []:
        print(line)
    sys.stdout.flush()
    if not reply.get('ok'):
        raise CliError(reply.get('error') or 'the live mount refused the request')
    return 0


def cmd_step(args):
    pos = list(args.args)
    n = None
    if pos and re.fullmatch(r'-?[0-9]+', pos[-1]):
        n = int(pos.pop())
    if len(pos) > 1:
        raise CliError('step takes [MOUNTPOINT] [N]: too many arguments (%s)' % ' '.join(args.args))
    if sum(x is not None and x is not False for x in (n, args.to, args.all or None)) > 1:
        raise CliError('step takes one of N, --to LABEL and --all')
    if n is not None and n < 0:
        raise CliError('step count must not be negative, got %d' % n)
    return _live_request(pos[0] if pos else None,
                         {'cmd': 'step', 'n': n, 'to': args.to, 'all': args.all})


def cmd_do(args):
    if len(args.args) > 2:
        raise CliError("do takes [MOUNTPOINT] STEP: quote the step ('fork: {pid: 100, child: 105}')")
    mp, step = (None, args.args[0]) if len(args.args) == 1 else args.args
    return _live_request(mp, {'cmd': 'do', 'step': step})


def _parse_addr(text):
    try:
        return int(text, 0)
    except ValueError:
        raise CliError('address %r is not a number (0x7f... or decimal)' % text) from None


def _target(arg):
    """('live', MOUNTPOINT) for a directory, ('scenario', FILE) for a file."""
    path = Path(arg) if arg else DEFAULT_MOUNTPOINT
    if path.is_dir():
        return 'live', path
    return 'scenario', Path(_scenario_path(str(path)))


def _static_kernels(args, scenario):
    sc, kernels = _build_module().replay_all(str(scenario), _config_paths(args), args.stop_at,
                                             with_init=not args.no_init)
    from procfs.live import describe
    return sc, kernels, {st.index: describe(st) for st in sc.steps}


def cmd_explain(args):
    pid = args.pid
    addr = _parse_addr(args.addr)
    kind, where = _target(args.target)
    if kind == 'live':
        if args.stop_at or args.config:
            raise CliError('--stop-at and --config apply to a scenario, not to the live mount %s'
                           % where)
        return _live_request(where, {'cmd': 'explain', 'pid': pid, 'addr': addr})
    from procfs.live import explain_lines
    _, kernels, names = _static_kernels(args, where)
    print('\n'.join(explain_lines(kernels, pid, addr, names)))
    return 0


def cmd_map(args):
    fmt, out = 'text', None
    if args.svg and args.html:
        raise CliError('map writes one of --svg FILE and --html FILE')
    if args.svg or args.html:
        fmt, out = ('svg', args.svg) if args.svg else ('html', args.html)
    color = fmt == 'text' and (args.color == 'always' or (args.color == 'auto' and
                                                          sys.stdout.isatty()))
    kind, where = _target(args.target)
    if kind == 'live':
        if args.stop_at or args.config:
            raise CliError('--stop-at and --config apply to a scenario, not to the live mount %s'
                           % where)
        from procfs import control
        reply = control.request(Path(where).absolute(), {'cmd': 'map', 'pid': args.pid,
                                                         'format': fmt, 'color': color})
        if not reply.get('ok'):
            raise CliError(reply.get('error') or 'the live mount refused the request')
        text = '\n'.join(reply['lines']) + '\n'
    else:
        from procfs.mapview import render
        _, kernels, _ = _static_kernels(args, where)
        text = render(kernels, args.pid, fmt, color)
    if out:
        Path(out).write_text(text)
        print('wrote %s' % out)
    else:
        sys.stdout.write(text)
    return 0


def cmd_status(args):
    return _live_request(args.mountpoint, {'cmd': 'status'})


def cmd_umount(args):
    from procfs import fuse
    mp = Path(args.mountpoint or DEFAULT_MOUNTPOINT).absolute()
    try:
        os.stat(mp)
        mounted = os.path.ismount(mp)
    except FileNotFoundError:
        raise CliError('%s does not exist' % mp) from None
    except OSError:
        mounted = True      # ENOTCONN: a stale mount, fusermount -u clears it
    if not mounted:
        raise CliError('%s is not mounted' % mp)
    fuse.unmount(str(mp))
    print('unmounted %s' % mp)
    return 0


def cmd_export(args):
    from procfs.export import export
    target = Path(args.directory)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise CliError('%s exists and is not an empty directory' % target)
    root, summary = _build(args)
    _print_summary(summary)
    n = export(root, str(target))
    print('exported %d entries to %s' % (n, target))
    return 0


def cmd_diff(args):
    report = _build_module().diff_report(_scenario_path(args.scenario), _config_paths(args),
                                         args.stop_at)
    sys.stdout.write(report if report.endswith('\n') or not report else report + '\n')
    return 0


def cmd_tools(args):
    report = _build_module().tools_report(_scenario_path(args.scenario), _config_paths(args),
                                          args.stop_at)
    sys.stdout.write(report if report.endswith('\n') or not report else report + '\n')
    return 0


def cmd_capture(args):
    from procfs.capture import CaptureError, main_capture
    pids, out = list(args.pid or []), args.out
    if out is None and pids:
        out = pids.pop()          # `--pid 1 2 OUT`: the last word is the output
    if out is None:
        raise CliError('capture: say where to write the capture (OUT)')
    bad = [p for p in pids if not p.isdigit()]
    if bad:
        raise CliError('capture: --pid %s is not a process id' % bad[0])
    try:
        return main_capture([int(p) for p in pids], args.all, args.cgroup, out)
    except CaptureError as e:
        raise CliError(str(e)) from None


def cmd_cost(args):
    from procfs import cost_report
    sc, per_config = _build_module().cost_per_config(_scenario_path(args.scenario),
                                                      _config_paths(args))
    if args.svg:
        try:
            Path(args.svg).write_text(cost_report.render_svg(sc, per_config))
        except OSError as e:
            raise CliError('%s: %s' % (args.svg, e.strerror)) from None
    if args.json:
        sys.stdout.write(cost_report.render_json(sc, per_config))
    elif not args.svg:
        sys.stdout.write(cost_report.render_text(sc, per_config))
    else:
        print('wrote %s' % args.svg)
    return 0


def known_configs(extra=()):
    """{name: KernelConfig} of every profile in configs/kernels/ and of the
    files in `extra`."""
    from mmcore.config import load_kernel_config
    out = {}
    for p in sorted(KERNELS_DIR.glob('*.yaml')) + [Path(x) for x in extra]:
        cfg = load_kernel_config(str(p))
        out[cfg.name] = cfg
    return out


def verify_configs(sc, args, known):
    """The configs `check --verify` replays: --config, or every profile
    matching the scenario's kernel hints (bits, default 64; mapcount)."""
    from mmcore.config import load_kernel_config
    if args.config:
        return [load_kernel_config(p) for p in _config_paths(args)]
    bits = sc.kernel_hints.get('bits', 64)
    mapcount = sc.kernel_hints.get('mapcount')
    cfgs = [c for c in known.values() if c.bits == bits and
            (mapcount is None or c.page_mapcount == (mapcount == 'per-page'))]
    if not cfgs:
        raise CliError('%s: no kernel config in %s matches the scenario\'s kernel hints'
                       % (sc.path, KERNELS_DIR))
    return sorted(cfgs, key=lambda c: c.name)


def cmd_check(args):
    from mmcore.capture import is_capture, load_capture
    from mmcore.scenario import load_scenario
    from procfs import expect, expect_check
    known = known_configs(_config_paths(args) if args.config else ())
    status, passed, failed = 0, 0, 0
    for arg in args.scenario:
        try:
            path = _scenario_path(arg)
            if is_capture(path):
                cap = load_capture(path)
                print('ok: capture of Linux %s, %d processes, %d folios'
                      % (cap.meta.get('release', '?'), len(cap.processes), len(cap.a['folio_head'])))
                continue
            sc = load_scenario(path)
            expect_check.validate(sc, known)
            if not args.verify:
                labels = ', '.join(sc.labels) if sc.labels else 'none'
                n = expect.expectation_count(sc)
                print('ok: %s, %d steps, labels: %s%s' % (sc.name, len(sc.steps), labels,
                                                         ', %d expectation%s' % (n, 's' * (n != 1)) if n else ''))
                continue
            cfgs = verify_configs(sc, args, known)
            results = expect.verify(sc, cfgs)
        except Exception as e:
            if not _is_user_error(e) or os.environ.get('MMEMU_DEBUG'):
                raise
            print('mmemu: error: %s' % _error_message(e), file=sys.stderr)
            status = 1
            continue
        for r in results:
            print(r)
        bad = sum(not r.passed for r in results)
        passed += len(results) - bad
        failed += bad
        if bad or not results:
            status = 1
        print('%s: %d of %d expectations passed on %s%s' % (
            sc.path, len(results) - bad, len(results), ', '.join(c.name for c in cfgs),
            '' if results else ' (no expectation applies to these configs)'))
    if args.verify and len(args.scenario) > 1:
        print('verify: %d expectations passed, %d failed, in %d scenarios'
              % (passed, failed, len(args.scenario)))
    return status


def _add_build_options(p):
    p.add_argument('--config', metavar='FILE', action='extend', nargs='+', default=None,
                   help='kernel config (configs/kernels/*.yaml); repeatable; '
                        'default: every 64-bit config in configs/kernels/')
    p.add_argument('--stop-at', metavar='LABEL',
                   help='serve the state at this snapshot label (default: the end)')


def _add_tree_options(p):
    p.add_argument('--no-init', action='store_true',
                   help='serve only the scenario\'s processes: no pid 1 and no /proc/self '
                        '(what the conformance recordings of a real kernel hold)')


def make_parser():
    ap = argparse.ArgumentParser(
        prog='mmemu', description='Linux mm accounting emulator: replay a scenario on several '
        'kernel configs and serve the resulting /proc side by side.')
    sub = ap.add_subparsers(dest='command', metavar='COMMAND', required=True)

    p = sub.add_parser('mount', help='serve the scenario as a read-only FUSE mount')
    p.add_argument('scenario', nargs='?', metavar='SCENARIO',
                   help='default: %s' % DEFAULT_SCENARIO.relative_to(PROJECT_ROOT))
    p.add_argument('mountpoint', nargs='?', metavar='MOUNTPOINT',
                   help='an empty directory; default: %s/' % DEFAULT_MOUNTPOINT.name)
    _add_build_options(p)
    _add_tree_options(p)
    p.add_argument('--foreground', action='store_true',
                   help='stay in the foreground until unmounted or interrupted')
    p.add_argument('--log', metavar='FILE', help='daemon messages go here (default: discarded)')
    p.add_argument('--debug', action='store_true', help='libfuse debug output (with --foreground)')
    p.add_argument('--live', action='store_true',
                   help='serve the state before the first step (or at --stop-at) and keep the '
                        'replay open for mmemu step / do / status')
    p.set_defaults(func=cmd_mount)

    p = sub.add_parser('step', help='apply the next steps of a live mount')
    p.add_argument('args', nargs='*', metavar='[MOUNTPOINT] [N]',
                   help='default: %s/, 1 step' % DEFAULT_MOUNTPOINT.name)
    p.add_argument('--to', metavar='LABEL', help='up to and including this snapshot')
    p.add_argument('--all', action='store_true', help='every step left')
    p.set_defaults(func=cmd_step)

    p = sub.add_parser('do', help='apply one extra step (scenario format) on a live mount')
    p.add_argument('args', nargs='+', metavar='[MOUNTPOINT] STEP',
                   help="e.g. 'fork: {pid: 100, child: 105}'")
    p.set_defaults(func=cmd_do)

    p = sub.add_parser('explain', help='why each interface says what it says about one page')
    p.add_argument('target', metavar='SCENARIO|MOUNTPOINT',
                   help='a scenario file, or the mount point of a live mount')
    p.add_argument('pid', type=int, metavar='PID')
    p.add_argument('addr', metavar='ADDR', help='virtual address (0x... or decimal)')
    _add_build_options(p)
    _add_tree_options(p)
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser('map', help='a picture of who maps what, per process and config')
    p.add_argument('target', metavar='SCENARIO|MOUNTPOINT',
                   help='a scenario file, or the mount point of a live mount')
    p.add_argument('pid', type=int, nargs='?', metavar='PID', help='default: every process')
    p.add_argument('--svg', metavar='FILE', help='write a self-contained SVG picture')
    p.add_argument('--html', metavar='FILE', help='write a self-contained HTML page')
    p.add_argument('--color', choices=('auto', 'always', 'never'), default='auto',
                   help='colours in the text map (default: when stdout is a terminal)')
    _add_build_options(p)
    _add_tree_options(p)
    p.set_defaults(func=cmd_map)

    p = sub.add_parser('status', help='where a live mount is in its scenario')
    p.add_argument('mountpoint', nargs='?', metavar='MOUNTPOINT')
    p.set_defaults(func=cmd_status)

    p = sub.add_parser('umount', help='unmount (fusermount3 -u)')
    p.add_argument('mountpoint', nargs='?', metavar='MOUNTPOINT')
    p.set_defaults(func=cmd_umount)

    p = sub.add_parser('export', help='write the tree into a directory as plain files')
    p.add_argument('scenario', metavar='SCENARIO', nargs='?')
    p.add_argument('directory', metavar='DIR', nargs='?', help='created; must be absent or empty')
    _add_build_options(p)
    _add_tree_options(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser('diff', help='what the kernel configs change for a scenario')
    p.add_argument('scenario', metavar='SCENARIO', nargs='?')
    _add_build_options(p)
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser('cost', help='what each step costs the kernel code, per config')
    p.add_argument('scenario', metavar='SCENARIO', nargs='?')
    p.add_argument('--config', metavar='FILE', action='extend', nargs='+',
                   help='kernel config (configs/kernels/*.yaml); repeatable; '
                        'default: every 64-bit config in configs/kernels/')
    p.add_argument('--json', action='store_true', help='print JSON instead of the table')
    p.add_argument('--svg', metavar='FILE', help='also write a bar chart (SVG) to FILE')
    p.set_defaults(func=cmd_cost)

    p = sub.add_parser('check', help='validate scenario files; --verify checks their '
                       'expect steps')
    p.add_argument('scenario', metavar='SCENARIO', nargs='*')
    p.add_argument('--verify', action='store_true',
                   help='replay and report every expectation as passed or failed '
                        '(exit status 1 on any failure)')
    p.add_argument('--config', metavar='FILE', action='extend', nargs='+',
                   help='kernel configs to verify under (default: every config in '
                        'configs/kernels/ matching the scenario\'s kernel.bits, 64 unless '
                        'it says otherwise)')
    p.set_defaults(func=cmd_check)

    p = sub.add_parser('capture', help='record this machine\'s processes (as root) into a '
                       'capture file that every command takes in place of a scenario')
    who = p.add_mutually_exclusive_group()
    who.add_argument('--pid', action='extend', nargs='+', metavar='PID',
                     help='these processes')
    who.add_argument('--all', action='store_true', help='every process with an address space')
    p.add_argument('--cgroup', metavar='PATH',
                   help='the processes of this memory cgroup (and its children); its memory.stat '
                        'is recorded too')
    p.add_argument('out', nargs='?', metavar='OUT', help='the capture file to write (.npz)')
    p.set_defaults(func=cmd_capture)

    p = sub.add_parser('tools', help='what monitoring tools would report for a scenario')
    p.add_argument('scenario', metavar='SCENARIO', nargs='?')
    _add_build_options(p)
    p.set_defaults(func=cmd_tools)
    return ap


def _error_message(e):
    """One line for an error raised by a command."""
    if isinstance(e, OSError) and e.strerror:
        where = ' '.join(str(f) for f in (e.filename, e.filename2) if f)
        return '%s: %s' % (where, e.strerror) if where else e.strerror
    msg = str(e).strip().splitlines()
    return msg[0] if msg else type(e).__name__


def _is_user_error(e):
    """OSErrors and the exceptions our own packages raise (ScenarioError,
    ConfigError, MountError, ...) carry a message for the user; anything
    else (TypeError, KeyError, ...) is a bug."""
    return isinstance(e, (OSError, CliError)) or \
        type(e).__module__.split('.')[0] in ('mmcore', 'procfs')


# positionals each command needs; `--config A B SCENARIO` leaves them at the
# end of the --config list (nargs='+' is greedy), they are taken back here
_REQUIRED_POSITIONALS = {'export': ('scenario', 'directory'), 'diff': ('scenario',),
                         'tools': ('scenario',), 'cost': ('scenario',)}


def _looks_like_scenario(path):
    """A capture, or a scenario file (top-level `steps:` or `processes:`);
    a kernel config is neither."""
    from mmcore.capture import is_capture
    try:
        if is_capture(path):
            return True
        text = Path(path).read_text(errors='replace')
    except OSError:
        return False
    return re.search(r'^(steps|processes)\s*:', text, re.M) is not None


def _untangle_positionals(parser, args):
    """Positionals that a greedy `--config A B ...` swallowed go back to
    their places: the last words of the list, as many as are missing (for
    mount: a trailing directory is the mount point, a trailing scenario
    file the scenario)."""
    configs = getattr(args, 'config', None)
    names = _REQUIRED_POSITIONALS.get(args.command)
    if names:
        missing = [n for n in names if getattr(args, n) is None]
        given = [n for n in names if getattr(args, n) is not None]
        if missing and configs and len(configs) > len(missing):
            taken = configs[-len(missing):]
            del configs[-len(missing):]
            values = [getattr(args, n) for n in given]
            # positionals given before --config come first
            for n, v in zip(names, values + taken):
                setattr(args, n, v)
        missing = [n for n in names if getattr(args, n) is None]
        if missing:
            parser.error('%s: the following arguments are required: %s'
                         % (args.command, ', '.join(n.upper() if n != 'directory' else 'DIR'
                                                    for n in missing)))
    elif args.command == 'check':
        # `check --config A B S1 S2`: the scenarios are the trailing words
        # that are no kernel config
        while configs and len(configs) > 1 and _looks_like_scenario(configs[-1]):
            args.scenario.insert(0, configs.pop())
        if not args.scenario:
            parser.error('check: the following arguments are required: SCENARIO')
    elif args.command == 'mount' and configs and len(configs) > 1:
        if args.mountpoint is None and os.path.isdir(configs[-1]) and len(configs) > 1:
            args.mountpoint = configs.pop()
        if args.scenario is None and len(configs) > 1 and _looks_like_scenario(configs[-1]):
            args.scenario = configs.pop()
    return args


def main(argv=None):
    parser = make_parser()
    args = _untangle_positionals(parser, parser.parse_args(argv))
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        if os.environ.get('MMEMU_DEBUG'):
            raise
        if _is_user_error(e):
            print('mmemu: error: %s' % _error_message(e), file=sys.stderr)
        else:
            print('mmemu: internal error: %s: %s (MMEMU_DEBUG=1 shows the traceback)'
                  % (type(e).__name__, _error_message(e)), file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())

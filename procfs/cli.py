"""``mmemu``: replay a scenario and serve what /proc would show.

Subcommands: mount, umount, export, diff, check, tools, cost. The tree comes from
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
DEFAULT_SCENARIO = PROJECT_ROOT / 'configs' / 'scenarios' / 'showcase.yaml'
DEFAULT_MOUNTPOINT = PROJECT_ROOT / 'mountpoint'
KERNELS_DIR = PROJECT_ROOT / 'configs' / 'kernels'

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


def _where_to_look(root, mountpoint, pid):
    mp = str(mountpoint)
    names = sorted(root.children())
    lines = ['mounted at %s (daemon pid %d):' % (mp, pid)]
    lines += ['  %s/%s' % (mp, n) for n in names]
    if len(names) >= 2:
        # pagemap spans the whole user address space (256 GiB of entries):
        # diff would read it all, so the hint leaves the binary files out
        lines.append("compare: diff -r --no-dereference -x pagemap -x 'kpage*' %s/%s %s/%s"
                     % (mp, names[0], mp, names[1]))
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
    root, summary = _build(argparse.Namespace(scenario=scenario, config=args.config,
                                              stop_at=args.stop_at, no_init=args.no_init))
    _print_summary(summary)
    mp = mountpoint.absolute()
    log_path = os.path.abspath(args.log) if args.log else None    # the daemon runs in /
    if args.foreground:
        fuse.mount(root, str(mp), foreground=True, debug=args.debug, log_path=log_path,
                   ready_callback=lambda: _where_to_look(root, mp, os.getpid()))
    else:
        pid = fuse.mount(root, str(mp), foreground=False, debug=args.debug, log_path=log_path)
        _where_to_look(root, mp, pid)
    return 0


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


def cmd_check(args):
    from mmcore.scenario import load_scenario
    sc = load_scenario(_scenario_path(args.scenario))
    labels = ', '.join(sc.labels) if sc.labels else 'none'
    print('ok: %s, %d steps, labels: %s' % (sc.name, len(sc.steps), labels))
    return 0


def _add_build_options(p):
    p.add_argument('--config', metavar='FILE', action='extend', nargs='+',
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
    p.set_defaults(func=cmd_mount)

    p = sub.add_parser('umount', help='unmount (fusermount3 -u)')
    p.add_argument('mountpoint', nargs='?', metavar='MOUNTPOINT')
    p.set_defaults(func=cmd_umount)

    p = sub.add_parser('export', help='write the tree into a directory as plain files')
    p.add_argument('scenario', metavar='SCENARIO')
    p.add_argument('directory', metavar='DIR', help='created; must be absent or empty')
    _add_build_options(p)
    _add_tree_options(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser('diff', help='what the kernel configs change for a scenario')
    p.add_argument('scenario', metavar='SCENARIO')
    _add_build_options(p)
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser('cost', help='what each step costs the kernel code, per config')
    p.add_argument('scenario', metavar='SCENARIO')
    p.add_argument('--config', metavar='FILE', action='extend', nargs='+',
                   help='kernel config (configs/kernels/*.yaml); repeatable; '
                        'default: every 64-bit config in configs/kernels/')
    p.add_argument('--json', action='store_true', help='print JSON instead of the table')
    p.add_argument('--svg', metavar='FILE', help='also write a bar chart (SVG) to FILE')
    p.set_defaults(func=cmd_cost)

    p = sub.add_parser('check', help='validate a scenario file')
    p.add_argument('scenario', metavar='SCENARIO')
    p.set_defaults(func=cmd_check)

    p = sub.add_parser('tools', help='what monitoring tools would report for a scenario')
    p.add_argument('scenario', metavar='SCENARIO')
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
    return isinstance(e, OSError) or type(e).__module__.split('.')[0] in ('mmcore', 'procfs')


def main(argv=None):
    args = make_parser().parse_args(argv)
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

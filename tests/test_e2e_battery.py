"""The whole client battery (../shared/clients/battery.sh: 14 real tools) on
a live mount, for both configs, of the default scenario and of every public
conformance scenario at its end.

The mounts keep pid 1 and self (ps and top look themselves up there).  Both
configs of a scenario are read from one mount; the scenarios run on
``E.WORKERS`` threads.  A failing tool's result files are quoted in the
failure message.
"""
import os
import subprocess
from pathlib import Path

import pytest

import e2e_helpers as E

TOOLS = 14
SCENARIOS = [E.SHOWCASE] + sorted((E.CONFORMANCE_DIR / 'scenarios').glob('*.yaml'))
CASES = [(s, c) for s in SCENARIOS for c in E.CONFIGS]
CASE_IDS = ['%s-%s' % (s.stem, c) for s, c in CASES]


def _battery_env(results):
    return dict(os.environ, BATTERY_VENV=str(E.CLIENTS_VENV), RESULTS=str(results))


def _run_scenario(scenario, results_dir):
    """{config: (exit status, stdout, stderr, results dir)} from one mount."""
    battery = E.require_file(E.CLIENTS_DIR / 'battery.sh')
    out = {}
    try:
        with E.Mount(scenario) as m:
            for config in E.CONFIGS:
                results = Path(results_dir) / scenario.stem / config
                results.mkdir(parents=True)
                r = subprocess.run([battery, m.root(config)], env=_battery_env(results),
                                   capture_output=True, text=True, timeout=600)
                out[config] = (r.returncode, r.stdout, r.stderr, results)
    except (AssertionError, subprocess.TimeoutExpired) as e:
        for config in E.CONFIGS:
            out.setdefault(config, (None, '', str(e), results_dir))
    return out


@pytest.fixture(scope='module')
def battery_runs(tmp_path_factory):
    E.require_root()
    E.clients_python()
    for tool in ('smem', 'smemstat', 'numastat', 'pmap', 'free', 'ps', 'top', 'vmstat', 'curl',
                 'prometheus-node-exporter', 'prometheus-process-exporter', 'unshare', 'setsid'):
        E.require_command(tool)
    for f in ('ps_mem', 'pagemap'):
        if not os.access(E.CLIENTS_VENV / 'bin' / f, os.X_OK):
            pytest.fail('%s missing in %s: run `%s`' % (f, E.CLIENTS_VENV, E.SETUP_CLIENTS))
    base = tmp_path_factory.mktemp('battery')
    runs = E.run_parallel(lambda s: _run_scenario(s, base), SCENARIOS)
    return {(s, c): res for s, per in zip(SCENARIOS, runs) for c, res in per.items()}


def _failure_details(output, results):
    """The FAIL lines, and each failing tool's .err/.rc files."""
    lines = [line for line in output.splitlines() if line.startswith('FAIL')]
    details = []
    for line in lines:
        tool = line.split()[1].rstrip(':')
        for p in sorted(Path(results).glob(tool + '*')):
            if p.suffix in ('.err', '.rc', '.log') and p.stat().st_size:
                details.append('--- %s\n%s' % (p.name, p.read_text(errors='replace')[-1500:]))
    return '\n'.join(lines + details)


@pytest.mark.parametrize('case', CASES, ids=CASE_IDS)
def test_battery_passes(case, battery_runs):
    rc, output, errors, results = battery_runs[case]
    summary = output.strip().splitlines()[-1] if output.strip() else ''
    assert summary == '%d passed, 0 failed' % TOOLS and rc == 0, (
        'battery.sh on %s/%s: %s (exit %s)\n%s\n%s' % (case[0].stem, case[1], summary, rc,
                                                        _failure_details(output, results), errors[-2000:]))

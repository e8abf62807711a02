"""The HTML map in a real headless browser (Debian's chromium, installed
by scripts/setup-clients.sh): it loads without errors and shows every
folio block the renderer wrote."""
import os
import re
import shutil
import subprocess
import tempfile

import pytest

from procfs.build import replay_all
from procfs.cli import KERNELS_DIR, PROJECT_ROOT
from procfs.mapview import render

SHOWCASE = str(PROJECT_ROOT / 'configs' / 'scenarios' / 'showcase.yaml')


def chromium(*args):
    exe = shutil.which('chromium') or shutil.which('chromium-browser')
    if exe is None:
        pytest.fail('chromium not found: install the client tools with '
                    '`bash scripts/setup-clients.sh` (as root; CI runs it)')
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([exe, '--headless', '--no-sandbox', '--disable-gpu',
                               '--disable-background-networking', '--no-first-run',
                               '--user-data-dir=' + profile, '--enable-logging=stderr', '--v=0',
                               *args], capture_output=True, text=True, timeout=120)


def test_the_html_map_loads_and_shows_the_folios(tmp_path):
    _, kernels = replay_all(SHOWCASE, [str(KERNELS_DIR / 'no_page_mapcount.yaml'),
                                       str(KERNELS_DIR / 'page_mapcount.yaml')], 'survivor')
    page = tmp_path / 'map.html'
    page.write_text(render(kernels, None, 'html'))
    written = re.findall(r'<rect class="folio ([a-z-]+)', page.read_text())
    r = chromium('--dump-dom', page.as_uri())
    assert r.returncode == 0, r.stderr[-2000:]
    dom = r.stdout
    # the parsed document holds every block, the false-shared ones among them
    shown = re.findall(r'<rect class="folio ([a-z-]+)', dom)
    assert shown == written and shown.count('false-shared') == 8
    assert '<h1>mmemu map</h1>' in dom
    # a page error or console message would be logged as CONSOLE / Uncaught
    assert not [l for l in r.stderr.splitlines() if 'CONSOLE' in l or 'Uncaught' in l]
    shot = tmp_path / 'map.png'
    r = chromium('--screenshot=%s' % shot, '--window-size=900,1400', page.as_uri())
    assert r.returncode == 0 and shot.stat().st_size > 10000

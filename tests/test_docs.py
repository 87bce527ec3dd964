"""The documentation site (`make docs` -> _docs/) opened in headless Chromium: every page loads, every internal link and
image resolves, a module page shows its figures; and the same check fails on a copy of the site with a broken image
and a broken link."""
import json, os, re, shutil, subprocess
from pathlib import Path
from urllib.parse import urlsplit, unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT/'_docs'
BROWSERS = ('chromium', 'chromium-browser', 'google-chrome', 'chrome')
# Runs in the page once everything has loaded; the browser's own verdict on each image, and the links it resolved.
PROBE = '''<script>window.addEventListener('load', () => {
  const imgs = [...document.images].map(i => ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0,
                                                 w: i.naturalWidth, fig: !!i.closest('.output')}));
  const links = [...document.querySelectorAll('a[href]')].map(a => a.href);
  const ids = [...document.querySelectorAll('[id]')].map(e => e.id);
  const p = document.createElement('pre'); p.id = 'probe-result';
  const text = (document.querySelector('main') || document.body).innerText.length;
  p.textContent = JSON.stringify({title: document.title, text, imgs, links, ids});
  document.body.appendChild(p);
});</script>'''


def _browser():
    return next((b for b in map(shutil.which, BROWSERS) if b), None)


def _need(ok, why):
    "Skip with `why` on a developer's machine; in CI (where `make test` installs the browser and builds) fail"
    if ok: return
    if os.environ.get('CI'): pytest.fail(why)
    pytest.skip(why)


@pytest.fixture(scope='module')
def browser():
    b = _browser()
    _need(b, 'no Chromium found: `apt-get install chromium` (make test does it where it runs as root)')
    return b


@pytest.fixture(scope='module')
def site():
    _need((SITE/'index.html').exists(), f'no built site in {SITE}: run `make docs` first')
    return SITE


def _chrome(browser, *args, timeout=120):
    cmd = [browser, '--headless', '--no-sandbox', '--disable-gpu', '--allow-file-access-from-files',
           '--no-first-run', '--disable-extensions', '--virtual-time-budget=10000', *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def probe_page(browser, page:Path) -> dict:
    "What Chromium sees on `page`: its title, text length, images (loaded or not), resolved links and element ids"
    probed = page.with_name(f'.probe-{page.name}')
    probed.write_text(page.read_text().replace('</body>', PROBE + '</body>'))
    try: r = _chrome(browser, '--dump-dom', probed.as_uri())
    finally: probed.unlink()
    m = re.search(r'<pre id="probe-result">(.*?)</pre>', r.stdout, re.S)
    assert m, f'{page.name} did not load in Chromium: {r.stderr[-500:]}'
    import html
    return json.loads(html.unescape(m[1]))


def site_problems(browser, site:Path) -> list:
    "Every page of `site` opened in Chromium: a list of what does not load or resolve (empty when all is well)"
    pages = sorted(site.glob('*.html'))
    seen = {p.name: probe_page(browser, p) for p in pages}
    probs = []
    for name, r in seen.items():
        if not r['title'] or r['text'] < 50: probs.append(f'{name}: empty page')
        probs += [f'{name}: image {i["src"]} does not load' for i in r['imgs'] if not i['ok']]
        for href in r['links']:
            u = urlsplit(href)
            if u.scheme != 'file': continue                            # external sites are not part of this check
            target = Path(unquote(u.path))
            tname = target.name.replace('.probe-', '')
            if target.parent.resolve() != site.resolve() or not (site/tname).exists():   # outside the site, or missing
                probs.append(f'{name}: link to missing {tname}')
                continue
            if u.fragment and tname in seen and u.fragment not in seen[tname]['ids']:
                probs.append(f'{name}: link to missing anchor {tname}#{u.fragment}')
    return probs


def test_every_page_loads_and_resolves(browser, site):
    "All pages load in Chromium, with every image shown and every link inside the site going to a page that exists"
    pages = {p.name for p in site.glob('*.html')}
    assert {'index.html', 'api.html', 'core.html', 'data.html'} <= pages, pages
    assert site_problems(browser, site) == []


def test_module_page_shows_its_figures(browser, site):
    "The data module's page shows its demonstrations' figures, drawn by the browser at a real size"
    r = probe_page(browser, site/'data.html')
    figs = [i for i in r['imgs'] if i['fig']]
    assert len(figs) >= 2 and all(i['ok'] and i['w'] >= 100 for i in figs), figs


def test_broken_site_is_caught(browser, site, tmp_path):
    "A copy of the site with one figure deleted and one link pointing nowhere: the check names both"
    copy = shutil.copytree(site, tmp_path/'site')
    fig = sorted((copy/'figures').glob('data-*.png'))[0]
    fig.unlink()
    page = copy/'core.html'
    page.write_text(page.read_text().replace('href="data.html"', 'href="no-such-page.html"', 1))
    probs = site_problems(browser, copy)
    assert f'data.html: image figures/{fig.name} does not load' in probs, probs
    assert 'core.html: link to missing no-such-page.html' in probs, probs


def test_screenshots(browser, site):
    "One screenshot of the index and one of a module page, kept out of git in _docs/screenshots/"
    shots = site/'screenshots'
    shots.mkdir(exist_ok=True)
    for page, height in (('index', 1600), ('gradcam', 7000)):          # Grad-CAM's first figure is 4,500 px down
        out = shots/f'{page}.png'
        out.unlink(missing_ok=True)
        _chrome(browser, f'--screenshot={out}', f'--window-size=1280,{height}', (site/f'{page}.html').as_uri())
        assert out.exists() and out.stat().st_size > 10_000, out

"""Build the documentation site into `_docs/` from the notebooks in `nbs/`, offline.

Each module notebook goes through nbdev's own docs processors (frontmatter, `show_doc` cells after every export,
hidden and exported cells dropped, links to symbols), with nbdev's `exec_show_docs` replaced by `exec_all`: every
cell `nbdev-test` runs is executed, in order, with the same skip flags (`tst_flags`), so each page shows its
demonstrations' tables and figures as they are today and a failing demonstration fails the build.
Notebooks with `skip_exec: true` in their frontmatter (the stored submission walkthrough) keep their stored outputs.
Pages are written as plain HTML (Python-Markdown + Pygments), so nothing is downloaded at build time.

    python tools/docs.py                 # every notebook -> _docs/
    python tools/docs.py nbs/00_core.ipynb --out /tmp/site   # some pages only (the navigation still lists all)
    python tools/docs.py --check _docs   # only scan a built site for tracebacks and machine paths
"""
import argparse, base64, html, json, os, re, shutil, sys, time
from datetime import datetime, timezone
from pathlib import Path

import markdown
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer
from fastcore.basics import AttrDict
from nbdev.config import get_config
from tl_fastai.facts import read_facts
from nbdev.doclinks import nbglob
from nbdev.process import read_nb, write_nb, nb_frontmatter
from nbdev.processors import FilterDefaults, exec_show_docs, Processor
from nbdev.frontmatter import nbpath2html
from nbdev.test import _skip_cell
from execnb.shell import CaptureShell

ROOT = Path(__file__).resolve().parents[1]
SUBMISSION = 'submission.ipynb'                                   # the stored, executed study notebook (never run here)
# What no page may show: a traceback, an error output, or a path of the machine that built it.
FORBIDDEN = re.compile(r'Traceback \(most recent call last\)|\b\w*(Error|Exception): .*\n?.*ipython-input'
                       r'|(?<![\w.])/(tmp|work|root|home|private|var/folders)/|site-packages|dist-packages')


def _text(o) -> str: return ''.join(o) if isinstance(o, list) else str(o)

_ansi = re.compile(r'\x1b\[[0-?]*[ -/]*[@-~]')

def clean_outputs(cell):
    "Stream outputs as one string without terminal colour codes"
    for o in cell.get('outputs', []):
        if o.get('output_type') == 'stream': o['text'] = _ansi.sub('', _text(o.get('text', '')))


class exec_all(Processor):
    "Execute every cell `nbdev-test` would run (same skip flags), keeping outputs; raise on the first error"
    def begin(self):
        self.skip = _skip_cell(self.nb, get_config().tst_flags.split())
        self.k = CaptureShell(self.nb.path_)
        self.k.run_cell('from nbdev.showdoc import show_doc')

    def __call__(self, cell):
        if self.skip(cell): return
        self.k.cell(cell, timeout=int(get_config().get('cell_timeout') or 0) or None)   # as nbdev-test
        if (e := self.k.exc):
            where = f"{Path(self.nb.path_).name}, cell {cell.idx_}"
            raise RuntimeError(f"{where}: {type(e).__name__}: {e}\n{cell.source}") from e


class DocsProcs(FilterDefaults):
    "nbdev's docs processors, executing the whole notebook instead of only the `show_doc` cells"
    def base_procs(self):
        procs = [exec_all if p is exec_show_docs else p for p in super().base_procs()]
        return procs + [clean_outputs]                               # outputs exist only after execution


class StoredProcs(FilterDefaults):
    "nbdev's docs processors without any execution: the notebook's stored outputs are shown"
    def base_procs(self): return [p for p in super().base_procs() if p is not exec_show_docs] + [clean_outputs]


def process_nb(path:Path):
    "`path` through nbdev's docs processors, executed in its folder unless its frontmatter says `skip_exec`"
    nb = read_nb(path)
    fm = nb_frontmatter(nb)
    cls = StoredProcs if str(fm.get('skip_exec', '')).lower() == 'true' else DocsProcs
    cwd = os.getcwd()
    os.environ['IN_TEST'] = '1'
    try:
        os.chdir(path.parent)
        p = cls().nb_proc(nb)
        p.process()
    finally: os.chdir(cwd)
    return p.nb


# ---------------------------------------------------------------- rendering
_fmt = HtmlFormatter(cssclass='hl')
def _slug(text:str, sep:str) -> str:
    "Heading ids as Quarto makes them, which the links in nbdev's symbol index expect (`train.html#runconfig.foo`)"
    return re.sub(r'\s+', sep, re.sub(r'[^\w\s.-]', '', text).strip().lower())

_md = markdown.Markdown(extensions=['tables', 'fenced_code', 'codehilite', 'attr_list', 'sane_lists', 'toc'],
                        extension_configs={'codehilite': {'css_class': 'hl', 'guess_lang': False},
                                           'toc': {'slugify': _slug}})


def _doc_prefixes():
    "URL prefixes nbdev puts before this project's pages (`doc_host` + `doc_baseurl`), to make links relative"
    cfg = get_config()
    host, base = (cfg.get('doc_host') or '').rstrip('/'), (cfg.get('doc_baseurl') or '').strip('/')
    return [p for p in (f'{host}/{base}/' if base else f'{host}/',) if p.strip('/')]


def _relative_links(s:str, prefixes) -> str:
    "Links to this project's docs made relative; links to its notebooks point at their pages"
    for p in prefixes: s = s.replace(p, '')
    s = re.sub(r'href="/([\w-]+\.html)', r'href="\1', s)                 # no doc host: root-relative page links
    nbs = get_config().nbs_path.relative_to(ROOT).as_posix()
    s = re.sub(rf'(src="|href="|\]\()(?:\./)?{re.escape(nbs)}/', r'\1', s)   # the README's paths (from the root)
    s = re.sub(r'(href="|\]\()(?:\./)?(\d+[a-z]?_)?([\w-]+)\.ipynb', lambda m: f'{m[1]}{m[3]}.html', s)
    return s


def _md2html(src:str) -> str:
    src = re.sub(r'^:::.*$', '', src, flags=re.MULTILINE)         # quarto fenced-div markers: no meaning here
    _md.reset()
    return _md.convert(src)


def _quarto_directives(src:str):
    "The `#| key: value` lines nbdev leaves for Quarto (echo, output, include), and the code without them"
    lines = src.splitlines()
    dirs = {}
    while lines and (m := re.match(r'#\|\s*([\w-]+)\s*:\s*(.*)$', lines[0])):
        dirs[m[1]] = m[2].strip().lower()
        lines.pop(0)
    return dirs, '\n'.join(lines)


def _machine_prefixes() -> list:
    "Folders of the machine that builds the site, longest first: installed packages, the repository, temporary folders"
    import site, sysconfig, tempfile
    dirs = {*site.getsitepackages(), sysconfig.get_paths()['purelib'], sys.prefix, str(ROOT), tempfile.gettempdir(),
            os.path.expanduser('~')}
    return sorted({d.rstrip('/') for d in dirs if d and d != '/'}, key=len, reverse=True)

_re_tmpdir = re.compile(r'(?<![\w.])/(?:tmp|var/tmp)/(?:tmp|pytest-)[\w-]*/')
_re_ipy_loc = re.compile(r'(?:<|&lt;)ipython-input-\d+-[0-9a-f]+(?:>|&gt;):\d+: ')


def unmachine(text:str) -> str:
    "`text` with this machine's folders shortened to '…/' (a demo's table of files, a warning naming a file)"
    text = _re_ipy_loc.sub('', text)
    for d in _machine_prefixes():
        text = re.sub(re.escape(d) + r'(?:/(?:tmp|pytest-)[\w-]*)?/', '…/', text)
    return _re_tmpdir.sub('…/', text)


_re_source_link = re.compile(r'<p><a href="[^"]*"[^>]*>source</a></p>')


class Page:
    "One HTML page: its outputs' images are written beside it under `figures/`"
    def __init__(self, nb, name:str, out:Path):
        self.nb, self.name, self.out, self.nimg = nb, name, out, 0
        self.fm = getattr(nb, 'frontmatter_', {}) or {}

    def _img(self, data:str, ext:str) -> str:
        self.nimg += 1
        fn = Path('figures')/f'{self.name}-{self.nimg}.{ext}'
        (self.out/fn).parent.mkdir(parents=True, exist_ok=True)
        (self.out/fn).write_bytes(base64.b64decode(data))
        return f'<img src="{fn.as_posix()}" alt="figure {self.nimg} of {self.name}">'

    def output(self, o) -> str: return unmachine(self._output(o))

    def _output(self, o) -> str:
        t = o.get('output_type')
        if t == 'stream': return f'<pre class="stream">{html.escape(_text(o.get("text", "")))}</pre>'
        if t == 'error': raise RuntimeError(f'{self.name}: the notebook stores an error output ({o.get("ename")})')
        d = o.get('data', {})
        if 'image/png' in d: return self._img(_text(d['image/png']), 'png')
        if 'image/jpeg' in d: return self._img(_text(d['image/jpeg']), 'jpg')
        if 'image/svg+xml' in d: return _text(d['image/svg+xml'])
        if 'text/html' in d: return f'<div class="html">{_text(d["text/html"])}</div>'
        if 'text/markdown' in d: return f'<div class="md">{_md2html(_text(d["text/markdown"]))}</div>'
        if 'text/plain' in d: return f'<pre class="result">{html.escape(_text(d["text/plain"]))}</pre>'
        return ''

    def cell(self, c) -> str:
        if c.cell_type == 'markdown': return _md2html(c.source or '')
        if c.cell_type != 'code': return ''
        dirs, code = _quarto_directives(c.source or '')
        if dirs.get('include') == 'false': return ''
        src = '' if dirs.get('echo') == 'false' or not code.strip() else highlight(code, PythonLexer(), _fmt)
        outs = '' if dirs.get('output') == 'false' else ''.join(self.output(o) for o in c.get('outputs', []))
        if not (src or outs): return ''
        return f'<div class="cell">{src}{f"<div class=output>{outs}</div>" if outs else ""}</div>'

    def body(self) -> str:
        head = f'<h1 class="title">{html.escape(self.fm.get("title", self.name))}</h1>' if self.fm.get('title') else ''
        desc = self.fm.get('description')
        desc = f'<div class="description">{_md2html(desc)}</div>' if desc else ''
        body = head + desc + '\n'.join(self.cell(c) for c in self.nb.cells)
        return _re_source_link.sub('', body)        # "source" links name a repository the project does not publish


def _layout(title:str, body:str, nav:list, current:str) -> str:
    links = '\n'.join(f'<li{" class=active" if f == current else ""}><a href="{f}">{html.escape(t)}</a></li>'
                      for f, t in nav)
    return f'''<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)} – tl_fastai</title><link rel="stylesheet" href="styles.css"></head>
<body><nav class="sidebar"><a class="brand" href="index.html">tl_fastai</a><ul>{links}</ul></nav>
<main>{body}</main></body></html>
'''


def _ids(page:Path) -> set: return set(re.findall(r'\bid="([^"]+)"', page.read_text())) if page.exists() else set()


def _anchor(link:str, out:Path, strict=False):
    "`link` (page#id) if the page has that id, else its class's entry (a method without its own), else the page"
    page, _, frag = link.partition('#')
    ids = _ids(out/page)
    for f in (frag, frag.split('.')[0]):
        if f in ids: return f'{page}#{f}'
    return None if strict else page


_re_doclink = re.compile(r'<a href="([\w-]+\.html#[^"]+)">(.*?)</a>')


def fix_doclinks(out:Path):
    "Links to a symbol without a `show_doc` entry (a private helper named in prose) go to its class's, or are unlinked"
    for page in out.glob('*.html'):
        s = page.read_text()
        new = _re_doclink.sub(lambda m: f'<a href="{a}">{m[2]}</a>' if (a := _anchor(m[1], out, True)) else m[2], s)
        if new != s: page.write_text(new)


def api_page(pages:dict, out:Path) -> str:
    "The API reference: every exported symbol, linked to its `show_doc` entry on its module's page"
    from importlib import import_module
    lib = get_config().lib_name
    syms = import_module(f'{lib}._modidx').d['syms']
    rows = []
    for mod, entries in sorted(syms.items()):
        page = nbpath2html(Path(mod.split('.')[-1] + '.ipynb')).name
        if page not in pages: continue
        items = ', '.join(f'<a href="{html.escape(_anchor(v[0], out))}"><code>{html.escape(k.split(".", 2)[-1])}'
                          '</code></a>' for k, v in sorted(entries.items()))
        rows.append(f'<h2><a href="{page}">{html.escape(mod)}</a></h2><p>{items}</p>')
    return '<h1 class="title">API reference</h1><p class="description">Every exported function and class, linked to ' \
           'its signature, parameters and demonstration on its module\'s page.</p>' + '\n'.join(rows)


def check_site(out:Path) -> list:
    "Problems in a built site: a traceback, an error, or a machine path on any page"
    probs = []
    for f in sorted(out.glob('*.html')):
        for m in FORBIDDEN.finditer(f.read_text()):
            probs.append(f'{f.name}: shows {m[0].strip()!r}')
    return probs


def processed(f:Path, proc:Path, render_only=False):
    "`f` processed and executed, stored in `proc`; with `render_only`, the one stored by an earlier build"
    fn = proc/f.name
    if render_only and fn.exists():
        nb = read_nb(fn)
        nb.frontmatter_ = nb.metadata.get('docs_frontmatter', {})
        return nb
    nb = process_nb(f)
    proc.mkdir(parents=True, exist_ok=True)
    nb.metadata['docs_frontmatter'] = dict(getattr(nb, 'frontmatter_', {}) or {})
    write_nb(nb, fn)
    return nb


def build(out:Path, only=None, render_only=False):
    "Process, execute and render every notebook of `nbs/` (or only those in `only`) into `out`"
    cfg = get_config()
    nbs = cfg.nbs_path
    files = sorted(nbglob(nbs, func=Path))
    if (nbs/SUBMISSION).exists() and nbs/SUBMISSION not in files: files.append(nbs/SUBMISSION)
    files.sort(key=lambda f: (f.name != 'index.ipynb', f.name == SUBMISSION, f.name))
    names = {f: nbpath2html(f).name for f in files}
    titles = {f: nb_frontmatter(read_nb(f)).get('title') or _md_title(f) for f in files}
    nav = [(names[f], titles[f]) for f in files] + [('api.html', 'API reference')]
    if not only: shutil.rmtree(out/'figures', ignore_errors=True)          # no figure left from an earlier build
    out.mkdir(parents=True, exist_ok=True)
    for sub in ('images',):
        if (nbs/sub).exists(): shutil.copytree(nbs/sub, out/sub, dirs_exist_ok=True)
    css = (nbs/'styles.css').read_text() if (nbs/'styles.css').exists() else ''
    (out/'styles.css').write_text(css + '\n' + _fmt.get_style_defs('.hl'))
    prefixes = _doc_prefixes()
    for f in files:
        if only and f.resolve() not in only: continue
        t0 = time.time()
        page = Page(processed(f, ROOT/'_proc', render_only), names[f][:-5], out)
        body = _relative_links(page.body(), prefixes)
        (out/names[f]).write_text(_layout(titles[f], body, nav, names[f]))
        print(f'{names[f]:24} {time.time()-t0:6.1f} s  {page.nimg} figure(s)', flush=True)
    api = _relative_links(api_page(dict(nav), out), prefixes)
    (out/'api.html').write_text(_layout('API reference', api, nav, 'api.html'))
    fix_doclinks(out)


def _executed_at(nb:dict):
    "When the last cell of an executed notebook finished (nbclient's timestamps), or None"
    ts = [c.get('metadata', {}).get('execution', {}).get('shell.execute_reply') for c in nb['cells']]
    ts = [t for t in ts if t]
    return datetime.fromisoformat(max(ts).replace('Z', '+00:00')) if ts else None


def submission_page(src:Path, study:Path, dest:Path):
    "Copy the executed study notebook `src` to `dest` as the site's walkthrough, dated and naming the machine it ran on"
    nb = json.loads(src.read_text())
    if not any(c.get('outputs') for c in nb['cells']):
        sys.exit(f'{src} has no outputs: execute it first (tl-fastai notebook --out {study} --execute).')
    facts = read_facts(study)
    if facts is None: sys.exit(f'{study} holds no study.json: run `tl-fastai study --out {study}` first.')
    env, cfg = facts.environment, facts.config
    when = _executed_at(nb) or datetime.fromtimestamp((study/'study.json').stat().st_mtime, timezone.utc)
    desc = (f"The submission notebook of a {cfg.preset} study on {cfg.dataset}, executed "
            f"{when:%Y-%m-%d} on {env.device}, {env.platform} (Python {env.python}, torch {env.torch}, "
            f"fastai {env.fastai}, timm {env.timm}). Its outputs are the stored results of that run.")
    fm = {'cell_type': 'raw', 'metadata': {}, 'source': '---\ntitle: Study walkthrough\ndescription: ' +
          json.dumps(desc) + '\nskip_exec: true\n---'}
    nb['cells'].insert(0, fm)
    where = str(study.resolve())
    for c in nb['cells']:                    # the study folder as the notebook names it, not this machine's path
        src = ''.join(c['source']) if isinstance(c['source'], list) else c['source']
        c['source'] = src.replace(where, study.name)
    dest.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')
    print(f'{dest}: {desc}')


def _md_title(f:Path) -> str:
    nb = read_nb(f)
    for c in nb.cells:
        if c.cell_type == 'markdown' and (m := re.match(r'#\s+(.+)', c.source)): return m[1].strip()
    return f.stem


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('notebooks', nargs='*', help='build only these pages (default: all)')
    p.add_argument('--out', default=str(ROOT/'_docs'), help='site folder')
    p.add_argument('--render-only', action='store_true', help='re-render from the executed copies in _proc/')
    p.add_argument('--submission', metavar='NOTEBOOK', help=f'store this executed study notebook as nbs/{SUBMISSION}')
    p.add_argument('--study', metavar='DIR', default='saved_models', help="the study folder of --submission's notebook")
    p.add_argument('--check', metavar='SITE', help='only check a built site')
    a = p.parse_args()
    if a.submission: return submission_page(Path(a.submission), Path(a.study), get_config().nbs_path/SUBMISSION)
    if a.check: out = Path(a.check)
    else:
        t0 = time.time()
        out = Path(a.out).resolve()
        build(out, {Path(n).resolve() for n in a.notebooks} or None, a.render_only)
        print(f'site built in {time.time()-t0:.0f} s: {out}/index.html')
    probs = check_site(out)
    if probs: sys.exit('Pages show what a reader must not see; fix the notebooks:\n' + '\n'.join(probs))


if __name__ == '__main__': main()

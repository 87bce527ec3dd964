"""Write README.md from nbs/index.ipynb: markdown cells as they are, code cells and their text outputs as fenced blocks."""
import sys
from pathlib import Path
import nbformat

def cell_md(cell)->str:
    "Markdown of one notebook cell."
    if cell.cell_type == 'markdown': return cell.source
    if cell.source.lstrip().startswith('#| hide'): return ''
    outs = [o.get('text') or o.get('data', {}).get('text/plain', '') for o in cell.get('outputs', [])]
    return '\n\n'.join([f"```python\n{cell.source}\n```"] + [f"```\n{o.rstrip()}\n```" for o in outs if o])

def main(src='nbs/index.ipynb', dst='README.md'):
    "Convert `src` to `dst`."
    nb = nbformat.read(src, as_version=4)
    md = '\n\n'.join(filter(None, (cell_md(c) for c in nb.cells)))
    Path(dst).write_text(f"<!-- generated from {src} by tools/nb2readme.py: edit the notebook -->\n\n{md.strip()}\n")

if __name__ == '__main__': main(*sys.argv[1:])

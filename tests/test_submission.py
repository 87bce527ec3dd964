"""The submission stands on its own: the smoke study's zip, unzipped into an empty folder, runs its notebook with a
Python that has the public packages but no installed tl_fastai, reuses the zipped checkpoints (no retraining) and
recomputes the test metrics the study wrote."""
import hashlib, re, subprocess, sys, sysconfig, venv, zipfile
from io import StringIO
from pathlib import Path
import nbformat, pandas as pd

CLI = str(Path(sys.executable).with_name('tl-fastai'))
RUNS = ['baseline_pretrained', 'tuned_variant_lr_0.0001', 'tuned_variant_lr_0.001', 'tuned_variant_lr_0.01', 'cnn_scratch']
EXECUTE = """import nbformat, nbclient, sys
nb = nbformat.read('notebook.ipynb', as_version=4)
nb.cells.append(nbformat.v4.new_code_cell('import sys, tl_fastai; print(sys.executable); print(tl_fastai.__file__)'))
nbclient.NotebookClient(nb, timeout=1200, kernel_name='python3', resources={'metadata': {'path': '.'}}).execute()
nbformat.write(nb, 'executed.ipynb')"""

def sha(p:Path)->str: return hashlib.sha256(p.read_bytes()).hexdigest()

def run(cmd, cwd):
    "Run a command to completion; fail the test with its stderr if it fails."
    r = subprocess.run(list(map(str, cmd)), cwd=cwd, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    return r

def bare_python(d:Path)->Path:
    "A Python that sees this environment's packages (a .pth line, which runs none of their hooks) but no tl_fastai."
    venv.create(d, with_pip=False)
    py = d/'bin'/'python'
    site = Path(run([py, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'], d).stdout.strip())
    (site/'parent.pth').write_text(sysconfig.get_paths()['purelib'] + '\n')
    return py

def outputs(cell)->str:
    "The text of a code cell's outputs."
    return '\n'.join(o.get('text', '') or o.get('data', {}).get('text/plain', '') for o in cell.outputs)

NUMBER = re.compile(r"(?<![\w.+\-])(\d+\.\d+e[-+]\d+|\d+\.\d+%?|\d+%)")

def renderings(v:float)->set:
    "The ways the prose may write a stored number: decimals, percent, minutes from seconds, millions."
    return {f"{v:.3f}", f"{v:.2f}", f"{v:.1f}", f"{v:g}", f"{v:.1e}", f"{100*v:.1f}%", f"{v:.0%}", f"{100*v:.1f}",
            f"{100*abs(v):.1f}", f"{v/60:.1f}", f"{v/1e6:.2f}"}

def leaves(o):
    "Every number in a JSON-like value."
    if isinstance(o, dict): o = list(o.values())
    if isinstance(o, (list, tuple)): return [x for v in o for x in leaves(v)]
    return [float(o)] if isinstance(o, (int, float)) and not isinstance(o, bool) else []

def stored_numbers(out:Path)->set:
    "Renderings of every number the study stored: study.json, its CSVs and histories, the measured levers."
    from tl_fastai.core import ALPHA
    from tl_fastai.report import ELPV_REFS, LEVERS, SEED_SPREAD, error_tables
    from tl_fastai.facts import read_facts
    res = read_facts(out)
    vals = leaves(res) + leaves([ELPV_REFS, LEVERS, SEED_SPREAD]) + [1 - ALPHA]
    for t in error_tables(res, out).values(): vals += t.select_dtypes('number').to_numpy().ravel().tolist()  # shown tables
    vals += [max(m['test_accuracy']) - min(m['test_accuracy']) for m in SEED_SPREAD.values()]
    vals += [max(m['valid_accuracy']) - min(m['valid_accuracy']) for m in SEED_SPREAD.values()]
    for f in [out/'test_metrics.csv', out/'gradcam_cases.csv', *out.glob('*/history.csv')]:
        vals += pd.read_csv(f).select_dtypes('number').to_numpy().ravel().tolist()
    return {r for v in vals for r in renderings(v)}

def test_zip_runs_anywhere(tmp_path):
    study = tmp_path/'study'; study.mkdir()
    run([CLI, 'study', '--preset', 'smoke', '--out', 'saved_models'], study)
    run([CLI, 'notebook', '--out', 'saved_models', '--execute'], study)
    run([CLI, 'zip', '--out', 'saved_models', '--zip', 'submission.zip'], study)

    unz = tmp_path/'unzipped'
    with zipfile.ZipFile(study/'submission.zip') as z:
        z.extractall(unz)
        zipped_metrics = pd.read_csv(StringIO(z.read('saved_models/test_metrics.csv').decode()), index_col=0)
    assert (unz/'tl_fastai'/'gradcam.py').exists() and (unz/'requirements.txt').exists()
    ckpts = {r: sha(unz/'saved_models'/r/'model_checkpoint.pt') for r in RUNS}
    py = bare_python(tmp_path/'py')
    r = subprocess.run([str(py), '-c', 'import tl_fastai'], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 1 and "No module named 'tl_fastai'" in r.stderr        # nothing installed to fall back on

    run([py, '-c', EXECUTE], unz)
    book = nbformat.read(unz/'executed.ipynb', as_version=4)
    code = [c for c in book.cells if c.cell_type == 'code']
    assert all(c.execution_count for c in code)
    assert not [o for c in code for o in c.outputs if o.output_type == 'error']
    log = outputs(next(c for c in code if 'facts = run_study(' in c.source))
    assert 'to train' not in log and 'Study done' in log                              # reused, then recomputed
    assert {r: sha(unz/'saved_models'/r/'model_checkpoint.pt') for r in RUNS} == ckpts  # no run trained again
    pd.testing.assert_frame_equal(pd.read_csv(unz/'saved_models'/'test_metrics.csv', index_col=0), zipped_metrics)
    shown = outputs(next(c for c in code if c.source.strip() == 'runs_table(facts)'))
    for n in RUNS:
        row = next(l for l in shown.splitlines() if l.startswith(n + ' ')).split()
        assert float(row[4]) == round(zipped_metrics.loc[n, 'accuracy'], 3), (n, row)  # test acc, as printed
    assert outputs(code[-1]).split() == [str(py), str(unz/'tl_fastai'/'__init__.py')]  # the kernel: that Python, this code

    shown = [outputs(c) for c in code[:-1]]
    assert not [t for t in shown if 'Warning' in t], [t for t in shown if 'Warning' in t][0][:500]
    assert not [t for t in shown if str(tmp_path) in t or 'site-packages' in t or '/work/' in t]   # no machine paths
    prose = '\n'.join(o['data']['text/markdown'] for c in code for o in c.outputs if 'text/markdown' in o.get('data', {}))
    known = stored_numbers(unz/'saved_models')
    unknown = sorted({n for n in NUMBER.findall(prose) if n not in known})
    assert not unknown, f"numbers in the prose that no stored fact gives: {unknown}"

    from tl_fastai.data import elpv_table
    from tl_fastai.predict import Predictor
    cells = elpv_table().path.iloc[:2].tolist()
    got = Predictor(unz/'saved_models').predict(cells)                     # the unzipped submission's one checkpoint a run
    assert len(got) == 2 and ((got.prob_defective + got.prob_functional - 1).abs() < 1e-5).all()

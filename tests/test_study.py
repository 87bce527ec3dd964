"""The whole study from the command line: smoke preset, SIGKILL during the sweep and resume, notebook, zip."""
import hashlib, json, subprocess, sys, time, zipfile
from pathlib import Path
import nbformat, pandas as pd
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

CLI = str(Path(sys.executable).with_name('tl-fastai'))
RUNS = ['baseline_pretrained', 'tuned_variant_lr_0.0001', 'tuned_variant_lr_0.001', 'tuned_variant_lr_0.01', 'cnn_scratch']
SECTIONS = ['1. Introduction and Plan', '2. Data Exploration and Preprocessing', '3. Baseline Model Training',
            '4. Hyperparameter Tuning Experiments', '5. CNN from Scratch', '6. Grad-CAM and Error Analysis',
            '7. Final Model Comparison', '8. Conclusions and Future Work']

def sha(p:Path)->str: return hashlib.sha256(p.read_bytes()).hexdigest()

def cli(*args, **kw):
    "Run the console script to completion."
    return subprocess.run([CLI, *map(str, args)], capture_output=True, text=True, timeout=1200, **kw)

def kill_during_sweep(out:Path, target='tuned_variant_lr_0.001')->subprocess.Popen:
    "Start the smoke study and SIGKILL it once `target` has checkpointed an epoch but not finished."
    p = subprocess.Popen([CLI, 'study', '--preset', 'smoke', '--out', str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and p.poll() is None:
        if (out/target/'model_checkpoint.pt').exists() and not (out/target/'run.json').exists(): break
        time.sleep(0.01)
    p.kill(); p.wait()
    return p

def test_study_killed_resumed_notebook_zip(tmp_path):
    out = tmp_path/'saved_models'
    p = kill_during_sweep(out)
    assert p.returncode == -9, 'the study finished before it could be killed'
    finished = [r for r in RUNS if (out/r/'run.json').exists()]
    partial = [r for r in RUNS if (out/r/'model_checkpoint.pt').exists() and r not in finished]
    assert finished[:2] == RUNS[:2] and partial == ['tuned_variant_lr_0.001'], (finished, partial)
    before = {r: sha(out/r/'model_checkpoint.pt') for r in finished}
    done_epochs = len(pd.read_csv(out/partial[0]/'history.csv'))

    r = cli('study', '--preset', 'smoke', '--out', out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'Study done' in r.stdout and 'baseline_pretrained' in r.stdout
    for run in finished: assert sha(out/run/'model_checkpoint.pt') == before[run], f'{run} was retrained'
    res = json.loads((out/'study.json').read_text())
    assert list(res['runs']) == RUNS and res['best_variant'] in RUNS[1:4]
    for run in RUNS:
        info = json.loads((out/run/'run.json').read_text())
        assert info['finished'] and info['epochs'] == 2
        h = pd.read_csv(out/run/'history.csv')
        assert h.epoch.tolist() == [0, 1]
        events = list((out/run/'logs').glob('events.out.tfevents.*'))
        assert len(events) == 1, run
        ea = EventAccumulator(str(out/run/'logs')); ea.Reload()
        assert [e.step for e in ea.Scalars('loss/valid')] == [0, 1] and [e.step for e in ea.Scalars('accuracy/train')] == [0, 1]
    assert done_epochs == 1   # the killed run had one epoch and resumed for the second
    cases = pd.read_csv(out/'gradcam_cases.csv')
    assert len(cases) >= 5 and (cases.label != cases.pred).sum() >= 3
    assert len(list((out/'figures'/'gradcam').glob('case_*.png'))) >= 5

    nb = tmp_path/'notebook.ipynb'
    r = cli('notebook', '--out', out, '--path', nb, '--execute', cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    book = nbformat.read(nb, as_version=4)
    heads = [l[3:].strip() for c in book.cells if c.cell_type == 'markdown' for l in c.source.splitlines() if l.startswith('## ')]
    assert heads[:8] == SECTIONS and heads[8:] == ['Appendix: extra models and full tables'], heads
    after = json.loads((out/'study.json').read_text())['wall_times']                   # the notebook re-ran the study from cache
    walls = [json.loads((out/run/'run.json').read_text())['wall_time_s'] for run in RUNS]
    assert abs(after['training_s'] - sum(walls)) < 0.2 and after['total_s'] >= after['training_s'] > 0, after
    code = [c for c in book.cells if c.cell_type == 'code']
    assert all(c.get('execution_count') for c in code) and not [o for c in code for o in c.outputs if o.output_type == 'error']
    images = sum(1 for c in code for o in c.outputs if 'image/png' in o.get('data', {}))
    assert images >= 10, images

    zp = tmp_path/'submission.zip'
    r = cli('zip', '--out', out, '--notebook', nb, '--zip', zp, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    names = set(zipfile.ZipFile(zp).namelist())
    assert 'notebook.ipynb' in names
    for run in RUNS: assert f'saved_models/{run}/model_checkpoint.pt' in names and any(n.startswith(f'saved_models/{run}/logs/events.out.tfevents') for n in names)

def test_unwritable_out_is_one_sentence(tmp_path):
    (tmp_path/'file').write_text('x')
    r = cli('study', '--preset', 'smoke', '--out', tmp_path/'file'/'saved_models')
    assert r.returncode == 2 and 'choose another --out' in r.stderr and 'Traceback' not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1

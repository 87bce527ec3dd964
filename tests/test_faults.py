"""Faults a user meets, each answered by one sentence and exit status 2 with nothing finished lost: two studies in one
folder, a full disk, the smoke preset on a folder dataset, a notebook without a study, damaged state files."""
import hashlib, json, os, shutil, subprocess, sys, time
from pathlib import Path
import pandas as pd, pytest
from tl_fastai.data import elpv_subset
from tl_fastai.checkpoint import load_checkpoint

CLI = str(Path(sys.executable).with_name('tl-fastai'))
RUNS = ['baseline_pretrained', 'tuned_variant_lr_0.0001', 'tuned_variant_lr_0.001', 'tuned_variant_lr_0.01', 'cnn_scratch']

def cli(*args, **kw):
    "Run the console script to completion."
    return subprocess.run([CLI, *map(str, args)], capture_output=True, text=True, timeout=1200, **kw)

def one_sentence(stderr:str)->str:
    "The error line of a refused command: exactly one line, no traceback."
    lines = [l for l in stderr.strip().splitlines() if l.startswith('tl-fastai ')]
    assert len(lines) == 1 and 'Traceback' not in stderr, stderr[-2000:]
    return lines[0]

def sha(p:Path)->str: return hashlib.sha256(p.read_bytes()).hexdigest()

FULL_DISK = """import errno, sys, torch
from tl_fastai.cli import main
real, calls = torch.save, [0]
def save(obj, f, *a, **k):
    calls[0] += 1
    if calls[0] == 6: open(f, 'wb').write(b'half a checkpoint'); raise OSError(errno.ENOSPC, 'No space left on device')
    return real(obj, f, *a, **k)
torch.save = save
sys.exit(main(['study', '--preset', 'smoke', '--out', sys.argv[1]]))
"""

@pytest.fixture(scope='module')
def full_then_resumed(tmp_path_factory):
    "A smoke study whose disk fills up in the middle of training, then run again once there is space."
    out = tmp_path_factory.mktemp('disk')/'saved_models'
    full = subprocess.run([sys.executable, '-c', FULL_DISK, str(out)], capture_output=True, text=True, timeout=1200)
    state = {p.relative_to(out).as_posix(): sha(p) for p in out.rglob('*.pt')}
    tmp_left = [p.name for p in out.rglob('*.tmp')]
    loads = {p.parent.name: load_checkpoint(p)[1]['epoch'] for p in out.rglob('model_checkpoint.pt')}
    resumed = cli('study', '--preset', 'smoke', '--out', out)
    return out, full, state, tmp_left, loads, resumed

def test_full_disk_is_one_sentence_and_resumes(full_then_resumed):
    out, full, state, tmp_left, loads, resumed = full_then_resumed
    assert full.returncode == 2, full.stderr[-2000:]
    line = one_sentence(full.stderr)
    assert 'failed because the disk is full' in line and 'run the same command again' in line and 'MB free' in line, line
    assert tmp_left == [] and loads                                     # no partial file, every checkpoint left loads
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    for run in RUNS: assert json.loads((out/run/'run.json').read_text())['finished'], run
    unchanged = [k for k, v in state.items() if (out/k).exists() and sha(out/k) == v]
    assert any(k.startswith('baseline_pretrained/') for k in unchanged)          # finished before the failure: not retrained

def test_no_space_is_refused_before_training(tmp_path):
    mnt = tmp_path/'small'; mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=40m', 'tmpfs', str(mnt)]).returncode:
        pytest.skip('cannot mount a small tmpfs here; the full-disk test above covers the write path')
    try:
        r = cli('study', '--preset', 'smoke', '--out', mnt/'sm')
        assert r.returncode == 2
        line = one_sentence(r.stderr)
        assert 'The study needs about' in line and 'MB are free' in line, line
        assert not [p for p in (mnt/'sm').iterdir() if p.is_dir() and p.name in RUNS]
        subprocess.run(['mount', '-o', 'remount,size=800m', str(mnt)], check=True)      # space freed: the same command works
        r = cli('study', '--preset', 'smoke', '--out', mnt/'sm')
        assert r.returncode == 0, r.stderr[-2000:]
    finally: subprocess.run(['umount', str(mnt)])

def test_second_writer_is_refused(tmp_path):
    out = tmp_path/'saved_models'
    first = subprocess.Popen([CLI, 'study', '--preset', 'smoke', '--out', str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lock, deadline = out/'.study.lock', time.time() + 300
    while time.time() < deadline and not (lock.exists() and f'process {first.pid}' in lock.read_text()): time.sleep(0.05)
    second = cli('study', '--preset', 'smoke', '--out', out)
    zipped = cli('zip', '--out', out, '--notebook', tmp_path/'nb.ipynb', '--zip', tmp_path/'s.zip')
    assert first.wait(timeout=1200) == 0, first.stderr.read()[-2000:]
    assert second.returncode == 2 and f'{out} is being written by process {first.pid}' in one_sentence(second.stderr)
    assert zipped.returncode == 2 and 'is being written by' in one_sentence(zipped.stderr)
    ck = {r: sha(out/r/'model_checkpoint.pt') for r in RUNS}
    r = cli('study', '--preset', 'smoke', '--out', out)                  # released: a later study reuses every run
    assert r.returncode == 0 and {r_: sha(out/r_/'model_checkpoint.pt') for r_ in RUNS} == ck

def test_smoke_preset_on_a_folder_dataset(tmp_path):
    ds = tmp_path/'ds'
    sub = elpv_subset(35)
    rows = [*zip(sub.path, sub.label), *zip(elpv_subset(3, seed=1).path[:5], ['rare']*5)]   # a third class of 5 images
    for i, (p, label) in enumerate(rows):
        (ds/label).mkdir(parents=True, exist_ok=True); shutil.copy(p, ds/label/f'{i}.png')
    r = cli('study', '--dataset', f'folder:{ds}', '--preset', 'smoke', '--out', tmp_path/'out')
    assert r.returncode == 0, r.stderr[-2000:]
    split = pd.read_csv(tmp_path/'out'/'split.csv')
    assert split.label.value_counts().to_dict() == {'defective': 30, 'functional': 30, 'rare': 5}   # the small class kept whole
    assert (pd.crosstab(split.label, split.split).drop('rare') >= 3).all().all()
    assert json.loads((tmp_path/'out'/'study.json').read_text())['data']['n_classes'] == 3

def test_notebook_without_a_study(tmp_path):
    r = cli('notebook', '--out', tmp_path/'none', '--path', tmp_path/'nb.ipynb', '--execute')
    assert r.returncode == 2
    line = one_sentence(r.stderr)
    assert 'holds no finished study' in line and f'tl-fastai study --out {tmp_path/"none"}' in line and '--train' in line

def test_damaged_state_files(full_then_resumed, tmp_path):
    out = tmp_path/'saved_models'
    shutil.copytree(full_then_resumed[0], out)
    ck = {r: sha(out/r/'model_checkpoint.pt') for r in RUNS}
    run_json = out/'tuned_variant_lr_0.001'/'run.json'; run_json.write_text(run_json.read_text()[:60])
    hist = out/'cnn_scratch'/'history.csv'; hist.write_text(hist.read_text()[:50])
    r = cli('study', '--preset', 'smoke', '--out', out)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f'{run_json} was damaged: rebuilt from model_checkpoint.pt.' in r.stderr and 'history.csv was missing or damaged' in r.stderr
    assert 'Traceback' not in r.stderr and 'warnings.warn' not in r.stderr         # messages only, no source lines
    assert {r_: sha(out/r_/'model_checkpoint.pt') for r_ in RUNS} == ck           # nothing retrained
    assert json.loads(run_json.read_text())['finished'] and len(pd.read_csv(hist)) == 2
    study = out/'study.json'; study.write_text(study.read_text()[:100])
    r = cli('notebook', '--out', out, '--path', tmp_path/'nb.ipynb')
    assert r.returncode == 2
    line = one_sentence(r.stderr)
    assert f'{study} is damaged' in line and f'run `tl-fastai study --out {out}` again' in line, line
    split = pd.read_csv(out/'split.csv'); split.loc[split.split.eq('test').idxmax(), 'split'] = 'train'
    split.to_csv(out/'split.csv', index=False)
    r = cli('study', '--preset', 'smoke', '--out', out)
    assert r.returncode == 2 and 'split.csv was edited since it was made' in one_sentence(r.stderr)

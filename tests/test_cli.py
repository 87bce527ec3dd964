"""End-to-end tests of the installed `tl-fastai` console script."""
import json, shutil, subprocess, sys
from pathlib import Path
import pandas as pd
from tl_fastai.data import elpv_subset

CLI = Path(sys.executable).with_name('tl-fastai')

def run_cli(*args):
    "Run the console script, return the completed process."
    return subprocess.run([str(CLI), *map(str, args)], capture_output=True, text=True, timeout=600)

def make_folder(root:Path, n:int=5)->Path:
    "An ImageFolder tree of `n` ELPV cells per class."
    for _, r in elpv_subset(n).iterrows():
        (root/r.label).mkdir(parents=True, exist_ok=True)
        shutil.copy(r.path, root/r.label/Path(r.file).name)
    return root

def test_data_command_writes_split_stats_figures(tmp_path):
    ds, out = make_folder(tmp_path/'ds'), tmp_path/'out'
    p = run_cli('data', '--dataset', f'folder:{ds}', '--out', out)
    assert p.returncode == 0, p.stderr
    assert 'defective' in p.stdout and 'functional' in p.stdout and str(out/'split.csv') in p.stdout
    split = pd.read_csv(out/'split.csv')
    assert len(split) == 10 and set(split.split) == {'train', 'valid', 'test'}
    assert json.loads((out/'data_stats.json').read_text())['class_counts'] == {'defective': 5, 'functional': 5}
    assert {f.name for f in (out/'figures').glob('*.png')} == {'class_distribution.png', 'samples.png', 'image_sizes.png', 'augmentations.png'}

def test_changed_dataset_is_refused_and_split_kept(tmp_path):
    ds, out = make_folder(tmp_path/'ds'), tmp_path/'out'
    assert run_cli('data', '--dataset', f'folder:{ds}', '--out', out).returncode == 0
    before = (out/'split.csv').read_bytes()
    next((ds/'functional').iterdir()).rename(ds/'defective'/'moved.png')
    p = run_cli('data', '--dataset', f'folder:{ds}', '--out', out)
    assert p.returncode == 2 and 'different dataset' in p.stderr and 'Traceback' not in p.stderr
    assert (out/'split.csv').read_bytes() == before

def test_too_small_class_and_bad_spec(tmp_path):
    ds = make_folder(tmp_path/'ds', n=3)
    for f in list((ds/'defective').iterdir())[1:]: f.unlink()
    p = run_cli('data', '--dataset', f'folder:{ds}', '--out', tmp_path/'out')
    assert p.returncode == 2 and "Class 'defective' has 1 image(s)" in p.stderr
    assert not (tmp_path/'out'/'split.csv').exists()
    p = run_cli('data', '--dataset', 'imagenet')
    assert p.returncode == 2 and 'Unknown dataset spec' in p.stderr

"""Data-parallel training: the smoke study under two CPU processes (gloo) launched by torchrun."""
import json, os, subprocess, sys
from pathlib import Path

import pandas as pd, pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tl_fastai.data import elpv_subset, prepare_split
from tl_fastai.checkpoint import load_checkpoint

pytest.importorskip('accelerate')
RUNS = ['baseline_pretrained', 'tuned_variant_lr_0.0001', 'tuned_variant_lr_0.001', 'tuned_variant_lr_0.01', 'cnn_scratch']

@pytest.fixture(scope='module')
def ddp_study(tmp_path_factory):
    "A smoke study trained by two data-parallel CPU processes."
    out = tmp_path_factory.mktemp('ddp')/'saved_models'
    torchrun = Path(sys.executable).with_name('torchrun')
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    r = subprocess.run([str(torchrun), '--standalone', '--nproc_per_node', '2', '-m', 'tl_fastai.cli', 'study', '--preset', 'smoke',
                        '--out', str(out)], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r.stdout

def test_every_run_trained_by_two_processes(ddp_study):
    out, stdout = ddp_study
    for name in RUNS:
        run = json.loads((out/name/'run.json').read_text())
        assert run['finished'] and run['environment']['processes'] == 2, (name, run['environment'])
    assert stdout.count('Study done') == 1                                  # only the first process reports

def test_lr_finder_runs_in_the_first_process_alone(ddp_study):
    out, _ = ddp_study                                                      # a collective in it would have hung the study
    assert json.loads((out/'study.json').read_text())['lr_find'] == json.loads((out/'lr_find.json').read_text())
    assert (out/'figures'/'lr_find.png').exists()

def test_first_process_alone_writes_one_continuous_log(ddp_study):
    out, _ = ddp_study
    for name in RUNS:
        events = list((out/name/'logs').glob('events.out.tfevents.*'))
        assert len(events) == 1, (name, events)                             # no second writer
        ea = EventAccumulator(str(events[0])); ea.Reload()
        assert [e.step for e in ea.Scalars('loss/train')] == [0, 1]
        hist = pd.read_csv(out/name/'history.csv')
        assert hist.epoch.tolist() == [0, 1]
        assert not list((out/name).glob('*.tmp'))

def test_checkpoints_hold_the_bare_model(ddp_study):
    out, _ = ddp_study
    model, meta = load_checkpoint(out/'baseline_pretrained'/'model_checkpoint.pt')   # strict load: no 'module.' prefix
    assert meta['epoch'] == 1 and model.training is False
    assert not any(k.startswith('module.') for k in model.state_dict())

def test_same_split_as_one_process(ddp_study, tmp_path):
    out, _ = ddp_study
    single = prepare_split(elpv_subset(30, seed=42), tmp_path)
    ddp = pd.read_csv(out/'split.csv')
    pd.testing.assert_frame_equal(ddp[['file', 'split']], single[['file', 'split']].reset_index(drop=True))
    study = json.loads((out/'study.json').read_text())
    assert set(study['runs']) == set(RUNS) and study['data']['n_images'] == len(single)

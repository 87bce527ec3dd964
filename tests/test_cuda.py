"""On a GPU, what a Colab user runs: the smoke study end to end (lr finder included), a run killed in the middle of an
epoch and resumed (bf16 or fp16 as the GPU's capability says, fp16 with its gradient scaler forced, `ranger`), and the
inference path. Every test here is skipped without CUDA; `bench/gpu_check.sh` runs them first."""
import json
from unittest import mock
import pandas as pd, pytest, torch
from fastai.callback.core import Callback
from fastai.optimizer import OptimWrapper
from tl_fastai.core import amp_dtype
from tl_fastai.data import elpv_subset, get_dls, prepare_split
from tl_fastai.study import StudyConfig, run_predictions, run_study
from tl_fastai.checkpoint import load_checkpoint, read_checkpoint
from tl_fastai.train import RunConfig, build_learner, train_run

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
RUNS = ['baseline_pretrained', 'tuned_variant_lr_0.0001', 'tuned_variant_lr_0.001', 'tuned_variant_lr_0.01', 'cnn_scratch']
TINY = dict(size=64, bs=8, epochs=3, freeze_epochs=1, lr=3e-3, augs=dict(do_flip=True, flip_vert=True, max_rotate=0., max_warp=0.))

class Killed(Exception): pass

class KillMidEpoch(Callback):
    "Raise halfway through the training batches of global epoch `at`, as a kill would."
    order = 100
    def __init__(self, at:int): self.at = at
    def after_batch(self):
        if self.training and self.epoch_logger.offset + self.epoch == self.at and self.iter == len(self.dl)//2: raise Killed('killed')

class Probe(Callback):
    "When a fit starts (after the checkpoint's state is loaded): optimizer state, GPU random state, precision, scaler."
    order = 20  # after MixedPrecision (10) and ResumeState (11)
    def before_fit(self):
        wrapped = isinstance(self.opt, OptimWrapper)
        opt = self.opt.opt if wrapped else self.opt           # torch's optimizer, or fastai's (ranger: its Lookahead)
        pairs = [(p, v) for p, st in opt.state.items() for k, v in st.items() if k != 'step' and torch.is_tensor(v)]
        slow = [] if wrapped else getattr(opt, 'slow_weights', None) or []
        self.slow = [(p, s) for sg, pg in zip(slow, self.opt.param_lists) for s, p in zip(sg, pg)]
        self.state = [(v.device, v.dtype, p.device, p.dtype) for p, v in pairs + self.slow]
        self.fused = [(st['step'].device, opt.param_groups[0].get('fused')) for st in opt.state.values()] if wrapped else []
        self.rng = torch.cuda.get_rng_state()
        self.cbs_names = [type(cb).__name__ for cb in self.learn.cbs]
        sc = getattr(self.learn, 'scaler', None)
        self.scale = sc.get_scale() if sc is not None and sc.is_enabled() else None

@pytest.fixture(scope='module')
def tiny_split(tmp_path_factory):
    return prepare_split(elpv_subset(40), tmp_path_factory.mktemp('split'))

class StartScale(Callback):
    "Start fp16's gradient scaler at `scale` instead of 65536, so that a resumed run's scale tells where it came from."
    order = 11  # after MixedPrecision (10) makes the scaler
    def __init__(self, scale:float): self.scale = scale
    def before_fit(self): self.learn.scaler.load_state_dict({**self.learn.scaler.state_dict(), 'scale': self.scale})

def kill_and_resume(df, run, cfg:RunConfig, cbs=())->tuple:
    "Train `cfg` into `run` (with `cbs`), killed halfway through global epoch 2; resume it; (checkpoint, probe, result)."
    with pytest.raises(Killed): train_run(cfg, df, run, quiet=True, cbs=[KillMidEpoch(2), *cbs])
    ck = read_checkpoint(run/'model_checkpoint.pt')
    probe = Probe()
    res = train_run(cfg, df, run, quiet=True, cbs=[probe])
    assert res['finished'] and pd.read_csv(run/'history.csv').epoch.tolist() == [0, 1, 2]
    assert ck['epoch'] == 1 and len(ck['rng']['cuda']) == torch.cuda.device_count()
    assert probe.state and all(d == pd_ and t == pt for d, t, pd_, pt in probe.state), probe.state[:3]
    assert all(d.type == 'cuda' for d, *_ in probe.state)
    assert torch.equal(probe.rng, ck['rng']['cuda'][torch.cuda.current_device()])
    assert 'MixedPrecision' in probe.cbs_names
    return ck, probe, res

def test_killed_mid_epoch_resumes_on_the_gpu(tiny_split, tmp_path):
    ck, probe, _ = kill_and_resume(tiny_split, tmp_path/'baseline_pretrained', RunConfig(**TINY))
    assert all(d.type == ('cuda' if fused else 'cpu') for d, fused in probe.fused)

def test_fp16_resumes_with_its_gradient_scale(tiny_split, tmp_path):
    "fp16 forced (a T4's precision, also on a bf16 GPU): the scaler's state is checkpointed and restored."
    with mock.patch('tl_fastai.train.amp_dtype', return_value=torch.float16):
        ck, probe, res = kill_and_resume(tiny_split, tmp_path/'fp16', RunConfig(**TINY), cbs=[StartScale(1024.)])
    assert ck['scaler']['scale'] <= 1024.                               # 1024, or less after an overflow
    assert probe.scale == ck['scaler']['scale']                        # not 65536 again
    assert res['final']['train_loss'] == res['final']['train_loss']    # no NaN

def test_ranger_resumes_on_the_gpu(tiny_split, tmp_path):
    "fastai's ranger: its slow weights come back on the parameters' device and dtype, and training goes on."
    _, probe, res = kill_and_resume(tiny_split, tmp_path/'ranger', RunConfig(**{**TINY, 'opt': 'ranger'}))
    assert probe.slow and all(s.is_cuda and s.dtype == p.dtype for p, s in probe.slow) and res['epochs'] == 3

def test_mixed_precision_follows_the_capability():
    major, _ = torch.cuda.get_device_capability()
    assert amp_dtype('cuda') == (torch.bfloat16 if major >= 8 else torch.float16)

def test_lr_finder_records_host_losses(tiny_split, tmp_path):
    learn = build_learner(RunConfig(size=64, bs=8), get_dls(tiny_split, size=64, bs=8))
    learn.path = tmp_path                                               # lr_find saves and restores the weights there
    with learn.no_bar(), learn.no_logging(): learn.lr_find(num_it=30, show_plot=True)
    assert {(type(l), l.device.type) for l in learn.recorder.losses} == {(torch.Tensor, 'cpu')}

def test_smoke_study_end_to_end(tmp_path):
    "The smoke study on the GPU: lr finder, five runs, evaluation, Grad-CAM; then the checkpoint's inference on the GPU."
    out = tmp_path/'saved_models'
    res = run_study(StudyConfig(preset='smoke', out=str(out)), log=None)
    study = json.loads((out/'study.json').read_text())
    assert study['device'] == torch.cuda.get_device_name(0)
    assert (out/'lr_find.json').exists() and (out/'figures'/'lr_find.png').exists()
    for name in RUNS:
        run = json.loads((out/name/'run.json').read_text())
        assert run['finished'] and run['environment']['device'] == torch.cuda.get_device_name(0), name
        assert 0 <= res['runs'][name]['test']['accuracy'] <= 1
    model, _ = load_checkpoint(out/'baseline_pretrained'/'best_checkpoint.pt', device='cuda')
    assert next(model.parameters()).is_cuda
    df = prepare_split(elpv_subset(30, seed=42), out)                   # the study's split, read back
    p = run_predictions(out/'baseline_pretrained', df)                  # inference on the GPU, as the study does
    acc = (p['test'].argmax(1) == p['y_test']).double().mean().item()
    assert abs(acc - res['runs']['baseline_pretrained']['test']['accuracy']) <= 1/len(p['y_test']) + 1e-9

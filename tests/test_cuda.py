"""On a GPU: a run killed in the middle of an epoch resumes on the GPU with its optimizer state on each parameter's
device and dtype, the GPU random state restored and one continuous history; mixed precision as `amp_dtype` says."""
import pandas as pd, pytest, torch
from fastai.callback.core import Callback
from tl_fastai.core import amp_dtype
from tl_fastai.data import elpv_subset, prepare_split
from tl_fastai.train import RunConfig, read_checkpoint, train_run

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')

class Killed(Exception): pass

class KillMidEpoch(Callback):
    "Raise halfway through the training batches of global epoch `at`, as a kill would."
    order = 100
    def __init__(self, at:int): self.at = at
    def after_batch(self):
        if self.training and self.epoch_logger.offset + self.epoch == self.at and self.iter == len(self.dl)//2: raise Killed('killed')

class Probe(Callback):
    "When a fit starts: the optimizer state's and parameters' devices and dtypes, the GPU random state, the precision."
    order = -100
    def before_fit(self):
        opt = self.opt.opt
        self.state = [(v.device, v.dtype, p.device, p.dtype) for p, st in opt.state.items() for k, v in st.items() if k != 'step']
        self.steps = [(st['step'].device, opt.param_groups[0]['fused']) for st in opt.state.values()]
        self.rng = torch.cuda.get_rng_state()
        self.cbs_names = [type(cb).__name__ for cb in self.learn.cbs]

def test_killed_mid_epoch_resumes_on_the_gpu(tmp_path):
    df = prepare_split(elpv_subset(40), tmp_path)
    cfg = RunConfig(size=64, bs=8, epochs=3, freeze_epochs=1, lr=3e-3, augs=dict(do_flip=True, flip_vert=True, max_rotate=0., max_warp=0.))
    run = tmp_path/'baseline_pretrained'
    with pytest.raises(Killed): train_run(cfg, df, run, quiet=True, cbs=[KillMidEpoch(2)])
    ck = read_checkpoint(run/'model_checkpoint.pt')
    assert ck['epoch'] == 1 and len(ck['rng']['cuda']) == torch.cuda.device_count()
    probe = Probe()
    res = train_run(cfg, df, run, quiet=True, cbs=[probe])
    assert res['finished'] and pd.read_csv(run/'history.csv').epoch.tolist() == [0, 1, 2]
    assert probe.state and all(d == pd_ and t == pt for d, t, pd_, pt in probe.state), probe.state[:3]
    assert all(d.type == 'cuda' for d, *_ in probe.state)
    assert all(d.type == ('cuda' if fused else 'cpu') for d, fused in probe.steps)
    assert torch.equal(probe.rng, ck['rng']['cuda'][torch.cuda.current_device()])
    assert 'MixedPrecision' in probe.cbs_names

def test_mixed_precision_follows_the_capability():
    major, _ = torch.cuda.get_device_capability()
    assert amp_dtype('cuda') == (torch.bfloat16 if major >= 8 else torch.float16)

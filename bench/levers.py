"""Accuracy levers for the `cpu` preset on ELPV, each measured on the validation set (and reported on test).

Each lever is one training run of the `cpu` recipe (Lite0 with its offline ImageNet weights, 160 px, batch 32, stem and
first three blocks kept frozen, the trainable body at lr/3, 8 epochs of one-cycle, horizontal flips and lighting,
the study's 70/15/15 split) with one thing changed:

- `hard`: the recipe as it is (hard labels, cross-entropy), lr 2e-3;
- `lr 1e-2`: the sweep's best learning rate in earlier studies;
- `soft`: soft targets from the expert probability (a cell rated 1/3 is 1/3 defective, 2/3 functional), the lever
  Deitsch et al. trained with;
- `weighted`: class-weighted cross-entropy (inverse class frequency);
- `lite1`: EfficientNet-Lite1 (offline weights) instead of Lite0;
- `soft 1e-2`: both;
- `soft seed 1`, `soft seed 2`: `soft` with another training seed (same split): the spread between seeds;
- `soft turns`, `soft turns seed 1`, `soft turns seed 2`: `soft` with the dihedral group (flips and 90-degree turns,
  which make cells with vertical busbars that ELPV does not contain) instead of horizontal flips, at three seeds.

The epoch with the best validation macro F1 is kept, as in the study. Its probabilities on the validation and test
rows are saved for 8 dihedral views, so the evaluation levers cost no training: test-time augmentation (4 flips or 8
views), a decision threshold chosen on validation, and ensembles of runs. `--table` writes `bench/levers.csv` from the
saved runs: validation and test accuracy with the test 95% bootstrap interval, for every lever.
Usage: python bench/levers.py RUN [RUN ...] [--out DIR] [--epochs 8]; python bench/levers.py --table [--out DIR]
Each run takes 6-20 minutes on 2 CPU cores; run them one at a time, on a quiet machine if the times matter.
"""
import argparse, copy, itertools, json, time
from functools import partial
from pathlib import Path
import numpy as np, pandas as pd, torch, torch.nn.functional as F
from fastai.learner import Learner
from fastai.callback.core import Callback
from fastai.metrics import AccumMetric
from fastai.torch_core import set_seed
from sklearn import metrics as skm
from tl_fastai.core import ELPV4_CLASSES, PROBA_LEVELS
from tl_fastai.data import default_augs, get_dls, get_test_dl, load_source, prepare_split
from tl_fastai.evaluate import acc_rows, bootstrap_ci, flips
from tl_fastai.models import create_model, norm_stats, param_groups
from tl_fastai.train import OPTIMIZERS, DeviceSmoothLoss, freeze_stages, use_speedups

RUNS = {'hard': dict(), 'lr 1e-2': dict(lr=1e-2), 'soft': dict(loss='soft'), 'weighted': dict(loss='weighted'),
        'lite1': dict(arch='tf_efficientnet_lite1'), 'soft 1e-2': dict(loss='soft', lr=1e-2),
        'soft seed 1': dict(loss='soft', seed=1), 'soft seed 2': dict(loss='soft', seed=2),
        'soft turns': dict(loss='soft', turns=True), 'soft turns seed 1': dict(loss='soft', turns=True, seed=1),
        'soft turns seed 2': dict(loss='soft', turns=True, seed=2)}
RECIPE = dict(arch='tf_efficientnet_lite0', lr=2e-3, loss='hard', size=160, bs=32, keep_frozen=4, lr_mult=3., epochs=8,
              seed=42, turns=False)

def soft_table(df:pd.DataFrame)->pd.DataFrame:
    "The split table with the four expert levels as labels: the data the soft loss needs."
    return df.assign(label=np.array(ELPV4_CLASSES)[np.rint(df.proba.values*3).astype(int)])

def loss_and_targets(kind:str, vocab:list, train_labels)->tuple:
    "(loss function, function mapping a batch's targets to defective=0 / functional=1) for `kind`."
    if kind == 'soft':
        p_def = torch.tensor([list(PROBA_LEVELS.values())[ELPV4_CLASSES.index(v)] for v in vocab])
        def soft(pred, y):
            t, ls = p_def.to(pred.device)[y], F.log_softmax(pred.float(), 1)
            return -(t*ls[:, 0] + (1 - t)*ls[:, 1]).mean()
        return soft, lambda y: (p_def.to(y.device)[y] < 0.5).long()
    w = None
    if kind == 'weighted':
        n = np.bincount([vocab.index(l) for l in train_labels]); w = torch.tensor(n.sum()/(len(n)*n), dtype=torch.float32)
    return (lambda pred, y: F.cross_entropy(pred.float(), y, weight=None if w is None else w.to(pred.device))), (lambda y: y)

class KeepBest(Callback):
    "Keep the weights of the epoch with the best validation macro F1, and the per-epoch validation figures."
    order = 70
    def before_fit(self): self.best, self.state, self.hist = -1., None, []
    def after_epoch(self):
        v = dict(zip(self.recorder.metric_names, self.recorder.log))
        self.hist.append(dict(epoch=self.epoch, valid_loss=float(v['valid_loss']), accuracy=float(v['accuracy']), f1=float(v['f1'])))
        if v['f1'] > self.best: self.best, self.state = float(v['f1']), copy.deepcopy(self.learn.model.state_dict())

def views_probs(model, dl)->tuple:
    "(8 views x N x 2 probabilities, N targets) of `model` over `dl`, views as `tl_fastai.evaluate.flips(x, 8)`."
    P, Y = [], []
    with torch.inference_mode():
        for xb, yb in dl:
            xb = xb.as_subclass(torch.Tensor)
            P.append(torch.stack([model(v.contiguous(memory_format=torch.channels_last)).float().softmax(1) for v in flips(xb, 8)]))
            Y.append(yb.as_subclass(torch.Tensor))
    return torch.cat(P, 1).numpy(), torch.cat(Y).numpy()

def train_lever(name:str, out:Path, epochs:int):
    "Train the recipe with lever `name` and save its best epoch's probabilities under `out`."
    a, t0 = {**RECIPE, 'epochs': epochs, **RUNS[name]}, time.time()
    df = prepare_split(load_source('elpv'), out/'split')
    data = soft_table(df) if a['loss'] == 'soft' else df
    mean, std = norm_stats(a['arch'])
    augs = {**default_augs('elpv'), 'flip_vert': a['turns']}
    dls = get_dls(data, size=a['size'], bs=a['bs'], mean=mean, std=std, augs=augs, seed=a['seed'])
    loss, to_cls = loss_and_targets(a['loss'], list(dls.vocab), data.label[data.split == 'train'])
    metric = lambda fn, **kw: (lambda t, p: fn(to_cls(torch.as_tensor(t)).numpy(), np.asarray(p), **kw))
    metrics = [AccumMetric(metric(skm.accuracy_score), dim_argmax=-1, invert_arg=True, name='accuracy'),
               AccumMetric(metric(skm.f1_score, average='macro'), dim_argmax=-1, invert_arg=True, name='f1')]
    set_seed(a['seed'])
    model = create_model(a['arch'], 2, pretrained=True, drop_rate=0.2)
    keep = freeze_stages(model, a['keep_frozen'])
    learn = Learner(dls, model, loss_func=loss, opt_func=OPTIMIZERS['adam'], lr=a['lr'], wd=1e-2, metrics=metrics,
                    splitter=partial(param_groups, keep_frozen=keep), cbs=KeepBest())
    learn.recorder.smooth_loss = DeviceSmoothLoss(learn.recorder.smooth_loss.beta)
    use_speedups(learn); learn.unfreeze()
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(a['epochs'], slice(a['lr']/a['lr_mult'], a['lr']), pct_start=0.3, div=5.)
    learn.model.load_state_dict(learn.keep_best.state)
    ev = get_dls(df, size=a['size'], bs=64, mean=mean, std=std, augs=default_augs('elpv'))   # the validation transforms of training
    pv, yv = views_probs(learn.model.eval(), ev.valid); pt, yt = views_probs(learn.model, get_test_dl(ev, df))
    np.savez(out/f'{name}.npz', pv=pv, yv=yv, pt=pt, yt=yt)
    json.dump(dict(lever=name, settings=a, history=learn.keep_best.hist, minutes=round((time.time() - t0)/60, 1)),
              open(out/f'{name}.json', 'w'), indent=1)
    print(f"{name}: valid {(pv[0].argmax(1) == yv).mean():.4f}, test {(pt[0].argmax(1) == yt).mean():.4f}, "
          f"{(time.time() - t0)/60:.1f} min", flush=True)

def _acc(p, y, th=0.5): return float(((p[:, 0] < th).astype(int) == y).mean())    # class 0 = defective

def table(out:Path)->pd.DataFrame:
    "Every lever and evaluation lever: validation and test accuracy, test 95% bootstrap interval."
    R = {f.stem: np.load(f) for f in sorted(out.glob('*.npz'))}
    rows = []
    def add(lever, pv, pt, yv, yt, th=0.5):
        pred = (pt[:, 0] < th).astype(int)
        _, lo, hi = bootstrap_ci(yt, pred, acc_rows)
        rows.append(dict(lever=lever, valid_accuracy=_acc(pv, yv, th), test_accuracy=_acc(pt, yt, th), test_lo=lo, test_hi=hi))
    for name, d in R.items():
        add(name, d['pv'][0], d['pt'][0], d['yv'], d['yt'])
        for n in (4, 8): add(f'{name} + tta{n}', d['pv'][:n].mean(0), d['pt'][:n].mean(0), d['yv'], d['yt'])
        ths = np.linspace(0.3, 0.7, 41)
        th = ths[int(np.argmax([_acc(d['pv'][0], d['yv'], 1 - t) for t in ths]))]
        add(f'{name} + threshold {th:.2f} (valid)', d['pv'][0], d['pt'][0], d['yv'], d['yt'], 1 - th)
    for k in range(2, len(R) + 1):
        for combo in itertools.combinations(R, k):
            mean = lambda s: np.mean([R[c][s][0] for c in combo], 0)
            add('ensemble: ' + ' + '.join(combo), mean('pv'), mean('pt'), R[combo[0]]['yv'], R[combo[0]]['yt'])
    return pd.DataFrame(rows).round(4)

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('runs', nargs='*', help=f"levers to train: {', '.join(RUNS)}")
    p.add_argument('--out', default='bench/results/levers', help='folder of the saved runs')
    p.add_argument('--epochs', type=int, default=RECIPE['epochs'], help='epochs of every run')
    p.add_argument('--table', action='store_true', help='write bench/levers.csv from the saved runs')
    a = p.parse_args()
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    for r in a.runs: train_lever(r, out, a.epochs)
    if a.table:
        t = table(out); t.to_csv(Path(__file__).parent/'levers.csv', index=False)
        print(t.sort_values('valid_accuracy', ascending=False).to_string(index=False))

if __name__ == '__main__': main()

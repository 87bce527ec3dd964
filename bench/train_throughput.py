"""Training throughput on ELPV: the tl_fastai Learner (build_learner + fit) vs a plain timm + PyTorch loop.

Both train the same model (tf_efficientnet_lite0 with its offline ImageNet weights, new 2-class head, unfrozen) on
the same ELPV train rows, decoded once into memory (tl_fastai's image cache: PIL -> RGB -> resize to `--size`, uint8,
on the GPU when there is one; no augmentation; turned to float and normalised with the backbone's statistics on the
batch), with the same batch size, torch's AdamW (fastai's betas and eps, decoupled weight decay on every parameter;
fused kernels on a GPU, multi-tensor ones on a CPU), learning rate and weight decay, the same channels-last model and
the same precision (`tl_fastai.core.train_amp_dtype`: on CUDA bf16 autocast from compute capability 8.0, else fp16
with a gradient scaler; on a CPU fp32 for Lite0, whose depthwise convolutions train slower in bf16). The plain loop is what good practice does with a dataset held in memory: one tensor of
all images on the device, a shuffled index per epoch, each batch gathered by indexing, no worker processes, no
host-device sync per step. The Learner path is fastai's DataLoader over the same cache, with tl_fastai's callbacks.

It times `--batches` training batches of each path after `--warmup` untimed ones (by default as many as one epoch
holds, at most 30, after up to 10 warm-up batches), each step timed with its data loading, validation skipped. The two
paths alternate step by step (the plain step runs from a fastai callback after each Learner batch, outside the
Learner's timed interval), so load from other processes hits both alike; img/s is batch size over the median step
time and the ratio is the median over the step pairs, which bursts of load barely move.
Usage: python bench/train_throughput.py [--size 128] [--bs 32] [--batches N] [--warmup N] [--device cpu]
"""
import argparse, math, os, statistics, tempfile, time, warnings
import torch
import torch.nn.functional as F
from fastai.callback.core import Callback, CancelFitException, CancelValidException
from tl_fastai.core import train_amp_dtype
from tl_fastai.data import cached_images, get_dls, load_source, prepare_split
from tl_fastai.models import create_model, norm_stats
from tl_fastai.train import RunConfig, build_learner

def clock(device:torch.device)->float:
    "The time once queued GPU work on `device` is done."
    if device.type == 'cuda': torch.cuda.synchronize(device)
    return time.perf_counter()

def step_counts(n_train:int, bs:int, batches:int|None=None, warmup:int|None=None)->tuple:
    "(warmup, batches): the given counts, else up to 10 warm-up batches and the rest of one epoch (at most 30) timed."
    per_epoch = n_train//bs
    if per_epoch < 2: raise SystemExit(f'{n_train} train rows give {per_epoch} batch(es) of {bs}: lower --bs.')
    warmup = min(10, per_epoch//3) if warmup is None else warmup
    return warmup, (min(30, per_epoch - warmup) if batches is None else batches)

class Interleave(Callback):
    "After each fastai training batch, one `plain` step; records both step times, skips validation, stops after `warmup + n`."
    order = 100  # after every other callback's after_batch
    def __init__(self, plain, device:torch.device, warmup:int, n:int):
        self.plain, self.device, self.warmup, self.n, self.pairs, self.i = plain, device, warmup, n, [], 0
    def before_train(self): self.t = clock(self.device)
    def before_validate(self): raise CancelValidException()
    def after_batch(self):
        if not self.training: return
        t = clock(self.device); next(self.plain); self.i, t2 = self.i + 1, clock(self.device)
        if self.i > self.warmup: self.pairs.append((t - self.t, t2 - t))
        if self.i == self.warmup + self.n: raise CancelFitException()
        self.t = t2

def stacked(cache, df)->tuple:
    "All images of `df` as one uint8 (N, 3, H, W) tensor on the cache's device, and the integer targets beside it."
    vocab = sorted(df.label.unique())
    return torch.stack([cache(p).as_subclass(torch.Tensor) for p in df.path]), torch.tensor([vocab.index(l) for l in df.label], device=cache.device)

def plain_batches(x:torch.Tensor, y:torch.Tensor, bs:int, device:torch.device):
    "Endless shuffled batches of `bs` images gathered from the tensors `x`, `y` (last partial batch dropped), on `device`."
    while True:
        idx = torch.randperm(len(x), device=x.device)
        for i in range(0, len(x) - bs + 1, bs): yield x[idx[i:i+bs]].to(device, non_blocking=True), y[idx[i:i+bs]].to(device, non_blocking=True)

def plain_optimizer(model, cfg:RunConfig, device:torch.device)->torch.optim.Optimizer:
    "torch's AdamW as the Learner's: fastai's betas and eps, decoupled weight decay, fused on a GPU, multi-tensor elsewhere."
    kern = dict(fused=True) if device.type == 'cuda' else dict(foreach=True)
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.99), eps=1e-5, weight_decay=cfg.wd, **kern)

def plain_steps(model, opt, scaler, batches, amp, mean, std):
    "Endless plain PyTorch training steps of `model` over `batches` (data loading included), yielding after each."
    model.train()
    for x, y in batches:
        x = ((x.float().div_(255) - mean)/std).contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=amp, enabled=amp is not None): loss = F.cross_entropy(model(x), y)
        scaler.scale(loss).backward(); scaler.step(opt); scaler.update(); opt.zero_grad(set_to_none=True)
        yield

def measure(df, size:int, bs:int, batches:int|None, warmup:int|None, device:torch.device)->dict:
    "Training img/s of the Learner path and the plain loop (median step times) and the median ratio of step pairs."
    cfg = RunConfig(size=size, bs=bs, augs=False)
    mean, std = norm_stats(cfg.arch)
    train = df[df.split == 'train']
    warmup, batches = step_counts(len(train), bs, batches, warmup)
    dls = get_dls(df, size=cfg.size, bs=cfg.bs, mean=mean, std=std, augs=cfg.augs, device=device)
    model = create_model(cfg.arch, len(dls.vocab), drop_rate=cfg.dropout).to(device, memory_format=torch.channels_last)
    amp = train_amp_dtype(model, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    x, y = stacked(cached_images(df.path[df.split != 'test'], size, device), train)
    stats = [torch.tensor(s, device=device).view(1, 3, 1, 1) for s in (mean, std)]
    steps = plain_steps(model, plain_optimizer(model, cfg, device), scaler, plain_batches(x, y, bs, device), amp, *stats)
    timer = Interleave(steps, device, warmup, batches)
    learn = build_learner(cfg, dls, cbs=[timer])
    with learn.no_bar(), learn.no_logging(): learn.fit(math.ceil((warmup + batches)/len(dls.train)) + 1)
    learn.remove_cb(timer)
    fa, pt = (cfg.bs/statistics.median(t) for t in zip(*timer.pairs))
    return dict(learner=fa, plain=pt, ratio=statistics.median(q/l for l, q in timer.pairs), pairs=timer.pairs, warmup=warmup,
                batches=batches, precision=(f'{amp} autocast' if amp else 'fp32') + ', channels_last',
                workers=dls.train.fake_l.num_workers, n_train=len(train), learn=learn)

class StepProfile(Callback):
    "Over `n` training batches: host-device syncs per batch over the whole loop (CUDA's sync debug mode), or the optimizer step's share."
    order = 1000  # after every other callback
    def __init__(self, device:torch.device, n:int, what:str, warned:list):
        self.device, self.n, self.what, self.warned, self.rows = device, n, what, warned, []
    def before_validate(self): raise CancelValidException()
    def before_train(self): self.w0 = len(self.warned)      # syncs are counted from here to each batch's end
    def before_batch(self):
        if self.what == 'time': self.t0, self.opt_s = clock(self.device), 0.
    def before_step(self):
        if self.what == 'time': self.ts = clock(self.device)
    def after_step(self):
        if self.what == 'time': self.opt_s += clock(self.device) - self.ts
    def after_batch(self):
        if not self.training: return
        if self.what == 'syncs': self.rows.append(len(self.warned) - self.w0); self.w0 = len(self.warned)
        else: self.rows.append(self.opt_s/(clock(self.device) - self.t0))
        if len(self.rows) == self.n: raise CancelFitException()

def profile(learn, device:torch.device, n:int=10)->dict:
    "Host-device syncs per training step (CUDA only) and the median share of a step's time spent in the optimizer step."
    res = {}
    for what in (['syncs'] if device.type == 'cuda' else []) + ['time']:
        with warnings.catch_warnings(record=True) as warned, learn.no_bar(), learn.no_logging():
            warnings.simplefilter('always')
            cb = StepProfile(device, n, what, warned)
            if what == 'syncs': torch.cuda.set_sync_debug_mode('warn')
            try: learn.fit(math.ceil(n/len(learn.dls.train)) + 1, cbs=cb)
            finally:
                if what == 'syncs': torch.cuda.set_sync_debug_mode(0)
        res[what] = statistics.median(cb.rows)
    return dict(syncs_per_step=res.get('syncs'), optimizer_share=res['time'])

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--size', type=int, default=128, help='square training image size in pixels')
    p.add_argument('--bs', type=int, default=32, help='batch size')
    p.add_argument('--batches', type=int, help='timed training batches per path (default: the rest of one epoch, at most 30)')
    p.add_argument('--warmup', type=int, help='untimed training batches per path before them (default: up to 10)')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu', help='cpu or cuda')
    a = p.parse_args()
    device = torch.device(a.device)
    with tempfile.TemporaryDirectory() as out: df = prepare_split(load_source('elpv', scan=False), out=out)
    r = measure(df, a.size, a.bs, a.batches, a.warmup, device)
    where = torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}'
    print(f'device {device} ({where}), {torch.get_num_threads()} torch threads, {r["precision"]}')
    print(f'tf_efficientnet_lite0 unfrozen, size {a.size}, batch {a.bs}; {r["batches"]} batches per path timed after '
          f'{r["warmup"]} warm-up, validation skipped; {r["n_train"]} ELPV train rows from memory, {r["workers"]} workers')
    print(f"{'step':>6} {'learner s':>9} {'plain s':>9} {'learner/plain img/s':>19}")
    for i, (l, q) in enumerate(r['pairs'], 1): print(f'{i:>6} {l:>9.3f} {q:>9.3f} {q/l:>19.3f}')
    print(f'img/s (batch / median step time): learner {r["learner"]:.1f}, plain {r["plain"]:.1f}; '
          f'ratio learner/plain (median of step pairs) {r["ratio"]:.3f} (target >= 0.9)')
    pr = profile(r['learn'], device)
    syncs = 'not measured (CPU)' if pr['syncs_per_step'] is None else f"{pr['syncs_per_step']:.0f}"
    print(f"Learner profile: host-device syncs per training step {syncs}; optimizer step {pr['optimizer_share']:.1%} of a step's time")

if __name__ == '__main__': main()

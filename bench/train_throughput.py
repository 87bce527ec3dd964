"""Training throughput on ELPV: the tl_fastai Learner (build_learner + fit) vs a plain timm + PyTorch loop.

Both train the same model (tf_efficientnet_lite0 with its offline ImageNet weights, new 2-class head, unfrozen) on
the same ELPV train rows, decoded once into memory in both paths (tl_fastai's `ImageCache`: PIL -> RGB -> resize to
`--size`, uint8; no augmentation; turned to float and normalised with the backbone's statistics on the batch; same
DataLoader worker count), with
the same batch size, Adam with decoupled weight decay (fastai's Adam; torch AdamW with fastai's betas and eps, no decay
on BatchNorm and bias parameters, as fastai does), learning rate and weight decay, the same channels-last model and the same precision (fp32 on CPU;
on CUDA bf16 autocast, or fp16 with a gradient scaler). It times `--batches`
training batches of each path after `--warmup` untimed ones, each step timed with its data loading, validation
skipped. The two paths alternate step by step (the plain step runs from a fastai callback after each Learner batch,
outside the Learner's timed interval), so load from other processes hits both alike; img/s is batch size over the
median step time and the ratio is the median over the step pairs, which bursts of load barely move.
Usage: python bench/train_throughput.py [--size 128] [--bs 32] [--batches 8] [--warmup 2] [--device cpu]
"""
import argparse, os, statistics, tempfile, time
import torch
import torch.nn.functional as F
from timm.optim import param_groups_weight_decay
from torch.utils.data import DataLoader, Dataset
from fastai.callback.core import Callback, CancelFitException
from tl_fastai.data import default_workers, get_dls, image_cache, load_source, prepare_split
from tl_fastai.models import create_model, norm_stats
from tl_fastai.train import RunConfig, build_learner

def clock(device:torch.device)->float:
    "The time once queued GPU work on `device` is done."
    if device.type == 'cuda': torch.cuda.synchronize(device)
    return time.perf_counter()

class Interleave(Callback):
    "After each fastai training batch, one `plain` step; records both step times, stops the fit before validation."
    order = 100  # after every other callback's after_batch
    def __init__(self, plain, device:torch.device, warmup:int, n:int):
        self.plain, self.device, self.warmup, self.n, self.pairs = plain, device, warmup, n, []
    def before_train(self): self.i, self.t = 0, clock(self.device)
    def after_batch(self):
        if not self.training: return
        t = clock(self.device); next(self.plain); self.i, t2 = self.i + 1, clock(self.device)
        if self.i > self.warmup: self.pairs.append((t - self.t, t2 - t))
        if self.i == self.warmup + self.n: raise CancelFitException()
        self.t = t2

class CachedDataset(Dataset):
    "Split-table rows as the uint8 CHW tensors of `cache` (filled as `get_dls` fills it) and integer targets."
    def __init__(self, df, cache):
        self.x, vocab = [cache(p) for p in df.path], sorted(df.label.unique())
        self.targets = [vocab.index(l) for l in df.label]
    def __len__(self): return len(self.x)
    def __getitem__(self, i): return self.x[i].as_subclass(torch.Tensor), self.targets[i]

def plain_steps(model, opt, scaler, dl, device:torch.device, amp, mean, std):
    "Endless plain PyTorch training steps of `model` over `dl` (data loading included), yielding after each."
    model.train()
    while True:
        for x, y in dl:
            x, y = (x.to(device).float().div_(255) - mean)/std, y.to(device)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None): loss = F.cross_entropy(model(x), y)
            scaler.scale(loss).backward(); scaler.step(opt); scaler.update(); opt.zero_grad()
            yield

def measure(df, size:int, bs:int, batches:int, warmup:int, device:torch.device)->dict:
    "Training img/s of the Learner path and the plain loop (median step times) and the median ratio of step pairs."
    cfg = RunConfig(size=size, bs=bs, augs=False)
    mean, std = norm_stats(cfg.arch)
    train, workers = df[df.split == 'train'], default_workers()
    if len(train)//bs < warmup + batches:
        raise SystemExit(f'{len(train)} train rows give {len(train)//bs} batches of {bs}: lower --warmup + --batches to at most that.')
    amp = None if device.type == 'cpu' else torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    dls = get_dls(df, size=cfg.size, bs=cfg.bs, mean=mean, std=std, augs=cfg.augs, num_workers=workers, device=device)
    model = create_model(cfg.arch, len(dls.vocab), drop_rate=cfg.dropout).to(device)
    model.to(memory_format=torch.channels_last)                      # the layout build_learner uses
    opt = torch.optim.AdamW(param_groups_weight_decay(model, cfg.wd), lr=cfg.lr, betas=(0.9, 0.99), eps=1e-5)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    dl = DataLoader(CachedDataset(train, image_cache(size)), batch_size=cfg.bs, shuffle=True, drop_last=True,
                    num_workers=workers, pin_memory=device.type == 'cuda')
    stats = [torch.tensor(s, device=device).view(1, 3, 1, 1) for s in (mean, std)]
    timer = Interleave(plain_steps(model, opt, scaler, dl, device, amp, *stats), device, warmup, batches)
    learn = build_learner(cfg, dls, cbs=[timer])
    with learn.no_bar(), learn.no_logging(): learn.fit(1)
    fa, pt = (cfg.bs/statistics.median(t) for t in zip(*timer.pairs))
    return dict(learner=fa, plain=pt, ratio=statistics.median(q/l for l, q in timer.pairs), pairs=timer.pairs,
                precision=(f'{amp} autocast' if amp else 'fp32') + ', channels_last', workers=workers, n_train=len(train))

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--size', type=int, default=128, help='square training image size in pixels')
    p.add_argument('--bs', type=int, default=32, help='batch size')
    p.add_argument('--batches', type=int, default=8, help='timed training batches per path')
    p.add_argument('--warmup', type=int, default=2, help='untimed training batches per path before them')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu', help='cpu or cuda')
    a = p.parse_args()
    device = torch.device(a.device)
    with tempfile.TemporaryDirectory() as out: df = prepare_split(load_source('elpv', scan=False), out=out)
    r = measure(df, a.size, a.bs, a.batches, a.warmup, device)
    where = torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}'
    print(f'device {device} ({where}), {torch.get_num_threads()} torch threads, {r["precision"]}')
    print(f'tf_efficientnet_lite0 unfrozen, size {a.size}, batch {a.bs}; {a.batches} batches per path timed after '
          f'{a.warmup} warm-up, validation skipped; {r["n_train"]} ELPV train rows from memory, {r["workers"]} workers')
    print(f"{'step':>6} {'learner s':>9} {'plain s':>9} {'learner/plain img/s':>19}")
    for i, (l, q) in enumerate(r['pairs'], 1): print(f'{i:>6} {l:>9.3f} {q:>9.3f} {q/l:>19.3f}')
    print(f'img/s (batch / median step time): learner {r["learner"]:.1f}, plain {r["plain"]:.1f}; '
          f'ratio learner/plain (median of step pairs) {r["ratio"]:.3f} (target >= 0.9)')

if __name__ == '__main__': main()

"""fp32 against bf16 autocast on this CPU: training and inference img/s of Lite0 and the scratch CNN.

The evidence behind `tl_fastai.core.amp_dtype` and `train_amp_dtype` on a CPU. The two precisions alternate after
warm-up on the same model and batch; medians of the timed steps. Settings are the `cpu` preset's (160 px, batch 32,
Lite0 with its first 4 stages frozen).
Usage: python bench/cpu_precision.py [--size PX] [--bs N] [--steps N] [--rounds N]
"""
import argparse, statistics, time
import torch, torch.nn.functional as F
from tl_fastai.core import cpu_has_amx
from tl_fastai.models import create_model
from tl_fastai.plan import PRESETS
from tl_fastai.train import freeze_stages

def model_for(arch:str, keep_frozen:int)->torch.nn.Module:
    "A two-class `arch` (random weights: speed only) in channels-last memory, its first `keep_frozen` stages frozen."
    m = create_model(arch, 2, pretrained=False)
    freeze_stages(m, keep_frozen)
    return m.to(memory_format=torch.channels_last)

def step_seconds(model, x, y, opt, dtype, train:bool)->float:
    "Seconds of one training step (forward, backward, AdamW) or one inference pass under autocast `dtype`."
    t = time.perf_counter()
    with torch.autocast('cpu', dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        if train: out = model(x)
        else:
            with torch.inference_mode(): model(x)
    if train: F.cross_entropy(out.float(), y).backward(); opt.step(); opt.zero_grad()
    return time.perf_counter() - t

def compare(arch:str, keep_frozen:int, size:int, bs:int, steps:int, rounds:int, train:bool)->dict:
    "img/s in fp32 and bf16 for `arch`, the precisions alternating for `rounds` rounds of `steps` steps after warm-up."
    torch.manual_seed(0)
    model = model_for(arch, keep_frozen).train(train)
    x = torch.randn(bs, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (bs,))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    secs = {None: [], torch.bfloat16: []}
    for dt in secs:
        for _ in range(3): step_seconds(model, x, y, opt, dt, train)       # warm-up: oneDNN builds its kernels
    for _ in range(rounds):
        for dt in secs: secs[dt] += [step_seconds(model, x, y, opt, dt, train) for _ in range(steps)]
    fp32, bf16 = (bs/statistics.median(secs[dt]) for dt in secs)
    return dict(model=arch, keep_frozen=keep_frozen, mode='training' if train else 'inference',
                fp32_img_s=round(fp32, 1), bf16_img_s=round(bf16, 1), ratio=round(bf16/fp32, 2))

def main():
    cpu = PRESETS['cpu']
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--size', type=int, default=cpu['size']); p.add_argument('--bs', type=int, default=cpu['bs'])
    p.add_argument('--steps', type=int, default=4); p.add_argument('--rounds', type=int, default=3)
    a = p.parse_args()
    print(f"AMX: {cpu_has_amx()}, {torch.get_num_threads()} torch threads, {a.size} px, batch {a.bs}")
    for arch, kf in (('tf_efficientnet_lite0', cpu['keep_frozen']), ('scratch_cnn', 0)):
        for train in (True, False): print(compare(arch, kf, a.size, a.bs, a.steps, a.rounds, train), flush=True)

if __name__ == '__main__': main()

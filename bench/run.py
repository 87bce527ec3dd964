"""All benchmarks in one run: data loading, training (Learner vs plain timm loop), inference, Grad-CAM, study wall time, memory.

Prints one table and writes it, with the machine description, to bench/results.md (one section per device, the
other device's section kept). Each ratio comes from one run with the two sides alternating after warm-up, as the
single-purpose scripts beside this one describe (data_loading.py, train_throughput.py, gradcam_speed.py).
Usage: python bench/run.py [--device cpu|cuda] [--size PX] [--bs N] [--study smoke[,cpu,gpu]] [--repeats N]
"""
import argparse, os, platform, re, resource, statistics, tempfile, time
from pathlib import Path
import pandas as pd, torch
import data_loading, gradcam_speed, train_throughput
from tl_fastai.core import amp_dtype, autocast
from tl_fastai.data import cached_images, default_workers, get_dls, load_source, prepare_split
from tl_fastai.models import norm_stats
from tl_fastai.study import StudyConfig, run_study
from tl_fastai.train import RunConfig, build_learner, environment

RESULTS = Path(__file__).parent/'results.md'

def machine(device:torch.device)->str:
    "One line describing the CPU, memory, threads, GPU and library versions."
    cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), platform.processor()) if os.path.exists('/proc/cpuinfo') else platform.processor()
    ram = os.sysconf('SC_PAGE_SIZE')*os.sysconf('SC_PHYS_PAGES')/2**30
    gpu = f', GPU {torch.cuda.get_device_name(device)}' if device.type == 'cuda' else ''
    env = environment()
    return (f"{cpu}, {os.cpu_count()} cores, {ram:.0f} GiB RAM, {torch.get_num_threads()} torch threads{gpu}; "
            f"torch {env['torch']}, fastai {env['fastai']}, timm {env['timm']}, Python {env['python']}")

def peak_ram_mb()->float: return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024

def peak_vram_mb(device:torch.device)->float|None:
    "Peak GPU memory allocated since the last reset (None on CPU), then reset."
    if device.type != 'cuda': return None
    mb = torch.cuda.max_memory_allocated(device)/2**20; torch.cuda.reset_peak_memory_stats(device)
    return mb

def plain_inference(model, x:torch.Tensor, bs:int, mean, std)->torch.Tensor:
    "Class probabilities of `model` over the uint8 images `x` in batches of `bs`: a plain inference_mode loop on the device."
    m, s = (torch.tensor(v, device=x.device).view(1, 3, 1, 1) for v in (mean, std))
    model.eval()
    with torch.inference_mode(), autocast(x.device):
        out = [model(((xb.float()/255 - m)/s).contiguous(memory_format=torch.channels_last)).float().softmax(1) for xb in x.split(bs)]
    return torch.cat(out).cpu()

def inference_ips(df, size:int, bs:int, device:torch.device, repeats:int)->dict:
    "img/s of Learner.get_preds (tl_fastai's Learner, GPU speed-ups on CUDA) and of a plain loop, same model and images, medians of repeats."
    cfg = RunConfig(size=size, bs=bs, augs=False)
    mean, std = norm_stats(cfg.arch)
    learn = build_learner(cfg, get_dls(df, size=size, bs=bs, mean=mean, std=std, augs=False, device=device))
    dl = learn.dls.test_dl(df, with_labels=True)
    x, _ = train_throughput.stacked(cached_images(df.path, size, device), df)
    def timed(fn):
        t = train_throughput.clock(device); fn(); return train_throughput.clock(device) - t
    sides = dict(learner=lambda: learn.get_preds(dl=dl), plain=lambda: plain_inference(learn.model, x, bs, mean, std))
    with learn.no_bar():
        for f in sides.values(): f()
        secs = {k: [] for k in sides}
        for _ in range(repeats):
            for k, f in sides.items(): secs[k].append(timed(f))
    return {k: len(df)/statistics.median(v) for k, v in secs.items()}

def study_seconds(preset:str)->tuple:
    "Wall seconds and test accuracy of the baseline of a complete study run with `preset` in a temporary folder."
    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter(); res = run_study(StudyConfig(preset=preset, out=out), log=None)
        return time.perf_counter() - t, res['runs']['baseline_pretrained']['test']['accuracy']

def saved_study(path:Path)->dict|None:
    "Preset, wall seconds and device of a finished study.json, if there is one."
    if not path.exists(): return None
    import json; s = json.loads(path.read_text())
    return dict(preset=s['config']['preset'], seconds=s['wall_times']['total_s'], device=s['device'])

def row(bench, setting, ours, peer=None, unit='', ratio=None)->dict:
    "One table row; the ratio is ours/peer unless given."
    return dict(benchmark=bench, setting=setting, tl_fastai=ours, peer=peer, unit=unit,
                ratio=ratio if ratio is not None else (ours/peer if peer else None))

def markdown(table:pd.DataFrame)->str:
    "A pipe table of `table`, numbers to 3 significant digits, empty cells for missing values."
    cell = lambda v: '' if v is None or v != v else f'{v:.3g}' if isinstance(v, float) else str(v)
    lines = ['| ' + ' | '.join(table.columns) + ' |', '|' + '---|'*len(table.columns)]
    return '\n'.join(lines + ['| ' + ' | '.join(map(cell, r)) + ' |' for r in table.itertuples(index=False)])

def write_results(device:torch.device, desc:str, table:pd.DataFrame, cmd:str):
    "Replace this device's section of bench/results.md, keeping the others."
    old = RESULTS.read_text() if RESULTS.exists() else '# Benchmark results\n'
    sections = dict(re.findall(r'(?ms)^## (\w+)\n(.*?)(?=^## |\Z)', old))
    sections[device.type] = f"Machine: {desc}\n\nCommand: `{cmd}` ({time.strftime('%Y-%m-%d')})\n\n{markdown(table)}\n\n"
    RESULTS.write_text('# Benchmark results\n\nWritten by `python bench/run.py`; figures, not tests.\n\n' +
                       ''.join(f'## {k}\n{v}' for k, v in sorted(sections.items())))

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu', help='cpu or cuda')
    p.add_argument('--size', type=int, help='image size in pixels (default: 128 on CPU, 224 on CUDA)')
    p.add_argument('--bs', type=int, help='batch size (default: 32 on CPU, 64 on CUDA)')
    p.add_argument('--study', default='smoke', help="comma-separated presets whose complete study is timed ('' for none)")
    p.add_argument('--repeats', type=int, default=3, help='timed repeats (epochs, passes) per side; medians reported')
    a = p.parse_args()
    device = torch.device(a.device)
    if device.type == 'cuda' and not torch.cuda.is_available(): raise SystemExit('--device cuda was asked for but CUDA is not available: use --device cpu.')
    gpu = device.type == 'cuda'
    size, bs = a.size or (224 if gpu else 128), a.bs or (64 if gpu else 32)
    desc = machine(device)
    print(desc, flush=True)
    with tempfile.TemporaryDirectory() as out: df = prepare_split(load_source('elpv', scan=False), out=out)
    rows = []
    def add(r):
        rows.append(r); print(' | '.join(f'{v:.3g}' if isinstance(v, float) else str(v) for v in r.values()), flush=True)

    dl = data_loading.measure(df, size, bs, default_workers(), a.repeats)
    for k in ('tl_fastai cached', 'tl_fastai decoding'):
        add(row('DataLoader, train epoch with augmentation', f'{k} vs torchvision, {size} px, bs {bs}', dl[k][0], dl['torchvision'][0], 'img/s'))
    tr = train_throughput.measure(df, size, bs, batches=None if gpu else 24, warmup=None if gpu else 4, device=device)
    add(row('Training, Lite0 unfrozen', f"Learner vs plain timm loop, {size} px, bs {bs}, {tr['precision']}, {tr['batches']} steps",
            tr['learner'], tr['plain'], 'img/s', tr['ratio']))
    pr = train_throughput.profile(tr['learn'], device)
    if pr['syncs_per_step'] is not None: add(row('Training profile', 'host-device syncs per Learner training step', pr['syncs_per_step'], unit='syncs'))
    add(row('Training profile', "optimizer step's share of a Learner training step", pr['optimizer_share'], unit='share'))
    inf = inference_ips(df, size, bs*2, device, a.repeats)
    prec = str(amp_dtype(device) or torch.float32).removeprefix('torch.')
    add(row('Inference, Lite0', f'Learner.get_preds vs plain inference_mode loop, all {len(df)} images, {size} px, bs {bs*2}, {prec}',
            inf['learner'], inf['plain'], 'img/s'))
    for arch, n in (('tf_efficientnet_lite0', 16), ('scratch_cnn', 16)):
        ms = gradcam_speed.measure(arch, 224, n, a.repeats, a.device)
        add(row('Grad-CAM', f'{arch}, 224 px, batch {n}, vs pytorch-grad-cam', ms['ours'], ms['theirs'], 'ms/image'))
    vram = peak_vram_mb(device)
    for preset in filter(None, a.study.split(',')):
        secs, acc = study_seconds(preset)
        add(row('Complete study', f'{preset} preset, fresh folder (baseline test accuracy {acc:.3f})', secs/60, unit='min'))
    saved = saved_study(Path('saved_models/study.json'))
    if saved: add(row('Complete study', f"{saved['preset']} preset, from saved_models/study.json ({saved['device']})", saved['seconds']/60, unit='min'))
    add(row('Peak memory', 'RAM (max RSS of this process)', peak_ram_mb(), unit='MB'))
    if gpu: add(row('Peak memory', 'VRAM (max allocated, benchmarks before the study)', vram, unit='MB'))
    table = pd.DataFrame(rows)
    cmd = 'python bench/run.py' + (f' --device {a.device}' if a.device != 'cpu' else '') + (f' --study {a.study}' if a.study != 'smoke' else '')
    write_results(device, desc, table, cmd)
    print(f'\n{table.to_string(index=False, float_format=lambda v: f"{v:.3g}")}\n\nWritten to {RESULTS}')

if __name__ == '__main__': main()

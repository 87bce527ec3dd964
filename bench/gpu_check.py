"""The GPU check in one call, in this order: the CUDA tests, the smoke study, the `gpu` preset study (wall time and test
accuracy from its study.json), and `bench/run.py --device cuda` (Learner/plain training and inference, img/s, peak
VRAM). Each step runs in its own process (a crash or a timeout in one leaves the others' figures) and the figures go,
after every step, to one file (default bench/results/gpu_check.md), with the targets beside them.

Without CUDA the CPU-safe parts run and the others are named as skipped: the CUDA tests are collected (they skip
themselves), the smoke study runs on the CPU (minutes on 2 cores; `--no-smoke` leaves it out), the `gpu` study and
`bench/run.py --device cuda` need CUDA.
Usage: python bench/gpu_check.py [--out bench/results/gpu_check.md] [--no-smoke] [--timeout S]
"""
import argparse, json, os, platform, re, subprocess, sys, tempfile, time
from pathlib import Path
import torch

ROOT = Path(__file__).resolve().parent.parent
TARGETS = dict(learner_plain=0.9, inference_ips=10_000, inference_plain=0.9, gpu_study_s=75, best_pretrained_acc=0.90)

def run(cmd:list, timeout:int)->dict:
    "Run `cmd` from the repository root; return its exit code, wall seconds and the tail of its output."
    t = time.perf_counter()
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(filter(None, [str(ROOT), os.environ.get('PYTHONPATH')]))}
    try:
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
        rc, out = r.returncode, r.stdout + r.stderr
    except subprocess.TimeoutExpired as e:
        out = e.stdout or ''
        rc, out = 'timeout', out.decode(errors='replace') if isinstance(out, bytes) else out
    return dict(rc=rc, seconds=round(time.perf_counter() - t, 1), tail=out[-2500:])

def pytest_counts(tail:str)->dict:
    "passed/failed/skipped/error counts from pytest's last line."
    return {k: int(n) for n, k in re.findall(r'(\d+) (passed|failed|skipped|errors?)', tail)}

def study(preset:str, out:Path, timeout:int)->dict:
    "A complete study with `preset` into a fresh `out` by the command line; figures read back from its study.json."
    r = run([sys.executable, '-m', 'tl_fastai.cli', 'study', '--preset', preset, '--out', str(out)], timeout)
    f = out/'study.json'
    if r['rc'] != 0 or not f.exists(): return dict(r, done=False)
    s = json.loads(f.read_text())
    bp = s['best_pretrained']
    return dict(r, done=True, device=s['device'], total_s=s['wall_times']['total_s'], wall_times=s['wall_times'],
                baseline_acc=s['runs']['baseline_pretrained']['test']['accuracy'], best_pretrained=bp['name'],
                best_pretrained_acc=bp['test']['accuracy'], epochs=s['runs']['baseline_pretrained']['config']['epochs'])

def bench_rows(md:str)->list:
    "The cuda section's table rows of bench/results.md as lists of cells."
    sec = re.search(r'(?ms)^## cuda\n(.*?)(?=^## |\Z)', md)
    return [[c.strip() for c in l.strip('|').split('|')] for l in (sec.group(1) if sec else '').splitlines()
            if l.startswith('| ') and not l.startswith('| benchmark')]

def report(steps:dict, cuda:bool)->str:
    "The markdown file: machine, each step's figures and status, the targets."
    dev = torch.cuda.get_device_name(0) if cuda else f'no CUDA ({os.cpu_count()} CPU cores)'
    lines = [f'# GPU check', '', f"{time.strftime('%Y-%m-%d %H:%M')}; {dev}; torch {torch.__version__}, "
             f"Python {platform.python_version()}. Command: `python bench/gpu_check.py`", '',
             '| step | status | figure | target |', '|---|---|---|---|']
    for name, s in steps.items():
        if s.get('skipped'): lines.append(f"| {name} | skipped: {s['skipped']} | | |"); continue
        ok = 'ok' if s['rc'] == 0 else f"failed (exit {s['rc']})"
        for fig, target in s.get('figures', [(f"{s['seconds']:.0f} s", '')]):
            lines.append(f'| {name} | {ok} | {fig} | {target} |')
    for name, s in steps.items():
        if s.get('rows'):
            lines += ['', f'`bench/run.py --device cuda` table ({name}):', '', '| ' + ' | '.join(
                ['benchmark', 'setting', 'tl_fastai', 'peer', 'unit', 'ratio']) + ' |', '|---|---|---|---|---|---|']
            lines += ['| ' + ' | '.join(r) + ' |' for r in s['rows']]
    for name, s in steps.items():
        if not s.get('skipped') and s['rc'] != 0: lines += ['', f'{name} output (tail):', '', '```', s['tail'], '```']
    return '\n'.join(lines) + '\n'

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--out', default=str(ROOT/'bench'/'results'/'gpu_check.md'), help='the figures file')
    p.add_argument('--no-smoke', action='store_true', help='leave the smoke study out (it runs on a CPU too, slowly)')
    p.add_argument('--timeout', type=int, default=600, help='seconds each step may take')
    a = p.parse_args()
    cuda, out, steps = torch.cuda.is_available(), Path(a.out), {}
    out.parent.mkdir(parents=True, exist_ok=True)
    def save(): out.write_text(report(steps, cuda)); print(f'-> {out}', flush=True)
    need = 'needs CUDA'

    s = run([sys.executable, '-m', 'pytest', '-q', '-rs', 'tests/test_cuda.py'], a.timeout)
    c = pytest_counts(s['tail'])
    s['figures'] = [(', '.join(f'{n} {k}' for k, n in c.items()) + f", {s['seconds']:.0f} s",
                     'all passed' if cuda else 'all skipped without CUDA')]
    if not cuda and c.get('skipped') and not c.get('failed'): s['rc'] = 0
    steps['CUDA tests (tests/test_cuda.py)'] = s; save()

    with tempfile.TemporaryDirectory() as tmp:
        if a.no_smoke: steps['smoke study'] = dict(skipped='--no-smoke')
        else:
            s = study('smoke', Path(tmp)/'smoke', a.timeout)
            if s['done']: s['figures'] = [(f"{s['total_s']:.0f} s in study.json ({s['seconds']:.0f} s with start-up), "
                                           f"baseline test accuracy {s['baseline_acc']:.3f}, on {s['device']}", 'runs clean')]
            steps['smoke study'] = s
        save()
        if not cuda: steps['gpu preset study'] = dict(skipped=need)
        else:
            s = study('gpu', Path(tmp)/'gpu', a.timeout)
            if s['done']:
                s['figures'] = [(f"{s['total_s']:.1f} s in study.json ({s['seconds']:.0f} s with start-up), "
                                 f"{s['epochs']} epochs",
                                 f"<= {TARGETS['gpu_study_s']} s on an H100/H200: {s['total_s'] <= TARGETS['gpu_study_s']}"),
                                (f"best pretrained {s['best_pretrained']}: test accuracy {s['best_pretrained_acc']:.3f}; "
                                 f"baseline {s['baseline_acc']:.3f}", f">= {TARGETS['best_pretrained_acc']:.2f}: "
                                 f"{s['best_pretrained_acc'] >= TARGETS['best_pretrained_acc']}"),
                                ('wall times: ' + ', '.join(f'{k} {v}' for k, v in s['wall_times'].items()), '')]
            steps['gpu preset study'] = s
        save()
    if not cuda: steps['bench/run.py --device cuda'] = dict(skipped=need)
    else:
        s = run([sys.executable, 'bench/run.py', '--device', 'cuda', '--study', ''], a.timeout)
        s['rows'] = bench_rows((ROOT/'bench'/'results.md').read_text()) if s['rc'] == 0 else []
        figs = []
        for r in s['rows']:
            if r[0].startswith('Training, Lite0'):
                figs.append((f'training Learner/plain {r[5]} ({r[2]} vs {r[3]} img/s)', f">= {TARGETS['learner_plain']}"))
            if r[0].startswith('Inference'):
                figs.append((f'inference {r[2]} img/s, Learner/plain {r[5]}',
                             f">= {TARGETS['inference_ips']} img/s, >= {TARGETS['inference_plain']}"))
            if r[1].startswith('VRAM'): figs.append((f'peak VRAM {r[2]} MB', ''))
        s['figures'] = figs or [(f"{s['seconds']:.0f} s", '')]
        steps['bench/run.py --device cuda'] = s
    save()
    print(out.read_text())

if __name__ == '__main__': main()

"""Prediction speed: `Predictor.predict` vs a plain torch.inference_mode loop, and onnxruntime vs PyTorch on the CPU.

1. Files to probabilities, img/s: `tl_fastai.predict.Predictor.predict` (study transforms, decoding in threads one
   batch ahead) against a plain loop a user would write (PIL decode, torchvision resize, crop, normalise, model under
   `torch.inference_mode`), same run, same images, same batch size; the two alternate, median of the repeats.
2. The model alone on the CPU, PyTorch (`ProbabilityModel` under inference_mode) against onnxruntime running the
   file `export_onnx` wrote: batch-1 latency (median ms) and batch-64 throughput (img/s).
The model is one run without test-time augmentation (the same work for every contestant); the study is `--out`, or
a smoke study trained at `--size` px into a temporary folder.
On a CPU shared with other work, pass --threads 1: torch's two spinning threads wait on each other when the cores are
busy (a 64 px Lite0 batch of one took 2.2 s with 2 threads against 75 ms with 1 on a loaded 2-core machine).
Usage: python bench/predict_speed.py [--out STUDY] [--size 160] [--images 256] [--bs 64] [--repeats 3] [--threads N]
"""
import argparse, tempfile
from pathlib import Path
import numpy as np, torch
from PIL import Image
from torchvision.transforms import v2 as T
from tl_fastai.core import BASELINE, amp_dtype
from tl_fastai.data import elpv_table
from tl_fastai.predict import Predictor, ProbabilityModel, export_onnx
from tl_fastai.study import StudyConfig, run_study

from timing import timed

def plain_loop(model, files:list, size:int, px:int, mean, std, bs:int)->np.ndarray:
    "Probabilities the usual way: PIL, torchvision transforms, batches of `bs`, `torch.inference_mode`."
    tf = T.Compose([T.PILToTensor(), T.Resize(px), T.CenterCrop(px), T.Resize(size),
                    T.ToDtype(torch.float32, scale=True), T.Normalize(mean, std)])
    out = []
    with torch.inference_mode():
        for i in range(0, len(files), bs):
            x = torch.stack([tf(Image.open(f).convert('RGB')) for f in files[i:i + bs]])
            out.append(model(x.contiguous(memory_format=torch.channels_last)).softmax(1))
    return torch.cat(out).numpy()

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--out', help='a finished study folder (default: a smoke study at --size px, trained now)')
    p.add_argument('--size', type=int, default=160, help='image size of the smoke study (default: 160, the cpu preset)')
    p.add_argument('--images', type=int, default=256, help='ELPV images to predict (default: 256)')
    p.add_argument('--bs', type=int, default=64, help='batch size (default: 64)')
    p.add_argument('--repeats', type=int, default=3, help='timed runs of each (median reported)')
    p.add_argument('--threads', type=int, help="CPU threads of torch and onnxruntime alike (default: torch's)")
    a = p.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    tmp = Path(tempfile.mkdtemp())
    out = Path(a.out) if a.out else tmp/'study'
    if not a.out: run_study(StudyConfig(preset='smoke', size=a.size, out=str(out)), log=None)
    pr = Predictor(out, model=BASELINE, device='cpu', bs=a.bs)
    m, model = pr.meta, pr.models[0]
    files = list(elpv_table().path[:a.images])
    px = round(m['size']*1.25) if m['config']['augs'] is not False else m['size']
    amp = amp_dtype('cpu')
    print(f"{m['arch']} at {m['size']} px ({len(files)} ELPV images, batch {a.bs}), cpu with {torch.get_num_threads()} "
          f"torch threads, {'fp32' if amp is None else str(amp).removeprefix('torch.') + ' autocast in predict'}; "
          f"median of {a.repeats} after a warm-up")
    t = timed(dict(predict=lambda: pr.predict(files),
                   plain=lambda: plain_loop(model, files, m['size'], px, m['mean'], m['std'], a.bs)), a.repeats)
    ips = {k: len(files)/v for k, v in t.items()}
    print(f"files -> probabilities, Predictor.predict:      {ips['predict']:8.1f} img/s")
    print(f"files -> probabilities, plain inference loop:   {ips['plain']:8.1f} img/s")
    print(f"ratio predict/plain: {ips['predict']/ips['plain']:.2f}x (target >= 0.9x)")

    facts = export_onnx(out, BASELINE, tmp/'model.onnx')
    import onnxruntime as ort
    so = ort.SessionOptions(); so.intra_op_num_threads = torch.get_num_threads()
    sess = ort.InferenceSession(str(tmp/'model.onnx'), so, providers=['CPUExecutionProvider'])
    net = ProbabilityModel([model]).eval()
    x = pr.batch_tfm(torch.stack([pr.load(f) for f in files[:a.bs]])).float().contiguous()
    def torch_run(b):
        with torch.inference_mode(): net(b.contiguous(memory_format=torch.channels_last))
    x1, x1n, xn = x[:1], x[:1].numpy(), x.numpy()
    lat = timed(dict(torch=lambda: [torch_run(x1) for _ in range(20)],
                     onnx=lambda: [sess.run(None, {'image': x1n}) for _ in range(20)]), a.repeats)
    thr = timed(dict(torch=lambda: torch_run(x), onnx=lambda: sess.run(None, {'image': xn})), a.repeats)
    ms, tp = {k: 1000*v/20 for k, v in lat.items()}, {k: len(x)/v for k, v in thr.items()}
    print(f"ONNX file {facts['mb']} MB, largest probability difference from PyTorch {facts['max_abs_diff']:.1e} "
          f"on {facts['n_images']} test images")
    print(f"batch 1 latency,   PyTorch CPU:  {ms['torch']:8.2f} ms   onnxruntime CPU: {ms['onnx']:8.2f} ms   "
          f"ratio onnx/torch {ms['onnx']/ms['torch']:.2f}x")
    print(f"batch {len(x)} throughput, PyTorch CPU: {tp['torch']:8.1f} img/s onnxruntime CPU: {tp['onnx']:8.1f} img/s "
          f"ratio onnx/torch {tp['onnx']/tp['torch']:.2f}x")

if __name__ == '__main__': main()

"""Grad-CAM speed: tl_fastai.gradcam.grad_cam vs pytorch_grad_cam.GradCAM on the same model, layer and targets.

Prints milliseconds per image (median of repeats after a warm-up; the two alternate, so load from other processes
hits both alike) for both and the ratio ours/theirs.
Usage: python bench/gradcam_speed.py [--size 224] [--batch 32] [--arch tf_efficientnet_lite0] [--repeats 5]
"""
import argparse, statistics, time
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from tl_fastai.gradcam import grad_cam, eval_logits
from tl_fastai.models import cam_layer, create_model

def timed(fns:dict, repeats:int)->dict:
    "Median wall time in seconds of each function over `repeats` runs, after one warm-up each; runs alternate."
    for fn in fns.values(): fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter(); fn(); times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--size', type=int, default=224, help='square input size in pixels')
    p.add_argument('--batch', type=int, default=32, help='images per batch')
    p.add_argument('--arch', default='tf_efficientnet_lite0', help="timm model name or 'scratch_cnn'")
    p.add_argument('--repeats', type=int, default=5, help='timed runs per implementation (median reported)')
    a = p.parse_args()
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    torch.manual_seed(0)
    model = create_model(a.arch, 10, pretrained=False).to(device).eval()
    layer, x = cam_layer(model), torch.randn(a.batch, 3, a.size, a.size, device=device)
    targets = eval_logits(model, x).argmax(1)
    sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
    def ours(): grad_cam(model, x, layer, targets); sync()
    def theirs():
        with GradCAM(model=model, target_layers=[layer]) as cam: cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets])
        sync()
    t = timed(dict(ours=ours, theirs=theirs), a.repeats)
    t_ours, t_theirs = t['ours'], t['theirs']
    name = torch.cuda.get_device_name() if device == 'cuda' else f'cpu, {torch.get_num_threads()} torch threads'
    print(f'{a.arch}, batch {a.batch}, {a.size} px, median of {a.repeats} after warm-up; device: {name}')
    print(f'ours (tl_fastai.gradcam.grad_cam):  {1000 * t_ours / a.batch:8.2f} ms/image')
    print(f'theirs (pytorch_grad_cam.GradCAM):  {1000 * t_theirs / a.batch:8.2f} ms/image')
    print(f'ratio ours/theirs: {t_ours / t_theirs:.2f}x (target <= 1.0x)')

if __name__ == '__main__': main()

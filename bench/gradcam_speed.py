"""Grad-CAM speed: tl_fastai.gradcam.grad_cam vs pytorch_grad_cam.GradCAM on the same model, layer and targets.

Prints milliseconds per image (median of repeats after a warm-up; the two alternate, so load from other processes
hits both alike) for both and the ratio ours/theirs.
Usage: python bench/gradcam_speed.py [--size 224] [--batch 32] [--arch tf_efficientnet_lite0] [--repeats 5]
"""
import argparse
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from tl_fastai.gradcam import grad_cam, eval_logits
from tl_fastai.models import cam_layer, create_model

from timing import timed

def measure(arch:str, size:int, batch:int, repeats:int, device:str)->dict:
    "Median ms per image of our Grad-CAM and pytorch-grad-cam on `batch` random images (same model, layer, targets)."
    torch.manual_seed(0)
    model = create_model(arch, 10, pretrained=False).to(device).eval()
    layer, x = cam_layer(model), torch.randn(batch, 3, size, size, device=device)
    targets = eval_logits(model, x).argmax(1)
    sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
    def ours(): grad_cam(model, x, layer, targets); sync()
    def theirs():
        with GradCAM(model=model, target_layers=[layer]) as cam: cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets])
        sync()
    return {k: 1000*v/batch for k, v in timed(dict(ours=ours, theirs=theirs), repeats).items()}

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--size', type=int, default=224, help='square input size in pixels')
    p.add_argument('--batch', type=int, default=32, help='images per batch')
    p.add_argument('--arch', default='tf_efficientnet_lite0', help="timm model name or 'scratch_cnn'")
    p.add_argument('--repeats', type=int, default=5, help='timed runs per implementation (median reported)')
    a = p.parse_args()
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    ms = measure(a.arch, a.size, a.batch, a.repeats, device)
    name = torch.cuda.get_device_name() if device == 'cuda' else f'cpu, {torch.get_num_threads()} torch threads'
    print(f'{a.arch}, batch {a.batch}, {a.size} px, median of {a.repeats} after warm-up; device: {name}')
    print(f'ours (tl_fastai.gradcam.grad_cam):  {ms["ours"]:8.2f} ms/image')
    print(f'theirs (pytorch_grad_cam.GradCAM):  {ms["theirs"]:8.2f} ms/image')
    print(f'ratio ours/theirs: {ms["ours"]/ms["theirs"]:.2f}x (target <= 1.0x)')

if __name__ == '__main__': main()

"""DataLoader throughput on ELPV: tl_fastai.data.get_dls (in-memory cache, and decoding every epoch) vs a plain torchvision Dataset + DataLoader.

The tl_fastai loaders decode each PNG once into memory (cached) or every epoch; torchvision decodes every epoch. All
decode each PNG to RGB, resize to round(size*1.25), flip/rotate by 90 degrees, jitter brightness/contrast, bring
the image to `size` with a small random zoom and normalise with (0.5, 0.5). Epochs over the train split alternate
between the two, so load from other processes hits both alike; the first batch of each epoch (worker start-up) is
left out of img/s, the epoch time includes it.
Usage: python bench/data_loading.py [--sizes 128,224] [--bs 64] [--workers 0,2] [--epochs 1]
"""
import argparse, os, tempfile, time
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2
from tl_fastai.data import default_augs, get_dls, load_source, prepare_split

class ElpvDataset(Dataset):
    "ImageFolder-style dataset over the rows of a split table: PIL decode, RGB, torchvision v2 transforms."
    def __init__(self, df, tfm):
        self.paths, self.tfm = df.path.tolist(), tfm
        vocab = sorted(df.label.unique())
        self.targets = [vocab.index(l) for l in df.label]
    def __len__(self): return len(self.paths)
    def __getitem__(self, i):
        with Image.open(self.paths[i]) as im: return self.tfm(im.convert('RGB')), self.targets[i]

def torchvision_tfms(size:int, presize:float=1.25)->v2.Compose:
    "Torchvision v2 pipeline matching `get_dls` with `default_augs('elpv')`: presize, dihedral, lighting, zoom, normalise."
    return v2.Compose([v2.Resize(round(size*presize)), v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(),
                       v2.RandomChoice([v2.RandomRotation((a, a)) for a in (0, 90, 180, 270)]),
                       v2.ColorJitter(brightness=0.3, contrast=0.3),
                       v2.RandomResizedCrop(size, scale=(1/1.05**2, 1.), ratio=(1., 1.)),
                       v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5]*3, [0.5]*3)])

def time_epoch(dl)->tuple:
    "(images after the first batch, seconds after the first batch, seconds for the whole epoch) of one pass over `dl`."
    t0 = time.perf_counter(); n = 0
    for i, (x, _) in enumerate(dl):
        if i == 0: t1 = time.perf_counter()
        else: n += len(x)
    t2 = time.perf_counter()
    return n, t2 - t1, t2 - t0

def alternate(loaders:dict, epochs:int)->dict:
    "Per loader: (img/s after warm-up batches, mean epoch seconds) over `epochs` alternating epochs."
    tot = {k: [0, 0., 0.] for k in loaders}
    for _ in range(epochs):
        for k, dl in loaders.items(): tot[k] = [a + b for a, b in zip(tot[k], time_epoch(dl))]
    return {k: (n/s, e/epochs) for k, (n, s, e) in tot.items()}

def measure(df, size:int, bs:int, workers:int, epochs:int)->dict:
    "img/s and s/epoch over the train rows: tl_fastai cached, tl_fastai decoding every epoch, plain torchvision."
    train = df[df.split == 'train'].reset_index(drop=True)
    kw = dict(size=size, bs=bs, augs=default_augs('elpv'), num_workers=workers)
    tv = DataLoader(ElpvDataset(train, torchvision_tfms(size)), batch_size=bs, shuffle=True, drop_last=True, num_workers=workers)
    return alternate({'tl_fastai cached': get_dls(df, **kw).train, 'tl_fastai decoding': get_dls(df, cache=False, **kw).train,
                      'torchvision': tv}, epochs)

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--sizes', default='128,224', help='comma-separated final image sizes in pixels')
    p.add_argument('--bs', type=int, default=64, help='batch size')
    p.add_argument('--workers', default='0,2', help='comma-separated num_workers values')
    p.add_argument('--epochs', type=int, default=1, help='timed epochs per loader and setting')
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as out: df = prepare_split(load_source('elpv', scan=False), out=out)
    print(f'ELPV: {len(df)} images, {(df.split == "train").sum()} train, bs {a.bs}, {a.epochs} epoch(s) each; '
          f'{torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs')
    print(f"{'size':>4} {'workers':>7} {'loader':>18} {'img/s':>8} {'s/epoch':>8} {'vs torchvision':>14}")
    for size in map(int, a.sizes.split(',')):
        for nw in map(int, a.workers.split(',')):
            r = measure(df, size, a.bs, nw, a.epochs)
            for k, (ips, ep) in r.items():
                print(f'{size:>4} {nw:>7} {k:>18} {ips:>8.1f} {ep:>8.1f} {ips/r["torchvision"][0]:>14.2f}', flush=True)

if __name__ == '__main__': main()

"""`tl-fastai predict` and `tl-fastai export` on a real smoke study: parity with the study's evaluation, bad input."""
import json, shutil, subprocess, sys
from pathlib import Path
from unittest import mock

import numpy as np, pandas as pd, pytest, torch
from PIL import Image
from tl_fastai.cli import main
from tl_fastai.core import BEST_CKPT, SPLIT_CSV, TEST_PREDICTIONS, atomic_save
from tl_fastai.data import load_source, read_split
from tl_fastai.predict import Predictor, onnx_session, study_test_images
from tl_fastai.study import StudyConfig, run_predictions, run_study

CLI = Path(sys.executable).with_name('tl-fastai')

def fp32_only():
    "No bf16 autocast on a CPU with AMX: exact comparisons in fp32."
    return mock.patch('torch.cpu._is_amx_tile_supported', return_value=False)

@pytest.fixture(scope='session')
def study(tmp_path_factory):
    "A finished smoke study (fp32), built once per session."
    out = tmp_path_factory.mktemp('predict')/'study'
    with fp32_only(): run_study(StudyConfig(preset='smoke', out=str(out)), log=None)
    return out

@pytest.fixture(scope='session')
def reference(study):
    "The study's own evaluation of its chosen model on the test rows (`run_predictions`, fp32)."
    res = json.loads((study/'study.json').read_text())
    name = res['best_pretrained']['name']
    run, _, views = name.partition(' + tta')
    split = read_split(study/SPLIT_CSV).merge(load_source('elpv', scan=False)[['file', 'path']], on='file')
    with fp32_only(): ref = run_predictions(study/run, split, tta=int(views or 1))
    return dict(name=name, run=run, probs=ref['test'], classes=ref['classes'], epoch=ref['best_epoch'] + 1)

def cli(capsys, *args):
    "Run `tl-fastai` in this process (fp32); (exit status, stdout, stderr)."
    with fp32_only(): rc = main([str(a) for a in args])
    o = capsys.readouterr()
    return rc, o.out, o.err

def prob_cols(classes): return [f'prob_{c}' for c in classes]

def test_csv_equals_study_test_predictions(study, reference, tmp_path, capsys):
    test = study_test_images(study)
    rc, out, err = cli(capsys, 'predict', *test.path, '--out', study, '--csv', tmp_path/'p.csv')
    assert rc == 0, err
    df = pd.read_csv(tmp_path/'p.csv')
    assert list(df.columns) == ['file', 'pred', *prob_cols(reference['classes']), 'model', 'epoch']
    assert list(df.file) == list(test.path)
    np.testing.assert_allclose(df[prob_cols(reference['classes'])].values, reference['probs'], rtol=0, atol=1e-5)
    stored = pd.read_csv(study/TEST_PREDICTIONS)
    assert list(df.pred) == list(stored[f"pred_{reference['name']}"])
    assert set(df.model) == {reference['name']} and set(df.epoch) == {reference['epoch']}
    assert f"Wrote {tmp_path/'p.csv'}: {len(test)} images" in out

def test_api_path_folder_glob_pil_batch(study, reference, tmp_path):
    test = study_test_images(study)
    for p in test.path: shutil.copy(p, tmp_path)
    with fp32_only():
        pr = Predictor(study)
        assert (pr.name, pr.epoch) == (reference['name'], reference['epoch'])
        folder, glob = pr.predict(tmp_path), pr.predict(str(tmp_path/'*.png'))
        order = [sorted(test.path, key=lambda p: Path(p).name).index(p) for p in test.path]
        np.testing.assert_allclose(folder[prob_cols(pr.classes)].values[order], reference['probs'], atol=1e-5)
        pd.testing.assert_frame_equal(folder, glob)
        one = pr.predict(Image.open(test.path[0]))
        batch = pr.predict([Image.open(p) for p in test.path])
        single = pr.predict(test.path[0])
    assert len(one) == 1 and one.file[0] == test.path[0] and single.file[0] == test.path[0]
    np.testing.assert_allclose(batch[prob_cols(pr.classes)].values, reference['probs'], atol=1e-5)
    np.testing.assert_allclose(one[prob_cols(pr.classes)].values, reference['probs'][:1], atol=1e-5)
    scratch = Predictor(study, model='cnn_scratch')
    assert (scratch.tta, scratch.runs) == (1, ['cnn_scratch']) and set(scratch.predict(tmp_path).model) == {'cnn_scratch'}

def test_progress_lines_and_gradcam(study, tmp_path, capsys):
    test = study_test_images(study)
    rc, out, err = cli(capsys, 'predict', *test.path, '--out', study, '--csv', tmp_path/'p.csv', '--every', 3,
                       '--bs', 2, '--gradcam', tmp_path/'gc')
    assert rc == 0, err
    n = len(test)
    done = [min(k, n) for k in range(2, n + 2, 2)]                  # images done after each batch of 2
    want = [f'predicted {k}/{n} images' for k, b in zip(done, [0, *done]) if k//3 > b//3 or k == n]
    assert [l for l in out.splitlines() if l.startswith('predicted')] == want and len(want) >= 2
    facts = pd.read_csv(tmp_path/'gc'/'gradcam.csv')
    assert list(facts.file) == list(test.path) and len(list((tmp_path/'gc').glob('*.png'))) == n
    heat = facts.filter(like='heat_').sum(axis=1)
    assert ((heat > 0) == ~facts.map_empty).all() and (~facts.map_empty).any()   # an empty map is flagged, never silent

def test_onnx_export_matches_pytorch(study, reference, tmp_path, capsys):
    import onnx
    f = tmp_path/'model.onnx'
    rc, out, err = cli(capsys, 'export', '--format', 'onnx', '--out', study, '--path', f)
    assert rc == 0, err and f.exists()
    meta = {p.key: p.value for p in onnx.load(str(f)).metadata_props}
    assert json.loads(meta['classes']) == reference['classes'] and meta['model'] == reference['name']
    assert (int(meta['size']), json.loads(meta['mean']), meta['colour']) == (64, [0.5, 0.5, 0.5], 'RGB')
    with fp32_only():
        pr = Predictor(study, device='cpu')
        x = pr.batch_tfm(torch.stack([pr.load(p) for p in study_test_images(study).path])).float()
    sess = onnx_session(f)
    got = sess.run(None, {'image': x.numpy()})[0]
    np.testing.assert_allclose(got, reference['probs'], atol=1e-4)
    np.testing.assert_allclose(sess.run(None, {'image': x[:1].numpy()})[0], reference['probs'][:1], atol=1e-4)
    assert 'largest probability difference from PyTorch' in out

def test_scratch_export_refused_over_tolerance_keeps_file(study, tmp_path):
    from tl_fastai.predict import export_onnx
    f = tmp_path/'m.onnx'; f.write_bytes(b'earlier')
    with fp32_only(), pytest.raises(ValueError, match='was not written'): export_onnx(study, 'cnn_scratch', f, tol=-1.)
    assert f.read_bytes() == b'earlier' and not list(tmp_path.glob('*.tmp'))

def test_unreadable_images_skipped_then_refused(study, tmp_path, capsys):
    test = study_test_images(study)
    d = tmp_path/'imgs'; d.mkdir()
    for p in test.path[:2]: shutil.copy(p, d)
    (d/'zero.png').write_bytes(b'')
    (d/'half.png').write_bytes(Path(test.path[2]).read_bytes()[:1500])
    rc, out, err = cli(capsys, 'predict', d, '--out', study, '--csv', tmp_path/'p.csv')
    assert rc == 0, err
    assert len(pd.read_csv(tmp_path/'p.csv')) == 2 and '2 unreadable skipped' in out
    rc, out, err = cli(capsys, 'predict', d/'zero.png', d/'half.png', '--out', study, '--csv', tmp_path/'q.csv')
    assert rc == 2 and 'None of the 2 image(s) could be read' in err and not (tmp_path/'q.csv').exists()

def one_line_error(p, text):
    "An exit status of 2 with `text` in a one-line message and no traceback."
    assert p.returncode == 2, p.stderr
    lines = [l for l in p.stderr.splitlines() if l.startswith('tl-fastai ')]
    assert len(lines) == 1 and text in lines[0] and 'Traceback' not in p.stderr, p.stderr

def run_cli(*args): return subprocess.run([str(CLI), *map(str, args)], capture_output=True, text=True, timeout=600)

def test_bad_input_one_sentence_nothing_written(study, tmp_path):
    img = study_test_images(study).path[0]
    csv = tmp_path/'p.csv'
    (tmp_path/'empty').mkdir()
    one_line_error(run_cli('predict', tmp_path/'empty', '--out', study, '--csv', csv), 'No images found in')
    one_line_error(run_cli('predict', img, '--out', tmp_path/'nostudy', '--csv', csv), 'holds no finished study')
    (tmp_path/'afile').write_text('x')
    one_line_error(run_cli('predict', img, '--out', study, '--csv', tmp_path/'afile'/'p.csv'), 'Cannot write')
    one_line_error(run_cli('export', '--out', study, '--path', tmp_path/'afile'/'m.onnx'), 'Cannot write')
    one_line_error(run_cli('export', '--out', tmp_path/'nostudy'), 'holds no finished study')
    assert not csv.exists() and not (tmp_path/'nostudy'/'study.json').exists()

def test_bad_checkpoints_refused(study, tmp_path):
    img, bad = study_test_images(study).path[0], tmp_path/'study'
    shutil.copytree(study, bad)
    ck = torch.load(bad/'cnn_scratch'/BEST_CKPT, weights_only=True)
    atomic_save({**ck, 'classes': ['crack', 'ok']}, bad/'cnn_scratch'/BEST_CKPT)
    csv = tmp_path/'p.csv'
    one_line_error(run_cli('predict', img, '--out', bad, '--model', 'cnn_scratch', '--csv', csv),
                   "was trained on classes ['crack', 'ok']")
    torch.save({**ck, 'made_in': Path('.')}, bad/'cnn_scratch'/BEST_CKPT)     # an object besides plain tensors
    one_line_error(run_cli('predict', img, '--out', bad, '--model', 'cnn_scratch', '--csv', csv),
                   'a pickled file can run code')
    one_line_error(run_cli('predict', img, '--out', bad, '--model', 'best', '--csv', csv), "no model 'best'")
    assert not csv.exists()

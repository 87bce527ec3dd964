"""Behaviour unchanged: the smoke study gives the numbers stored in `smoke_numbers.json`, on the machine and library
versions it names. A refactor must keep them; a change that moves them on purpose rewrites the file
(`python tests/test_same_numbers.py`) and says why in its commit."""
import json, math, sys
from pathlib import Path
import pytest

REF = Path(__file__).with_name('smoke_numbers.json')
VOLATILE = {'time_s', 'wall_time_s', 'wall_times', 'environment', 'device', 'fingerprint', 'out'}  # timing, machine, folder

def cpu_model()->str:
    "The CPU's model name (numbers are compared only on the kind of machine that wrote them)."
    lines = Path('/proc/cpuinfo').read_text().splitlines() if Path('/proc/cpuinfo').exists() else []
    return next((l.split(':', 1)[1].strip() for l in lines if l.startswith('model name')), 'unknown')

def machine(res:dict)->dict:
    "What the numbers depend on besides the code: libraries, precision, processes, CPU."
    env = res['environment']
    return {**{k: env[k] for k in ('python', 'torch', 'fastai', 'timm', 'sklearn', 'amp', 'processes')},
            'device': res['device'], 'cpu': cpu_model()}

def flat(o, path='')->dict:
    "{path: value} of every leaf of study.json, leaving out what timing, the machine or the folder change."
    if isinstance(o, dict):
        return {k: v for key, val in o.items() if key not in VOLATILE for k, v in flat(val, f'{path}/{key}').items()}
    if isinstance(o, list): return {k: v for i, val in enumerate(o) for k, v in flat(val, f'{path}/{i}').items()}
    return {path: o}

def smoke_study(out:Path)->dict:
    "The smoke study's study.json, as written."
    from tl_fastai.plan import StudyConfig
    from tl_fastai.study import run_study
    run_study(StudyConfig(preset='smoke', out=str(out)), log=None)
    return json.loads((out/'study.json').read_text())

def differences(got:dict, ref:dict)->list:
    "Paths whose value differs (floats beyond a relative 1e-6), or that only one side has."
    diff = sorted(set(got) ^ set(ref))
    for k in set(got) & set(ref):
        a, b = got[k], ref[k]
        same = math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9) if isinstance(a, float) or isinstance(b, float) else a == b
        if not same: diff.append(f"{k}: {a!r} vs {b!r}")
    return diff

def test_smoke_study_numbers_unchanged(tmp_path):
    ref = json.loads(REF.read_text())
    res = smoke_study(tmp_path/'saved_models')
    if machine(res) != ref['machine']:
        pytest.skip(f"the reference numbers come from another machine or library versions: {ref['machine']}")
    assert not differences(flat(res), ref['numbers']), differences(flat(res), ref['numbers'])[:20]

def test_a_changed_number_is_found():
    ref = json.loads(REF.read_text())['numbers']
    key = next(k for k in ref if k.endswith('/test/accuracy'))
    assert differences({**ref, key: ref[key] + 1/8}, ref) == [f"{key}: {ref[key] + 1/8!r} vs {ref[key]!r}"]
    assert differences({**ref, key: ref[key]*(1 + 1e-9)}, ref) == []           # the last digits of a float may move
    assert not any(k.endswith('/time_s') or '/wall_times' in k for k in ref)   # timing is not a number of the study

if __name__ == '__main__':                  # write the reference: python tests/test_same_numbers.py [STUDY_JSON]
    import tempfile
    res = json.loads(Path(sys.argv[1]).read_text()) if len(sys.argv) > 1 else smoke_study(Path(tempfile.mkdtemp())/'s')
    REF.write_text(json.dumps(dict(machine=machine(res), numbers=flat(res)), indent=1) + '\n')
    print(f"{REF}: {len(flat(res))} numbers of the smoke study on {machine(res)}")

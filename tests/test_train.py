import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edgegen import artifact
from edgegen.checkpoint import load_model
from edgegen.train import Interrupted, TrainConfig, lr_at, token_windows, train

from conftest import BIN, REPO, tiny_lm_config, tiny_train_config


def test_lr_schedule():
    cfg = TrainConfig(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0)
    assert lr_at(99, cfg) == pytest.approx(0.1, abs=1e-3)
    values = [lr_at(s, cfg) for s in range(10, 100)]
    assert values == sorted(values, reverse=True)


def test_token_windows_are_a_pure_function():
    tokens = torch.arange(1000)
    f = token_windows(tokens, seq_len=16, batch_size=4, seed=3)
    a, b = f(5, 0), f(5, 0)
    assert a.shape == (4, 17) and torch.equal(a, b)
    assert not torch.equal(f(5, 0), f(6, 0)) and not torch.equal(f(5, 0), f(5, 1))
    assert torch.equal(a[:, 1:] - a[:, :-1], torch.ones(4, 16, dtype=a.dtype))  # contiguous windows


def test_teacher_checkpoint(teacher, teacher_model):
    m = teacher.manifest
    assert m.kind == "checkpoint" and m.format == "torch" and m.family == "lm"
    assert teacher.metrics["role"] == "teacher"
    assert teacher.metrics["params"] == teacher_model.num_params()
    assert math.isfinite(teacher.metrics["val_loss"]) and teacher.metrics["val_bits_per_byte"] > 0
    assert {"model.safetensors", "model_config.json", "tokenizer_config.json", "history.json"} <= set(m.files)
    history = json.loads((teacher.path / "history.json").read_text())
    assert [h["step"] for h in history] == list(range(1, 7))
    assert teacher_model.cfg.n_kv_head == 1 and teacher_model.cfg.n_layer == 2
    assert not Path(str(teacher.path) + ".ckpt").exists()


def test_train_is_reused_when_unchanged(teacher, data_cfg):
    mtime = (teacher.path / "manifest.json").stat().st_mtime_ns
    again = train(teacher.path, model=tiny_lm_config(), train=tiny_train_config(), data=data_cfg, role="teacher")
    assert again.manifest.key == teacher.manifest.key
    assert (teacher.path / "manifest.json").stat().st_mtime_ns == mtime


def test_same_seed_same_weights(tmp_path, small_data_cfg):
    cfg = tiny_train_config(steps=3)
    a = train(tmp_path / "a", model=tiny_lm_config(), train=cfg, data=small_data_cfg)
    b = train(tmp_path / "b", model=tiny_lm_config(), train=cfg, data=small_data_cfg)
    assert a.manifest.files["model.safetensors"] == b.manifest.files["model.safetensors"]


def test_resume_gives_the_same_weights(tmp_path, small_data_cfg):
    model, cfg = tiny_lm_config(), tiny_train_config(steps=8, checkpoint_every=0, eval_every=0)
    whole = train(tmp_path / "whole", model=model, train=cfg, data=small_data_cfg)

    out = tmp_path / "parts"
    with pytest.raises(Interrupted):
        train(out, model=model, train=cfg, data=small_data_cfg, stop_at=4)
    ckpt = tmp_path / "parts.ckpt"
    assert not out.exists()  # an interrupted run leaves no artifact, only its training checkpoint
    assert json.loads((ckpt / "state.json").read_text())["step"] == 4
    resumed = train(out, model=model, train=cfg, data=small_data_cfg, resume=True)
    assert not ckpt.exists()

    a, b = load_model(whole.path).state_dict(), load_model(resumed.path).state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    ha = json.loads((whole.path / "history.json").read_text())
    hb = json.loads((resumed.path / "history.json").read_text())
    assert [h["loss"] for h in ha] == [h["loss"] for h in hb]
    assert resumed.manifest.key == whole.manifest.key


def test_resume_with_other_config_is_refused(tmp_path, small_data_cfg):
    from edgegen import EdgegenError

    out = tmp_path / "run"
    with pytest.raises(Interrupted):
        train(out, model=tiny_lm_config(), train=tiny_train_config(steps=4), data=small_data_cfg, stop_at=2)
    with pytest.raises(EdgegenError, match="another config"):
        train(out, model=tiny_lm_config(), train=tiny_train_config(steps=4, lr=1e-4), data=small_data_cfg,
              resume=True)
    # "auto" starts over instead
    art = train(out, model=tiny_lm_config(), train=tiny_train_config(steps=4, lr=1e-4), data=small_data_cfg,
                resume="auto")
    assert len(json.loads((art.path / "history.json").read_text())) == 4


def test_train_with_hf_tokenizer(tmp_path, small_text_dir):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from edgegen.data import HFTokenizer, TextDataConfig
    from edgegen.runtimes import TextGenerator

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([p.read_text() for p in small_text_dir.iterdir()],
                            trainers.BpeTrainer(vocab_size=320, show_progress=False,
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(tmp_path / "tokenizer.json"))
    data = TextDataConfig(path=str(small_text_dir), tokenizer=str(tmp_path / "tokenizer.json"))
    art = train(tmp_path / "hf", model=tiny_lm_config(), train=tiny_train_config(steps=2), data=data)
    vocab = tok.get_vocab_size()
    assert load_model(art.path).cfg.vocab_size == vocab
    assert "tokenizer.json" in art.manifest.files
    gen = TextGenerator(art.path, "torch")
    assert isinstance(gen.tokenizer, HFTokenizer)
    r = gen.generate("def ", 5, greedy=True)
    assert len(r.token_ids) == 5 and all(0 <= t < vocab for t in r.token_ids)


def test_ddp_torchrun(tmp_path, small_text_dir):
    out = tmp_path / "ddp"
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "-m", "edgegen.cli", "train",
           "--out", str(out), "--preset", "nano", "--steps", "4", "--batch-size", "2", "--seq-len", "16",
           "--data", str(small_text_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    art = artifact.load(out, kind="checkpoint")
    model = load_model(out)
    assert model.cfg.d_model == 64 and model.cfg.n_layer == 2  # the nano preset
    assert math.isfinite(art.metrics["val_loss"])
    assert len(json.loads((out / "history.json").read_text())) == 4
    assert "checkpoint:" in done.stdout
    assert not Path(str(out) + ".ckpt").exists()


def test_ctrl_c_saves_a_checkpoint_and_resume_finishes(tmp_path, small_text_dir):
    """A real SIGINT to `edgegen train`: exit 130, a training checkpoint, no artifact; --resume completes."""
    import signal
    import time

    out = tmp_path / "run"
    args = [sys.executable, "-m", "edgegen.cli", "train", "--out", str(out), "--preset", "nano", "--steps", "300",
            "--batch-size", "2", "--seq-len", "16", "--data", str(small_text_dir)]
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=env)
    seen, deadline = b"", time.monotonic() + 120
    os.set_blocking(proc.stderr.fileno(), False)
    while b"loss=" not in seen and proc.poll() is None and time.monotonic() < deadline:
        chunk = proc.stderr.read() or b""
        seen += chunk
        time.sleep(0.01)
    assert b"loss=" in seen, seen[-2000:]
    proc.send_signal(signal.SIGINT)
    stdout, rest = proc.communicate(timeout=120)
    stderr = (seen + (rest or b"")).decode(errors="replace")
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    assert "--resume" in stderr.strip().splitlines()[-1].split("\r")[-1]
    assert not out.exists()
    state = json.loads((tmp_path / "run.ckpt" / "state.json").read_text())
    assert 0 < state["step"] < 300 and len(state["history"]) == state["step"]

    done = subprocess.run(args + ["--resume"], capture_output=True, text=True, timeout=180, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    history = json.loads((out / "history.json").read_text())
    assert [h["step"] for h in history] == list(range(1, 301))
    assert history[:state["step"]] == state["history"]
    assert not (tmp_path / "run.ckpt").exists()

import json
import math
import shutil

import pytest

from edgegen.cli import COMMANDS, main

from conftest import run_cli, stderr_lines


def _no_valid_artifact(out):
    assert not out.exists() or not (out / "manifest.json").exists(), f"{out} looks like an artifact"


def _assert_one_line_error(proc, *fragments):
    lines = stderr_lines(proc)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith("edgegen: error:"), lines[0]
    assert "Traceback" not in proc.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])


TRAIN = ["train", "--preset", "nano", "--steps", "2", "--batch-size", "2", "--seq-len", "16"]


def test_train_missing_data_path(tmp_path):
    out = tmp_path / "out"
    proc = run_cli(*TRAIN, "--out", out, "--data", tmp_path / "nope")
    _assert_one_line_error(proc, "nope")
    _no_valid_artifact(out)


def test_train_empty_data_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    proc = run_cli(*TRAIN, "--out", out, "--data", tmp_path / "empty")
    _assert_one_line_error(proc, "empty")
    _no_valid_artifact(out)


def test_train_non_utf8_data(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (d / "ok.txt").write_text("print('hello')\n" * 50)
    (d / "latin1.txt").write_bytes("caf\u00e9 cr\u00e8me br\u00fbl\u00e9e\n".encode("latin-1") * 50)
    out = tmp_path / "out"
    proc = run_cli(*TRAIN, "--out", out, "--data", d)
    _assert_one_line_error(proc, "latin1.txt")
    _no_valid_artifact(out)


def test_export_corrupt_checkpoint(tmp_path, teacher):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(teacher.path, ckpt)
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    out = tmp_path / "bundle"
    proc = run_cli("export", ckpt, "--out", out)
    _assert_one_line_error(proc, "model.safetensors")
    _no_valid_artifact(out)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temp dirs either


def test_export_not_a_checkpoint(tmp_path, fp32_bundle):
    out = tmp_path / "bundle"
    proc = run_cli("export", fp32_bundle.path, "--out", out)
    _assert_one_line_error(proc, "checkpoint")
    _no_valid_artifact(out)


def test_generate_truncated_onnx(tmp_path, fp32_bundle):
    bundle = tmp_path / "bundle"
    shutil.copytree(fp32_bundle.path, bundle)
    model = bundle / "model.onnx"
    model.write_bytes(model.read_bytes()[:5000])
    proc = run_cli("generate", bundle, "--prompt", "def ", "--max-new-tokens", "4")
    _assert_one_line_error(proc, "model.onnx")
    assert proc.stdout == ""


def test_run_unknown_recipe(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("run", "lm-nonexistent", "--out", out)
    _assert_one_line_error(proc, "lm-nonexistent")
    assert not out.exists()


def test_run_recipe_with_wrong_field(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("base: lm-tiny\nteacher:\n  n_layer: 2\n  hidden_size: 32\n")
    out = tmp_path / "run"
    proc = run_cli("run", recipe, "--out", out)
    _assert_one_line_error(proc, "hidden_size")
    assert not out.exists()


def test_generate_json(fp32_bundle, ort_gen):
    proc = run_cli("generate", fp32_bundle.path, "--prompt", "def ", "--max-new-tokens", "8", "--greedy", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(proc.stdout)
    assert set(r) >= {"text", "token_ids", "ttft_ms", "tok_s"}
    assert len(r["token_ids"]) == 8 and all(0 <= t < 256 for t in r["token_ids"])
    assert r["ttft_ms"] > 0 and r["tok_s"] > 0
    expected = ort_gen.generate("def ", 8, greedy=True)
    assert r["token_ids"] == expected.token_ids and r["text"] == expected.text


def test_generate_streams_text(fp32_bundle, ort_gen):
    proc = run_cli("generate", fp32_bundle.path, "--prompt", "def ", "--max-new-tokens", "8", "--seed", "3")
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = ort_gen.generate("def ", 8, seed=3).text + "\n"
    assert proc.stdout == expected.replace("\r\n", "\n").replace("\r", "\n")  # text mode: universal newlines


def test_generate_empty_prompt(fp32_bundle):
    proc = run_cli("generate", fp32_bundle.path, "--prompt", "")
    _assert_one_line_error(proc, "prompt")


def test_validate_json(fp32_bundle, eval_text_file):
    proc = run_cli("validate", fp32_bundle.path, "--data", eval_text_file, "--json", "--max-bytes", "2000")
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(proc.stdout)
    q, lat = r["quality"], r["latency"]
    assert 0 < q["bits_per_byte"] <= 9 and math.isfinite(q["perplexity"])
    assert q["bytes"] <= 2000 and q["context"] == 64 and q["stride"] == 32
    assert lat["ttft_ms_p50"] > 0 and lat["decode_tok_s_p50"] > 0
    assert r["size_bytes"] == (fp32_bundle.path / "model.onnx").stat().st_size
    assert r["runtime"] == "ort" and r["precision"] == "fp32"


def test_validate_text_output(fp32_bundle, eval_text_file, capsys):
    assert main(["validate", str(fp32_bundle.path), "--data", str(eval_text_file), "--max-bytes", "500",
                 "--context", "32", "--stride", "16"]) == 0
    out = capsys.readouterr().out
    assert "bits/byte" in out and "TTFT" in out and "KiB" in out


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help(command, capsys):
    argv = [command, "--help"] if command else ["--help"]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: edgegen" in out
    if command:
        assert command in out


def test_help_subprocess():
    proc = run_cli("--help")
    assert proc.returncode == 0 and "COMMAND" in proc.stdout


def test_usage_error_exit_code(capsys):
    with pytest.raises(SystemExit) as e:
        main(["generate"])  # --prompt and bundle missing
    assert e.value.code == 2
    assert "edgegen generate: error:" in capsys.readouterr().err


def test_in_process_error_is_one_line(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "missing-bundle"), "--data", str(tmp_path / "missing.txt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edgegen: error:")


# Option values that the configs reject must get the same one-sentence treatment as bad paths.
BAD_OPTIONS = {
    "train --steps 0": lambda t, b, f, out: ["train", "--out", out, "--preset", "nano", "--steps", "0", "--data", f],
    "train --seq-len 1": lambda t, b, f, out: ["train", "--out", out, "--preset", "nano", "--seq-len", "1",
                                               "--data", f],
    "distill --alpha 2": lambda t, b, f, out: ["distill", "--teacher", t, "--out", out, "--alpha", "2",
                                               "--steps", "2", "--data", f],
    "export --opset 3": lambda t, b, f, out: ["export", t, "--out", out, "--opset", "3"],
    "validate --max-bytes 4": lambda t, b, f, out: ["validate", b, "--data", f, "--max-bytes", "4"],
    "validate --stride > --context": lambda t, b, f, out: ["validate", b, "--data", f, "--max-bytes", "500",
                                                           "--context", "16", "--stride", "32"],
    "validate --context 1": lambda t, b, f, out: ["validate", b, "--data", f, "--max-bytes", "500",
                                                  "--context", "1", "--stride", "1"],
    "generate --temperature 0": lambda t, b, f, out: ["generate", b, "--prompt", "x", "--temperature", "0"],
}


@pytest.mark.parametrize("case", list(BAD_OPTIONS))
def test_bad_option_values(case, tmp_path, teacher, fp32_bundle, eval_text_file):
    out = tmp_path / "out"
    proc = run_cli(*BAD_OPTIONS[case](teacher.path, fp32_bundle.path, eval_text_file, out))
    _assert_one_line_error(proc)
    _no_valid_artifact(out)
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_generate_json_is_strict_json_for_one_token(fp32_bundle):
    """One new token has no decode rate; the output must still be valid JSON (no bare NaN)."""
    proc = run_cli("generate", fp32_bundle.path, "--prompt", "def ", "--max-new-tokens", "1", "--greedy", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]

    def reject(constant):
        raise ValueError(f"{constant} is not valid JSON")
    r = json.loads(proc.stdout, parse_constant=reject)
    assert len(r["token_ids"]) == 1


def test_export_target_options_are_checked(tmp_path):
    """--option names a field of the target's config; anything else is one sentence and exit 2."""
    for args, expect in [(["--target", "coreml", "--option", "colour=blue"], "coreml has no export option 'colour'"),
                         (["--target", "coreml", "--option", "stateful"], "--option takes FIELD=VALUE"),
                         (["--target", "executorch", "--precision", "fp8"], "supports precisions fp32, int8")]:
        proc = run_cli("export", tmp_path / "missing-checkpoint", "--out", tmp_path / "out", *args)
        assert proc.returncode == 2 and expect in proc.stderr, proc.stderr
        assert len(stderr_lines(proc)) == 1 and not (tmp_path / "out").exists()

"""The `edgegen` command line: every command's arguments and help (the commands are in cli.py)."""

from __future__ import annotations

import argparse

from . import __version__
from .export.targets import TARGETS
from .runtimes.session import RUNTIMES

PRECISIONS = sorted({p for _, _, precisions in TARGETS.values() for p in precisions})

EPILOG = "Run `edgegen COMMAND --help` for a command's options. Docs: README.md."


def _data_args(p, what="training"):
    p.add_argument("--data", metavar="PATH", help=f"{what} text: a UTF-8 file or a folder of text files "
                   "(default: the Python standard library's .py files)")
    p.add_argument("--tokenizer", metavar="FILE", help="a Hugging Face tokenizers JSON file (default: bytes, vocab 256)")


def _inception_arg(p):
    p.add_argument("--inception-weights", metavar="PATH", help="the standard FID Inception-v3 weights "
                   "(pt_inception-2015-12-05-6726825d.pth, as pytorch-fid uses): FID on your own image folder "
                   "(--data); the built-in digits use edgegen's digits classifier")


def _seed(p):
    p.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same weights and samples (default: 0)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgegen", description="Distill, quantize, export and validate "
                                     "generative models for edge devices.", epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"edgegen {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("run", help="run a whole recipe: train, distill, export, quantize, validate, report",
                       description="Run every stage of a recipe into --out; stages whose inputs and config are "
                       "unchanged are reused. Writes OUT/report/report.json and report.md.")
    p.add_argument("recipe", help="a built-in recipe (lm-tiny) or a recipe YAML/JSON file")
    p.add_argument("--out", metavar="DIR", help="run directory (default: runs/RECIPE)")
    p.add_argument("--seed", type=int, help="override the recipe's seed")
    p.add_argument("--data", metavar="PATH", help="override the recipe's data: a UTF-8 file or a folder "
                   "(image recipes: a folder of PNG/JPEG images, searched recursively)")
    _inception_arg(p)
    p.add_argument("--strict", action="store_true", help="exit 1 when any gate fails")

    p = sub.add_parser("train", help="train (or fine-tune) a teacher language model",
                       description="Train a language model and write a checkpoint artifact. Ctrl-C saves a "
                       "checkpoint; --resume continues it to the same final weights.")
    p.add_argument("--out", metavar="DIR", required=True, help="checkpoint directory to write")
    p.add_argument("--recipe", default="lm-tiny", help="take model and training settings from this recipe "
                   "(default: lm-tiny's teacher)")
    p.add_argument("--preset", help="model size preset instead of the recipe's: nano, tiny, small, base")
    p.add_argument("--init", metavar="CHECKPOINT", help="fine-tune from this checkpoint instead of random weights")
    p.add_argument("--steps", type=int, help="optimizer steps")
    p.add_argument("--batch-size", type=int, help="sequences per step (per process under torchrun)")
    p.add_argument("--seq-len", type=int, help="tokens per training sequence")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--resume", action="store_true", help="continue from OUT.ckpt, the checkpoint of an interrupted run")
    _data_args(p)
    _seed(p)

    p = sub.add_parser("distill", help="distill a teacher checkpoint into a smaller student",
                       description="Logit KD (forward KL at temperature T, T^2-scaled, mixed with cross-entropy), "
                       "optional hidden-state loss; the student starts from teacher layers where shapes allow.")
    p.add_argument("--teacher", metavar="CHECKPOINT", required=True, help="teacher checkpoint directory")
    p.add_argument("--out", metavar="DIR", required=True, help="student checkpoint directory to write")
    p.add_argument("--recipe", default="lm-tiny", help="take student and distillation settings from this recipe")
    p.add_argument("--layers", type=int, help="student layers")
    p.add_argument("--d-model", type=int, help="student width (default: the teacher's)")
    p.add_argument("--alpha", type=float, help="weight of the KD term (1 - alpha on cross-entropy)")
    p.add_argument("--temperature", type=float, help="softmax temperature of the KD term")
    p.add_argument("--hidden-weight", type=float, help="weight of the hidden-state loss (0: off)")
    p.add_argument("--steps", type=int, help="optimizer steps")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from OUT.ckpt")
    _data_args(p)
    _seed(p)

    p = sub.add_parser("export", help="export a checkpoint to a bundle: ONNX, ExecuTorch, Core ML, TensorRT",
                       description="Export a checkpoint to a target runtime's format at a precision, check parity "
                       "against torch (fails loudly when off) and write a bundle. onnx: Optimum's "
                       "text-generation-with-past I/O for language models; int8 is dynamic for them and static "
                       "(calibrated) for image generators. executorch: an XNNPACK-lowered .pte (int8: pt2e "
                       "quantization, calibrated). coreml: an mlprogram .mlpackage (int8: linear weight "
                       "quantization, palettize4/6: weight palettization). tensorrt: an engine built from the "
                       "ONNX export after a check of what TensorRT would refuse (needs an NVIDIA GPU).")
    p.add_argument("checkpoint", help="checkpoint directory")
    p.add_argument("--out", metavar="DIR", required=True, help="bundle directory to write")
    p.add_argument("--target", default="onnx", choices=list(TARGETS), help="export target (default: onnx)")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="fp32 (default), fp16, int8, palettize6/palettize4 (coreml), fp8 (tensorrt)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (onnx target; default: 17)")
    p.add_argument("--option", action="append", default=[], metavar="FIELD=VALUE",
                   help="a field of the target's export config, value in YAML (repeatable), e.g. "
                   "stateful=false or deployment_target=iOS17 (coreml), batch=[1,8,64] or workspace_mib=2048 "
                   "(tensorrt), calibration_samples=128 (executorch, tensorrt)")

    p = sub.add_parser("validate", help="measure a bundle on its runtime: quality, latency, size, memory",
                       description="Language models: perplexity and bits/byte through the runtime (sliding window), "
                       "time to first token and decode tokens/s. Image generators: FID/KID of generated images "
                       "(digits classifier features), per-image latency and images/s. Both: p50/p90/p99, size, "
                       "peak memory.")
    p.add_argument("bundle", help="bundle (or checkpoint, with --runtime torch) directory")
    _inception_arg(p)
    p.add_argument("--data", metavar="PATH", help="evaluation text: a UTF-8 file or folder, used whole "
                   "(default: the test split of the Python standard library corpus); image bundles: a folder of "
                   "real images to compare with (needs --inception-weights; default: the digits test split)")
    p.add_argument("--runtime", default="ort", choices=list(RUNTIMES), help="runtime (default: ort)")
    p.add_argument("--max-bytes", type=int, default=65_536, help="evaluate at most this many bytes of text")
    p.add_argument("--context", type=int, default=0, help="perplexity window (default: the model's context)")
    p.add_argument("--stride", type=int, default=0, help="perplexity stride (default: half the window)")
    p.add_argument("--num-images", type=int, default=1000, help="images generated for FID/KID (default: 1000)")
    p.add_argument("--steps", type=int, default=0, help="diffusion sampler steps (default: the bundle's own)")
    _measure_args(p)
    p.add_argument("--budget", metavar="FILE", help="a budget YAML of gates (e.g. 'latency.p90_ms <= 40 on cpu-2t'): "
                   "prints one line per gate and exits 1 when any fails")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    _seed(p)

    p = sub.add_parser("profile", help="latency and memory of a bundle on a device (no quality)",
                       description="Latency (per decode token: p50/p90/p99, mean, CV; time to first token; "
                       "tokens/s) and peak memory on a device profile: run here for local profiles, over SSH "
                       "for ssh profiles, or estimated from the graph (roofline, labelled an estimate) otherwise.")
    p.add_argument("bundle", help="bundle (or checkpoint, with --runtime torch) directory")
    p.add_argument("--device", required=True, help="device profile name (see `edgegen devices`) or YAML file")
    p.add_argument("--runtime", default="ort", choices=list(RUNTIMES), help="runtime (default: ort)")
    _measure_args(p, threads=False)
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    p = sub.add_parser("check", help="what TensorRT would refuse in an ONNX bundle, checked here without a GPU",
                       description="Check an ONNX bundle (or .onnx file) against TensorRT 10's ONNX parser: ops it "
                       "lacks, data types, int64 values beyond int32, dynamic dimensions without an optimization "
                       "profile (a bundle is checked with the profiles `export --target tensorrt` would build). "
                       "Prints one finding a line; exits 1 when any is an error.")
    p.add_argument("bundle", help="ONNX bundle directory or .onnx file")
    p.add_argument("--target", default="tensorrt", choices=["tensorrt"], help="the target to check for")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")

    p = sub.add_parser("devices", help="list the device profiles",
                       description="Device profiles shipped with edgegen, in ~/.config/edgegen/devices/ and in "
                       "the folders of EDGEGEN_DEVICES.")
    p.add_argument("--json", action="store_true", help="print the profiles as JSON")

    p = sub.add_parser("generate", help="generate text or images with a bundle",
                       description="Language models: sample a continuation of --prompt (streamed unless --json). "
                       "Image generators: write --num-images PNGs (and grid.png) to --out.")
    p.add_argument("bundle", help="bundle (or checkpoint, with --runtime torch) directory")
    p.add_argument("--prompt", help="text to continue (language models)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate (default: 64)")
    p.add_argument("--greedy", action="store_true", help="always take the most likely token")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default: 1.0)")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens (0: off)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1.0: off)")
    p.add_argument("--runtime", default="ort", choices=list(RUNTIMES), help="runtime (default: ort)")
    p.add_argument("--json", action="store_true", help="print text, token_ids, ttft_ms and tok_s as JSON "
                   "(images: the files written)")
    p.add_argument("--num-images", type=int, default=16, help="images to generate (image generators; default: 16)")
    p.add_argument("--steps", type=int, help="diffusion sampler steps (default: the bundle's own)")
    p.add_argument("--out", metavar="DIR", help="folder for the PNGs (image generators)")
    _seed(p)
    return parser


def _measure_args(p, threads=True):
    if threads:
        p.add_argument("--threads", type=int, default=0, help="runtime threads (default: the fastest here)")
        p.add_argument("--device", help="run on this device profile (see `edgegen devices`)")
    p.add_argument("--min-queries", type=int, default=64, help="latency: at least this many queries (default: 64)")
    p.add_argument("--min-seconds", type=float, default=5.0, help="latency: at least this long, unless p90 is "
                   "stable earlier (default: 5)")

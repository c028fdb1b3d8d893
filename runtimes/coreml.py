"""Core ML session (macOS only): a Core ML bundle's model.mlpackage behind the session protocol.

coremltools can convert and inspect models anywhere, but `MLModel.predict`
exists only on macOS (it calls Core ML); elsewhere opening a session fails
with one sentence. The session shows the ONNX bundles' I/O names (config.json
maps them to the package's MIL names), casts feeds to the package's dtypes
(token ids are int32 in Core ML), and splits a batch the package does not
take (a fixed-batch diffusion denoiser, or more rows than the RangeDim allows)
into chunks, padding the last one.

Stateless lm: Core ML has no zero-sized inputs, so an empty cache (past 0, as
TextGenerator starts) is fed as one zero slot that a leading 0 in
attention_mask masks out; the presents come back without that slot.

Stateful lm: the package has no past/present tensors, its KV cache is an
MLState. To run TextGenerator unchanged, the session still lists
past_key_values.N.key/value inputs and present.N.key/value outputs, and the
presents it returns are `StateCache` handles meaning "the state after this
call". Feeding them back continues that state; feeding numpy arrays starts a
new state (zeros of past length 0, or a real cache written into the state
with `write_state`, e.g. from another runtime). `to_numpy` on a handle reads
its slots out of the state. A state is one sequence that moves forward: a
handle is valid until the next call on its sequence, after which it raises.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from edgegen import EdgegenError, artifact

MACOS_ONLY = ("Core ML prediction needs macOS: coremltools cannot load models for prediction on Linux "
              "or Windows (export and the spec check work everywhere)")


@dataclasses.dataclass
class _Sequence:
    state: object  # ct.models.MLState
    length: int = 0  # tokens in the cache; token p is in slot 1 + p (slot 0 is the masked sink)
    version: int = 0  # bumped by every call: only handles of the latest version are valid


@dataclasses.dataclass(frozen=True)
class StateCache:
    """One present.N.key/value of a stateful session: layer `layer` of `sequence` after call `version`."""

    sequence: _Sequence
    version: int
    length: int
    layer: int
    kind: str  # "key" | "value"


class CoremlSession:
    runtime = "coreml"

    def __init__(self, path: Path, threads: int | None = None, compute_units: str = "ALL"):
        self.path = Path(path)
        manifest = artifact.load(self.path, kind="bundle").manifest if (self.path / artifact.MANIFEST).is_file() \
            else None  # None: a bundle being written (export checks parity before the manifest exists)
        if manifest and manifest.format != "coreml":
            raise EdgegenError(f"{path} is a {manifest.format} bundle; the coreml runtime needs a coreml bundle")
        config = _read_config(self.path)
        if "coreml" not in config:
            raise EdgegenError(f"{path} is not a Core ML bundle: its config.json has no coreml section")
        family = manifest.family if manifest else config.get("family", "lm")
        parity = manifest.metrics.get("parity") if manifest else None
        cm = config["coreml"]
        if sys.platform != "darwin":
            raise EdgegenError(MACOS_ONLY)
        import coremltools as ct

        units = getattr(ct.ComputeUnit, str(compute_units).upper(), None)
        if units is None:
            raise EdgegenError(f"compute_units must be one of {', '.join(u.name for u in ct.ComputeUnit)}, "
                               f"not {compute_units!r}")
        try:
            self.model = ct.models.MLModel(str(self.path / cm["package"]), compute_units=units)
        except Exception as e:  # noqa: BLE001 - Core ML reports load failures with several exception types
            raise EdgegenError(f"{self.path / cm['package']} is not a loadable Core ML model "
                               f"({str(e).splitlines()[0][:200]})") from None
        self.family, self.stateful = family, bool(cm.get("stateful"))
        self.names = cm["names"]  # ONNX name -> Core ML name
        # Core ML has no thread setting; `threads` is accepted for the common session signature
        self.metadata = {"precision": cm["precision"], "family": family, "config": config,
                         "compute_units": units.name, "parity": parity}
        self._spec = {**cm["inputs"], **cm["outputs"]}  # Core ML name -> {"shape", "dtype", "range"}
        public = {core: name for name, core in self.names.items()}
        self.inputs = {public[n]: (_dims(public[n], f), f["dtype"]) for n, f in cm["inputs"].items()}
        self.output_names = [public[n] for n in cm["outputs"]]
        self.past_names = [n for n in self.inputs if n.startswith("past_key_values.")]
        if self.stateful:  # the cache is a state: list it as the tensors TextGenerator expects
            n_layer, batch, kv_heads, _, head_dim = cm["states"]["key_cache"]["shape"]
            self.max_context = cm["max_context"]
            kv = [f"{i}.{k}" for i in range(n_layer) for k in ("key", "value")]
            self.past_names = [f"past_key_values.{n}" for n in kv]
            for name in self.past_names:
                self.inputs[name] = ([batch, kv_heads, "past_sequence_length", head_dim], "float32")
            self.output_names += [f"present.{n}" for n in kv]

    # ------------------------------------------------------------------ running

    def run(self, feeds, keep=()):
        if self.stateful:
            return self._run_stateful(dict(feeds))
        feeds = dict(feeds)
        empty = bool(self.past_names) and feeds[self.past_names[0]].shape[2] == 0
        if empty:  # no zero-sized inputs in Core ML: one zero slot, masked out by a leading 0
            mask = np.asarray(feeds["attention_mask"])
            feeds["attention_mask"] = np.concatenate([np.zeros_like(mask[:, :1]), mask], 1)
            for name in self.past_names:
                b, h, _, d = feeds[name].shape
                feeds[name] = np.zeros((b, h, 1, d), np.float32)
        out = self._predict_batched(feeds)
        if empty:
            out = {n: v[:, :, 1:] if n.startswith("present.") else v for n, v in out.items()}
        return out

    def _predict(self, feeds: dict, state=None) -> dict:
        """ONNX names in and out; dtypes cast to what the package takes."""
        core = {}
        for name, value in feeds.items():
            if name in self.names and self.names[name] in self._spec:
                c = self.names[name]
                core[c] = np.ascontiguousarray(value, dtype=self._spec[c]["dtype"])
        out = self.model.predict(core) if state is None else self.model.predict(core, state=state)
        return {name: np.asarray(out[self.names[name]]) for name in self.output_names if self.names.get(name) in out}

    def _predict_batched(self, feeds: dict) -> dict:
        first = self._spec[self.names[next(iter(self.names))]]
        lo, hi = first.get("range", [[first["shape"][0]] * 2])[0]
        n = len(next(iter(feeds.values())))
        if lo <= n <= hi:
            return self._predict(feeds)
        parts = []
        for start in range(0, n, hi):  # chunks of the largest batch, the last padded up to the smallest
            chunk = {k: np.asarray(v)[start:start + hi] for k, v in feeds.items()}
            rows = len(next(iter(chunk.values())))
            if rows < lo:
                chunk = {k: np.concatenate([v, np.repeat(v[-1:], lo - rows, 0)]) for k, v in chunk.items()}
            parts.append({k: v[:rows] for k, v in self._predict(chunk).items()})
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _run_stateful(self, feeds: dict) -> dict:
        ids, mask = np.asarray(feeds["input_ids"]), np.asarray(feeds["attention_mask"])
        B, T = ids.shape
        batch = self.inputs[self.past_names[0]][0][0]
        if B != batch:
            raise EdgegenError(f"this stateful Core ML bundle was exported for batch {batch}, got batch {B}")
        pasts = [feeds[n] for n in self.past_names]
        sequence, past = self._sequence_for(pasts)
        if mask.shape[1] != past + T:
            raise EdgegenError(f"attention_mask covers {mask.shape[1]} tokens, but the cache holds {past} and "
                               f"{T} are new")
        if past + T > self.max_context:
            raise EdgegenError(f"the Core ML cache holds {self.max_context} tokens; {past + T} do not fit")
        out = self._predict(feeds, state=sequence.state)
        sequence.length, sequence.version = past + T, sequence.version + 1
        for name in self.past_names:
            _, i, kind = name.split(".")
            out[name.replace("past_key_values.", "present.")] = StateCache(sequence, sequence.version, past + T,
                                                                          int(i), kind)
        return out

    def _sequence_for(self, pasts: list) -> tuple[_Sequence, int]:
        """The state to continue (a handle fed back) or a new one (numpy pasts), and its cached length."""
        if all(isinstance(p, StateCache) for p in pasts):
            handle = pasts[0]
            if any(p.sequence is not handle.sequence or p.version != handle.version for p in pasts) \
                    or handle.version != handle.sequence.version:
                raise EdgegenError("a Core ML cache handle was fed after its state moved on (a state is one sequence "
                                   "that only goes forward); call to_numpy on a handle to keep a copy")
            return handle.sequence, handle.length
        if any(isinstance(p, StateCache) for p in pasts):
            raise EdgegenError("feed either all Core ML cache handles or all numpy arrays as past_key_values")
        sequence, past = _Sequence(self.model.make_state()), int(pasts[0].shape[2])
        if past:  # a cache from elsewhere: write it into slots 1..past of the fresh state
            for kind in ("key", "value"):
                buffer = np.array(sequence.state.read_state(f"{kind}_cache"))
                for name, value in zip(self.past_names, pasts):
                    if name.endswith(kind):
                        buffer[int(name.split(".")[1]), :, :, 1:1 + past] = value
                sequence.state.write_state(f"{kind}_cache", buffer.astype(np.float16))
        return sequence, past

    def to_numpy(self, value):
        if not isinstance(value, StateCache):
            return value
        if value.version != value.sequence.version:
            raise EdgegenError("this Core ML cache handle is stale: its state has moved on since")
        buffer = value.sequence.state.read_state(f"{value.kind}_cache")  # (n_layer, B, kv_heads, 1 + max, hd)
        return np.asarray(buffer[value.layer, :, :, 1:1 + value.length], np.float32)


def _read_config(path: Path) -> dict:
    try:
        return json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise EdgegenError(f"{path} is not a Core ML bundle: its config.json is missing or unreadable ({e})") from None


def _dims(name: str, feature: dict) -> list:
    """Spec shape -> protocol shape: fixed dims as ints, flexible ones as symbolic names."""
    symbol = ("past_sequence_length" if name.startswith("past_key_values.") else
              "total_sequence_length" if name == "attention_mask" else "sequence_length")
    ranges = feature.get("range") or [[d, d] for d in feature["shape"]]
    return [lo if lo == hi else "batch_size" if i == 0 else symbol for i, (lo, hi) in enumerate(ranges)]

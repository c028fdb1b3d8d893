"""Device profiles: where a bundle runs, and what the hardware can do.

Profiles are YAML files: the ones shipped in `runtimes/devices/`, plus the
user's own in `~/.config/edgegen/devices/` or in the folders named by
EDGEGEN_DEVICES (os.pathsep-separated). A local profile runs here with its
thread count and CPU affinity; one with `ssh: user@host` runs on that host
through a self-contained runner (runtimes/remote.py). Peak compute and
memory bandwidth feed the offline roofline estimate (runtimes/estimate.py).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from edgegen import EdgegenError
from edgegen.config import from_dict

SHIPPED = Path(__file__).with_name("devices")


@dataclasses.dataclass
class DeviceProfile:
    name: str
    description: str = ""
    runtimes: list[str] = dataclasses.field(default_factory=lambda: ["ort"])
    threads: int = 0  # 0: the runtime's choice (the harness tunes it)
    affinity: list[int] | None = None  # CPU ids the process is pinned to (local profiles)
    memory_limit_mb: float = 0.0  # 0: none; a peak RSS above it fails the memory gate
    peak_gflops: dict = dataclasses.field(default_factory=dict)  # precision -> GFLOP/s (GOP/s for int8)
    memory_bandwidth_gbs: float = 0.0  # GB/s
    op_overhead_us: float = 0.0  # fixed cost of launching one graph node (the roofline's latency floor)
    local: bool = False  # runs on this machine (else: over ssh, or estimated offline)
    ssh: str | None = None  # user@host
    ssh_port: int = 22
    ssh_key: str | None = None  # private key file
    python: str = "python3"  # interpreter on the device (it needs numpy and onnxruntime)

    def __post_init__(self):
        if self.threads < 0 or self.memory_limit_mb < 0 or self.memory_bandwidth_gbs < 0 or self.op_overhead_us < 0:
            raise ValueError("threads, memory_limit_mb, memory_bandwidth_gbs and op_overhead_us must not be negative")
        if self.local and self.ssh:
            raise ValueError("a profile is either local or reached over ssh, not both")
        unknown = set(self.peak_gflops) - {"fp32", "fp16", "bf16", "int8", "int4", "fp8"}
        if unknown:
            raise ValueError(f"peak_gflops has an unknown precision '{sorted(unknown)[0]}'")

    @property
    def kind(self) -> str:
        return "local" if self.local else "ssh" if self.ssh else "estimate"


def search_path() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("EDGEGEN_DEVICES", "").split(os.pathsep) if p]
    return [SHIPPED, Path.home() / ".config" / "edgegen" / "devices", *extra]


def load_profile_file(path: Path) -> DeviceProfile:
    from edgegen.config import load_file

    data = load_file(path)
    if isinstance(data, dict):
        data.setdefault("name", path.stem)
    return from_dict(DeviceProfile, data, f"device profile {path.name}")


def profiles() -> dict[str, DeviceProfile]:
    """Every known profile by name; later folders override earlier ones."""
    found = {}
    for folder in search_path():
        for path in sorted(folder.glob("*.y*ml")) if folder.is_dir() else []:
            profile = load_profile_file(path)
            found[profile.name] = profile
    return found


def get_profile(name_or_path: str) -> DeviceProfile:
    """A profile by name, or from a YAML file."""
    if name_or_path.endswith((".yaml", ".yml")) or Path(name_or_path).is_file():
        return load_profile_file(Path(name_or_path))
    known = profiles()
    if name_or_path not in known:
        raise EdgegenError(f"unknown device '{name_or_path}' (known: {', '.join(sorted(known))}); "
                           "add a profile YAML to ~/.config/edgegen/devices/")
    return known[name_or_path]


def apply_local(profile: DeviceProfile) -> None:
    """Pin this process to the profile's CPUs (where the OS allows it)."""
    if profile.affinity and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, profile.affinity)
        except OSError as e:
            raise EdgegenError(f"device {profile.name}: cannot pin to CPUs {profile.affinity} ({e.strerror})") from None

"""Hardware fingerprint of this machine, in the manner of Nomad's client fingerprinters:
CPU, memory, OS and Python from the standard library and psutil; NVIDIA GPUs from
nvidia-smi, AMD GPUs from rocm-smi, Apple's MPS from the platform; torch's view when
torch happens to be installed (never required). The parsers of tool output are pure
functions so they can be tested on recorded text.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import logging
import platform
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil

from dtf_common.pb.dtf.v1 import types_pb2

log = logging.getLogger("dtf.worker.hardware")

TOOL_TIMEOUT_S = 3.0
NVIDIA_SMI_QUERY = [
    "nvidia-smi",
    "--query-gpu=index,name,memory.total,driver_version",
    "--format=csv,noheader,nounits",
]
ROCM_SMI_QUERY = ["rocm-smi", "--showproductname", "--json"]
_KIND_ORDER = ("cuda", "rocm", "mps")
_MIB = 1024 * 1024


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    kind: str  # "cuda", "rocm" or "mps"
    vendor: str
    memory_mb: int | None = None
    driver_version: str | None = None


@dataclass(frozen=True)
class HardwareProfile:
    hostname: str
    os: str
    os_release: str
    platform: str
    architecture: str
    cpu_model: str
    physical_cores: int | None
    logical_cores: int
    memory_mb: int
    python_version: str
    python_implementation: str
    gpus: tuple[GpuInfo, ...] = ()
    torch: dict[str, Any] | None = field(default=None)

    @property
    def gpu_count(self) -> int:
        return len(self.gpus)

    def hardware_kinds(self) -> list[str]:
        found = {gpu.kind for gpu in self.gpus}
        return ["cpu", *(kind for kind in _KIND_ORDER if kind in found)]

    def hardware_id(self) -> str:
        """A stable class name shared by identical machines: "cuda-nvidia-h200-x1", "cpu-x86_64-2c"."""
        if self.gpus:
            first = self.gpus[0]
            same = sum(1 for gpu in self.gpus if gpu.kind == first.kind)
            return f"{first.kind}-{slug(first.name)}-x{same}"
        return f"cpu-{slug(self.architecture)}-{self.logical_cores}c"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["gpus"] = [asdict(gpu) for gpu in self.gpus]
        data.update(hardware_id=self.hardware_id(), hardware_kinds=self.hardware_kinds(), gpu_count=self.gpu_count)
        return data

    def to_capabilities(self, slots: int, labels: Mapping[str, str] | None = None) -> types_pb2.Capabilities:
        return types_pb2.Capabilities(
            hardware=self.hardware_kinds(),
            gpu_count=self.gpu_count,
            memory_mb=self.memory_mb,
            labels=dict(labels or {}),
            slots=slots,
            details_json=json.dumps(self.to_dict(), sort_keys=True, default=str),
        )


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "-", text.lower()).strip("-") or "unknown"


# ---------------------------------------------------------------- pure parsers


def parse_nvidia_smi(text: str) -> list[GpuInfo]:
    """Lines of `index, name, memory.total (MiB), driver_version`; a name may itself hold commas."""
    gpus = []
    for line in text.splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) < 4 or not parts[0].isdigit():
            continue
        memory = parts[-2]
        gpus.append(
            GpuInfo(
                index=int(parts[0]),
                name=", ".join(parts[1:-2]),
                kind="cuda",
                vendor="NVIDIA",
                memory_mb=int(float(memory)) if re.fullmatch(r"\d+(\.\d+)?", memory) else None,
                driver_version=parts[-1] or None,
            )
        )
    return gpus


def parse_rocm_smi(text: str) -> list[GpuInfo]:
    """`rocm-smi --showproductname --json`: {"card0": {"Card Series": ..., ...}, ...}; key
    spelling varies between ROCm releases, so keys are matched case-insensitively."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return []
    if not isinstance(data, dict):
        return []
    gpus = []
    for card, fields in data.items():
        match = re.fullmatch(r"card(\d+)", str(card).lower())
        if not match or not isinstance(fields, dict):
            continue
        lowered = {str(k).lower(): str(v) for k, v in fields.items()}
        name = next(
            (lowered[k] for k in ("card series", "card model", "marketing name", "gfx version") if lowered.get(k)),
            "AMD GPU",
        )
        gpus.append(GpuInfo(index=int(match.group(1)), name=name, kind="rocm", vendor="AMD"))
    return sorted(gpus, key=lambda gpu: gpu.index)


def parse_cpu_model(cpuinfo: str) -> str | None:
    """The CPU's name from /proc/cpuinfo ("model name" on x86, "Model"/"Hardware" on ARM boards)."""
    found: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and value.strip():
            found.setdefault(key.strip().lower(), value.strip())
    return next((found[k] for k in ("model name", "cpu model", "model", "hardware") if k in found), None)


# ---------------------------------------------------------------- probes


def run_tool(argv: list[str], timeout: float = TOOL_TIMEOUT_S) -> str | None:
    """The tool's stdout, or None when it is not installed, fails or hangs."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("%s failed: %s", argv[0], exc)
        return None
    if done.returncode != 0:
        log.warning("%s exited with %d: %s", argv[0], done.returncode, done.stderr.strip()[-200:])
        return None
    return done.stdout


def _cpu_model() -> str:
    if sys.platform == "darwin":
        brand = run_tool(["sysctl", "-n", "machdep.cpu.brand_string"])
        if brand and brand.strip():
            return brand.strip()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            model = parse_cpu_model(f.read())
        if model:
            return model
    return platform.processor() or platform.machine() or "unknown"


def probe_torch() -> dict[str, Any] | None:
    """torch's view of the accelerators, when torch is installed; its import is slow, so only then."""
    if importlib.util.find_spec("torch") is None:
        return None
    try:
        torch: Any = importlib.import_module("torch")
        info: dict[str, Any] = {"version": str(torch.__version__), "hip": getattr(torch.version, "hip", None)}
        count = int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
        info["cuda_device_count"] = count
        info["cuda_devices"] = [
            {
                "name": torch.cuda.get_device_name(i),
                "memory_mb": torch.cuda.get_device_properties(i).total_memory // _MIB,
            }
            for i in range(count)
        ]
        mps = getattr(torch.backends, "mps", None)
        info["mps_available"] = bool(mps is not None and mps.is_available())
        return info
    except Exception as exc:  # a broken torch install must not stop the worker
        log.warning("torch is installed but could not be queried: %s", exc)
        return {"error": f"{type(exc).__name__}: {exc}"}


def _torch_gpus(torch_info: Mapping[str, Any]) -> list[GpuInfo]:
    kind, vendor = ("rocm", "AMD") if torch_info.get("hip") else ("cuda", "NVIDIA")
    return [
        GpuInfo(index=i, name=str(dev["name"]), kind=kind, vendor=vendor, memory_mb=int(dev["memory_mb"]))
        for i, dev in enumerate(torch_info.get("cuda_devices") or [])
    ]


def _architecture() -> str:
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "x64": "x86_64"}.get(machine, machine) or "unknown"


def detect_hardware() -> HardwareProfile:
    """Fingerprint this machine. Blocking (it may run nvidia-smi and import torch): call it off the event loop."""
    architecture = _architecture()
    cpu_model = _cpu_model()
    gpus: list[GpuInfo] = []
    nvidia = run_tool(NVIDIA_SMI_QUERY)
    if nvidia:
        gpus += parse_nvidia_smi(nvidia)
    rocm = run_tool(ROCM_SMI_QUERY)
    if rocm:
        gpus += parse_rocm_smi(rocm)
    torch_info = probe_torch()
    if not gpus and torch_info:
        gpus += _torch_gpus(torch_info)
    if sys.platform == "darwin" and architecture == "arm64" and (torch_info is None or torch_info.get("mps_available")):
        gpus.append(GpuInfo(index=0, name=cpu_model, kind="mps", vendor="Apple"))
    return HardwareProfile(
        hostname=socket.gethostname(),
        os=platform.system(),
        os_release=platform.release(),
        platform=platform.platform(),
        architecture=architecture,
        cpu_model=cpu_model,
        physical_cores=psutil.cpu_count(logical=False),
        logical_cores=psutil.cpu_count(logical=True) or 1,
        memory_mb=psutil.virtual_memory().total // _MIB,
        python_version=platform.python_version(),
        python_implementation=platform.python_implementation(),
        gpus=tuple(gpus),
        torch=torch_info,
    )

"""Hardware fingerprint parsers on recorded tool output, and the profile's derived names."""

from __future__ import annotations

import json

from dtf_worker.hardware import (
    GpuInfo,
    HardwareProfile,
    detect_hardware,
    parse_cpu_model,
    parse_nvidia_smi,
    parse_rocm_smi,
    slug,
)

NVIDIA_SMI = """\
0, NVIDIA H200, 143771, 550.54.15
1, NVIDIA H200, 143771, 550.54.15
"""

ROCM_SMI = json.dumps(
    {
        "card0": {"Card Series": "AMD Instinct MI250X", "Card Vendor": "Advanced Micro Devices, Inc. [AMD/ATI]"},
        "card1": {"Card series": "AMD Instinct MI250X", "Card model": "0x740c"},
        "system": {"Driver version": "6.3.6"},
    }
)


def profile(gpus: tuple[GpuInfo, ...] = ()) -> HardwareProfile:
    return HardwareProfile(
        hostname="h",
        os="Linux",
        os_release="6.1",
        platform="Linux-6.1-x86_64",
        architecture="x86_64",
        cpu_model="Some CPU",
        physical_cores=2,
        logical_cores=4,
        memory_mb=16000,
        python_version="3.11.7",
        python_implementation="CPython",
        gpus=gpus,
    )


def test_parse_nvidia_smi() -> None:
    gpus = parse_nvidia_smi(NVIDIA_SMI)
    assert gpus == [
        GpuInfo(
            index=0, name="NVIDIA H200", kind="cuda", vendor="NVIDIA", memory_mb=143771, driver_version="550.54.15"
        ),
        GpuInfo(
            index=1, name="NVIDIA H200", kind="cuda", vendor="NVIDIA", memory_mb=143771, driver_version="550.54.15"
        ),
    ]


def test_parse_nvidia_smi_odd_lines() -> None:
    text = "0, Tesla T4, [N/A], 535.1\n\nNo devices were found\n1, GeForce RTX 3090, Founders, 24576, 535.1\n"
    gpus = parse_nvidia_smi(text)
    assert [(g.index, g.name, g.memory_mb) for g in gpus] == [
        (0, "Tesla T4", None),
        (1, "GeForce RTX 3090, Founders", 24576),
    ]


def test_parse_rocm_smi() -> None:
    gpus = parse_rocm_smi(ROCM_SMI)
    assert [(g.index, g.name, g.kind, g.vendor) for g in gpus] == [
        (0, "AMD Instinct MI250X", "rocm", "AMD"),
        (1, "AMD Instinct MI250X", "rocm", "AMD"),
    ]
    assert parse_rocm_smi("WARNING: not json") == []


def test_parse_cpu_model() -> None:
    x86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel\t\t: 85\nmodel name\t: Intel(R) Xeon(R) Gold 6248\n"
    assert parse_cpu_model(x86) == "Intel(R) Xeon(R) Gold 6248"
    assert parse_cpu_model("processor : 0\nHardware : BCM2835\nModel : Raspberry Pi 4\n") == "Raspberry Pi 4"
    assert parse_cpu_model("") is None


def test_hardware_ids_and_kinds() -> None:
    cpu = profile()
    assert cpu.hardware_id() == "cpu-x86_64-4c" and cpu.hardware_kinds() == ["cpu"] and cpu.gpu_count == 0
    cuda = profile(tuple(parse_nvidia_smi(NVIDIA_SMI)))
    assert cuda.hardware_id() == "cuda-nvidia-h200-x2"
    assert cuda.hardware_kinds() == ["cpu", "cuda"] and cuda.gpu_count == 2
    assert profile((GpuInfo(0, "Apple M2 Pro", "mps", "Apple"),)).hardware_id() == "mps-apple-m2-pro-x1"
    assert slug("AMD Instinct MI250X (gfx90a)") == "amd-instinct-mi250x-gfx90a"


def test_capabilities_carry_the_full_fingerprint() -> None:
    caps = profile(tuple(parse_rocm_smi(ROCM_SMI))).to_capabilities(slots=4, labels={"zone": "a"})
    assert list(caps.hardware) == ["cpu", "rocm"]
    assert (caps.gpu_count, caps.memory_mb, caps.slots, dict(caps.labels)) == (2, 16000, 4, {"zone": "a"})
    details = json.loads(caps.details_json)
    assert details["hardware_id"] == "rocm-amd-instinct-mi250x-x2"
    assert details["cpu_model"] == "Some CPU" and len(details["gpus"]) == 2


def test_detect_this_machine() -> None:
    found = detect_hardware()
    assert found.hardware_kinds()[0] == "cpu"
    assert found.logical_cores >= 1 and found.memory_mb > 0 and found.hostname
    assert found.hardware_id().startswith(found.hardware_kinds()[-1])

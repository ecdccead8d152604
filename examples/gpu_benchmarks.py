"""GPU benchmark entry points (`type: benchmark`, `requirements: {hardware: cuda}`).

{"type": "benchmark", "requirements": {"hardware": "cuda"},
 "parameters": {"entry": "gpu_benchmarks:torch_matmul", "args": {"size": 8192},
                "warmup": 3, "repetitions": 20, "pythonpath": ["examples"]}}
"""

from __future__ import annotations


def torch_matmul(size: int = 4096, dtype: str = "bfloat16") -> dict[str, float]:
    """One size x size x size matrix product on the first CUDA device; items are TFLOPs done."""
    import torch

    a = torch.randn(size, size, device="cuda", dtype=getattr(torch, dtype))
    torch.cuda.synchronize()
    (a @ a).sum().item()  # .item() waits for the kernel, so the call's latency is the product's
    return {"items": 2 * size**3 / 1e12}

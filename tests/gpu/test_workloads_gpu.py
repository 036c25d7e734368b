"""On a CUDA GPU: the study's shapes materialize directly in every precision the GPU supports."""

from __future__ import annotations

import pytest

from joulebench.workloads.models import load_model
from joulebench.workloads.precision import supported_precisions
from joulebench.workloads.shapes import shape_dict, weight_bytes

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("shape", ["Qwen2.5-0.5B-Instruct", "Llama-3.1-8B-Instruct"])
def test_shape_in_every_supported_precision(shape: str) -> None:
    import torch

    for precision in supported_precisions(shape_dict(shape), "cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        loaded = load_model(f"shape:{shape}", precision, "cuda")
        peak = torch.cuda.max_memory_allocated()
        expected = weight_bytes(shape_dict(shape), precision)
        # materialized directly: no full-precision copy, so the peak stays near the weights
        assert peak < 1.3 * expected + 2**30, (precision, peak, expected)
        ids = torch.tensor([[1, 2, 3, 4]], device="cuda")
        out = loaded.model.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)
        assert out.shape == (1, 8)
        del loaded

"""The one `auto` precision rule: bf16 autocast on CUDA, fp32 elsewhere."""

import pytest
import torch

from pretrain.runtime.errors import ConfigError
from pretrain.runtime.precision import autocast, resolve_precision


def test_auto_is_bf16_on_cuda_only():
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert resolve_precision("auto", cpu) == "fp32" and resolve_precision("auto", cuda) == "bf16"
    assert resolve_precision("bf16", cpu) == "bf16" and resolve_precision("fp32", cuda) == "fp32"
    with pytest.raises(ConfigError, match="'fp16'"):
        resolve_precision("fp16", cpu)


def test_autocast_on_cpu():
    a = torch.randn(4, 4)
    with autocast("bf16", torch.device("cpu")):
        assert (a @ a).dtype == torch.bfloat16
    with autocast("auto", torch.device("cpu")):
        assert (a @ a).dtype == torch.float32

"""Pure parts of the mixed-precision choice and of FSDP's block selection (no processes)."""

import pytest
import torch
from torch import nn

from rafter.train.torch import choose_autocast_dtype
from rafter.train.torch._amp import autocast_dtype, describe_choice
from rafter.train.torch._fsdp import find_blocks

A100 = {"name": "NVIDIA A100-SXM4-80GB", "bf16": True}
H100 = {"name": "NVIDIA H100", "bf16": True}
V100 = {"name": "Tesla V100-SXM2-16GB", "bf16": False}
CPU = {"name": "x86_64", "device_type": "cpu", "bf16": False}


@pytest.mark.parametrize("caps, expected", [
    ([A100, H100], (torch.bfloat16, False)),
    ([A100], (torch.bfloat16, False)),
    ([A100, V100], (torch.float16, True)),
    ([V100, V100], (torch.float16, True)),
    ([CPU, CPU], (None, False)),
    ([A100, CPU], (None, False)),
])
def test_choose_autocast_dtype(caps, expected):
    assert choose_autocast_dtype(caps) == expected


def test_choice_is_explained_per_rank():
    caps = [A100, V100]
    lines = describe_choice(caps, choose_autocast_dtype(caps))
    assert lines[0] == "rank 0: NVIDIA A100-SXM4-80GB (cuda, bf16 yes)"
    assert lines[1] == "rank 1: Tesla V100-SXM2-16GB (cuda, bf16 no)"
    assert lines[2] == "mixed precision: float16 with GradScaler, because rank(s) 1 (Tesla V100-SXM2-16GB) lack bfloat16"
    assert "off (fp32)" in describe_choice([CPU], (None, False))[-1]


def test_bad_capabilities_name_the_rank():
    with pytest.raises(ValueError, match="expected one capabilities dict per rank"):
        choose_autocast_dtype([])
    with pytest.raises(ValueError, match="rank 1's capabilities .* lack the 'bf16' key"):
        choose_autocast_dtype([A100, {"name": "V100"}])


def test_autocast_dtype_without_process_group_uses_this_process(capsys):
    assert autocast_dtype(torch.device("cpu")) == (None, False)
    assert capsys.readouterr().out.startswith("rank 0: ")


class Layer(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.Linear(2, 2)
        self.experts = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)])  # nested list: not a block


class Transformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(5, 2)
        self.body = nn.Module()
        self.body.layers = nn.ModuleList([Layer(), Layer(), nn.ReLU()])  # ReLU has no params: skipped
        self.norm = nn.LayerNorm(2)


def test_blocks_are_the_outermost_module_list_elements_with_params():
    model = Transformer()
    assert find_blocks(model) == [model.body.layers[0], model.body.layers[1]]


def test_without_module_list_blocks_are_children_with_params():
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
    assert find_blocks(model) == [model[0], model[2]]


def test_blocks_by_class():
    model = Transformer()
    assert find_blocks(model, (nn.LayerNorm,)) == [model.norm]
    assert find_blocks(model, (Layer,)) == [model.body.layers[0], model.body.layers[1]]

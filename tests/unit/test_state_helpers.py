"""Checkpoint helpers outside a process group (a plain script) and load_checkpoint_file's safety default."""

import pickle

import pytest
import torch

from rafter.train.torch import get_state_dict, load_checkpoint_file, load_state_dict


class Custom:
    pass


def test_load_checkpoint_file_is_weights_only_unless_asked(tmp_path):
    path = tmp_path / "state.pt"
    torch.save({"w": torch.ones(2), "step": 3}, path)
    assert load_checkpoint_file(path)["step"] == 3
    torch.save({"obj": Custom()}, path)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint_file(path)  # arbitrary pickled objects are refused by default
    assert isinstance(load_checkpoint_file(path, weights_only=False)["obj"], Custom)


def test_load_checkpoint_file_missing_names_what_is_there(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"state.pt.*no such file.*\['model.pt'\]"):
        load_checkpoint_file(tmp_path / "state.pt")


def test_state_dict_round_trip_without_a_process_group():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 2)).sum().backward()
    opt.step()
    state = get_state_dict(model, opt)
    assert sorted(state) == ["model", "optimizer"] and sorted(state["model"]) == sorted(model.state_dict())

    fresh = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    fresh_opt = torch.optim.Adam(fresh.parameters())
    load_state_dict(fresh, state, fresh_opt)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), fresh.parameters()))
    assert fresh_opt.state_dict()["state"][0]["step"] == 1

    load_state_dict(fresh, state["model"])  # a plain model state dict works too
    with pytest.raises(ValueError, match="no 'optimizer' entry"):
        load_state_dict(fresh, {"model": state["model"]}, fresh_opt)
    with pytest.raises(ValueError, match="empty state dict"):
        load_state_dict(fresh, {})

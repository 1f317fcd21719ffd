"""ModelEma against a hand computation, buffers, wrappers and state round trip."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from visionzoo.engine.checkpoint import load_checkpoint, make_state, save_checkpoint
from visionzoo.engine.ema import ModelEma
from visionzoo.errors import CheckpointError, ConfigError


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))


def _train_step(model: nn.Module, opt: torch.optim.Optimizer) -> None:
    model.train()
    loss = model(torch.randn(8, 3)).square().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_three_updates_match_hand_computation():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    ema = ModelEma(model, decay=0.2, warmup=True)
    expected = {k: v.clone().double() for k, v in model.state_dict().items()}
    # Warmup decay min(0.2, (1 + n) / (10 + n)) for n = 0, 1, 2: 0.1, 0.18..., 0.2.
    decays = [min(0.2, (1 + n) / (10 + n)) for n in range(3)]
    assert decays == [0.1, 2 / 11, 0.2]
    for d in decays:
        assert ema.current_decay() == pytest.approx(d)
        _train_step(model, opt)
        ema.update(model)
        for k, w in model.state_dict().items():
            if w.is_floating_point():
                expected[k] = d * expected[k] + (1 - d) * w.double()
            else:
                expected[k] = w.clone()
    assert ema.updates == 3
    got = ema.module.state_dict()
    for k, v in expected.items():
        if v.is_floating_point():
            torch.testing.assert_close(got[k].double(), v, rtol=1e-6, atol=1e-7)
        else:
            assert torch.equal(got[k], v), k
    # Buffers: BN running stats are averaged, num_batches_tracked is copied.
    assert got["1.num_batches_tracked"].item() == 3
    assert not torch.allclose(got["1.running_mean"], model.state_dict()["1.running_mean"])
    # The average differs from the model itself (it is not a plain copy).
    assert not torch.allclose(got["0.weight"], model.state_dict()["0.weight"])


def test_without_warmup_uses_constant_decay():
    model = _model()
    ema = ModelEma(model, decay=0.9, warmup=False)
    start = ema.module[0].weight.clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    ema.update(model)
    torch.testing.assert_close(ema.module[0].weight, 0.9 * start + 0.1 * model[0].weight)


def test_copy_is_frozen_eval_and_independent():
    model = _model()
    ema = ModelEma(model)
    assert not ema.module.training
    assert all(not p.requires_grad for p in ema.module.parameters())
    assert all(p.requires_grad for p in model.parameters())
    assert ema.module[0].weight.data_ptr() != model[0].weight.data_ptr()
    ema.update(model)
    assert not ema.module.training  # update never switches the copy to train mode


class _Wrapper(nn.Module):
    """Stands in for DDP: the real model is at ``.module``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module


def test_unwraps_ddp_like_wrappers():
    model = _model()
    ema = ModelEma(_Wrapper(model), decay=0.5, warmup=False)
    assert isinstance(ema.module, nn.Sequential)
    with torch.no_grad():
        model[3].bias.fill_(2.0)
    before = ema.module[3].bias.clone()
    ema.update(_Wrapper(model))
    torch.testing.assert_close(ema.module[3].bias, 0.5 * before + 0.5 * 2.0)


def test_state_round_trip_through_checkpoint(tmp_path):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ema = ModelEma(model, decay=0.99)
    for _ in range(4):
        _train_step(model, opt)
        ema.update(model)
    save_checkpoint(make_state(ema=ema.state_dict()), tmp_path / "c.pt")
    state = load_checkpoint(tmp_path / "c.pt")["ema"]

    restored = ModelEma(_model(), decay=0.99)
    restored.load_state_dict(state)
    assert restored.updates == 4
    assert restored.current_decay() == ema.current_decay() == pytest.approx(5 / 14)
    for (k, a), b in zip(
        ema.module.state_dict().items(), restored.module.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), k
    # The next update continues identically.
    _train_step(model, opt)
    ema.update(model)
    restored.update(model)
    for a, b in zip(
        ema.module.state_dict().values(), restored.module.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)


def test_bad_decay_and_bad_state():
    with pytest.raises(ConfigError, match=r"trainer\.ema_decay must be in \[0, 1\)"):
        ModelEma(_model(), decay=1.0)
    ema = ModelEma(_model())
    with pytest.raises(CheckpointError, match="'module' state dict"):
        ema.load_state_dict({"updates": 3})
    with pytest.raises(CheckpointError, match="EMA weights do not match"):
        ema.load_state_dict({"module": nn.Linear(2, 2).state_dict(), "updates": 1})

"""ClassificationTask: losses against independent F.cross_entropy, evaluation against
scikit-learn, prediction and rendering, with tiny models and hand-made or built-in data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from visionzoo.data.bundle import DataBundle
from visionzoo.data.transforms import batch_mix, eval_transform
from visionzoo.engine.config import RunConfig
from visionzoo.errors import DataError
from visionzoo.models.outputs import AuxOutput
from visionzoo.tasks import get_task
from visionzoo.tasks.base import Task
from visionzoo.tasks.classification import ClassificationTask

K = 4
NAMES = ["circle", "square", "triangle", "star"]
MEAN = (0.5, 0.4, 0.3)
STD = (0.25, 0.2, 0.3)


class TinyNet(nn.Module):
    """conv -> pool -> linear; optional aux heads returning AuxOutput in training mode."""

    def __init__(self, num_classes: int = K, aux: int = 0):
        super().__init__()
        self.num_classes = num_classes
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.fc = nn.Linear(8, num_classes)
        self.aux = nn.ModuleList(nn.Linear(8, num_classes) for _ in range(aux))

    def forward(self, x):
        f = self.features(x)
        logits = self.fc(f)
        if self.training and len(self.aux):
            return AuxOutput(logits, tuple(h(f) for h in self.aux))
        return logits


def _cfg(**data) -> RunConfig:
    cfg = RunConfig()
    cfg.data.image_size = 16
    cfg.data.mean, cfg.data.std = list(MEAN), list(STD)
    for k, v in data.items():
        setattr(cfg.data, k, v)
    return cfg


def _bundle(cfg: RunConfig, n_val: int = 37) -> DataBundle:
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n_val, 3, 16, 16), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, K, (n_val,), generator=g)
    ds = TensorDataset(images, labels)
    return DataBundle(
        train=ds,
        val=ds,
        num_classes=K,
        class_names=list(NAMES),
        mean=MEAN,
        std=STD,
        eval_transform=eval_transform(cfg.data),
    )


def _task(cfg: RunConfig | None = None) -> ClassificationTask:
    cfg = cfg or _cfg()
    task = ClassificationTask(cfg)
    task.bundle = _bundle(cfg)
    return task


def _reference_input(images: torch.Tensor) -> torch.Tensor:
    """Independent normalisation: (x / 255 - mean) / std."""
    m = torch.tensor(MEAN).view(1, 3, 1, 1)
    s = torch.tensor(STD).view(1, 3, 1, 1)
    return (images.float() / 255 - m) / s


def _batch(n: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=g)
    return images, torch.randint(0, K, (n,), generator=g)


def test_protocol_and_lookup():
    cfg = _cfg()
    cfg.task = "classification"
    task = get_task(cfg)
    assert isinstance(task, ClassificationTask) and isinstance(task, Task)
    assert (task.name, task.monitor, task.monitor_mode) == ("classification", "val/acc1", "max")
    assert task.model_kwargs(_bundle(cfg)) == {"num_classes": K}


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_training_step_plain_loss_matches_cross_entropy(smoothing):
    cfg = _cfg()
    cfg.loss.label_smoothing = smoothing
    task, model = _task(cfg), TinyNet()
    images, labels = _batch()
    out = task.training_step(model, (images, labels))
    assert set(out) == {"loss", "acc1"}
    logits = model(_reference_input(images))
    expected = F.cross_entropy(logits, labels, label_smoothing=smoothing)
    torch.testing.assert_close(out["loss"], expected)
    assert out["loss"].requires_grad and not out["acc1"].requires_grad
    ref_acc = accuracy_score(labels.numpy(), logits.argmax(1).numpy())
    assert out["acc1"].item() == pytest.approx(ref_acc)
    out["loss"].backward()
    assert model.fc.weight.grad is not None


def test_training_step_aux_heads_weighted_0_3():
    cfg = _cfg()
    cfg.loss.label_smoothing = 0.1
    assert cfg.loss.aux_weight == 0.3  # the paper's weight is the default
    task, model = _task(cfg), TinyNet(aux=2)
    images, labels = _batch()
    out = task.training_step(model, (images, labels))
    assert set(out) == {"loss", "loss_main", "loss_aux1", "loss_aux2", "acc1"}
    ref = model(_reference_input(images))
    assert isinstance(ref, AuxOutput)
    ce = [F.cross_entropy(t, labels, label_smoothing=0.1) for t in (ref.logits, *ref.aux)]
    torch.testing.assert_close(out["loss"], ce[0] + 0.3 * (ce[1] + ce[2]))
    torch.testing.assert_close(out["loss_main"], ce[0].detach())
    torch.testing.assert_close(out["loss_aux1"], ce[1].detach())
    torch.testing.assert_close(out["loss_aux2"], ce[2].detach())
    assert out["loss"].requires_grad
    assert not any(out[k].requires_grad for k in ("loss_main", "loss_aux1", "loss_aux2", "acc1"))
    out["loss"].backward()
    assert all(h.weight.grad is not None for h in model.aux)  # aux heads are trained


def test_training_step_aux_weight_from_config():
    cfg = _cfg()
    cfg.loss.aux_weight = 1.5
    task, model = _task(cfg), TinyNet(aux=1)
    images, labels = _batch()
    out = task.training_step(model, (images, labels))
    torch.testing.assert_close(out["loss"], out["loss_main"] + 1.5 * out["loss_aux1"])


@pytest.mark.parametrize("bad", [K, 11, -1])
def test_training_step_rejects_out_of_range_labels(bad):
    task, model = _task(), TinyNet()
    images, labels = _batch()
    labels[3] = bad
    with pytest.raises(DataError, match=rf"label {bad} is out of range for {K} classes"):
        task.training_step(model, (images, labels))


def test_training_step_without_bundle_uses_the_models_class_count():
    task = ClassificationTask(_cfg())  # no build_data(): mean/std from the config
    images, labels = _batch()
    out = task.training_step(TinyNet(), (images, labels))
    assert torch.isfinite(out["loss"])
    labels[0] = 7
    with pytest.raises(DataError, match=r"label 7 is out of range for 4 classes"):
        task.training_step(TinyNet(), (images, labels))


@pytest.mark.parametrize("mix", [{"mixup_alpha": 0.2}, {"cutmix_alpha": 1.0}])
def test_training_step_mixup_cutmix(mix):
    cfg = _cfg(**mix)
    cfg.loss.label_smoothing = 0.1
    task, model = _task(cfg), TinyNet(aux=2)
    images, labels = _batch(8)
    torch.manual_seed(123)
    out = task.training_step(model, (images, labels))
    assert "acc1" not in out  # mixed targets have no hard label
    assert torch.isfinite(out["loss"]) and out["loss"].requires_grad
    # The same draw by hand: mix the normalised batch, then soft-target cross-entropy.
    torch.manual_seed(123)
    x, soft = batch_mix(cfg.data, K)(_reference_input(images), labels)
    assert soft.shape == (8, K) and torch.allclose(soft.sum(1), torch.ones(8))
    assert (soft.max(1).values < 0.999).any()  # really mixed, not one-hot
    ref = model(x)
    ce = [F.cross_entropy(t, soft, label_smoothing=0.1) for t in (ref.logits, *ref.aux)]
    torch.testing.assert_close(out["loss"], ce[0] + 0.3 * (ce[1] + ce[2]))
    out["loss"].backward()


def test_evaluate_matches_sklearn():
    task, model = _task(), TinyNet().eval()
    loader = DataLoader(task.bundle.val, batch_size=8)  # 37 samples: uneven last batch
    with torch.no_grad():
        res = task.evaluate(model, loader)
        images, labels = task.bundle.val.tensors
        logits = model(_reference_input(images))
    assert set(res) == {"val/loss", "val/acc1", "val/acc5", "val/mean_class_acc"}
    y, pred = labels.numpy(), logits.argmax(1).numpy()
    assert res["val/acc1"] == pytest.approx(accuracy_score(y, pred))
    assert res["val/acc5"] == 1.0  # top-5 of 4 classes
    assert res["val/mean_class_acc"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert res["val/loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)
    assert all(isinstance(v, float) for v in res.values())
    cm = task.last_eval["confusion_matrix"]
    np.testing.assert_array_equal(cm.numpy(), confusion_matrix(y, pred, labels=range(K)))
    assert task.last_eval["class_names"] == NAMES
    assert len(task.last_eval["per_class_acc"]) == K
    assert task.last_eval["count"] == 37


def test_evaluate_uses_main_logits_of_aux_output_and_rejects_bad_data():
    task, model = _task(), TinyNet(aux=2)
    model.train()  # misbehaving model: AuxOutput at evaluation time
    loader = DataLoader(task.bundle.val, batch_size=16)
    with torch.no_grad():
        res = task.evaluate(model, loader)
        model.eval()
        ref = task.evaluate(model, loader)
    assert res == pytest.approx(ref)
    images, labels = task.bundle.val.tensors
    bad = DataLoader(TensorDataset(images, labels.clone().fill_(9)), batch_size=16)
    with pytest.raises(DataError, match=r"label 9 is out of range for 4 classes"):
        task.evaluate(model, bad)
    with pytest.raises(DataError, match=r"predicts 6 classes but the data has 4"):
        task.evaluate(TinyNet(num_classes=6).eval(), loader)
    with pytest.raises(DataError, match=r"empty"):
        task.evaluate(model, DataLoader(TensorDataset(images[:0], labels[:0]), batch_size=4))


def _pil_images():
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)),
        Image.fromarray(rng.integers(0, 256, (40, 30), dtype=np.uint8), mode="L"),
        Image.fromarray(rng.integers(0, 256, (20, 24, 4), dtype=np.uint8), mode="RGBA"),
    ]


def test_predict_topk_sorted_probabilities_and_names():
    task, model = _task(), TinyNet()
    model.train()
    out = task.predict(model, _pil_images(), topk=3)
    assert model.training  # predict restores the mode it found
    assert len(out) == 3
    for item in out:
        top = item["topk"]
        assert len(top) == 3
        probs = [t["prob"] for t in top]
        assert probs == sorted(probs, reverse=True)
        assert sum(probs) <= 1.0 + 1e-6 and all(0.0 <= p <= 1.0 for p in probs)
        assert all(t["label"] == NAMES[t["index"]] for t in top)
    # Against an independent pipeline: the eval transform, normalisation, softmax.
    x = torch.stack([eval_transform(task.cfg.data)(im) for im in _pil_images()])
    with torch.no_grad():
        ref = model.eval()(_reference_input(x)).softmax(1)
    for item, row in zip(out, ref, strict=True):
        assert item["topk"][0]["index"] == int(row.argmax())
        assert item["topk"][0]["prob"] == pytest.approx(float(row.max()), rel=1e-5)
    # topk beyond K is clipped; a model's own class names win over the bundle's.
    model.class_names = ["a", "b", "c", "d"]
    full = task.predict(model, _pil_images()[:1], topk=10)[0]["topk"]
    assert len(full) == K
    assert sum(t["prob"] for t in full) == pytest.approx(1.0, abs=1e-5)
    assert {t["label"] for t in full} == {"a", "b", "c", "d"}
    assert task.predict(model, []) == []


def test_predict_falls_back_to_index_names():
    task = ClassificationTask(_cfg())  # no bundle: config's eval transform and index names
    out = task.predict(TinyNet(num_classes=3), _pil_images()[:2], topk=2)
    assert [len(o["topk"]) for o in out] == [2, 2]
    assert all(t["label"] == str(t["index"]) for o in out for t in o["topk"])


def test_render_upscales_tiny_images_with_caption():
    task, model = _task(), TinyNet()
    img = _pil_images()[0]  # 8x8
    pred = task.predict(model, [img], topk=3)[0]
    out = task.render(img, pred)
    assert isinstance(out, Image.Image) and out.mode == "RGB"
    assert out.width >= 256 and out.height > 256  # image plus caption band
    # The top is the input blown up by an integer factor with nearest-neighbour.
    top = out.crop(((out.width - 256) // 2, 0, (out.width - 256) // 2 + 256, 256))
    assert np.array_equal(np.asarray(top), np.asarray(img.resize((256, 256), Image.NEAREST)))
    # The caption band has text drawn in it (not one flat colour).
    band = np.asarray(out.crop((0, 256, out.width, out.height)).convert("L"))
    assert band.max() - band.min() > 100
    # Large images are not resized; more entries make a taller band.
    big = Image.new("RGB", (400, 300), (10, 200, 30))
    r1 = task.render(big, {"topk": pred["topk"][:1]})
    r3 = task.render(big, pred)
    assert r1.width == 400 and r1.height > 300 and r3.height > r1.height


def test_render_handles_empty_prediction():
    out = _task().render(Image.new("L", (10, 20)), {"topk": []})
    # Short side 10 -> integer factor ceil(256 / 10) = 26: 260 x 520, plus the band.
    assert out.width == 260 and out.height > 520


# -- with the real data builders and models -------------------------------------------------


def _shapes_task() -> ClassificationTask:
    cfg = _cfg(name="shapes", image_size=32, train_size=8, val_size=12, num_classes=3)
    cfg.data.mean, cfg.data.std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    return ClassificationTask(cfg)


def test_shapes_end_to_end():
    task = _shapes_task()
    bundle = task.build_data()
    assert task.bundle is bundle and bundle.num_classes == 3
    model = TinyNet(**task.model_kwargs(bundle), aux=2)
    images, labels = next(iter(DataLoader(bundle.train, batch_size=4)))
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 32, 32)
    out = task.training_step(model, (images, labels))
    assert set(out) == {"loss", "loss_main", "loss_aux1", "loss_aux2", "acc1"}
    out["loss"].backward()
    model.eval()
    with torch.no_grad():
        res = task.evaluate(model, DataLoader(bundle.val, batch_size=5))
        vi, vl = next(iter(DataLoader(bundle.val, batch_size=12)))
        ref = model(_normalise_with(vi, bundle))
    y, pred = vl.numpy(), ref.argmax(1).numpy()
    assert res["val/acc1"] == pytest.approx(accuracy_score(y, pred))
    assert res["val/loss"] == pytest.approx(F.cross_entropy(ref, vl).item(), rel=1e-5)
    np.testing.assert_array_equal(
        task.last_eval["confusion_matrix"].numpy(), confusion_matrix(y, pred, labels=range(3))
    )
    assert task.last_eval["class_names"] == bundle.class_names
    pil = Image.fromarray(vi[0].permute(1, 2, 0).numpy())
    top = task.predict(model, [pil], topk=5)[0]
    assert len(top["topk"]) == 3
    assert top["topk"][0]["label"] == bundle.class_names[int(pred[0])]
    assert task.render(pil, top).width >= 256


def test_googlenet_aux_heads_through_the_task():
    import visionzoo as vz

    task = _shapes_task()
    bundle = task.build_data()
    model = vz.create_model("googlenet", **task.model_kwargs(bundle)).train()
    images, labels = next(iter(DataLoader(bundle.train, batch_size=2)))
    out = task.training_step(model, (images, labels))
    assert {"loss", "loss_main", "loss_aux1", "loss_aux2", "acc1"} == set(out)
    torch.testing.assert_close(
        out["loss"], out["loss_main"] + 0.3 * (out["loss_aux1"] + out["loss_aux2"])
    )
    out["loss"].backward()
    assert model.aux1.fc2.weight.grad is not None


def _normalise_with(images: torch.Tensor, bundle: DataBundle) -> torch.Tensor:
    m = torch.tensor(bundle.mean).view(1, 3, 1, 1)
    s = torch.tensor(bundle.std).view(1, 3, 1, 1)
    return (images.float() / 255 - m) / s


def test_digits_logistic_regression_learns():
    """A linear model trained through training_step reaches high accuracy on real digits."""
    cfg = _cfg(name="digits", image_size=8, augment="none")
    cfg.data.mean, cfg.data.std = [0.5] * 3, [0.5] * 3
    task = ClassificationTask(cfg)
    bundle = task.build_data()
    assert bundle.num_classes == 10
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(3 * 8 * 8, task.model_kwargs(bundle)["num_classes"])
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loader = DataLoader(bundle.train, batch_size=64, shuffle=True)
    for _ in range(3):
        for batch in loader:
            loss = task.training_step(model, batch)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        res = task.evaluate(model.eval(), DataLoader(bundle.val, batch_size=128))
    assert res["val/acc1"] > 0.85, res
    assert res["val/acc5"] >= res["val/acc1"]
    cm = task.last_eval["confusion_matrix"]
    assert cm.shape == (10, 10) and int(cm.sum()) == len(bundle.val)

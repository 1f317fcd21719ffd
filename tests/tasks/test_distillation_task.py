"""Distillation in ClassificationTask (DeiT arXiv:2012.12877 §5): the loss composition against
independently computed parts, the teacher's input (its own normalisation and size), the
teacher frozen in eval mode under the trainer's autocast, config and checkpoint errors, and the
Trainer end to end on tiny `shapes`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from visionzoo.data.transforms import normalize
from visionzoo.engine.checkpoint import make_state, save_checkpoint
from visionzoo.engine.config import RunConfig, config_to_dict, load_config
from visionzoo.engine.trainer import Trainer
from visionzoo.errors import CheckpointError, ConfigError
from visionzoo.losses.distillation import hard_distillation_loss, soft_distillation_loss
from visionzoo.models.outputs import AuxOutput
from visionzoo.registry import create_model
from visionzoo.tasks.classification import ClassificationTask, load_teacher

K = 4
SIZE = 16  # the student's images
S_MEAN, S_STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)  # the student's normalisation
T_MEAN, T_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # the teacher's (defaults)
TEACHER = "resnet18"
TEACHER_ARGS: dict = {}


def write_teacher(
    path: Path,
    *,
    num_classes: int = K,
    image_size: int = SIZE,
    class_names: list[str] | None = None,
) -> nn.Module:
    """A checkpoint in the format `visionzoo train` writes (what load_model reads); returns the
    model it holds, in eval mode."""
    model = create_model(TEACHER, num_classes=num_classes, **TEACHER_ARGS)
    with torch.no_grad():
        # Real BatchNorm statistics (train-mode BN would give other outputs) and a head that
        # spreads the logits, so that the teacher's predictions depend on its input.
        model.train()
        for _ in range(2):
            model(torch.rand(8, 3, image_size, image_size) * 4 - 2)
        nn.init.normal_(model.fc.weight, std=2.0)
    model.eval()
    cfg = RunConfig()
    cfg.model.name, cfg.model.args = TEACHER, dict(TEACHER_ARGS)
    cfg.data.image_size = image_size
    save_checkpoint(
        make_state(
            config=config_to_dict(cfg),
            model_kwargs={"num_classes": num_classes},
            model=model.state_dict(),
            class_names=class_names,
        ),
        path,
    )
    return model.eval()


def student_cfg(teacher: Path | str | None, kind: str = "soft", **distill) -> RunConfig:
    cfg = RunConfig()
    cfg.data.image_size = SIZE
    cfg.data.mean, cfg.data.std = list(S_MEAN), list(S_STD)
    cfg.distill.teacher = None if teacher is None else str(teacher)
    cfg.distill.type = kind
    for k, v in distill.items():
        setattr(cfg.distill, k, v)
    return cfg


def deit(**kwargs) -> nn.Module:
    """The micro DeiT with a [distill] token, on 16x16 images (4x4 patches -> 16 tokens)."""
    return create_model("deit_micro_distilled_patch4_32", num_classes=K, img_size=SIZE, **kwargs)


class TinyNet(nn.Module):
    """A classifier without a [distill] token; optional GoogLeNet-style aux heads."""

    def __init__(self, aux: int = 0):
        super().__init__()
        self.num_classes = K
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.fc = nn.Linear(8, K)
        self.aux = nn.ModuleList(nn.Linear(8, K) for _ in range(aux))

    def forward(self, x):
        f = self.features(x)
        if self.training and len(self.aux):
            return AuxOutput(self.fc(f), tuple(h(f) for h in self.aux))
        return self.fc(f)


def batch(n: int = 6, size: int = SIZE):
    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, K, (n,), generator=g)
    return images, labels


def teacher_logits_by_hand(teacher: nn.Module, images: torch.Tensor, size: int) -> torch.Tensor:
    """What the teacher should see: the raw images normalised with *its* mean/std, resized to
    its training size."""
    x = normalize(images, T_MEAN, T_STD)
    if x.shape[-1] != size:
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
    with torch.no_grad():
        return teacher.eval()(x)


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny tensors: one intra-op thread is fastest, and on a loaded machine spinning OpenMP
    # threads make these steps tens of times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def teacher_ckpt(tmp_path):
    path = tmp_path / "teacher.pt"
    return path, write_teacher(path)


# --- the loss -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["soft", "hard"])
def test_deit_distill_head_learns_from_teacher_cls_head_from_labels(teacher_ckpt, kind):
    path, teacher = teacher_ckpt
    alpha, tau = 0.3, 2.0
    task = ClassificationTask(student_cfg(path, kind, alpha=alpha, tau=tau))
    model = deit().train()
    images, labels = batch()
    out = task.training_step(model, (images, labels))
    assert set(out) == {"loss", "loss_cls", "loss_distill", "acc1"}

    ref = model(normalize(images, S_MEAN, S_STD))  # no dropout: the same forward again
    assert isinstance(ref, AuxOutput)
    t_logits = teacher_logits_by_hand(teacher, images, SIZE)
    ce = F.cross_entropy(ref.logits, labels)
    if kind == "soft":
        kd = soft_distillation_loss(ref.aux[0], t_logits, tau)
    else:
        kd = hard_distillation_loss(ref.aux[0], t_logits)
    torch.testing.assert_close(out["loss_cls"], ce.detach())
    torch.testing.assert_close(out["loss_distill"], kd.detach())
    torch.testing.assert_close(out["loss"], (1 - alpha) * ce + alpha * kd)
    assert out["loss"].requires_grad
    assert not any(out[k].requires_grad for k in ("loss_cls", "loss_distill", "acc1"))
    # The [CLS] head gets no gradient from the teacher term: with alpha = 1 it gets none.
    task1 = ClassificationTask(student_cfg(path, kind, alpha=1.0, tau=tau))
    model.zero_grad()
    task1.training_step(model, (images, labels))["loss"].backward()
    assert model.head.weight.grad is None or not model.head.weight.grad.any()
    assert model.head_dist.weight.grad.abs().sum() > 0


def test_model_without_distill_token_distils_through_its_only_head(teacher_ckpt):
    path, teacher = teacher_ckpt
    task = ClassificationTask(student_cfg(path, "soft", alpha=0.5, tau=1.0))
    model = TinyNet().train()
    images, labels = batch()
    out = task.training_step(model, (images, labels))
    logits = model(normalize(images, S_MEAN, S_STD))
    ce = F.cross_entropy(logits, labels)
    kd = soft_distillation_loss(logits, teacher_logits_by_hand(teacher, images, SIZE), 1.0)
    torch.testing.assert_close(out["loss"], 0.5 * ce + 0.5 * kd)
    torch.testing.assert_close(out["loss_distill"], kd.detach())


def test_other_aux_heads_keep_their_label_loss(teacher_ckpt):
    path, teacher = teacher_ckpt
    cfg = student_cfg(path, "hard", alpha=0.5)
    task = ClassificationTask(cfg)
    model = TinyNet(aux=2).train()
    images, labels = batch()
    out = task.training_step(model, (images, labels))
    assert set(out) == {"loss", "loss_cls", "loss_distill", "loss_aux1", "loss_aux2", "acc1"}
    ref = model(normalize(images, S_MEAN, S_STD))
    ce = F.cross_entropy(ref.logits, labels)
    kd = hard_distillation_loss(ref.logits, teacher_logits_by_hand(teacher, images, SIZE))
    aux = [F.cross_entropy(a, labels) for a in ref.aux]
    torch.testing.assert_close(out["loss"], 0.5 * ce + 0.5 * kd + 0.3 * (aux[0] + aux[1]))


def test_deit_without_teacher_trains_both_heads_on_labels(tmp_path):
    # distill.type=none: the [distill] token is a second [CLS] token, same weight; the teacher
    # is ignored (here it does not even exist).
    task = ClassificationTask(student_cfg(tmp_path / "missing.pt", "none", alpha=0.9))
    model = deit().train()
    images, labels = batch()
    out = task.training_step(model, (images, labels))
    assert set(out) == {"loss", "loss_cls", "loss_head_dist", "acc1"}
    ref = model(normalize(images, S_MEAN, S_STD))
    ce_cls, ce_dist = (F.cross_entropy(z, labels) for z in (ref.logits, ref.aux[0]))
    torch.testing.assert_close(out["loss"], 0.5 * (ce_cls + ce_dist))
    torch.testing.assert_close(out["loss_head_dist"], ce_dist.detach())
    out["loss"].backward()
    assert model.head.weight.grad.abs().sum() > 0 and model.head_dist.weight.grad.abs().sum() > 0
    assert task.teacher is None


# --- the teacher ----------------------------------------------------------------------------------


def test_teacher_frozen_in_eval_mode_loaded_once(teacher_ckpt):
    path, _ = teacher_ckpt
    task = ClassificationTask(student_cfg(path, "soft"))
    model = deit().train()
    images, labels = batch()
    task.training_step(model, (images, labels))["loss"].backward()
    teacher = task.teacher
    assert teacher is not None and teacher.path == str(path)
    tm = teacher.model
    assert not tm.training and all(not m.training for m in tm.modules())
    assert all(not p.requires_grad and p.grad is None for p in tm.parameters())
    bn = next(m for m in tm.modules() if isinstance(m, nn.BatchNorm2d))
    stats = bn.running_mean.clone(), int(bn.num_batches_tracked)
    tm.train()  # even if something flips it to training mode, the step runs it in eval mode
    task.training_step(model, (images, labels))
    assert task.teacher is teacher  # loaded once
    assert not tm.training
    assert torch.equal(bn.running_mean, stats[0]) and int(bn.num_batches_tracked) == stats[1]


def test_teacher_input_uses_its_own_size(tmp_path):
    # A teacher trained at 32 px sees the student's 16 px batch resized to 32.
    path = tmp_path / "t32.pt"
    teacher = write_teacher(path, image_size=32)
    task = ClassificationTask(student_cfg(path, "soft", tau=1.0))
    model = TinyNet().train()
    images, labels = batch()
    out = task.training_step(model, (images, labels))
    logits = model(normalize(images, S_MEAN, S_STD))
    t32 = teacher_logits_by_hand(teacher, images, 32)
    torch.testing.assert_close(out["loss_distill"], soft_distillation_loss(logits, t32).detach())
    # ...and that differs from feeding it the 16 px batch: the resize is not a no-op.
    t16 = teacher_logits_by_hand(teacher, images, SIZE)
    assert not torch.allclose(t32, t16, atol=1e-3)
    assert task.teacher.image_size == 32 and task.teacher.mean == T_MEAN


def test_teacher_runs_under_the_trainers_autocast_without_grad(teacher_ckpt):
    path, _ = teacher_ckpt
    task = ClassificationTask(student_cfg(path, "hard"))
    model = TinyNet().train()
    images, labels = batch()
    task.training_step(model, (images, labels))  # loads the teacher
    seen = {}

    def hook(module, inputs, output):
        seen["dtype"], seen["grad"] = output.dtype, torch.is_grad_enabled()

    handle = task.teacher.model.register_forward_hook(hook)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = task.training_step(model, (images, labels))
    handle.remove()
    assert seen == {"dtype": torch.bfloat16, "grad": False}
    assert torch.isfinite(out["loss"]) and out["loss_distill"].dtype == torch.float32


def test_load_teacher_from_run_folder_prefers_best(tmp_path):
    run = tmp_path / "run"
    write_teacher(run / "checkpoints" / "last.pt", num_classes=3)
    assert load_teacher(str(run)).num_classes == 3
    write_teacher(run / "checkpoints" / "best.pt", num_classes=5)
    t = load_teacher(str(run))
    assert t.path == str(run / "checkpoints" / "best.pt") and t.num_classes == 5


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("distill", "message"),
    [
        ({"type": "medium"}, r"distill.type: unknown value 'medium'; valid: none, soft, hard"),
        ({"alpha": 1.5}, r"distill.alpha must be in \[0, 1\].*got 1.5"),
        ({"alpha": -0.1}, r"distill.alpha must be in \[0, 1\]"),
        ({"tau": 0.0}, r"distill.tau must be > 0.*got 0.0"),
        ({"teacher": None}, r"distill.type=soft needs distill.teacher="),
    ],
)
def test_config_errors(distill, message):
    cfg = student_cfg("teacher.pt", "soft")
    for k, v in distill.items():
        setattr(cfg.distill, k, v)
    with pytest.raises(ConfigError, match=message):
        ClassificationTask(cfg)


def test_teacher_file_errors(tmp_path):
    images, labels = batch()
    missing = tmp_path / "nope.pt"
    task = ClassificationTask(student_cfg(missing, "soft"))
    with pytest.raises(
        CheckpointError, match=r"distill.teacher: checkpoint '.*nope.pt' does not exist"
    ):
        task.training_step(deit().train(), (images, labels))
    corrupt = tmp_path / "bad.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(
        CheckpointError, match=r"distill.teacher: checkpoint '.*bad.pt' is truncated or corrupt"
    ):
        load_teacher(str(corrupt))
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(
        CheckpointError, match=r"empty_run' is a folder without checkpoints/best.pt"
    ):
        load_teacher(str(tmp_path / "empty_run"))


def test_bare_model_name_is_refused():
    task = ClassificationTask(student_cfg("resnet18", "hard"))
    with pytest.raises(
        ConfigError, match=r"distill.teacher='resnet18' is a model name.*nothing is downloaded"
    ):
        task.training_step(deit().train(), batch())


def test_teacher_with_other_classes(tmp_path):
    path = tmp_path / "t7.pt"
    write_teacher(path, num_classes=7)
    task = ClassificationTask(student_cfg(path, "soft"))
    with pytest.raises(
        ConfigError, match=r"distill.teacher='.*t7.pt' predicts 7 classes but the student has 4"
    ):
        task.training_step(deit().train(), batch())


# --- end to end -----------------------------------------------------------------------------------

TINY = [
    "data=shapes",
    "data.image_size=32",
    "data.train_size=32",
    "data.val_size=16",
    "data.batch_size=8",
    "data.num_classes=4",
    "trainer.epochs=1",
    "trainer.progress=false",
    "trainer.tensorboard=false",
    "trainer.plots=false",
    "trainer.log_every=1",
]


def test_trainer_soft_distillation_end_to_end(tmp_path):
    # A ResNet teacher trained by the Trainer (4 steps), then the micro DeiT distilled from its
    # run folder: the run logs the parts and the teacher stays untouched.
    teacher_run = Trainer(
        load_config(
            None,
            [*TINY, "model=resnet18", f"trainer.output_dir={tmp_path}", "trainer.run_name=teacher"],
        )
    )
    teacher_run.fit()
    student = Trainer(
        load_config(
            None,
            [
                *TINY,
                "model=deit_micro_distilled_patch4_32",
                "optim.name=adamw",
                "optim.lr=0.001",
                "optim.weight_decay=0.05",
                f"trainer.output_dir={tmp_path}",
                "trainer.run_name=student",
                "distill.type=soft",
                f"distill.teacher={teacher_run.run_dir}",
                "distill.tau=2.0",
            ],
        )
    )
    metrics = student.fit()
    assert 0.0 <= metrics["val/acc1"] <= 1.0
    rows = [
        json.loads(r) for r in (tmp_path / "student" / "metrics.jsonl").read_text().splitlines()
    ]
    train = [r for r in rows if "train/loss" in r]
    assert len(train) == 4
    for r in train:
        assert r["train/loss_distill"] >= 0 and r["train/loss_cls"] > 0
    teacher = student.task.teacher
    assert teacher.path.endswith("teacher/checkpoints/best.pt")
    assert teacher.model.class_names == list(student.bundle.class_names)
    saved = torch.load(teacher.path, weights_only=True)["model"]
    for k, v in teacher.model.state_dict().items():
        assert torch.equal(v, saved[k]), k  # BN statistics included: eval mode, no updates

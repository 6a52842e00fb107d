"""Image augmentation in the Python trainer: each transform's effect, its determinism under a seed, and
that it is refused where it does not apply."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coordinator.models.augmentation import Augmentation
from coordinator.models.augmenters import augment_images, mixup
from coordinator.models.local_training import TrainConfig, train_delta
from coordinator.models.spec import load_spec, spec_from_dict
from coordinator.models.torch_model import build_module, wire_weights
from coordinator.settings import Settings

IMAGE = torch.arange(20.0).reshape(1, 1, 4, 5)


def draws(aug: Augmentation, seed: int, x: torch.Tensor = IMAGE) -> torch.Tensor:
    return augment_images(aug, x, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "aug",
    [
        Augmentation(crop=2),
        Augmentation(flip=True),
        Augmentation(rotate=30),
        Augmentation(brightness=0.5),
        Augmentation(contrast=0.5),
    ],
    ids=["crop", "flip", "rotate", "brightness", "contrast"],
)
def test_each_transform_is_deterministic_under_a_seed_and_varies_across_seeds(aug: Augmentation) -> None:
    assert torch.equal(draws(aug, 7), draws(aug, 7))
    outcomes = [draws(aug, s) for s in range(8)]
    assert any(not torch.equal(o, outcomes[0]) for o in outcomes)
    assert torch.equal(draws(Augmentation(), 7), IMAGE)


def test_flips_mirror_crops_shift_with_zero_fill_and_jitter_keeps_the_shape() -> None:
    flips = [draws(Augmentation(flip=True), s) for s in range(16)]
    assert all(torch.equal(f, IMAGE) or torch.equal(f, IMAGE.flip(-1)) for f in flips)
    assert any(torch.equal(f, IMAGE.flip(-1)) for f in flips) and any(torch.equal(f, IMAGE) for f in flips)
    for s in range(16):
        out = draws(Augmentation(crop=1), s)
        assert set(out.flatten().tolist()) <= set(IMAGE.flatten().tolist()) | {0.0}
        assert int((out != 0).sum()) >= 11
    assert torch.allclose(draws(Augmentation(rotate=0.01), 3), IMAGE, atol=0.01)
    quarter = draws(Augmentation(rotate=180), 0, torch.arange(9.0).reshape(1, 1, 3, 3))
    assert quarter[0, 0, 1, 1] == 4.0  # the centre stays where it is
    bright = draws(Augmentation(brightness=0.5), 3)
    shift = bright - IMAGE
    assert torch.allclose(shift, shift.flatten()[0].expand_as(shift)) and abs(float(shift.flatten()[0])) <= 0.5
    assert torch.isclose(draws(Augmentation(contrast=0.5), 3).mean(), IMAGE.mean())


def test_mixup_blends_pairs_with_one_lambda_and_keeps_the_batch_mean() -> None:
    x = torch.arange(12.0).reshape(4, 1, 1, 3)
    mixed, lam, partner = mixup(Augmentation(mixup=0.4), x, torch.Generator().manual_seed(5)) or (None, 0, None)
    assert mixed is not None and partner is not None and 0 <= lam <= 1
    assert sorted(partner.tolist()) == [0, 1, 2, 3]
    assert torch.allclose(mixed, lam * x + (1 - lam) * x[partner]) and torch.isclose(mixed.sum(), x.sum())
    assert mixup(Augmentation(), x, torch.Generator()) is None


def test_settings_refuse_out_of_range_augmentation_and_send_only_what_is_on() -> None:
    with pytest.raises(ValueError, match=r"augment-rotate 0\.\.180"):
        Settings(augment_rotate=200)
    config = Settings(augment_flip=True, augment_crop=2).train_config()
    assert config["augment-flip"] is True and config["augment-crop"] == 2
    assert not any(k.startswith("augment-") for k in Settings().train_config())
    assert TrainConfig.from_wire(config).augmentation() == Augmentation(crop=2, flip=True)


def test_training_with_augmentation_is_seeded_and_differs_from_training_without() -> None:
    spec = load_spec("mnist-cnn")
    module = build_module(spec, seed=0)
    weights = wire_weights(module)
    rng = np.random.default_rng(0)
    x, y = rng.random((20, 1, 28, 28), np.float32), rng.integers(0, 10, 20)

    def delta(**aug: object) -> np.ndarray:
        cfg = TrainConfig(local_epochs=1, batch_size=10, seed=3, **aug)  # type: ignore[arg-type]
        return train_delta(module, weights, x, y, cfg)[0]["layers.0.weight"]

    plain = delta()
    augmented = delta(augment_crop=2, augment_flip=True, augment_mixup=0.4)
    assert np.array_equal(augmented, delta(augment_crop=2, augment_flip=True, augment_mixup=0.4))
    assert not np.allclose(augmented, plain)
    table = spec_from_dict({"name": "t", "input_shape": [3], "num_classes": 2,
                            "layers": [{"type": "linear", "in_features": 3, "out_features": 2}]})  # fmt: skip
    with pytest.raises(ValueError, match=r"augmentation is for image inputs \[C, H, W\]; this model's input is \[3\]"):
        train_delta(build_module(table), wire_weights(build_module(table)), x[:, 0, 0, :3].copy(), y,
                    TrainConfig(augment_flip=True))  # fmt: skip


def test_a_run_asking_to_augment_a_model_without_image_input_is_refused_before_it_is_stored(tmp_path) -> None:
    from coordinator.federation.run_loop import RunLoop
    from coordinator.federation.status import RunStatus
    from coordinator.persistence.store import Store
    from tests.fake_nodes import FakeNodes

    spec = tmp_path / "table.json"
    spec.write_text('{"name": "t", "input_shape": [3], "num_classes": 2,'
                    ' "layers": [{"type": "linear", "in_features": 3, "out_features": 2}]}')  # fmt: skip
    store = Store(f"sqlite:///{tmp_path}/p.db")
    with pytest.raises(ValueError, match=r"--augment-\* is for image inputs \[C, H, W\]; t takes \[3\]"):
        settings = Settings(model=str(spec), augment_rotate=10)
        RunLoop(settings, store, FakeNodes([], lambda n, t: None), RunStatus(), None)  # type: ignore[arg-type]
    assert store.list_runs() == []
    store.close()

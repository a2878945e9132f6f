import numpy as np
import pytest
import torch
from torchvision.ops import sigmoid_focal_loss

from hpa.classification.data import BatchLoader, augment, dihedral
from hpa.classification.losses import LOSSES, get_loss, soft_f1_loss


def test_dihedral_gives_eight_distinct_transforms():
    x = torch.arange(9).view(3, 3)
    outs = {tuple(dihedral(x, k).flatten().tolist()) for k in range(8)}
    assert len(outs) == 8


def test_augment_is_seeded_and_keeps_shape():
    x = torch.rand(6, 4, 8, 8)
    a = augment(x, torch.Generator().manual_seed(1))
    b = augment(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b)


@pytest.mark.parametrize("name", LOSSES)
def test_losses_fall_when_logits_agree(name):
    t = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    loss = get_loss(name)
    assert float(loss(t * 20 - 10, t)) < float(loss(-(t * 20 - 10), t))


def test_focal_matches_torchvision_and_soft_f1_perfect():
    lg, t = torch.randn(5, 3), (torch.rand(5, 3) > 0.5).float()
    ref = sigmoid_focal_loss(lg, t, alpha=-1, gamma=2, reduction="mean")
    assert torch.allclose(get_loss("focal")(lg, t), ref)
    t = torch.ones(4, 2)
    assert float(soft_f1_loss(torch.full((4, 2), 30.0), t)) < 1e-4


def test_batch_loader_epochs_are_deterministic_and_cover_rows():
    views = np.random.default_rng(0).integers(0, 255, (10, 4, 4, 4)).astype(np.uint8)
    rows = np.arange(10)
    targets = np.eye(10, dtype=np.float32)

    def epoch(seed):
        ld = BatchLoader(views, rows, targets, 4, np.zeros(4), np.ones(4), 255.0, shuffle=True, seed=seed)
        return torch.cat([y for _, y in ld]).argmax(1).tolist()

    assert epoch(3) == epoch(3)
    assert sorted(epoch(3)) == list(range(10))
    assert epoch(3) != epoch(4)


def test_weighted_epochs_oversample_rare_rows():
    views = np.zeros((100, 2, 2, 4), np.uint8)
    targets = np.zeros((100, 2), np.float32)
    targets[:90, 0] = 1  # common class
    targets[90:, 1] = 1  # rare class
    from hpa.classification.data import balance_weights

    w = balance_weights(targets, 1.0)
    ld = BatchLoader(views, np.arange(100), targets, 10, np.zeros(4), np.ones(4), 255.0, weights=w, seed=0)
    drawn = torch.cat([y for _, y in ld])
    # inverse-frequency weights give both classes about half of the draws
    assert 0.3 < float(drawn[:, 1].mean()) < 0.7
    ld.epoch = 0
    again = torch.cat([y for _, y in ld])
    assert torch.equal(drawn, again)


def test_progressive_sizes_split_the_run():
    from hpa.classification.train import TrainConfig, _epoch_size

    cfg = TrainConfig(crop_size=64, epochs=4, progressive_sizes=(32, 48, 64))
    assert [_epoch_size(cfg, e) for e in range(4)] == [32, 32, 48, 64]
    assert _epoch_size(TrainConfig(crop_size=64), 3) == 64


@pytest.mark.parametrize("intensity", ["dataset", "view"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_batches_read_only_the_stains_the_inputs_use_and_are_unchanged(intensity, dtype):
    """A mix with unused stains (green alone; red and yellow merged): those channels are
    dropped as the batch is read, and the network inputs are those of the four stains mixed."""
    from hpa.classification.channels import channel_matrix
    from hpa.classification.model import normalise

    views = np.random.default_rng(0).integers(0, np.iinfo(dtype).max, (6, 16, 16, 4), dtype=dtype)
    scale = float(np.iinfo(dtype).max)
    for channels in (("green",), ("red+yellow", "blue")):
        mix = channel_matrix(channels)
        mean, std = np.full(len(channels), 0.2), np.full(len(channels), 0.25)
        loader = BatchLoader(
            views, np.arange(6), None, 4, mean, std, scale, mix=mix, intensity=intensity, size=24
        )
        assert loader.stains is not None and len(loader.stains) < 4
        got = torch.cat([x for x, _ in loader])
        raw = torch.from_numpy(views.astype(np.int32) if dtype == np.uint16 else views)
        expected = normalise(
            raw, torch.tensor(mean).float(), torch.tensor(std).float(), scale,
            torch.as_tensor(mix).float(), intensity, 24,
        )  # fmt: skip
        assert got.shape == (6, len(channels), 24, 24)
        assert torch.allclose(got, expected, atol=1e-6, rtol=0)

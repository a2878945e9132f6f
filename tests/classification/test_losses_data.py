import numpy as np
import pytest
import torch
import torch.nn.functional as F
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
        return torch.cat([y for _, y, _ in ld]).argmax(1).tolist()

    assert epoch(3) == epoch(3)
    assert sorted(epoch(3)) == list(range(10))
    assert epoch(3) != epoch(4)


def test_weighted_epochs_oversample_rare_rows():
    views = np.zeros((100, 2, 2, 4), np.uint8)
    targets = np.zeros((100, 2), np.float32)
    targets[:90, 0] = 1  # common class
    targets[90:, 1] = 1  # rare class
    from hpa.classification.train import balance_weights

    w = balance_weights(targets, 1.0)
    ld = BatchLoader(views, np.arange(100), targets, 10, np.zeros(4), np.ones(4), 255.0, weights=w, seed=0)
    drawn = torch.cat([y for _, y, _ in ld])
    # inverse-frequency weights give both classes about half of the draws
    assert 0.3 < float(drawn[:, 1].mean()) < 0.7
    ld.epoch = 0
    again = torch.cat([y for _, y, _ in ld])
    assert torch.equal(drawn, again)


def test_progressive_sizes_split_the_run():
    from hpa.classification.train import TrainConfig, _epoch_size

    cfg = TrainConfig(crop_size=64, epochs=4, progressive_sizes=(32, 48, 64))
    assert [_epoch_size(cfg, e) for e in range(4)] == [32, 32, 48, 64]
    assert _epoch_size(TrainConfig(crop_size=64), 3) == 64


def test_bag_batches_hold_whole_images():
    # 6 images: 20 cells + 2 tiles each
    n_img, n_cell, n_tile = 6, 20, 2
    image = np.repeat(np.arange(n_img), n_cell + n_tile)
    kinds = np.tile(np.r_[np.ones(n_cell, bool), np.zeros(n_tile, bool)], n_img)
    views = np.arange(len(image), dtype=np.uint8)[:, None, None, None].repeat(4, 3).repeat(2, 1).repeat(2, 2)
    targets = np.eye(n_img, dtype=np.float32)[image]
    kw = dict(bags=image, kinds=kinds, max_bag=5, shuffle=True, seed=1)
    ld = BatchLoader(views, np.arange(len(image)), targets, 14, np.zeros(4), np.ones(4), 255.0, **kw)
    assert ld.images_per_batch == 2 and len(ld) == 3
    seen = []
    for x, y, bag in ld:
        assert x.shape[0] == 2 * (5 + n_tile) and (bag == -1).sum() == 2 * n_tile
        for k in range(2):  # each bag: 5 cells of one image, its labels
            labels = y[bag == k].argmax(1)
            assert len(labels) == 5 and len(set(labels.tolist())) == 1
            seen.append(int(labels[0]))
    assert sorted(seen) == list(range(n_img))  # an epoch visits every image once
    ld.epoch = 0
    assert [b.tolist() for *_, b in ld] == [b.tolist() for *_, b in BatchLoader(
        views, np.arange(len(image)), targets, 14, np.zeros(4), np.ones(4), 255.0, **kw)]  # fmt: skip


def test_mil_loss_lets_one_cell_carry_the_label():
    from hpa.classification.losses import mil_loss

    z = torch.zeros(4, 2, requires_grad=True)
    z.data[0, 0] = 3.0  # the cell that shows class 0
    y = torch.tensor([[1.0, 0.0]] * 3 + [[1.0, 0.0]])  # image label 0, inherited by all
    bag = torch.tensor([0, 0, 0, -1])  # three cells and a tile
    assert torch.allclose(mil_loss(z, y, bag, weight=0.0), F.binary_cross_entropy_with_logits(z, y))
    mil_loss(z, y, bag, weight=1.0).backward()
    g = z.grad[:, 0]
    # the bag's push goes to the cell with the highest logit, not its unlabelled neighbours
    assert g[0] < g[1] <= 0 and g[1] == g[2] and abs(float(g[1])) < abs(float(g[0])) / 5
    assert g[3] < 0  # the tile keeps its plain BCE term
    assert float(z.grad[:3, 1].min()) > 0  # negatives stay per cell

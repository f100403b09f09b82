import threading

import pytest

from lumbar_bench.approaches.nnunet.epoch_metrics import EpochMetrics


def test_every_epoch_is_logged_in_order_off_the_calling_thread():
    logged, threads = [], set()

    def log_metric(key, value, step):
        logged.append((key, value, step))
        threads.add(threading.get_ident())

    with EpochMetrics(log_metric, "nnunet/501_x/f0") as on_epoch:
        for epoch in range(3):
            on_epoch(epoch, {"train_loss": float(epoch), "pseudo_dice": 0.5})
    assert logged == [
        ("nnunet/501_x/f0/train_loss", 0.0, 0),
        ("nnunet/501_x/f0/pseudo_dice", 0.5, 0),
        ("nnunet/501_x/f0/train_loss", 1.0, 1),
        ("nnunet/501_x/f0/pseudo_dice", 0.5, 1),
        ("nnunet/501_x/f0/train_loss", 2.0, 2),
        ("nnunet/501_x/f0/pseudo_dice", 0.5, 2),
    ]
    assert threads and threading.get_ident() not in threads


def test_a_failed_write_is_raised_when_the_block_ends():
    def log_metric(key, value, step):
        raise OSError("store is read-only")

    with pytest.raises(OSError, match="read-only"), EpochMetrics(log_metric, "p") as on_epoch:
        on_epoch(0, {"train_loss": 1.0})
        on_epoch(1, {"train_loss": 1.0})


def test_an_error_of_the_block_is_not_masked_by_a_write_error():
    def log_metric(key, value, step):
        raise OSError("store is read-only")

    with pytest.raises(KeyError), EpochMetrics(log_metric, "p") as on_epoch:
        on_epoch(0, {"train_loss": 1.0})
        raise KeyError("training failed")

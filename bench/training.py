"""Training cost on the embedded digits: the default CNN for 30 epochs, and what recording the
per-sample dynamics adds (with / without, interleaved in one run, median of repeats)."""

import statistics
import time


from explorer import data, training
from explorer.runtime import devices


def _seconds(ds, device, epochs: int, record: bool) -> float:
    model = training.init_model("cnn", ds, 0)
    start = time.perf_counter()
    training.fit(model, ds.x_train, ds.y_train, training.Recipe(epochs=epochs), device, record_dynamics=record)
    return time.perf_counter() - start


def run(repeats: int = 3) -> dict:
    device = devices.resolve("auto")
    ds = data.load(data.DatasetSpec())
    _seconds(ds, device, 1, True)  # warm-up: first-call kernel selection is not training cost
    full = _seconds(ds, device, 30, True)
    with_dyn, without = [], []
    for _ in range(repeats):
        without.append(_seconds(ds, device, 10, False))
        with_dyn.append(_seconds(ds, device, 10, True))
    return {
        f"train_digits_cnn_30_epochs_seconds[{device.type}]": round(full, 2),
        "dynamics_overhead_ratio": round(statistics.median(with_dyn) / statistics.median(without), 3),
    }

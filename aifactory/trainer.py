"""The training program a TrainingRun's Slurm job runs: `python3 -m aifactory.trainer`.

It needs only the standard library, numpy and torch (scikit-learn for the built-in `digits`, torchvision for its
models by name), so any PyTorch image with this one file runs it. Its settings come as JSON in the environment
(AIFACTORY_TRAINING, made by aifactory.training.job_request). Each epoch appends one JSON line of metrics to
aifactory-<job id>.metrics.jsonl in the job's working directory; at the end the trained model is saved as
TorchScript (preprocessing included, so it takes the dataset's raw features) into the tenant's model registry,
written beside its final name and renamed into place only when complete.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CONFIG_VAR = "AIFACTORY_TRAINING"
METRICS_FILE = "aifactory-{job}.metrics.jsonl"
VALIDATION_FRACTION = 0.2
SPLIT_SEED = 0
BUILTIN_DATASETS = ("digits",)
BUILTIN_ARCHITECTURES = ("mlp", "cnn")


class TrainingError(Exception):
    """What went wrong, in words for the user (the run's error message)."""


def stamp(when: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if when is None else when))


def log(level: str, message: str) -> None:
    # One line per entry, `<time> <LEVEL> <message>`: the API's logs endpoint reads them back as entries.
    print(f"{stamp()} {level} {message}", flush=True)


# ---- data ---------------------------------------------------------------------------------------------------

@dataclass
class Dataset:
    x: np.ndarray  # float32, (N, features...) as the file has them
    y: np.ndarray  # int64 class labels 0..classes-1
    offset: float  # the model sees (x - offset) * scale
    scale: float
    image_shape: tuple[int, ...] | None  # (C, H, W) when the samples are images

    @property
    def classes(self) -> int:
        return int(self.y.max()) + 1


def split(count: int, fraction: float = VALIDATION_FRACTION, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(training indices, validation indices): the same for the same count, always."""
    order = np.random.default_rng(seed).permutation(count)
    held = max(1, int(round(count * fraction)))
    return np.sort(order[held:]), np.sort(order[:held])


def load_dataset(name: str, dataset_dir: str | None) -> Dataset:
    if name == "digits":
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise TrainingError("the built-in dataset digits needs scikit-learn in the job's Python") from None
        digits = load_digits()
        return Dataset(digits.data.astype(np.float32), digits.target.astype(np.int64), 0.0, 1 / 16.0, (1, 8, 8))
    if not dataset_dir:
        raise TrainingError(f"Dataset '{name}' not found: the cluster has no dataset registry")
    for suffix, reader in ((".csv", _read_csv), (".npz", _read_npz)):
        path = Path(dataset_dir) / f"{name}{suffix}"
        if path.is_file():
            x, y = reader(path)
            break
    else:
        raise TrainingError(f"Dataset '{name}' not found in the registry")
    if len(x) != len(y) or len(x) < 2:
        raise TrainingError(f"Dataset '{name}': {len(x)} samples and {len(y)} labels; need at least 2 of each, alike")
    _, y = np.unique(y, return_inverse=True)
    x = x.astype(np.float32)
    mean, std = float(x.mean()), float(x.std()) or 1.0
    return Dataset(x, y.astype(np.int64), mean, 1.0 / std, _image_shape(x.shape[1:]))


def _read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Rows of numbers, the label last; a first row that is not numbers is a header."""
    with path.open() as f:
        first = f.readline()
    try:
        [float(v) for v in first.strip().split(",")]
        skip = 0
    except ValueError:
        skip = 1
    try:
        table = np.loadtxt(path, delimiter=",", skiprows=skip, ndmin=2, dtype=np.float64)
    except ValueError as exc:
        raise TrainingError(f"{path.name} is not a CSV of numbers: {exc}") from None
    if table.shape[1] < 2:
        raise TrainingError(f"{path.name}: each row needs features and a label (the last column)")
    return table[:, :-1], table[:, -1].astype(np.int64)


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        keys = set(data.files)
        x_key = next((k for k in ("x", "X", "images", "data", "features") if k in keys), None)
        y_key = next((k for k in ("y", "labels", "targets", "target") if k in keys), None)
        if x_key is None or y_key is None:
            raise TrainingError(f"{path.name} needs arrays x (samples) and y (labels); it has {sorted(keys)}")
        return data[x_key], data[y_key].astype(np.int64)


def _image_shape(sample: tuple[int, ...]) -> tuple[int, ...] | None:
    if len(sample) == 2:
        return (1, *sample)
    if len(sample) == 3:
        return sample if sample[0] in (1, 3) else (sample[2], sample[0], sample[1])
    if len(sample) == 1 and sample[0] >= 4 and math.isqrt(sample[0]) ** 2 == sample[0]:
        side = math.isqrt(sample[0])
        return (1, side, side)
    return None


# ---- models -------------------------------------------------------------------------------------------------

def build_model(architecture: str, data: Dataset):
    """The network and the input shape it takes (after preprocessing)."""
    import torch
    from torch import nn

    features = int(np.prod(data.x.shape[1:]))
    if architecture == "mlp":
        net = nn.Sequential(nn.Flatten(), nn.Linear(features, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                            nn.Linear(64, data.classes))
        return net, (features,)
    if data.image_shape is None:
        raise TrainingError(f"architecture {architecture} needs image-shaped samples; this dataset has shape "
                            f"{data.x.shape[1:]}")
    channels = data.image_shape[0]
    if architecture == "cnn":
        net = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d((4, 4)),
            nn.Flatten(), nn.Linear(32 * 16, 64), nn.ReLU(), nn.Linear(64, data.classes))
        return net, data.image_shape
    try:
        import torchvision
    except ImportError:
        raise TrainingError(f"Architecture '{architecture}' not found: it is neither built in (mlp, cnn) nor "
                            "available, since the job's Python has no torchvision") from None
    try:
        net = torchvision.models.get_model(architecture, weights=None, num_classes=data.classes)
    except (ValueError, KeyError):
        raise TrainingError(f"Architecture '{architecture}' not found in torchvision "
                            f"{torchvision.__version__}") from None
    if channels != 3:
        class RepeatChannels(nn.Module):  # torchvision's models take RGB
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return x.repeat(1, 3, 1, 1)

        net = nn.Sequential(RepeatChannels(), net)
    return net, data.image_shape


def servable(net, shape: tuple[int, ...], data: Dataset):
    """The trained network with its preprocessing, taking raw samples as the dataset has them."""
    import torch
    from torch import nn

    class Trained(nn.Module):
        def __init__(self, net: nn.Module, offset: float, scale: float, shape: list[int]):
            super().__init__()
            self.net = net
            self.offset = offset
            self.scale = scale
            self.shape = shape

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = (x.float() - self.offset) * self.scale
            return self.net(x.reshape([x.shape[0]] + self.shape))

    return Trained(net, data.offset, data.scale, list(shape))


# ---- training -----------------------------------------------------------------------------------------------

def loss_for(name: str, classes: int):
    import torch
    from torch import nn

    if name == "cross_entropy":
        return nn.CrossEntropyLoss()
    base = {"mse": nn.MSELoss(), "mae": nn.L1Loss(), "bce": nn.BCEWithLogitsLoss()}.get(name)
    if base is None:
        raise TrainingError(f"loss function {name!r} is not one of cross_entropy, mse, mae, bce")

    def on_one_hot(logits, target):
        wanted = nn.functional.one_hot(target, classes).float()
        return base(logits if name == "bce" else torch.softmax(logits, dim=1), wanted)
    return on_one_hot


def optimizer_for(name: str, params, lr: float):
    import torch

    makers = {"adam": lambda: torch.optim.Adam(params, lr=lr), "adamw": lambda: torch.optim.AdamW(params, lr=lr),
              "sgd": lambda: torch.optim.SGD(params, lr=lr, momentum=0.9),
              "rmsprop": lambda: torch.optim.RMSprop(params, lr=lr)}
    if name not in makers:
        raise TrainingError(f"optimizer {name!r} is not one of {', '.join(makers)}")
    return makers[name]()


def train(config: dict, metrics_file: Path) -> dict:
    import torch

    hp = config["hyperparameters"]
    torch.manual_seed(0)
    torch.set_num_threads(max(1, int(os.environ.get("SLURM_CPUS_PER_TASK") or 1)))
    data = load_dataset(config["dataset"], config.get("datasetDir"))
    train_idx, val_idx = split(len(data.x))
    net, shape = build_model(config["architecture"], data)
    model = servable(net, shape, data)
    log("INFO", f"Dataset {config['dataset']}: {len(train_idx)} training and {len(val_idx)} validation samples, "
                f"{data.classes} classes; architecture {config['architecture']} "
                f"({sum(p.numel() for p in model.parameters())} parameters)")
    # A GPU when the job has one (Slurm hands it over in CUDA_VISIBLE_DEVICES), else the CPUs.
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    log("INFO", f"Training on {torch.cuda.get_device_name(0) if device.type == 'cuda' else 'the CPU'}")
    x = torch.from_numpy(data.x)
    y = torch.from_numpy(data.y)
    x_train, y_train, x_val, y_val = (t.to(device) for t in (x[train_idx], y[train_idx], x[val_idx], y[val_idx]))
    loss_fn = loss_for(hp.get("loss_function", "cross_entropy"), data.classes)
    optimizer = optimizer_for(hp.get("optimizer", "adam"), model.parameters(), float(hp["learning_rate"]))
    epochs, batch = int(hp["epochs"]), int(hp["batch_size"])
    order = torch.Generator().manual_seed(0)
    last: dict = {}
    for epoch in range(1, epochs + 1):
        model.train()
        total, correct, loss_sum = 0, 0, 0.0
        permutation = torch.randperm(len(x_train), generator=order)
        for start in range(0, len(x_train), batch):
            index = permutation[start:start + batch]
            logits = model(x_train[index])
            loss = loss_fn(logits, y_train[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(index)
            correct += int((logits.argmax(1) == y_train[index]).sum())
            total += len(index)
        model.eval()
        with torch.no_grad():
            logits = model(x_val)
            val_loss = float(loss_fn(logits, y_val))
            val_accuracy = float((logits.argmax(1) == y_val).float().mean())
        last = {"epoch": epoch, "loss": round(loss_sum / total, 6), "accuracy": round(correct / total, 6),
                "val_loss": round(val_loss, 6), "val_accuracy": round(val_accuracy, 6), "timestamp": stamp()}
        if not all(math.isfinite(last[k]) for k in ("loss", "val_loss")):
            raise TrainingError(f"the loss became {last['loss']} in epoch {epoch}: lower the learning rate")
        with metrics_file.open("a") as f:
            f.write(json.dumps(last) + "\n")
        log("INFO", f"Epoch {epoch}/{epochs} completed: loss={last['loss']:.4f} accuracy={last['accuracy']:.4f} "
                    f"val_loss={last['val_loss']:.4f} val_accuracy={last['val_accuracy']:.4f}")
    save(model, config, data, shape, last)
    return last


def save(model, config: dict, data: Dataset, shape: tuple[int, ...], last: dict) -> None:
    import torch

    target = config.get("modelPath")
    if not target:
        log("WARNING", "No model registry on this cluster: the trained model is not kept")
        return
    model.cpu().eval()  # a model that loads anywhere
    scripted = torch.jit.script(model)
    about = {"session_id": config.get("sessionId"), "architecture": config["architecture"],
             "dataset": config["dataset"], "classes": data.classes, "input_shape": list(data.x.shape[1:]),
             "hyperparameters": config["hyperparameters"], "metrics": last}
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.environ.get('SLURM_JOB_ID', os.getpid())}")
    try:
        torch.jit.save(scripted, str(partial), _extra_files={"aifactory.json": json.dumps(about)})
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    log("INFO", f"Model saved to the registry as {config.get('modelName') or path.stem} "
                f"({path.stat().st_size} bytes)")


def main() -> int:
    raw = os.environ.get(CONFIG_VAR)
    if not raw:
        print(f"{CONFIG_VAR} is not set: this program runs inside an aifactory training job", file=sys.stderr)
        return 2
    config = json.loads(raw)
    job = os.environ.get("SLURM_JOB_ID", "local")
    metrics_file = Path(config.get("metricsFile") or Path.cwd() / METRICS_FILE.format(job=job))

    def stopped(signum, _frame):
        log("WARNING", f"Stopped by Slurm ({signal.Signals(signum).name}) before the training finished")
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stopped)
    hp = config["hyperparameters"]
    log("INFO", f"Starting training session {config.get('sessionId', '')}: {config['architecture']} on "
                f"{config['dataset']}, {hp['epochs']} epochs, batch size {hp['batch_size']}, learning rate "
                f"{hp['learning_rate']}, {hp.get('optimizer', 'adam')}, {hp.get('loss_function', 'cross_entropy')}")
    try:
        last = train(config, metrics_file)
    except TrainingError as exc:
        log("ERROR", str(exc))
        return 1
    except Exception as exc:  # noqa: BLE001  (whatever torch says, the user reads it)
        log("ERROR", f"{type(exc).__name__}: {exc}")
        raise
    log("INFO", f"Training completed: val_accuracy={last.get('val_accuracy')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""RecBole 1.2.1's SINE: training-step throughput on synthetic batches (for compare_recbole).

Runs inside the RecBole venv (recipe in launch/compare_recbole.py); imports only torch, recbole
and numpy (hence argparse, the one launch tool without absl flags):

  TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 /work/recbole-venv/bin/python launch/recbole_step.py \
      --batch_size=128 --steps=20 --flush_denormal=true --anomaly_detection=off,on

The model is built the ordinary RecBole way (Config, then create_dataset on local atomic files
written to a temp dir, so nothing is downloaded): D=128, K=4 interests, L=50 prototypes,
n=20, loss_type=CE (the full softmax over the catalogue), 3,706 items plus padding id 0.
A step is what RecBole's Trainer does per batch: zero_grad, calculate_loss, backward, Adam.
Batches: item ids uniform in 1..num_items, full histories of length n.

Importing RecBole's sine.py turns torch's anomaly detection on; each --anomaly_detection mode
is timed on a fresh model (same seed): warm-up steps, then timed steps. Flush-to-zero is one
setting per process: torch.set_flush_denormal only sets the calling thread, and torch's
OpenMP workers copy it when they start, so it is set before the thread pool exists (the JSON
says which fraction of denormal products a parallel op flushed). Prints one JSON line.
"""

import argparse
import json
import os
import tempfile
import time
import warnings

import numpy as np
import torch

EMBED_DIM = 128
NUM_INTERESTS = 4
NUM_PROTOTYPES = 50
HISTORY_LEN = 20
ANOMALY_MODES = {"off": False, "on": True}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--num_items", type=int, default=3706, help="Catalogue size (ML-1M).")
    parser.add_argument("--steps", type=int, default=20, help="Timed steps per mode.")
    parser.add_argument("--warmup", type=int, default=3, help="Untimed steps per mode.")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads.")
    parser.add_argument("--flush_denormal", choices=["true", "false"], default="true")
    parser.add_argument("--anomaly_detection", default="off",
                        help="Comma-separated modes to time, from: off, on.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    modes = args.anomaly_detection.split(",")
    if not set(modes) <= set(ANOMALY_MODES) or len(set(modes)) < len(modes):
        parser.error(f"--anomaly_detection={args.anomaly_detection}: off, on or both")  # exit 2
    return args


def flushed_fraction() -> float:
    """Fraction of denormal products a multi-threaded multiply flushed to zero."""
    products = torch.full((1 << 22,), 1e-39) * torch.full((1 << 22,), 0.5)
    return float((products == 0).float().mean())


def write_atomic_files(data_dir: str, name: str, num_items: int) -> None:
    """A tiny .inter file in which every item 1..num_items occurs (users of HISTORY_LEN + 1)."""
    os.makedirs(os.path.join(data_dir, name))
    per_user = HISTORY_LEN + 1
    with open(os.path.join(data_dir, name, f"{name}.inter"), "w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        f.writelines(f"{(item - 1) // per_user + 1}\t{item}\t{item}\n"
                     for item in range(1, num_items + 1))


def load_config_and_dataset(num_items: int, batch_size: int, seed: int, data_dir: str):
    """RecBole's Config for SINE and a dataset with item ids 0..num_items (0 = padding)."""
    from recbole.config import Config
    from recbole.data import create_dataset

    config = Config(
        model="SINE",
        dataset="bench",
        config_dict={
            "data_path": data_dir,
            "use_gpu": False,
            "seed": seed,
            "state": "ERROR",
            "embedding_size": EMBED_DIM,
            "interest_size": NUM_INTERESTS,
            "prototype_size": NUM_PROTOTYPES,
            "MAX_ITEM_LIST_LENGTH": HISTORY_LEN,
            "loss_type": "CE",
            "train_neg_sample_args": None,
            "train_batch_size": batch_size,
        },
    )
    dataset = create_dataset(config)
    if dataset.item_num != num_items + 1:
        raise SystemExit(f"dataset has {dataset.item_num} item ids, expected {num_items + 1}")
    return config, dataset


def fresh_model(config, dataset, seed: int):
    """RecBole's SINE, initialised from the seed."""
    from recbole.model.sequential_recommender.sine import SINE

    torch.manual_seed(seed)
    np.random.seed(seed)  # SINE draws its weight matrices with np.random
    return SINE(config, dataset)


def synthetic_batches(config, count: int, batch_size: int, num_items: int, seed: int) -> list:
    """Interactions with full histories: item ids uniform in 1..num_items."""
    from recbole.data.interaction import Interaction

    generator = torch.Generator().manual_seed(seed)
    item_field = config["ITEM_ID_FIELD"]
    batches = []
    for _ in range(count):
        ids = torch.randint(1, num_items + 1, (batch_size, HISTORY_LEN + 1), generator=generator)
        batches.append(Interaction({
            item_field + config["LIST_SUFFIX"]: ids[:, :HISTORY_LEN],
            config["ITEM_LIST_LENGTH_FIELD"]: torch.full((batch_size,), HISTORY_LEN),
            item_field: ids[:, HISTORY_LEN],
        }))
    return batches


def time_steps(args: argparse.Namespace, config, dataset, anomaly_detection: bool) -> dict:
    """Fresh model and Adam; warm-up steps, then examples/s over the timed steps."""
    model = fresh_model(config, dataset, args.seed)
    torch.autograd.set_detect_anomaly(anomaly_detection)  # after the import that turns it on
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config["learning_rate"])
    batches = synthetic_batches(config, args.warmup + args.steps, args.batch_size,
                                args.num_items, args.seed)

    def step(interaction) -> float:
        optimizer.zero_grad()
        loss = model.calculate_loss(interaction)
        loss.backward()
        optimizer.step()
        return loss.item()

    for interaction in batches[:args.warmup]:
        step(interaction)
    start = time.perf_counter()
    for interaction in batches[args.warmup:]:
        last_loss = step(interaction)
    seconds = time.perf_counter() - start
    return {
        "examples_per_sec": args.steps * args.batch_size / seconds,
        "steps_per_sec": args.steps / seconds,
        "seconds": seconds,
        "last_loss": last_loss,
    }


def main() -> None:
    args = parse_args()
    modes = args.anomaly_detection.split(",")
    flush_supported = torch.set_flush_denormal(args.flush_denormal == "true")  # before the pool
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=FutureWarning)  # pandas, inside RecBole
    warnings.filterwarnings("ignore", message="The value of the smallest subnormal")  # FTZ on
    import recbole

    with tempfile.TemporaryDirectory() as data_dir:
        write_atomic_files(data_dir, "bench", args.num_items)
        config, dataset = load_config_and_dataset(args.num_items, args.batch_size, args.seed,
                                                  data_dir)
    print(json.dumps({
        "batch_size": args.batch_size,
        "num_items": args.num_items,
        "steps": args.steps,
        "warmup": args.warmup,
        "threads": torch.get_num_threads(),
        "flush_denormal": args.flush_denormal == "true",
        "flush_denormal_supported": flush_supported,
        "denormal_products_flushed": flushed_fraction(),
        "versions": {"torch": torch.__version__, "recbole": recbole.__version__,
                     "numpy": np.__version__},
        "anomaly_detection": {
            mode: time_steps(args, config, dataset, ANOMALY_MODES[mode]) for mode in modes
        },
    }))


if __name__ == "__main__":
    main()

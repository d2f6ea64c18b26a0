"""Measures the wall time and peak memory of preprocessing a log (parse, filter, split, cache).

  python launch/make_synthetic_taobao.py --rows=100_000_000 --out=/tmp/UserBehavior_100M.csv
  python launch/measure_preprocessing.py --config=configs/taobao.py \
      --config.data.path=/tmp/UserBehavior_100M.csv --cache_dir=/tmp/sine-cache

Runs `dataset.load_dataset` in this process with the config's `data` fields, then prints one
JSON line: wall seconds, peak RSS (`resource.getrusage`, the high-water mark of this process,
polars' threads included), the dataset summary, and the seconds of a second, cached load.
Cross-check the peak with `/usr/bin/time -v python launch/measure_preprocessing.py ...`
("Maximum resident set size").
"""

import json
import os
import resource
import shutil
import time

from absl import flags
from ml_collections import config_flags

from sine_jax import cli
from sine_jax.data import dataset

_CONFIG = config_flags.DEFINE_config_file("config", None, "a config file, e.g. configs/taobao.py")
_CACHE_DIR = flags.DEFINE_string("cache_dir", "/tmp/sine-jax-measure-cache",
                                 "the cache directory; emptied first")
_OUT = flags.DEFINE_string("out", "", "also write the JSON here")


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def main(argv):
    del argv
    shutil.rmtree(_CACHE_DIR.value, ignore_errors=True)
    data_config = _CONFIG.value.data
    started = time.perf_counter()
    data = dataset.load_dataset(data_config, _CACHE_DIR.value)
    wall = time.perf_counter() - started
    peak = _peak_rss_gib()
    started = time.perf_counter()
    dataset.load_dataset(data_config, _CACHE_DIR.value)
    cached = time.perf_counter() - started
    size = os.path.getsize(data_config.path) if data_config.path else 0
    result = {
        "source": data_config.path, "source_bytes": size, "format": data_config.format,
        "wall_seconds": round(wall, 1), "peak_rss_gib": round(peak, 2),
        "cached_load_seconds": round(cached, 2), "cpus": os.cpu_count(),
        "summary": data.summary,
    }
    line = json.dumps(result)
    print(line)
    if _OUT.value:
        with open(_OUT.value, "w") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    cli.run_app(main)

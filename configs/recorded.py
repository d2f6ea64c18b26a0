"""The config a workdir's run was trained with, as recorded in WORKDIR/config.json.

  python -m sine_jax.main --config=configs/recorded.py:runs/ml1m --mode=config

`--mode=eval`, `--mode=export` and `--mode=config` use it when they get a --workdir and no
--config, so `python -m sine_jax.main --workdir=runs/ml1m --mode=eval` evaluates with the
config (data path included) that trained the run; `--config.FIELD=VALUE` flags override it
as they override any config file, e.g. `--config.eval.mask_history=False`. The launch tools
that read a trained run take it too (`--config=configs/recorded.py:WORKDIR`).
"""

from configs import default
from sine_jax import run_config


def get_config(workdir: str):
    return run_config.recorded_config(workdir, default.get_config())

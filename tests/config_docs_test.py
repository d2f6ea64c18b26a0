"""Config field descriptions from the schema's comments (sine_jax/config_docs.py) and
`--mode=config`, which prints them without loading data or compiling."""

import inspect
import os
import subprocess
import sys
import textwrap

from configs import default, movielens
from sine_jax import config_docs, run_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _descriptions():
    return config_docs.field_descriptions(inspect.getsource(default))


def test_every_field_of_the_schema_has_a_description():
    descriptions = _descriptions()
    fields = config_docs.flat_fields(default.get_config())
    assert sorted(descriptions) == sorted(fields)
    assert not [name for name, text in descriptions.items() if not text.strip()]


def test_every_preset_has_only_fields_of_the_schema():
    from tests.run_config_test import _presets

    fields = set(config_docs.flat_fields(default.get_config()))
    for spec, config in _presets():
        assert set(config_docs.flat_fields(config)) == fields, spec


def test_descriptions_come_from_end_of_line_or_preceding_comments():
    source = textwrap.dedent('''
        from ml_collections import config_dict

        def get_config():
            config = config_dict.ConfigDict()
            config.a = a = config_dict.ConfigDict()
            # not about x: a blank line follows

            a.x = 1  # x's own
            # about y,
            # on two lines
            a.y = (1, 2)
            a.sub = config_dict.ConfigDict()
            # ignored: z has its own
            a.sub.z = config_dict.placeholder(int)  # z's own
            config.b = b_ = config_dict.ConfigDict()
            b_.w = "w"
            return config
        ''')
    assert config_docs.field_descriptions(source) == {
        "a.x": "x's own", "a.y": "about y, on two lines", "a.sub.z": "z's own", "b.w": "",
    }


def test_the_listing_shows_values_descriptions_and_changed_defaults():
    config = movielens.get_config()
    config.model.assignment = "cosine"
    lines = config_docs.listing(config, _descriptions(), default.get_config()).splitlines()
    assert len(lines) == len(config_docs.flat_fields(config))
    by_field = {line.split(" = ")[0]: line for line in lines}
    assert by_field["eval.ks"].split("#")[0].strip() == "eval.ks = (10, 50, 100)"
    assert by_field["model.assignment"].endswith("eq 3: layernorm (paper) | cosine (cos/0.07) "
                                                 "[default: None]")
    assert by_field["data.format"].endswith("[default: 'synthetic']")
    assert "[default" not in by_field["model.embed_dim"]  # 128 in both
    assert by_field["model.dropout"].startswith("model.dropout = None ")


def test_mode_config_prints_the_fields_without_data_or_jax(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "sine_jax.main",
         "--config=configs/movielens.py", "--mode=config",
         f"--config.data.path={tmp_path}/absent.dat", "--config.train.seed=7"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == len(config_docs.flat_fields(default.get_config()))
    assert f"data.path = '{tmp_path}/absent.dat'" in proc.stdout
    assert any(line.startswith("train.seed = 7 ") and line.endswith("[default: 0]")
               for line in lines)
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert "sine_jax.config_docs" in imported and "jax" not in imported


def test_modes_that_read_the_recorded_config_get_it_when_no_config_is_given():
    modes = ("eval", "export", "config")  # sine_jax.main's (tests/train_test.py runs eval)

    def rewrite(argv):
        return run_config.with_recorded_config(argv, modes)

    recorded = f"--config={run_config.RECORDED_CONFIG_FILE}:runs/x"
    assert rewrite(["m", "--workdir=runs/x", "--mode=eval"]) == [
        "m", recorded, "--workdir=runs/x", "--mode=eval"]
    assert rewrite(["m", "--mode", "config", "--workdir", "runs/x",
                    "--config.eval.ks=(5,)"])[1] == recorded
    for argv in (["m", "--workdir=runs/x"],  # train needs a config file
                 ["m", "--workdir=runs/x", "--mode=recommend"],
                 ["m", "--workdir=runs/x", "--mode=eval", "--config=configs/synthetic.py"],
                 ["m", "--mode=config"]):
        assert rewrite(argv) == argv
    assert os.path.isfile(run_config.RECORDED_CONFIG_FILE)

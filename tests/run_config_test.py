"""A rerun on a workdir must use the config and input content it was started with (run
length aside)."""

import dataclasses
import functools
import hashlib
import json
import os

import pytest

from configs import synthetic
from sine_jax import run_config
from sine_jax.errors import SineError


def test_first_run_records_and_same_config_resumes(tmp_path):
    config = synthetic.get_config()
    run_config.check_or_record(config, str(tmp_path), allow_change=False)
    recorded = json.loads((tmp_path / "config.json").read_text())
    assert recorded["model"]["embed_dim"] == config.model.embed_dim
    run_config.check_or_record(config, str(tmp_path), allow_change=False)


def test_run_length_may_change(tmp_path):
    config = synthetic.get_config()
    run_config.check_or_record(config, str(tmp_path), allow_change=False)
    config.train.num_epochs += 5
    config.train.patience = 0
    run_config.check_or_record(config, str(tmp_path), allow_change=False)
    recorded = json.loads((tmp_path / "config.json").read_text())
    assert (recorded["train"]["num_epochs"], recorded["train"]["patience"]) == (
        config.train.num_epochs, 0)  # the new run length is recorded


def test_the_mesh_may_change(tmp_path):  # checkpoints restore onto any mesh shape
    config = synthetic.get_config()
    run_config.check_or_record(config, str(tmp_path), allow_change=False)
    config.mesh.data, config.mesh.model = 4, 2
    run_config.check_or_record(config, str(tmp_path), allow_change=False)
    recorded = json.loads((tmp_path / "config.json").read_text())
    assert (recorded["mesh"]["data"], recorded["mesh"]["model"]) == (4, 2)


def test_other_changes_are_refused_with_the_fields_named(tmp_path):
    config = synthetic.get_config()
    run_config.check_or_record(config, str(tmp_path), allow_change=False)
    config.model.num_interests = 2
    config.train.learning_rate = 0.01
    with pytest.raises(SineError) as err:
        run_config.check_or_record(config, str(tmp_path), allow_change=False)
    message = str(err.value)
    assert "model.num_interests: 4 -> 2" in message
    assert "train.learning_rate: 0.001 -> 0.01" in message
    assert "--allow_config_change" in message and "\n" not in message
    run_config.check_or_record(config, str(tmp_path), allow_change=True)
    recorded = json.loads((tmp_path / "config.json").read_text())
    assert recorded["model"]["num_interests"] == 2


def test_placeholder_switches_compare_by_resolved_value(tmp_path):
    """An unset switch is its preset's value: setting it to that value is the same model."""
    from sine_jax import sine_options as sine

    config = synthetic.get_config()
    run_config.check_or_record(config, str(tmp_path), allow_change=False)
    preset_value = sine.PRESETS[config.model.preset].assignment
    config.model.assignment = preset_value
    run_config.check_or_record(config, str(tmp_path), allow_change=False)
    other = "layernorm" if preset_value == "cosine" else "cosine"
    config.model.assignment = other
    with pytest.raises(SineError, match=f"model.assignment: '{preset_value}' -> '{other}'"):
        run_config.check_or_record(config, str(tmp_path), allow_change=False)


def test_a_switch_added_since_the_run_started_resumes_while_unset(tmp_path):
    """A workdir recorded before model.input_table existed resumes with it unset (None keeps
    the old behaviour, its preset's value), and not with it set to another value."""
    config = synthetic.get_config()
    run_config.check_or_record(config, str(tmp_path), allow_change=False)
    recorded = json.loads((tmp_path / "config.json").read_text())
    del recorded["model"]["input_table"]
    (tmp_path / "config.json").write_text(json.dumps(recorded))
    run_config.check_or_record(config, str(tmp_path), allow_change=False)
    (tmp_path / "config.json").write_text(json.dumps(recorded))  # recorded before it existed
    config.model.input_table = "separate"
    with pytest.raises(SineError, match="model.input_table: 'shared' -> 'separate'"):
        run_config.check_or_record(config, str(tmp_path), allow_change=False)


def test_a_field_added_with_its_old_behaviour_value_resumes(tmp_path):
    """A workdir recorded before train.weight_decay existed resumes with 0.0 (plain Adam, the
    old behaviour), not with another value."""
    config = synthetic.get_config()
    run_config.check_or_record(config, str(tmp_path), allow_change=False)
    recorded = json.loads((tmp_path / "config.json").read_text())
    del recorded["train"]["weight_decay"]
    (tmp_path / "config.json").write_text(json.dumps(recorded))
    assert config.train.weight_decay == 0.0
    run_config.check_or_record(config, str(tmp_path), allow_change=False)
    (tmp_path / "config.json").write_text(json.dumps(recorded))
    config.train.weight_decay = 0.01
    with pytest.raises(SineError, match="train.weight_decay: '<absent>' -> 0.01"):
        run_config.check_or_record(config, str(tmp_path), allow_change=False)


def test_restoring_into_another_model_is_refused(tmp_path):
    """A workdir trained before the default preset changed: evaluating or exporting it with the
    new default would restore only the weights both models share (eq 3's LayerNorms dropped)."""
    config = synthetic.get_config()
    config.model.preset = "paper"
    run_config.check_or_record(config, str(tmp_path), allow_change=False)
    config.eval.mask_history = False  # evaluation settings may change
    config.serving.index = "hnsw"
    run_config.check_model_matches(config, str(tmp_path))
    config.model.preset = "default"
    with pytest.raises(SineError) as err:
        run_config.check_model_matches(config, str(tmp_path))
    message = str(err.value)
    assert "model.preset: 'paper' -> 'default'" in message
    assert "--config.model.preset=paper" in message and "\n" not in message
    run_config.check_model_matches(config, str(tmp_path / "elsewhere"))  # nothing recorded


def test_an_unreadable_recorded_config_is_named(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(SineError, match="config.json: unreadable"):
        run_config.check_model_matches(synthetic.get_config(), str(tmp_path))


def test_an_unrecorded_config_that_is_not_an_object_is_named(tmp_path):
    (tmp_path / "config.json").write_text("[]")
    with pytest.raises(SineError, match="config.json: holds a JSON list, not an object"):
        run_config.check_or_record(synthetic.get_config(), str(tmp_path), allow_change=False)


def test_input_content_is_recorded_and_a_change_refused_naming_the_file(tmp_path):
    data, workdir = tmp_path / "log.txt", str(tmp_path / "run")
    os.makedirs(workdir)
    data.write_text("1 2\n1 3\n")
    run_config.check_or_record_inputs(workdir, [str(data)], allow_change=False)
    recorded = json.loads((tmp_path / "run" / "inputs.json").read_text())["files"][str(data)]
    assert recorded["size"] == 8
    assert recorded["sha256"] == hashlib.sha256(b"1 2\n1 3\n").hexdigest()
    data.write_text("1 2\n1 4\n")  # same size, other content
    for check in (functools.partial(run_config.check_or_record_inputs, allow_change=False),
                  run_config.check_inputs):
        with pytest.raises(SineError) as err:
            check(workdir, [str(data)])
        assert str(err.value).startswith(f"{data} changed since {workdir} started (size 8 -> 8")
        assert "--allow_config_change" in str(err.value) and "\n" not in str(err.value)
    run_config.check_inputs(workdir, [str(data)], allow_change=True)
    data.write_text("1 2\n1 3\n")  # the recorded content, a new mtime: not a change
    run_config.check_or_record_inputs(workdir, [str(data)], allow_change=False)
    companion = tmp_path / "movies.dat"  # a metadata file put beside the log later
    companion.write_text("2::A (1990)::Drama\n")
    both = [str(data), str(companion)]
    with pytest.raises(SineError, match=f"{companion} is read now but was not when"):
        run_config.check_inputs(workdir, both)
    run_config.check_or_record_inputs(workdir, both, allow_change=True)  # recorded
    run_config.check_inputs(workdir, both)
    with pytest.raises(SineError, match=f"{companion} was read when .* but is not now"):
        run_config.check_inputs(workdir, [str(data)])


def test_an_unchanged_size_and_mtime_reuse_the_recorded_hash(tmp_path):
    """As the dataset cache, a file whose size and mtime are the recorded ones is not read
    again (any ordinary write changes the mtime)."""
    data = tmp_path / "log.txt"
    data.write_text("1 2\n")
    recorded = run_config.fingerprint(str(data))
    assert run_config.fingerprint(str(data), {**recorded, "sha256": "x"})["sha256"] == "x"
    os.utime(data, ns=(recorded["mtime_ns"] + 10**9,) * 2)
    assert run_config.fingerprint(str(data), {**recorded, "sha256": "x"}) == {
        **recorded, "mtime_ns": recorded["mtime_ns"] + 10**9}


def _presets():
    """Every config file's every preset, as (spec, ConfigDict)."""
    from configs import amazon, movielens, taobao, ularge

    yield "synthetic", synthetic.get_config()
    yield "synthetic:tiny", synthetic.get_config("tiny")
    for module in (movielens, amazon):
        for preset in module.PRESETS:
            yield f"{module.__name__}:{preset}", module.get_config(preset)
    yield "taobao", taobao.get_config()
    yield "ularge", ularge.get_config()


def test_every_preset_round_trips_through_the_recorded_config(tmp_path):
    from configs import default
    from sine_jax import sine_options as sine

    for spec, config in _presets():
        config.model.assignment = "cosine"  # a placeholder set; mind.label_power stays None
        os.makedirs(tmp_path / spec)
        run_config.check_or_record(config, str(tmp_path / spec), allow_change=False)
        restored = run_config.recorded_config(str(tmp_path / spec), default.get_config())
        for field, value in sine.resolved_switches(config.model).items():
            config.model[field] = value  # recorded resolved
        assert restored == config, spec  # tuples as tuples, None as None, same types
        assert isinstance(restored.eval.ks, tuple) and restored.model.mind.label_power is None
        restored.model.dropout = 0.25  # the placeholder keeps its type: overrides parse
        with pytest.raises(TypeError):
            restored.model.encoder_blocks = "two"


def test_a_field_added_since_the_run_reads_as_the_behaviour_it_trained_with(tmp_path):
    """Absent from the record: an added switch keeps the schema's value; a field with an old
    behaviour value (weight decay, MIND's dynamic interests) gets that value, not the new
    default, so eval and export rebuild the model that was trained."""
    from configs import default

    config = synthetic.get_config()
    config.model.name = "mind"
    run_config.check_or_record(config, str(tmp_path), allow_change=False)
    recorded = json.loads((tmp_path / "config.json").read_text())
    del recorded["train"]["weight_decay"]
    del recorded["model"]["mind"]["dynamic_interests"]
    del recorded["model"]["output_projection"]
    (tmp_path / "config.json").write_text(json.dumps(recorded))
    schema = default.get_config()
    schema.train.weight_decay = 0.5
    schema.model.output_projection = True
    assert schema.model.mind.dynamic_interests
    restored = run_config.recorded_config(str(tmp_path), schema)
    assert restored.train.weight_decay == 0.0
    assert restored.model.mind.dynamic_interests is False
    assert restored.model.output_projection is True


def test_another_models_own_fields_do_not_block_a_run(tmp_path):
    """A SINE run recorded before model.mind.dynamic_interests existed resumes and restores
    under the new default (True); a MIND run recorded then does not (it trained with K)."""
    for name, blocked in [("sine", False), ("mind", True)]:
        workdir = str(tmp_path / name)
        os.makedirs(workdir)
        config = synthetic.get_config()
        config.model.name = name
        run_config.check_or_record(config, workdir, allow_change=False)
        recorded = json.loads((tmp_path / name / "config.json").read_text())
        del recorded["model"]["mind"]["dynamic_interests"]
        (tmp_path / name / "config.json").write_text(json.dumps(recorded))
        assert config.model.mind.dynamic_interests is True
        if blocked:
            with pytest.raises(SineError, match="model.mind.dynamic_interests: '<absent>' -> True"):
                run_config.check_model_matches(config, workdir)
        else:
            run_config.check_model_matches(config, workdir)
            run_config.check_or_record(config, workdir, allow_change=False)
    config.model.name = "sine"  # the model itself changed: every field of it compares
    assert "model.name" in run_config.differing_fields(recorded, config.to_dict())


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["model"].update(bogus=1), r"model.bogus is not a field of this version's"),
    (lambda c: c["model"].update(embed_dim="wide"), r"model.embed_dim='wide': "),
    (lambda c: c.update(model=3), r"model is not a field"),
])
def test_a_recorded_config_that_does_not_fit_the_schema_is_named(tmp_path, edit, message):
    from configs import default

    run_config.check_or_record(synthetic.get_config(), str(tmp_path), allow_change=False)
    recorded = json.loads((tmp_path / "config.json").read_text())
    edit(recorded)
    (tmp_path / "config.json").write_text(json.dumps(recorded))
    with pytest.raises(SineError, match=f"config.json: {message}"):
        run_config.recorded_config(str(tmp_path), default.get_config())


def test_a_workdir_without_a_recorded_config_is_named(tmp_path):
    from configs import default

    with pytest.raises(SineError, match=r"config.json: no such file \(no run was started"):
        run_config.recorded_config(str(tmp_path), default.get_config())


def test_a_run_records_its_switches_resolved(tmp_path):
    """config.json names the model a run trained, not the preset's name alone: a later
    change of what the preset means cannot rebuild another model from it."""
    from sine_jax import sine_options as sine

    config = synthetic.get_config()
    assert config.model.logit_scale is None
    run_config.check_or_record(config, str(tmp_path), allow_change=False)
    recorded = json.loads((tmp_path / "config.json").read_text())["model"]
    assert {f: recorded[f] for f in sine.SWITCHES} == sine.resolved_switches(config.model)
    assert recorded["logit_scale"] == sine.PRESETS[config.model.preset].logit_scale
    run_config.check_or_record(config, str(tmp_path), allow_change=False)  # resumes
    run_config.check_model_matches(config, str(tmp_path))
    restored = run_config.recorded_config(str(tmp_path), synthetic.get_config())
    assert restored.model.logit_scale == recorded["logit_scale"]


def test_a_preset_that_changed_meaning_does_not_rebuild_another_model(tmp_path, monkeypatch):
    """A run recorded with an unset switch trained the preset of its time: after the default
    preset changes, resuming or restoring it under the new default is refused naming the
    switch, and its recorded config rebuilds the model it trained."""
    from sine_jax import sine_options as sine

    config = synthetic.get_config()
    config.model.preset = "default"
    run_config.check_or_record(config, str(tmp_path), allow_change=False)
    recorded = json.loads((tmp_path / "config.json").read_text())
    for field in sine.SWITCHES:  # as a run recorded before switches were recorded resolved
        recorded["model"][field] = None
    (tmp_path / "config.json").write_text(json.dumps(recorded))
    trained = sine.RECORDED_BEFORE_RESOLVING["default"].logit_scale
    changed = "cosine" if trained == "printed" else "printed"
    new_default = dataclasses.replace(sine.PRESETS["default"], logit_scale=changed)
    monkeypatch.setitem(sine.PRESETS, "default", new_default)
    with pytest.raises(SineError, match=f"model.logit_scale: '{trained}' -> '{changed}'") as err:
        run_config.check_model_matches(config, str(tmp_path))
    assert f"--config.model.logit_scale={trained}" in str(err.value)
    with pytest.raises(SineError, match="model.logit_scale"):
        run_config.check_or_record(config, str(tmp_path), allow_change=False)
    restored = run_config.recorded_config(str(tmp_path), synthetic.get_config())
    assert restored.model.logit_scale == trained
    run_config.check_model_matches(restored, str(tmp_path))


def test_a_run_recorded_before_dropout_was_a_switch_keeps_the_model_it_trained(tmp_path):
    """Such a config.json has SINE's other switches resolved and model.dropout null, which for
    SINE then meant no dropout: its recorded config rebuilds that model, and the current
    default preset is refused for it naming what changed."""
    config = synthetic.get_config()
    run_config.check_or_record(config, str(tmp_path), allow_change=False)
    recorded = json.loads((tmp_path / "config.json").read_text())
    assert recorded["model"]["dropout"] == 0.2  # the default preset's, recorded resolved
    recorded["model"].update(dropout=None, logit_scale="printed", encoder_blocks=0)
    (tmp_path / "config.json").write_text(json.dumps(recorded))
    restored = run_config.recorded_config(str(tmp_path), synthetic.get_config())
    assert (restored.model.dropout, restored.model.encoder_blocks) == (0.0, 0)
    run_config.check_model_matches(restored, str(tmp_path))
    with pytest.raises(SineError, match="model.dropout: 0.0 -> 0.2") as err:
        run_config.check_model_matches(config, str(tmp_path))
    assert "--config.model.dropout=0.0" in str(err.value)

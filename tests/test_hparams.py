import json

import pytest

from hparams import HParams, create_hparams
from utils.seed_commands import SEED_COMMANDS, hparams_string


@pytest.mark.parametrize("task,strategy,script,arguments", SEED_COMMANDS)
def test_every_seed_hparams_string_parses(task, strategy, script, arguments):
    hparams = create_hparams(hparams_string(arguments))
    assert isinstance(hparams.batch_size, int) and isinstance(hparams.alpha_layer_distill_loss, float)


def test_values_are_coerced_to_the_defaults_type():
    h = create_hparams("batch_frame_limit=2.5e6,asr_use_mamba=True,classifier_num_targets=1251,"
                       "alpha_logits_distill_loss=0,alpha_layer_distill_loss=0.5,data_warmup_steps=1e4")
    assert h.batch_frame_limit == 2.5e6 and isinstance(h.batch_frame_limit, float)
    assert h.asr_use_mamba is True
    assert h.classifier_num_targets == "1251" and h.classifier_targets == [1251]
    assert h.alpha_logits_distill_loss == 0.0 and isinstance(h.alpha_logits_distill_loss, float)
    assert h.alpha_layer_distill_loss == 0.5
    assert h.data_warmup_steps == 10000 and isinstance(h.data_warmup_steps, int)


def test_comma_list_values_and_spaces():
    h = create_hparams(" use_classifier=True , classifier_num_targets=18,46,batch_size=3 ")
    assert h.classifier_targets == [18, 46] and h.batch_size == 3 and h.use_classifier


def test_defaults_the_seed_commands_rely_on():
    h = HParams()
    assert (h.warmup_steps, h.data_warmup_steps, h.loss_normalize_type) == (5000, 5000, "sample")
    assert (h.ctc_weight, h.classifier_weight, h.alpha_layer_distill_loss, h.alpha_logits_distill_loss) == (1, 1, 1, 1)
    assert (h.asr_vocab_size, h.asr_use_flash_attn, h.asr_mamba_residual_inside) == (32, False, True)
    shape = (h.mamba_d_state, h.mamba_d_conv, h.mamba_headdim, h.mamba_expand, h.mamba_chunk_size)
    assert shape == (128, 4, 64, 1, 256)


def test_unknown_key_names_nearest_keys():
    with pytest.raises(KeyError, match="did you mean batch_frame_limit"):
        create_hparams("batch_frame_limt=3e6")


@pytest.mark.parametrize("text,key", [
    ("batch_size=2.5", "batch_size"), ("asr_use_mamba=yes please", "asr_use_mamba"),
    ("max_lr=fast", "max_lr"), ("loss_normalize_type=frame", "loss_normalize_type"),
    ("classifier_num_targets=18,x", "classifier_num_targets"), ("mamba_backend=cuda", "mamba_backend"),
])
def test_bad_value_names_the_key(text, key):
    with pytest.raises(ValueError, match=key):
        create_hparams(text)


def test_user_text_is_never_evaluated():
    h = create_hparams("asr_model_name=__import__('os').getcwd()")
    assert h.asr_model_name == "__import__('os').getcwd()"
    with pytest.raises(ValueError):
        create_hparams("batch_size=__import__('os').cpu_count()")


def test_malformed_string():
    with pytest.raises(ValueError, match="key=value"):
        create_hparams("True")


def test_precedence_defaults_then_json_then_command_line(tmp_path):
    saved = create_hparams("batch_size=7,max_lr=1e-3")
    saved.save_json(tmp_path / "hparams.json")
    h = create_hparams("max_lr=2e-3", json_path=tmp_path / "hparams.json")
    assert h.batch_size == 7 and h.max_lr == 2e-3 and h.seed == HParams().seed
    assert create_hparams(json_path=tmp_path / "hparams.json").values() == saved.values()
    assert h.diff(saved) == {"max_lr": (2e-3, 1e-3)}


def test_saved_json_is_checked_as_strictly(tmp_path):
    (tmp_path / "hparams.json").write_text(json.dumps({"batch_sise": 3}))
    with pytest.raises(KeyError, match="hparams.json.*batch_sise"):
        create_hparams(json_path=tmp_path / "hparams.json")
    (tmp_path / "hparams.json").write_text("{")
    with pytest.raises(ValueError, match="hparams.json"):
        create_hparams(json_path=tmp_path / "hparams.json")


@pytest.mark.parametrize("distill", [False, True])
def test_a_bad_hparams_flag_is_a_usage_error_before_the_run_dir_exists(tmp_path, capsys, distill):
    """train.py / train_distill.py / infer.py check --hparams first: exit status 2 and one line naming the key."""
    from utils import training

    run_dir = tmp_path / "run"
    argv = ["--model-dir", str(run_dir), "--data-dir", str(tmp_path), "--hparams=batch_size=24,batch_sise=24"]
    argv += ["--teacher_path", str(tmp_path / "teacher")] if distill else []
    with pytest.raises(SystemExit) as exit_info:
        training.parse_args(training.build_arg_parser("test", distill=distill), argv)
    assert exit_info.value.code == 2
    assert "error: --hparams: unknown hparam 'batch_sise'; did you mean batch_size" in capsys.readouterr().err
    assert not run_dir.exists()


@pytest.mark.parametrize("text,message", [
    ("batch_size=-2", "hparam 'batch_size' must be > 0, got -2"),
    ("batch_size=0", "hparam 'batch_size' must be > 0, got 0"),
    ("input_length_upper_bound=-1", "hparam 'input_length_upper_bound' must be >= 0, got -1"),
    ("data_warmup_steps=-5", "hparam 'data_warmup_steps' must be >= 0, got -5"),
    ("batch_frame_limit=0", "hparam 'batch_frame_limit' must be > 0, got 0.0"),
    ("hidden_dropout=1.5", "hparam 'hidden_dropout' must be in [0, 1], got 1.5"),
    ("max_lr=nan", "hparam 'max_lr' must be > 0, got nan"),
    ("teacher_snapshot_cycle=0", "hparam 'teacher_snapshot_cycle' must be > 0, got 0"),
])
def test_values_out_of_range_name_the_key(text, message):
    with pytest.raises(ValueError) as raised:
        create_hparams(text)
    assert str(raised.value) == message


def test_every_default_lies_in_its_range_and_every_number_has_one():
    from hparams import RANGES

    defaults = HParams()
    numeric = {k for k, v in defaults.values().items() if type(v) in (int, float)}
    assert numeric == set(RANGES)
    assert all(test(getattr(defaults, key)) for key, (_, test) in RANGES.items())


def test_an_out_of_range_saved_value_names_the_file_and_the_key(tmp_path):
    (tmp_path / "hparams.json").write_text(json.dumps({"batch_size": -2}))
    with pytest.raises(ValueError, match=r"hparams.json: hparam 'batch_size' must be > 0, got -2"):
        create_hparams(json_path=tmp_path / "hparams.json")


@pytest.mark.parametrize("flag,value,message", [
    ("--accumulation_steps", "0", "argument --accumulation_steps: must be at least 1, got 0"),
    ("--checkpoint_interval", "0", "argument --checkpoint_interval: must be at least 1, got 0"),
    ("--eval_interval", "0", "argument --eval_interval: must be at least 1, got 0"),
    ("--max_steps", "-1", "argument --max_steps: must be at least 0, got -1"),
    ("--hparams", "batch_size=-2", "--hparams: hparam 'batch_size' must be > 0, got -2"),
])
def test_a_bad_flag_value_is_a_usage_error_naming_the_flag(tmp_path, capsys, flag, value, message):
    from utils import training

    argv = ["--model-dir", str(tmp_path / "run"), "--data-dir", str(tmp_path), f"{flag}={value}"]
    with pytest.raises(SystemExit) as exit_info:
        training.parse_args(training.build_arg_parser("test"), argv)
    assert exit_info.value.code == 2
    assert f"error: {message}" in capsys.readouterr().err

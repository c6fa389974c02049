"""The converted model as a Hugging Face model directory (models/hf.py, models/hf_code/): its modelling code agrees
with this project's model, the export loads with torch and transformers alone (a subprocess whose path lacks this
repository), survives save_pretrained, and serves the automatic-speech-recognition pipeline."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from hparams import create_hparams
from models.build import forward_model
from models.hf import ClassifierLabels, to_hf_model
from models.hf_code.modeling_wav2vec2_bimamba2 import ssd_chunked
from models.kernels.ssd import ssd_ref
from scripts import export_hf_model
from tests.conftest import TINY_MAMBA
from tests.test_export import run_dir_with_checkpoint
from utils.data import build_tokenizer

REPO = Path(__file__).resolve().parents[1]
TINY_VOCAB = {"[PAD]": 0, **{c: i + 1 for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZ'")}, "|": 28, "[UNK]": 29}


def write_vocab(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(TINY_VOCAB))
    return directory / "vocab.json"


def mamba_run(root: Path, tiny_model_dir, extra: str = "") -> Path:
    """A BiMamba2 run dir (hparams.json, model.ckpt-7 with perturbed weights) that recorded its vocab.json."""
    checkpoint = run_dir_with_checkpoint(root, f"asr_model_name={tiny_model_dir},asr_use_mamba=True,{TINY_MAMBA},"
                                               f"{extra}")
    write_vocab(root)
    return checkpoint


def project_model(checkpoint: Path):
    from utils.trained_model import load_trained

    return load_trained(checkpoint)


def padded_batch(seed: int = 0):
    """Two utterances, the second padded: input_values (2, 9600), attention_mask (2, 9600)."""
    g = torch.Generator().manual_seed(seed)
    input_values = torch.randn(2, 9600, generator=g)
    attention_mask = torch.ones(2, 9600, dtype=torch.long)
    attention_mask[1, 6100:] = 0
    input_values[1, 6100:] = 0
    return input_values, attention_mask


@pytest.mark.parametrize("ngroups", [1, 2])
@pytest.mark.parametrize("seqlen", [1, 15, 64, 131])
def test_exported_scan_matches_the_sequential_reference(seqlen, ngroups):
    g = torch.Generator().manual_seed(seqlen)
    x, dt = torch.randn(2, seqlen, 4, 8, generator=g), torch.randn(2, seqlen, 4, generator=g)
    A = -torch.rand(4, generator=g) * 8 - 0.5
    B, C = torch.randn(2, 2, seqlen, ngroups, 16, generator=g)
    D, dt_bias = torch.randn(2, 4, generator=g)
    y = ssd_chunked(x, dt, A, B, C, 16, D=D, dt_bias=dt_bias)
    torch.testing.assert_close(y, ssd_ref(x, dt, A, B, C, D=D, dt_bias=dt_bias, dt_softplus=True),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("extra", ["asr_mamba_residual_inside=False",
                                   "use_classifier=True,classifier_num_targets=3,mask_time_prob=0"])
def test_exported_code_gives_the_project_models_outputs_on_a_padded_batch(tiny_model_dir, tmp_path, extra):
    trained = project_model(mamba_run(tmp_path / "run", tiny_model_dir, extra))
    classifier = ClassifierLabels(["speaker"], [["a", "b"]], "test") if trained.hparams.use_classifier else None
    hf_model = to_hf_model(trained.model, trained.hparams, classifier)
    input_values, attention_mask = padded_batch()
    with torch.no_grad():
        ours = forward_model(trained.model, input_values, attention_mask)
        theirs = hf_model(input_values, attention_mask=attention_mask)
        alone = hf_model(input_values[1:, :6100], attention_mask=attention_mask[1:, :6100])
    frames = int(ours.output_lengths[1])
    torch.testing.assert_close(theirs.logits, ours.logits, rtol=1e-5, atol=1e-5)
    # the padded sequence's outputs are those it gets alone (the backward direction never reads its padding)
    torch.testing.assert_close(theirs.logits[1, :frames], alone.logits[0], rtol=1e-5, atol=1e-5)
    if classifier is not None:
        for mine, hf in zip(ours.head_logits, theirs.classifier_logits, strict=True):
            torch.testing.assert_close(hf, mine, rtol=1e-5, atol=1e-5)
        assert hf_model.config.classifier_labels == [["a", "b", "LABEL_2"]]


def test_the_front_end_in_pieces_equals_the_whole(tiny_model_dir, tmp_path):
    trained = project_model(mamba_run(tmp_path / "run", tiny_model_dir))
    hf_model = to_hf_model(trained.model, trained.hparams)
    input_values, attention_mask = padded_batch()
    with torch.no_grad():
        whole = hf_model(input_values, attention_mask=attention_mask).logits
        hf_model.wav2vec2.feature_extractor.chunk_frames = 7  # 30 frames in pieces of 7
        pieces = hf_model(input_values, attention_mask=attention_mask).logits
    torch.testing.assert_close(pieces, whole, rtol=1e-5, atol=1e-5)


# Run where this repository is not importable: cwd and the script's folder are tmp_path, PYTHONPATH lacks the repo.
LOAD_WITHOUT_REPO = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import numpy as np, torch
    from transformers import AutoModelForCTC, pipeline
    repo, exported, work = map(Path, sys.argv[1:4])
    assert not any(Path(p or ".").resolve() == repo for p in sys.path), sys.path
    model = AutoModelForCTC.from_pretrained(exported, trust_remote_code=True)
    batch = np.load(work / "batch.npz")
    with torch.no_grad():
        logits = model(torch.from_numpy(batch["input_values"]),
                       attention_mask=torch.from_numpy(batch["attention_mask"])).logits
    np.save(work / "logits.npy", logits.numpy())
    model.save_pretrained(work / "resaved")
    again = AutoModelForCTC.from_pretrained(work / "resaved", trust_remote_code=True)
    with torch.no_grad():
        np.save(work / "logits_resaved.npy", again(torch.from_numpy(batch["input_values"]),
                                                   attention_mask=torch.from_numpy(batch["attention_mask"])).logits)
    asr = pipeline("automatic-speech-recognition", model=str(exported), trust_remote_code=True)
    results = {"array_word": asr(batch["speech"], return_timestamps="word"),
               "file_char": asr(str(work / "speech_44k_stereo.flac"), return_timestamps="char"),
               "file": asr(str(work / "speech.wav"))}
    forwards = []  # without chunk_length_s a long recording is one forward of the model
    asr.model.register_forward_hook(lambda module, args, output: forwards.append(list(output.logits.shape)))
    results["long"] = asr(np.tile(batch["speech"], 40))  # 60 s
    results["long_forwards"] = forwards
    (work / "pipeline.json").write_text(json.dumps(results, default=float))
""")


def test_the_export_loads_without_this_repository_and_serves_the_pipeline(tiny_model_dir, tmp_path):
    import soxr

    checkpoint = mamba_run(tmp_path / "run", tiny_model_dir)
    exported = export_hf_model.export(checkpoint.parent, tmp_path / "exported")  # its vocab: <run dir>/vocab.json
    names = {p.name for p in exported.iterdir()}
    assert {"config.json", "model.safetensors", "configuration_wav2vec2_bimamba2.py", "modeling_wav2vec2_bimamba2.py",
            "vocab.json", "tokenizer_config.json", "processor_config.json", "preprocessor_config.json"} <= names
    config = json.loads((exported / "config.json").read_text())
    assert config["model_type"] == "wav2vec2_bimamba2" and set(config["auto_map"]) == {"AutoConfig", "AutoModelForCTC"}
    assert config["converted_from"]["vocab"] == str(checkpoint.parent / "vocab.json")
    assert "automatic-speech-recognition" in config["custom_pipelines"]

    work = tmp_path / "work"
    work.mkdir()
    input_values, attention_mask = padded_batch()
    speech = np.random.default_rng(0).standard_normal(24000).astype(np.float32) * 0.1  # 1.5 s at 16 kHz
    np.savez(work / "batch.npz", input_values=input_values.numpy(), attention_mask=attention_mask.numpy(),
             speech=speech)
    sf.write(work / "speech.wav", speech, 16000, subtype="FLOAT")
    sf.write(work / "speech_44k_stereo.flac", np.stack([soxr.resample(speech, 16000, 44100)] * 2, axis=1), 44100)
    (work / "load.py").write_text(LOAD_WITHOUT_REPO)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() != REPO]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, str(work / "load.py"), str(REPO), str(exported), str(work)], cwd=work,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]

    trained = project_model(checkpoint)
    with torch.no_grad():
        ours = forward_model(trained.model, input_values, attention_mask).logits
        speech_logits = forward_model(trained.model, *normalised(speech)).logits[0]
    loaded = torch.from_numpy(np.load(work / "logits.npy"))
    torch.testing.assert_close(loaded, ours, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.from_numpy(np.load(work / "logits_resaved.npy")), loaded, rtol=0, atol=0)
    assert {p.name for p in (work / "resaved").iterdir()} >= {"modeling_wav2vec2_bimamba2.py",
                                                              "configuration_wav2vec2_bimamba2.py"}

    results = json.loads((work / "pipeline.json").read_text())
    tokenizer = build_tokenizer(checkpoint.parent / "vocab.json")
    expected = tokenizer.decode(speech_logits.argmax(-1).tolist())
    assert results["array_word"]["text"] == expected and results["file"]["text"] == expected
    words = results["array_word"]["chunks"]
    assert [w["text"] for w in words] == expected.split()
    starts_ends = [t for w in words for t in w["timestamp"]]
    assert starts_ends == sorted(starts_ends) and 0 <= starts_ends[0] and starts_ends[-1] <= 1.5
    # the 44.1 kHz stereo file: read by libsndfile, downmixed, resampled; characters with their times
    chars = results["file_char"]["chunks"]
    assert "".join(c["text"] for c in chars) == results["file_char"]["text"]
    assert chars[-1]["timestamp"][1] <= 1.5
    # one minute in one pass, transcribed as the project's model transcribes it
    with torch.no_grad():
        long_logits = forward_model(trained.model, *normalised(np.tile(speech, 40))).logits[0]
    assert results["long_forwards"] == [[1, *long_logits.shape]]
    assert results["long"]["text"] == tokenizer.decode(long_logits.argmax(-1).tolist())


def normalised(samples: np.ndarray):
    """(input_values (1, n), attention_mask (1, n)) as the exported processor makes them."""
    values = (samples - samples.mean()) / np.sqrt(samples.var() + 1e-7)
    return torch.from_numpy(values[None].astype(np.float32)), torch.ones(1, len(samples), dtype=torch.long)


def test_a_bimamba2_classifier_export_carries_its_class_names(tiny_model_dir, tmp_path):
    checkpoint = mamba_run(tmp_path / "run", tiny_model_dir,
                           "use_classifier=True,classifier_num_targets=2,3,data_format=nltLa,ctc_weight=0")
    data = tmp_path / "slurp"
    write_vocab(data)
    (data / "categories.json").write_text(json.dumps([{"iot": 1, "alarm": 0}, {"set": 0, "query": 2, "remove": 1}]))
    exported = export_hf_model.export(checkpoint, tmp_path / "exported", vocab=data / "vocab.json")
    config = json.loads((exported / "config.json").read_text())
    assert config["classifier_head_names"] == ["scenario", "action"]
    assert config["classifier_labels"] == [["alarm", "iot"], ["set", "remove", "query"]]
    assert config["classifier_num_targets"] == [2, 3] and config["ctc_head_trained"] is False
    assert config["converted_from"]["labels"] == str(data / "categories.json")


def test_export_errors_name_what_is_missing(tiny_model_dir, tmp_path):
    checkpoint = run_dir_with_checkpoint(tmp_path / "run", f"asr_model_name={tiny_model_dir},asr_use_mamba=True,"
                                                           f"{TINY_MAMBA},use_classifier=True,classifier_num_targets=4")
    with pytest.raises(SystemExit, match="no vocabulary for the exported processor: pass --vocab"):
        export_hf_model.main(["--checkpoint", str(checkpoint), "--out", str(tmp_path / "exported")])
    vocab = write_vocab(tmp_path / "data")
    with pytest.raises(SystemExit, match="a classifier model; pass --labels"):
        export_hf_model.main(["--checkpoint", str(checkpoint), "--out", str(tmp_path / "exported"),
                              "--vocab", str(vocab)])
    with pytest.raises(SystemExit, match="--vocab .*missing.json not found"):
        export_hf_model.main(["--checkpoint", str(checkpoint), "--out", str(tmp_path / "exported"),
                              "--vocab", str(tmp_path / "missing.json")])


def test_speaker_names_are_the_superb_classes_of_a_voxceleb1_dir(tiny_model_dir, tmp_path):
    """A speaker model's class i is speaker id1000(1 + i) (SUPERB SI's class index), whichever speakers its split
    list holds: here id10002 is absent and id10003 is still class 2."""
    checkpoint = mamba_run(tmp_path / "run", tiny_model_dir, "use_classifier=True,classifier_num_targets=4")
    voxceleb = tmp_path / "VoxCeleb1"
    voxceleb.mkdir()
    (voxceleb / "iden_split.txt").write_text("1 id10003/v/00001.wav\n3 id10001/v/00001.wav\n2 id10003/w/00002.wav\n")
    exported = export_hf_model.export(checkpoint, tmp_path / "exported",
                                      labels=f"s3prl/superb--si--{voxceleb}")
    config = json.loads((exported / "config.json").read_text())
    assert config["classifier_labels"] == [["id10001", "id10002", "id10003", "id10004"]]
    assert create_hparams(json_path=checkpoint.parent / "hparams.json").ctc_weight > 0 and config["ctc_head_trained"]


def test_push_to_hub_uploads_the_code_with_the_weights(tiny_model_dir, tmp_path, monkeypatch):
    """Offline: the hub calls are replaced and what push_to_hub would upload is listed."""
    import types

    from transformers.utils import hub

    from models.hf_code.modeling_wav2vec2_bimamba2 import Wav2Vec2BiMamba2ForCTC

    uploaded = {}

    def upload(self, working_dir, repo_id, **kwargs):
        uploaded.update({p.name: p.read_bytes() for p in Path(working_dir).iterdir()}, repo=repo_id)

    monkeypatch.setattr(hub, "hf_api", lambda: types.SimpleNamespace(
        create_repo=lambda repo_id, **kwargs: types.SimpleNamespace(repo_id=repo_id)))
    monkeypatch.setattr(hub, "create_and_tag_model_card", lambda *args, **kwargs: types.SimpleNamespace(
        save=lambda path: Path(path).write_text("card")))
    monkeypatch.setattr(Wav2Vec2BiMamba2ForCTC, "_upload_modified_files", upload)
    trained = project_model(mamba_run(tmp_path / "run", tiny_model_dir))
    to_hf_model(trained.model, trained.hparams).push_to_hub("someone/ted-bimamba2")
    assert uploaded["repo"] == "someone/ted-bimamba2"
    assert {"config.json", "model.safetensors", "configuration_wav2vec2_bimamba2.py",
            "modeling_wav2vec2_bimamba2.py"} <= set(uploaded)
    assert uploaded["modeling_wav2vec2_bimamba2.py"] == (
        REPO / "models/hf_code/modeling_wav2vec2_bimamba2.py").read_bytes()
    assert json.loads(uploaded["config.json"])["auto_map"]["AutoModelForCTC"] == (
        "modeling_wav2vec2_bimamba2.Wav2Vec2BiMamba2ForCTC")

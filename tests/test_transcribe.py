"""transcribe.py and utils/transcription.py: recordings of any format, rate and channel count, one pass each, bad
files named and counted in the exit status; run dirs and exported dirs transcribe alike."""
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

import transcribe
from models.build import forward_model
from scripts import export_hf_model
from tests.conftest import TINY_MAMBA
from tests.test_hf import mamba_run, write_vocab
from utils.transcription import AudioError, audio_files, load_transcriber, read_audio

SR = 16000


def tones(seconds: float) -> np.ndarray:
    """A 16 kHz test signal well inside every rate's band."""
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1700 * t + 1)
            + 0.1 * np.sin(2 * np.pi * 3100 * t)).astype(np.float32)


def write_recordings(folder: Path) -> tuple[Path, Path, np.ndarray]:
    """The same 2 s signal as a 44.1 kHz stereo FLAC (channels x + n and x - n) and a 22.05 kHz mono WAV."""
    folder.mkdir(parents=True, exist_ok=True)
    x = tones(2.0)
    at_44k = soxr.resample(x, SR, 44100)
    other = 0.2 * np.sin(2 * np.pi * 900 * np.arange(len(at_44k)) / 44100)
    sf.write(folder / "lecture_44k_stereo.flac", np.stack([at_44k + other, at_44k - other], axis=1), 44100)
    sf.write(folder / "note_22k.wav", soxr.resample(x, SR, 22050), 22050)
    return folder / "lecture_44k_stereo.flac", folder / "note_22k.wav", x


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_audio_is_downmixed_and_resampled_to_the_models_rate(tmp_path):
    flac, wav, x = write_recordings(tmp_path)
    for path, rate, channels in ((flac, 44100, 2), (wav, 22050, 1)):
        audio = read_audio(path, SR)
        assert (audio.file_rate, audio.channels, audio.seconds) == (rate, channels, 2.0)
        assert audio.samples.dtype == np.float32 and len(audio.samples) == len(x)
        # the channels' mean (the other signal cancels), at 16 kHz; the edges aside, where resampling rings
        np.testing.assert_allclose(audio.samples[200:-200], x[200:-200], atol=1e-3)


def test_an_mp3_is_read_downmixed_and_resampled(tmp_path):
    x = tones(2.0)
    at_48k = soxr.resample(x, SR, 48000)
    sf.write(tmp_path / "talk.mp3", np.stack([at_48k, at_48k], axis=1), 48000, format="MP3")
    audio = read_audio(tmp_path / "talk.mp3", SR)
    assert (audio.file_rate, audio.channels, audio.seconds) == (48000, 2, 2.0)
    assert audio_files([tmp_path]) == [tmp_path / "talk.mp3"]
    # lossy: the decoded signal follows the original closely, not to the sample
    assert np.corrcoef(audio.samples, x)[0, 1] > 0.999


def test_transcribe_a_44k_stereo_flac_and_a_22k_wav(tiny_model_dir, tmp_path, capsys):
    checkpoint = mamba_run(tmp_path / "run", tiny_model_dir)
    flac, wav, _ = write_recordings(tmp_path / "audio")
    out = tmp_path / "out.jsonl"
    status = transcribe.main(["--model", str(checkpoint.parent), str(tmp_path / "audio"), "--output", str(out)])
    assert status == 0
    rows = read_jsonl(out)
    assert [Path(r["file"]).name for r in rows] == [flac.name, wav.name]
    transcriber = load_transcriber(checkpoint.parent)
    for row, path in zip(rows, (flac, wav)):
        assert row["duration"] == 2.0 and row["real_time_factor"] > 0
        assert row["text"] == transcriber.transcribe(read_audio(path, SR).samples)["text"]
        assert [w["word"] for w in row["words"]] == row["text"].split()
        times = [t for w in row["words"] for t in (w["start"], w["end"])]
        assert times == sorted(times) and times[-1] <= row["duration"]
    printed = capsys.readouterr().out
    assert f"{flac}: {rows[0]['text']}" in printed and f"{wav}: {rows[1]['text']}" in printed


def test_bad_files_are_named_and_the_others_still_transcribed(tiny_model_dir, tmp_path, capsys):
    checkpoint = mamba_run(tmp_path / "run", tiny_model_dir)
    flac, wav, _ = write_recordings(tmp_path / "audio")
    (tmp_path / "audio" / "corrupt.flac").write_bytes(b"fLaC" + bytes(range(256)) * 8)
    sf.write(tmp_path / "audio" / "empty.wav", np.zeros(0, np.float32), SR)
    sf.write(tmp_path / "audio" / "short.ogg", tones(0.005), SR)  # 80 samples: the tiny front end sees 165
    out = tmp_path / "out.jsonl"
    status = transcribe.main(["--model", str(checkpoint), str(tmp_path / "audio"), "--output", str(out),
                              "--timestamps", "char"])
    assert status == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 3
    assert any(f"{tmp_path / 'audio' / 'corrupt.flac'}: cannot read audio" in e for e in errors)
    assert any(f"{tmp_path / 'audio' / 'empty.wav'}: no audio samples" in e for e in errors)
    assert any(f"{tmp_path / 'audio' / 'short.ogg'}: 0.005 s, 80 samples: too short for one frame" in e
               for e in errors)
    rows = {Path(r["file"]).name: r for r in read_jsonl(out)}
    assert set(rows) == {"corrupt.flac", "empty.wav", "lecture_44k_stereo.flac", "note_22k.wav", "short.ogg"}
    for good in (flac.name, wav.name):
        assert rows[good]["text"] and "".join(c["char"] for c in rows[good]["chars"]) == rows[good]["text"]
    assert "error" in rows["corrupt.flac"] and "text" not in rows["corrupt.flac"]


def test_an_exported_dir_transcribes_as_its_run_dir(tiny_model_dir, tmp_path):
    checkpoint = mamba_run(tmp_path / "run", tiny_model_dir)
    exported = export_hf_model.export(checkpoint, tmp_path / "exported")
    flac, _, _ = write_recordings(tmp_path / "audio")
    from_run = load_transcriber(checkpoint).transcribe_file(flac)
    from_export = load_transcriber(exported).transcribe_file(flac)
    assert from_export["text"] == from_run["text"] and from_export["words"] == from_run["words"]


def test_a_classifier_model_names_its_predicted_intent(tiny_model_dir, tmp_path):
    checkpoint = mamba_run(tmp_path / "run", tiny_model_dir,
                           "use_classifier=True,classifier_num_targets=2,3,data_format=nltLa,ctc_weight=0")
    data = tmp_path / "slurp"
    write_vocab(data)
    (data / "categories.json").write_text(json.dumps([{"alarm": 0, "iot": 1}, {"set": 0, "remove": 1, "query": 2}]))
    flac, _, x = write_recordings(tmp_path / "audio")
    transcriber = load_transcriber(checkpoint, vocab=data)
    row = transcriber.transcribe(x)
    assert "text" not in row  # ctc_weight=0: its CTC head was never trained
    features = transcriber.feature_extractor(x, sampling_rate=SR, return_tensors="pt", return_attention_mask=True)
    with torch.no_grad():
        heads = forward_model(transcriber.model, features["input_values"], features["attention_mask"]).head_logits
    scenario, action = (["alarm", "iot"][int(heads[0].argmax())], ["set", "remove", "query"][int(heads[1].argmax())])
    assert row["labels"] == {"scenario": scenario, "action": action} and row["intent"] == f"{scenario}_{action}"


def test_a_run_without_a_vocabulary_is_an_error_naming_the_flag(tiny_model_dir, tmp_path):
    checkpoint = mamba_run(tmp_path / "run", tiny_model_dir)
    (checkpoint.parent / "vocab.json").unlink()
    with pytest.raises(SystemExit, match="no vocabulary to decode transcripts with .* pass --vocab"):
        transcribe.main(["--model", str(checkpoint), str(tmp_path)])
    with pytest.raises(AudioError, match="missing.wav: cannot read audio"):
        read_audio(tmp_path / "missing.wav", SR)


def test_the_long_recording_bench_runs_at_tiny_size_on_cpu(tmp_path):
    from bench import transcribe_long

    row = transcribe_long.main(["--preset", "tiny", "--seconds", "5", "--device", "cpu", "--mixed_precision", "no",
                                "--hparams", TINY_MAMBA, "--workdir", str(tmp_path), "--out",
                                str(tmp_path / "rows.jsonl")])
    assert row == json.loads((tmp_path / "rows.jsonl").read_text())
    assert row["audio_seconds"] == 5.0 and row["seconds"] > 0 and row["peak_gib"] > 0
    # "seconds" is rounded to the millisecond, the factor is computed before rounding
    assert row["real_time_factor"] == pytest.approx(row["seconds"] / 5.0, abs=0.0005 / 5.0 + 1e-6)
    assert read_audio(tmp_path / "recording.flac", SR).seconds == 5.0
    assert json.loads((tmp_path / "run" / "hparams.json").read_text())["asr_use_mamba"] is True

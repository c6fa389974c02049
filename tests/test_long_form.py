"""scripts/long_form.py: held-out test utterances joined into one recording, transcribed in one pass beside the same
utterances one at a time (tiny synthetic TED-LIUM, tiny random model)."""
import json

import numpy as np
import pytest
import soundfile as sf

from corpora import tedlium
from corpora.synth import synth_tedlium
from scripts import long_form
from tests.test_hf import mamba_run
from utils.data import load_audio, read_meta
from utils.metrics import asr_metrics


@pytest.fixture(scope="module")
def tedlium_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tedlium")
    synth_tedlium(root / "raw", talks=(1, 1, 2), segments_per_talk=(2, 3), progress=False)
    tedlium.main(["--src", str(root / "raw"), "--out", str(root / "data"), "--jobs", "1"])
    return root / "data"


def test_long_form_joins_held_out_utterances_and_scores_both_ways(tiny_model_dir, tedlium_dir, tmp_path):
    checkpoint = mamba_run(tmp_path / "run", tiny_model_dir)
    (checkpoint.parent / "vocab.json").unlink()  # the data dir's vocabulary is the default
    test_utts = read_meta(tedlium_dir / "meta.test.txt", tedlium_dir, long_form.create_hparams())
    first_two = sum(u.num_samples for u in test_utts[:2]) / 16000
    minutes = (first_two - 0.5) / 60  # more than the first utterance, less than the first two with their gap
    result = long_form.main(["--model", str(checkpoint.parent), "--data-dir", str(tedlium_dir), "--out",
                             str(tmp_path / "out"), "--minutes", str(minutes)])
    assert result == json.loads((tmp_path / "out" / "long_form.json").read_text())
    used = test_utts[:2]
    assert result["utterances"] == 2 and [s["name"] for s in result["segments"]] == [u.name for u in used]
    # the recording: the utterances in order with the gap between them (16-bit FLAC)
    recording, rate = sf.read(tmp_path / "out" / "long_form.flac", dtype="float32")
    gap = np.zeros(int(long_form.GAP_SECONDS * rate), np.float32)
    expected = np.concatenate([load_audio(used[0], rate), gap, load_audio(used[1], rate)])
    np.testing.assert_allclose(recording, expected, atol=1 / 2 ** 15)
    assert result["minutes"] == pytest.approx(len(expected) / rate / 60, abs=1e-3)
    # scores: the segments as a corpus, the recording against the joined references
    refs, hyps = [s["ref"] for s in result["segments"]], [s["hyp"] for s in result["segments"]]
    assert refs == [u.text for u in used]
    assert result["segment_wer"] == asr_metrics(refs, hyps)["wer"]
    assert result["long_wer"] == asr_metrics([" ".join(refs)], [result["long_hyp"]])["wer"]

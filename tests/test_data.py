"""utils/data.py on tiny corpora built in tmp_path: meta parsing, transcripts, batching, feeder, collation, SI."""
import json
import logging
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from hparams import create_hparams
from utils import data
from utils.data import Utterance

SR = 16000
LETTERS = "abcdefghijklmnopqrstuvwxyz'"


# ------------------------------------------------------------------------------------------------------------
# fixtures


def write_vocab(data_dir):
    vocab = {"[PAD]": 0, **{c: i + 1 for i, c in enumerate(LETTERS)}}
    vocab["|"] = len(vocab)
    vocab["[UNK]"] = len(vocab)
    (data_dir / "vocab.json").write_text(json.dumps(vocab))
    return data_dir / "vocab.json"


def write_audio(path, num_samples, seed=0, sr=SR, channels=1, scale=0.3):
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / sr
    wave = scale * np.sin(2 * np.pi * (100 + 20 * seed) * t) + 0.05 * rng.standard_normal(num_samples)
    if channels > 1:
        wave = np.stack([wave] * channels, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), wave.astype(np.float32), sr)


WORDS = ["so", "it", "doesn 't", "matter", "we", "can", "see", "the", "world", "change"]


def make_corpus(data_dir, n=40, seed=0, fmt="nlt", ext=".flac"):
    """n utterances of 400..6000 samples in two talks, a meta.train.txt and vocab.json; returns the meta path."""
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        name = f"talk{i % 2}_{i:05d}"
        num_samples = int(rng.integers(400, 6000))
        write_audio(data_dir / name.rsplit("_", 1)[0] / (name + ext), num_samples, seed=i)
        text = " ".join(rng.choice(WORDS, size=int(rng.integers(1, 5))))
        if i % 7 == 0:
            text = "a"  # short transcript, dropped by the data warm-up
        fields = [name, str(num_samples), text] + (["s0,a1", "en"] if fmt == "nltLa" else [])
        lines.append("|".join(fields))
    write_vocab(data_dir)
    meta = data_dir / "meta.train.txt"
    meta.write_text("\n".join(lines) + "\n")
    return meta


def hp(extra=""):
    base = ("batch_size=4,batch_frame_limit=16000,batch_quad_frame_limit=4e7,bucket_size=16,data_warmup_steps=0,"
            "input_length_upper_bound=4000,target_length_lower_bound=2,max_eval_batches=0")
    return create_hparams(base + ("," + extra if extra else ""))


def fake_utts(n, seed=0, low=100, high=20000):
    rng = np.random.default_rng(seed)
    return [Utterance(f"u{i:04d}", int(rng.integers(low, high)), "ab", (), f"/nonexistent/u{i}.flac")
            for i in range(n)]


# ------------------------------------------------------------------------------------------------------------
# transcripts and vocab


@pytest.mark.parametrize("text, remove_unk, replace_apos, expected", [
    ("it doesn 't matter", True, True, "it doesn't matter"),
    ("it doesn 't matter", True, False, "it doesn 't matter"),
    ("we [UNK] saw  it", True, True, "we saw it"),
    ("we [UNK] saw", False, True, "we [UNK] saw"),
    ("a well-known  fact ", True, True, "a well known fact"),
    ("a well-known fact", False, True, "a well-known fact"),
    ("  [UNK]  ", True, True, ""),
])
def test_clean_transcript(text, remove_unk, replace_apos, expected):
    assert data.clean_transcript(text, remove_unk, replace_apos) == expected


def test_build_tokenizer_and_encode(tmp_path):
    tokenizer = data.build_tokenizer(write_vocab(tmp_path))
    assert len(tokenizer) == 30  # no <s> </s> added: asr_vocab_size is the vocab.json size
    assert (tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.word_delimiter_token_id) == (0, 29, 28)
    assert data.build_tokenizer(tmp_path).get_vocab() == tokenizer.get_vocab()  # a data dir works too
    assert data.encode_transcript(tokenizer, "ab c'") == [1, 2, 28, 3, 27]
    assert data.encode_transcript(tokenizer, "a [UNK] b") == [1, 28, 29, 28, 2]  # literal [UNK] is legitimate
    with pytest.raises(ValueError, match=r"talk_1: characters not in vocab.json: '\?' 'é'"):
        data.encode_transcript(tokenizer, "café?", name="talk_1")
    with pytest.raises(ValueError, match="other case"):
        data.encode_transcript(tokenizer, "Hello", name="x")
    assert data.encode_transcript(tokenizer, "aé b", strict=False) == [1, 29, 28, 2]  # dev/test: é -> [UNK]
    with pytest.raises(ValueError, match=r"2 transcripts .*'Z'.*: a, b"):
        data.check_transcripts([Utterance("a", 1, "Zz", (), ""), Utterance("b", 1, "Z", (), ""),
                                Utterance("c", 1, "z", (), "")], tokenizer)


def test_a_vocab_that_differs_from_the_runs_is_refused_naming_both_files(tmp_path, caplog):
    run_vocab = write_vocab(tmp_path)
    (tmp_path / "data").mkdir()
    vocab = json.loads(run_vocab.read_text())
    vocab["|"], vocab["[UNK]"] = vocab["[UNK]"], vocab["|"]  # a re-prepared subset shifted two ids
    (tmp_path / "data" / "vocab.json").write_text(json.dumps(vocab, indent=1))
    data.check_same_vocab(run_vocab, run_vocab, "the run in x", matters=True)
    reformatted = tmp_path / "other.json"
    reformatted.write_text(json.dumps(json.loads(run_vocab.read_text()), indent=4))
    data.check_same_vocab(reformatted, run_vocab, "the run in x", matters=True)  # same mapping, other layout
    with pytest.raises(ValueError, match=rf"^{tmp_path}/data/vocab.json differs from {run_vocab}, the vocabulary of "
                                         rf"the run in x: 2 token\(s\) with another id, e.g. '\|' 29 here and 28 "
                                         rf"there; pass --vocab-path {run_vocab}"):
        data.check_same_vocab(tmp_path / "data", run_vocab, "the run in x", matters=True)
    with caplog.at_level(logging.WARNING):
        data.check_same_vocab(tmp_path / "data", run_vocab, "the run in x", matters=False)
    assert "differs from" in caplog.text and "ctc_weight=0" in caplog.text
    data.check_same_vocab(tmp_path / "data", tmp_path / "none" / "vocab.json", "an old run", matters=True)


def test_build_tokenizer_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        data.build_tokenizer(tmp_path / "vocab.json")
    (tmp_path / "vocab.json").write_text(json.dumps({"[PAD]": 0, "a": 1, "|": 2}))
    with pytest.raises(ValueError, match=r"lacks \[UNK\]"):
        data.build_tokenizer(tmp_path / "vocab.json")


# ------------------------------------------------------------------------------------------------------------
# meta files


def test_read_meta_nlt_both_separators(tmp_path):
    write_audio(tmp_path / "AlGore_2009" / "AlGore_2009_00000003.flac", 1600)
    write_audio(tmp_path / "AlGore_2009" / "AlGore_2009_00000004.wav", 800)
    write_audio(tmp_path / "solo.wav", 800)
    meta = tmp_path / "meta.dev.txt"
    meta.write_text("AlGore_2009_00000003|1600|it doesn 't [UNK] matter\n"
                    "AlGore_2009_00000004\t800\twell-known\r\n"
                    "\n"
                    "solo|800|x\n"
                    "AlGore_2009_00000005|900|missing audio\n")
    utts = data.read_meta(meta, tmp_path, hp())
    assert [u.name for u in utts] == ["AlGore_2009_00000003", "AlGore_2009_00000004", "solo",
                                      "AlGore_2009_00000005"]
    assert [u.num_samples for u in utts] == [1600, 800, 800, 900]
    assert [u.text for u in utts] == ["it doesn't matter", "well known", "x", "missing audio"]
    assert utts[0].labels == ()
    assert utts[0].audio_path == str(tmp_path / "AlGore_2009" / "AlGore_2009_00000003.flac")
    assert utts[1].audio_path == str(tmp_path / "AlGore_2009" / "AlGore_2009_00000004.wav")
    assert utts[2].audio_path == str(tmp_path / "solo.wav")
    assert utts[3].audio_path.endswith("AlGore_2009_00000005.flac")  # not opened here; loading names it
    with pytest.raises(FileNotFoundError, match="AlGore_2009_00000005.flac"):
        data.load_audio(utts[3], SR)


def test_read_meta_nltLa(tmp_path, caplog):
    (tmp_path / "categories.json").write_text(json.dumps([{"alarm": 0, "music": 1}, {"set": 0, "play": 1,
                                                                                    "query": 2}]))
    meta = tmp_path / "meta.train.txt"
    meta.write_text("en_0000000012|1600|wake me up|alarm,set|en\n"
                    "en_0000000013\t800\tplay jazz\tmusic,play\ten\n"
                    "en_0000000014|800|what|weather,query|en\n"
                    "en_0000000015|800|hmm|music,dance|en\n")
    hparams = hp("data_format=nltLa,use_classifier=True,classifier_num_targets=2,3")
    with caplog.at_level(logging.WARNING):
        utts = data.read_meta(meta, tmp_path, hparams)
    assert [(u.name, u.labels) for u in utts] == [("en_0000000012", (0, 0)), ("en_0000000013", (1, 1))]
    assert utts[0].audio_path == str(tmp_path / "en" / "en_0000000012.flac")
    assert "dropped 2 of 4 lines" in caplog.text and "line 3" in caplog.text
    hparams.set("classifier_num_targets", "2,2")
    with pytest.raises(ValueError, match="categories.json: 2 classifier head.*2,3 classes.*=2,2"):
        data.read_meta(meta, tmp_path, hparams)


@pytest.mark.parametrize("fmt, line, message", [
    ("nlt", "a_1|1600", "expected 3 fields (name|num_samples|text) separated by '|', got 2"),
    ("nlt", "a_1\t1600", "expected 3 fields (name|num_samples|text) separated by '\\t', got 2"),
    ("nlt", "a_1|16k|hello", "num_samples '16k' is not an integer"),
    ("nlt", "a_1|0|hello", "num_samples must be positive"),
    ("nlt", "a_0|10|hello", "utterance a_0 already on line 1"),
    ("nlt", "|10|hello", "empty utterance name"),
    ("nltLa", "a_1|10|hi|x|en", "expected 2 comma-separated labels"),
    ("nltLa", "a_1|10|hi|x,y", "expected 5 fields"),
])
def test_meta_errors_name_file_and_line(tmp_path, fmt, line, message):
    (tmp_path / "categories.json").write_text(json.dumps([{"x": 0}, {"y": 0}]))
    first = "a_0|10|hello" + ("|x,y|en" if fmt == "nltLa" else "")
    meta = tmp_path / "meta.train.txt"
    meta.write_text(f"{first}\n\n{line}\n")
    with pytest.raises(ValueError) as err:
        data.read_meta(meta, tmp_path, hp(f"data_format={fmt}"))
    assert str(err.value).startswith(f"{meta}:3: ")
    assert message in str(err.value)


def test_meta_file_level_errors(tmp_path):
    (tmp_path / "meta.train.txt").write_text("\n")
    with pytest.raises(ValueError, match="no utterances"):
        data.read_meta(tmp_path / "meta.train.txt", tmp_path, hp())
    with pytest.raises(FileNotFoundError, match="categories.json"):
        data.read_meta(tmp_path / "meta.train.txt", tmp_path, hp("data_format=nltLa"))
    with pytest.raises(FileNotFoundError, match="meta.dev.txt not found"):
        data.load_corpus(tmp_path, "meta.dev.txt", hp())


def test_load_corpus_looks_meta_up_under_data_dir(tmp_path):
    meta = make_corpus(tmp_path, n=4)
    by_name = data.load_corpus(tmp_path, "meta.train.txt", hp())
    assert by_name == data.load_corpus(tmp_path, str(meta), hp())
    assert len(by_name) == 4


def test_a_bare_meta_name_comes_from_the_data_dir_even_beside_a_stray_copy(tmp_path, monkeypatch):
    """A meta.train.txt in the working directory is not the data dir's: it is read only when named as a path."""
    make_corpus(tmp_path / "data", n=4)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "meta.train.txt").write_text("talk0_00000|1000|stray\n")
    assert len(data.load_corpus(tmp_path / "data", "meta.train.txt", hp())) == 4
    assert [u.text for u in data.load_corpus(tmp_path / "data", "./meta.train.txt", hp())] == ["stray"]
    with pytest.raises(FileNotFoundError, match=r"meta file meta.dev.txt not found in --data-dir .*data \(a bare "
                                                r"file name is taken from there; write ./meta.dev.txt"):
        data.load_corpus(tmp_path / "data", "meta.dev.txt", hp())
    with pytest.raises(FileNotFoundError, match=r"meta file elsewhere/meta.train.txt not found$"):
        data.load_corpus(tmp_path / "data", "elsewhere/meta.train.txt", hp())


# ------------------------------------------------------------------------------------------------------------
# batching


def _check_batches(batches, utts, batch_size, frame_limit, quad_limit):
    names = [u.name for b in batches for u in b]
    assert sorted(names) == sorted(u.name for u in utts)  # each utterance exactly once
    for b in batches:
        assert b
        longest = max(u.num_samples for u in b)
        if len(b) > 1:
            assert len(b) <= batch_size
            assert len(b) * longest <= frame_limit
            assert len(b) * longest ** 2 <= quad_limit


def test_make_batches_invariants(caplog):
    utts = fake_utts(500, low=100, high=30000)
    utts += [Utterance("huge", 60000, "ab", (), "")]  # over the frame limit alone
    args = dict(batch_size=8, frame_limit=80000, quad_frame_limit=1e9, bucket_size=64)
    with caplog.at_level(logging.WARNING):
        batches = data.make_batches(utts, **args, rng=np.random.default_rng(3))
    assert "huge" in caplog.text
    _check_batches(batches, utts, 8, 80000, 1e9)
    assert [u.name for u in next(b for b in batches if b[0].name == "huge")] == ["huge"]
    again = data.make_batches(utts, **args, rng=np.random.default_rng(3))
    other = data.make_batches(utts, **args, rng=np.random.default_rng(4))
    assert [[u.name for u in b] for b in again] == [[u.name for u in b] for b in batches]
    assert [[u.name for u in b] for b in other] != [[u.name for u in b] for b in batches]
    # the quadratic limit binds: 3 * 20000 ** 2 > 1e9
    long = [Utterance(f"l{i}", 20000, "", (), "") for i in range(6)]
    assert [len(b) for b in data.make_batches(long, 8, 1e9, 1e9, 64)] == [2, 2, 2]


def test_make_batches_without_rng_keeps_order_and_sorts_buckets():
    utts = fake_utts(40)
    batches = data.make_batches(utts, batch_size=4, frame_limit=1e9, quad_frame_limit=1e18, bucket_size=10)
    flat = [u for b in batches for u in b]
    for start in range(0, 40, 10):  # bucket i holds utterances 10 i .. 10 i + 9, sorted by length
        bucket = flat[start:start + 10]
        assert sorted(u.name for u in bucket) == [u.name for u in utts[start:start + 10]]
        assert [u.num_samples for u in bucket] == sorted(u.num_samples for u in bucket)


def test_shard_disjoint_equal_counts():
    batches = list(range(11))
    shards = [data.shard(batches, r, 3) for r in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3]
    assert sorted(sum(shards, [])) == list(range(9))
    assert sum(len(data.shard(batches, r, 3, trim=False)) for r in range(3)) == 11


# ------------------------------------------------------------------------------------------------------------
# audio and collation


def test_collate_shapes_normalisation_and_padding(tmp_path):
    tokenizer = data.build_tokenizer(write_vocab(tmp_path))
    utts = []
    for i, (n, text) in enumerate([(1600, "ab"), (800, "abc de"), (1200, "")]):
        write_audio(tmp_path / "spk" / f"spk_{i}.wav", n, seed=i, scale=0.1 + i)
        utts.append(Utterance(f"spk_{i}", n, text, (i, 2), str(tmp_path / "spk" / f"spk_{i}.wav")))
    hparams = hp()
    batch = data.collate(utts, tokenizer, data.build_feature_extractor(hparams), hparams)
    assert batch["input_values"].shape == (3, 1600) and batch["input_values"].dtype == torch.float32
    assert batch["attention_mask"].dtype == torch.long
    assert batch["attention_mask"].sum(1).tolist() == [1600, 800, 1200]
    for i, n in enumerate([1600, 800, 1200]):
        valid = batch["input_values"][i, :n].double()
        assert abs(valid.mean().item()) < 1e-4 and abs(valid.std(unbiased=False).item() - 1) < 1e-3
        assert torch.all(batch["input_values"][i, n:] == 0)
    assert batch["labels"].tolist() == [[1, 2, -100, -100, -100, -100],
                                        [1, 2, 3, 28, 4, 5],
                                        [-100] * 6]
    assert batch["label_lengths"].tolist() == [2, 6, 0]
    assert batch["classifier_labels"].tolist() == [[0, 2], [1, 2], [2, 2]]
    assert batch["classifier_labels"].dtype == torch.long
    assert batch["num_samples"].tolist() == [1600, 800, 1200]
    assert batch["names"] == ["spk_0", "spk_1", "spk_2"] and batch["texts"] == ["ab", "abc de", ""]


def test_collate_without_transcripts_or_labels(tmp_path):
    write_audio(tmp_path / "a.wav", 500)
    utt = Utterance("a", 500, "", (), str(tmp_path / "a.wav"))
    hparams = hp()
    batch = data.collate([utt], None, data.build_feature_extractor(hparams), hparams)
    assert batch["labels"].tolist() == [[-100]] and batch["label_lengths"].tolist() == [0]
    assert "classifier_labels" not in batch


def write_float_wav(path, num_samples, bad_at=()):
    """A float WAV (the one encoding that can hold NaN and inf) with NaN at the ``bad_at`` samples."""
    wave = 0.1 * np.sin(np.arange(num_samples, dtype=np.float32))
    wave[list(bad_at)] = np.nan
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), wave, SR, format="WAV", subtype="FLOAT")


def test_load_audio_errors(tmp_path):
    write_audio(tmp_path / "ok.wav", 1000)
    write_audio(tmp_path / "sr8k.wav", 1000, sr=8000)
    write_audio(tmp_path / "stereo.wav", 1000, channels=2)
    (tmp_path / "corrupt.flac").write_bytes(b"not audio at all" * 10)
    write_float_wav(tmp_path / "nan.wav", 1000, bad_at=(3, 500))

    def utt(file, n=1000):
        return Utterance("u", n, "", (), str(tmp_path / file))

    assert data.load_audio(utt("ok.wav"), SR).dtype == np.float32
    assert len(data.load_audio(utt("ok.wav", 1000 + data.LENGTH_TOLERANCE), SR)) == 1000
    for file, n, error, message in [("missing.flac", 1000, FileNotFoundError, "missing.flac not found"),
                                    ("sr8k.wav", 1000, ValueError, "sr8k.wav: sample rate 8000 Hz"),
                                    ("stereo.wav", 1000, ValueError, "stereo.wav: 2 channels"),
                                    ("corrupt.flac", 1000, ValueError, "corrupt.flac: cannot decode"),
                                    ("ok.wav", 1100, ValueError, "ok.wav: 1000 samples, but the meta line of u "
                                                                 "says 1100"),
                                    ("nan.wav", 1000, ValueError, "nan.wav: 2 of 1000 samples of u are NaN or inf")]:
        with pytest.raises(error, match=message):
            data.load_audio(utt(file, n), SR)


def test_check_audio_finds_every_bad_file_from_its_header(tmp_path, caplog, monkeypatch):
    """Each problem load_audio would meet mid-run is found up front: a dev set stops the run, a training set loses
    those utterances (with a warning naming them), and too many bad training files stop it too."""
    meta = make_corpus(tmp_path, n=12)
    utts = data.load_corpus(tmp_path, str(meta), hp())
    by_name = {u.name: u for u in utts}
    bad = {"talk0_00000": "not found", "talk1_00001": "cannot read the audio header",
           "talk0_00002": "sample rate 8000 Hz", "talk1_00003": "2 channels",
           "talk0_00004": f"{by_name['talk0_00004'].num_samples - 100} samples, but the meta line",
           "talk1_00005": "1 of .* samples of talk1_00005 are NaN or inf"}
    Path(by_name["talk0_00000"].audio_path).unlink()
    Path(by_name["talk1_00001"].audio_path).write_bytes(b"RIFF and then nothing")
    write_audio(Path(by_name["talk0_00002"].audio_path), by_name["talk0_00002"].num_samples, sr=8000)
    write_audio(Path(by_name["talk1_00003"].audio_path), by_name["talk1_00003"].num_samples, channels=2)
    write_audio(Path(by_name["talk0_00004"].audio_path), by_name["talk0_00004"].num_samples - 100)
    nan_file = Path(by_name["talk1_00005"].audio_path)
    nan_file.unlink()  # a .wav beside no .flac: the resolver picks it
    write_float_wav(nan_file.with_suffix(".wav"), by_name["talk1_00005"].num_samples, bad_at=(10,))
    utts = data.load_corpus(tmp_path, str(meta), hp())
    found = dict((u.name, p) for u, p in zip(utts, [data.audio_problem(u, SR) for u in utts]) if p)
    assert sorted(found) == sorted(bad)
    for name, message in bad.items():
        assert re.search(message, found[name]), found[name]
    with pytest.raises(ValueError, match=r"^dev: 6 of 12 audio files fail the check: talk0_00000: audio file .* not "
                                         r"found .*; .*talk1_00001.*; .*talk0_00002.*; and 3 more$"):
        data.check_audio(utts, SR, "dev")
    with caplog.at_level(logging.WARNING):
        kept = data.check_audio(utts, SR, "train", drop=True)
    assert sorted(u.name for u in kept) == sorted(set(by_name) - set(bad))
    assert "train: 6 of 12 audio files fail the check" in caplog.text and "left out of training" in caplog.text
    monkeypatch.setattr(data, "bad_audio_limit", lambda n: 5)
    with pytest.raises(data.DataError, match="; more than 5: is --data-dir complete"):
        data.check_audio(utts, SR, "train", drop=True)


# ------------------------------------------------------------------------------------------------------------
# training feeder


def _names(batch):
    return tuple(batch["names"])


def test_feeder_epochs_cover_each_utterance_once(tmp_path):
    make_corpus(tmp_path, n=40)
    utts = data.load_corpus(tmp_path, "meta.train.txt", hp())
    tokenizer = data.build_tokenizer(tmp_path / "vocab.json")
    with data.BatchFeeder(utts, hp(), tokenizer, seed=7) as feeder:
        n0, n1 = len(feeder.epoch_batches(0)), len(feeder.epoch_batches(1))
        epoch0 = [next(feeder) for _ in range(n0)]
        assert feeder.epoch == 0
        epoch1 = [next(feeder) for _ in range(n1)]
    for epoch in (epoch0, epoch1):
        assert sorted(n for b in epoch for n in b["names"]) == sorted(u.name for u in utts)
    assert [_names(b) for b in epoch0] != [_names(b) for b in epoch1]  # epoch e shuffled with seed + e
    with data.BatchFeeder(utts, hp(), tokenizer, seed=7) as same:
        assert [_names(next(same)) for _ in range(n0)] == [_names(b) for b in epoch0]


def test_feeder_rank_sharding(tmp_path):
    make_corpus(tmp_path, n=40)
    utts = data.load_corpus(tmp_path, "meta.train.txt", hp())
    tokenizer = data.build_tokenizer(tmp_path / "vocab.json")
    for epoch in (0, 1):
        shards = [data.BatchFeeder(utts, hp(), tokenizer, seed=1, rank=r, world_size=3).epoch_batches(epoch)
                  for r in range(3)]
        assert len({len(s) for s in shards}) == 1
        names = [u.name for s in shards for b in s for u in b]
        assert len(names) == len(set(names))
        everything = data.make_batches(utts, 4, 16000, 4e7, 16, np.random.default_rng(1 + epoch))
        assert len(shards[0]) == len(everything) // 3


def test_feeder_data_warmup_switches_off(tmp_path):
    make_corpus(tmp_path, n=40)
    hparams = hp("data_warmup_steps=6")
    utts = data.load_corpus(tmp_path, "meta.train.txt", hparams)
    assert any(u.num_samples > 4000 for u in utts) and any(len(u.text) <= 2 for u in utts)

    def keep(u, step):
        return step >= 6 or (u.num_samples <= 4000 and len(u.text) > 2)

    feeder = data.BatchFeeder(utts, hparams, data.build_tokenizer(tmp_path / "vocab.json"), seed=0, prefetch=8)
    planned = feeder.epoch_batches(0) + feeder.epoch_batches(1)
    got, step = [], 0
    while len(got) < 30:
        got.append((step, feeder.next(step)["names"]))
        if step == 4:
            time.sleep(0.3)  # the prefetcher now holds batches it built under the warm-up filter
        step += 1
    feeder.close()
    assert _prefetch_threads() == 0
    expected, step = [], 0  # each planned batch filtered by the step at which it is consumed, emptied ones skipped
    for batch in planned:
        kept = [u.name for u in batch if keep(u, step)]
        if kept:
            expected.append((step, kept))
            step += 1
    assert got == expected[:30]
    after = {n for s, names in got if s >= 6 for n in names}
    by_name = {u.name: u for u in utts}
    assert any(by_name[n].num_samples > 4000 for n in after) and any(len(by_name[n].text) <= 2 for n in after)


def test_feeder_resume_yields_the_same_batches(tmp_path):
    make_corpus(tmp_path, n=40)
    hparams = hp("data_warmup_steps=5")
    utts = data.load_corpus(tmp_path, "meta.train.txt", hparams)
    tokenizer = data.build_tokenizer(tmp_path / "vocab.json")
    k, m = 3, 25  # save inside the warm-up; the prefetched batches straddle it; continue over an epoch end
    with data.BatchFeeder(utts, hparams, tokenizer, seed=11, prefetch=8) as feeder:
        assert m > len(feeder.epoch_batches(0))
        for step in range(k):
            feeder.next(step)
        state = json.loads(json.dumps(feeder.state_dict()))  # survives a checkpoint round trip
        expected = [_names(feeder.next(step)) for step in range(k, k + m)]
    with data.BatchFeeder(utts, hparams, tokenizer, seed=11, prefetch=2) as resumed:
        resumed.load_state_dict(state)
        assert [_names(resumed.next(step)) for step in range(k, k + m)] == expected
    with data.BatchFeeder(utts, hparams, tokenizer, seed=11, rank=1, world_size=2) as rank1:
        rank1.load_state_dict([{}, state | {"world_size": 2}])  # a list: every rank's state, this rank takes its own
        assert rank1.state_dict()["index"] == state["index"]
    with data.BatchFeeder(utts[:-1], hparams, tokenizer, seed=11) as other:
        with pytest.raises(ValueError, match="num_utterances 40 != 39"):
            other.load_state_dict(state)


def test_feeder_batches_do_not_depend_on_the_number_of_workers(tmp_path):
    make_corpus(tmp_path, n=40)
    hparams = hp("data_warmup_steps=4")
    utts = data.load_corpus(tmp_path, "meta.train.txt", hparams)
    tokenizer = data.build_tokenizer(tmp_path / "vocab.json")
    runs = {}
    for workers in (1, 4):
        with data.BatchFeeder(utts, hparams, tokenizer, seed=3, prefetch=3, workers=workers) as feeder:
            runs[workers] = [feeder.next(step) for step in range(25)]  # over the warm-up's end and an epoch's
        assert _prefetch_threads() == 0
    for one, four in zip(runs[1], runs[4]):
        assert _names(one) == _names(four)
        assert torch.equal(one["input_values"], four["input_values"]) and torch.equal(one["labels"], four["labels"])


def test_feeder_leaves_unreadable_audio_out_once_per_file_and_stops_past_the_limit(tmp_path, caplog, monkeypatch):
    """A file that fails to load mid-run (gone, damaged behind its header, NaN) costs its utterance only: it never
    reaches a batch, each file is named once, the count goes up; past the limit the run stops (DataError)."""
    make_corpus(tmp_path, n=8)
    utts = data.load_corpus(tmp_path, "meta.train.txt", hp())
    (tmp_path / "talk1" / "talk1_00003.flac").unlink()
    flac = (tmp_path / "talk0" / "talk0_00004.flac").read_bytes()
    (tmp_path / "talk0" / "talk0_00004.flac").write_bytes(flac[:len(flac) // 2])  # header intact, body cut
    (tmp_path / "talk1" / "talk1_00005.flac").unlink()
    write_float_wav(tmp_path / "talk1" / "talk1_00005.flac", utts[5].num_samples, bad_at=(7,))  # NaN behind .flac
    bad = {"talk1_00003", "talk0_00004", "talk1_00005"}
    hparams = hp("batch_size=100,batch_frame_limit=1e9,batch_quad_frame_limit=1e18")
    feeder = data.BatchFeeder(utts, hparams, data.build_tokenizer(tmp_path / "vocab.json"), seed=0)
    with caplog.at_level(logging.WARNING):
        batches = [next(feeder) for _ in range(3)]  # three epochs of one batch each
    feeder.close()
    for batch in batches:
        assert sorted(batch["names"]) == sorted({u.name for u in utts} - bad)
        assert torch.isfinite(batch["input_values"]).all()
    warnings = [r.getMessage() for r in caplog.records if "is left out of its batch" in r.getMessage()]
    assert len(warnings) == 3 and all(any(name in w for w in warnings) for name in bad), warnings
    assert "(3 unreadable training file(s) so far)" in warnings[-1]
    monkeypatch.setattr(data, "bad_audio_limit", lambda n: 2)
    feeder = data.BatchFeeder(utts, hparams, data.build_tokenizer(tmp_path / "vocab.json"), seed=0)
    with pytest.raises(data.DataError, match=r"3 training audio files cannot be loaded, more than 2"):
        for _ in range(3):  # the worker that meets the third file may be building a later batch
            next(feeder)
    feeder.close()


def test_a_data_warmup_that_keeps_nothing_stops_naming_its_bounds_and_units(tmp_path):
    """input_length_upper_bound given in seconds (10) instead of samples: every batch would be emptied for ever."""
    make_corpus(tmp_path, n=12)
    hparams = hp("data_warmup_steps=100,input_length_upper_bound=10")
    utts = data.load_corpus(tmp_path, "meta.train.txt", hparams)
    feeder = data.BatchFeeder(utts, hparams, data.build_tokenizer(tmp_path / "vocab.json"), seed=0)
    with pytest.raises(data.DataError, match=r"data warm-up \(steps below data_warmup_steps=100\) keeps utterances "
                                             r"of at most input_length_upper_bound=10 samples \(0.000625 s at "
                                             r"sr=16000; the shortest utterance has \d+\) and a transcript longer "
                                             r"than target_length_lower_bound=2 characters .*: none of the 12"):
        feeder.next(0)
    feeder.close()
    with data.BatchFeeder(utts, hparams, data.build_tokenizer(tmp_path / "vocab.json"), seed=0) as feeder:
        assert feeder.next(100)["names"]  # past the warm-up the filter does not apply
    # a whole epoch of emptied batches in a row (e.g. on one rank of several) stops the run too
    hparams = hp("data_warmup_steps=100")
    with data.BatchFeeder(utts, hparams, data.build_tokenizer(tmp_path / "vocab.json"), seed=0) as feeder:
        feeder.next(0)
        hparams.set("input_length_upper_bound", 10)
        feeder.close()  # the batches prefetched under the earlier bound go
        with pytest.raises(data.DataError, match=r"batches in a row came out empty \(rank 0\): the data warm-up"):
            feeder.next(1)


def test_feeder_rejects_out_of_vocab_transcripts(tmp_path):
    tokenizer = data.build_tokenizer(write_vocab(tmp_path))
    with pytest.raises(ValueError, match="1 transcripts hold characters not in vocab.json: 'é': b"):
        data.BatchFeeder([Utterance("a", 10, "ab", (), ""), Utterance("b", 10, "é", (), "")], hp(), tokenizer)


# ------------------------------------------------------------------------------------------------------------
# evaluation batches


def test_eval_batches(tmp_path):
    make_corpus(tmp_path, n=30)
    hparams = hp()
    utts = data.load_corpus(tmp_path, "meta.train.txt", hparams)
    tokenizer = data.build_tokenizer(tmp_path / "vocab.json")
    plan = data.plan_eval_batches(utts, hparams)
    _check_batches(plan, utts, 4, 8000, 2e7)  # halved limits
    lengths = [u.num_samples for b in plan for u in b]
    assert lengths == sorted(lengths)  # one length sort, no shuffling
    batches = data.eval_batches(utts, hparams, tokenizer)
    assert len(batches) == len(plan)  # a progress bar's total, before any batch is built
    assert [_names(b) for b in batches] == [tuple(u.name for u in b) for b in plan]
    ranks = [[_names(b) for b in data.eval_batches(utts, hparams, tokenizer, rank=r, world_size=4)]
             for r in range(4)]
    assert sorted(n for r in ranks for b in r for n in b) == sorted(u.name for u in utts)  # no padding
    capped = data.plan_eval_batches(utts, hp("max_eval_batches=3"))
    assert len(capped) == 3 and capped[0] == plan[0] and capped[-1] == plan[-1]
    assert len(data.plan_eval_batches(utts, hp("max_eval_batches=3"), max_batches=0)) == len(plan)
    batches = iter(data.eval_batches(utts, hparams, tokenizer, prefetch=1))
    next(batches)
    assert _prefetch_threads() >= 2  # the prefetcher and its workers (started as work comes)
    batches.close()  # what a `break` out of the loop does (when the iterator is dropped)
    assert _prefetch_threads() == 0


def test_eval_encodes_unseen_characters_as_unk(tmp_path, caplog):
    tokenizer = data.build_tokenizer(write_vocab(tmp_path))  # SLURP's dev/test may hold characters train lacks
    write_audio(tmp_path / "en" / "en_1.flac", 800)
    utt = Utterance("en_1", 800, "aé", (), str(tmp_path / "en" / "en_1.flac"))
    with caplog.at_level(logging.WARNING):
        (batch,) = data.eval_batches([utt], hp(), tokenizer)
    assert batch["labels"].tolist() == [[1, 29]] and batch["texts"] == ["aé"]
    assert "'é': en_1" in caplog.text


def _prefetch_threads():
    return sum(t.name.startswith("cald-data") and t.is_alive() for t in threading.enumerate())


# ------------------------------------------------------------------------------------------------------------
# VoxCeleb1 SI as the SUPERB DatasetDict


def make_voxceleb(root):
    entries = [(1, "id10003/vidA/00001.wav"), (3, "id10001/vidB/00002.wav"), (1, "id10001/vidB/00001.wav"),
               (2, "id10002/vidC/00001.wav"), (1, "id10002/vidC/00002.wav"), (3, "id10003/vidA/00002.wav")]
    for i, (_, relpath) in enumerate(entries):
        write_audio(root / "wav" / relpath, 300 + 100 * i, seed=i)
    (root / "iden_split.txt").write_text("".join(f"{s} {p}\n" for s, p in entries))
    return entries


def test_parse_hf_data_dir():
    assert data.parse_hf_data_dir("s3prl/superb--si--data/VoxCeleb1") == ("s3prl/superb", "si", "data/VoxCeleb1")
    with pytest.raises(ValueError, match="<dataset id>--<subset>--<manual dir>"):
        data.parse_hf_data_dir("data/VoxCeleb1")


def test_superb_si_dataset_built_and_cached(tmp_path):
    root = tmp_path / "VoxCeleb1"
    make_voxceleb(root)
    dataset = data.superb_si_dataset(root)
    assert set(dataset) == {"train", "validation", "test"}
    assert {"file", "label", "num_samples"} <= set(dataset["train"].column_names)
    train = dataset["train"]
    assert train["name"] == ["id10003_vidA_00001", "id10001_vidB_00001", "id10002_vidC_00002"]  # the original's
    assert train["label"] == [2, 0, 1]  # SUPERB's class index: id10001 -> 0
    assert train["num_samples"] == [300, 500, 700]
    assert dataset["validation"]["label"] == [1] and dataset["test"]["label"] == [0, 2]
    assert train["file"][0] == str(root.resolve() / "wav" / "id10003/vidA/00001.wav")
    caches = list(root.glob("superb_si-*"))
    assert len(caches) == 1

    (root / "wav" / "id10001/vidB/00001.wav").unlink()  # the cache is reused: no header is read again
    assert data.superb_si_dataset(root)["train"]["label"] == [2, 0, 1]

    (root / "iden_split.txt").write_text("1 id10003/vidA/00001.wav\n3 id10002/vidC/00001.wav\n")  # edited: rebuilt
    rebuilt = data.superb_si_dataset(root)
    # the class index does not depend on which speakers are present (a sorted index would give 1 and 0)
    assert rebuilt["train"]["label"] == [2] and rebuilt["test"]["label"] == [1] and len(rebuilt["validation"]) == 0
    assert [p.name for p in root.glob("superb_si-*")] != [p.name for p in caches]
    assert len(list(root.glob("superb_si-*"))) == 1


def test_superb_si_reads_veri_test_class_when_present(tmp_path, caplog):
    root = tmp_path / "VoxCeleb1"
    make_voxceleb(root)
    with caplog.at_level("INFO"):
        assert len(data.superb_si_dataset(root)["train"]) == 3
    assert f"split from {root.resolve() / 'iden_split.txt'}" in caplog.text
    (root / "veri_test_class.txt").write_text("1 id10002/vidC/00002.wav\n3 id10003/vidA/00002.wav\n")
    caplog.clear()
    with caplog.at_level("INFO"):
        dataset = data.superb_si_dataset(root)
    assert f"split from {root.resolve() / 'veri_test_class.txt'}" in caplog.text
    assert dataset["train"]["name"] == ["id10002_vidC_00002"] and dataset["test"]["label"] == [2]


def test_superb_si_errors(tmp_path):
    root = tmp_path / "VoxCeleb1"
    with pytest.raises(Exception, match="iden_split.txt not found"):
        data.superb_si_dataset(root)
    make_voxceleb(root)
    (root / "wav" / "id10002/vidC/00001.wav").unlink()
    with pytest.raises(ValueError, match="id10002/vidC/00001.wav: cannot read"):
        data.superb_si_dataset(root)


def test_load_corpus_hf_si(tmp_path, monkeypatch):
    make_voxceleb(tmp_path / "data" / "VoxCeleb1")
    monkeypatch.chdir(tmp_path)
    hparams = hp("use_classifier=True,classifier_num_targets=3")
    utts = data.load_corpus("s3prl/superb--si--data/VoxCeleb1", "test", hparams, use_hf_dataset=True)
    assert [(u.name, u.text, u.labels, u.num_samples) for u in utts] == [("id10001_vidB_00002", "", (0,), 400),
                                                                          ("id10003_vidA_00002", "", (2,), 800)]
    batch = data.collate(utts, None, data.build_feature_extractor(hparams), hparams)
    assert batch["classifier_labels"].tolist() == [[0], [2]] and batch["labels"].tolist() == [[-100], [-100]]
    with pytest.raises(ValueError, match="split 'dev' is not one of train, validation, test"):
        data.load_corpus("s3prl/superb--si--data/VoxCeleb1", "dev", hparams, use_hf_dataset=True)
    with pytest.raises(ValueError, match="3 classes, but hparams.classifier_num_targets=2"):
        data.load_corpus("s3prl/superb--si--data/VoxCeleb1", "test", hp("use_classifier=True,"
                                                                          "classifier_num_targets=2"),
                         use_hf_dataset=True)

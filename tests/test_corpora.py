"""corpora/: each prep script on a tiny espeak-ng corpus in the official raw layout (CPU, seconds)."""
import json
import logging
import os
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from corpora import CorpusError, build_ctc_vocab
from corpora import slurp, synth, tedlium, voxceleb1
from utils import data

SR = 16000


def stm_lines(root: Path, split: str) -> list[list[str]]:
    lines = []
    for stm in sorted((root / "legacy" / split / "stm").glob("*.stm")):
        lines += [line.split(None, 6) for line in stm.read_text().splitlines() if line.strip()]
    return lines


def meta_rows(path: Path) -> list[list[str]]:
    return [line.split("|") for line in path.read_text().splitlines()]


def assert_ctc_vocab(vocab: dict, texts: list[str]) -> None:
    tokens = list(vocab)
    assert list(vocab.values()) == list(range(len(vocab)))
    assert tokens[0] == "[PAD]" and tokens[-2:] == ["|", "[UNK]"]
    letters = [t for t in tokens if "A" <= t <= "Z"]
    assert letters == sorted(letters) and tokens[1:1 + len(letters)] == letters
    assert not any(t.islower() for t in tokens)
    chars = {c for text in texts for c in text.replace("[UNK]", "").replace(" ", "")}
    assert chars <= set(vocab), chars - set(vocab)


# ------------------------------------------------------------------------------------------------------------
# TED-LIUM 3


@pytest.fixture(scope="module")
def ted(tmp_path_factory):
    root = tmp_path_factory.mktemp("ted")
    raw, out = root / "TEDLIUM_release-3", root / "data"
    synth.synth_tedlium(raw, talks=(2, 1, 1), segments_per_talk=(3, 4), text="rich", ignore_prob=0.3, seed=0,
                        progress=False)
    summary = tedlium.prepare(raw, out, jobs=1, progress=False)
    return raw, out, summary


@pytest.mark.parametrize("written, expected", [
    ("it cost $3.50 today", "IT COST THREE DOLLARS FIFTY CENTS TODAY"),
    ("$1 and $0.01", "ONE DOLLAR AND ONE CENT"),
    ("the 1st and the 21st", "THE FIRST AND THE TWENTY FIRST"),
    ("about 2.5 times", "ABOUT TWO POINT FIVE TIMES"),
    ("1,000 people in 1999", "ONE THOUSAND PEOPLE IN NINETEEN NINETY NINE"),
    ("2005 and 2000 and 1900", "TWO THOUSAND FIVE AND TWO THOUSAND AND NINETEEN HUNDRED"),
    ("50% of us", "FIFTY PERCENT OF US"),
    ("rock & roll", "ROCK AND ROLL"),
    ("2+2 is c++ @home", "TWO PLUS TWO IS C PLUS PLUS AT HOME"),  # the original's "+" -> plus, "@" -> at
    ("<unk> doesn 't matter", "[UNK] DOESN 'T MATTER"),
    ("  café   déjà-vu  ", "CAFE DEJA VU"),
    ("it 's 7 o'clock!", "IT 'S SEVEN O'CLOCK"),
])
def test_tedlium_normalisation(written, expected):
    assert tedlium.normalize_transcript(written) == expected


def test_tedlium_normalisation_counts_dropped_characters():
    dropped = Counter()
    assert tedlium.normalize_transcript("what? yes; $2.50", dropped) == "WHAT YES TWO DOLLARS FIFTY CENTS"
    assert dropped == Counter({"?": 1, ";": 1})  # the comma of the dollar expansion is not a drop


def test_tedlium_counts_and_names(ted):
    raw, out, summary = ted
    for split in tedlium.SPLITS:
        lines = stm_lines(raw, split)
        scored = [f for f in lines if f[-1] != tedlium.IGNORE and not f[-1].endswith(tedlium.IGNORE)]
        rows = meta_rows(out / f"meta.{split}.txt")
        assert len(rows) == len(scored) == summary[split]["segments"]
        assert summary[split]["ignored"] == len(lines) - len(scored)
        assert summary[split]["skipped"] == 0
        for name, num_samples, text in rows:
            talk = name.rsplit("_", 1)[0]
            assert re.fullmatch(r".+_\d{8}", name)
            assert (out / talk / f"{name}.flac").is_file()  # the loader's <name minus last _field>/<name>.flac
    assert summary["train"]["ignored"] + summary["dev"]["ignored"] + summary["test"]["ignored"] > 0


def test_tedlium_segments_match_stm_times_and_audio(ted):
    raw, out, _ = ted
    for split in tedlium.SPLITS:
        rows = {r[0]: r for r in meta_rows(out / f"meta.{split}.txt")}
        for stm in (raw / "legacy" / split / "stm").glob("*.stm"):
            segments, _ = tedlium.read_stm(stm)
            talk_audio, sr = sf.read(raw / "legacy" / split / "sph" / f"{stm.stem}.sph", dtype="int16")
            assert sr == SR
            for segment in segments:
                name, num_samples, text = rows[segment.name]
                audio, sr = sf.read(out / stm.stem / f"{name}.flac", dtype="int16")
                assert sr == SR and len(audio) == int(num_samples)
                assert abs(len(audio) - (segment.end - segment.start) * SR) <= 1
                begin = round(segment.start * SR)
                np.testing.assert_array_equal(audio, talk_audio[begin:begin + len(audio)])
                assert text == tedlium.normalize_transcript(segment.text)


def test_tedlium_transcripts_and_vocab(ted):
    _, out, _ = ted
    texts = {split: [r[2] for r in meta_rows(out / f"meta.{split}.txt")] for split in tedlium.SPLITS}
    everything = " ".join(t for split in texts.values() for t in split)
    assert everything == everything.upper()
    assert not re.search(r"[0-9$%&,.]", everything)
    for kept in ("[UNK]", "DOESN 'T", "THREE DOLLARS FIFTY CENTS", "FIRST", "TWO POINT FIVE", "PERCENT"):
        assert kept in everything  # the tiny "rich" corpus holds one of each special token
    vocab = json.loads((out / "vocab.json").read_text())
    assert_ctc_vocab(vocab, texts["train"])
    assert vocab == build_ctc_vocab(texts["train"])  # from the training transcripts only

    from transformers import Wav2Vec2CTCTokenizer
    tokenizer = Wav2Vec2CTCTokenizer(str(out / "vocab.json"), unk_token="[UNK]", pad_token="[PAD]",
                                     word_delimiter_token="|", bos_token=None, eos_token=None, do_lower_case=False)
    ids = tokenizer(texts["train"][0].replace("[UNK]", "")).input_ids
    decoded = tokenizer.decode(ids, group_tokens=False)  # a round trip, not a CTC decode ("WILL" keeps its Ls)
    assert vocab["[UNK]"] not in ids and decoded == " ".join(texts["train"][0].replace("[UNK]", "").split())


def test_tedlium_rerun_keeps_finished_segments(ted, tmp_path):
    raw, out, first = ted
    work = tmp_path / "data"
    shutil.copytree(out, work)
    again = tedlium.prepare(raw, work, jobs=1, progress=False)
    for split in tedlium.SPLITS:
        assert again[split]["written"] == 0 and again[split]["reused"] == first[split]["segments"]
        assert (work / f"meta.{split}.txt").read_text() == (out / f"meta.{split}.txt").read_text()
    name = meta_rows(work / "meta.train.txt")[0][0]
    victim = work / name.rsplit("_", 1)[0] / f"{name}.flac"
    audio, _ = sf.read(victim, dtype="int16")
    sf.write(victim, audio[:100], SR)  # an interrupted earlier write: wrong length
    third = tedlium.prepare(raw, work, jobs=2, progress=False)
    assert third["train"]["written"] == 1 and sf.info(str(victim)).frames == len(audio)


@pytest.fixture
def ted_copy(ted, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(ted[0], raw)
    return raw, sorted((raw / "legacy" / "train" / "stm").glob("*.stm"))[0]


@pytest.mark.parametrize("bad", ["TalkX 1 TalkX 1.0", "TalkX 1 TalkX one 2.0 <o,f0,male> hello",
                                 "TalkX 1 TalkX 3.0 2.0 <o,f0,male> hello"])
def test_tedlium_malformed_stm_line_names_file_and_line(ted_copy, tmp_path, bad):
    raw, stm = ted_copy
    n = len(stm.read_text().splitlines())
    stm.write_text(stm.read_text() + bad + "\n")
    with pytest.raises(CorpusError, match=re.escape(f"{stm}:{n + 1}:")):
        tedlium.prepare(raw, tmp_path / "out", jobs=1, progress=False)


def test_tedlium_missing_sph_is_named(ted_copy, tmp_path):
    raw, stm = ted_copy
    sph = raw / "legacy" / "train" / "sph" / f"{stm.stem}.sph"
    sph.unlink()
    with pytest.raises(CorpusError, match=re.escape(str(sph))):
        tedlium.prepare(raw, tmp_path / "out", jobs=1, progress=False)


def test_tedlium_wrong_rate_is_named(ted_copy, tmp_path):
    raw, stm = ted_copy
    sph = raw / "legacy" / "train" / "sph" / f"{stm.stem}.sph"
    audio, _ = sf.read(sph, dtype="int16")
    sf.write(sph, audio, 8000, format="NIST", subtype="PCM_16")
    with pytest.raises(CorpusError, match=re.escape(str(sph)) + ".*16000 Hz mono"):
        tedlium.prepare(raw, tmp_path / "out", jobs=1, progress=False)


def test_tedlium_segment_past_audio_is_a_counted_skip(ted_copy, tmp_path, caplog):
    raw, stm = ted_copy
    n = len(stm.read_text().splitlines())
    stm.write_text(stm.read_text() + f"{stm.stem} 1 {stm.stem} 5000.00 5001.50 <o,f0,male> too late\n")
    with caplog.at_level(logging.WARNING, logger="corpora.tedlium"):
        summary = tedlium.prepare(raw, tmp_path / "out", jobs=1, progress=False)
    assert summary["train"]["skipped"] == 1
    assert f"{stm}:{n + 1}" in caplog.text and "after the audio" in caplog.text
    assert "TOO LATE" not in (tmp_path / "out" / "meta.train.txt").read_text()


# ------------------------------------------------------------------------------------------------------------
# SLURP


@pytest.fixture(scope="module")
def slurp_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("slurp")
    raw, out = root / "SLURP", root / "data"
    synth.synth_slurp(raw, utterances=(6, 2, 2), synthetic=3, seed=1, progress=False)
    devel = [json.loads(line) for line in (raw / "slurp/dataset/slurp/devel.jsonl").read_text().splitlines()]
    missing = raw / "slurp_real" / devel[0]["recordings"][0]["file"]
    missing.unlink()  # the real corpus misses a few files too
    summary = slurp.prepare(raw, out, progress=False)
    return raw, out, summary, missing.name


def jsonl(raw: Path, stem: str) -> list[dict]:
    return [json.loads(line) for line in (raw / f"slurp/dataset/slurp/{stem}.jsonl").read_text().splitlines()]


def test_slurp_nltla_lines_one_per_recording(slurp_corpus):
    raw, out, summary, missing = slurp_corpus
    index = 0
    for part, stem, audio_dir in slurp.PARTS:
        expected = []
        for record in jsonl(raw, stem):
            for recording in record["recordings"]:
                if recording["file"] != missing:
                    expected.append((f"en_{index:010d}", recording["file"], record))
                index += 1  # the running index counts the missing file too: names don't depend on presence
        meta = "meta.train.syn.txt" if part == "train_synthetic" else f"meta.{part}.txt"
        rows = meta_rows(out / meta)[-len(expected):] if part == "train_synthetic" else meta_rows(out / meta)
        assert len(rows) == len(expected) == summary[part]["recordings"]
        for row, (name, file, record) in zip(rows, expected):
            assert len(row) == 5
            assert row[0] == name and row[4] == "en"
            assert row[2] == " ".join(record["sentence"].upper().split())
            assert row[3] == f"{record['scenario']},{record['action']}"
            link = out / "en" / f"{name}.flac"
            assert os.path.samefile(link, raw / audio_dir / file)
            assert int(row[1]) == sf.info(str(link)).frames


def test_slurp_missing_audio_is_a_counted_skip(slurp_corpus):
    _, _, summary, _ = slurp_corpus
    assert summary["dev"]["missing"] == 1
    assert sum(summary[p].get("missing", 0) for p, _, _ in slurp.PARTS) == 1


def test_slurp_synthetic_merged_after_real_train(slurp_corpus):
    _, out, summary, _ = slurp_corpus
    train = (out / "meta.train.txt").read_text()
    merged = (out / "meta.train.syn.txt").read_text()
    assert merged.startswith(train)
    assert len(merged.splitlines()) == summary["train"]["recordings"] + summary["train_synthetic"]["recordings"]
    for name, *_ in meta_rows(out / "meta.train.syn.txt")[summary["train"]["recordings"]:]:
        assert "slurp_synth" in os.readlink(out / "en" / f"{name}.flac")


def test_slurp_audio_is_relative_symlinks_not_copies(slurp_corpus):
    raw, out, _, _ = slurp_corpus
    links = sorted((out / "en").iterdir())
    assert links and all(p.is_symlink() for p in links)
    assert all(not os.path.isabs(os.readlink(p)) for p in links)
    assert all(p.resolve().is_relative_to(raw.resolve()) for p in links)


def test_slurp_categories_and_vocab(slurp_corpus):
    raw, out, summary, _ = slurp_corpus
    scenarios, actions = json.loads((out / "categories.json").read_text())
    real = [r for stem in ("train", "devel", "test") for r in jsonl(raw, stem)]
    assert list(scenarios) == sorted({r["scenario"] for r in real})
    assert list(actions) == sorted({r["action"] for r in real})
    assert list(scenarios.values()) == list(range(len(scenarios)))
    assert list(actions.values()) == list(range(len(actions)))
    vocab = json.loads((out / "vocab.json").read_text())
    train_texts = [r[2] for r in meta_rows(out / "meta.train.syn.txt")]
    assert_ctc_vocab(vocab, train_texts)
    assert len(vocab) <= slurp.MAX_VOCAB


def test_slurp_rerun_keeps_links(slurp_corpus, tmp_path):
    raw, out, first, _ = slurp_corpus
    again = slurp.prepare(raw, out, progress=False)
    for part, _, _ in slurp.PARTS:
        assert again[part].get("linked", 0) == 0 and again[part]["kept"] == first[part]["recordings"]
    assert (out / "meta.train.syn.txt").read_text().count("\n") == first["train"]["recordings"] + \
        first["train_synthetic"]["recordings"]


def test_slurp_converts_audio_that_is_not_16k_mono_flac(slurp_corpus, tmp_path):
    raw, _, _, _ = slurp_corpus
    copy = tmp_path / "SLURP"
    shutil.copytree(raw, copy)
    record = jsonl(copy, "train")[0]
    source = copy / "slurp_real" / record["recordings"][0]["file"]
    audio, _ = sf.read(source)
    sf.write(source, np.stack([audio[::2], audio[::2]], axis=1), 8000, format="FLAC")  # 8 kHz stereo
    summary = slurp.prepare(copy, tmp_path / "out", progress=False)
    assert summary["train"]["converted"] == 1
    converted = tmp_path / "out" / "en" / "en_0000000000.flac"
    assert not converted.is_symlink()
    info = sf.info(str(converted))
    assert info.samplerate == SR and info.channels == 1 and info.frames == 2 * len(audio[::2])
    assert meta_rows(tmp_path / "out" / "meta.train.txt")[0][1] == str(info.frames)


def test_slurp_bad_jsonl_line_names_file_and_line(slurp_corpus, tmp_path):
    raw, _, _, _ = slurp_corpus
    copy = tmp_path / "SLURP"
    shutil.copytree(raw, copy)
    path = copy / "slurp/dataset/slurp/test.jsonl"
    n = len(path.read_text().splitlines())
    path.write_text(path.read_text() + '{"sentence": "no labels", "recordings": []}\n')
    with pytest.raises(CorpusError, match=re.escape(f"{path}:{n + 1}: record lacks scenario, action")):
        slurp.prepare(copy, tmp_path / "out", progress=False)


# ------------------------------------------------------------------------------------------------------------
# VoxCeleb1


@pytest.fixture(scope="module")
def vox(tmp_path_factory):
    root = tmp_path_factory.mktemp("vox") / "VoxCeleb1"
    synth.synth_voxceleb1(root, speakers=3, videos_per_speaker=(2, 2), utterances_per_video=(2, 2), words=(3, 5),
                          seed=2, progress=False)
    return root


def test_voxceleb1_split_and_labels(vox):
    entries = data.read_iden_split(vox)
    assert all(isinstance(s, int) and isinstance(p, str) for s, p in entries)
    assert sorted(p for _, p in entries) == sorted(str(p.relative_to(vox / "wav")) for p in vox.glob("wav/*/*/*.wav"))
    for speaker in ("id10001", "id10002", "id10003"):
        assert {s for s, p in entries if p.startswith(speaker + "/")} == {1, 2, 3}
    assert data.speaker_labels(p for _, p in entries) == {"id10001": 0, "id10002": 1, "id10003": 2}
    # SUPERB's class index (the HF superb script's ClassLabel), not the index among the speakers present
    assert data.speaker_labels(["id10300/a/00001.wav", "id10020/b/00001.wav", "id10300/c/00002.wav"]) == \
        {"id10020": 19, "id10300": 299}
    summary = voxceleb1.check(vox, progress=False)
    assert [summary[s]["utterances"] for s in (1, 2, 3)] == [sum(1 for x, _ in entries if x == s) for s in (1, 2, 3)]
    assert summary["speakers"] == 3 and all(summary[s]["speakers"] == 3 for s in (1, 2, 3))
    assert summary[1]["hours"] > 0


def test_voxceleb1_missing_split_list_explains_itself(vox, tmp_path):
    shutil.copytree(vox / "wav", tmp_path / "wav")
    with pytest.raises(FileNotFoundError) as err:
        data.read_iden_split(tmp_path)
    message = str(err.value)
    for hint in ("iden_split.txt", "1 = train", "2 = validation", "3 = test",
                 "https://mm.kaist.ac.kr/datasets/voxceleb/meta/iden_split.txt", "s3prl"):
        assert hint in message


def test_voxceleb1_prefers_superb_split_file(vox, tmp_path):
    root = tmp_path / "VoxCeleb1"
    shutil.copytree(vox, root)
    assert data.split_file(root) == root / "iden_split.txt"
    lines = (root / "iden_split.txt").read_text().splitlines()
    (root / "veri_test_class.txt").write_text("\n".join(lines[:3]) + "\n")
    assert data.split_file(root) == root / "veri_test_class.txt"
    assert data.read_iden_split(root) == [(int(line.split()[0]), line.split()[1]) for line in lines[:3]]
    (root / "veri_test_class.txt").write_text("1 id11252/x/00001.wav\n")  # beyond SUPERB's 1251 classes
    with pytest.raises(ValueError, match=re.escape(f"{root / 'veri_test_class.txt'}:1: speaker id11252 is not one "
                                                    f"of SUPERB SI's id10001 ... id11251")):
        data.read_iden_split(root)


def test_voxceleb1_bad_lines_are_named(vox, tmp_path):
    root = tmp_path / "VoxCeleb1"
    shutil.copytree(vox, root)
    split_file = root / "iden_split.txt"
    lines = split_file.read_text().splitlines()
    (root / "wav" / lines[1].split()[1]).unlink()
    with pytest.raises(CorpusError, match=re.escape(f"{split_file}:2:") + ".*missing"):
        voxceleb1.check(root, progress=False)
    split_file.write_text("\n".join(lines[:2] + ["4 id10001/x/00001.wav"]) + "\n")
    with pytest.raises(ValueError, match=re.escape(f"{split_file}:3:")):
        data.read_iden_split(root)


# ------------------------------------------------------------------------------------------------------------
# synth


def _tree_bytes(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_synth_is_deterministic_by_seed(tmp_path):
    kwargs = dict(talks=(1, 1, 1), segments_per_talk=(2, 2), text="rich", progress=False)
    synth.synth_tedlium(tmp_path / "a", seed=5, **kwargs)
    synth.synth_voxceleb1(tmp_path / "other", speakers=3, videos_per_speaker=(1, 1), utterances_per_video=(3, 3),
                          words=(2, 3), seed=9, progress=False)  # espeak state in between must not matter
    synth.synth_tedlium(tmp_path / "b", seed=5, **kwargs)
    synth.synth_tedlium(tmp_path / "c", seed=6, **kwargs)
    a, b, c = (_tree_bytes(tmp_path / x) for x in "abc")
    assert a == b
    assert a != c


def test_tedlium_synth_is_the_same_for_any_number_of_workers(tmp_path, monkeypatch):
    monkeypatch.setattr(synth, "TALKS_PER_ENGINE", 2)  # 5 talks: groups of 2, 2 and 1, each a fresh engine
    kwargs = dict(talks=(3, 1, 1), segments_per_talk=(1, 2), text="rich", ignore_prob=0.3, seed=3, progress=False)
    alone = synth.synth_tedlium(tmp_path / "alone", **kwargs)
    together = synth.synth_tedlium(tmp_path / "together", workers=2, **kwargs)  # a worker speaks two groups
    assert _tree_bytes(tmp_path / "alone") == _tree_bytes(tmp_path / "together")
    assert alone["files"] == together["files"] == 10 and alone["hours"] == together["hours"] > 0
    with pytest.raises(ValueError, match="workers must be at least 1"):
        synth.synth_tedlium(tmp_path / "none", workers=0, **kwargs)


def test_synth_refuses_to_overwrite_without_force(tmp_path):
    kwargs = dict(talks=(1, 0, 0), segments_per_talk=(1, 1), progress=False)
    synth.synth_tedlium(tmp_path, **kwargs)
    with pytest.raises(CorpusError, match="--force"):
        synth.synth_tedlium(tmp_path, **kwargs)
    synth.synth_tedlium(tmp_path, force=True, **kwargs)


def test_synth_without_espeak_says_how_to_get_it(monkeypatch):
    monkeypatch.setattr(synth, "find_espeak_library", lambda: None)
    monkeypatch.setattr(synth.shutil, "which", lambda name: None)
    with pytest.raises(CorpusError, match=r"pip install espeakng-loader.*apt-get install espeak-ng"):
        synth.Espeak()


def test_synth_slurp_intents_mirror_the_real_label_sets():
    intents = list(synth.SLURP_TEMPLATES)
    assert len(intents) == 60  # so a full-size synthetic corpus has the real 18 scenarios and 46 actions
    assert len({s for s, _ in intents}) == 18 and len({a for _, a in intents}) == 46
    slots = {m for templates in synth.SLURP_TEMPLATES.values() for t in templates for m in re.findall(r"{(\w+)}", t)}
    assert slots == set(synth.SLOTS)


def test_synth_falls_back_to_the_espeak_ng_binary(tmp_path, monkeypatch):
    import sys
    fake = tmp_path / "espeak-ng"  # writes a 0.1 s tone at 22050 Hz where -w says, and logs its arguments
    fake.write_text(f"#!{sys.executable}\nimport sys, numpy, soundfile\n"
                    f"open({str(tmp_path / 'args')!r}, 'w').write(' '.join(sys.argv[1:]))\n"
                    "soundfile.write(sys.argv[sys.argv.index('-w') + 1],\n"
                    "                (numpy.sin(numpy.arange(2205) / 5) * 8000).astype('int16'), 22050)\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(synth, "find_espeak_library", lambda: None)
    engine = synth.Espeak()
    assert engine.backend == "binary"
    audio = synth.Speaker(engine)("hello world", synth.Voice("en-us+f2", rate=160, pitch=40),
                                  np.random.default_rng(0))
    assert engine.sample_rate == 22050 and len(audio) == 1600
    assert (tmp_path / "args").read_text().split()[:6] == ["-v", "en-us+f2", "-s", "160", "-p", "40"]


def test_segment_durations_reach_their_mean_within_their_bounds():
    durations = synth.TEDLIUM3_TRAIN_DURATIONS
    assert durations.mean == pytest.approx(452 * 3600 / 268263) and (durations.low, durations.high) == (1.0, 35.0)
    assert durations.clipped_mean(durations.mu) == pytest.approx(durations.mean, rel=1e-9)
    drawn = durations.sample(np.random.default_rng(0), 200_000)
    assert drawn.min() >= 1.0 and drawn.max() <= 35.0 and (drawn == 35.0).any()
    assert drawn.mean() == pytest.approx(durations.mean, rel=0.01)
    assert np.median(drawn) == pytest.approx(np.exp(durations.mu), rel=0.02)  # the log-normal's median
    assert "log-normal" in durations.describe() and "[1, 35] s" in durations.describe()
    with pytest.raises(ValueError, match="0 < low < mean < high"):
        synth.SegmentDurations(mean=40.0, sigma=0.6, low=1.0, high=35.0)


def test_tedlium_segments_take_the_lengths_drawn_for_them(tmp_path):
    """Segments fill the lengths drawn from ``durations`` (at the talk's speaking rate) and never pass its upper
    bound: a sentence that would is spoken again, shorter."""
    def segment_seconds(root):
        return [float(end) - float(start) for _, _, speaker, start, end, *_ in stm_lines(root, "train")
                if speaker != "inter_segment_gap"]

    kwargs = dict(talks=(2, 0, 0), segments_per_talk=(4, 4), text="common", ignore_prob=0.0, progress=False)
    short = synth.SegmentDurations(mean=1.5, sigma=0.05, low=1.0, high=3.0)
    long = synth.SegmentDurations(mean=7.0, sigma=0.05, low=1.0, high=7.5)
    synth.synth_tedlium(tmp_path / "short", durations=short, **kwargs)
    synth.synth_tedlium(tmp_path / "long", durations=long, **kwargs)
    shorts, longs = segment_seconds(tmp_path / "short"), segment_seconds(tmp_path / "long")
    assert len(shorts) == len(longs) == 8
    assert np.mean(shorts) == pytest.approx(1.5, rel=0.35) and np.mean(longs) == pytest.approx(7.0, rel=0.25)
    assert max(longs) <= 7.5 + 0.01  # the 10 ms grid
    info = json.loads((tmp_path / "long" / "synth.json").read_text())
    assert info["durations"] == long.describe()

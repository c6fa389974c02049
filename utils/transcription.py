"""Transcribe recordings of any format, sample rate, channel count and length: what transcribe.py,
scripts/long_form.py and bench/transcribe_long.py run.

    transcriber = load_transcriber("output/tedlium/hybrid", device="cuda")   # run dir, model.ckpt-*, exported dir
    row = transcriber.transcribe_file("lecture.mp3", timestamps="word")
    # {"file", "duration", "text", "words": [{"word", "start", "end"}], "real_time_factor"} (+ "labels", "intent")
    row = transcriber.transcribe(samples)                                   # mono float32 at transcriber.sampling_rate

Audio: soundfile (libsndfile >= 1.1) reads WAV, FLAC, OGG (Vorbis) and MP3; channels are averaged; soxr brings
the samples to the model's rate (its default "HQ" quality). A recording goes through in one pass: the CNN front end
runs in pieces of CNN_CHUNK_FRAMES output frames (``models.build.chunked_feature_encoder``, as infer.py does) and
the BiMamba2 encoder's cost is linear in the length. Greedy CTC decoding by the model's Wav2Vec2CTCTokenizer, with
its character or word offsets as timestamps (what the automatic-speech-recognition pipeline returns).
"""
import contextlib
import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np
import soundfile
import soxr
import torch

from hparams import create_hparams
from models.build import CNN_CHUNK_FRAMES, chunked_feature_encoder, feature_encoder_geometry, forward_model
from models.hf import ClassifierLabels, load_model_dir
from utils.data import build_feature_extractor, build_tokenizer
from utils.trained_model import load_trained

logger = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
TIMESTAMPS = ("word", "char", "none")
AUTOCAST_DTYPES = {"no": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class AudioError(ValueError):
    """A recording that cannot be transcribed; the message names the file."""


@dataclasses.dataclass
class Audio:
    samples: np.ndarray  # (samples,) float32, mono, at the model's rate
    seconds: float  # duration of the recording
    file_rate: int  # the file's sample rate
    channels: int  # the file's channel count


def read_audio(path, sampling_rate: int) -> Audio:
    """A recording as mono float32 at ``sampling_rate``; unreadable or empty files raise AudioError naming them."""
    try:
        data, file_rate = soundfile.read(str(path), dtype="float32", always_2d=True)  # (frames, channels)
    except (RuntimeError, OSError) as error:  # soundfile.LibsndfileError names what libsndfile could not do
        raise AudioError(f"{path}: cannot read audio ({error})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{path}: no audio samples")
    samples = data.mean(axis=1)  # (frames,)
    if file_rate != sampling_rate:
        samples = soxr.resample(samples, file_rate, sampling_rate)
    return Audio(np.ascontiguousarray(samples, dtype=np.float32), data.shape[0] / file_rate, file_rate, data.shape[1])


def audio_files(paths) -> list[Path]:
    """The files named, and the audio files (AUDIO_EXTENSIONS, any case) under the folders named, sorted."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
        else:
            files.append(path)
    return files


@dataclasses.dataclass
class Transcriber:
    """A model ready to transcribe: this project's Wav2Vec2ForCTC (+ BiMamba2) or an exported one, which share
    their module layout, on ``device``."""

    model: torch.nn.Module
    feature_extractor: object  # Wav2Vec2FeatureExtractor: the normalisation the model was trained with
    tokenizer: object | None  # Wav2Vec2CTCTokenizer; None: the model gives no transcripts
    classifier: ClassifierLabels | None
    device: torch.device
    mixed_precision: str = "no"
    source: str = ""

    @property
    def sampling_rate(self) -> int:
        return self.feature_extractor.sampling_rate

    @property
    def min_samples(self) -> int:
        """The shortest input that makes one output frame: the CNN front end's receptive field."""
        return feature_encoder_geometry(self.model.config)[0]

    @torch.no_grad()  # not inference_mode: BiMamba2Wrapper keys its padding layout on the mask's version counter
    def transcribe(self, samples: np.ndarray, timestamps: str = "word") -> dict:
        """{"text", "words" | "chars" (with ``timestamps``), "labels" (+ "intent") for classifier heads} of one
        recording: samples (n,) float32, mono, at ``sampling_rate``, at least ``min_samples`` long."""
        if len(samples) < self.min_samples:
            raise AudioError(f"{len(samples)} samples: too short for one frame (the model needs at least "
                             f"{self.min_samples}, {1000 * self.min_samples / self.sampling_rate:.0f} ms)")
        features = self.feature_extractor(samples, sampling_rate=self.sampling_rate, return_attention_mask=True,
                                          return_tensors="pt")
        input_values = features["input_values"].to(self.device)  # (1, samples)
        attention_mask = features["attention_mask"].to(self.device)  # (1, samples)
        autocast_dtype = AUTOCAST_DTYPES[self.mixed_precision]
        autocast = (torch.autocast(self.device.type, dtype=autocast_dtype) if autocast_dtype is not None
                    else contextlib.nullcontext())
        with chunked_feature_encoder(self.model, CNN_CHUNK_FRAMES), autocast:
            out = forward_model(self.model, input_values, attention_mask)
        row = {}
        if self.tokenizer is not None:
            row.update(self._decode(out.logits[0, :int(out.output_lengths[0])].float(), timestamps))
        if out.head_logits is not None:
            row.update(self._labels([logits[0] for logits in out.head_logits]))
        return row

    def transcribe_file(self, path, timestamps: str = "word") -> dict:
        """``transcribe`` of an audio file, with its name, duration and real-time factor (the wall seconds of
        reading, resampling and transcribing it per second of audio); AudioError names the file."""
        tic = time.perf_counter()
        audio = read_audio(path, self.sampling_rate)
        try:
            row = self.transcribe(audio.samples, timestamps)
        except AudioError as error:
            raise AudioError(f"{path}: {audio.seconds:.3f} s, {error}") from None
        seconds = time.perf_counter() - tic
        return {"file": str(path), "duration": round(audio.seconds, 3), **row,
                "real_time_factor": round(seconds / audio.seconds, 5)}

    def _decode(self, logits: torch.Tensor, timestamps: str) -> dict:
        """Greedy CTC of one recording's logits (frames, vocab): text, and word or character offsets in seconds."""
        ids = logits.argmax(dim=-1).tolist()  # (frames,)
        if timestamps not in TIMESTAMPS:
            raise ValueError(f"timestamps {timestamps!r}: expected one of {', '.join(TIMESTAMPS)}")
        if timestamps == "none":
            return {"text": self.tokenizer.decode(ids)}
        decoded = self.tokenizer.decode(ids, output_word_offsets=timestamps == "word",
                                        output_char_offsets=timestamps == "char")
        frame_seconds = self.model.config.inputs_to_logits_ratio / self.sampling_rate
        key = "words" if timestamps == "word" else "chars"
        offsets = decoded.word_offsets if timestamps == "word" else decoded.char_offsets
        unit = key[:-1]
        return {"text": decoded.text, key: [{unit: o[unit], "start": round(o["start_offset"] * frame_seconds, 3),
                                             "end": round(o["end_offset"] * frame_seconds, 3)} for o in offsets]}

    def _labels(self, head_logits: list[torch.Tensor]) -> dict:
        """The predicted class of each head by name (class indices where the names are unknown); ``intent`` =
        scenario_action for SLURP's two heads."""
        predicted = [int(logits.argmax()) for logits in head_logits]
        if self.classifier is None:
            return {"labels": {f"head{i}": index for i, index in enumerate(predicted)}}
        labels = {name: names[index] if index < len(names) else f"LABEL_{index}"
                  for name, names, index in zip(self.classifier.head_names, self.classifier.labels, predicted)}
        row = {"labels": labels}
        if list(labels) == ["scenario", "action"]:
            row["intent"] = f"{labels['scenario']}_{labels['action']}"
        return row


def load_transcriber(path, vocab=None, labels=None, device=None, mixed_precision: str = "no") -> Transcriber:
    """A Transcriber of a run dir (its latest checkpoint), a ``model.ckpt-*`` (hparams.json beside it; vocabulary
    and class names as ``utils.trained_model`` finds them) or an exported model dir (its processor and config's
    class names; ``vocab`` where it has no vocab.json). Transcripts come from models whose CTC head was trained."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if mixed_precision not in AUTOCAST_DTYPES:
        raise ValueError(f"mixed_precision {mixed_precision!r}: expected one of {', '.join(AUTOCAST_DTYPES)}")
    path = Path(path)
    if path.is_dir() and (path / "config.json").is_file():  # an exported model directory
        model, processor = load_model_dir(path, device)
        config = model.config
        transcribes = getattr(config, "ctc_head_trained", True)
        tokenizer = processor.tokenizer if processor else (build_tokenizer(vocab) if vocab else None)
        feature_extractor = processor.feature_extractor if processor else build_feature_extractor(create_hparams())
        classifier = None
        if getattr(config, "classifier_labels", None):
            classifier = ClassifierLabels(config.classifier_head_names, config.classifier_labels,
                                          str(path / "config.json"))
        vocab_hint = f"{path} has no vocab.json"
    else:
        trained = load_trained(path, vocab, labels)
        model, tokenizer, classifier = trained.model.to(device), trained.tokenizer, trained.classifier
        feature_extractor = trained.feature_extractor
        transcribes = trained.hparams.ctc_weight > 0
        if trained.hparams.use_classifier and classifier is None:
            logger.warning("%s: no class names (--labels): predicted classes are given as indices", path)
        vocab_hint = f"{trained.checkpoint.parent} has no vocab.json"
    if transcribes and tokenizer is None:
        raise FileNotFoundError(f"{path}: no vocabulary to decode transcripts with ({vocab_hint}): pass --vocab, "
                                f"the run's vocab.json or its data dir")
    return Transcriber(model.eval(), feature_extractor, tokenizer if transcribes else None, classifier, device,
                       mixed_precision, str(path))


def write_jsonl(rows: list[dict], path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")

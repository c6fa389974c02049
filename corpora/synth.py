"""Synthetic speech corpora spoken by espeak-ng, written in the OFFICIAL raw layouts so the prep scripts run on them.

Usage:
    python corpora/synth.py tedlium   --out database/TEDLIUM_release-3 --size demo --seed 0
    python corpora/synth.py slurp     --out database/SLURP             --size demo --seed 0
    python corpora/synth.py voxceleb1 --out data/VoxCeleb1             --size demo --seed 0

Sizes: ``tiny`` (tests: seconds), ``demo`` (CPU demo: TED-LIUM has a closed vocabulary of 50 frequent words in
sentences of 3-8 words, ~1500 training segments, several voices), ``gpu`` (more words, voices and utterances).

Python API (explicit counts, for tests)::

    synth_tedlium(out_dir, talks=(3, 1, 1), segments_per_talk=(3, 5), text="rich", seed=0)
    synth_slurp(out_dir, utterances=(8, 3, 3), synthetic=4, seed=0)
    synth_voxceleb1(out_dir, speakers=4, videos_per_speaker=(2, 2), utterances_per_video=(2, 3), seed=0)

The engine is libespeak-ng driven in-process through ctypes (from the ``espeakng-loader`` wheel, else a system
libespeak-ng), falling back to an ``espeak-ng`` binary on PATH. espeak-ng speaks at 22050 Hz; soxr (libsoxr's
high-quality resampler) brings it to 16 kHz. Output is a function of the seed alone: every random choice comes
from ``numpy`` generators seeded from it, and each corpus (TED-LIUM: each group of TALKS_PER_ENGINE talks, spoken
in parallel with ``workers``) gets a fresh private copy of the library, because espeak-ng keeps synthesis state
(e.g. its pitch flutter phase) in static variables across utterances, even across re-initialising.
"""
import argparse
import concurrent.futures
import contextlib
import ctypes
import ctypes.util
import functools
import json
import logging
import math
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import soundfile as sf
import soxr
from tqdm import tqdm

from corpora import SR, CorpusError, setup_logging
from corpora.tedlium import spoken_form

log = logging.getLogger("corpora.synth")

INSTALL_HINT = ("no espeak-ng found: install the wheel (`pip install espeakng-loader`, it ships libespeak-ng and "
                "its voices) or the system package (`apt-get install espeak-ng`)")

# --------------------------------------------------------------------------------------------------------------
# 1. espeak-ng engine

AUDIO_OUTPUT_SYNCHRONOUS = 2
POS_CHARACTER = 1
ESPEAK_CHARS_AUTO = 0
ESPEAK_INITIALIZE_DONT_EXIT = 0x8000
ESPEAK_RATE, ESPEAK_VOLUME, ESPEAK_PITCH, ESPEAK_RANGE = 1, 2, 3, 4
SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


@dataclass(frozen=True)
class Voice:
    name: str  # espeak voice[+variant]: "en-us+f2"
    rate: int = 175  # words per minute
    pitch: int = 50  # base pitch, 0..99
    range: int = 50  # pitch range, 0..99 (the binary fallback cannot set it)

    @property
    def gender(self) -> str:
        return "female" if "+f" in self.name else "male"


def find_espeak_library() -> tuple[str, str | None] | None:
    """(library path, data path or None for the library's default), or None."""
    try:
        import espeakng_loader
        return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
    except (ImportError, RuntimeError, OSError):
        pass
    name = ctypes.util.find_library("espeak-ng")
    return (name, None) if name else None


class Espeak:
    """``engine(text, voice, seed) -> int16 samples at engine.sample_rate``."""

    def __init__(self, backend: str = "auto"):
        self.backend = None
        found = find_espeak_library() if backend in ("auto", "library") else None
        if found:
            self._init_library(*found)
        elif backend in ("auto", "binary") and shutil.which("espeak-ng"):
            self.backend, self.binary, self.sample_rate = "binary", shutil.which("espeak-ng"), None
        else:
            raise CorpusError(INSTALL_HINT)

    def _init_library(self, lib_path: str, data_path: str | None) -> None:
        self._lib = lib = _load_private_copy(lib_path)
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode() if data_path else None,
                                     ESPEAK_INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise CorpusError(f"espeak_Initialize failed ({rate}) with library {lib_path}, data {data_path}")
        self.sample_rate, self._chunks = rate, []

        def collect(wav, numsamples, events):
            if numsamples > 0:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
            return 0

        self._callback = SynthCallback(collect)  # keep a reference: the library calls it
        lib.espeak_SetSynthCallback(self._callback)
        self._seed_rand = getattr(lib, "espeak_ng_SetRandSeed", None)
        try:
            self._libc_srand = ctypes.CDLL(None).srand  # breathy voices draw noise from libc rand()
        except (OSError, AttributeError):
            self._libc_srand = None
        self.backend = f"library {lib_path}"

    def __call__(self, text: str, voice: Voice, seed: int) -> np.ndarray:
        if self.backend == "binary":
            return self._speak_binary(text, voice)
        lib = self._lib
        if lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
            raise CorpusError(f"espeak-ng has no voice {voice.name!r}")
        lib.espeak_SetParameter(ESPEAK_RATE, voice.rate, 0)
        lib.espeak_SetParameter(ESPEAK_PITCH, voice.pitch, 0)
        lib.espeak_SetParameter(ESPEAK_RANGE, voice.range, 0)
        if self._seed_rand is not None:
            self._seed_rand(ctypes.c_long(seed))
        if self._libc_srand is not None:
            self._libc_srand(ctypes.c_uint(seed))
        self._chunks.clear()
        data = text.encode() + b"\0"
        status = lib.espeak_Synth(data, len(data), 0, POS_CHARACTER, 0, ESPEAK_CHARS_AUTO, None, None)
        lib.espeak_Synchronize()
        if status != 0:
            raise CorpusError(f"espeak_Synth failed ({status}) on {text!r}")
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)

    def _speak_binary(self, text: str, voice: Voice) -> np.ndarray:
        with tempfile.TemporaryDirectory() as tmp:
            wav = os.path.join(tmp, "say.wav")
            cmd = [self.binary, "-v", voice.name, "-s", str(voice.rate), "-p", str(voice.pitch), "-w", wav, text]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                raise CorpusError(f"{' '.join(cmd)} failed: {done.stderr.strip()}")
            audio, self.sample_rate = sf.read(wav, dtype="int16")
        return audio


def _load_private_copy(lib_path: str) -> ctypes.CDLL:
    """dlopen a fresh copy of the library, so its static synthesis state starts from scratch."""
    if os.path.isfile(lib_path):
        tmp = tempfile.mkdtemp(prefix="espeak-")
        copy = os.path.join(tmp, os.path.basename(lib_path))
        try:
            shutil.copyfile(lib_path, copy)
            return ctypes.CDLL(copy)
        except OSError as err:
            log.warning("could not load a private copy of %s (%s); output may depend on earlier synthesis in this "
                        "process", lib_path, err)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return ctypes.CDLL(lib_path)


# --------------------------------------------------------------------------------------------------------------
# 2. audio: levels, noise, rooms, channels


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x ** 2) + 1e-12))


def set_level(x: np.ndarray, dbfs: float) -> np.ndarray:
    return x * (10 ** (dbfs / 20) / _rms(x))


def add_noise(x: np.ndarray, rng: np.random.Generator, snr_db: float, colour: str = "white") -> np.ndarray:
    if colour == "pink":  # 1/f power: shape white noise in the frequency domain, at a power-of-two FFT length
        n_fft = 1 << max(len(x) - 1, 1).bit_length()  # (a talk's own length can be a slow, prime-rich size)
        spectrum = np.fft.rfft(rng.standard_normal(n_fft))
        spectrum[0] = 0
        spectrum[1:] /= np.sqrt(np.arange(1, len(spectrum)))
        noise = np.fft.irfft(spectrum, n_fft)[:len(x)]
    else:
        noise = rng.standard_normal(len(x))
    speech = x[np.abs(x) > 0.1 * np.abs(x).max()] if np.any(x) else x
    return x + noise * (_rms(speech) / _rms(noise) / 10 ** (snr_db / 20))


def reverberate(x: np.ndarray, rng: np.random.Generator, rt60: float) -> np.ndarray:
    """Convolve with a synthetic room: a direct path plus exponentially decaying noise (-60 dB at ``rt60``)."""
    n = int(rt60 * SR)
    tail = rng.standard_normal(n) * np.exp(-6.9 * np.arange(n) / n)
    rir = np.concatenate([[1.0], np.zeros(int(0.003 * SR)), 0.3 * tail / _rms(tail) / np.sqrt(n) * 8])
    size = 1 << int(np.ceil(np.log2(len(x) + len(rir))))
    y = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(rir, size), size)[:len(x)]
    return y


def colour_channel(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random 3-tap microphone/codec tilt."""
    a, b = rng.uniform(-0.5, 0.5), rng.uniform(-0.2, 0.2)
    return np.convolve(x, [1.0, a, b])[:len(x)]


def to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)


class Speaker:
    """espeak-ng at 16 kHz in float64, deterministic for a given (engine state, seed)."""

    def __init__(self, engine: Espeak):
        self.engine = engine

    def __call__(self, text: str, voice: Voice, rng: np.random.Generator) -> np.ndarray:
        raw = self.engine(text, voice, int(rng.integers(1, 2 ** 31 - 1)))
        audio = soxr.resample(raw.astype(np.float64) / 32768, self.engine.sample_rate, SR)
        if not len(audio):
            raise CorpusError(f"espeak-ng produced no audio for {text!r} with voice {voice.name}")
        return audio


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(round(seconds * SR)))


def pad_to_grid(x: np.ndarray, grid: int) -> np.ndarray:
    return np.concatenate([x, np.zeros(-len(x) % grid)])


def music_or_noise(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """Applause-like noise or a few bars of synthetic music: what TED-LIUM marks ignore_time_segment_in_scoring."""
    t = np.arange(int(seconds * SR)) / SR
    if rng.random() < 0.5:
        noise = rng.standard_normal(len(t))
        return noise * (0.5 + 0.5 * np.abs(np.sin(2 * np.pi * rng.uniform(2, 6) * t)))
    notes = 220 * 2 ** (rng.integers(0, 12, size=8) / 12)
    beat = len(t) // len(notes) + 1
    freq = np.repeat(notes, beat)[:len(t)]
    phase = 2 * np.pi * np.cumsum(freq) / SR
    envelope = np.tile(np.exp(-3 * np.arange(beat) / beat), len(notes))[:len(t)]
    return (np.sin(phase) + 0.5 * np.sin(2 * phase) + 0.25 * np.sin(3 * phase)) * envelope


# --------------------------------------------------------------------------------------------------------------
# 3. voices

LANGS = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")


def random_voice(rng, langs=LANGS, variants=VARIANTS, rate=(150, 195), pitch=(35, 65), range_=(30, 70)) -> Voice:
    return Voice(f"{rng.choice(langs)}+{rng.choice(variants)}", int(rng.integers(*rate)), int(rng.integers(*pitch)),
                 int(rng.integers(*range_)))


def distinct_voices(rng, n: int) -> list[Voice]:
    """n voices differing in at least one of accent, variant, pitch band or rate band."""
    combos = [(lang, variant, pitch, rate) for lang in LANGS for variant in VARIANTS
              for pitch in (30, 45, 60, 75) for rate in (145, 170, 195)]
    if n > len(combos):
        raise CorpusError(f"at most {len(combos)} distinct voices, asked for {n}")
    order = rng.permutation(len(combos))[:n]
    voices = []
    for i in order:
        lang, variant, pitch, rate = combos[i]
        voices.append(Voice(f"{lang}+{variant}", rate + int(rng.integers(-5, 6)), pitch + int(rng.integers(-4, 5)),
                            int(rng.integers(30, 70))))
    return voices


# --------------------------------------------------------------------------------------------------------------
# 4. text

DEMO_WORDS = (
    "the people time world water children money idea story problem question house city school music light "
    "number power family friends country energy design brain future "
    "think know want make see look find give tell start change help love build learn live "
    "good great new small big little really never always together today maybe"
).split() + ["it 's", "don 't"]  # 52 items, two with TED-LIUM's split apostrophe

COMMON_WORDS = (
    "a about after again against all also always an and another any are around as at away back be because been "
    "before being best better between big both but by call came can change children city come could country "
    "course day did different do does down during each early end energy enough even every example fact family "
    "far few find first for found friends from future get give go going good great group had hand happened has "
    "have he health help her here high him his home house how human idea if important in information inside into "
    "is it just keep kind know language large last later learn left less life light like little live long look "
    "lot made make man many maybe me mean might money more most mother much music must my need never new next "
    "night no not nothing now number of off often old on once one only open or other our out over own part "
    "people person place planet play point power problem put question quite rather read real really right room "
    "said same saw say school science see seen she should show side simple since small so social some something "
    "sometimes space start still story street such system take talk technology tell than that the their them "
    "then there these they thing things think this those though thought through time to today together too "
    "took turn two under understand until up us use very video want was water way we well went were what when "
    "where which while who whole why will with woman women work world would write year years yet you young your"
).split()

CONTRACTIONS = ["doesn 't", "it 's", "we 're", "i 'm", "can 't", "that 's", "they 've", "don 't", "you 'll"]
PSEUDO_WORDS = ["zorbital", "flimbo", "quandrix", "belzoni", "trasken", "mivolta", "grelbin", "oskarni"]


def _number_token(rng) -> str:
    kind = rng.integers(7)
    if kind == 0:
        return f"{int(rng.integers(1000, 100000)):,}"  # 12,345
    if kind == 1:
        return f"${int(rng.integers(1, 100))}.{int(rng.integers(1, 100)):02d}"  # $3.50
    if kind == 2:
        n = int(rng.integers(1, 40))
        suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
        return f"{n}{suffix}"  # 21st
    if kind == 3:
        return f"{int(rng.integers(0, 10))}.{int(rng.integers(1, 10))}"  # 2.5
    if kind == 4:
        return f"{int(rng.integers(1, 100))}%"  # 50%
    if kind == 5:
        return "&"
    return str(int(rng.integers(1900, 2030)) if rng.random() < 0.5 else int(rng.integers(0, 1000)))


# One of each for the first sentences of a "rich" corpus, so a tiny one exercises every normalisation rule.
SPECIAL_TOKENS = ["1,000", "$3.50", "1st", "2.5", "50%", "&", "1999", "<unk>", "doesn 't", "$1", "21st", "7"]


def tedlium_sentence(rng, text: str, index: int, words: int | None = None) -> tuple[str, str]:
    """(stm transcript, what is spoken) for sentence ``index`` of a corpus of style ``text``; ``words``: how many
    words to draw (default: the style's own range); the odd number or contraction may come on top."""
    if text == "closed":
        items = list(rng.choice(DEMO_WORDS, size=words or int(rng.integers(3, 9))))
    else:
        n = words or (int(rng.integers(4, 10)) if text == "rich" else int(rng.integers(5, 16)))
        items = list(rng.choice(COMMON_WORDS, size=n))
        if text == "rich" and index < len(SPECIAL_TOKENS):
            items.insert(int(rng.integers(len(items) + 1)), SPECIAL_TOKENS[index])
        extra = 0.6 if text == "rich" else 0.15
        while rng.random() < extra:
            kind = rng.random()
            token = "<unk>" if kind < 0.2 else str(rng.choice(CONTRACTIONS)) if kind < 0.6 else _number_token(rng)
            items.insert(int(rng.integers(len(items) + 1)), token)
            extra /= 2
    written, spoken = [], []
    for item in items:
        written.append(item)
        if item == "<unk>":
            spoken.append(str(rng.choice(PSEUDO_WORDS)))
        else:
            spoken.append(spoken_form(item.replace(" '", "'")))
    return " ".join(written), " ".join(spoken)


@dataclass(frozen=True)
class SegmentDurations:
    """Segment lengths in seconds drawn from a log-normal clipped to [low, high]: ln(seconds) ~ N(mu, sigma**2),
    with mu chosen so that the clipped distribution's mean is ``mean``."""

    mean: float
    sigma: float
    low: float
    high: float

    def __post_init__(self):
        if not (0 < self.low < self.mean < self.high and self.sigma > 0):
            raise ValueError(f"segment durations need 0 < low < mean < high and sigma > 0, got {self}")

    @functools.cached_property
    def mu(self) -> float:
        """The log-mean whose clipped distribution has mean ``mean`` (bisection: that mean grows with mu)."""
        low, high = np.log(self.low), np.log(self.high)
        for _ in range(100):
            mu = (low + high) / 2
            low, high = (mu, high) if self.clipped_mean(mu) < self.mean else (low, mu)
        return (low + high) / 2

    def clipped_mean(self, mu: float) -> float:
        """E[clip(X, low, high)] for ln X ~ N(mu, sigma**2)."""
        cdf = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
        a, b = (np.log(self.low) - mu) / self.sigma, (np.log(self.high) - mu) / self.sigma
        inside = math.exp(mu + self.sigma ** 2 / 2) * (cdf(b - self.sigma) - cdf(a - self.sigma))
        return self.low * cdf(a) + inside + self.high * (1 - cdf(b))

    def sample(self, rng: np.random.Generator, n: int | None = None):
        """One duration (n None) or an array of n."""
        return np.clip(rng.lognormal(self.mu, self.sigma, n), self.low, self.high)

    def describe(self) -> str:
        return (f"log-normal, ln(s) ~ N({self.mu:.3f}, {self.sigma:g}^2), clipped to [{self.low:g}, {self.high:g}] s "
                f"(mean {self.mean:g} s)")


# TED-LIUM 3 legacy train: 452 hours in 268,263 segments (mean 6.07 s), cut by a speech segmenter at most ~35 s long.
# Its per-segment spread is not published with the corpus: sigma 0.6 (median ~5 s, 90th percentile ~11 s) is this
# code's assumption, not a measurement.
TEDLIUM3_TRAIN_DURATIONS = SegmentDurations(mean=452 * 3600 / 268263, sigma=0.6, low=1.0, high=35.0)


FIRST_NAMES = ("Al Aaron Amy Ben Brene Chris Dan Elizabeth Hans Jane Ken Larry Maria Nancy Oliver Pam Rosa Sam "
               "Susan Tim Yuval Zeynep Hugh Mae Anand Ngozi Kiran Lina").split()
LAST_NAMES = ("Gore Huey Cuddy Goldacre Brown Anderson Pink Gilbert Rosling Goodall Robinson Page Kumar Lee Sacks "
              "Baker Park Harris Tufekci Okafor Silva Novak Fischer Moreau Tanaka Berg Costa Haddad").split()


def talk_names(rng, n: int) -> list[str]:
    names = set()
    while len(names) < n:
        suffix = rng.choice(["", "", "", "X", "G", "P", "S"])
        names.add(f"{rng.choice(FIRST_NAMES)}{rng.choice(LAST_NAMES)}_{int(rng.integers(2006, 2018))}{suffix}")
    names = sorted(names)
    return [names[i] for i in rng.permutation(n)]


# SLURP: {(scenario, action): templates}; {slot} fillers come from SLOTS and are annotated "[slot : value]".
# The 60 intents of the real corpus: 18 scenarios, 46 actions.
SLURP_TEMPLATES = {
    ("alarm", "set"): ["wake me up at {time}", "set an alarm for {time} {date}", "i need an alarm at {time}"],
    ("alarm", "query"): ["what alarms do i have", "is my alarm set for {time}", "when is my next alarm"],
    ("alarm", "remove"): ["cancel my {time} alarm", "remove the alarm for {time}", "delete all my alarms"],
    ("audio", "volume_mute"): ["mute the speakers", "be quiet please", "turn the sound off"],
    ("audio", "volume_up"): ["turn the volume up", "make it louder", "increase the volume"],
    ("audio", "volume_down"): ["turn the volume down", "make it quieter", "lower the volume a bit"],
    ("audio", "volume_other"): ["set the volume to {level}", "change the volume to {level}"],
    ("calendar", "set"): ["schedule a meeting with {person} {date}", "remind me to call {person} {date}"],
    ("calendar", "query"): ["what is on my calendar {date}", "do i have any meetings {date}"],
    ("calendar", "remove"): ["cancel my meeting with {person}", "clear my calendar for {date}"],
    ("cooking", "recipe"): ["how do i make {dish}", "give me a recipe for {dish}"],
    ("cooking", "query"): ["how long do i boil {item}", "what can i cook with {item}"],
    ("datetime", "query"): ["what time is it", "what is the date {date}", "what day is it today"],
    ("datetime", "convert"): ["what time is it in {city} now", "convert {time} to {city} time"],
    ("email", "sendemail"): ["send an email to {person}", "email {person} about the meeting"],
    ("email", "query"): ["do i have new emails", "check my inbox", "any emails from {person}"],
    ("email", "querycontact"): ["what is {person}'s phone number", "give me the address of {person}"],
    ("email", "addcontact"): ["add {person} to my contacts", "save this email address for {person}"],
    ("general", "quirky"): ["what is the meaning of life", "do you like me", "can you dance"],
    ("general", "joke"): ["tell me a joke", "make me laugh", "say something funny"],
    ("general", "greet"): ["hello there", "good morning", "hi how are you doing"],
    ("iot", "hue_lightoff"): ["turn off the lights in the {room}", "switch the {room} lights off"],
    ("iot", "hue_lighton"): ["turn on the lights in the {room}", "switch the {room} lights on"],
    ("iot", "hue_lightup"): ["make the {room} brighter", "turn up the lights in the {room}"],
    ("iot", "hue_lightdim"): ["dim the lights in the {room}", "lower the lights please"],
    ("iot", "hue_lightchange"): ["change the lights to {colour}", "make the {room} lights {colour}"],
    ("iot", "coffee"): ["make me a coffee", "i would like a cup of coffee"],
    ("iot", "cleaning"): ["start the vacuum cleaner", "clean the {room}"],
    ("iot", "wemo_on"): ["turn on the smart plug", "switch on the {device}"],
    ("iot", "wemo_off"): ["turn off the smart plug", "switch off the {device}"],
    ("lists", "createoradd"): ["add {item} to my shopping list", "put {item} on the list"],
    ("lists", "remove"): ["remove {item} from my list", "take {item} off the shopping list"],
    ("lists", "query"): ["what is on my shopping list", "read me my lists"],
    ("music", "likeness"): ["i love {genre} music", "i like songs by {artist}"],
    ("music", "dislikeness"): ["i hate this song", "i do not like {artist}"],
    ("music", "query"): ["what song is this", "who is singing this song"],
    ("music", "settings"): ["shuffle my playlist", "put this song on repeat"],
    ("news", "query"): ["what are the latest news", "tell me the headlines {date}"],
    ("play", "music"): ["play some {genre} music", "play songs by {artist}", "put on {artist}"],
    ("play", "radio"): ["play {station} radio", "tune in to {station}"],
    ("play", "podcasts"): ["play the next episode of my podcast", "resume my podcast"],
    ("play", "audiobook"): ["resume my audiobook", "read {book} to me"],
    ("play", "game"): ["let us play a game", "start a quiz"],
    ("qa", "factoid"): ["who is the president of {country}", "what is the capital of {country}"],
    ("qa", "definition"): ["what does {word} mean", "define {word}"],
    ("qa", "currency"): ["what is the exchange rate for the {currency}", "how much is a {currency} worth"],
    ("qa", "maths"): ["what is {number} plus {number}", "what is the square root of {number}"],
    ("qa", "stock"): ["what is the stock price of {company}", "how is {company} doing on the market"],
    ("recommendation", "events"): ["what is happening in {city} {date}", "any concerts in {city} {date}"],
    ("recommendation", "locations"): ["recommend a good restaurant in {city}", "where can i eat {dish} nearby"],
    ("recommendation", "movies"): ["recommend a good {film} movie", "what {film} films are showing"],
    ("social", "post"): ["post on facebook that i am {mood}", "tweet that i am {mood}"],
    ("social", "query"): ["any new posts from {person}", "what is new on facebook"],
    ("takeaway", "order"): ["order a {dish} from {restaurant}", "i want to order {dish}"],
    ("takeaway", "query"): ["does {restaurant} deliver", "is my order from {restaurant} on its way"],
    ("transport", "query"): ["when is the next train to {city}", "when does the bus to {city} leave"],
    ("transport", "traffic"): ["how is the traffic to {city}", "is there traffic on the motorway"],
    ("transport", "taxi"): ["book a taxi to {city}", "get me a cab to the airport"],
    ("transport", "ticket"): ["book a train ticket to {city} {date}", "buy me a ticket to {city}"],
    ("weather", "query"): ["what is the weather like {date}", "will it rain {date}", "is it cold in {city}"],
}
SLOTS = {
    "time": ["seven am", "six thirty", "noon", "eight o'clock", "5 pm", "half past nine", "ten fifteen"],
    "date": ["today", "tomorrow", "on monday", "this weekend", "next friday", "on the 3rd of may"],
    "person": ["john", "mary", "my mom", "dave", "susan", "the boss", "ana"],
    "room": ["kitchen", "bedroom", "living room", "hallway", "office"],
    "dish": ["pizza", "pancakes", "sushi", "a curry", "lasagna", "chicken soup"],
    "item": ["milk", "eggs", "bread", "apples", "potatoes", "rice"],
    "genre": ["jazz", "rock", "classical", "pop", "country"],
    "artist": ["adele", "the beatles", "mozart", "queen", "taylor swift"],
    "station": ["bbc", "jazz fm", "capital", "npr"],
    "country": ["france", "japan", "brazil", "canada", "india"],
    "word": ["serendipity", "ubiquitous", "entropy", "ephemeral"],
    "currency": ["euro", "yen", "pound", "dollar"],
    "city": ["london", "paris", "new york", "berlin", "tokyo", "edinburgh"],
    "mood": ["happy", "tired", "excited", "on holiday"],
    "restaurant": ["pizza hut", "the corner cafe", "dominos", "wagamama"],
    "level": ["five", "ten", "half", "maximum"],
    "colour": ["red", "blue", "warm white", "green"],
    "device": ["fan", "heater", "kettle", "desk lamp"],
    "book": ["the hobbit", "dune", "harry potter"],
    "number": ["twelve", "eighty", "two hundred", "seven", "42"],
    "company": ["apple", "google", "tesla", "amazon"],
    "film": ["comedy", "horror", "action", "romantic"],
}


def slurp_record(rng, slurp_id: int, intent: tuple[str, str]) -> dict:
    """One SLURP jsonl record (without recordings) from a random template of ``intent`` = (scenario, action)."""
    scenario, action = intent
    templates = SLURP_TEMPLATES[(scenario, action)]
    template = templates[int(rng.integers(len(templates)))]
    sentence, annotation, entities, tokens = [], [], [], []
    for piece in template.split():
        if piece.startswith("{"):
            slot = piece[1:piece.index("}")]
            value = str(rng.choice(SLOTS[slot])) + piece[piece.index("}") + 1:]
            words = value.split()
            entities.append({"span": list(range(len(sentence), len(sentence) + len(words))), "type": slot})
            sentence += words
            annotation.append(f"[{slot} : {value}]")
        else:
            sentence.append(piece)
            annotation.append(piece)
    for i, word in enumerate(sentence):
        tokens.append({"surface": word, "id": i, "lemma": word, "pos": "CD" if word[0].isdigit() else "NN"})
    return {"slurp_id": slurp_id, "sentence": " ".join(sentence), "sentence_annotation": " ".join(annotation),
            "intent": f"{scenario}_{action}", "action": action, "tokens": tokens, "scenario": scenario,
            "recordings": [], "entities": entities}


# --------------------------------------------------------------------------------------------------------------
# 5. corpora


def _fresh_dir(path: Path, force: bool) -> None:
    if path.exists() and any(path.iterdir()):
        if not force:
            raise CorpusError(f"{path} exists and is not empty; remove it or pass --force")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)


def _write_info(out_dir: Path, corpus: str, engine: str, **params) -> None:
    info = {"corpus": corpus, "synthetic": True, "engine": engine, **params}
    (out_dir / "synth.json").write_text(json.dumps(info, indent=1) + "\n")


def _summary(corpus: str, out_dir: Path, files: int, samples: int, tic: float, detail: str = "") -> dict:
    summary = {"corpus": corpus, "out": str(out_dir), "files": files, "hours": samples / SR / 3600,
               "seconds": time.time() - tic}
    print(f"synth {corpus}: {files} files, {summary['hours']:.3f} h{detail} in {out_dir} "
          f"({summary['seconds']:.1f} s)")
    return summary


TALKS_PER_ENGINE = 16  # TED-LIUM talks one fresh espeak-ng engine speaks, in order (see synth_tedlium)


@dataclass(frozen=True)
class TalkPlan:
    """What synth_tedlium decides for a talk before it is spoken; the rest comes from the talk's own generator."""

    split: str
    name: str
    voice: Voice
    level: float  # dBFS of its speech
    snr: float  # dB of its pink noise
    segments: int
    first_sentence: int  # index of its first sentence in the corpus (tedlium_sentence's special tokens)
    seed: np.random.SeedSequence


def synth_tedlium(out_dir, talks=(3, 1, 1), segments_per_talk=(3, 5), text="rich", ignore_prob=0.15,
                  snr_db=(25, 40), voices: dict | None = None, seed: int = 0, force: bool = False,
                  backend: str = "auto", progress: bool = True, workers: int = 1,
                  durations: SegmentDurations | None = None) -> dict:
    """TED-LIUM 3 legacy layout: ``<out>/legacy/{train,dev,test}/{sph,stm}/<talk>.{sph,stm}``.

    talks: talks per split (train, dev, test); segments_per_talk: inclusive range of scored segments per talk;
    text: "rich" (open words plus numbers, symbols, contractions and <unk>), "closed" (DEMO_WORDS only) or
    "common" (COMMON_WORDS with the odd number, contraction and <unk>); ignore_prob: chance of a music/noise
    ``ignore_time_segment_in_scoring`` stretch before each segment; voices: kwargs of ``random_voice``.
    durations: each segment's length is drawn from it (e.g. ``TEDLIUM3_TRAIN_DURATIONS``) and its sentence gets
    the words that fill it at the talk's speaking rate (``_speak_for``); None: a sentence of the style's own length.

    workers: processes speaking the talks. The talks are planned first (one generator), then spoken in groups of
    TALKS_PER_ENGINE by a fresh engine each, every talk from its own generator: the corpus is the same for any
    number of workers.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    tic, out_dir = time.time(), Path(out_dir)
    rng = np.random.default_rng(seed)
    engine_backend = Espeak(backend).backend  # fail here, before any process starts, if there is no espeak-ng
    _fresh_dir(out_dir / "legacy", force)
    names = talk_names(rng, sum(talks))
    splits = [split for split, count in zip(("train", "dev", "test"), talks) for _ in range(count)]
    plans, first_sentence = [], 0
    for split, name, talk_seed in zip(splits, names, np.random.SeedSequence(seed).spawn(len(names))):
        segments = int(rng.integers(segments_per_talk[0], segments_per_talk[1] + 1))
        plans.append(TalkPlan(split, name, random_voice(rng, **(voices or {})), rng.uniform(-28, -20),
                              rng.uniform(*snr_db), segments, first_sentence, talk_seed))
        first_sentence += segments
    for split in ("train", "dev", "test"):
        for kind in ("sph", "stm"):
            (out_dir / "legacy" / split / kind).mkdir(parents=True, exist_ok=True)
    groups = [plans[i:i + TALKS_PER_ENGINE] for i in range(0, len(plans), TALKS_PER_ENGINE)]
    speak_group = functools.partial(_speak_talks, out_dir=out_dir, text=text, ignore_prob=ignore_prob,
                                    backend=backend, durations=durations)
    n_samples = n_ignore = 0
    with tqdm(total=len(plans), desc="synth tedlium", unit="talk", disable=not progress) as bar:
        with _pool(workers, len(groups)) as pool:
            spoken = pool.map(speak_group, groups) if pool else map(speak_group, groups)
            for group, (samples, ignored) in zip(groups, spoken):
                n_samples, n_ignore = n_samples + samples, n_ignore + ignored
                bar.update(len(group))
    _write_info(out_dir, "tedlium", engine_backend, talks=list(talks), segments_per_talk=list(segments_per_talk),
                text=text, seed=seed, **({"durations": durations.describe()} if durations else {}))
    return _summary("tedlium", out_dir, 2 * len(plans), n_samples, tic,
                    f" ({len(plans)} talks, {first_sentence} segments + {n_ignore} ignored stretches)")


def _pool(workers: int, tasks: int):
    """A process pool for min(workers, tasks) > 1, else nothing. Forked where the platform can: a spawned worker
    re-imports the caller's main module, which a script without a __main__ guard or ``python -`` cannot survive
    (the workers run numpy and espeak-ng only, nothing that a fork of a threaded parent would break)."""
    if min(workers, tasks) == 1:
        return contextlib.nullcontext()
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return concurrent.futures.ProcessPoolExecutor(min(workers, tasks), mp_context=multiprocessing.get_context(method))


def _speak_for(seconds: float, speak: Speaker, voice: Voice, rng, text: str, index: int, high: float,
               rate: list[float]) -> tuple[str, np.ndarray]:
    """(stm transcript, audio) of a sentence of about ``seconds``: as many words as the talk speaks in that time
    (``rate``: [words, seconds] spoken so far, which the call updates), at most ``high`` seconds (a longer one is
    spoken again with proportionally fewer words)."""
    words_per_second = rate[0] / rate[1] if rate[1] else voice.rate / 60
    words = max(1, round(seconds * words_per_second))
    while True:
        written, spoken = tedlium_sentence(rng, text, index, words=words)
        audio = speak(spoken, voice, rng)
        if len(audio) <= high * SR or words == 1:
            break
        words = max(1, int(words * high * SR / len(audio)))
    rate[0], rate[1] = rate[0] + len(spoken.split()), rate[1] + len(audio) / SR
    return written, audio


def _speak_talks(plans: list[TalkPlan], out_dir: Path, text: str, ignore_prob: float, backend: str,
                 durations: SegmentDurations | None = None):
    """Speak and write a group of talks with one fresh engine; (samples written, ignored stretches)."""
    speak = Speaker(Espeak(backend))
    grid = int(0.01 * SR)  # stm times have two decimals: every boundary sits on a 10 ms grid
    n_samples = n_ignore = 0
    for plan in plans:
        rng = np.random.default_rng(plan.seed)
        pieces, lines = [pad_to_grid(silence(rng.uniform(0.3, 1.0)), grid)], []
        cursor = len(pieces[0])
        label = f"<o,f0,{plan.voice.gender}>"
        rate = [0.0, 0.0]  # words and seconds this talk has spoken (durations: the words a length needs)
        for sentence in range(plan.first_sentence, plan.first_sentence + plan.segments):
            if rng.random() < ignore_prob:
                stretch = pad_to_grid(set_level(music_or_noise(rng, rng.uniform(0.5, 2.0)), plan.level - 6), grid)
                lines.append(f"{plan.name} 1 inter_segment_gap {cursor / SR:.2f} {(cursor + len(stretch)) / SR:.2f} "
                             f"<o,,unknown> ignore_time_segment_in_scoring")
                pieces.append(stretch)
                cursor += len(stretch)
                n_ignore += 1
            if durations is None:
                written, spoken = tedlium_sentence(rng, text, sentence)
                audio = speak(spoken, plan.voice, rng)
            else:
                written, audio = _speak_for(float(durations.sample(rng)), speak, plan.voice, rng, text, sentence,
                                            durations.high, rate)
            audio = pad_to_grid(set_level(audio, plan.level), grid)
            lines.append(f"{plan.name} 1 {plan.name} {cursor / SR:.2f} {(cursor + len(audio)) / SR:.2f} {label} "
                         f"{written}")
            gap = pad_to_grid(silence(rng.uniform(0.2, 0.8)), grid)
            pieces += [audio, gap]
            cursor += len(audio) + len(gap)
        audio = add_noise(np.concatenate(pieces), rng, plan.snr, colour="pink")
        split_dir = out_dir / "legacy" / plan.split
        sf.write(str(split_dir / "sph" / f"{plan.name}.sph"), to_int16(audio), SR, format="NIST", subtype="PCM_16")
        (split_dir / "stm" / f"{plan.name}.stm").write_text("\n".join(lines) + "\n")
        n_samples += len(audio)
    return n_samples, n_ignore


def _slurp_file_name(rng, used: set, headset: bool, negative_prob: float) -> tuple[str, str]:
    while True:
        stamp = int(rng.integers(1434000000, 1510000000))
        stem = f"audio-{'-' if rng.random() < negative_prob else ''}{stamp}"
        if stem not in used:
            used.add(stem)
            return stem, stem + ("-headset" if headset else "")


def synth_slurp(out_dir, utterances=(8, 3, 3), synthetic=4, speakers_per_utterance=(1, 2), intents=None,
                seed: int = 0, force: bool = False, backend: str = "auto", progress: bool = True) -> dict:
    """SLURP layout: ``<out>/slurp/dataset/slurp/{train,devel,test,train_synthetic}.jsonl``, audio in
    ``<out>/slurp_real/`` (each speaker: a close-talk ``audio-<id>-headset.flac`` and/or a far-field
    ``audio-<id>.flac``) and ``<out>/slurp_synth/`` (one ``audio-<id>.flac`` per record).

    utterances: records per real split (train, devel, test); synthetic: records in train_synthetic;
    intents: list of (scenario, action) keys of SLURP_TEMPLATES to draw from (default: all).
    """
    tic, out_dir = time.time(), Path(out_dir)
    rng = np.random.default_rng(seed)
    engine = Espeak(backend)
    speak = Speaker(engine)
    for sub in ("slurp", "slurp_real", "slurp_synth"):
        _fresh_dir(out_dir / sub, force)
    jsonl_dir = out_dir / "slurp" / "dataset" / "slurp"
    jsonl_dir.mkdir(parents=True, exist_ok=True)
    intents = [tuple(i) for i in (intents or SLURP_TEMPLATES)]
    people = [random_voice(rng) for _ in range(max(8, sum(utterances) // 4))]
    used, n_files, n_samples = set(), 0, 0
    slurp_ids = iter(rng.permutation(10 * (sum(utterances) + synthetic) + 100)[:sum(utterances) + synthetic] + 1)
    parts = [("train", utterances[0]), ("devel", utterances[1]), ("test", utterances[2]),
             ("train_synthetic", synthetic)]
    bar = tqdm(total=sum(utterances) + synthetic, desc="synth slurp", unit="utt", disable=not progress)
    if utterances[0] < 1:
        raise CorpusError("synth_slurp needs at least one training utterance")
    coverage = [intents[i] for i in rng.permutation(len(intents))]  # train sees every intent first ...
    in_train = coverage[:utterances[0]]  # ... and the other splits only intents train has
    for split, count in parts:
        records = []
        for i in range(count):
            if split == "train":
                intent = coverage[i] if i < len(coverage) else coverage[int(rng.integers(len(coverage)))]
            else:
                intent = in_train[int(rng.integers(len(in_train)))]
            record = slurp_record(rng, int(next(slurp_ids)), intent)
            if split == "train_synthetic":
                voice = random_voice(rng, langs=("en-us", "en"), variants=VARIANTS)
                stem, name = _slurp_file_name(rng, used, headset=False, negative_prob=0.0)
                audio = add_noise(set_level(speak(record["sentence"], voice, rng), -22), rng, 50)
                takes = [(out_dir / "slurp_synth" / f"{name}.flac", audio)]
            else:
                takes = []
                for _ in range(int(rng.integers(speakers_per_utterance[0], speakers_per_utterance[1] + 1))):
                    voice = people[int(rng.integers(len(people)))]
                    stem, _ = _slurp_file_name(rng, used, headset=True, negative_prob=0.2)
                    clean = set_level(speak(record["sentence"], voice, rng), rng.uniform(-26, -18))
                    clean = np.concatenate([silence(rng.uniform(0.2, 0.6)), clean, silence(rng.uniform(0.2, 0.6))])
                    mics = rng.choice(["both", "both", "both", "headset", "far"])
                    if mics in ("both", "headset"):
                        takes.append((out_dir / "slurp_real" / f"{stem}-headset.flac",
                                       add_noise(clean, rng, rng.uniform(30, 45))))
                    if mics in ("both", "far"):
                        far = reverberate(colour_channel(clean, rng), rng, rng.uniform(0.2, 0.6))
                        takes.append((out_dir / "slurp_real" / f"{stem}.flac",
                                      add_noise(set_level(far, rng.uniform(-34, -26)), rng, rng.uniform(10, 25))))
            for path, audio in takes:
                sf.write(str(path), to_int16(audio), SR, format="FLAC", subtype="PCM_16")
                record["recordings"].append({"file": path.name, "wer": 0.0, "ent_wer": 0.0 if record["entities"]
                                             else None, "status": "correct"})
                n_files += 1
                n_samples += len(audio)
            records.append(record)
            bar.update()
        (jsonl_dir / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    bar.close()
    _write_info(out_dir, "slurp", engine.backend, utterances=list(utterances), synthetic=synthetic, seed=seed)
    return _summary("slurp", out_dir, n_files, n_samples, tic,
                    f" ({sum(utterances)} real + {synthetic} synthetic records, {len(in_train)} intents)")


def _video_id(rng) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return "".join(alphabet[i] for i in rng.integers(len(alphabet), size=11))


def synth_voxceleb1(out_dir, speakers=4, videos_per_speaker=(2, 2), utterances_per_video=(2, 3),
                    words=(5, 9), seed: int = 0, force: bool = False, backend: str = "auto",
                    progress: bool = True) -> dict:
    """VoxCeleb1 layout: ``<out>/wav/id1XXXX/<video>/<00001>.wav`` and ``<out>/iden_split.txt``.

    Each speaker is a distinct voice (accent, variant, pitch and rate bands); each video its own channel and
    noise. Every speaker gets at least one utterance in each of train (1), validation (2) and test (3).
    """
    tic, out_dir = time.time(), Path(out_dir)
    rng = np.random.default_rng(seed)
    engine = Espeak(backend)
    speak = Speaker(engine)
    _fresh_dir(out_dir / "wav", force)
    voices = distinct_voices(rng, speakers)
    split_lines, n_files, n_samples = [], 0, 0
    for s, voice in enumerate(tqdm(voices, desc="synth voxceleb1", unit="speaker", disable=not progress)):
        speaker = f"id{10001 + s}"
        relpaths = []
        for _ in range(int(rng.integers(videos_per_speaker[0], videos_per_speaker[1] + 1))):
            video = _video_id(rng)
            (out_dir / "wav" / speaker / video).mkdir(parents=True, exist_ok=True)
            snr, tilt = rng.uniform(15, 35), rng.integers(1 << 30)
            for u in range(int(rng.integers(utterances_per_video[0], utterances_per_video[1] + 1))):
                sentence = " ".join(rng.choice(COMMON_WORDS, size=int(rng.integers(words[0], words[1] + 1))))
                audio = set_level(speak(sentence, voice, rng), rng.uniform(-28, -18))
                audio = colour_channel(audio, np.random.default_rng(tilt))  # one channel per video
                audio = add_noise(audio, rng, snr + rng.uniform(-3, 3))
                relpath = f"{speaker}/{video}/{u + 1:05d}.wav"
                sf.write(str(out_dir / "wav" / relpath), to_int16(audio), SR, subtype="PCM_16")
                relpaths.append(relpath)
                n_files += 1
                n_samples += len(audio)
        if len(relpaths) < 3:
            raise CorpusError(f"{speaker} has {len(relpaths)} utterances; needs 3 to appear in all three splits")
        order = rng.permutation(len(relpaths))
        n_held = max(1, len(relpaths) // 10)
        for rank, i in enumerate(order):
            split = 3 if rank < n_held else 2 if rank < 2 * n_held else 1
            split_lines.append((relpaths[i], split))
    (out_dir / "iden_split.txt").write_text("".join(f"{split} {path}\n" for path, split in sorted(split_lines)))
    _write_info(out_dir, "voxceleb1", engine.backend, speakers=speakers, videos_per_speaker=list(videos_per_speaker),
                utterances_per_video=list(utterances_per_video), seed=seed)
    return _summary("voxceleb1", out_dir, n_files, n_samples, tic, f" ({speakers} speakers)")


# --------------------------------------------------------------------------------------------------------------
# 7. command line

PROFILES = {
    "tedlium": {
        "tiny": dict(talks=(3, 1, 1), segments_per_talk=(3, 5), text="rich"),
        "demo": dict(talks=(60, 4, 4), segments_per_talk=(25, 25), text="closed", ignore_prob=0.05, snr_db=(30, 45),
                     voices=dict(langs=("en", "en-us"), variants=("m1", "m3", "m7", "f2", "f4"))),
        "gpu": dict(talks=(320, 10, 10), segments_per_talk=(30, 45), text="common"),
    },
    "slurp": {
        "tiny": dict(utterances=(8, 3, 3), synthetic=4),
        "demo": dict(utterances=(500, 80, 80), synthetic=300),
        "gpu": dict(utterances=(6000, 700, 700), synthetic=4000, speakers_per_utterance=(1, 3)),
    },
    "voxceleb1": {
        "tiny": dict(speakers=4, videos_per_speaker=(2, 2), utterances_per_video=(2, 2)),
        "demo": dict(speakers=20, videos_per_speaker=(3, 3), utterances_per_video=(3, 5)),
        "gpu": dict(speakers=200, videos_per_speaker=(3, 5), utterances_per_video=(4, 8), words=(8, 16)),
    },
}
SYNTH = {"tedlium": synth_tedlium, "slurp": synth_slurp, "voxceleb1": synth_voxceleb1}
DEFAULT_OUT = {"tedlium": "database/TEDLIUM_release-3", "slurp": "database/SLURP", "voxceleb1": "data/VoxCeleb1"}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", choices=sorted(SYNTH))
    parser.add_argument("--out", help="raw corpus root to write (default: where the prep script looks)")
    parser.add_argument("--size", choices=("tiny", "demo", "gpu"), default="demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="replace an existing synthetic corpus at --out")
    parser.add_argument("--backend", choices=("auto", "library", "binary"), default="auto",
                        help="espeak-ng in-process library or the espeak-ng binary")
    parser.add_argument("--workers", type=int, default=1,
                        help="tedlium: processes speaking the talks (the corpus is the same for any number)")
    args = parser.parse_args(argv)
    if args.workers < 1 or (args.workers != 1 and args.corpus != "tedlium"):
        parser.error(f"--workers {args.workers}: a number of at least 1, and only tedlium takes one")
    setup_logging()
    extra = {"workers": args.workers} if args.corpus == "tedlium" else {}
    try:
        SYNTH[args.corpus](args.out or DEFAULT_OUT[args.corpus], seed=args.seed, force=args.force,
                           backend=args.backend, **PROFILES[args.corpus][args.size], **extra)
    except CorpusError as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()

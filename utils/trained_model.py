"""A trained run's model with what using it needs: hparams, weights, vocabulary and classifier class names.

    trained = load_trained("output/tedlium/target_guided")                 # a run dir (its latest) or model.ckpt-*
    trained = load_trained(checkpoint, vocab="data/slurp_full", labels="data/slurp_full")
    trained.model, trained.tokenizer, trained.classifier, trained.converted_from

Where each comes from (what scripts/export_hf_model.py and transcribe.py read):

- the model: the ``hparams.json`` beside the checkpoint, then the checkpoint's weights (as infer.py does; an
  original-code run dir or checkpoint converted, models/original.py);
- the vocabulary (``vocab``): a vocab.json or a data dir holding one (the ``--vocab-path`` / ``<data-dir>/vocab.json``
  the run trained with); by default ``<run dir>/vocab.json`` when the run recorded it there, else none;
- classifier class names (``labels``): a SLURP data dir or its categories.json (scenarios, actions), or a VoxCeleb1
  dir holding its split list (speaker ids by SUPERB class index; ``s3prl/superb--si--<dir>`` as train.py's
  --data-dir is read the same); by default, for a SLURP model (data_format=nltLa), the categories.json beside the
  vocabulary.
"""
import dataclasses
import logging
from pathlib import Path

from models.build import build_asr_model, load_weights
from models.hf import ClassifierLabels
from utils import checkpoint as ckpt
from utils.data import build_feature_extractor, load_categories, parse_hf_data_dir, speaker_names, split_file
from utils.training import hparams_of_run, load_tokenizer

logger = logging.getLogger(__name__)

VOCAB = "vocab.json"
CATEGORIES = "categories.json"
SLURP_HEADS = ("scenario", "action")  # corpora/slurp.py's categories.json: [{scenario: i}, {action: i}]


@dataclasses.dataclass
class TrainedModel:
    checkpoint: Path
    step: int
    hparams: object
    model: object  # the run's Wav2Vec2ForCTC (+ classifier heads) (+ BiMamba2 mixers), eval mode, CPU
    feature_extractor: object  # the run's normalisation (utils.data.build_feature_extractor)
    tokenizer: object | None  # None: no vocabulary found
    vocab_path: Path | None
    classifier: ClassifierLabels | None  # None: no classifier heads, or no class names found

    @property
    def converted_from(self) -> dict:
        """Where the model and its vocabulary and labels came from, as an exported config records it."""
        return {"checkpoint": str(self.checkpoint), "step": self.step,
                "hparams": str(self.checkpoint.parent / "hparams.json"),
                "vocab": str(self.vocab_path) if self.vocab_path else None,
                "labels": self.classifier.source if self.classifier else None}


def find_vocab(run_dir: Path, vocab=None) -> Path | None:
    """``vocab`` (a vocab.json, or a dir holding one), else ``<run_dir>/vocab.json`` when present, else None."""
    if vocab is not None:
        path = Path(vocab)
        path = path / VOCAB if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"--vocab {vocab}: {path} not found (a vocab.json, or a data dir holding one)")
        return path
    recorded = Path(run_dir) / VOCAB
    return recorded if recorded.is_file() else None


def read_classifier_labels(labels, targets: list[int]) -> ClassifierLabels:
    """Class names of heads of ``targets`` classes from ``labels``: a VoxCeleb1 dir holding its split list (or
    ``s3prl/superb--si--<dir>``: speaker ids by SUPERB class index), a data dir holding categories.json, or that
    file."""
    path = Path(labels)
    if not path.exists() and "--" in str(labels):
        path = Path(parse_hf_data_dir(labels)[2])
    if split_file(path).is_file():  # class index i is speaker id1000(1 + i), whichever speakers the list holds
        return ClassifierLabels(["speaker"], [speaker_names(targets[0])], str(split_file(path)))
    data_dir = path.parent if path.is_file() and path.name == CATEGORIES else path
    if not (data_dir / CATEGORIES).is_file():
        raise FileNotFoundError(f"--labels {labels}: neither {data_dir / CATEGORIES} nor a VoxCeleb1 split list "
                                f"({split_file(path)}) found")
    heads = load_categories(data_dir)
    names = list(SLURP_HEADS) if len(heads) == len(SLURP_HEADS) else [f"head{i}" for i in range(len(heads))]
    by_index = []
    for i, head in enumerate(heads):
        ordered = sorted(head, key=head.get)
        if [head[name] for name in ordered] != list(range(len(head))):
            raise ValueError(f"{data_dir / CATEGORIES}: head {i}: class indices must be 0..{len(head) - 1}")
        by_index.append(ordered)
    if len(targets) != len(heads):
        raise ValueError(f"{data_dir / CATEGORIES}: {len(heads)} heads, the model has {len(targets)}")
    return ClassifierLabels(names, by_index, str(data_dir / CATEGORIES))


def load_trained(path, vocab=None, labels=None, hparams_string: str = "") -> TrainedModel:
    """The model of a run dir (its latest checkpoint) or of a ``model.ckpt-*`` with its vocabulary and class names
    (see the module docstring for where each is looked for); ``hparams_string`` overrides hparams.json."""
    checkpoint = ckpt.resolve_checkpoint(path)
    saved = checkpoint.parent / "hparams.json"
    if not saved.is_file():
        raise FileNotFoundError(f"{saved} not found: the model is rebuilt from the run's hparams.json")
    hparams = hparams_of_run(saved, hparams_string)
    model = build_asr_model(hparams, pretrained=False)
    load_weights(model, ckpt.load_model_weights(checkpoint), str(checkpoint))
    vocab_path = find_vocab(checkpoint.parent, vocab)
    tokenizer = load_tokenizer(vocab_path, hparams) if vocab_path else None
    classifier = None
    if hparams.use_classifier:
        slurp = hparams.data_format == "nltLa"  # SI runs take SLURP's vocab.json too: its categories are not theirs
        if labels is None and slurp and vocab_path is not None and (vocab_path.parent / CATEGORIES).is_file():
            labels = vocab_path.parent
        if labels is not None:
            classifier = read_classifier_labels(labels, hparams.classifier_targets)
    logger.info("%s (step %d): vocabulary %s, class names %s", checkpoint, ckpt.checkpoint_step(checkpoint),
                vocab_path or "none found", classifier.source if classifier else "none")
    return TrainedModel(checkpoint, ckpt.checkpoint_step(checkpoint), hparams, model.eval(),
                        build_feature_extractor(hparams), tokenizer, vocab_path, classifier)
